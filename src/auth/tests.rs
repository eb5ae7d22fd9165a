//! The decision without PAM: a fixed clock, a scripted conversation and a
//! real SQLite store in a temporary directory (each login opens its own
//! connection, as each sshd child does).

use std::path::PathBuf;

use super::*;
use crate::config::Config;
use crate::otp::{Algorithm, format_code, hotp};
use crate::ratelimit::Lock;
use crate::recovery;
use crate::sshkey::LoginKey;
use crate::store::{EnrollMode, Enrollment, SqliteStore, Store};

const KEY_B32: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
const NOW: u64 = 1_111_111_111;

struct FixedClock(u64);
impl Clock for FixedClock {
    fn unix_time(&self) -> Result<u64, String> {
        Ok(self.0)
    }
    fn booted_at(&self) -> Result<u64, String> {
        Ok(0)
    }
}

/// Every name is a user of its own (except `Stranger`-style names that
/// start with "nobody-"), in no group; `BOB` and `bob@site` are `bob`, as
/// a case-insensitive name service with aliases would say.
struct NoGroups;
impl crate::sys::Accounts for NoGroups {
    fn canonical_user(&self, name: &str) -> Result<Option<String>, String> {
        canonical(name)
    }
    fn groups_of(&self, _: &str) -> Result<Vec<String>, String> {
        Ok(Vec::new())
    }
    fn group_exists(&self, _: &str) -> Result<bool, String> {
        Ok(false)
    }
}

fn canonical(name: &str) -> Result<Option<String>, String> {
    if name.starts_with("nobody-") {
        return Ok(None);
    }
    if name == "nss-down" {
        return Err("the directory is down".to_string());
    }
    let base = name.split('@').next().unwrap_or(name);
    Ok(Some(base.to_ascii_lowercase()))
}

/// A clock whose machine booted at `booted` (or cannot say when).
struct BootedClock {
    now: u64,
    booted: Result<u64, String>,
}
impl Clock for BootedClock {
    fn unix_time(&self) -> Result<u64, String> {
        Ok(self.now)
    }
    fn booted_at(&self) -> Result<u64, String> {
        self.booted.clone()
    }
}

/// Answers with fixed texts (one per prompt) and records what it saw.
struct Scripted {
    answers: Vec<Result<Vec<u8>, String>>,
    prompts: Vec<String>,
    infos: Vec<String>,
}

impl Scripted {
    fn says(answer: &str) -> Scripted {
        Scripted::say(&[answer])
    }
    fn say(answers: &[&str]) -> Scripted {
        Scripted {
            answers: answers.iter().map(|a| Ok(a.as_bytes().to_vec())).collect(),
            prompts: Vec::new(),
            infos: Vec::new(),
        }
    }
}

impl Conversation for Scripted {
    fn ask_hidden(&mut self, prompt: &str) -> Result<Zeroizing<Vec<u8>>, String> {
        self.prompts.push(prompt.to_string());
        if self.answers.is_empty() {
            return Err("no more answers".to_string());
        }
        self.answers.remove(0).map(Zeroizing::new)
    }
    fn info(&mut self, text: &str) -> Result<(), String> {
        self.infos.push(text.to_string());
        Ok(())
    }
    fn set_authtok(&mut self, _: &[u8]) -> Result<(), String> {
        Ok(())
    }
}

struct World {
    _dir: tempfile::TempDir,
    db: PathBuf,
}

impl World {
    fn empty() -> World {
        let dir = crate::trust::test_dir();
        let db = dir.path().join("totp.db");
        SqliteStore::create(&db).expect("create");
        World { _dir: dir, db }
    }

    fn with_alice() -> World {
        let world = World::empty();
        world.add("alice", DEFAULT_DEVICE, Kind::Totp, KEY_B32, true);
        world
    }

    fn store(&self) -> SqliteStore {
        SqliteStore::open(&self.db).expect("open")
    }

    fn add(&self, user: &str, device: &str, kind: Kind, key: &str, active: bool) {
        let token = Token {
            id: 0,
            user: user.to_string(),
            device: device.to_string(),
            kind,
            secret: Secret::from_base32(key).expect("key"),
            params: Params::default(),
            created: 0,
            confirmed: active.then_some(0),
            last_step: None,
            life: Default::default(),
            stored_key: Default::default(),
        };
        self.add_token(token);
    }

    fn add_token(&self, token: Token) {
        self.store()
            .enroll(
                &[Enrollment {
                    token,
                    recovery: None,
                }],
                EnrollMode::Add,
            )
            .expect("enroll");
    }

    /// One login whose whole auth stack succeeds when this module does:
    /// what it staged is committed, as the account or setcred phase would.
    fn run_with(
        &self,
        config: &Config,
        user: &str,
        rhost: Option<&str>,
        conv: &mut dyn Conversation,
    ) -> Outcome {
        let decision = self.decide_only(config, user, rhost, conv);
        self.stack_succeeds(config, user, NOW, decision)
    }

    /// The auth phase alone: another module of the stack fails afterwards
    /// (a wrong password), so nothing staged is ever committed.
    fn decide_only(
        &self,
        config: &Config,
        user: &str,
        rhost: Option<&str>,
        conv: &mut dyn Conversation,
    ) -> Decision {
        decide(
            config,
            Request {
                user,
                rhost,
                ssh_key: &LoginKey::NoKey,
            },
            |_| SqliteStore::open(&self.db),
            &FixedClock(NOW),
            &NoGroups,
            conv,
        )
    }

    fn stack_succeeds(&self, config: &Config, user: &str, now: u64, decision: Decision) -> Outcome {
        if let (true, Some(nonce)) = (decision.outcome.is_success(), &decision.staged) {
            let commit = commit_staged(
                config,
                user,
                nonce,
                |_| SqliteStore::open(&self.db),
                &FixedClock(now),
                &NoGroups,
            );
            assert!(
                matches!(commit, Commit::Enrolled { .. } | Commit::Grace { .. }),
                "{commit:?}"
            );
        }
        decision.outcome
    }

    fn run_booted(&self, user: &str, booted: Result<u64, String>, answer: &str) -> Outcome {
        decide(
            &Config::default(),
            Request {
                user,
                rhost: Some("203.0.113.7"),
                ssh_key: &LoginKey::NoKey,
            },
            |_| SqliteStore::open_for_login(&self.db),
            &BootedClock { now: NOW, booted },
            &NoGroups,
            &mut Scripted::says(answer),
        )
        .outcome
    }

    fn run(&self, answer: &str) -> Outcome {
        self.run_with(
            &Config::default(),
            "alice",
            Some("203.0.113.7"),
            &mut Scripted::says(answer),
        )
    }
}

fn code_with(key: &str, counter: u64) -> String {
    let key = Secret::from_base32(key).expect("key");
    format_code(hotp(key.as_bytes(), counter, Algorithm::Sha1, 6), 6).to_string()
}

fn code_at(time: u64) -> String {
    code_with(KEY_B32, time / 30)
}

fn accepted(step: u64, offset: i64) -> Outcome {
    Outcome::Accepted {
        device: DEFAULT_DEVICE.to_string(),
        kind: Kind::Totp,
        step,
        offset: Some(offset),
    }
}

#[test]
fn right_code_once_then_reused() {
    let world = World::with_alice();
    let code = code_at(NOW);
    assert_eq!(world.run(&code), accepted(NOW / 30, 0));
    assert_eq!(
        world.run(&code),
        Outcome::Reused {
            device: DEFAULT_DEVICE.to_string(),
            step: NOW / 30
        }
    );
}

#[test]
fn older_code_after_newer_is_reused() {
    let world = World::with_alice();
    assert!(world.run(&code_at(NOW)).is_success());
    assert!(matches!(
        world.run(&code_at(NOW - 30)),
        Outcome::Reused { step, .. } if step == NOW / 30 - 1
    ));
    assert!(world.run(&code_at(NOW + 30)).is_success());
}

#[test]
fn answers_are_trimmed_and_shape_checked() {
    let world = World::with_alice();
    assert!(world.run(&format!("  {}\n", code_at(NOW))).is_success());
    // More bad answers than the back-off allows from one address.
    let patient = Config {
        limits: crate::ratelimit::Limits {
            backoff_after: 100,
            ..Default::default()
        },
        ..Config::default()
    };
    for bad in [
        "",
        "abcdef",
        "12345",
        "1234567",
        "12  3456",
        "1 23 456",
        "12\t3456",
        "١٢٣٤٥٦",
    ] {
        assert_eq!(
            world.run_with(&patient, "alice", None, &mut Scripted::says(bad)),
            Outcome::MalformedAnswer,
            "{bad:?}"
        );
    }
    let wrong = if code_at(NOW) == "000000" {
        "111111"
    } else {
        "000000"
    };
    assert_eq!(world.run(wrong), Outcome::WrongCode);
    // As apps show it: two groups with one space between.
    let next = code_at(NOW + 30);
    let grouped = format!(" {} {}\n", &next[..3], &next[3..]);
    assert!(matches!(world.run(&grouped), Outcome::Accepted { .. }));
}

#[test]
fn window_bounds_the_accepted_steps() {
    let world = World::with_alice();
    let strict = Config {
        window: 0,
        ..Config::default()
    };
    let previous = code_at(NOW - 30);
    assert_eq!(
        world.run_with(&strict, "alice", None, &mut Scripted::says(&previous)),
        Outcome::WrongCode
    );
    assert_eq!(
        world.run_with(
            &Config::default(),
            "alice",
            None,
            &mut Scripted::says(&previous)
        ),
        accepted(NOW / 30 - 1, -1)
    );
}

#[test]
fn trusted_network_skips_the_prompt() {
    let world = World::with_alice();
    let config = Config {
        trusted: vec![crate::network::parse_block("10.0.0.0/8").expect("net")],
        ..Config::default()
    };
    for rhost in ["10.2.3.4", "::ffff:10.2.3.4"] {
        let mut conv = Scripted::says("");
        assert_eq!(
            world.run_with(&config, "alice", Some(rhost), &mut conv),
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
            world.run_with(&config, "alice", rhost, &mut conv),
            Outcome::MalformedAnswer
        );
        assert_eq!(conv.prompts, ["Verification code: "]);
    }
}

#[test]
fn unenrolled_and_pending_users_are_prompted_then_denied_or_ignored() {
    let world = World::empty();
    world.add("pat", DEFAULT_DEVICE, Kind::Totp, KEY_B32, false);
    let mut conv = Scripted::says("123456");
    assert_eq!(
        world.run_with(&Config::default(), "nobody", None, &mut conv),
        Outcome::NotEnrolled { pending: false }
    );
    assert_eq!(conv.prompts.len(), 1, "prompted like an enrolled user");

    // A pending token logs nobody in, even with its right code.
    assert_eq!(
        world.run_with(
            &Config::default(),
            "pat",
            None,
            &mut Scripted::says(&code_at(NOW))
        ),
        Outcome::NotEnrolled { pending: true }
    );

    let allow = Config {
        unenrolled: Unenrolled::Allow,
        ..Config::default()
    };
    for user in ["nobody", "pat"] {
        let mut conv = Scripted::says("123456");
        assert_eq!(
            world.run_with(&allow, user, None, &mut conv),
            Outcome::NotEnrolledIgnored
        );
        assert!(conv.prompts.is_empty());
    }
}

#[test]
fn a_code_from_any_confirmed_device_works_each_with_its_own_step() {
    let world = World::with_alice();
    let tablet = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
    world.add("alice", "tablet", Kind::Totp, tablet, true);
    let tablet_code = code_with(tablet, NOW / 30);
    assert!(matches!(
        world.run(&tablet_code),
        Outcome::Accepted { ref device, .. } if device == "tablet"
    ));
    // The phone's code for the same step still works: its own last step.
    assert!(matches!(
        world.run(&code_at(NOW)),
        Outcome::Accepted { ref device, .. } if device == DEFAULT_DEVICE
    ));
    assert!(matches!(world.run(&tablet_code), Outcome::Reused { .. }));
}

#[test]
fn hotp_tokens_look_ahead_and_advance_past_the_match() {
    let world = World::empty();
    world.add("hank", DEFAULT_DEVICE, Kind::Hotp, KEY_B32, true);
    let run = |answer: &str| {
        world.run_with(
            &Config::default(),
            "hank",
            None,
            &mut Scripted::says(answer),
        )
    };
    assert!(matches!(
        run(&code_with(KEY_B32, 3)),
        Outcome::Accepted {
            kind: Kind::Hotp,
            step: 3,
            offset: None,
            ..
        }
    ));
    // Counters up to the one used are spent; later ones still work.
    assert_eq!(run(&code_with(KEY_B32, 2)), Outcome::WrongCode);
    assert_eq!(run(&code_with(KEY_B32, 3)), Outcome::WrongCode);
    assert!(run(&code_with(KEY_B32, 4)).is_success());
    // Beyond the look-ahead (10 by default) is refused.
    assert_eq!(run(&code_with(KEY_B32, 20)), Outcome::WrongCode);
}

#[test]
fn an_hotp_counter_never_climbs_to_where_totp_steps_are() {
    // Enrolled just below the bound (the highest counter enrollment
    // takes), the fob's next codes work up to the bound and not past it,
    // even within the look-ahead: from there on a code of its key could be
    // one it gave as TOTP (`store::MAX_HOTP_COUNTER`).
    let world = World::empty();
    let bound = crate::store::MAX_HOTP_COUNTER;
    let token = Token {
        id: 0,
        user: "hank".to_string(),
        device: DEFAULT_DEVICE.to_string(),
        kind: Kind::Hotp,
        secret: Secret::from_base32(KEY_B32).expect("key"),
        params: Params::default(),
        created: 0,
        confirmed: Some(0),
        last_step: Some(bound - 3),
        life: Default::default(),
        stored_key: Default::default(),
    };
    world.add_token(token);
    let run = |counter: u64| {
        world.run_with(
            &Config::default(),
            "hank",
            None,
            &mut Scripted::says(&code_with(KEY_B32, counter)),
        )
    };
    assert_eq!(run(bound), Outcome::WrongCode, "the bound itself");
    assert_eq!(run(bound + 1), Outcome::WrongCode, "past the bound");
    assert!(run(bound - 1).is_success(), "the last counter below it");
    assert_eq!(
        run(bound),
        Outcome::WrongCode,
        "next in line, but the bound"
    );
    let tokens = world.store().tokens("hank").expect("tokens");
    assert_eq!(tokens[0].last_step, Some(bound - 1));
}

#[test]
fn recovery_codes_work_once_and_report_what_remains() {
    let world = World::with_alice();
    let codes = recovery::generate().expect("codes");
    let hashes: Vec<_> = codes.iter().map(|(_, h)| h.clone()).collect();
    world
        .store()
        .replace_recovery("alice", &hashes)
        .expect("store");
    let first = codes[0].0.as_str().to_string();
    assert_eq!(
        world.run(&first),
        Outcome::RecoveryAccepted { remaining: 9 }
    );
    assert_eq!(world.run(&first), Outcome::WrongRecoveryCode);
    assert_eq!(
        world.run(&codes[1].0.as_str().to_uppercase().replace('-', "")),
        Outcome::RecoveryAccepted { remaining: 8 }
    );
    assert_eq!(world.run("zzzz-zzzz-zzzz"), Outcome::WrongRecoveryCode);
}

#[test]
fn imported_scratch_codes_are_tried_after_the_tokens() {
    let world = World::with_alice();
    let scratch = recovery::hash_imported("87654321").expect("hash");
    world
        .store()
        .replace_recovery("alice", &[scratch])
        .expect("store");
    assert_eq!(
        world.run("87654321"),
        Outcome::RecoveryAccepted { remaining: 0 }
    );
    assert_eq!(world.run("87654321"), Outcome::MalformedAnswer);
}

#[test]
fn sshd_placeholder_is_recognised_at_any_length() {
    let world = World::with_alice();
    // sshd cuts or repeats the pattern to the length the user typed.
    for answer in [
        "\x08",
        "\x08\n\r\x7fIN",
        "\x08\n\r\x7fINCORRECT",
        "\x08\n\r\x7fINCORRECT\x08\n\r",
    ] {
        assert_eq!(world.run(answer), Outcome::RefusedBySshd, "{answer:?}");
    }
    assert!(!is_sshd_placeholder(b""));
    assert!(!is_sshd_placeholder(b"INCORRECT"));
    assert!(!is_sshd_placeholder(b"\x08\n\r\x7fINCORRECX"));
    let mut conv = Scripted::says("\x08\n\r\x7fIN");
    assert_eq!(
        world.run_with(&Config::default(), "nobody", None, &mut conv),
        Outcome::RefusedBySshd
    );
}

/// A conversation that reads the key out of the enrollment text and
/// answers the confirmation prompt with its code (or a wrong one).
struct Enrollee {
    /// Confirmation answers that are wrong before the right ones.
    wrong_first: usize,
    shown: Vec<String>,
    prompts: Vec<String>,
}

impl Enrollee {
    fn right() -> Enrollee {
        Enrollee::wrong_first(0)
    }
    fn wrong_first(wrong_first: usize) -> Enrollee {
        Enrollee {
            wrong_first,
            shown: Vec::new(),
            prompts: Vec::new(),
        }
    }
}

impl Conversation for Enrollee {
    fn ask_hidden(&mut self, prompt: &str) -> Result<Zeroizing<Vec<u8>>, String> {
        self.prompts.push(prompt.to_string());
        // Nothing shown: an ordinary code prompt, answered with a guess.
        let Some(key_line) = self
            .shown
            .iter()
            .find_map(|t| t.lines().find_map(|l| l.strip_prefix("Key: ")))
        else {
            return Ok(Zeroizing::new(b"123456".to_vec()));
        };
        let key: String = key_line.split_whitespace().collect();
        let code = code_with(&key, NOW / 30);
        let confirmations = self.prompts.iter().filter(|p| *p == CONFIRM_PROMPT).count();
        let answer = if confirmations > self.wrong_first {
            code
        } else {
            format!("{:06}", (code.parse::<u32>().unwrap_or(0) + 1) % 1_000_000)
        };
        Ok(Zeroizing::new(answer.into_bytes()))
    }
    fn info(&mut self, text: &str) -> Result<(), String> {
        self.shown.push(text.to_string());
        Ok(())
    }
    fn set_authtok(&mut self, _: &[u8]) -> Result<(), String> {
        Ok(())
    }
}

#[test]
fn enrollment_at_login_from_a_trusted_network_or_an_admin_window() {
    let world = World::with_alice();
    let config = Config {
        trusted: vec![crate::network::parse_block("10.0.0.0/8").expect("net")],
        enroll: EnrollAtLogin::Trusted,
        ..Config::default()
    };
    let mut person = Enrollee::right();
    assert_eq!(
        world.run_with(&config, "newbie", Some("10.1.1.1"), &mut person),
        Outcome::EnrolledAtLogin {
            via: EnrollVia::TrustedNetwork
        }
    );
    assert!(person.shown[0].contains('█'), "a QR code is shown");
    assert_eq!(person.prompts, [CONFIRM_PROMPT]);
    // Success is said, with ten recovery codes that the store then holds.
    let said = person.shown.last().expect("a closing message");
    assert!(said.starts_with("Code confirmed"), "{said}");
    let codes: Vec<&str> = said.lines().filter_map(|l| l.strip_prefix("  ")).collect();
    assert_eq!(codes.len(), crate::recovery::COUNT, "{said}");
    assert_eq!(
        world
            .store()
            .recovery_count("newbie")
            .expect("count")
            .unused,
        crate::recovery::COUNT
    );
    // The token is active, and the confirmation code is spent.
    let tokens = world.store().tokens("newbie").expect("q");
    assert_eq!(tokens.len(), 1);
    assert!(tokens[0].is_active());
    assert_eq!(tokens[0].last_step, Some(NOW / 30));
    // Enrolled users from the trusted network just pass.
    assert!(matches!(
        world.run_with(&config, "alice", Some("10.1.1.1"), &mut Scripted::says("")),
        Outcome::TrustedNetwork { .. }
    ));
    // From outside, enroll=trusted offers nothing.
    let mut outsider = Enrollee::right();
    assert_eq!(
        world.run_with(&config, "other", Some("192.0.2.1"), &mut outsider),
        Outcome::NotEnrolled { pending: false }
    );
    assert!(outsider.shown.is_empty());

    // enroll=window: only inside a window the admin opened.
    let windowed = Config {
        enroll: EnrollAtLogin::Window,
        ..Config::default()
    };
    let mut early = Enrollee::right();
    assert_eq!(
        world.run_with(&windowed, "wendy", Some("192.0.2.1"), &mut early),
        Outcome::NotEnrolled { pending: false }
    );
    world
        .store()
        .open_enroll_window("wendy", NOW as i64 + 3600, "root")
        .expect("window");
    let mut wrong = Enrollee::wrong_first(usize::MAX);
    assert!(matches!(
        world.run_with(&windowed, "wendy", Some("192.0.2.1"), &mut wrong),
        Outcome::EnrollmentFailed(_)
    ));
    assert_eq!(
        wrong.prompts, [CONFIRM_PROMPT; CONFIRM_ATTEMPTS as usize],
        "asked again with the same key, then given up"
    );
    assert!(
        world.store().tokens("wendy").expect("q").is_empty(),
        "nothing stored"
    );
    // One mistyped code, then the right one for the same key.
    let mut right = Enrollee::wrong_first(1);
    assert_eq!(
        world.run_with(&windowed, "wendy", Some("192.0.2.1"), &mut right),
        Outcome::EnrolledAtLogin {
            via: EnrollVia::AdminWindow
        }
    );
    assert_eq!(right.prompts, [CONFIRM_PROMPT; 2]);
    assert!(
        right.shown[1].contains("does not match"),
        "{:?}",
        right.shown
    );
    assert_eq!(
        world.store().enroll_window("wendy", 0).expect("q"),
        None,
        "the window closes once used"
    );
}

#[test]
fn failures_deny() {
    let world = World::with_alice();
    let mut conv = Scripted {
        answers: vec![Err("conversation failed".to_string())],
        prompts: Vec::new(),
        infos: Vec::new(),
    };
    assert!(matches!(
        world.run_with(&Config::default(), "alice", None, &mut conv),
        Outcome::ConversationError(_)
    ));

    let broken = decide::<SqliteStore>(
        &Config::default(),
        Request {
            user: "alice",
            rhost: None,
            ssh_key: &LoginKey::NoKey,
        },
        |_| Err(StoreError::Missing("/nowhere".to_string())),
        &FixedClock(NOW),
        &NoGroups,
        &mut Scripted::says("123456"),
    )
    .outcome;
    assert!(
        matches!(broken, Outcome::StoreError(ref e) if e.message.contains("/nowhere") && !e.unavailable)
    );

    let no_user = world.run_with(&Config::default(), "", None, &mut Scripted::says("123456"));
    assert!(matches!(no_user, Outcome::NoUser(_)));

    let bad_config = authenticate(
        &["window=abc".to_string()],
        Request {
            user: "alice",
            rhost: None,
            ssh_key: &LoginKey::NoKey,
        },
        |_| SqliteStore::open(&world.db),
        &FixedClock(NOW),
        &NoGroups,
        &mut Scripted::says("123456"),
    );
    assert!(matches!(bad_config.outcome, Outcome::ConfigError(ref e) if e.contains("window")));
    assert!(bad_config.trace.is_empty());
}

#[test]
fn only_accepting_outcomes_are_success() {
    assert!(!Outcome::NotEnrolledIgnored.is_success());
    assert!(!Outcome::WrongCode.is_success());
    assert!(!Outcome::RecoveryReused.is_success());
    assert!(!Outcome::EnrollmentFailed(String::new()).is_success());
    assert!(Outcome::RecoveryAccepted { remaining: 0 }.is_success());
}

fn wrong_now() -> &'static str {
    if code_at(NOW) == "000000" {
        "111111"
    } else {
        "000000"
    }
}

#[test]
fn back_off_per_source_refuses_even_a_right_code_without_burning_it() {
    let world = World::with_alice();
    let from = |rhost: &str, answer: &str| {
        world.run_with(
            &Config::default(),
            "alice",
            Some(rhost),
            &mut Scripted::says(answer),
        )
    };
    for _ in 0..5 {
        assert_eq!(from("198.51.100.1", wrong_now()), Outcome::WrongCode);
    }
    let right = code_at(NOW);
    assert_eq!(
        from("198.51.100.1", &right),
        Outcome::RateLimited(Lock::Source {
            until: NOW as i64 + 30
        })
    );
    // Another address is not held back, and the code was not burned.
    assert_eq!(from("198.51.100.2", &right), accepted(NOW / 30, 0));
}

#[test]
fn a_success_clears_the_source_count() {
    let world = World::with_alice();
    let config = Config::default();
    for _ in 0..4 {
        world.run_with(
            &config,
            "alice",
            Some("198.51.100.1"),
            &mut Scripted::says(wrong_now()),
        );
    }
    assert!(
        world
            .run_with(
                &config,
                "alice",
                Some("198.51.100.1"),
                &mut Scripted::says(&code_at(NOW))
            )
            .is_success()
    );
    let f = world
        .store()
        .failures("alice", "198.51.100.1", NOW as i64)
        .expect("f");
    assert_eq!(f.source_count, 0);
}

#[test]
fn the_user_ceiling_across_sources_raises_one_alert_and_locks() {
    let world = World::with_alice();
    let config = Config::default();
    let mut alerts = Vec::new();
    for i in 0..20 {
        let decision = decide(
            &config,
            Request {
                user: "alice",
                rhost: Some(&format!("203.0.113.{i}")),
                ssh_key: &LoginKey::NoKey,
            },
            |_| SqliteStore::open(&world.db),
            &FixedClock(NOW),
            &NoGroups,
            &mut Scripted::says(wrong_now()),
        );
        assert_eq!(decision.outcome, Outcome::WrongCode);
        alerts.extend(decision.alerts);
    }
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert!(alerts[0].contains("reached 20 failed codes"), "{alerts:?}");
    assert_eq!(
        world.run_with(
            &config,
            "alice",
            Some("192.0.2.77"),
            &mut Scripted::says(&code_at(NOW))
        ),
        Outcome::RateLimited(Lock::User {
            until: NOW as i64 + 86_400
        })
    );
    world.store().unlock("alice").expect("unlock");
    assert!(
        world
            .run_with(
                &config,
                "alice",
                Some("192.0.2.77"),
                &mut Scripted::says(&code_at(NOW))
            )
            .is_success()
    );
}

#[test]
fn only_guesses_count_as_failures() {
    assert!(Outcome::WrongCode.is_failed_guess());
    assert!(Outcome::MalformedAnswer.is_failed_guess());
    assert!(Outcome::WrongRecoveryCode.is_failed_guess());
    assert!(!Outcome::RefusedBySshd.is_failed_guess());
    assert!(
        !Outcome::Reused {
            device: String::new(),
            step: 1
        }
        .is_failed_guess()
    );
    assert!(!Outcome::NotEnrolled { pending: false }.is_failed_guess());
    assert!(
        !Outcome::StoreError(StoreFault {
            unavailable: true,
            message: String::new()
        })
        .is_failed_guess()
    );
}

#[test]
fn the_boot_fence_covers_the_boot_step_plus_the_window() {
    // Booted inside step 100 (period 30): before the crash, steps up to 101
    // (100 + window 1) could have been claimed.
    assert!(before_boot(100, 30, 1, 3000));
    assert!(before_boot(101, 30, 1, 3029));
    assert!(!before_boot(102, 30, 1, 3029));
    assert!(before_boot(102, 30, 2, 3000));
    assert!(!before_boot(5, 30, 1, 0));
}

#[test]
fn a_totp_step_that_may_predate_the_boot_is_refused_not_burned_not_counted() {
    let world = World::with_alice();
    // Booted 40 s ago: the previous step is fenced, the current one is not.
    let booted = Ok(NOW - 40);
    let previous = code_at(NOW - 30);
    assert_eq!(
        world.run_booted("alice", booted.clone(), &previous),
        Outcome::StepBeforeBoot {
            device: DEFAULT_DEVICE.to_string(),
            step: (NOW - 30) / 30
        }
    );
    let store = world.store();
    assert_eq!(store.tokens("alice").expect("tokens")[0].last_step, None);
    assert_eq!(
        store
            .failures("alice", "203.0.113.7", NOW as i64)
            .expect("failures")
            .source_count,
        0
    );
    assert!(
        world
            .run_booted("alice", booted, &code_at(NOW))
            .is_success()
    );
    // Unknown boot time: refused, the code not burned.
    assert!(matches!(
        world.run_booted("alice", Err("no sysinfo".into()), &code_at(NOW + 30)),
        Outcome::ClockError(_)
    ));
    assert!(world.run(&code_at(NOW + 30)).is_success());
}

#[test]
fn hotp_counters_and_recovery_codes_are_not_fenced_and_leave_the_login_store_lazy() {
    let world = World::empty();
    world.add("hank", DEFAULT_DEVICE, Kind::Hotp, KEY_B32, true);
    assert!(
        world
            .run_booted("hank", Ok(NOW), &code_with(KEY_B32, 1))
            .is_success()
    );
    // Logins commit lazily but for the durable writes; totpctl always syncs.
    let store = SqliteStore::open_for_login(&world.db).expect("open");
    assert_eq!(store.synchronous().expect("pragma"), "NORMAL");
    store
        .claim_step(&store.tokens("hank").expect("t")[0], 7, 0)
        .expect("claim");
    assert_eq!(store.synchronous().expect("pragma"), "NORMAL");
    assert_eq!(world.store().synchronous().expect("pragma"), "FULL");
}

/// Answers once and keeps what the module handed on as PAM_AUTHTOK.
struct OnePrompt {
    answer: Vec<u8>,
    prompts: Vec<String>,
    authtok: Option<Vec<u8>>,
}

impl OnePrompt {
    fn says(answer: &str) -> OnePrompt {
        OnePrompt {
            answer: answer.as_bytes().to_vec(),
            prompts: Vec::new(),
            authtok: None,
        }
    }
}

impl Conversation for OnePrompt {
    fn ask_hidden(&mut self, prompt: &str) -> Result<Zeroizing<Vec<u8>>, String> {
        self.prompts.push(prompt.to_string());
        Ok(Zeroizing::new(self.answer.clone()))
    }
    fn info(&mut self, _: &str) -> Result<(), String> {
        Ok(())
    }
    fn set_authtok(&mut self, password: &[u8]) -> Result<(), String> {
        self.authtok = Some(password.to_vec());
        Ok(())
    }
}

struct InGroups(Result<Vec<String>, String>);
impl crate::sys::Accounts for InGroups {
    fn canonical_user(&self, name: &str) -> Result<Option<String>, String> {
        canonical(name)
    }
    fn groups_of(&self, _: &str) -> Result<Vec<String>, String> {
        self.0.clone()
    }
    /// Every group exists but `typo-group`; `nss-down-group` cannot be looked up.
    fn group_exists(&self, group: &str) -> Result<bool, String> {
        match group {
            "typo-group" => Ok(false),
            "nss-down-group" => Err("the directory is down".to_string()),
            _ => Ok(true),
        }
    }
}

impl World {
    fn run_full(
        &self,
        config: &Config,
        rhost: &str,
        now: u64,
        groups: &dyn crate::sys::Accounts,
        conv: &mut dyn Conversation,
    ) -> Outcome {
        let decision = decide(
            config,
            Request {
                user: "alice",
                rhost: Some(rhost),
                ssh_key: &LoginKey::NoKey,
            },
            |_| SqliteStore::open(&self.db),
            &FixedClock(now),
            groups,
            conv,
        );
        self.stack_succeeds(config, "alice", now, decision)
    }
}

fn with_grace(secs: u64) -> Config {
    Config {
        grace_secs: secs,
        ..Config::default()
    }
}

#[test]
fn grace_skips_the_code_from_the_same_address_only_and_never_extends_itself() {
    let world = World::with_alice();
    let config = with_grace(3600);
    let groups = NoGroups;
    let mut first = OnePrompt::says(&code_at(NOW));
    assert!(matches!(
        world.run_full(&config, "198.51.100.4", NOW, &groups, &mut first),
        Outcome::Accepted { .. }
    ));
    // Same address, within the hour: no prompt at all.
    let mut again = OnePrompt::says("");
    assert_eq!(
        world.run_full(&config, "198.51.100.4", NOW + 1800, &groups, &mut again),
        Outcome::Grace {
            ip: "198.51.100.4".to_string(),
            until: NOW as i64 + 3600
        }
    );
    assert!(again.prompts.is_empty());
    // IPv4-mapped IPv6 is the same address.
    assert!(matches!(
        world.run_full(
            &config,
            "::ffff:198.51.100.4",
            NOW + 1800,
            &groups,
            &mut OnePrompt::says("")
        ),
        Outcome::Grace { .. }
    ));
    // Another address is asked.
    let mut other = OnePrompt::says("000000");
    assert!(
        !world
            .run_full(&config, "198.51.100.5", NOW + 1800, &groups, &mut other)
            .is_success()
    );
    assert_eq!(other.prompts.len(), 1);
    // Grace logins did not extend it: after the hour, a code is asked.
    let mut later = OnePrompt::says("000000");
    assert_eq!(
        world.run_full(&config, "198.51.100.4", NOW + 3601, &groups, &mut later),
        Outcome::WrongCode
    );
    // A host name never gets grace.
    let mut named = OnePrompt::says("000000");
    world.run_full(&config, "host.example.org", NOW + 10, &groups, &mut named);
    assert_eq!(named.prompts.len(), 1);
    // Forgetting ends it.
    world.run_full(
        &config,
        "198.51.100.4",
        NOW + 3630,
        &groups,
        &mut OnePrompt::says(&code_at(NOW + 3630)),
    );
    assert_eq!(world.store().forget_grace("alice").expect("forget"), 1);
    let mut forgotten = OnePrompt::says("000000");
    world.run_full(&config, "198.51.100.4", NOW + 3640, &groups, &mut forgotten);
    assert_eq!(forgotten.prompts.len(), 1);
}

#[test]
fn exempt_users_and_groups_skip_the_code_and_a_failed_lookup_exempts_no_one() {
    let world = World::with_alice();
    let config = Config {
        exempt_users: vec!["svc".into()],
        exempt_groups: vec!["breakglass".into()],
        ..Config::default()
    };
    let mut conv = OnePrompt::says("");
    assert_eq!(
        world.run_full(
            &config,
            "198.51.100.4",
            NOW,
            &InGroups(Ok(vec!["users".into(), "breakglass".into()])),
            &mut conv
        ),
        Outcome::Exempt {
            reason: "member of exempt group \"breakglass\"".to_string()
        }
    );
    assert!(conv.prompts.is_empty());
    let mut conv = OnePrompt::says("000000");
    assert_eq!(
        world.run_full(
            &config,
            "198.51.100.4",
            NOW,
            &InGroups(Err("LDAP down".into())),
            &mut conv
        ),
        Outcome::WrongCode
    );
    let svc = decide(
        &config,
        Request {
            user: "svc",
            rhost: None,
            ssh_key: &LoginKey::NoKey,
        },
        |_| SqliteStore::open(&world.db),
        &FixedClock(NOW),
        &NoGroups,
        &mut OnePrompt::says(""),
    );
    assert!(matches!(svc.outcome, Outcome::Exempt { .. }));
}

#[test]
fn only_group_asks_its_members_lets_the_rest_in_and_a_typo_denies_everyone() {
    let world = World::with_alice();
    let pilot = |groups: &[&str]| Config {
        only_groups: groups.iter().map(|g| g.to_string()).collect(),
        ..Config::default()
    };
    // A member follows the normal rules: asked, and a wrong code is wrong.
    let mut member = OnePrompt::says("000000");
    assert_eq!(
        world.run_full(
            &pilot(&["pilot"]),
            "198.51.100.4",
            NOW,
            &InGroups(Ok(vec!["users".into(), "pilot".into()])),
            &mut member
        ),
        Outcome::WrongCode
    );
    assert_eq!(member.prompts.len(), 1);
    // Outside the pilot: in without a prompt, and the reason names it.
    let mut outside = OnePrompt::says("");
    let outcome = world.run_full(
        &pilot(&["pilot", "staff"]),
        "198.51.100.4",
        NOW,
        &InGroups(Ok(vec!["users".into()])),
        &mut outside,
    );
    assert_eq!(
        outcome,
        Outcome::Exempt {
            reason: "outside the pilot: not a member of only_group pilot,staff".to_string()
        }
    );
    assert!(outside.prompts.is_empty());
    // A group the name service does not know: everyone is denied, unasked.
    let mut typo = OnePrompt::says("");
    let outcome = world.run_full(
        &pilot(&["pilot", "typo-group"]),
        "198.51.100.4",
        NOW,
        &InGroups(Ok(vec!["users".into()])),
        &mut typo,
    );
    assert!(
        matches!(&outcome, Outcome::ConfigError(why) if why.contains("typo-group")),
        "{outcome:?}"
    );
    assert!(!outcome.is_success());
    // Lookups that fail (the user's groups, or whether the group exists)
    // keep the user in the pilot: asked.
    for (groups, accounts) in [
        (["pilot"], InGroups(Err("LDAP down".into()))),
        (["nss-down-group"], InGroups(Ok(vec!["users".into()]))),
    ] {
        let mut conv = OnePrompt::says("000000");
        let outcome = world.run_full(&pilot(&groups), "198.51.100.4", NOW, &accounts, &mut conv);
        assert_eq!(outcome, Outcome::WrongCode, "{groups:?}");
        assert_eq!(conv.prompts.len(), 1);
    }
}

#[test]
fn combined_mode_splits_password_and_code_and_always_hands_the_password_on() {
    let world = World::with_alice();
    let config = Config {
        mode: config::Mode::Combined,
        ..Config::default()
    };
    let code = code_at(NOW);
    let mut right = OnePrompt::says(&format!("hunter2 42{code}"));
    assert!(matches!(
        world.run_full(&config, "198.51.100.4", NOW, &NoGroups, &mut right),
        Outcome::Accepted { .. }
    ));
    assert_eq!(
        right.prompts,
        vec![config::DEFAULT_COMBINED_PROMPT.to_string()]
    );
    assert_eq!(right.authtok.as_deref(), Some(&b"hunter2 42"[..]));
    // A wrong code: refused, the password still handed on (so a wrong code
    // and a wrong password look the same), the failure counted.
    let mut wrong = OnePrompt::says("hunter2 42000000");
    assert_eq!(
        world.run_full(&config, "198.51.100.4", NOW + 30, &NoGroups, &mut wrong),
        Outcome::WrongCode
    );
    assert_eq!(wrong.authtok.as_deref(), Some(&b"hunter2 42"[..]));
    // No code at the end: the whole answer is the password.
    let mut bare = OnePrompt::says("hunter2");
    assert!(
        !world
            .run_full(&config, "198.51.100.4", NOW + 30, &NoGroups, &mut bare)
            .is_success()
    );
    assert_eq!(bare.authtok.as_deref(), Some(&b"hunter2"[..]));
}

fn enrollee(right: bool) -> Enrollee {
    Enrollee::wrong_first(if right { 0 } else { usize::MAX })
}

#[test]
fn an_enrollment_at_login_is_only_staged_until_the_stack_succeeds() {
    let world = World::with_alice();
    let windowed = Config {
        enroll: EnrollAtLogin::Window,
        ..Config::default()
    };
    world
        .store()
        .open_enroll_window("wendy", NOW as i64 + 3600, "root")
        .expect("window");
    // The password module fails after this one: nothing is stored, the
    // window stays open, and the real user can still enroll.
    let failed = world.decide_only(&windowed, "wendy", Some("192.0.2.1"), &mut enrollee(true));
    assert!(matches!(failed.outcome, Outcome::EnrolledAtLogin { .. }));
    assert!(failed.staged.is_some(), "a nonce to hand to the next phase");
    assert!(world.store().tokens("wendy").expect("q").is_empty());
    assert!(
        world
            .store()
            .enroll_window("wendy", NOW as i64)
            .expect("q")
            .is_some()
    );
    // A commit by another user, or with another nonce, takes nothing.
    let nonce = failed.staged.clone().expect("nonce");
    let commit = |user: &str, nonce: &str, at: u64| {
        commit_staged(
            &windowed,
            user,
            nonce,
            |_| SqliteStore::open(&world.db),
            &FixedClock(at),
            &NoGroups,
        )
    };
    assert_eq!(commit("wendy", &"0".repeat(64), NOW), Commit::Missing);
    // Expired stages are gone for good.
    assert_eq!(
        commit("wendy", &nonce, NOW + STAGE_TTL_SECS as u64),
        Commit::Missing
    );
    assert_eq!(commit("wendy", &nonce, NOW), Commit::Missing, "taken once");
    assert!(world.store().tokens("wendy").expect("q").is_empty());

    // Staged for wendy, committed as mallory: nothing, and it is used up.
    let other = world.decide_only(&windowed, "wendy", Some("192.0.2.1"), &mut enrollee(true));
    let nonce = other.staged.clone().expect("nonce");
    assert_eq!(commit("mallory", &nonce, NOW), Commit::Missing);
    assert_eq!(commit("wendy", &nonce, NOW), Commit::Missing);

    // The real login: committed once the stack succeeded.
    let real = world.decide_only(&windowed, "wendy", Some("192.0.2.1"), &mut enrollee(true));
    let nonce = real.staged.clone().expect("nonce");
    assert!(matches!(
        commit("wendy", &nonce, NOW + 5),
        Commit::Enrolled { .. }
    ));
    let tokens = world.store().tokens("wendy").expect("q");
    assert_eq!(tokens.len(), 1);
    assert_eq!(
        tokens[0].last_step,
        Some(NOW / 30),
        "the confirming code is spent"
    );
    assert_eq!(world.store().enroll_window("wendy", 0).expect("q"), None);
    // A stage that lost the race to a token stored meanwhile is refused.
    world
        .store()
        .open_enroll_window("zed", NOW as i64 + 3600, "root")
        .expect("window");
    let late = world.decide_only(&windowed, "zed", Some("192.0.2.1"), &mut enrollee(true));
    world.add("zed", DEFAULT_DEVICE, Kind::Totp, KEY_B32, true);
    assert!(matches!(
        commit("zed", &late.staged.expect("nonce"), NOW),
        Commit::Failed(_)
    ));
}

#[test]
fn a_grace_is_only_granted_once_the_stack_succeeds() {
    let world = World::with_alice();
    let config = with_grace(3600);
    let failed = world.decide_only(
        &config,
        "alice",
        Some("198.51.100.9"),
        &mut OnePrompt::says(&code_at(NOW)),
    );
    assert!(matches!(failed.outcome, Outcome::Accepted { .. }));
    assert!(failed.staged.is_some());
    // The password was wrong: the next login from there is asked again.
    let mut again = OnePrompt::says("000000");
    assert_eq!(
        world.run_full(&config, "198.51.100.9", NOW + 60, &NoGroups, &mut again),
        Outcome::WrongCode
    );
    assert_eq!(again.prompts.len(), 1);
}

#[test]
fn the_user_is_who_nss_says() {
    let world = World::with_alice();
    world.add("bob", DEFAULT_DEVICE, Kind::Totp, KEY_B32, true);
    let allow = Config {
        unenrolled: Unenrolled::Allow,
        ..Config::default()
    };
    // A case-insensitive name service, or an alias: still bob, still asked.
    for name in ["BOB", "bob@site", "Bob"] {
        let mut conv = Scripted::says("000000");
        assert_eq!(
            world.run_with(&allow, name, Some("203.0.113.7"), &mut conv),
            Outcome::WrongCode,
            "{name}"
        );
        assert_eq!(conv.prompts.len(), 1);
    }
    let decision = world.decide_only(&allow, "BOB", None, &mut Scripted::says(&code_at(NOW)));
    assert!(matches!(decision.outcome, Outcome::Accepted { .. }));
    assert_eq!(decision.user.as_deref(), Some("bob"));
    // A name NSS does not know is asked like any other, then denied: never
    // ignored, even under unenrolled=allow.
    let mut conv = Scripted::says("123456");
    assert_eq!(
        world.run_with(&allow, "nobody-here", None, &mut conv),
        Outcome::UnknownUser
    );
    assert_eq!(conv.prompts.len(), 1);
    // A failed lookup denies.
    assert!(matches!(
        world.run_with(&allow, "nss-down", None, &mut Scripted::says("1")),
        Outcome::NoUser(_)
    ));
    // exempt_user= names canonical users.
    let exempt = Config {
        exempt_users: vec!["bob".to_string()],
        ..Config::default()
    };
    assert!(matches!(
        world.run_with(&exempt, "BOB", None, &mut Scripted::says("")),
        Outcome::Exempt { .. }
    ));
}

#[test]
fn concurrent_wrong_answers_never_check_more_guesses_than_the_limit() {
    let world = World::with_alice();
    let config = Config {
        limits: crate::ratelimit::Limits {
            backoff_after: 1000,
            backoff_max: 3600,
            user_limit: 20,
        },
        ..Config::default()
    };
    {
        let store = world.store();
        for i in 0..19 {
            store
                .record_failure("alice", &format!("192.0.2.{i}"), NOW as i64)
                .expect("failure");
        }
    }
    let wrong = wrong_now();
    let outcomes: Vec<Outcome> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..24)
            .map(|i| {
                let (world, config) = (&world, &config);
                scope.spawn(move || {
                    decide(
                        config,
                        Request {
                            user: "alice",
                            rhost: Some(&format!("198.51.100.{i}")),
                            ssh_key: &LoginKey::NoKey,
                        },
                        |_| SqliteStore::open_for_login(&world.db),
                        &FixedClock(NOW),
                        &NoGroups,
                        &mut Scripted::says(wrong),
                    )
                    .outcome
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let checked = outcomes
        .iter()
        .filter(|o| **o == Outcome::WrongCode)
        .count();
    let locked = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::RateLimited(Lock::User { .. })))
        .count();
    assert_eq!((checked, locked), (1, 23), "{outcomes:?}");
    let failures = world
        .store()
        .failures("alice", "", NOW as i64)
        .expect("failures");
    assert_eq!(failures.user_recent, 20);
}

#[test]
fn a_right_or_reused_code_gives_its_guess_back() {
    let world = World::with_alice();
    let code = code_at(NOW);
    assert!(matches!(world.run(&code), Outcome::Accepted { .. }));
    assert!(matches!(world.run(&code), Outcome::Reused { .. }));
    let failures = world
        .store()
        .failures("alice", "203.0.113.7", NOW as i64)
        .expect("failures");
    assert_eq!(failures.user_recent, 0, "neither counted as a guess");
    assert_eq!(world.run(wrong_now()), Outcome::WrongCode);
    let failures = world
        .store()
        .failures("alice", "203.0.113.7", NOW as i64)
        .expect("failures");
    assert_eq!(failures.source_count, 1);
}

#[test]
fn a_right_code_ends_the_back_off_but_keeps_the_users_failures() {
    let world = World::with_alice();
    let config = Config {
        limits: crate::ratelimit::Limits {
            backoff_after: 100,
            backoff_max: 3600,
            user_limit: 20,
        },
        ..Config::default()
    };
    {
        let store = world.store();
        for _ in 0..19 {
            store
                .record_failure("alice", "203.0.113.7", NOW as i64 - 60)
                .expect("failure");
        }
    }
    // The victim logs in from the address an attacker shares (NAT).
    let right = world.run_with(
        &config,
        "alice",
        Some("203.0.113.7"),
        &mut Scripted::says(&code_at(NOW)),
    );
    assert!(matches!(right, Outcome::Accepted { .. }), "{right:?}");
    let after = world
        .store()
        .failures("alice", "203.0.113.7", NOW as i64)
        .expect("failures");
    assert_eq!(after.source_count, 0, "the back-off of that address ends");
    assert_eq!(after.user_recent, 19, "the 19 guesses still count");
    // One more wrong code, and the ceiling is reached for every address.
    assert_eq!(
        world.run_with(
            &config,
            "alice",
            Some("203.0.113.7"),
            &mut Scripted::says(wrong_now())
        ),
        Outcome::WrongCode
    );
    assert!(matches!(
        world.run_with(
            &config,
            "alice",
            Some("198.51.100.1"),
            &mut Scripted::says(wrong_now())
        ),
        Outcome::RateLimited(Lock::User { .. })
    ));
}

/// `messages=yes` (the default) tells the user what they can act on, and
/// only that; `messages=no` tells nothing.
#[test]
fn the_user_is_told_what_they_can_act_on_and_nothing_else() {
    let world = World::with_alice();
    let told = |config: &Config, answer: &str| {
        let mut conv = Scripted::says(answer);
        let outcome = world.run_with(config, "alice", Some("203.0.113.7"), &mut conv);
        (outcome, conv.infos)
    };
    let quiet = Config {
        messages: false,
        ..Config::default()
    };
    let code = code_at(NOW);
    let (first, infos) = told(&Config::default(), &code);
    assert!(matches!(first, Outcome::Accepted { .. }) && infos.is_empty());
    // A right code used before: said so, and how to go on.
    let (again, infos) = told(&Config::default(), &code);
    assert!(matches!(again, Outcome::Reused { .. }));
    assert_eq!(infos.len(), 1);
    assert!(infos[0].contains("already used") && infos[0].contains("next code"));
    let (_, infos) = told(&quiet, &code);
    assert!(infos.is_empty(), "messages=no: {infos:?}");
    // A wrong code says nothing beyond the denial.
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let (outcome, infos) = told(&Config::default(), wrong);
    assert_eq!(outcome, Outcome::WrongCode);
    assert!(infos.is_empty(), "{infos:?}");
    // A recovery code: how many are left.
    let codes = recovery::generate().expect("codes");
    let hashes: Vec<_> = codes.iter().map(|(_, h)| h.clone()).collect();
    world
        .store()
        .replace_recovery("alice", &hashes)
        .expect("store");
    let (outcome, infos) = told(&Config::default(), codes[0].0.as_str());
    assert_eq!(outcome, Outcome::RecoveryAccepted { remaining: 9 });
    assert!(
        infos[0].starts_with("Recovery code accepted: 9 left"),
        "{infos:?}"
    );
    // A back-off: when to try again (rounded up to whole minutes).
    assert_eq!(
        user_message(
            &Outcome::RateLimited(Lock::Source { until: 1_000 + 61 }),
            1_000
        )
        .as_deref(),
        Some("Too many wrong codes from this address: try again in 2 min.")
    );
    let ceiling =
        user_message(&Outcome::RateLimited(Lock::User { until: 86_400 }), 0).expect("said");
    assert!(ceiling.contains("1970-01-02 00:00:00 UTC"), "{ceiling}");
    for silent in [
        Outcome::WrongCode,
        Outcome::MalformedAnswer,
        Outcome::WrongRecoveryCode,
        Outcome::UnknownUser,
        Outcome::NotEnrolled { pending: false },
    ] {
        assert_eq!(user_message(&silent, 0), None, "{silent:?}");
    }
}

/// A store whose `disable` (an administrator's `totpctl disable alice`,
/// on another connection) commits while the login is between reading the
/// tokens and burning a recovery code: argon2 runs in that gap, tens of
/// milliseconds in release builds.
struct DisabledDuringRecovery {
    inner: SqliteStore,
    db: PathBuf,
}

impl LoginStore for DisabledDuringRecovery {
    fn totp_claims_durable(&self) -> bool {
        self.inner.totp_claims_durable()
    }
    fn tokens(&self, user: &str) -> Result<Vec<Token>, StoreError> {
        self.inner.tokens(user)
    }
    fn check_key_file(&self) -> Result<(), StoreError> {
        self.inner.check_key_file()
    }
    fn claim_step(&self, token: &Token, step: u64, now: i64) -> Result<Claim, StoreError> {
        self.inner.claim_step(token, step, now)
    }
    fn claim_step_among_twins(
        &self,
        token: &Token,
        step: u64,
        now: i64,
    ) -> Result<Claim, StoreError> {
        self.inner.claim_step_among_twins(token, step, now)
    }
    fn recovery_candidates(
        &self,
        user: &str,
        lookup: &str,
    ) -> Result<Vec<crate::store::StoredRecovery>, StoreError> {
        let found = self.inner.recovery_candidates(user, lookup)?;
        // The administrator's disable commits now, on its own connection.
        let admin = SqliteStore::open(&self.db).expect("admin store");
        assert_eq!(
            admin
                .set_disabled(user, None, Some(NOW as i64))
                .expect("disable"),
            1
        );
        Ok(found)
    }
    fn burn_recovery(
        &self,
        code: &crate::store::StoredRecovery,
        at: i64,
    ) -> Result<Claim, StoreError> {
        self.inner.burn_recovery(code, at)
    }
    fn recovery_count(&self, user: &str) -> Result<crate::store::RecoveryCount, StoreError> {
        self.inner.recovery_count(user)
    }
    fn enroll_window(&self, user: &str, now: i64) -> Result<Option<i64>, StoreError> {
        self.inner.enroll_window(user, now)
    }
    fn reserve_guess(
        &self,
        user: &str,
        rhost: &str,
        now: i64,
        limits: &crate::ratelimit::Limits,
    ) -> Result<crate::store::Reservation, StoreError> {
        self.inner.reserve_guess(user, rhost, now, limits)
    }
    fn settle_guess(
        &self,
        user: &str,
        rhost: &str,
        now: i64,
        limits: &crate::ratelimit::Limits,
        answer: crate::store::Answer,
    ) -> Result<crate::store::Settled, StoreError> {
        self.inner.settle_guess(user, rhost, now, limits, answer)
    }
    fn release_guess(
        &self,
        user: &str,
        rhost: &str,
        clear: bool,
        at: i64,
    ) -> Result<(), StoreError> {
        self.inner.release_guess(user, rhost, clear, at)
    }
    fn enroll_at_login(
        &self,
        token: &Token,
        step: u64,
        recovery: &[crate::recovery::RecoveryHash],
    ) -> Result<(), StoreError> {
        self.inner.enroll_at_login(token, step, recovery)
    }
    fn grant_grace(&self, user: &str, ip: &str, until: i64) -> Result<(), StoreError> {
        self.inner.grant_grace(user, ip, until)
    }
    fn grace_until(&self, user: &str, ip: &str, now: i64) -> Result<Option<i64>, StoreError> {
        self.inner.grace_until(user, ip, now)
    }
    fn stage_grant(
        &self,
        nonce: &str,
        user: &str,
        grant: &Grant,
        expires: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        self.inner.stage_grant(nonce, user, grant, expires, now)
    }
    fn take_staged(&self, nonce: &str, user: &str, now: i64) -> Result<Option<Grant>, StoreError> {
        self.inner.take_staged(nonce, user, now)
    }
    fn grant_key_grace(&self, user: &str, fingerprint: &str, until: i64) -> Result<(), StoreError> {
        self.inner.grant_key_grace(user, fingerprint, until)
    }
    fn key_grace_until(
        &self,
        user: &str,
        fingerprint: &str,
        now: i64,
    ) -> Result<Option<i64>, StoreError> {
        self.inner.key_grace_until(user, fingerprint, now)
    }
    fn automation_for_key(
        &self,
        user: &str,
        fingerprint: &str,
    ) -> Result<Vec<crate::store::AutomationGrant>, StoreError> {
        self.inner.automation_for_key(user, fingerprint)
    }
}

/// Finding (h-f): README says "A `disable` racing a login is decided by the
/// same single write as the step claim: the login either got in before, or
/// is refused" (SECURITY promise 25). That holds for codes (CLAIM_STEP
/// checks `disabled`/`expires`), not for recovery codes: BURN_RECOVERY only
/// checks `used IS NULL`, and the tokens were judged usable before argon2
/// ran. A recovery login whose burn comes after the disable committed is
/// let in.
#[test]
fn a_disable_that_commits_before_the_recovery_code_is_burned_refuses_the_login() {
    let world = World::with_alice();
    let codes = recovery::generate().expect("codes");
    let hashes: Vec<_> = codes.iter().map(|(_, h)| h.clone()).collect();
    world
        .store()
        .replace_recovery("alice", &hashes)
        .expect("store");
    let decision = decide(
        &Config::default(),
        Request {
            user: "alice",
            rhost: Some("203.0.113.7"),
            ssh_key: &LoginKey::NoKey,
        },
        |_| {
            Ok(DisabledDuringRecovery {
                inner: SqliteStore::open(&world.db)?,
                db: world.db.clone(),
            })
        },
        &FixedClock(NOW),
        &NoGroups,
        &mut Scripted::says(codes[0].0.as_str()),
    );
    // The disable is committed before the burn...
    let tokens = world.store().tokens("alice").expect("tokens");
    assert!(tokens.iter().all(|t| t.life.disabled.is_some()));
    // ...so the login must be refused, as a code's claim would be.
    assert!(
        !decision.outcome.is_success(),
        "a recovery code logged in after `disable` committed: {:?}",
        decision.outcome
    );
}

// Key grace (`grace_key=`) and automation grants: the SSH key sshd named.

fn used_key(fingerprint: &str) -> LoginKey {
    LoginKey::Key(crate::sshkey::UsedKey {
        algorithm: "ssh-ed25519".to_string(),
        fingerprint: fingerprint.to_string(),
    })
}

const KEY_A: &str = "SHA256:PBZqibLSCLdAS4+MC8G29Jx6IMJfj3+k9ckTzGesU+I";
const KEY_B: &str = "SHA256:AAAAibLSCLdAS4+MC8G29Jx6IMJfj3+k9ckTzGesU+I";

impl World {
    /// One login with `key`; `commit` says whether the rest of the stack
    /// succeeds (what was staged is committed) or fails (nothing is).
    fn run_key(
        &self,
        config: &Config,
        rhost: &str,
        key: &LoginKey,
        now: u64,
        commit: bool,
        conv: &mut dyn Conversation,
    ) -> Decision {
        let decision = decide(
            config,
            Request {
                user: "alice",
                rhost: Some(rhost),
                ssh_key: key,
            },
            |_| SqliteStore::open(&self.db),
            &FixedClock(now),
            &NoGroups,
            conv,
        );
        if commit {
            let outcome = self.stack_succeeds(config, "alice", now, decision.clone());
            assert_eq!(outcome, decision.outcome);
        }
        decision
    }
}

fn with_grace_key(secs: u64) -> Config {
    Config {
        grace_key_secs: secs,
        ..Config::default()
    }
}

#[test]
fn key_grace_skips_the_code_for_the_same_key_from_anywhere_and_only_after_a_whole_login() {
    let world = World::with_alice();
    let config = with_grace_key(86_400);
    let key_a = used_key(KEY_A);
    // A right code whose stack then fails grants nothing.
    let failed = world.run_key(
        &config,
        "198.51.100.4",
        &key_a,
        NOW,
        false,
        &mut OnePrompt::says(&code_at(NOW)),
    );
    assert!(matches!(failed.outcome, Outcome::Accepted { .. }));
    assert!(failed.staged.is_some());
    let mut asked = OnePrompt::says("000000");
    let after_failure = world.run_key(&config, "198.51.100.4", &key_a, NOW + 60, true, &mut asked);
    assert!(
        !after_failure.outcome.is_success(),
        "{:?}",
        after_failure.outcome
    );
    assert_eq!(asked.prompts.len(), 1);
    // A whole login with key A and a right code.
    let ok = world.run_key(
        &config,
        "198.51.100.4",
        &key_a,
        NOW + 120,
        true,
        &mut OnePrompt::says(&code_at(NOW + 120)),
    );
    assert!(
        matches!(ok.outcome, Outcome::Accepted { .. }),
        "{:?}",
        ok.outcome
    );
    // Key A from another address: no prompt.
    let mut silent = OnePrompt::says("");
    let again = world.run_key(
        &config,
        "203.0.113.9",
        &key_a,
        NOW + 3600,
        true,
        &mut silent,
    );
    assert_eq!(
        again.outcome,
        Outcome::KeyGrace {
            fingerprint: KEY_A.to_string(),
            until: NOW as i64 + 120 + 86_400
        }
    );
    assert!(silent.prompts.is_empty());
    // The grace never extends itself.
    assert!(again.staged.is_none());
    // Another key, no key, a refused value, a non-sshd service: asked.
    for key in [
        used_key(KEY_B),
        LoginKey::NoKey,
        LoginKey::Refused("hostile".to_string()),
        LoginKey::Unknown("not sshd".to_string()),
    ] {
        let mut asked = OnePrompt::says("000000");
        let d = world.run_key(&config, "203.0.113.9", &key, NOW + 3600, true, &mut asked);
        assert!(!d.outcome.is_success(), "{key:?}: {:?}", d.outcome);
        assert_eq!(asked.prompts.len(), 1, "{key:?}");
        if matches!(key, LoginKey::Refused(_) | LoginKey::Unknown(_)) {
            assert!(
                d.notices.iter().any(|n| n.contains("not used")),
                "{key:?}: {:?}",
                d.notices
            );
        }
    }
    // After the grace ends: asked.
    let mut late = OnePrompt::says("000000");
    let d = world.run_key(
        &config,
        "203.0.113.9",
        &key_a,
        NOW + 121 + 86_400,
        true,
        &mut late,
    );
    assert!(!d.outcome.is_success());
    // `forget --key` ends it.
    let world2 = World::with_alice();
    world2
        .store()
        .grant_key_grace("alice", KEY_A, NOW as i64 + 1000)
        .expect("grant");
    assert_eq!(
        world2
            .store()
            .key_graces("alice", NOW as i64)
            .expect("list")
            .len(),
        1
    );
    assert_eq!(
        world2
            .store()
            .forget_key_grace("alice", KEY_B)
            .expect("forget"),
        0
    );
    assert_eq!(
        world2
            .store()
            .forget_key_grace("alice", KEY_A)
            .expect("forget"),
        1
    );
    let d = world2.run_key(
        &config,
        "203.0.113.9",
        &key_a,
        NOW,
        true,
        &mut OnePrompt::says("000000"),
    );
    assert!(!d.outcome.is_success());
}

#[test]
fn without_grace_key_a_key_grants_nothing() {
    let world = World::with_alice();
    let config = Config::default();
    let key_a = used_key(KEY_A);
    let ok = world.run_key(
        &config,
        "198.51.100.4",
        &key_a,
        NOW,
        true,
        &mut OnePrompt::says(&code_at(NOW)),
    );
    assert!(matches!(ok.outcome, Outcome::Accepted { .. }));
    assert!(ok.staged.is_none());
    assert!(
        world
            .store()
            .key_graces("alice", NOW as i64)
            .expect("list")
            .is_empty()
    );
}

#[test]
fn an_automation_grant_admits_its_key_from_its_networks_until_its_end_unless_revoked() {
    let world = World::with_alice();
    let config = Config::default();
    let store = world.store();
    let until = NOW as i64 + 3600;
    let id = store
        .add_automation(
            "alice",
            KEY_A,
            "192.0.2.0/24,2001:db8::/32",
            until,
            "nightly rsync",
            NOW as i64,
            "root",
        )
        .expect("grant");
    let key_a = used_key(KEY_A);
    let mut silent = OnePrompt::says("");
    let d = world.run_key(&config, "192.0.2.77", &key_a, NOW, true, &mut silent);
    assert_eq!(
        d.outcome,
        Outcome::Automation {
            id,
            fingerprint: KEY_A.to_string(),
            ip: "192.0.2.77".to_string(),
            until,
            reason: "nightly rsync".to_string()
        }
    );
    assert!(silent.prompts.is_empty());
    assert!(d.staged.is_none(), "an automation login grants nothing");
    // IPv6 block, and a mapped address.
    for ip in ["2001:db8::5", "::ffff:192.0.2.1"] {
        let d = world.run_key(&config, ip, &key_a, NOW, true, &mut OnePrompt::says(""));
        assert!(matches!(d.outcome, Outcome::Automation { .. }), "{ip}");
    }
    // Outside the networks, another key, no key, a hostname rhost: asked.
    for (ip, key) in [
        ("198.51.100.1", key_a.clone()),
        ("192.0.2.77", used_key(KEY_B)),
        ("192.0.2.77", LoginKey::NoKey),
        ("192.0.2.77", LoginKey::Refused("x".to_string())),
        ("host.example", key_a.clone()),
    ] {
        let mut asked = OnePrompt::says("000000");
        let d = world.run_key(&config, ip, &key, NOW, true, &mut asked);
        assert!(!d.outcome.is_success(), "{ip} {key:?}: {:?}", d.outcome);
        assert_eq!(asked.prompts.len(), 1);
    }
    // At its end: asked, and the expiry is logged with the id and reason.
    let d = world.run_key(
        &config,
        "192.0.2.77",
        &key_a,
        until as u64,
        true,
        &mut OnePrompt::says("000000"),
    );
    assert!(!d.outcome.is_success());
    assert!(
        d.notices.iter().any(|n| n.contains(&format!("#{id}"))
            && n.contains("expired")
            && n.contains("nightly rsync")),
        "{:?}",
        d.notices
    );
    // Revoked: asked.
    assert!(
        store
            .revoke_automation(id, NOW as i64)
            .expect("revoke")
            .is_some()
    );
    assert!(
        store
            .revoke_automation(id, NOW as i64)
            .expect("revoke")
            .is_none()
    );
    let d = world.run_key(
        &config,
        "192.0.2.77",
        &key_a,
        NOW,
        true,
        &mut OnePrompt::says("000000"),
    );
    assert!(!d.outcome.is_success());
}

#[test]
fn an_automation_grant_longer_than_this_modules_automation_max_admits_no_one() {
    let world = World::with_alice();
    let store = world.store();
    // Made for 80 days (under a looser bound, or before it was lowered).
    store
        .add_automation(
            "alice",
            KEY_A,
            "192.0.2.0/24",
            NOW as i64 + 80 * 86_400,
            "r",
            NOW as i64,
            "root",
        )
        .expect("grant");
    let config = Config {
        automation_max_secs: 7 * 86_400,
        ..Config::default()
    };
    let d = world.run_key(
        &config,
        "192.0.2.77",
        &used_key(KEY_A),
        NOW + 30 * 86_400,
        true,
        &mut OnePrompt::says("000000"),
    );
    assert!(!d.outcome.is_success(), "{:?}", d.outcome);
    assert!(
        d.notices
            .iter()
            .any(|n| n.contains("longer than automation_max")),
        "{:?}",
        d.notices
    );
    // Under the default bound (90 days) the same grant admits.
    let d = world.run_key(
        &Config::default(),
        "192.0.2.77",
        &used_key(KEY_A),
        NOW + 30 * 86_400,
        true,
        &mut OnePrompt::says(""),
    );
    assert!(
        matches!(d.outcome, Outcome::Automation { .. }),
        "{:?}",
        d.outcome
    );
}

#[test]
fn an_automation_grant_with_networks_that_do_not_parse_admits_no_one() {
    let world = World::with_alice();
    let store = world.store();
    store
        .add_automation(
            "alice",
            KEY_A,
            "192.0.2.0/24,bogus",
            NOW as i64 + 3600,
            "r",
            NOW as i64,
            "root",
        )
        .expect("grant");
    let d = world.run_key(
        &Config::default(),
        "192.0.2.77",
        &used_key(KEY_A),
        NOW,
        true,
        &mut OnePrompt::says("000000"),
    );
    assert!(!d.outcome.is_success());
    assert!(
        d.notices.iter().any(|n| n.contains("admits no one")),
        "{:?}",
        d.notices
    );
}

#[test]
fn a_disabled_user_is_not_let_in_by_an_automation_grant() {
    let world = World::with_alice();
    let store = world.store();
    store
        .add_automation(
            "alice",
            KEY_A,
            "192.0.2.0/24",
            NOW as i64 + 3600,
            "r",
            NOW as i64,
            "root",
        )
        .expect("grant");
    store
        .set_disabled("alice", None, Some(NOW as i64 - 10))
        .expect("disable");
    let d = world.run_key(
        &Config::default(),
        "192.0.2.77",
        &used_key(KEY_A),
        NOW,
        true,
        &mut OnePrompt::says(""),
    );
    assert!(!d.outcome.is_success(), "{:?}", d.outcome);
}

#[test]
fn one_right_code_stages_the_address_grace_and_the_key_grace_together() {
    let world = World::with_alice();
    let config = Config {
        grace_secs: 600,
        grace_key_secs: 86_400,
        ..Config::default()
    };
    let key_a = used_key(KEY_A);
    let ok = world.run_key(
        &config,
        "198.51.100.4",
        &key_a,
        NOW,
        true,
        &mut OnePrompt::says(&code_at(NOW)),
    );
    assert!(matches!(ok.outcome, Outcome::Accepted { .. }));
    let store = world.store();
    assert_eq!(
        store
            .grace_until("alice", "198.51.100.4", NOW as i64)
            .expect("ip"),
        Some(NOW as i64 + 600)
    );
    assert_eq!(
        store.key_graces("alice", NOW as i64).expect("keys"),
        vec![(KEY_A.to_string(), NOW as i64 + 86_400)]
    );
    // After the address grace ends, the key grace still holds, elsewhere too.
    let d = world.run_key(
        &config,
        "203.0.113.1",
        &key_a,
        NOW + 700,
        true,
        &mut OnePrompt::says(""),
    );
    assert!(
        matches!(d.outcome, Outcome::KeyGrace { .. }),
        "{:?}",
        d.outcome
    );
    // The address grace does not need the key.
    let d = world.run_key(
        &config,
        "198.51.100.4",
        &LoginKey::NoKey,
        NOW + 300,
        true,
        &mut OnePrompt::says(""),
    );
    assert!(
        matches!(d.outcome, Outcome::Grace { .. }),
        "{:?}",
        d.outcome
    );
}

/// Two devices of one user with the same key (enrolled twice, or from a
/// store of before `totpctl enroll` refused that): a TOTP step used on one
/// stays used on the other, also once the device that used it is stopped.
#[test]
fn a_step_used_on_one_device_is_used_on_another_with_the_same_key() {
    let world = World::with_alice();
    world.add("alice", "spare", Kind::Totp, KEY_B32, true);
    let code = code_at(NOW);
    assert_eq!(world.run(&code), accepted(NOW / 30, 0));
    for stop in [Some(NOW as i64), None] {
        // Disabled, then enabled again: either way the step stays used.
        world
            .store()
            .set_disabled("alice", Some(DEFAULT_DEVICE), stop)
            .expect("disable");
        let again = world.run(&code);
        assert!(
            matches!(&again, Outcome::Reused { step, .. } if *step == NOW / 30),
            "the used step worked again on the other device: {again:?}"
        );
    }
    world
        .store()
        .set_disabled("alice", Some(DEFAULT_DEVICE), Some(NOW as i64))
        .expect("disable");
    // The next step is the spare device's to use.
    let next = world.run(&code_at(NOW + 30));
    assert!(
        matches!(&next, Outcome::Accepted { device, step, .. } if device == "spare" && *step == NOW / 30 + 1),
        "{next:?}"
    );
    // A key of its own keeps its own steps: another user's device with
    // another key is untouched (and the same key under another user is
    // another user's business).
    world.add("bob", DEFAULT_DEVICE, Kind::Totp, KEY_B32, true);
    let bob = world.run_with(
        &Config::default(),
        "bob",
        Some("203.0.113.7"),
        &mut Scripted::says(&code),
    );
    assert!(matches!(bob, Outcome::Accepted { .. }), "{bob:?}");
}

#[test]
fn last_used_counts_the_same_key_and_period_only() {
    let token = |device: &str, kind: Kind, key: &str, period: u64, last: Option<u64>| Token {
        id: 0,
        user: "alice".to_string(),
        device: device.to_string(),
        kind,
        secret: Secret::from_base32(key).expect("key"),
        params: Params {
            period,
            ..Params::default()
        },
        created: 0,
        confirmed: Some(0),
        last_step: last,
        life: Default::default(),
        stored_key: Default::default(),
    };
    const OTHER: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
    let me = token("a", Kind::Totp, KEY_B32, 30, Some(5));
    let all = [
        me.clone(),
        token("b", Kind::Totp, KEY_B32, 30, Some(9)),
        token("c", Kind::Totp, KEY_B32, 60, Some(40)),
        token("d", Kind::Totp, OTHER, 30, Some(50)),
        token("e", Kind::Hotp, KEY_B32, 30, Some(70)),
    ];
    // The other kind never counts: its codes never meet this one's
    // (`store::MAX_HOTP_COUNTER`); an honest fob is not locked out by a
    // phone's steps.
    assert_eq!(crate::auth::last_used(&me, &all), Some(9));
    let hotp = token("f", Kind::Hotp, KEY_B32, 30, Some(3));
    assert_eq!(crate::auth::last_used(&hotp, &all), Some(70));
    let alone = token("g", Kind::Totp, OTHER, 60, None);
    assert_eq!(crate::auth::last_used(&alone, &all), None);
}
