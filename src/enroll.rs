//! What a user scans: the otpauth:// URI, and the QR code that carries it,
//! rendered for a terminal (UTF-8 half blocks) or as a PNG. Shared by
//! `totpctl enroll` and enrollment at login.

use qrcode::render::unicode::Dense1x2;
use qrcode::{Color, EcLevel, QrCode};
use zeroize::Zeroizing;

use crate::otp::Params;
use crate::secret::Secret;
use crate::store::Kind;

/// The Key URI that authenticator apps scan (Google's Key Uri Format):
/// `otpauth://totp/ISSUER:USER?secret=...&issuer=...&algorithm=...&digits=...&period=...`
/// (`hotp` with `counter=` instead of `period=`).
pub fn otpauth_uri(
    secret: &Secret,
    issuer: &str,
    user: &str,
    kind: Kind,
    params: &Params,
    counter: u64,
) -> Zeroizing<String> {
    let moving = match kind {
        Kind::Totp => format!("period={}", params.period),
        Kind::Hotp => format!("counter={counter}"),
    };
    Zeroizing::new(format!(
        "otpauth://{kind}/{label_issuer}:{label_user}?secret={secret}&issuer={issuer}&algorithm={alg}&digits={digits}&{moving}",
        label_issuer = percent_encode(issuer),
        label_user = percent_encode(user),
        secret = secret.to_base32().as_str(),
        issuer = percent_encode(issuer),
        alg = params.algorithm.uri_name(),
        digits = params.digits,
    ))
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[derive(Debug, thiserror::Error)]
pub enum QrError {
    #[error("the URI does not fit in a QR code: {0}")]
    Encode(String),
    #[error("writing the PNG failed: {0}")]
    Png(String),
}

fn code(uri: &str) -> Result<QrCode, QrError> {
    QrCode::with_error_correction_level(uri.as_bytes(), EcLevel::M)
        .map_err(|e| QrError::Encode(e.to_string()))
}

/// The QR code as UTF-8 half blocks, two modules per character cell, with
/// the quiet zone. By default drawn for a dark terminal (light text on a
/// dark background: the light modules are the printed blocks); `invert`
/// draws it for a light terminal.
pub fn qr_terminal(uri: &str, invert: bool) -> Result<Zeroizing<String>, QrError> {
    let (dark, light) = if invert {
        (Dense1x2::Dark, Dense1x2::Light)
    } else {
        (Dense1x2::Light, Dense1x2::Dark)
    };
    Ok(Zeroizing::new(
        code(uri)?
            .render::<Dense1x2>()
            .dark_color(dark)
            .light_color(light)
            .quiet_zone(true)
            .build(),
    ))
}

/// Pixels per module and quiet-zone modules of the PNG.
const PNG_SCALE: usize = 8;
const PNG_QUIET: usize = 4;

/// The QR code as a grayscale PNG: black modules on white, 8 px per module,
/// a 4-module quiet zone.
pub fn qr_png(uri: &str) -> Result<Zeroizing<Vec<u8>>, QrError> {
    let qr = code(uri)?;
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
    let mut out = Zeroizing::new(Vec::new());
    {
        let side = u32::try_from(side).map_err(|e| QrError::Png(e.to_string()))?;
        let mut encoder = png::Encoder::new(&mut *out, side, side);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder
            .write_header()
            .map_err(|e| QrError::Png(e.to_string()))?;
        writer
            .write_image_data(&pixels)
            .map_err(|e| QrError::Png(e.to_string()))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otp::Algorithm;

    fn key() -> Secret {
        Secret::from_base32("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ").expect("valid")
    }

    #[test]
    fn totp_uri_encodes_label_and_parameters() {
        let params = Params {
            algorithm: Algorithm::Sha256,
            digits: 8,
            period: 60,
        };
        let uri = otpauth_uri(&key(), "HPC Lander", "alice@x", Kind::Totp, &params, 0);
        assert_eq!(
            uri.as_str(),
            "otpauth://totp/HPC%20Lander:alice%40x?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=HPC%20Lander&algorithm=SHA256&digits=8&period=60"
        );
    }

    #[test]
    fn hotp_uri_carries_the_counter() {
        let uri = otpauth_uri(&key(), "x", "bob", Kind::Hotp, &Params::default(), 7);
        assert!(uri.starts_with("otpauth://hotp/x:bob?"), "{}", uri.as_str());
        assert!(uri.ends_with("&digits=6&counter=7"), "{}", uri.as_str());
    }

    #[test]
    fn terminal_qr_uses_half_blocks_and_inverts() {
        let uri = otpauth_uri(&key(), "x", "bob", Kind::Totp, &Params::default(), 0);
        let dark = qr_terminal(&uri, false).expect("qr");
        let light = qr_terminal(&uri, true).expect("qr");
        assert!(dark.chars().all(|c| " ▀▄█\n".contains(c)));
        assert_ne!(dark.as_str(), light.as_str());
        // The quiet zone is light: full blocks on a dark terminal, blanks on a light one.
        assert!(dark.lines().next().expect("line").chars().all(|c| c == '█'));
        assert!(
            light
                .lines()
                .next()
                .expect("line")
                .chars()
                .all(|c| c == ' ')
        );
    }

    #[test]
    fn png_has_the_png_signature() {
        let png = qr_png("otpauth://totp/x:y?secret=AAAA").expect("png");
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    }
}
