//! Parses FTP directory listings into [`Entry`] values: machine-readable `MLSD`
//! lines (RFC 3659) and human-readable `LIST` lines in Unix `ls -l` style or
//! DOS/IIS style (detected per line).
//!
//! Everything here is pure: no I/O, no clock (the caller passes `now` for the
//! year inference of `LIST` dates), no panics on any input, and every allocation
//! is bounded by the size of the line being parsed. Times are UTC and are
//! converted with a small hand-written civil-date routine (no `chrono`).
//!
//! Lines that cannot be parsed are skipped (logged at debug level); entries
//! whose name is unusable (contains `/`, NUL, CR or LF, see [`is_valid_name`])
//! are skipped with a warning; `.` and `..` are skipped silently.

use crate::remote::{is_valid_name, Entry, EntryKind};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Earliest year we turn into an mtime; older dates give `mtime: None`.
const MIN_YEAR: i64 = 1970;
/// Latest year we turn into an mtime; later dates give `mtime: None`.
const MAX_YEAR: i64 = 9999;
const SECS_PER_DAY: i64 = 86_400;
/// How far in the future a year-less `LIST` date may lie (clock skew, time zones).
const FUTURE_SLACK_SECS: i64 = SECS_PER_DAY;
/// A `LIST` line's date must start within this many whitespace-separated fields.
const MAX_LIST_FIELDS: usize = 16;

// ---------------------------------------------------------------------------
// MLSD
// ---------------------------------------------------------------------------

/// MLSD lines (RFC 3659) into entries; skips cdir/pdir, "." and "..", and invalid
/// names (logged with `log::warn!`).
pub fn parse_mlsd(lines: &[String]) -> Vec<Entry> {
    lines.iter().filter_map(|l| parse_mlsd_line(l)).collect()
}

/// Parses one MLSD line, `fact=value;fact=value; name`.
///
/// Fact names and the `type` values are case-insensitive. Understood facts:
///
/// * `type`: `file`, `dir`, `cdir`/`pdir` (skipped), `OS.unix=slink:TARGET`,
///   `OS.unix=slink` and `OS.unix=symlink[:TARGET]` (symlinks). Other
///   `OS.*` types (device nodes, FIFOs, …) and unknown types are shown as
///   plain files, so the directory contents stay visible.
/// * `size` (and `sizd`, used by some servers for directories); an unparsable
///   size gives 0.
/// * `modify`: `YYYYMMDDHHMMSS[.fraction]`, UTC.
/// * `unix.mode`: octal, with or without a leading `0` or `0o` (pyftpdlib sends
///   `0o644`); masked to `0o7777`.
/// * `perm`: only when `unix.mode` is absent, a mode is derived from it:
///   start from `0o644` for files and `0o755` for directories (`0o777` for
///   symlinks, whose mode is meaningless); files lose the read bits without
///   `r` and the write bits without `w` or `a`; directories lose the read bits
///   without `l`, the search bits without `e`, and the write bits without any
///   of `c`, `m` or `p`.
///
/// The name is everything after the first `"; "` (it may contain spaces and
/// semicolons); a line starting with a space has no facts at all.
pub fn parse_mlsd_line(line: &str) -> Option<Entry> {
    let line = trim_eol(line);
    let Some((facts, name)) = split_mlsd(line) else {
        log::debug!("unparsable MLSD line: {line:?}");
        return None;
    };

    let mut kind = EntryKind::File;
    let mut target = None;
    let mut size: Option<u64> = None;
    let mut sizd: Option<u64> = None;
    let mut mtime = None;
    let mut unix_mode = None;
    let mut perm: Option<&str> = None;

    for fact in facts.split(';') {
        let Some((key, value)) = fact.split_once('=') else {
            continue;
        };
        if key.eq_ignore_ascii_case("type") {
            match parse_mlsd_type(value) {
                MlsdType::Entry(k, t) => {
                    kind = k;
                    target = t;
                }
                MlsdType::Skip => return None,
            }
        } else if key.eq_ignore_ascii_case("size") {
            size = Some(value.parse().unwrap_or(0));
        } else if key.eq_ignore_ascii_case("sizd") {
            sizd = Some(value.parse().unwrap_or(0));
        } else if key.eq_ignore_ascii_case("modify") {
            mtime = parse_mlsd_time(value);
        } else if key.eq_ignore_ascii_case("unix.mode") {
            unix_mode = parse_octal_mode(value);
        } else if key.eq_ignore_ascii_case("perm") {
            perm = Some(value);
        }
    }

    let mode = unix_mode.or_else(|| perm.map(|p| mode_from_perm(kind, p)));
    finish(Entry {
        name: name.to_string(),
        kind,
        size: size.or(sizd).unwrap_or(0),
        mtime,
        mode,
        target,
    })
}

/// Splits an MLSD line into its facts and its name.
fn split_mlsd(line: &str) -> Option<(&str, &str)> {
    if let Some(name) = line.strip_prefix(' ') {
        // `entry = [facts] SP pathname`: no facts at all.
        return Some(("", name));
    }
    if let Some(i) = line.find("; ") {
        // Fact values never contain spaces, so the first "; " ends the facts.
        return Some((&line[..i], &line[i + 2..]));
    }
    // Lenient: facts without the final ';' before the space.
    let (facts, name) = line.split_once(' ')?;
    facts.contains('=').then_some((facts, name))
}

enum MlsdType {
    Entry(EntryKind, Option<String>),
    /// `cdir`/`pdir`: the listed directory itself or its parent.
    Skip,
}

fn parse_mlsd_type(value: &str) -> MlsdType {
    if value.eq_ignore_ascii_case("file") {
        return MlsdType::Entry(EntryKind::File, None);
    }
    if value.eq_ignore_ascii_case("dir") {
        return MlsdType::Entry(EntryKind::Dir, None);
    }
    if value.eq_ignore_ascii_case("cdir") || value.eq_ignore_ascii_case("pdir") {
        return MlsdType::Skip;
    }
    if let Some(os) = strip_prefix_ignore_case(value, "os.unix=") {
        let (what, rest) = match os.split_once(':') {
            Some((w, r)) => (w, Some(r)),
            None => (os, None),
        };
        if what.eq_ignore_ascii_case("slink") || what.eq_ignore_ascii_case("symlink") {
            let target = rest
                .filter(|t| !t.is_empty() && !t.contains('\0'))
                .map(str::to_string);
            return MlsdType::Entry(EntryKind::Symlink, target);
        }
    }
    log::debug!("MLSD type {value:?} shown as a plain file");
    MlsdType::Entry(EntryKind::File, None)
}

/// `YYYYMMDDHHMMSS[.fraction]` in UTC.
fn parse_mlsd_time(value: &str) -> Option<SystemTime> {
    let (main, frac) = match value.split_once('.') {
        Some((m, f)) => (m, Some(f)),
        None => (value, None),
    };
    let b = main.as_bytes();
    if b.len() != 14 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let year = digits_value(&b[0..4])?;
    let month = digits_value(&b[4..6])?;
    let day = digits_value(&b[6..8])?;
    let hour = digits_value(&b[8..10])?;
    let minute = digits_value(&b[10..12])?;
    let second = digits_value(&b[12..14])?;
    let nanos = match frac {
        None => 0,
        Some(f) => parse_fraction_nanos(f)?,
    };
    let secs = civil_to_secs(year, month, day, hour, minute, second)?;
    to_system_time(secs, nanos)
}

/// The digits after the decimal point, as nanoseconds (extra digits are ignored).
fn parse_fraction_nanos(f: &str) -> Option<u32> {
    let b = f.as_bytes();
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut nanos: u32 = 0;
    for i in 0..9 {
        let d = b.get(i).map_or(0, |c| u32::from(c - b'0'));
        nanos = nanos * 10 + d;
    }
    Some(nanos)
}

/// An octal mode such as `0644`, `644`, `100644` or `0o644`, masked to `0o7777`.
fn parse_octal_mode(value: &str) -> Option<u32> {
    let digits = strip_prefix_ignore_case(value, "0o").unwrap_or(value);
    if digits.is_empty() || digits.len() > 11 || !digits.bytes().all(|c| (b'0'..=b'7').contains(&c))
    {
        return None;
    }
    u32::from_str_radix(digits, 8).ok().map(|m| m & 0o7777)
}

/// Derives permission bits from an RFC 3659 `perm` fact (see [`parse_mlsd_line`]).
fn mode_from_perm(kind: EntryKind, perm: &str) -> u32 {
    let has = |letters: &str| {
        perm.chars()
            .any(|c| letters.contains(c.to_ascii_lowercase()))
    };
    match kind {
        EntryKind::Symlink => 0o777,
        EntryKind::File => {
            let mut mode = 0o644;
            if !has("r") {
                mode &= !0o444;
            }
            if !has("wa") {
                mode &= !0o222;
            }
            mode
        }
        EntryKind::Dir => {
            let mut mode = 0o755;
            if !has("l") {
                mode &= !0o444;
            }
            if !has("e") {
                mode &= !0o111;
            }
            if !has("cmp") {
                mode &= !0o222;
            }
            mode
        }
    }
}

// ---------------------------------------------------------------------------
// LIST
// ---------------------------------------------------------------------------

/// LIST lines, Unix `ls -l` style or DOS/IIS style (autodetected per line); `now`
/// is used to infer the year of "Mon DD HH:MM" dates.
pub fn parse_list(lines: &[String], now: SystemTime) -> Vec<Entry> {
    lines
        .iter()
        .filter_map(|l| parse_list_line(l, now))
        .collect()
}

/// Parses one LIST line (see the module documentation of each style below).
///
/// Unix style: `PERMS [LINKS] OWNER [GROUP] SIZE Mon DD HH:MM|YYYY NAME`, where
/// the name is the rest of the line after the single space that follows the
/// date (so leading and internal spaces survive) and symlinks read
/// `NAME -> TARGET`. A year-less date gets the most recent year that puts it
/// no more than a day after `now`. `ls -lT` style `Mon DD HH:MM:SS YYYY` is
/// accepted too. `total N` lines are skipped.
///
/// DOS/IIS style: `MM-DD-YY[YY]  HH:MM[AM|PM]  <DIR>|SIZE  NAME`; the name is the
/// rest of the line with its leading padding removed.
pub fn parse_list_line(line: &str, now: SystemTime) -> Option<Entry> {
    let line = trim_eol(line);
    if line.bytes().next().is_some_and(|c| c.is_ascii_digit()) {
        if let Some(entry) = parse_dos_line(line) {
            return finish(entry);
        }
    }
    if is_total_line(line) {
        return None;
    }
    match parse_unix_line(line, now) {
        Some(entry) => finish(entry),
        None => {
            if !line.trim().is_empty() {
                log::debug!("unparsable LIST line: {line:?}");
            }
            None
        }
    }
}

/// `total 1234` (the block count `ls -l` prints first).
fn is_total_line(line: &str) -> bool {
    let mut fields = line.split_ascii_whitespace();
    matches!(
        (fields.next(), fields.next(), fields.next()),
        (Some(t), Some(n), None) if t.eq_ignore_ascii_case("total") && is_digits(n)
    )
}

fn parse_unix_line(line: &str, now: SystemTime) -> Option<Entry> {
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

/// `H:MM` or `HH:MM` (24-hour).
fn parse_hh_mm(s: &str) -> Option<(i64, i64)> {
    let (h, m) = s.split_once(':')?;
    if !(1..=2).contains(&h.len()) || m.len() != 2 || !is_digits(h) || !is_digits(m) {
        return None;
    }
    Some((digits_value(h.as_bytes())?, digits_value(m.as_bytes())?))
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

/// DOS/IIS: `01-15-24  10:30AM       <DIR>          dirname` or
/// `01-15-2024  22:30              1234 file name.txt`.
fn parse_dos_line(line: &str) -> Option<Entry> {
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

// ---------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------

/// Final checks common to every parser: skip `.`/`..`, refuse unusable names.
fn finish(entry: Entry) -> Option<Entry> {
    if entry.name == "." || entry.name == ".." {
        return None;
    }
    if !is_valid_name(&entry.name) {
        log::warn!("skipping listing entry with unusable name {:?}", entry.name);
        return None;
    }
    Some(entry)
}

/// Drops a trailing CR/LF the caller may have left on the line.
fn trim_eol(line: &str) -> &str {
    line.trim_end_matches(['\r', '\n'])
}

/// Byte ranges of the first `max` space/tab-separated fields of `line`.
fn split_fields(line: &str, max: usize) -> Vec<(usize, usize)> {
    let mut fields = Vec::with_capacity(max.min(16));
    let b = line.as_bytes();
    let mut i = 0;
    while i < b.len() && fields.len() < max {
        while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
            i += 1;
        }
        if i == b.len() {
            break;
        }
        let start = i;
        while i < b.len() && b[i] != b' ' && b[i] != b'\t' {
            i += 1;
        }
        fields.push((start, i));
    }
    fields
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit())
}

/// The value of a short run of ASCII digits (at most 18, so it cannot overflow).
fn digits_value(digits: &[u8]) -> Option<i64> {
    if digits.is_empty() || digits.len() > 18 {
        return None;
    }
    digits.iter().try_fold(0i64, |acc, &c| {
        c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
    })
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// Seconds since the Unix epoch, negative before it, saturating.
fn now_secs(now: SystemTime) -> i64 {
    match now.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

fn to_system_time(secs: i64, nanos: u32) -> Option<SystemTime> {
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
fn civil_to_secs(
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
fn civil_from_days(days: i64) -> (i64, i64, i64) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn time_val_round_trips() {
        let t = utc(2024, 2, 29, 23, 5, 9);
        assert_eq!(format_time_val(t), "20240229230509");
        assert_eq!(format_time_val(UNIX_EPOCH), "19700101000000");
        let line = format!("type=file;size=1;modify={}; f", format_time_val(t));
        assert_eq!(parse_mlsd_line(&line).and_then(|e| e.mtime), Some(t));
    }

    /// A UTC time from its parts (test helper).
    fn utc(y: i64, mo: i64, d: i64, h: i64, mi: i64, s: i64) -> SystemTime {
        to_system_time(civil_to_secs(y, mo, d, h, mi, s).unwrap(), 0).unwrap()
    }

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_string).collect()
    }

    fn find<'a>(entries: &'a [Entry], name: &str) -> &'a Entry {
        entries
            .iter()
            .find(|e| e.name == name)
            .unwrap_or_else(|| panic!("no entry {name:?} in {entries:#?}"))
    }

    /// When the fixtures were captured (a few minutes after the files were made).
    fn capture_time() -> SystemTime {
        utc(2026, 11, 23, 16, 20, 0)
    }

    const PYFTPDLIB_MLSD: &str = include_str!("../../tests/fixtures/listings/pyftpdlib-mlsd.txt");
    const PYFTPDLIB_MLSD_UNIX: &str =
        include_str!("../../tests/fixtures/listings/pyftpdlib-mlsd-unix.txt");
    const PYFTPDLIB_LIST: &str = include_str!("../../tests/fixtures/listings/pyftpdlib-list.txt");
    const VSFTPD_LIST: &str = include_str!("../../tests/fixtures/listings/vsftpd-list.txt");
    const DOS_IIS: &str = include_str!("../../tests/fixtures/listings/dos-iis.txt");
    const RFC3659_MLSD: &str = include_str!("../../tests/fixtures/listings/rfc3659-mlsd.txt");
    const HANDWRITTEN_MLSD: &str =
        include_str!("../../tests/fixtures/listings/handwritten-mlsd.txt");
    const PUREFTPD_MLSD: &str = include_str!("../../tests/fixtures/listings/pureftpd-mlsd.txt");
    const PUREFTPD_LIST: &str = include_str!("../../tests/fixtures/listings/pureftpd-list.txt");
    const PROFTPD_MLSD: &str = include_str!("../../tests/fixtures/listings/proftpd-mlsd.txt");
    const PROFTPD_LIST: &str = include_str!("../../tests/fixtures/listings/proftpd-list.txt");

    /// Names in the captured scratch directory that every real-server listing shows.
    const COMMON_NAMES: [&str; 16] = [
        " leading-space-dir",
        ".hidden",
        "big.bin",
        "empty.txt",
        "link-abs",
        "link-rel",
        "link-to-dir",
        "name with  spaces.txt",
        "numeric-owner.txt",
        "old.txt",
        "private.txt",
        "recent.txt",
        "semi;colon.txt",
        "setuid.bin",
        "small.txt",
        "ünïcødé-日本.txt",
    ];

    // --- date helpers ---------------------------------------------------------

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

    // --- MLSD ------------------------------------------------------------------

    #[test]
    fn mlsd_basic_line() {
        let e =
            parse_mlsd_line("type=file;size=1234;modify=20240115103000;unix.mode=0644; a b.txt")
                .unwrap();
        assert_eq!(e.name, "a b.txt");
        assert_eq!(e.kind, EntryKind::File);
        assert_eq!(e.size, 1234);
        assert_eq!(e.mtime, Some(utc(2024, 1, 15, 10, 30, 0)));
        assert_eq!(e.mode, Some(0o644));
        assert_eq!(e.target, None);
    }

    #[test]
    fn mlsd_facts_are_case_insensitive_and_symlinks_are_understood() {
        let e =
            parse_mlsd_line("Type=File;Size=3;Modify=20240115103000;UNIX.mode=0755; x").unwrap();
        assert_eq!((e.kind, e.size, e.mode), (EntryKind::File, 3, Some(0o755)));
        let e = parse_mlsd_line("type=OS.unix=slink:/etc/passwd;size=11; pw").unwrap();
        assert_eq!(
            (e.kind, e.target.as_deref()),
            (EntryKind::Symlink, Some("/etc/passwd"))
        );
        let e = parse_mlsd_line("TYPE=os.UNIX=SLINK:rel/target; l").unwrap();
        assert_eq!(
            (e.kind, e.target.as_deref()),
            (EntryKind::Symlink, Some("rel/target"))
        );
        let e = parse_mlsd_line("type=OS.unix=symlink; l").unwrap();
        assert_eq!((e.kind, e.target), (EntryKind::Symlink, None));
        let e = parse_mlsd_line("type=OS.unix=slink:; l").unwrap();
        assert_eq!((e.kind, e.target), (EntryKind::Symlink, None));
        let e = parse_mlsd_line("type=OS.unix=chr-13/29; dev").unwrap();
        assert_eq!(e.kind, EntryKind::File);
        let e = parse_mlsd_line("type=dir;sizd=4096; d").unwrap();
        assert_eq!((e.kind, e.size), (EntryKind::Dir, 4096));
    }

    #[test]
    fn mlsd_skips_cdir_pdir_dots_and_bad_names() {
        for line in [
            "type=cdir;perm=el; /pub",
            "type=pdir;perm=el; ..",
            "type=CDIR; .",
            "type=dir; .",
            "type=dir; ..",
            "type=file; a/b",
            "type=file; a\0b",
            "type=file; ",
            "type=file;",
            "",
            "no facts here",
        ] {
            assert_eq!(parse_mlsd_line(line), None, "{line:?}");
        }
    }

    #[test]
    fn mlsd_name_is_everything_after_the_first_semicolon_space() {
        let e = parse_mlsd_line("type=file;size=1;  two; semi; colons ").unwrap();
        assert_eq!(e.name, " two; semi; colons ");
        let e = parse_mlsd_line(" bare name").unwrap();
        assert_eq!(
            (e.name.as_str(), e.kind, e.size),
            ("bare name", EntryKind::File, 0)
        );
        // Lenient: no ';' before the space.
        let e = parse_mlsd_line("type=dir;size=0 d").unwrap();
        assert_eq!((e.name.as_str(), e.kind), ("d", EntryKind::Dir));
        // A trailing CR left by the caller is dropped.
        assert_eq!(parse_mlsd_line("type=file; f\r").unwrap().name, "f");
    }

    #[test]
    fn mlsd_times_modes_and_sizes_are_validated() {
        let t = |v: &str| {
            parse_mlsd_line(&format!("type=file;modify={v}; f"))
                .unwrap()
                .mtime
        };
        assert_eq!(
            t("20240115103000.5"),
            Some(utc(2024, 1, 15, 10, 30, 0) + Duration::from_millis(500))
        );
        assert_eq!(
            t("20240115103000.123456789123"),
            Some(utc(2024, 1, 15, 10, 30, 0) + Duration::from_nanos(123_456_789))
        );
        assert_eq!(t("20241501103000"), None);
        assert_eq!(t("20240230103000"), None);
        assert_eq!(t("19691231235959"), None);
        assert_eq!(t("2024011510300"), None);
        assert_eq!(t("2024011510300x"), None);
        assert_eq!(t("20240115103000."), None);
        assert_eq!(t("20161231235960"), Some(utc(2016, 12, 31, 23, 59, 59)));

        let m = |v: &str| {
            parse_mlsd_line(&format!("type=file;unix.mode={v}; f"))
                .unwrap()
                .mode
        };
        assert_eq!(m("0644"), Some(0o644));
        assert_eq!(m("644"), Some(0o644));
        assert_eq!(m("0o600"), Some(0o600));
        assert_eq!(m("100644"), Some(0o644));
        assert_eq!(m("04755"), Some(0o4755));
        assert_eq!(m("0999"), None);
        assert_eq!(m("77777777777777777777"), None);
        assert_eq!(m(""), None);

        let s = |v: &str| {
            parse_mlsd_line(&format!("type=file;size={v}; f"))
                .unwrap()
                .size
        };
        assert_eq!(s("18446744073709551615"), u64::MAX);
        assert_eq!(s("18446744073709551616"), 0);
        assert_eq!(s("-1"), 0);
    }

    #[test]
    fn mlsd_perm_gives_a_mode_only_without_unix_mode() {
        let m = |line: &str| parse_mlsd_line(line).unwrap().mode;
        assert_eq!(m("type=file;perm=r; f"), Some(0o444));
        assert_eq!(m("type=file;perm=adfrw; f"), Some(0o644));
        assert_eq!(m("type=file;perm=ra; f"), Some(0o644));
        assert_eq!(m("type=file;perm=; f"), Some(0));
        assert_eq!(m("type=dir;perm=el; d"), Some(0o555));
        assert_eq!(m("type=dir;perm=flcdmpe; d"), Some(0o755));
        assert_eq!(m("type=dir;perm=e; d"), Some(0o111));
        assert_eq!(m("type=file;perm=r;unix.mode=0600; f"), Some(0o600));
        assert_eq!(m("type=file; f"), None);
    }

    #[test]
    fn fixture_pyftpdlib_mlsd() {
        let entries = parse_mlsd(&lines(PYFTPDLIB_MLSD));
        // pyftpdlib stats through symlinks, so the dangling one is missing.
        assert_eq!(entries.len(), 17);
        for name in COMMON_NAMES {
            find(&entries, name);
        }
        assert!(entries.iter().all(|e| e.kind != EntryKind::Symlink));
        let e = find(&entries, "big.bin");
        assert_eq!(
            (e.kind, e.size, e.mode),
            (EntryKind::File, 5_000_000, Some(0o444))
        );
        assert_eq!(find(&entries, "empty.txt").size, 0);
        let e = find(&entries, " leading-space-dir");
        assert_eq!((e.kind, e.mode), (EntryKind::Dir, Some(0o555)));
        assert_eq!(find(&entries, "link-to-dir").kind, EntryKind::Dir);
        assert_eq!(find(&entries, "link-rel").size, 6);
        assert_eq!(
            find(&entries, "old.txt").mtime,
            Some(utc(2019, 1, 1, 0, 0, 0))
        );
        assert_eq!(
            find(&entries, "recent.txt").mtime,
            Some(utc(2026, 11, 23, 16, 13, 16))
        );
        assert_eq!(find(&entries, "ünïcødé-日本.txt").size, 1);
    }

    #[test]
    fn fixture_pyftpdlib_mlsd_with_unix_mode() {
        let entries = parse_mlsd(&lines(PYFTPDLIB_MLSD_UNIX));
        assert_eq!(entries.len(), 17);
        assert_eq!(find(&entries, "private.txt").mode, Some(0o600));
        assert_eq!(find(&entries, "small.txt").mode, Some(0o644));
        assert_eq!(find(&entries, "subdir").mode, Some(0o755));
        // pyftpdlib masks unix.mode with 0o777: the setuid bit is lost.
        assert_eq!(find(&entries, "setuid.bin").mode, Some(0o755));
        assert_eq!(find(&entries, "name with  spaces.txt").size, 3);
        assert_eq!(find(&entries, "semi;colon.txt").size, 4);
    }

    #[test]
    fn fixture_rfc3659_mlsd() {
        let entries = parse_mlsd(&lines(RFC3659_MLSD));
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "foobar",
                "device",
                "block",
                "writable",
                "promiscuous",
                "no-exec",
                "two words",
                " leading space",
                "file1",
                "incoming",
                "capmux.tar.z",
                "hatch.c",
                "MacIP-02.txt"
            ]
        );
        let e = find(&entries, "foobar");
        assert_eq!(
            (e.kind, e.target.as_deref()),
            (EntryKind::Symlink, Some("/foobar"))
        );
        assert_eq!(find(&entries, "device").kind, EntryKind::File);
        assert_eq!(find(&entries, "writable").mode, Some(0o644));
        assert_eq!(find(&entries, "promiscuous").mode, Some(0o755));
        assert_eq!(find(&entries, "no-exec").mode, Some(0));
        let e = find(&entries, "capmux.tar.z");
        assert_eq!(
            (e.size, e.mtime),
            (25_730, Some(utc(1994, 7, 28, 9, 58, 54)))
        );
    }

    #[test]
    fn fixture_handwritten_mlsd() {
        let entries = parse_mlsd(&lines(HANDWRITTEN_MLSD));
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "projects",
                "abc.txt",
                "run; me.sh",
                "latest",
                "current",
                "tmp",
                "absurd-size.bin",
                "far-future.txt",
                "year-zero.txt",
                "no-facts-at-all"
            ]
        );
        let e = find(&entries, "projects");
        assert_eq!(
            (e.kind, e.size, e.mode),
            (EntryKind::Dir, 4096, Some(0o750))
        );
        let e = find(&entries, "run; me.sh");
        assert_eq!((e.size, e.mode), (1234, Some(0o4755)));
        assert_eq!(
            e.mtime,
            Some(utc(2024, 1, 15, 10, 30, 0) + Duration::from_millis(123))
        );
        let e = find(&entries, "latest");
        assert_eq!((e.kind, e.target.as_deref()), (EntryKind::Symlink, None));
        let e = find(&entries, "current");
        assert_eq!(
            (e.kind, e.target.as_deref()),
            (EntryKind::Symlink, Some("releases/v1.2"))
        );
        assert_eq!(find(&entries, "tmp").mode, Some(0o1777));
        assert_eq!(find(&entries, "absurd-size.bin").size, 0);
        assert_eq!(
            find(&entries, "far-future.txt").mtime,
            Some(utc(9999, 12, 31, 23, 59, 59))
        );
        assert_eq!(find(&entries, "year-zero.txt").mtime, None);
    }

    // --- LIST, Unix style ----------------------------------------------------------

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

    #[test]
    fn fixture_pyftpdlib_list() {
        let entries = parse_list(&lines(PYFTPDLIB_LIST), capture_time());
        assert_eq!(entries.len(), 18);
        check_unix_fixture(&entries);
    }

    #[test]
    fn fixture_vsftpd_list() {
        let all = lines(VSFTPD_LIST);
        assert!(
            all.iter().any(|l| l.ends_with(" ..")),
            "fixture shows . and .."
        );
        let entries = parse_list(&all, capture_time());
        assert_eq!(entries.len(), all.len() - 2);
        check_unix_fixture(&entries);
    }

    /// Every name of the scratch directory but `hidden` is listed, `.` and `..`
    /// are not, and big.bin is a plain 0644 file of 5,000,000 bytes.
    fn check_common_names(entries: &[Entry], hidden: &[&str]) {
        for name in COMMON_NAMES {
            if hidden.contains(&name) {
                assert!(!entries.iter().any(|e| e.name == name), "{name}");
            } else {
                find(entries, name);
            }
        }
        assert!(!entries.iter().any(|e| e.name == "." || e.name == ".."));
        let e = find(entries, "big.bin");
        assert_eq!(
            (e.kind, e.size, e.mode),
            (EntryKind::File, 5_000_000, Some(0o644))
        );
    }

    /// The pure-ftpd and ProFTPD fixtures were captured from the same scratch
    /// directory (tests/fixtures/listings/README.md), at 18:11 UTC that day.
    fn check_second_capture(entries: &[Entry], symlinks_have_targets: bool, hidden: &[&str]) {
        check_common_names(entries, hidden);
        let e = find(entries, "big.bin");
        assert_eq!(
            e.mtime,
            Some(utc(
                2026,
                11,
                23,
                18,
                11,
                if symlinks_have_targets { 0 } else { 32 }
            ))
        );
        let e = find(entries, " leading-space-dir");
        assert_eq!((e.kind, e.mode), (EntryKind::Dir, Some(0o755)));
        assert_eq!(find(entries, "private.txt").mode, Some(0o600));
        assert_eq!(find(entries, "small.txt").size, 6);
        assert_eq!(find(entries, "empty.txt").size, 0);
        assert_eq!(
            find(entries, "old.txt").mtime,
            Some(utc(2019, 1, 1, 0, 0, 0))
        );
        for (name, target) in [("link-rel", "small.txt"), ("link-to-dir", "subdir")] {
            let e = find(entries, name);
            assert_eq!(e.kind, EntryKind::Symlink, "{name}");
            if symlinks_have_targets {
                assert_eq!(e.target.as_deref(), Some(target), "{name}");
            }
        }
    }

    #[test]
    fn fixture_pureftpd_mlsd() {
        // Upper-case UNIX.* facts, "sizd" for directories, OS.unix=slink: types.
        let all = lines(PUREFTPD_MLSD);
        let entries = parse_mlsd(&all);
        assert_eq!(entries.len(), all.len() - 2, "cdir and pdir are dropped");
        check_second_capture(&entries, false, &[]);
        assert_eq!(find(&entries, "dangling").kind, EntryKind::Symlink);
        assert_eq!(find(&entries, "subdir").kind, EntryKind::Dir);
        assert_eq!(find(&entries, "setuid.bin").mode, Some(0o755));
    }

    #[test]
    fn fixture_proftpd_mlsd() {
        // Facts in another order, no size for directories, OS.unix=symlink types.
        let all = lines(PROFTPD_MLSD);
        let entries = parse_mlsd(&all);
        assert_eq!(entries.len(), all.len() - 2, "cdir and pdir are dropped");
        // ProFTPD leaves out symlinks that point outside the root or nowhere.
        check_second_capture(&entries, false, &["link-abs"]);
        assert!(!entries.iter().any(|e| e.name == "dangling"));
        assert_eq!(find(&entries, "subdir").size, 0);
        assert_eq!(find(&entries, "numeric-owner.txt").size, 2);
    }

    #[test]
    fn fixture_pureftpd_and_proftpd_list() {
        for fixture in [PUREFTPD_LIST, PROFTPD_LIST] {
            let all = lines(fixture);
            let entries = parse_list(&all, utc(2026, 11, 23, 18, 20, 0));
            assert_eq!(entries.len(), all.len() - 2, "{fixture}");
            check_second_capture(&entries, true, &[]);
            let e = find(&entries, "dangling");
            assert_eq!(e.target.as_deref(), Some("does-not-exist"));
            assert_eq!(find(&entries, "setuid.bin").mode, Some(0o755));
        }
    }

    /// What both captured Unix-style listings of the scratch directory must give.
    fn check_unix_fixture(entries: &[Entry]) {
        check_common_names(entries, &[]);
        assert_eq!(find(entries, "empty.txt").size, 0);
        let e = find(entries, " leading-space-dir");
        assert_eq!((e.kind, e.mode), (EntryKind::Dir, Some(0o755)));
        assert_eq!(find(entries, "subdir").kind, EntryKind::Dir);
        for (name, target) in [
            ("link-rel", "small.txt"),
            ("link-abs", "/etc/hostname"),
            ("link-to-dir", "subdir"),
            ("dangling", "does-not-exist"),
        ] {
            let e = find(entries, name);
            assert_eq!(
                (e.kind, e.target.as_deref()),
                (EntryKind::Symlink, Some(target))
            );
            assert_eq!(e.size, target.len() as u64);
        }
        assert_eq!(find(entries, "private.txt").mode, Some(0o600));
        assert_eq!(find(entries, "setuid.bin").mode, Some(0o4755));
        assert_eq!(
            find(entries, "old.txt").mtime,
            Some(utc(2019, 1, 1, 0, 0, 0))
        );
        assert_eq!(
            find(entries, "recent.txt").mtime,
            Some(utc(2026, 11, 23, 16, 13, 0))
        );
        assert_eq!(find(entries, "numeric-owner.txt").size, 1);
        assert_eq!(find(entries, "name with  spaces.txt").size, 3);
        assert_eq!(find(entries, "semi;colon.txt").size, 4);
        assert_eq!(find(entries, "ünïcødé-日本.txt").size, 1);
    }

    // --- LIST, DOS/IIS style -------------------------------------------------------

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

    #[test]
    fn fixture_dos_iis() {
        let entries = parse_list(&lines(DOS_IIS), capture_time());
        assert_eq!(entries.len(), 14);
        let e = find(&entries, "dirname");
        assert_eq!(
            (e.kind, e.mtime),
            (EntryKind::Dir, Some(utc(2024, 1, 15, 10, 30, 0)))
        );
        let e = find(&entries, "file name.txt");
        assert_eq!((e.kind, e.size), (EntryKind::File, 1234));
        assert_eq!(
            find(&entries, "$LDR$").mtime,
            Some(utc(1995, 5, 26, 10, 57, 0))
        );
        assert_eq!(
            find(&entries, "bin").mtime,
            Some(utc(1997, 1, 20, 12, 48, 0))
        );
        assert_eq!(
            find(&entries, "midnight.log").mtime,
            Some(utc(2024, 2, 29, 0, 5, 0))
        );
        assert_eq!(find(&entries, "Dir With Spaces").kind, EntryKind::Dir);
        assert_eq!(find(&entries, "four-digit-year.exe").size, 143_712);
        let e = find(&entries, "logs-24h");
        assert_eq!(
            (e.kind, e.mtime),
            (EntryKind::Dir, Some(utc(2024, 1, 15, 14, 5, 0)))
        );
        assert_eq!(find(&entries, "huge.iso").size, 5_000_000_000);
        assert_eq!(find(&entries, "Ünïcödé räksmörgås.txt").size, 42);
    }

    // --- robustness -----------------------------------------------------------------

    proptest! {
        #[test]
        fn parsers_never_panic_on_arbitrary_text(s in "\\PC{0,200}", secs in any::<i64>()) {
            let now = if secs >= 0 {
                UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs() >> 2)
            } else {
                UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs() >> 30)
            };
            check_entries(parse_mlsd_line(&s).into_iter().collect());
            check_entries(parse_list_line(&s, now).into_iter().collect());
            check_entries(parse_mlsd(&[s.clone(), s.clone()]));
            check_entries(parse_list(std::slice::from_ref(&s), now));
        }

        #[test]
        fn parsers_never_panic_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let s = String::from_utf8_lossy(&bytes).into_owned();
            check_entries(parse_mlsd(std::slice::from_ref(&s)));
            check_entries(parse_list(std::slice::from_ref(&s), SystemTime::now()));
        }

        #[test]
        fn parsers_never_panic_on_listing_shaped_text(
            unix in "[-dlcbps?][rwxsStTl-]{9}[+.@ ]? {1,3}[0-9]{1,3} [a-z0-9]{0,8} ?[a-z0-9]{0,8} [0-9]{1,25} [A-Za-z]{3} [0-9]{1,3} ([0-9]{1,2}:[0-9]{2}(:[0-9]{2})?|[0-9]{1,6}) [ \\PC]{0,20}",
            dos in "[0-9]{1,2}[-/][0-9]{1,2}[-/][0-9]{1,5} {1,3}[0-9]{1,2}:[0-9]{1,3}([AaPp][Mm])? {1,9}(<DIR>|[0-9]{1,25}) {1,9}[ \\PC]{0,20}",
            mlsd in "(([A-Za-z.]{1,9}=[\\PC&&[^; ]]{0,20};){0,6}|(type=OS\\.unix=s(lin|ym)k:[a-z/]{0,9};)) ?[ ;\\PC]{0,20}",
        ) {
            let now = SystemTime::now();
            check_entries(parse_list(&[unix, dos.clone()], now));
            check_entries(parse_list(std::slice::from_ref(&dos), UNIX_EPOCH));
            check_entries(parse_mlsd(&[mlsd]));
        }
    }

    /// Whatever comes out must satisfy the [`Entry`] invariants.
    fn check_entries(entries: Vec<Entry>) {
        for e in entries {
            assert!(is_valid_name(&e.name), "{e:?}");
            assert!(e.mode.is_none_or(|m| m <= 0o7777), "{e:?}");
            if let Some(t) = e.mtime {
                assert!(
                    t >= UNIX_EPOCH && t <= utc(9999, 12, 31, 23, 59, 59) + Duration::from_secs(1)
                );
            }
        }
    }
}
