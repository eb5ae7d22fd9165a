//! What a user scans: the otpauth:// URI, and the QR code that carries it,
//! rendered for a terminal (UTF-8 half blocks). Shared by `totpctl enroll`
//! and enrollment at login. The PNG (`totpctl enroll --qr-png`) is drawn
//! by totpctl from [`qr_code`], so the module does not link a PNG encoder.

use qrcode::render::unicode::Dense1x2;
use qrcode::{EcLevel, QrCode};
use zeroize::Zeroizing;

use crate::otp::{Algorithm, Params};
use crate::secret::Secret;
use crate::store::{Kind, Token};

/// The user's token, on another device than `device`, that holds `secret`
/// already (stopped and pending tokens too), as HMAC sees keys under either
/// token's algorithm (zero bytes appended make no new key). Enrolling a key
/// twice gives nothing a user could want (one phone shows one code for it)
/// and makes the floor of used steps hang on two rows: removing the device
/// that used a code would free it on the other. Compared in constant time.
pub fn holder_of_key<'a>(
    tokens: &'a [Token],
    secret: &Secret,
    algorithm: Algorithm,
    device: &str,
) -> Option<&'a Token> {
    tokens.iter().find(|t| {
        t.device != device
            && (t.secret.gives_the_codes_of(secret, algorithm)
                || t.secret.gives_the_codes_of(secret, t.params.algorithm))
    })
}

/// The Key URI that authenticator apps scan (Google's Key Uri Format):
/// `otpauth://totp/ISSUER:USER?secret=...&issuer=...&algorithm=...&digits=...&period=...`
/// (`hotp` with `counter=` instead of `period=`).
pub fn otpauth_uri(
    secret: &Secret,
    issuer: &str,
    user: &str,
    kind: Kind,
    params: &Params,
    counter: u64,
) -> Zeroizing<String> {
    let moving = match kind {
        Kind::Totp => format!("period={}", params.period),
        Kind::Hotp => format!("counter={counter}"),
    };
    Zeroizing::new(format!(
        "otpauth://{kind}/{label_issuer}:{label_user}?secret={secret}&issuer={issuer}&algorithm={alg}&digits={digits}&{moving}",
        label_issuer = percent_encode(issuer),
        label_user = percent_encode(user),
        secret = secret.to_base32().as_str(),
        issuer = percent_encode(issuer),
        alg = params.algorithm.uri_name(),
        digits = params.digits,
    ))
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[derive(Debug, thiserror::Error)]
pub enum QrError {
    #[error("the URI does not fit in a QR code: {0}")]
    Encode(String),
}

/// The QR code for `uri`, error correction level M.
pub fn qr_code(uri: &str) -> Result<QrCode, QrError> {
    QrCode::with_error_correction_level(uri.as_bytes(), EcLevel::M)
        .map_err(|e| QrError::Encode(e.to_string()))
}

/// The QR code as UTF-8 half blocks, two modules per character cell, with
/// the quiet zone. By default drawn for a dark terminal (light text on a
/// dark background: the light modules are the printed blocks); `invert`
/// draws it for a light terminal.
pub fn qr_terminal(uri: &str, invert: bool) -> Result<Zeroizing<String>, QrError> {
    let (dark, light) = if invert {
        (Dense1x2::Dark, Dense1x2::Light)
    } else {
        (Dense1x2::Light, Dense1x2::Dark)
    };
    Ok(Zeroizing::new(
        qr_code(uri)?
            .render::<Dense1x2>()
            .dark_color(dark)
            .light_color(light)
            .quiet_zone(true)
            .build(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otp::Algorithm;

    fn key() -> Secret {
        Secret::from_base32("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ").expect("valid")
    }

    #[test]
    fn totp_uri_encodes_label_and_parameters() {
        let params = Params {
            algorithm: Algorithm::Sha256,
            digits: 8,
            period: 60,
        };
        let uri = otpauth_uri(&key(), "HPC Lander", "alice@x", Kind::Totp, &params, 0);
        assert_eq!(
            uri.as_str(),
            "otpauth://totp/HPC%20Lander:alice%40x?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=HPC%20Lander&algorithm=SHA256&digits=8&period=60"
        );
    }

    #[test]
    fn hotp_uri_carries_the_counter() {
        let uri = otpauth_uri(&key(), "x", "bob", Kind::Hotp, &Params::default(), 7);
        assert!(uri.starts_with("otpauth://hotp/x:bob?"), "{}", uri.as_str());
        assert!(uri.ends_with("&digits=6&counter=7"), "{}", uri.as_str());
    }

    #[test]
    fn terminal_qr_uses_half_blocks_and_inverts() {
        let uri = otpauth_uri(&key(), "x", "bob", Kind::Totp, &Params::default(), 0);
        let dark = qr_terminal(&uri, false).expect("qr");
        let light = qr_terminal(&uri, true).expect("qr");
        assert!(dark.chars().all(|c| " ▀▄█\n".contains(c)));
        assert_ne!(dark.as_str(), light.as_str());
        // The quiet zone is light: full blocks on a dark terminal, blanks on a light one.
        assert!(dark.lines().next().expect("line").chars().all(|c| c == '█'));
        assert!(
            light
                .lines()
                .next()
                .expect("line")
                .chars()
                .all(|c| c == ' ')
        );
    }
}
