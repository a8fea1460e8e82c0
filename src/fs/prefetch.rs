//! Small-file prefetch. When the files of one directory are opened one after
//! another in listing order (`cp -r`, `tar c`, `rsync`), the next few small files
//! are downloaded in the background into the block cache, so a copy of many small
//! files no longer waits a full round trip sequence per file.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::lock;
use super::reader::{Block, BlockCache, FileKey, BLOCK};
use crate::remote::{EntryKind, Remote};

/// Files up to this size are prefetched whole (one block).
const SMALL: u64 = BLOCK;
/// How many files ahead of the one opened.
const AHEAD: usize = 6;
/// Downloads running at once for prefetching: the transfer share of the default
/// pool; the files it fetches are the ones the user asks for next.
const MAX_IN_FLIGHT: usize = 3;

/// One file worth fetching: its identity and remote path.
pub struct Candidate {
    pub key: FileKey,
    pub path: String,
}

#[derive(Default)]
pub struct Prefetcher {
    /// Per directory inode: the listing position of the file opened last.
    walks: Mutex<HashMap<u64, usize>>,
    /// Inodes being fetched now, and a signal when one is done.
    busy: Arc<(Mutex<HashSet<u64>>, Condvar)>,
    in_flight: Arc<AtomicUsize>,
}

impl Prefetcher {
    /// Records that the file at `position` of directory `dir` was opened; true
    /// when it follows the previous open there (a walk in listing order).
    pub fn opened(&self, dir: u64, position: usize) -> bool {
        let prev = lock(&self.walks).insert(dir, position);
        prev.is_some_and(|p| position > p && position <= p + AHEAD + 1)
    }

    /// Starts background downloads of `candidates` not cached yet, within the budget.
    pub fn fetch(
        &self,
        remote: &Arc<dyn Remote>,
        cache: &Arc<BlockCache>,
        candidates: Vec<Candidate>,
    ) {
        for c in candidates {
            if c.key.size == 0
                || c.key.size > SMALL
                || cache.get_range(c.key, 0, c.key.size).is_some()
            {
                continue;
            }
            if self.in_flight.load(Ordering::Relaxed) >= MAX_IN_FLIGHT {
                return;
            }
            if !lock(&self.busy.0).insert(c.key.ino) {
                continue;
            }
            self.in_flight.fetch_add(1, Ordering::Relaxed);
            let (remote, cache) = (Arc::clone(remote), Arc::clone(cache));
            let (busy, in_flight) = (Arc::clone(&self.busy), Arc::clone(&self.in_flight));
            let spawned = std::thread::Builder::new()
                .name("ftpfs-prefetch".into())
                .spawn(move || {
                    fetch_one(&*remote, &cache, &c);
                    lock(&busy.0).remove(&c.key.ino);
                    busy.1.notify_all();
                    in_flight.fetch_sub(1, Ordering::Relaxed);
                });
            if spawned.is_err() {
                self.in_flight.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// Whether no prefetch is running (for tests).
    #[cfg(test)]
    pub fn idle(&self) -> bool {
        self.in_flight.load(Ordering::SeqCst) == 0
    }

    /// If `ino` is being prefetched, waits (up to `limit`) for that download rather
    /// than starting a second one.
    pub fn wait_for(&self, ino: u64, limit: Duration) {
        let deadline = Instant::now() + limit;
        let (set, cv) = &*self.busy;
        let mut busy = lock(set);
        while busy.contains(&ino) {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            busy = crate::sync::wait(cv, busy, deadline - now);
        }
    }
}

/// Downloads one small file into the cache, if it is still the size we expect.
fn fetch_one(remote: &dyn Remote, cache: &BlockCache, c: &Candidate) {
    let Ok(stream) = remote.open_read(&c.path, 0) else {
        return;
    };
    let mut data = Vec::with_capacity(c.key.size as usize);
    match stream.take(c.key.size + 1).read_to_end(&mut data) {
        Ok(n) if n as u64 == c.key.size => {
            log::trace!("prefetched {} ({n} bytes)", c.path);
            cache.insert(c.key, 0, Arc::new(Block::from(data)));
        }
        Ok(n) => log::debug!("prefetch of {} got {n} bytes, not {}", c.path, c.key.size),
        Err(e) => log::debug!("prefetch of {} failed: {e}", c.path),
    }
}

/// The small files after `position` in a listing, in order.
pub fn next_small_files(
    entries: &[crate::remote::Entry],
    position: usize,
    dir_path: &str,
    ino_of: &mut dyn FnMut(&str) -> u64,
) -> Vec<Candidate> {
    entries
        .iter()
        .skip(position + 1)
        .take(AHEAD)
        .filter(|e| e.kind == EntryKind::File && e.size > 0 && e.size <= SMALL)
        .map(|e| Candidate {
            key: FileKey {
                ino: ino_of(&e.name),
                size: e.size,
                mtime: e.mtime,
            },
            path: super::meta::child_path(dir_path, &e.name),
        })
        .collect()
}
