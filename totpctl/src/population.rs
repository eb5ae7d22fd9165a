//! `totpctl report`: where a rollout stands, one line per user of a group
//! (or of the store), and the locks `show` and `list` print. A lock is
//! computed as the login computes it: the store's failure counts for
//! (user, address) through `ratelimit::lock_at`, with the limits of the
//! module's config file.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use pam_totp::ratelimit::Limits;
use pam_totp::store::{Kind, Store, StoreError, TokenInfo};

use crate::report::{state, when};

pub use pam_totp::store::{Locked, locks};

/// How totpctl shows a lock (text and JSON).
pub trait ShownLock {
    fn describe(&self) -> String;
    fn json(&self) -> Value;
}

impl ShownLock for Locked {
    /// `locked until 2026-12-01 14:03:00 UTC (20 wrong codes in 24 h)`,
    /// `backing off from 192.0.2.7 until … (7 wrong codes)`.
    fn describe(&self) -> String {
        match self {
            Locked::User { until, recent } => {
                format!(
                    "locked until {} ({recent} wrong codes in 24 h)",
                    when(*until)
                )
            }
            Locked::Source {
                rhost,
                until,
                count,
            } => {
                let from = if rhost.is_empty() {
                    "logins without an address".to_string()
                } else {
                    pam_totp::logline::escape(rhost)
                };
                format!(
                    "backing off from {from} until {} ({count} wrong codes)",
                    when(*until)
                )
            }
        }
    }

    fn json(&self) -> Value {
        match self {
            Locked::User { until, recent } => json!({
                "kind": "user", "until": until, "until_utc": when(*until),
                "failures": recent, "text": self.describe(),
            }),
            Locked::Source {
                rhost,
                until,
                count,
            } => json!({
                "kind": "source", "rhost": rhost, "until": until,
                "until_utc": when(*until), "failures": count, "text": self.describe(),
            }),
        }
    }
}

/// The locks of each of `users` (a user without one has no entry).
pub fn locks_of<'a>(
    store: &dyn Store,
    users: impl IntoIterator<Item = &'a str>,
    limits: &Limits,
    now: i64,
) -> Result<BTreeMap<String, Vec<Locked>>, StoreError> {
    let mut all = BTreeMap::new();
    for user in users {
        if all.contains_key(user) {
            continue;
        }
        let found = locks(store, user, limits, now)?;
        if !found.is_empty() {
            all.insert(user.to_string(), found);
        }
    }
    Ok(all)
}

/// Where a user stands in the rollout. The order is the report's: what
/// needs the help desk first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Standing {
    /// A back-off or the 24 h ceiling is in force now.
    Locked,
    /// Confirmed tokens, all disabled or expired: the user is denied.
    Stopped,
    /// Only unconfirmed tokens: nothing logs this user in yet.
    Pending,
    /// No token (a member of the group the store knows nothing of).
    NotEnrolled,
    /// An active token that has never been used to log in.
    NeverUsed,
    /// An active token that has been used.
    Enrolled,
}

pub const STANDINGS: [Standing; 6] = [
    Standing::Locked,
    Standing::Stopped,
    Standing::Pending,
    Standing::NotEnrolled,
    Standing::NeverUsed,
    Standing::Enrolled,
];

impl Standing {
    /// For people (the table).
    pub fn label(self) -> &'static str {
        match self {
            Standing::Locked => "locked",
            Standing::Stopped => "disabled or expired",
            Standing::Pending => "pending",
            Standing::NotEnrolled => "not enrolled",
            Standing::NeverUsed => "never used",
            Standing::Enrolled => "enrolled",
        }
    }

    /// For scripts (JSON keys and values, CSV).
    pub fn key(self) -> &'static str {
        match self {
            Standing::Locked => "locked",
            Standing::Stopped => "disabled_or_expired",
            Standing::Pending => "pending",
            Standing::NotEnrolled => "not_enrolled",
            Standing::NeverUsed => "never_used",
            Standing::Enrolled => "enrolled",
        }
    }
}

/// The last use of a user's tokens: the latest TOTP step's time, or, for
/// counter tokens, only that one was used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LastUse {
    pub at: Option<i64>,
    pub hotp_used: bool,
}

impl LastUse {
    fn used(&self) -> bool {
        self.at.is_some() || self.hotp_used
    }

    fn text(&self) -> String {
        match (self.at, self.hotp_used) {
            (Some(at), _) => when(at),
            (None, true) => "HOTP (no time kept)".to_string(),
            (None, false) => "never".to_string(),
        }
    }
}

/// One user's line of the report.
#[derive(Debug, Clone)]
pub struct Row {
    pub user: String,
    pub standing: Standing,
    pub active: usize,
    pub pending: usize,
    pub last_use: LastUse,
    pub locks: Vec<Locked>,
    /// An open enroll window (`allow-enroll`), for users without a token.
    pub window: Option<i64>,
}

impl Row {
    /// What the help desk needs to know besides the state.
    fn note(&self) -> String {
        if !self.locks.is_empty() {
            let mut text: Vec<String> = self.locks.iter().map(Locked::describe).collect();
            text.push(format!(
                "`totpctl unlock {}` clears",
                pam_totp::logline::escape(&self.user)
            ));
            return text.join("; ");
        }
        match (self.standing, self.window) {
            (Standing::NotEnrolled | Standing::Pending, Some(until)) => {
                format!("may enroll at login until {}", when(until))
            }
            (Standing::Pending, None) => format!(
                "waits for a code: `totpctl confirm {} CODE`",
                pam_totp::logline::escape(&self.user)
            ),
            _ => String::new(),
        }
    }
}

/// The whole report.
pub struct Report {
    pub group: Option<String>,
    pub now: i64,
    pub limits: Limits,
    pub rows: Vec<Row>,
}

impl Report {
    pub fn count(&self, standing: Standing) -> usize {
        self.rows.iter().filter(|r| r.standing == standing).count()
    }
}

/// The report for the users of `group` (NSS: listed members and those
/// whose primary group it is), or for every user with a token when
/// `group` is None. An unknown group is an error.
pub fn build(
    store: &dyn Store,
    group: Option<&str>,
    limits: &Limits,
    now: i64,
) -> Result<Report, String> {
    let e = |e: StoreError| e.to_string();
    let mut tokens: BTreeMap<String, Vec<TokenInfo>> = BTreeMap::new();
    for t in store.list().map_err(e)? {
        tokens.entry(t.user.clone()).or_default().push(t);
    }
    let users: Vec<String> = match group {
        Some(name) => pam_totp::sys::group_members(name)
            .map_err(|err| format!("looking up group {name:?}: {err}"))?
            .ok_or_else(|| {
                format!("NSS knows no group named {name:?} (check with `getent group {name}`)")
            })?,
        None => tokens.keys().cloned().collect(),
    };
    let mut rows = Vec::with_capacity(users.len());
    for user in users {
        let mine = tokens.get(&user).map(Vec::as_slice).unwrap_or(&[]);
        let active: Vec<&TokenInfo> = mine.iter().filter(|t| state(t) == "active").collect();
        let pending = mine.iter().filter(|t| t.confirmed.is_none()).count();
        let stopped = mine
            .iter()
            .any(|t| t.confirmed.is_some() && t.life.stopped_at(now).is_some());
        let mut last_use = LastUse::default();
        for t in &active {
            match (t.kind, t.last_step) {
                (Kind::Totp, Some(step)) => {
                    let at = step.saturating_mul(t.params.period) as i64;
                    last_use.at = Some(last_use.at.map_or(at, |old| old.max(at)));
                }
                (Kind::Hotp, Some(_)) => last_use.hotp_used = true,
                (_, None) => {}
            }
        }
        let locks = locks(store, &user, limits, now).map_err(e)?;
        let standing = if !locks.is_empty() {
            Standing::Locked
        } else if !active.is_empty() {
            if last_use.used() {
                Standing::Enrolled
            } else {
                Standing::NeverUsed
            }
        } else if stopped {
            Standing::Stopped
        } else if pending > 0 {
            Standing::Pending
        } else {
            Standing::NotEnrolled
        };
        let window = if active.is_empty() {
            store.enroll_window(&user, now).map_err(e)?
        } else {
            None
        };
        rows.push(Row {
            user,
            standing,
            active: active.len(),
            pending,
            last_use,
            locks,
            window,
        });
    }
    rows.sort_by(|a, b| (a.standing, &a.user).cmp(&(b.standing, &b.user)));
    Ok(Report {
        group: group.map(str::to_string),
        now,
        limits: *limits,
        rows,
    })
}

/// The table for people: one line per user, then the count per state.
pub fn text(report: &Report) -> String {
    let mut out = String::new();
    let whose = match &report.group {
        Some(group) => format!("users of group {}", pam_totp::logline::escape(group)),
        None => "users with a token in the store".to_string(),
    };
    out.push_str(&format!(
        "pam_totp rollout report, {}: {whose}\n",
        when(report.now)
    ));
    out.push_str(&format!(
        "Locks as the login computes them: back-off after {} wrong codes in a row from one \
         address (at most {} s), the user locked after {} in 24 h{}.\n\n",
        report.limits.backoff_after,
        report.limits.backoff_max,
        report.limits.user_limit,
        if report.limits.user_limit == 0 {
            " (0: off)"
        } else {
            ""
        }
    ));
    let names: Vec<String> = report
        .rows
        .iter()
        .map(|r| pam_totp::logline::escape(&r.user))
        .collect();
    let width = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
    let width = width.clamp(4, 32);
    // Wide enough for every state's label ("disabled or expired").
    let state = STANDINGS
        .iter()
        .map(|s| s.label().len())
        .max()
        .unwrap_or(0)
        .max("total".len());
    out.push_str(&format!(
        "{:<width$}  {:<state$}  {:>6}  {:>7}  {:<23}  NOTE\n",
        "USER", "STATE", "ACTIVE", "PENDING", "LAST USED"
    ));
    for (row, name) in report.rows.iter().zip(&names) {
        let line = format!(
            "{name:<width$}  {:<state$}  {:>6}  {:>7}  {:<23}  {}",
            row.standing.label(),
            row.active,
            row.pending,
            if row.active == 0 {
                "-".to_string()
            } else {
                row.last_use.text()
            },
            row.note()
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    if report.rows.is_empty() {
        out.push_str("(no users)\n");
    }
    out.push('\n');
    for standing in STANDINGS {
        out.push_str(&format!(
            "{:<state$} {:>6}\n",
            standing.label(),
            report.count(standing)
        ));
    }
    out.push_str(&format!("{:<state$} {:>6}\n", "total", report.rows.len()));
    out
}

/// One object: the users (as the table, times as both epoch and date) and
/// the counts per state.
pub fn json(report: &Report) -> Value {
    let users: Vec<Value> = report
        .rows
        .iter()
        .map(|r| {
            json!({
                "user": r.user,
                "state": r.standing.key(),
                "active_tokens": r.active,
                "pending_tokens": r.pending,
                "last_used": r.last_use.at,
                "last_used_utc": r.last_use.at.map(when),
                "hotp_used": r.last_use.hotp_used,
                "locks": r.locks.iter().map(Locked::json).collect::<Vec<_>>(),
                "enroll_window_until": r.window,
                "enroll_window_until_utc": r.window.map(when),
            })
        })
        .collect();
    let mut counts = serde_json::Map::new();
    for standing in STANDINGS {
        counts.insert(standing.key().to_string(), json!(report.count(standing)));
    }
    counts.insert("total".to_string(), json!(report.rows.len()));
    json!({
        "group": report.group,
        "generated": report.now,
        "generated_utc": when(report.now),
        "limits": {
            "backoff_after": report.limits.backoff_after,
            "backoff_max": report.limits.backoff_max,
            "user_limit": report.limits.user_limit,
        },
        "users": users,
        "counts": counts,
    })
}

/// The CSV header; one row per user follows.
pub const CSV_HEADER: [&str; 8] = [
    "user",
    "state",
    "active_tokens",
    "pending_tokens",
    "last_used_utc",
    "locked_until_utc",
    "lock",
    "enroll_window_until_utc",
];

/// RFC 4180: a header line, one record per user, CRLF line ends, fields
/// with a comma, quote or line break in double quotes (quotes doubled).
pub fn csv(report: &Report) -> String {
    let mut out = String::new();
    push_record(&mut out, CSV_HEADER.iter().map(|h| h.to_string()));
    for r in &report.rows {
        let latest = r.locks.iter().map(Locked::until).max();
        push_record(
            &mut out,
            [
                r.user.clone(),
                r.standing.key().to_string(),
                r.active.to_string(),
                r.pending.to_string(),
                match (r.last_use.at, r.last_use.hotp_used) {
                    (Some(at), _) => when(at),
                    (None, true) => "HOTP".to_string(),
                    (None, false) => String::new(),
                },
                latest.map(when).unwrap_or_default(),
                r.locks
                    .iter()
                    .map(Locked::describe)
                    .collect::<Vec<_>>()
                    .join("; "),
                r.window.map(when).unwrap_or_default(),
            ],
        );
    }
    out
}

/// One RFC 4180 record (fields quoted by [`csv_field`]) and its CRLF.
pub fn push_record(out: &mut String, fields: impl IntoIterator<Item = String>) {
    let fields: Vec<String> = fields.into_iter().map(|f| csv_field(&f)).collect();
    out.push_str(&fields.join(","));
    out.push_str("\r\n");
}

/// One CSV field: RFC 4180 quoting, and a field a spreadsheet would take
/// for a formula (starting with `=`, `+`, `-`, `@`, a tab or a carriage
/// return: a user name can) starts with `'`, which spreadsheets show as
/// text (OWASP's advice for CSV injection).
fn csv_field(field: &str) -> String {
    let field = if field.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{field}")
    } else {
        field.to_string()
    };
    if field.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_as_rfc_4180_says() {
        assert_eq!(csv_field("alice"), "alice");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\r\nlines"), "\"two\r\nlines\"");
        assert_eq!(csv_field(""), "");
    }

    #[test]
    fn the_text_table_keeps_its_columns_for_every_state() {
        let row = |user: &str, standing: Standing| Row {
            user: user.to_string(),
            standing,
            active: 1,
            pending: 0,
            last_use: LastUse {
                at: None,
                hotp_used: false,
            },
            locks: Vec::new(),
            window: None,
        };
        let report = Report {
            group: None,
            now: 1_796_133_780,
            limits: Limits::default(),
            rows: STANDINGS
                .iter()
                .enumerate()
                .map(|(i, s)| row(&format!("u{i}"), *s))
                .collect(),
        };
        let text = text(&report);
        let lines: Vec<&str> = text.lines().collect();
        let header = lines
            .iter()
            .position(|l| l.starts_with("USER"))
            .expect("header");
        // Every user's ACTIVE count ends where the header's ACTIVE does.
        let active_end = lines[header].find("ACTIVE").expect("ACTIVE") + "ACTIVE".len();
        for line in &lines[header + 1..=header + STANDINGS.len()] {
            assert_eq!(
                &line[active_end - 1..active_end],
                "1",
                "{line:?} in\n{text}"
            );
        }
        // The counts, "total" included, end in one column.
        let counts = &lines[lines.len() - STANDINGS.len() - 1..];
        let width = counts[0].len();
        for line in counts {
            assert_eq!(line.len(), width, "{line:?} in\n{text}");
            assert!(line.ends_with(" 1") || line.ends_with(" 6"), "{line:?}");
        }
    }

    #[test]
    fn locks_read_as_dates_with_their_cause() {
        let user = Locked::User {
            until: 1_796_133_780,
            recent: 20,
        };
        assert_eq!(
            user.describe(),
            "locked until 2026-12-01 14:03:00 UTC (20 wrong codes in 24 h)"
        );
        let source = Locked::Source {
            rhost: "192.0.2.7".to_string(),
            until: 1_796_133_810,
            count: 7,
        };
        assert_eq!(
            source.describe(),
            "backing off from 192.0.2.7 until 2026-12-01 14:03:30 UTC (7 wrong codes)"
        );
    }

    #[test]
    fn the_report_lists_what_needs_help_first() {
        let mut sorted = STANDINGS.to_vec();
        sorted.sort();
        assert_eq!(sorted, STANDINGS.to_vec());
    }
}
