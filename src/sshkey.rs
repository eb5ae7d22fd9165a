//! What sshd says about the SSH key a login used, read strictly, and key
//! fingerprints as `ssh-keygen -l` prints them. Pure: no PAM, no I/O.
//!
//! OpenSSH (7.8 and later, `auth-pam.c: expose_authinfo`) puts
//! `SSH_AUTH_INFO_0` into the **PAM environment** immediately before it
//! calls `pam_authenticate` for keyboard-interactive (9.8 and later also for
//! `PasswordAuthentication` through PAM), and again before `pam_acct_mgmt`
//! and `pam_open_session`. Its value is one line per authentication method
//! that already succeeded in this connection (`auth2.c:
//! auth2_update_session_info`): the method, then for `publickey` the key as
//! `sshkey_format_text` writes it (`TYPE BASE64`), then for FIDO keys
//! `signature count = N`, each line ending in `\n`. With no method before
//! this one the value is empty. `ExposeAuthInfo` is not needed: it only
//! controls the copy in the user's session environment.
//!
//! The one shape this module accepts as "the login used key K" is a value
//! of exactly one line, `publickey TYPE BASE64\n` (plus sshd's
//! `signature count = N` for `sk-` keys), whose TYPE is a plain key type
//! (certificates are not bound), whose BASE64 is canonical standard base64,
//! and whose decoded blob starts with the same TYPE (the SSH wire format).
//! Everything else is either "no key" (an empty value, or a first method
//! that is not `publickey`) or refused with a reason for the log; both ask
//! for a code.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use sha2::Digest;

/// The PAM environment variable sshd sets.
pub const AUTH_INFO_ENV: &str = "SSH_AUTH_INFO_0";

/// The PAM service name under which the variable is believed: sshd's own
/// (the basename of its `argv[0]`, `sshd` as packaged).
pub const SSHD_SERVICE: &str = "sshd";

/// Longer values are refused unread (an RSA key of 16384 bits is under 3 KiB
/// of base64).
pub const MAX_AUTH_INFO_LEN: usize = 8 * 1024;

/// The plain public key types a key grace or an automation grant binds.
pub const KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// The key sshd verified before this authentication method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsedKey {
    /// The key type (`ssh-ed25519`, …).
    pub algorithm: String,
    /// `SHA256:` and the unpadded base64 of the SHA-256 of the key blob.
    pub fingerprint: String,
}

/// What this login says about its SSH key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginKey {
    /// Nothing can be believed: not sshd, not the auth phase, or no
    /// variable at all. The reason is for the log.
    Unknown(String),
    /// sshd says no public key came before this method.
    NoKey,
    /// The one public key sshd verified before this method.
    Key(UsedKey),
    /// A value of a shape this module does not accept (a reason for the
    /// log): treated as no key.
    Refused(String),
}

impl LoginKey {
    /// The key, when there is one to believe.
    pub fn key(&self) -> Option<&UsedKey> {
        match self {
            LoginKey::Key(key) => Some(key),
            _ => None,
        }
    }
}

/// `SHA256:…` of a key blob, as `ssh-keygen -lf` prints it.
pub fn fingerprint(blob: &[u8]) -> String {
    format!(
        "SHA256:{}",
        STANDARD_NO_PAD.encode(sha2::Sha256::digest(blob))
    )
}

/// Reads the value of `SSH_AUTH_INFO_0` as sshd writes it (see the module
/// documentation for the one accepted shape).
pub fn parse_auth_info(value: &[u8]) -> LoginKey {
    if value.len() > MAX_AUTH_INFO_LEN {
        return LoginKey::Refused(format!(
            "{AUTH_INFO_ENV} is {} bytes, more than {MAX_AUTH_INFO_LEN}",
            value.len()
        ));
    }
    if value.is_empty() {
        return LoginKey::NoKey;
    }
    let Ok(text) = std::str::from_utf8(value) else {
        return LoginKey::Refused(format!("{AUTH_INFO_ENV} is not UTF-8"));
    };
    let Some(body) = text.strip_suffix('\n') else {
        return LoginKey::Refused(format!(
            "{AUTH_INFO_ENV} does not end its line as sshd does"
        ));
    };
    if body.contains('\n') {
        return LoginKey::Refused(format!(
            "{AUTH_INFO_ENV} names {} methods before this one; a key is bound only after `publickey` alone (AuthenticationMethods publickey,keyboard-interactive)",
            body.split('\n').count()
        ));
    }
    if body.bytes().any(|b| b.is_ascii_control()) {
        return LoginKey::Refused(format!("{AUTH_INFO_ENV} holds a control character"));
    }
    let fields: Vec<&str> = body.split(' ').collect();
    match fields.first() {
        Some(&"publickey") => {}
        // `password`, `keyboard-interactive/pam`, `hostbased …`: no user key.
        Some(method) if is_method_name(method) && fields.len() == 1 => return LoginKey::NoKey,
        Some(method) if *method == "hostbased" => return LoginKey::NoKey,
        _ => {
            return LoginKey::Refused(format!(
                "{AUTH_INFO_ENV} is not a method line as sshd writes it"
            ));
        }
    }
    let (algorithm, encoded, rest) = match fields.as_slice() {
        [_, algorithm, encoded, rest @ ..] => (*algorithm, *encoded, rest),
        _ => {
            return LoginKey::Refused(format!("{AUTH_INFO_ENV}: a publickey line without a key"));
        }
    };
    if !KEY_TYPES.contains(&algorithm) {
        return LoginKey::Refused(format!(
            "{AUTH_INFO_ENV}: key type {:?} is not bound (plain keys only: {})",
            crate::logline::escape(&algorithm.chars().take(64).collect::<String>()),
            KEY_TYPES.join(", ")
        ));
    }
    let counter_ok = match rest {
        [] => true,
        ["signature", "count", "=", n] => {
            algorithm.starts_with("sk-") && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
        }
        _ => false,
    };
    if !counter_ok {
        return LoginKey::Refused(format!("{AUTH_INFO_ENV}: unexpected fields after the key"));
    }
    let Ok(blob) = STANDARD.decode(encoded) else {
        return LoginKey::Refused(format!("{AUTH_INFO_ENV}: the key is not base64"));
    };
    if blob_type(&blob) != Some(algorithm.as_bytes()) {
        return LoginKey::Refused(format!(
            "{AUTH_INFO_ENV}: the key blob is not of the type its line names"
        ));
    }
    LoginKey::Key(UsedKey {
        algorithm: algorithm.to_string(),
        fingerprint: fingerprint(&blob),
    })
}

/// sshd's method names: lowercase letters and `-`, optionally `/submethod`.
fn is_method_name(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'-' || b == b'/')
}

/// The first SSH string of a key blob (its type), if the blob has one and
/// more after it.
fn blob_type(blob: &[u8]) -> Option<&[u8]> {
    let len = u32::from_be_bytes(blob.get(..4)?.try_into().ok()?) as usize;
    let end = 4usize.checked_add(len)?;
    let name = blob.get(4..end)?;
    (blob.len() > end).then_some(name)
}

/// A fingerprint as an administrator types it (`SHA256:` and 43 characters
/// of unpadded base64 that decode to 32 bytes), canonical.
pub fn parse_fingerprint(text: &str) -> Result<String, String> {
    let text = text.trim();
    let Some(encoded) = text.strip_prefix("SHA256:") else {
        return Err(format!(
            "{:?} is not a SHA256: fingerprint as `ssh-keygen -lf KEY.pub` prints it",
            crate::logline::escape(text)
        ));
    };
    match STANDARD_NO_PAD.decode(encoded) {
        Ok(digest) if digest.len() == 32 => Ok(format!("SHA256:{encoded}")),
        _ => Err(format!(
            "{:?} is not a SHA256: fingerprint (43 characters of base64 after SHA256:)",
            crate::logline::escape(text)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real ed25519 public key and what `ssh-keygen -lf` (OpenSSH 9.2)
    /// printed for it.
    const ED25519: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIPWhMX3GrSZWFUTEvx5GuAhSZm+XOT6mzOYJAiiQgU9l";
    const ED25519_FP: &str = "SHA256:PBZqibLSCLdAS4+MC8G29Jx6IMJfj3+k9ckTzGesU+I";

    fn key_line(algorithm: &str, encoded: &str) -> String {
        format!("publickey {algorithm} {encoded}\n")
    }

    #[test]
    fn one_publickey_line_gives_its_fingerprint() {
        let LoginKey::Key(key) = parse_auth_info(key_line("ssh-ed25519", ED25519).as_bytes())
        else {
            panic!("not a key");
        };
        assert_eq!(key.algorithm, "ssh-ed25519");
        assert_eq!(key.fingerprint, ED25519_FP);
        assert!(key.fingerprint.starts_with("SHA256:"));
        assert_eq!(key.fingerprint.len(), 7 + 43);
        assert_eq!(
            parse_fingerprint(&key.fingerprint),
            Ok(key.fingerprint.clone())
        );
    }

    #[test]
    fn rsa_and_ecdsa_keys_match_ssh_keygen() {
        // Generated and fingerprinted with ssh-keygen (OpenSSH 9.2).
        for (algorithm, encoded, expected) in [
            (
                "ssh-rsa",
                "AAAAB3NzaC1yc2EAAAADAQABAAABAQDHEIrpXxH6mYyEG5lFpteh8v6TW1Q1ZDYkfy9JU91YKxEF179eOM3Aos7f6kmOTQv0pPevQnSpsB31vshd7qWXZqtDpgPeP8rLAeiUDF9SwK2FfdI6ujj8AXuGGWz9WWmJgFW0YeAbg5QigaXSp3W7iyoWefUWXX6mmZcgb5m+JTucl3lwaT3TP6a+3IeK6E72glquCtyX//o+VWtwZqQrllwSc1SVpZlDyMDH3kQbs1FLYoyGf/J3Q16jpKPlsm7WwvWSqh8YM94bGrqYm3ng1M60mMwTZNqVQqyoGuoYorxroSPX3FyVE3NWFnuXxbO9/9gdQxbEreY1BLmgica9",
                "SHA256:4dZLjyCcYbbIFvAzGnvhao3TF+Sc/JOJfthkRar4yuo",
            ),
            (
                "ecdsa-sha2-nistp384",
                "AAAAE2VjZHNhLXNoYTItbmlzdHAzODQAAAAIbmlzdHAzODQAAABhBMaOuBqh+pEJeyGvrX2kWHrmttuiA5NYYIB3O+JJfnU5tps+3zz/gViolbGG7b2Ai9CfyHDnF+dknG7AgggMMyaU3EMAdX501N/Djw9CBM/TzEBuomH9M3ehaVc1A7JDbA==",
                "SHA256:had9UX/o5x9yjGLvi7eSxElFQV9TWRFj9rd2dbzuPeo",
            ),
        ] {
            let parsed = parse_auth_info(key_line(algorithm, encoded).as_bytes());
            assert_eq!(
                parsed.key().map(|k| k.fingerprint.as_str()),
                Some(expected),
                "{algorithm}: {parsed:?}"
            );
            // The padded ECDSA key without its padding: refused.
            if encoded.ends_with('=') {
                let unpadded = key_line(algorithm, encoded.trim_end_matches('='));
                assert!(matches!(
                    parse_auth_info(unpadded.as_bytes()),
                    LoginKey::Refused(_)
                ));
            }
        }
    }

    #[test]
    fn no_method_or_another_method_is_no_key() {
        assert_eq!(parse_auth_info(b""), LoginKey::NoKey);
        assert_eq!(parse_auth_info(b"password\n"), LoginKey::NoKey);
        assert_eq!(
            parse_auth_info(b"keyboard-interactive/pam\n"),
            LoginKey::NoKey
        );
    }

    #[test]
    fn hostile_values_are_refused() {
        let good = key_line("ssh-ed25519", ED25519);
        let long = format!("publickey ssh-ed25519 {}\n", "A".repeat(MAX_AUTH_INFO_LEN));
        let two = format!("{good}{good}");
        let cert = key_line("ssh-ed25519-cert-v01@openssh.com", ED25519);
        let other_type = key_line("ssh-rsa", ED25519);
        let unpadded = key_line("ssh-ed25519", ED25519.trim_end_matches('='));
        let extra = format!("publickey ssh-ed25519 {ED25519} trailing\n");
        let counter_on_plain = format!("publickey ssh-ed25519 {ED25519} signature count = 3\n");
        let cases: Vec<Vec<u8>> = vec![
            good.trim_end().as_bytes().to_vec(),
            long.into_bytes(),
            two.into_bytes(),
            cert.into_bytes(),
            other_type.into_bytes(),
            extra.into_bytes(),
            counter_on_plain.into_bytes(),
            b"publickey\n".to_vec(),
            b"publickey ssh-ed25519\n".to_vec(),
            b"publickey ssh-ed25519 !!!!\n".to_vec(),
            b"publickey ssh-ed25519 AAAA\n".to_vec(),
            b"publickey  ssh-ed25519 AAAA\n".to_vec(),
            b"publickey ssh-ed25519 AAAAC3NzaC1lZDI1NTE5\0AAAA\n".to_vec(),
            b"publickey ssh-ed25519 AAAA\r\n".to_vec(),
            b"\xff\xfe\n".to_vec(),
            b"PUBLICKEY ssh-ed25519 x\n".to_vec(),
            b"\n".to_vec(),
            b"password\npublickey ssh-ed25519 AAAA\n".to_vec(),
        ];
        for value in cases {
            assert!(
                matches!(parse_auth_info(&value), LoginKey::Refused(_)),
                "{:?} was not refused: {:?}",
                String::from_utf8_lossy(&value),
                parse_auth_info(&value)
            );
        }
        // Unpadded base64 of this key decodes the same bytes only when the
        // key needs no padding; either way it is the same key or refused.
        assert!(matches!(
            parse_auth_info(unpadded.as_bytes()),
            LoginKey::Key(_) | LoginKey::Refused(_)
        ));
    }

    #[test]
    fn a_fido_key_may_carry_its_signature_count() {
        // The blob's type must still be the sk type; a plain blob is refused.
        let line = format!("publickey sk-ssh-ed25519@openssh.com {ED25519} signature count = 7\n");
        assert!(matches!(
            parse_auth_info(line.as_bytes()),
            LoginKey::Refused(_)
        ));
    }

    #[test]
    fn fingerprints_typed_by_an_administrator() {
        assert!(parse_fingerprint("SHA256:").is_err());
        assert!(parse_fingerprint("MD5:aa:bb").is_err());
        assert!(parse_fingerprint("SHA256:abc").is_err());
        assert!(parse_fingerprint(&format!("SHA256:{}=", "A".repeat(43))).is_err());
        assert!(parse_fingerprint(&format!("SHA256:{}", "A".repeat(43))).is_ok());
    }
}
