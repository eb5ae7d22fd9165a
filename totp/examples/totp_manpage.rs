//! Writes totp(1), the user's manual page, into DIR from totp's own clap
//! definitions (src/cli.rs, compiled in here), as `totpctl manpages` does
//! for totpctl's pages (totpctl/src/docs.rs):
//!
//!     cargo run --release -p totp --example totp_manpage -- DIR
//!
//! An example, not a verb of `totp`: `totp` is installed set-uid root, and a
//! `manpages DIR` verb there would create or truncate a file wherever the
//! caller names, as root. This program is never installed and runs with
//! the rights of whoever runs it. packaging/build.sh and the rpm spec call
//! it for the packages' totp.1.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::CommandFactory;

// Only the definitions are used here: nothing reads the parsed fields.
#[allow(dead_code)]
#[path = "../src/cli.rs"]
mod cli;

fn main() -> ExitCode {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [dir] = args.as_slice() else {
        eprintln!("usage: totp_manpage DIR");
        return ExitCode::from(2);
    };
    match write_page(dir) {
        Ok(path) => {
            println!("{}", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("totp_manpage: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn write_page(dir: &Path) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join("totp.1");
    let mut out = File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    render(&mut out).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

/// Text for roff: backslashes and hyphens escaped, no line read as a request.
fn roff_text(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    if escaped.starts_with(['.', '\'']) {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}

fn bold(text: &str) -> String {
    format!("\\fB{}\\fR", roff_text(text))
}

fn italic(text: &str) -> String {
    format!("\\fI{}\\fR", roff_text(text))
}

/// The after-help's prose paragraphs (its "Examples:" are replaced by the
/// EXAMPLES section; the docs tests check that each is there).
fn after_help_prose(cmd: &clap::Command) -> Vec<String> {
    let text = cmd
        .get_after_help()
        .map(|t| t.to_string())
        .unwrap_or_default();
    let prose = text.split("Examples:").next().unwrap_or("");
    prose
        .split("\n\n")
        .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|p| !p.is_empty())
        .collect()
}

/// A sentence as clap shows it (without its last full stop), with one.
fn sentence(text: &str) -> String {
    let text = text.trim();
    if text.ends_with(['.', '!', '?', ')']) {
        text.to_string()
    } else {
        format!("{text}.")
    }
}

/// `totp VERB [--option VALUE] NAME`, for the COMMANDS section.
fn verb_synopsis(sub: &clap::Command) -> String {
    let mut line = format!("\\fBtotp {}\\fR", roff_text(sub.get_name()));
    for arg in sub.get_arguments().filter(|a| !a.is_hide_set()) {
        let value = arg
            .get_value_names()
            .and_then(|v| v.first())
            .map(|v| v.to_string())
            .unwrap_or_else(|| arg.get_id().as_str().to_uppercase());
        if arg.is_positional() {
            if arg.is_required_set() {
                line.push_str(&format!(" {}", italic(&value)));
            } else {
                line.push_str(&format!(" [{}]", italic(&value)));
            }
        } else if let Some(long) = arg.get_long() {
            if long == "help" {
                continue;
            }
            let takes = arg.get_num_args().is_some_and(|n| n.takes_values());
            if takes {
                line.push_str(&format!(
                    " [{} {}]",
                    bold(&format!("--{long}")),
                    italic(&value)
                ));
            } else {
                line.push_str(&format!(" [{}]", bold(&format!("--{long}"))));
            }
        }
    }
    line
}

/// Each verb: its synopsis, what it does, and its arguments.
fn commands_section(cmd: &clap::Command) -> String {
    let mut roff = String::from(".SH COMMANDS\n");
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        if sub.get_name() == "help" {
            continue;
        }
        roff.push_str(".TP\n");
        roff.push_str(&verb_synopsis(sub));
        roff.push('\n');
        if let Some(about) = sub.get_long_about().or_else(|| sub.get_about()) {
            roff.push_str(&roff_text(&sentence(&about.to_string())));
            roff.push('\n');
        }
        let args: Vec<&clap::Arg> = sub
            .get_arguments()
            .filter(|a| !a.is_hide_set() && a.get_long() != Some("help"))
            .collect();
        if args.is_empty() {
            continue;
        }
        roff.push_str(".RS\n");
        for arg in args {
            roff.push_str(".TP\n");
            if arg.is_positional() {
                let value = arg
                    .get_value_names()
                    .and_then(|v| v.first())
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| arg.get_id().as_str().to_uppercase());
                roff.push_str(&italic(&value));
            } else if let Some(long) = arg.get_long() {
                roff.push_str(&bold(&format!("--{long}")));
                if arg.get_num_args().is_some_and(|n| n.takes_values())
                    && let Some(value) = arg.get_value_names().and_then(|v| v.first())
                {
                    roff.push(' ');
                    roff.push_str(&italic(value));
                }
            }
            roff.push('\n');
            if let Some(help) = arg.get_long_help().or_else(|| arg.get_help()) {
                roff.push_str(&roff_text(&sentence(&help.to_string())));
                roff.push('\n');
            }
        }
        roff.push_str(".RE\n");
    }
    roff
}

/// EXAMPLES: (command, what it does); every example of `totp --help` is
/// here (tests/it/docs.rs checks it).
const EXAMPLES: &[(&str, &str)] = &[
    (
        "totp status",
        "your devices, recovery codes left, and whether you are locked out",
    ),
    (
        "totp test",
        "does the code your app shows work, and is its clock right (the code is not used up)",
    ),
    (
        "totp add-device tablet",
        "a second device called tablet, after a current code or a recovery code",
    ),
    (
        "totp add-device tablet --invert",
        "the same on a terminal with dark text on a light background",
    ),
    (
        "totp replace",
        "a new phone, after a current code or a recovery code; every other device stops working",
    ),
    (
        "totp replace --device phone",
        "the same, the new phone named phone",
    ),
    (
        "totp remove-device tablet",
        "remove the tablet after a current code (never your last usable device)",
    ),
    (
        "totp recovery-codes",
        "ten new recovery codes; the old ones stop working",
    ),
];

fn render(out: &mut dyn Write) -> std::io::Result<()> {
    let mut cmd = cli::Cli::command().name("totp").bin_name("totp");
    cmd.build();
    // clap_mangen's title, NAME, SYNOPSIS, DESCRIPTION and OPTIONS; the
    // after-help's prose goes into DESCRIPTION and its examples into
    // EXAMPLES, not into clap_mangen's "EXTRA".
    let paragraphs = after_help_prose(&cmd);
    let man = clap_mangen::Man::new(cmd.clone())
        .section("1")
        .manual("User Commands")
        .source(format!("pam_totp {}", env!("CARGO_PKG_VERSION")));
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    let mut roff = String::new();
    for paragraph in &paragraphs {
        roff.push_str(".PP\n");
        roff.push_str(&roff_text(paragraph));
        roff.push('\n');
    }
    roff.push_str(
        ".PP\n\
         totp is installed set\\-uid root, like \\fBpasswd\\fR(1). The user is the passwd \
         entry of the real uid, never an argument or a variable. totp clears its environment \
         before anything else, reads only \\fI/etc/security/pam_totp.conf\\fR (which names \
         the token store), and has no option that names a user, a store, a configuration or \
         a file. It refuses to run when it is not set\\-uid root, and for root (root uses \
         \\fBtotpctl\\fR(8)).\n\
         .PP\n\
         Codes are typed at a prompt with the echo off, never given as arguments. A right \
         code is used up as by a login (except with \\fBtotp test\\fR). A site may limit \
         totp with \\fBself_service = status\\fR (only \\fBtotp status\\fR) or turn it off \
         with \\fBself_service = off\\fR in \\fBpam_totp.conf\\fR(5).\n\
         .PP\n\
         Every code totp checks and every change it makes is logged to syslog (facility \
         authpriv, ident \\fBtotp\\fR) with your user name and uid, never a code or a key. \
         Each value stands in its own quotes, escaped once, as in \\fBtotpctl\\fR(8)'s \
         lines:\n\
         .PP\n\
         .nf\n\
         .RS\n\
         add\\-device user=\"alice\" device=\"tablet\" type=totp by uid 1000\n\
         .RE\n\
         .fi\n",
    );
    out.write_all(roff.as_bytes())?;
    man.render_options_section(out)?;
    out.write_all(commands_section(&cmd).as_bytes())?;
    out.write_all(extra_sections().as_bytes())?;
    man.render_version_section(out)?;
    Ok(())
}

/// FILES, EXIT STATUS, EXAMPLES and SEE ALSO, in roff.
fn extra_sections() -> String {
    let mut roff = String::from(".SH FILES\n");
    roff.push_str(
        ".TP\n\\fI/etc/security/pam_totp.conf\\fR\n\
         The module's configuration, at a path compiled in: it names the token store (and \
         its password and sealing key files), the code window and the guessing limits, and \
         \\fBself_service\\fR.\n",
    );
    roff.push_str(".SH \"EXIT STATUS\"\n");
    roff.push_str(
        "0 on success. 1 on an error, which is printed on standard error after \
         \\fBtotp: error:\\fR (a refused or wrong code, a device name that does not fit, \
         self\\-service turned off, a store that cannot be reached). 2 when the command \
         line is wrong (an unknown verb or option, a missing argument).\n\
         .PP\n\
         \\fBtotp test\\fR exits 0 when the code matches one of your devices and 1 when it \
         matches none.\n",
    );
    roff.push_str(".SH EXAMPLES\n");
    for (command, what) in EXAMPLES {
        let mut chars = what.chars();
        let capital: String = chars
            .next()
            .map(|c| c.to_ascii_uppercase())
            .into_iter()
            .chain(chars)
            .collect();
        roff.push_str(".PP\n");
        roff.push_str(&roff_text(&capital));
        roff.push_str(":\n.RS 4\n.EX\n");
        roff.push_str(&roff_text(command));
        roff.push_str("\n.EE\n.RE\n");
    }
    roff.push_str(".SH \"SEE ALSO\"\n");
    roff.push_str(".BR totpctl (8),\n.BR pam_totp (8),\n.BR pam_totp.conf (5)\n");
    roff
}
