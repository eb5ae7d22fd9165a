//! The command line. Deliberately without options that name a file, a
//! store, a configuration or a user: totp acts on its caller, with the
//! module's own settings.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "totp",
    version,
    about = "Your own second factor: see your devices, test a code, new recovery codes, add, replace or remove a device.",
    after_help = "totp acts only on the user who runs it (the real uid), with the settings of\n\
                  /etc/security/pam_totp.conf. Every code it checks counts like a login's\n\
                  (wrong codes back off and lock), and every change is logged (syslog, authpriv).\n\n\
                  Examples:\n  \
                  totp status                  # my devices, recovery codes left, locks\n  \
                  totp test                    # does my code work? clock offset (not used up)\n  \
                  totp add-device tablet       # a second device, after a current code\n  \
                  totp replace                 # a new phone (a recovery code works too)\n  \
                  totp remove-device tablet    # never the last one\n  \
                  totp recovery-codes          # a new set; the old ones stop working"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Your devices (type, created, last used), recovery codes left, and
    /// whether wrong codes have locked you out, until when. Asks for no code.
    Status,
    /// Type a code (not shown): says which device it matches and how far
    /// that device's clock is off. The code is NOT used up: it still works
    /// for a login. A wrong code counts like a wrong login.
    Test,
    /// Ten new recovery codes, shown once; the old ones stop working.
    /// Asks for a current code first.
    RecoveryCodes,
    /// Add a device NAME (e.g. tablet): asks for a current code (or a
    /// recovery code), shows the new key as a QR code, key and URI, asks
    /// for a code from the new device, and only then stores it.
    AddDevice {
        /// The new device's name: letters, digits, no spaces.
        name: String,
        /// Dark QR code on a light terminal: invert the colours.
        #[arg(long)]
        invert: bool,
        /// Also write the QR code as a PNG image to FILE, a new file
        /// created as you (mode 0600); delete it once the device is set up.
        #[arg(long, value_name = "FILE")]
        qr_png: Option<PathBuf>,
    },
    /// A new phone: asks for a current code from any of your devices or a
    /// recovery code, enrolls a new key (confirmed with a code from the new
    /// phone) and, in the same change, retires ALL your other devices and
    /// gives you ten new recovery codes. To swap only one of several
    /// devices, use add-device and remove-device.
    Replace {
        /// The new device's name (default: the name of your device, if you
        /// have one, else "default").
        #[arg(long, value_name = "NAME")]
        device: Option<String>,
        /// Dark QR code on a light terminal: invert the colours.
        #[arg(long)]
        invert: bool,
        /// Also write the QR code as a PNG image to FILE, a new file
        /// created as you (mode 0600); delete it once the phone is set up.
        #[arg(long, value_name = "FILE")]
        qr_png: Option<PathBuf>,
    },
    /// Remove device NAME, after a current code. Your last usable device
    /// is never removed (use replace for a new phone).
    RemoveDevice {
        /// The device's name, as `totp status` shows it.
        name: String,
    },
}
