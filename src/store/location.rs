//! Where the store is: a SQLite file (a path) or a PostgreSQL database (a
//! `postgresql://` URL), as `db=` and `totpctl --db` name it.
//!
//! The URL is parsed here, once: every part is percent-decoded (invalid
//! encodings are refused) and only then checked, and the client library
//! gets the decoded parts field by field; it never parses the URL itself,
//! so nothing can mean one thing to these checks and another to it.
//!
//! The URL never carries a password: PAM lines and config files are
//! world-readable, so the password lives in `db_password_file=`. A
//! `password`-like parameter, or a `:` in the user part, written plainly or
//! percent-encoded, is refused, and a refused URL is never repeated in a
//! message (it may hold the secret).
//!
//! TLS is either verified or off, and always said: `sslmode=verify-full`
//! makes the client library require TLS (a server that declines it, or a
//! failed handshake, ends the connect before the start-up message or the
//! password is sent), checks the server's certificate chain against
//! `sslrootcert=` (or the system's CA bundle) and its name against the host.
//! `sslmode=disable` is the explicit choice of no TLS at all (a Unix socket
//! on the same host, or a wire the site trusts as much as the database): it
//! is never the result of anything else, and a URL without `sslmode=` is
//! refused. The half-way modes that encrypt without checking who answers
//! (`allow`, `prefer`, `require`, `verify-ca`) are refused: they would let
//! anyone on the path pose as the database, and the database decides who
//! logs in.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// The default connect and statement timeout for PostgreSQL.
pub const DEFAULT_DB_TIMEOUT: Duration = Duration::from_secs(3);

/// PostgreSQL's port when the URL names none.
pub const DEFAULT_PG_PORT: u16 = 5432;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    Sqlite(PathBuf),
    Postgres(PgTarget),
}

/// A PostgreSQL database, as parsed (and percent-decoded) from its URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgTarget {
    /// For messages and logs: the URL as given, without the TLS parameters
    /// (it holds no password: such URLs are refused).
    pub url: String,
    pub tls: PgTls,
    /// The database role.
    pub user: String,
    /// Tried in order (the client library moves on when one fails).
    pub hosts: Vec<PgHost>,
    /// The database; the server defaults it to the role's name.
    pub dbname: Option<String>,
    pub application_name: Option<String>,
    /// `target_session_attrs=read-write`: skip a host in recovery (a standby).
    pub read_write: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgHost {
    /// A host name or an IP address (without brackets).
    Tcp { name: String, port: u16 },
    /// The directory of a Unix socket (`sslmode=disable` only).
    Socket { dir: PathBuf, port: u16 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgTls {
    /// No TLS at all: said with `sslmode=disable`, never a fallback.
    Disable,
    /// TLS required; the chain verified against this CA file (PEM), or the
    /// system bundle, and the name against the host.
    VerifyFull { root_cert: Option<PathBuf> },
}

/// The system CA bundle on Debian and EL (`ca-certificates`).
pub const SYSTEM_CA_FILES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
];

impl StoreLocation {
    /// `postgresql://…` or `postgres://…` selects PostgreSQL; anything else
    /// must be an absolute path. Errors never repeat the text (a refused
    /// URL may hold a secret): show `StoreLocation::shown(text)` with them.
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

    /// What a message may show of a `db=` value that was refused: a path as
    /// it is, of a URL only its scheme (the rest may be a password).
    pub fn shown(text: &str) -> String {
        match text.split_once("://") {
            Some((scheme, _)) if scheme.chars().all(|c| c.is_ascii_alphanumeric()) => {
                format!("{scheme}://… (not repeated: it may hold a secret)")
            }
            Some(_) => "(a URL, not repeated: it may hold a secret)".to_string(),
            // Anything else that is not a plain absolute path (a mistyped
            // `postgresql:/user:pw@host`, say) may hold a secret too.
            None if text.starts_with('/') && !text.contains(['@', ':']) => text.to_string(),
            None => "(value not repeated)".to_string(),
        }
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

const NO_PASSWORD: &str = "the URL carries a password; PAM lines and config files are \
                           world-readable: put it in db_password_file= instead";

/// Query keys this module accepts.
const ACCEPTED_KEYS: &[&str] = &[
    "sslmode",
    "sslrootcert",
    "application_name",
    "target_session_attrs",
    "host",
    "port",
];

/// Other parameters libpq or the client library know: named when refused
/// (a key outside both lists is not repeated: it may be a secret).
const KNOWN_KEYS: &[&str] = &[
    "user",
    "dbname",
    "options",
    "hostaddr",
    "connect_timeout",
    "tcp_user_timeout",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_retries",
    "channel_binding",
    "load_balance_hosts",
    "sslnegotiation",
    "sslcert",
    "sslkey",
    "sslcrl",
    "sslcompression",
    "sslsni",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "gssencmode",
    "krbsrvname",
    "requiressl",
    "require_auth",
    "service",
    "client_encoding",
    "fallback_application_name",
];

/// Percent-decodes one part of the URL: `%` must be followed by two hex
/// digits, the result must be UTF-8 without control characters. Errors
/// name the part, never its text.
fn decode(part: &str, what: &str) -> Result<String, String> {
    let bytes = part.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = |b: Option<&u8>| b.and_then(|b| (*b as char).to_digit(16));
            match (hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) {
                (Some(high), Some(low)) => out.push((high * 16 + low) as u8),
                _ => {
                    return Err(format!(
                        "invalid percent-encoding in the URL's {what} (`%` must be followed by \
                         two hex digits)"
                    ));
                }
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let text = String::from_utf8(out)
        .map_err(|_| format!("the URL's {what} is not UTF-8 once percent-decoded"))?;
    if text.chars().any(char::is_control) {
        return Err(format!("the URL's {what} holds a control character"));
    }
    Ok(text)
}

/// A host as the URL names it (decoded): a socket directory, an IP
/// address, or a host name.
fn host(name: &str, port: u16) -> Result<PgHost, String> {
    if name.starts_with('/') {
        return Ok(PgHost::Socket {
            dir: PathBuf::from(name),
            port,
        });
    }
    let is_name = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if is_name || name.parse::<std::net::IpAddr>().is_ok() {
        return Ok(PgHost::Tcp {
            name: name.to_string(),
            port,
        });
    }
    if name.contains('@') || name.contains(':') {
        return Err(NO_PASSWORD.to_string());
    }
    Err("the URL's host is not a host name, an IP address or a socket directory".to_string())
}

fn port(text: &str) -> Result<u16, String> {
    let text = decode(text, "port")?;
    match text.parse::<u16>() {
        Ok(port) if port > 0 && text.chars().all(|c| c.is_ascii_digit()) => Ok(port),
        _ => Err("the URL's port is not a number from 1 to 65535".to_string()),
    }
}

/// `host[:port]` or `[v6]:port`, comma-separated, as in the authority.
fn authority_hosts(text: &str) -> Result<Vec<PgHost>, String> {
    let mut hosts = Vec::new();
    for chunk in text.split(',') {
        let (name, port_text) = if let Some(rest) = chunk.strip_prefix('[') {
            let (inside, after) = rest
                .split_once(']')
                .ok_or("the URL's host has a `[` without `]`")?;
            let port_text = match after {
                "" => None,
                _ => Some(
                    after
                        .strip_prefix(':')
                        .ok_or("the URL's host has text after `]`")?,
                ),
            };
            let name = decode(inside, "host")?;
            if name.parse::<std::net::Ipv6Addr>().is_err() {
                return Err("the URL's host in `[…]` is not an IPv6 address".to_string());
            }
            (name, port_text)
        } else {
            let (name, port_text) = match chunk.split_once(':') {
                Some((name, port_text)) => (name, Some(port_text)),
                None => (chunk, None),
            };
            (decode(name, "host")?, port_text)
        };
        let port = port_text.map(port).transpose()?.unwrap_or(DEFAULT_PG_PORT);
        hosts.push(host(&name, port)?);
    }
    Ok(hosts)
}

impl PgTarget {
    fn parse(text: &str) -> Result<PgTarget, String> {
        let (scheme, rest) = text.split_once("://").ok_or("not a postgresql:// URL")?;
        let (base, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = match base.split_once('/') {
            Some((authority, path)) => (authority, Some(path)),
            None => (base, None),
        };
        let (userinfo, hostport) = match authority.split_once('@') {
            None => {
                return Err(
                    "the URL must name the database user (postgresql://USER@HOST/DB)".to_string(),
                );
            }
            // A second `@`: `user:pw@host` with `:` encoded, or a password
            // after the user: refused without guessing which.
            Some((_, after)) if after.contains('@') => return Err(NO_PASSWORD.to_string()),
            Some(parts) => parts,
        };
        if userinfo.contains(':') {
            return Err(NO_PASSWORD.to_string());
        }
        let user = decode(userinfo, "user")?;
        if user.contains(':') || user.contains('@') {
            return Err(NO_PASSWORD.to_string());
        }
        if user.is_empty() {
            return Err(
                "the URL must name the database user (postgresql://USER@HOST/DB)".to_string(),
            );
        }
        let mut hosts = if hostport.is_empty() {
            Vec::new()
        } else {
            authority_hosts(hostport)?
        };
        let dbname = match path {
            Some(path) if !path.is_empty() => Some(decode(path, "database name")?),
            _ => None,
        };

        let mut seen: Vec<String> = Vec::new();
        let mut sslmode = None;
        let mut root_cert = None;
        let mut application_name = None;
        let mut read_write = false;
        let mut query_host = None;
        let mut query_port = None;
        let mut kept = Vec::new();
        for param in query.split('&').filter(|p| !p.is_empty()) {
            let Some((raw_key, raw_value)) = param.split_once('=') else {
                return Err("a URL parameter has no `=`".to_string());
            };
            let key = decode(raw_key, "parameter name")?;
            if key.to_ascii_lowercase().contains("pass") {
                return Err(NO_PASSWORD.to_string());
            }
            let value = decode(raw_value, "parameter value")?;
            let Some(&known) = ACCEPTED_KEYS.iter().find(|k| **k == key) else {
                return Err(match KNOWN_KEYS.iter().find(|k| **k == key) {
                    Some(known) => format!("the URL parameter {known} is not accepted here"),
                    None => "the URL has an unknown parameter (not repeated: it may be a secret)"
                        .to_string(),
                });
            };
            if seen.iter().any(|k| k == known) {
                return Err(format!("the URL parameter {known} is given more than once"));
            }
            seen.push(known.to_string());
            match known {
                "sslmode" => sslmode = Some(value),
                "sslrootcert" => {
                    let path = PathBuf::from(value);
                    if !path.is_absolute() {
                        return Err("sslrootcert must be an absolute path".to_string());
                    }
                    root_cert = Some(path);
                }
                "application_name" => {
                    application_name = Some(value);
                    kept.push(param);
                }
                "target_session_attrs" => {
                    read_write = match value.as_str() {
                        "any" => false,
                        "read-write" => true,
                        _ => {
                            return Err(
                                "target_session_attrs must be read-write or any".to_string()
                            );
                        }
                    };
                    kept.push(param);
                }
                "host" => {
                    query_host = Some(value);
                    kept.push(param);
                }
                _ => {
                    query_port = Some(raw_value);
                    kept.push(param);
                }
            }
        }
        // `?host=` and `?port=` (libpq's way to name a socket directory)
        // only when the authority names no host: one place says where.
        if query_host.is_some() || query_port.is_some() {
            if !hosts.is_empty() {
                return Err(
                    "the URL names the host twice (in HOST and as host= or port=)".to_string(),
                );
            }
            let port = query_port.map(port).transpose()?.unwrap_or(DEFAULT_PG_PORT);
            let names = query_host.ok_or("port= without host=: name the host in the URL")?;
            for name in names.split(',') {
                hosts.push(host(name, port)?);
            }
        }
        if hosts.is_empty() {
            return Err("the URL must name the host (postgresql://USER@HOST/DB)".to_string());
        }

        let tls = match sslmode.as_deref() {
            Some("disable") => {
                if root_cert.is_some() {
                    return Err("sslrootcert is given but sslmode=disable".to_string());
                }
                PgTls::Disable
            }
            Some("verify-full") => {
                if hosts.iter().any(|h| matches!(h, PgHost::Socket { .. })) {
                    return Err(
                        "sslmode=verify-full needs a host name to check: a Unix socket is \
                         reached with sslmode=disable"
                            .to_string(),
                    );
                }
                PgTls::VerifyFull { root_cert }
            }
            None => {
                return Err(
                    "say how to reach the database: sslmode=verify-full (TLS, certificate and \
                     host name checked) or sslmode=disable"
                        .to_string(),
                );
            }
            Some(other @ ("allow" | "prefer" | "require" | "verify-ca")) => {
                return Err(format!(
                    "sslmode={other} is not accepted: only verify-full (checks who answers) or \
                     disable"
                ));
            }
            Some(_) => {
                return Err(
                    "this sslmode is not accepted: only verify-full (checks who answers) or \
                     disable"
                        .to_string(),
                );
            }
        };
        let shown_base = format!("{scheme}://{base}");
        let url = if kept.is_empty() {
            shown_base
        } else {
            format!("{shown_base}?{}", kept.join("&"))
        };
        Ok(PgTarget {
            url,
            tls,
            user,
            hosts,
            dbname,
            application_name,
            read_write,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pg(text: &str) -> PgTarget {
        match StoreLocation::parse(text) {
            Ok(StoreLocation::Postgres(target)) => target,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn paths_and_urls() {
        assert_eq!(
            StoreLocation::parse("/var/lib/pam_totp/pam_totp.db"),
            Ok(StoreLocation::Sqlite(
                "/var/lib/pam_totp/pam_totp.db".into()
            ))
        );
        assert_eq!(
            pg(
                "postgresql://totp@db1:5433/totp?sslmode=verify-full&sslrootcert=/etc/ssl/ca.pem&application_name=x"
            ),
            PgTarget {
                url: "postgresql://totp@db1:5433/totp?application_name=x".into(),
                tls: PgTls::VerifyFull {
                    root_cert: Some("/etc/ssl/ca.pem".into())
                },
                user: "totp".into(),
                hosts: vec![PgHost::Tcp {
                    name: "db1".into(),
                    port: 5433
                }],
                dbname: Some("totp".into()),
                application_name: Some("x".into()),
                read_write: false,
            }
        );
        assert_eq!(
            pg("postgres://totp@127.0.0.1/totp?sslmode=disable"),
            PgTarget {
                url: "postgres://totp@127.0.0.1/totp".into(),
                tls: PgTls::Disable,
                user: "totp".into(),
                hosts: vec![PgHost::Tcp {
                    name: "127.0.0.1".into(),
                    port: 5432
                }],
                dbname: Some("totp".into()),
                application_name: None,
                read_write: false,
            }
        );
    }

    #[test]
    fn hosts_ports_and_sockets() {
        let t = pg(
            "postgresql://totp@db1,db2:5433,[2001:db8::1]:6000/totp?sslmode=verify-full&target_session_attrs=read-write",
        );
        assert_eq!(
            t.hosts,
            vec![
                PgHost::Tcp {
                    name: "db1".into(),
                    port: 5432
                },
                PgHost::Tcp {
                    name: "db2".into(),
                    port: 5433
                },
                PgHost::Tcp {
                    name: "2001:db8::1".into(),
                    port: 6000
                },
            ]
        );
        assert!(t.read_write);
        assert_eq!(t.tls, PgTls::VerifyFull { root_cert: None });
        let socket = PgHost::Socket {
            dir: "/run/postgresql".into(),
            port: 5432,
        };
        assert_eq!(
            pg("postgresql://totp@%2Frun%2Fpostgresql/totp?sslmode=disable").hosts,
            vec![socket.clone()]
        );
        let t = pg("postgresql://totp@/totp?host=/run/postgresql&sslmode=disable&port=5433");
        assert_eq!(
            t.hosts,
            vec![PgHost::Socket {
                dir: "/run/postgresql".into(),
                port: 5433
            }]
        );
        assert_eq!(
            t.url,
            "postgresql://totp@/totp?host=/run/postgresql&port=5433"
        );
    }

    #[test]
    fn every_part_is_percent_decoded_before_it_is_checked() {
        let t = pg(
            "postgresql://to%74p@db%2Dx.example.org/my%20db?%73slmode=verify-%66ull&ssl%72ootcert=%2Fetc%2Fca.pem&application_name=a%26b",
        );
        assert_eq!(t.user, "totp");
        assert_eq!(
            t.hosts,
            vec![PgHost::Tcp {
                name: "db-x.example.org".into(),
                port: 5432
            }]
        );
        assert_eq!(t.dbname.as_deref(), Some("my db"));
        assert_eq!(
            t.tls,
            PgTls::VerifyFull {
                root_cert: Some("/etc/ca.pem".into())
            }
        );
        assert_eq!(t.application_name.as_deref(), Some("a&b"));
        // An encoded sslmode is still the one sslmode: given twice, refused.
        let err =
            StoreLocation::parse("postgresql://totp@h/d?sslmode=verify-full&%73slmode=disable")
                .expect_err("twice");
        assert!(err.contains("more than once"), "{err}");
    }

    #[test]
    fn encoded_passwords_are_refused_and_never_repeated() {
        for text in [
            "postgresql://totp@h/d?sslmode=disable&pass%77ord=s3cretXYZ",
            "postgresql://totp@h/d?sslmode=disable&%70%61%73%73%77%6f%72%64=s3cretXYZ",
            "postgresql://totp@h/d?sslmode=disable&PASSWORD=s3cretXYZ",
            "postgresql://totp@h/d?sslmode=disable&passfile=/root/s3cretXYZ",
            "postgresql://totp@h/d?sslmode=verify-full&sslpassword=s3cretXYZ",
            "postgresql://totp:s3cretXYZ@h/d?sslmode=disable",
            "postgresql://totp%3As3cretXYZ@h/d?sslmode=disable",
            "postgresql://totp%3as3cretXYZ@h/d?sslmode=disable",
            "postgresql://totp@s3cretXYZ@h/d?sslmode=disable",
            "postgresql://totp%40s3cretXYZ@h/d?sslmode=disable",
            "postgresql://totp@h%40s3cretXYZ/d?sslmode=disable",
            "postgresql://totp@h%3As3cretXYZ/d?sslmode=disable",
        ] {
            let err = StoreLocation::parse(text).expect_err(text);
            assert!(err.contains("password"), "{text}: {err}");
            assert!(!err.contains("s3cret"), "{text}: {err}");
        }
    }

    #[test]
    fn invalid_encodings_are_refused() {
        for (text, why) in [
            (
                "postgresql://totp@h/d?sslmode=disable&pass%7word=x",
                "percent",
            ),
            ("postgresql://totp@h/d?sslmode=disable%", "percent"),
            ("postgresql://totp@h/d?sslmode=disable%2", "percent"),
            ("postgresql://to%zzp@h/d?sslmode=disable", "percent"),
            ("postgresql://totp@h%g0/d?sslmode=disable", "percent"),
            ("postgresql://totp@h/d%?sslmode=disable", "percent"),
            ("postgresql://totp@h:54%3/d?sslmode=disable", "percent"),
            (
                "postgresql://totp@h/d?sslmode=disable&application_name=%ff",
                "UTF-8",
            ),
            (
                "postgresql://totp@h/d?sslmode=disable&application_name=%0a",
                "control",
            ),
            ("postgresql://to%0Atp@h/d?sslmode=disable", "control"),
        ] {
            let err = StoreLocation::parse(text).expect_err(text);
            assert!(err.contains(why), "{text}: {err}");
        }
    }

    #[test]
    fn refused_values_are_not_repeated() {
        for text in [
            "postgresql://totp@h/d?sslmode=disable&s3cretXYZ=1",
            "postgresql://totp@h/d?sslmode=s3cretXYZ",
            "postgresql://totp@h/d?sslmode=disable&application_name=s3cretXYZ&application_name=x",
            "postgresql://totp@h/d?sslmode=disable&target_session_attrs=s3cretXYZ",
            "postgresql://totp@h:s3cretXYZ/d?sslmode=disable",
            "postgresql://totp@h/d?s3cretXYZ",
        ] {
            let err = StoreLocation::parse(text).expect_err(text);
            assert!(!err.contains("s3cret"), "{text}: {err}");
        }
        assert_eq!(
            StoreLocation::shown("postgresql://totp:s3cretXYZ@h/d"),
            "postgresql://… (not repeated: it may hold a secret)"
        );
        assert_eq!(StoreLocation::shown("/var/x.db"), "/var/x.db");
        // A URL missing a slash is no URL, but may still carry a password.
        for text in [
            "postgresql:/u:s3cretXYZ@h/d",
            "u:s3cretXYZ@h",
            "x.db@s3cretXYZ",
        ] {
            assert!(!StoreLocation::shown(text).contains("s3cret"), "{text}");
        }
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
            ("postgresql://@h/d?sslmode=disable", "user"),
            ("postgresql://totp@/d?sslmode=disable", "host"),
            ("postgresql://totp@h/d", "sslmode"),
            ("postgresql://totp@h/d?sslmode=", "sslmode"),
            ("postgresql://totp@h/d?sslmode=require", "require"),
            ("postgresql://totp@h/d?sslmode=prefer", "prefer"),
            ("postgresql://totp@h/d?sslmode=verify-ca", "verify-ca"),
            (
                "postgresql://totp@h/d?sslmode=verify-full&sslmode=disable",
                "more than once",
            ),
            (
                "postgresql://totp@h/d?sslmode=verify-full&sslrootcert=ca.pem",
                "absolute",
            ),
            (
                "postgresql://totp@h/d?sslmode=disable&sslrootcert=/ca.pem",
                "sslrootcert",
            ),
            (
                "postgresql://totp@%2Frun%2Fpostgresql/d?sslmode=verify-full",
                "socket",
            ),
            (
                "postgresql://totp@h/d?sslmode=verify-full&options=-c%20x=y",
                "options",
            ),
            (
                "postgresql://totp@h/d?sslmode=verify-full&sslnegotiation=direct",
                "sslnegotiation",
            ),
            ("postgresql://totp@h/d?sslmode=disable&host=h2", "twice"),
            ("postgresql://totp@/d?sslmode=disable&port=1", "host"),
            ("postgresql://totp@h:0/d?sslmode=disable", "port"),
            ("postgresql://totp@h:99999/d?sslmode=disable", "port"),
            ("postgresql://totp@h:+1/d?sslmode=disable", "port"),
            ("postgresql://totp@[::1/d?sslmode=disable", "]"),
            ("postgresql://totp@[db1]/d?sslmode=disable", "IPv6"),
            ("postgresql://totp@h%2Cx/d?sslmode=disable", "host"),
        ] {
            let err = StoreLocation::parse(text).expect_err(text);
            assert!(err.contains(why), "{text}: {err}");
        }
    }
}
