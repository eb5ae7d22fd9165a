//! Rate limits on guessing: pure arithmetic over failure counts the store
//! keeps per (user, rhost).
//!
//! - Per source: after `backoff_after` failures in a row from one address,
//!   each further try waits `30 s × 2^(failures − backoff_after)`, at most
//!   `backoff_max`. A success from that address clears its count.
//! - Per user, across all sources: once `user_limit` failures happened
//!   within 24 h, code logins for the user are refused from every untrusted
//!   address until 24 h after the latest failure (or `totpctl unlock`), and
//!   an alert goes to syslog.
//!
//! Refused tries are not counted, so hammering does not extend a lock, and
//! during a lock even a right code is refused and not burned.

/// Length of the first back-off step.
pub const BACKOFF_BASE_SECS: u64 = 30;
/// The per-user ceiling counts failures in this window.
pub const USER_WINDOW_SECS: i64 = 86_400;

pub const DEFAULT_BACKOFF_AFTER: u32 = 5;
pub const DEFAULT_BACKOFF_MAX_SECS: u64 = 3_600;
pub const DEFAULT_USER_LIMIT: u32 = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub backoff_after: u32,
    pub backoff_max: u64,
    pub user_limit: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            backoff_after: DEFAULT_BACKOFF_AFTER,
            backoff_max: DEFAULT_BACKOFF_MAX_SECS,
            user_limit: DEFAULT_USER_LIMIT,
        }
    }
}

/// Failures the store holds for one login attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Failures {
    /// Consecutive failures from this (user, rhost), and when the last was.
    pub source_count: u64,
    pub source_last: i64,
    /// Failures for this user from all sources within `USER_WINDOW_SECS`,
    /// and the latest of them.
    pub user_recent: u64,
    pub user_last: i64,
}

impl Failures {
    /// The counts as a store reads them: the source's consecutive failures
    /// and the last one; the user's failures in the 24 h up to their latest
    /// failure, and that latest one. Once the latest is over 24 h old the
    /// user's count is 0: it no longer locks anything.
    pub fn new(
        source_count: i64,
        source_last: i64,
        user_count: i64,
        user_last: i64,
        now: i64,
    ) -> Failures {
        let recent = user_last > now.saturating_sub(USER_WINDOW_SECS);
        Failures {
            source_count: u64::try_from(source_count).unwrap_or(0),
            source_last,
            user_recent: if recent {
                u64::try_from(user_count).unwrap_or(0)
            } else {
                0
            },
            user_last,
        }
    }

    /// The counts once one more failure from this source, at `now`, is
    /// added.
    pub fn with_one_more(self, now: i64) -> Failures {
        Failures {
            source_count: self.source_count.saturating_add(1),
            source_last: now,
            user_recent: self.user_recent.saturating_add(1),
            user_last: now,
        }
    }
}

/// Why and until when a try is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lock {
    Source { until: i64 },
    User { until: i64 },
}

/// The lock in force at `now`, if any.
pub fn lock_at(failures: &Failures, limits: &Limits, now: i64) -> Option<Lock> {
    if limits.user_limit > 0 && failures.user_recent >= u64::from(limits.user_limit) {
        let until = failures.user_last.saturating_add(USER_WINDOW_SECS);
        if now < until {
            return Some(Lock::User { until });
        }
    }
    let over = failures
        .source_count
        .checked_sub(u64::from(limits.backoff_after))?;
    // 30 s × 2^over, capped; `checked_shl` only checks the shift amount,
    // so the doubling is a checked multiplication (30 << 63 would wrap).
    let wait = 1u64
        .checked_shl(u32::try_from(over).unwrap_or(u32::MAX))
        .and_then(|factor| BACKOFF_BASE_SECS.checked_mul(factor))
        .filter(|w| *w <= limits.backoff_max)
        .unwrap_or(limits.backoff_max);
    let until = failures.source_last.saturating_add(wait as i64);
    (now < until).then_some(Lock::Source { until })
}

/// True when this failure (already counted in `user_recent`) is the one
/// that reaches the per-user ceiling: the moment to raise the alert.
pub fn reaches_user_limit(user_recent: u64, limits: &Limits) -> bool {
    limits.user_limit > 0 && user_recent == u64::from(limits.user_limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(count: u64, last: i64) -> Failures {
        Failures {
            source_count: count,
            source_last: last,
            user_recent: count,
            user_last: last,
        }
    }

    #[test]
    fn free_tries_then_doubling_back_off_capped() {
        let limits = Limits::default();
        assert_eq!(lock_at(&source(4, 1000), &limits, 1000), None);
        assert_eq!(
            lock_at(&source(5, 1000), &limits, 1000),
            Some(Lock::Source { until: 1030 })
        );
        assert_eq!(lock_at(&source(5, 1000), &limits, 1030), None);
        assert_eq!(
            lock_at(&source(6, 1000), &limits, 1000),
            Some(Lock::Source { until: 1060 })
        );
        assert_eq!(
            lock_at(&source(8, 1000), &limits, 1000),
            Some(Lock::Source { until: 1240 })
        );
        // 30 × 2^8 > 3600: capped.
        let mut many = source(13, 1000);
        many.user_recent = 0;
        assert_eq!(
            lock_at(&many, &limits, 1000),
            Some(Lock::Source { until: 4600 })
        );
        // Every count past the cap stays capped: no wrap-around gap.
        for count in 13..200 {
            many.source_count = count;
            assert_eq!(
                lock_at(&many, &limits, 1000),
                Some(Lock::Source { until: 4600 }),
                "{count}"
            );
        }
        many.source_count = 500;
        assert_eq!(
            lock_at(&many, &limits, 1000),
            Some(Lock::Source { until: 4600 })
        );
    }

    #[test]
    fn the_user_ceiling_holds_across_sources_for_a_day() {
        let limits = Limits::default();
        let f = Failures {
            source_count: 0,
            source_last: 0,
            user_recent: 20,
            user_last: 5000,
        };
        assert_eq!(
            lock_at(&f, &limits, 5001),
            Some(Lock::User { until: 91_400 })
        );
        assert_eq!(lock_at(&f, &limits, 91_400), None);
        assert!(reaches_user_limit(20, &limits));
        assert!(!reaches_user_limit(21, &limits));
        let off = Limits {
            user_limit: 0,
            ..limits
        };
        assert_eq!(lock_at(&f, &off, 5001), None);
    }
}
