//! The login policies through the real OpenSSH server and client: grace
//! periods, one-prompt (combined) mode, exempt groups, and SSH key + code.
//! Like e2e_sshd.rs: throwaway local users, sshd with its own PAM
//! stack in a private mount namespace, codes from oathtool.

use crate::common;

use common::sshd::{self, Attempt, LocalGroup, LocalUser, Sshd, Stack, e2e_tools_present};
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

/// `Attempt` for a login that offers `identity` and answers the code
/// prompt with `codes` (none: an empty answer if one is asked).
fn with_key<'a>(
    user: &'a LocalUser,
    identity: &std::path::Path,
    bind: Option<&'a str>,
    codes: Vec<String>,
    key: &'a str,
) -> Attempt<'a> {
    Attempt {
        identity: Some(identity.to_path_buf()),
        bind,
        codes,
        key: Some(key),
        ..Attempt::new(&user.name)
    }
}

#[test]
fn grace_key_skips_the_code_for_the_same_key_from_another_address_until_forgotten() {
    if !e2e_tools_present() {
        return;
    }
    let sshd = Sshd::start_with(Stack::KeyThenCode, "grace_key=1h");
    let kai = LocalUser::create("kg");
    let totp_key = sshd.enroll(&kai.name);
    let keys = tempfile::tempdir().expect("tmp");
    let key_a = kai.authorize_new_key(keys.path());
    let key_b = kai.authorize_another_key(keys.path(), "b");
    let fp_a = sshd::fingerprint(&key_a);
    let fp_b = sshd::fingerprint(&key_b);

    // Key A and a right code: in, and the key's grace is granted (by its
    // SHA256 fingerprint, as ssh-keygen prints it).
    let first = sshd.login(&with_key(
        &kai,
        &key_a,
        None,
        vec!["@oathtool".into()],
        &totp_key,
    ));
    assert!(first.success, "{first:?}\n{}", sshd.sshd_log());
    assert_eq!(first.code_prompts(), 1, "{first:?}");
    sshd.expect_log(&[&format!("grace for SSH key {fp_a} granted until")]);

    // Key A from another address: no code.
    let again = sshd.login(&with_key(
        &kai,
        &key_a,
        Some("127.0.0.2"),
        vec![],
        &totp_key,
    ));
    assert!(again.success, "{again:?}\n{}", sshd.sshd_log());
    assert_eq!(again.code_prompts(), 0, "{again:?}");
    sshd.expect_log(&[
        &format!("accepted without code: grace for SSH key {fp_a}"),
        "rhost=\"127.0.0.2\"",
    ]);

    // Key B: the code is asked.
    let other = sshd.login(&with_key(
        &kai,
        &key_b,
        Some("127.0.0.2"),
        vec![wrong_code(&totp_key)],
        &totp_key,
    ));
    assert!(!other.success, "{other:?}");
    assert_eq!(other.code_prompts(), 1, "{other:?}");

    // `totpctl show` lists the grace, `forget --key` ends it.
    let shown = sshd.totpctl(&["show", &kai.name]);
    let shown_text = String::from_utf8_lossy(&shown.stdout).into_owned();
    assert!(
        shown_text.contains(&format!("key grace: SSH key {fp_a}")),
        "{shown_text}"
    );
    assert!(!shown_text.contains(&fp_b), "{shown_text}");
    let out = sshd.totpctl(&["forget", &kai.name, "--key", &fp_a]);
    assert!(out.status.success(), "{out:?}");
    let forgotten = sshd.login(&with_key(
        &kai,
        &key_a,
        Some("127.0.0.2"),
        vec![wrong_code(&totp_key)],
        &totp_key,
    ));
    assert!(!forgotten.success, "{forgotten:?}");
    assert_eq!(forgotten.code_prompts(), 1, "{forgotten:?}");
    report(
        "grace_key=1h",
        "key A + code; key A from 127.0.0.2 without a code; key B asked; after forget --key asked",
    );
}

#[test]
fn a_failed_password_leaves_no_key_grace() {
    if !e2e_tools_present() {
        return;
    }
    let sshd = Sshd::start_with(Stack::KeyThenPasswordThenCode, "grace_key=1h");
    let kit = LocalUser::create("kp");
    let totp_key = sshd.enroll(&kit.name);
    let keys = tempfile::tempdir().expect("tmp");
    let key_a = kit.authorize_new_key(keys.path());

    // Key A, a wrong password, the right code: refused, nothing granted.
    let failed = sshd.login(&Attempt {
        passwords: vec!["not-the-password".to_string()],
        ..with_key(&kit, &key_a, None, vec!["@oathtool".into()], &totp_key)
    });
    assert!(!failed.success, "{failed:?}");
    assert_eq!(failed.code_prompts(), 1, "{failed:?}");
    // Key A again, with the right password: the code is asked.
    let next = sshd.login(&Attempt {
        passwords: vec![kit.password.clone()],
        ..with_key(&kit, &key_a, None, vec![wrong_code(&totp_key)], &totp_key)
    });
    assert!(!next.success, "{next:?}");
    assert_eq!(next.code_prompts(), 1, "{next:?}");
    let shown = sshd.totpctl(&["show", &kit.name]);
    assert!(
        String::from_utf8_lossy(&shown.stdout).contains("key graces: none"),
        "{shown:?}"
    );
    report(
        "grace_key=1h, failed password",
        "key A + wrong password + right code refused; key A asked again (no grace stored)",
    );
}

#[test]
fn grace_key_is_not_believed_under_another_pam_service_than_sshd() {
    if !e2e_tools_present() {
        return;
    }
    let sshd = Sshd::start_as("sshd-keys", Stack::KeyThenCode, "grace_key=1h");
    let kev = LocalUser::create("ks");
    let totp_key = sshd.enroll(&kev.name);
    let keys = tempfile::tempdir().expect("tmp");
    let key_a = kev.authorize_new_key(keys.path());
    let first = sshd.login(&with_key(
        &kev,
        &key_a,
        None,
        vec!["@oathtool".into()],
        &totp_key,
    ));
    assert!(first.success, "{first:?}\n{}", sshd.sshd_log());
    sshd.expect_log(&[
        "grace_key: the SSH key of this login is not used",
        "not sshd",
    ]);
    let again = sshd.login(&with_key(
        &kev,
        &key_a,
        None,
        vec![wrong_code(&totp_key)],
        &totp_key,
    ));
    assert!(!again.success, "{again:?}");
    assert_eq!(again.code_prompts(), 1, "{again:?}");
    report(
        "grace_key=1h, PAM service sshd-keys",
        "SSH_AUTH_INFO_0 not believed (logged); the same key is asked again",
    );
}

#[test]
fn an_automation_grant_admits_its_key_from_its_network_until_its_date_or_revocation() {
    if !e2e_tools_present() {
        return;
    }
    let sshd = Sshd::start_with(Stack::KeyThenCode, "");
    let cid = LocalUser::create("ci");
    let totp_key = sshd.enroll(&cid.name);
    let keys = tempfile::tempdir().expect("tmp");
    let key_a = cid.authorize_new_key(keys.path());
    let key_b = cid.authorize_another_key(keys.path(), "b");
    let fp_a = sshd::fingerprint(&key_a);

    // --from, --until and automation_max are enforced.
    let missing_from = sshd.totpctl(&[
        "allow-automation",
        &cid.name,
        "--key",
        &fp_a,
        "--until",
        "30d",
        "--reason",
        "x",
    ]);
    assert!(!missing_from.status.success());
    let too_long = sshd.totpctl(&[
        "allow-automation",
        &cid.name,
        "--key",
        &fp_a,
        "--from",
        "127.0.0.2",
        "--until",
        "200d",
        "--reason",
        "x",
    ]);
    assert!(!too_long.status.success());
    assert!(
        String::from_utf8_lossy(&too_long.stderr).contains("automation_max"),
        "{too_long:?}"
    );

    let out = sshd.totpctl(&[
        "allow-automation",
        &cid.name,
        "--key",
        &fp_a,
        "--from",
        "127.0.0.2/32",
        "--until",
        "30d",
        "--reason",
        "nightly rsync",
    ]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("Automation grant #"), "{text}");
    let id: String = text
        .split('#')
        .nth(1)
        .expect("id")
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();

    // Key A from 127.0.0.2: in without a code, logged with id and reason.
    let ok = sshd.login(&with_key(
        &cid,
        &key_a,
        Some("127.0.0.2"),
        vec![],
        &totp_key,
    ));
    assert!(ok.success, "{ok:?}\n{}", sshd.sshd_log());
    assert_eq!(ok.code_prompts(), 0, "{ok:?}");
    sshd.expect_log(&[
        &format!("accepted without code: automation grant #{id} for SSH key {fp_a} from 127.0.0.2"),
        "reason \"nightly rsync\"",
    ]);
    // Key A from 127.0.0.1 (outside its network): asked.
    let outside = sshd.login(&with_key(
        &cid,
        &key_a,
        None,
        vec![wrong_code(&totp_key)],
        &totp_key,
    ));
    assert!(!outside.success, "{outside:?}");
    assert_eq!(outside.code_prompts(), 1, "{outside:?}");
    // Key B from 127.0.0.2: asked (the grant names key A only).
    let other_key = sshd.login(&with_key(
        &cid,
        &key_b,
        Some("127.0.0.2"),
        vec![wrong_code(&totp_key)],
        &totp_key,
    ));
    assert!(!other_key.success, "{other_key:?}");
    assert_eq!(other_key.code_prompts(), 1, "{other_key:?}");
    // Listed, then revoked: asked.
    let list = sshd.totpctl(&["automation", "list"]);
    assert!(
        String::from_utf8_lossy(&list.stdout).contains(&format!("#{id} ")),
        "{list:?}"
    );
    let out = sshd.totpctl(&["automation", "revoke", &id]);
    assert!(out.status.success(), "{out:?}");
    let revoked = sshd.login(&with_key(
        &cid,
        &key_a,
        Some("127.0.0.2"),
        vec![wrong_code(&totp_key)],
        &totp_key,
    ));
    assert!(!revoked.success, "{revoked:?}");
    assert_eq!(revoked.code_prompts(), 1, "{revoked:?}");

    // A grant made with totpctl's clock frozen 40 days back, for 30 days:
    // it ended 10 days ago. The module (real clock) asks, and logs the
    // expiry with the grant's id and reason.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let then = common::utc_for_faketime(now - 40 * 86_400);
    let out = std::process::Command::new(common::totpctl_path())
        .args(common::store_options(&sshd.db, &sshd.pg))
        .args([
            "allow-automation",
            &cid.name,
            "--key",
            &fp_a,
            "--from",
            "127.0.0.2",
            "--until",
            "30d",
            "--reason",
            "old grant",
        ])
        .env("LD_PRELOAD", common::FAKETIME)
        .env("FAKETIME", format!("@{then}"))
        .env("TZ", "UTC")
        .output()
        .expect("totpctl under faketime");
    assert!(out.status.success(), "{out:?}");
    let expired = sshd.login(&with_key(
        &cid,
        &key_a,
        Some("127.0.0.2"),
        vec![wrong_code(&totp_key)],
        &totp_key,
    ));
    assert!(!expired.success, "{expired:?}");
    assert_eq!(expired.code_prompts(), 1, "{expired:?}");
    sshd.expect_log(&["automation grant #", "expired at", "reason \"old grant\""]);
    report(
        "automation grant",
        "key A from 127.0.0.2 in without a code; from 127.0.0.1 asked; key B asked; after revoke asked; an expired grant asks and is logged",
    );
}
