//! Property tests over the parsers that read outside input: module
//! arguments and config files, rhosts, answers, and the import formats.
//! None may panic on any input, and what they accept must be well formed.
//! (cargo-fuzz needs a nightly compiler, which this machine does not have;
//! `scripts/fuzz.sh` runs these with many more cases.)

use crate::common;

use std::net::IpAddr;

use pam_totp::auth::{self, Clock, Conversation, Outcome, Request};
use pam_totp::config::{self, Config};
use pam_totp::import::{google_authenticator, oath};
use pam_totp::network;
use pam_totp::recovery;
use pam_totp::store::{SqliteStore, StoreLocation};
use proptest::prelude::*;
use zeroize::Zeroizing;

/// Arbitrary text with plenty of the characters parsers care about.
fn texty() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-z_=\\[\\] ,./:0-9%\"#\\-]{0,40}",
        "(db|config|trusted|window|prompt|unenrolled|enroll|debug|hotp_window|issuer|backoff_after|backoff_max|user_limit|fail_delay)=[ -~]{0,30}",
    ]
}

proptest! {
    #[test]
    fn config_arguments_never_panic_and_unknown_keys_fail(args in proptest::collection::vec(texty(), 0..6)) {
        // A missing explicit config file keeps the machine's own file out.
        let mut all = vec!["config=/nonexistent/pam_totp_proptest.conf".to_string()];
        all.extend(args.iter().cloned());
        prop_assert!(config::load(&all).is_err());
        if let Ok(c) = config::load(&args) {
            prop_assert!(c.window <= config::MAX_WINDOW);
            let absolute_or_url = match &c.db {
                StoreLocation::Sqlite(path) => path.is_absolute(),
                StoreLocation::Postgres(target) => target.url.starts_with("postgres"),
            };
            prop_assert!(absolute_or_url);
            prop_assert!(!c.prompt.chars().any(char::is_control));
        }
    }

    #[test]
    fn config_files_never_panic(text in any::<Vec<u8>>()) {
        let dir = common::trusted_tempdir();
        let path = dir.path().join("pam_totp.conf");
        std::fs::write(&path, &text).expect("write");
        let _ = config::load(&[format!("config={}", path.display())]);
    }

    #[test]
    fn rhosts_are_trusted_only_as_ip_literals(rhost in texty()) {
        let everything = vec![
            network::parse_block("0.0.0.0/0").expect("v4"),
            network::parse_block("::/0").expect("v6"),
        ];
        let trusted = network::is_trusted(Some(&rhost), &everything);
        prop_assert_eq!(trusted, rhost.parse::<IpAddr>().is_ok());
        if let Some(ip) = network::rhost_ip(&rhost) {
            prop_assert_eq!(ip.to_string().parse::<IpAddr>().ok(), Some(ip));
        }
    }

    #[test]
    fn cidr_blocks_never_panic(text in texty()) {
        if let Ok(net) = network::parse_block(&text) {
            prop_assert_eq!(net.trunc(), net);
        }
    }

    #[test]
    fn recovery_candidates_never_look_like_totp(answer in texty()) {
        if let Some(c) = recovery::candidate(&answer) {
            prop_assert_eq!(c.lookup.len(), 4);
            prop_assert!(!(answer.trim().len() <= 8 && answer.trim().bytes().all(|b| b.is_ascii_digit())));
        }
    }

    #[test]
    fn import_parsers_never_panic(text in any::<String>(), lines in proptest::collection::vec(texty(), 0..8)) {
        let _ = google_authenticator::parse(&text, "u");
        let _ = oath::parse(&text);
        let joined = lines.join("\n");
        let _ = google_authenticator::parse(&joined, "u");
        if let Ok(tokens) = oath::parse(&joined) {
            for t in tokens {
                prop_assert!(t.params.validate().is_ok());
            }
        }
    }
}

struct FixedClock;
impl Clock for FixedClock {
    fn unix_time(&self) -> Result<u64, String> {
        Ok(1_111_111_111)
    }
    fn booted_at(&self) -> Result<u64, String> {
        Ok(0)
    }
}

struct NoGroups;
impl pam_totp::sys::Accounts for NoGroups {
    fn canonical_user(&self, name: &str) -> Result<Option<String>, String> {
        Ok(Some(name.to_string()))
    }
    fn groups_of(&self, _: &str) -> Result<Vec<String>, String> {
        Ok(Vec::new())
    }
    fn group_exists(&self, _: &str) -> Result<bool, String> {
        Ok(false)
    }
}

struct Says(Vec<u8>);
impl Conversation for Says {
    fn ask_hidden(&mut self, _: &str) -> Result<Zeroizing<Vec<u8>>, String> {
        Ok(Zeroizing::new(self.0.clone()))
    }
    fn info(&mut self, _: &str) -> Result<(), String> {
        Ok(())
    }
    fn set_authtok(&mut self, _: &[u8]) -> Result<(), String> {
        Ok(())
    }
}

proptest! {
    // Each case builds a store on disk: fewer cases by default
    // (PROPTEST_CASES still overrides, as scripts/fuzz.sh does).
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Arbitrary answer bytes never panic the decision and never log in:
    /// the only accepted answers are the right code (1 in a million, and
    /// this key's codes at this time are excluded) and recovery codes
    /// (none exist here).
    #[test]
    fn arbitrary_answers_never_get_in(answers in proptest::collection::vec(any::<Vec<u8>>(), 1..16)) {
        let dir = common::private_tempdir();
        let db = dir.path().join("totp.db");
        let store = SqliteStore::create(&db).expect("store");
        use pam_totp::store::{Enrollment, EnrollMode, Kind, Store, Token};
        let secret = pam_totp::secret::Secret::from_base32(common::KEY).expect("key");
        let right: Vec<String> = (0..3u64).map(|d| {
            let step = 1_111_111_111 / 30 - 1 + d;
            pam_totp::otp::format_code(pam_totp::otp::hotp(secret.as_bytes(), step, pam_totp::otp::Algorithm::Sha1, 6), 6).to_string()
        }).collect();
        store.enroll(&[Enrollment { token: Token {
            id: 0, user: "p".into(), device: "default".into(), kind: Kind::Totp, secret,
            params: Default::default(), created: 0, confirmed: Some(0), last_step: None, life: Default::default(), stored_key: Default::default(),
        }, recovery: None }], EnrollMode::Add).expect("enroll");
        drop(store);
        let config = Config { limits: pam_totp::ratelimit::Limits { backoff_after: 1000, user_limit: 0, ..Default::default() }, ..Config::default() };
        for answer in answers {
            let text = String::from_utf8_lossy(&answer).trim().to_string();
            prop_assume!(!right.contains(&text));
            let decision = auth::decide(
                &config,
                Request { user: "p", rhost: Some("192.0.2.1"), ssh_key: &pam_totp::sshkey::LoginKey::NoKey },
                |_| SqliteStore::open(&db),
                &FixedClock,
                &NoGroups,
                &mut Says(answer),
            );
            prop_assert!(!decision.outcome.is_success(), "{:?}", decision.outcome);
            prop_assert!(!matches!(decision.outcome, Outcome::StoreError(_)));
        }
    }
}
