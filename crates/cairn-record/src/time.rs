//! CloudTrail time formats and an injectable clock.

use chrono::{DateTime, NaiveDateTime, SubsecRound, TimeZone, Utc};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

/// `YYYY-MM-DDTHH:MM:SSZ`: the only time format in records and digests.
pub const ISO_SECONDS: &str = "%Y-%m-%dT%H:%M:%SZ";
/// Log file names: `YYYYMMDDTHHmmZ` (no seconds).
pub const LOG_NAME_MINUTES: &str = "%Y%m%dT%H%MZ";
/// Digest file names: `YYYYMMDDTHHMMSSZ` (with seconds).
pub const DIGEST_NAME_SECONDS: &str = "%Y%m%dT%H%M%SZ";

/// Formats an instant as `YYYY-MM-DDTHH:MM:SSZ` (sub-seconds dropped).
pub fn iso(t: DateTime<Utc>) -> String {
    use chrono::{Datelike, Timelike};
    // Written directly: every record carries a time, and chrono's strftime reinterprets the
    // format string on each call.
    let y = t.year();
    if !(0..=9999).contains(&y) {
        return t.format(ISO_SECONDS).to_string();
    }
    let mut b = *b"0000-00-00T00:00:00Z";
    let mut put = |at: usize, v: u32, width: usize| {
        let mut v = v;
        for i in (0..width).rev() {
            b[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, y as u32, 4);
    put(5, t.month(), 2);
    put(8, t.day(), 2);
    put(11, t.hour(), 2);
    put(14, t.minute(), 2);
    put(17, t.second(), 2);
    String::from_utf8_lossy(&b).into_owned()
}

/// Formats an instant with milliseconds, `YYYY-MM-DDTHH:MM:SS.mmmZ`, as S3 writes times in
/// its documents and object-lock dates.
pub fn iso_millis(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Parses `YYYY-MM-DDTHH:MM:SSZ`; also accepts RFC 3339 with an offset or fraction.
pub fn parse_iso(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(n) = NaiveDateTime::parse_from_str(s, ISO_SECONDS) {
        return Some(Utc.from_utc_datetime(&n));
    }
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

/// Parses a user-supplied time the way `aws cloudtrail validate-logs` does: many ISO-8601
/// shapes, and any explicit offset is *dropped* (the wall-clock value is relabelled UTC).
pub fn parse_cli_time(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    let base = s
        .trim_end_matches('Z')
        .trim_end_matches('z')
        .split(['+'])
        .next()
        .unwrap_or(s);
    // Strip a trailing "-HH:MM" offset, but not the date's dashes.
    let base = match base.rfind('-') {
        Some(i) if i > 10 && base[i..].len() <= 6 && base[..i].contains('T') => &base[..i],
        _ => base,
    };
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S",
        "%Y%m%dT%H%M%S",
    ] {
        if let Ok(n) = NaiveDateTime::parse_from_str(base, fmt) {
            return Some(Utc.from_utc_datetime(&n));
        }
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(base, "%Y-%m-%d") {
        return d.and_hms_opt(0, 0, 0).map(|n| Utc.from_utc_datetime(&n));
    }
    None
}

/// serde for `DateTime<Utc>` as `YYYY-MM-DDTHH:MM:SSZ`.
pub mod iso_seconds {
    use super::*;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&iso(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        parse_iso(&s).ok_or_else(|| serde::de::Error::custom(format!("bad time {s:?}")))
    }
}

/// The source of "now". Delivery, digests and key rotation read time only through this, so
/// tests and the load generator can run 30 simulated hours without sleeping.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that moves only when told to (milliseconds since the epoch).
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> Self {
        ManualClock(Arc::new(AtomicI64::new(start.timestamp_millis())))
    }
    pub fn set(&self, t: DateTime<Utc>) {
        self.0.store(t.timestamp_millis(), Ordering::SeqCst);
    }
    pub fn advance(&self, d: chrono::Duration) {
        self.0.fetch_add(d.num_milliseconds(), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(self.0.load(Ordering::SeqCst))
            .single()
            .unwrap_or_default()
    }
}

/// Truncates to whole seconds (digest windows and record times carry no fractions).
pub fn whole_seconds(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_matches_chrono_formatting() {
        for secs in [0i64, 1_440_938_160, 1_795_830_807, 253_402_300_799] {
            let t = Utc.timestamp_opt(secs, 0).unwrap();
            assert_eq!(iso(t), t.format(ISO_SECONDS).to_string());
        }
    }

    #[test]
    fn iso_round_trips_and_has_z() {
        let t = Utc.with_ymd_and_hms(2015, 8, 17, 15, 1, 31).unwrap();
        assert_eq!(iso(t), "2015-08-17T15:01:31Z");
        assert_eq!(parse_iso("2015-08-17T15:01:31Z"), Some(t));
    }

    #[test]
    fn cli_time_drops_offsets_like_the_aws_cli() {
        let t = Utc.with_ymd_and_hms(2025, 1, 1, 10, 0, 0).unwrap();
        assert_eq!(parse_cli_time("2025-01-01T10:00:00Z"), Some(t));
        assert_eq!(parse_cli_time("2025-01-01T10:00:00+02:00"), Some(t));
        assert_eq!(parse_cli_time("2025-01-01T10:00:00-05:00"), Some(t));
        assert_eq!(
            parse_cli_time("2025-01-01"),
            Some(Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap())
        );
        assert_eq!(parse_cli_time("not a time"), None);
    }
}
