//! The reference model: what POSIX says a local filesystem does. Paths map to
//! inodes, inodes hold bytes, and open handles refer to inodes, so that a file
//! unlinked while open keeps its data for its handles (and never comes back),
//! and a rename keeps handles attached.
//!
//! Each inode also records whether its current content was acknowledged as
//! saved (a successful fsync, a successful close of a writable handle, or a
//! truncate while no writable handle is open), and each missing path whether its
//! absence is certain: those are what the server must show at the end.

use std::collections::BTreeMap;

use crate::ops::{Op, OpenFlags, Outcome, MAX_HANDLES, PATHS};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inode {
    pub data: Vec<u8>,
    /// The server holds exactly `data` at the inode's path.
    pub acked: bool,
    /// A close or fsync of exactly `data` failed: the filesystem still holds it
    /// and must upload it once the server works again.
    pub pending: bool,
    /// Bumped at every change of `data`.
    pub version: u64,
    /// What a crash leaves (async mode): the content as the last close, fsync,
    /// rename or truncate without writers saved it; None if never saved.
    pub durable: Option<Vec<u8>>,
    /// Contents since then, which a background upload may have sent.
    pub since: Vec<Vec<u8>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handle {
    pub ino: usize,
    pub read: bool,
    pub write: bool,
    pub append: bool,
    /// The inode's version when the handle was opened.
    pub opened_at: u64,
    /// The inode's content was saved when the handle was opened.
    pub opened_saved: bool,
    /// The open created the file: ftpfs writes it through this handle, whatever
    /// its access mode, so its close saves it.
    pub created: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Model {
    pub files: BTreeMap<&'static str, usize>,
    pub inodes: Vec<Inode>,
    pub handles: Vec<Handle>,
    /// Missing paths whose absence on the server is certain.
    pub surely_absent: BTreeMap<&'static str, bool>,
}

fn errno(e: i32) -> Outcome {
    Outcome::Err(e)
}

impl Model {
    pub fn new(initial: &[Option<Vec<u8>>]) -> Self {
        let mut m = Model::default();
        for (path, data) in PATHS.iter().zip(initial) {
            match data {
                Some(d) => {
                    let ino = m.new_inode(d.clone(), true);
                    m.files.insert(path, ino);
                }
                None => {
                    m.surely_absent.insert(path, true);
                }
            }
        }
        m
    }

    fn new_inode(&mut self, data: Vec<u8>, acked: bool) -> usize {
        let durable = acked.then(|| data.clone());
        self.inodes.push(Inode {
            since: vec![data.clone()],
            data,
            acked,
            pending: false,
            version: 0,
            durable,
        });
        self.inodes.len() - 1
    }

    /// The content of `ino` changed.
    fn changed(&mut self, ino: usize) {
        let i = &mut self.inodes[ino];
        i.version += 1;
        i.since.push(i.data.clone());
    }

    /// The content of `ino` is saved: in the journal or on the server.
    fn saved(&mut self, ino: usize) {
        let i = &mut self.inodes[ino];
        i.durable = Some(i.data.clone());
        i.since.clear();
    }

    /// What the mount may show at `path` after a crash: None for no file.
    pub fn after_crash(&self, path: &str) -> Vec<Option<Vec<u8>>> {
        let Some(&ino) = self.files.get(path) else {
            return vec![None];
        };
        let i = &self.inodes[ino];
        match &i.durable {
            None => vec![None],
            Some(d) => std::iter::once(d.clone())
                .chain(i.since.iter().cloned())
                .map(Some)
                .collect(),
        }
    }

    /// A crash left `seen` at `path` (one of [`after_crash`](Self::after_crash)).
    pub fn recovered(&mut self, path: &'static str, seen: Option<Vec<u8>>) {
        match (seen, self.files.get(path).copied()) {
            (Some(d), Some(ino)) => {
                let i = &mut self.inodes[ino];
                i.data = d;
                i.version += 1;
                i.acked = false;
                i.pending = false;
                self.saved(ino);
            }
            (None, Some(_)) => {
                self.remove_path(path);
            }
            _ => {}
        }
    }

    /// The handle an operation's index picks, if any is open.
    pub fn pick(&self, h: usize) -> Option<usize> {
        (!self.handles.is_empty()).then(|| h % self.handles.len())
    }

    pub fn path_of(&self, ino: usize) -> Option<&'static str> {
        self.files.iter().find(|(_, i)| **i == ino).map(|(p, _)| *p)
    }

    /// Whether a handle that ftpfs counts as writing has `ino` open.
    fn writers(&self, ino: usize) -> bool {
        self.handles
            .iter()
            .any(|h| h.ino == ino && (h.write || h.created))
    }

    fn remove_path(&mut self, path: &'static str) -> Option<usize> {
        let ino = self.files.remove(path);
        self.surely_absent.insert(path, true);
        ino
    }

    fn set_path(&mut self, path: &'static str, ino: usize) {
        self.files.insert(path, ino);
        self.surely_absent.remove(path);
    }

    /// Applies `op` and returns what POSIX says it returns.
    pub fn apply(&mut self, op: &Op) -> Outcome {
        match op {
            Op::Open { path, flags } => self.open(PATHS[*path], *flags),
            Op::Write { h, offset, data } => {
                let Some(i) = self.pick(*h) else {
                    return Outcome::Skipped;
                };
                let hd = self.handles[i];
                if !hd.write {
                    return errno(libc::EBADF);
                }
                let ino = &mut self.inodes[hd.ino];
                let at = if hd.append {
                    ino.data.len()
                } else {
                    *offset as usize
                };
                write_at(&mut ino.data, at, data);
                ino.acked = false;
                ino.pending = false;
                self.changed(hd.ino);
                Outcome::Ok
            }
            Op::Append { h, data } => {
                let Some(i) = self.pick(*h) else {
                    return Outcome::Skipped;
                };
                let hd = self.handles[i];
                if !hd.write {
                    return errno(libc::EBADF);
                }
                let ino = &mut self.inodes[hd.ino];
                let at = ino.data.len();
                write_at(&mut ino.data, at, data);
                ino.acked = false;
                ino.pending = false;
                self.changed(hd.ino);
                Outcome::Ok
            }
            Op::Read { h, offset, len } => {
                let Some(i) = self.pick(*h) else {
                    return Outcome::Skipped;
                };
                let hd = self.handles[i];
                if !hd.read {
                    return errno(libc::EBADF);
                }
                let d = &self.inodes[hd.ino].data;
                let start = (*offset as usize).min(d.len());
                let end = (start + *len as usize).min(d.len());
                Outcome::Data(d[start..end].to_vec())
            }
            Op::Truncate { path, size } => {
                let Some(&ino) = self.files.get(PATHS[*path]) else {
                    return errno(libc::ENOENT);
                };
                let writers = self.writers(ino);
                let i = &mut self.inodes[ino];
                i.data.resize(*size as usize, 0);
                i.acked = !writers;
                i.pending = false;
                self.changed(ino);
                if !writers {
                    self.saved(ino);
                }
                Outcome::Ok
            }
            Op::Rename { from, to } => {
                let (from, to) = (PATHS[*from], PATHS[*to]);
                if !self.files.contains_key(from) {
                    return errno(libc::ENOENT);
                }
                if from != to {
                    if let Some(ino) = self.remove_path(from) {
                        // A file is saved under its old name before it moves.
                        self.saved(ino);
                        self.set_path(to, ino);
                    }
                }
                Outcome::Ok
            }
            Op::Unlink { path } => match self.remove_path(PATHS[*path]) {
                Some(_) => Outcome::Ok,
                None => errno(libc::ENOENT),
            },
            Op::Fsync { h } => {
                let Some(i) = self.pick(*h) else {
                    return Outcome::Skipped;
                };
                let ino = self.handles[i].ino;
                self.inodes[ino].acked = true;
                self.inodes[ino].pending = false;
                self.saved(ino);
                Outcome::Ok
            }
            Op::Close { h } => {
                let Some(i) = self.pick(*h) else {
                    return Outcome::Skipped;
                };
                let hd = self.handles.remove(i);
                if hd.write {
                    self.inodes[hd.ino].acked = true;
                    self.inodes[hd.ino].pending = false;
                }
                if hd.write || hd.created {
                    self.saved(hd.ino);
                }
                Outcome::Ok
            }
            Op::Crash => {
                self.handles.clear();
                Outcome::Ok
            }
            Op::Stat { path } => match self.files.get(PATHS[*path]) {
                Some(&ino) => Outcome::Size(self.inodes[ino].data.len() as u64),
                None => errno(libc::ENOENT),
            },
        }
    }

    fn open(&mut self, path: &'static str, flags: OpenFlags) -> Outcome {
        if self.handles.len() >= MAX_HANDLES {
            return Outcome::Skipped;
        }
        let created = flags.create && !self.files.contains_key(path);
        let ino = match self.files.get(path) {
            Some(_) if flags.create && flags.excl => return errno(libc::EEXIST),
            Some(&ino) => {
                if flags.trunc {
                    let i = &mut self.inodes[ino];
                    i.data.clear();
                    i.acked = false;
                    i.pending = false;
                    self.changed(ino);
                }
                ino
            }
            None if !flags.create => return errno(libc::ENOENT),
            None => {
                let ino = self.new_inode(Vec::new(), false);
                self.set_path(path, ino);
                ino
            }
        };
        let opened_at = self.inodes[ino].version;
        let opened_saved = self.inodes[ino].acked;
        self.handles.push(Handle {
            created,
            opened_at,
            opened_saved,
            ino,
            read: flags.access.reads(),
            write: flags.access.writes(),
            append: flags.append,
        });
        Outcome::Ok
    }

    /// After a close or fsync that failed: the data is not saved yet, but the
    /// filesystem keeps it and retries.
    pub fn save_failed(&mut self, ino: usize) {
        let i = &mut self.inodes[ino];
        i.acked = false;
        i.pending = true;
    }

    /// After an operation whose outcome is unknown: nothing about `paths` and
    /// `inodes` is known to be on the server any more.
    pub fn forget_saved(&mut self, paths: &[&'static str], inodes: &[usize]) {
        for p in paths {
            if let Some(&ino) = self.files.get(p) {
                self.inodes[ino].acked = false;
                self.inodes[ino].pending = false;
            } else {
                self.surely_absent.insert(p, false);
            }
        }
        for &i in inodes {
            self.inodes[i].acked = false;
            self.inodes[i].pending = false;
        }
    }
}

/// `pwrite` into a byte vector: a gap before `at` reads as zeros.
fn write_at(d: &mut Vec<u8>, at: usize, data: &[u8]) {
    if d.len() < at + data.len() {
        d.resize(at + data.len(), 0);
    }
    d[at..at + data.len()].copy_from_slice(data);
}

/// Divergences that FTP itself forces, stepped around by default (SEMANTICS.md,
/// "Consistency"): a server file has no identity apart from its path, so a
/// read-only handle reads what the server has at that path now, up to the size it
/// saw at open (`stale-reader`), and a file replaced by a rename while it is open
/// is gone for its handles (`rename-over-open`), and so is a file unlinked while
/// a read-only handle has it open (`unlink-of-open-reader`). `REFTEST_SKIP` (comma-separated)
/// replaces the list, e.g. `REFTEST_SKIP=none` to see them fail.
const FTP_LIMITS: &str = "stale-reader,rename-over-open,unlink-of-open-reader";

pub fn skip_known(m: &Model, op: &Op) -> bool {
    let list = std::env::var("REFTEST_SKIP").unwrap_or_else(|_| FTP_LIMITS.to_string());
    let on = |name: &str| list.split(',').any(|n| n == name);
    let open = |p: &str| {
        m.files
            .get(p)
            .is_some_and(|i| m.handles.iter().any(|h| h.ino == *i))
    };
    match op {
        // Renaming over a file that is open.
        Op::Rename { from, to } => {
            from != to
                && ((on("rename-over-open") && open(PATHS[*to]))
                    || (on("rename-of-open") && open(PATHS[*from])))
        }
        // Unlinking a file that is open.
        Op::Unlink { path } => {
            (on("unlink-of-open") && open(PATHS[*path]))
                || (on("unlink-of-open-reader")
                    && m.files
                        .get(PATHS[*path])
                        .is_some_and(|i| m.handles.iter().any(|h| h.ino == *i && !h.write)))
        }
        // Reading through a read-only handle a file changed since it was opened,
        // or opened while it had unsaved changes.
        Op::Read { h, .. } if on("stale-reader") => m.pick(*h).is_some_and(|i| {
            let hd = m.handles[i];
            !hd.write && (m.inodes[hd.ino].version != hd.opened_at || !hd.opened_saved)
        }),
        _ => false,
    }
}
