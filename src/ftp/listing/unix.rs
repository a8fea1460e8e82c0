//! Unix `ls -l` style `LIST` lines: permission strings, the date in its three
//! shapes (with the year inferred when it is missing), names and symlink targets.

use super::text::{digits_value, is_digits, split_fields};
use super::time::{
    civil_from_days, civil_to_secs, now_secs, parse_hh_mm, to_system_time, SECS_PER_DAY,
};
use crate::remote::{Entry, EntryKind};
use std::time::SystemTime;

/// How far in the future a year-less `LIST` date may lie (clock skew, time zones).
const FUTURE_SLACK_SECS: i64 = SECS_PER_DAY;
/// A `LIST` line's date must start within this many whitespace-separated fields.
const MAX_LIST_FIELDS: usize = 16;

/// `total 1234` (the block count `ls -l` prints first).
pub(super) fn is_total_line(line: &str) -> bool {
    let mut fields = line.split_ascii_whitespace();
    matches!(
        (fields.next(), fields.next(), fields.next()),
        (Some(t), Some(n), None) if t.eq_ignore_ascii_case("total") && is_digits(n)
    )
}

pub(super) fn parse_unix_line(line: &str, now: SystemTime) -> Option<Entry> {
    let fields = split_fields(line, MAX_LIST_FIELDS);
    let field = |i: usize| fields.get(i).map(|&(s, e)| &line[s..e]);
    let (kind, mode) = parse_unix_perms(field(0)?)?;

    // Find the date: a month name preceded by the size. Owner, group and link count
    // are optional and ignored, so the month may be at any index from 3 on.
    for i in 3..fields.len() {
        let Some(month) = field(i).and_then(month_number) else {
            continue;
        };
        let Some(size_text) = field(i - 1).filter(|s| is_digits(s)) else {
            continue;
        };
        let Some(day) = field(i + 1).filter(|d| d.len() <= 2 && is_digits(d)) else {
            continue;
        };
        let Some(third) = field(i + 2) else {
            continue;
        };
        let day = digits_value(day.as_bytes())?;
        if !(1..=31).contains(&day) {
            continue;
        }
        let (date_end, mtime) = if let Some((hour, minute)) = parse_hh_mm(third) {
            let secs = infer_year(month, day, hour, minute, now_secs(now));
            (fields[i + 2].1, secs.and_then(|s| to_system_time(s, 0)))
        } else if let Some((hour, minute, second)) = parse_hh_mm_ss(third) {
            // `ls -lT`: Mon DD HH:MM:SS YYYY
            let Some(year) = field(i + 3).filter(|y| is_year(y)) else {
                continue;
            };
            let year = digits_value(year.as_bytes())?;
            let secs = civil_to_secs(year, month, day, hour, minute, second);
            (fields[i + 3].1, secs.and_then(|s| to_system_time(s, 0)))
        } else if is_year(third) {
            let year = digits_value(third.as_bytes())?;
            let secs = civil_to_secs(year, month, day, 0, 0, 0);
            (fields[i + 2].1, secs.and_then(|s| to_system_time(s, 0)))
        } else {
            continue;
        };

        // The name is everything after the one separator following the date.
        let rest = &line[date_end..];
        let mut chars = rest.chars();
        match chars.next() {
            Some(' ' | '\t') => {}
            _ => return None,
        }
        let name = chars.as_str();
        if name.is_empty() {
            return None;
        }
        let (name, target) = if kind == EntryKind::Symlink {
            match name.split_once(" -> ") {
                Some((n, t)) => {
                    let target = (!t.is_empty() && !t.contains('\0')).then(|| t.to_string());
                    (n, target)
                }
                None => (name, None),
            }
        } else {
            (name, None)
        };
        return Some(Entry {
            name: name.to_string(),
            kind,
            // A size too big for u64 is nonsense: report 0.
            size: size_text.parse().unwrap_or(0),
            mtime,
            mode: Some(mode),
            target,
        });
    }
    None
}

/// `-rw-r--r--`, `drwxr-sr-t+`, `lrwxrwxrwx@`…: the kind and the permission bits.
/// Device nodes, FIFOs, sockets and doors are shown as plain files.
fn parse_unix_perms(perms: &str) -> Option<(EntryKind, u32)> {
    let b = perms.as_bytes();
    match b.len() {
        10 => {}
        11 if matches!(b[10], b'+' | b'.' | b'@') => {}
        _ => return None,
    }
    let kind = match b[0] {
        b'-' => EntryKind::File,
        b'd' => EntryKind::Dir,
        b'l' => EntryKind::Symlink,
        b'b' | b'c' | b'p' | b's' | b'D' => EntryKind::File,
        _ => return None,
    };
    let mut mode = 0u32;
    // (user, group, other): read and write letters are plain; the execute letter
    // also carries setuid / setgid / sticky.
    for (triple, (special, shift)) in [(0o4000, 6), (0o2000, 3), (0o1000, 0)]
        .into_iter()
        .enumerate()
    {
        let r = b[1 + triple * 3];
        let w = b[2 + triple * 3];
        let x = b[3 + triple * 3];
        match r {
            b'r' => mode |= 0o4 << shift,
            b'-' => {}
            _ => return None,
        }
        match w {
            b'w' => mode |= 0o2 << shift,
            b'-' => {}
            _ => return None,
        }
        let (special_letter, special_no_x) = if triple == 2 {
            (b't', b'T')
        } else {
            (b's', b'S')
        };
        match x {
            b'x' => mode |= 0o1 << shift,
            b'-' => {}
            c if c == special_letter => mode |= special | (0o1 << shift),
            c if c == special_no_x => mode |= special,
            // Solaris shows mandatory locking as `l` in the group execute slot.
            b'l' if triple == 1 => mode |= special,
            _ => return None,
        }
    }
    Some((kind, mode))
}

/// `Jan`…`Dec` (case-insensitive) to 1…12.
fn month_number(s: &str) -> Option<i64> {
    const MONTHS: [&str; 12] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    MONTHS
        .iter()
        .position(|m| m.eq_ignore_ascii_case(s))
        .map(|i| i as i64 + 1)
}

/// `HH:MM:SS`.
fn parse_hh_mm_ss(s: &str) -> Option<(i64, i64, i64)> {
    let (hm, sec) = s.rsplit_once(':')?;
    let (h, m) = parse_hh_mm(hm)?;
    if sec.len() != 2 || !is_digits(sec) {
        return None;
    }
    Some((h, m, digits_value(sec.as_bytes())?))
}

/// A year field: 1 to 9 digits (absurd values become `mtime: None` later).
fn is_year(s: &str) -> bool {
    (1..=9).contains(&s.len()) && is_digits(s)
}

/// The latest `(year, month, day, hour, minute)` no more than a day after `now`.
/// Looks back far enough to find a leap year for February 29.
fn infer_year(month: i64, day: i64, hour: i64, minute: i64, now: i64) -> Option<i64> {
    let (now_year, _, _) = civil_from_days(now.div_euclid(SECS_PER_DAY));
    let limit = now.saturating_add(FUTURE_SLACK_SECS);
    (now_year - 8..=now_year + 1)
        .rev()
        .filter_map(|year| civil_to_secs(year, month, day, hour, minute, 0))
        .find(|&secs| secs <= limit)
}

#[cfg(test)]
mod tests {
    use crate::ftp::listing::parse_list_line;
    use crate::ftp::listing::time::utc;
    use crate::remote::EntryKind;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    #[test]
    fn year_less_dates_take_the_latest_year_not_in_the_future() {
        let now = utc(2024, 1, 10, 12, 0, 0);
        let line = |date: &str| format!("-rw-r--r-- 1 u g 1 {date} f");
        let mtime = |date: &str| parse_list_line(&line(date), now).unwrap().mtime;
        assert_eq!(mtime("Dec 31 23:59"), Some(utc(2023, 12, 31, 23, 59, 0)));
        assert_eq!(mtime("Jan 10 11:00"), Some(utc(2024, 1, 10, 11, 0, 0)));
        // Up to a day ahead is clock skew, not last year.
        assert_eq!(mtime("Jan 11 11:00"), Some(utc(2024, 1, 11, 11, 0, 0)));
        assert_eq!(mtime("Jan 12 11:00"), Some(utc(2023, 1, 12, 11, 0, 0)));
        // February 29 goes back to the latest leap year.
        let now = utc(2027, 6, 1, 0, 0, 0);
        assert_eq!(
            mtime_at("Feb 29 08:00", now),
            Some(utc(2024, 2, 29, 8, 0, 0))
        );
        // A clock before the epoch or far in the future must not panic.
        let _ = parse_list_line(
            &line("Jan 10 11:00"),
            UNIX_EPOCH - Duration::from_secs(1 << 40),
        );
        let _ = parse_list_line(
            &line("Jan 10 11:00"),
            UNIX_EPOCH + Duration::from_secs(1 << 62),
        );

        fn mtime_at(date: &str, now: SystemTime) -> Option<SystemTime> {
            parse_list_line(&format!("-rw-r--r-- 1 u g 1 {date} f"), now)
                .unwrap()
                .mtime
        }
    }

    #[test]
    fn unix_list_variants() {
        let now = utc(2024, 6, 1, 0, 0, 0);
        let p = |line: &str| parse_list_line(line, now);

        let e = p("-rw-r--r--   1 owner    group        1234 Jan 15 10:30 notes.txt").unwrap();
        assert_eq!(
            (e.name.as_str(), e.kind, e.size),
            ("notes.txt", EntryKind::File, 1234)
        );
        assert_eq!(
            (e.mode, e.mtime),
            (Some(0o644), Some(utc(2024, 1, 15, 10, 30, 0)))
        );

        // Group missing.
        let e = p("drwxr-xr-x   2 owner        4096 Mar  3  2015 old dir").unwrap();
        assert_eq!(
            (e.name.as_str(), e.kind, e.size),
            ("old dir", EntryKind::Dir, 4096)
        );
        assert_eq!(e.mtime, Some(utc(2015, 3, 3, 0, 0, 0)));
        // Numeric owner and group, ACL marker, tab separators.
        let e = p("-rw-rw-r--+\t1\t1000\t1000\t7\tMay\t5\t09:05\ttabbed").unwrap();
        assert_eq!(
            (e.name.as_str(), e.size, e.mode),
            ("tabbed", 7, Some(0o664))
        );
        // No link count either.
        let e = p("-rw-r--r-- ftp 12 Feb 28 2020 x").unwrap();
        assert_eq!((e.name.as_str(), e.size), ("x", 12));
        // Special bits.
        assert_eq!(
            p("-rwsr-sr-t 1 a b 1 Jan 1 2020 s").unwrap().mode,
            Some(0o7755)
        );
        assert_eq!(
            p("-rwSr-Sr-T 1 a b 1 Jan 1 2020 s").unwrap().mode,
            Some(0o7644)
        );
        assert_eq!(
            p("drwxrwxrwt. 1 a b 1 Jan 1 2020 tmp").unwrap().mode,
            Some(0o1777)
        );
        assert_eq!(
            p("-rw-r-lr--@ 1 a b 1 Jan 1 2020 lock").unwrap().mode,
            Some(0o2644)
        );
        // Device nodes are shown as files.
        let e = p("crw-rw-rw- 1 root root 0 Jan 1 2020 null").unwrap();
        assert_eq!(e.kind, EntryKind::File);
        // Symlinks.
        let e = p("lrwxrwxrwx 1 a b 11 Jan 1 2020 my link -> ../a b/c").unwrap();
        assert_eq!((e.name.as_str(), e.kind), ("my link", EntryKind::Symlink));
        assert_eq!(
            (e.target.as_deref(), e.mode),
            (Some("../a b/c"), Some(0o777))
        );
        let e = p("lrwxrwxrwx 1 a b 11 Jan 1 2020 no-arrow").unwrap();
        assert_eq!((e.name.as_str(), e.target), ("no-arrow", None));
        // " -> " in a regular file's name is part of the name.
        assert_eq!(
            p("-rw-r--r-- 1 a b 1 Jan 1 2020 a -> b").unwrap().name,
            "a -> b"
        );
        // ls -lT.
        let e = p("-rw-r--r-- 1 a b 5 Nov 23 16:13:17 2026 t").unwrap();
        assert_eq!(
            (e.name.as_str(), e.mtime),
            ("t", Some(utc(2026, 11, 23, 16, 13, 17)))
        );
        // Owner or group that looks like a month.
        let e = p("-rw-r--r-- 1 jan may 5 Jun 1 2021 m").unwrap();
        assert_eq!((e.name.as_str(), e.size), ("m", 5));
        // Spaces inside and after the separator are kept.
        assert_eq!(
            p("-rw-r--r-- 1 a b 1 Jan 1 2020   x  y ").unwrap().name,
            "  x  y "
        );
    }

    #[test]
    fn unix_list_rejects_and_clamps() {
        let now = utc(2024, 6, 1, 0, 0, 0);
        let p = |line: &str| parse_list_line(line, now);
        for line in [
            "total 12",
            "TOTAL 0",
            "",
            "   ",
            "drwxr-xr-x 2 a b 4096 Jan 1 2020 .",
            "drwxr-xr-x 2 a b 4096 Jan 1 2020 ..",
            "-rw-r--r-- 1 a b 1 Jan 1 2020 a/b",
            "-rw-r--r-- 1 a b 1 Jan 1 2020 ",
            "-rw-r--r-- 1 a b 1 Jan 1 2020",
            "-rw-r--r-- 1 a b x Jan 1 2020 f",
            "-rw-r--r-- 1 a b 1 Foo 1 2020 f",
            "-rw-r--r-- 1 a b 1 Jan 32 2020 f",
            "?rw-r--r-- 1 a b 1 Jan 1 2020 f",
            "-rw-r--r-x- 1 a b 1 Jan 1 2020 f",
            "-rwxr-xr-q 1 a b 1 Jan 1 2020 f",
            "550 No files found",
            "ünïcødé garbage line with → arrows",
        ] {
            assert_eq!(p(line), None, "{line:?}");
        }
        let e = p("-rw-r--r-- 1 a b 99999999999999999999999 Jan 1 2020 huge").unwrap();
        assert_eq!(e.size, 0);
        assert_eq!(p("-rw-r--r-- 1 a b 1 Jan 1 1969 old").unwrap().mtime, None);
        assert_eq!(p("-rw-r--r-- 1 a b 1 Jan 1 99999 new").unwrap().mtime, None);
        assert_eq!(p("-rw-r--r-- 1 a b 1 Feb 30 2020 bad").unwrap().mtime, None);
        assert_eq!(p("-rw-r--r-- 1 a b 1 Feb 3 25:99 bad").unwrap().mtime, None);
    }
}
