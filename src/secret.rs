//! The shared key of a token: zeroized on drop, base32 in and out,
//! generated from the OS random source.

use std::fmt;

use zeroize::Zeroizing;

/// Bytes of a generated key: 160 bits, the size RFC 4226 recommends.
pub const GENERATED_LEN: usize = 20;
/// Shortest key enrolled without `--allow-short` (RFC 4226 requires 128 bits).
pub const MIN_LEN: usize = 16;
/// Shortest key stored at all: 80 bits, what google-authenticator-libpam
/// generates, so that imported tokens keep working.
pub const ABSOLUTE_MIN_LEN: usize = 10;
/// Longest key we accept (SHA512 block size; longer keys are hashed anyway).
pub const MAX_LEN: usize = 128;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("the key is not valid base32 (letters A-Z and digits 2-7)")]
    NotBase32,
    #[error("the key is {0} bits long; at least {min} bits are required", min = ABSOLUTE_MIN_LEN * 8)]
    TooShort(usize),
    #[error("the key is {0} bits long; at least {min} bits are required (--allow-short accepts down to {floor})", min = MIN_LEN * 8, floor = ABSOLUTE_MIN_LEN * 8)]
    Short(usize),
    #[error("the key is {0} bits long; at most {max} bits are allowed", max = MAX_LEN * 8)]
    TooLong(usize),
    #[error("the system random source failed: {0}")]
    Random(String),
}

/// A token key. The bytes are wiped when the value is dropped, `Debug`
/// never shows them, and two keys are compared in constant time.
#[derive(Clone)]
pub struct Secret(Zeroizing<Vec<u8>>);

impl PartialEq for Secret {
    fn eq(&self, other: &Secret) -> bool {
        use subtle::ConstantTimeEq;
        // Lengths are not secret (every generated key has the same one);
        // `ct_eq` answers false for different lengths without a timing
        // difference in the bytes.
        bool::from(self.0.as_slice().ct_eq(other.0.as_slice()))
    }
}

impl Eq for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl Secret {
    /// Wraps raw key bytes (as read from the store), checking the length
    /// against the absolute bounds.
    pub fn from_bytes(bytes: Zeroizing<Vec<u8>>) -> Result<Secret, SecretError> {
        match bytes.len() {
            n if n < ABSOLUTE_MIN_LEN => Err(SecretError::TooShort(n * 8)),
            n if n > MAX_LEN => Err(SecretError::TooLong(n * 8)),
            _ => Ok(Secret(bytes)),
        }
    }

    /// Whether this key gives the codes of `other` under `algorithm`: the
    /// same bytes, or bytes HMAC makes the same (zero bytes appended, a
    /// key longer than the hash's block and its hash).
    pub fn gives_the_codes_of(&self, other: &Secret, algorithm: crate::otp::Algorithm) -> bool {
        crate::otp::same_hmac_key(&self.0, &other.0, algorithm)
    }

    /// A fresh random 160-bit key.
    pub fn generate() -> Result<Secret, SecretError> {
        let mut bytes = Zeroizing::new(vec![0u8; GENERATED_LEN]);
        getrandom::fill(&mut bytes).map_err(|e| SecretError::Random(e.to_string()))?;
        Ok(Secret(bytes))
    }

    /// Parses base32 as people and other tools write it: any case, with
    /// spaces or dashes between groups, with or without `=` padding.
    pub fn from_base32(text: &str) -> Result<Secret, SecretError> {
        let normalised: Zeroizing<String> = Zeroizing::new(
            text.chars()
                .filter(|c| !c.is_whitespace() && *c != '-')
                .map(|c| c.to_ascii_uppercase())
                .collect::<String>()
                .trim_end_matches('=')
                .to_string(),
        );
        if normalised.is_empty() {
            return Err(SecretError::NotBase32);
        }
        let bytes = base32::decode(
            base32::Alphabet::Rfc4648 { padding: false },
            normalised.as_str(),
        )
        .ok_or(SecretError::NotBase32)?;
        Secret::from_bytes(Zeroizing::new(bytes))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Refuses keys under 128 bits unless `allow_short` (then 80 is the floor).
    pub fn check_strength(&self, allow_short: bool) -> Result<(), SecretError> {
        if self.0.len() < MIN_LEN && !allow_short {
            return Err(SecretError::Short(self.0.len() * 8));
        }
        Ok(())
    }

    /// Unpadded uppercase base32, as authenticator apps expect it.
    pub fn to_base32(&self) -> Zeroizing<String> {
        Zeroizing::new(base32::encode(
            base32::Alphabet::Rfc4648 { padding: false },
            &self.0,
        ))
    }

    /// Base32 in groups of four for typing by hand: `ABCD EFGH ...`.
    pub fn to_base32_grouped(&self) -> Zeroizing<String> {
        let plain = self.to_base32();
        let groups: Vec<&str> = plain
            .as_bytes()
            .chunks(4)
            .map(|c| std::str::from_utf8(c).unwrap_or(""))
            .collect();
        Zeroizing::new(groups.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base32_round_trip_and_normalisation() {
        let s = Secret::from_base32("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ").expect("valid");
        assert_eq!(s.as_bytes(), b"12345678901234567890");
        for variant in [
            "gezdgnbvgy3tqojqgezdgnbvgy3tqojq",
            "GEZD GNBV GY3T QOJQ GEZD GNBV GY3T QOJQ",
            "gezd-gnbv-gy3t-qojq-gezd-gnbv-gy3t-qojq",
            "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ====",
        ] {
            assert_eq!(Secret::from_base32(variant), Ok(s.clone()), "{variant}");
        }
        assert_eq!(s.to_base32().as_str(), "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
        assert_eq!(
            s.to_base32_grouped().as_str(),
            "GEZD GNBV GY3T QOJQ GEZD GNBV GY3T QOJQ"
        );
    }

    #[test]
    fn bad_keys_are_named() {
        assert_eq!(Secret::from_base32(""), Err(SecretError::NotBase32));
        assert_eq!(Secret::from_base32("ABC1"), Err(SecretError::NotBase32));
        assert_eq!(
            Secret::from_base32("GEZDGNBVGY3TQ"),
            Err(SecretError::TooShort(64))
        );
        let ga = Secret::from_base32("GEZDGNBVGY3TQOJQ").expect("80 bits is stored");
        assert_eq!(ga.check_strength(false), Err(SecretError::Short(80)));
        assert_eq!(ga.check_strength(true), Ok(()));
    }

    #[test]
    fn generated_keys_are_160_bits_and_differ() {
        let a = Secret::generate().expect("random");
        let b = Secret::generate().expect("random");
        assert_eq!(a.as_bytes().len(), 20);
        assert_ne!(a, b);
    }

    #[test]
    fn debug_hides_the_key() {
        let s = Secret::from_base32("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ").expect("valid");
        assert_eq!(format!("{s:?}"), "Secret([redacted])");
    }
}
