//! Segmented reads: a large sequential read over several REST+RETR streams at
//! once, for servers that pace each data connection (typical of shared
//! hosting). Each segment is a run of whole blocks fetched on its own
//! connection into the block cache, where the reader finds them in order; a
//! segment ends by closing its download early (the server's abort reply is
//! read before the connection is reused).
//!
//! A handle switches to segments only where they help: the file has several
//! segments left, the single stream ran slower than [`SLOW_STREAM`] (so never
//! on loopback or a fast LAN), and the pool has connections to spare. Anything
//! else, and any failure of a segment, stays with (or goes back to) the single
//! stream.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::reader::{Block, BlockCache, Bytes, FileKey, BLOCK};
use crate::remote::{ErrorKind, Remote, RemoteError, RemoteResult};
use crate::sync::lock;

/// The size of one segment.
pub const SEGMENT: u64 = 4 * BLOCK;
/// A single stream slower than this (bytes per second) may be worth segments.
pub const SLOW_STREAM: f64 = 16.0 * 1024.0 * 1024.0;
/// Bytes a stream must have read before its speed is judged.
pub const JUDGE_AFTER: u64 = BLOCK / 4;

/// How often a waiting reader tries to start missing lanes.
const LANE_POLL: Duration = Duration::from_millis(20);

#[derive(Default)]
struct State {
    /// Segments started, by start offset: false while running, true when done.
    started: BTreeMap<u64, bool>,
    running: usize,
    /// Segments started that have no connection yet (not in the pool's count).
    connecting: usize,
    error: Option<RemoteError>,
    cancelled: bool,
}

struct Shared {
    st: Mutex<State>,
    cv: Condvar,
}

/// The segments of one handle's read.
pub struct Segments {
    shared: Arc<Shared>,
    path: String,
    key: FileKey,
    streams: usize,
    /// Where the segments begin: the single stream reads what comes before.
    from: u64,
    /// Most streams seen at once (for the log and tests).
    pub peak: usize,
}

impl Drop for Segments {
    fn drop(&mut self) {
        lock(&self.shared.st).cancelled = true;
        self.shared.cv.notify_all();
    }
}

impl Segments {
    pub fn new(path: &str, key: FileKey, streams: usize, from: u64) -> Segments {
        log::debug!("reading {path} in segments from {from}, {streams} at once");
        Segments {
            shared: Arc::new(Shared {
                st: Mutex::new(State::default()),
                cv: Condvar::new(),
            }),
            path: path.to_string(),
            key,
            streams,
            from,
            peak: 0,
        }
    }

    /// Where the segments begin.
    pub fn from(&self) -> u64 {
        self.from
    }

    /// Whether `offset` is within the segments started, the next ones, or
    /// the single stream's last segment before them.
    pub fn near(&self, offset: u64) -> bool {
        let st = lock(&self.shared.st);
        let lo = st.started.keys().next().copied().unwrap_or(self.from);
        let hi = st.started.keys().next_back().copied().unwrap_or(self.from);
        offset >= lo.min(self.from).saturating_sub(SEGMENT) && offset < hi + 2 * SEGMENT
    }

    /// `size` bytes at `offset` (within the file), once their segment has
    /// them; starts the segments from there on that may run now.
    pub fn read(
        &mut self,
        remote: &Arc<dyn Remote>,
        cache: &Arc<BlockCache>,
        offset: u64,
        size: u64,
        timeout: Duration,
    ) -> RemoteResult<Bytes> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(d) = cache.get_range(self.key, offset, size) {
                if d.len() as u64 == size || offset + d.len() as u64 >= self.key.size {
                    self.start_ahead(remote, cache, offset);
                    return Ok(d);
                }
            }
            self.start_ahead(remote, cache, offset);
            let seg = offset - offset % SEGMENT;
            let st = lock(&self.shared.st);
            if let Some(e) = &st.error {
                return Err(e.clone());
            }
            if st.started.get(&seg) == Some(&true) {
                // Its segment is done, and the blocks are not in the cache
                // (evicted already): the caller reads them the usual way.
                return Err(RemoteError::new(ErrorKind::Connection, "segment evicted"));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(RemoteError::new(
                    ErrorKind::Timeout,
                    "timed out waiting for a segment",
                ));
            }
            // While lanes are missing, look again soon: a connection may come
            // free (a segment or the single stream closing) without a wakeup.
            let wait = if st.running < self.streams {
                LANE_POLL.min(deadline - now)
            } else {
                deadline - now
            };
            drop(crate::sync::wait(&self.shared.cv, st, wait));
        }
    }

    /// Starts segments from the one holding `offset` on, while fewer than
    /// `streams` run and the pool has connections to spare; never more than
    /// `streams` + 1 segments ahead of the reader.
    pub fn start_ahead(&mut self, remote: &Arc<dyn Remote>, cache: &Arc<BlockCache>, offset: u64) {
        let offset = offset.max(self.from);
        let first = offset - offset % SEGMENT;
        // One segment more than streams: a lane that finishes early goes on.
        let horizon = first + (self.streams as u64 + 1) * SEGMENT;
        let mut st = lock(&self.shared.st);
        let mut seg = first;
        while seg < horizon.min(self.key.size) && st.running < self.streams {
            if st.started.contains_key(&seg) {
                seg += SEGMENT;
                continue;
            }
            // The first one always runs; more only with connections to spare,
            // beyond those that segments just started are about to take.
            if st.running > 0 && remote.spare_connections() <= st.connecting {
                break;
            }
            let end = (seg + SEGMENT).min(self.key.size);
            // The reader's own segment from its block (what came before it
            // came through the single stream), past the blocks cached already.
            let mut start = if seg == first {
                offset - offset % BLOCK
            } else {
                seg
            };
            while start < end && cache.has(self.key, start / BLOCK) {
                start += BLOCK;
            }
            if start >= end {
                st.started.insert(seg, true);
                seg += SEGMENT;
                continue;
            }
            st.started.insert(seg, false);
            st.running += 1;
            st.connecting += 1;
            self.peak = self.peak.max(st.running);
            let job = Job {
                shared: Arc::clone(&self.shared),
                remote: Arc::clone(remote),
                cache: Arc::clone(cache),
                path: self.path.clone(),
                key: self.key,
                seg,
                start,
                end,
            };
            let spawned = std::thread::Builder::new()
                .name("ftpfs-segment".into())
                .spawn(move || job.run());
            if spawned.is_err() {
                st.started.remove(&seg);
                st.running -= 1;
                st.connecting -= 1;
                break;
            }
            seg += SEGMENT;
        }
        // Segments well behind the reader are forgotten.
        let behind = first.saturating_sub(SEGMENT);
        st.started.retain(|s, done| *s >= behind || !*done);
    }
}

struct Job {
    shared: Arc<Shared>,
    remote: Arc<dyn Remote>,
    cache: Arc<BlockCache>,
    path: String,
    key: FileKey,
    /// The segment's place (its aligned start), and the bytes it fetches.
    seg: u64,
    start: u64,
    end: u64,
}

impl Job {
    fn run(self) {
        let result = self.fetch();
        let mut st = lock(&self.shared.st);
        st.running -= 1;
        match result {
            Ok(()) => {
                st.started.insert(self.seg, true);
            }
            Err(e) => {
                log::warn!(
                    "segment {}..{} of {} failed: {}",
                    self.start,
                    self.end,
                    self.path,
                    e.message
                );
                st.started.remove(&self.seg);
                st.error.get_or_insert(e);
            }
        }
        self.shared.cv.notify_all();
    }

    /// Downloads the segment's blocks into the cache, then closes the download.
    fn fetch(&self) -> RemoteResult<()> {
        let opened = self.remote.open_read(&self.path, self.start);
        lock(&self.shared.st).connecting -= 1;
        let mut src = opened?;
        let mut pos = self.start;
        while pos < self.end {
            if lock(&self.shared.st).cancelled {
                return Ok(());
            }
            let want = (self.end - pos).min(BLOCK) as usize;
            let mut block = Block::buffer();
            block.truncate(want);
            let mut filled = 0;
            while filled < want {
                match src.read(&mut block[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        return Err(RemoteError::new(
                            ErrorKind::Connection,
                            format!("RETR {} at {pos}: {e}", self.path),
                        ))
                    }
                }
            }
            if filled < want {
                return Err(RemoteError::new(
                    ErrorKind::Protocol,
                    format!(
                        "the file changed on the server while it was read: it ends at {}",
                        pos + filled as u64
                    ),
                ));
            }
            block.truncate(filled);
            self.cache
                .insert(self.key, pos / BLOCK, Arc::new(Block::from(block)));
            self.shared.cv.notify_all();
            pos += filled as u64;
        }
        Ok(())
    }
}
