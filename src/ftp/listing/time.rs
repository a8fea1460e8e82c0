//! Dates and times shared by the parsers: `H:MM` clock fields, validated UTC
//! civil dates to and from seconds since the epoch (no `chrono`), and the FTP
//! `YYYYMMDDHHMMSS` form sent by MFMT and MDTM.

use super::text::{digits_value, is_digits};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Earliest year we turn into an mtime; older dates give `mtime: None`.
const MIN_YEAR: i64 = 1970;
/// Latest year we turn into an mtime; later dates give `mtime: None`.
const MAX_YEAR: i64 = 9999;
pub(super) const SECS_PER_DAY: i64 = 86_400;

/// `H:MM` or `HH:MM` (24-hour).
pub(super) fn parse_hh_mm(s: &str) -> Option<(i64, i64)> {
    let (h, m) = s.split_once(':')?;
    if !(1..=2).contains(&h.len()) || m.len() != 2 || !is_digits(h) || !is_digits(m) {
        return None;
    }
    Some((digits_value(h.as_bytes())?, digits_value(m.as_bytes())?))
}

/// Seconds since the Unix epoch, negative before it, saturating.
pub(super) fn now_secs(now: SystemTime) -> i64 {
    match now.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

pub(super) fn to_system_time(secs: i64, nanos: u32) -> Option<SystemTime> {
    let secs = u64::try_from(secs).ok()?;
    UNIX_EPOCH.checked_add(Duration::new(secs, nanos.min(999_999_999)))
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        2 => 28,
        _ => 0,
    }
}

/// A validated UTC date and time as seconds since the epoch; `None` when any part
/// is out of range or the year is outside `1970..=9999`. A leap second (`:60`)
/// is read as `:59`.
pub(super) fn civil_to_secs(
    year: i64,
    month: i64,
    day: i64,
    hour: i64,
    minute: i64,
    second: i64,
) -> Option<i64> {
    if !(MIN_YEAR..=MAX_YEAR).contains(&year)
        || !(1..=12).contains(&month)
        || !(1..=days_in_month(year, month)).contains(&day)
        || !(0..=23).contains(&hour)
        || !(0..=59).contains(&minute)
        || !(0..=60).contains(&second)
    {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(days * SECS_PER_DAY + hour * 3600 + minute * 60 + second.min(59))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
/// Callers keep `year` within a few thousand years of the epoch.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Formats a time as the FTP `YYYYMMDDHHMMSS` (UTC) used by MFMT and MDTM;
/// times before 1970 are sent as the epoch, after 9999 as the end of 9999.
pub fn format_time_val(t: SystemTime) -> String {
    let secs = now_secs(t).clamp(0, civil_to_secs(MAX_YEAR, 12, 31, 23, 59, 59).unwrap_or(0));
    let (y, mo, d) = civil_from_days(secs.div_euclid(SECS_PER_DAY));
    let rem = secs.rem_euclid(SECS_PER_DAY);
    format!(
        "{y:04}{mo:02}{d:02}{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The inverse of [`days_from_civil`]: `(year, month, day)`. Safe for any day
/// count that comes from an `i64` number of seconds.
pub(super) fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// A UTC time from its parts (test helper).
#[cfg(test)]
pub(super) fn utc(y: i64, mo: i64, d: i64, h: i64, mi: i64, s: i64) -> SystemTime {
    to_system_time(civil_to_secs(y, mo, d, h, mi, s).unwrap(), 0).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ftp::listing::parse_mlsd_line;

    #[test]
    fn time_val_round_trips() {
        let t = utc(2024, 2, 29, 23, 5, 9);
        assert_eq!(format_time_val(t), "20240229230509");
        assert_eq!(format_time_val(UNIX_EPOCH), "19700101000000");
        let line = format!("type=file;size=1;modify={}; f", format_time_val(t));
        assert_eq!(parse_mlsd_line(&line).and_then(|e| e.mtime), Some(t));
    }

    #[test]
    fn civil_conversion_matches_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2024, 2, 29), 19_782);
        assert_eq!(civil_to_secs(2019, 1, 1, 0, 0, 0), Some(1_546_300_800));
        assert_eq!(
            civil_to_secs(9999, 12, 31, 23, 59, 59),
            Some(253_402_300_799)
        );
        for days in [-1_000_000, -1, 0, 1, 59, 11_017, 19_782, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{days} -> {y}-{m}-{d}");
        }
        assert_eq!(civil_to_secs(2023, 2, 29, 0, 0, 0), None);
        assert_eq!(civil_to_secs(1969, 12, 31, 0, 0, 0), None);
        assert_eq!(civil_to_secs(10_000, 1, 1, 0, 0, 0), None);
        assert_eq!(civil_to_secs(2024, 1, 1, 24, 0, 0), None);
    }
}
