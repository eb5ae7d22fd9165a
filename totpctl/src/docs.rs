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
    write_tree(&cmd, "totpctl", dir, &mut written)?;
    Ok(written)
}

fn write_tree(
    cmd: &clap::Command,
    name: &str,
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
    clap_mangen::Man::new(page)
        .section("8")
        .manual("System Administration")
        .source(format!("pam_totp {}", env!("CARGO_PKG_VERSION")))
        .render(&mut out)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    written.push(file);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        if sub.get_name() == "help" {
            continue;
        }
        write_tree(sub, &format!("{name}-{}", sub.get_name()), dir, written)?;
    }
    Ok(())
}
