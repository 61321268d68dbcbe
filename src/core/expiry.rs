//! The one rule for expiry warnings, shared by the token watch
//! (`renew`: the applied ABM/ASM token) and the credential watch
//! (`credential_watch`: the relay's own Graph credential): an `expiring`
//! notice once at each of [`EXPIRY_THRESHOLDS`] days left (those inside the
//! warning window) per version, an `expired` notice once per UTC day after.
//! What was announced is recorded (sealed) in a tag; only a genuine record of
//! this very threshold or day silences a notice.

use jiff::Timestamp;

use crate::core::secret_value::format_date;

/// `expiring` is announced once at each of these days left (inside the window).
pub const EXPIRY_THRESHOLDS: [i64; 5] = [30, 14, 7, 3, 1];

/// The threshold due at `days_left`, if any inside the warning window.
pub fn due_threshold(days_left: i64, warning_days: u32) -> Option<i64> {
    EXPIRY_THRESHOLDS.iter().copied().filter(|t| *t <= i64::from(warning_days) && days_left <= *t).min()
}

/// Whole days from `now` until `expires` (negative once expired).
pub fn days_left(expires: Timestamp, now: Timestamp) -> i64 {
    (expires.as_second() - now.as_second()).div_euclid(86_400)
}

/// What is watched: when it expires, which version it is, and the opened
/// (genuine) records of the last `expired` day and `expiring` threshold.
#[derive(Debug, Clone, Copy)]
pub struct Watched<'a> {
    pub expires: Timestamp,
    pub version: &'a str,
    /// The UTC date of the last `expired` notice.
    pub expired_record: Option<&'a str>,
    /// `VERSION:DAYS`: the last threshold announced.
    pub warned_record: Option<&'a str>,
}

/// A notice that is due, with the value that records it once delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// `expired`; the record is today's UTC date.
    Expired { record: String },
    /// `expiring` at threshold `due`; the record is `VERSION:DAYS`.
    Expiring { due: i64, record: String },
}

/// The notice due now, if any.
pub fn due_notice(w: &Watched<'_>, now: Timestamp, warning_days: u32) -> Option<Notice> {
    if w.expires <= now {
        let today = format_date(now);
        return (w.expired_record != Some(today.as_str())).then_some(Notice::Expired { record: today });
    }
    let due = due_threshold(days_left(w.expires, now), warning_days)?;
    let announced = w
        .warned_record
        .and_then(|v| v.rsplit_once(':'))
        .filter(|(version, _)| *version == w.version)
        .and_then(|(_, days)| days.parse::<i64>().ok());
    // Only a genuine record of this very threshold silences it: an old
    // record brought back makes the alert repeat, never skip ahead.
    (announced != Some(due)).then(|| Notice::Expiring { due, record: format!("{}:{due}", w.version) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn thresholds() {
        assert_eq!(due_threshold(45, 30), None);
        assert_eq!(due_threshold(30, 30), Some(30));
        assert_eq!(due_threshold(29, 30), Some(30));
        assert_eq!(due_threshold(14, 30), Some(14));
        assert_eq!(due_threshold(8, 30), Some(14));
        assert_eq!(due_threshold(0, 30), Some(1));
        assert_eq!(due_threshold(20, 10), None, "outside a 10-day window");
        assert_eq!(due_threshold(9, 10), None, "14 is outside a 10-day window");
        assert_eq!(due_threshold(7, 10), Some(7));
    }

    #[test]
    fn each_threshold_once_per_version_and_expired_once_a_day() {
        let now = at("2026-12-06T12:00:00Z");
        let w =
            Watched { expires: at("2026-12-16T00:00:00Z"), version: "v1", expired_record: None, warned_record: None };
        assert_eq!(due_notice(&w, now, 30), Some(Notice::Expiring { due: 14, record: "v1:14".into() }));
        assert_eq!(due_notice(&Watched { warned_record: Some("v1:14"), ..w }, now, 30), None);
        // A record of another version or an older threshold silences nothing.
        assert!(due_notice(&Watched { warned_record: Some("v0:14"), ..w }, now, 30).is_some());
        assert!(due_notice(&Watched { warned_record: Some("v1:30"), ..w }, now, 30).is_some());
        let gone = Watched { expires: at("2026-12-01T00:00:00Z"), ..w };
        assert_eq!(due_notice(&gone, now, 30), Some(Notice::Expired { record: "2026-12-06".into() }));
        assert_eq!(due_notice(&Watched { expired_record: Some("2026-12-06"), ..gone }, now, 30), None);
    }
}
