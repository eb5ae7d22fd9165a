//! A token's whole life through totpctl and the real libpam: QR codes that
//! decode (zbarimg), pending tokens and confirmation, several devices,
//! recovery codes, HOTP, reset, enrollment at login, and imports from files
//! written by google-authenticator and pam_oath themselves.

use crate::common;

use std::process::Command;
use std::time::Duration;

use common::rows::{Copied, answer_waiting, copy_device, enroll_at_login, ok, waiting_at_prompt};
use common::{
    RHOST, World, oathtool, oathtool_hotp, pam_tools_present, sqlite_only, tools_present, unix_now,
    wrong_code,
};
use serde_json::Value;

fn json(out: &std::process::Output) -> Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON output")
}

fn zbarimg(png: &std::path::Path) -> String {
    let out = Command::new("zbarimg")
        .args(["--raw", "-q"])
        .arg(png)
        .output()
        .expect("zbarimg");
    assert!(
        out.status.success(),
        "zbarimg found no code in {}",
        png.display()
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Turns the terminal rendering back into pixels (each character is two
/// modules stacked) and writes a PNG that zbarimg can read.
fn terminal_qr_to_png(text: &str, glyphs_are_light: bool, path: &std::path::Path) {
    const SCALE: usize = 6;
    let rows: Vec<Vec<char>> = text.lines().map(|l| l.chars().collect()).collect();
    let width = rows.iter().map(Vec::len).max().expect("rows");
    let height = rows.len() * 2;
    let mut pixels = vec![0u8; width * SCALE * height * SCALE];
    for (r, row) in rows.iter().enumerate() {
        for (c, ch) in row.iter().enumerate() {
            let (top, bottom) = match ch {
                '█' => (true, true),
                '▀' => (true, false),
                '▄' => (false, true),
                _ => (false, false),
            };
            for (half, glyph) in [(0, top), (1, bottom)] {
                let light = glyph == glyphs_are_light;
                let value = if light { 255 } else { 0 };
                for y in 0..SCALE {
                    let line = (r * 2 + half) * SCALE + y;
                    let start = line * width * SCALE + c * SCALE;
                    pixels[start..start + SCALE].fill(value);
                }
            }
        }
    }
    let file = std::fs::File::create(path).expect("png file");
    let mut encoder = png::Encoder::new(file, (width * SCALE) as u32, (height * SCALE) as u32);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    encoder
        .write_header()
        .expect("header")
        .write_image_data(&pixels)
        .expect("pixels");
}

/// The QR block of `totpctl enroll`'s text output.
fn qr_block(stdout: &str) -> String {
    stdout
        .lines()
        .skip_while(|l| !l.starts_with("Scan the QR code"))
        .skip(2)
        .take_while(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn qr_codes_decode_to_exactly_the_uri() {
    if !tools_present(&["zbarimg"]) {
        return;
    }
    let world = World::new();
    let png = world.dir.path().join("alice.png");
    let enrolled = json(&world.totpctl(&[
        "enroll",
        "alice",
        "--json",
        "--issuer",
        "HPC Lander",
        "--qr-png",
        png.to_str().expect("path"),
    ]));
    let uri = enrolled["uri"].as_str().expect("uri");
    assert!(uri.starts_with("otpauth://totp/HPC%20Lander:alice?secret="));
    assert_eq!(zbarimg(&png), uri, "PNG");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&png).expect("png").permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "the PNG holds the key");

    for (invert, device) in [(false, "dark"), (true, "light")] {
        let mut args = vec!["enroll", "alice", "--device", device];
        if invert {
            args.push("--invert");
        }
        let stdout = ok(&world.totpctl(&args));
        let uri = stdout
            .lines()
            .find_map(|l| l.strip_prefix("URI: "))
            .expect("uri line");
        let image = world.dir.path().join(format!("{device}.png"));
        terminal_qr_to_png(&qr_block(&stdout), !invert, &image);
        assert_eq!(zbarimg(&image), uri, "terminal QR, invert={invert}");
    }
    // --qr-png never overwrites.
    let again = world.totpctl(&[
        "enroll",
        "alice",
        "--device",
        "third",
        "--qr-png",
        png.to_str().expect("path"),
    ]);
    assert!(!again.status.success());
}

#[test]
fn pending_tokens_log_nobody_in_until_confirmed() {
    if !pam_tools_present() {
        return;
    }
    let world = World::new();
    world.service("totp", "");
    let enrolled = json(&world.totpctl(&["enroll", "pat", "--json"]));
    assert_eq!(enrolled["state"], "pending");
    let key = enrolled["key"].as_str().expect("key").to_string();
    assert_eq!(
        enrolled["recovery_codes"].as_array().expect("codes").len(),
        10
    );

    let run = world.login("totp", "pat", Some(RHOST), &oathtool(&key, None, &[]));
    assert!(!run.success, "{run:?}");
    assert!(run.logged("pending confirmation"), "{run:?}");
    // A recovery code does not get around a pending token either.
    let code0 = enrolled["recovery_codes"][0].as_str().expect("code");
    assert!(!world.login("totp", "pat", Some(RHOST), code0).success);

    let bad = world.totpctl(&["confirm", "pat", &wrong_code(&oathtool(&key, None, &[]))]);
    assert!(!bad.status.success());
    let now = unix_now();
    ok(&world.totpctl(&["confirm", "pat", &oathtool(&key, Some(now), &[])]));
    // The confirming code is spent; the next step's code logs in.
    let run = world.login_at(
        now,
        "totp",
        "pat",
        Some(RHOST),
        &oathtool(&key, Some(now), &[]),
    );
    assert!(!run.success, "confirmation code replayed: {run:?}");
    let later = now + 30;
    let run = world.login_at(
        later,
        "totp",
        "pat",
        Some(RHOST),
        &oathtool(&key, Some(later), &[]),
    );
    assert!(run.success, "{run:?}");
}

#[test]
fn recovery_codes_work_once_and_can_be_renewed() {
    if !pam_tools_present() {
        return;
    }
    let world = World::new();
    world.service("totp", "");
    let enrolled = json(&world.totpctl(&["enroll", "rita", "--json", "--no-confirm"]));
    let codes: Vec<String> = enrolled["recovery_codes"]
        .as_array()
        .expect("codes")
        .iter()
        .map(|c| c.as_str().expect("code").to_string())
        .collect();
    assert_eq!(codes.len(), 10);

    let run = world.login("totp", "rita", Some(RHOST), &codes[0]);
    assert!(run.success, "{run:?}");
    assert!(run.logged("recovery code used, 9 left"), "{run:?}");
    assert!(!run.stderr.contains(&codes[0]), "never logged");
    let run = world.login("totp", "rita", Some(RHOST), &codes[0]);
    assert!(!run.success, "{run:?}");
    assert!(run.logged("wrong or used recovery code"), "{run:?}");

    let shown = json(&world.totpctl(&["show", "rita", "--json"]));
    assert_eq!(shown["recovery_codes"]["unused"], 9);
    assert_eq!(shown["recovery_codes"]["used"], 1);

    let renewed = json(&world.totpctl(&["recovery", "rita", "--json"]));
    let fresh = renewed["recovery_codes"][0]
        .as_str()
        .expect("code")
        .to_string();
    assert!(
        !world.login("totp", "rita", Some(RHOST), &codes[1]).success,
        "old codes are void"
    );
    assert!(world.login("totp", "rita", Some(RHOST), &fresh).success);
}

#[test]
fn several_devices_each_log_in_and_can_be_removed_alone() {
    if !pam_tools_present() {
        return;
    }
    let world = World::new();
    world.service("totp", "");
    let phone = world.enroll("dana");
    let tablet = common::random_secret();
    ok(&world.totpctl(&["enroll", "dana", "--device", "tablet", "--secret", &tablet]));
    let listed = json(&world.totpctl(&["list", "--json"]));
    assert_eq!(listed.as_array().expect("list").len(), 2);

    assert!(
        world
            .login("totp", "dana", Some(RHOST), &oathtool(&tablet, None, &[]))
            .success
    );
    let run = world.login("totp", "dana", Some(RHOST), &oathtool(&phone, None, &[]));
    assert!(run.success, "each device has its own last step: {run:?}");
    assert!(run.logged("from device \"default\""), "{run:?}");

    ok(&world.totpctl(&["delete", "dana", "--device", "tablet"]));
    let later = unix_now() + 60;
    let run = world.login_at(
        later,
        "totp",
        "dana",
        Some(RHOST),
        &oathtool(&tablet, Some(later), &[]),
    );
    assert!(!run.success, "{run:?}");
    let run = world.login_at(
        later,
        "totp",
        "dana",
        Some(RHOST),
        &oathtool(&phone, Some(later), &[]),
    );
    assert!(run.success, "{run:?}");
}

#[test]
fn hotp_tokens_follow_the_counter() {
    if !pam_tools_present() {
        return;
    }
    let world = World::new();
    world.service("totp", "");
    let key = common::random_secret();
    ok(&world.totpctl(&["enroll", "hank", "--type", "hotp", "--secret", &key]));
    let hotp = |counter: u64| oathtool_hotp(&key, counter, false);
    let run = world.login("totp", "hank", Some(RHOST), &hotp(0));
    assert!(run.success, "{run:?}");
    assert!(run.logged("code for counter 0"), "{run:?}");
    assert!(!world.login("totp", "hank", Some(RHOST), &hotp(0)).success);
    let run = world.login("totp", "hank", Some(RHOST), &hotp(5));
    assert!(run.success, "look-ahead: {run:?}");
    assert!(
        !world.login("totp", "hank", Some(RHOST), &hotp(3)).success,
        "behind the counter"
    );
    assert!(
        !world.login("totp", "hank", Some(RHOST), &hotp(40)).success,
        "beyond the look-ahead"
    );
}

#[test]
fn reset_replaces_every_token_and_the_recovery_codes() {
    if !pam_tools_present() {
        return;
    }
    let world = World::new();
    world.service("totp", "");
    let first = json(&world.totpctl(&["enroll", "lou", "--json", "--no-confirm"]));
    let old_key = first["key"].as_str().expect("key").to_string();
    let old_code = first["recovery_codes"][0]
        .as_str()
        .expect("code")
        .to_string();
    ok(&world.totpctl(&[
        "enroll",
        "lou",
        "--device",
        "spare",
        "--secret",
        &common::random_secret(),
    ]));

    let reset = json(&world.totpctl(&["reset", "lou", "--json", "--no-confirm"]));
    let new_key = reset["key"].as_str().expect("key").to_string();
    assert_ne!(new_key, old_key);
    let shown = json(&world.totpctl(&["show", "lou", "--json"]));
    assert_eq!(shown["tokens"].as_array().expect("tokens").len(), 1);

    assert!(
        !world
            .login("totp", "lou", Some(RHOST), &oathtool(&old_key, None, &[]))
            .success
    );
    assert!(!world.login("totp", "lou", Some(RHOST), &old_code).success);
    assert!(
        world
            .login("totp", "lou", Some(RHOST), &oathtool(&new_key, None, &[]))
            .success
    );

    assert!(!world.totpctl(&["reset", "nobody"]).status.success());
}

#[test]
fn enrollment_at_login_only_from_trusted_networks_or_inside_a_window() {
    if !pam_tools_present() {
        return;
    }
    let world = World::new();
    world.service_with_account("trusted", "trusted=10.0.0.0/8 enroll=trusted");
    world.service_with_account("window", "enroll=window");
    ok(&world.totpctl(&["init"]));

    let (success, output) = enroll_at_login(&world, "trusted", "tess", "10.9.9.9", true);
    assert!(success, "{output}");
    assert!(output.contains('█'), "QR code shown: {output}");
    assert!(
        output.contains("new token confirmed at login (from a trusted network)"),
        "{output}"
    );
    let shown = json(&world.totpctl(&["show", "tess", "--json"]));
    assert_eq!(shown["tokens"][0]["state"], "active");

    // From an untrusted address nothing is offered.
    let (success, output) = enroll_at_login(&world, "trusted", "mallory", RHOST, true);
    assert!(!success);
    assert!(!output.contains("Key: "), "{output}");

    // enroll=window: refused until the admin opens a window; a wrong code stores nothing.
    let (success, output) = enroll_at_login(&world, "window", "wade", RHOST, true);
    assert!(!success && !output.contains("Key: "), "{output}");
    ok(&world.totpctl(&["allow-enroll", "wade", "--for", "1h"]));
    let (success, output) = enroll_at_login(&world, "window", "wade", RHOST, false);
    assert!(!success, "{output}");
    assert!(
        output.contains("enrollment at login not completed"),
        "{output}"
    );
    let shown = json(&world.totpctl(&["show", "wade", "--json"]));
    assert_eq!(shown["tokens"], serde_json::json!([]), "nothing stored");
    let (success, output) = enroll_at_login(&world, "window", "wade", RHOST, true);
    assert!(success, "{output}");
    assert!(output.contains("inside an enroll window"), "{output}");
    assert!(output.contains("account: enrolled at login"), "{output}");
    let shown = json(&world.totpctl(&["show", "wade", "--json"]));
    assert_eq!(
        shown["enroll_window_until"],
        Value::Null,
        "window closed once used"
    );
    assert!(
        !world
            .totpctl(&["allow-enroll", "wade", "--for", "1h"])
            .status
            .success()
    );
}

/// A right confirming code with a wrong password (pam_deny first in the
/// stack, as `auth required pam_unix.so` failing would be): nothing is
/// stored, the window stays open, the real user can still enroll.
#[test]
fn an_enrollment_at_login_with_a_failed_password_stores_nothing() {
    if !pam_tools_present() {
        return;
    }
    let world = World::new();
    world.service_with_account("window", "enroll=window trusted=10.0.0.0/8 grace=1h");
    let with_deny = std::fs::read_to_string(world.services.join("window")).expect("service");
    world.raw_service("denied", &format!("auth required pam_deny.so\n{with_deny}"));
    world.raw_service(
        "trusted-denied",
        &format!(
            "auth required pam_deny.so\n{}",
            with_deny.replace("enroll=window", "enroll=trusted")
        ),
    );
    ok(&world.totpctl(&["init"]));
    ok(&world.totpctl(&["allow-enroll", "vic", "--for", "1h"]));
    for (service, rhost) in [("denied", RHOST), ("trusted-denied", "10.1.2.3")] {
        let (success, output) = enroll_at_login(&world, service, "vic", rhost, true);
        assert!(!success, "{output}");
        assert!(output.contains("Key: "), "the key was shown: {output}");
        let shown = json(&world.totpctl(&["show", "vic", "--json"]));
        assert_eq!(
            shown["tokens"],
            serde_json::json!([]),
            "nothing stored: {output}"
        );
        assert_ne!(
            shown["enroll_window_until"],
            Value::Null,
            "window still open"
        );
    }
    // The auth line alone (no account line, an application that never
    // calls pam_setcred): the login passes, nothing is stored, and the log
    // names the line to add.
    world.service("auth-only", "enroll=window");
    let (success, output) = enroll_at_login(&world, "auth-only", "vic", RHOST, true);
    assert!(success, "{output}");
    assert!(output.contains("account required pam_totp.so"), "{output}");
    let shown = json(&world.totpctl(&["show", "vic", "--json"]));
    assert_eq!(shown["tokens"], serde_json::json!([]), "{output}");
    // The real user, with the right password: enrolled.
    let (success, output) = enroll_at_login(&world, "window", "vic", RHOST, true);
    assert!(success, "{output}");
    let shown = json(&world.totpctl(&["show", "vic", "--json"]));
    assert_eq!(shown["tokens"][0]["state"], "active", "{output}");
}

/// grace= after a right code and a wrong password: no grace.
#[test]
fn a_grace_after_a_failed_password_is_not_granted() {
    if !pam_tools_present() {
        return;
    }
    let world = World::new();
    world.service_with_account("graced", "grace=1h");
    let graced = std::fs::read_to_string(world.services.join("graced")).expect("service");
    world.raw_service("denied", &format!("auth required pam_deny.so\n{graced}"));
    let key = world.enroll("gus");
    let now = common::unix_now();
    let denied = world.login(
        "denied",
        "gus",
        Some(RHOST),
        &oathtool(&key, Some(now), &[]),
    );
    assert!(!denied.success, "{denied:?}");
    // The next login from there is asked for a code (an empty answer fails).
    let asked = world.login("graced", "gus", Some(RHOST), "");
    assert!(
        !asked.success,
        "no grace after a failed password: {asked:?}"
    );
    // With the password right, the grace starts.
    let right = world.login(
        "graced",
        "gus",
        Some(RHOST),
        &oathtool(&key, Some(now + 30), &[]),
    );
    assert!(right.success, "{right:?}");
    let free = world.login("graced", "gus", Some(RHOST), "");
    assert!(free.success && free.logged("grace from"), "{free:?}");
}

/// An application that calls the account and setcred phases after a failed
/// pam_authenticate on the same handle (sshd does so on its monitor's handle
/// when PasswordAuthentication fails and another method then succeeds):
/// what pam_totp staged is dropped when libpam reports the failed stack, so
/// nothing commits it. The application's own PAM_FAIL_DELAY function still
/// hears the stack's status.
#[test]
fn a_careless_application_cannot_commit_what_a_failed_stack_staged() {
    if !pam_tools_present() {
        return;
    }
    let world = World::new();
    world.service_with_account("graced", "grace=1h");
    let graced = std::fs::read_to_string(world.services.join("graced")).expect("service");
    world.raw_service("denied", &format!("auth required pam_deny.so\n{graced}"));
    world.raw_service(
        "permitted",
        &format!("auth required pam_permit.so\n{graced}"),
    );
    let key = world.enroll("gus");
    let now = common::unix_now();
    let printed = world.pam_worker(
        "denied",
        "gus",
        RHOST,
        &[&oathtool(&key, Some(now), &[])],
        "account,setcred",
    );
    assert!(
        printed.contains("DELAY 7\n"),
        "the stack failed (PAM_AUTH_ERR): {printed}"
    );
    assert!(printed.contains("RESULT 7"), "{printed}");
    assert!(
        printed.contains("ACCOUNT 0"),
        "the careless account phase ran: {printed}"
    );
    let asked = world.login("graced", "gus", Some(RHOST), "");
    assert!(!asked.success, "no grace from a failed stack: {asked:?}");

    // The same application with a stack that succeeds: the grace starts,
    // and its delay function heard PAM_SUCCESS.
    let printed = world.pam_worker(
        "permitted",
        "gus",
        RHOST,
        &[&oathtool(&key, Some(now + 30), &[])],
        "account",
    );
    assert!(printed.contains("DELAY 0\n"), "{printed}");
    assert!(printed.contains("RESULT 0"), "{printed}");
    let free = world.login("graced", "gus", Some(RHOST), "");
    assert!(free.success && free.logged("grace from"), "{free:?}");
}

/// Two transactions in one process with the same (NULL) conversation
/// appdata, one inside the other: B stages a grace, then, at B's password
/// prompt, A logs in (and commits its own grace); B's password fails. The
/// verdict of each stack reaches only its own handle: B commits nothing, A
/// keeps its grace.
#[test]
fn a_nested_transaction_neither_commits_nor_drops_the_other_ones_stage() {
    if !pam_tools_present() {
        return;
    }
    let world = World::new();
    world.service_with_account("graced", "grace=1h");
    let graced = std::fs::read_to_string(world.services.join("graced")).expect("service");
    let (auth, rest) = graced.split_once('\n').expect("two lines");
    world.raw_service(
        "with-password",
        &format!("{auth}\nauth required pam_exec.so expose_authtok /bin/false\n{rest}"),
    );
    let nia = world.enroll("nia");
    let ned = world.enroll("ned");
    world.add_user("ned");
    let now = common::unix_now();
    let nested = format!("graced ned {}", oathtool(&ned, Some(now), &[]));
    let printed = world.pam_worker_with(
        "with-password",
        "nia",
        RHOST,
        &[&oathtool(&nia, Some(now), &[]), "not-her-password"],
        &[
            ("PAM_WORKER_THEN", "account,setcred"),
            ("PAM_WORKER_NESTED", &nested),
        ],
    );
    assert!(printed.contains("NESTED 0"), "A logged in: {printed}");
    assert!(
        !printed.contains("RESULT 0"),
        "B's password failed: {printed}"
    );
    let asked = world.login("graced", "nia", Some(RHOST), "");
    assert!(!asked.success, "no grace for B's failed stack: {asked:?}");
    let free = world.login("graced", "ned", Some(RHOST), "");
    assert!(
        free.success && free.logged("grace from"),
        "A's grace: {free:?}"
    );
}

/// A first try that succeeds and stages, then a second try on the same
/// handle that fails before pam_totp runs (requisite on the address): the
/// first try's stage is dropped with the failed verdict.
#[test]
fn a_failed_retry_drops_what_an_earlier_try_staged() {
    if !pam_tools_present() {
        return;
    }
    let world = World::new();
    world.service_with_account("graced", "grace=1h");
    let graced = std::fs::read_to_string(world.services.join("graced")).expect("service");
    world.raw_service(
        "gated",
        &format!("auth requisite pam_succeed_if.so rhost = {RHOST}\n{graced}"),
    );
    let key = world.enroll("rex");
    let printed = world.pam_worker_with(
        "gated",
        "rex",
        RHOST,
        &[&oathtool(&key, None, &[])],
        &[
            ("PAM_WORKER_THEN", "account,setcred"),
            ("PAM_WORKER_RETRY_RHOST", "198.51.100.1"),
        ],
    );
    assert!(printed.contains("FIRST 0"), "{printed}");
    assert!(
        !printed.contains("RESULT 0"),
        "the second try failed: {printed}"
    );
    let asked = world.login("graced", "rex", Some(RHOST), "");
    assert!(!asked.success, "no grace after the failed retry: {asked:?}");
}

#[test]
fn google_authenticator_files_import_with_scratch_codes() {
    if !pam_tools_present() || !tools_present(&["google-authenticator"]) {
        return;
    }
    let world = World::new();
    world.service("totp", "");
    let file = world.dir.path().join("ga_totp");
    let made = Command::new("google-authenticator")
        .args([
            "-t", "-d", "-f", "-r", "3", "-R", "30", "-w", "3", "-Q", "NONE", "-q", "-s",
        ])
        .arg(&file)
        .env("HOME", world.dir.path())
        .output()
        .expect("google-authenticator");
    assert!(made.status.success());
    let text = std::fs::read_to_string(&file).expect("file");
    let key = text.lines().next().expect("key").to_string();
    let scratch = text.lines().last().expect("scratch").to_string();
    let path = file.to_str().expect("path");

    let dry = ok(&world.totpctl(&["import", "google-authenticator", path, "--user", "gina"]));
    assert!(dry.contains("Dry run"), "{dry}");
    assert!(dry.contains("5 scratch code(s)"), "{dry}");
    assert!(
        !dry.contains(&key) && !dry.contains(&scratch),
        "no secrets in the dry run"
    );
    assert!(
        !world.totpctl(&["show", "gina"]).status.success(),
        "dry run wrote nothing"
    );

    ok(&world.totpctl(&[
        "import",
        "google-authenticator",
        path,
        "--user",
        "gina",
        "--apply",
    ]));
    assert!(
        world
            .login("totp", "gina", Some(RHOST), &oathtool(&key, None, &[]))
            .success
    );
    let run = world.login("totp", "gina", Some(RHOST), &scratch);
    assert!(run.success, "scratch code as a recovery code: {run:?}");
    assert!(!world.login("totp", "gina", Some(RHOST), &scratch).success);

    // Counter-based files keep counting where the old module stopped.
    let hotp_file = world.dir.path().join("ga_hotp");
    let made = Command::new("google-authenticator")
        .args(["-c", "-f", "-u", "-w", "3", "-Q", "NONE", "-q", "-s"])
        .arg(&hotp_file)
        .env("HOME", world.dir.path())
        .output()
        .expect("google-authenticator");
    assert!(made.status.success());
    let hotp_key = std::fs::read_to_string(&hotp_file)
        .expect("file")
        .lines()
        .next()
        .expect("key")
        .to_string();
    ok(&world.totpctl(&[
        "import",
        "google-authenticator",
        hotp_file.to_str().expect("path"),
        "--user",
        "hugo",
        "--apply",
    ]));
    let hotp = |c: u64| oathtool_hotp(&hotp_key, c, false);
    assert!(
        !world.login("totp", "hugo", Some(RHOST), &hotp(0)).success,
        "HOTP_COUNTER 1: 0 is spent"
    );
    assert!(world.login("totp", "hugo", Some(RHOST), &hotp(1)).success);
}

#[test]
fn pam_oath_users_files_import_after_pam_oath_used_them() {
    let pam_oath = "/lib/x86_64-linux-gnu/security/pam_oath.so";
    if !pam_tools_present() || !tools_present(&[pam_oath]) {
        return;
    }
    let world = World::new();
    world.service("totp", "");
    let hex = "3132333435363738393031323334353637383930";
    let base32 = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
    let users = world.dir.path().join("users.oath");
    std::fs::write(
        &users,
        format!("HOTP olga - {hex}\nHOTP/T30 otto - {hex}\n"),
    )
    .expect("users");
    // The real pam_oath accepts olga's counter 0 and 1 and writes its state back.
    world.raw_service(
        "oath",
        &format!(
            "auth required {pam_oath} usersfile={} window=5\n",
            users.display()
        ),
    );
    let hotp = |c: u64| oathtool_hotp(hex, c, true);
    for counter in [0, 1] {
        let run = world.login("oath", "olga", None, &hotp(counter));
        assert!(run.success, "pam_oath itself: {run:?}");
    }
    let path = users.to_str().expect("path");
    let dry = ok(&world.totpctl(&["import", "oath", path]));
    assert!(
        dry.contains("olga") && dry.contains("otto") && dry.contains("Dry run"),
        "{dry}"
    );
    ok(&world.totpctl(&["import", "oath", path, "--apply"]));

    assert!(
        !world.login("totp", "olga", None, &hotp(1)).success,
        "spent under pam_oath"
    );
    assert!(world.login("totp", "olga", None, &hotp(2)).success);
    assert!(
        world
            .login("totp", "otto", None, &oathtool(base32, None, &[]))
            .success
    );

    // A broken line names itself and nothing is written.
    let broken = world.dir.path().join("broken.oath");
    std::fs::write(
        &broken,
        format!("HOTP pia - {hex}\nHOTP/T30 paul 1234 {hex}\n"),
    )
    .expect("write");
    let out = world.totpctl(&["import", "oath", broken.to_str().expect("path"), "--apply"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("line 2"),
        "{out:?}"
    );
    assert!(!world.totpctl(&["show", "pia"]).status.success());
}

#[test]
fn keys_are_sealed_in_a_sqlite_store_too() {
    if !pam_tools_present() {
        return;
    }
    let world = World::new_sqlite();
    let keys = common::private_tempdir();
    let key_file = keys.path().join("pam_totp.key");
    common::keygen(&key_file);
    let key = common::random_secret();
    let out = world.totpctl(&[
        "--key-file",
        key_file.to_str().expect("path"),
        "enroll",
        "sam",
        "--secret",
        &key,
    ]);
    assert!(out.status.success(), "{out:?}");
    let raw = base32::decode(base32::Alphabet::Rfc4648 { padding: false }, &key).expect("b32");
    // The store file (and its WAL) never hold the key in the clear.
    for file in [world.db.clone(), world.db.with_extension("db-wal")] {
        let bytes = std::fs::read(&file).unwrap_or_default();
        assert!(
            !bytes.windows(raw.len()).any(|w| w == raw.as_slice()),
            "{} holds the key",
            file.display()
        );
    }
    world.service("sealed", &format!("key_file={}", key_file.display()));
    world.service(
        "plain",
        &format!("key_file={}", keys.path().join("none").display()),
    );
    let run = world.login("sealed", "sam", Some(RHOST), &oathtool(&key, None, &[]));
    assert!(run.success, "{run:?}");
    let run = world.login("plain", "sam", Some(RHOST), &oathtool(&key, None, &[]));
    assert!(!run.success && run.logged("none"), "{run:?}");
    println!(
        "SQLite: the key is sealed in the file and its WAL; with the key file in, without it refused"
    );
}

/// The store records the key file its keys are sealed with (the first
/// sealed write, then every `rekey`), and a write of a key by a process
/// with another key file (one loaded before a rekey, another node's) or
/// with none (a node without the key file would store the key in the
/// clear) is refused whole, saying which: the pool never gets a key that
/// opens nowhere, nor one in the clear. Both backends.
#[test]
fn only_the_key_file_the_store_is_sealed_with_writes_keys() {
    if !pam_tools_present() {
        return;
    }
    let world = World::new();
    let (_keys, first, second) = common::rows::two_key_files();
    let with = |file: &std::path::Path, args: &[&str]| common::rows::sealed(&world, file, args);
    let stderr = |out: &std::process::Output| String::from_utf8_lossy(&out.stderr).into_owned();
    let tokens_of = |user: &str| {
        common::rows::sql(
            &world,
            &format!("SELECT count(*) FROM tokens WHERE \"user\" = '{user}'"),
        )
    };
    ok(&with(
        &first,
        &["enroll", "sam", "--secret", &common::random_secret()],
    ));
    // Another key file: refused, nothing written.
    let ann = common::random_secret();
    let out = with(&second, &["enroll", "ann", "--secret", &ann]);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        stderr(&out).contains("another key file"),
        "{}",
        stderr(&out)
    );
    assert_eq!(tokens_of("ann"), "0");
    // No key file (the default one is absent here): refused, no key in
    // the clear.
    let out = world.totpctl(&["enroll", "ann", "--secret", &ann]);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        stderr(&out).contains("no key file is loaded"),
        "{}",
        stderr(&out)
    );
    assert_eq!(tokens_of("ann"), "0");
    // A rekey records the new key file: the old one now writes nothing
    // (a process that loaded it before the rekey), the new one does.
    ok(&with(
        &first,
        &["rekey", "--new-key", second.to_str().expect("path")],
    ));
    let out = with(&first, &["enroll", "ann", "--secret", &ann]);
    assert!(
        stderr(&out).contains("another key file"),
        "{}",
        stderr(&out)
    );
    assert_eq!(tokens_of("ann"), "0");
    let out = with(&first, &["reset", "sam", "--no-confirm"]);
    assert!(!out.status.success(), "{out:?}");
    ok(&with(&second, &["enroll", "ann", "--secret", &ann]));
    world.service(
        "sealed",
        &format!("fail_delay=0 key_file={}", second.display()),
    );
    let run = world.login("sealed", "ann", Some(RHOST), &oathtool(&ann, None, &[]));
    assert!(run.success, "{run:?}");
    println!(
        "sealing: another key file and no key file write nothing; rekey moves the record; the new key file enrolls and logs in"
    );
}

/// A store sealed before the record of its key file (upgraded, or the
/// record lost) holds sealed keys but names no key file: a write without a
/// key file is refused (the key would be in the clear), one with a key
/// file its sealed keys do not open with is refused (and records
/// nothing), and the key file they open with writes and is recorded.
#[test]
fn a_store_sealed_before_the_record_takes_only_its_own_key_file() {
    if !pam_tools_present() {
        return;
    }
    let world = World::new();
    let (_keys, first, second) = common::rows::two_key_files();
    let with = |file: &std::path::Path, args: &[&str]| common::rows::sealed(&world, file, args);
    let refused = |out: &std::process::Output, why: &str| {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(why), "{stderr}");
    };
    ok(&with(
        &first,
        &["enroll", "sam", "--secret", &common::random_secret()],
    ));
    let forget = if world.pg.is_some() {
        "DELETE FROM pam_totp_meta WHERE key = 'sealing_key'"
    } else {
        "PRAGMA application_id = 0"
    };
    common::rows::sql(&world, forget);
    let ann = common::random_secret();
    refused(
        &world.totpctl(&["enroll", "ann", "--secret", &ann]),
        "no key file is loaded",
    );
    refused(
        &with(&second, &["enroll", "ann", "--secret", &ann]),
        "do not open with it",
    );
    ok(&with(&first, &["enroll", "ann", "--secret", &ann]));
    // Recorded now: the other key file is refused as such.
    refused(
        &with(&second, &["enroll", "eve", "--secret", &ann]),
        "another key file",
    );
    let count = common::rows::sql(&world, "SELECT count(*) FROM tokens");
    assert_eq!(count, "2", "sam and ann only");
}

/// `reset` for a new phone keeps the old token working until the new one
/// is confirmed; the confirmation retires it in the same transaction and
/// the new token takes its device name. `reset --now` (old phone lost)
/// removes the old token at once. Both say what they removed.
#[test]
fn reset_keeps_the_old_phone_until_the_new_one_is_confirmed_unless_now() {
    if !pam_tools_present() {
        return;
    }
    let world = World::new();
    world.service("totp", "");
    let old = world.enroll("rita");
    let reset = json(&world.totpctl(&["reset", "rita", "--json"]));
    assert_eq!(reset["state"], "pending", "{reset}");
    assert_eq!(reset["replaces_on_confirmation"][0], "default", "{reset}");
    assert_eq!(reset["recovery_codes"].as_array().map(Vec::len), Some(10));
    let new = reset["key"].as_str().expect("key").to_string();
    let now = unix_now();
    // The old phone still logs in; the new one does not yet.
    let run = world.login("totp", "rita", Some(RHOST), &oathtool(&old, Some(now), &[]));
    assert!(run.success, "old phone before confirmation: {run:?}");
    let run = world.login("totp", "rita", Some(RHOST), &oathtool(&new, Some(now), &[]));
    assert!(!run.success, "new phone before confirmation: {run:?}");
    let show = ok(&world.totpctl(&["show", "rita"]));
    assert!(show.contains("default (new)"), "{show}");
    // Confirmed with the new phone's code: the old token is gone, the new
    // one is "default", and the confirming code is used.
    let code = oathtool(&new, Some(now + 30), &[]);
    let confirmed = ok(&world.totpctl(&["confirm", "rita", &code]));
    assert!(confirmed.contains("Confirmed"), "{confirmed}");
    let run = world.login(
        "totp",
        "rita",
        Some(RHOST),
        &oathtool(&old, Some(now + 30), &[]),
    );
    assert!(!run.success, "old phone after confirmation: {run:?}");
    let listed = json(&world.totpctl(&["list", "--json"]));
    let devices: Vec<&str> = listed
        .as_array()
        .expect("list")
        .iter()
        .filter(|t| t["user"] == "rita")
        .map(|t| t["device"].as_str().expect("device"))
        .collect();
    assert_eq!(devices, ["default"], "{listed}");
    let run = world.login("totp", "rita", Some(RHOST), &code);
    assert!(!run.success, "the confirming code is used: {run:?}");

    // --now: the old token stops at once, the new one is pending.
    let lost = json(&world.totpctl(&["reset", "rita", "--now", "--json"]));
    assert_eq!(lost["removed"][0], "default", "{lost}");
    let run = world.login(
        "totp",
        "rita",
        Some(RHOST),
        &oathtool(&new, Some(now + 60), &[]),
    );
    assert!(!run.success, "the lost phone after reset --now: {run:?}");
    let text = ok(&world.totpctl(&["reset", "rita", "--now"]));
    assert!(text.contains("Removed rita's old token(s)"), "{text}");
}

/// `disable` stops a user's tokens without deleting them, even where
/// `unenrolled=allow` would let a user without a token through; `enable`
/// undoes it. `--expires` stops a token at its time.
#[test]
fn disabled_and_expired_tokens_log_nobody_in_and_never_count_as_unenrolled() {
    if !pam_tools_present() {
        return;
    }
    let world = World::new();
    world.service("totp", "");
    world.service("lenient", "unenrolled=allow");
    let key = world.enroll("dora");
    let out = ok(&world.totpctl(&["disable", "dora"]));
    assert!(out.contains("Disabled dora's tokens (1 token(s))"), "{out}");
    let now = unix_now();
    for service in ["totp", "lenient"] {
        let run = world.login(
            service,
            "dora",
            Some(RHOST),
            &oathtool(&key, Some(now), &[]),
        );
        assert!(!run.success, "{service}: {run:?}");
        assert!(run.logged("every token of the user is disabled"), "{run:?}");
    }
    let shown = ok(&world.totpctl(&["show", "dora"]));
    assert!(shown.contains("disabled"), "{shown}");
    let report = json(&world.totpctl(&["report", "--json"]));
    assert_eq!(report["counts"]["disabled_or_expired"], 1, "{report}");
    assert!(ok(&world.totpctl(&["disable", "dora"])).contains("Nothing to do"));
    assert!(
        !world
            .totpctl(&["disable", "dora", "--device", "tablet"])
            .status
            .success()
    );
    assert!(ok(&world.totpctl(&["enable", "dora"])).contains("Enabled"));
    let run = world.login("totp", "dora", Some(RHOST), &oathtool(&key, Some(now), &[]));
    assert!(run.success, "enabled again: {run:?}");

    // Expiry: refused in the past, shown as a date, enforced after it.
    assert!(
        !world
            .totpctl(&["enroll", "eve", "--secret", &key, "--expires", "2001-01-01"])
            .status
            .success()
    );
    let eve = common::random_secret();
    let out = ok(&world.totpctl(&["enroll", "eve", "--secret", &eve, "--expires", "1d"]));
    assert!(out.contains("expires 20"), "{out}");
    let later = now + 2 * 86_400;
    for service in ["totp", "lenient"] {
        let run = world.login_at(
            later,
            service,
            "eve",
            Some(RHOST),
            &oathtool(&eve, Some(later), &[]),
        );
        assert!(!run.success, "{service} after expiry: {run:?}");
        assert!(run.logged("every token of the user is expired"), "{run:?}");
    }
    let run = world.login("totp", "eve", Some(RHOST), &oathtool(&eve, Some(now), &[]));
    assert!(run.success, "before expiry: {run:?}");
}

/// `prune` removes enrollments nobody finished, and only those.
#[test]
fn prune_removes_only_old_pending_tokens() {
    let world = World::new();
    world.enroll("finished");
    ok(&world.totpctl(&["enroll", "unfinished", "--json"]));
    std::thread::sleep(Duration::from_millis(2_100));
    let dry = ok(&world.totpctl(&["prune", "--pending-older-than", "1s", "--dry-run"]));
    assert!(
        dry.contains("would remove unfinished's pending device"),
        "{dry}"
    );
    assert!(ok(&world.totpctl(&["show", "unfinished"])).contains("pending"));
    let pruned = ok(&world.totpctl(&["prune", "--pending-older-than", "1s"]));
    assert!(pruned.contains("Removed 1 pending token(s)"), "{pruned}");
    assert!(!world.totpctl(&["show", "unfinished"]).status.success());
    assert!(world.totpctl(&["show", "finished"]).status.success());
    assert!(
        !world
            .totpctl(&["prune", "--pending-older-than", "14"])
            .status
            .success()
    );
}

/// `enroll --from-file`: the list is checked whole against the name
/// service before anything is stored; then every user in one transaction,
/// a JSON line each (or PNGs in a new 0700 directory), and the keys log in.
#[test]
fn bulk_enrollment_is_all_or_nothing_and_every_key_logs_in() {
    use std::os::unix::fs::PermissionsExt;
    if !pam_tools_present() {
        return;
    }
    let world = World::new();
    world.service("totp", "");
    for user in ["ann", "ben", "cat"] {
        world.add_user(user);
    }
    let dir = common::private_tempdir();
    let list = dir.path().join("users.txt");
    std::fs::write(&list, "# pilot\nann\nben\n\nalcie\nben\n").expect("list");
    let out = world.totpctl(&[
        "enroll",
        "--from-file",
        list.to_str().expect("path"),
        "--no-confirm",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("line 5") && stderr.contains("alcie"),
        "{stderr}"
    );
    assert!(
        stderr.contains("line 6") && stderr.contains("twice"),
        "{stderr}"
    );
    assert!(
        !world.totpctl(&["show", "ann"]).status.success(),
        "nothing stored"
    );

    std::fs::write(&list, "ann\nben # second\n").expect("list");
    let out = ok(&world.totpctl(&[
        "enroll",
        "--from-file",
        list.to_str().expect("path"),
        "--no-confirm",
    ]));
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 2);
    for line in &lines {
        let user = line["user"].as_str().expect("user");
        let key = line["key"].as_str().expect("key");
        assert_eq!(line["recovery_codes"].as_array().map(Vec::len), Some(10));
        let run = world.login("totp", user, Some(RHOST), &oathtool(key, None, &[]));
        assert!(run.success, "{user}: {run:?}");
    }

    // PNGs: into a new private directory; an existing one is refused
    // before anything is stored.
    std::fs::write(&list, "cat\n").expect("list");
    let existing = dir.path().join("existing");
    std::fs::create_dir(&existing).expect("dir");
    let out = world.totpctl(&[
        "enroll",
        "--from-file",
        list.to_str().expect("path"),
        "--qr-dir",
        existing.to_str().expect("path"),
    ]);
    assert!(!out.status.success());
    assert!(
        !world.totpctl(&["show", "cat"]).status.success(),
        "nothing stored"
    );
    let qr = dir.path().join("qr");
    let out = ok(&world.totpctl(&[
        "enroll",
        "--from-file",
        list.to_str().expect("path"),
        "--qr-dir",
        qr.to_str().expect("path"),
    ]));
    let line: Value = serde_json::from_str(out.trim()).expect("json");
    assert!(
        line.get("key").is_none(),
        "the key is in the PNG only: {line}"
    );
    let mode = std::fs::metadata(&qr).expect("dir").permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    let png = std::fs::read(qr.join("cat.png")).expect("png");
    assert!(png.starts_with(b"\x89PNG"));
}

/// The README's lost-or-stolen-phone advice: `totpctl reset USER --now` removes the
/// old tokens at once. A login that was already at the prompt when the
/// help desk reset the user (the thief has the phone and the password, and
/// keeps a connection waiting) must not get in with the stolen phone's
/// code. The module checks the answer against the tokens it read before
/// the prompt; on SQLite the new token takes the deleted token's rowid
/// (`id INTEGER PRIMARY KEY`, no AUTOINCREMENT) when it was the highest, so
/// a claim by id alone let the old key's code claim the new token's step
/// (found by an attack). The claim now also names the key it was read with
/// (`sql::CLAIM_STEP`). PostgreSQL (an identity column) held before too.
#[test]
fn a_reset_during_a_pending_login_lets_no_code_of_the_old_key_in() {
    if !pam_tools_present() {
        return;
    }
    let world = World::new();
    world.service("totp", "fail_delay=0");
    ok(&world.totpctl(&["enroll", "zed", "--secret", &common::random_secret()]));

    // Active at once (--secret): the token the user's new phone holds.
    let stolen = common::random_secret();
    ok(&world.totpctl(&["enroll", "mia", "--secret", &stolen]));
    let waiting = waiting_at_prompt(&world, "mia");
    ok(&world.totpctl(&[
        "reset",
        "mia",
        "--now",
        "--secret",
        &common::random_secret(),
    ]));
    let (got_in, log) = answer_waiting(waiting, &oathtool(&stolen, None, &[]));
    assert!(
        !got_in,
        "reset --now --secret: the stolen key's code got in:\n{log}"
    );

    // The documented lost-phone reset (a pending token, confirmed by the
    // user's new phone meanwhile): the old key's next code must not get in.
    let stolen = common::random_secret();
    ok(&world.totpctl(&["reset", "mia", "--now", "--secret", &stolen]));
    let waiting = waiting_at_prompt(&world, "mia");
    let reset = json(&world.totpctl(&["reset", "mia", "--now", "--json"]));
    let new_key = reset["key"].as_str().expect("key").to_string();
    let now = unix_now();
    ok(&world.totpctl(&["confirm", "mia", &oathtool(&new_key, Some(now), &[])]));
    let (got_in, log) = answer_waiting(waiting, &oathtool(&stolen, Some(now + 30), &[]));
    assert!(
        !got_in,
        "reset --now, then confirmed: the stolen key's next code got in:\n{log}"
    );
}

/// totpctl refuses to enroll a key the user holds on another device, and
/// says which.
fn refused_as_held_by(out: &std::process::Output, device: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.contains(&format!("already holds this key on device \"{device}\"")),
        "a second device with a key the user holds was enrolled: {out:?}"
    );
}

/// Promise 1 with two HOTP devices of one user holding the same key (the
/// same hardware token enrolled twice, e.g. under a second name by the
/// help desk, or `--secret` reused): a code used on the first device must
/// not work again on the second. The login path picks the first device
/// whose look-ahead window holds the code; once the first device's counter
/// has passed it, the second device (counter still at 0) matches it and
/// claims it: the same code logs in twice (found by an attack).
#[test]
fn a_used_hotp_code_does_not_work_again_on_a_second_device_with_the_same_key() {
    if !pam_tools_present() {
        return;
    }
    let world = World::new();
    world.service("totp", "fail_delay=0");
    let key = common::random_secret();
    ok(&world.totpctl(&["enroll", "hedy", "--type", "hotp", "--secret", &key]));
    let second = world.totpctl(&[
        "enroll", "hedy", "--device", "spare", "--type", "hotp", "--secret", &key,
    ]);
    refused_as_held_by(&second, "default");
    if sqlite_only("a store written before enroll refused a held key") {
        return;
    }
    copy_device(&world, "hedy", "default", "spare", Copied::default());
    let code = oathtool_hotp(&key, 0, false);
    let first = world.login("totp", "hedy", Some(RHOST), &code);
    assert!(first.success, "{first:?}");
    let replay = world.login("totp", "hedy", Some(RHOST), &code);
    assert!(
        !replay.success,
        "HOTP counter 0's code logged in a second time (on the other device): {replay:?}"
    );
    // Stopping the device that used it (the first match: devices are
    // checked in name order) does not free the counter for the other one.
    ok(&world.totpctl(&["disable", "hedy", "--device", "default"]));
    let after = world.login("totp", "hedy", Some(RHOST), &code);
    assert!(
        !after.success,
        "HOTP counter 0's code logged in again once the device that used it was disabled: {after:?}"
    );
    let next = oathtool_hotp(&key, 1, false);
    let spare = world.login("totp", "hedy", Some(RHOST), &next);
    assert!(spare.success, "the spare device's next counter: {spare:?}");
}

/// Promise 1 with two TOTP devices of one user holding the same key (one
/// phone's QR code enrolled under two names, `--secret` reused, or a file
/// imported beside the key it came from): a code used on one device must
/// not work again on the other within its window.
#[test]
fn a_used_totp_code_does_not_work_again_on_a_second_device_with_the_same_key() {
    if !pam_tools_present() {
        return;
    }
    let world = World::new();
    world.service("totp", "fail_delay=0");
    let key = common::random_secret();
    ok(&world.totpctl(&["enroll", "ines", "--secret", &key]));
    let second = world.totpctl(&["enroll", "ines", "--device", "spare", "--secret", &key]);
    refused_as_held_by(&second, "default");
    if sqlite_only("a store written before enroll refused a held key") {
        return;
    }
    copy_device(&world, "ines", "default", "spare", Copied::default());
    let code = oathtool(&key, None, &[]);
    let first = world.login("totp", "ines", Some(RHOST), &code);
    assert!(first.success, "{first:?}");
    let replay = world.login("totp", "ines", Some(RHOST), &code);
    assert!(
        !replay.success,
        "a TOTP code logged in a second time (on the other device): {replay:?}"
    );
    // Stopping the device that used it (the first match: devices are
    // checked in name order) does not free the step for the other one.
    ok(&world.totpctl(&["disable", "ines", "--device", "default"]));
    let after = world.login("totp", "ines", Some(RHOST), &code);
    assert!(
        !after.success,
        "a TOTP code logged in again once the device that used it was disabled: {after:?}"
    );
}

/// An import does not put a key the user already holds on a second device
/// either (an oath users file, and a google-authenticator file with
/// --force): nothing is written, and the refusal names the device.
#[test]
fn imports_refuse_a_key_the_user_holds_on_another_device() {
    if !pam_tools_present() {
        return;
    }
    let world = World::new();
    let hex = "3132333435363738393031323334353637383930";
    let base32 = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
    ok(&world.totpctl(&["enroll", "otto", "--device", "phone", "--secret", base32]));
    let users = world.dir.path().join("users.oath");
    std::fs::write(&users, format!("HOTP/T30 otto - {hex}\n")).expect("users");
    let path = users.to_str().expect("path");
    let run = world.totpctl(&["import", "oath", path, "--apply", "--force"]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        !run.status.success() && stderr.contains("already on device \"phone\""),
        "{run:?}"
    );
    let ga = world.dir.path().join("ga_otto");
    std::fs::write(&ga, format!("{base32}\n\" TOTP_AUTH\n")).expect("ga file");
    let run = world.totpctl(&[
        "import",
        "google-authenticator",
        ga.to_str().expect("path"),
        "--user",
        "otto",
        "--apply",
        "--force",
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        !run.status.success() && stderr.contains("already on device \"phone\""),
        "{run:?}"
    );
    let shown = json(&world.totpctl(&["show", "otto", "--json"]));
    assert_eq!(
        shown["tokens"].as_array().map(Vec::len),
        Some(1),
        "only the phone: {shown}"
    );
    // Onto that device, with --force, it is the same key imported again.
    ok(&world.totpctl(&[
        "import", "oath", path, "--apply", "--force", "--device", "phone",
    ]));
}

/// A deleted key is remembered by its mark (`otp::key_mark`), not kept:
/// once a used device is deleted (or its user), no record of a deleted
/// key holds key bytes, sealed or not, yet the key enrolled again, as it
/// was or with zero bytes appended (which HMAC makes the same key),
/// refuses the code it used and takes the next. A record still holding a
/// key (written before schema 11, or by a delete by hand) counts too, and
/// the user's next change of devices or `totpctl prune` marks it.
#[test]
fn deleted_keys_are_remembered_by_a_mark_and_not_kept() {
    if !pam_tools_present() {
        return;
    }
    let world = World::new();
    let (_keys, file, _) = common::rows::two_key_files();
    world.service("totp", &format!("fail_delay=0 key_file={}", file.display()));
    let held = || {
        common::rows::sql(
            &world,
            "SELECT count(*) FROM retired_keys WHERE length(secret) > 0",
        )
    };
    let marks = || {
        common::rows::sql(
            &world,
            "SELECT count(*) FROM retired_keys WHERE key_mark IS NOT NULL",
        )
    };
    let sealed = |args: &[&str]| ok(&common::rows::sealed(&world, &file, args));
    let now = unix_now();
    let used_then_refused = |user: &str, key: &str, enroll_again: &dyn Fn()| {
        let code = oathtool(key, Some(now), &[]);
        let first = world.login_at(now, "totp", user, Some(RHOST), &code);
        assert!(first.success, "{first:?}");
        enroll_again();
        let replay = world.login_at(now, "totp", user, Some(RHOST), &code);
        assert!(
            !replay.success && replay.logged("already used"),
            "{user}: a deleted key's used code logged in again: {replay:?}"
        );
        let next = oathtool(key, Some(now + 30), &[]);
        let later = world.login_at(now + 30, "totp", user, Some(RHOST), &next);
        assert!(later.success, "{user}: {later:?}");
    };

    let key = common::random_secret();
    sealed(&["enroll", "ada", "--device", "phone", "--secret", &key]);
    used_then_refused("ada", &key, &|| {
        sealed(&["delete", "ada", "--device", "phone"]);
        assert_eq!(
            (held(), marks()),
            ("0".to_string(), "1".to_string()),
            "a delete kept the key"
        );
        // 20 bytes are 32 base32 characters: eight more "A" append five
        // zero bytes.
        let padded = format!("{key}AAAAAAAA");
        sealed(&["enroll", "ada", "--device", "phone", "--secret", &padded]);
    });
    sealed(&["delete", "ada"]);
    assert_eq!(held(), "0", "deleting the user kept a key");

    // Records holding the key, as schema 10 wrote them (by hand here; on
    // PostgreSQL the delete by hand runs the trigger, which adds one).
    let keep_as_key = |user: &str| {
        common::rows::sql(
            &world,
            &format!(
                "INSERT INTO retired_keys (\"user\", device, kind, secret, algorithm, digits, \
                 period, created, last_step, keep_until) SELECT \"user\", device, kind, secret, \
                 algorithm, digits, period, created, last_step, NULL FROM tokens \
                 WHERE \"user\" = '{user}'; DELETE FROM tokens WHERE \"user\" = '{user}'"
            ),
        );
        assert_ne!(held(), "0");
    };
    // Marked by the user's next change of devices, which counts it first.
    let key = common::random_secret();
    sealed(&["enroll", "bob", "--secret", &key]);
    used_then_refused("bob", &key, &|| {
        keep_as_key("bob");
        sealed(&["enroll", "bob", "--secret", &key]);
        assert_eq!(held(), "0", "enrolling bob again left his records as keys");
    });
    // Marked by `totpctl prune`, which counts it afterwards.
    let key = common::random_secret();
    sealed(&["enroll", "cy", "--secret", &key]);
    used_then_refused("cy", &key, &|| {
        keep_as_key("cy");
        sealed(&["prune", "--pending-older-than", "14d"]);
        assert_eq!(held(), "0", "prune left records as keys");
        sealed(&["enroll", "cy", "--secret", &key]);
    });
}
