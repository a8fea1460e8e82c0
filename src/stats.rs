//! Process-wide live numbers for `ftpfs status`: bytes moved over data
//! connections, the uploads in flight with their progress, and the most recent
//! errors. Cache and pool numbers stay with their owners; this holds only what
//! several layers feed.

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Read, Seek, SeekFrom};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::sync::lock;

/// How many recent errors are kept.
const MAX_ERRORS: usize = 10;

/// The numbers of this process (one mount).
pub static STATS: Stats = Stats::new();

pub struct Stats {
    bytes_down: AtomicU64,
    bytes_up: AtomicU64,
    next_upload: AtomicU64,
    uploads: Mutex<BTreeMap<u64, Upload>>,
    errors: Mutex<VecDeque<(SystemTime, String)>>,
}

struct Upload {
    path: String,
    total: Option<u64>,
    done: Arc<AtomicU64>,
    started: Instant,
}

/// One upload in flight, as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadView {
    pub path: String,
    /// Bytes sent so far.
    pub done: u64,
    /// The size, when known in advance (a streamed upload grows as it is written).
    pub total: Option<u64>,
    pub elapsed: Duration,
}

/// Registers an upload for as long as it lives; feed it the bytes sent.
pub struct UploadProgress {
    id: u64,
    done: Arc<AtomicU64>,
}

impl UploadProgress {
    /// `n` more bytes went out.
    pub fn add(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
        STATS.bytes_up.fetch_add(n, Ordering::Relaxed);
    }
}

/// A source whose reads count as upload progress (a rewind starts the count again).
pub struct Counted<'a, R> {
    inner: R,
    progress: &'a UploadProgress,
}

impl<'a, R> Counted<'a, R> {
    pub fn new(inner: R, progress: &'a UploadProgress) -> Self {
        Counted { inner, progress }
    }
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.add(n as u64);
        Ok(n)
    }
}

impl<R: Seek> Seek for Counted<'_, R> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let at = self.inner.seek(pos)?;
        if at == 0 {
            self.progress.done.store(0, Ordering::Relaxed);
        }
        Ok(at)
    }
}

impl Drop for UploadProgress {
    fn drop(&mut self) {
        lock(&STATS.uploads).remove(&self.id);
    }
}

impl Stats {
    const fn new() -> Stats {
        Stats {
            bytes_down: AtomicU64::new(0),
            bytes_up: AtomicU64::new(0),
            next_upload: AtomicU64::new(1),
            uploads: Mutex::new(BTreeMap::new()),
            errors: Mutex::new(VecDeque::new()),
        }
    }

    /// `n` bytes of file data came in.
    pub fn downloaded(&self, n: u64) {
        self.bytes_down.fetch_add(n, Ordering::Relaxed);
    }

    /// (bytes downloaded, bytes uploaded) since the start.
    pub fn bytes(&self) -> (u64, u64) {
        (
            self.bytes_down.load(Ordering::Relaxed),
            self.bytes_up.load(Ordering::Relaxed),
        )
    }

    /// An upload to `path` starts; it is listed until the returned value drops.
    pub fn upload(&self, path: &str, total: Option<u64>) -> UploadProgress {
        let id = self.next_upload.fetch_add(1, Ordering::Relaxed);
        let done = Arc::new(AtomicU64::new(0));
        lock(&self.uploads).insert(
            id,
            Upload {
                path: path.to_string(),
                total,
                done: Arc::clone(&done),
                started: Instant::now(),
            },
        );
        UploadProgress { id, done }
    }

    /// The uploads in flight, oldest first.
    pub fn uploads(&self) -> Vec<UploadView> {
        lock(&self.uploads)
            .values()
            .map(|u| UploadView {
                path: u.path.clone(),
                done: u.done.load(Ordering::Relaxed),
                total: u.total,
                elapsed: u.started.elapsed(),
            })
            .collect()
    }

    /// Remembers an error for `status` (the last [`MAX_ERRORS`]).
    pub fn error(&self, message: impl Into<String>) {
        let mut errors = lock(&self.errors);
        if errors.len() == MAX_ERRORS {
            errors.pop_front();
        }
        errors.push_back((SystemTime::now(), message.into()));
    }

    /// The recent errors, oldest first.
    pub fn errors(&self) -> Vec<(SystemTime, String)> {
        lock(&self.errors).iter().cloned().collect()
    }
}

/// 1536 -> "1.5 KiB".
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_ls_h() {
        assert_eq!(human(0), "0 B");
        assert_eq!(human(1023), "1023 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(12 << 20), "12.0 MiB");
    }

    #[test]
    fn uploads_are_listed_while_they_run_and_count_their_bytes() {
        let (_, up_before) = STATS.bytes();
        let a = STATS.upload("/stats-test/a", Some(10));
        a.add(4);
        let b = STATS.upload("/stats-test/b", None);
        b.add(1);
        let mine: Vec<UploadView> = STATS
            .uploads()
            .into_iter()
            .filter(|u| u.path.starts_with("/stats-test/"))
            .collect();
        assert_eq!(mine.len(), 2);
        assert_eq!((mine[0].done, mine[0].total), (4, Some(10)));
        assert_eq!((mine[1].done, mine[1].total), (1, None));
        drop(a);
        assert!(!STATS.uploads().iter().any(|u| u.path == "/stats-test/a"));
        assert!(STATS.bytes().1 >= up_before + 5);
    }

    #[test]
    fn counted_reads_are_progress_and_a_rewind_restarts_it() {
        let p = STATS.upload("/stats-test/counted", Some(6));
        let mut src = Counted::new(io::Cursor::new(b"abcdef".to_vec()), &p);
        let mut buf = [0u8; 4];
        assert_eq!(src.read(&mut buf).unwrap(), 4);
        let done = |path: &str| {
            STATS
                .uploads()
                .into_iter()
                .find(|u| u.path == path)
                .map(|u| u.done)
        };
        assert_eq!(done("/stats-test/counted"), Some(4));
        src.rewind().unwrap();
        assert_eq!(done("/stats-test/counted"), Some(0));
        io::copy(&mut src, &mut io::sink()).unwrap();
        assert_eq!(done("/stats-test/counted"), Some(6));
    }

    #[test]
    fn only_the_latest_errors_are_kept() {
        for i in 0..(MAX_ERRORS + 3) {
            STATS.error(format!("stats-test error {i}"));
        }
        let errors = STATS.errors();
        assert!(errors.len() <= MAX_ERRORS);
        assert_eq!(
            errors.last().map(|e| e.1.as_str()),
            Some(format!("stats-test error {}", MAX_ERRORS + 2).as_str())
        );
    }
}
