//! When uploads run, for the filesystem: at close and fsync (the caller gets the
//! upload's error), before a rename, after a truncate of a closed file. It drives
//! the lifecycle in `lifecycle` (states, generations, the upload itself) with no
//! lock held across the network, applies the attributes that wait for the
//! upload, and tells the caches what the server now has.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::journal::Base;
use super::lifecycle::{
    superseded, Content, FileSlot, Landed, Phase, RunningUpload, UploadJob, UploadMode,
};
use super::meta::split_path;
use super::{lock, Errno, FsResult, FtpFs};
use crate::remote::{Entry, EntryKind, ErrorKind, RemoteError};
use crate::retry;

/// The mode a new file gets from servers unless told otherwise.
pub(super) const DEFAULT_FILE_MODE: u32 = 0o644;

/// After this many uploads stopped because the file kept changing, the next one
/// reads a private copy of the content instead.
const SUPERSEDED_BEFORE_SNAPSHOT: usize = 2;

/// Whole seconds: what FTP servers store.
pub(super) fn whole_seconds(t: SystemTime) -> SystemTime {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => UNIX_EPOCH + Duration::from_secs(d.as_secs()),
        Err(_) => UNIX_EPOCH,
    }
}

impl FtpFs {
    /// The shared state of `ino`, if it has one.
    pub(super) fn slot(&self, ino: u64) -> Option<Arc<FileSlot>> {
        lock(&self.files).get(&ino).cloned()
    }

    /// The shared state of `ino`, created if there is none (`content` and `size`
    /// describe a new one, replacing `base` on the server). With `writer`, counts one more writing handle, under
    /// the map's lock, so that no release can drop the state in between.
    pub(super) fn slot_or_new(
        &self,
        ino: u64,
        base: Base,
        content: Content,
        size: u64,
        writer: bool,
    ) -> FsResult<Arc<FileSlot>> {
        let mut files = lock(&self.files);
        let slot = match files.get(&ino) {
            Some(s) => Arc::clone(s),
            None => {
                let s = FileSlot::new(&self.cfg.spool_dir, base, content, size).map_err(|e| {
                    log::error!(
                        "cannot create a spool file in {}: {e}",
                        self.cfg.spool_dir.display()
                    );
                    Errno(libc::EIO)
                })?;
                let s = Arc::new(s);
                files.insert(ino, Arc::clone(&s));
                s
            }
        };
        if writer {
            slot.lock().writers += 1;
        }
        Ok(slot)
    }

    /// Drops the state of `ino` once nothing needs it: no writer, nothing the
    /// server still lacks, and no journal entry left to drop (the upload that
    /// saved it drops it). The cached listing has what the upload wrote.
    pub(super) fn forget_slot_if_idle(&self, ino: u64) {
        let mut files = lock(&self.files);
        let idle = files.get(&ino).is_some_and(|s| {
            let st = s.lock();
            st.writers == 0
                && matches!(st.phase, Phase::Clean | Phase::Unlinked)
                && st.journal.is_none()
        });
        if idle {
            files.remove(&ino);
        }
    }

    /// Makes the server have every change made to `ino` before this call: waits for
    /// an upload already running, or runs one, retried as `retry` says. The error
    /// is the caller's (close, fsync).
    pub(super) fn upload(&self, ino: u64) -> FsResult<()> {
        let Some(slot) = self.slot(ino) else {
            return Ok(());
        };
        let want = slot.generation();
        let mut failures = 0;
        let mut superseded_count = 0;
        loop {
            {
                let mut st = slot.lock();
                while matches!(st.phase, Phase::Uploading { .. }) {
                    st = slot.wait(st);
                }
                if slot.has_uploaded(&st, want) {
                    return Ok(());
                }
            }
            let path = self.path_of(ino)?;
            let snapshot = superseded_count >= SUPERSEDED_BEFORE_SNAPSHOT;
            let Some(mut job) = self.begin_upload(&slot, &path, snapshot)? else {
                continue; // another upload started first: wait for it
            };
            let _running = RunningUpload(&slot);
            let result = job.run(&*self.remote, &path, self.cfg.upload_mode);
            let result = match result {
                Ok(landed) => self.after_content_landed(&slot, &job, &path, landed),
                Err(e) => Err(e),
            };
            let unlinked = {
                let mut st = slot.lock();
                slot.finish_upload(&mut st, &job, &result);
                st.phase == Phase::Unlinked
            };
            match result {
                // Unlinked or replaced while the upload ran: whoever did it waited
                // for this upload, and removes or replaces what it put there.
                Ok(_) if unlinked => return Ok(()),
                Ok(_) => {
                    self.uploaded(ino, &slot, &job, &path);
                    if slot.generation() == job.generation || job.generation >= want {
                        return Ok(());
                    }
                }
                Err(e) if superseded(&e) => {
                    log::debug!("{path} changed while it was uploaded; uploading again");
                    superseded_count += 1;
                }
                Err(e) => {
                    failures += 1;
                    if retry::worth_retrying(e.kind) && failures < retry::UPLOAD_ATTEMPTS {
                        log::warn!("upload of {path} failed ({}); trying again", e.message);
                        continue;
                    }
                    log::error!("upload of {path} failed: {}", e.message);
                    return Err(e.into());
                }
            }
        }
    }

    /// Starts an upload of `slot` (None when another one is running already, or
    /// there is nothing to upload any more).
    fn begin_upload(
        &self,
        slot: &FileSlot,
        path: &str,
        snapshot: bool,
    ) -> FsResult<Option<UploadJob>> {
        let mut stream = lock(&slot.stream);
        let mut st = slot.lock();
        // Another upload runs, or the file was saved or unlinked meanwhile: the
        // caller looks again.
        if matches!(st.phase, Phase::Uploading { .. }) || !st.phase.is_dirty() {
            return Ok(None);
        }
        if st.exists_remotely
            && st.pending_mode.is_none()
            && self.cfg.upload_mode == UploadMode::Atomic
        {
            // The replacement is a new file: give it the old one's mode back.
            let old_mode = split_path(path).and_then(|(dir, name)| {
                self.meta
                    .fresh(dir)
                    .and_then(|l| l.get(name).and_then(|e| e.mode))
            });
            st.pending_mode = old_mode.filter(|m| *m != DEFAULT_FILE_MODE);
        }
        let dir = snapshot.then_some(self.cfg.spool_dir.as_path());
        // Async mode: a new file goes straight to its name (two round trips
        // fewer) once its journal entry says that a crash may leave part of it
        // there; without a journal entry, through a temporary name.
        let straight = self.is_async() && !st.exists_remotely && self.mark_partial(&mut st, path);
        let mut job = slot.begin_upload(&mut st, stream.take(), dir)?;
        job.new_via_temp = self.is_async() && !straight;
        Ok(Some(job))
    }

    /// The content is on the server: set the mode and time that wait for it.
    fn after_content_landed(
        &self,
        slot: &FileSlot,
        job: &UploadJob,
        path: &str,
        landed: Landed,
    ) -> Result<Landed, RemoteError> {
        let mode = {
            let mut st = slot.lock();
            if landed.mode_applied {
                st.pending_mode = None;
            }
            st.pending_mode.take()
        };
        let mut entry = Entry::new("", EntryKind::File, job.size);
        // The content's time is its last change, as on a local disk, not the upload's.
        entry.mtime = Some(whole_seconds(job.modified));
        // The mode the server now has, as far as we set one (else the listing's).
        entry.mode = landed.applied_mode;
        if let Some(mode) = mode {
            match self.remote.chmod(path, mode) {
                Ok(()) => entry.mode = Some(mode),
                Err(e) => log::warn!("chmod {path} after upload: {}", e.message),
            }
        }
        self.record_entry(path, entry);
        Ok(landed)
    }

    /// The caches learn what an upload put on the server; a time set while the
    /// upload was waiting goes to the server now.
    /// `slot` is the uploader's own: another thread may have forgotten it already.
    fn uploaded(&self, ino: u64, slot: &FileSlot, job: &UploadJob, path: &str) {
        lock(&self.opened_versions).remove(&ino);
        let mtime = slot.lock().pending_mtime.take();
        match mtime {
            Some(t) => {
                if let Err(Errno(e)) = self.store_mtime(ino, path, t, Some(job.size)) {
                    log::warn!("setting the time of {path} after upload failed (errno {e})");
                }
            }
            // The server's own time is within a second or two of ours; show ours
            // throughout, so the time does not jump when the listing is refreshed.
            None => {
                self.set_times.forget(path);
                self.remember_mtime(ino, whole_seconds(job.modified), None)
            }
        }
        self.unjournal_if_saved(slot, Some(path));
        if !job.exists_remotely {
            let parent = lock(&self.inodes).parent(ino);
            if let Some(p) = parent {
                self.touch_dir(p);
            }
        }
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
    /// `file_size` is None for a directory: its time is not remembered across
    /// mounts (servers rarely store it, and listings change it).
    pub(super) fn store_mtime(
        &self,
        ino: u64,
        path: &str,
        t: SystemTime,
        file_size: Option<u64>,
    ) -> FsResult<()> {
        let t = whole_seconds(t);
        let is_dir = file_size.is_none();
        match self.remote.set_mtime(path, t) {
            Ok(()) => {
                if let Some(size) = file_size {
                    self.set_times.remember(path, size, t, None);
                }
            }
            Err(e) if e.kind == ErrorKind::Unsupported => {
                log::debug!("keeping the mtime of {path} locally: {}", e.message);
                if let Some(size) = file_size {
                    // Shown across mounts while the server's own time stays.
                    match self.remote.mtime(path) {
                        Ok(server) => self.set_times.remember(path, size, t, Some(server)),
                        Err(e) => log::debug!("no MDTM for {path}: {}", e.message),
                    }
                }
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
}
