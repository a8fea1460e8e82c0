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
//!
//! This file holds the entry points and the checks every parser ends with; the
//! formats live in `mlsd`, `unix` and `dos`, date arithmetic in `time`, and
//! field splitting in `text`.

mod dos;
mod mlsd;
mod text;
mod time;
mod unix;

#[cfg(test)]
mod tests;

use crate::remote::{is_valid_name, Entry};
use std::time::SystemTime;

pub use mlsd::{parse_mlsd, parse_mlsd_line, parse_time_val};
pub use time::format_time_val;

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
        if let Some(entry) = dos::parse_dos_line(line) {
            return finish(entry);
        }
    }
    if unix::is_total_line(line) {
        return None;
    }
    match unix::parse_unix_line(line, now) {
        Some(entry) => finish(entry),
        None => {
            if !line.trim().is_empty() {
                log::debug!("unparsable LIST line: {line:?}");
            }
            None
        }
    }
}

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
