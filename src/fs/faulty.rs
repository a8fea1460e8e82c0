//! A failure-injecting [`Remote`] for tests: it wraps another remote and, driven
//! by a seeded random number generator it owns, makes operations fail the way a
//! flaky network does. Built for unit tests and with the `testing` feature.
//!
//! Every fault is a transient error (`ErrorKind::Connection` or
//! `ErrorKind::Timeout`, the kinds a broken or slow connection gives), and each
//! operation meets at most one of them, with probability [`FaultConfig::probability`]:
//!
//! * **Before**: any operation fails without reaching the wrapped remote.
//! * **Lost reply**: a change (`store`, `rename`, `remove_file`, `mkdir`, `rmdir`,
//!   `set_mtime`, `chmod`) is made on the wrapped remote, and then reported as
//!   failed, as when the server's reply never arrives.
//! * **Cut store**: `store` puts only a prefix of the data at the path (what a
//!   server keeps of a transfer that broke), then fails.
//! * **Cut download**: `open_read` succeeds, and its stream fails after a random
//!   number of bytes (possibly none), before the end of the file.
//! * **Cut upload**: `open_upload` succeeds, and its writes fail once a random
//!   number of bytes has gone through; the bytes written before the cut are
//!   stored at the path, as a server keeps a partial STOR. Its `finish` can also
//!   fail before storing anything, or after storing everything (lost reply).
//!
//! Operations can also be delayed by a random sleep of up to
//! [`FaultConfig::max_delay`] (zero by default, for speed). [`FaultyRemote::set_failing`]
//! turns all of this off, so a test can let the filesystem converge, and on again.
//!
//! The random generator is a small xorshift behind a mutex: the fault schedule
//! is a function of the seed and of the order of calls, so it repeats exactly
//! for a single-threaded caller (background threads of the filesystem, such as
//! readahead and retries, may reorder the calls).

use std::io::{self, Cursor, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::remote::{
    Entry, ErrorKind, ReadStream, Remote, RemoteError, RemoteResult, Source, UploadStream,
};
use crate::sync::lock;

/// How often and how slowly a [`FaultyRemote`] fails.
#[derive(Debug, Clone, Copy)]
pub struct FaultConfig {
    /// Seeds the random generator (0 is replaced by a fixed non-zero value).
    pub seed: u64,
    /// The chance, from 0.0 to 1.0, that one operation meets a fault.
    pub probability: f64,
    /// Each operation first sleeps for a random time up to this.
    pub max_delay: Duration,
    /// Which operations fail, and how.
    pub scope: FaultScope,
}

/// Which operations a [`FaultyRemote`] makes fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultScope {
    /// Any operation, in any of the ways the module documentation lists.
    Everything,
    /// Only changes, before they reach the server; the rest works.
    ChangesBefore,
    /// Only changes, by losing their reply (they happen, then report a broken
    /// connection); the rest works.
    ChangesLostReply,
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig {
            seed: 1,
            probability: 0.1,
            max_delay: Duration::ZERO,
            scope: FaultScope::Everything,
        }
    }
}

/// Xorshift64: small, fast, and enough to pick faults.
#[derive(Debug, Clone)]
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        XorShift(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in `0..n` (0 when `n` is 0).
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }

    /// True with probability `p`.
    fn chance(&mut self, p: f64) -> bool {
        let unit = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        unit < p
    }
}

/// What happens to one operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    Before,
    /// After the work (for changes), or partway (for transfers).
    After,
}

struct State {
    rng: XorShift,
    cfg: FaultConfig,
}

/// A [`Remote`] that wraps another and injects faults (see the module documentation).
pub struct FaultyRemote {
    inner: Arc<dyn Remote>,
    state: Arc<Mutex<State>>,
    failing: Arc<AtomicBool>,
    /// How many faults were injected so far.
    pub injected: Arc<AtomicUsize>,
}

impl FaultyRemote {
    /// Wraps `inner`; faults are on.
    pub fn new(inner: Arc<dyn Remote>, cfg: FaultConfig) -> Self {
        FaultyRemote {
            inner,
            state: Arc::new(Mutex::new(State {
                rng: XorShift::new(cfg.seed),
                cfg,
            })),
            failing: Arc::new(AtomicBool::new(true)),
            injected: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Turns fault injection (and the delays) on or off.
    pub fn set_failing(&self, on: bool) {
        self.failing.store(on, Ordering::SeqCst);
    }

    pub fn is_failing(&self) -> bool {
        self.failing.load(Ordering::SeqCst)
    }

    /// Sleeps for the configured random delay, then picks this operation's fault.
    fn roll(&self) -> Fault {
        self.roll_for(false)
    }

    /// [`roll`](Self::roll) for a change (`true`) or anything else.
    fn roll_for(&self, change: bool) -> Fault {
        if !self.is_failing() {
            return Fault::None;
        }
        let (delay, fault) = {
            let mut st = lock(&self.state);
            let max = st.cfg.max_delay.as_micros() as u64;
            let delay = Duration::from_micros(st.rng.below(max + 1));
            let p = st.cfg.probability;
            let scope = st.cfg.scope;
            let fault = if !st.rng.chance(p) || (scope != FaultScope::Everything && !change) {
                Fault::None
            } else if scope == FaultScope::ChangesLostReply {
                Fault::After
            } else if scope == FaultScope::ChangesBefore || st.rng.below(2) == 0 {
                Fault::Before
            } else {
                Fault::After
            };
            (delay, fault)
        };
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        if fault != Fault::None {
            self.injected.fetch_add(1, Ordering::Relaxed);
        }
        fault
    }

    fn below(&self, n: u64) -> u64 {
        lock(&self.state).rng.below(n)
    }

    /// A transient error, as a broken or slow connection gives.
    fn error(&self, what: &str, when: &str) -> RemoteError {
        let kind = if self.below(2) == 0 {
            ErrorKind::Connection
        } else {
            ErrorKind::Timeout
        };
        RemoteError::new(kind, format!("injected fault {when} {what}"))
    }

    /// Runs a change with a possible fault before it or a lost reply after it.
    fn change<T>(&self, what: &str, op: impl FnOnce() -> RemoteResult<T>) -> RemoteResult<T> {
        match self.roll_for(true) {
            Fault::None => op(),
            Fault::Before => Err(self.error(what, "before")),
            Fault::After => {
                op()?;
                Err(self.error(what, "after (lost reply)"))
            }
        }
    }
}

impl Remote for FaultyRemote {
    fn list(&self, dir: &str) -> RemoteResult<Vec<Entry>> {
        match self.roll() {
            Fault::None => self.inner.list(dir),
            _ => Err(self.error(&format!("list {dir}"), "before")),
        }
    }

    fn open_read(&self, path: &str, offset: u64) -> RemoteResult<ReadStream> {
        let what = format!("open_read {path}");
        match self.roll() {
            Fault::None => self.inner.open_read(path, offset),
            Fault::Before => Err(self.error(&what, "before")),
            Fault::After => {
                let stream = self.inner.open_read(path, offset)?;
                let mut data = Vec::new();
                let left = match stream.take(1 << 20).read_to_end(&mut data) {
                    // Cut before the end, so the reader always notices.
                    Ok(n) => self.below(n as u64) as usize,
                    Err(_) => 0,
                };
                data.truncate(left);
                Ok(Box::new(CutRead {
                    data: Cursor::new(data),
                    error: self.error(&what, "partway through"),
                }))
            }
        }
    }

    fn store(&self, path: &str, data: &mut dyn Source) -> RemoteResult<u64> {
        let what = format!("store {path}");
        match self.roll() {
            Fault::None => self.inner.store(path, data),
            Fault::Before => Err(self.error(&what, "before")),
            Fault::After if self.below(2) == 0 => {
                self.inner.store(path, data)?;
                Err(self.error(&what, "after (lost reply)"))
            }
            Fault::After => {
                let mut all = Vec::new();
                data.rewind()
                    .and_then(|_| data.read_to_end(&mut all))
                    .map_err(|e| RemoteError::new(ErrorKind::Connection, e.to_string()))?;
                let cut = self.below(all.len() as u64) as usize;
                all.truncate(cut);
                self.inner.store(path, &mut Cursor::new(all))?;
                Err(self.error(&what, &format!("after {cut} bytes")))
            }
        }
    }

    fn open_upload(&self, path: &str) -> RemoteResult<Box<dyn UploadStream>> {
        let what = format!("open_upload {path}");
        let fault = self.roll();
        if fault == Fault::Before {
            return Err(self.error(&what, "before"));
        }
        let inner = self.inner.open_upload(path)?;
        let (cut_after, finish_fault) = if fault == Fault::After {
            match self.below(3) {
                0 => (Some(self.below(64)), Fault::None),
                1 => (None, Fault::Before),
                _ => (None, Fault::After),
            }
        } else {
            (None, Fault::None)
        };
        Ok(Box::new(CutUpload {
            inner: Some(inner),
            cut_after,
            written: 0,
            finish_fault,
            error: self.error(&what, "partway through"),
        }))
    }

    fn rename(&self, from: &str, to: &str) -> RemoteResult<()> {
        self.change(&format!("rename {from} {to}"), || {
            self.inner.rename(from, to)
        })
    }

    fn remove_file(&self, path: &str) -> RemoteResult<()> {
        self.change(&format!("remove_file {path}"), || {
            self.inner.remove_file(path)
        })
    }

    fn mkdir(&self, path: &str) -> RemoteResult<()> {
        self.change(&format!("mkdir {path}"), || self.inner.mkdir(path))
    }

    fn rmdir(&self, path: &str) -> RemoteResult<()> {
        self.change(&format!("rmdir {path}"), || self.inner.rmdir(path))
    }

    fn mtime(&self, path: &str) -> RemoteResult<SystemTime> {
        match self.roll() {
            Fault::None => self.inner.mtime(path),
            _ => Err(self.error(&format!("mtime {path}"), "before")),
        }
    }

    fn set_mtime(&self, path: &str, mtime: SystemTime) -> RemoteResult<()> {
        self.change(&format!("set_mtime {path}"), || {
            self.inner.set_mtime(path, mtime)
        })
    }

    fn chmod(&self, path: &str, mode: u32) -> RemoteResult<()> {
        self.change(&format!("chmod {path}"), || self.inner.chmod(path, mode))
    }
}

/// A download that ends in an error instead of at the end of the file.
struct CutRead {
    data: Cursor<Vec<u8>>,
    error: RemoteError,
}

impl Read for CutRead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.data.read(buf)? {
            0 if !buf.is_empty() => Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                self.error.message.clone(),
            )),
            n => Ok(n),
        }
    }
}

/// An upload whose writes break after `cut_after` bytes, or whose finish fails.
struct CutUpload {
    /// None once the cut has happened (what came before it is stored).
    inner: Option<Box<dyn UploadStream>>,
    cut_after: Option<u64>,
    written: u64,
    finish_fault: Fault,
    error: RemoteError,
}

impl CutUpload {
    fn broken(&self) -> io::Error {
        io::Error::new(io::ErrorKind::ConnectionReset, self.error.message.clone())
    }
}

impl Write for CutUpload {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some(inner) = self.inner.as_mut() else {
            return Err(self.broken());
        };
        let room = match self.cut_after {
            Some(cut) => cut.saturating_sub(self.written),
            None => buf.len() as u64,
        };
        if room == 0 {
            // The connection breaks: the server keeps what it received.
            if let Some(inner) = self.inner.take() {
                let _ = inner.finish();
            }
            return Err(self.broken());
        }
        let n = inner.write(&buf[..buf.len().min(room as usize)])?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.inner.as_mut() {
            Some(inner) => inner.flush(),
            None => Err(self.broken()),
        }
    }
}

impl UploadStream for CutUpload {
    fn finish(self: Box<Self>) -> RemoteResult<()> {
        let this = *self;
        let Some(inner) = this.inner else {
            return Err(this.error);
        };
        match this.finish_fault {
            Fault::None => inner.finish(),
            Fault::Before => Err(this.error),
            Fault::After => {
                inner.finish()?;
                Err(this.error)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::memory::MemoryRemote;

    fn faulty(p: f64) -> (Arc<MemoryRemote>, FaultyRemote) {
        let mem = Arc::new(MemoryRemote::new());
        let cfg = FaultConfig {
            seed: 7,
            probability: p,
            ..FaultConfig::default()
        };
        (Arc::clone(&mem), FaultyRemote::new(mem, cfg))
    }

    #[test]
    fn without_faults_it_is_the_wrapped_remote() {
        let (mem, f) = faulty(1.0);
        f.set_failing(false);
        f.store("/a", &mut Cursor::new(b"abc".to_vec())).unwrap();
        f.rename("/a", "/b").unwrap();
        assert_eq!(mem.content("/b").unwrap(), b"abc");
        let mut got = Vec::new();
        f.open_read("/b", 1).unwrap().read_to_end(&mut got).unwrap();
        assert_eq!(got, b"bc");
        assert_eq!(f.injected.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn every_fault_is_transient_and_some_changes_happen_anyway() {
        let (mem, f) = faulty(1.0);
        let mut lost_replies = 0;
        for i in 0..200 {
            mem.add_file("/x", b"0123456789");
            let e = f.rename("/x", &format!("/y{i}")).unwrap_err();
            assert!(e.kind.is_transient(), "{e}");
            if mem.content(&format!("/y{i}")).is_some() {
                lost_replies += 1;
            }
        }
        assert!((50..150).contains(&lost_replies), "{lost_replies} of 200");
    }

    #[test]
    fn cut_transfers_end_in_errors_never_silently() {
        let (mem, f) = faulty(1.0);
        mem.add_file("/big", &[7u8; 100]);
        let mut prefixes = 0;
        for _ in 0..100 {
            if let Ok(mut s) = f.open_read("/big", 0) {
                let mut got = Vec::new();
                assert!(s.read_to_end(&mut got).is_err());
                assert!(got.len() < 100);
            }
            let data = vec![1u8; 100];
            mem.remove("/s");
            assert!(f.store("/s", &mut Cursor::new(data.clone())).is_err());
            if mem.content("/s").is_some_and(|d| d.len() < 100) {
                prefixes += 1;
            }
            if let Ok(mut up) = f.open_upload("/u") {
                let wrote = up.write_all(&data);
                assert!(wrote.is_err() || up.finish().is_err());
            }
        }
        // Some cut stores left a prefix behind.
        assert!(prefixes > 0);
    }

    #[test]
    fn the_schedule_repeats_for_a_seed() {
        let run = || {
            let (mem, f) = faulty(0.5);
            mem.add_file("/a", b"a");
            (0..64).map(|_| f.list("/").is_ok()).collect::<Vec<bool>>()
        };
        assert_eq!(run(), run());
        assert!(run().contains(&true) && run().contains(&false));
    }
}
