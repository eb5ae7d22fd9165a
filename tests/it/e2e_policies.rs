//! The login policies through the real OpenSSH server and client: grace
//! periods, one-prompt (combined) mode, exempt groups, and SSH key + code.
//! Like e2e_sshd.rs: throwaway local users, sshd with its own PAM
//! stack in a private mount namespace, codes from oathtool.

use crate::common;

use common::sshd::{Attempt, LocalGroup, LocalUser, Sshd, Stack, e2e_tools_present};
use common::wrong_code;

fn report(policy: &str, result: &str) {
    println!("{policy}: {result}");
}

#[test]
fn grace_skips_the_code_from_the_same_source_until_forgotten() {
    if !e2e_tools_present() {
        return;
    }
    let sshd = Sshd::start("grace=1h");
    let gina = LocalUser::create("g");
    let key = sshd.enroll(&gina.name);

    let first = sshd.login(&Attempt::in_person(&gina, &key));
    assert!(first.success, "{first:?}");
    assert_eq!(first.code_prompts(), 1, "{first:?}");

    // Same source, within the hour: the password alone.
    let again = sshd.login(&Attempt {
        passwords: vec![gina.password.clone()],
        ..Attempt::new(&gina.name)
    });
    assert!(again.success, "{again:?}");
    assert_eq!(again.code_prompts(), 0, "{again:?}");
    sshd.expect_log(&["accepted without code: grace from 127.0.0.1"]);

    // Another source address: the code is asked.
    let other = sshd.login(&Attempt {
        bind: Some("127.0.0.2"),
        passwords: vec![gina.password.clone()],
        codes: vec![wrong_code(&key)],
        key: Some(&key),
        ..Attempt::new(&gina.name)
    });
    assert!(!other.success, "{other:?}");
    assert_eq!(other.code_prompts(), 1, "{other:?}");

    // After `totpctl forget`, the first source is asked again.
    let out = sshd.totpctl(&["forget", &gina.name]);
    assert!(out.status.success(), "{out:?}");
    let forgotten = sshd.login(&Attempt {
        passwords: vec![gina.password.clone()],
        codes: vec![wrong_code(&key)],
        key: Some(&key),
        ..Attempt::new(&gina.name)
    });
    assert!(!forgotten.success, "{forgotten:?}");
    assert_eq!(forgotten.code_prompts(), 1, "{forgotten:?}");
    report(
        "grace=1h",
        "second login from 127.0.0.1 without a code; from 127.0.0.2 asked; after forget asked again",
    );
}

#[test]
fn combined_mode_asks_once_and_a_wrong_code_looks_like_a_wrong_password() {
    if !e2e_tools_present() {
        return;
    }
    let sshd = Sshd::start_with(Stack::Combined, "");
    // Two users, so that every case with a right code has a fresh one.
    let carl = LocalUser::create("c");
    let dana = LocalUser::create("d");
    let carl_key = sshd.enroll(&carl.name);
    let dana_key = sshd.enroll(&dana.name);
    let mut seen = Vec::new();
    for (label, user, key, password, right_code, want) in [
        (
            "right password, right code",
            &carl,
            &carl_key,
            carl.password.as_str(),
            true,
            true,
        ),
        (
            "wrong password, right code",
            &dana,
            &dana_key,
            "not-the-password",
            true,
            false,
        ),
        (
            "right password, wrong code",
            &carl,
            &carl_key,
            carl.password.as_str(),
            false,
            false,
        ),
        (
            "wrong password, wrong code",
            &carl,
            &carl_key,
            "not-the-password",
            false,
            false,
        ),
    ] {
        let code = if right_code {
            "@oathtool".to_string()
        } else {
            wrong_code(key)
        };
        let login = sshd.login(&Attempt {
            passwords: vec![password.to_string()],
            codes: vec![code],
            key: Some(key),
            ..Attempt::new(&user.name)
        });
        assert_eq!(login.success, want, "{label}: {login:?}");
        assert_eq!(login.prompts.len(), 1, "{label}: one prompt: {login:?}");
        assert!(
            login.prompts[0].contains("Password and verification code"),
            "{label}: {login:?}"
        );
        // ssh prefixes "(user@host) "; the server's text is what matters.
        seen.push(
            login
                .prompts
                .iter()
                .map(|p| {
                    p.split_once(") ")
                        .map_or(p.as_str(), |(_, t)| t)
                        .to_string()
                })
                .collect::<Vec<_>>(),
        );
    }
    // The client saw the same single prompt in every failing case.
    assert!(seen[1..].iter().all(|p| p == &seen[1]), "{seen:?}");
    report(
        "mode=combined",
        "one prompt; only right password + right code gets in; wrong code and wrong password look alike",
    );
}

#[test]
fn members_of_an_exempt_group_log_in_without_a_code_and_are_logged() {
    if !e2e_tools_present() {
        return;
    }
    let svc = LocalUser::create("s");
    let other = LocalUser::create("o");
    let group = LocalGroup::create(&[&svc]);
    let sshd = Sshd::start(&format!("exempt_group={}", group.name));
    let other_key = sshd.enroll(&other.name);

    let login = sshd.login(&Attempt {
        passwords: vec![svc.password.clone()],
        ..Attempt::new(&svc.name)
    });
    assert!(login.success, "{login:?}");
    assert_eq!(login.code_prompts(), 0, "{login:?}");
    sshd.expect_log(&["accepted without code: exempt", &group.name]);

    // A user outside the group is asked as usual.
    let asked = sshd.login(&Attempt {
        passwords: vec![other.password.clone()],
        codes: vec![wrong_code(&other_key)],
        key: Some(&other_key),
        ..Attempt::new(&other.name)
    });
    assert!(!asked.success, "{asked:?}");
    assert_eq!(asked.code_prompts(), 1, "{asked:?}");
    report(
        "exempt_group",
        "member in with the password alone (logged as exempt); non-member asked for a code",
    );
}

#[test]
fn only_group_asks_the_pilot_and_a_group_nobody_knows_denies_everyone() {
    if !e2e_tools_present() {
        return;
    }
    let pilot_user = LocalUser::create("p");
    let outsider = LocalUser::create("q");
    let pilot = LocalGroup::create(&[&pilot_user]);
    let sshd = Sshd::start(&format!("only_group={}", pilot.name));
    let key = sshd.enroll(&pilot_user.name);

    // Outside the pilot: the password alone, no code prompt, logged.
    let outside = sshd.login(&Attempt {
        passwords: vec![outsider.password.clone()],
        ..Attempt::new(&outsider.name)
    });
    assert!(outside.success, "{outside:?}");
    assert_eq!(outside.code_prompts(), 0, "{outside:?}");
    sshd.expect_log(&[
        "accepted without code: exempt (outside the pilot",
        &pilot.name,
    ]);
    // A member is asked, and a wrong code is refused.
    let member = sshd.login(&Attempt {
        passwords: vec![pilot_user.password.clone()],
        codes: vec![wrong_code(&key)],
        key: Some(&key),
        ..Attempt::new(&pilot_user.name)
    });
    assert!(!member.success, "{member:?}");
    assert_eq!(member.code_prompts(), 1, "{member:?}");
    drop(sshd);

    // A typo in the group name: nobody gets in, and the log says why.
    let typo = Sshd::start("only_group=no-such-pilot-group");
    let denied = typo.login(&Attempt {
        passwords: vec![outsider.password.clone()],
        ..Attempt::new(&outsider.name)
    });
    assert!(!denied.success, "{denied:?}");
    typo.expect_log(&["knows no group", "no-such-pilot-group"]);
    report(
        "only_group",
        "outsider in with the password alone (logged as outside the pilot); member asked; an unknown group denies everyone",
    );
}

#[test]
fn an_ssh_key_alone_is_refused_and_key_plus_code_gets_in() {
    if !e2e_tools_present() {
        return;
    }
    let sshd = Sshd::start_with(Stack::KeyThenCode, "");
    let kim = LocalUser::create("k");
    let key = sshd.enroll(&kim.name);
    let keys = tempfile::tempdir().expect("tmp");
    let identity = kim.authorize_new_key(keys.path());

    // The key, and no code to give: refused.
    let alone = sshd.login(&Attempt {
        identity: Some(identity.clone()),
        ..Attempt::new(&kim.name)
    });
    assert!(!alone.success, "{alone:?}");
    // A code without the key: refused (publickey comes first).
    let no_key = sshd.login(&Attempt {
        codes: vec!["@oathtool".to_string()],
        key: Some(&key),
        ..Attempt::new(&kim.name)
    });
    assert!(!no_key.success, "{no_key:?}");
    // Key, then code: in, and no password was asked.
    let both = sshd.login(&Attempt {
        identity: Some(identity),
        codes: vec!["@oathtool".to_string()],
        key: Some(&key),
        ..Attempt::new(&kim.name)
    });
    assert!(both.success, "{both:?}\n{}", sshd.sshd_log());
    assert!(
        both.prompts.iter().all(|p| !p.contains("assword")),
        "{both:?}"
    );
    assert_eq!(both.code_prompts(), 1, "{both:?}");
    report(
        "key + code",
        "key alone refused; code alone refused; key then code in, no password asked",
    );
}
