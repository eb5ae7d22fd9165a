//! `totpctl import`: read another tool's files, show what would happen,
//! and with --apply store everything in one transaction.

use std::collections::HashMap;

use zeroize::Zeroizing;

use crate::audit::{Audit, Detail};
use crate::cli::{ImportArgs, ImportSource};
use crate::report::describe_params;
use crate::{check_user, unix_now};
use pam_totp::enroll::holder_of_key;
use pam_totp::import::{self, Imported, google_authenticator, home};
use pam_totp::recovery;
use pam_totp::store::{EnrollMode, Enrollment, Kind, Store, Token};
use pam_totp::sys::{self, PasswdUser};

fn read(path: &std::path::Path) -> Result<Zeroizing<String>, String> {
    std::fs::read_to_string(path)
        .map(Zeroizing::new)
        .map_err(|e| format!("{}: {e}", path.display()))
}

pub fn import(store: &dyn Store, audit: &mut Audit, source: ImportSource) -> Result<(), String> {
    let (tokens, args, origin, path) = match source {
        ImportSource::GoogleAuthenticator {
            home_dirs: true,
            json,
            common,
            ..
        } => return home_dirs(store, audit, &common, json),
        ImportSource::GoogleAuthenticator {
            file: Some(file),
            user: Some(user),
            common,
            ..
        } => {
            check_user(&user)?;
            let text = read(&file)?;
            let token = import::google_authenticator::parse(&text, &user)
                .map_err(|e| format!("{}: {e}", file.display()))?;
            (vec![token], common, "google-authenticator", file)
        }
        ImportSource::GoogleAuthenticator { .. } => {
            return Err("name a FILE and --user USER, or --home-dirs".to_string());
        }
        ImportSource::Oath { file, common } => {
            let text = read(&file)?;
            let tokens =
                import::oath::parse(&text).map_err(|e| format!("{}: {e}", file.display()))?;
            (tokens, common, "oath", file)
        }
    };
    check(&tokens, &args)?;
    for t in &tokens {
        let existing = store
            .tokens(&t.user)
            .map_err(|e| format!("nothing imported: {e}"))?;
        if let Some(holder) = holder_of_key(&existing, &t.secret, t.params.algorithm, &args.device)
        {
            return Err(format!(
                "nothing imported: line {}: {} holds this key already on device \"{}\" (one \
                 key is one authenticator; --device {} --force imports it onto that device)",
                t.line, t.user, holder.device, holder.device
            ));
        }
    }
    for t in &tokens {
        describe(t, &args);
    }
    if !args.apply {
        println!(
            "Dry run: {} token(s) read from {}, nothing written. Run again with --apply to import.",
            tokens.len(),
            path.display()
        );
        return Ok(());
    }
    let now = unix_now();
    let enrollments = tokens
        .iter()
        .map(|t| enrollment(t, &args.device, now))
        .collect::<Result<Vec<_>, _>>()?;
    store
        .enroll(&enrollments, mode(&args))
        .map_err(|e| format!("nothing imported: {e}"))?;
    for t in &tokens {
        audit.record(
            "import",
            &t.user,
            Detail::new()
                .quoted("device", &args.device)
                .bare("type", t.kind)
                .bare("from", format!("{origin}:{}:{}", path.display(), t.line)),
        );
    }
    let scratch: usize = tokens.iter().map(|t| t.scratch_codes.len()).sum();
    println!(
        "Imported {} token(s) and {scratch} scratch code(s) as recovery codes from {}.",
        tokens.len(),
        path.display()
    );
    Ok(())
}

/// --force replaces the token of the same device name; without it a user
/// who has one makes the whole transaction fail.
fn mode(args: &ImportArgs) -> EnrollMode {
    if args.force {
        EnrollMode::ReplaceDevice
    } else {
        EnrollMode::Add
    }
}

/// The token to store for `t`, active at once, its scratch codes hashed as
/// recovery codes.
fn enrollment(t: &Imported, device: &str, now: i64) -> Result<Enrollment, String> {
    let recovery = if t.scratch_codes.is_empty() {
        None
    } else {
        Some(
            t.scratch_codes
                .iter()
                .map(|c| recovery::hash_imported(c))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?,
        )
    };
    Ok(Enrollment {
        token: Token {
            id: 0,
            user: t.user.clone(),
            device: device.to_string(),
            kind: t.kind,
            secret: t.secret.clone(),
            params: t.params,
            created: now,
            confirmed: Some(now),
            last_step: t.last_step,
            life: Default::default(),
            stored_key: Default::default(),
        },
        recovery,
    })
}

/// Refuses the whole import if any token breaks a rule, naming its line.
fn check(tokens: &[Imported], args: &ImportArgs) -> Result<(), String> {
    let mut problems = Vec::new();
    // Errors name the line, never what is on it.
    for t in tokens {
        if check_user(&t.user).is_err() {
            problems.push(format!(
                "line {}: the user name is empty, longer than 256 bytes, or contains spaces \
                 or control characters",
                t.line
            ));
        }
        if let Err(e) = t.secret.check_strength(args.allow_short) {
            problems.push(format!("line {}: {e}", t.line));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("nothing imported:\n  {}", problems.join("\n  ")))
    }
}

fn describe(t: &Imported, args: &ImportArgs) {
    let last = match (t.kind, t.last_step) {
        (_, None) => "none used".to_string(),
        (Kind::Totp, Some(step)) => format!("last used step {step}"),
        (Kind::Hotp, Some(counter)) => format!("next counter {}", counter + 1),
    };
    println!(
        "line {}: {} -> device {:?}: {}, {} bits, {last}, {} scratch code(s) as recovery codes",
        t.line,
        t.user,
        args.device,
        describe_params(t.kind, &t.params),
        t.secret.as_bytes().len() * 8,
        t.scratch_codes.len()
    );
    for note in &t.ignored {
        println!("    not carried over: {note}");
    }
}

/// What `--home-dirs` does with one user's file.
enum Outcome {
    /// Read and valid: imported (or, in a dry run, to be imported).
    Import {
        token: Imported,
        /// The user had a token of the same device name (--force).
        replaces: bool,
        /// Tokens the user already had (--force).
        beside: usize,
    },
    /// The user has tokens already and --force was not given.
    AlreadyEnrolled(usize),
    /// Root could not open or read it.
    Unreadable(String),
    /// Read, or looked at, and not taken: why.
    Refused(String),
}

impl Outcome {
    fn reason(&self) -> Option<&'static str> {
        match self {
            Outcome::Import { .. } => None,
            Outcome::AlreadyEnrolled(_) => Some("already_enrolled"),
            Outcome::Unreadable(_) => Some("unreadable"),
            Outcome::Refused(_) => Some("refused"),
        }
    }
}

/// One user whose home directory has a ~/.google_authenticator.
struct Found {
    user: String,
    uid: u32,
    file: std::path::PathBuf,
    outcome: Outcome,
}

/// The uid's user name for a message: the first passwd entry with it.
fn owner_name(names: &HashMap<u32, String>, uid: u32) -> String {
    match names.get(&uid) {
        Some(name) => format!("{name} (uid {uid})"),
        None => format!("uid {uid}, which no user has"),
    }
}

/// Reads, checks and parses one user's file; a store error ends the walk.
fn examine(
    store: &dyn Store,
    user: &PasswdUser,
    text: &str,
    args: &ImportArgs,
) -> Result<Outcome, String> {
    if check_user(&user.name).is_err() {
        return Ok(Outcome::Refused(
            "belongs to a user name that cannot be stored (longer than 256 bytes, or with spaces or control characters)"
                .to_string(),
        ));
    }
    let mut token = match google_authenticator::parse(text, &user.name) {
        Ok(token) => token,
        // The parser names the line, never what is on it.
        Err(e) => return Ok(Outcome::Refused(format!("is malformed: {e}"))),
    };
    if let Err(e) = token.secret.check_strength(args.allow_short) {
        return Ok(Outcome::Refused(format!("has a weak key: {e}")));
    }
    let existing = store
        .tokens(&user.name)
        .map_err(|e| format!("nothing imported: {e}"))?;
    if !existing.is_empty() && !args.force {
        return Ok(Outcome::AlreadyEnrolled(existing.len()));
    }
    if let Some(holder) = holder_of_key(
        &existing,
        &token.secret,
        token.params.algorithm,
        &args.device,
    ) {
        return Ok(Outcome::Refused(format!(
            "holds this key already on device \"{}\" (one key is one authenticator; \
             --device {} --force imports it onto that device)",
            holder.device, holder.device
        )));
    }
    // Imported again with --force (the same key): the steps or counters
    // used since the last import stay used, and so do the recovery codes
    // (the file still lists the scratch codes used since).
    if let Some(old) = existing.iter().find(|t| {
        t.device == args.device
            && t.kind == token.kind
            && t.params.algorithm == token.params.algorithm
            && t.secret
                .gives_the_codes_of(&token.secret, token.params.algorithm)
    }) {
        token.last_step = token.last_step.max(old.last_step);
        if !token.scratch_codes.is_empty() {
            token.scratch_codes.clear();
            token.ignored.push(
                "scratch codes (this key was imported before: its recovery codes stay as they are)"
                    .to_string(),
            );
        }
    }
    Ok(Outcome::Import {
        replaces: existing.iter().any(|t| t.device == args.device),
        beside: existing.iter().filter(|t| t.device != args.device).count(),
        token,
    })
}

/// `import google-authenticator --home-dirs`: every user's
/// ~/.google_authenticator, each taken for its owner when that is the user
/// whose home it is, all stored in one transaction.
fn home_dirs(
    store: &dyn Store,
    audit: &mut Audit,
    args: &ImportArgs,
    json: bool,
) -> Result<(), String> {
    let users =
        sys::all_users().map_err(|e| format!("cannot list the users, nothing imported: {e}"))?;
    let mut names: HashMap<u32, String> = HashMap::new();
    for u in &users {
        names.entry(u.uid).or_insert_with(|| u.name.clone());
    }
    // One file reached from two passwd entries (a shared home) is read once.
    let mut first_reader: HashMap<(u64, u64), String> = HashMap::new();
    let mut found = Vec::new();
    for user in &users {
        let outcome = match home::read_google_authenticator(&user.home, user.uid) {
            home::Found::Absent => continue,
            home::Found::Unreadable(e) => Outcome::Unreadable(e),
            home::Found::Refused(home::Refusal::Owner { owner, .. }) => Outcome::Refused(format!(
                "is owned by {}, not by {}",
                owner_name(&names, owner),
                user.name
            )),
            home::Found::Refused(refusal) => Outcome::Refused(refusal.to_string()),
            home::Found::Text { text, file } => match first_reader.get(&file) {
                Some(first) => Outcome::Refused(format!(
                    "is the same file as {first}'s (their passwd entries share a home \
                     directory): taken for {first} only"
                )),
                None => {
                    first_reader.insert(file, user.name.clone());
                    examine(store, user, &text, args)?
                }
            },
        };
        found.push(Found {
            user: user.name.clone(),
            uid: user.uid,
            file: home::path_in(&user.home),
            outcome,
        });
    }
    found.sort_by(|a, b| a.user.cmp(&b.user));

    let imports: Vec<&Imported> = found
        .iter()
        .filter_map(|f| match &f.outcome {
            Outcome::Import { token, .. } => Some(token),
            _ => None,
        })
        .collect();
    if args.apply && !imports.is_empty() {
        let now = unix_now();
        let enrollments = imports
            .iter()
            .map(|t| enrollment(t, &args.device, now))
            .collect::<Result<Vec<_>, _>>()?;
        store
            .enroll(&enrollments, mode(args))
            .map_err(|e| format!("nothing imported: {e}"))?;
        for f in &found {
            if let Outcome::Import { token, .. } = &f.outcome {
                audit.record(
                    "import",
                    &f.user,
                    Detail::new()
                        .quoted("device", &args.device)
                        .bare("type", token.kind)
                        .bare("from", format!("google-authenticator:{}", f.file.display()))
                        .bare("scratch_codes", token.scratch_codes.len()),
                );
            }
        }
    }
    let summary = Summary {
        applied: args.apply,
        users: users.len(),
        found: &found,
        device: &args.device,
    };
    if json {
        println!("{}", summary.json());
    } else {
        summary.print();
    }
    Ok(())
}

/// The report of a `--home-dirs` run.
struct Summary<'a> {
    applied: bool,
    users: usize,
    found: &'a [Found],
    device: &'a str,
}

impl Summary<'_> {
    fn imported(&self) -> impl Iterator<Item = &Imported> {
        self.found.iter().filter_map(|f| match &f.outcome {
            Outcome::Import { token, .. } => Some(token),
            _ => None,
        })
    }

    fn status(&self, outcome: &Outcome) -> &'static str {
        match (outcome, self.applied) {
            (Outcome::Import { .. }, true) => "imported",
            (Outcome::Import { .. }, false) => "would_import",
            _ => "skipped",
        }
    }

    fn json(&self) -> serde_json::Value {
        use serde_json::json;
        let results: Vec<_> = self
            .found
            .iter()
            .map(|f| {
                let mut entry = json!({
                    "user": f.user,
                    "uid": f.uid,
                    "file": f.file.display().to_string(),
                    "status": self.status(&f.outcome),
                    "reason": f.outcome.reason(),
                });
                match &f.outcome {
                    Outcome::Import {
                        token,
                        replaces,
                        beside,
                    } => {
                        entry["type"] = json!(token.kind.to_string());
                        entry["scratch_codes"] = json!(token.scratch_codes.len());
                        entry["device"] = json!(self.device);
                        entry["replaces_device"] = json!(replaces);
                        entry["other_tokens"] = json!(beside);
                        entry["not_carried_over"] = json!(token.ignored);
                    }
                    Outcome::AlreadyEnrolled(tokens) => {
                        entry["detail"] = json!(format!(
                            "already enrolled ({tokens} token(s)); --force imports it"
                        ));
                    }
                    Outcome::Unreadable(e) | Outcome::Refused(e) => {
                        entry["detail"] = json!(e);
                    }
                }
                entry
            })
            .collect();
        let imported = self.imported().count();
        json!({
            "applied": self.applied,
            "users": self.users,
            "files": self.found.len(),
            "imported": if self.applied { imported } else { 0 },
            "would_import": if self.applied { 0 } else { imported },
            "skipped": self.found.len() - imported,
            "results": results,
        })
    }

    fn print(&self) {
        for f in self.found {
            let path = f.file.display();
            match &f.outcome {
                Outcome::Import {
                    token,
                    replaces,
                    beside,
                } => {
                    let verb = if self.applied {
                        "imported"
                    } else {
                        "would import"
                    };
                    let mut also = String::new();
                    if *replaces {
                        also.push_str(&format!(", replacing device {:?}", self.device));
                    }
                    if *beside > 0 {
                        also.push_str(&format!(", beside {beside} other token(s)"));
                    }
                    println!(
                        "{}: {verb}: {}, {} scratch code(s) as recovery codes, device {:?}{also} \
                         (from {path})",
                        f.user,
                        describe_params(token.kind, &token.params),
                        token.scratch_codes.len(),
                        self.device
                    );
                    for note in &token.ignored {
                        println!("    not carried over: {note}");
                    }
                }
                Outcome::AlreadyEnrolled(tokens) => println!(
                    "{}: skipped: already enrolled ({tokens} token(s)); {path} not read into the \
                     store (--force imports it)",
                    f.user
                ),
                Outcome::Unreadable(e) => {
                    println!("{}: skipped: unreadable: {path}: {e}", f.user)
                }
                Outcome::Refused(e) => println!("{}: skipped: refused: {path} {e}", f.user),
            }
        }
        let imported: Vec<&Imported> = self.imported().collect();
        let count = |kind| imported.iter().filter(|t| t.kind == kind).count();
        let scratch: usize = imported.iter().map(|t| t.scratch_codes.len()).sum();
        let tally = format!(
            "{} user(s) ({} TOTP, {} HOTP, {scratch} scratch code(s)); {} skipped; {} user(s) \
             listed by the passwd database, {} with a {}",
            imported.len(),
            count(Kind::Totp),
            count(Kind::Hotp),
            self.found.len() - imported.len(),
            self.users,
            self.found.len(),
            home::FILE_NAME
        );
        if self.applied {
            println!("Imported {tally}. One transaction.");
        } else {
            println!(
                "Dry run: would import {tally}. Nothing written. Run again with --apply to import."
            );
        }
    }
}
