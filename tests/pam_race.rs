//! Concurrency through the real libpam: many pamtester processes, each its
//! own connection to the store, answering at the same moment.
//!
//! Every process is started and left waiting at the code prompt (the
//! module has already opened the store and read the token by then); only
//! when all of them are waiting are the answers written, so the claims
//! really do race. Both races live in this one test binary and run one
//! after the other: pam_wrapper has about 62 state slots in /tmp.

mod common;

use std::io::{Read, Write};
use std::process::{Child, Stdio};
use std::sync::{Arc, Barrier};
use std::thread;

use common::{World, oathtool, pam_tools_present};

const PROCESSES: usize = 32;
const SAME_CODE_TRIALS: usize = 20;
const PROMPT: &[u8] = b"Verification code: ";

/// Starts one pamtester per (user, code), waits until every one of them
/// shows the prompt, then releases all answers at once. Returns how many
/// authenticated.
fn race(world: &World, logins: &[(String, String)]) -> usize {
    let ready = Arc::new(Barrier::new(logins.len()));
    let handles: Vec<_> = logins
        .iter()
        .map(|(user, code)| {
            let mut cmd = world.pamtester_command("totp", user, Some("203.0.113.7"));
            cmd.env("PAM_WRAPPER_DEBUGLEVEL", "0");
            let child = cmd
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn pamtester");
            let ready = ready.clone();
            let code = code.clone();
            thread::spawn(move || answer_when_all_ready(child, &ready, &code))
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("racer thread"))
        .filter(|ok| *ok)
        .count()
}

fn answer_when_all_ready(mut child: Child, ready: &Barrier, code: &str) -> bool {
    let mut stderr = child.stderr.take().expect("stderr");
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    while !seen.ends_with(PROMPT) {
        match stderr.read(&mut byte) {
            Ok(1) => seen.push(byte[0]),
            _ => break,
        }
    }
    assert!(
        seen.ends_with(PROMPT),
        "pamtester ended before prompting: {}",
        String::from_utf8_lossy(&seen)
    );
    ready.wait();
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(format!("{code}\n").as_bytes())
        .expect("answer");
    drop(stdin);
    let mut rest = String::new();
    let _ = stderr.read_to_string(&mut rest);
    child.wait().expect("wait").success()
}

#[test]
fn races() {
    if !pam_tools_present() {
        return;
    }
    same_code_many_processes_exactly_one_wins();
    different_users_at_once_all_get_in();
}

fn same_code_many_processes_exactly_one_wins() {
    let world = World::new();
    world.service("totp", "");
    let mut wins_per_trial = Vec::new();
    for trial in 0..SAME_CODE_TRIALS {
        let user = format!("racer{trial}");
        let key = world.enroll(&user);
        let code = oathtool(&key, None, &[]);
        let logins = vec![(user, code); PROCESSES];
        wins_per_trial.push(race(&world, &logins));
    }
    println!(
        "same code, {PROCESSES} processes, {SAME_CODE_TRIALS} trials: successes per trial {wins_per_trial:?}"
    );
    assert!(
        wins_per_trial.iter().all(|w| *w == 1),
        "exactly one login per code in every trial: {wins_per_trial:?}"
    );
}

fn different_users_at_once_all_get_in() {
    let world = World::new();
    world.service("totp", "");
    let logins: Vec<(String, String)> = (0..PROCESSES)
        .map(|i| {
            let user = format!("user{i}");
            let key = world.enroll(&user);
            (user, oathtool(&key, None, &[]))
        })
        .collect();
    let wins = race(&world, &logins);
    println!("{PROCESSES} different users at once: {wins} of {PROCESSES} in");
    assert_eq!(wins, PROCESSES);
}
