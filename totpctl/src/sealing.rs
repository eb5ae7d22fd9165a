//! `keygen` and `rekey`: the key that seals token keys at rest.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use pam_totp::config::Config;
use pam_totp::seal::{Sealer, is_sealed};
use pam_totp::store::{Store, loaded_secret, open_under_its_names};

use crate::audit::{Audit, Detail};

/// Writes a new key file, 0600, never over an existing file.
pub fn keygen(file: &Path) -> Result<(), String> {
    let key = Sealer::generate().map_err(|e| e.to_string())?;
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(file)
        .map_err(|e| format!("{}: {e}", file.display()))?;
    out.write_all(key.as_bytes())
        .and_then(|()| out.sync_all())
        .map_err(|e| format!("{}: {e}", file.display()))?;
    Audit::open().record("keygen", "*", Detail::new().quoted("file", file.display()));
    println!(
        "Wrote a new sealing key to {} (mode 0600). Copy it to every login node \
         (root, 0600), then seal the store with `totpctl rekey --new-key {}`.",
        file.display(),
        file.display()
    );
    Ok(())
}

/// Opens every stored key and seals it with the new one, all rows in one
/// transaction. A plain key is taken as it is (that is what rekey is for);
/// a sealed one is opened with the current key, or with the new one (a
/// second run, or the new key already in place), else rekey stops and
/// changes nothing. A key sealed for its device's pending name (a
/// replacement confirmed before schema 10) is sealed for its name: `rekey
/// --new-key` with the key file in use repairs such rows.
pub fn rekey(store: &dyn Store, config: &Config, new_key: &Path) -> Result<(), String> {
    let current = config.access().sealer().map_err(|e| e.to_string())?;
    let next = Sealer::load(new_key).map_err(|e| e.to_string())?;
    let (tokens, deleted) = store
        .reseal_keys(
            &mut |(_, user, device, blob)| {
                // Each key file, under the device's name and then its
                // pending name (a replacement confirmed before schema 10
                // took the name without sealing its key again; sealed here
                // for its name).
                let secret = if !is_sealed(blob) {
                    loaded_secret(None, user, device, blob.clone())
                } else {
                    let opened = [current.as_deref(), Some(&next)]
                        .into_iter()
                        .flatten()
                        .find_map(|key| open_under_its_names(key, user, device, blob).ok());
                    match opened {
                        Some(raw) => loaded_secret(None, user, device, raw),
                        None => loaded_secret(current.as_deref(), user, device, blob.clone()),
                    }
                }?;
                Ok(next.seal(user, device, &secret)?)
            },
            next.id(),
        )
        .map_err(|e| e.to_string())?;
    Audit::open().record(
        "rekey",
        "*",
        Detail::new()
            .bare("tokens", tokens)
            .bare("deleted_keys", deleted)
            .quoted("new_key", new_key.display()),
    );
    println!(
        "Sealed {tokens} token key(s){} with {} in one transaction. Every node must now use \
         that key file (key_file=, default /etc/security/pam_totp.key).",
        if deleted > 0 {
            format!(" and {deleted} deleted key(s) kept for their used steps")
        } else {
            String::new()
        },
        new_key.display()
    );
    Ok(())
}
