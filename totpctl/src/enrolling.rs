//! enroll, reset, confirm and recovery: the verbs that create secrets and
//! show them, once.

use std::io::{BufRead, IsTerminal, Write};

use serde_json::json;
use zeroize::Zeroizing;

use crate::audit::Audit;
use crate::cli::TokenArgs;
use crate::qr_png::qr_png;
use crate::report::describe_params;
use crate::sudo::OutputFile;
use crate::{check_user, unix_now};
use pam_totp::auth::match_token;
use pam_totp::config::{DEFAULT_HOTP_WINDOW, DEFAULT_WINDOW};
use pam_totp::enroll::{otpauth_uri, qr_terminal};
use pam_totp::otp::Params;
use pam_totp::recovery::{self, RecoveryCode};
use pam_totp::secret::Secret;
use pam_totp::store::{Claim, EnrollMode, Enrollment, Kind, Store, Token};
use pam_totp::sys::host_name;

fn read_secret(text: &str) -> Result<Secret, String> {
    let text = if text == "-" {
        if std::io::stdin().is_terminal() {
            eprint!("Base32 key: ");
        }
        let mut line = Zeroizing::new(String::new());
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| format!("reading the key from stdin: {e}"))?;
        line
    } else {
        Zeroizing::new(text.to_string())
    };
    Secret::from_base32(&text).map_err(|e| format!("--secret: {e}"))
}

/// enroll and reset: one transaction, then the one-time display.
pub fn enroll(
    store: &dyn Store,
    audit: &mut Audit,
    user: &str,
    args: &TokenArgs,
    mode: EnrollMode,
) -> Result<(), String> {
    check_user(user)?;
    check_user(&args.device).map_err(|e| format!("--device: {e}"))?;
    let params = Params {
        algorithm: args.algorithm,
        digits: args.digits,
        period: args.period,
    };
    params.validate()?;
    let (secret, generated) = match &args.secret {
        Some(text) => {
            let secret = read_secret(text)?;
            secret
                .check_strength(args.allow_short)
                .map_err(|e| format!("--secret: {e}"))?;
            (secret, false)
        }
        None => (Secret::generate().map_err(|e| e.to_string())?, true),
    };
    let now = unix_now();
    let active = !generated || args.no_confirm;
    let first_token = store.tokens(user).map_err(|e| e.to_string())?.is_empty();
    let recovery_codes = if generated && (first_token || mode == EnrollMode::ReplaceUser) {
        Some(recovery::generate().map_err(|e| e.to_string())?)
    } else {
        None
    };
    let token = Token {
        id: 0,
        user: user.to_string(),
        device: args.device.clone(),
        kind: args.kind,
        secret,
        params,
        created: now,
        confirmed: active.then_some(now),
        last_step: match args.kind {
            Kind::Hotp => args.counter.checked_sub(1),
            Kind::Totp => None,
        },
    };
    // The PNG file is created before the store changes, so a refused one
    // (it exists, is a link, or the caller may not create it) changes nothing.
    let mut png_file = match &args.qr_png {
        Some(path) => Some(
            OutputFile::create(path).map_err(|e| format!("--qr-png {}: {e}", path.display()))?,
        ),
        None => None,
    };
    let enrolled = store.enroll(
        &[Enrollment {
            token: token.clone(),
            recovery: recovery_codes
                .as_ref()
                .map(|codes| codes.iter().map(|(_, h)| h.clone()).collect()),
        }],
        mode,
    );
    if let Err(e) = enrolled {
        if let (Some(file), Some(path)) = (png_file, &args.qr_png) {
            file.discard(path);
        }
        return Err(e.to_string());
    }
    let verb = if mode == EnrollMode::ReplaceUser {
        "reset"
    } else {
        "enroll"
    };
    audit.record(
        verb,
        user,
        &format!(
            "device=\"{}\" type={} key={} state={}{}",
            args.device,
            args.kind,
            if generated { "generated" } else { "given" },
            if active { "active" } else { "pending" },
            if recovery_codes.is_some() {
                " recovery_codes=10"
            } else {
                ""
            }
        ),
    );

    let codes: Vec<&RecoveryCode> = recovery_codes
        .iter()
        .flatten()
        .map(|(code, _)| code)
        .collect();
    let issuer = args.issuer.clone().unwrap_or_else(host_name);
    let uri = otpauth_uri(
        &token.secret,
        &issuer,
        user,
        args.kind,
        &params,
        args.counter,
    );
    if let (Some(path), Some(out)) = (&args.qr_png, png_file.as_mut()) {
        let png = qr_png(&uri).map_err(|e| e.to_string())?;
        out.file
            .write_all(&png)
            .map_err(|e| format!("--qr-png {}: {e}", path.display()))?;
    }
    if args.json {
        let out = json!({
            "user": user,
            "device": args.device,
            "type": args.kind.as_str(),
            "key": generated.then(|| token.secret.to_base32().to_string()),
            "uri": generated.then(|| uri.to_string()),
            "recovery_codes": codes.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
            "state": if active { "active" } else { "pending" },
        });
        println!("{out}");
        return Ok(());
    }
    println!(
        "{} {user}, device {:?} ({}).",
        if mode == EnrollMode::ReplaceUser {
            "Reset"
        } else {
            "Enrolled"
        },
        args.device,
        describe_params(args.kind, &params)
    );
    if generated {
        let qr = qr_terminal(&uri, args.invert).map_err(|e| e.to_string())?;
        println!(
            "Scan the QR code with the authenticator app, or type the key. It is shown only now.\n\n{}\n\
             Key: {}\nURI: {}",
            qr.as_str(),
            token.secret.to_base32_grouped().as_str(),
            uri.as_str()
        );
    }
    if !codes.is_empty() {
        println!(
            "\nRecovery codes: each works once, in place of a code. Keep them safe; they are shown only now."
        );
        for pair in codes.chunks(2) {
            let line: Vec<&str> = pair.iter().map(|c| c.as_str()).collect();
            println!("    {}", line.join("    "));
        }
    }
    if !active {
        if std::io::stdin().is_terminal() {
            // The stored row (with its id) is what a confirmation updates.
            let stored = store
                .tokens(user)
                .map_err(|e| e.to_string())?
                .into_iter()
                .find(|t| t.device == token.device && !t.is_active())
                .ok_or_else(|| format!("{user} has no pending device {:?}", token.device))?;
            ask_confirmation(store, audit, &stored)?;
        } else {
            println!(
                "\nThe token is pending: it logs nobody in until a code from the app confirms it:\n    totpctl confirm {user} CODE{}",
                if args.device == pam_totp::store::DEFAULT_DEVICE {
                    String::new()
                } else {
                    format!(" --device {}", args.device)
                }
            );
        }
    }
    Ok(())
}

/// On a terminal: up to three tries to type the app's code; Enter alone
/// leaves the token pending.
fn ask_confirmation(store: &dyn Store, audit: &mut Audit, token: &Token) -> Result<(), String> {
    for _ in 0..3 {
        eprint!("\nCode from the app to confirm (Enter: confirm later): ");
        let mut line = Zeroizing::new(String::new());
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        if line.trim().is_empty() {
            println!(
                "Pending: confirm later with `totpctl confirm {} CODE`.",
                token.user
            );
            return Ok(());
        }
        match confirm_token(store, token, line.trim())? {
            true => {
                audit.record(
                    "confirm",
                    &token.user,
                    &format!("device=\"{}\"", token.device),
                );
                println!("Confirmed: the token is active.");
                return Ok(());
            }
            false => eprintln!("That code does not match."),
        }
    }
    Err(format!(
        "not confirmed; the token stays pending (`totpctl confirm {} CODE`)",
        token.user
    ))
}

/// Checks `code` against a stored pending token (its `id` is the row's)
/// and activates it, claiming the code's step, if it matches.
fn confirm_token(store: &dyn Store, token: &Token, code: &str) -> Result<bool, String> {
    let now = unix_now();
    let Some(step) = match_token(token, code, now as u64, DEFAULT_WINDOW, DEFAULT_HOTP_WINDOW)
    else {
        return Ok(false);
    };
    // Succeeds only while the token is still pending (atomic in the store).
    Ok(store
        .confirm(token.id, now, step)
        .map_err(|e| e.to_string())?
        == Claim::Claimed)
}

/// `totpctl confirm USER CODE [--device NAME]`. A code typed in two
/// groups ("700 102") is read without the space; an answer that is no code
/// for the pending token is explained as such (not as a clock problem).
pub fn confirm(
    store: &dyn Store,
    audit: &mut Audit,
    user: &str,
    code: &str,
    device: Option<&str>,
) -> Result<(), String> {
    let pending: Vec<Token> = store
        .tokens(user)
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|t| !t.is_active() && device.is_none_or(|d| d == t.device))
        .collect();
    if pending.is_empty() {
        return Err(match device {
            Some(d) => format!("{user} has no pending device {d:?}"),
            None => format!("{user} has no pending token"),
        });
    }
    let mut lengths: Vec<usize> = pending.iter().map(|t| t.params.digits as usize).collect();
    lengths.sort_unstable();
    lengths.dedup();
    let wanted = lengths
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(" or ");
    let code = match crate::diagnose::shape(code) {
        crate::diagnose::Shape::Code(code) => code,
        crate::diagnose::Shape::Recovery => {
            return Err(format!(
                "that is a recovery code; confirm needs the {wanted}-digit code the app shows now"
            ));
        }
        crate::diagnose::Shape::Other => {
            return Err(format!(
                "that is not a code: confirm needs the {wanted} digits the app shows now for \
                 {user} (\"700102\" or \"700 102\")"
            ));
        }
    };
    if !lengths.contains(&code.len()) {
        return Err(format!(
            "the code has {} digits, but {user}'s pending token shows {wanted}-digit codes: type \
             every digit the app shows now",
            code.len()
        ));
    }
    for token in pending
        .iter()
        .filter(|t| t.params.digits as usize == code.len())
    {
        if confirm_token(store, token, &code)? {
            audit.record("confirm", user, &format!("device=\"{}\"", token.device));
            let next = match token.kind {
                Kind::Totp => "wait until the app shows a new code",
                Kind::Hotp => "the token's next code",
            };
            println!(
                "Confirmed {user}'s device {:?}: the token is active. The confirming code is now \
                 used: the next login needs the next code ({next}).",
                token.device
            );
            return Ok(());
        }
    }
    Err("the code does not match (is the phone's clock right? codes change every 30 s)".to_string())
}

/// `totpctl recovery USER`: ten new codes, the old ones void.
pub fn new_recovery_codes(
    store: &dyn Store,
    audit: &mut Audit,
    user: &str,
    json: bool,
) -> Result<(), String> {
    if store.tokens(user).map_err(|e| e.to_string())?.is_empty() {
        return Err(format!("{user} is not enrolled"));
    }
    let codes = recovery::generate().map_err(|e| e.to_string())?;
    let hashes: Vec<_> = codes.iter().map(|(_, h)| h.clone()).collect();
    store
        .replace_recovery(user, &hashes)
        .map_err(|e| e.to_string())?;
    audit.record("recovery", user, "10 new recovery codes, old ones void");
    if json {
        let list: Vec<&str> = codes.iter().map(|(c, _)| c.as_str()).collect();
        println!("{}", json!({ "user": user, "recovery_codes": list }));
        return Ok(());
    }
    println!("New recovery codes for {user} (the old ones no longer work). Shown only now:");
    for pair in codes.chunks(2) {
        let line: Vec<&str> = pair.iter().map(|(c, _)| c.as_str()).collect();
        println!("    {}", line.join("    "));
    }
    Ok(())
}
