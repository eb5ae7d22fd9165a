//! The decision: configuration + store + clock + rhost + the user's answer
//! in, one `Outcome` out. No PAM here: `pam.rs` supplies the conversation
//! and turns the outcome into a return code and a log line.

use std::time::{SystemTime, UNIX_EPOCH};

use zeroize::Zeroizing;

use crate::config::{self, Config, Unenrolled};
use crate::network;
use crate::otp;
use crate::store::{Claim, Store, StoreError};

/// What sshd hands to PAM instead of the user's answer when it has already
/// decided to refuse the login (unknown user, root under `PermitRootLogin
/// prohibit-password`, a denied user): this pattern, repeated or cut to the
/// length of what the user typed. sshd keeps asking so the client cannot
/// tell; we recognise it so the log can say so.
pub const SSHD_PLACEHOLDER: &[u8] = b"\x08\n\r\x7fINCORRECT";

/// True for a non-empty answer made of sshd's placeholder pattern. No one
/// types it: it starts with a backspace and a newline.
pub fn is_sshd_placeholder(answer: &[u8]) -> bool {
    !answer.is_empty()
        && answer
            .iter()
            .enumerate()
            .all(|(i, b)| *b == SSHD_PLACEHOLDER[i % SSHD_PLACEHOLDER.len()])
}

/// Every way a login through this module can end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The code was right and its step is now marked used.
    /// `offset` is the matched step minus the current step (clock drift).
    Accepted {
        step: u64,
        offset: i64,
    },
    /// The client's address is inside `trusted=`: no code asked.
    TrustedNetwork {
        ip: String,
    },
    /// No token and `unenrolled=deny`: prompted anyway, then denied.
    NotEnrolled,
    /// No token and `unenrolled=allow`: this module steps aside.
    NotEnrolledIgnored,
    /// Right shape, wrong code.
    WrongCode,
    /// Not `digits` decimal digits after trimming whitespace.
    MalformedAnswer,
    /// A right code whose step (or a later one) was already used.
    Reused {
        step: u64,
    },
    /// sshd's stand-in answer for a login it already refuses.
    RefusedBySshd,
    /// No usable PAM_USER.
    NoUser(String),
    ConfigError(String),
    StoreError(String),
    ConversationError(String),
    ClockError(String),
}

impl Outcome {
    /// True only for the ends that let the user through.
    pub fn is_success(&self) -> bool {
        matches!(
            self,
            Outcome::Accepted { .. } | Outcome::TrustedNetwork { .. }
        )
    }
}

/// The outcome plus, when the configuration says `debug`, the steps that
/// led to it (never a code or a key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub outcome: Outcome,
    pub trace: Vec<String>,
}

/// Who is logging in and from where, as PAM reports it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub user: &'a str,
    pub rhost: Option<&'a str>,
}

/// The time source; tests use a fixed one.
pub trait Clock {
    /// Seconds since the Unix epoch.
    fn unix_time(&self) -> Result<u64, String>;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn unix_time(&self) -> Result<u64, String> {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .map_err(|_| "system clock is before 1970".to_string())
    }
}

/// Asks the user for the code.
pub trait Conversation {
    /// One prompt with echo off; returns what the user typed.
    fn ask_hidden(&mut self, prompt: &str) -> Result<Zeroizing<Vec<u8>>, String>;
}

/// Loads the configuration from the module arguments, then decides.
pub fn authenticate<S: Store>(
    args: &[String],
    request: Request<'_>,
    open_store: impl FnOnce(&Config) -> Result<S, StoreError>,
    clock: &dyn Clock,
    conversation: &mut dyn Conversation,
) -> Decision {
    let config = match config::load(args) {
        Ok(config) => config,
        Err(e) => {
            return Decision {
                outcome: Outcome::ConfigError(e.to_string()),
                trace: Vec::new(),
            };
        }
    };
    let outcome = decide(&config, request, open_store, clock, conversation);
    let trace = if config.debug {
        vec![format!(
            "config: db={} window={} trusted={} unenrolled={:?} prompt={:?}",
            config.db.display(),
            config.window,
            config
                .trusted
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(","),
            config.unenrolled,
            config.prompt,
        )]
    } else {
        Vec::new()
    };
    Decision { outcome, trace }
}

/// The decision for one login with a valid configuration.
pub fn decide<S: Store>(
    config: &Config,
    request: Request<'_>,
    open_store: impl FnOnce(&Config) -> Result<S, StoreError>,
    clock: &dyn Clock,
    conversation: &mut dyn Conversation,
) -> Outcome {
    if request.user.is_empty() {
        return Outcome::NoUser("empty user name".to_string());
    }
    if network::is_trusted(request.rhost, &config.trusted) {
        let ip = request
            .rhost
            .and_then(network::rhost_ip)
            .map(|ip| ip.to_string())
            .unwrap_or_default();
        return Outcome::TrustedNetwork { ip };
    }

    let store = match open_store(config) {
        Ok(store) => store,
        Err(e) => return Outcome::StoreError(e.to_string()),
    };
    let token = match store.token(request.user) {
        Ok(token) => token,
        Err(e) => return Outcome::StoreError(e.to_string()),
    };
    if token.is_none() && config.unenrolled == Unenrolled::Allow {
        return Outcome::NotEnrolledIgnored;
    }

    // Prompt even for unenrolled users, so the prompt reveals nothing.
    let answer = match conversation.ask_hidden(&config.prompt) {
        Ok(answer) => answer,
        Err(e) => return Outcome::ConversationError(e),
    };
    if is_sshd_placeholder(&answer) {
        return Outcome::RefusedBySshd;
    }
    let Some(token) = token else {
        return Outcome::NotEnrolled;
    };

    let Some(code) = well_formed_code(&answer, token.params.digits) else {
        return Outcome::MalformedAnswer;
    };
    let now = match clock.unix_time() {
        Ok(now) => now,
        Err(e) => return Outcome::ClockError(e),
    };
    let current = otp::step_at(now, token.params.period);
    let Some(step) = otp::verify_window(
        token.secret.as_bytes(),
        code,
        current,
        config.window,
        &token.params,
    ) else {
        return Outcome::WrongCode;
    };
    match store.claim_step(request.user, step) {
        Ok(Claim::Claimed) => Outcome::Accepted {
            step,
            offset: step as i64 - current as i64,
        },
        Ok(Claim::AlreadyUsed) => Outcome::Reused { step },
        Err(e) => Outcome::StoreError(e.to_string()),
    }
}

/// The answer as a code: surrounding whitespace trimmed, then exactly
/// `digits` ASCII digits, or `None`.
fn well_formed_code(answer: &[u8], digits: u32) -> Option<&str> {
    let text = std::str::from_utf8(answer).ok()?.trim();
    let ok = text.len() == digits as usize && text.bytes().all(|b| b.is_ascii_digit());
    ok.then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otp::{Algorithm, Params, format_code, hotp};
    use crate::secret::Secret;
    use crate::store::{SqliteStore, Token};

    const KEY_B32: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
    const NOW: u64 = 1_111_111_111;

    struct FixedClock(u64);
    impl Clock for FixedClock {
        fn unix_time(&self) -> Result<u64, String> {
            Ok(self.0)
        }
    }

    /// Answers with a fixed text and records the prompts it saw.
    struct Scripted {
        answer: Result<Vec<u8>, String>,
        prompts: Vec<String>,
    }
    impl Scripted {
        fn says(answer: &str) -> Scripted {
            Scripted {
                answer: Ok(answer.as_bytes().to_vec()),
                prompts: Vec::new(),
            }
        }
    }
    impl Conversation for Scripted {
        fn ask_hidden(&mut self, prompt: &str) -> Result<Zeroizing<Vec<u8>>, String> {
            self.prompts.push(prompt.to_string());
            self.answer.clone().map(Zeroizing::new)
        }
    }

    fn store_with_alice() -> SqliteStore {
        let store = SqliteStore::open_in_memory().expect("store");
        store
            .enroll(
                &Token {
                    user: "alice".to_string(),
                    secret: Secret::from_base32(KEY_B32).expect("key"),
                    params: Params::default(),
                    created: 0,
                    last_step: None,
                },
                false,
            )
            .expect("enroll");
        store
    }

    fn code_at(time: u64) -> String {
        let key = Secret::from_base32(KEY_B32).expect("key");
        format_code(hotp(key.as_bytes(), time / 30, Algorithm::Sha1, 6), 6).to_string()
    }

    fn run_with(
        config: &Config,
        store: &SqliteStore,
        rhost: Option<&str>,
        conv: &mut Scripted,
    ) -> Outcome {
        decide(
            config,
            Request {
                user: "alice",
                rhost,
            },
            |_| Ok(store),
            &FixedClock(NOW),
            conv,
        )
    }

    fn run(store: &SqliteStore, answer: &str) -> Outcome {
        run_with(
            &Config::default(),
            store,
            Some("203.0.113.7"),
            &mut Scripted::says(answer),
        )
    }

    #[test]
    fn right_code_once_then_reused() {
        let store = store_with_alice();
        let code = code_at(NOW);
        assert_eq!(
            run(&store, &code),
            Outcome::Accepted {
                step: NOW / 30,
                offset: 0
            }
        );
        assert_eq!(run(&store, &code), Outcome::Reused { step: NOW / 30 });
    }

    #[test]
    fn older_code_after_newer_is_reused() {
        let store = store_with_alice();
        assert!(run(&store, &code_at(NOW)).is_success());
        assert_eq!(
            run(&store, &code_at(NOW - 30)),
            Outcome::Reused { step: NOW / 30 - 1 }
        );
        assert!(run(&store, &code_at(NOW + 30)).is_success());
    }

    #[test]
    fn answers_are_trimmed_and_shape_checked() {
        let store = store_with_alice();
        assert!(run(&store, &format!("  {}\n", code_at(NOW))).is_success());
        for bad in ["", "abcdef", "12345", "1234567", "12 3456", "١٢٣٤٥٦"] {
            assert_eq!(run(&store, bad), Outcome::MalformedAnswer, "{bad:?}");
        }
        let wrong = if code_at(NOW) == "000000" {
            "111111"
        } else {
            "000000"
        };
        assert_eq!(run(&store, wrong), Outcome::WrongCode);
    }

    #[test]
    fn window_bounds_the_accepted_steps() {
        let store = store_with_alice();
        let strict = Config {
            window: 0,
            ..Config::default()
        };
        let previous = code_at(NOW - 30);
        assert_eq!(
            run_with(&strict, &store, None, &mut Scripted::says(&previous)),
            Outcome::WrongCode
        );
        assert_eq!(
            run_with(
                &Config::default(),
                &store,
                None,
                &mut Scripted::says(&previous)
            ),
            Outcome::Accepted {
                step: NOW / 30 - 1,
                offset: -1
            }
        );
    }

    #[test]
    fn trusted_network_skips_the_prompt() {
        let store = store_with_alice();
        let config = Config {
            trusted: vec![crate::network::parse_block("10.0.0.0/8").expect("net")],
            ..Config::default()
        };
        for rhost in ["10.2.3.4", "::ffff:10.2.3.4"] {
            let mut conv = Scripted::says("");
            assert_eq!(
                run_with(&config, &store, Some(rhost), &mut conv),
                Outcome::TrustedNetwork {
                    ip: "10.2.3.4".to_string()
                }
            );
            assert!(conv.prompts.is_empty());
        }
        for rhost in [
            Some("11.0.0.1"),
            Some("gateway.example.org"),
            Some(""),
            None,
        ] {
            let mut conv = Scripted::says("");
            assert_eq!(
                run_with(&config, &store, rhost, &mut conv),
                Outcome::MalformedAnswer
            );
            assert_eq!(conv.prompts, ["Verification code: "]);
        }
    }

    #[test]
    fn unenrolled_users_are_prompted_then_denied_or_ignored() {
        let store = SqliteStore::open_in_memory().expect("store");
        let mut conv = Scripted::says("123456");
        assert_eq!(
            run_with(&Config::default(), &store, None, &mut conv),
            Outcome::NotEnrolled
        );
        assert_eq!(conv.prompts.len(), 1, "prompted like an enrolled user");

        let allow = Config {
            unenrolled: Unenrolled::Allow,
            ..Config::default()
        };
        let mut conv = Scripted::says("123456");
        assert_eq!(
            run_with(&allow, &store, None, &mut conv),
            Outcome::NotEnrolledIgnored
        );
        assert!(conv.prompts.is_empty());
    }

    #[test]
    fn sshd_placeholder_is_recognised_at_any_length() {
        let store = store_with_alice();
        // sshd cuts or repeats the pattern to the length the user typed.
        for answer in [
            "\x08",
            "\x08\n\r\x7fIN",
            "\x08\n\r\x7fINCORRECT",
            "\x08\n\r\x7fINCORRECT\x08\n\r",
        ] {
            assert_eq!(run(&store, answer), Outcome::RefusedBySshd, "{answer:?}");
        }
        assert!(!is_sshd_placeholder(b""));
        assert!(!is_sshd_placeholder(b"INCORRECT"));
        assert!(!is_sshd_placeholder(b"\x08\n\r\x7fINCORRECX"));
        // Unenrolled users get the same recognition.
        let empty = SqliteStore::open_in_memory().expect("store");
        assert_eq!(run(&empty, "\x08\n\r\x7fIN"), Outcome::RefusedBySshd);
    }

    #[test]
    fn failures_deny() {
        let store = store_with_alice();
        let mut conv = Scripted {
            answer: Err("conversation failed".to_string()),
            prompts: Vec::new(),
        };
        assert!(matches!(
            run_with(&Config::default(), &store, None, &mut conv),
            Outcome::ConversationError(_)
        ));

        let broken = decide::<SqliteStore>(
            &Config::default(),
            Request {
                user: "alice",
                rhost: None,
            },
            |_| Err(StoreError::Missing("/nowhere".to_string())),
            &FixedClock(NOW),
            &mut Scripted::says("123456"),
        );
        assert!(matches!(broken, Outcome::StoreError(ref e) if e.contains("/nowhere")));

        let no_user = decide(
            &Config::default(),
            Request {
                user: "",
                rhost: None,
            },
            |_| SqliteStore::open_in_memory(),
            &FixedClock(NOW),
            &mut Scripted::says("123456"),
        );
        assert!(matches!(no_user, Outcome::NoUser(_)));

        let bad_config = authenticate(
            &["window=abc".to_string()],
            Request {
                user: "alice",
                rhost: None,
            },
            |_| SqliteStore::open_in_memory(),
            &FixedClock(NOW),
            &mut Scripted::says("123456"),
        );
        assert!(matches!(bad_config.outcome, Outcome::ConfigError(ref e) if e.contains("window")));
        assert!(bad_config.trace.is_empty());
    }

    #[test]
    fn only_accepted_and_trusted_are_success() {
        assert!(!Outcome::NotEnrolledIgnored.is_success());
        assert!(!Outcome::WrongCode.is_success());
        assert!(!Outcome::Reused { step: 1 }.is_success());
    }
}
