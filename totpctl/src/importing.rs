//! `totpctl import`: read another tool's files, show what would happen,
//! and with --apply store everything in one transaction.

use zeroize::Zeroizing;

use crate::audit::Audit;
use crate::cli::{ImportArgs, ImportSource};
use crate::report::describe_params;
use crate::{check_user, unix_now};
use pam_totp::import::{self, Imported};
use pam_totp::recovery;
use pam_totp::store::{EnrollMode, Enrollment, Kind, Store, Token};

fn read(path: &std::path::Path) -> Result<Zeroizing<String>, String> {
    std::fs::read_to_string(path)
        .map(Zeroizing::new)
        .map_err(|e| format!("{}: {e}", path.display()))
}

pub fn import(store: &dyn Store, audit: &mut Audit, source: ImportSource) -> Result<(), String> {
    let (tokens, args, origin, path) = match source {
        ImportSource::GoogleAuthenticator { file, user, common } => {
            check_user(&user)?;
            let text = read(&file)?;
            let token = import::google_authenticator::parse(&text, &user)
                .map_err(|e| format!("{}: {e}", file.display()))?;
            (vec![token], common, "google-authenticator", file)
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
    let mut enrollments = Vec::with_capacity(tokens.len());
    for t in &tokens {
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
        enrollments.push(Enrollment {
            token: Token {
                id: 0,
                user: t.user.clone(),
                device: args.device.clone(),
                kind: t.kind,
                secret: t.secret.clone(),
                params: t.params,
                created: now,
                confirmed: Some(now),
                last_step: t.last_step,
                life: Default::default(),
            },
            recovery,
        });
    }
    let mode = if args.force {
        EnrollMode::ReplaceDevice
    } else {
        EnrollMode::Add
    };
    store
        .enroll(&enrollments, mode)
        .map_err(|e| format!("nothing imported: {e}"))?;
    for t in &tokens {
        audit.record(
            "import",
            &t.user,
            &format!(
                "device=\"{}\" type={} from={origin}:{}:{}",
                args.device,
                t.kind,
                path.display(),
                t.line
            ),
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
