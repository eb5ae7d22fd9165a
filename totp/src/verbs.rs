//! The verbs. Each change is one store transaction written while signals
//! wait (`SignalsBlocked`), after a code that went through the login's
//! rate limits (`codecheck::prove`), and is audited with the caller's uid.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::Caller;
use pam_totp::codecheck::{self, Proof, Refusal, Shape, describe_offset, find, shape};
use pam_totp::config::Config;
use pam_totp::enroll::{otpauth_uri, qr_terminal};
use pam_totp::logline::{Detail, audit_line, escape, utc};
use pam_totp::otp::Params;
use pam_totp::ratelimit::Lock;
use pam_totp::recovery;
use pam_totp::secret::Secret;
use pam_totp::store::{
    DEFAULT_DEVICE, EnrollMode, Enrollment, Kind, Life, Locked, Reservation, Store, Token, locks,
};
use pam_totp::sys::{self, SignalsBlocked};

/// The source `totp`'s checks are counted under (as a login's address is):
/// `totpctl show USER` lists it, `totpctl unlock USER` clears it.
pub const SOURCE: &str = "totp";
/// `totp test`'s own source, so a user can tell the two apart in `show`.
pub const TEST_SOURCE: &str = "totp test";

/// Tries at typing a code before `totp` gives up (each one counts).
const TRIES: usize = 3;

pub struct Ctx<'a> {
    pub config: &'a Config,
    pub store: &'a dyn Store,
    pub caller: &'a Caller,
}

impl Ctx<'_> {
    fn user(&self) -> &str {
        &self.caller.name
    }

    /// One audit line: `ACTION user="NAME" DETAIL by uid N`, as totpctl
    /// writes its own (`logline::audit_line`): each value of `detail`
    /// escaped once, in its own quotes. Never a code or key.
    fn audit(&self, action: &str, detail: Detail) {
        let line = audit_line(
            action,
            self.user(),
            detail,
            &format!("uid {}", self.caller.uid),
        );
        sys::audit_syslog(c"totp", &line);
    }
}

fn now() -> Result<u64, String> {
    sys::unix_time()
}

fn store_error(e: pam_totp::store::StoreError) -> String {
    store_error_ref(&e)
}

fn when(unix: i64) -> String {
    format!("{} UTC", utc(unix))
}

fn date(unix: i64) -> String {
    utc(unix).chars().take(10).collect()
}

/// `totp status`.
pub fn status(ctx: &Ctx) -> Result<(), String> {
    let user = ctx.user();
    let now = now()? as i64;
    let tokens = ctx.store.tokens(user).map_err(store_error)?;
    if tokens.is_empty() {
        println!(
            "{user}: no device is enrolled for you. Ask your administrators (totpctl enroll), \
             or enroll at login if your site allows it."
        );
        return Ok(());
    }
    println!("Devices of {user}:");
    for token in &tokens {
        let state = if !token.is_active() {
            "pending (logs nobody in until confirmed)".to_string()
        } else if let Some(why) = token.life.stopped_at(now) {
            why.to_string()
        } else {
            "active".to_string()
        };
        let last_used = match (token.kind, token.last_step) {
            (Kind::Totp, Some(step)) => date(
                step.saturating_mul(token.params.period)
                    .min(i64::MAX as u64) as i64,
            ),
            (Kind::Hotp, Some(counter)) => format!("counter {counter}"),
            (_, None) => "never".to_string(),
        };
        println!(
            "  {:<16} {} {} digits   {}   created {}   last used {}",
            escape(&token.device),
            token.kind,
            token.params.digits,
            state,
            date(token.created),
            last_used
        );
    }
    let codes = ctx.store.recovery_count(user).map_err(store_error)?;
    println!(
        "Recovery codes: {} unused of {}{}",
        codes.unused,
        codes.unused + codes.used,
        if codes.unused <= 2 {
            " (running out: `totp recovery-codes` makes a new set)"
        } else {
            ""
        }
    );
    let held = locks(ctx.store, user, &ctx.config.limits, now).map_err(store_error)?;
    if held.is_empty() {
        println!("Not locked out.");
    }
    for lock in held {
        match lock {
            Locked::User { until, recent } => println!(
                "LOCKED OUT until {} ({recent} wrong codes within 24 h): code logins are \
                 refused until then, or until your administrators unlock you.",
                when(until)
            ),
            Locked::Source {
                rhost,
                until,
                count,
            } => println!(
                "Backing off after {count} wrong codes from {} until {}.",
                if rhost.is_empty() {
                    "logins without an address".to_string()
                } else {
                    escape(&rhost)
                },
                when(until)
            ),
        }
    }
    let graces = ctx.store.graces(user, now).map_err(store_error)?;
    let key_graces = ctx.store.key_graces(user, now).map_err(store_error)?;
    let grants: Vec<_> = ctx
        .store
        .automation_grants(Some(user))
        .map_err(store_error)?
        .into_iter()
        .filter(|g| g.in_force(now))
        .collect();
    if graces.is_empty() && key_graces.is_empty() {
        println!("No grace periods: every login asks for a code.");
    }
    for (fingerprint, until) in key_graces {
        println!(
            "Grace period: logins with your SSH key {} skip the code until {} (`totpctl \
             forget` by your administrators ends it; so does `totp replace`).",
            escape(&fingerprint),
            when(until)
        );
    }
    for grant in grants {
        println!(
            "Automation grant #{}: your SSH key {} logs in without a code from {} until {} \
             ({}).",
            grant.id,
            escape(&grant.fingerprint),
            escape(&grant.networks),
            when(grant.until),
            escape(&grant.reason)
        );
    }
    for (ip, until) in graces {
        println!(
            "Grace period: logins from {} skip the code until {} (`totpctl forget` by your \
             administrators ends it; so does `totp replace`).",
            escape(&ip),
            when(until)
        );
    }
    Ok(())
}

/// What a refused proof tells the user.
fn refusal_message(refusal: &Refusal) -> String {
    match refusal {
        Refusal::Locked(Lock::User { until }) => format!(
            "too many wrong codes within 24 h: codes are refused until {} (logins too); \
             nothing was checked",
            when(*until)
        ),
        Refusal::Locked(Lock::Source { until }) => format!(
            "too many wrong codes typed to totp: try again after {}; nothing was checked",
            when(*until)
        ),
        Refusal::Wrong => {
            "that is not a current code of your devices (it counts as a wrong code)".to_string()
        }
        Refusal::RecoveryNotAccepted => {
            "a recovery code is not accepted here: type the code your device shows now".to_string()
        }
        Refusal::Reused => {
            "that code was used already: wait for your device's next code".to_string()
        }
        Refusal::Store(e) => store_error_ref(e),
    }
}

fn store_error_ref(e: &pam_totp::store::StoreError) -> String {
    format!("the token store: {e}")
}

/// Asks for a current code (or, with `recovery_ok`, a recovery code) and
/// uses it up, under the login's limits. Up to `TRIES` answers.
fn ask_proof(ctx: &Ctx, action: &str, recovery_ok: bool) -> Result<Proof, String> {
    let prompt = if recovery_ok {
        "Current code from one of your devices, or a recovery code: "
    } else {
        "Current code from one of your devices: "
    };
    if ctx
        .store
        .tokens(ctx.user())
        .map_err(store_error)?
        .is_empty()
    {
        return Err("no device is enrolled for you (totp status)".to_string());
    }
    let mut last = String::new();
    for _ in 0..TRIES {
        let answer = sys::read_hidden(prompt)?;
        if answer.is_empty() {
            return Err("nothing changed".to_string());
        }
        let at = now()?;
        let booted = sys::uptime().ok().map(|up| at.saturating_sub(up));
        match codecheck::prove(
            ctx.config,
            ctx.store,
            ctx.user(),
            SOURCE,
            &answer,
            recovery_ok,
            at,
            booted,
        ) {
            Ok(proof) => {
                let detail = Detail::new().bare("result", "ok");
                let detail = match &proof {
                    Proof::Code { device, .. } => {
                        detail.bare("proof", "code").quoted("device", device)
                    }
                    Proof::Recovery { remaining } => detail
                        .bare("proof", "recovery-code")
                        .bare("remaining", remaining),
                };
                ctx.audit(&format!("{action}-auth"), detail);
                return Ok(proof);
            }
            Err(refusal) => {
                let result = match &refusal {
                    Refusal::Locked(_) => "locked",
                    Refusal::Wrong => "wrong",
                    Refusal::RecoveryNotAccepted => "recovery-refused",
                    Refusal::Reused => "reused",
                    Refusal::Store(_) => "store-error",
                };
                ctx.audit(
                    &format!("{action}-auth"),
                    Detail::new().bare("result", result),
                );
                last = refusal_message(&refusal);
                if matches!(refusal, Refusal::Locked(_) | Refusal::Store(_)) {
                    break;
                }
                eprintln!("{last}");
            }
        }
    }
    Err(format!("{last}; nothing changed"))
}

/// `totp test`: does a code match, and at what offset; not used up.
pub fn test(ctx: &Ctx) -> Result<(), String> {
    let user = ctx.user();
    let tokens = ctx.store.tokens(user).map_err(store_error)?;
    if tokens.is_empty() {
        return Err("no device is enrolled for you: there is nothing to test".to_string());
    }
    let answer = sys::read_hidden("Code to test (not used up): ")?;
    let code = match shape(&answer) {
        Shape::Code(code) => code,
        Shape::Recovery => {
            return Err(
                "that is a recovery code: totp test does not try those (it would use one up); \
                 `totp status` says how many are left"
                    .to_string(),
            );
        }
        Shape::Other => {
            return Err(
                "that is not a code: type the 6 to 8 digits your device shows (\"700102\" or \
                 \"700 102\"); nothing was checked"
                    .to_string(),
            );
        }
    };
    let at = now()?;
    match ctx
        .store
        .reserve_guess(user, TEST_SOURCE, at as i64, &ctx.config.limits)
        .map_err(store_error)?
    {
        Reservation::Granted(_) => {}
        Reservation::Locked(lock) => {
            ctx.audit(
                "test",
                Detail::new().bare("result", "locked").note("(not checked)"),
            );
            return Err(refusal_message(&Refusal::Locked(lock)));
        }
    }
    match find(ctx.config, &tokens, &tokens, &code, at) {
        Some(found) => {
            let token = found.token;
            let usable = token.usable_at(at as i64);
            // A code of a usable device gives its guess back (losing this
            // only keeps one more failure counted); a code of a device that
            // logs nobody in (pending, disabled, expired) stays counted.
            if usable {
                let _ = ctx.store.release_guess(user, TEST_SOURCE, true, at as i64);
            }
            ctx.audit(
                "test",
                Detail::new()
                    .bare("result", if usable { "match" } else { "match-unusable" })
                    .quoted("device", &token.device)
                    .bare("offset", format_args!("{:+}", found.offset)),
            );
            println!(
                "The code matches your device \"{}\" at {}.",
                escape(&token.device),
                describe_offset(&found)
            );
            if !token.is_active() {
                println!(
                    "That device is pending: it logs nobody in until it is confirmed (the code \
                     counts as a wrong one)."
                );
            } else if let Some(why) = token.life.stopped_at(at as i64) {
                println!(
                    "That device is {why}: it logs nobody in (ask your administrators; the code \
                     counts as a wrong one)."
                );
            } else if found.used {
                println!("That code was used by a login already; the device's next code works.");
            } else {
                println!("Not used up: the code still works for one login.");
            }
            Ok(())
        }
        None => {
            ctx.audit("test", Detail::new().bare("result", "no-match"));
            Err(
                "the code matches none of your devices (it counts as a wrong code): is it the \
                 entry for this host, and is the device's clock set automatically?"
                    .to_string(),
            )
        }
    }
}

/// Prints recovery codes, two a line.
fn print_codes(codes: &[(recovery::RecoveryCode, recovery::RecoveryHash)]) {
    for pair in codes.chunks(2) {
        let line: Vec<&str> = pair.iter().map(|(c, _)| c.as_str()).collect();
        println!("    {}", line.join("    "));
    }
}

/// `totp recovery-codes`.
pub fn recovery_codes(ctx: &Ctx) -> Result<(), String> {
    ask_proof(ctx, "recovery-codes", false)?;
    let codes = recovery::generate().map_err(|e| e.to_string())?;
    let hashes: Vec<_> = codes.iter().map(|(_, h)| h.clone()).collect();
    {
        let _quiet = SignalsBlocked::new()?;
        ctx.store
            .replace_recovery(ctx.user(), &hashes)
            .map_err(store_error)?;
        ctx.audit(
            "recovery-codes",
            Detail::new().bare("recovery_codes", codes.len()),
        );
    }
    println!(
        "New recovery codes (the old ones no longer work). Each works once, in place of a \
         code. Keep them safe: they are shown only now."
    );
    print_codes(&codes);
    Ok(())
}

/// How a new key is shown: the terminal's QR code inverted or not, and
/// optionally a PNG file written as the caller.
pub struct Show {
    pub invert: bool,
    pub png: Option<PathBuf>,
}

/// The `--qr-png` file, created as the caller before anything is asked (a
/// refused path changes nothing), removed again if no device is stored.
struct PngFile<'a> {
    path: &'a Path,
    file: Option<File>,
    caller: &'a Caller,
    keep: bool,
}

impl<'a> PngFile<'a> {
    fn create(caller: &'a Caller, path: &'a Path) -> Result<PngFile<'a>, String> {
        let file = sys::as_user(caller.uid, caller.gid, || pam_totp_qr_png::create_new(path))?
            .map_err(|e| format!("--qr-png {}: {e}", path.display()))?;
        Ok(PngFile {
            path,
            file: Some(file),
            caller,
            keep: false,
        })
    }

    fn write(&mut self, uri: &str) -> Result<(), String> {
        let png = pam_totp_qr_png::qr_png(uri)?;
        self.file
            .as_mut()
            .ok_or("the PNG file is closed")?
            .write_all(&png)
            .map_err(|e| format!("--qr-png {}: {e}", self.path.display()))
    }
}

impl Drop for PngFile<'_> {
    fn drop(&mut self) {
        drop(self.file.take());
        if !self.keep {
            // The key in it was never stored; best effort, as the caller.
            let _ = sys::as_user(self.caller.uid, self.caller.gid, || {
                std::fs::remove_file(self.path)
            });
        }
    }
}

/// A new key, shown once: QR code, key, URI (and the PNG file).
fn show_new_key(
    ctx: &Ctx,
    secret: &Secret,
    invert: bool,
    png: Option<&mut PngFile>,
) -> Result<(), String> {
    let issuer = ctx.config.issuer.clone().unwrap_or_else(sys::host_name);
    let uri = otpauth_uri(
        secret,
        &issuer,
        ctx.user(),
        Kind::Totp,
        &Params::default(),
        0,
    );
    let qr = qr_terminal(&uri, invert).map_err(|e| e.to_string())?;
    if let Some(png) = png {
        png.write(uri.as_str())?;
        println!(
            "The QR code is also in {} (yours, mode 0600): delete it once the device is set up.",
            png.path.display()
        );
    }
    println!(
        "Scan the QR code with the new device's authenticator app, or type the key. It is \
         shown only now.\n\n{}\nKey: {}\nURI: {}",
        qr.as_str(),
        secret.to_base32_grouped().as_str(),
        uri.as_str()
    );
    Ok(())
}

/// Asks the new device's code until it matches `token` (in memory): the
/// step it matched, which is then claimed by the stored token.
fn ask_new_device_code(ctx: &Ctx, token: &Token) -> Result<u64, String> {
    for _ in 0..TRIES {
        let answer = sys::read_hidden("\nCode the NEW device shows now: ")?;
        if answer.is_empty() {
            break;
        }
        let code = match shape(&answer) {
            Shape::Code(code) => code,
            _ => Zeroizing::new(String::new()),
        };
        if let Some(step) = pam_totp::auth::match_token(
            token,
            &code,
            now()?,
            ctx.config.window,
            ctx.config.hotp_window,
        ) {
            return Ok(step);
        }
        eprintln!("That code does not match the new key (is the device's clock right?).");
    }
    Err("the new device was not confirmed; nothing was stored".to_string())
}

fn png_file<'a>(ctx: &Ctx<'a>, show: &'a Show) -> Result<Option<PngFile<'a>>, String> {
    show.png
        .as_deref()
        .map(|path| PngFile::create(ctx.caller, path))
        .transpose()
}

fn new_token(ctx: &Ctx, device: &str) -> Result<Token, String> {
    Ok(Token {
        id: 0,
        user: ctx.user().to_string(),
        device: device.to_string(),
        kind: Kind::Totp,
        secret: Secret::generate().map_err(|e| e.to_string())?,
        params: Params::default(),
        created: now()? as i64,
        confirmed: None,
        last_step: None,
        life: Life::default(),
        stored_key: Default::default(),
    })
}

fn check_device_name(name: &str) -> Result<(), String> {
    pam_totp::config::check_name(name).map_err(|e| format!("the device name: {e}"))
}

/// `totp add-device NAME`.
pub fn add_device(ctx: &Ctx, name: &str, show: &Show) -> Result<(), String> {
    check_device_name(name)?;
    let tokens = ctx.store.tokens(ctx.user()).map_err(store_error)?;
    if tokens.iter().any(|t| t.device == name) {
        return Err(format!(
            "you have a device named \"{}\" already: choose another name",
            escape(name)
        ));
    }
    let mut png = png_file(ctx, show)?;
    ask_proof(ctx, "add-device", true)?;
    let mut token = new_token(ctx, name)?;
    show_new_key(ctx, &token.secret, show.invert, png.as_mut())?;
    let step = ask_new_device_code(ctx, &token)?;
    let at = now()? as i64;
    token.confirmed = Some(at);
    token.last_step = Some(step);
    {
        let _quiet = SignalsBlocked::new()?;
        // Only while the devices are those read before the proof: a reset
        // meanwhile (the phone's holder waiting at a prompt) adds nothing.
        ctx.store
            .enroll_unchanged(
                &[Enrollment {
                    token,
                    recovery: None,
                }],
                EnrollMode::AddOwn,
                ctx.user(),
                &tokens,
            )
            .map_err(store_error)?;
        ctx.audit(
            "add-device",
            Detail::new()
                .quoted("device", name)
                .bare("type", Kind::Totp),
        );
    }
    if let Some(png) = png.as_mut() {
        png.keep = true;
    }
    println!(
        "Added device \"{}\": it is active, and its code just typed is used (the next login \
         needs the next one).",
        escape(name)
    );
    Ok(())
}

/// `totp replace [--device NAME]`.
pub fn replace(ctx: &Ctx, device: Option<&str>, show: &Show) -> Result<(), String> {
    let user = ctx.user();
    let tokens = ctx.store.tokens(user).map_err(store_error)?;
    let old: Vec<String> = tokens
        .iter()
        .filter(|t| t.life.replaces.is_none())
        .map(|t| t.device.clone())
        .collect();
    if old.is_empty() {
        return Err("no device is enrolled for you: there is nothing to replace".to_string());
    }
    let name = match device {
        Some(name) => name.to_string(),
        None if old.len() == 1 => old[0].clone(),
        None => DEFAULT_DEVICE.to_string(),
    };
    check_device_name(&name)?;
    let mut png = png_file(ctx, show)?;
    ask_proof(ctx, "replace", true)?;
    let mut token = new_token(ctx, &name)?;
    show_new_key(ctx, &token.secret, show.invert, png.as_mut())?;
    let step = ask_new_device_code(ctx, &token)?;
    token.confirmed = Some(now()? as i64);
    token.last_step = Some(step);
    let codes = recovery::generate().map_err(|e| e.to_string())?;
    let hashes: Vec<_> = codes.iter().map(|(_, h)| h.clone()).collect();
    {
        let _quiet = SignalsBlocked::new()?;
        // One transaction: the new device (confirmed, its code used), the
        // old devices gone, new recovery codes, grace ended. Nothing was
        // written before it: a signal or a closed terminal at any prompt
        // leaves the old devices as they were. Only while the devices are
        // those read before the proof: a reset meanwhile is not undone.
        ctx.store
            .enroll_unchanged(
                &[Enrollment {
                    token,
                    recovery: Some(hashes),
                }],
                EnrollMode::ReplaceConfirmed,
                user,
                &tokens,
            )
            .map_err(store_error)?;
        ctx.audit(
            "replace",
            Detail::new()
                .quoted("device", &name)
                .bare("type", Kind::Totp)
                .quoted("removed", pam_totp::logline::device_list(&old))
                .bare("recovery_codes", codes.len()),
        );
    }
    if let Some(png) = png.as_mut() {
        png.keep = true;
    }
    println!(
        "Done: the new device is active as \"{}\"; your old device(s) ({}) no longer work, \
         and your grace periods ended. The code just typed is used.",
        escape(&name),
        escape(&old.join(", "))
    );
    println!(
        "\nNew recovery codes (the old ones no longer work). Each works once, in place of a \
         code. Keep them safe: they are shown only now."
    );
    print_codes(&codes);
    Ok(())
}

/// `totp remove-device NAME`.
pub fn remove_device(ctx: &Ctx, name: &str) -> Result<(), String> {
    let user = ctx.user();
    let tokens = ctx.store.tokens(user).map_err(store_error)?;
    if !tokens.iter().any(|t| t.device == name) {
        return Err(format!(
            "you have no device named \"{}\" (totp status lists them)",
            escape(name)
        ));
    }
    let at = now()? as i64;
    let last = |name: &str| {
        format!(
            "\"{}\" is your last usable device: it is not removed (a new phone: `totp \
             replace`)",
            escape(name)
        )
    };
    // Said before a code is asked; the store's removal checks it again,
    // atomically, against a removal racing this one.
    if !tokens.iter().any(|t| t.device != name && t.usable_at(at)) {
        return Err(last(name));
    }
    ask_proof(ctx, "remove-device", false)?;
    {
        let _quiet = SignalsBlocked::new()?;
        let removed = ctx
            .store
            .delete_device_unless_last(user, name, now()? as i64)
            .map_err(store_error)?;
        if !removed {
            return Err(last(name));
        }
        ctx.audit("remove-device", Detail::new().quoted("device", name));
    }
    println!("Removed device \"{}\".", escape(name));
    Ok(())
}
