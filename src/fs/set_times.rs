//! The exact modification times ftpfs set on files (MFMT, or MDTM with a
//! time), remembered across mounts in `cache_dir`. A LIST shows only minutes
//! (only the day for older files), so without them `rsync -a` onto a fresh
//! mount of a LIST-only server would re-send every file. A remembered time is
//! shown only while the server's listing agrees with it: the same size, and a
//! listed time that is that second, or the start of its minute or its day. On
//! a server that cannot store times, the server's own time for the file (asked
//! once, with MDTM) is remembered too, and a listing that agrees with it counts.
//! Anything else means the file changed since: the record is dropped and the
//! listing's time is shown.
//!
//! The file is a log of lines, read at mount and compacted when it has grown
//! to twice what it holds: `T SECS SIZE SERVER PATH` remembers (SERVER is the
//! server's own time, or `-`), `D PATH` forgets a path and everything under it. Losing it costs re-sent files, never data,
//! so it is not fsync'd.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::remote::{Entry, EntryKind};
use crate::sync::lock;

/// Lines beyond twice the live records (plus this slack) trigger a compaction.
const COMPACT_SLACK: usize = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Known {
    secs: i64,
    size: u64,
    /// The server's own time, where it did not take ours.
    server: Option<i64>,
}

impl Known {
    fn line(&self, path: &str) -> String {
        let server = self.server.map_or("-".to_string(), |s| s.to_string());
        format!("T {} {} {server} {path}\n", self.secs, self.size)
    }
}

#[derive(Default)]
struct Inner {
    known: HashMap<String, Known>,
    /// Lines in the file.
    lines: usize,
    out: Option<File>,
}

/// Times set by ftpfs, by path (see the module doc).
pub struct SetTimes {
    file: Option<PathBuf>,
    inner: Mutex<Inner>,
}

impl SetTimes {
    /// Kept for this mount only.
    pub fn in_memory() -> Self {
        SetTimes {
            file: None,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Loads `file` (a missing one is empty); an unreadable one is logged and
    /// the times are kept for this mount only.
    pub fn open(file: &Path) -> Self {
        let mut inner = Inner::default();
        match read_log(file, &mut inner.known) {
            Ok(lines) => inner.lines = lines,
            Err(e) => {
                log::warn!("cannot read {}: {e}; starting afresh", file.display());
            }
        }
        let times = SetTimes {
            file: Some(file.to_path_buf()),
            inner: Mutex::new(inner),
        };
        {
            let mut inner = lock(&times.inner);
            if inner.lines > inner.known.len() + COMPACT_SLACK / 8 {
                times.compact(&mut inner);
            }
        }
        times
    }

    /// Remembers that the server's file at `path`, `size` bytes, got time `t`
    /// (or, where the server kept its own time `server`, is to show `t`).
    pub fn remember(&self, path: &str, size: u64, t: SystemTime, server: Option<SystemTime>) {
        let Some(secs) = secs_of(t) else {
            return;
        };
        let k = Known {
            secs,
            size,
            server: server.and_then(secs_of),
        };
        let mut inner = lock(&self.inner);
        if inner.known.insert(path.to_string(), k) != Some(k) {
            self.append(&mut inner, &k.line(path));
        }
    }

    /// Forgets `path` and everything under it (unlinked, rewritten, removed).
    pub fn forget(&self, path: &str) {
        let mut inner = lock(&self.inner);
        if remove_tree(&mut inner.known, path).is_empty() {
            return;
        }
        self.append(&mut inner, &format!("D {path}\n"));
    }

    /// `from` (and everything under it) is now `to`, which it replaced.
    pub fn rename(&self, from: &str, to: &str) {
        let mut inner = lock(&self.inner);
        let replaced = remove_tree(&mut inner.known, to);
        let moved = remove_tree(&mut inner.known, from);
        if replaced.is_empty() && moved.is_empty() {
            return;
        }
        let mut lines = format!("D {to}\nD {from}\n");
        for (p, k) in moved {
            let p = format!("{to}{}", &p[from.len()..]);
            lines.push_str(&k.line(&p));
            inner.known.insert(p, k);
        }
        self.append(&mut inner, &lines);
    }

    /// Gives the files of a fresh listing of `dir` the exact times that still
    /// hold; drops the records that no longer do.
    pub fn apply(&self, dir: &str, entries: &mut [Entry]) {
        let mut inner = lock(&self.inner);
        if inner.known.is_empty() {
            return;
        }
        let mut stale = Vec::new();
        for e in entries.iter_mut().filter(|e| e.kind == EntryKind::File) {
            let path = join(dir, &e.name);
            let Some(k) = inner.known.get(&path).copied() else {
                continue;
            };
            match e.mtime.and_then(secs_of) {
                Some(listed)
                    if e.size == k.size
                        && (agrees(listed, k.secs)
                            || k.server.is_some_and(|s| agrees(listed, s))) =>
                {
                    e.mtime = Some(UNIX_EPOCH + Duration::from_secs(k.secs as u64));
                }
                _ => stale.push(path),
            }
        }
        let mut lines = String::new();
        for p in stale {
            log::debug!("{p} changed on the server since ftpfs set its time");
            inner.known.remove(&p);
            lines.push_str(&format!("D {p}\n"));
        }
        if !lines.is_empty() {
            self.append(&mut inner, &lines);
        }
    }

    fn append(&self, inner: &mut Inner, lines: &str) {
        let Some(file) = &self.file else {
            return;
        };
        inner.lines += lines.matches('\n').count();
        if inner.lines > 2 * inner.known.len() + COMPACT_SLACK {
            self.compact(inner);
            return;
        }
        if inner.out.is_none() {
            match OpenOptions::new().create(true).append(true).open(file) {
                Ok(f) => inner.out = Some(f),
                Err(e) => {
                    log::warn!("cannot write {}: {e}", file.display());
                    return;
                }
            }
        }
        if let Some(out) = inner.out.as_mut() {
            if let Err(e) = out.write_all(lines.as_bytes()) {
                log::warn!("cannot write {}: {e}", file.display());
            }
        }
    }

    /// Rewrites the file with what it holds now.
    fn compact(&self, inner: &mut Inner) {
        let Some(file) = &self.file else {
            return;
        };
        let tmp = file.with_extension("tmp");
        let written = (|| -> io::Result<()> {
            let mut out = io::BufWriter::new(File::create(&tmp)?);
            for (p, k) in &inner.known {
                out.write_all(k.line(p).as_bytes())?;
            }
            out.into_inner().map_err(|e| e.into_error())?;
            std::fs::rename(&tmp, file)
        })();
        inner.out = None;
        match written {
            Ok(()) => inner.lines = inner.known.len(),
            Err(e) => {
                log::warn!("cannot rewrite {}: {e}", file.display());
                let _ = std::fs::remove_file(&tmp);
            }
        }
    }
}

/// Whether a listed time (whole seconds) can be the listing's view of `set`:
/// that second, or the start of its minute (LIST) or of its day (LIST of a
/// file older than six months).
fn agrees(listed: i64, set: i64) -> bool {
    let behind = set - listed;
    listed == set
        || (listed % 60 == 0 && (0..60).contains(&behind))
        || (listed % 86_400 == 0 && (0..86_400).contains(&behind))
}

fn secs_of(t: SystemTime) -> Option<i64> {
    t.duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_secs()).ok())
}

fn join(dir: &str, name: &str) -> String {
    format!("{}/{name}", dir.trim_end_matches('/'))
}

/// Removes `path` and everything under it; returns what was removed.
fn remove_tree(known: &mut HashMap<String, Known>, path: &str) -> Vec<(String, Known)> {
    let prefix = format!("{path}/");
    let gone: Vec<String> = known
        .keys()
        .filter(|p| *p == path || p.starts_with(&prefix))
        .cloned()
        .collect();
    gone.into_iter()
        .filter_map(|p| known.remove(&p).map(|k| (p, k)))
        .collect()
}

/// Replays the log into `known`; returns its number of lines.
fn read_log(file: &Path, known: &mut HashMap<String, Known>) -> io::Result<usize> {
    let f = match File::open(file) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut lines = 0;
    for line in BufReader::new(f).lines() {
        let line = line?;
        lines += 1;
        if let Some(path) = line.strip_prefix("D ") {
            remove_tree(known, path);
        } else if let Some(rest) = line.strip_prefix("T ") {
            let mut parts = rest.splitn(4, ' ');
            let (Some(secs), Some(size), Some(server), Some(path)) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let server = match server {
                "-" => Ok(None),
                s => s.parse().map(Some),
            };
            if let (Ok(secs), Ok(size), Ok(server)) = (secs.parse(), size.parse(), server) {
                known.insert(path.to_string(), Known { secs, size, server });
            }
        }
        // Anything else is a torn last line: skipped.
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn file(name: &str, size: u64, secs: u64) -> Entry {
        let mut e = Entry::new(name, EntryKind::File, size);
        e.mtime = Some(at(secs));
        e
    }

    /// 2026-12-05 10:41:37 UTC, and its minute and day as LIST shows them.
    const SET: u64 = 1_796_467_297;
    const MINUTE: u64 = SET - SET % 60;
    const DAY: u64 = SET - SET % 86_400;

    #[test]
    fn a_listing_to_the_minute_or_day_gets_the_exact_time_back() {
        let t = SetTimes::in_memory();
        t.remember("/d/a", 10, at(SET), None);
        t.remember("/d/b", 10, at(SET), None);
        t.remember("/d/c", 10, at(SET), None);
        let mut l = vec![
            file("a", 10, MINUTE),
            file("b", 10, DAY),
            file("c", 10, SET),
        ];
        t.apply("/d", &mut l);
        assert!(l.iter().all(|e| e.mtime == Some(at(SET))));
    }

    #[test]
    fn a_changed_size_or_another_time_drops_the_record() {
        let t = SetTimes::in_memory();
        for name in ["/a", "/b", "/c"] {
            t.remember(name, 10, at(SET), None);
        }
        let mut l = vec![
            file("a", 11, MINUTE),
            file("b", 10, MINUTE + 60),
            file("c", 10, SET - 1), // seconds, but not ours
        ];
        t.apply("/", &mut l);
        assert_eq!(l[0].mtime, Some(at(MINUTE)));
        assert_eq!(l[1].mtime, Some(at(MINUTE + 60)));
        assert_eq!(l[2].mtime, Some(at(SET - 1)));
        // Gone for good: the same listing as at first no longer gets it.
        let mut again = vec![file("a", 10, MINUTE)];
        t.apply("/", &mut again);
        assert_eq!(again[0].mtime, Some(at(MINUTE)));
    }

    #[test]
    fn the_servers_own_time_counts_where_it_kept_it() {
        let t = SetTimes::in_memory();
        let server = SET + 5000;
        t.remember("/a", 10, at(SET), Some(at(server)));
        let mut l = vec![file("a", 10, server - server % 60)];
        t.apply("/", &mut l);
        assert_eq!(l[0].mtime, Some(at(SET)));
    }

    #[test]
    fn renames_move_trees_and_forget_drops_them() {
        let t = SetTimes::in_memory();
        t.remember("/x/f", 1, at(SET), None);
        t.remember("/x/sub/g", 2, at(SET), None);
        t.remember("/y/f", 1, at(SET - 3600), None);
        t.rename("/x", "/y");
        let mut l = vec![file("f", 1, MINUTE)];
        t.apply("/y", &mut l);
        assert_eq!(l[0].mtime, Some(at(SET)), "moved, and replaced /y/f");
        let mut l = vec![file("g", 2, MINUTE)];
        t.apply("/y/sub", &mut l);
        assert_eq!(l[0].mtime, Some(at(SET)));
        let mut l = vec![file("f", 1, MINUTE)];
        t.apply("/x", &mut l);
        assert_eq!(l[0].mtime, Some(at(MINUTE)), "nothing left at the old name");
        t.forget("/y");
        let mut l = vec![file("g", 2, MINUTE)];
        t.apply("/y/sub", &mut l);
        assert_eq!(l[0].mtime, Some(at(MINUTE)));
    }

    #[test]
    fn the_log_survives_a_remount_and_is_compacted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("times");
        {
            let t = SetTimes::open(&path);
            t.remember("/a b/c d", 5, at(SET), Some(at(SET + 7)));
            t.remember("/gone", 5, at(SET), None);
            t.forget("/gone");
            t.rename("/a b", "/e");
            for i in 0..3000 {
                t.remember("/churn", i, at(SET), None);
            }
        }
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(
            text.lines().count() < 2 * 2 + COMPACT_SLACK + 10,
            "compacted"
        );
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(b"T 12 torn"))
            .expect("append");
        let t = SetTimes::open(&path);
        let mut l = vec![file("c d", 5, SET + 7)];
        t.apply("/e", &mut l);
        assert_eq!(l[0].mtime, Some(at(SET)));
        let mut l = vec![file("gone", 5, MINUTE), file("churn", 2999, MINUTE)];
        t.apply("/", &mut l);
        assert_eq!(l[0].mtime, Some(at(MINUTE)));
        assert_eq!(l[1].mtime, Some(at(SET)));
    }
}
