//! Where the store is: a SQLite file (a path) or a PostgreSQL database (a
//! `postgresql://` URL), as `db=` and `totpctl --db` name it.
//!
//! The URL never carries a password: PAM lines and config files are
//! world-readable, so the password lives in `db_password_file=`. TLS is
//! either off (`sslmode=disable`, for a socket on the same host or a
//! trusted wire) or verified: `sslmode=verify-full` checks the server's
//! certificate chain against `sslrootcert=` (or the system's CA bundle) and
//! its name against the host. The half-way modes that encrypt without
//! checking who answers (`allow`, `prefer`, `require`, `verify-ca`) are
//! refused: they would let anyone on the path pose as the database, and the
//! database decides who logs in.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// The default connect and statement timeout for PostgreSQL.
pub const DEFAULT_DB_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    Sqlite(PathBuf),
    Postgres(PgTarget),
}

/// A PostgreSQL database, as parsed from its URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgTarget {
    /// The URL without the TLS parameters (handed to the client library).
    pub url: String,
    pub tls: PgTls,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgTls {
    Disable,
    /// Verify the chain against this CA file (PEM), or the system bundle.
    VerifyFull {
        root_cert: Option<PathBuf>,
    },
}

/// The system CA bundle on Debian and EL (`ca-certificates`).
pub const SYSTEM_CA_FILES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
];

impl StoreLocation {
    /// `postgresql://…` or `postgres://…` selects PostgreSQL; anything else
    /// must be an absolute path.
    pub fn parse(text: &str) -> Result<StoreLocation, String> {
        if text.starts_with("postgresql://") || text.starts_with("postgres://") {
            return PgTarget::parse(text).map(StoreLocation::Postgres);
        }
        if text.contains("://") {
            return Err("unknown store URL scheme (expected postgresql:// or a path)".to_string());
        }
        let path = PathBuf::from(text);
        if !path.is_absolute() {
            return Err("must be an absolute path or a postgresql:// URL".to_string());
        }
        Ok(StoreLocation::Sqlite(path))
    }
}

impl fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreLocation::Sqlite(path) => write!(f, "{}", path.display()),
            StoreLocation::Postgres(target) => f.write_str(&target.url),
        }
    }
}

impl PgTarget {
    fn parse(text: &str) -> Result<PgTarget, String> {
        let (base, query) = text.split_once('?').unwrap_or((text, ""));
        let authority = base
            .split_once("://")
            .map(|(_, rest)| rest.split('/').next().unwrap_or(""))
            .unwrap_or("");
        if let Some((userinfo, _)) = authority.rsplit_once('@')
            && userinfo.contains(':')
        {
            return Err(
                "the URL carries a password; PAM lines and config files are world-readable: \
                 put it in db_password_file= instead"
                    .to_string(),
            );
        }
        if !base.contains('@') {
            return Err(
                "the URL must name the database user (postgresql://USER@HOST/DB)".to_string(),
            );
        }
        let mut sslmode = None;
        let mut root_cert = None;
        let mut kept = Vec::new();
        for param in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = param.split_once('=').unwrap_or((param, ""));
            match key {
                "sslmode" => sslmode = Some(value.to_string()),
                "sslrootcert" => {
                    let path = PathBuf::from(value);
                    if !path.is_absolute() {
                        return Err("sslrootcert must be an absolute path".to_string());
                    }
                    root_cert = Some(path);
                }
                "password" => {
                    return Err("the URL carries a password: use db_password_file=".to_string());
                }
                _ => kept.push(param),
            }
        }
        let tls = match sslmode.as_deref() {
            Some("disable") => {
                if root_cert.is_some() {
                    return Err("sslrootcert is given but sslmode=disable".to_string());
                }
                PgTls::Disable
            }
            Some("verify-full") => PgTls::VerifyFull { root_cert },
            None => {
                return Err(
                    "say how to reach the database: sslmode=verify-full (TLS, certificate and \
                     host name checked) or sslmode=disable"
                        .to_string(),
                );
            }
            Some(other) => {
                return Err(format!(
                    "sslmode={other} is not accepted: only verify-full (checks who answers) or \
                     disable"
                ));
            }
        };
        let url = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        Ok(PgTarget { url, tls })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_urls() {
        assert_eq!(
            StoreLocation::parse("/var/lib/pam_totp/pam_totp.db"),
            Ok(StoreLocation::Sqlite(
                "/var/lib/pam_totp/pam_totp.db".into()
            ))
        );
        assert_eq!(
            StoreLocation::parse(
                "postgresql://totp@db1:5433/totp?sslmode=verify-full&sslrootcert=/etc/ssl/ca.pem&application_name=x"
            ),
            Ok(StoreLocation::Postgres(PgTarget {
                url: "postgresql://totp@db1:5433/totp?application_name=x".into(),
                tls: PgTls::VerifyFull {
                    root_cert: Some("/etc/ssl/ca.pem".into())
                },
            }))
        );
        assert_eq!(
            StoreLocation::parse("postgres://totp@127.0.0.1/totp?sslmode=disable"),
            Ok(StoreLocation::Postgres(PgTarget {
                url: "postgres://totp@127.0.0.1/totp".into(),
                tls: PgTls::Disable,
            }))
        );
    }

    #[test]
    fn unsafe_or_unclear_urls_are_refused() {
        for (text, why) in [
            ("relative.db", "absolute"),
            ("mysql://x@h/d", "scheme"),
            ("postgresql://totp:hunter2@h/d?sslmode=disable", "password"),
            (
                "postgresql://totp@h/d?sslmode=disable&password=x",
                "password",
            ),
            ("postgresql://h/d?sslmode=disable", "user"),
            ("postgresql://totp@h/d", "sslmode"),
            ("postgresql://totp@h/d?sslmode=require", "require"),
            ("postgresql://totp@h/d?sslmode=prefer", "prefer"),
            ("postgresql://totp@h/d?sslmode=verify-ca", "verify-ca"),
            (
                "postgresql://totp@h/d?sslmode=verify-full&sslrootcert=ca.pem",
                "absolute",
            ),
        ] {
            let err = StoreLocation::parse(text).expect_err(text);
            assert!(err.contains(why), "{text}: {err}");
        }
    }
}
