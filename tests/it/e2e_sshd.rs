//! Real OpenSSH logins: sshd on loopback with `pam_unix` then `pam_totp`,
//! throwaway local users, the real ssh client answering each prompt, codes
//! from oathtool. Each scenario asserts the client's outcome and the
//! module's syslog line.

use crate::common;

use std::thread;

use common::sshd::{Attempt, LocalUser, Sshd, e2e_tools_present};
use common::{oathtool, wrong_code};

fn report(scenario: &str, result: &str) {
    println!("scenario {scenario}: {result}");
}

#[test]
fn s1_right_password_right_code_gets_in_code_asked_after_password() {
    if !e2e_tools_present() {
        return;
    }
    let sshd = Sshd::start("");
    let alice = LocalUser::create("a");
    let key = sshd.enroll(&alice.name);
    let login = sshd.login(&Attempt::in_person(&alice, &key));
    assert!(login.success, "{login:?}\n{}", sshd.sshd_log());
    assert_eq!(login.prompts.len(), 2, "{login:?}");
    assert!(login.prompts[0].contains("Password"), "{login:?}");
    assert!(
        login.prompts[1].contains("Verification code: "),
        "{login:?}"
    );
    let line = sshd.expect_log(&[
        "accepted: code for step",
        &alice.name,
        "rhost=\"127.0.0.1\"",
    ]);
    assert!(line.starts_with("<86>"), "facility authpriv, info: {line}");
    report(
        "1 right password, right code",
        "in; prompts: password, then code",
    );
}

#[test]
fn s2_same_code_on_a_second_connection_is_refused() {
    if !e2e_tools_present() {
        return;
    }
    let sshd = Sshd::start("");
    let alice = LocalUser::create("a");
    let key = sshd.enroll(&alice.name);
    let code = oathtool(&key, None, &[]);
    let attempt = Attempt {
        passwords: vec![alice.password.clone()],
        codes: vec![code],
        ..Attempt::new(&alice.name)
    };
    let first = sshd.login(&attempt);
    assert!(first.success, "{first:?}");
    let second = sshd.login(&attempt);
    assert!(!second.success, "{second:?}");
    assert_eq!(second.code_prompts(), 1, "{second:?}");
    sshd.expect_log(&["denied: code already used", &alice.name]);
    // The user is told why, through sshd to the client (messages=yes).
    assert!(
        second.stderr.contains("This code was already used"),
        "{second:?}"
    );
    assert!(!first.stderr.contains("already used"), "{first:?}");
    report(
        "2 same code on a second connection",
        "first in, second refused and told the code was already used",
    );
}

#[test]
fn s3_wrong_password_right_code_is_refused_and_the_code_is_still_asked() {
    if !e2e_tools_present() {
        return;
    }
    let sshd = Sshd::start("");
    let alice = LocalUser::create("a");
    let key = sshd.enroll(&alice.name);
    let login = sshd.login(&Attempt {
        passwords: vec!["not-the-password".to_string()],
        ..Attempt::in_person(&alice, &key)
    });
    assert!(!login.success, "{login:?}");
    assert_eq!(login.password_prompts(), 1, "{login:?}");
    assert_eq!(
        login.code_prompts(),
        1,
        "the code is asked even after a wrong password: {login:?}"
    );
    // pam_totp saw a right code; the stack still failed on the password.
    sshd.expect_log(&["accepted: code for step", &alice.name]);
    report(
        "3 wrong password, right code",
        "refused; code prompt shown anyway",
    );
}

#[test]
fn s4_wrong_codes_are_refused_then_a_right_one_gets_in() {
    if !e2e_tools_present() {
        return;
    }
    let sshd = Sshd::start("");
    let alice = LocalUser::create("a");
    let key = sshd.enroll(&alice.name);
    let bad = wrong_code(&oathtool(&key, None, &[]));

    let refused = sshd.login(&Attempt {
        passwords: vec![alice.password.clone()],
        codes: vec![bad.clone()],
        ..Attempt::new(&alice.name)
    });
    assert!(!refused.success, "{refused:?}");
    sshd.expect_log(&["denied: wrong code", &alice.name]);

    // One connection, three tries: wrong, wrong, right.
    let login = sshd.login(&Attempt {
        passwords: vec![alice.password.clone(); 3],
        codes: vec![bad.clone(), bad, "@oathtool".to_string()],
        key: Some(&key),
        ..Attempt::new(&alice.name)
    });
    assert!(login.success, "{login:?}\n{}", sshd.sshd_log());
    assert_eq!(login.code_prompts(), 3, "{login:?}");
    let wrong_lines = sshd
        .module_log()
        .iter()
        .filter(|l| l.contains("denied: wrong code"))
        .count();
    assert_eq!(wrong_lines, 3, "{:?}", sshd.module_log());
    sshd.expect_log(&["accepted: code for step", &alice.name]);
    report(
        "4 right password, wrong code",
        "refused; wrong, wrong, right in one connection: in",
    );
}

#[test]
fn s5_trusted_source_addresses_skip_the_code_others_do_not() {
    if !e2e_tools_present() {
        return;
    }
    let sshd = Sshd::start("trusted=127.0.0.2/32,::1/128");
    let alice = LocalUser::create("a");
    let key = sshd.enroll(&alice.name);

    let trusted_v4 = sshd.login(&Attempt {
        bind: Some("127.0.0.2"),
        passwords: vec![alice.password.clone()],
        ..Attempt::new(&alice.name)
    });
    assert!(trusted_v4.success, "{trusted_v4:?}\n{}", sshd.sshd_log());
    assert_eq!(trusted_v4.code_prompts(), 0, "{trusted_v4:?}");
    sshd.expect_log(&["127.0.0.2 is in a trusted network", &alice.name]);

    let trusted_v6 = sshd.login(&Attempt {
        host: "::1",
        passwords: vec![alice.password.clone()],
        ..Attempt::new(&alice.name)
    });
    assert!(trusted_v6.success, "{trusted_v6:?}\n{}", sshd.sshd_log());
    assert_eq!(trusted_v6.code_prompts(), 0, "{trusted_v6:?}");
    sshd.expect_log(&["::1 is in a trusted network", &alice.name]);

    let untrusted = sshd.login(&Attempt::in_person(&alice, &key));
    assert!(untrusted.success, "{untrusted:?}");
    assert_eq!(untrusted.code_prompts(), 1, "{untrusted:?}");
    sshd.expect_log(&["accepted: code for step", "rhost=\"127.0.0.1\""]);
    report(
        "5 trusted networks",
        "127.0.0.2 and ::1: password only; 127.0.0.1: code asked",
    );
}

#[test]
fn s6_unenrolled_user_is_refused() {
    if !e2e_tools_present() {
        return;
    }
    let sshd = Sshd::start("");
    let bob = LocalUser::create("b");
    let login = sshd.login(&Attempt {
        passwords: vec![bob.password.clone()],
        codes: vec!["123456".to_string()],
        ..Attempt::new(&bob.name)
    });
    assert!(!login.success, "{login:?}");
    assert_eq!(login.code_prompts(), 1, "prompted like anyone: {login:?}");
    sshd.expect_log(&["denied: user is not enrolled", &bob.name]);
    report("6 unenrolled user", "refused after the usual prompts");
}

#[test]
fn s7_unknown_user_and_root_get_sshds_placeholder_and_are_refused() {
    if !e2e_tools_present() {
        return;
    }
    let sshd = Sshd::start("");
    // Root even has a token and sends its right code: sshd replaces every
    // answer with its placeholder under PermitRootLogin prohibit-password.
    let root_key = sshd.enroll("root");
    for (user, key) in [
        ("e2e-no-such-user", None),
        ("root", Some(root_key.as_str())),
    ] {
        let login = sshd.login(&Attempt {
            passwords: vec!["whatever".to_string()],
            codes: vec![if key.is_some() {
                "@oathtool".to_string()
            } else {
                "123456".to_string()
            }],
            key,
            ..Attempt::new(user)
        });
        assert!(!login.success, "{user}: {login:?}");
        assert_eq!(login.code_prompts(), 1, "{user}: {login:?}");
        sshd.expect_log(&[
            "denied: sshd had already refused this login",
            &format!("user=\"{user}\""),
        ]);
    }
    assert!(
        !sshd
            .module_log()
            .iter()
            .any(|l| l.contains("wrong code") || l.contains("accepted")),
        "{:?}",
        sshd.module_log()
    );
    report(
        "7 unknown user, root under prohibit-password",
        "refused; logged as sshd's placeholder answer",
    );
}

#[test]
fn s8_sixteen_users_at_the_same_moment_all_get_in() {
    if !e2e_tools_present() {
        return;
    }
    const USERS: usize = 16;
    let sshd = Sshd::start("");
    let users: Vec<LocalUser> = (0..USERS)
        .map(|i| LocalUser::create(&format!("m{i}")))
        .collect();
    let keys: Vec<String> = users.iter().map(|u| sshd.enroll(&u.name)).collect();
    let results: Vec<bool> = thread::scope(|scope| {
        let handles: Vec<_> = users
            .iter()
            .zip(&keys)
            .map(|(user, key)| {
                let sshd = &sshd;
                scope.spawn(move || {
                    let login = sshd.login(&Attempt::in_person(user, key));
                    if !login.success {
                        eprintln!("{}: {login:?}", user.name);
                    }
                    login.success
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("login thread"))
            .collect()
    });
    let ins = results.iter().filter(|ok| **ok).count();
    report(
        "8 sixteen users at the same moment",
        &format!("{ins} of {USERS} in"),
    );
    assert_eq!(ins, USERS, "{}", sshd.sshd_log());
    let accepted = sshd
        .module_log()
        .iter()
        .filter(|l| l.contains("accepted: code for step"))
        .count();
    assert_eq!(accepted, USERS, "{:?}", sshd.module_log());
}

#[test]
fn s9_enrollment_at_login_inside_an_admin_window() {
    if !e2e_tools_present() {
        return;
    }
    let sshd = Sshd::start("enroll=window");
    let erin = LocalUser::create("e");
    let refused = sshd.login(&Attempt {
        passwords: vec![erin.password.clone()],
        codes: vec!["@key-from-prompt".to_string()],
        ..Attempt::new(&erin.name)
    });
    assert!(!refused.success, "no window, no enrollment: {refused:?}");
    sshd.expect_log(&["denied: user is not enrolled", &erin.name]);

    let opened = sshd.totpctl(&["allow-enroll", &erin.name, "--for", "1h"]);
    assert!(opened.status.success());
    // A wrong password with the right confirming code: the key is shown
    // (the module cannot know the password failed), nothing is stored, the
    // window stays open.
    let wrong_password = sshd.login(&Attempt {
        passwords: vec![format!("{}x", erin.password)],
        codes: vec!["@key-from-prompt".to_string()],
        ..Attempt::new(&erin.name)
    });
    assert!(!wrong_password.success, "{wrong_password:?}");
    sshd.expect_log(&["new token confirmed at login", &erin.name]);
    let shown = String::from_utf8_lossy(&sshd.totpctl(&["show", &erin.name]).stdout).into_owned();
    assert!(!shown.contains("active"), "nothing stored: {shown}");
    assert!(
        !shown.contains("enroll window: none"),
        "window open: {shown}"
    );

    let login = sshd.login(&Attempt {
        passwords: vec![erin.password.clone()],
        codes: vec!["@key-from-prompt".to_string()],
        ..Attempt::new(&erin.name)
    });
    assert!(login.success, "{login:?}\n{}", sshd.sshd_log());
    let confirm = login
        .prompts
        .iter()
        .find(|p| p.contains("Code from your app, to confirm"))
        .unwrap_or_else(|| panic!("no confirmation prompt: {login:?}"));
    assert!(
        confirm.contains("Key: "),
        "the key is shown with it: {confirm}"
    );
    sshd.expect_log(&[
        "new token confirmed at login (inside an enroll window",
        &erin.name,
    ]);
    // The stack has no pam_totp account line: sshd's pam_setcred commits it.
    sshd.expect_log(&[
        "setcred: enrolled at login: token \"default\" stored",
        &erin.name,
    ]);
    let shown = String::from_utf8_lossy(&sshd.totpctl(&["show", &erin.name]).stdout).into_owned();
    assert!(shown.contains("active"), "{shown}");
    assert!(shown.contains("enroll window: none"), "{shown}");
    report(
        "9 enrollment at login",
        "refused without a window; inside one: key shown, confirmed, in",
    );
}
