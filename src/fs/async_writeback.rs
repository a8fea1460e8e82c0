//! `writeback=async`: close() returns once the content is durable in the
//! journal (`journal`), and a pool of background uploaders sends it, as many
//! at once as the connection pool carries transfers.
//!
//! - **Queue.** A file is queued when its last writer closes. A file queued
//!   again before its upload starts is uploaded once, with its newest content;
//!   uploads of one file never overlap (the lifecycle's `Uploading` phase).
//! - **Retries.** A broken connection or a timeout is retried after 1, 2, 4...
//!   up to 30 s, for as long as the mount lives. A refusal (permission, quota,
//!   a name the server rejects) is *failed*: the data stays in the journal, the
//!   error is logged and shown by `ftpfs status` and `ftpfs sync`, and the next
//!   close, fsync, `ftpfs sync` or mount tries again.
//! - **Conflicts.** The journal records what each upload replaces. Before an
//!   upload resumed from the journal, or retried after a failure, ftpfs looks
//!   at a fresh listing: if the server's file changed meanwhile, ours goes next
//!   to it under a conflict name and theirs stays.
//! - **Resuming.** At mount, every entry left in the journal (a crash, a cut
//!   unmount) becomes a pending upload again.
//!
//! Lock order: the queue before `FtpFs::files` before a file's state; nothing
//! takes the queue while holding either.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::journal::{Journal, Pending};
use super::lifecycle::{Content, FileSlot, Journaled, Phase};
use super::meta::split_path;
use super::spool::Spool;
use super::{lock, Errno, FsResult, FtpFs};
use crate::remote::RemoteError;

/// The first wait before retrying an upload that broke; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often an idle uploader looks at the queue even without a signal.
const IDLE_POLL: Duration = Duration::from_secs(1);

/// What the server has where a pending upload goes.
enum Verdict {
    /// What the upload replaces: go ahead.
    Ours,
    /// Our content already.
    AlreadyThere,
    /// Someone else's file.
    Theirs,
}

/// How one background upload ended.
#[derive(Debug)]
enum Outcome {
    Done,
    /// Worth another try later (the reason).
    Retry(String),
    /// Refused by the server; kept in the journal (the reason).
    Failed(String),
}

#[derive(Default)]
struct Queue {
    ready: VecDeque<u64>,
    /// The files in `ready`.
    in_ready: HashSet<u64>,
    /// Queued files (ready or waiting for a retry).
    queued: HashSet<u64>,
    /// Retries and when they may start.
    delayed: HashMap<u64, Instant>,
    attempts: HashMap<u64, u32>,
    /// The last error of each file waiting for a retry.
    last_error: HashMap<u64, String>,
    running: HashSet<u64>,
    /// Refused for good while this mount runs: path, reason.
    failed: HashMap<u64, (String, String)>,
    /// Uploads that went to a conflict name: (path, where ours went).
    conflicts: Vec<(String, String)>,
    workers: usize,
    stop: bool,
}

impl Queue {
    fn idle(&self) -> bool {
        self.queued.is_empty() && self.running.is_empty()
    }

    fn make_ready(&mut self, ino: u64) {
        if self.in_ready.insert(ino) {
            self.ready.push_back(ino);
        }
    }
}

/// The background uploaders and their queue.
#[derive(Default)]
pub(super) struct Uploader {
    queue: Mutex<Queue>,
    changed: Condvar,
}

/// What `ftpfs sync` reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Uploads refused for good: (path, reason).
    pub failed: Vec<(String, String)>,
    /// Uploads still pending when the wait ended (a timeout).
    pub pending: usize,
    /// Conflicts seen since the mount: (path, where ours went).
    pub conflicts: Vec<(String, String)>,
}

/// What the queue holds, for `ftpfs status`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueView {
    pub queued: usize,
    pub running: usize,
    pub failed: usize,
    pub conflicts: Vec<(String, String)>,
}

/// `dir/name.conflict-YYYYMMDD-HHMMSS.ext`: where our version goes when the
/// server's file changed under a pending upload.
pub fn conflict_name(path: &str, at: SystemTime) -> String {
    // YYYYMMDDhhmmss (UTC) as 8 + 6 digits.
    let digits = crate::ftp::listing::format_time_val(at);
    let stamp = format!("{}-{}", &digits[..8], &digits[8..]);
    let (dir, name) = split_path(path).unwrap_or(("", path));
    let (stem, ext) = match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], &name[i..]),
        _ => (name, ""),
    };
    let dir = if dir == "/" { "" } else { dir };
    format!("{dir}/{stem}.conflict-{stamp}{ext}")
}

impl FtpFs {
    /// Whether close() hands uploads to the background.
    pub(super) fn is_async(&self) -> bool {
        self.journal.is_some() && self.cfg.writeback == super::Writeback::Async
    }

    /// Makes the current content of `ino` durable in the journal (async mode):
    /// close() returns after this. Nothing to do for a clean or unlinked file.
    pub(super) fn journal_now(&self, ino: u64) -> FsResult<()> {
        let (Some(journal), Some(slot)) = (&self.journal, self.slot(ino)) else {
            return Ok(());
        };
        let Ok(path) = self.path_of(ino) else {
            return Ok(()); // unlinked meanwhile: never uploaded
        };
        let mut st = slot.lock();
        if !st.phase.is_dirty() || st.content != Content::Local {
            return Ok(());
        }
        let generation = slot.generation();
        let entry = st.journal.clone().unwrap_or_else(|| Journaled {
            id: journal.new_id(),
            generation: 0,
            shares_spool: false,
        });
        let record = st.record(&path);
        let saved = if entry.generation == generation && entry.shares_spool {
            Ok(()) // the content is there already
        } else {
            journal.save_data(&entry.id, st.spool.file(), st.spool.path())
        };
        saved
            .and_then(|_| journal.save_record(&entry.id, &record))
            .map_err(|e| {
                log::error!("cannot save {path} in the journal: {e}");
                Errno(e.raw_os_error().unwrap_or(libc::EIO))
            })?;
        st.journal = Some(Journaled {
            generation,
            shares_spool: true,
            ..entry
        });
        Ok(())
    }

    /// Records in `st`'s journal entry, durably, that an upload to `path` may
    /// leave part of a new file there; false when the file has no entry (or it
    /// cannot be written).
    pub(super) fn mark_partial(&self, st: &mut super::lifecycle::FileState, path: &str) -> bool {
        let (Some(journal), Some(j)) = (&self.journal, st.journal.as_ref()) else {
            return false;
        };
        if st.maybe_remote {
            return true;
        }
        st.maybe_remote = true;
        match journal.save_record(&j.id, &st.record(path)) {
            Ok(()) => true,
            Err(e) => {
                log::warn!("cannot update journal entry {}: {e}", j.id);
                false
            }
        }
    }

    /// Before the spool of a journaled file changes: the journal keeps the
    /// content it has, and the file gets a copy to change.
    pub(super) fn detach_from_journal(&self, st: &mut super::lifecycle::FileState) -> FsResult<()> {
        if let Some(j) = st.journal.as_mut().filter(|j| j.shares_spool) {
            st.spool = st.spool.snapshot(&self.cfg.spool_dir, st.size)?;
            j.shares_spool = false;
        }
        Ok(())
    }

    /// Drops the journal entry of `slot` once the server has what it holds (or
    /// the file is gone from the mount). An entry for a newer version stays,
    /// and learns what the server now has (`path`): the upload it waits for
    /// replaces that, not the file the entry first recorded.
    pub(super) fn unjournal_if_saved(&self, slot: &FileSlot, path: Option<&str>) {
        let Some(journal) = &self.journal else {
            return;
        };
        let mut st = slot.lock();
        let Some(j) = st.journal.clone() else {
            return;
        };
        if slot.has_uploaded(&st, j.generation) {
            st.journal = None;
            if let Err(e) = journal.remove(&j.id) {
                log::warn!("cannot remove journal entry {}: {e}", j.id);
            }
        } else if let Some(path) = path {
            if let Err(e) = journal.save_record(&j.id, &st.record(path)) {
                log::warn!("cannot update journal entry {}: {e}", j.id);
            }
        }
    }

    /// Queues the upload of `ino` (async mode), starting the uploaders if need be.
    pub(super) fn queue_upload(&self, ino: u64) {
        let start = {
            let mut q = lock(&self.uploader.queue);
            q.failed.remove(&ino);
            // Changed again while waiting for a retry, or while uploading: again now.
            q.delayed.remove(&ino);
            q.queued.insert(ino);
            q.make_ready(ino);
            let want = self.cfg.upload_workers.max(1);
            let start = want.saturating_sub(q.workers);
            q.workers += start;
            start
        };
        self.uploader.changed.notify_all();
        for _ in 0..start {
            self.start_uploader();
        }
    }

    fn start_uploader(&self) {
        let me = self.me.clone();
        let spawned = std::thread::Builder::new()
            .name("ftpfs-uploader".into())
            .spawn(move || uploader_loop(me));
        if let Err(e) = spawned {
            log::error!("cannot start an upload thread: {e}");
            lock(&self.uploader.queue).workers -= 1;
        }
    }

    /// One background upload of `ino`.
    fn upload_in_background(&self, ino: u64, attempt: u32) -> Outcome {
        let Some(slot) = self.slot(ino) else {
            return Outcome::Done;
        };
        if !slot.lock().phase.is_dirty() {
            return Outcome::Done;
        }
        let Ok(path) = self.path_of(ino) else {
            return Outcome::Done; // unlinked
        };
        let verify = slot.lock().verify_base || attempt > 0;
        if verify {
            match self.conflict_check(&slot, &path) {
                Ok(Verdict::Ours) => {}
                Ok(Verdict::AlreadyThere) => return self.already_uploaded(ino, &slot),
                Ok(Verdict::Theirs) => return self.upload_as_conflict(ino, &slot, &path),
                Err(e) => return Outcome::Retry(e.message),
            }
        }
        match self.upload(ino) {
            Ok(()) => Outcome::Done,
            Err(Errno(e)) => {
                let why = match &slot.lock().phase {
                    Phase::Failed(err) => err.message.clone(),
                    _ => std::io::Error::from_raw_os_error(e).to_string(),
                };
                if crate::retry::worth_retrying_errno(e) {
                    Outcome::Retry(why)
                } else {
                    Outcome::Failed(why)
                }
            }
        }
    }

    /// Whether the server's file is still the one our upload replaces, looked
    /// up in a fresh listing (asked of the server directly: the cached one stays,
    /// for lookups while the server is away). A changed file that holds exactly
    /// our content is our own upload, whose end a crash cut off.
    fn conflict_check(&self, slot: &FileSlot, path: &str) -> Result<Verdict, RemoteError> {
        let Some((dir, name)) = split_path(path) else {
            return Ok(Verdict::Ours);
        };
        let entries = self.remote.list(dir)?;
        let now = entries.iter().find(|e| e.name == name);
        let (base, spool, size, partial) = {
            let st = slot.lock();
            (st.base, st.spool.clone(), st.size, st.maybe_remote)
        };
        if !base.conflicts_with(now, size, partial) {
            return Ok(Verdict::Ours);
        }
        if now.is_some_and(|e| e.size == size) {
            let mut theirs = Vec::new();
            let src = self.remote.open_read(path, 0)?;
            std::io::Read::read_to_end(&mut std::io::Read::take(src, size + 1), &mut theirs)
                .map_err(|e| {
                    RemoteError::new(
                        crate::remote::ErrorKind::Connection,
                        format!("RETR {path}: {e}"),
                    )
                })?;
            let ours = spool.read_at(0, size, size)?;
            if theirs == ours {
                return Ok(Verdict::AlreadyThere);
            }
        }
        Ok(Verdict::Theirs)
    }

    /// The server has our content already: the file is clean.
    fn already_uploaded(&self, ino: u64, slot: &FileSlot) -> Outcome {
        {
            let mut st = slot.lock();
            if st.phase.is_dirty() && !matches!(st.phase, Phase::Uploading { .. }) {
                st.phase = Phase::Clean;
                st.exists_remotely = true;
            }
            slot.notify();
        }
        self.unjournal_if_saved(slot, None);
        self.forget_slot_if_idle(ino);
        Outcome::Done
    }

    /// The server's file changed while ours waited: ours goes next to it.
    fn upload_as_conflict(&self, ino: u64, slot: &FileSlot, path: &str) -> Outcome {
        let target = conflict_name(path, SystemTime::now());
        let (spool, size) = {
            let st = slot.lock();
            (st.spool.clone(), st.size)
        };
        let mut source = spool.source(size, None);
        if let Err(e) = self.remote.store(&target, &mut source) {
            let _ = self.remote.remove_file(&target);
            return if e.kind.is_transient() {
                Outcome::Retry(e.message)
            } else {
                Outcome::Failed(e.message)
            };
        }
        log::warn!(
            "{path} changed on the server while our version waited for upload; \
             ours is saved as {target}, the server's stays"
        );
        crate::stats::STATS.error(format!(
            "conflict: {path} changed on the server; ours is {target}"
        ));
        {
            let mut st = slot.lock();
            st.phase = Phase::Unlinked;
            slot.notify();
        }
        self.unjournal_if_saved(slot, None);
        if let Some((dir, _)) = split_path(path) {
            self.meta.invalidate(dir);
        }
        lock(&self.opened_versions).remove(&ino);
        self.blocks.invalidate(ino);
        self.forget_slot_if_idle(ino);
        lock(&self.uploader.queue)
            .conflicts
            .push((path.to_string(), target));
        Outcome::Done
    }

    /// At mount: every upload left in the journal is pending again.
    pub fn resume_journal(&self) {
        let Some(journal) = &self.journal else {
            return;
        };
        let pending = match journal.load() {
            Ok(p) => p,
            Err(e) => {
                log::error!(
                    "cannot read the journal in {}: {e}",
                    journal.dir().display()
                );
                return;
            }
        };
        if pending.is_empty() {
            return;
        }
        log::info!(
            "resuming {} upload(s) from the journal in {}",
            pending.len(),
            journal.dir().display()
        );
        for p in pending {
            if let Err(e) = self.resume_one(journal, p) {
                log::error!("cannot resume an upload from the journal: {e}");
            }
        }
    }

    fn resume_one(&self, journal: &Journal, p: Pending) -> std::io::Result<()> {
        let ino = {
            let mut inodes = lock(&self.inodes);
            let mut ino = super::inodes::ROOT;
            for part in p.record.path.split('/').filter(|s| !s.is_empty()) {
                ino = inodes.lookup(ino, part);
            }
            ino
        };
        let spool = Spool::adopt(&self.cfg.spool_dir, &p.data)?;
        let slot = Arc::new(FileSlot::recovered(spool, p.id, &p.record));
        // Entries load oldest first: a newer one for the same file replaces it.
        if let Some(older) = lock(&self.files).insert(ino, slot) {
            if let Some(j) = older.lock().journal.take() {
                let _ = journal.remove(&j.id);
            }
        }
        self.queue_upload(ino);
        Ok(())
    }

    /// Tries the uploads that failed for good once more (the user may have
    /// fixed the cause, such as a full quota), then waits until no upload is
    /// queued or running (or `limit` passes).
    pub fn sync_uploads(&self, limit: Option<Duration>) -> SyncReport {
        let deadline = limit.map(|l| Instant::now() + l);
        let retry: Vec<u64> = {
            let mut q = lock(&self.uploader.queue);
            self.prune_failed(&mut q);
            q.failed.keys().copied().collect()
        };
        for ino in retry {
            self.queue_upload(ino);
        }
        let mut q = lock(&self.uploader.queue);
        loop {
            let background_done = lock(&self.background.0).is_empty();
            if q.idle() && background_done {
                break;
            }
            let step = match deadline {
                Some(d) if Instant::now() >= d => break,
                Some(d) => (d - Instant::now()).min(IDLE_POLL),
                None => IDLE_POLL,
            };
            q = crate::sync::wait(&self.uploader.changed, q, step);
        }
        self.prune_failed(&mut q);
        let mut failed: Vec<(String, String)> = q.failed.values().cloned().collect();
        failed.sort();
        SyncReport {
            failed,
            pending: q.queued.len() + q.running.len(),
            conflicts: q.conflicts.clone(),
        }
    }

    /// The queue, for `ftpfs status`.
    pub fn queue_view(&self) -> QueueView {
        let mut q = lock(&self.uploader.queue);
        self.prune_failed(&mut q);
        QueueView {
            queued: q.queued.len(),
            running: q.running.len(),
            failed: q.failed.len(),
            conflicts: q.conflicts.clone(),
        }
    }

    /// Forgets failures of files that are no longer pending (unlinked,
    /// replaced, or saved by an fsync).
    fn prune_failed(&self, q: &mut Queue) {
        q.failed
            .retain(|ino, _| self.slot(*ino).is_some_and(|s| s.lock().phase.is_dirty()));
    }

    /// Why `ino` is pending in the async queue, for `ftpfs status`.
    pub(super) fn queue_reason(&self, ino: u64) -> Option<String> {
        let q = lock(&self.uploader.queue);
        if let Some((_, why)) = q.failed.get(&ino) {
            return Some(format!("failed: {why} (kept in the journal)"));
        }
        if q.running.contains(&ino) {
            return Some("uploading".into());
        }
        if let Some(why) = q.last_error.get(&ino) {
            return Some(format!("waiting to retry: {why}"));
        }
        q.queued.contains(&ino).then(|| "queued for upload".into())
    }

    /// At unmount: stops the uploaders, and waits (up to `unmount_wait`) for
    /// the uploads they are running to end.
    pub fn stop_uploaders(&self) {
        let deadline = Instant::now() + self.cfg.unmount_wait;
        let mut q = lock(&self.uploader.queue);
        q.stop = true;
        self.uploader.changed.notify_all();
        while !q.running.is_empty() && Instant::now() < deadline {
            q = crate::sync::wait(&self.uploader.changed, q, IDLE_POLL);
        }
    }
}

/// One background uploader: takes queued files until the mount goes away.
fn uploader_loop(me: std::sync::Weak<FtpFs>) {
    loop {
        let Some(fs) = me.upgrade() else {
            return;
        };
        let Some((ino, attempt)) = next_job(&fs) else {
            return;
        };
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            fs.upload_in_background(ino, attempt)
        }))
        .unwrap_or_else(|_| Outcome::Retry("the upload panicked (see the log)".into()));
        finish_job(&fs, ino, attempt, outcome);
    }
}

/// The next file to upload, waiting for one; None when the uploaders stop.
fn next_job(fs: &Arc<FtpFs>) -> Option<(u64, u32)> {
    let u = &fs.uploader;
    let mut q = lock(&u.queue);
    loop {
        if q.stop {
            q.workers = q.workers.saturating_sub(1);
            return None;
        }
        let now = Instant::now();
        let due: Vec<u64> = q
            .delayed
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(i, _)| *i)
            .collect();
        for ino in due {
            q.delayed.remove(&ino);
            q.make_ready(ino);
        }
        // A file being uploaded waits for its upload to end.
        let pos = q.ready.iter().position(|i| !q.running.contains(i));
        if let Some(ino) = pos.and_then(|p| q.ready.remove(p)) {
            q.in_ready.remove(&ino);
            q.running.insert(ino);
            let attempt = q.attempts.get(&ino).copied().unwrap_or(0);
            return Some((ino, attempt));
        }
        let next_due = q
            .delayed
            .values()
            .min()
            .map(|t| t.saturating_duration_since(now));
        let wait = next_due
            .unwrap_or(IDLE_POLL)
            .clamp(Duration::from_millis(10), IDLE_POLL);
        q = crate::sync::wait(&u.changed, q, wait);
    }
}

fn finish_job(fs: &FtpFs, ino: u64, attempt: u32, outcome: Outcome) {
    let path = fs.path_of(ino).unwrap_or_else(|_| format!("(inode {ino})"));
    let done = {
        let mut q = lock(&fs.uploader.queue);
        q.running.remove(&ino);
        let again = q.in_ready.contains(&ino);
        match outcome {
            Outcome::Done => {
                q.attempts.remove(&ino);
                q.last_error.remove(&ino);
                // Changed while it was uploaded, and closed: the newer version next.
                let newer = fs.slot(ino).is_some_and(|s| {
                    let st = s.lock();
                    st.writers == 0 && st.phase.is_dirty()
                });
                if newer {
                    q.make_ready(ino);
                } else if !again {
                    q.queued.remove(&ino);
                }
            }
            Outcome::Retry(why) => {
                let wait = FIRST_BACKOFF
                    .saturating_mul(1 << attempt.min(5))
                    .min(MAX_BACKOFF);
                log::warn!("upload of {path} failed ({why}); retrying in {wait:?}");
                q.attempts.insert(ino, attempt + 1);
                q.last_error.insert(ino, why);
                if !again {
                    q.delayed.insert(ino, Instant::now() + wait);
                }
            }
            Outcome::Failed(why) => {
                log::error!("upload of {path} refused: {why}; its content stays in the journal");
                q.attempts.remove(&ino);
                q.last_error.remove(&ino);
                if !again {
                    q.queued.remove(&ino);
                    q.failed.insert(ino, (path.clone(), why));
                }
            }
        }
        !q.queued.contains(&ino)
    };
    fs.uploader.changed.notify_all();
    if done {
        fs.forget_slot_if_idle(ino);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflict_names_keep_the_directory_and_the_extension() {
        let t = std::time::UNIX_EPOCH + Duration::from_secs(1_764_939_901);
        assert_eq!(
            conflict_name("/site/index.html", t),
            "/site/index.conflict-20251205-130501.html"
        );
        assert_eq!(
            conflict_name("/README", t),
            "/README.conflict-20251205-130501"
        );
        assert_eq!(
            conflict_name("/.profile", t),
            "/.profile.conflict-20251205-130501"
        );
    }
}
