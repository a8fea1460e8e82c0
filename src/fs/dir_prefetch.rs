//! Listing prefetch for tree walks (`find`, `du -s`, `ls -R`): when a directory
//! is opened, the listings of its subdirectories are fetched in the background,
//! a few at once, so that the walk finds them in the cache instead of paying a
//! round trip per directory, one after another. The walk moves the frontier:
//! each directory it opens queues its own subdirectories.
//!
//! Bounds: a few fetchers, each only while the pool has a connection to spare
//! beyond one kept for the user (so prefetch never makes a user's command wait,
//! and never opens more connections than the limit learnt from 421); a bounded
//! queue; nothing while the listing cache is over half full. A listing that the
//! user asks for while it is prefetched is waited for, not fetched twice.

use std::collections::{HashSet, VecDeque};
use std::sync::{Condvar, Mutex, Weak};
use std::time::Duration;

use super::lock;
use super::meta::Listing;
use super::FtpFs;
use crate::remote::EntryKind;

/// Directories waiting to be listed, at most.
const MAX_QUEUED: usize = 4096;
/// Fetchers at once, at most (fewer when the pool has fewer to spare).
const MAX_FETCHERS: usize = 4;
/// How long an idle fetcher waits for more work before it ends.
const IDLE: Duration = Duration::from_millis(500);

#[derive(Default)]
struct Queue {
    pending: VecDeque<String>,
    queued: HashSet<String>,
    fetchers: usize,
    /// Fetches running now.
    running: usize,
}

#[derive(Default)]
pub struct DirPrefetch {
    queue: Mutex<Queue>,
    more: Condvar,
}

impl FtpFs {
    /// Queues the subdirectories of `dir` (listed as `listing`) for prefetch.
    pub(super) fn prefetch_subdirs(&self, dir: &str, listing: &Listing) {
        if self.me.upgrade().is_none() || self.meta.stats().3 > self.cfg.max_cached_entries / 2 {
            return;
        }
        let subdirs: Vec<String> = listing
            .entries
            .iter()
            .filter(|e| e.kind == EntryKind::Dir)
            .map(|e| super::meta::child_path(dir, &e.name))
            .filter(|p| self.meta.fresh(p).is_none())
            .collect();
        if subdirs.is_empty() {
            return;
        }
        let p = &self.dir_prefetch;
        let start = {
            let mut q = lock(&p.queue);
            for s in subdirs {
                if q.queued.len() >= MAX_QUEUED {
                    break;
                }
                if q.queued.insert(s.clone()) {
                    q.pending.push_back(s);
                }
            }
            let want = q.pending.len().min(MAX_FETCHERS);
            let start = want.saturating_sub(q.fetchers);
            q.fetchers += start;
            start
        };
        p.more.notify_all();
        for _ in 0..start {
            let me = self.me.clone();
            let spawned = std::thread::Builder::new()
                .name("ftpfs-dirprefetch".into())
                .spawn(move || fetcher(me));
            if spawned.is_err() {
                lock(&p.queue).fetchers -= 1;
            }
        }
    }
}

/// One fetcher: lists queued directories while the pool has connections to
/// spare; ends when the queue stays empty, or when it has none to spare.
fn fetcher(me: Weak<FtpFs>) {
    loop {
        let Some(fs) = me.upgrade() else {
            return;
        };
        let p = &fs.dir_prefetch;
        let next = {
            let mut q = lock(&p.queue);
            if q.pending.is_empty() {
                q = crate::sync::wait(&p.more, q, IDLE);
            }
            // Only as many fetchers run as there are connections to spare.
            let spare = fs.remote.spare_connections();
            match q.pending.pop_front() {
                Some(dir) if q.running < spare => {
                    q.running += 1;
                    Some(dir)
                }
                Some(dir) => {
                    // Nothing to spare now: leave it (and stop; a later opendir
                    // starts fetchers again).
                    q.pending.push_front(dir);
                    None
                }
                None => None,
            }
        };
        let Some(dir) = next else {
            lock(&p.queue).fetchers -= 1;
            return;
        };
        if fs.meta.fresh(&dir).is_none() {
            if let Err(e) = fs.listing(&dir) {
                log::debug!("prefetch of the listing of {dir}: errno {}", e.0);
            }
        }
        let mut q = lock(&p.queue);
        q.running -= 1;
        q.queued.remove(&dir);
    }
}
