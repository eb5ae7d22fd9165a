//! `totpctl enroll --qr-png`: the QR code as a PNG file. Drawn here, not in
//! the library, so the PAM module does not link a PNG encoder (issue 14).

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_has_the_png_signature() {
        let png = qr_png("otpauth://totp/x:y?secret=AAAA").expect("png");
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    }
}
