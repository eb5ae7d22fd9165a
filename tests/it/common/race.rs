//! Logins that really race: every pamtester is started and left waiting at
//! the code prompt (the module has opened the store and read the token by
//! then); only when all are waiting are the answers written, all at once.

use std::io::{Read, Write};
use std::process::{Child, ChildStderr, Stdio};
use std::sync::{Arc, Barrier};
use std::thread;

use super::World;

pub const PROMPT: &[u8] = b"Verification code: ";

/// One racer: the PAM service (a "node"), the user and the answer.
#[derive(Clone)]
pub struct Racer {
    pub service: String,
    pub user: String,
    pub code: String,
}

/// Starts one pamtester per racer, one after the other, each left waiting
/// at the prompt (pam_wrapper's own start-up is not what is under test, so
/// a process that dies before prompting is replaced, and said so). When all
/// are waiting, every answer is released at once. Returns how many got in.
pub fn race(world: &World, racers: &[Racer]) -> usize {
    let waiting: Vec<(Child, ChildStderr, String)> = racers
        .iter()
        .map(|r| {
            let (child, stderr) = start_at_prompt(world, &r.service, &r.user);
            (child, stderr, r.code.clone())
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
fn start_at_prompt(world: &World, service: &str, user: &str) -> (Child, ChildStderr) {
    for attempt in 1..=3 {
        let mut cmd = world.pamtester_command(service, user, Some(super::RHOST));
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
