//! DOS/IIS style `LIST` lines: `MM-DD-YY  HH:MMAM  <DIR>|SIZE  NAME`.

use super::text::{digits_value, is_digits, split_fields};
use super::time::{civil_to_secs, parse_hh_mm, to_system_time};
use crate::remote::{Entry, EntryKind};

/// DOS/IIS: `01-15-24  10:30AM       <DIR>          dirname` or
/// `01-15-2024  22:30              1234 file name.txt`.
pub(super) fn parse_dos_line(line: &str) -> Option<Entry> {
    let fields = split_fields(line, 4);
    let field = |i: usize| fields.get(i).map(|&(s, e)| &line[s..e]);
    let (year, month, day) = parse_dos_date(field(0)?)?;

    let (mut hour, minute, mut suffix) = parse_dos_time(field(1)?)?;
    let mut next = 2;
    if suffix.is_none() {
        if let Some(s) = field(2).and_then(am_pm) {
            suffix = Some(s);
            next = 3;
        }
    }
    match suffix {
        Some(pm) => {
            if !(1..=12).contains(&hour) {
                return None;
            }
            hour = hour % 12 + if pm { 12 } else { 0 };
        }
        None if hour > 23 => return None,
        None => {}
    }

    let what = field(next)?;
    let (kind, size) = if what.eq_ignore_ascii_case("<DIR>") {
        (EntryKind::Dir, 0)
    } else if is_digits(what) {
        (EntryKind::File, what.parse().unwrap_or(0))
    } else {
        return None;
    };
    let name_start = fields.get(next)?.1;
    let name = line[name_start..].trim_start_matches([' ', '\t']);
    if name.is_empty() {
        return None;
    }
    let mtime = civil_to_secs(year, month, day, hour, minute, 0).and_then(|s| to_system_time(s, 0));
    Some(Entry {
        name: name.to_string(),
        kind,
        size,
        mtime,
        mode: None,
        target: None,
    })
}

/// `MM-DD-YY` or `MM-DD-YYYY` (also with `/`); two-digit years below 70 are 20xx.
fn parse_dos_date(s: &str) -> Option<(i64, i64, i64)> {
    let b = s.as_bytes();
    let sep = *b.get(2)?;
    if !(sep == b'-' || sep == b'/') || b.get(5) != Some(&sep) {
        return None;
    }
    let (m, d, y) = (b.get(0..2)?, b.get(3..5)?, b.get(6..)?);
    if !(y.len() == 2 || y.len() == 4) {
        return None;
    }
    let all_digits = |x: &[u8]| x.iter().all(u8::is_ascii_digit);
    if !all_digits(m) || !all_digits(d) || !all_digits(y) {
        return None;
    }
    let mut year = digits_value(y)?;
    if y.len() == 2 {
        year += if year < 70 { 2000 } else { 1900 };
    }
    Some((year, digits_value(m)?, digits_value(d)?))
}

/// `10:30AM`, `10:30pm` or `22:30`: hour, minute and `Some(is_pm)` when suffixed.
fn parse_dos_time(s: &str) -> Option<(i64, i64, Option<bool>)> {
    let (hm, suffix) = match s
        .len()
        .checked_sub(2)
        .and_then(|i| s.get(i..).map(|t| (i, t)))
    {
        Some((i, t)) if am_pm(t).is_some() => (&s[..i], am_pm(t)),
        _ => (s, None),
    };
    let (h, m) = parse_hh_mm(hm)?;
    if m > 59 {
        return None;
    }
    Some((h, m, suffix))
}

/// `AM` → `Some(false)`, `PM` → `Some(true)`.
fn am_pm(s: &str) -> Option<bool> {
    if s.eq_ignore_ascii_case("am") {
        Some(false)
    } else if s.eq_ignore_ascii_case("pm") {
        Some(true)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use crate::ftp::listing::parse_list_line;
    use crate::ftp::listing::time::utc;
    use crate::remote::EntryKind;

    #[test]
    fn dos_lines() {
        let now = utc(2024, 6, 1, 0, 0, 0);
        let p = |line: &str| parse_list_line(line, now);
        let e = p("01-15-24  10:30AM       <DIR>          dirname").unwrap();
        assert_eq!(
            (e.name.as_str(), e.kind, e.size),
            ("dirname", EntryKind::Dir, 0)
        );
        assert_eq!((e.mtime, e.mode), (Some(utc(2024, 1, 15, 10, 30, 0)), None));
        let e = p("01-15-24  10:30PM              1234 file name.txt").unwrap();
        assert_eq!(
            (e.name.as_str(), e.kind, e.size),
            ("file name.txt", EntryKind::File, 1234)
        );
        assert_eq!(e.mtime, Some(utc(2024, 1, 15, 22, 30, 0)));
        let e = p("12-31-1999  12:00 AM   <dir>   y2k").unwrap();
        assert_eq!((e.name.as_str(), e.kind), ("y2k", EntryKind::Dir));
        assert_eq!(e.mtime, Some(utc(1999, 12, 31, 0, 0, 0)));
        assert_eq!(
            p("06-30-70  12:00PM  1 x").unwrap().mtime,
            Some(utc(1970, 6, 30, 12, 0, 0))
        );
        assert_eq!(p("02-30-24  10:30AM  1 x").unwrap().mtime, None);
        for line in [
            "01-15-24  10:30AM       <DIR>          .",
            "01-15-24  10:30AM       <DIR>",
            "01-15-24  13:30PM  1 x",
            "01-15-24  24:00  1 x",
            "01-15-24  10:30AM  <FOO>  x",
            "01-15-24",
            "1-15-24  10:30AM  1 x",
        ] {
            assert_eq!(p(line), None, "{line:?}");
        }
    }
}
