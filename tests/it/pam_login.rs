//! The login path through the real libpam (pam_wrapper + pamtester), with
//! codes from oathtool.

use crate::common;

use common::{RHOST, World, oathtool, pam_tools_present, tools_present, unix_now, wrong_code};

const PROMPT: &str = "Verification code: ";

#[test]
fn right_code_once_then_refused_as_reused() {
    if !pam_tools_present() {
        return;
    }
    let world = World::new();
    world.service("totp", "");
    let key = world.enroll("alice");
    let code = oathtool(&key, None, &[]);

    let first = world.login("totp", "alice", Some(RHOST), &code);
    assert!(first.success, "{first:?}");
    assert!(first.prompted(PROMPT), "{first:?}");
    assert!(first.logged("accepted: code for step"), "{first:?}");
    assert!(
        first.logged("user=\"alice\" rhost=\"203.0.113.7\""),
        "{first:?}"
    );

    let second = world.login("totp", "alice", Some(RHOST), &code);
    assert!(!second.success, "{second:?}");
    assert!(second.logged("denied: code already used"), "{second:?}");
}

#[test]
fn a_generated_key_as_displayed_by_enroll_logs_in() {
    if !pam_tools_present() {
        return;
    }
    let world = World::new();
    world.service("totp", "");
    let out = world.totpctl(&["enroll", "dave", "--no-confirm"]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    // What the user types into the app: the grouped key as displayed.
    let key: String = stdout
        .lines()
        .find_map(|l| l.strip_prefix("Key: "))
        .expect("key line")
        .split_whitespace()
        .collect();
    let run = world.login("totp", "dave", Some(RHOST), &oathtool(&key, None, &[]));
    assert!(run.success, "{run:?}");
}

#[test]
fn wrong_empty_letters_and_seven_digits_are_refused() {
    if !pam_tools_present() {
        return;
    }
    let world = World::new();
    world.service("totp", "");
    let key = world.enroll("alice");
    let code = oathtool(&key, None, &[]);
    for (answer, log) in [
        (wrong_code(&code), "denied: wrong code"),
        (String::new(), "not a code"),
        ("abcdef".to_string(), "not a code"),
        (format!("{code}7"), "not a code"),
    ] {
        let run = world.login("totp", "alice", Some(RHOST), &answer);
        assert!(!run.success, "{answer:?}: {run:?}");
        assert!(run.logged(log), "{answer:?}: {run:?}");
        assert!(!run.stderr.contains(&code), "the code must never be logged");
    }
    // Refusals burned nothing: the right code still works, surrounded by spaces.
    let run = world.login("totp", "alice", Some(RHOST), &format!("  {code} "));
    assert!(run.success, "{run:?}");
}

#[test]
fn trusted_networks_skip_the_prompt_and_nothing_else_does() {
    if !pam_tools_present() {
        return;
    }
    let world = World::new();
    world.service("totp", "trusted=10.0.0.0/8,2001:db8::/32");
    let key = world.enroll("alice");

    for rhost in ["10.20.30.40", "::ffff:10.20.30.40", "2001:db8::7"] {
        // Empty stdin: a prompt would read nothing and fail.
        let run = world.login("totp", "alice", Some(rhost), "");
        assert!(run.success, "{rhost}: {run:?}");
        assert!(!run.prompted(PROMPT), "{rhost}: {run:?}");
        assert!(run.logged("trusted network"), "{rhost}: {run:?}");
    }
    for rhost in [Some("10.example.org"), Some("192.0.2.1"), None] {
        let run = world.login("totp", "alice", rhost, "");
        assert!(!run.success, "{rhost:?}: {run:?}");
        assert!(run.prompted(PROMPT), "{rhost:?}: {run:?}");
    }
    // A hostname rhost is prompted and gets in with a right code.
    let run = world.login(
        "totp",
        "alice",
        Some("10.example.org"),
        &oathtool(&key, None, &[]),
    );
    assert!(run.success, "{run:?}");
}

#[test]
fn unenrolled_users_deny_by_default_and_are_ignored_with_allow() {
    if !pam_tools_present() {
        return;
    }
    let world = World::new();
    world.enroll("alice");
    world.service("deny", "");
    world.service("allow", "unenrolled=allow");
    // pam_permit after us shows PAM_IGNORE: the stack's result is then decided
    // by the other module alone.
    world.raw_service(
        "allow-then-deny",
        &format!(
            "auth required {} {} unenrolled=allow\nauth required pam_deny.so\n",
            common::module_path().display(),
            world.store_args()
        ),
    );
    world.raw_service(
        "allow-then-permit",
        &format!(
            "auth required {} {} unenrolled=allow\nauth required pam_permit.so\n",
            common::module_path().display(),
            world.store_args()
        ),
    );

    let run = world.login("deny", "mallory", Some(RHOST), "123456");
    assert!(!run.success, "{run:?}");
    assert!(
        run.prompted(PROMPT),
        "unenrolled users are prompted too: {run:?}"
    );
    assert!(
        run.logged("user is not enrolled (unenrolled=deny)"),
        "{run:?}"
    );

    let run = world.login("allow-then-permit", "mallory", Some(RHOST), "");
    assert!(run.success, "PAM_IGNORE lets the rest decide: {run:?}");
    assert!(!run.prompted(PROMPT), "{run:?}");
    assert!(run.logged("ignored: user is not enrolled"), "{run:?}");

    let run = world.login("allow-then-deny", "mallory", Some(RHOST), "");
    assert!(!run.success, "{run:?}");
}

#[test]
fn window_zero_refuses_the_previous_step_and_window_one_accepts_it() {
    if !pam_tools_present() || !tools_present(&[common::FAKETIME, "date"]) {
        return;
    }
    let world = World::new();
    world.service("strict", "window=0");
    world.service("default", "");
    let key = world.enroll("alice");
    // 10 s into a step, far from its edges.
    let now = (unix_now() / 30 - 1000) * 30 + 10;
    let previous = oathtool(&key, Some(now - 30), &[]);
    let current = oathtool(&key, Some(now), &[]);

    let run = world.login_at(now, "strict", "alice", Some(RHOST), &previous);
    assert!(!run.success, "{run:?}");
    assert!(run.logged("denied: wrong code"), "{run:?}");

    let run = world.login_at(now, "default", "alice", Some(RHOST), &previous);
    assert!(run.success, "{run:?}");
    assert!(run.logged("(offset -1)"), "{run:?}");

    // The previous step is now used: the current code still works, once.
    let run = world.login_at(now, "strict", "alice", Some(RHOST), &current);
    assert!(run.success, "{run:?}");
    let run = world.login_at(now, "default", "alice", Some(RHOST), &previous);
    assert!(!run.success, "an older step after a newer one: {run:?}");
}

#[test]
fn sha256_eight_digit_sixty_second_tokens_work() {
    if !pam_tools_present() {
        return;
    }
    let world = World::new();
    world.service("totp", "");
    let key = common::random_secret();
    let out = world.totpctl(&[
        "enroll",
        "carol",
        "--secret",
        &key,
        "--algorithm",
        "sha256",
        "--digits",
        "8",
        "--period",
        "60",
    ]);
    assert!(out.status.success());
    let code = oathtool(&key, None, &["--totp=sha256", "-d", "8", "-s", "60s"]);
    let run = world.login("totp", "carol", Some(RHOST), &code);
    assert!(run.success, "{run:?}");
}

/// Every configuration or store fault denies, and the log names the cause.
#[test]
fn faults_fail_closed_with_a_named_cause() {
    if !pam_tools_present() {
        return;
    }
    let world = World::new();
    let key = world.enroll("alice");
    let conf_dir = world.dir.path().join("conf-is-a-dir");
    std::fs::create_dir(&conf_dir).expect("mkdir");
    use std::os::unix::fs::PermissionsExt;
    // In a directory of its own that only root can read, mode 0600, as a
    // store must be: what is wrong with it is its contents.
    let private = world.dir.path().join("private");
    std::fs::create_dir(&private).expect("mkdir");
    std::fs::set_permissions(&private, PermissionsExt::from_mode(0o700)).expect("chmod");
    let corrupt = private.join("corrupt.db");
    std::fs::write(&corrupt, vec![0x42u8; 16384]).expect("write");
    std::fs::set_permissions(&corrupt, PermissionsExt::from_mode(0o600)).expect("chmod");
    let db = world.db.display().to_string();

    let cases: Vec<(String, &str)> = vec![
        (
            format!("db={db} no_such_option"),
            "unknown key \"no_such_option\"",
        ),
        (format!("db={db} window=abc"), "window=\"abc\" is invalid"),
        (
            format!("db={db} trusted=10.0.0.0/33"),
            "trusted=\"10.0.0.0/33\" is invalid",
        ),
        (format!("db={db} unenrolled=sometimes"), "unenrolled"),
        (
            "db=/nonexistent/pam_totp.db".to_string(),
            "store /nonexistent/pam_totp.db does not exist",
        ),
        (
            format!("db={}", corrupt.display()),
            "is not a usable database",
        ),
        (
            format!("db={db} config={}", conf_dir.display()),
            "conf-is-a-dir",
        ),
        (
            format!("db={db} config=/nonexistent/pam_totp.conf"),
            "config file /nonexistent/pam_totp.conf",
        ),
    ];
    for (args, cause) in cases {
        world.service_exact("faulty", &args);
        let code = oathtool(&key, None, &[]);
        let run = world.login("faulty", "alice", Some(RHOST), &code);
        assert!(!run.success, "{args}: {run:?}");
        assert!(run.logged(cause), "{args}: expected {cause:?} in {run:?}");
        assert!(run.logged("denied:"), "{args}: {run:?}");
    }
    // None of the faulty logins burned the code's step or touched the store.
    world.service("good", "");
    let run = world.login("good", "alice", Some(RHOST), &oathtool(&key, None, &[]));
    assert!(run.success, "{run:?}");
}

#[test]
fn config_file_settings_apply_and_arguments_override_them() {
    if !pam_tools_present() {
        return;
    }
    let world = World::new();
    let key = world.enroll("alice");
    let conf = world.dir.path().join("pam_totp.conf");
    std::fs::write(
        &conf,
        format!(
            "# site file\n{}trusted = 192.0.2.0/24\nprompt = \"Second Factor: \"\n",
            world.store_config_lines()
        ),
    )
    .expect("conf");
    world.service_exact("file", &format!("config={}", conf.display()));
    world.service_exact(
        "override",
        &format!("config={} [prompt=Authenticator Code: ]", conf.display()),
    );

    let run = world.login("file", "alice", Some("192.0.2.9"), "");
    assert!(run.success, "trusted from the file: {run:?}");
    let run = world.login("file", "alice", Some(RHOST), &oathtool(&key, None, &[]));
    assert!(run.success, "{run:?}");
    assert!(run.prompted("Second Factor: "), "{run:?}");

    let run = world.login("override", "alice", Some(RHOST), "000000");
    assert!(run.prompted("Authenticator Code: "), "{run:?}");
}

#[test]
fn guessing_backs_off_per_address_and_unlock_clears_it() {
    if !pam_tools_present() {
        return;
    }
    let world = World::new();
    world.service("totp", "");
    let key = world.enroll("gus");
    let code = oathtool(&key, None, &[]);
    for _ in 0..5 {
        assert!(
            !world
                .login("totp", "gus", Some(RHOST), &wrong_code(&code))
                .success
        );
    }
    let run = world.login("totp", "gus", Some(RHOST), &code);
    assert!(!run.success, "a right code during back-off: {run:?}");
    assert!(
        run.logged("too many failed codes from this address"),
        "{run:?}"
    );
    assert!(run.logged("nothing burned"), "{run:?}");

    let shown = String::from_utf8_lossy(&world.totpctl(&["show", "gus"]).stdout).into_owned();
    assert!(
        shown.contains("failed codes from \"203.0.113.7\": 5"),
        "{shown}"
    );
    assert!(world.totpctl(&["unlock", "gus"]).status.success());
    let run = world.login("totp", "gus", Some(RHOST), &code);
    assert!(run.success, "not burned by the refused try: {run:?}");
}

#[test]
fn default_fail_delay_holds_failures_back() {
    if !pam_tools_present() {
        return;
    }
    let world = World::new();
    // No fail_delay= argument: the module's default.
    world.service_exact("delayed", &world.store_args());
    world.enroll("fay");
    let started = std::time::Instant::now();
    let run = world.login("delayed", "fay", Some(RHOST), "000000");
    assert!(!run.success);
    // libpam spreads the delay over half to one and a half times the
    // request (sum of three uniform numbers, despite its "±25%" comment).
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(950),
        "failure answered after {:?}",
        started.elapsed()
    );
}

#[test]
fn a_store_or_config_that_others_could_swap_is_refused() {
    if !pam_tools_present() || common::sqlite_only("the store file's owner and mode") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let set_mode = |p: &std::path::Path, mode: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
    };
    let world = World::new();
    world.service("totp", "");
    let key = world.enroll("sid");
    let login = || world.login("totp", "sid", Some(RHOST), &oathtool(&key, None, &[]));
    let dir = world.db.parent().expect("store dir").to_path_buf();

    std::os::unix::fs::chown(&world.db, Some(65534), None).expect("chown");
    let run = login();
    assert!(!run.success && run.logged("store not trusted"), "{run:?}");
    assert!(run.logged("owned by uid 65534, not root"), "{run:?}");
    std::os::unix::fs::chown(&world.db, Some(0), None).expect("chown");

    set_mode(&world.db, 0o666);
    let run = login();
    assert!(
        !run.success && run.logged("mode 0666 is group- or world-writable"),
        "{run:?}"
    );
    set_mode(&world.db, 0o600);

    set_mode(&dir, 0o777);
    let run = login();
    assert!(!run.success && run.logged("store not trusted"), "{run:?}");
    set_mode(&dir, 0o700);

    let conf = world.dir.path().join("pam_totp.conf");
    std::fs::write(&conf, "window = 1\n").expect("conf");
    set_mode(&conf, 0o646);
    world.service("with-conf", &format!("config={}", conf.display()));
    let run = world.login("with-conf", "sid", Some(RHOST), &oathtool(&key, None, &[]));
    assert!(
        !run.success && run.logged("group- or world-writable"),
        "{run:?}"
    );
    let link = world.dir.path().join("link.conf");
    set_mode(&conf, 0o644);
    std::os::unix::fs::symlink(&conf, &link).expect("symlink");
    world.service("via-link", &format!("config={}", link.display()));
    let run = world.login("via-link", "sid", Some(RHOST), &oathtool(&key, None, &[]));
    assert!(!run.success && run.logged("is a symlink"), "{run:?}");

    // All refusals burned nothing: the code still works with the store put right.
    let run = login();
    assert!(run.success, "{run:?}");
}

/// The user is who NSS says: a name the name service does not know is
/// prompted like any other, then denied, even under unenrolled=allow (an
/// alias or another spelling of an enrolled user never skips the code).
#[test]
fn names_the_name_service_does_not_know_are_denied_never_ignored() {
    if !pam_tools_present() {
        return;
    }
    let world = World::new();
    world.strict_users();
    world.add_user("bob");
    world.service("allow", "unenrolled=allow");
    let key = world.enroll("bob");
    for name in ["BOB", "bob@site", "bob ", "nosuchuser"] {
        let run = world.login("allow", name, Some(RHOST), "123456");
        assert!(!run.success, "{name:?}: {run:?}");
        assert!(
            run.prompted(PROMPT),
            "{name:?} is asked like anyone: {run:?}"
        );
        assert!(
            run.logged("denied: user unknown to the name service"),
            "{name:?}: {run:?}"
        );
    }
    // bob himself still needs his code.
    let run = world.login("allow", "bob", Some(RHOST), &oathtool(&key, None, &[]));
    assert!(run.success, "{run:?}");
    assert!(run.logged("user=\"bob\""), "{run:?}");
}

/// A store that is missing is a service error (an administrator must act),
/// not "authentication information unavailable", which a stack may be
/// written to tolerate: seen through the real libpam's return code.
#[test]
fn a_missing_store_is_a_service_error_not_an_unavailable_one() {
    if !pam_tools_present() {
        return;
    }
    let world = World::new_sqlite();
    world.service("totp", "");
    let printed = world.pam_worker("totp", "mia", RHOST, &["123456"], "");
    assert!(printed.contains("RESULT 3\n"), "PAM_SERVICE_ERR: {printed}");
}
