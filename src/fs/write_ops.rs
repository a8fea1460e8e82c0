//! File handles and their data: open, read, create, write, flush, fsync, release
//! and setattr, over the write-back state in `writer`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::reader::{Bytes, FileKey, Reader};
use super::writer::{temp_path_for, UploadMode, WriteState};
use super::{lock, Attr, Errno, FsResult, FtpFs, Handle, Shared};
use crate::fs::meta::split_path;
use crate::remote::{Entry, EntryKind, ErrorKind};

/// Waits between retries of an upload that failed after close.
const RETRY_DELAYS: [u64; 4] = [1, 3, 9, 27];

/// The mode a new file gets from servers unless told otherwise.
const DEFAULT_FILE_MODE: u32 = 0o644;

/// Whole seconds: what FTP servers store.
pub(super) fn whole_seconds(t: SystemTime) -> SystemTime {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => UNIX_EPOCH + Duration::from_secs(d.as_secs()),
        Err(_) => UNIX_EPOCH,
    }
}

/// Errors that a later attempt may not meet: a broken or slow connection.
fn is_transient_errno(e: i32) -> bool {
    matches!(e, libc::EIO | libc::ETIMEDOUT)
}

/// What a setattr call asks for.
#[derive(Debug, Default, Clone)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub mtime: Option<SystemTime>,
}

impl FtpFs {
    pub(super) fn check_writable(&self) -> FsResult<()> {
        if self.cfg.read_only {
            Err(Errno(libc::EROFS))
        } else {
            Ok(())
        }
    }

    /// The write state of `ino`, created if there is none.
    fn write_state_or_new(
        &self,
        ino: u64,
        exists: bool,
        filled: bool,
    ) -> FsResult<Shared<WriteState>> {
        let mut w = lock(&self.writes);
        if let Some(s) = w.get(&ino) {
            return Ok(Arc::clone(s));
        }
        let ws = WriteState::new(&self.cfg.spool_dir, exists, filled).map_err(|e| {
            log::error!(
                "cannot create a spool file in {}: {e}",
                self.cfg.spool_dir.display()
            );
            Errno(libc::EIO)
        })?;
        let s = Arc::new(Mutex::new(ws));
        w.insert(ino, Arc::clone(&s));
        Ok(s)
    }

    /// Drops the write state of `ino` once nothing needs it.
    fn forget_write_state_if_idle(&self, ino: u64) {
        let mut w = lock(&self.writes);
        let idle = w.get(&ino).is_some_and(|s| {
            let s = lock(s);
            s.writers == 0 && (!s.dirty || s.unlinked)
        });
        if idle {
            w.remove(&ino);
        }
    }

    /// Our own change to the content of `ino`: cached blocks and the kernel's page
    /// cache must not serve the old bytes, even if size and mtime come out the same.
    fn content_changed(&self, ino: u64) {
        self.blocks.invalidate(ino);
        lock(&self.opened_versions).remove(&ino);
    }

    /// Opens a file; the bool says whether the kernel may keep its page cache.
    pub fn open(&self, ino: u64, flags: i32) -> FsResult<(u64, bool)> {
        let (path, e) = self.entry_of(ino)?;
        match e.kind {
            EntryKind::Dir => return Err(Errno(libc::EISDIR)),
            EntryKind::Symlink => return Err(Errno(libc::ELOOP)),
            EntryKind::File => {}
        }
        let write = flags & libc::O_ACCMODE != libc::O_RDONLY;
        if write {
            self.check_writable()?;
            let ws = self.write_state_or_new(ino, true, e.size == 0)?;
            let mut ws = lock(&ws);
            ws.writers += 1;
            if flags & libc::O_TRUNC != 0 {
                ws.truncate_all()?;
                self.content_changed(ino);
            }
        }
        let key = FileKey {
            ino,
            size: e.size,
            mtime: e.mtime,
        };
        let unchanged = lock(&self.opened_versions).insert(ino, key) == Some(key);
        let keep_cache = unchanged && self.write_state(ino).is_none();
        if !write {
            self.prefetch_after(ino, &path);
        }
        let fh = self.add_handle(Handle::File {
            ino,
            reader: Mutex::new(Reader::new(path, key)),
            write,
        });
        Ok((fh, keep_cache))
    }

    /// A walk through a directory's files: fetch the next small ones in the background.
    fn prefetch_after(&self, ino: u64, path: &str) {
        let Some((dir_path, name)) = split_path(path) else {
            return;
        };
        let Some(dir) = lock(&self.inodes).parent(ino) else {
            return;
        };
        let Some(listing) = self.meta.fresh(dir_path) else {
            return;
        };
        let Some(position) = listing.position(name) else {
            return;
        };
        if !self.prefetch.opened(dir, position) {
            return;
        }
        let candidates = {
            let mut inodes = lock(&self.inodes);
            let mut ino_of = |n: &str| inodes.get_or_insert(dir, n);
            super::prefetch::next_small_files(&listing.entries, position, dir_path, &mut ino_of)
        };
        self.prefetch.fetch(&self.remote, &self.blocks, candidates);
    }

    /// Creates and opens a new file (or opens an existing one without O_EXCL).
    pub fn create(&self, parent: u64, name: &str, mode: u32, flags: i32) -> FsResult<(Attr, u64)> {
        self.check_writable()?;
        Self::check_new_name(name)?;
        let dir = self.path_of(parent)?;
        let listing = self.listing(&dir)?;
        if listing.get(name).is_some() || self.unsaved_entry(parent, name).is_some() {
            if flags & libc::O_EXCL != 0 {
                return Err(Errno(libc::EEXIST));
            }
            let attr = self.lookup(parent, name)?;
            let (fh, _) = self.open(attr.ino, flags)?;
            return Ok((self.getattr(attr.ino)?, fh));
        }
        let ino = lock(&self.inodes).lookup(parent, name);
        lock(&self.writes).remove(&ino);
        let ws = self.write_state_or_new(ino, false, true)?;
        {
            let mut ws = lock(&ws);
            ws.dirty = true; // even an empty new file must reach the server
            ws.writers = 1;
            let mode = mode & 0o7777;
            if mode != DEFAULT_FILE_MODE {
                ws.pending_mode = Some(mode);
            }
        }
        let path = self.path_of(ino)?;
        let key = FileKey {
            ino,
            size: 0,
            mtime: None,
        };
        let fh = self.add_handle(Handle::File {
            ino,
            reader: Mutex::new(Reader::new(path, key)),
            write: true,
        });
        Ok((self.getattr(ino)?, fh))
    }

    pub fn read(&self, fh: u64, offset: u64, size: u32) -> FsResult<Bytes> {
        let handle = self.handle(fh)?;
        let Handle::File { ino, reader, .. } = handle.as_ref() else {
            return Err(Errno(libc::EISDIR));
        };
        if let Some(ws) = self.write_state(*ino) {
            let ws = lock(&ws);
            if ws.filled {
                return Ok(Bytes::Owned(ws.read(offset, size)?));
            }
        }
        self.prefetch.wait_for(*ino, self.cfg.timeout);
        let mut reader = lock(reader);
        Ok(reader.read(
            &self.remote,
            &self.blocks,
            offset,
            size as u64,
            self.cfg.timeout,
        )?)
    }

    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> FsResult<u32> {
        let handle = self.handle(fh)?;
        let Handle::File {
            ino, write: true, ..
        } = handle.as_ref()
        else {
            return Err(Errno(libc::EBADF));
        };
        let ws = self.write_state(*ino).ok_or(Errno(libc::EBADF))?;
        let mut ws = lock(&ws);
        let path = self.path_of(*ino)?;
        if !ws.filled {
            ws.fill(&*self.remote, &path)?;
        }
        // A file that is not on the server yet streams straight to its name,
        // unless it is private: then it is restricted before its content goes up.
        let new_file = !ws.exists_remotely;
        let private = new_file && ws.private_mode().is_some();
        let temp = || {
            if new_file {
                path.clone()
            } else {
                temp_path_for(&path)
            }
        };
        let stream_to: Option<&dyn Fn() -> String> = match self.cfg.upload_mode {
            UploadMode::Atomic if !private => Some(&temp),
            _ => None,
        };
        ws.write(&*self.remote, &path, stream_to, offset, data)?;
        drop(ws);
        self.content_changed(*ino);
        Ok(data.len() as u32)
    }

    /// flush(2) and fsync(2): make the server's copy complete; the upload's error
    /// is the caller's error.
    pub fn flush(&self, fh: u64) -> FsResult<()> {
        let handle = self.handle(fh)?;
        match handle.as_ref() {
            Handle::File {
                ino, write: true, ..
            } => self.upload(*ino),
            _ => Ok(()),
        }
    }

    /// Uploads `ino` if it has unsaved changes, then applies waiting attributes
    /// and updates the caches from what was written.
    pub(super) fn upload(&self, ino: u64) -> FsResult<()> {
        let Some(ws) = self.write_state(ino) else {
            return Ok(());
        };
        let mut ws = lock(&ws);
        if !ws.dirty || ws.unlinked {
            return Ok(());
        }
        let path = self.path_of(ino)?;
        if ws.exists_remotely
            && ws.pending_mode.is_none()
            && self.cfg.upload_mode == UploadMode::Atomic
        {
            // The replacement is a new file: give it the old one's mode back.
            let old_mode = split_path(&path).and_then(|(dir, name)| {
                self.meta
                    .fresh(dir)
                    .and_then(|l| l.get(name).and_then(|e| e.mode))
            });
            ws.pending_mode = old_mode.filter(|m| *m != DEFAULT_FILE_MODE);
        }
        // A broken connection gets one more try at once (a whole new upload).
        let mut result = ws.upload(&*self.remote, &path, self.cfg.upload_mode);
        if let Err(e) = &result {
            if e.kind.is_transient() {
                log::warn!("upload of {path} failed ({}); trying again", e.message);
                result = ws.upload(&*self.remote, &path, self.cfg.upload_mode);
            }
        }
        if let Err(e) = result {
            log::error!("upload of {path} failed: {}", e.message);
            return Err(e.into());
        }
        let new_name = !ws.exists_remotely_before_upload();
        let mut entry = Entry::new("", EntryKind::File, ws.size);
        // The content's time is its last change, as on a local disk, not the upload's.
        let changed = whole_seconds(ws.modified);
        entry.mtime = Some(changed);
        // The mode the server now has, as far as we set one (else the listing's).
        entry.mode = ws.applied_mode.take();
        if let Some(mode) = ws.pending_mode.take() {
            match self.remote.chmod(&path, mode) {
                Ok(()) => entry.mode = Some(mode),
                Err(e) => log::warn!("chmod {path} after upload: {}", e.message),
            }
        }
        let mtime = ws.pending_mtime.take();
        drop(ws);
        lock(&self.opened_versions).remove(&ino);
        self.record_entry(&path, entry);
        match mtime {
            Some(t) => self.store_mtime(ino, &path, t, false)?,
            // The server's own time is within a second or two of ours; show ours
            // throughout, so the time does not jump when the listing is refreshed.
            None => self.remember_mtime(ino, changed, None),
        }
        if new_name {
            let parent = lock(&self.inodes).parent(ino);
            if let Some(p) = parent {
                self.touch_dir(p);
            }
        }
        Ok(())
    }

    /// Shows `t` as the mtime of `ino` while the server's time stays `seen` or close to `t`.
    pub(super) fn remember_mtime(&self, ino: u64, t: SystemTime, seen: Option<SystemTime>) {
        lock(&self.local_mtimes).insert(ino, (t, seen));
    }

    /// A directory whose entries we changed: the server gave it a new mtime, now.
    pub(super) fn touch_dir(&self, dir: u64) {
        let now = whole_seconds(SystemTime::now());
        self.remember_mtime(dir, now, None);
        if dir == super::inodes::ROOT {
            return;
        }
        if let Ok(path) = self.path_of(dir) {
            if let Some((parent, name)) = split_path(&path) {
                self.meta.update(parent, |l| {
                    if let Some(mut e) = l.get(name).cloned() {
                        e.mtime = Some(now);
                        l.upsert(e);
                    }
                });
            }
        }
    }

    /// Puts our own version of an entry into the cached listing of its directory.
    pub(super) fn record_entry(&self, path: &str, mut entry: Entry) {
        let Some((dir, name)) = split_path(path) else {
            return;
        };
        entry.name = name.to_string();
        self.meta.update(dir, |l| {
            if entry.mode.is_none() {
                entry.mode = l.get(name).and_then(|e| e.mode);
            }
            l.upsert(entry)
        });
    }

    /// Sets a modification time on the server; one it cannot store is kept here.
    fn store_mtime(&self, ino: u64, path: &str, t: SystemTime, is_dir: bool) -> FsResult<()> {
        let t = whole_seconds(t);
        match self.remote.set_mtime(path, t) {
            Ok(()) => {}
            Err(e) if e.kind == ErrorKind::Unsupported => {
                log::debug!("keeping the mtime of {path} locally: {}", e.message);
            }
            // Most servers set times on files only, and refuse directories with a bare 550.
            Err(e) if is_dir && !e.kind.is_transient() => {
                log::debug!(
                    "keeping the mtime of directory {path} locally: {}",
                    e.message
                );
            }
            Err(e) => return Err(e.into()),
        }
        // Kept locally too: LIST shows only minutes, and some servers cannot set times.
        let seen = split_path(path).and_then(|(dir, name)| {
            self.meta
                .fresh(dir)
                .and_then(|l| l.get(name).and_then(|e| e.mtime))
        });
        lock(&self.local_mtimes).insert(ino, (t, seen));
        if let Some((dir, name)) = split_path(path) {
            self.meta.update(dir, |l| {
                if let Some(mut e) = l.get(name).cloned() {
                    e.mtime = Some(t);
                    l.upsert(e);
                }
            });
        }
        Ok(())
    }

    pub fn fsync(&self, fh: u64) -> FsResult<()> {
        self.flush(fh)
    }

    /// Closes a handle. Changes still unsaved (a failed flush) are retried in the
    /// background; the caller has already seen the error from close().
    pub fn release(&self, fh: u64) {
        let Some(handle) = lock(&self.handles).remove(&fh) else {
            return;
        };
        let Handle::File {
            ino, write: true, ..
        } = handle.as_ref()
        else {
            return;
        };
        let ino = *ino;
        let Some(ws) = self.write_state(ino) else {
            return;
        };
        let retry = {
            let mut ws = lock(&ws);
            ws.writers = ws.writers.saturating_sub(1);
            ws.writers == 0 && ws.dirty && !ws.unlinked
        };
        if retry {
            self.retry_in_background(ino);
        } else {
            self.forget_write_state_if_idle(ino);
        }
    }

    fn retry_in_background(&self, ino: u64) {
        let Some(fs) = self.me.upgrade() else {
            // No handle on ourselves (unit tests without a mount): try once now.
            let _ = self.upload(ino);
            self.forget_write_state_if_idle(ino);
            return;
        };
        let path = self.path_of(ino).unwrap_or_default();
        let (pending, _) = &*self.background;
        lock(pending).insert(ino, path);
        let spawned = std::thread::Builder::new()
            .name("ftpfs-upload".into())
            .spawn(move || {
                fs.retry_upload(ino);
                let (pending, cv) = &*fs.background;
                lock(pending).remove(&ino);
                cv.notify_all();
            });
        if spawned.is_err() {
            lock(pending).remove(&ino);
            log::error!("cannot start a retry thread");
            self.keep_unsaved(ino);
        }
    }

    /// Gives up on the unsaved changes of `ino`: keeps a copy of them in the
    /// spool directory and says where.
    fn keep_unsaved(&self, ino: u64) {
        let Some(ws) = lock(&self.writes).remove(&ino) else {
            return;
        };
        let ws = lock(&ws);
        if !ws.dirty || ws.unlinked {
            return;
        }
        let path = self.path_of(ino).unwrap_or_default();
        match ws.keep_spool(&path) {
            Ok(p) => log::error!(
                "upload of {path} failed for good; its content is kept in {}",
                p.display()
            ),
            Err(e) => {
                log::error!("upload of {path} failed for good, and keeping it failed too: {e}")
            }
        }
    }

    fn retry_upload(&self, ino: u64) {
        let path = self.path_of(ino).unwrap_or_default();
        for (attempt, delay) in RETRY_DELAYS.iter().enumerate() {
            std::thread::sleep(Duration::from_secs(*delay));
            match self.upload(ino) {
                Ok(()) => {
                    log::info!("upload of {path} succeeded on retry {}", attempt + 1);
                    self.forget_write_state_if_idle(ino);
                    return;
                }
                Err(Errno(e)) if is_transient_errno(e) => {
                    log::warn!("retry {} of {path} failed (errno {e})", attempt + 1)
                }
                Err(Errno(e)) => {
                    // A refusal (no space, no permission) will not go away in seconds.
                    log::warn!(
                        "retry {} of {path} refused (errno {e}); giving up",
                        attempt + 1
                    );
                    break;
                }
            }
        }
        self.keep_unsaved(ino);
    }

    /// At exit: waits (up to `unmount_wait`) for uploads retried in the background,
    /// with a log line for each; whatever is still unsaved after that is kept on disk.
    /// Files whose changes the server does not have yet, for `ftpfs status`:
    /// (path, size, what they wait for). A file whose state is busy (being
    /// written or uploaded right now) shows as such instead of being waited for.
    pub fn pending_uploads(&self) -> Vec<(String, Option<u64>, &'static str)> {
        let states: Vec<(u64, Shared<WriteState>)> = lock(&self.writes)
            .iter()
            .map(|(ino, ws)| (*ino, Arc::clone(ws)))
            .collect();
        let retrying = lock(&self.background.0).clone();
        let mut out = Vec::new();
        for (ino, ws) in states {
            let path = self
                .path_of(ino)
                .unwrap_or_else(|_| format!("(inode {ino})"));
            let Ok(ws) = ws.try_lock() else {
                out.push((path, None, "busy: being written or uploaded"));
                continue;
            };
            if !ws.dirty || ws.unlinked {
                continue;
            }
            let why = if retrying.contains_key(&ino) {
                "upload failed; retrying in the background"
            } else if ws.writers > 0 {
                "open for writing; uploads at close"
            } else {
                "waiting for upload"
            };
            out.push((path, Some(ws.size), why));
        }
        out.sort();
        out
    }

    pub fn wait_for_uploads(&self) {
        let (pending, cv) = &*self.background;
        let started = std::time::Instant::now();
        let deadline = started + self.cfg.unmount_wait;
        let mut announced = std::collections::HashSet::new();
        let mut p = lock(pending);
        while !p.is_empty() {
            for (ino, path) in p.iter() {
                if announced.insert(*ino) {
                    log::warn!("waiting for the upload of {path} before exiting");
                }
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                log::error!("giving up waiting for {} upload(s)", p.len());
                break;
            }
            if now.duration_since(started) >= Duration::from_secs(2) {
                for u in crate::stats::STATS.uploads() {
                    let of = u
                        .total
                        .map(|t| format!(" of {}", crate::stats::human(t)))
                        .unwrap_or_default();
                    log::warn!(
                        "still uploading {}: {}{of} sent",
                        u.path,
                        crate::stats::human(u.done)
                    );
                }
            }
            p = crate::sync::wait(cv, p, (deadline - now).min(Duration::from_secs(2)));
        }
        drop(p);
        let unsaved: Vec<u64> = lock(&self.writes).keys().copied().collect();
        for ino in unsaved {
            self.keep_unsaved(ino);
        }
    }

    pub fn setattr(&self, ino: u64, set: &SetAttr) -> FsResult<Attr> {
        if set.uid.is_some_and(|u| u != self.cfg.uid) || set.gid.is_some_and(|g| g != self.cfg.gid)
        {
            // FTP has no chown; giving a file away cannot be done.
            return Err(Errno(libc::EPERM));
        }
        if set.size.is_some() || set.mode.is_some() || set.mtime.is_some() {
            self.check_writable()?;
        }
        if let Some(size) = set.size {
            self.truncate(ino, size)?;
        }
        if let Some(mode) = set.mode {
            self.chmod(ino, mode & 0o7777)?;
        }
        if let Some(t) = set.mtime {
            let pending = self.write_state(ino).is_some_and(|ws| {
                let mut ws = lock(&ws);
                if ws.dirty {
                    ws.pending_mtime = Some(t);
                }
                ws.dirty
            });
            if !pending {
                if ino == super::inodes::ROOT {
                    self.remember_mtime(ino, whole_seconds(t), None);
                } else {
                    let (path, e) = self.entry_of(ino)?;
                    self.store_mtime(ino, &path, t, e.kind == EntryKind::Dir)?;
                }
            }
        }
        self.getattr(ino)
    }

    fn truncate(&self, ino: u64, size: u64) -> FsResult<()> {
        let (path, e) = self.entry_of(ino)?;
        if e.kind != EntryKind::File {
            return Err(Errno(libc::EISDIR));
        }
        let ws = self.write_state_or_new(ino, true, e.size == 0)?;
        let upload_now = {
            let mut ws = lock(&ws);
            if size == 0 {
                ws.truncate_all()?;
            } else {
                if !ws.filled {
                    ws.fill(&*self.remote, &path)?;
                }
                ws.set_size(size)?;
            }
            ws.writers == 0
        };
        self.content_changed(ino);
        if upload_now {
            // truncate(2) on a file nobody has open takes effect at once.
            let r = self.upload(ino);
            self.forget_write_state_if_idle(ino);
            r?;
        }
        Ok(())
    }

    fn chmod(&self, ino: u64, mode: u32) -> FsResult<()> {
        if let Some(ws) = self.write_state(ino) {
            let mut ws = lock(&ws);
            if !ws.exists_remotely {
                ws.pending_mode = Some(mode);
                return Ok(());
            }
        }
        if ino == super::inodes::ROOT {
            return Err(Errno(libc::EPERM));
        }
        let (path, mut e) = self.entry_of(ino)?;
        match self.remote.chmod(&path, mode) {
            Ok(()) => {}
            Err(err) if err.kind == ErrorKind::Unsupported => {
                log::warn!("cannot chmod {path}: {}", err.message);
                return Err(Errno(libc::EPERM));
            }
            Err(err) => return Err(err.into()),
        }
        e.mode = Some(mode);
        self.record_entry(&path, e);
        Ok(())
    }
}
