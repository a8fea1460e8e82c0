//! The write-back lifecycle under concurrency, against the in-memory Remote behind
//! a gate that holds transfers mid-way: nothing waits for a transfer it does not
//! need, every handle sees one truth, and no acknowledged byte is lost.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::memory::MemoryRemote;
use super::*;
use crate::remote::{ReadStream, RemoteResult, Source, UploadStream};

/// A Remote whose downloads and uploads stop at a gate while it is closed.
#[derive(Default)]
struct Gated {
    inner: MemoryRemote,
    closed: Mutex<bool>,
    cv: Condvar,
    /// Transfers now held at the gate.
    held: AtomicUsize,
    contended: AtomicBool,
}

impl Gated {
    fn close(&self) {
        *lock(&self.closed) = true;
    }

    fn open(&self) {
        *lock(&self.closed) = false;
        self.cv.notify_all();
    }

    fn pass(&self) {
        let mut closed = lock(&self.closed);
        if *closed {
            self.held.fetch_add(1, Ordering::SeqCst);
            while *closed {
                closed = crate::sync::wait(&self.cv, closed, Duration::from_millis(50));
            }
            self.held.fetch_sub(1, Ordering::SeqCst);
        }
    }

    fn wait_held(&self, n: usize) {
        let t = Instant::now();
        while self.held.load(Ordering::SeqCst) < n {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "nothing reached the gate"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Remote for Gated {
    fn list(&self, dir: &str) -> RemoteResult<Vec<Entry>> {
        self.inner.list(dir)
    }
    fn open_read(&self, path: &str, offset: u64) -> RemoteResult<ReadStream> {
        self.pass();
        self.inner.open_read(path, offset)
    }
    fn store(&self, path: &str, data: &mut dyn Source) -> RemoteResult<u64> {
        // Read a little first, as a real upload has sent some bytes when it stalls.
        let mut first = [0u8; 1];
        let _ = data.read(&mut first);
        self.pass();
        self.inner.store(path, data)
    }
    fn open_upload(&self, path: &str) -> RemoteResult<Box<dyn UploadStream>> {
        self.inner.open_upload(path)
    }
    fn rename(&self, from: &str, to: &str) -> RemoteResult<()> {
        self.inner.rename(from, to)
    }
    fn remove_file(&self, path: &str) -> RemoteResult<()> {
        self.inner.remove_file(path)
    }
    fn mkdir(&self, path: &str) -> RemoteResult<()> {
        self.inner.mkdir(path)
    }
    fn rmdir(&self, path: &str) -> RemoteResult<()> {
        self.inner.rmdir(path)
    }
    fn set_mtime(&self, path: &str, t: SystemTime) -> RemoteResult<()> {
        self.inner.set_mtime(path, t)
    }
    fn chmod(&self, path: &str, mode: u32) -> RemoteResult<()> {
        self.inner.chmod(path, mode)
    }
    fn transfer_contended(&self) -> bool {
        self.contended.load(Ordering::SeqCst)
    }
}

struct Fixture {
    r: Arc<Gated>,
    fs: Arc<FtpFs>,
    _spool: tempfile::TempDir,
}

fn setup() -> Fixture {
    let r = Arc::new(Gated::default());
    r.inner.add_dir("/");
    r.inner.add_dir("/d");
    r.inner.add_file("/d/big", &vec![7u8; 100_000]);
    r.inner.add_file("/d/other", b"other");
    let spool = tempfile::tempdir().expect("tempdir");
    let cfg = FsConfig {
        spool_dir: spool.path().to_path_buf(),
        ..FsConfig::default()
    };
    let fs = Arc::new(FtpFs::new(Arc::clone(&r) as Arc<dyn Remote>, cfg));
    Fixture {
        r,
        fs,
        _spool: spool,
    }
}

fn ino(f: &Fixture, name: &str) -> u64 {
    let d = f.fs.lookup(ROOT, "d").expect("d").ino;
    f.fs.lookup(d, name).expect("lookup").ino
}

/// Runs `op` and fails the test if it takes a second or more.
fn quick<T>(what: &str, op: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let v = op();
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "{what} waited for a transfer"
    );
    v
}

fn metadata_is_quick(f: &Fixture, file: u64, expect_size: u64) {
    let d = f.fs.lookup(ROOT, "d").expect("d").ino;
    let a = quick("getattr", || f.fs.getattr(file)).expect("getattr");
    assert_eq!(a.size, expect_size);
    quick("lookup", || f.fs.lookup(d, "other")).expect("lookup");
    let dh = quick("opendir", || f.fs.opendir(d)).expect("opendir");
    quick("readdir", || f.fs.readdir(dh, 0, true, |_, _| true)).expect("readdir");
    f.fs.releasedir(dh);
    let other = ino(f, "other");
    let (fh, _) =
        quick("open of another file", || f.fs.open(other, libc::O_RDONLY)).expect("open other");
    f.fs.release(fh);
}

#[test]
fn metadata_answers_while_an_upload_is_held() {
    let f = setup();
    let big = ino(&f, "big");
    let (fh, _) =
        f.fs.open(big, libc::O_WRONLY | libc::O_APPEND)
            .expect("open");
    f.fs.write(fh, 100_000, b"x\n").expect("append");
    f.r.close();
    let fs = Arc::clone(&f.fs);
    let closer = std::thread::spawn(move || {
        let r = fs.flush(fh);
        fs.release(fh);
        r
    });
    f.r.wait_held(1);
    metadata_is_quick(&f, big, 100_002);
    f.r.open();
    closer.join().expect("closer").expect("upload");
    let server = f.r.inner.content("/d/big").expect("big");
    assert_eq!(server.len(), 100_002);
    assert_eq!(&server[100_000..], b"x\n");
}

#[test]
fn metadata_answers_while_a_download_for_a_write_is_held() {
    let f = setup();
    let big = ino(&f, "big");
    let (fh, _) = f.fs.open(big, libc::O_RDWR).expect("open");
    f.r.close();
    let fs = Arc::clone(&f.fs);
    let writer = std::thread::spawn(move || fs.write(fh, 10, b"abc"));
    f.r.wait_held(1);
    // Nothing changed yet: the server's size stands.
    metadata_is_quick(&f, big, 100_000);
    f.r.open();
    writer.join().expect("writer").expect("write");
    f.fs.flush(fh).expect("flush");
    f.fs.release(fh);
    let server = f.r.inner.content("/d/big").expect("big");
    assert_eq!(&server[8..15], &[7, 7, b'a', b'b', b'c', 7, 7]);
}

#[test]
fn an_append_while_the_last_close_uploads_sees_it_and_lands() {
    let f = setup();
    let big = ino(&f, "big");
    let (a, _) =
        f.fs.open(big, libc::O_WRONLY | libc::O_APPEND)
            .expect("open a");
    f.fs.write(a, 100_000, b"A\n").expect("append a");
    f.r.close();
    let fs = Arc::clone(&f.fs);
    let close_a = std::thread::spawn(move || {
        let r = fs.flush(a);
        fs.release(a);
        r
    });
    f.r.wait_held(1);
    // The next open-append sees the size the first close is uploading.
    let (b, _) = quick("open", || f.fs.open(big, libc::O_WRONLY | libc::O_APPEND)).expect("b");
    let size = f.fs.getattr(big).expect("getattr").size;
    assert_eq!(size, 100_002);
    quick("write", || f.fs.write(b, size, b"B\n")).expect("append b");
    let fs = Arc::clone(&f.fs);
    let close_b = std::thread::spawn(move || {
        let r = fs.flush(b);
        fs.release(b);
        r
    });
    std::thread::sleep(Duration::from_millis(50));
    f.r.open();
    close_a.join().expect("a").expect("upload a");
    close_b.join().expect("b").expect("upload b");
    let server = f.r.inner.content("/d/big").expect("big");
    assert_eq!(&server[100_000..], b"A\nB\n");
    assert!(lock(&f.fs.files).is_empty(), "nothing left to upload");
}

#[test]
fn a_write_under_a_running_upload_never_lands_torn() {
    let f = setup();
    let big = ino(&f, "big");
    let (fh, _) = f.fs.open(big, libc::O_RDWR).expect("open");
    f.fs.write(fh, 0, b"first").expect("write");
    f.r.close();
    let fs = Arc::clone(&f.fs);
    let flusher = std::thread::spawn(move || fs.fsync(fh));
    f.r.wait_held(1);
    f.fs.write(fh, 50_000, b"second")
        .expect("write under the upload");
    f.r.open();
    flusher.join().expect("flusher").expect("fsync");
    f.fs.flush(fh).expect("flush");
    f.fs.release(fh);
    let server = f.r.inner.content("/d/big").expect("big");
    assert_eq!(&server[..5], b"first");
    assert_eq!(&server[50_000..50_006], b"second");
    let temps = f.r.inner.paths();
    assert!(!temps.iter().any(|p| p.contains(TEMP_PREFIX)), "{temps:?}");
}

#[test]
fn a_stream_gives_its_connection_up_when_another_transfer_waits() {
    let f = setup();
    let d = f.fs.lookup(ROOT, "d").expect("d").ino;
    let (_, fh) =
        f.fs.create(d, "new", 0o644, libc::O_WRONLY)
            .expect("create");
    f.fs.write(fh, 0, &[1u8; 4096]).expect("write");
    let streams = f.r.inner.stores.load(Ordering::SeqCst);
    assert_eq!(streams, 1, "the first write starts a streaming upload");
    f.r.contended.store(true, Ordering::SeqCst);
    f.fs.write(fh, 4096, &[2u8; 4096]).expect("write");
    assert!(lock(&f.fs.slot(ino(&f, "new")).expect("slot").stream).is_none());
    f.r.contended.store(false, Ordering::SeqCst);
    f.fs.write(fh, 8192, &[3u8; 10]).expect("write");
    f.fs.flush(fh).expect("flush");
    f.fs.release(fh);
    let server = f.r.inner.content("/d/new").expect("new");
    assert_eq!(server.len(), 8202);
    assert_eq!(server[4096], 2);
    assert_eq!(server[8201], 3);
}
