//! File handles and their data: open, read, create, write, flush, fsync, release
//! and setattr, over the shared per-file state in `lifecycle` (the uploads
//! themselves are driven from `writeback`).

use std::sync::Mutex;
use std::time::SystemTime;

use super::journal::Base;
use super::lifecycle::{temp_path_for, Content, FileSlot, FileState, Phase, UploadMode};
use super::reader::{Bytes, FileKey, Reader};
use super::streaming::Streaming;
use super::writeback::{whole_seconds, DEFAULT_FILE_MODE};
use super::{lock, Attr, Errno, FsResult, FtpFs, Handle};
use crate::fs::meta::split_path;
use crate::remote::{EntryKind, ErrorKind};

/// In async mode, a file written in order streams to the server once it grows
/// past this (smaller ones are journaled and uploaded in the background).
pub const ASYNC_STREAM_FROM: u64 = 8 << 20;

/// What a setattr call asks for.
#[derive(Debug, Default, Clone)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub mtime: Option<SystemTime>,
    /// The call came through an open file (ftruncate, or the truncate of an
    /// O_TRUNC open): that file's close saves the change.
    pub through_handle: bool,
}

impl FtpFs {
    pub(super) fn check_writable(&self) -> FsResult<()> {
        if self.cfg.read_only {
            Err(Errno(libc::EROFS))
        } else {
            Ok(())
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
            let content = if e.size == 0 {
                Content::Local
            } else {
                Content::Remote
            };
            let slot = self.slot_or_new(ino, Base::of(&e), content, e.size, true)?;
            if flags & libc::O_TRUNC != 0 {
                self.resize(&slot, &path, 0)?;
                self.content_changed(ino);
            }
        }
        // The mount's own content, while it has one (a pending upload): a reader
        // that goes to the server once the upload is done reads that much.
        let local_size = self.slot(ino).and_then(|slot| {
            let st = slot.lock();
            (st.content == Content::Local || st.phase.is_dirty()).then_some(st.size)
        });
        let key = FileKey {
            ino,
            size: local_size.unwrap_or(e.size),
            mtime: e.mtime,
        };
        let unchanged = lock(&self.opened_versions).insert(ino, key) == Some(key);
        let keep_cache = unchanged && self.slot(ino).is_none();
        if !write {
            self.prefetch_after(ino, &path);
        }
        let fh = self.add_handle(Handle::File {
            ino,
            reader: Mutex::new(Reader::new(path, key).with_streams(self.cfg.read_streams)),
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
        if self.find(parent, &dir, name)?.is_some() {
            if flags & libc::O_EXCL != 0 {
                return Err(Errno(libc::EEXIST));
            }
            let attr = self.lookup(parent, name)?;
            let (fh, _) = self.open(attr.ino, flags)?;
            return Ok((self.getattr(attr.ino)?, fh));
        }
        let ino = lock(&self.inodes).lookup(parent, name);
        let slot = self.slot_or_new(ino, Base::New, Content::Local, 0, true)?;
        {
            let mut st = slot.lock();
            // even an empty new file must reach the server
            slot.mark_dirty(&mut st);
            let mode = mode & 0o7777;
            if mode != DEFAULT_FILE_MODE {
                st.pending_mode = Some(mode);
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
            reader: Mutex::new(Reader::new(path, key).with_streams(self.cfg.read_streams)),
            write: true,
        });
        Ok((self.getattr(ino)?, fh))
    }

    pub fn read(&self, fh: u64, offset: u64, size: u32) -> FsResult<Bytes> {
        let handle = self.handle(fh)?;
        let Handle::File { ino, reader, .. } = handle.as_ref() else {
            return Err(Errno(libc::EISDIR));
        };
        if let Some(slot) = self.slot(*ino) {
            let st = slot.lock();
            if st.content == Content::Local {
                return Ok(Bytes::Owned(st.spool.read_at(
                    offset,
                    size as u64,
                    st.size,
                )?));
            }
        }
        self.prefetch.wait_for(*ino, self.cfg.timeout);
        let mut reader = lock(reader);
        if let Ok(path) = self.path_of(*ino) {
            reader.moved_to(path);
        }
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
        let slot = self.slot(*ino).ok_or(Errno(libc::EBADF))?;
        // An unlinked file has no path any more; its content is local by then.
        let path = self.path_of(*ino).unwrap_or_default();
        // Only other writers of this file wait for this lock (it is held while the
        // streaming upload sends); the state's lock is held for the spool write only.
        let mut stream = lock(&slot.stream);
        let mut st = slot.local(&*self.remote, &path, &self.cfg.spool_dir)?;
        self.detach_from_journal(&mut st)?;
        st.spool.write_at(offset, data)?;
        let was = st.size;
        st.size = was.max(offset + data.len() as u64);
        slot.content_changed(&mut st);
        let end = offset + data.len() as u64;
        let stream_to = self.stream_target(&st, &path, stream.as_ref(), offset, end, was);
        let prefix = match (&stream_to, stream.as_ref()) {
            // A stream that starts late sends what the spool holds before this write.
            (Some(_), None) if offset > 0 => Some(st.spool.read_at(0, offset, offset)?),
            _ => None,
        };
        drop(st);
        match stream_to {
            Some(target) => {
                let prefix = prefix.as_deref().unwrap_or_default();
                self.feed_stream(&slot, &mut stream, &path, target, prefix, data)
            }
            // Async mode: a file written in order may still stream once it is big.
            None if self.is_async() && stream.is_none() && offset == was => {}
            None => {
                let abandoned = stream.take().map(Streaming::abandon);
                let mut st = slot.lock();
                st.no_streaming = true;
                st.orphans.extend(abandoned);
            }
        }
        drop(stream);
        self.content_changed(*ino);
        Ok(data.len() as u32)
    }

    /// Where the write of `offset..end` may stream to: only a file rewritten from
    /// its start, in order, streams; a new file straight to its name (unless it is
    /// private: it is restricted before its content goes up), an existing one to a
    /// temporary name. None means the spool is uploaded at close instead.
    ///
    /// In async mode a file streams only once it grows past [`ASYNC_STREAM_FROM`]
    /// written in order (small files are journaled and uploaded in the
    /// background), and always to a temporary name: no journal entry tells a
    /// crash that part of it may be at its name.
    fn stream_target(
        &self,
        st: &FileState,
        path: &str,
        stream: Option<&Streaming>,
        offset: u64,
        end: u64,
        size_before: u64,
    ) -> Option<String> {
        let private = !st.exists_remotely && st.pending_mode.is_some_and(|m| m & 0o044 != 0o044);
        if self.cfg.upload_mode != UploadMode::Atomic
            || private
            || st.no_streaming
            || st.phase == Phase::Unlinked
        {
            return None;
        }
        match stream {
            Some(s) if s.next == offset => Some(s.temp.clone()),
            Some(_) => None,
            None if self.is_async() => {
                let crossing = offset < ASYNC_STREAM_FROM && end >= ASYNC_STREAM_FROM;
                (offset == size_before && crossing).then(|| temp_path_for(path))
            }
            None if offset == 0 && size_before == 0 => Some(if st.exists_remotely {
                temp_path_for(path)
            } else {
                path.to_string()
            }),
            None => None,
        }
    }

    /// Sends `prefix` (what the spool holds before a late start) and `data` down
    /// the streaming upload, starting it first if need be. A stream that breaks,
    /// or whose connection another transfer is waiting for, is abandoned: the
    /// spool is uploaded at close instead.
    fn feed_stream(
        &self,
        slot: &FileSlot,
        stream: &mut Option<Streaming>,
        path: &str,
        target: String,
        prefix: &[u8],
        data: &[u8],
    ) {
        if stream.is_none() {
            match Streaming::start(&*self.remote, path, target) {
                Ok(s) => *stream = Some(s),
                Err(e) => {
                    log::debug!(
                        "no streaming upload ({}); the spool will be uploaded",
                        e.message
                    );
                    slot.lock().no_streaming = true;
                    return;
                }
            }
        }
        let fed = !self.remote.transfer_contended()
            && stream
                .as_mut()
                .is_some_and(|s| s.feed(prefix) && s.feed(data));
        if !fed {
            if self.remote.transfer_contended() {
                log::debug!("another transfer waits: {path} goes to the spool, uploaded at close");
            }
            let abandoned = stream.take().map(Streaming::abandon);
            let mut st = slot.lock();
            st.no_streaming = true;
            st.orphans.extend(abandoned);
        }
    }

    /// flush(2), at every close(): make the server's copy complete, and the
    /// upload's error the caller's error; in async mode, make the content
    /// durable in the journal instead (the upload follows in the background).
    pub fn flush(&self, fh: u64) -> FsResult<()> {
        let handle = self.handle(fh)?;
        match handle.as_ref() {
            Handle::File {
                ino, write: true, ..
            } if self.is_async() => self.finish_stream_or_journal(*ino),
            Handle::File {
                ino, write: true, ..
            } => self.upload(*ino),
            _ => Ok(()),
        }
    }

    /// Async close: a file that streamed all of its content finishes its upload
    /// now (one round trip, cheaper than making the spool durable); any other
    /// goes to the journal, as does one whose stream fails here.
    fn finish_stream_or_journal(&self, ino: u64) -> FsResult<()> {
        let complete = self.slot(ino).is_some_and(|slot| {
            let stream = lock(&slot.stream);
            let size = slot.lock().size;
            stream.as_ref().is_some_and(|s| s.next == size)
        });
        if complete {
            match self.upload(ino) {
                Ok(()) => return Ok(()),
                Err(Errno(e)) => log::info!(
                    "the streamed upload of inode {ino} did not finish (errno {e}); \
                     it goes to the journal"
                ),
            }
        }
        self.journal_now(ino)
    }

    /// The changes of `ino` are to take effect now (a truncate of a closed
    /// file): uploaded, or in async mode, journaled and queued by the close.
    fn save_now(&self, ino: u64) -> FsResult<()> {
        if self.is_async() {
            self.journal_now(ino)
        } else {
            self.upload(ino)
        }
    }

    /// In async mode, the journal learns a changed attribute of a file it holds.
    fn journal_if_async(&self, ino: u64) -> FsResult<()> {
        let journaled = self
            .slot(ino)
            .is_some_and(|slot| slot.lock().journal.is_some());
        if self.is_async() && journaled {
            self.journal_now(ino)
        } else {
            Ok(())
        }
    }

    /// fsync(2) saves the file whatever the handle's access mode: unsaved
    /// changes made through other handles (or a failed close) are uploaded too.
    pub fn fsync(&self, fh: u64) -> FsResult<()> {
        match self.handle(fh)?.as_ref() {
            Handle::File { ino, .. } => self.upload(*ino),
            Handle::Dir { .. } => Ok(()),
        }
    }

    /// Another transfer waits for a connection: streaming uploads that are not
    /// sending right now give theirs up (their files are uploaded at close).
    pub(super) fn yield_idle_streams(&self) {
        let slots: Vec<std::sync::Arc<FileSlot>> = lock(&self.files).values().cloned().collect();
        for slot in slots {
            // A writer holding the lock is sending: it sees the contention itself.
            let Ok(mut stream) = slot.stream.try_lock() else {
                continue;
            };
            if let Some(s) = stream.take() {
                log::debug!(
                    "another transfer waits: giving up the idle stream to {}",
                    s.temp
                );
                let temp = s.abandon();
                let mut st = slot.lock();
                st.no_streaming = true;
                st.orphans.push(temp);
            }
        }
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
        self.writer_closed(*ino);
    }

    /// One writer of `ino` is gone; the last one hands unsaved changes to the
    /// background (an upload running now is waited for by whoever started it).
    pub(super) fn writer_closed(&self, ino: u64) {
        let Some(slot) = self.slot(ino) else {
            return;
        };
        let (retry, dirty) = {
            let mut st = slot.lock();
            st.writers = st.writers.saturating_sub(1);
            let last = st.writers == 0;
            let retry = last && matches!(st.phase, Phase::Dirty | Phase::Failed(_));
            // Async: also while an upload runs, which may be of an older version.
            (retry, last && st.phase.is_dirty())
        };
        if dirty && self.is_async() {
            self.queue_upload(ino);
        } else if retry {
            self.retry_in_background(ino);
        } else {
            self.forget_slot_if_idle(ino);
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
            self.truncate(ino, size, set.through_handle)?;
        }
        if let Some(mode) = set.mode {
            self.chmod(ino, mode & 0o7777)?;
        }
        if let Some(t) = set.mtime {
            let pending = self.slot(ino).is_some_and(|slot| {
                let mut st = slot.lock();
                let dirty = st.phase.is_dirty();
                if dirty {
                    st.pending_mtime = Some(t);
                }
                dirty
            });
            if pending {
                self.journal_if_async(ino)?;
            }
            if !pending {
                if ino == super::inodes::ROOT {
                    self.remember_mtime(ino, whole_seconds(t), None);
                } else {
                    let (path, e) = self.entry_of(ino)?;
                    let file_size = (e.kind != EntryKind::Dir).then_some(e.size);
                    self.store_mtime(ino, &path, t, file_size)?;
                }
            }
        }
        self.getattr(ino)
    }

    fn truncate(&self, ino: u64, size: u64, through_handle: bool) -> FsResult<()> {
        let (path, e) = self.entry_of(ino)?;
        if e.kind != EntryKind::File {
            return Err(Errno(libc::EISDIR));
        }
        let content = if e.size == 0 {
            Content::Local
        } else {
            Content::Remote
        };
        let slot = self.slot_or_new(ino, Base::of(&e), content, e.size, true)?;
        let resized = self.resize(&slot, &path, size);
        self.content_changed(ino);
        // truncate(2) on a file nobody has open takes effect at once; through
        // a handle, at that handle's close (even if the kernel asks before our
        // open has counted the handle's writer).
        let alone = !through_handle && slot.lock().writers == 1;
        let uploaded = if alone && resized.is_ok() {
            self.save_now(ino)
        } else {
            Ok(())
        };
        self.writer_closed(ino);
        resized.and(uploaded)
    }

    /// Sets the content's length: zero needs no download, any other length the
    /// whole content (what is cut off is gone, what is added reads as zeros).
    fn resize(&self, slot: &FileSlot, path: &str, size: u64) -> FsResult<()> {
        let mut stream = lock(&slot.stream);
        let mut st = if size == 0 {
            slot.lock()
        } else {
            slot.local(&*self.remote, path, &self.cfg.spool_dir)?
        };
        self.detach_from_journal(&mut st)?;
        st.spool.set_len(size)?;
        let was = st.size;
        st.size = size;
        if size == 0 {
            // Whatever was fetching is no longer the content.
            st.content = Content::Local;
            st.no_streaming = false;
        }
        slot.content_changed(&mut st);
        let keeps_stream = stream
            .as_ref()
            .is_some_and(|s| size != 0 && s.next == size && size >= was);
        drop(st);
        if !keeps_stream {
            if let Some(s) = stream.take() {
                let temp = s.abandon();
                slot.lock().orphans.push(temp);
            }
        }
        Ok(())
    }

    fn chmod(&self, ino: u64, mode: u32) -> FsResult<()> {
        if let Some(slot) = self.slot(ino) {
            let mut st = slot.lock();
            let dirty = st.phase.is_dirty();
            if !st.exists_remotely {
                // A new file gets the servers' usual mode without a SITE CHMOD.
                st.pending_mode = (mode != DEFAULT_FILE_MODE).then_some(mode);
            } else if dirty {
                // The upload on its way replaces the file: it must carry the mode too.
                st.pending_mode = Some(mode);
            }
            let only_local = !st.exists_remotely;
            drop(st);
            if dirty {
                self.journal_if_async(ino)?;
            }
            if only_local {
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
