//! `writeback=async` against the in-memory Remote: close() returns before the
//! upload, the journal keeps what is pending across a "crash", conflicts keep
//! both versions, and refusals stay in the journal.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::journal::Journal;
use super::memory::MemoryRemote;
use super::*;

/// A shared FtpFs in async mode over `r`, with its spool in `spool` and its
/// journal in `journal`.
fn mount(r: &Arc<MemoryRemote>, spool: &Path, journal: &Path) -> Arc<FtpFs> {
    let cfg = FsConfig {
        spool_dir: spool.to_path_buf(),
        writeback: Writeback::Async,
        journal_dir: Some(journal.to_path_buf()),
        upload_workers: 2,
        ..FsConfig::default()
    };
    FtpFs::new_shared(Arc::clone(r) as Arc<dyn Remote>, cfg)
}

struct Dirs {
    spool: tempfile::TempDir,
    journal: tempfile::TempDir,
}

fn dirs() -> Dirs {
    Dirs {
        spool: tempfile::tempdir().expect("tempdir"),
        journal: tempfile::tempdir().expect("tempdir"),
    }
}

fn pending_in(journal: &Path) -> Vec<String> {
    Journal::open(journal)
        .expect("journal")
        .load()
        .expect("load")
        .into_iter()
        .map(|p| p.record.path)
        .collect()
}

/// Creates `name` in the root with `data`, through one handle; with `close`,
/// releases it too (else the handle stays open: the daemon "crashes" first).
fn write_file(fs: &FtpFs, name: &str, data: &[u8], close: bool) -> u64 {
    let (attr, fh) = fs
        .create(inodes::ROOT, name, 0o644, libc::O_WRONLY)
        .expect("create");
    fs.write(fh, 0, data).expect("write");
    fs.flush(fh).expect("flush");
    if close {
        fs.release(fh);
    }
    attr.ino
}

const SYNC_LIMIT: Option<Duration> = Some(Duration::from_secs(20));

/// Rewrites `name` (O_TRUNC) with `data` through a mount whose uploads the
/// server refuses, flushes, and lets the daemon die with the handle open.
fn rewrite_then_crash(r: &Arc<MemoryRemote>, d: &Dirs, name: &str, data: &[u8]) {
    let fs = mount(r, d.spool.path(), d.journal.path());
    r.disk_full.store(true, Ordering::SeqCst);
    let attr = fs.lookup(inodes::ROOT, name).expect("lookup");
    let (fh, _) = fs
        .open(attr.ino, libc::O_WRONLY | libc::O_TRUNC)
        .expect("open");
    fs.write(fh, 0, data).expect("write");
    fs.flush(fh).expect("flush");
    fs.stop_uploaders();
    // Dropped without release or unmount: a crash.
}

#[test]
fn close_returns_from_the_journal_and_the_upload_follows() {
    let r = Arc::new(MemoryRemote::new());
    let d = dirs();
    let fs = mount(&r, d.spool.path(), d.journal.path());
    // A full server disk holds the upload back, so close() cannot have waited for it.
    r.disk_full.store(true, Ordering::SeqCst);
    let ino = write_file(&fs, "a.txt", b"hello", true);
    assert_eq!(pending_in(d.journal.path()), ["/a.txt"]);
    assert_eq!(fs.getattr(ino).expect("getattr").size, 5);
    let report = fs.sync_uploads(SYNC_LIMIT);
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert!(r.content("/a.txt").is_none());
    assert_eq!(
        pending_in(d.journal.path()),
        ["/a.txt"],
        "kept after a refusal"
    );
    let status = fs.pending_uploads();
    assert!(
        status
            .iter()
            .any(|(p, _, why)| p == "/a.txt" && why.contains("failed")),
        "{status:?}"
    );

    // The space comes back; the next close of the file queues it again.
    r.disk_full.store(false, Ordering::SeqCst);
    let (fh, _) = fs.open(ino, libc::O_WRONLY | libc::O_APPEND).expect("open");
    fs.write(fh, 5, b"!").expect("write");
    fs.flush(fh).expect("flush");
    fs.release(fh);
    let report = fs.sync_uploads(SYNC_LIMIT);
    assert_eq!(report, SyncReport::default());
    assert_eq!(r.content("/a.txt").as_deref(), Some(&b"hello!"[..]));
    assert!(pending_in(d.journal.path()).is_empty());
}

#[test]
fn a_crash_leaves_the_journal_and_the_next_mount_uploads_it() {
    let r = Arc::new(MemoryRemote::new());
    r.add_file("/old.txt", b"old");
    let d = dirs();
    {
        let fs = mount(&r, d.spool.path(), d.journal.path());
        r.disk_full.store(true, Ordering::SeqCst);
        write_file(&fs, "new.txt", b"brand new", true);
        fs.stop_uploaders();
    }
    // Still open when the daemon dies: what the last flush saved counts.
    rewrite_then_crash(&r, &d, "old.txt", b"rewritten");
    r.disk_full.store(false, Ordering::SeqCst);
    let mut left = pending_in(d.journal.path());
    left.sort();
    assert_eq!(left, ["/new.txt", "/old.txt"]);
    assert_eq!(r.content("/old.txt").as_deref(), Some(&b"old"[..]));

    let spool2 = tempfile::tempdir().expect("tempdir");
    let fs = mount(&r, spool2.path(), d.journal.path());
    fs.resume_journal();
    // The mount shows the pending content, uploaded or not.
    assert_eq!(fs.lookup(inodes::ROOT, "old.txt").expect("lookup").size, 9);
    let report = fs.sync_uploads(SYNC_LIMIT);
    assert_eq!(report, SyncReport::default());
    assert_eq!(r.content("/new.txt").as_deref(), Some(&b"brand new"[..]));
    assert_eq!(r.content("/old.txt").as_deref(), Some(&b"rewritten"[..]));
    assert!(pending_in(d.journal.path()).is_empty());
}

#[test]
fn a_file_changed_on_the_server_meanwhile_keeps_both_versions() {
    let r = Arc::new(MemoryRemote::new());
    r.add_file("/page.html", b"v1");
    let d = dirs();
    rewrite_then_crash(&r, &d, "page.html", b"ours");
    r.disk_full.store(false, Ordering::SeqCst);
    // Someone else changes the file while ours waits in the journal.
    r.add_file("/page.html", b"theirs, longer");

    let spool2 = tempfile::tempdir().expect("tempdir");
    let fs = mount(&r, spool2.path(), d.journal.path());
    fs.resume_journal();
    let report = fs.sync_uploads(SYNC_LIMIT);
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(report.conflicts.len(), 1, "{report:?}");
    assert_eq!(
        r.content("/page.html").as_deref(),
        Some(&b"theirs, longer"[..])
    );
    let ours = &report.conflicts[0].1;
    assert!(
        ours.starts_with("/page.conflict-") && ours.ends_with(".html"),
        "{ours}"
    );
    assert_eq!(r.content(ours).as_deref(), Some(&b"ours"[..]));
    assert!(pending_in(d.journal.path()).is_empty());
    // The mount shows the server's file under the name.
    let attr = fs.lookup(inodes::ROOT, "page.html").expect("lookup");
    assert_eq!(attr.size, 14);
}

#[test]
fn an_unlink_cancels_a_pending_upload() {
    let r = Arc::new(MemoryRemote::new());
    let d = dirs();
    let fs = mount(&r, d.spool.path(), d.journal.path());
    r.disk_full.store(true, Ordering::SeqCst);
    write_file(&fs, "gone.txt", b"never mind", true);
    let _ = fs.sync_uploads(SYNC_LIMIT);
    fs.unlink(inodes::ROOT, "gone.txt").expect("unlink");
    assert!(pending_in(d.journal.path()).is_empty());
    r.disk_full.store(false, Ordering::SeqCst);
    assert_eq!(fs.sync_uploads(SYNC_LIMIT).failed.len(), 0);
    assert!(r.content("/gone.txt").is_none());
}

#[test]
fn a_rewrite_of_a_pending_file_keeps_the_journal_copy_intact() {
    let r = Arc::new(MemoryRemote::new());
    let d = dirs();
    let fs = mount(&r, d.spool.path(), d.journal.path());
    r.disk_full.store(true, Ordering::SeqCst);
    let ino = write_file(&fs, "f.txt", b"first version", true);
    let _ = fs.sync_uploads(SYNC_LIMIT);
    // Reopened and rewritten, not yet closed: the journal still has the first.
    let (fh, _) = fs.open(ino, libc::O_WRONLY | libc::O_TRUNC).expect("open");
    fs.write(fh, 0, b"second").expect("write");
    let j = Journal::open(d.journal.path()).expect("journal");
    let saved = j.load().expect("load");
    assert_eq!(
        std::fs::read(&saved[0].data).expect("data"),
        b"first version"
    );
    fs.flush(fh).expect("flush");
    fs.release(fh);
    let saved = j.load().expect("load");
    assert_eq!(std::fs::read(&saved[0].data).expect("data"), b"second");
    r.disk_full.store(false, Ordering::SeqCst);
    fs.queue_upload(ino);
    assert_eq!(fs.sync_uploads(SYNC_LIMIT), SyncReport::default());
    assert_eq!(r.content("/f.txt").as_deref(), Some(&b"second"[..]));
}

#[test]
fn an_upload_that_landed_before_the_crash_is_not_a_conflict() {
    let r = Arc::new(MemoryRemote::new());
    let d = dirs();
    // The crash came after the rename put the file in place, before the
    // journal entry went: the server has exactly our content.
    r.add_file("/x.txt", b"landed");
    let j = Journal::open(d.journal.path()).expect("journal");
    let data = d.journal.path().join("content");
    std::fs::write(&data, b"landed").expect("write");
    let f = std::fs::File::open(&data).expect("open");
    j.save_data("1-1-0", &f, &data).expect("data");
    let record = super::journal::Record {
        path: "/x.txt".into(),
        size: 6,
        modified: std::time::SystemTime::now(),
        mtime: None,
        mode: None,
        base: super::journal::Base::New,
        partial: false,
    };
    j.save_record("1-1-0", &record).expect("record");
    std::fs::remove_file(&data).expect("rm");

    let fs = mount(&r, d.spool.path(), d.journal.path());
    fs.resume_journal();
    let report = fs.sync_uploads(SYNC_LIMIT);
    assert_eq!(report, SyncReport::default());
    assert_eq!(
        r.paths().iter().filter(|p| p.contains("conflict")).count(),
        0
    );
    assert!(pending_in(d.journal.path()).is_empty());
}

#[test]
fn a_file_stays_visible_while_its_first_upload_lands() {
    let r = Arc::new(MemoryRemote::new());
    r.add_dir("/d");
    let d = dirs();
    let fs = mount(&r, d.spool.path(), d.journal.path());
    let dir = fs.lookup(inodes::ROOT, "d").expect("lookup d").ino;
    for i in 0..300 {
        let name = format!("f{i}");
        let (attr, fh) = fs.create(dir, &name, 0o644, libc::O_RDWR).expect("create");
        fs.write(fh, 0, b"zz").expect("write");
        fs.flush(fh).expect("flush");
        fs.release(fh);
        let ino = fs
            .lookup(dir, &name)
            .unwrap_or_else(|e| panic!("lookup {name}: {e:?}"))
            .ino;
        assert_eq!(ino, attr.ino);
        let set = SetAttr {
            size: Some(9),
            ..SetAttr::default()
        };
        fs.setattr(ino, &set)
            .unwrap_or_else(|e| panic!("truncate {name} (round {i}): {e:?}"));
    }
    assert_eq!(fs.sync_uploads(SYNC_LIMIT), SyncReport::default());
}

/// Writes `data` to a new file `name` in 1 MiB writes, in order, and flushes.
fn write_in_order(fs: &FtpFs, name: &str, data: &[u8]) -> u64 {
    let (attr, fh) = fs
        .create(inodes::ROOT, name, 0o644, libc::O_WRONLY)
        .expect("create");
    for (i, chunk) in data.chunks(1 << 20).enumerate() {
        fs.write(fh, (i << 20) as u64, chunk).expect("write");
    }
    fs.flush(fh).expect("flush");
    fs.release(fh);
    attr.ino
}

#[test]
fn a_big_file_written_in_order_streams_and_its_close_finishes_the_upload() {
    let r = Arc::new(MemoryRemote::new());
    let d = dirs();
    let fs = mount(&r, d.spool.path(), d.journal.path());
    let data: Vec<u8> = (0..write_ops::ASYNC_STREAM_FROM + (3 << 19))
        .map(|i| (i % 251) as u8)
        .collect();
    write_in_order(&fs, "big.bin", &data);
    // On the server when close() returned: nothing was journaled or queued.
    assert!(r.content("/big.bin").as_deref() == Some(&data[..]));
    assert!(pending_in(d.journal.path()).is_empty());
    assert_eq!(r.stores.load(Ordering::SeqCst), 1, "one streamed STOR");
    assert_eq!(fs.sync_uploads(SYNC_LIMIT), SyncReport::default());
    let temps: Vec<String> = r
        .paths()
        .into_iter()
        .filter(|p| p.contains(lifecycle::TEMP_PREFIX))
        .collect();
    assert!(temps.is_empty(), "{temps:?}");
}

#[test]
fn a_big_file_whose_stream_is_refused_goes_to_the_journal() {
    let r = Arc::new(MemoryRemote::new());
    let d = dirs();
    let fs = mount(&r, d.spool.path(), d.journal.path());
    r.disk_full.store(true, Ordering::SeqCst);
    let data = vec![7u8; (write_ops::ASYNC_STREAM_FROM + (1 << 20)) as usize];
    let ino = write_in_order(&fs, "big.bin", &data);
    assert_eq!(pending_in(d.journal.path()), ["/big.bin"]);
    assert_eq!(fs.getattr(ino).expect("getattr").size, data.len() as u64);
    // sync reports the refusal, and the data stays in the journal...
    let report = fs.sync_uploads(SYNC_LIMIT);
    assert_eq!(
        report.failed,
        [("/big.bin".to_string(), "552 disk full".to_string())]
    );
    assert_eq!(pending_in(d.journal.path()), ["/big.bin"]);
    // ... and once the disk has room, the next sync tries again.
    r.disk_full.store(false, Ordering::SeqCst);
    let report = fs.sync_uploads(SYNC_LIMIT);
    assert_eq!(report, SyncReport::default());
    assert!(r.content("/big.bin").as_deref() == Some(&data[..]));
    assert!(pending_in(d.journal.path()).is_empty());
}

#[test]
fn a_file_written_out_of_order_never_streams() {
    let r = Arc::new(MemoryRemote::new());
    let d = dirs();
    let fs = mount(&r, d.spool.path(), d.journal.path());
    let (_, fh) = fs
        .create(inodes::ROOT, "holes.bin", 0o644, libc::O_WRONLY)
        .expect("create");
    fs.write(fh, 1 << 20, b"late").expect("write");
    let big = vec![1u8; write_ops::ASYNC_STREAM_FROM as usize];
    fs.write(fh, 0, &big).expect("write");
    fs.flush(fh).expect("flush");
    // Before the release queues the upload: nothing went to the server yet.
    assert_eq!(r.stores.load(Ordering::SeqCst), 0, "nothing streamed");
    assert_eq!(pending_in(d.journal.path()), ["/holes.bin"]);
    fs.release(fh);
    assert_eq!(fs.sync_uploads(SYNC_LIMIT), SyncReport::default());
    assert_eq!(
        r.content("/holes.bin").map(|c| c.len()),
        Some(big.len().max((1 << 20) + 4))
    );
}
