//! Uploads that failed at close, retried in the background as `retry` says; the
//! content of one that fails for good kept on disk; the waiting at unmount; and
//! the list of pending uploads that `ftpfs status` shows.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::lifecycle::{FileSlot, Phase};
use super::{lock, Errno, FtpFs};
use crate::retry;

impl FtpFs {
    /// After the last writer closed a file the server still lacks changes of:
    /// retry its upload in the background.
    pub(super) fn retry_in_background(&self, ino: u64) {
        let Some(fs) = self.me.upgrade() else {
            // No handle on ourselves (unit tests without a mount): try once now.
            let _ = self.upload(ino);
            self.forget_slot_if_idle(ino);
            return;
        };
        let path = self.path_of(ino).unwrap_or_default();
        let (pending, _) = &*self.background;
        if lock(pending).insert(ino, path).is_some() {
            return; // a retry thread already looks after it
        }
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

    fn retry_upload(&self, ino: u64) {
        let path = self.path_of(ino).unwrap_or_default();
        for (attempt, delay) in retry::BACKGROUND_DELAYS.iter().enumerate() {
            std::thread::sleep(*delay);
            match self.upload(ino) {
                Ok(()) => {
                    log::info!("upload of {path} succeeded on retry {}", attempt + 1);
                    self.forget_slot_if_idle(ino);
                    return;
                }
                Err(Errno(e)) if retry::worth_retrying_errno(e) => {
                    log::warn!("retry {} of {path} failed (errno {e})", attempt + 1)
                }
                Err(Errno(e)) => {
                    log::warn!(
                        "retry {} of {path} refused (errno {e}); giving up",
                        attempt + 1
                    );
                    break;
                }
            }
        }
        if self.slot(ino).is_some_and(|s| s.lock().writers > 0) {
            // Opened again meanwhile: its next close uploads it.
            return;
        }
        self.keep_unsaved(ino);
    }

    /// Gives up on the unsaved changes of `ino`: keeps a copy of them in the
    /// spool directory and says where.
    fn keep_unsaved(&self, ino: u64) {
        let journaled = self.slot(ino).is_some_and(|s| s.lock().journal.is_some());
        if journaled {
            // The journal keeps it, and the next mount uploads it.
            log::warn!(
                "the upload of {} is left in the journal for the next mount",
                self.path_of(ino).unwrap_or_default()
            );
            return;
        }
        let Some(slot) = lock(&self.files).remove(&ino) else {
            return;
        };
        let st = slot.lock();
        if !st.phase.is_dirty() {
            return;
        }
        let path = self.path_of(ino).unwrap_or_default();
        match st.spool.keep(&path) {
            Ok(p) => log::error!(
                "upload of {path} failed for good; its content is kept in {}",
                p.display()
            ),
            Err(e) => {
                log::error!("upload of {path} failed for good, and keeping it failed too: {e}")
            }
        }
    }

    /// Files whose changes the server does not have yet, for `ftpfs status`:
    /// (path, size, what they wait for).
    pub fn pending_uploads(&self) -> Vec<(String, Option<u64>, String)> {
        let slots: Vec<(u64, Arc<FileSlot>)> = lock(&self.files)
            .iter()
            .map(|(ino, s)| (*ino, Arc::clone(s)))
            .collect();
        let retrying = lock(&self.background.0).clone();
        let mut out = Vec::new();
        for (ino, slot) in slots {
            let path = self
                .path_of(ino)
                .unwrap_or_else(|_| format!("(inode {ino})"));
            let queued = self.queue_reason(ino);
            let st = slot.lock();
            let why = match &st.phase {
                Phase::Clean | Phase::Unlinked => continue,
                Phase::Uploading { .. } => "uploading".to_string(),
                _ if st.writers > 0 && st.journal.is_some() => {
                    "open for writing; saved in the journal".to_string()
                }
                _ if queued.is_some() => queued.unwrap_or_default(),
                _ if retrying.contains_key(&ino) => {
                    "upload failed; retrying in the background".to_string()
                }
                Phase::Failed(_) if st.writers > 0 => "upload failed; open for writing".to_string(),
                _ if st.writers > 0 => "open for writing; uploads at close".to_string(),
                _ => "waiting for upload".to_string(),
            };
            out.push((path, Some(st.size), why));
        }
        out.sort();
        out
    }

    /// At exit: waits (up to `unmount_wait`) for uploads retried in the background,
    /// with a log line for each; whatever is still unsaved after that is kept on
    /// disk (in async mode: left in the journal for the next mount).
    pub fn wait_for_uploads(&self) {
        let started = Instant::now();
        let deadline = started + self.cfg.unmount_wait;
        let queue = self.queue_view();
        if queue.queued + queue.running > 0 {
            log::warn!(
                "waiting up to {:?} for {} queued upload(s) before exiting",
                self.cfg.unmount_wait,
                queue.queued + queue.running
            );
            let report = self.sync_uploads(Some(self.cfg.unmount_wait));
            if report.pending > 0 {
                log::error!(
                    "{} upload(s) still pending at exit; the journal keeps them for the next mount",
                    report.pending
                );
            }
        }
        self.stop_uploaders();
        let (pending, cv) = &*self.background;
        let mut announced = HashSet::new();
        let mut p = lock(pending);
        while !p.is_empty() {
            for (ino, path) in p.iter() {
                if announced.insert(*ino) {
                    log::warn!("waiting for the upload of {path} before exiting");
                }
            }
            let now = Instant::now();
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
        let unsaved: Vec<u64> = lock(&self.files).keys().copied().collect();
        for ino in unsaved {
            self.keep_unsaved(ino);
        }
    }
}
