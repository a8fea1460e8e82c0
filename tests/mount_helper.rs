//! ftpfs mounted the way Linux users do: `mount -t fuse.ftpfs URL DIR -o ...` and
//! an fstab line, through util-linux mount(8) and /sbin/mount.fuse3.
//!
//! mount(8) clears PATH (and HOME) before it runs /sbin/mount.fuse3, whose
//! `/bin/sh -c 'ftpfs URL DIR -o ...'` then finds ftpfs only in the shell's
//! default PATH, which starts with /usr/local/sbin. So that no install step is
//! needed, a test runs mount(8) in its own private mount namespace (`unshare
//! --mount`) in which a directory holding a link to the ftpfs just built is bind
//! mounted over /usr/local/sbin. The FUSE mount then exists in that namespace
//! only: commands reach it through `nsenter`, and it shows in the namespace's
//! /proc/PID/mountinfo. The `fuse` type with `/path/to/ftpfs#URL` as the source
//! needs no namespace at all. Needs root, as the other mount tests here do.
//!
//! Every test has its own server, namespace, mount point and files; Drop
//! unmounts, ends any ftpfs left behind and the namespace, also when a test fails.

mod support;

use std::fmt;
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use support::{ftpfs_bin, wait_timeout, wait_until, FtpServer};

/// Limit for one mount, umount or cat.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the background ftpfs may take to exit after its unmount.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);
/// The directories of dash's and bash's default PATH that come before /usr/bin:
/// the link to ftpfs is bind mounted over the first one that exists.
const SHELL_PATH_DIRS: &[&str] = &["/usr/local/sbin", "/usr/local/bin"];

/// What a command printed, and whether it succeeded.
struct Output {
    ok: bool,
    status: String,
    stdout: String,
    stderr: String,
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Where a test runs mount(8): a private mount namespace of its own (with ftpfs
/// in the shell's default PATH), or the test process's own namespace. Owns a
/// work directory for mount points, fstab and password files.
struct MountEnv {
    /// The process that holds the namespace (sh, reading its stdin), if any.
    holder: Option<(Child, ChildStdin)>,
    /// Mount points made by [`MountEnv::mount_dir`], cleaned up on drop.
    mounts: Vec<PathBuf>,
    work: tempfile::TempDir,
}

impl MountEnv {
    /// A new private mount namespace in which `ftpfs` is in the default PATH.
    fn namespace() -> MountEnv {
        let work = work_dir();
        let bin = work.path().join("bin");
        fs::create_dir(&bin).expect("mkdir bin");
        std::os::unix::fs::symlink(ftpfs_bin(), bin.join("ftpfs")).expect("link ftpfs");
        let over = SHELL_PATH_DIRS
            .iter()
            .find(|d| Path::new(d).is_dir())
            .expect("neither /usr/local/sbin nor /usr/local/bin exists");
        let mut child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
            .arg(r#"mount --bind "$1" "$2" && echo ready && read _"#)
            .arg("sh")
            .arg(&bin)
            .arg(over)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot run unshare (util-linux)");
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            let _ = BufReader::new(out).read_line(&mut line);
        }
        if line.trim() != "ready" {
            let _ = child.kill();
            let out = child.wait_with_output().expect("wait for unshare");
            panic!(
                "cannot make a mount namespace (unshare --mount needs root): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let stdin = child.stdin.take().expect("holder stdin");
        MountEnv {
            holder: Some((child, stdin)),
            mounts: Vec::new(),
            work,
        }
    }

    /// The test process's own mount namespace.
    fn here() -> MountEnv {
        MountEnv {
            holder: None,
            mounts: Vec::new(),
            work: work_dir(),
        }
    }

    /// A fresh, empty mount point, unmounted on drop.
    fn mount_dir(&mut self, name: &str) -> PathBuf {
        let canonical = fs::canonicalize(self.work.path()).expect("canonicalize work dir");
        let dir = canonical.join(name);
        fs::create_dir(&dir).expect("mkdir mount point");
        self.mounts.push(dir.clone());
        dir
    }

    /// A file holding `text`, with permissions `mode`.
    fn file(&self, name: &str, text: &str, mode: u32) -> PathBuf {
        let p = self.work.path().join(name);
        fs::write(&p, text).expect("write file");
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).expect("chmod");
        p
    }

    /// Runs `args` (in the namespace, if any) without FTPFS_PASSWORD, RUST_LOG or a
    /// netrc, so that the password can only come from where the test says.
    fn run(&self, args: &[&str]) -> Output {
        static RUNS: AtomicU32 = AtomicU32::new(0);
        let n = RUNS.fetch_add(1, Ordering::SeqCst);
        let out_path = self.work.path().join(format!("run-{n}.out"));
        let err_path = self.work.path().join(format!("run-{n}.err"));
        let mut cmd = match &self.holder {
            Some((holder, _)) => {
                let mut c = Command::new("nsenter");
                c.arg("--target")
                    .arg(holder.id().to_string())
                    .arg("--mount")
                    .arg("--")
                    .args(args);
                c
            }
            None => {
                let mut c = Command::new(args[0]);
                c.args(&args[1..]);
                c
            }
        };
        cmd.env_remove("FTPFS_PASSWORD")
            .env_remove("RUST_LOG")
            .env("NETRC", "/dev/null")
            .stdin(Stdio::null())
            .stdout(fs::File::create(&out_path).expect("create stdout file"))
            .stderr(fs::File::create(&err_path).expect("create stderr file"));
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
        let status = match wait_timeout(&mut child, RUN_TIMEOUT) {
            Some(s) => s,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{args:?} did not finish within {RUN_TIMEOUT:?}");
            }
        };
        Output {
            ok: status.success(),
            status: format!("{args:?}: {status}"),
            stdout: support::read_lossy(&out_path),
            stderr: support::read_lossy(&err_path),
        }
    }

    /// The type of the filesystem mounted exactly at `dir` in this environment.
    fn fstype(&self, dir: &Path) -> Option<String> {
        let path = match &self.holder {
            Some((holder, _)) => format!("/proc/{}/mountinfo", holder.id()),
            None => "/proc/self/mountinfo".to_string(),
        };
        let info = fs::read_to_string(path).ok()?;
        let dir = dir.to_str()?;
        info.lines()
            .filter(|l| l.split(' ').nth(4) == Some(dir))
            .filter_map(|l| l.split(" - ").nth(1)?.split(' ').next())
            .next_back()
            .map(str::to_string)
    }

    /// The contents of `path`, read (in the namespace) with cat.
    fn read(&self, path: &Path) -> String {
        let out = self.run(&["cat", path.to_str().expect("UTF-8 path")]);
        assert!(out.ok, "cat {}: {out}", path.display());
        out.stdout
    }
}

impl Drop for MountEnv {
    fn drop(&mut self) {
        for dir in &self.mounts {
            if self.fstype(dir).is_some() {
                let _ = self.run(&["umount", "--lazy", &dir.to_string_lossy()]);
            }
            if !wait_until(EXIT_TIMEOUT, || ftpfs_pids(dir).is_empty()) {
                for pid in ftpfs_pids(dir) {
                    // SAFETY: a plain kill(2) of an ftpfs that serves this test's mount point.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        if let Some((mut holder, stdin)) = self.holder.take() {
            drop(stdin);
            if wait_timeout(&mut holder, EXIT_TIMEOUT).is_none() {
                let _ = holder.kill();
                let _ = holder.wait();
            }
        }
    }
}

/// A private temporary directory for one test's files and mount points.
fn work_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("ftpfs-mh-")
        .tempdir()
        .expect("temp dir")
}

/// The ftpfs processes whose command line names `dir` (the one behind a mount of
/// this test: mount points are unique temporary directories).
fn ftpfs_pids(dir: &Path) -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let dir = dir.as_os_str().as_encoded_bytes();
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let mut args = cmdline.split(|b| *b == 0);
            let is_ftpfs = args
                .next()
                .is_some_and(|a0| a0 == b"ftpfs" || a0.ends_with(b"/ftpfs"));
            is_ftpfs && args.any(|a| a == dir)
        })
        .collect()
}

/// The URL of `server` without a user name, for tests that give it with `-o user=`.
fn url_without_user(server: &FtpServer) -> String {
    format!("ftp://127.0.0.1:{}/", server.port)
}

/// Unmounts `dir` with `how` (umount or fusermount3 -u) and checks that the mount
/// and its background ftpfs are gone.
fn unmount(env: &MountEnv, dir: &Path, how: &[&str]) {
    let mut args = how.to_vec();
    args.push(dir.to_str().expect("UTF-8 path"));
    let out = env.run(&args);
    assert!(out.ok, "unmount: {out}");
    assert_eq!(env.fstype(dir), None, "still mounted after {how:?}");
    assert!(
        wait_until(EXIT_TIMEOUT, || ftpfs_pids(dir).is_empty()),
        "ftpfs still running {EXIT_TIMEOUT:?} after {how:?}"
    );
}

#[test]
fn mount_t_fuse_ftpfs_with_user_and_password_file_options() {
    let server = FtpServer::pyftpdlib();
    server.create_file("docs/hello.txt", b"hello through mount.fuse3\n");
    let mut env = MountEnv::namespace();
    let dir = env.mount_dir("mnt");
    let pw = env.file("pw", &format!("{}\n", server.password), 0o600);
    // No user in the URL: it comes from user=, which mount(8) passes on when root mounts.
    let opts = format!(
        "user={},password_file={},_netdev,nofail,defaults",
        server.user,
        pw.display()
    );
    let url = url_without_user(&server);
    let out = env.run(&[
        "mount",
        "-t",
        "fuse.ftpfs",
        &url,
        dir.to_str().unwrap(),
        "-o",
        &opts,
    ]);
    assert!(out.ok, "mount -t fuse.ftpfs: {out}\n{}", server.log());
    // No waiting: ftpfs went to the background only once the mount was there.
    assert_eq!(env.fstype(&dir).as_deref(), Some("fuse.ftpfs"));
    assert_eq!(ftpfs_pids(&dir).len(), 1, "one ftpfs in the background");
    assert_eq!(
        env.read(&dir.join("docs/hello.txt")),
        "hello through mount.fuse3\n"
    );
    unmount(&env, &dir, &["umount"]);
}

#[test]
fn fstab_line_with_noauto_netdev_and_systemd_automount() {
    let server = FtpServer::pyftpdlib();
    server.create_file("hello.txt", b"hello from fstab\n");
    let mut env = MountEnv::namespace();
    let dir = env.mount_dir("site");
    let pw = env.file("site.pass", &format!("{}\n", server.password), 0o600);
    let fstab = env.file(
        "fstab",
        &format!(
            "# ftpfs test\n{url} {dir} fuse.ftpfs \
             noauto,_netdev,x-systemd.automount,x-systemd.idle-timeout=60,password_file={pw} 0 0\n",
            url = server.url(),
            dir = dir.display(),
            pw = pw.display()
        ),
        0o644,
    );
    let out = env.run(&[
        "mount",
        "--fstab",
        fstab.to_str().unwrap(),
        dir.to_str().unwrap(),
    ]);
    assert!(out.ok, "mount --fstab: {out}\n{}", server.log());
    assert_eq!(env.fstype(&dir).as_deref(), Some("fuse.ftpfs"));
    assert_eq!(env.read(&dir.join("hello.txt")), "hello from fstab\n");
    unmount(&env, &dir, &["fusermount3", "-u"]);
}

#[test]
fn group_readable_password_file_is_refused_and_nothing_is_mounted() {
    let server = FtpServer::pyftpdlib();
    let mut env = MountEnv::namespace();
    let dir = env.mount_dir("mnt");
    let pw = env.file("pw", &format!("{}\n", server.password), 0o640);
    let opts = format!("password_file={}", pw.display());
    let url = server.url();
    let out = env.run(&[
        "mount",
        "-t",
        "fuse.ftpfs",
        &url,
        dir.to_str().unwrap(),
        "-o",
        &opts,
    ]);
    assert!(!out.ok, "mount with a 0640 password file succeeded: {out}");
    let msg = out
        .stderr
        .lines()
        .find(|l| l.starts_with("ftpfs: "))
        .unwrap_or_else(|| panic!("no ftpfs error line: {out}"));
    assert!(
        msg.contains(&pw.display().to_string()) && msg.contains("chmod 600"),
        "{msg}"
    );
    assert!(!out.stderr.contains(&server.password), "{out}");
    assert_eq!(env.fstype(&dir), None);
    assert!(ftpfs_pids(&dir).is_empty(), "an ftpfs is left running");
    assert!(
        server.commands_named("PASS").is_empty(),
        "the password was sent: {:?}",
        server.commands()
    );
}

#[test]
fn fuse_type_with_the_program_path_in_the_source_needs_no_install() {
    let server = FtpServer::pyftpdlib();
    server.create_file("hello.txt", b"hello via ftpfs#URL\n");
    let mut env = MountEnv::here();
    let dir = env.mount_dir("mnt");
    let pw = env.file("pw", &format!("{}\n", server.password), 0o600);
    // The old fuse syntax: mount.fuse3 runs the program named before '#'.
    let source = format!("{}#{}", ftpfs_bin().display(), url_without_user(&server));
    let opts = format!("username={},password_file={}", server.user, pw.display());
    let out = env.run(&[
        "mount",
        "-t",
        "fuse",
        &source,
        dir.to_str().unwrap(),
        "-o",
        &opts,
    ]);
    assert!(out.ok, "mount -t fuse: {out}\n{}", server.log());
    assert_eq!(env.fstype(&dir).as_deref(), Some("fuse.ftpfs"));
    assert!(support::is_mounted(&dir));
    assert_eq!(env.read(&dir.join("hello.txt")), "hello via ftpfs#URL\n");
    unmount(&env, &dir, &["umount"]);
}
