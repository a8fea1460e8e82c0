//! Per-handle reads: one streaming download per handle, filled ahead by a
//! background thread, plus the shared LRU block cache.
//!
//! The producer thread reads whole aligned blocks from the data connection while
//! the kernel copies earlier ones out, so network and copy overlap. The read-ahead
//! window doubles while reads stay sequential. A backward seek past what is kept,
//! or a long forward jump, restarts the download at the new offset. A stream whose
//! reader went quiet gives its connection back to the pool.

use std::collections::VecDeque;
use std::io::Read;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use lru::LruCache;

use super::segments::{Segments, SEGMENT, SLOW_STREAM};
use crate::remote::{ErrorKind, Remote, RemoteError, RemoteResult};

/// The unit of download chunks and of the block cache.
/// As large as the kernel's read requests (1 MiB), so that a request is a window
/// of one block and needs no copy.
pub const BLOCK: u64 = 1024 * 1024;
/// The read-ahead window of a stream started by a random read: just the block asked
/// for. Sequential reads double it, up to [`MAX_WINDOW`].
const INITIAL_WINDOW: u64 = 0;
/// The largest read-ahead window.
const MAX_WINDOW: u64 = 8 * 1024 * 1024;
/// Data kept behind the reader, for requests the kernel sends slightly out of order.
const KEEP_BEHIND: u64 = BLOCK;
/// A forward jump up to this far is read through instead of restarting the download.
const SKIP_AHEAD: u64 = 4 * 1024 * 1024;
/// How far the kernel's concurrent read-ahead may run ahead of the read it
/// follows: reads within this of the expected offset still count as streaming.
const READ_AHEAD_SLACK: u64 = 2 * BLOCK;
/// How often a read waiting on a stream that may go to segments judges its speed.
const JUDGE_POLL: Duration = Duration::from_millis(20);
/// How many times a download that broke is resumed (REST at the exact offset reached).
const RESUME_ATTEMPTS: u32 = 3;
/// A paused stream whose reader has not asked for anything in this long is closed.
const IDLE_RELEASE: Duration = Duration::from_secs(3);
/// ... or in this long, while another transfer waits for a connection.
const CONTENDED_RELEASE: Duration = Duration::from_millis(100);

/// Identifies one version of a file's content: a change of size or mtime is a new file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileKey {
    pub ino: u64,
    pub size: u64,
    pub mtime: Option<SystemTime>,
}

/// At most this many freed blocks are kept for reuse.
const SPARE_BLOCKS: usize = 16;

/// Freed block buffers, reused so that a new block need not be zeroed first.
static SPARE: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// One downloaded block. Its buffer goes back to a small pool when the last
/// reference (stream or cache) lets go of it.
#[derive(Debug, Default)]
pub struct Block(Vec<u8>);

impl Block {
    /// A buffer of `BLOCK` bytes: a recycled one if there is one.
    pub(super) fn buffer() -> Vec<u8> {
        let recycled = crate::sync::lock(&SPARE).pop();
        let mut v = recycled.unwrap_or_default();
        v.resize(BLOCK as usize, 0); // zeroes only what was never written
        v
    }
}

impl From<Vec<u8>> for Block {
    fn from(v: Vec<u8>) -> Self {
        Block(v)
    }
}

impl std::ops::Deref for Block {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        let v = std::mem::take(&mut self.0);
        if v.capacity() == BLOCK as usize {
            let mut spare = crate::sync::lock(&SPARE);
            if spare.len() < SPARE_BLOCKS {
                spare.push(v);
            }
        }
    }
}

/// Bytes handed back by a read: a window of a shared block when the request fits
/// in one (no copy), else an owned buffer.
#[derive(Debug, Clone)]
pub enum Bytes {
    Shared(Arc<Block>, usize, usize),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Shared(b, s, e) => &b[*s..*e],
            Bytes::Owned(v) => v,
        }
    }
}

impl Bytes {
    fn empty() -> Self {
        Bytes::Owned(Vec::new())
    }
}

type Blocks = LruCache<(FileKey, u64), Arc<Block>>;

/// The LRU cache of whole blocks, bounded in bytes.
pub struct BlockCache {
    blocks: Option<Mutex<Blocks>>,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
}

impl BlockCache {
    pub fn new(bytes: usize) -> Self {
        let n = bytes / BLOCK as usize;
        BlockCache {
            blocks: NonZeroUsize::new(n).map(|n| Mutex::new(LruCache::new(n))),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> Option<MutexGuard<'_, Blocks>> {
        self.blocks.as_ref().map(|m| crate::sync::lock(m))
    }

    pub fn insert(&self, key: FileKey, index: u64, data: Arc<Block>) {
        if let Some(mut c) = self.lock() {
            c.put((key, index), data);
        }
    }

    /// Whether block `index` of `key` is cached (without touching its age).
    pub fn has(&self, key: FileKey, index: u64) -> bool {
        self.lock().is_some_and(|c| c.contains(&(key, index)))
    }

    /// The bytes `[offset, offset+len)` if every block they touch is cached.
    pub fn get_range(&self, key: FileKey, offset: u64, len: u64) -> Option<Bytes> {
        let mut c = self.lock()?;
        let end = offset + len;
        let idx = offset / BLOCK;
        if let Some(block) = c.get(&(key, idx)) {
            let start = (offset - idx * BLOCK) as usize;
            let last_block = block.len() < BLOCK as usize;
            if start <= block.len() && (start + len as usize <= block.len() || last_block) {
                let end_in = (start + len as usize).min(block.len());
                self.hits.fetch_add(1, Ordering::Relaxed);
                return Some(Bytes::Shared(Arc::clone(block), start, end_in));
            }
        }
        let mut out = Vec::with_capacity(len as usize);
        let mut pos = offset;
        while pos < end {
            let idx = pos / BLOCK;
            let Some(block) = c.get(&(key, idx)) else {
                self.misses.fetch_add(1, Ordering::Relaxed);
                return None;
            };
            let start = (pos - idx * BLOCK) as usize;
            if start >= block.len() {
                break; // past the end of the file
            }
            let take = ((end - pos) as usize).min(block.len() - start);
            out.extend_from_slice(&block[start..start + take]);
            pos += take as u64;
            if block.len() < BLOCK as usize {
                break; // the file's last block
            }
        }
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some(Bytes::Owned(out))
    }

    /// Drops every cached block of inode `ino` (its content changed here).
    pub fn invalidate(&self, ino: u64) {
        if let Some(mut c) = self.lock() {
            let doomed: Vec<(FileKey, u64)> = c
                .iter()
                .map(|(k, _)| *k)
                .filter(|(key, _)| key.ino == ino)
                .collect();
            for k in doomed {
                c.pop(&k);
            }
        }
    }

    /// (blocks held, capacity in blocks).
    pub fn usage(&self) -> (usize, usize) {
        self.lock()
            .map(|c| (c.len(), c.cap().get()))
            .unwrap_or((0, 0))
    }
}

#[derive(Default)]
struct StreamState {
    /// Downloaded blocks still kept: (offset, bytes), contiguous and in order.
    chunks: VecDeque<(u64, Arc<Block>)>,
    /// The offset the producer has reached.
    produced: u64,
    /// The producer may read up to here.
    limit: u64,
    /// Never beyond here (where segments take over; `u64::MAX` when none do).
    cap: u64,
    eof: bool,
    /// The end came before the size the file had at open: it changed on the
    /// server since.
    short: bool,
    error: Option<RemoteError>,
    /// The download broke and was resumed: its speed says nothing about the
    /// server's per-connection limit.
    resumed: bool,
    /// The consumer gave up on this stream.
    cancelled: bool,
    /// The producer stopped early (idle) without reaching the end.
    stopped: bool,
    last_request: Option<Instant>,
}

struct Shared {
    st: Mutex<StreamState>,
    cv: Condvar,
    /// The offset received so far, up to inside the block being filled (for
    /// the speed): updated per socket read, so kept out of the lock.
    arrived: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, StreamState> {
        crate::sync::lock(&self.st)
    }
}

/// One download in progress, filled by its producer thread.
struct Stream {
    shared: Arc<Shared>,
    start: u64,
    since: Instant,
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.shared.lock().cancelled = true;
        self.shared.cv.notify_all();
    }
}

enum Outcome {
    Data(Bytes),
    /// Asked to judge: the stream is slow enough for segments (nothing read).
    Slow,
    /// The stream cannot serve this offset: start a new one.
    Restart,
}

impl Stream {
    fn start(
        remote: &Arc<dyn Remote>,
        path: &str,
        key: FileKey,
        offset: u64,
        cache: &Arc<BlockCache>,
    ) -> RemoteResult<Stream> {
        let start = offset - offset % BLOCK;
        let source = remote.open_read(path, start)?;
        let shared = Arc::new(Shared {
            st: Mutex::new(StreamState {
                produced: start,
                limit: start + INITIAL_WINDOW,
                cap: u64::MAX,
                last_request: Some(Instant::now()),
                ..Default::default()
            }),
            cv: Condvar::new(),
            arrived: AtomicU64::new(start),
        });
        let producer = Arc::clone(&shared);
        let cache = Arc::clone(cache);
        let remote = Arc::clone(remote);
        let path = path.to_string();
        std::thread::Builder::new()
            .name("ftpfs-read".into())
            .spawn(move || {
                let source = Source {
                    stream: source,
                    remote,
                    path,
                    resumes: 0,
                    shared: Arc::clone(&producer),
                };
                produce(source, producer, key, start, cache)
            })
            .map_err(|e| RemoteError::new(ErrorKind::Connection, format!("spawn: {e}")))?;
        Ok(Stream {
            shared,
            start,
            since: Instant::now(),
        })
    }

    /// Bytes per second so far, once enough came to judge (None before).
    fn speed(&self) -> Option<f64> {
        self.speed_in(&self.shared.lock())
    }

    /// A stream that broke on the way gives none: stalls are no reason to open more.
    fn speed_in(&self, st: &StreamState) -> Option<f64> {
        if st.resumed || st.error.is_some() {
            return None;
        }
        let arrived = self.shared.arrived.load(Ordering::Relaxed);
        let got = arrived.max(st.produced).saturating_sub(self.start);
        let secs = self.since.elapsed().as_secs_f64();
        (got >= super::segments::JUDGE_AFTER && secs > 0.0).then(|| got as f64 / secs)
    }

    /// Lets the stream read up to `end` at most (further blocks are left to
    /// segments), or without bound again for `u64::MAX`.
    fn cap(&self, end: u64) {
        let mut st = self.shared.lock();
        st.cap = end;
        st.limit = st.limit.min(end);
    }

    /// Where the stream has been asked to read up to.
    fn limit(&self) -> u64 {
        self.shared.lock().limit
    }

    /// Whether `offset` is within reach of this stream without a restart.
    fn reaches(&self, offset: u64) -> bool {
        let st = self.shared.lock();
        let kept_from = st.chunks.front().map(|c| c.0).unwrap_or(st.produced);
        if offset < kept_from.max(self.start) {
            return false;
        }
        if st.stopped || st.error.is_some() {
            return offset < st.produced;
        }
        offset <= st.produced + SKIP_AHEAD
    }

    fn read(
        &self,
        offset: u64,
        size: u64,
        window: u64,
        timeout: Duration,
        judge: bool,
    ) -> RemoteResult<Outcome> {
        let want_end = offset + size;
        let deadline = Instant::now() + timeout;
        let mut st = self.shared.lock();
        st.limit = st.limit.max(want_end + window).min(st.cap);
        st.last_request = Some(Instant::now());
        self.shared.cv.notify_all();
        loop {
            if st.short && want_end > st.produced {
                if offset >= st.produced {
                    return Ok(Outcome::Data(Bytes::empty())); // past the new end
                }
                // A short read here would be filled up with zeros by the kernel,
                // which still has the old size: an error instead of bytes the
                // file never had.
                return Err(RemoteError::new(
                    ErrorKind::Protocol,
                    format!(
                        "the file changed on the server while it was read: it ends at {}",
                        st.produced
                    ),
                ));
            }
            let end = if st.eof {
                want_end.min(st.produced)
            } else {
                want_end
            };
            if st.produced >= end {
                if end <= offset {
                    return Ok(Outcome::Data(Bytes::empty())); // past the end
                }
                let out = copy_out(&st.chunks, offset, end);
                // Keep a little behind the reader; drop the rest.
                let keep_from = end.saturating_sub(KEEP_BEHIND);
                while st
                    .chunks
                    .front()
                    .is_some_and(|(o, d)| o + d.len() as u64 <= keep_from)
                {
                    st.chunks.pop_front();
                }
                return Ok(Outcome::Data(out));
            }
            if let Some(e) = &st.error {
                return Err(e.clone());
            }
            if st.stopped {
                return Ok(Outcome::Restart);
            }
            if judge && self.speed_in(&st).is_some_and(|s| s < SLOW_STREAM) {
                return Ok(Outcome::Slow);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(RemoteError::new(
                    ErrorKind::Timeout,
                    "timed out waiting for download data",
                ));
            }
            // Judging looks at the bytes inside the block being filled, which
            // come without a wakeup.
            let wait = if judge {
                JUDGE_POLL.min(deadline - now)
            } else {
                deadline - now
            };
            st = crate::sync::wait(&self.shared.cv, st, wait);
        }
    }
}

/// `[from, to)` out of contiguous chunks: shared when one chunk holds it all.
fn copy_out(chunks: &VecDeque<(u64, Arc<Block>)>, from: u64, to: u64) -> Bytes {
    if let Some((off, data)) = chunks
        .iter()
        .find(|(off, d)| *off <= from && to <= off + d.len() as u64)
    {
        return Bytes::Shared(Arc::clone(data), (from - off) as usize, (to - off) as usize);
    }
    let mut out = Vec::with_capacity(to.saturating_sub(from) as usize);
    for (off, data) in chunks {
        let c_end = off + data.len() as u64;
        if c_end <= from || *off >= to {
            continue;
        }
        let s = from.max(*off) - off;
        let e = to.min(c_end) - off;
        out.extend_from_slice(&data[s as usize..e as usize]);
    }
    Bytes::Owned(out)
}

/// Where a producer gets its bytes: the download, and what it needs to resume it.
struct Source {
    stream: Box<dyn Read + Send>,
    remote: Arc<dyn Remote>,
    path: String,
    resumes: u32,
    /// Told when the download is resumed.
    shared: Arc<Shared>,
}

impl Source {
    /// Reads into `buf` at file offset `pos`; a broken download is resumed there
    /// (a few times, with a short pause) so that the bytes still line up.
    fn read_at(&mut self, buf: &mut [u8], pos: u64) -> std::io::Result<usize> {
        loop {
            let err = match self.stream.read(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => e,
                ok => return ok,
            };
            if self.resumes >= RESUME_ATTEMPTS {
                return Err(err);
            }
            self.resumes += 1;
            self.shared.lock().resumed = true;
            log::warn!(
                "download of {} broke at {pos} ({err}); resuming (attempt {})",
                self.path,
                self.resumes
            );
            std::thread::sleep(Duration::from_millis(200 * u64::from(self.resumes)));
            match self.remote.open_read(&self.path, pos) {
                Ok(s) => self.stream = s,
                Err(r) => {
                    // The old stream is dead: an error now, never a silent end.
                    log::warn!("resuming {} failed: {}", self.path, r.message);
                    return Err(std::io::Error::other(r.message));
                }
            }
        }
    }
}

/// The producer: reads whole blocks ahead of the consumer until the end, an error,
/// cancellation, or a long pause.
fn produce(
    mut source: Source,
    shared: Arc<Shared>,
    key: FileKey,
    start: u64,
    cache: Arc<BlockCache>,
) {
    let path = source.path.clone();
    let mut pos = start;
    loop {
        {
            let mut st = shared.lock();
            while !st.cancelled && pos >= st.limit {
                let paused = st.last_request.map(|t| t.elapsed());
                let release = paused.is_none_or(|p| {
                    p >= IDLE_RELEASE
                        || (p >= CONTENDED_RELEASE && source.remote.transfer_contended())
                });
                if release {
                    st.stopped = true;
                    shared.cv.notify_all();
                    log::debug!("read of {path} paused; closing its download at {pos}");
                    return;
                }
                st = crate::sync::wait(&shared.cv, st, CONTENDED_RELEASE);
            }
            if st.cancelled {
                return;
            }
        }
        let mut block = Block::buffer();
        let mut filled = 0;
        let result = loop {
            if filled == block.len() {
                break Ok(());
            }
            match source.read_at(&mut block[filled..], pos + filled as u64) {
                Ok(0) => break Ok(()), // the end of the file
                Ok(n) => {
                    filled += n;
                    shared.arrived.store(pos + filled as u64, Ordering::Relaxed);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        block.truncate(filled);
        let mut st = shared.lock();
        match result {
            Ok(()) => {
                let eof = filled < BLOCK as usize;
                let short = eof && pos + (filled as u64) < key.size;
                let block = Arc::new(Block::from(block));
                if short {
                    log::warn!(
                        "{path} changed on the server while it was read: it ends at {}, not {}",
                        pos + filled as u64,
                        key.size
                    );
                    st.short = true;
                } else {
                    cache.insert(key, pos / BLOCK, Arc::clone(&block));
                }
                pos += filled as u64;
                st.produced = pos;
                if filled > 0 {
                    st.chunks.push_back((pos - filled as u64, block));
                }
                st.eof = eof;
                shared.cv.notify_all();
                if eof {
                    return;
                }
            }
            Err(e) => {
                let kind = if e.kind() == std::io::ErrorKind::TimedOut
                    || e.kind() == std::io::ErrorKind::WouldBlock
                {
                    ErrorKind::Timeout
                } else {
                    ErrorKind::Connection
                };
                log::warn!("download of {path} failed at {pos}: {e}");
                st.error = Some(RemoteError::new(kind, format!("RETR {path}: {e}")));
                shared.cv.notify_all();
                return;
            }
        }
    }
}

/// The read state of one open file handle.
pub struct Reader {
    path: String,
    key: FileKey,
    stream: Option<Stream>,
    window: u64,
    next_expected: u64,
    /// Streams a large sequential read may use at once (`read_streams`).
    streams: usize,
    segments: Option<Segments>,
    /// Segments failed here once: this handle stays with one stream.
    no_segments: bool,
}

impl Reader {
    pub fn new(path: String, key: FileKey) -> Self {
        Reader {
            path,
            key,
            stream: None,
            window: INITIAL_WINDOW,
            next_expected: 0,
            streams: 1,
            segments: None,
            no_segments: false,
        }
    }

    /// Lets a large sequential read use up to `n` streams at once.
    pub fn with_streams(mut self, n: usize) -> Self {
        self.streams = n.max(1);
        self
    }

    /// Whether a sequential read at `offset` may go on in segments: several
    /// segments left, and nothing against them.
    fn could_segment(&self, offset: u64) -> bool {
        self.streams > 1
            && !self.no_segments
            && self.segments.is_none()
            && self.key.size.saturating_sub(offset) >= 2 * SEGMENT
    }

    /// Whether the read at `offset`, sequential on `stream`, should go on in
    /// segments: it could, and the one stream is slow.
    fn worth_segments(&self, offset: u64) -> bool {
        self.could_segment(offset)
            && self
                .stream
                .as_ref()
                .and_then(Stream::speed)
                .is_some_and(|s| s < SLOW_STREAM)
    }

    /// Goes on in segments from the end of the segment that the stream has been
    /// asked to read into (at least `want_end`): the stream finishes its part
    /// and stops there, so nothing it fetched is wasted.
    fn start_segments(&mut self, remote: &Arc<dyn Remote>, cache: &Arc<BlockCache>, want_end: u64) {
        let Some(stream) = self.stream.as_ref() else {
            return;
        };
        let reach = stream.limit().max(want_end);
        let from = reach.div_ceil(SEGMENT) * SEGMENT;
        stream.cap(from);
        let mut seg = Segments::new(&self.path, self.key, self.streams, from);
        seg.start_ahead(remote, cache, from);
        self.segments = Some(seg);
    }

    /// Back to one stream: it may read on without bound.
    fn end_segments(&mut self) {
        self.segments = None;
        if let Some(s) = self.stream.as_ref() {
            s.cap(u64::MAX);
        }
    }

    /// Reads through the segments; None when the caller should use the stream
    /// (below where the segments begin, or without segments).
    fn read_segmented(
        &mut self,
        remote: &Arc<dyn Remote>,
        cache: &Arc<BlockCache>,
        offset: u64,
        size: u64,
        sequential: bool,
        timeout: Duration,
    ) -> Option<RemoteResult<Bytes>> {
        // The kernel's read-ahead sends requests slightly out of order: only a
        // jump away from the segments ends them (back to one stream, from there).
        let near = self.segments.as_ref().is_some_and(|s| s.near(offset));
        if !sequential && !near {
            self.end_segments();
            return None;
        }
        let seg = self.segments.as_mut()?;
        if offset < seg.from() {
            // The stream's part: the segments after it start meanwhile.
            seg.start_ahead(remote, cache, seg.from());
            return None;
        }
        self.stream = None; // past the stream's part: its connection goes back
        match seg.read(remote, cache, offset, size, timeout) {
            Ok(d) => {
                self.next_expected = offset + d.len() as u64;
                Some(Ok(d))
            }
            Err(e) if e.kind == ErrorKind::Protocol => Some(Err(e)),
            Err(e) => {
                log::debug!("{}: back to one stream ({})", self.path, e.message);
                if e.message != "segment evicted" {
                    self.no_segments = true;
                }
                self.end_segments();
                None
            }
        }
    }

    pub fn key(&self) -> FileKey {
        self.key
    }

    /// The file was renamed (it, or a directory above it): read from its new path.
    pub fn moved_to(&mut self, path: String) {
        if path != self.path {
            self.path = path;
            self.stream = None;
        }
    }

    /// Reads up to `size` bytes at `offset` (fewer at the end of the file).
    pub fn read(
        &mut self,
        remote: &Arc<dyn Remote>,
        cache: &Arc<BlockCache>,
        offset: u64,
        size: u64,
        timeout: Duration,
    ) -> RemoteResult<Bytes> {
        if size == 0 || offset >= self.key.size {
            return Ok(Bytes::empty());
        }
        let size = size.min(self.key.size - offset);
        let sequential = offset == self.next_expected;
        // Judged on every sequential read, cached or not, so that a slow
        // stream goes to segments as soon as its speed is known.
        if sequential && self.worth_segments(offset) {
            self.start_segments(remote, cache, offset + size);
        }
        // Segments read through the cache themselves, starting more ahead.
        if let Some(r) = self.read_segmented(remote, cache, offset, size, sequential, timeout) {
            return r;
        }
        if let Some(data) = cache.get_range(self.key, offset, size) {
            if data.len() as u64 == size {
                self.next_expected = offset + size;
                return Ok(data);
            }
        }
        if sequential {
            self.window = (self.window * 2).clamp(BLOCK, MAX_WINDOW);
        }
        // A read that is part of a streaming read (not the first small one,
        // which may be all a reader wants) judges the stream while it waits.
        // The kernel's concurrent read-ahead arrives slightly out of order.
        let streaming = offset.abs_diff(self.next_expected) <= READ_AHEAD_SLACK;
        let judge = streaming && (offset > 0 || size >= BLOCK) && self.could_segment(offset);
        for _ in 0..3 {
            let usable = self.stream.as_ref().is_some_and(|s| s.reaches(offset));
            if !usable {
                self.stream = None; // cancels the old producer
                if !sequential {
                    self.window = INITIAL_WINDOW;
                }
                // The handle's first read near the start (the kernel's
                // read-ahead can overtake the read at 0) downloads from 0.
                let from = if self.next_expected == 0 && offset <= READ_AHEAD_SLACK {
                    0
                } else {
                    offset
                };
                let stream = Stream::start(remote, &self.path, self.key, from, cache)?;
                if let Some(seg) = self.segments.as_ref() {
                    stream.cap(seg.from()); // below the segments only
                }
                self.stream = Some(stream);
            }
            let Some(stream) = self.stream.as_ref() else {
                break;
            };
            let judge = judge && self.segments.is_none();
            match stream.read(offset, size, self.window, timeout, judge)? {
                Outcome::Data(d) => {
                    self.next_expected = offset + d.len() as u64;
                    return Ok(d);
                }
                Outcome::Slow => self.start_segments(remote, cache, offset + size),
                Outcome::Restart => self.stream = None,
            }
        }
        Err(RemoteError::new(
            ErrorKind::Connection,
            format!("read of {} could not be restarted", self.path),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(size: u64) -> FileKey {
        FileKey {
            ino: 7,
            size,
            mtime: None,
        }
    }

    #[test]
    fn block_cache_serves_ranges_across_blocks() {
        let c = BlockCache::new(4 * BLOCK as usize);
        let k = key(BLOCK + 10);
        c.insert(k, 0, Arc::new(Block::from(vec![1u8; BLOCK as usize])));
        assert!(
            c.get_range(k, BLOCK - 5, 10).is_none(),
            "second block missing"
        );
        c.insert(k, 1, Arc::new(Block::from(vec![2u8; 10])));
        let got = c.get_range(k, BLOCK - 5, 10).unwrap();
        assert_eq!(*got, [1, 1, 1, 1, 1, 2, 2, 2, 2, 2]);
        // past the end of the file: only what exists, shared without a copy
        let tail = c.get_range(k, BLOCK + 5, 100).unwrap();
        assert_eq!(*tail, [2u8; 5]);
        assert!(matches!(tail, Bytes::Shared(..)));
    }

    #[test]
    fn invalidation_drops_one_inode_only() {
        let c = BlockCache::new(8 * BLOCK as usize);
        let other = FileKey { ino: 8, ..key(10) };
        c.insert(key(10), 0, Arc::new(Block::from(vec![1; 10])));
        c.insert(other, 0, Arc::new(Block::from(vec![2; 10])));
        c.invalidate(7);
        assert!(c.get_range(key(10), 0, 10).is_none());
        assert!(c.get_range(other, 0, 10).is_some());
    }

    #[test]
    fn block_cache_is_bounded_and_keyed_by_version() {
        let c = BlockCache::new(2 * BLOCK as usize);
        for i in 0..5 {
            c.insert(
                key(10 * BLOCK),
                i,
                Arc::new(Block::from(vec![0; BLOCK as usize])),
            );
        }
        assert_eq!(c.usage(), (2, 2));
        assert!(c.get_range(key(10 * BLOCK + 1), 4 * BLOCK, 1).is_none());
        assert!(BlockCache::new(0).get_range(key(1), 0, 1).is_none());
    }

    #[test]
    fn copy_out_spans_chunks() {
        let mut q = VecDeque::new();
        q.push_back((10, Arc::new(Block::from(vec![1, 2, 3]))));
        q.push_back((13, Arc::new(Block::from(vec![4, 5, 6]))));
        assert_eq!(*copy_out(&q, 11, 15), [2, 3, 4, 5]);
        assert_eq!(*copy_out(&q, 0, 100), [1, 2, 3, 4, 5, 6]);
        assert!(matches!(copy_out(&q, 13, 15), Bytes::Shared(..)));
    }
}
