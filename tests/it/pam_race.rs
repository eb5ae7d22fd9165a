//! Concurrency through the real libpam: many pamtester processes, each its
//! own connection to the store, answering at the same moment.
//!
//! Every process is started and left waiting at the code prompt, then all
//! answers are released at once (`common::race`), so the claims really do
//! race. Both races live in this one test and run one after the other:
//! pam_wrapper has about 62 state slots in /tmp.

use crate::common;

use common::race::{Racer, race};
use common::{World, oathtool, pam_tools_present};

const PROCESSES: usize = 32;
const SAME_CODE_TRIALS: usize = 20;

fn racers(logins: Vec<(String, String)>) -> Vec<Racer> {
    logins
        .into_iter()
        .map(|(user, code)| Racer {
            service: "totp".into(),
            user,
            code,
        })
        .collect()
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
        wins_per_trial.push(race(&world, &racers(logins)));
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
    let wins = race(&world, &racers(logins));
    println!("{PROCESSES} different users at once: {wins} of {PROCESSES} in");
    assert_eq!(wins, PROCESSES);
}
