//! Keys, codes and recovery codes never reach a log, an error message or
//! any output but their one-time display: every outcome is driven with
//! `debug` on and pam_wrapper at full verbosity, then everything printed
//! is searched for them.

use crate::common;

use common::{World, oathtool, pam_tools_present, wrong_code};

#[test]
fn no_secret_in_any_log_or_output() {
    if !pam_tools_present() {
        return;
    }
    let world = World::new();
    world.service("totp", "debug");
    let enrolled = world.totpctl(&["enroll", "sam", "--json", "--no-confirm"]);
    assert!(enrolled.status.success());
    let json: serde_json::Value = serde_json::from_slice(&enrolled.stdout).expect("json");
    let key = json["key"].as_str().expect("key").to_string();
    let recovery: Vec<String> = json["recovery_codes"]
        .as_array()
        .expect("codes")
        .iter()
        .map(|c| c.as_str().expect("code").to_string())
        .collect();

    let mut seen = String::new();
    let mut typed = Vec::new();
    let mut login = |answer: &str, rhost: &str| {
        let run = world.login("totp", "sam", Some(rhost), answer);
        seen.push_str(&run.stdout);
        seen.push_str(&run.stderr);
        run.success
    };
    let code = oathtool(&key, None, &[]);
    typed.push(code.clone());
    assert!(login(&code, "192.0.2.1"), "right code");
    assert!(!login(&code, "192.0.2.1"), "reused");
    let bad = wrong_code(&code);
    for _ in 0..6 {
        assert!(!login(&bad, "192.0.2.2"), "wrong, then backed off");
    }
    assert!(!login(&format!("{code}9"), "192.0.2.3"), "malformed");
    assert!(login(&recovery[0], "192.0.2.4"), "recovery code");
    assert!(!login(&recovery[0], "192.0.2.4"), "recovery code again");
    typed.push(recovery[0].clone());

    for args in [
        &["list"][..],
        &["list", "--json"],
        &["show", "sam"],
        &["show", "sam", "--json"],
        &["unlock", "sam"],
        // An error that involves a key must not echo it.
        &["enroll", "sam", "--secret", &key],
        &["confirm", "sam", &code],
    ] {
        let out = world.totpctl(args);
        seen.push_str(&String::from_utf8_lossy(&out.stdout));
        seen.push_str(&String::from_utf8_lossy(&out.stderr));
    }

    let grouped: String = key
        .as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).unwrap_or(""))
        .collect::<Vec<_>>()
        .join(" ");
    let mut secrets = vec![key.clone(), key.to_lowercase(), grouped];
    secrets.extend(recovery.iter().cloned());
    secrets.extend(recovery.iter().map(|r| r.replace('-', "")));
    secrets.extend(typed);
    for secret in &secrets {
        assert!(
            !seen.contains(secret.as_str()),
            "{secret:?} appeared in the output:\n{seen}"
        );
    }
    assert!(seen.contains("SYSLOG("), "the logs were captured");
    println!(
        "{} bytes of logs and output searched for {} secrets: none found",
        seen.len(),
        secrets.len()
    );
}
