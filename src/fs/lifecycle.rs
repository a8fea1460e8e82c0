//! The write-back lifecycle of one file, in one place: the state every handle on
//! the file shares, its transitions, and the upload itself.
//!
//! ```text
//!            write, truncate                close, fsync
//!   Clean ─────────────────────▶ Dirty ─────────────────▶ Uploading(g)
//!     ▲                            ▲                        │  │  │
//!     │  ok, g is still the latest │ ok, but written since  │  │  │ failed
//!     └────────────────────────────┼────────────────────────┘  │  ▼
//!                                  └───────────────────────────┘ Failed(error)
//!                                                                (still dirty; the next
//!   any ──unlink──▶ Unlinked (never uploaded again)              close or a background
//!                                                                retry uploads again)
//! ```
//!
//! Apart from the phase, a file's *content* is `Remote` (only the server has it),
//! `Fetching` (a download into a new spool is running) or `Local` (the spool holds
//! the whole content; reads and writes use it).
//!
//! Every local change bumps the file's generation. An upload records the
//! generation it started from; when it ends, the file is clean only if nothing
//! changed since. The upload reads the spool with no lock held and stops at once
//! if the generation moves, so a replacement never lands half old, half new.
//!
//! Locks, in the only orders they may nest:
//! - `FtpFs::files` (the map) before a file's `state`;
//! - a file's `stream` before its `state`.
//!
//! `state` is held for memory and local-disk work only, never across a network
//! round trip; `stream` is held while a write feeds the streaming upload, which
//! only other writers of the same file wait for.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use super::journal::{Base, Record};
use super::spool::{Spool, CHANGED_DURING_UPLOAD};
use super::streaming::Streaming;
use crate::remote::{ErrorKind, Remote, RemoteError, RemoteResult};
use crate::stats::{Counted, STATS};
use crate::sync::lock;

/// Names of temporary upload files start with this; listings never show them.
pub const TEMP_PREFIX: &str = ".ftpfs-tmp.";

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh temporary name next to `path` ("/d/f" -> "/d/.ftpfs-tmp.PID-N").
pub fn temp_path_for(path: &str) -> String {
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = match path.rfind('/') {
        Some(0) | None => "",
        Some(i) => &path[..i],
    };
    format!("{dir}/{TEMP_PREFIX}{}-{n}", std::process::id())
}

/// How an upload should land.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadMode {
    /// To a temporary name, then renamed over the target (the default).
    Atomic,
    /// Straight to the target (for servers that forbid rename).
    Direct,
}

/// Where a file is in its write-back lifecycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// The server has everything the mount shows.
    Clean,
    /// Local changes the server does not have yet.
    Dirty,
    /// An upload of generation `generation` is running.
    Uploading { generation: u64 },
    /// The last upload failed; the changes are kept for another try.
    Failed(RemoteError),
    /// Unlinked while open: handles keep the content, the server never gets it.
    Unlinked,
}

impl Phase {
    /// Whether the server lacks changes that should reach it.
    pub fn is_dirty(&self) -> bool {
        matches!(
            self,
            Phase::Dirty | Phase::Uploading { .. } | Phase::Failed(_)
        )
    }
}

/// Whether the spool holds the file's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    /// Only the server has it (the spool is empty).
    Remote,
    /// A download into a new spool is running.
    Fetching,
    /// The spool holds the whole content.
    Local,
}

/// What all handles of one file share. Guarded by [`FileSlot::lock`].
pub struct FileState {
    pub phase: Phase,
    pub content: Content,
    pub spool: Spool,
    /// The size as the application sees it (the server's, while `Remote`).
    pub size: u64,
    /// The file exists on the server (false for a new file not uploaded yet).
    pub exists_remotely: bool,
    /// Not known to exist on the server, but a failed upload may have left it
    /// (or part of it) there: an unlink must still remove it.
    pub maybe_remote: bool,
    /// When the content last changed locally.
    pub modified: SystemTime,
    pub pending_mtime: Option<SystemTime>,
    pub pending_mode: Option<u32>,
    /// Open handles that may write.
    pub writers: usize,
    /// Streaming was given up for this version of the content.
    pub no_streaming: bool,
    /// Temporary files on the server that abandoned streams left behind.
    pub orphans: Vec<String>,
    /// What the next upload replaces on the server (for conflict checks).
    pub base: Base,
    /// Look at the server for a conflict before the next upload (set for
    /// uploads resumed from the journal).
    pub verify_base: bool,
    /// This file's entry in the async journal, if it has one.
    pub journal: Option<Journaled>,
    /// Uploads between their start and the end of their clean-up: an unlink or a
    /// rename over the file waits for them, so that nothing lands after it.
    pub uploads_running: usize,
    /// The generation the server has.
    uploaded: u64,
}

/// A file's entry in the journal of `writeback=async`.
#[derive(Debug, Clone)]
pub struct Journaled {
    pub id: String,
    /// The generation the journal holds.
    pub generation: u64,
    /// The journal's data is the spool file itself: a write must copy first.
    pub shares_spool: bool,
}

impl FileState {
    /// The journal record of the content as it is now.
    pub fn record(&self, path: &str) -> Record {
        Record {
            path: path.to_string(),
            size: self.size,
            modified: self.modified,
            mtime: self.pending_mtime,
            mode: self.pending_mode,
            base: self.base,
            partial: self.maybe_remote,
        }
    }
}

/// One file's shared state, and the streaming upload fed by its writers.
pub struct FileSlot {
    state: Mutex<FileState>,
    changed: Condvar,
    /// Bumped (under `state`) at every local change; read without a lock by uploads.
    generation: Arc<AtomicU64>,
    pub stream: Mutex<Option<Streaming>>,
}

/// How long one wait for another thread's download or upload lasts before the
/// waiter looks again (the work itself is bounded by the network timeouts).
const WAIT_STEP: Duration = Duration::from_secs(1);

impl FileSlot {
    /// A slot whose content is `content`, `size` bytes long, replacing `base`.
    pub fn new(spool_dir: &Path, base: Base, content: Content, size: u64) -> io::Result<FileSlot> {
        let state = FileState {
            phase: Phase::Clean,
            content,
            spool: Spool::new(spool_dir)?,
            size: if content == Content::Local { 0 } else { size },
            exists_remotely: base != Base::New,
            maybe_remote: false,
            modified: SystemTime::now(),
            pending_mtime: None,
            pending_mode: None,
            writers: 0,
            no_streaming: false,
            orphans: Vec::new(),
            base,
            verify_base: false,
            journal: None,
            uploads_running: 0,
            uploaded: 0,
        };
        Ok(FileSlot::with_state(state))
    }

    /// A slot for an upload found in the journal at mount time: dirty, its
    /// content the journal's data (shared, not copied).
    pub fn recovered(spool: Spool, id: String, record: &Record) -> FileSlot {
        let slot = FileSlot::with_state(FileState {
            phase: Phase::Dirty,
            content: Content::Local,
            spool,
            size: record.size,
            exists_remotely: record.base != Base::New,
            maybe_remote: record.partial,
            modified: record.modified,
            pending_mtime: record.mtime,
            pending_mode: record.mode,
            writers: 0,
            no_streaming: true,
            orphans: Vec::new(),
            base: record.base,
            verify_base: true,
            journal: Some(Journaled {
                id,
                generation: 1,
                shares_spool: true,
            }),
            uploads_running: 0,
            uploaded: 0,
        });
        slot.generation.store(1, Ordering::SeqCst);
        slot
    }

    fn with_state(state: FileState) -> FileSlot {
        FileSlot {
            state: Mutex::new(state),
            changed: Condvar::new(),
            generation: Arc::new(AtomicU64::new(0)),
            stream: Mutex::new(None),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, FileState> {
        lock(&self.state)
    }

    /// Waits (a bounded step) for another thread to change the state.
    pub fn wait<'a>(&self, g: MutexGuard<'a, FileState>) -> MutexGuard<'a, FileState> {
        crate::sync::wait(&self.changed, g, WAIT_STEP)
    }

    pub fn notify(&self) {
        self.changed.notify_all();
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Records a local change of the content (call with the state locked).
    pub fn content_changed(&self, st: &mut FileState) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        st.modified = SystemTime::now();
        if st.phase == Phase::Clean {
            st.phase = Phase::Dirty;
        }
    }

    /// Marks a new file (or a fresh O_TRUNC) dirty even though no byte changed.
    pub fn mark_dirty(&self, st: &mut FileState) {
        self.content_changed(st);
    }

    /// The state, with the spool holding the content: downloads it first if only
    /// the server has it (with no lock held while the data moves), or waits for the
    /// download another handle started.
    pub fn local<'a>(
        &'a self,
        remote: &dyn Remote,
        path: &str,
        spool_dir: &Path,
    ) -> RemoteResult<MutexGuard<'a, FileState>> {
        let mut st = self.lock();
        loop {
            match st.content {
                Content::Local => return Ok(st),
                Content::Fetching => st = self.wait(st),
                Content::Remote => {
                    st.content = Content::Fetching;
                    drop(st);
                    let fetched = fetch(remote, path, spool_dir);
                    st = self.lock();
                    if st.content == Content::Fetching {
                        match fetched {
                            Ok((spool, n)) => {
                                st.spool = spool;
                                st.size = n;
                                st.content = Content::Local;
                            }
                            Err(e) => {
                                st.content = Content::Remote;
                                self.notify();
                                return Err(e);
                            }
                        }
                    }
                    // Else the content was replaced meanwhile (O_TRUNC): ours is stale.
                    self.notify();
                }
            }
        }
    }

    /// Starts an upload of the current content (call with the state locked and the
    /// phase dirty); the streaming upload, if any, goes with it.
    /// With `snapshot_in`, the upload reads a private copy of the content made
    /// now, for a file that changed under every earlier try.
    pub fn begin_upload(
        &self,
        st: &mut FileState,
        streamed: Option<Streaming>,
        snapshot_in: Option<&Path>,
    ) -> RemoteResult<UploadJob> {
        let generation = self.generation();
        let (spool, watch) = match snapshot_in {
            Some(dir) => (st.spool.snapshot(dir, st.size)?, None),
            None => (st.spool.clone(), Some(Arc::clone(&self.generation))),
        };
        st.phase = Phase::Uploading { generation };
        st.uploads_running += 1;
        Ok(UploadJob {
            generation,
            size: st.size,
            modified: st.modified,
            spool,
            watch,
            exists_remotely: st.exists_remotely,
            pending_mode: st.pending_mode,
            orphans: std::mem::take(&mut st.orphans),
            streamed,
            new_via_temp: false,
        })
    }

    /// Marks the file gone from the mount (unlinked, or replaced by a rename)
    /// and waits for uploads still running to end, so that whatever the caller
    /// does on the server next comes after them.
    pub fn unlink_and_settle<'a>(
        &'a self,
        mut st: MutexGuard<'a, FileState>,
    ) -> MutexGuard<'a, FileState> {
        st.phase = Phase::Unlinked;
        self.notify();
        while st.uploads_running > 0 {
            st = self.wait(st);
        }
        st
    }

    /// Whether the server has generation `want` or a later one (or never will:
    /// the file was unlinked).
    pub fn has_uploaded(&self, st: &FileState, want: u64) -> bool {
        matches!(st.phase, Phase::Clean | Phase::Unlinked) || st.uploaded >= want
    }

    /// Ends an upload. Returns the state to go on from; the phase is `Clean` when
    /// nothing changed since the upload began, `Dirty` when something did (or the
    /// upload stopped because of it), `Failed` otherwise.
    pub fn finish_upload(
        &self,
        st: &mut FileState,
        job: &UploadJob,
        result: &Result<Landed, RemoteError>,
    ) {
        match result {
            Ok(landed) => {
                st.exists_remotely = true;
                st.uploaded = job.generation;
                // What the server now has; its own time for it is not known.
                st.base = Base::Remote {
                    size: job.size,
                    mtime: None,
                };
                st.verify_base = false;
                if landed.mode_applied {
                    st.pending_mode = None;
                }
                st.no_streaming = true;
                if st.phase != Phase::Unlinked {
                    st.phase = if self.generation() == job.generation {
                        Phase::Clean
                    } else {
                        Phase::Dirty
                    };
                }
            }
            Err(e) => {
                // A new file's failed STOR may have left it, or part of it, behind.
                st.maybe_remote |= !st.exists_remotely && !superseded(e);
                if st.phase != Phase::Unlinked {
                    st.phase = if superseded(e) {
                        Phase::Dirty
                    } else {
                        Phase::Failed(e.clone())
                    };
                }
            }
        }
        self.notify();
    }
}

/// Ends the count of a running upload (see [`FileState::uploads_running`]) when dropped.
pub struct RunningUpload<'a>(pub &'a FileSlot);

impl Drop for RunningUpload<'_> {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        st.uploads_running = st.uploads_running.saturating_sub(1);
        self.0.notify();
    }
}

/// Whether an upload stopped because the file changed under it (not a failure).
pub fn superseded(e: &RemoteError) -> bool {
    e.message.contains(CHANGED_DURING_UPLOAD)
}

/// Downloads `path` into a new spool.
fn fetch(remote: &dyn Remote, path: &str, spool_dir: &Path) -> RemoteResult<(Spool, u64)> {
    let spool = Spool::new(spool_dir).map_err(|e| super::spool::io_err("spool", e))?;
    let mut src = remote.open_read(path, 0)?;
    let n = spool.fill_from(&mut src, &format!("RETR {path}"))?;
    log::debug!("fetched {n} bytes of {path} into the spool");
    Ok((spool, n))
}

/// One upload of one generation of a file, run with no lock held.
pub struct UploadJob {
    pub generation: u64,
    pub size: u64,
    /// When the content uploaded last changed: the time the file gets.
    pub modified: SystemTime,
    spool: Spool,
    /// The file's generation counter, unless the job reads a snapshot.
    watch: Option<Arc<AtomicU64>>,
    pub exists_remotely: bool,
    pending_mode: Option<u32>,
    orphans: Vec<String>,
    streamed: Option<Streaming>,
    /// A new file goes to a temporary name first too, so that a crash never
    /// leaves part of it under its name (async mode: the journal resumes it,
    /// and an unknown file under the name would be a conflict).
    pub new_via_temp: bool,
}

/// What a successful upload did besides the content.
#[derive(Debug, Default)]
pub struct Landed {
    /// The mode the upload itself set on the server (a private new file).
    pub applied_mode: Option<u32>,
    /// The pending mode is in place already.
    pub mode_applied: bool,
}

impl UploadJob {
    /// Puts generation `generation` of the content on the server at `path`.
    pub fn run(
        &mut self,
        remote: &dyn Remote,
        path: &str,
        mode: UploadMode,
    ) -> RemoteResult<Landed> {
        let streamed = match self.streamed.take() {
            Some(s) if s.next == self.size && mode == UploadMode::Atomic => {
                let temp = s.temp.clone();
                match s.finish() {
                    Ok(()) => Some(temp),
                    Err(e) => {
                        log::info!(
                            "streaming upload of {path} failed ({}); uploading the spool",
                            e.message
                        );
                        let _ = remote.remove_file(&temp);
                        None
                    }
                }
            }
            Some(s) => {
                let temp = s.abandon();
                let _ = remote.remove_file(&temp);
                None
            }
            None => None,
        };
        for temp in self.orphans.drain(..) {
            if Some(&temp) != streamed.as_ref() && (temp != path || streamed.is_none()) {
                let _ = remote.remove_file(&temp);
            }
        }
        let mut landed = Landed::default();
        // A new file has nothing to protect: it goes straight to its name
        // (unless a crash must not leave part of it there).
        let new_direct =
            !self.exists_remotely && (!self.new_via_temp || self.private_mode().is_some());
        let direct = mode == UploadMode::Direct || new_direct;
        match streamed {
            Some(temp) if temp == path => {}
            Some(temp) => replace(remote, &temp, path)?,
            None if direct => {
                if let (Some(mode), false) = (self.private_mode(), self.exists_remotely) {
                    self.restrict_new_file(remote, path, mode, &mut landed)?;
                }
                if let Err(e) = self.store(remote, path) {
                    if !self.exists_remotely {
                        let _ = remote.remove_file(path);
                    }
                    return Err(e);
                }
            }
            None => {
                let temp = temp_path_for(path);
                if let Err(e) = self.store(remote, &temp) {
                    let _ = remote.remove_file(&temp);
                    return Err(e);
                }
                replace(remote, &temp, path)?;
            }
        }
        Ok(landed)
    }

    /// The mode asked for a new file when it hides content that 0644 would show.
    fn private_mode(&self) -> Option<u32> {
        self.pending_mode.filter(|m| m & 0o044 != 0o044)
    }

    /// A new private file: created empty and restricted before any content lands,
    /// so other server users never see the content. The owner keeps write access
    /// until the content is in.
    fn restrict_new_file(
        &self,
        remote: &dyn Remote,
        path: &str,
        mode: u32,
        landed: &mut Landed,
    ) -> RemoteResult<()> {
        remote.store(path, &mut io::Cursor::new(Vec::new()))?;
        let restricted = (mode | 0o600) & 0o7777;
        match remote.chmod(path, restricted) {
            Ok(()) => {
                landed.applied_mode = Some(restricted);
                landed.mode_applied = restricted == mode;
                Ok(())
            }
            Err(e) if e.kind.is_transient() => Err(e),
            Err(e) => {
                // A server without SITE CHMOD keeps its own mode; the data must still get there.
                log::warn!("cannot restrict {path} before upload: {}", e.message);
                landed.mode_applied = true;
                Ok(())
            }
        }
    }

    /// STOR of the spool's content, stopping if the content changes meanwhile.
    fn store(&self, remote: &dyn Remote, to: &str) -> RemoteResult<()> {
        let progress = STATS.upload(to, Some(self.size));
        let watch = self
            .watch
            .as_ref()
            .map(|w| (Arc::clone(w), self.generation));
        let source = self.spool.source(self.size, watch);
        let mut source = Counted::new(source, &progress);
        remote.store(to, &mut source).map(|_| ()).map_err(|e| {
            let changed = self.watch.as_ref();
            if changed.is_some_and(|w| w.load(Ordering::SeqCst) != self.generation) {
                RemoteError::new(ErrorKind::Connection, CHANGED_DURING_UPLOAD)
            } else {
                e
            }
        })
    }
}

/// Renames the uploaded temporary file over the target; where the server refuses
/// to rename over an existing file, deletes the target first (not atomic, logged).
fn replace(remote: &dyn Remote, temp: &str, path: &str) -> RemoteResult<()> {
    match remote.rename(temp, path) {
        Ok(()) => Ok(()),
        Err(e) if !e.kind.is_transient() => {
            log::info!(
                "rename over {path} refused ({}); deleting it first",
                e.message
            );
            match remote
                .remove_file(path)
                .and_then(|_| remote.rename(temp, path))
            {
                Ok(()) => Ok(()),
                Err(e2) => {
                    let _ = remote.remove_file(temp);
                    Err(e2)
                }
            }
        }
        Err(e) => {
            let _ = remote.remove_file(temp);
            Err(e)
        }
    }
}
