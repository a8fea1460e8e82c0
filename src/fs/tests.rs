//! Filesystem logic against the in-memory Remote: no FUSE, no FTP.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::memory::MemoryRemote;
use super::*;

fn setup() -> (Arc<MemoryRemote>, FtpFs) {
    let r = Arc::new(MemoryRemote::new());
    r.add_dir("/d");
    r.add_file("/d/a.txt", b"hello");
    r.add_file("/with space", b"x");
    r.add_link("/d/l", "a.txt");
    let fs = FtpFs::new(Arc::clone(&r) as Arc<dyn Remote>, FsConfig::default());
    (r, fs)
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

#[test]
fn one_listing_answers_every_lookup_in_a_directory() {
    let (r, fs) = setup();
    for i in 0..1000 {
        r.add_file(&format!("/d/f{i}"), b"1");
    }
    let d = fs.lookup(ROOT, "d").unwrap();
    let before = r.lists.load(Ordering::SeqCst);
    for i in 0..1000 {
        let a = fs.lookup(d.ino, &format!("f{i}")).unwrap();
        assert_eq!(fs.getattr(a.ino).unwrap().size, 1);
    }
    assert_eq!(r.lists.load(Ordering::SeqCst) - before, 1);
    // a missing name in a fresh listing costs nothing either
    assert_eq!(fs.lookup(d.ino, "nope"), Err(Errno(libc::ENOENT)));
    assert_eq!(r.lists.load(Ordering::SeqCst) - before, 1);
}

#[test]
fn attributes_come_from_the_listing() {
    let (_, fs) = setup();
    let d = fs.lookup(ROOT, "d").unwrap();
    assert_eq!(d.kind, EntryKind::Dir);
    assert_eq!(d.perm, 0o755);
    let a = fs.lookup(d.ino, "a.txt").unwrap();
    assert_eq!((a.kind, a.size, a.perm), (EntryKind::File, 5, 0o640));
    let root = fs.getattr(ROOT).unwrap();
    assert_eq!(root.kind, EntryKind::Dir);
}

#[test]
fn umask_and_read_only_shape_the_modes() {
    let r = Arc::new(MemoryRemote::new());
    r.add_file("/f", b"1");
    let cfg = FsConfig {
        umask: 0o027,
        read_only: true,
        uid: 42,
        ..FsConfig::default()
    };
    let fs = FtpFs::new(r as Arc<dyn Remote>, cfg);
    let a = fs.lookup(ROOT, "f").unwrap();
    assert_eq!(a.perm, 0o440);
    assert_eq!(a.uid, 42);
}

#[test]
fn names_that_could_inject_commands_are_refused() {
    let (_, fs) = setup();
    assert_eq!(fs.lookup(ROOT, "a\r\nDELE x"), Err(Errno(libc::EINVAL)));
    assert_eq!(
        fs.lookup(ROOT, &"n".repeat(300)),
        Err(Errno(libc::ENAMETOOLONG))
    );
}

#[test]
fn readdir_lists_everything_with_stable_offsets() {
    let (_, fs) = setup();
    let fh = fs.opendir(ROOT).unwrap();
    let mut names = Vec::new();
    fs.readdir(fh, 0, false, |item, _| {
        names.push(item.name.clone());
        names.len() < 2 // a "full buffer" after two
    })
    .unwrap();
    assert_eq!(names, [".", ".."]);
    fs.readdir(fh, 2, false, |item, _| {
        names.push(item.name.clone());
        true
    })
    .unwrap();
    assert_eq!(names, [".", "..", "d", "with space"]);
    fs.releasedir(fh);
    assert_eq!(
        fs.readdir(fh, 0, false, |_, _| true),
        Err(Errno(libc::EBADF))
    );
}

#[test]
fn readdirplus_counts_lookups_only_for_delivered_entries() {
    let (_, fs) = setup();
    let d = fs.lookup(ROOT, "d").unwrap();
    let fh = fs.opendir(d.ino).unwrap();
    let mut delivered = Vec::new();
    fs.readdir(fh, 0, true, |item, _| {
        if item.name == "l" {
            return false; // buffer full: not delivered
        }
        delivered.push(item.ino);
        true
    })
    .unwrap();
    let a = fs.lookup(d.ino, "a.txt").unwrap();
    assert!(delivered.contains(&a.ino));
    // two lookups on a.txt (readdirplus + lookup): forgetting both frees it
    fs.forget(a.ino, 2);
    assert!(!lock(&fs.inodes).exists(a.ino));
}

#[test]
fn readlink_gives_the_target() {
    let (_, fs) = setup();
    let d = fs.lookup(ROOT, "d").unwrap();
    let l = fs.lookup(d.ino, "l").unwrap();
    assert_eq!(l.kind, EntryKind::Symlink);
    assert_eq!(l.size, 5);
    assert_eq!(fs.readlink(l.ino).unwrap(), "a.txt");
    let a = fs.lookup(d.ino, "a.txt").unwrap();
    assert_eq!(fs.readlink(a.ino), Err(Errno(libc::EINVAL)));
}

#[test]
fn sequential_reads_share_one_download() {
    let (r, fs) = setup();
    let data = pattern(3 * 1024 * 1024 + 17);
    r.add_file("/big", &data);
    let a = fs.lookup(ROOT, "big").unwrap();
    let (fh, _) = fs.open(a.ino, libc::O_RDONLY).unwrap();
    let mut got = Vec::new();
    let mut off = 0;
    loop {
        let chunk = fs.read(fh, off, 128 * 1024).unwrap();
        if chunk.is_empty() {
            break;
        }
        off += chunk.len() as u64;
        got.extend_from_slice(&chunk);
    }
    assert_eq!(got, data);
    assert_eq!(r.opens.load(Ordering::SeqCst), 1);
    fs.release(fh);
}

#[test]
fn random_reads_match_and_rereads_come_from_the_block_cache() {
    let (r, _) = setup();
    let cfg = FsConfig {
        block_cache: 64 << 20,
        ..FsConfig::default()
    };
    let fs = FtpFs::new(Arc::clone(&r) as Arc<dyn Remote>, cfg);
    let data = pattern(40 * 1024 * 1024);
    r.add_file("/big", &data);
    let a = fs.lookup(ROOT, "big").unwrap();
    let (fh, _) = fs.open(a.ino, libc::O_RDONLY).unwrap();
    let mut seed = 12345u64;
    let mut offsets = Vec::new();
    for _ in 0..200 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let off = seed % data.len() as u64;
        let got = fs.read(fh, off, 4096).unwrap();
        let end = (off as usize + 4096).min(data.len());
        assert_eq!(&*got, &data[off as usize..end], "offset {off}");
        offsets.push(off);
    }
    let opens = r.opens.load(Ordering::SeqCst);
    assert!(opens > 1, "seeks restart the download");
    for off in offsets.iter().take(20) {
        let got = fs.read(fh, *off, 4096).unwrap();
        let end = (*off as usize + 4096).min(data.len());
        assert_eq!(&*got, &data[*off as usize..end]);
    }
    assert_eq!(
        r.opens.load(Ordering::SeqCst),
        opens,
        "re-reads hit the cache"
    );
}

#[test]
fn reads_past_the_end_are_empty() {
    let (_, fs) = setup();
    let d = fs.lookup(ROOT, "d").unwrap();
    let a = fs.lookup(d.ino, "a.txt").unwrap();
    let (fh, _) = fs.open(a.ino, libc::O_RDONLY).unwrap();
    assert_eq!(&*fs.read(fh, 3, 100).unwrap(), b"lo");
    assert!(fs.read(fh, 5, 100).unwrap().is_empty());
    assert!(fs.read(fh, 500, 100).unwrap().is_empty());
}

#[test]
fn keep_cache_only_while_the_file_is_unchanged() {
    let (r, fs) = setup();
    let cfg_ttl0 = FsConfig {
        cache_timeout: Duration::ZERO,
        ..FsConfig::default()
    };
    let fs0 = FtpFs::new(Arc::clone(&r) as Arc<dyn Remote>, cfg_ttl0);
    drop(fs);
    let a = fs0.lookup(ROOT, "with space").unwrap();
    let (_, keep1) = fs0.open(a.ino, libc::O_RDONLY).unwrap();
    let (_, keep2) = fs0.open(a.ino, libc::O_RDONLY).unwrap();
    assert!(!keep1 && keep2);
    r.add_file("/with space", b"changed!");
    let (_, keep3) = fs0.open(a.ino, libc::O_RDONLY).unwrap();
    assert!(!keep3, "a new size drops the page cache");
}

#[test]
fn remote_changes_show_after_the_ttl() {
    let r = Arc::new(MemoryRemote::new());
    let cfg = FsConfig {
        cache_timeout: Duration::from_millis(50),
        ..FsConfig::default()
    };
    let fs = FtpFs::new(Arc::clone(&r) as Arc<dyn Remote>, cfg);
    assert!(fs.lookup(ROOT, "new").is_err());
    r.add_file("/new", b"1");
    assert!(
        fs.lookup(ROOT, "new").is_err(),
        "negative entry while fresh"
    );
    std::thread::sleep(Duration::from_millis(60));
    assert!(fs.lookup(ROOT, "new").is_ok());
    r.remove("/new");
    std::thread::sleep(Duration::from_millis(60));
    assert!(fs.lookup(ROOT, "new").is_err());
}

#[test]
fn opening_directories_and_missing_files_fails_cleanly() {
    let (_, fs) = setup();
    let d = fs.lookup(ROOT, "d").unwrap();
    assert_eq!(
        fs.open(d.ino, libc::O_RDONLY).err(),
        Some(Errno(libc::EISDIR))
    );
    let a = fs.lookup(d.ino, "a.txt").unwrap();
    assert_eq!(fs.opendir(a.ino).err(), Some(Errno(libc::ENOTDIR)));
    assert_eq!(fs.getattr(9999).err(), Some(Errno(libc::ENOENT)));
    assert_eq!(fs.read(777, 0, 1).err(), Some(Errno(libc::EBADF)));
}

#[test]
fn a_download_that_breaks_is_resumed_at_the_exact_offset() {
    let (r, fs) = setup();
    let data = pattern(3 * 1024 * 1024 + 5);
    r.add_file("/big", &data);
    *r.break_next_read_after.lock().unwrap() = Some(1_234_567);
    let a = fs.lookup(ROOT, "big").unwrap();
    let (fh, _) = fs.open(a.ino, libc::O_RDONLY).unwrap();
    let mut got = Vec::new();
    loop {
        let chunk = fs.read(fh, got.len() as u64, 1 << 20).unwrap();
        if chunk.is_empty() {
            break;
        }
        got.extend_from_slice(&chunk);
    }
    assert!(got == data, "bytes differ after the resume");
    assert_eq!(r.opens.load(Ordering::SeqCst), 2, "one resume");
}

#[test]
fn a_walk_through_small_files_prefetches_the_next_ones() {
    let (r, fs) = setup();
    r.add_dir("/many");
    for i in 0..20 {
        r.add_file(&format!("/many/f{i:02}"), format!("content {i}").as_bytes());
    }
    let dir = fs.lookup(ROOT, "many").unwrap();
    let dh = fs.opendir(dir.ino).unwrap();
    fs.releasedir(dh);
    let read_all = |i: usize| {
        let a = fs.lookup(dir.ino, &format!("f{i:02}")).unwrap();
        let (fh, _) = fs.open(a.ino, libc::O_RDONLY).unwrap();
        let got = fs.read(fh, 0, 4096).unwrap().to_vec();
        fs.release(fh);
        assert_eq!(got, format!("content {i}").as_bytes());
    };
    let settle = || {
        for _ in 0..500 {
            if fs.prefetch.idle() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("prefetch never finished");
    };
    read_all(0);
    read_all(1);
    settle();
    read_all(2);
    read_all(3);
    for i in 4..20 {
        read_all(i);
        // a real server takes a while per file: the prefetch stays ahead
        settle();
    }
    assert_eq!(r.opens.load(Ordering::SeqCst), 20, "each file fetched once");
    let block_hits = fs.cache_stats().block_hits;
    assert!(
        block_hits >= 15,
        "only {block_hits} files came from the prefetch"
    );
}

#[test]
fn opening_a_directory_prefetches_its_subdirectories_once() {
    let r = Arc::new(MemoryRemote::new());
    for d in 0..10 {
        r.add_dir(&format!("/d{d}"));
        r.add_file(&format!("/d{d}/f"), b"x");
    }
    r.add_file("/plain", b"x");
    let fs = FtpFs::new_shared(Arc::clone(&r) as Arc<dyn Remote>, FsConfig::default());
    let fh = fs.opendir(ROOT).unwrap();
    fs.releasedir(fh);
    // The root, then each of the ten directories in the background.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while r.lists.load(Ordering::SeqCst) < 11 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(r.lists.load(Ordering::SeqCst), 11);
    // The walk then finds every one cached.
    for d in 0..10 {
        let a = fs.lookup(ROOT, &format!("d{d}")).unwrap();
        let fh = fs.opendir(a.ino).unwrap();
        fs.releasedir(fh);
    }
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(r.lists.load(Ordering::SeqCst), 11);
}
