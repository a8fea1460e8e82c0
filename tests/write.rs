//! The write side against real servers, driven by real tools (`cp`, `rsync`,
//! `tar`, `sed`, `vim`, `git`, the shell, coreutils) run on the mount point.
//! Every check of what landed is made on the server's own directory
//! (`server.root`), not through the mount.
//! Every scenario runs on pyftpdlib (MLSD, MFMT) and on vsftpd (LIST only,
//! `MDTM time path`); upload failures need pyftpdlib's `--max-upload`.

#[macro_use]
mod support;

use support::diag;

use std::collections::BTreeSet;
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, UNIX_EPOCH};

use support::{files_equal, gen_bytes, write_file, FtpServer, Mount};
use tempfile::TempDir;

on_both_servers!(
    cp_large_file_in_and_out,
    cp_r_tree,
    cp_a_tree_keeps_content_modes_and_mtimes,
    rsync_twice_then_inplace,
    tar_extract_into_mount,
    sed_in_place,
    vim_edit_with_backup,
    git_clone_commit_fsck,
    shell_appends,
    truncate_bigger_and_smaller,
    touch_sets_exact_mtime,
    chmod_shows_and_lands,
    mv_directory_tree,
    rm_rf_tree,
    overwrite_inside_existing_file,
    exclusive_create_and_creat_rdonly,
    rename_replaces_and_noreplace_refuses,
    rmdir_not_empty_and_mkdir_existing,
    server_changes_show_after_cache_timeout,
    rewrite_same_size_reads_back_new_content,
    touch_directory_mtime,
);

/// Scenarios that need pyftpdlib's `--max-upload` (or `--refuse-stor`).
mod upload_failure {
    #[test]
    fn cp_over_existing_file_fails_and_keeps_old_content() {
        let (s, errno) = super::failing_server();
        super::cp_over_existing_file_fails_and_keeps_old_content(s, errno)
    }
    #[test]
    fn fsync_reports_upload_failure() {
        let (s, errno) = super::failing_server();
        super::fsync_reports_upload_failure(s, errno)
    }
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Prefix of ftpfs's temporary upload names.
const TEMP_PREFIX: &str = ".ftpfs-tmp.";

/// A command run under `timeout`, so that a hung mount fails the test instead
/// of hanging it.
fn tool(program: &str) -> Command {
    let mut c = Command::new("timeout");
    c.args(["-k", "10", "120", program]).stdin(Stdio::null());
    c
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn describe(cmd: &Command, out: &Output) -> String {
    format!(
        "{cmd:?} -> {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `cmd` and panics (with ftpfs's log and the server's commands) unless it succeeds.
fn ok(m: &Mount, s: &FtpServer, cmd: &mut Command) -> Output {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{}\n{}",
        describe(cmd, &out),
        diag(m, s)
    );
    out
}

fn stdout_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every path under `root` (relative), without following symlinks.
fn walk(root: &Path) -> Vec<PathBuf> {
    fn go(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            out.push(p.strip_prefix(root).unwrap().to_path_buf());
            if fs::symlink_metadata(&p).is_ok_and(|md| md.is_dir()) {
                go(root, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    go(root, root, &mut out);
    out.sort();
    out
}

/// Fails if ftpfs left temporary upload files anywhere on the server.
fn assert_no_temp_files(m: &Mount, s: &FtpServer) {
    let left: Vec<PathBuf> = walk(&s.root)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(TEMP_PREFIX))
        })
        .collect();
    assert!(
        left.is_empty(),
        "temporary upload files left on the server: {left:?}\n{}",
        diag(m, s)
    );
}

/// Names in a directory, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn mtime_secs(p: &Path) -> i64 {
    fs::metadata(p)
        .unwrap_or_else(|e| panic!("stat {}: {e}", p.display()))
        .mtime()
}

fn mode_of(p: &Path) -> u32 {
    fs::metadata(p)
        .unwrap_or_else(|e| panic!("stat {}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn set_mtime(p: &Path, secs: u64) {
    let t = UNIX_EPOCH + Duration::from_secs(secs);
    let f = if p.is_dir() {
        File::open(p)
    } else {
        OpenOptions::new().write(true).open(p)
    }
    .unwrap_or_else(|e| panic!("open {}: {e}", p.display()));
    f.set_modified(t)
        .unwrap_or_else(|e| panic!("set mtime of {}: {e}", p.display()));
}

/// A local tree of `n` files in nested directories (sizes from 0 to ~100 KB,
/// modes 0644/0600/0755) plus an empty directory, every mtime in whole seconds
/// (FTP stores no more). Returns the relative paths of the files.
fn make_tree(dir: &Path, n: usize, seed: u64) -> Vec<String> {
    let mut files = Vec::new();
    let mut dirs = BTreeSet::new();
    for i in 0..n {
        let rel = match i % 4 {
            0 => format!("top-{i}.txt"),
            1 => format!("a/f-{i}.dat"),
            2 => format!("a/b/c/deep-{i}.bin"),
            _ => format!("d e/with space-{i}"),
        };
        let size = match i % 5 {
            0 => 0,
            1 => 1,
            2 => 4096,
            3 => 70_000 + i * 13,
            _ => 1000 + i * 37,
        };
        let p = dir.join(&rel);
        write_file(&p, size, seed + i as u64);
        let mode = match i % 3 {
            0 => 0o644,
            1 => 0o600,
            _ => 0o755,
        };
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        set_mtime(&p, 1_600_000_000 + i as u64 * 3_607);
        let mut parent = Path::new(&rel).parent();
        while let Some(d) = parent.filter(|d| !d.as_os_str().is_empty()) {
            dirs.insert(d.to_path_buf());
            parent = d.parent();
        }
        files.push(rel);
    }
    fs::create_dir_all(dir.join("empty-dir")).unwrap();
    dirs.insert(PathBuf::from("empty-dir"));
    // Directories last (deepest first), so that creating files does not touch them again.
    for (k, d) in dirs.iter().rev().enumerate() {
        set_mtime(&dir.join(d), 1_500_000_000 + k as u64 * 86_400);
    }
    files
}

fn diff_r(m: &Mount, s: &FtpServer, a: &Path, b: &Path) {
    ok(m, s, tool("diff").arg("-r").arg(a).arg(b));
}

fn errno_of(r: io::Result<impl Sized>) -> Option<i32> {
    match r {
        Ok(_) => None,
        Err(e) => Some(e.raw_os_error().unwrap_or(-1)),
    }
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

// ---------------------------------------------------------------------------
// Whole-file tools
// ---------------------------------------------------------------------------

fn cp_large_file_in_and_out(s: FtpServer) {
    // Put on the server directly, before the mount lists the root.
    s.create_file("other.bin", &gen_bytes(20 << 20, 43));
    let m = Mount::new(&s, &[]);
    let local = TempDir::new().unwrap();
    let src = local.path().join("big.bin");
    write_file(&src, 20 << 20, 42);

    ok(&m, &s, tool("cp").arg(&src).arg(m.path("big.bin")));
    assert!(
        files_equal(&src, s.path("big.bin")),
        "server copy differs\n{}",
        diag(&m, &s)
    );
    assert_eq!(fs::metadata(m.path("big.bin")).unwrap().len(), 20 << 20);

    let back = local.path().join("back.bin");
    ok(&m, &s, tool("cp").arg(m.path("big.bin")).arg(&back));
    assert!(files_equal(&src, &back), "copy out differs");
    let back2 = local.path().join("back2.bin");
    ok(&m, &s, tool("cp").arg(m.path("other.bin")).arg(&back2));
    assert!(files_equal(s.path("other.bin"), &back2), "copy out differs");
    assert_no_temp_files(&m, &s);
}

fn cp_r_tree(s: FtpServer) {
    let m = Mount::new(&s, &[]);
    let local = TempDir::new().unwrap();
    let src = local.path().join("tree");
    make_tree(&src, 30, 100);

    ok(&m, &s, tool("cp").arg("-r").arg(&src).arg(m.path("tree")));
    diff_r(&m, &s, &src, &s.path("tree"));
    diff_r(&m, &s, &src, &m.path("tree"));
    assert_no_temp_files(&m, &s);
}

/// Collects failed checks, so that one run of a long scenario shows every
/// problem in it; [`Checks::finish`] fails the test if there was any.
struct Checks<'a> {
    m: &'a Mount,
    s: &'a FtpServer,
    failed: Vec<String>,
}

impl<'a> Checks<'a> {
    fn new(m: &'a Mount, s: &'a FtpServer) -> Self {
        Checks {
            m,
            s,
            failed: Vec::new(),
        }
    }

    fn check(&mut self, cond: bool, msg: impl FnOnce() -> String) {
        if !cond {
            self.failed.push(msg());
        }
    }

    /// Runs `cmd`; a failure is recorded and the scenario goes on.
    fn run_ok(&mut self, cmd: &mut Command) -> Output {
        let out = run(cmd);
        self.check(out.status.success(), || describe(cmd, &out));
        out
    }

    fn diff_r(&mut self, a: &Path, b: &Path) {
        self.run_ok(tool("diff").arg("-r").arg(a).arg(b));
    }

    fn finish(self) {
        assert!(
            self.failed.is_empty(),
            "{} check(s) failed:\n\n{}\n\n{}",
            self.failed.len(),
            self.failed.join("\n\n"),
            diag(self.m, self.s)
        );
        assert_no_temp_files(self.m, self.s);
    }
}

fn cp_a_tree_keeps_content_modes_and_mtimes(s: FtpServer) {
    let m = Mount::new(&s, &[]);
    let mut c = Checks::new(&m, &s);
    let local = TempDir::new().unwrap();
    let src = local.path().join("tree");
    let files = make_tree(&src, 24, 200);

    let out = c.run_ok(tool("cp").arg("-a").arg(&src).arg(m.path("tree")));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    c.check(stderr.trim().is_empty(), || {
        format!("cp -a wrote to stderr:\n{stderr}")
    });
    c.diff_r(&src, &s.path("tree"));

    for rel in &files {
        let want = mtime_secs(&src.join(rel));
        let on_server = mtime_secs(&s.path(&format!("tree/{rel}")));
        let seen = mtime_secs(&m.path(&format!("tree/{rel}")));
        c.check(on_server == want && seen == want, || {
            format!("{rel}: mtime want {want}, server {on_server}, mount {seen}")
        });
        let want_mode = mode_of(&src.join(rel));
        let server_mode = mode_of(&s.path(&format!("tree/{rel}")));
        let mount_mode = mode_of(&m.path(&format!("tree/{rel}")));
        c.check(server_mode == want_mode && mount_mode == want_mode, || {
            format!("{rel}: mode want {want_mode:o}, server {server_mode:o}, mount {mount_mode:o}")
        });
    }
    c.finish();
}

fn rsync_twice_then_inplace(s: FtpServer) {
    let m = Mount::new(&s, &[]);
    let mut c = Checks::new(&m, &s);
    let local = TempDir::new().unwrap();
    let src = local.path().join("tree");
    let files = make_tree(&src, 50, 300);
    let src_arg = format!("{}/", src.display());
    let dst_arg = format!("{}/", m.path("dst").display());

    c.run_ok(tool("rsync").args(["-a", &src_arg, &dst_arg]));
    c.diff_r(&src, &s.path("dst"));

    let out = c.run_ok(tool("rsync").args(["-a", "--stats", &src_arg, &dst_arg]));
    let stats = stdout_of(&out);
    c.check(
        stats.contains("Number of regular files transferred: 0"),
        || format!("second rsync transferred files again (mtimes or sizes not kept):\n{stats}"),
    );

    // Change a few bytes in the middle of one file; rsync's delta transfer
    // rewrites only changed blocks in place.
    let rel = files
        .iter()
        .find(|r| fs::metadata(src.join(r)).unwrap().len() > 60_000)
        .unwrap()
        .clone();
    let f = OpenOptions::new().write(true).open(src.join(&rel)).unwrap();
    f.write_all_at(b"CHANGED IN THE MIDDLE", 33_333).unwrap();
    drop(f);
    set_mtime(&src.join(&rel), 1_700_000_000);
    let out = c.run_ok(tool("rsync").args([
        "-a",
        "--inplace",
        "--no-whole-file",
        "--stats",
        &src_arg,
        &dst_arg,
    ]));
    let stats = stdout_of(&out);
    c.check(
        stats.contains("Number of regular files transferred: 1"),
        || format!("rsync --inplace:\n{stats}"),
    );
    c.check(
        files_equal(src.join(&rel), s.path(&format!("dst/{rel}"))),
        || format!("{rel} differs on the server after rsync --inplace"),
    );
    let t = mtime_secs(&s.path(&format!("dst/{rel}")));
    c.check(t == 1_700_000_000, || {
        format!("{rel}: mtime on the server {t} after rsync --inplace, want 1700000000")
    });
    c.diff_r(&src, &s.path("dst"));
    c.finish();
}

fn tar_extract_into_mount(s: FtpServer) {
    let m = Mount::new(&s, &[]);
    let mut c = Checks::new(&m, &s);
    let local = TempDir::new().unwrap();
    let src = local.path().join("tree");
    let files = make_tree(&src, 30, 400);
    let tarball = local.path().join("t.tar");
    ok(
        &m,
        &s,
        tool("tar")
            .arg("cf")
            .arg(&tarball)
            .arg("-C")
            .arg(&src)
            .arg("."),
    );

    fs::create_dir(m.path("x")).unwrap();
    c.run_ok(
        tool("tar")
            .arg("xf")
            .arg(&tarball)
            .arg("-C")
            .arg(m.path("x")),
    );
    c.diff_r(&src, &s.path("x"));
    for rel in &files {
        let (got, want) = (
            mtime_secs(&s.path(&format!("x/{rel}"))),
            mtime_secs(&src.join(rel)),
        );
        c.check(got == want, || {
            format!("tar did not keep the mtime of {rel}: server {got}, want {want}")
        });
    }
    c.finish();
}

fn rewrite_same_size_reads_back_new_content(s: FtpServer) {
    for round in 0..3 {
        s.create_file(&format!("same-size-{round}.txt"), b"version 1\n");
    }
    let m = Mount::new(&s, &[]);
    // A few rounds: each is over in milliseconds, so old and new version
    // share their mtime second (what FTP stores) in nearly every round.
    for round in 0..3 {
        let name = format!("same-size-{round}.txt");
        assert_eq!(fs::read(m.path(&name)).unwrap(), b"version 1\n");
        fs::write(m.path(&name), "version 2\n").unwrap();
        assert_eq!(fs::read(s.path(&name)).unwrap(), b"version 2\n");
        assert_eq!(
            String::from_utf8_lossy(&fs::read(m.path(&name)).unwrap()),
            "version 2\n",
            "round {round}: the mount reads the old content back after a same-size \
             rewrite (the server has the new one)\n{}",
            diag(&m, &s)
        );

        // The same with a file written through the mount from the start.
        let name = format!("mine-{round}.txt");
        fs::write(m.path(&name), "first  \n").unwrap();
        let back = fs::read(m.path(&name))
            .unwrap_or_else(|e| panic!("reading back {name}: {e}\n{}", diag(&m, &s)));
        assert_eq!(back, b"first  \n");
        fs::write(m.path(&name), "second \n").unwrap();
        assert_eq!(fs::read(s.path(&name)).unwrap(), b"second \n");
        assert_eq!(
            String::from_utf8_lossy(&fs::read(m.path(&name)).unwrap()),
            "second \n",
            "round {round}: the mount reads the old content back after a same-size \
             rewrite of its own file\n{}",
            diag(&m, &s)
        );
    }
    assert_no_temp_files(&m, &s);
}

fn touch_directory_mtime(s: FtpServer) {
    s.create_dir("d");
    let m = Mount::new(&s, &[]);
    const WANT: i64 = 1_614_834_367; // 2021-03-04 05:06:07 UTC
    ok(
        &m,
        &s,
        tool("touch")
            .args(["-d", "2021-03-04 05:06:07"])
            .arg(m.path("d"))
            .env("TZ", "UTC"),
    );
    let out = ok(&m, &s, tool("stat").args(["-c", "%Y"]).arg(m.path("d")));
    assert_eq!(stdout_of(&out).trim(), WANT.to_string(), "{}", diag(&m, &s));
}

fn sed_in_place(s: FtpServer) {
    let p = s.create_file("conf/app.conf", b"name = foo\nport = 21\nuser = foo\n");
    fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
    let m = Mount::new(&s, &[]);

    ok(
        &m,
        &s,
        tool("sed")
            .args(["-i", "s/foo/bar/g"])
            .arg(m.path("conf/app.conf")),
    );
    assert_eq!(
        fs::read_to_string(s.path("conf/app.conf")).unwrap(),
        "name = bar\nport = 21\nuser = bar\n",
        "{}",
        diag(&m, &s)
    );
    assert_eq!(
        fs::read_to_string(m.path("conf/app.conf")).unwrap(),
        "name = bar\nport = 21\nuser = bar\n"
    );
    assert_eq!(
        mode_of(&s.path("conf/app.conf")),
        0o640,
        "sed -i lost the mode"
    );
    // sed's temporary file was renamed over the original: nothing else is left.
    assert_eq!(names(&s.path("conf")), ["app.conf"]);
    assert_no_temp_files(&m, &s);
}

fn vim_edit_with_backup(s: FtpServer) {
    s.create_file("notes.txt", b"alpha\nbanana\ncherry\n");
    let m = Mount::new(&s, &[]);
    let home = TempDir::new().unwrap();

    ok(
        &m,
        &s,
        tool("vim")
            .args(["-Es", "--cmd", "set bsk=", "-c", "%s/a/b/", "-c", "wq"])
            .arg(m.path("notes.txt"))
            .env("HOME", home.path())
            .env_remove("VIMINIT")
            .env_remove("EXINIT"),
    );
    assert_eq!(
        fs::read_to_string(s.path("notes.txt")).unwrap(),
        "blpha\nbbnana\ncherry\n",
        "{}",
        diag(&m, &s)
    );
    assert_eq!(
        fs::read_to_string(m.path("notes.txt")).unwrap(),
        "blpha\nbbnana\ncherry\n",
        "read back through the mount\n{}",
        diag(&m, &s)
    );
    // The backup (notes.txt~), vim's "4913" probe and the swap file are gone again.
    assert_eq!(names(&s.root), ["notes.txt"], "{}", diag(&m, &s));
    assert_no_temp_files(&m, &s);
}

fn git(dir: &Path, home: &Path) -> Command {
    support::git(dir, home, 120)
}

fn git_clone_commit_fsck(s: FtpServer) {
    let m = Mount::new(&s, &[]);
    let home = TempDir::new().unwrap();
    let h = home.path();
    let origin = h.join("origin");
    fs::create_dir(&origin).unwrap();
    ok(&m, &s, git(&origin, h).args(["init", "-q"]));
    for i in 0..4 {
        fs::write(origin.join("README"), format!("version {i}\n")).unwrap();
        write_file(
            origin.join(format!("src/file{i}.bin")),
            20_000 * i,
            i as u64,
        );
        ok(&m, &s, git(&origin, h).args(["add", "-A"]));
        ok(
            &m,
            &s,
            git(&origin, h).args(["commit", "-q", "-m", &format!("commit {i}")]),
        );
    }

    ok(
        &m,
        &s,
        git(h, h)
            .args(["clone", "-q", "--no-local"])
            .arg(&origin)
            .arg(m.path("repo")),
    );
    let repo = m.path("repo");
    assert_eq!(
        fs::read_to_string(s.path("repo/README")).unwrap(),
        "version 3\n"
    );
    fs::write(repo.join("README"), "edited through ftpfs\n").unwrap();
    ok(
        &m,
        &s,
        git(&repo, h).args(["commit", "-q", "-am", "edit over ftp"]),
    );
    let log = stdout_of(&ok(&m, &s, git(&repo, h).args(["log", "--oneline"])));
    assert_eq!(log.lines().count(), 5, "git log:\n{log}");
    assert!(
        log.lines().next().unwrap_or("").ends_with("edit over ftp"),
        "git log:\n{log}"
    );
    let status = stdout_of(&ok(&m, &s, git(&repo, h).args(["status", "--porcelain"])));
    assert_eq!(status, "", "git status is not clean\n{}", diag(&m, &s));
    ok(&m, &s, git(&repo, h).args(["fsck", "--full", "--strict"]));

    // What landed on the server is a sound repository too.
    let on_server = s.path("repo");
    let log = stdout_of(&ok(&m, &s, git(&on_server, h).args(["log", "--oneline"])));
    assert_eq!(log.lines().count(), 5, "git log on the server:\n{log}");
    let status = stdout_of(&ok(
        &m,
        &s,
        git(&on_server, h).args(["status", "--porcelain"]),
    ));
    assert_eq!(status, "", "git status on the server is not clean");
    ok(
        &m,
        &s,
        git(&on_server, h).args(["fsck", "--full", "--strict"]),
    );
    assert_no_temp_files(&m, &s);
}

// ---------------------------------------------------------------------------
// Single operations through the shell and coreutils
// ---------------------------------------------------------------------------

fn shell_appends(s: FtpServer) {
    let m = Mount::new(&s, &[]);
    let f = m.path("log.txt");
    let mut want = String::new();
    for i in 0..5 {
        ok(
            &m,
            &s,
            tool("sh")
                .arg("-c")
                .arg(format!("echo line {i} >> \"$1\""))
                .arg("sh")
                .arg(&f),
        );
        want.push_str(&format!("line {i}\n"));
        assert_eq!(
            fs::read_to_string(s.path("log.txt")).unwrap_or_default(),
            want,
            "after append {i}\n{}",
            diag(&m, &s)
        );
    }
    assert_eq!(fs::read_to_string(&f).unwrap(), want);
    assert_no_temp_files(&m, &s);
}

fn truncate_bigger_and_smaller(s: FtpServer) {
    let data = gen_bytes(1000, 7);
    s.create_file("t.bin", &data);
    let m = Mount::new(&s, &[]);
    let f = m.path("t.bin");

    ok(&m, &s, tool("truncate").args(["-s", "5000"]).arg(&f));
    let mut want = data.clone();
    want.resize(5000, 0);
    assert!(
        fs::read(s.path("t.bin")).unwrap() == want,
        "after truncate -s 5000 the server has {} bytes\n{}",
        fs::metadata(s.path("t.bin")).unwrap().len(),
        diag(&m, &s)
    );
    assert_eq!(fs::metadata(&f).unwrap().len(), 5000);

    ok(&m, &s, tool("truncate").args(["-s", "10"]).arg(&f));
    assert_eq!(
        fs::read(s.path("t.bin")).unwrap(),
        &data[..10],
        "{}",
        diag(&m, &s)
    );
    assert_eq!(fs::metadata(&f).unwrap().len(), 10);
    assert_eq!(fs::read(&f).unwrap(), &data[..10]);

    ok(&m, &s, tool("truncate").args(["-s", "0"]).arg(&f));
    assert_eq!(fs::metadata(s.path("t.bin")).unwrap().len(), 0);
    assert_eq!(fs::metadata(&f).unwrap().len(), 0);
    assert_no_temp_files(&m, &s);
}

fn touch_sets_exact_mtime(s: FtpServer) {
    s.create_file("old.txt", b"old\n");
    let m = Mount::new(&s, &[]);
    const WANT: i64 = 1_614_834_367; // 2021-03-04 05:06:07 UTC
    for name in ["old.txt", "new.txt"] {
        let f = m.path(name);
        ok(
            &m,
            &s,
            tool("touch")
                .args(["-d", "2021-03-04 05:06:07"])
                .arg(&f)
                .env("TZ", "UTC"),
        );
        let out = ok(&m, &s, tool("stat").args(["-c", "%Y"]).arg(&f));
        assert_eq!(
            stdout_of(&out).trim(),
            WANT.to_string(),
            "{name}: stat through the mount\n{}",
            diag(&m, &s)
        );
        assert_eq!(
            mtime_secs(&s.path(name)),
            WANT,
            "{name}: mtime on the server\n{}",
            diag(&m, &s)
        );
    }
    assert_eq!(fs::read(s.path("old.txt")).unwrap(), b"old\n");
    assert_eq!(fs::metadata(s.path("new.txt")).unwrap().len(), 0);
    assert_no_temp_files(&m, &s);
}

fn chmod_shows_and_lands(s: FtpServer) {
    s.create_file("f.txt", b"secret\n");
    s.create_dir("d");
    let m = Mount::new(&s, &[]);

    ok(&m, &s, tool("chmod").arg("640").arg(m.path("f.txt")));
    let out = ok(&m, &s, tool("stat").args(["-c", "%a"]).arg(m.path("f.txt")));
    assert_eq!(stdout_of(&out).trim(), "640");
    assert_eq!(mode_of(&s.path("f.txt")), 0o640, "{}", diag(&m, &s));

    ok(&m, &s, tool("chmod").arg("750").arg(m.path("d")));
    let out = ok(&m, &s, tool("stat").args(["-c", "%a"]).arg(m.path("d")));
    assert_eq!(stdout_of(&out).trim(), "750");
    assert_eq!(mode_of(&s.path("d")), 0o750, "{}", diag(&m, &s));
    assert_eq!(fs::read(s.path("f.txt")).unwrap(), b"secret\n");
    assert_no_temp_files(&m, &s);
}

fn mv_directory_tree(s: FtpServer) {
    s.create_file("a/b/c.txt", b"c\n");
    s.create_file("a/d.txt", b"d\n");
    s.create_file("a/b/e/f.bin", &gen_bytes(100_000, 3));
    s.create_dir("other");
    let m = Mount::new(&s, &[]);
    // Let the mount know the tree before it moves.
    assert_eq!(fs::read(m.path("a/b/c.txt")).unwrap(), b"c\n");

    ok(&m, &s, tool("mv").arg(m.path("a")).arg(m.path("z")));
    assert_eq!(fs::read(m.path("z/b/c.txt")).unwrap(), b"c\n");
    assert_eq!(fs::read(m.path("z/d.txt")).unwrap(), b"d\n");
    assert!(files_equal(m.path("z/b/e/f.bin"), s.path("z/b/e/f.bin")));
    assert!(!m.path("a").exists(), "old path still there on the mount");
    assert!(!s.path("a").exists(), "old path still there on the server");
    assert_eq!(fs::read(s.path("z/b/c.txt")).unwrap(), b"c\n");

    // Into another directory.
    ok(&m, &s, tool("mv").arg(m.path("z")).arg(m.path("other/z2")));
    assert_eq!(fs::read(m.path("other/z2/d.txt")).unwrap(), b"d\n");
    assert_eq!(fs::read(m.path("other/z2/b/c.txt")).unwrap(), b"c\n");
    assert!(!m.path("z").exists());
    assert!(!s.path("z").exists());
    assert_eq!(fs::read(s.path("other/z2/b/c.txt")).unwrap(), b"c\n");
    assert_eq!(names(&m.dir), ["other"]);
    assert_no_temp_files(&m, &s);
}

fn rm_rf_tree(s: FtpServer) {
    s.create_file("t/x.txt", b"x");
    s.create_file("t/a/b/c/y.bin", &gen_bytes(5000, 1));
    s.create_dir("t/empty");
    s.create_file("keep.txt", b"keep");
    let m = Mount::new(&s, &[]);
    // And some made through the mount.
    ok(&m, &s, tool("mkdir").arg("-p").arg(m.path("t/new/deeper")));
    fs::write(m.path("t/new/deeper/z.txt"), "z").unwrap();

    ok(&m, &s, tool("rm").arg("-rf").arg(m.path("t")));
    assert!(!m.path("t").exists());
    assert!(
        !s.path("t").exists(),
        "still on the server: {:?}\n{}",
        walk(&s.path("t")),
        diag(&m, &s)
    );
    assert_eq!(names(&s.root), ["keep.txt"]);
    assert_no_temp_files(&m, &s);
}

fn overwrite_inside_existing_file(s: FtpServer) {
    let data = gen_bytes(300_000, 11);
    s.create_file("e.bin", &data);
    let m = Mount::new(&s, &[]);

    let f = OpenOptions::new()
        .write(true)
        .open(m.path("e.bin"))
        .unwrap();
    f.write_all_at(b"MIDDLE", 150_000).unwrap();
    drop(f);
    let mut want = data.clone();
    want[150_000..150_006].copy_from_slice(b"MIDDLE");
    let got = fs::read(s.path("e.bin")).unwrap();
    assert!(
        got == want,
        "server file after a write in the middle: {} bytes, first difference at {:?}\n{}",
        got.len(),
        got.iter().zip(&want).position(|(a, b)| a != b),
        diag(&m, &s)
    );

    // The start, then past the end, through one read-write handle.
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.path("e.bin"))
        .unwrap();
    f.write_all_at(b"HEAD", 0).unwrap();
    f.write_all_at(b"TAIL", 300_010).unwrap();
    let mut buf = [0u8; 6];
    f.read_exact_at(&mut buf, 150_000).unwrap();
    assert_eq!(&buf, b"MIDDLE");
    drop(f);
    want[..4].copy_from_slice(b"HEAD");
    want.resize(300_010, 0);
    want.extend_from_slice(b"TAIL");
    let got = fs::read(s.path("e.bin")).unwrap();
    assert!(
        got == want,
        "server file after writes at 0 and past the end: {} bytes, first difference at {:?}\n{}",
        got.len(),
        got.iter().zip(&want).position(|(a, b)| a != b),
        diag(&m, &s)
    );
    assert!(fs::read(m.path("e.bin")).unwrap() == want);
    assert_no_temp_files(&m, &s);
}

fn exclusive_create_and_creat_rdonly(s: FtpServer) {
    s.create_file("exists.txt", b"there\n");
    let m = Mount::new(&s, &[]);

    let r = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(m.path("exists.txt"));
    assert_eq!(errno_of(r), Some(libc::EEXIST));
    assert_eq!(fs::read(s.path("exists.txt")).unwrap(), b"there\n");

    // A name this mount created itself.
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(m.path("mine.txt"))
        .unwrap();
    f.write_all(b"mine\n").unwrap();
    drop(f);
    let r = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(m.path("mine.txt"));
    assert_eq!(errno_of(r), Some(libc::EEXIST));
    assert_eq!(fs::read(s.path("mine.txt")).unwrap(), b"mine\n");

    // open(O_CREAT|O_RDONLY) makes an empty file.
    let path = cstr(&m.path("empty.txt"));
    // SAFETY: a valid NUL-terminated path; the descriptor is closed right after.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_CREAT | libc::O_RDONLY, 0o644) };
    assert!(
        fd >= 0,
        "open(O_CREAT|O_RDONLY): {}\n{}",
        io::Error::last_os_error(),
        diag(&m, &s)
    );
    // SAFETY: fd is ours and open.
    let rc = unsafe { libc::close(fd) };
    assert_eq!(rc, 0, "close: {}", io::Error::last_os_error());
    let md = fs::metadata(s.path("empty.txt"));
    assert!(
        md.as_ref().is_ok_and(|md| md.is_file() && md.len() == 0),
        "server: {md:?}\n{}",
        diag(&m, &s)
    );
    assert_eq!(fs::metadata(m.path("empty.txt")).unwrap().len(), 0);
    assert_no_temp_files(&m, &s);
}

fn renameat2(from: &Path, to: &Path, flags: libc::c_uint) -> io::Result<()> {
    let (from, to) = (cstr(from), cstr(to));
    // SAFETY: valid NUL-terminated paths that outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            flags,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn rename_replaces_and_noreplace_refuses(s: FtpServer) {
    s.create_file("a.txt", b"content of a\n");
    s.create_file("b.txt", b"content of b, longer\n");
    s.create_file("c.txt", b"content of c\n");
    s.create_file("d.txt", b"content of d\n");
    let m = Mount::new(&s, &[]);

    fs::rename(m.path("a.txt"), m.path("b.txt")).unwrap();
    assert_eq!(fs::read(s.path("b.txt")).unwrap(), b"content of a\n");
    assert!(!s.path("a.txt").exists());
    assert_eq!(fs::read(m.path("b.txt")).unwrap(), b"content of a\n");
    assert!(!m.path("a.txt").exists());

    let r = renameat2(&m.path("c.txt"), &m.path("d.txt"), libc::RENAME_NOREPLACE);
    assert_eq!(errno_of(r), Some(libc::EEXIST), "{}", diag(&m, &s));
    assert_eq!(fs::read(s.path("c.txt")).unwrap(), b"content of c\n");
    assert_eq!(fs::read(s.path("d.txt")).unwrap(), b"content of d\n");

    renameat2(&m.path("c.txt"), &m.path("e.txt"), libc::RENAME_NOREPLACE).unwrap();
    assert_eq!(fs::read(s.path("e.txt")).unwrap(), b"content of c\n");
    assert!(!s.path("c.txt").exists());

    // A file written through the mount and renamed over another right away.
    fs::write(m.path("new.txt"), "fresh\n").unwrap();
    fs::rename(m.path("new.txt"), m.path("d.txt")).unwrap();
    assert_eq!(fs::read(s.path("d.txt")).unwrap(), b"fresh\n");
    assert_eq!(names(&s.root), ["b.txt", "d.txt", "e.txt"]);
    assert_no_temp_files(&m, &s);
}

fn rmdir_not_empty_and_mkdir_existing(s: FtpServer) {
    s.create_file("full/x.txt", b"x");
    s.create_file("file.txt", b"f");
    let m = Mount::new(&s, &[]);

    assert_eq!(
        errno_of(fs::remove_dir(m.path("full"))),
        Some(libc::ENOTEMPTY)
    );
    assert_eq!(fs::read(s.path("full/x.txt")).unwrap(), b"x");
    assert_eq!(errno_of(fs::create_dir(m.path("full"))), Some(libc::EEXIST));
    assert_eq!(
        errno_of(fs::create_dir(m.path("file.txt"))),
        Some(libc::EEXIST)
    );
    assert_eq!(fs::read(s.path("file.txt")).unwrap(), b"f");

    // The real tools say the same.
    let out = run(tool("rmdir").arg(m.path("full")));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not empty"),
        "{}",
        describe(&Command::new("rmdir"), &out)
    );

    // A directory made here is empty and can go again; then mkdir works anew.
    fs::create_dir(m.path("new")).unwrap();
    assert!(s.path("new").is_dir());
    assert_eq!(errno_of(fs::create_dir(m.path("new"))), Some(libc::EEXIST));
    fs::remove_dir(m.path("new")).unwrap();
    assert!(!s.path("new").exists());
    fs::create_dir(m.path("new")).unwrap();
    assert!(s.path("new").is_dir());
}

fn server_changes_show_after_cache_timeout(s: FtpServer) {
    s.create_file("a.txt", b"first version\n");
    s.create_file("gone.txt", b"soon gone\n");
    let m = Mount::new(&s, &["cache_timeout=1"]);
    assert_eq!(names(&m.dir), ["a.txt", "gone.txt"]);
    assert_eq!(fs::read(m.path("a.txt")).unwrap(), b"first version\n");
    assert!(!m.path("new.txt").exists());

    s.create_file("new.txt", b"added on the server\n");
    s.create_file("a.txt", b"second, longer version\n");
    fs::remove_file(s.path("gone.txt")).unwrap();
    std::thread::sleep(Duration::from_secs(2));

    assert_eq!(names(&m.dir), ["a.txt", "new.txt"], "{}", diag(&m, &s));
    assert_eq!(
        fs::read(m.path("new.txt")).unwrap(),
        b"added on the server\n"
    );
    assert_eq!(
        fs::read(m.path("a.txt")).unwrap(),
        b"second, longer version\n"
    );
    assert!(!m.path("gone.txt").exists());
}

// ---------------------------------------------------------------------------
// Failed uploads
// ---------------------------------------------------------------------------

/// Largest upload the failing server accepts.
const MAX_UPLOAD: usize = 100_000;

/// pyftpdlib that aborts uploads over [`MAX_UPLOAD`] bytes with 552 (ENOSPC),
/// or, with an older scripts/ftpserver.py, refuses every STOR with 553
/// (EACCES). Returns the server and the errno a refused upload must give.
fn failing_server() -> (FtpServer, i32) {
    let limit = MAX_UPLOAD.to_string();
    match FtpServer::try_pyftpdlib(Some("ftpuser"), &["--max-upload", &limit]) {
        Ok(s) => (s, libc::ENOSPC),
        Err(e) => {
            eprintln!("no --max-upload ({e}); using --refuse-stor");
            let s = FtpServer::try_pyftpdlib(Some("ftpuser"), &["--refuse-stor"])
                .unwrap_or_else(|e| panic!("{e}"));
            (s, libc::EACCES)
        }
    }
}

fn cp_over_existing_file_fails_and_keeps_old_content(s: FtpServer, errno: i32) {
    s.create_file("keep.txt", b"the old content\n");
    let m = Mount::new(&s, &[]);
    let local = TempDir::new().unwrap();
    let big = local.path().join("big.bin");
    write_file(&big, 1 << 20, 5);

    let mut cmd = tool("cp");
    cmd.arg(&big).arg(m.path("keep.txt"));
    let out = run(&mut cmd);
    assert!(
        !out.status.success(),
        "cp of 1 MiB over keep.txt succeeded although the server refused it\n{}\n{}",
        describe(&cmd, &out),
        diag(&m, &s)
    );
    let why = io::Error::from_raw_os_error(errno).to_string();
    let why = why.split(" (os error").next().unwrap_or_default();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(why),
        "cp should report {why:?}\n{}",
        describe(&cmd, &out)
    );
    assert_eq!(
        fs::read(s.path("keep.txt")).unwrap(),
        b"the old content\n",
        "the old content is lost\n{}",
        diag(&m, &s)
    );
    assert_no_temp_files(&m, &s);
    assert_eq!(names(&s.root), ["keep.txt"]);
}

fn fsync_reports_upload_failure(s: FtpServer, errno: i32) {
    s.create_file("keep2.txt", b"old content two\n");
    let m = Mount::new(&s, &[]);

    let mut f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(m.path("keep2.txt"))
        .unwrap();
    f.write_all(&gen_bytes(1 << 20, 6)).unwrap();
    let r = f.sync_all();
    assert_eq!(
        errno_of(r),
        Some(errno),
        "fsync must fail with the upload's error\n{}",
        diag(&m, &s)
    );
    drop(f);
    assert_eq!(
        fs::read(s.path("keep2.txt")).unwrap(),
        b"old content two\n",
        "the old content is lost\n{}",
        diag(&m, &s)
    );
    assert_no_temp_files(&m, &s);

    // Small files still go through (not with --refuse-stor, which refuses all).
    if errno == libc::ENOSPC {
        fs::write(m.path("small.txt"), "small\n").unwrap();
        assert_eq!(fs::read(s.path("small.txt")).unwrap(), b"small\n");
    }
}
