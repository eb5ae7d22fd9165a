//! Attacks on what lets an honest user in with fewer prompts (`grace=`,
//! `grace_key=`, automation grants) and on the configuration of those keys.
//! Each test says in its first word whether the attack succeeded (FOUND:
//! the test asserts the secure behaviour and fails until it is fixed) or was
//! held (GUARD: the test passes and keeps it held).

use std::path::Path;
use std::process::Command;

use crate::common;

use common::{KEY, RHOST, World, oathtool, pam_tools_present, random_secret};

/// A real ed25519 public key (the one `hostile_input` uses).
const SSH_KEY: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIPWhMX3GrSZWFUTEvx5GuAhSZm+XOT6mzOYJAiiQgU9l";
const SSH_KEY_FP: &str = "SHA256:PBZqibLSCLdAS4+MC8G29Jx6IMJfj3+k9ckTzGesU+I";

/// `SSH_AUTH_INFO_0` as sshd sets it for a login that used `blob` first.
fn auth_info(blob: &str) -> String {
    format!("SSH_AUTH_INFO_0=publickey ssh-ed25519 {blob}\n")
}

/// A second ed25519 public key blob, made by ssh-keygen in `dir`.
fn another_key(dir: &Path) -> String {
    let path = dir.join("other_key");
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&path)
        .output()
        .expect("ssh-keygen");
    assert!(out.status.success(), "{out:?}");
    let public = std::fs::read_to_string(path.with_extension("pub")).expect("pub");
    public.split_whitespace().nth(1).expect("blob").to_string()
}

/// One login through the real libpam (pam_worker) under `service`, with
/// sshd's variable for `blob` in the PAM environment, then the account and
/// setcred phases as sshd runs them after a success.
fn key_login(
    world: &World,
    service: &str,
    user: &str,
    rhost: &str,
    blob: &str,
    answer: &str,
) -> String {
    world.pam_worker_with(
        service,
        user,
        rhost,
        &[answer],
        &[
            ("PAM_WORKER_PUTENV", &auth_info(blob)),
            ("PAM_WORKER_THEN", "account,setcred"),
        ],
    )
}

/// In without a prompt.
fn let_in_without_code(out: &str) -> bool {
    out.contains("RESULT 0") && !out.contains("PROMPT")
}

/// Asked for a code, and (the answer empty or wrong) not let in.
fn asked_and_refused(out: &str) -> bool {
    out.contains("PROMPT") && !out.contains("RESULT 0")
}

fn enroll_with(world: &World, user: &str, secret: &str) {
    let out = world.totpctl(&["enroll", user, "--secret", secret]);
    assert!(out.status.success(), "enroll {user}: {out:?}");
}

/// FOUND. `totpctl enroll USER --force` gives the user's device a new key
/// (the help desk's way to re-key a phone under the same device name), but
/// the `grace=` the old key earned from an address survives it: whoever
/// logs in from that address still skips the code of the new key. Every
/// other change of a user's devices (`reset`, `delete [--device]`, `totp
/// replace`, `totp remove-device`) ends the graces ("nothing granted
/// outlives the tokens it was granted for").
#[test]
fn a_device_rekeyed_with_enroll_force_keeps_the_old_keys_grace() {
    if !pam_tools_present() {
        return;
    }
    let world = World::new();
    world.service_with_account("graced", "grace=1h");
    let old = random_secret();
    enroll_with(&world, "gus", &old);
    let first = world.login(
        "graced",
        "gus",
        Some(RHOST),
        &oathtool(&old, Some(common::unix_now()), &[]),
    );
    assert!(first.success, "{first:?}");
    let free = world.login("graced", "gus", Some(RHOST), "");
    assert!(free.success && free.logged("grace from"), "{free:?}");

    // The device is given a new key.
    let new = random_secret();
    let out = world.totpctl(&["enroll", "gus", "--force", "--secret", &new]);
    assert!(out.status.success(), "{out:?}");

    // The old key's grace must not let anyone in without the new key's code.
    let after = world.login("graced", "gus", Some(RHOST), "");
    assert!(
        !after.success,
        "the grace the old key earned outlived `enroll --force`: {after:?}"
    );
}

/// FOUND. `self_service=off` written as a module argument (where every
/// other key of the table works, and overrides the file) is accepted
/// without a word: the module ignores the key and `totp` reads only the
/// config file, so self-service stays `full` while the administrator
/// believes it is off. A key that has no effect where it is written is a
/// mistake, and mistakes must deny every login and say why.
#[test]
fn self_service_as_a_module_argument_is_not_silently_ignored() {
    if !pam_tools_present() {
        return;
    }
    let world = World::new();
    world.service("misplaced", "self_service=off");
    let key = world.enroll("sam");
    let run = world.login(
        "misplaced",
        "sam",
        Some(RHOST),
        &oathtool(&key, Some(common::unix_now()), &[]),
    );
    assert!(
        !run.success && run.logged("self_service"),
        "self_service=off as a module argument changed nothing and said nothing: {run:?}"
    );
}

/// FOUND (low). Under a service other than sshd, with the README's
/// `account required pam_totp.so` line (same arguments) followed by an
/// account module that refuses the login (here pam_deny, standing in for
/// pam_nologin, pam_access or an expired account), the `grace=` is stored
/// although the login failed: the account line commits the stage before
/// the rest of the account stack has decided. Under sshd this was closed
/// (the stage waits for setcred); other services still leave a grace
/// behind a refused login. OPEN: closing it needs the commit of such
/// services moved to where the account stack's verdict is known (pam_end's
/// status, through pam_set_data's cleanup); until then the README tells
/// sites to make the modules before pam_totp's account line `requisite`.
#[test]
#[ignore = "open: under services other than sshd the account line commits before the account stack has decided (README, Nothing a failed login leaves behind)"]
fn a_login_the_account_stack_refuses_grants_no_grace_under_another_service() {
    if !pam_tools_present() {
        return;
    }
    let world = World::new();
    world.service_with_account("graced", "grace=1h");
    let graced = std::fs::read_to_string(world.services.join("graced")).expect("service");
    let refused = graced.replace(
        "account required pam_permit.so",
        "account required pam_deny.so",
    );
    assert_ne!(refused, graced);
    world.raw_service("refused", &refused);
    let key = world.enroll("ann");
    let denied = world.login(
        "refused",
        "ann",
        Some(RHOST),
        &oathtool(&key, Some(common::unix_now()), &[]),
    );
    assert!(!denied.success, "the account stack let it in: {denied:?}");
    // Nothing may skip the code now.
    let after = world.login("graced", "ann", Some(RHOST), "");
    assert!(
        !after.success,
        "a login refused by the account stack left a grace behind: {after:?}"
    );
}

/// GUARD. A key grace alice earned with key K (right code, whole stack,
/// service sshd) is used only by alice with K: bob presenting the same K,
/// alice with another key, and alice with K under a service that is not
/// sshd (the application putting the very same SSH_AUTH_INFO_0 into the PAM
/// environment) are all asked; while her tokens are disabled K is asked
/// too; `forget --key` ends it.
#[test]
fn a_key_grace_goes_to_its_user_its_key_and_sshd_only() {
    if !pam_tools_present() {
        return;
    }
    let world = World::new();
    enroll_with(&world, "alice", KEY);
    let bob_key = random_secret();
    enroll_with(&world, "bob", &bob_key);
    world.service_with_account("sshd", "grace_key=1h");
    world.service_with_account("login", "grace_key=1h");
    let other = another_key(world.dir.path());

    // Alice earns the grace for K.
    let first = key_login(
        &world,
        "sshd",
        "alice",
        RHOST,
        SSH_KEY,
        &oathtool(KEY, None, &[]),
    );
    assert!(first.contains("RESULT 0"), "{first}");
    let shown = String::from_utf8_lossy(&world.totpctl(&["show", "alice"]).stdout).into_owned();
    assert!(
        shown.contains(&format!("key grace: SSH key {SSH_KEY_FP}")),
        "{shown}"
    );
    assert!(let_in_without_code(&key_login(
        &world,
        "sshd",
        "alice",
        "192.0.2.99",
        SSH_KEY,
        ""
    )));

    // Another user with the same key, the same user with another key, the
    // same key under another service: asked.
    let bob = key_login(&world, "sshd", "bob", RHOST, SSH_KEY, "");
    assert!(asked_and_refused(&bob), "bob used alice's key grace: {bob}");
    let alice_other = key_login(&world, "sshd", "alice", RHOST, &other, "");
    assert!(asked_and_refused(&alice_other), "{alice_other}");
    let login = key_login(&world, "login", "alice", RHOST, SSH_KEY, "");
    assert!(asked_and_refused(&login), "{login}");
    // Bob's own right code with K earns only bob's grace.
    let bob_right = key_login(
        &world,
        "sshd",
        "bob",
        RHOST,
        SSH_KEY,
        &oathtool(&bob_key, None, &[]),
    );
    assert!(bob_right.contains("RESULT 0"), "{bob_right}");

    // Disabled: the grace lets nobody in.
    assert!(world.totpctl(&["disable", "alice"]).status.success());
    let disabled = key_login(&world, "sshd", "alice", RHOST, SSH_KEY, "");
    assert!(!disabled.contains("RESULT 0"), "{disabled}");
    assert!(world.totpctl(&["enable", "alice"]).status.success());

    // forget --key ends alice's, not bob's.
    let out = world.totpctl(&["forget", "alice", "--key", SSH_KEY_FP]);
    assert!(out.status.success(), "{out:?}");
    let forgotten = key_login(&world, "sshd", "alice", RHOST, SSH_KEY, "");
    assert!(asked_and_refused(&forgotten), "{forgotten}");
    assert!(let_in_without_code(&key_login(
        &world, "sshd", "bob", RHOST, SSH_KEY, ""
    )));
}

/// GUARD. An automation grant for alice's key K from 198.51.100.0/24 admits
/// exactly that: not bob presenting K from the same network, not alice
/// with another key, not an rhost that is a host name beginning with an
/// address of the network, not a neighbouring network, and not the same
/// login under a service other than sshd; revoked, it admits no one.
#[test]
fn an_automation_grant_admits_one_key_of_one_user_from_its_networks_only() {
    if !pam_tools_present() {
        return;
    }
    let world = World::new();
    enroll_with(&world, "alice", KEY);
    enroll_with(&world, "bob", &random_secret());
    world.service_with_account("sshd", "");
    world.service_with_account("login", "");
    let other = another_key(world.dir.path());
    let out = world.totpctl(&[
        "allow-automation",
        "alice",
        "--key",
        SSH_KEY_FP,
        "--from",
        "198.51.100.0/24",
        "--until",
        "30d",
        "--reason",
        "nightly sync",
    ]);
    assert!(out.status.success(), "{out:?}");

    let inside = "198.51.100.7";
    assert!(let_in_without_code(&key_login(
        &world, "sshd", "alice", inside, SSH_KEY, ""
    )));
    for (what, out) in [
        (
            "bob with alice's key",
            key_login(&world, "sshd", "bob", inside, SSH_KEY, ""),
        ),
        (
            "alice with another key",
            key_login(&world, "sshd", "alice", inside, &other, ""),
        ),
        (
            "a host name",
            key_login(
                &world,
                "sshd",
                "alice",
                "198.51.100.7.evil.example",
                SSH_KEY,
                "",
            ),
        ),
        (
            "the next network",
            key_login(&world, "sshd", "alice", "198.51.101.7", SSH_KEY, ""),
        ),
        (
            "another service",
            key_login(&world, "login", "alice", inside, SSH_KEY, ""),
        ),
    ] {
        assert!(asked_and_refused(&out), "{what} was let in: {out}");
    }

    let listed =
        String::from_utf8_lossy(&world.totpctl(&["automation", "list"]).stdout).into_owned();
    let id: String = listed
        .trim_start_matches('#')
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    assert!(!id.is_empty(), "{listed}");
    let out = world.totpctl(&["automation", "revoke", &id]);
    assert!(out.status.success(), "{out:?}");
    let revoked = key_login(&world, "sshd", "alice", inside, SSH_KEY, "");
    assert!(asked_and_refused(&revoked), "{revoked}");
}

/// GUARD. Fail-closed parsing of the keys of fewer prompts: out of range,
/// a compound duration, an empty value, a key given twice, a capitalised
/// value and a misspelt key each deny a login with a right code and name the key.
#[test]
fn bad_values_of_the_fewer_prompt_keys_deny_every_login() {
    if !pam_tools_present() {
        return;
    }
    let world = World::new();
    let key = world.enroll("cal");
    let bad = [
        ("grace=31d", "grace"),
        ("grace=1d2h", "grace"),
        ("grace_key=", "grace_key"),
        ("grace_key=721h", "grace_key"),
        ("grace_key=1h grace_key=2h", "grace_key"),
        ("automation_max=367d", "automation_max"),
        ("self_service=Full", "self_service"),
        ("grce_key=1h", "grce_key"),
    ];
    for (args, named) in bad {
        world.service("bad", args);
        // A right code: only the configuration can deny (a refused
        // configuration claims nothing, so the code stays right).
        let run = world.login("bad", "cal", Some(RHOST), &oathtool(&key, None, &[]));
        assert!(
            !run.success && run.logged(named),
            "{args}: not refused, or the key not named: {run:?}"
        );
    }
}
