//! ftpfs run by an ordinary user (created here), not root: the matrix of
//! /dev/fuse openable by users (0666, Debian's default) or not (0600, as on
//! hardened systems), each daemonized and with `-f`. Where the user may
//! mount, each case mounts, reads and writes as the user, checks that no
//! `/proc/*/cmdline` shows the password, runs `ftpfs status`, and unmounts with
//! `fusermount3 -u`. Where no user may (fusermount3 opens /dev/fuse with the
//! user's rights), the mount must fail at once with a message naming the fix.
//! A wrong password without `-f` must print the refusal on the terminal.
//!
//! The mode of /dev/fuse is machine-wide: the cases of this file take turns
//! (root's tests elsewhere do not care about the mode), and it is restored.

mod support;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use support::{
    as_user, force_unmount, ftpfs_bin, is_mounted, run_for, text, user_ids, wait_timeout,
    wait_until, DevFuseMode, FtpServer,
};

/// Every case holds this: the /dev/fuse mode is shared.
static TURN: Mutex<()> = Mutex::new(());
const T: Duration = Duration::from_secs(30);

/// A mount point the user owns, in a directory the user may enter; whatever
/// is left mounted there is unmounted, and the user's ftpfs on it is stopped.
struct UserDir {
    _tmp: tempfile::TempDir,
    mnt: PathBuf,
}

impl UserDir {
    fn new(uid: u32, gid: u32) -> UserDir {
        let tmp = tempfile::Builder::new()
            .prefix("ftpfs-nonroot-")
            .tempdir()
            .expect("temp dir");
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        let mnt = fs::canonicalize(tmp.path())
            .expect("canonicalize")
            .join("mnt");
        fs::create_dir(&mnt).expect("mkdir mnt");
        std::os::unix::fs::chown(&mnt, Some(uid), Some(gid)).expect("chown mnt");
        UserDir { _tmp: tmp, mnt }
    }

    fn s(&self) -> &str {
        self.mnt.to_str().expect("utf-8 path")
    }

    /// `ftpfs [-f] URL MNT` as the user, the URL (with its password) read from
    /// a file only the user may read: so that no launcher's command line
    /// holds the password, only ftpfs's own as the user's shell would give it.
    fn ftpfs(&self, url: &str, foreground: bool, uid: u32, gid: u32) -> Command {
        let file = self.mnt.with_file_name("url");
        fs::write(&file, url).expect("write url file");
        fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).expect("chmod url");
        std::os::unix::fs::chown(&file, Some(uid), Some(gid)).expect("chown url");
        let script = if foreground {
            r#"exec "$0" -f "$(cat "$1")" "$2""#
        } else {
            r#"exec "$0" "$(cat "$1")" "$2""#
        };
        as_user(
            "sh",
            &[
                "-c",
                script,
                ftpfs_bin().to_str().expect("utf-8 path"),
                file.to_str().expect("utf-8 path"),
                self.s(),
            ],
        )
    }
}

impl Drop for UserDir {
    fn drop(&mut self) {
        for pid in pids_mentioning(self.s()) {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
        force_unmount(&self.mnt);
    }
}

/// Every other process: (pid, owner uid, command line with spaces for NULs).
fn processes() -> Vec<(u32, u32, String)> {
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let (Ok(meta), Ok(raw)) = (e.metadata(), fs::read(format!("/proc/{pid}/cmdline"))) else {
            continue;
        };
        if pid != std::process::id() {
            let shown = String::from_utf8_lossy(&raw).replace('\0', " ");
            out.push((pid, meta.uid(), shown));
        }
    }
    out
}

/// PIDs whose command line mentions `needle`.
fn pids_mentioning(needle: &str) -> Vec<u32> {
    processes()
        .into_iter()
        .filter(|(_, _, cmd)| cmd.contains(needle))
        .map(|(pid, _, _)| pid)
        .collect()
}

/// Every process of the test user whose command line holds `secret`, as
/// "pid: cmdline" (the test server's own command line has the password).
fn cmdlines_with(secret: &str, uid: u32) -> Vec<String> {
    processes()
        .into_iter()
        .filter(|(_, owner, cmd)| *owner == uid && cmd.contains(secret))
        .map(|(pid, _, cmd)| format!("{pid}: {cmd}"))
        .collect()
}

fn server() -> FtpServer {
    let s = FtpServer::pyftpdlib();
    s.create_file("hello.txt", b"hello from the server\n");
    s
}

fn url_with_password(s: &FtpServer, password: &str) -> String {
    format!("ftp://{}:{}@127.0.0.1:{}/", s.user, password, s.port)
}

/// What the user does with a working mount: read, write, status, then
/// `fusermount3 -u`; the password is in no command line meanwhile.
fn use_and_unmount(s: &FtpServer, d: &UserDir, ftpfs_pid_hint: &str) {
    let (uid, _, _) = user_ids();
    let shown = cmdlines_with(&s.password, uid);
    assert!(
        shown.is_empty(),
        "{ftpfs_pid_hint}: the password shows in {shown:?}"
    );
    let bin = fs::canonicalize(ftpfs_bin()).expect("ftpfs binary");
    let ours: Vec<u32> = pids_mentioning(d.s())
        .into_iter()
        .filter(|p| fs::read_link(format!("/proc/{p}/exe")).is_ok_and(|e| e == bin))
        .collect();
    assert!(
        !ours.is_empty(),
        "{ftpfs_pid_hint}: no ftpfs process for {}",
        d.s()
    );
    for pid in &ours {
        let uid = fs::metadata(format!("/proc/{pid}"))
            .map(|m| m.uid())
            .unwrap_or(0);
        assert_ne!(uid, 0, "{ftpfs_pid_hint}: ftpfs {pid} runs as root");
    }
    let read = run_for(T, as_user("cat", &[&format!("{}/hello.txt", d.s())]));
    assert_eq!(
        text(&read.stdout),
        "hello from the server",
        "{}",
        text(&read.stderr)
    );
    let write = run_for(
        T,
        as_user(
            "sh",
            &[
                "-c",
                &format!("echo written by a user > {}/mine.txt", d.s()),
            ],
        ),
    );
    assert!(write.status.success(), "write: {}", text(&write.stderr));
    assert_eq!(
        fs::read(s.path("mine.txt")).expect("mine.txt on the server"),
        b"written by a user\n"
    );
    let status = run_for(
        T,
        as_user(ftpfs_bin().to_str().unwrap(), &["status", d.s()]),
    );
    assert!(
        status.status.success() && text(&status.stdout).contains("connections:"),
        "ftpfs status as the user: {} {}",
        text(&status.stdout),
        text(&status.stderr)
    );
    let um = run_for(T, as_user("fusermount3", &["-u", d.s()]));
    assert!(um.status.success(), "fusermount3 -u: {}", text(&um.stderr));
    assert!(
        wait_until(T, || !is_mounted(&d.mnt)
            && pids_mentioning(d.s()).is_empty()),
        "{ftpfs_pid_hint}: still mounted or running after fusermount3 -u"
    );
}

fn openable_daemonized() {
    let (uid, gid, _) = user_ids();
    let s = server();
    let d = UserDir::new(uid, gid);
    let url = url_with_password(&s, &s.password);
    let out = run_for(T, d.ftpfs(&url, false, uid, gid));
    assert!(
        out.status.success(),
        "ftpfs as a user, daemonized: {} {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    // It returns once the mount is ready.
    assert!(is_mounted(&d.mnt), "not mounted when ftpfs returned");
    use_and_unmount(&s, &d, "daemonized");
}

fn openable_foreground() {
    let (uid, gid, _) = user_ids();
    let s = server();
    let d = UserDir::new(uid, gid);
    let url = url_with_password(&s, &s.password);
    let mut c = d.ftpfs(&url, true, uid, gid);
    c.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child: Child = c.spawn().expect("spawn ftpfs -f");
    assert!(
        wait_until(T, || is_mounted(&d.mnt)),
        "ftpfs -f as a user never mounted"
    );
    use_and_unmount(&s, &d, "-f");
    let st = wait_timeout(&mut child, T).expect("ftpfs -f exits after fusermount3 -u");
    assert!(st.success(), "ftpfs -f exit status {st}");
}

/// /dev/fuse 0600: no user may mount; ftpfs says why, and what to do.
fn refused_device(foreground: bool) {
    let (uid, gid, _) = user_ids();
    let s = server();
    let d = UserDir::new(uid, gid);
    let url = url_with_password(&s, &s.password);
    let out = run_for(T, d.ftpfs(&url, foreground, uid, gid));
    let err = text(&out.stderr);
    eprintln!("[/dev/fuse 0600, foreground={foreground}] {err}");
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.lines()
            .last()
            .is_some_and(|l| l.starts_with("ftpfs: cannot mount on ")
                && l.contains("/dev/fuse")
                && l.contains("chmod 0666 /dev/fuse")),
        "the error must name /dev/fuse and the fix: {err:?}"
    );
    assert!(!err.contains(&s.password), "{err}");
    assert!(!is_mounted(&d.mnt));
    assert!(pids_mentioning(d.s()).is_empty(), "ftpfs still runs");
}

/// A wrong password without -f: the refusal is printed on the terminal.
fn wrong_password_in_the_background() {
    let (uid, gid, _) = user_ids();
    let s = server();
    let d = UserDir::new(uid, gid);
    let url = url_with_password(&s, "not-the-password");
    let out = run_for(T, d.ftpfs(&url, false, uid, gid));
    let err = text(&out.stderr);
    eprintln!("[wrong password, daemonized] {err}");
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(
        err,
        format!(
            "ftpfs: cannot mount ftp://{}@127.0.0.1:{}: login as \"{}\" refused: 530 Authentication failed.",
            s.user, s.port, s.user
        )
    );
    assert!(!err.contains("not-the-password"));
    assert!(!is_mounted(&d.mnt));
}

#[test]
fn dev_fuse_0666_daemonized() {
    let _turn = TURN.lock().unwrap_or_else(|p| p.into_inner());
    let _mode = DevFuseMode::set(0o666);
    openable_daemonized();
}

#[test]
fn dev_fuse_0666_foreground() {
    let _turn = TURN.lock().unwrap_or_else(|p| p.into_inner());
    let _mode = DevFuseMode::set(0o666);
    openable_foreground();
}

#[test]
fn dev_fuse_0600_daemonized_says_why() {
    let _turn = TURN.lock().unwrap_or_else(|p| p.into_inner());
    let _mode = DevFuseMode::set(0o600);
    refused_device(false);
}

#[test]
fn dev_fuse_0600_foreground_says_why() {
    let _turn = TURN.lock().unwrap_or_else(|p| p.into_inner());
    let _mode = DevFuseMode::set(0o600);
    refused_device(true);
}

#[test]
fn wrong_password_without_f_is_printed() {
    let _turn = TURN.lock().unwrap_or_else(|p| p.into_inner());
    for mode in [0o666, 0o600] {
        let _mode = DevFuseMode::set(mode);
        wrong_password_in_the_background();
    }
}

/// `-o allow_other` by a user, without `user_allow_other` in /etc/fuse.conf:
/// refused at once, naming the fix (unless this machine's fuse.conf has it).
#[test]
fn allow_other_without_fuse_conf_names_the_fix() {
    let _turn = TURN.lock().unwrap_or_else(|p| p.into_inner());
    let conf = fs::read_to_string("/etc/fuse.conf").unwrap_or_default();
    if conf.lines().any(|l| l.trim() == "user_allow_other") {
        eprintln!("/etc/fuse.conf has user_allow_other: nothing to refuse here");
        return;
    }
    let _mode = DevFuseMode::set(0o666);
    let (uid, gid, _) = user_ids();
    let s = server();
    let d = UserDir::new(uid, gid);
    let out = run_for(
        T,
        as_user(
            ftpfs_bin().to_str().expect("utf-8 path"),
            &[
                "-o",
                "allow_other",
                &url_with_password(&s, &s.password),
                d.s(),
            ],
        ),
    );
    let err = text(&out.stderr);
    eprintln!("[allow_other as a user] {err}");
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(
        err,
        "ftpfs: -o allow_other needs 'user_allow_other' in /etc/fuse.conf for a mount by a \
         user other than root; as root, run: echo user_allow_other >> /etc/fuse.conf"
    );
    assert!(!is_mounted(&d.mnt));
}
