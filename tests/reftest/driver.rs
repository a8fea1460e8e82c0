//! Runs reftest operations on a real [`FtpFs`] the way the kernel would call it
//! through FUSE: a lookup before every path operation, EBADF for a read on a
//! write-only handle (and the reverse) without asking the filesystem, `O_TRUNC`
//! as an open followed by a setattr (ftpfs does not ask for atomic O_TRUNC),
//! appends at the size the kernel knows, and close as flush then release.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ftpfs::fs::faulty::{FaultConfig, FaultyRemote};
use ftpfs::fs::inodes::ROOT;
use ftpfs::fs::memory::MemoryRemote;
use ftpfs::fs::{Errno, FsConfig, FtpFs, RenameMode, SetAttr, Writeback};
use ftpfs::remote::Remote;

use crate::ops::{errno_name, Bytes, Op, OpenFlags, Outcome, PATHS};

/// One open handle as the kernel holds it.
#[derive(Clone, Copy, Debug)]
pub struct KHandle {
    pub fh: u64,
    pub ino: u64,
    pub read: bool,
    pub write: bool,
    pub append: bool,
}

pub struct Driver {
    pub fs: Arc<FtpFs>,
    pub mem: Arc<MemoryRemote>,
    pub faulty: Option<Arc<FaultyRemote>>,
    /// Open handles, in the same order as the model's.
    pub handles: Vec<KHandle>,
    /// The kernel's idea of each inode's size (from replies and its own writes).
    sizes: HashMap<u64, u64>,
    spool: tempfile::TempDir,
    /// The journal of async write-back, when the case runs in that mode.
    journal: Option<tempfile::TempDir>,
    remote: Arc<dyn Remote>,
}

/// The settings of a case: short timeouts; async write-back with `journal`.
fn config(spool: &std::path::Path, journal: Option<&std::path::Path>) -> FsConfig {
    FsConfig {
        spool_dir: spool.to_path_buf(),
        timeout: Duration::from_secs(5),
        unmount_wait: Duration::from_secs(60),
        writeback: if journal.is_some() {
            Writeback::Async
        } else {
            Writeback::Close
        },
        journal_dir: journal.map(|j| j.to_path_buf()),
        upload_workers: 2,
        ..FsConfig::default()
    }
}

fn outcome(r: Result<(), Errno>) -> Outcome {
    match r {
        Ok(()) => Outcome::Ok,
        Err(Errno(e)) => Outcome::Err(e),
    }
}

fn split(path: &'static str) -> (&'static str, &'static str) {
    let i = path.rfind('/').unwrap_or(0);
    (&path[..i], &path[i + 1..])
}

impl Driver {
    /// A filesystem over a memory remote holding `initial` (and the directory
    /// `/d`), behind a failure-injecting remote when `faults` is given.
    pub fn new(initial: &[Option<Vec<u8>>], faults: Option<FaultConfig>) -> Driver {
        let mem = Arc::new(MemoryRemote::new());
        mem.add_dir("/d");
        for (path, data) in PATHS.iter().zip(initial) {
            if let Some(d) = data {
                mem.add_file(path, d);
            }
        }
        let faulty =
            faults.map(|cfg| Arc::new(FaultyRemote::new(Arc::clone(&mem) as Arc<dyn Remote>, cfg)));
        let remote: Arc<dyn Remote> = match &faulty {
            Some(f) => Arc::clone(f) as Arc<dyn Remote>,
            None => Arc::clone(&mem) as Arc<dyn Remote>,
        };
        let spool = tempfile::tempdir().expect("spool dir");
        Driver {
            fs: FtpFs::new_shared(Arc::clone(&remote), config(spool.path(), None)),
            mem,
            faulty,
            handles: Vec::new(),
            sizes: HashMap::new(),
            spool,
            journal: None,
            remote,
        }
    }

    /// Like [`new`](Self::new) without faults, in `writeback=async` mode.
    pub fn new_async(initial: &[Option<Vec<u8>>]) -> Driver {
        let mut d = Driver::new(initial, None);
        let journal = tempfile::tempdir().expect("journal dir");
        d.fs = FtpFs::new_shared(
            Arc::clone(&d.remote),
            config(d.spool.path(), Some(journal.path())),
        );
        d.journal = Some(journal);
        d
    }

    /// The daemon dies between two operations (its uploads in flight end
    /// first): its handles are gone, and a new one resumes its journal.
    pub fn crash(&mut self) {
        self.fs.stop_uploaders();
        self.handles.clear();
        self.sizes.clear();
        let spool = tempfile::tempdir().expect("spool dir");
        let journal = self.journal.as_ref().map(|j| j.path());
        self.fs = FtpFs::new_shared(Arc::clone(&self.remote), config(spool.path(), journal));
        self.fs.resume_journal();
        self.spool = spool;
    }

    pub fn set_failing(&self, on: bool) {
        if let Some(f) = &self.faulty {
            f.set_failing(on);
        }
    }

    fn dir_ino(&mut self, dir: &str) -> Result<u64, Errno> {
        if dir.is_empty() {
            return Ok(ROOT);
        }
        let a = self.fs.lookup(ROOT, &dir[1..])?;
        Ok(a.ino)
    }

    /// The kernel's lookup of a path: (parent, name, the attributes if it exists).
    pub fn lookup(
        &mut self,
        path: &'static str,
    ) -> Result<(u64, &'static str, Option<u64>), Errno> {
        let (dir, name) = split(path);
        let parent = self.dir_ino(dir)?;
        match self.fs.lookup(parent, name) {
            Ok(a) => {
                self.sizes.insert(a.ino, a.size);
                Ok((parent, name, Some(a.ino)))
            }
            Err(Errno(libc::ENOENT)) => Ok((parent, name, None)),
            Err(e) => Err(e),
        }
    }

    fn existing(&mut self, path: &'static str) -> Result<(u64, &'static str, u64), Errno> {
        match self.lookup(path)? {
            (parent, name, Some(ino)) => Ok((parent, name, ino)),
            _ => Err(Errno(libc::ENOENT)),
        }
    }

    pub fn run(&mut self, op: &Op) -> Outcome {
        let pick = |h: &usize, n: usize| (n > 0).then(|| *h % n);
        match op {
            Op::Open { path, flags } => {
                if self.handles.len() >= crate::ops::MAX_HANDLES {
                    return Outcome::Skipped;
                }
                outcome(self.open(PATHS[*path], *flags))
            }
            Op::Write { h, offset, data } => {
                let Some(i) = pick(h, self.handles.len()) else {
                    return Outcome::Skipped;
                };
                let k = self.handles[i];
                if !k.write {
                    return Outcome::Err(libc::EBADF);
                }
                let at = if k.append {
                    match self.append_offset(k.ino) {
                        Ok(at) => at,
                        Err(Errno(e)) => return Outcome::Err(e),
                    }
                } else {
                    *offset
                };
                outcome(self.write(k, at, data))
            }
            Op::Append { h, data } => {
                let Some(i) = pick(h, self.handles.len()) else {
                    return Outcome::Skipped;
                };
                let k = self.handles[i];
                if !k.write {
                    return Outcome::Err(libc::EBADF);
                }
                match self.append_offset(k.ino) {
                    Ok(at) => outcome(self.write(k, at, data)),
                    Err(Errno(e)) => Outcome::Err(e),
                }
            }
            Op::Read { h, offset, len } => {
                let Some(i) = pick(h, self.handles.len()) else {
                    return Outcome::Skipped;
                };
                let k = self.handles[i];
                if !k.read {
                    return Outcome::Err(libc::EBADF);
                }
                match self.fs.read(k.fh, *offset, *len) {
                    Ok(d) => Outcome::Data(d.to_vec()),
                    Err(Errno(e)) => Outcome::Err(e),
                }
            }
            Op::Truncate { path, size } => {
                let r = self.existing(PATHS[*path]).and_then(|(_, _, ino)| {
                    let set = SetAttr {
                        size: Some(*size),
                        ..SetAttr::default()
                    };
                    let a = self.fs.setattr(ino, &set)?;
                    self.sizes.insert(ino, a.size);
                    Ok(())
                });
                outcome(r)
            }
            Op::Rename { from, to } => outcome(self.rename(PATHS[*from], PATHS[*to])),
            Op::Unlink { path } => {
                let r = self
                    .existing(PATHS[*path])
                    .and_then(|(parent, name, _)| self.fs.unlink(parent, name));
                outcome(r)
            }
            Op::Fsync { h } => {
                let Some(i) = pick(h, self.handles.len()) else {
                    return Outcome::Skipped;
                };
                outcome(self.fs.fsync(self.handles[i].fh))
            }
            Op::Close { h } => {
                let Some(i) = pick(h, self.handles.len()) else {
                    return Outcome::Skipped;
                };
                let k = self.handles.remove(i);
                let r = self.fs.flush(k.fh);
                self.fs.release(k.fh);
                outcome(r)
            }
            Op::Crash => {
                self.crash();
                Outcome::Ok
            }
            Op::Stat { path } => match self.existing(PATHS[*path]) {
                Ok((_, _, ino)) => match self.fs.getattr(ino) {
                    Ok(a) => {
                        self.sizes.insert(ino, a.size);
                        Outcome::Size(a.size)
                    }
                    Err(Errno(e)) => Outcome::Err(e),
                },
                Err(Errno(e)) => Outcome::Err(e),
            },
        }
    }

    fn open(&mut self, path: &'static str, flags: OpenFlags) -> Result<(), Errno> {
        let (parent, name, found) = self.lookup(path)?;
        let bits = flags.bits() & !(libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC);
        let (fh, ino) = match found {
            Some(_) if flags.create && flags.excl => return Err(Errno(libc::EEXIST)),
            Some(ino) => {
                let (fh, _) = self.fs.open(ino, bits)?;
                if flags.trunc {
                    let set = SetAttr {
                        size: Some(0),
                        ..SetAttr::default()
                    };
                    match self.fs.setattr(ino, &set) {
                        Ok(a) => {
                            self.sizes.insert(ino, a.size);
                        }
                        Err(e) => {
                            // The kernel gives the file up without a flush.
                            self.fs.release(fh);
                            return Err(e);
                        }
                    }
                }
                (fh, ino)
            }
            None if !flags.create => return Err(Errno(libc::ENOENT)),
            None => {
                let create_bits = flags.bits() & !libc::O_TRUNC;
                let (a, fh) = self.fs.create(parent, name, 0o644, create_bits)?;
                self.sizes.insert(a.ino, a.size);
                (fh, a.ino)
            }
        };
        self.handles.push(KHandle {
            fh,
            ino,
            read: flags.access.reads(),
            write: flags.access.writes(),
            append: flags.append,
        });
        Ok(())
    }

    /// Where an append lands: the size getattr gives, or for a file that has
    /// no name any more, the size the kernel last knew.
    fn append_offset(&mut self, ino: u64) -> Result<u64, Errno> {
        match self.fs.getattr(ino) {
            Ok(a) => {
                self.sizes.insert(ino, a.size);
                Ok(a.size)
            }
            Err(Errno(libc::ENOENT)) => Ok(self.sizes.get(&ino).copied().unwrap_or(0)),
            Err(e) => Err(e),
        }
    }

    fn write(&mut self, k: KHandle, at: u64, data: &[u8]) -> Result<(), Errno> {
        let n = self.fs.write(k.fh, at, data)?;
        assert_eq!(n as usize, data.len(), "short write");
        let size = self.sizes.entry(k.ino).or_insert(0);
        *size = (*size).max(at + data.len() as u64);
        Ok(())
    }

    fn rename(&mut self, from: &'static str, to: &'static str) -> Result<(), Errno> {
        let (parent, name, ino) = self.existing(from)?;
        let (new_parent, new_name, target) = self.lookup(to)?;
        if target == Some(ino) {
            return Ok(()); // the same file: the kernel does nothing
        }
        self.fs
            .rename(parent, name, new_parent, new_name, RenameMode::Replace)
    }

    /// What the filesystem shows at `path` now: its content, or None when it
    /// does not exist; a description of the trouble when it cannot tell.
    pub fn observe_path(&mut self, path: &'static str) -> Result<Option<Vec<u8>>, String> {
        let fail = |what: &str, Errno(e)| format!("{what} {path}: {}", errno_name(e));
        let found = self.lookup(path).map_err(|e| fail("lookup", e))?.2;
        let Some(ino) = found else {
            return Ok(None);
        };
        let size = self.fs.getattr(ino).map_err(|e| fail("getattr", e))?.size;
        let (fh, _) = self
            .fs
            .open(ino, libc::O_RDONLY)
            .map_err(|e| fail("open", e))?;
        let data = self.fs.read(fh, 0, size as u32 + 64);
        self.fs.release(fh);
        let data = data.map_err(|e| fail("read", e))?.to_vec();
        if data.len() as u64 != size {
            return Err(format!(
                "{path}: stat says {size} bytes, read gives {}",
                Bytes(&data)
            ));
        }
        Ok(Some(data))
    }

    /// What an open handle reads now, from its start.
    pub fn observe_handle(&mut self, i: usize) -> Result<Vec<u8>, String> {
        let k = self.handles[i];
        match self.fs.read(k.fh, 0, 1 << 16) {
            Ok(d) => Ok(d.to_vec()),
            Err(Errno(e)) => Err(format!("read of handle #{i}: {}", errno_name(e))),
        }
    }

    /// Closes every handle (with failures off), as the exit of the program would.
    pub fn close_all(&mut self) -> Vec<(KHandle, Outcome)> {
        let handles = std::mem::take(&mut self.handles);
        handles
            .into_iter()
            .map(|k| {
                let r = self.fs.flush(k.fh);
                self.fs.release(k.fh);
                (k, outcome(r))
            })
            .collect()
    }
}
