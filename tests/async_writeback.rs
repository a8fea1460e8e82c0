//! `-o writeback=async` on real mounts: close() returns once the data is in
//! the journal, uploads follow in the background, and nothing is lost when
//! the daemon is killed, the server goes away for a while, the server refuses
//! an upload, or someone else changes a file while ours is pending.
//! `ftpfs sync` and `ftpfs status` are checked along the way.

#[macro_use]
mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::thread;
use std::time::{Duration, Instant};

use support::{
    diag, files_equal, force_unmount, ftpfs_bin, gen_bytes, wait_timeout, wait_until, write_file,
    FtpServer, Mount,
};
use tempfile::TempDir;

on_both_servers!(
    kill_9_after_cp_loses_nothing,
    server_down_for_30_s_loses_nothing,
    a_file_changed_on_the_server_while_pending_keeps_both,
);

/// Mount options for async mode with the journal in `cache`, plus `extra`.
fn async_opts(cache: &Path, extra: &[&str]) -> Vec<String> {
    let mut opts = vec![
        "writeback=async".to_string(),
        format!("cache_dir={}", cache.display()),
    ];
    opts.extend(extra.iter().map(|s| s.to_string()));
    opts
}

fn mount_async(s: &FtpServer, cache: &Path, extra: &[&str]) -> Mount {
    let opts = async_opts(cache, extra);
    let refs: Vec<&str> = opts.iter().map(String::as_str).collect();
    Mount::new(s, &refs)
}

/// Runs `ftpfs sync DIR` (at most `limit` s): (success, stdout + stderr).
fn sync(dir: &Path, limit: u64) -> (bool, String) {
    let out: Output = Command::new(ftpfs_bin())
        .arg("sync")
        .arg(dir)
        .arg("--timeout")
        .arg(limit.to_string())
        .output()
        .expect("run ftpfs sync");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Entries the journals under `cache` hold.
fn journal_entries(cache: &Path) -> usize {
    let Ok(rd) = fs::read_dir(cache) else {
        return 0;
    };
    rd.flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("journal-"))
        .flat_map(|j| fs::read_dir(j.path()).into_iter().flatten().flatten())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".entry"))
        .count()
}

/// A local tree of `n` small files in 3 directories: their relative paths.
fn small_tree(root: &Path, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let rel = format!("d{}/f{i:03}.bin", i % 3);
            write_file(root.join(&rel), 1000 + (i * 131) % 7000, i as u64);
            rel
        })
        .collect()
}

/// `cp -r src/. dst`: panics unless it succeeds; returns how long it took.
fn cp_r(src: &Path, dst: &Path) -> Duration {
    let t0 = Instant::now();
    let out = Command::new("cp")
        .arg("-r")
        .arg(format!("{}/.", src.display()))
        .arg(dst)
        .output()
        .expect("run cp");
    assert!(
        out.status.success(),
        "cp -r failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    t0.elapsed()
}

/// Every file of `files` under `local` is on the server under `remote_dir`, byte for byte.
fn all_on_server(s: &FtpServer, local: &Path, remote_dir: &str, files: &[String]) -> Vec<String> {
    files
        .iter()
        .filter(|rel| {
            let theirs = s.path(&format!("{remote_dir}/{rel}"));
            !theirs.exists() || !files_equal(local.join(rel), &theirs)
        })
        .cloned()
        .collect()
}

/// Kills ftpfs with SIGKILL right after `cp -r src/. mnt/site` returned,
/// checks that the journal kept uploads, and remounts with the same cache_dir.
fn kill_after_cp(
    s: &mut FtpServer,
    cache: &Path,
    src: &Path,
    extra: &[&str],
    prepare: impl FnOnce(&mut FtpServer),
) {
    let mut m = mount_async(s, cache, extra);
    fs::create_dir(m.path("site")).expect("mkdir");
    for d in ["d0", "d1", "d2"] {
        fs::create_dir(m.path(&format!("site/{d}"))).expect("mkdir");
        fs::read_dir(m.path(&format!("site/{d}")))
            .expect("list")
            .count();
    }
    prepare(s);
    let took = cp_r(src, &m.path("site"));
    assert!(m.signal("KILL"), "could not kill ftpfs");
    let _ = m.wait_exit(Duration::from_secs(10));
    let pending = journal_entries(cache);
    eprintln!("cp -r returned after {took:?}; {pending} files were still in the journal");
    assert!(
        pending > 0,
        "everything was uploaded already: nothing tested"
    );
    force_unmount(&m.dir);
}

/// Mounts again with the journal in `cache` and waits with `ftpfs sync`: every
/// file of `files` must be on the server, and the journal empty.
fn resume_and_check(s: &FtpServer, cache: &Path, src: &Path, files: &[String]) {
    let m = mount_async(s, cache, &[]);
    let t0 = Instant::now();
    let (ok, out) = sync(&m.dir, 120);
    eprintln!("the next mount uploaded them in {:?}", t0.elapsed());
    assert!(ok, "ftpfs sync failed: {out}\n{}", diag(&m, s));
    let missing = all_on_server(s, src, "site", files);
    assert!(
        missing.is_empty(),
        "not on the server: {missing:?}\n{}",
        diag(&m, s)
    );
    assert_eq!(journal_entries(cache), 0);
}

/// The server is down while `cp -r` of 300 files runs (listings come from the
/// cache), so every upload is pending when ftpfs is killed.
fn kill_9_after_cp_loses_nothing(mut s: FtpServer) {
    let cache = TempDir::new().expect("temp dir");
    let src = TempDir::new().expect("temp dir");
    let files = small_tree(src.path(), 300);
    kill_after_cp(
        &mut s,
        cache.path(),
        src.path(),
        &["cache_timeout=300"],
        |s| s.stop(),
    );
    s.start_again().unwrap_or_else(|e| panic!("{e}"));
    resume_and_check(&s, cache.path(), src.path(), &files);
}

/// Uploads are running (the server paces data at 20 kB/s) when ftpfs is
/// killed: none may leave part of a file under its name, and all resume.
#[test]
fn kill_9_in_the_middle_of_uploads_loses_nothing() {
    let mut s = FtpServer::pyftpdlib();
    let cache = TempDir::new().expect("temp dir");
    let src = TempDir::new().expect("temp dir");
    let files = small_tree(src.path(), 300);
    kill_after_cp(&mut s, cache.path(), src.path(), &[], |s| {
        s.stop();
        s.start_again_with_args(&["--throttle", "20000"])
            .unwrap_or_else(|e| panic!("{e}"));
    });
    s.stop();
    s.start_again().unwrap_or_else(|e| panic!("{e}"));
    resume_and_check(&s, cache.path(), src.path(), &files);
}

fn server_down_for_30_s_loses_nothing(mut s: FtpServer) {
    let cache = TempDir::new().expect("temp dir");
    let src = TempDir::new().expect("temp dir");
    let files = small_tree(src.path(), 30);
    // Listings stay fresh while the server is away, so that cp can create.
    let m = mount_async(&s, cache.path(), &["cache_timeout=300"]);
    fs::create_dir(m.path("site")).expect("mkdir site");
    for d in ["d0", "d1", "d2"] {
        fs::create_dir(m.path(&format!("site/{d}"))).expect("mkdir");
        fs::read_dir(m.path(&format!("site/{d}")))
            .expect("list")
            .count();
    }
    let down = Instant::now();
    s.stop();
    let took = cp_r(src.path(), &m.path("site"));
    eprintln!("cp -r with the server down returned after {took:?}");
    let (_, status, _) = m.status();
    assert!(
        status.contains("waiting to retry") || status.contains("queued for upload"),
        "status shows no waiting upload:\n{status}"
    );
    assert_eq!(journal_entries(cache.path()), files.len(), "{status}");
    // Reads in the mount see the pending content at once.
    assert!(files_equal(
        src.path().join(&files[0]),
        m.path(&format!("site/{}", files[0]))
    ));
    thread::sleep(Duration::from_secs(30).saturating_sub(down.elapsed()));
    s.start_again().unwrap_or_else(|e| panic!("{e}"));
    let t0 = Instant::now();
    let (ok, out) = sync(&m.dir, 120);
    eprintln!("after the server came back, sync took {:?}", t0.elapsed());
    assert!(ok, "ftpfs sync failed: {out}\n{}", diag(&m, &s));
    let missing = all_on_server(&s, src.path(), "site", &files);
    assert!(
        missing.is_empty(),
        "not on the server: {missing:?}\n{}",
        diag(&m, &s)
    );
    assert_eq!(journal_entries(cache.path()), 0);
}

fn a_file_changed_on_the_server_while_pending_keeps_both(mut s: FtpServer) {
    s.create_file("page.html", b"version 1\n");
    let cache = TempDir::new().expect("temp dir");
    let m = mount_async(&s, cache.path(), &["cache_timeout=300"]);
    assert_eq!(fs::read(m.path("page.html")).expect("read"), b"version 1\n");
    s.stop();
    fs::write(m.path("page.html"), b"ours\n").expect("write through the mount");
    // Someone else uploads a new version while ours waits.
    thread::sleep(Duration::from_millis(1100));
    fs::write(s.path("page.html"), b"theirs, longer\n").expect("write on the server");
    s.fix_ownership();
    s.start_again().unwrap_or_else(|e| panic!("{e}"));
    let (ok, out) = sync(&m.dir, 120);
    assert!(ok, "ftpfs sync failed: {out}\n{}", diag(&m, &s));
    assert!(
        out.contains("conflict"),
        "sync does not mention the conflict: {out}"
    );
    assert_eq!(
        fs::read(s.path("page.html")).expect("read"),
        b"theirs, longer\n"
    );
    let conflicts: Vec<PathBuf> = fs::read_dir(s.path(""))
        .expect("list root")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().contains("page.conflict-"))
        .collect();
    assert_eq!(conflicts.len(), 1, "{conflicts:?}\n{}", diag(&m, &s));
    assert_eq!(fs::read(&conflicts[0]).expect("read"), b"ours\n");
    let (_, status, _) = m.status();
    assert!(status.contains("conflict   /page.html"), "{status}");
    // The mount shows both, the server's under the name.
    assert!(wait_until(Duration::from_secs(10), || {
        fs::read(m.path("page.html")).is_ok_and(|d| d == b"theirs, longer\n")
    }));
}

#[test]
fn a_refused_upload_is_reported_by_sync_and_fsync_and_kept() {
    let s = FtpServer::pyftpdlib_with_args(&["--max-upload", "100000"]);
    let cache = TempDir::new().expect("temp dir");
    let m = mount_async(&s, cache.path(), &[]);
    let big = gen_bytes(200_000, 7);
    // close() succeeds: the data is safe in the journal.
    fs::write(m.path("big.bin"), &big).expect("write big.bin");
    fs::write(m.path("small.txt"), b"fits\n").expect("write small.txt");
    let (ok, out) = sync(&m.dir, 120);
    assert!(
        !ok,
        "ftpfs sync succeeded although the server refused big.bin"
    );
    assert!(
        out.contains("/big.bin") && out.contains("552"),
        "sync does not name the file and the reply: {out}"
    );
    assert_eq!(fs::read(s.path("small.txt")).expect("small.txt"), b"fits\n");
    let (_, status, _) = m.status();
    assert!(status.contains("1 failed"), "{status}");
    assert!(
        status.contains("/big.bin") && status.contains("kept in the journal"),
        "{status}"
    );
    assert_eq!(journal_entries(cache.path()), 1);
    // fsync tries again and reports the refusal.
    let f = fs::OpenOptions::new()
        .append(true)
        .open(m.path("big.bin"))
        .expect("open big.bin");
    let err = f
        .sync_all()
        .expect_err("fsync succeeded although the server refuses");
    assert!(
        matches!(err.raw_os_error(), Some(libc::EDQUOT) | Some(libc::ENOSPC)),
        "fsync: {err}"
    );
    drop(f);
    // The data stays readable in the mount and kept in the journal.
    assert_eq!(fs::read(m.path("big.bin")).expect("read back"), big);
    assert_eq!(journal_entries(cache.path()), 1);
    assert!(!s.path("big.bin").exists() || fs::read(s.path("big.bin")).unwrap_or_default() != big);
}

#[test]
fn close_mode_is_the_default_and_async_close_does_not_wait() {
    let s = FtpServer::pyftpdlib_with_args(&["--throttle", "50000"]);
    let cache = TempDir::new().expect("temp dir");
    let data = gen_bytes(100_000, 3);
    let m = Mount::new(&s, &[]);
    let t0 = Instant::now();
    fs::write(m.path("close.bin"), &data).expect("write");
    let close_mode = t0.elapsed();
    assert!(files_equal(m.path("close.bin"), s.path("close.bin")));
    drop(m);
    let m = mount_async(&s, cache.path(), &[]);
    let t0 = Instant::now();
    fs::write(m.path("async.bin"), &data).expect("write");
    let async_mode = t0.elapsed();
    eprintln!("100 kB at 50 kB/s: close mode {close_mode:?}, async {async_mode:?}");
    assert!(
        !s.path("async.bin").exists()
            || fs::metadata(s.path("async.bin"))
                .map(|m| m.len())
                .unwrap_or(0)
                < data.len() as u64,
        "async close waited for the whole upload"
    );
    let (ok, out) = sync(&m.dir, 60);
    assert!(ok, "{out}");
    assert!(files_equal(m.path("async.bin"), s.path("async.bin")));
    let mut child = Command::new(ftpfs_bin())
        .arg("sync")
        .arg(&m.dir)
        .spawn()
        .expect("sync");
    assert!(wait_timeout(&mut child, Duration::from_secs(10)).is_some_and(|st| st.success()));
}
