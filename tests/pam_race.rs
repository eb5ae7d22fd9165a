//! Concurrency through the real libpam: many pamtester processes, each its
//! own connection to the store, answering at the same moment.
//!
//! Every process is started and left waiting at the code prompt (the
//! module has already opened the store and read the token by then); only
//! when all of them are waiting are the answers written, all at once, so
//! the claims really do race. Both races live in this one test binary and run one
//! after the other: pam_wrapper has about 62 state slots in /tmp.

mod common;

use std::io::{Read, Write};
use std::process::{Child, ChildStderr, Stdio};
use std::sync::{Arc, Barrier};
use std::thread;

use common::{World, oathtool, pam_tools_present};

const PROCESSES: usize = 32;
const SAME_CODE_TRIALS: usize = 20;
const PROMPT: &[u8] = b"Verification code: ";

/// Starts one pamtester per (user, code), one after the other, each left
/// waiting at the prompt (pam_wrapper's own start-up is not what is under
/// test, so a process that dies before prompting is replaced, and said so).
/// When all are waiting, every answer is released at once. Returns how many
/// authenticated.
fn race(world: &World, logins: &[(String, String)]) -> usize {
    let waiting: Vec<(Child, ChildStderr, String)> = logins
        .iter()
        .map(|(user, code)| {
            let (child, stderr) = start_at_prompt(world, user);
            (child, stderr, code.clone())
        })
        .collect();
    let release = Arc::new(Barrier::new(waiting.len()));
    let handles: Vec<_> = waiting
        .into_iter()
        .map(|(child, stderr, code)| {
            let release = release.clone();
            thread::spawn(move || answer_together(child, stderr, &release, &code))
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("racer thread"))
        .filter(|ok| *ok)
        .count()
}

/// A pamtester that has opened the store, read the token and now waits at
/// the prompt.
fn start_at_prompt(world: &World, user: &str) -> (Child, ChildStderr) {
    for attempt in 1..=3 {
        let mut cmd = world.pamtester_command("totp", user, Some("203.0.113.7"));
        cmd.env("PAM_WRAPPER_DEBUGLEVEL", "1");
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pamtester");
        let mut stderr = child.stderr.take().expect("stderr");
        let mut seen = Vec::new();
        let mut byte = [0u8; 1];
        while !seen.ends_with(PROMPT) {
            match stderr.read(&mut byte) {
                Ok(1) => seen.push(byte[0]),
                _ => break,
            }
        }
        if seen.ends_with(PROMPT) {
            return (child, stderr);
        }
        let _ = child.wait();
        eprintln!(
            "pamtester for {user} ended before prompting (attempt {attempt}), restarting it: {}",
            String::from_utf8_lossy(&seen)
        );
    }
    panic!("pamtester for {user} never reached the prompt");
}

fn answer_together(
    mut child: Child,
    mut stderr: ChildStderr,
    release: &Barrier,
    code: &str,
) -> bool {
    release.wait();
    let mut stdin = child.stdin.take().expect("stdin");
    let _ = stdin.write_all(format!("{code}\n").as_bytes());
    drop(stdin);
    let mut rest = String::new();
    let _ = stderr.read_to_string(&mut rest);
    let success = child.wait().expect("wait").success();
    // Errors and warnings of the module (a reused code is a warning).
    if !success && !rest.contains("code already used") {
        eprintln!("a racer failed: {rest}");
    }
    success
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
