//! Token keys sealed at rest: a shared database is read by DBAs, replicas
//! and backups, so with a key file (`key_file=`, default
//! /etc/security/pam_totp.key, root's, mode 0600, the same on every node)
//! every token key is stored encrypted with XChaCha20-Poly1305.
//!
//! A sealed key is `PTS1 || nonce (24 bytes) || ciphertext and tag`. The
//! associated data is the user and the device name, so a sealed key copied
//! into another user's row (or another device's) does not open there: the
//! login is denied and the log says why.
//!
//! The key file holds 32 random bytes as 64 hex digits (`totpctl keygen`).

use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

use crate::secret::Secret;

/// The default key file; sealing is on when it exists.
pub const DEFAULT_KEY_FILE: &str = "/etc/security/pam_totp.key";

/// The first bytes of every sealed key as stored.
pub const MAGIC: &[u8; 4] = b"PTS1";
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("key file {path}: {reason}")]
    KeyFile { path: String, reason: String },
    #[error(
        "the key of {user:?} (device {device:?}) does not open with this key file: a wrong or changed key_file, a row moved from another user, or a replacement confirmed before schema 10 (repair: `totpctl rekey --new-key` with this key file)"
    )]
    DoesNotOpen { user: String, device: String },
    #[error("cannot seal: {0}")]
    Seal(String),
    #[error(
        "this store's keys are sealed and no key file is loaded here: refusing to store a key in the clear (key_file= must name the key file the store is sealed with, default /etc/security/pam_totp.key)"
    )]
    NoKeyFile,
    #[error(
        "this store's keys are sealed, and not with this key file (its sealed keys do not open with it): use the key file the store is sealed with, or `totpctl rekey --new-key` with that one to record it"
    )]
    DoesNotOpenHere,
    #[error(
        "this store's keys are sealed with another key file (id {recorded}; this one is id {ours}): the store was rekeyed since this process loaded its key file, or this node has another one; use the key file `totpctl rekey` last sealed the store with"
    )]
    OtherKeyFile { recorded: i64, ours: i64 },
}

/// The sealing key, loaded from its file.
pub struct Sealer {
    cipher: XChaCha20Poly1305,
    id: i64,
}

/// A key file's id, which the store records (`Store::reseal_keys`, the
/// first sealed write) so that a writer with another key file, or none, is
/// refused before it stores a key the pool cannot open or stores it in the
/// clear: 31 bits of HMAC-SHA256 under the key (nothing about the key
/// itself), never 0 (0: no key recorded).
fn key_id(key: &[u8; 32]) -> i64 {
    use hmac::Mac;
    // HMAC takes a key of any length: this never fails.
    let Ok(mut mac) = <hmac::Hmac<sha2::Sha256> as hmac::KeyInit>::new_from_slice(key) else {
        return 1;
    };
    mac.update(b"pam_totp key file id v1");
    let tag = mac.finalize().into_bytes();
    let id = i64::from(u32::from_be_bytes([tag[0], tag[1], tag[2], tag[3]]) & 0x7fff_ffff);
    id.max(1)
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

fn key_error(path: &Path, reason: impl Into<String>) -> SealError {
    SealError::KeyFile {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

/// Binds a sealed key to its row.
fn associated_data(user: &str, device: &str) -> Vec<u8> {
    let mut aad = b"pam_totp sealed key v1\0".to_vec();
    aad.extend_from_slice(user.as_bytes());
    aad.push(0);
    aad.extend_from_slice(device.as_bytes());
    aad
}

impl Sealer {
    /// Reads and checks the key file (root's alone, 64 hex digits).
    pub fn load(path: &Path) -> Result<Sealer, SealError> {
        let text = crate::trust::read_secret_file(path).map_err(|e| key_error(path, e.problem))?;
        let hex = text.trim();
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(key_error(
                path,
                "expected 64 hex digits (make one with `totpctl keygen FILE`)",
            ));
        }
        let mut key = Zeroizing::new([0u8; 32]);
        for (i, byte) in key.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
                .map_err(|_| key_error(path, "not hex"))?;
        }
        Ok(Sealer {
            cipher: XChaCha20Poly1305::new(key.as_ref().into()),
            id: key_id(&key),
        })
    }

    /// This key file's id (see `key_id`).
    pub fn id(&self) -> i64 {
        self.id
    }

    /// A new key file's text: 32 random bytes as hex.
    pub fn generate() -> Result<Zeroizing<String>, SealError> {
        let mut key = Zeroizing::new([0u8; 32]);
        getrandom::fill(key.as_mut()).map_err(|e| SealError::Seal(e.to_string()))?;
        let mut text = Zeroizing::new(String::with_capacity(65));
        for byte in key.iter() {
            text.push_str(&format!("{byte:02x}"));
        }
        text.push('\n');
        Ok(text)
    }

    /// Seals `secret` for (user, device).
    pub fn seal(&self, user: &str, device: &str, secret: &Secret) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| SealError::Seal(e.to_string()))?;
        let aad = associated_data(user, device);
        let sealed = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: secret.as_bytes(),
                    aad: &aad,
                },
            )
            .map_err(|_| SealError::Seal("encryption failed".to_string()))?;
        let mut out = Vec::with_capacity(MAGIC.len() + NONCE_LEN + sealed.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Opens a sealed key of (user, device); the raw key bytes.
    pub fn open(
        &self,
        user: &str,
        device: &str,
        blob: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let refused = || SealError::DoesNotOpen {
            user: user.to_string(),
            device: device.to_string(),
        };
        if !is_sealed(blob) || blob.len() < MAGIC.len() + NONCE_LEN + TAG_LEN {
            return Err(refused());
        }
        let (nonce, sealed) = blob[MAGIC.len()..].split_at(NONCE_LEN);
        let aad = associated_data(user, device);
        self.cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: &aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| refused())
    }
}

/// True for a stored key in the sealed format.
pub fn is_sealed(blob: &[u8]) -> bool {
    blob.starts_with(MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn sealer(dir: &Path, name: &str) -> Sealer {
        let path = dir.join(name);
        std::fs::write(&path, Sealer::generate().expect("key").as_bytes()).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        Sealer::load(&path).expect("load")
    }

    #[test]
    fn sealed_keys_open_only_for_their_row_and_key() {
        let dir = crate::trust::test_dir();
        let a = sealer(dir.path(), "a.key");
        let b = sealer(dir.path(), "b.key");
        let secret = Secret::from_base32("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ").expect("key");
        let blob = a.seal("alice", "phone", &secret).expect("seal");
        assert!(is_sealed(&blob));
        assert!(
            !blob
                .windows(secret.as_bytes().len())
                .any(|w| w == secret.as_bytes())
        );
        assert_eq!(
            a.open("alice", "phone", &blob).expect("open").as_slice(),
            secret.as_bytes()
        );
        // Another user, another device, another key, a flipped bit: refused.
        assert!(a.open("bob", "phone", &blob).is_err());
        assert!(a.open("alice", "tablet", &blob).is_err());
        assert!(b.open("alice", "phone", &blob).is_err());
        let mut tampered = blob.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(a.open("alice", "phone", &tampered).is_err());
        // Two seals of one key differ (fresh nonce).
        assert_ne!(blob, a.seal("alice", "phone", &secret).expect("seal"));
    }

    #[test]
    fn key_files_must_be_root_only_and_well_formed() {
        let dir = crate::trust::test_dir();
        let path = dir.path().join("k");
        std::fs::write(&path, Sealer::generate().expect("key").as_bytes()).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = Sealer::load(&path).expect_err("readable by others");
        assert!(err.to_string().contains("0644"), "{err}");
        std::fs::write(&path, "abc\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let err = Sealer::load(&path).expect_err("short");
        assert!(err.to_string().contains("64 hex digits"), "{err}");
        let err = Sealer::load(&dir.path().join("missing")).expect_err("missing");
        assert!(err.to_string().contains("missing"), "{err}");
    }
}
