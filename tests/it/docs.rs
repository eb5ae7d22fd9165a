//! The documentation a sysadmin installs from, checked against the code:
//! every module key is in both manual pages, the packaged config file and
//! the README; the packaged config file changes nothing as installed and
//! each of its commented examples is a valid setting; every manual page
//! (hand-written and generated from totpctl's clap definitions) renders
//! without a groff warning; the completion scripts parse.

use crate::common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use pam_totp::config::{self, Config, KEYS};

fn read(path: &str) -> String {
    fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn every_module_key_is_documented_everywhere_a_sysadmin_looks() {
    let man8 = read("packaging/man/pam_totp.8");
    let man5 = read("packaging/man/pam_totp.conf.5");
    let conf = read("packaging/pam_totp.conf");
    let readme = read("README.md");
    let mut missing = Vec::new();
    for key in KEYS {
        let as_argument = if *key == "debug" {
            ".B debug".to_string()
        } else {
            format!("{key}=")
        };
        if !man8.contains(&as_argument) {
            missing.push(format!("pam_totp.8 lacks {as_argument}"));
        }
        if !man5.contains(&format!("\"{key} = ")) && !man5.contains(&format!("\"{key} = \"")) {
            missing.push(format!("pam_totp.conf.5 lacks \"{key} = \""));
        }
        if !conf.contains(&format!("#{key} = ")) && !conf.contains(&format!("({key} = ")) {
            missing.push(format!("packaging/pam_totp.conf lacks #{key} ="));
        }
        if !readme.contains(&format!("| `{key}")) {
            missing.push(format!("README's configuration table lacks {key}"));
        }
    }
    assert!(missing.is_empty(), "{missing:#?}");
}

/// Copies the packaged config file into a private directory (the module
/// trusts only root-owned files that others cannot write) with `edit`.
fn load_packaged(edit: impl Fn(&str) -> String) -> Result<Config, config::ConfigError> {
    let dir = common::private_tempdir();
    let path = dir.path().join("pam_totp.conf");
    fs::write(&path, edit(&read("packaging/pam_totp.conf"))).expect("write");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
    config::load(&[format!("config={}", path.display())])
}

#[test]
fn the_packaged_config_file_changes_nothing_and_its_examples_are_valid() {
    assert_eq!(
        load_packaged(|text| text.to_string()).expect("as installed"),
        Config::default()
    );
    let text = read("packaging/pam_totp.conf");
    let examples: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with('#') && l[1..].contains(" = ") && !l.starts_with("# "))
        .collect();
    assert_eq!(
        examples.len(),
        KEYS.len() - 1,
        "one example per key but config="
    );
    for example in examples {
        let result = load_packaged(|text| text.replace(example, &example[1..]));
        assert!(result.is_ok(), "{example}: {:?}", result.err());
    }
}

/// groff as man-db runs it (`-k`: preconv, UTF-8 input), every warning on.
fn groff_warnings(page: &Path) -> String {
    let out = Command::new("groff")
        .args(["-k", "-man", "-Tutf8", "-ww", "-z"])
        .arg(page)
        .output()
        .expect("groff");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn every_manual_page_renders_without_warnings() {
    if !common::tools_present(&["groff", "man", "bash", "zsh"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let out = Command::new(common::totpctl_path())
        .arg("manpages")
        .arg(dir.path())
        .output()
        .expect("totpctl manpages");
    assert!(out.status.success(), "{out:?}");
    let mut pages: Vec<_> = fs::read_dir(dir.path())
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .collect();
    let generated = pages.len();
    assert!(
        generated >= 12,
        "one page per verb expected, got {generated}"
    );
    for name in ["pam_totp.8", "pam_totp.conf.5"] {
        pages.push(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("packaging/man")
                .join(name),
        );
    }
    for page in &pages {
        let warnings = groff_warnings(page);
        assert!(warnings.is_empty(), "{}: {warnings}", page.display());
        let text = Command::new("man")
            .arg("-l")
            .arg(page)
            .env("MANWIDTH", "80")
            .output()
            .expect("man -l");
        assert!(
            String::from_utf8_lossy(&text.stdout).lines().count() > 10,
            "{} renders empty",
            page.display()
        );
    }
    // Every verb of totpctl's --help has its page.
    let help = Command::new(common::totpctl_path())
        .arg("--help")
        .output()
        .expect("help");
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    let verbs = help
        .split("Commands:")
        .nth(1)
        .and_then(|s| s.split("Options:").next())
        .unwrap_or("");
    for verb in verbs.lines().filter_map(|l| l.split_whitespace().next()) {
        if verb == "help" {
            continue;
        }
        assert!(
            dir.path().join(format!("totpctl-{verb}.8")).exists(),
            "no page for totpctl {verb}"
        );
    }
    println!("{} manual pages render without warnings", pages.len());

    for (shell, check) in [("bash", "bash"), ("zsh", "zsh")] {
        let script = Command::new(common::totpctl_path())
            .args(["completions", shell])
            .output()
            .expect("completions");
        assert!(script.status.success());
        let file = dir.path().join(format!("completion.{shell}"));
        fs::write(&file, &script.stdout).expect("write");
        let parsed = Command::new(check)
            .arg("-n")
            .arg(&file)
            .status()
            .expect(check);
        assert!(parsed.success(), "{shell} completion does not parse");
    }
}

/// docs/users.md quotes the module's messages word for word (as
/// `auth::user_message` makes them), and the README links it.
#[test]
fn the_users_page_quotes_what_the_module_says() {
    use pam_totp::auth::{CONFIRM_PROMPT, Outcome, user_message};
    use pam_totp::ratelimit::Lock;
    let page = read("docs/users.md");
    let now = 1_742_300_000;
    let outcomes = [
        Outcome::Reused {
            device: "default".into(),
            step: 1,
        },
        Outcome::StepBeforeBoot {
            device: "default".into(),
            step: 1,
        },
        Outcome::RecoveryReused,
        Outcome::RecoveryAccepted { remaining: 9 },
        Outcome::RateLimited(Lock::Source { until: now + 120 }),
        Outcome::RateLimited(Lock::User {
            until: 1_742_306_700,
        }),
    ];
    for outcome in &outcomes {
        let said = user_message(outcome, now as u64).expect("a message");
        assert!(page.contains(&said), "docs/users.md lacks {said:?}");
    }
    for quoted in [
        CONFIRM_PROMPT.trim_end(),
        "Verification code:",
        "Password and verification code:",
        "You have no authenticator token yet.",
        "Code confirmed",
    ] {
        assert!(page.contains(quoted), "docs/users.md lacks {quoted:?}");
    }
    assert!(read("README.md").contains("(docs/users.md)"));
}

/// Every page totpctl generates has EXIT STATUS, EXAMPLES and SEE ALSO
/// (totpctl/src/docs.rs: a new verb needs its examples there).
#[test]
fn every_totpctl_page_has_examples_exit_status_and_see_also() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = Command::new(common::totpctl_path())
        .arg("manpages")
        .arg(dir.path())
        .output()
        .expect("totpctl manpages");
    assert!(out.status.success(), "{out:?}");
    let mut missing = Vec::new();
    for entry in fs::read_dir(dir.path()).expect("dir") {
        let path = entry.expect("entry").path();
        let page = fs::read_to_string(&path).expect("page");
        for section in [".SH \"EXIT STATUS\"", ".SH EXAMPLES", ".SH \"SEE ALSO\""] {
            if !page.contains(section) {
                missing.push(format!("{}: {section}", path.display()));
            }
        }
        if !page.contains(".BR pam_totp (8)") {
            missing.push(format!("{}: SEE ALSO pam_totp(8)", path.display()));
        }
    }
    assert!(missing.is_empty(), "{missing:#?}");
}
