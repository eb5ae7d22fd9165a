//! The documentation a sysadmin installs from, checked against the code:
//! every module key is in both manual pages, the packaged config file and
//! the README; the packaged config file changes nothing as installed and
//! each of its commented examples is a valid setting; every manual page
//! (hand-written, generated from totpctl's clap definitions, and totp(1)
//! generated from totp's by its example program) renders without a groff
//! warning; the completion scripts parse; every link
//! between the Markdown files, and every README section the sources name,
//! arrives.

use crate::common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use pam_totp::config::{self, Config, KEYS};

/// Writes totp(1) into `dir` with totp's example program (totp/examples/
/// totp_manpage.rs: not a verb of the set-uid `totp`), built by
/// `cargo build --release --workspace --all-targets`; returns its path.
fn totp_manpage(dir: &Path) -> std::path::PathBuf {
    let program = common::profile_dir().join("examples").join("totp_manpage");
    assert!(
        program.exists(),
        "{} missing: run `cargo build --release --workspace --all-targets` first",
        program.display()
    );
    let out = Command::new(&program)
        .arg(dir)
        .output()
        .expect("totp_manpage");
    assert!(out.status.success(), "{out:?}");
    let page = dir.join("totp.1");
    assert!(page.exists(), "{out:?}");
    page
}

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
        if example.starts_with("#self_service") {
            // Valid in /etc/security/pam_totp.conf alone, the file totp
            // reads: in this copy elsewhere that is the one mistake.
            assert!(
                matches!(
                    result,
                    Err(config::ConfigError::SelfServiceElsewhere { .. })
                ),
                "{example}: {result:?}"
            );
            continue;
        }
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
    pages.push(totp_manpage(dir.path()));
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

/// totp(1) has FILES, EXIT STATUS, EXAMPLES and SEE ALSO, an entry for
/// every verb of `totp --help` (and no reference to a per-verb page, which
/// does not exist), and every example `totp --help` shows.
#[test]
fn the_totp_page_has_every_verb_examples_exit_status_and_see_also() {
    let dir = tempfile::tempdir().expect("tmp");
    let page = fs::read_to_string(totp_manpage(dir.path())).expect("page");
    let mut missing = Vec::new();
    for section in [
        ".TH totp 1",
        ".SH COMMANDS",
        ".SH FILES",
        ".SH \"EXIT STATUS\"",
        ".SH EXAMPLES",
        ".SH \"SEE ALSO\"",
        ".BR totpctl (8)",
        ".BR pam_totp (8)",
        ".BR pam_totp.conf (5)",
    ] {
        if !page.contains(section) {
            missing.push(section.to_string());
        }
    }
    // The set-uid binary's own help, run as root without the set-uid bit:
    // parsing and --help come before any check of the caller.
    let help = Command::new(common::profile_dir().join("totp"))
        .arg("--help")
        .output()
        .expect("totp --help");
    assert!(help.status.success(), "{help:?}");
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    let verbs: Vec<&str> = help
        .split("Commands:")
        .nth(1)
        .and_then(|s| s.split("Options:").next())
        .unwrap_or("")
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|v| *v != "help")
        .collect();
    assert!(verbs.len() >= 6, "{help}");
    for verb in verbs {
        let roff = verb.replace('-', "\\-");
        if !page.contains(&format!(".TP\n\\fBtotp {roff}\\fR")) {
            missing.push(format!("COMMANDS entry for totp {verb}"));
        }
        if page.contains(&format!("totp\\-{roff}(1)")) {
            missing.push(format!("a reference to a page totp-{verb}(1)"));
        }
    }
    let examples = help.split("Examples:").nth(1).unwrap_or("");
    for line in examples.lines().filter_map(|l| l.split_once('#')) {
        let command = line.0.trim().replace('-', "\\-");
        if !page.contains(&format!(".EX\n{command}\n.EE")) {
            missing.push(format!("example {:?}", line.0.trim()));
        }
    }
    assert!(missing.is_empty(), "totp.1 lacks {missing:#?}");
}

/// GitHub's anchor for a heading: lowercase, spaces to '-', every other
/// character but letters, digits, '-' and '_' dropped.
fn github_anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// A Markdown file's lines outside fenced code blocks, numbered from 1.
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut fenced = false;
    let mut lines = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            lines.push((n + 1, line));
        }
    }
    lines
}

/// The anchors GitHub gives a Markdown file's headings (a repeated heading
/// gets `-1`, `-2`, … as GitHub numbers them).
fn heading_anchors(text: &str) -> std::collections::HashSet<String> {
    let mut anchors = std::collections::HashSet::new();
    for (_, line) in prose_lines(text) {
        let hashes = line.chars().take_while(|&c| c == '#').count();
        if !(1..=6).contains(&hashes) || !line[hashes..].starts_with(' ') {
            continue;
        }
        let base = github_anchor(line[hashes..].trim().trim_end_matches('#'));
        let mut anchor = base.clone();
        let mut n = 0;
        while !anchors.insert(anchor.clone()) {
            n += 1;
            anchor = format!("{base}-{n}");
        }
    }
    anchors
}

/// The targets of the inline links `[text](target)` on a line, outside
/// code spans.
fn link_targets(line: &str) -> Vec<&str> {
    let mut targets = Vec::new();
    for (i, part) in line.split('`').enumerate() {
        if i % 2 == 1 {
            continue;
        }
        let mut rest = part;
        while let Some(at) = rest.find("](") {
            rest = &rest[at + 2..];
            let end = rest
                .find(|c: char| c == ')' || c.is_whitespace())
                .unwrap_or(rest.len());
            targets.push(&rest[..end]);
            rest = &rest[end..];
        }
    }
    targets
}

/// Every file of the repository, but for build output and hidden
/// directories.
fn repository_files() -> Vec<std::path::PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.starts_with('.') || (dir == root && name == "target") {
                continue;
            }
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The README is reorganised now and then: every link between the Markdown
/// files (to a file, or to a heading's `#anchor` in one) must still arrive,
/// and so must every `README.md#anchor` and every section the sources and
/// scripts name in words (README: "Help desk through sudo", the README's
/// "Performance") in any file of the repository.
#[test]
fn every_link_to_a_document_or_a_section_arrives() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = root.join("README.md");
    let mut anchors_of = std::collections::HashMap::new();
    let mut anchors = |path: &Path| -> std::collections::HashSet<String> {
        anchors_of
            .entry(path.to_path_buf())
            .or_insert_with(|| heading_anchors(&fs::read_to_string(path).unwrap_or_default()))
            .clone()
    };
    let mut broken = Vec::new();
    let (mut links, mut sections) = (0, 0);
    for file in repository_files() {
        let Ok(text) = fs::read_to_string(&file) else {
            continue;
        };
        let shown = file
            .strip_prefix(root)
            .unwrap_or(&file)
            .display()
            .to_string();
        if file.extension().is_some_and(|e| e == "md") {
            for (n, line) in prose_lines(&text) {
                for target in link_targets(line) {
                    if target.contains("://") || target.starts_with("mailto:") {
                        continue;
                    }
                    links += 1;
                    let (path, anchor) = match target.split_once('#') {
                        Some((path, anchor)) => (path, Some(anchor)),
                        None => (target, None),
                    };
                    let dest = if path.is_empty() {
                        file.clone()
                    } else {
                        file.parent().expect("parent").join(path)
                    };
                    let markdown = dest.extension().is_some_and(|e| e == "md");
                    if !dest.exists() {
                        broken.push(format!("{shown}:{n}: {target}: no such file"));
                    } else if anchor.is_some_and(|a| markdown && !anchors(&dest).contains(a)) {
                        broken.push(format!("{shown}:{n}: {target}: no such heading"));
                    }
                }
            }
        }
        if file.ends_with("tests/it/docs.rs") {
            continue; // its comments show the shapes it looks for
        }
        // README.md#anchor anywhere (help texts, comments, other pages).
        for (at, _) in text.match_indices("README.md#") {
            let anchor: String = text[at + "README.md#".len()..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '-' || *c == '_')
                .collect();
            sections += 1;
            if !anchors(&readme).contains(&anchor) {
                broken.push(format!("{shown}: README.md#{anchor}: no such heading"));
            }
        }
        // A section named in words: README: "Title", README, "Title",
        // README "Title", the README's "Title" (across a line break and a
        // comment marker, and with the quote escaped in a Rust string).
        for (at, _) in text.match_indices("README") {
            let rest = &text[at + "README".len()..];
            let rest = rest.strip_prefix("'s").unwrap_or(rest);
            let rest = rest.strip_prefix([':', ',']).unwrap_or(rest);
            let rest = rest.trim_start_matches(|c: char| c.is_whitespace() || "#/*".contains(c));
            let Some(rest) = rest.strip_prefix("\\\"").or_else(|| rest.strip_prefix('"')) else {
                continue;
            };
            let Some(end) = rest.find('"') else { continue };
            let title = rest[..end].trim_end_matches('\\');
            if title.is_empty() || title.contains('\n') {
                continue;
            }
            sections += 1;
            if !anchors(&readme).contains(&github_anchor(title)) {
                broken.push(format!(
                    "{shown}: README section {title:?}: no such heading"
                ));
            }
        }
    }
    assert!(broken.is_empty(), "{broken:#?}");
    assert!(
        links > 100 && sections > 5,
        "{links} links, {sections} sections: the check found too little"
    );
    println!("{links} links and {sections} named sections arrive");
}
