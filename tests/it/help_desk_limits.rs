//! Findings of the h-f attack session: each test states what SECURITY.md
//! or the README promises and fails on the code as it is.

use crate::common;

use common::rows::ok;
use common::{RHOST, World, oathtool, pam_tools_present, unix_now};

/// A help desk has `reset` in its sudoers rule but not `enable` (README,
/// "Help desk through sudo"). `reset` makes the new token without the old
/// one's `disabled` and `expires`: a disabled user is back in after a
/// routine "new phone" ticket, and a contractor's token that was to end
/// (`--expires`) no longer ends. Promise 25: "A stopped token (`disable`,
/// `--expires`) logs nobody in".
#[test]
fn a_reset_keeps_the_users_disable_and_expiry() {
    if !pam_tools_present() {
        return;
    }
    let world = World::new();
    world.service("totp", "");
    let now = unix_now();

    // Disabled by an administrator; the help desk resets the phone.
    world.enroll("dan");
    ok(&world.totpctl(&["disable", "dan"]));
    let new_key = common::random_secret();
    ok(&world.totpctl(&["reset", "dan", "--secret", &new_key]));
    let run = world.login(
        "totp",
        "dan",
        Some(RHOST),
        &oathtool(&new_key, Some(now), &[]),
    );
    assert!(
        !run.success,
        "`reset` undid an administrator's `disable` (the help desk may not `enable`): {run:?}"
    );

    // A contractor's token ends tomorrow; the help desk resets the phone.
    let key = common::random_secret();
    ok(&world.totpctl(&["enroll", "carl", "--secret", &key, "--expires", "1d"]));
    let new_key = common::random_secret();
    ok(&world.totpctl(&["reset", "carl", "--secret", &new_key]));
    let later = now + 2 * 86_400;
    let run = world.login_at(
        later,
        "totp",
        "carl",
        Some(RHOST),
        &oathtool(&new_key, Some(later), &[]),
    );
    assert!(
        !run.success,
        "`reset` dropped the token's --expires: the contractor still logs in after it: {run:?}"
    );

    // The same through a pending replacement confirmed from the new phone.
    let key = common::random_secret();
    ok(&world.totpctl(&["enroll", "cora", "--secret", &key, "--expires", "1d"]));
    let out = world.totpctl(&["reset", "cora", "--json"]);
    let value: serde_json::Value = serde_json::from_slice(&ok_bytes(&out)).expect("json");
    let pending_key = value["key"].as_str().expect("key").to_string();
    ok(&world.totpctl(&["confirm", "cora", &oathtool(&pending_key, Some(now), &[])]));
    let shown = ok(&world.totpctl(&["show", "cora", "--json"]));
    assert!(
        !shown.contains("\"expires\":null"),
        "the confirmed replacement has no expiry any more: {shown}"
    );
}

fn ok_bytes(out: &std::process::Output) -> Vec<u8> {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout.clone()
}

/// `report --csv` is "for a spreadsheet" but quotes only `,`, `"`, CR and
/// LF: a user name that starts with `=`, `+`, `-` or `@` reaches the
/// administrator's spreadsheet as a formula (CSV injection). Such names
/// come from the name service, or from a help desk's `enroll NAME
/// --allow-unknown-user` (allowed through sudo; config::check_name refuses
/// only spaces, control characters and `/`).
#[test]
fn report_csv_never_starts_a_field_with_a_formula() {
    let world = World::new();
    // A name with quotes is refused outright now (`config::check_name`);
    // one without still reaches the report as NSS can give it.
    let name = "=HYPERLINK(CHAR(104)&A1)";
    ok(&world.totpctl(&[
        "enroll",
        name,
        "--allow-unknown-user",
        "--secret",
        &common::random_secret(),
    ]));
    ok(&world.totpctl(&[
        "enroll",
        "@SUM(1+1)",
        "--allow-unknown-user",
        "--secret",
        &common::random_secret(),
    ]));
    let csv = ok(&world.totpctl(&["report", "--csv"]));
    for line in csv.lines().skip(1) {
        // The first field, unquoted as a spreadsheet reads it.
        let first = line.trim_start_matches('"');
        assert!(
            !first.starts_with(['=', '+', '-', '@']),
            "a CSV cell starts a formula: {line:?}\n{csv}"
        );
    }
}

/// `totpctl check` (the help desk's "my code does not work") tests
/// disabled and expired tokens like working ones and answers "Not used up:
/// the code still works for one login", exit status 0, while every login
/// with that code is refused.
#[test]
fn check_does_not_say_a_disabled_tokens_code_works() {
    if !pam_tools_present() {
        return;
    }
    let world = World::new();
    world.service("totp", "");
    let key = world.enroll("erin");
    ok(&world.totpctl(&["disable", "erin"]));
    let now = unix_now();
    let code = oathtool(&key, Some(now), &[]);
    let out = world.totpctl(&["check", "erin", &code]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let run = world.login("totp", "erin", Some(RHOST), &code);
    assert!(!run.success, "{run:?}");
    assert!(
        !(out.status.success() && text.contains("still works for one login")),
        "check said the disabled token's code works, the login was refused: {text}"
    );
}
