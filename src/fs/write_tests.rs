//! The write side against the in-memory Remote: spool, atomic replace, streaming,
//! namespace changes and attributes, without FUSE or FTP.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::lifecycle::TEMP_PREFIX;
use super::memory::MemoryRemote;
use super::*;

struct Fixture {
    r: Arc<MemoryRemote>,
    fs: FtpFs,
    _spool: tempfile::TempDir,
}

fn setup() -> Fixture {
    let r = Arc::new(MemoryRemote::new());
    r.add_dir("/d");
    r.add_file("/d/old.txt", b"0123456789");
    let spool = tempfile::tempdir().unwrap();
    let cfg = FsConfig {
        spool_dir: spool.path().to_path_buf(),
        ..FsConfig::default()
    };
    let fs = FtpFs::new(Arc::clone(&r) as Arc<dyn Remote>, cfg);
    Fixture {
        r,
        fs,
        _spool: spool,
    }
}

fn no_temp_files(r: &MemoryRemote) {
    let left: Vec<String> = r
        .paths()
        .into_iter()
        .filter(|p| p.contains(TEMP_PREFIX))
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
}

fn d(f: &Fixture) -> u64 {
    f.fs.lookup(ROOT, "d").unwrap().ino
}

#[test]
fn create_write_close_uploads_once_by_streaming() {
    let f = setup();
    let dir = d(&f);
    let (attr, fh) = f.fs.create(dir, "new.bin", 0o644, libc::O_WRONLY).unwrap();
    assert_eq!(attr.size, 0);
    let data: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
    for (i, chunk) in data.chunks(65536).enumerate() {
        f.fs.write(fh, (i * 65536) as u64, chunk).unwrap();
    }
    assert_eq!(f.fs.getattr(attr.ino).unwrap().size, data.len() as u64);
    assert!(
        f.r.content("/d/new.bin").is_none(),
        "nothing is visible before close"
    );
    // `ftpfs status` sees the stream with its progress, and the file waiting.
    let streaming = crate::stats::STATS.uploads();
    let mine = streaming.iter().find(|u| u.path == "/d/new.bin");
    assert_eq!(
        mine.map(|u| (u.done, u.total)),
        Some((data.len() as u64, None)),
        "{streaming:?}"
    );
    let pending = f.fs.pending_uploads();
    assert!(
        pending
            .iter()
            .any(|(p, size, _)| p == "/d/new.bin" && *size == Some(data.len() as u64)),
        "{pending:?}"
    );
    f.fs.flush(fh).unwrap();
    f.fs.release(fh);
    assert_eq!(f.r.content("/d/new.bin").unwrap(), data);
    assert_eq!(f.r.stores.load(Ordering::SeqCst), 1, "one upload");
    assert!(!crate::stats::STATS
        .uploads()
        .iter()
        .any(|u| u.path == "/d/new.bin"));
    assert!(f.fs.pending_uploads().is_empty());
    no_temp_files(&f.r);
    // the cache knows the new size without asking the server
    let lists = f.r.lists.load(Ordering::SeqCst);
    assert_eq!(f.fs.lookup(dir, "new.bin").unwrap().size, data.len() as u64);
    assert_eq!(f.r.lists.load(Ordering::SeqCst), lists);
}

#[test]
fn an_empty_created_file_reaches_the_server() {
    let f = setup();
    let (_, fh) =
        f.fs.create(d(&f), "empty", 0o644, libc::O_RDONLY | libc::O_CREAT)
            .unwrap();
    f.fs.flush(fh).unwrap();
    f.fs.release(fh);
    assert_eq!(f.r.content("/d/empty").unwrap(), b"");
}

#[test]
fn create_exclusive_on_an_existing_name_fails() {
    let f = setup();
    let e =
        f.fs.create(d(&f), "old.txt", 0o644, libc::O_WRONLY | libc::O_EXCL);
    assert_eq!(e.err(), Some(Errno(libc::EEXIST)));
}

#[test]
fn a_partial_overwrite_keeps_the_bytes_around_it() {
    let f = setup();
    let a = f.fs.lookup(d(&f), "old.txt").unwrap();
    let (fh, _) = f.fs.open(a.ino, libc::O_RDWR).unwrap();
    assert_eq!(
        f.r.opens.load(Ordering::SeqCst),
        0,
        "nothing fetched before a write"
    );
    f.fs.write(fh, 3, b"abc").unwrap();
    assert_eq!(&*f.fs.read(fh, 0, 100).unwrap(), b"012abc6789");
    f.fs.flush(fh).unwrap();
    f.fs.release(fh);
    assert_eq!(f.r.content("/d/old.txt").unwrap(), b"012abc6789");
    no_temp_files(&f.r);
}

#[test]
fn reads_through_another_handle_see_unsaved_writes() {
    let f = setup();
    let a = f.fs.lookup(d(&f), "old.txt").unwrap();
    let (w, _) = f.fs.open(a.ino, libc::O_WRONLY).unwrap();
    let (r, _) = f.fs.open(a.ino, libc::O_RDONLY).unwrap();
    f.fs.write(w, 10, b"XY").unwrap();
    assert_eq!(&*f.fs.read(r, 8, 10).unwrap(), b"89XY");
    assert_eq!(f.fs.getattr(a.ino).unwrap().size, 12);
}

#[test]
fn o_trunc_then_write_replaces_the_content() {
    let f = setup();
    let a = f.fs.lookup(d(&f), "old.txt").unwrap();
    let (fh, _) = f.fs.open(a.ino, libc::O_WRONLY | libc::O_TRUNC).unwrap();
    assert_eq!(f.fs.getattr(a.ino).unwrap().size, 0);
    f.fs.write(fh, 0, b"new").unwrap();
    f.fs.flush(fh).unwrap();
    f.fs.release(fh);
    assert_eq!(f.r.content("/d/old.txt").unwrap(), b"new");
    assert_eq!(
        f.r.opens.load(Ordering::SeqCst),
        0,
        "a truncated file is never fetched"
    );
}

#[test]
fn truncate_of_a_closed_file_takes_effect_at_once() {
    let f = setup();
    let a = f.fs.lookup(d(&f), "old.txt").unwrap();
    let set = |size| SetAttr {
        size: Some(size),
        ..SetAttr::default()
    };
    assert_eq!(f.fs.setattr(a.ino, &set(4)).unwrap().size, 4);
    assert_eq!(f.r.content("/d/old.txt").unwrap(), b"0123");
    f.fs.setattr(a.ino, &set(6)).unwrap();
    assert_eq!(f.r.content("/d/old.txt").unwrap(), b"0123\0\0");
    f.fs.setattr(a.ino, &set(0)).unwrap();
    assert_eq!(f.r.content("/d/old.txt").unwrap(), b"");
    no_temp_files(&f.r);
}

#[test]
fn a_truncate_through_a_handle_waits_for_its_close() {
    let f = setup();
    let a = f.fs.lookup(d(&f), "old.txt").unwrap();
    let (fh, _) = f.fs.open(a.ino, libc::O_WRONLY).unwrap();
    // The kernel's truncate of an O_TRUNC open, or ftruncate(2).
    let set = SetAttr {
        size: Some(0),
        through_handle: true,
        ..SetAttr::default()
    };
    assert_eq!(f.fs.setattr(a.ino, &set).unwrap().size, 0);
    assert_eq!(f.r.content("/d/old.txt").unwrap(), b"0123456789");
    f.fs.flush(fh).unwrap();
    f.fs.release(fh);
    assert_eq!(f.r.content("/d/old.txt").unwrap(), b"");
}

#[test]
fn a_failed_upload_is_an_error_and_keeps_the_old_file() {
    let f = setup();
    f.r.disk_full.store(true, Ordering::SeqCst);
    let a = f.fs.lookup(d(&f), "old.txt").unwrap();
    let (fh, _) = f.fs.open(a.ino, libc::O_WRONLY | libc::O_TRUNC).unwrap();
    f.fs.write(fh, 0, b"will not fit").unwrap();
    assert_eq!(f.fs.flush(fh), Err(Errno(libc::ENOSPC)));
    assert_eq!(f.fs.fsync(fh), Err(Errno(libc::ENOSPC)));
    assert_eq!(f.r.content("/d/old.txt").unwrap(), b"0123456789");
    no_temp_files(&f.r);
    // the data is still here, and goes up once the server has room
    assert_eq!(&*f.fs.read(fh, 0, 100).unwrap(), b"will not fit");
    f.r.disk_full.store(false, Ordering::SeqCst);
    f.fs.flush(fh).unwrap();
    assert_eq!(f.r.content("/d/old.txt").unwrap(), b"will not fit");
}

#[test]
fn direct_upload_writes_in_place() {
    let r = Arc::new(MemoryRemote::new());
    r.add_file("/f", b"old");
    r.no_rename.store(true, Ordering::SeqCst);
    let spool = tempfile::tempdir().unwrap();
    let cfg = FsConfig {
        spool_dir: spool.path().to_path_buf(),
        upload_mode: lifecycle::UploadMode::Direct,
        ..FsConfig::default()
    };
    let fs = FtpFs::new(Arc::clone(&r) as Arc<dyn Remote>, cfg);
    let a = fs.lookup(ROOT, "f").unwrap();
    let (fh, _) = fs.open(a.ino, libc::O_WRONLY | libc::O_TRUNC).unwrap();
    fs.write(fh, 0, b"new").unwrap();
    fs.flush(fh).unwrap();
    assert_eq!(r.content("/f").unwrap(), b"new");
    assert_eq!(r.renames.load(Ordering::SeqCst), 0);
}

#[test]
fn mtime_set_before_close_survives_the_upload() {
    let f = setup();
    let (attr, fh) =
        f.fs.create(d(&f), "stamped", 0o644, libc::O_WRONLY)
            .unwrap();
    f.fs.write(fh, 0, b"x").unwrap();
    let t = UNIX_EPOCH + Duration::from_secs(1_500_000_000);
    let set = SetAttr {
        mtime: Some(t),
        ..SetAttr::default()
    };
    assert_eq!(f.fs.setattr(attr.ino, &set).unwrap().mtime, t);
    f.fs.flush(fh).unwrap();
    f.fs.release(fh);
    assert_eq!(f.r.mtime("/d/stamped"), Some(t));
    assert_eq!(f.fs.getattr(attr.ino).unwrap().mtime, t);
}

#[test]
fn chmod_and_chown() {
    let f = setup();
    let a = f.fs.lookup(d(&f), "old.txt").unwrap();
    let set = SetAttr {
        mode: Some(0o600),
        ..SetAttr::default()
    };
    assert_eq!(f.fs.setattr(a.ino, &set).unwrap().perm, 0o600);
    assert_eq!(f.r.mode("/d/old.txt"), Some(0o600));
    // replacing the content keeps the mode
    let (fh, _) = f.fs.open(a.ino, libc::O_WRONLY | libc::O_TRUNC).unwrap();
    f.fs.write(fh, 0, b"replaced").unwrap();
    f.fs.flush(fh).unwrap();
    f.fs.release(fh);
    assert_eq!(f.r.content("/d/old.txt").unwrap(), b"replaced");
    assert_eq!(f.r.mode("/d/old.txt"), Some(0o600));
    let same_owner = SetAttr {
        uid: Some(0),
        gid: Some(0),
        ..SetAttr::default()
    };
    assert!(f.fs.setattr(a.ino, &same_owner).is_ok());
    let other = SetAttr {
        uid: Some(1234),
        ..SetAttr::default()
    };
    assert_eq!(f.fs.setattr(a.ino, &other).err(), Some(Errno(libc::EPERM)));
    // a new file gets its mode after the upload
    let (attr, fh) = f.fs.create(d(&f), "script", 0o755, libc::O_WRONLY).unwrap();
    assert_eq!(attr.perm, 0o755);
    f.fs.flush(fh).unwrap();
    assert_eq!(f.r.mode("/d/script"), Some(0o755));
}

#[test]
fn mkdir_rmdir_unlink() {
    let f = setup();
    let a = f.fs.mkdir(ROOT, "new", 0o755).unwrap();
    assert_eq!(a.kind, EntryKind::Dir);
    assert_eq!(
        f.fs.mkdir(ROOT, "new", 0o755).err(),
        Some(Errno(libc::EEXIST))
    );
    let lists = f.r.lists.load(Ordering::SeqCst);
    assert_eq!(f.fs.lookup(a.ino, "x").err(), Some(Errno(libc::ENOENT)));
    assert_eq!(
        f.r.lists.load(Ordering::SeqCst),
        lists,
        "a new directory is known empty"
    );
    assert_eq!(f.fs.rmdir(ROOT, "d").err(), Some(Errno(libc::ENOTEMPTY)));
    f.fs.unlink(d(&f), "old.txt").unwrap();
    assert!(f.r.content("/d/old.txt").is_none());
    assert_eq!(
        f.fs.lookup(d(&f), "old.txt").err(),
        Some(Errno(libc::ENOENT))
    );
    f.fs.rmdir(ROOT, "d").unwrap();
    assert_eq!(f.fs.lookup(ROOT, "d").err(), Some(Errno(libc::ENOENT)));
    assert_eq!(f.fs.unlink(ROOT, "new").err(), Some(Errno(libc::EISDIR)));
}

#[test]
fn rename_files_and_directories() {
    let f = setup();
    f.r.add_file("/other", b"other");
    let dir = d(&f);
    let old = f.fs.lookup(dir, "old.txt").unwrap();
    // over an existing file
    f.fs.rename(dir, "old.txt", ROOT, "other", RenameMode::Replace)
        .unwrap();
    assert_eq!(f.r.content("/other").unwrap(), b"0123456789");
    assert_eq!(f.fs.lookup(ROOT, "other").unwrap().ino, old.ino);
    // noreplace
    f.r.add_file("/d/x", b"x");
    f.fs.lookup(dir, "x").unwrap_err(); // cached listing predates it
    f.fs.rename(ROOT, "other", dir, "y", RenameMode::Replace)
        .unwrap();
    // a directory with its children
    let sub = f.fs.mkdir(dir, "sub", 0o755).unwrap();
    let (_, fh) =
        f.fs.create(sub.ino, "inner", 0o644, libc::O_WRONLY)
            .unwrap();
    f.fs.write(fh, 0, b"inner").unwrap();
    f.fs.flush(fh).unwrap();
    f.fs.release(fh);
    let inner = f.fs.lookup(sub.ino, "inner").unwrap();
    f.fs.rename(ROOT, "d", ROOT, "moved", RenameMode::Replace)
        .unwrap();
    assert_eq!(f.r.content("/moved/sub/inner").unwrap(), b"inner");
    assert_eq!(f.fs.path_of(inner.ino).unwrap(), "/moved/sub/inner");
    let (fh, _) = f.fs.open(inner.ino, libc::O_RDONLY).unwrap();
    assert_eq!(&*f.fs.read(fh, 0, 10).unwrap(), b"inner");
    let moved = f.fs.lookup(ROOT, "moved").unwrap();
    f.fs.mkdir(ROOT, "target", 0o755).unwrap();
    assert_eq!(
        f.fs.rename(ROOT, "moved", ROOT, "target", RenameMode::NoReplace)
            .err(),
        Some(Errno(libc::EEXIST))
    );
    f.fs.rename(ROOT, "moved", ROOT, "target", RenameMode::Replace)
        .unwrap();
    assert_eq!(f.fs.lookup(ROOT, "target").unwrap().ino, moved.ino);
    assert_eq!(
        f.fs.rename(ROOT, "target", moved.ino, "inside", RenameMode::Replace)
            .err(),
        Some(Errno(libc::EINVAL))
    );
}

#[test]
fn renaming_an_unsaved_file_saves_it_first() {
    let f = setup();
    let (_, fh) = f.fs.create(d(&f), "tmp123", 0o644, libc::O_WRONLY).unwrap();
    f.fs.write(fh, 0, b"payload").unwrap();
    f.fs.rename(d(&f), "tmp123", d(&f), "final", RenameMode::Replace)
        .unwrap();
    assert_eq!(f.r.content("/d/final").unwrap(), b"payload");
    assert!(f.r.content("/d/tmp123").is_none());
}

#[test]
fn unsaved_files_show_in_listings() {
    let f = setup();
    let (_, fh) =
        f.fs.create(d(&f), "pending", 0o644, libc::O_WRONLY)
            .unwrap();
    f.fs.write(fh, 0, b"abc").unwrap();
    let dh = f.fs.opendir(d(&f)).unwrap();
    let mut seen = Vec::new();
    f.fs.readdir(dh, 0, true, |item, _| {
        seen.push((item.name.clone(), item.attr.as_ref().map(|a| a.size)));
        true
    })
    .unwrap();
    assert!(seen.contains(&("pending".to_string(), Some(3))), "{seen:?}");
}

#[test]
fn unlinking_an_open_unsaved_file_never_uploads_it() {
    let f = setup();
    let (_, fh) = f.fs.create(d(&f), "gone", 0o644, libc::O_WRONLY).unwrap();
    f.fs.write(fh, 0, b"abc").unwrap();
    f.fs.unlink(d(&f), "gone").unwrap();
    f.fs.flush(fh).unwrap();
    f.fs.release(fh);
    assert!(f.r.content("/d/gone").is_none());
    assert_eq!(
        f.r.stores.load(Ordering::SeqCst),
        1,
        "only the abandoned stream"
    );
    no_temp_files(&f.r);
}

#[test]
fn names_that_could_inject_commands_are_refused() {
    let f = setup();
    assert_eq!(
        f.fs.create(ROOT, "a\r\nDELE x", 0o644, libc::O_WRONLY)
            .err(),
        Some(Errno(libc::EINVAL))
    );
    assert_eq!(
        f.fs.mkdir(ROOT, "a\nb", 0o755).err(),
        Some(Errno(libc::EINVAL))
    );
    assert_eq!(
        f.fs.rename(ROOT, "d", ROOT, "x\ry", RenameMode::Replace)
            .err(),
        Some(Errno(libc::EINVAL))
    );
}

#[test]
fn temporary_upload_names_never_show() {
    let f = setup();
    f.r.add_file(&format!("/d/{TEMP_PREFIX}1-1"), b"half");
    let dh = f.fs.opendir(d(&f)).unwrap();
    let mut names = Vec::new();
    f.fs.readdir(dh, 0, false, |i, _| {
        names.push(i.name.clone());
        true
    })
    .unwrap();
    assert_eq!(names, [".", "..", "old.txt"]);
    let _ = SystemTime::now();
}

#[test]
fn a_private_new_file_is_restricted_before_its_content_lands() {
    let f = setup();
    let (_, fh) = f.fs.create(d(&f), "secret", 0o600, libc::O_WRONLY).unwrap();
    f.fs.write(fh, 0, b"password").unwrap();
    f.fs.flush(fh).unwrap();
    assert_eq!(f.r.content("/d/secret").unwrap(), b"password");
    assert_eq!(f.r.mode("/d/secret"), Some(0o600));
    f.fs.release(fh);
    let a = f.fs.lookup(d(&f), "secret").unwrap();
    assert_eq!(a.perm, 0o600, "the mount shows the mode the server has");
}

#[test]
fn a_same_size_rewrite_in_the_same_second_reads_back_new_content() {
    let f = setup();
    let a = f.fs.lookup(d(&f), "old.txt").unwrap();
    let (r, _) = f.fs.open(a.ino, libc::O_RDONLY).unwrap();
    assert_eq!(&*f.fs.read(r, 0, 100).unwrap(), b"0123456789");
    f.fs.release(r);
    let (w, _) = f.fs.open(a.ino, libc::O_WRONLY | libc::O_TRUNC).unwrap();
    f.fs.write(w, 0, b"abcdefghij").unwrap();
    f.fs.flush(w).unwrap();
    f.fs.release(w);
    let (r, keep) = f.fs.open(a.ino, libc::O_RDONLY).unwrap();
    assert!(!keep, "the page cache holds the old content");
    assert_eq!(&*f.fs.read(r, 0, 100).unwrap(), b"abcdefghij");
}

#[test]
fn o_trunc_shows_a_new_mtime_at_once() {
    let f = setup();
    let a = f.fs.lookup(d(&f), "old.txt").unwrap();
    let old = UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    let set = SetAttr {
        mtime: Some(old),
        ..SetAttr::default()
    };
    f.fs.setattr(a.ino, &set).unwrap();
    let (w, _) = f.fs.open(a.ino, libc::O_WRONLY | libc::O_TRUNC).unwrap();
    assert!(f.fs.getattr(a.ino).unwrap().mtime > old);
    f.fs.flush(w).unwrap();
    f.fs.release(w);
    assert!(f.fs.getattr(a.ino).unwrap().mtime > old);
}

#[test]
fn unsaved_data_is_kept_on_disk_when_ftpfs_gives_up() {
    let f = setup();
    f.r.disk_full.store(true, Ordering::SeqCst);
    let (_, fh) =
        f.fs.create(d(&f), "report.txt", 0o644, libc::O_WRONLY)
            .unwrap();
    f.fs.write(fh, 0, b"precious").unwrap();
    assert_eq!(f.fs.flush(fh), Err(Errno(libc::ENOSPC)));
    f.fs.release(fh);
    f.fs.wait_for_uploads();
    let kept: Vec<_> = std::fs::read_dir(f._spool.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.to_string_lossy().contains("unsaved-") && p.to_string_lossy().ends_with("report.txt")
        })
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(std::fs::read(&kept[0]).unwrap(), b"precious");
}
