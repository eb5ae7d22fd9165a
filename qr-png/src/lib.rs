//! `--qr-png FILE` of `totpctl enroll` and of `totp add-device|replace`:
//! the enrollment QR code as a PNG file. A crate of its own, shared by the
//! two commands, so the PAM module does not link a PNG encoder.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use qrcode::Color;
use zeroize::Zeroizing;

use pam_totp::enroll::qr_code;

/// Pixels per module and quiet-zone modules of the PNG.
const PNG_SCALE: usize = 8;
const PNG_QUIET: usize = 4;

/// The QR code as a grayscale PNG: black modules on white, 8 px per module,
/// a 4-module quiet zone.
pub fn qr_png(uri: &str) -> Result<Zeroizing<Vec<u8>>, String> {
    let qr = qr_code(uri).map_err(|e| e.to_string())?;
    let width = qr.width();
    let colors = qr.to_colors();
    let side = (width + 2 * PNG_QUIET) * PNG_SCALE;
    let mut pixels = Zeroizing::new(vec![255u8; side * side]);
    for (i, color) in colors.iter().enumerate() {
        if *color != Color::Dark {
            continue;
        }
        let (mx, my) = (i % width + PNG_QUIET, i / width + PNG_QUIET);
        for y in my * PNG_SCALE..(my + 1) * PNG_SCALE {
            let row = y * side;
            pixels[row + mx * PNG_SCALE..row + (mx + 1) * PNG_SCALE].fill(0);
        }
    }
    let failed = |e: &dyn std::fmt::Display| format!("writing the PNG failed: {e}");
    let mut out = Zeroizing::new(Vec::new());
    {
        let side = u32::try_from(side).map_err(|e| failed(&e))?;
        let mut encoder = png::Encoder::new(&mut *out, side, side);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(|e| failed(&e))?;
        writer.write_image_data(&pixels).map_err(|e| failed(&e))?;
    }
    Ok(out)
}

/// Creates `path` for the PNG: a new file only (never an existing one),
/// never through a symbolic link, mode 0600, close-on-exec. Whoever calls
/// this decides as whom it runs (`pam_totp::sys::as_user`), so the file
/// appears only where that user may create it, and is theirs.
pub fn create_new(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_has_the_png_signature() {
        let png = qr_png("otpauth://totp/x:y?secret=AAAA").expect("png");
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    }

    #[test]
    fn create_new_refuses_existing_files_and_links() {
        let dir = std::env::temp_dir().join(format!("qr-png-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("a.png");
        let _ = std::fs::remove_file(&file);
        create_new(&file).expect("a new file");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(create_new(&file).is_err(), "an existing file was opened");
        let link = dir.join("link.png");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(dir.join("elsewhere.png"), &link).expect("symlink");
        assert!(create_new(&link).is_err(), "a dangling link was followed");
        assert!(!dir.join("elsewhere.png").exists());
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
