//! Recovery codes: ten single-use codes per user, shown once, stored only
//! as salted argon2id hashes.
//!
//! A code reads `abcd-efgh-jkmn`: 12 characters of Crockford's base32 (no
//! i, l, o, u), 60 bits. It cannot be mistaken for a TOTP code (6 to 8
//! digits). The first group is a lookup tag kept in clear beside the hash,
//! so a login checks one hash, not ten; the hash covers the whole code.
//! Typing is forgiving: any case, with or without dashes or spaces, and
//! i/l read as 1, o as 0.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use zeroize::Zeroizing;

/// How many codes a user gets at a time.
pub const COUNT: usize = 10;
const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
const GROUPS: usize = 3;
const GROUP_LEN: usize = 4;
const LEN: usize = GROUPS * GROUP_LEN;

#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error("the system random source failed: {0}")]
    Random(String),
    #[error("hashing a recovery code failed: {0}")]
    Hash(String),
}

/// A recovery code as shown to the user once (`abcd-efgh-jkmn`).
pub struct RecoveryCode(Zeroizing<String>);

impl RecoveryCode {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What the store keeps of a code: the lookup tag and the argon2id hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryHash {
    pub lookup: String,
    pub phc: String,
}

/// A typed answer that has the shape of a recovery code.
pub struct Candidate {
    pub lookup: String,
    normalised: Zeroizing<String>,
}

/// `COUNT` fresh codes with distinct lookup tags, and their hashes.
pub fn generate() -> Result<Vec<(RecoveryCode, RecoveryHash)>, RecoveryError> {
    let mut codes: Vec<(RecoveryCode, RecoveryHash)> = Vec::with_capacity(COUNT);
    while codes.len() < COUNT {
        let mut raw = Zeroizing::new([0u8; LEN]);
        getrandom::fill(raw.as_mut()).map_err(|e| RecoveryError::Random(e.to_string()))?;
        let plain: Zeroizing<String> = Zeroizing::new(
            raw.iter()
                .map(|b| char::from(ALPHABET[usize::from(b & 31)]))
                .collect(),
        );
        let lookup = plain[..GROUP_LEN].to_string();
        if codes.iter().any(|(_, h)| h.lookup == lookup) {
            continue;
        }
        let hash = hash(&plain)?;
        let shown = Zeroizing::new(
            plain
                .as_bytes()
                .chunks(GROUP_LEN)
                .map(|g| std::str::from_utf8(g).unwrap_or(""))
                .collect::<Vec<_>>()
                .join("-"),
        );
        codes.push((RecoveryCode(shown), RecoveryHash { lookup, phc: hash }));
    }
    Ok(codes)
}

fn hash(normalised: &str) -> Result<String, RecoveryError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| RecoveryError::Random(e.to_string()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| RecoveryError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(normalised.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| RecoveryError::Hash(e.to_string()))
}

/// Stores an externally made single-use code (google-authenticator's
/// 8-digit scratch codes) under the same scheme. Its lookup tag is its
/// first four characters.
pub fn hash_imported(code: &str) -> Result<RecoveryHash, RecoveryError> {
    let code = Zeroizing::new(code.trim().to_string());
    let lookup = code.chars().take(GROUP_LEN).collect();
    Ok(RecoveryHash {
        lookup,
        phc: hash(&code)?,
    })
}

/// A recovery code as shown, `abcd-efgh-jkmn`: what the combined mode looks
/// for at the end of an answer.
pub const CODE_TEXT_LEN: usize = 14;

/// Recognises an answer shaped like a recovery code and normalises it.
/// Anything that could be a TOTP code (digits only, up to 8) is `None`.
pub fn candidate(answer: &str) -> Option<Candidate> {
    let mut normalised = Zeroizing::new(String::with_capacity(LEN));
    for c in answer.trim().chars() {
        let c = match c.to_ascii_lowercase() {
            '-' | ' ' => continue,
            'i' | 'l' => '1',
            'o' => '0',
            c => c,
        };
        if !c.is_ascii() || !ALPHABET.contains(&(c as u8)) {
            return None;
        }
        normalised.push(c);
    }
    if normalised.len() != LEN {
        return None;
    }
    Some(Candidate {
        lookup: normalised[..GROUP_LEN].to_string(),
        normalised,
    })
}

/// Recognises an imported scratch code: exactly 8 digits is a TOTP code
/// shape too, so scratch codes are tried only after no token matched.
pub fn scratch_candidate(answer: &str) -> Option<Candidate> {
    let text = answer.trim();
    (text.len() == 8 && text.bytes().all(|b| b.is_ascii_digit())).then(|| Candidate {
        lookup: text[..GROUP_LEN].to_string(),
        normalised: Zeroizing::new(text.to_string()),
    })
}

impl Candidate {
    /// True when this answer is the code behind `phc` (constant time inside argon2).
    pub fn matches(&self, phc: &str) -> bool {
        match PasswordHash::new(phc) {
            Ok(parsed) => Argon2::default()
                .verify_password(self.normalised.as_bytes(), &parsed)
                .is_ok(),
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_codes_are_distinct_shaped_and_verify() {
        let codes = generate().expect("codes");
        assert_eq!(codes.len(), COUNT);
        let mut lookups: Vec<&str> = codes.iter().map(|(_, h)| h.lookup.as_str()).collect();
        lookups.sort();
        lookups.dedup();
        assert_eq!(lookups.len(), COUNT);
        for (code, stored) in &codes {
            let shown = code.as_str();
            assert_eq!(shown.len(), 14);
            assert_eq!(shown.matches('-').count(), 2);
            assert!(stored.phc.starts_with("$argon2id$"), "{}", stored.phc);
            assert!(!stored.phc.contains(shown));
            let c = candidate(shown).expect("shape");
            assert_eq!(c.lookup, stored.lookup);
            assert!(c.matches(&stored.phc));
            // Forgiving input: upper case, no dashes, spaces.
            let typed = format!(" {} ", shown.to_uppercase().replace('-', " "));
            assert!(candidate(&typed).expect("shape").matches(&stored.phc));
        }
        let (first, _) = &codes[0];
        let (_, other) = &codes[1];
        assert!(
            !candidate(first.as_str())
                .expect("shape")
                .matches(&other.phc)
        );
    }

    #[test]
    fn totp_codes_are_never_recovery_candidates() {
        for answer in [
            "123456",
            "1234567",
            "12345678",
            "",
            "abcd-efgh",
            "abcd-efgh-jkmn-pqrs",
        ] {
            assert!(candidate(answer).is_none(), "{answer:?}");
        }
        assert!(candidate("abcd-efgh-jkmn").is_some());
        assert!(candidate("ABCD EFGH JKMN").is_some());
        assert!(candidate("abcd-efgh-jkm!").is_none());
    }

    #[test]
    fn imported_scratch_codes_verify() {
        let stored = hash_imported("12345678").expect("hash");
        assert_eq!(stored.lookup, "1234");
        assert!(
            scratch_candidate(" 12345678 ")
                .expect("shape")
                .matches(&stored.phc)
        );
        assert!(
            !scratch_candidate("12345679")
                .expect("shape")
                .matches(&stored.phc)
        );
        assert!(scratch_candidate("1234567").is_none());
    }
}
