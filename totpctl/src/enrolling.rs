//! enroll, reset, confirm and recovery: the verbs that create secrets and
//! show them, once.

use std::io::{BufRead, IsTerminal, Write};

use serde_json::json;
use zeroize::Zeroizing;

use crate::audit::{Audit, Detail};
use crate::cli::TokenArgs;
use crate::report::describe_params;
use crate::sudo::OutputFile;
use crate::{check_user, unix_now};
use pam_totp::auth::match_token;
use pam_totp::config::{DEFAULT_HOTP_WINDOW, DEFAULT_WINDOW};
use pam_totp::enroll::{holder_of_key, otpauth_uri, qr_terminal};
use pam_totp::otp::Params;
use pam_totp::recovery::{self, RecoveryCode};
use pam_totp::secret::Secret;
use pam_totp::store::{Claim, EnrollMode, Enrollment, Kind, Life, Store, Token, replacement_name};
use pam_totp::sys::host_name;
use pam_totp_qr_png::qr_png;

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

/// enroll and reset: one transaction, then the one-time display. `old`:
/// for a reset, the devices it replaces (said in the output).
pub fn enroll(
    store: &dyn Store,
    audit: &mut Audit,
    user: &str,
    args: &TokenArgs,
    mode: EnrollMode,
    old: &[String],
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
    let existing = store.tokens(user).map_err(|e| e.to_string())?;
    let first_token = existing.is_empty();
    let reset = matches!(mode, EnrollMode::ReplaceUser | EnrollMode::Replacement);
    if let (false, false, Some(holder)) = (
        generated,
        reset,
        holder_of_key(&existing, &secret, args.algorithm, &args.device),
    ) {
        return Err(format!(
            "--secret: {user} already holds this key on device \"{}\"; one key is one \
             authenticator: give the new device its own key (leave out --secret), or \
             replace that device (--device {} --force)",
            holder.device, holder.device
        ));
    }
    let recovery_codes = if generated && (first_token || reset) {
        Some(recovery::generate().map_err(|e| e.to_string())?)
    } else {
        None
    };
    let replacement = mode == EnrollMode::Replacement;
    let token = Token {
        id: 0,
        user: user.to_string(),
        device: if replacement {
            replacement_name(&args.device)
        } else {
            args.device.clone()
        },
        kind: args.kind,
        secret,
        params,
        created: now,
        confirmed: active.then_some(now),
        last_step: match args.kind {
            Kind::Hotp => args.counter.checked_sub(1),
            Kind::Totp => None,
        },
        life: Life {
            disabled: None,
            expires: args.expires,
            replaces: replacement.then(|| args.device.clone()),
        },
        stored_key: Default::default(),
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
    let verb = if reset { "reset" } else { "enroll" };
    audit.record(
        verb,
        user,
        Detail::new()
            .quoted("device", &args.device)
            .bare("type", args.kind)
            .bare("key", if generated { "generated" } else { "given" })
            .bare("state", if active { "active" } else { "pending" })
            .bare_if("recovery_codes", recovery_codes.as_ref().map(Vec::len))
            .quoted_if(
                "expires",
                args.expires
                    .map(|t| format!("{} UTC", crate::report::utc(t))),
            )
            .quoted_if(
                "removed",
                (mode == EnrollMode::ReplaceUser).then(|| old.join(",")),
            )
            .quoted_if(
                "replaces_on_confirmation",
                (mode == EnrollMode::Replacement).then(|| old.join(",")),
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
            "expires": args.expires,
            "replaces_on_confirmation": replacement.then_some(old),
            "removed": (mode == EnrollMode::ReplaceUser).then_some(old),
        });
        println!("{out}");
        return Ok(());
    }
    println!(
        "{} {user}, device {:?} ({}){}.",
        if reset { "Reset" } else { "Enrolled" },
        args.device,
        describe_params(args.kind, &params),
        args.expires
            .map(|t| format!(", expires {} UTC", crate::report::utc(t)))
            .unwrap_or_default()
    );
    match mode {
        EnrollMode::ReplaceUser => println!(
            "Removed {user}'s old token(s) ({}) and recovery codes; grace periods ended.",
            old.join(", ")
        ),
        EnrollMode::Replacement => println!(
            "{user}'s old token(s) ({}) keep working until the new one is confirmed; the \
             confirmation removes them. The old recovery codes no longer work; grace periods \
             ended. (Old phone lost? `totpctl reset {user} --now` removes them at once.)",
            old.join(", ")
        ),
        _ => {}
    }
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
                if args.device == pam_totp::store::DEFAULT_DEVICE || replacement {
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
                    Detail::new().quoted("device", &token.device),
                );
                match &token.life.replaces {
                    Some(device) => println!(
                        "Confirmed: the new token is active as device {device:?}, and {}'s old \
                         token(s) are removed. The code is used: the next login needs the next one.",
                        token.user
                    ),
                    None => println!(
                        "Confirmed: the token is active. The code is used: the next login needs \
                         the next one."
                    ),
                }
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
    Ok(store.confirm(token, now, step).map_err(|e| e.to_string())? == Claim::Claimed)
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
            audit.record(
                "confirm",
                user,
                Detail::new().quoted("device", &token.device),
            );
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
    audit.record(
        "recovery",
        user,
        Detail::new().note("10 new recovery codes, old ones void"),
    );
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

/// The user names of a `--from-file` list: one per line, blank lines and
/// `#` comments skipped; every problem (a bad or unknown name, a name twice)
/// is collected, so one run names them all.
fn users_of(text: &str, allow_unknown: bool) -> Result<Vec<String>, String> {
    let mut users: Vec<String> = Vec::new();
    let mut problems = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let name = line.split('#').next().unwrap_or("").trim();
        if name.is_empty() {
            continue;
        }
        if users.iter().any(|u| u == name) {
            problems.push(format!("line {}: {name:?} is listed twice", number + 1));
            continue;
        }
        match crate::known_user(name, allow_unknown) {
            Ok(()) => users.push(name.to_string()),
            Err(e) => problems.push(format!("line {}: {e}", number + 1)),
        }
    }
    if !problems.is_empty() {
        return Err(format!(
            "nothing enrolled; fix the list:\n  {}",
            problems.join("\n  ")
        ));
    }
    if users.is_empty() {
        return Err("the list names no user".to_string());
    }
    Ok(users)
}

/// One user's new token and what is shown for it, made before anything is
/// stored.
struct Made {
    enrollment: Enrollment,
    codes: Vec<RecoveryCode>,
    uri: Zeroizing<String>,
}

/// `totpctl enroll --from-file FILE [--qr-dir DIR]`: every user of the
/// list in one transaction. The PNGs are written before the store changes
/// (and removed if it refuses), so either everything is stored and shown,
/// or nothing is.
pub fn enroll_many(
    store: &dyn Store,
    audit: &mut Audit,
    file: &std::path::Path,
    args: &TokenArgs,
    mode: EnrollMode,
    qr_dir: Option<&std::path::Path>,
    allow_unknown: bool,
) -> Result<(), String> {
    check_user(&args.device).map_err(|e| format!("--device: {e}"))?;
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("--from-file {}: {e}", file.display()))?;
    let users = users_of(&text, allow_unknown)?;
    let params = Params {
        algorithm: args.algorithm,
        digits: args.digits,
        period: args.period,
    };
    params.validate()?;
    let issuer = args.issuer.clone().unwrap_or_else(host_name);
    let now = unix_now();
    let mut made = Vec::with_capacity(users.len());
    for user in &users {
        let first = store.tokens(user).map_err(|e| e.to_string())?.is_empty();
        let generated = if first {
            recovery::generate().map_err(|e| e.to_string())?
        } else {
            Vec::new()
        };
        let (codes, hashes): (Vec<_>, Vec<_>) = generated.into_iter().unzip();
        let secret = Secret::generate().map_err(|e| e.to_string())?;
        let uri = otpauth_uri(&secret, &issuer, user, args.kind, &params, args.counter);
        made.push(Made {
            enrollment: Enrollment {
                token: Token {
                    id: 0,
                    user: user.clone(),
                    device: args.device.clone(),
                    kind: args.kind,
                    secret,
                    params,
                    created: now,
                    confirmed: args.no_confirm.then_some(now),
                    last_step: match args.kind {
                        Kind::Hotp => args.counter.checked_sub(1),
                        Kind::Totp => None,
                    },
                    life: Life {
                        expires: args.expires,
                        ..Life::default()
                    },
                    stored_key: Default::default(),
                },
                recovery: first.then_some(hashes),
            },
            codes,
            uri,
        });
    }
    // The PNGs first, into a new private directory.
    if let Some(dir) = qr_dir {
        write_pngs(dir, &made)?;
    }
    let enrollments: Vec<Enrollment> = made.iter().map(|m| m.enrollment.clone()).collect();
    if let Err(e) = store.enroll(&enrollments, mode) {
        if let Some(dir) = qr_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
        return Err(format!("nothing enrolled: {e}"));
    }
    let state = if args.no_confirm { "active" } else { "pending" };
    for m in &made {
        let token = &m.enrollment.token;
        audit.record(
            "enroll",
            &token.user,
            Detail::new()
                .quoted("device", &token.device)
                .bare("type", token.kind)
                .bare("key", "generated")
                .bare("state", state)
                .quoted("from_file", file.display())
                .bare_if(
                    "recovery_codes",
                    (!m.codes.is_empty()).then_some(m.codes.len()),
                ),
        );
        let mut line = json!({
            "user": token.user,
            "device": token.device,
            "type": token.kind.as_str(),
            "state": state,
            "expires": args.expires,
            "recovery_codes": m.codes.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
        });
        match qr_dir {
            Some(dir) => {
                line["qr_png"] = json!(
                    dir.join(format!("{}.png", token.user))
                        .display()
                        .to_string()
                );
            }
            None => {
                line["key"] = json!(token.secret.to_base32().to_string());
                line["uri"] = json!(m.uri.as_str());
            }
        }
        println!("{line}");
    }
    Ok(())
}

/// `DIR/USER.png` for every user, in a directory made for them (0700; an
/// existing directory is refused). On any failure the directory goes.
fn write_pngs(dir: &std::path::Path, made: &[Made]) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("--qr-dir {}: {e} (it must not exist yet)", dir.display()))?;
    let written = made.iter().try_for_each(|m| {
        let path = dir.join(format!("{}.png", m.enrollment.token.user));
        let png = qr_png(&m.uri)?;
        let mut out = OutputFile::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        out.file
            .write_all(&png)
            .map_err(|e| format!("{}: {e}", path.display()))
    });
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(dir);
        return Err(format!("--qr-dir: {e}; nothing enrolled"));
    }
    Ok(())
}
