//! Shell completions and manual pages, generated from the clap definitions
//! so they cannot drift from the real options.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use clap::CommandFactory;

use crate::cli::{Cli, CompletionShell};

/// Prints the completion script for `shell`.
pub fn completions(shell: CompletionShell, out: &mut dyn Write) {
    let mut cmd = Cli::command();
    match shell {
        CompletionShell::Bash => {
            clap_complete::generate(clap_complete::Shell::Bash, &mut cmd, "totpctl", out)
        }
        CompletionShell::Zsh => {
            clap_complete::generate(clap_complete::Shell::Zsh, &mut cmd, "totpctl", out)
        }
    }
}

/// Writes totpctl.8 and totpctl-VERB.8 (and totpctl-import-SOURCE.8) into `dir`.
pub fn manpages(dir: &Path) -> Result<Vec<String>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let cmd = Cli::command().name("totpctl");
    let mut written = Vec::new();
    write_tree(&cmd, "totpctl", None, dir, &mut written)?;
    Ok(written)
}

fn write_tree(
    cmd: &clap::Command,
    name: &str,
    parent: Option<&str>,
    dir: &Path,
    written: &mut Vec<String>,
) -> Result<(), String> {
    let page = cmd
        .clone()
        .name(name.to_string())
        .bin_name(name.replace('-', " "));
    let file = format!("{name}.8");
    let path = dir.join(&file);
    let mut out = File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    render(page, name, parent, &mut out).map_err(|e| format!("{}: {e}", path.display()))?;
    written.push(file);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        if sub.get_name() == "help" {
            continue;
        }
        write_tree(
            sub,
            &format!("{name}-{}", sub.get_name()),
            Some(name),
            dir,
            written,
        )?;
    }
    Ok(())
}

/// One page: clap_mangen's sections, then EXIT STATUS, EXAMPLES and SEE
/// ALSO, then the version.
fn render(
    page: clap::Command,
    name: &str,
    parent: Option<&str>,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let has_args = page.get_arguments().any(|a| !a.is_hide_set());
    let has_subcommands = page.get_subcommands().any(|s| !s.is_hide_set());
    let has_after = page.get_after_help().is_some() || page.get_after_long_help().is_some();
    let has_version = page.get_version().is_some() || page.get_long_version().is_some();
    let man = clap_mangen::Man::new(page)
        .section("8")
        .manual("System Administration")
        .source(format!("pam_totp {}", env!("CARGO_PKG_VERSION")));
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    if has_args {
        man.render_options_section(out)?;
    }
    if has_subcommands {
        man.render_subcommands_section(out)?;
    }
    if has_after {
        man.render_extra_section(out)?;
    }
    out.write_all(extra_sections(name, parent).as_bytes())?;
    if has_version {
        man.render_version_section(out)?;
    }
    Ok(())
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

/// Examples of each page: (command, what it does).
fn examples(page: &str) -> &'static [(&'static str, &'static str)] {
    match page {
        "totpctl" => &[
            (
                "totpctl init",
                "create the store before adding pam_totp to a PAM stack",
            ),
            (
                "totpctl enroll alice",
                "a token for alice: QR code, key, recovery codes",
            ),
            (
                "totpctl reset alice",
                "a new phone: the old one works until the new one is confirmed",
            ),
            ("totpctl unlock alice", "after too many wrong codes"),
            (
                "totpctl report --group pilot",
                "where a rollout stands, every morning",
            ),
            (
                "totpctl check alice 123456",
                "does alice's code match, and is her phone's clock right",
            ),
            (
                "totpctl import google-authenticator --home-dirs",
                "what every user's ~/.google_authenticator would give (dry run)",
            ),
            ("man totpctl-enroll", "each verb has its own page"),
        ],
        "totpctl-init" => &[
            (
                "totpctl init",
                "the store named by /etc/security/pam_totp.conf, or the default",
            ),
            (
                "totpctl --db-password-file /etc/security/pam_totp.dbpass --db 'postgresql://pam_totp@db.example.org/pam_totp?sslmode=verify-full' init",
                "a PostgreSQL store for several login nodes",
            ),
        ],
        "totpctl-enroll" => &[
            (
                "totpctl enroll alice",
                "shows the QR code, then asks for the app's code to confirm",
            ),
            ("totpctl enroll alice --device tablet", "a second device"),
            (
                "totpctl enroll alice --json --qr-png /srv/portal/alice.png",
                "for a portal: one JSON object and a PNG; confirm later",
            ),
            (
                "totpctl enroll bob --type hotp --secret - --counter 12",
                "a hardware token whose key is read from standard input",
            ),
            (
                "totpctl enroll carol --expires 2027-06-30",
                "a token that stops at the end of that day (UTC)",
            ),
            (
                "totpctl enroll --from-file pilot.txt --qr-dir /root/pilot-qr --no-confirm",
                "everyone on the list, one PNG each, all or nothing",
            ),
        ],
        "totpctl-confirm" => &[(
            "totpctl confirm alice 123456",
            "activate alice's pending token",
        )],
        "totpctl-reset" => &[
            (
                "totpctl reset alice",
                "a new token; the old one works until the new one is confirmed",
            ),
            (
                "totpctl reset alice --now",
                "the old phone is lost: its token stops at once",
            ),
            ("totpctl reset alice --json", "the same for a portal"),
        ],
        "totpctl-disable" => &[
            ("totpctl disable alice", "none of alice's tokens logs in"),
            (
                "totpctl disable alice --device tablet",
                "only the tablet stops",
            ),
        ],
        "totpctl-enable" => &[("totpctl enable alice", "undo `disable`")],
        "totpctl-prune" => &[
            (
                "totpctl prune --pending-older-than 14d --dry-run",
                "the enrollments nobody finished in two weeks",
            ),
            ("totpctl prune --pending-older-than 14d", "remove them"),
        ],
        "totpctl-report" => &[
            (
                "totpctl report --group pilot",
                "every member of pilot: enrolled, pending, locked, never used",
            ),
            (
                "totpctl report --csv > rollout.csv",
                "every user with a token, for a spreadsheet",
            ),
        ],
        "totpctl-check" => &[(
            "totpctl check alice '700 102'",
            "the device and clock offset of the code alice reads out; not used up",
        )],
        "totpctl-check-config" => &[
            (
                "totpctl check-config",
                "/etc/security/pam_totp.conf as the module reads it",
            ),
            (
                "totpctl check-config --pam-args 'auth required pam_totp.so only_group=pilot window=1'",
                "a pam.d line before sshd meets it",
            ),
        ],
        "totpctl-delete" => &[
            ("totpctl delete alice", "everything about alice"),
            ("totpctl delete alice --device tablet", "one device"),
        ],
        "totpctl-list" => &[
            ("totpctl list", "every token, without keys"),
            (
                "totpctl list --json | jq -r '.[].user' | sort -u",
                "the enrolled users",
            ),
        ],
        "totpctl-show" => &[
            (
                "totpctl show alice",
                "devices, last use, recovery codes left, failures",
            ),
            ("totpctl show alice --json", "the same as one JSON object"),
        ],
        "totpctl-recovery" => &[(
            "totpctl recovery alice",
            "10 new recovery codes; the old ones stop working",
        )],
        "totpctl-unlock" => &[(
            "totpctl unlock alice",
            "end alice's back-offs, lock and grace periods",
        )],
        "totpctl-forget" => &[
            (
                "totpctl forget alice",
                "every address and every SSH key asks alice for a code again",
            ),
            (
                "totpctl forget alice --key SHA256:PBZqibLSCLdAS4+MC8G29Jx6IMJfj3+k9ckTzGesU+I",
                "only that key's grace (grace_key=) ends",
            ),
        ],
        "totpctl-allow-automation" => &[(
            "totpctl allow-automation ci --key SHA256:PBZqibLSCLdAS4+MC8G29Jx6IMJfj3+k9ckTzGesU+I --from 192.0.2.0/24 --until 2027-03-31 --reason 'nightly rsync from lab01'",
            "that key of ci logs in without a code from 192.0.2.0/24 until the end of 31 March 2027",
        )],
        "totpctl-automation" => &[
            ("totpctl automation list", "the grants in force"),
            (
                "totpctl automation list --expiring 14d",
                "those that end within 14 days",
            ),
            ("totpctl automation revoke 7", "end grant #7 now"),
        ],
        "totpctl-automation-list" => &[
            (
                "totpctl automation list --all",
                "also revoked and expired grants",
            ),
            (
                "totpctl automation list --expiring 14d --json",
                "those ending within 14 days, as JSON",
            ),
        ],
        "totpctl-automation-revoke" => &[(
            "totpctl automation revoke 7",
            "end grant #7 now; its next login asks for a code",
        )],
        "totpctl-allow-enroll" => &[(
            "totpctl allow-enroll bob --for 24h",
            "bob may enroll at his next login (enroll=window)",
        )],
        "totpctl-import" => &[
            (
                "totpctl import oath /etc/users.oath",
                "what pam_oath's users file would give",
            ),
            (
                "totpctl import google-authenticator --home-dirs --apply",
                "every user's ~/.google_authenticator, in one transaction",
            ),
        ],
        "totpctl-import-google-authenticator" => &[
            (
                "totpctl import google-authenticator /home/alice/.google_authenticator --user alice",
                "one file: what would be imported",
            ),
            (
                "totpctl import google-authenticator --home-dirs",
                "every home directory: who would be imported, who skipped and why",
            ),
            (
                "totpctl import google-authenticator --home-dirs --apply",
                "import them, all in one transaction",
            ),
            (
                "totpctl import google-authenticator --home-dirs --json | jq -r '.results[] | select(.status == \"skipped\") | \"\\(.user): \\(.detail)\"'",
                "the files that need a look",
            ),
        ],
        "totpctl-import-oath" => &[
            (
                "totpctl import oath /etc/users.oath",
                "a dry run: each line's user, type and counter",
            ),
            (
                "totpctl import oath /etc/users.oath --apply",
                "import every line, all or nothing",
            ),
        ],
        "totpctl-migrate" => &[(
            "totpctl --db-password-file /etc/security/pam_totp.dbpass migrate --from /var/lib/pam_totp/pam_totp.db --to 'postgresql://pam_totp@db.example.org/pam_totp?sslmode=verify-full'",
            "copy a one-node store into PostgreSQL",
        )],
        "totpctl-keygen" => &[(
            "totpctl keygen /etc/security/pam_totp.key.new",
            "a new sealing key, mode 0600",
        )],
        "totpctl-rekey" => &[(
            "totpctl rekey --new-key /etc/security/pam_totp.key.new",
            "seal every token key with the new key, then move the new key into place",
        )],
        "totpctl-completions" => &[
            (
                "totpctl completions bash > /etc/bash_completion.d/totpctl",
                "bash completion",
            ),
            (
                "totpctl completions zsh > /usr/local/share/zsh/site-functions/_totpctl",
                "zsh completion",
            ),
        ],
        _ => &[],
    }
}

/// What a page says about its exit status beyond the common rule.
fn exit_note(page: &str) -> &'static str {
    match page {
        "totpctl-import" | "totpctl-import-google-authenticator" => {
            "With \\-\\-home\\-dirs, 0 also when some files were skipped or refused: \
             the report names each (\\-\\-json: status skipped, with reason and detail). \
             A failed transaction imports nothing and exits 1."
        }
        "totpctl-import-oath" => "A file with any bad line imports nothing and exits 1.",
        "totpctl-show" | "totpctl-reset" => "1 also when the user is not enrolled.",
        "totpctl-delete" => "1 also when the user is not enrolled or has no such device.",
        "totpctl-confirm" => "1 also when the code does not confirm a pending token.",
        _ => "",
    }
}

/// Pages besides the parent and pam_totp's that a page points to.
fn see_also(page: &str) -> &'static [&'static str] {
    match page {
        "totpctl" => &["sshd_config (5)", "oathtool (1)"],
        "totpctl-import" | "totpctl-import-google-authenticator" => {
            &["google\\-authenticator (1)", "pam_google_authenticator (8)"]
        }
        "totpctl-import-oath" => &["oathtool (1)"],
        "totpctl-enroll" | "totpctl-reset" => &["totpctl\\-confirm (8)", "totpctl\\-recovery (8)"],
        "totpctl-keygen" => &["totpctl\\-rekey (8)"],
        "totpctl-rekey" => &["totpctl\\-keygen (8)"],
        _ => &[],
    }
}

/// EXIT STATUS, EXAMPLES and SEE ALSO of `page`, in roff.
fn extra_sections(page: &str, parent: Option<&str>) -> String {
    let mut roff = String::from(".SH \"EXIT STATUS\"\n");
    roff.push_str(
        "0 on success. 1 on an error, which is printed on standard error after \
         \\fBtotpctl: error:\\fR. 2 when the command line is wrong (an unknown option, a \
         missing argument).\n",
    );
    let note = exit_note(page);
    if !note.is_empty() {
        roff.push_str(".PP\n");
        roff.push_str(note);
        roff.push('\n');
    }
    let examples = examples(page);
    if !examples.is_empty() {
        roff.push_str(".SH EXAMPLES\n");
        for (command, what) in examples {
            roff.push_str(".PP\n");
            let mut chars = what.chars();
            let capital: String = chars
                .next()
                .map(|c| c.to_ascii_uppercase())
                .into_iter()
                .chain(chars)
                .collect();
            roff.push_str(&roff_text(&capital));
            roff.push_str(":\n.RS 4\n.EX\n");
            roff.push_str(&roff_text(command));
            roff.push_str("\n.EE\n.RE\n");
        }
    }
    roff.push_str(".SH \"SEE ALSO\"\n");
    let mut pages: Vec<String> = Vec::new();
    if let Some(parent) = parent {
        // totpctl-import-oath: totpctl-import(8) and totpctl(8).
        pages.push(format!("{} (8)", parent.replace('-', "\\-")));
        if parent != "totpctl" {
            pages.push("totpctl (8)".to_string());
        }
    }
    pages.push("pam_totp (8)".to_string());
    pages.push("pam_totp.conf (5)".to_string());
    pages.extend(see_also(page).iter().map(|p| p.to_string()));
    let last = pages.len() - 1;
    for (i, p) in pages.iter().enumerate() {
        roff.push_str(".BR ");
        roff.push_str(p);
        roff.push_str(if i < last { ",\n" } else { "\n" });
    }
    roff
}
