//! `MLSD` lines (RFC 3659): `fact=value;...; name` into entries, with the
//! facts' types, sizes, times and modes.

use super::text::{digits_value, strip_prefix_ignore_case};
use super::time::{civil_to_secs, to_system_time};
use super::{finish, trim_eol};
use crate::remote::{Entry, EntryKind};
use std::time::SystemTime;

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
            mtime = parse_time_val(value);
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

/// `YYYYMMDDHHMMSS[.fraction]` in UTC (MLSD facts, MDTM replies).
pub fn parse_time_val(value: &str) -> Option<SystemTime> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ftp::listing::time::utc;
    use std::time::Duration;

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
}
