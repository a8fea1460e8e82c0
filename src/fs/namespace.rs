//! Changes to the namespace: mkdir, rmdir, unlink, rename, and mknod of plain
//! files. Each checks what it can against the cached listing first (FTP servers
//! give vague replies), then keeps the caches and the inode table in step.

use super::lifecycle::{Content, Phase};
use super::meta::child_path;
use super::{lock, Attr, Errno, FsResult, FtpFs};
use crate::remote::{is_valid_name, Entry, EntryKind, ErrorKind};

/// The mode new directories get from servers unless told otherwise.
const DEFAULT_DIR_MODE: u32 = 0o755;

/// Whether the server has a file the mount is about to drop.
#[derive(Clone, Copy, PartialEq, Eq)]
enum OnServer {
    /// It was uploaded at least once (or came from the server).
    Yes,
    /// Never uploaded, but a failed upload may have left it, or part of it.
    Maybe,
    No,
}

/// What [`FtpFs::drop_local_copy`] did, to undo it.
struct Dropped {
    on_server: OnServer,
    /// The file's phase before, when it had local state.
    phase: Option<Phase>,
}

/// What `rename` may do to an existing target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenameMode {
    Replace,
    /// RENAME_NOREPLACE: fail with EEXIST if the target exists.
    NoReplace,
}

impl FtpFs {
    /// A name from the kernel for something new: no separators or line breaks
    /// (they would inject FTP commands), at most 255 bytes.
    pub(super) fn check_new_name(name: &str) -> FsResult<()> {
        if name.len() > 255 {
            return Err(Errno(libc::ENAMETOOLONG));
        }
        if !is_valid_name(name) {
            return Err(Errno(libc::EINVAL));
        }
        Ok(())
    }

    pub fn mkdir(&self, parent: u64, name: &str, mode: u32) -> FsResult<Attr> {
        self.check_writable()?;
        Self::check_new_name(name)?;
        let dir = self.path_of(parent)?;
        if self.find(parent, &dir, name)?.is_some() {
            return Err(Errno(libc::EEXIST));
        }
        let path = child_path(&dir, name);
        if let Err(e) = self.remote.mkdir(&path) {
            if self.present_after(&e, &dir, name) != Some(true) {
                return Err(e.into());
            }
        }
        let mut e = Entry::new(name, EntryKind::Dir, 0);
        e.mtime = Some(super::writeback::whole_seconds(std::time::SystemTime::now()));
        let mode = mode & 0o7777;
        if mode != DEFAULT_DIR_MODE {
            match self.remote.chmod(&path, mode) {
                Ok(()) => e.mode = Some(mode),
                Err(err) => log::warn!("chmod {path}: {}", err.message),
            }
        }
        self.meta.update(&dir, |l| l.upsert(e.clone()));
        // A new directory is empty: no need to list it.
        self.meta.insert_empty(&path);
        let ino = lock(&self.inodes).lookup(parent, name);
        self.touch_dir(parent);
        self.touch_dir(ino);
        Ok(self.attr_with_local(ino, &e))
    }

    /// mknod: only regular files exist on FTP; they are created empty at once.
    pub fn mknod(&self, parent: u64, name: &str, mode: u32) -> FsResult<Attr> {
        if mode & libc::S_IFMT != libc::S_IFREG && mode & libc::S_IFMT != 0 {
            return Err(Errno(libc::EPERM));
        }
        let (attr, fh) = self.create(parent, name, mode, libc::O_EXCL | libc::O_WRONLY)?;
        let flushed = self.flush(fh);
        self.release(fh);
        flushed?;
        Ok(attr)
    }

    pub fn rmdir(&self, parent: u64, name: &str) -> FsResult<()> {
        self.check_writable()?;
        let dir = self.path_of(parent)?;
        let e = self.find(parent, &dir, name)?.ok_or(Errno(libc::ENOENT))?;
        if e.kind != EntryKind::Dir {
            return Err(Errno(libc::ENOTDIR));
        }
        let path = child_path(&dir, name);
        // Servers say "550 failed" for a full directory; look first.
        let inner = self.listing(&path)?;
        let ino = lock(&self.inodes).get(parent, name);
        let unsaved = ino.map(|i| self.unsaved_in(i)).unwrap_or_default();
        if !inner.entries.is_empty() || !unsaved.is_empty() {
            return Err(Errno(libc::ENOTEMPTY));
        }
        if let Err(e) = self.remote.rmdir(&path) {
            if self.present_after(&e, &dir, name) != Some(false) {
                return Err(e.into());
            }
        }
        self.meta.update(&dir, |l| {
            l.remove(name);
        });
        self.meta.invalidate_tree(&path);
        self.set_times.forget(&path);
        lock(&self.inodes).unlink(parent, name);
        self.touch_dir(parent);
        Ok(())
    }

    pub fn unlink(&self, parent: u64, name: &str) -> FsResult<()> {
        self.check_writable()?;
        let dir = self.path_of(parent)?;
        let e = self.find(parent, &dir, name)?.ok_or(Errno(libc::ENOENT))?;
        if e.kind == EntryKind::Dir {
            return Err(Errno(libc::EISDIR));
        }
        let path = child_path(&dir, name);
        let ino = lock(&self.inodes).get(parent, name);
        let dropped = match ino {
            Some(i) => Some((i, self.drop_local_copy(i, &path)?)),
            None => None,
        };
        let on_server = dropped.as_ref().map_or(OnServer::Yes, |(_, d)| d.on_server);
        if on_server != OnServer::No {
            if let Err(e) = self.remote.remove_file(&path) {
                let gone = (on_server == OnServer::Maybe && e.kind == ErrorKind::NotFound)
                    || self.present_after(&e, &dir, name) == Some(false);
                if !gone {
                    // Still there: its handles go on saving to it.
                    if let Some((i, d)) = dropped {
                        self.undo_drop(i, d);
                    }
                    return Err(e.into());
                }
            }
        }
        if let Some(i) = ino {
            lock(&self.local_mtimes).remove(&i);
        }
        self.set_times.forget(&path);
        self.meta.update(&dir, |l| {
            l.remove(name);
        });
        lock(&self.inodes).unlink(parent, name);
        if on_server != OnServer::No {
            self.touch_dir(parent);
        }
        Ok(())
    }

    /// The file `ino` at `path` is gone from the mount (unlinked, or replaced by a
    /// rename): still-open handles keep its data, but it is never uploaded again,
    /// and what its streams left on the server is removed. Says whether the file
    /// is on the server, and how to undo this if the server keeps the file.
    fn drop_local_copy(&self, ino: u64, path: &str) -> FsResult<Dropped> {
        let Some(slot) = self.slot(ino) else {
            return Ok(Dropped {
                on_server: OnServer::Yes,
                phase: None,
            });
        };
        let open_unfetched = {
            let st = slot.lock();
            st.writers > 0 && st.content == Content::Remote
        };
        if open_unfetched {
            // Its handles may still write: they need the content the server is
            // about to lose. Without it, the file stays.
            if let Err(e) = slot.local(&*self.remote, path, &self.cfg.spool_dir) {
                log::warn!("could not keep the content of {path} for its open handles: {e}");
                return Err(e.into());
            }
        }
        let stream = lock(&slot.stream).take();
        let (on_server, mut leftovers, phase) = {
            let st = slot.lock();
            let phase = st.phase.clone();
            // An upload still running lands before the server hears of this.
            let mut st = slot.unlink_and_settle(st);
            let phase = match phase {
                Phase::Uploading { .. } => Phase::Dirty,
                other => other,
            };
            let on_server = match (st.exists_remotely, st.maybe_remote) {
                (true, _) => OnServer::Yes,
                (false, true) => OnServer::Maybe,
                (false, false) => OnServer::No,
            };
            (on_server, std::mem::take(&mut st.orphans), phase)
        };
        // A pending upload is cancelled: the journal lets go of it too.
        self.unjournal_if_saved(&slot, None);
        leftovers.extend(stream.map(super::streaming::Streaming::abandon));
        for temp in leftovers
            .iter()
            .filter(|t| *t != path || on_server != OnServer::Yes)
        {
            let _ = self.remote.remove_file(temp);
        }
        Ok(Dropped {
            on_server,
            phase: Some(phase),
        })
    }

    /// The server still has the file [`drop_local_copy`](Self::drop_local_copy)
    /// gave up: its handles save to it again (from the spool, not a stream).
    fn undo_drop(&self, ino: u64, dropped: Dropped) {
        let (Some(slot), Some(phase)) = (self.slot(ino), dropped.phase) else {
            return;
        };
        let restored = {
            let mut st = slot.lock();
            let restored = st.phase == Phase::Unlinked;
            if restored {
                st.no_streaming = true;
                st.phase = match phase {
                    Phase::Uploading { .. } => Phase::Dirty,
                    other => other,
                };
                slot.notify();
            }
            restored
        };
        // Back in the journal, if async mode had it there.
        if restored && self.is_async() {
            if let Err(Errno(e)) = self.journal_now(ino) {
                log::error!("cannot put a file back into the journal (errno {e})");
            }
        }
    }

    pub fn rename(
        &self,
        parent: u64,
        name: &str,
        new_parent: u64,
        new_name: &str,
        mode: RenameMode,
    ) -> FsResult<()> {
        self.check_writable()?;
        Self::check_new_name(new_name)?;
        let dir = self.path_of(parent)?;
        let new_dir = self.path_of(new_parent)?;
        let src = self.find(parent, &dir, name)?.ok_or(Errno(libc::ENOENT))?;
        let from = child_path(&dir, name);
        let to = child_path(&new_dir, new_name);
        if from == to {
            return Ok(());
        }
        if src.kind == EntryKind::Dir && (to.starts_with(&format!("{from}/"))) {
            return Err(Errno(libc::EINVAL));
        }
        let target = self.find(new_parent, &new_dir, new_name)?;
        if let Some(t) = &target {
            if mode == RenameMode::NoReplace {
                return Err(Errno(libc::EEXIST));
            }
            match (src.kind == EntryKind::Dir, t.kind == EntryKind::Dir) {
                (false, true) => return Err(Errno(libc::EISDIR)),
                (true, false) => return Err(Errno(libc::ENOTDIR)),
                (true, true) => {
                    if !self.listing(&to)?.entries.is_empty() {
                        return Err(Errno(libc::ENOTEMPTY));
                    }
                }
                (false, false) => {}
            }
        }
        // A file with unsaved changes is saved under its old name first; so
        // are the files in a directory (the journal knows them by path).
        let src_ino = lock(&self.inodes).get(parent, name);
        if src.kind == EntryKind::Dir {
            self.save_all_under(&from)?;
        }
        let mut src = src;
        if let Some(ino) = src_ino {
            self.upload(ino)?;
            // The upload changed the entry (size, time): move the new one.
            if let Some(now) = self.find(parent, &dir, name)? {
                src = now;
            }
        }
        // The replaced file's local state must never be uploaded over the new
        // one, and an upload of it still running must land before the rename.
        let replaced = lock(&self.inodes)
            .get(new_parent, new_name)
            .filter(|t| Some(*t) != src_ino);
        let dropped = match replaced {
            Some(t) => Some((t, self.drop_local_copy(t, &to)?)),
            None => None,
        };
        let renamed = self.rename_on_server(&from, &to, target.as_ref(), &dir, &new_dir, name);
        if let Err(e) = renamed {
            if let Some((t, d)) = dropped {
                self.undo_drop(t, d);
            }
            return Err(e);
        }
        self.set_times.rename(&from, &to);
        let mut moved = src.clone();
        moved.name = new_name.to_string();
        self.meta.update(&dir, |l| {
            l.remove(name);
        });
        self.meta.update(&new_dir, |l| l.upsert(moved));
        if src.kind == EntryKind::Dir {
            self.meta.invalidate_tree(&from);
            self.meta.invalidate_tree(&to);
        }
        lock(&self.inodes).rename(parent, name, new_parent, new_name);
        self.touch_dir(parent);
        self.touch_dir(new_parent);
        Ok(())
    }

    /// RNFR/RNTO `from` to `to`; a lost reply is settled by looking, and a
    /// server that will not rename over an existing `target` gets it removed first.
    fn rename_on_server(
        &self,
        from: &str,
        to: &str,
        target: Option<&Entry>,
        dir: &str,
        new_dir: &str,
        name: &str,
    ) -> FsResult<()> {
        let Err(e) = self.remote.rename(from, to) else {
            return Ok(());
        };
        let retry = target.is_some() && !e.kind.is_transient() && e.kind != ErrorKind::NotFound;
        if !retry {
            self.meta.invalidate(new_dir);
            // Gone from its old name: the server did it, only the reply was lost.
            if self.present_after(&e, dir, name) != Some(false) {
                return Err(e.into());
            }
            return Ok(());
        }
        // Servers that will not rename over an existing entry: remove it first.
        log::info!(
            "rename over {to} refused ({}); removing it first",
            e.message
        );
        match target.map(|t| t.kind) {
            Some(EntryKind::Dir) => self.remote.rmdir(to)?,
            _ => self.remote.remove_file(to)?,
        }
        self.remote.rename(from, to)?;
        Ok(())
    }

    /// Uploads every file with unsaved changes under directory `dir`.
    fn save_all_under(&self, dir: &str) -> FsResult<()> {
        let prefix = format!("{dir}/");
        let inos: Vec<u64> = lock(&self.files).keys().copied().collect();
        for ino in inos {
            let under = self.path_of(ino).is_ok_and(|p| p.starts_with(&prefix));
            if under {
                self.upload(ino)?;
            }
        }
        Ok(())
    }
}
