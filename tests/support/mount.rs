//! ftpfs mounts: [`Mount`] (an `ftpfs -f` process on a fresh directory,
//! unmounted on drop), [`run_ftpfs`] for negative tests, and the
//! /proc/self/mountinfo helpers ([`is_mounted`], [`force_unmount`]).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::process::{run_quiet, spawn_reader, wait_timeout};
use super::{file_for_child, ftpfs_bin, read_lossy, tmpdir, FtpServer};

/// How long `Mount::new` waits for the mount to appear in /proc/self/mountinfo.
pub const MOUNT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long `Mount`'s drop waits for ftpfs to exit after unmounting.
pub const UNMOUNT_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// /proc/self/mountinfo
// ---------------------------------------------------------------------------

/// Undo the octal escaping (`\040` etc.) used in /proc/self/mountinfo.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The fstype (e.g. `fuse.ftpfs`) of the mount whose mount point is exactly
/// `dir`, if any (the last such mount wins, as it is the visible one).
pub fn mount_fstype(dir: &Path) -> Option<String> {
    let dir = fs_canonical(dir);
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut found = None;
    for line in info.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        if fields.len() < 5 {
            continue;
        }
        if Path::new(&unescape_mountinfo(fields[4])) != dir {
            continue;
        }
        let fstype = fields
            .iter()
            .position(|f| *f == "-")
            .and_then(|i| fields.get(i + 1))
            .map(|s| s.to_string())
            .unwrap_or_default();
        found = Some(fstype);
    }
    found
}

/// Whether a FUSE filesystem (fstype `fuse` or `fuse.*`) is mounted at `dir`.
pub fn is_mounted(dir: &Path) -> bool {
    mount_fstype(dir).is_some_and(|t| t == "fuse" || t.starts_with("fuse."))
}

/// Canonical form of `p` without touching a (possibly hung) FUSE mount: only
/// the parent is canonicalized.
pub(crate) fn fs_canonical(p: &Path) -> PathBuf {
    match (p.parent(), p.file_name()) {
        (Some(parent), Some(name)) => fs::canonicalize(parent)
            .map(|cp| cp.join(name))
            .unwrap_or_else(|_| p.to_path_buf()),
        _ => p.to_path_buf(),
    }
}

/// Unmount whatever is mounted at `dir`: `fusermount3 -u`, falling back to
/// `umount -l`. Never panics. Returns whether `dir` is unmounted afterwards.
pub fn force_unmount(dir: &Path) -> bool {
    if mount_fstype(dir).is_none() {
        return true;
    }
    let d = dir.to_string_lossy().into_owned();
    let _ = run_quiet("fusermount3", &["-u", &d], UNMOUNT_TIMEOUT);
    if mount_fstype(dir).is_none() {
        return true;
    }
    let _ = run_quiet("umount", &["-l", &d], UNMOUNT_TIMEOUT);
    if mount_fstype(dir).is_none() {
        return true;
    }
    let _ = run_quiet("fusermount3", &["-uz", &d], UNMOUNT_TIMEOUT);
    mount_fstype(dir).is_none()
}

// ---------------------------------------------------------------------------
// ftpfs mounts
// ---------------------------------------------------------------------------

/// A running `ftpfs -f` mounted on a fresh temporary directory.
/// Drop unmounts (fusermount3 -u, else umount -l), then waits up to 10 s
/// for ftpfs to exit before killing it. Drop never panics.
pub struct Mount {
    /// The mount point.
    pub dir: PathBuf,
    child: Option<Child>,
    log_path: PathBuf,
    exit_status: Option<ExitStatus>,
    /// `None` once leaked because the directory could not be unmounted
    /// (removing it would recurse into the mounted filesystem).
    mount_tmp: Option<TempDir>,
    _log_dir: TempDir,
}

impl Mount {
    /// Mount `server` with mount options `extra_opts` (joined into `-o`).
    /// Panics with the ftpfs log if it does not come up within 20 s.
    pub fn new(server: &FtpServer, extra_opts: &[&str]) -> Mount {
        Self::try_new(server, extra_opts).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn try_new(server: &FtpServer, extra_opts: &[&str]) -> Result<Mount, String> {
        let mut opts: Vec<&str> = server.mount_opts().iter().map(String::as_str).collect();
        opts.extend_from_slice(extra_opts);
        Self::try_spawn(&server.url(), Some(&server.password), &opts, &[], &[])
    }

    /// Mount a sub-directory of the server (`ftp://user@host:port/<path>`).
    pub fn new_at(server: &FtpServer, path: &str, extra_opts: &[&str]) -> Mount {
        Self::try_spawn(
            &server.url_with_path(path),
            Some(&server.password),
            extra_opts,
            &[],
            &[],
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Fully general form: runs
    /// `ftpfs -f [extra_args...] [-o opts] URL DIR` with `FTPFS_PASSWORD`
    /// (if `password` is given), `RUST_LOG=ftpfs=debug` and `env` (which
    /// may override both), and waits until DIR is a FUSE mount.
    pub fn try_spawn(
        url: &str,
        password: Option<&str>,
        opts: &[&str],
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Mount, String> {
        let mount_tmp = tmpdir("ftpfs-mnt-")?;
        let log_dir = tmpdir("ftpfs-log-")?;
        let dir = fs_canonical(mount_tmp.path());
        let log_path = log_dir.path().join("ftpfs.log");
        let log = file_for_child(&log_path)?;
        let log2 = log.try_clone().map_err(|e| format!("dup log: {e}"))?;

        let mut cmd = Command::new(ftpfs_bin());
        cmd.arg("-f").args(extra_args);
        if !opts.is_empty() {
            cmd.arg("-o").arg(opts.join(","));
        }
        cmd.arg(url).arg(&dir);
        cmd.env(
            "RUST_LOG",
            std::env::var("FTPFS_TEST_LOG").unwrap_or("ftpfs=debug".into()),
        )
        .env("RUST_BACKTRACE", "1")
        .env_remove("FTPFS_PASSWORD");
        if let Some(pw) = password {
            cmd.env("FTPFS_PASSWORD", pw);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null()).stdout(log).stderr(log2);
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", ftpfs_bin().display()))?;

        let mut mount = Mount {
            dir,
            child: Some(child),
            log_path,
            exit_status: None,
            mount_tmp: Some(mount_tmp),
            _log_dir: log_dir,
        };
        let deadline = Instant::now() + MOUNT_TIMEOUT;
        loop {
            if is_mounted(&mount.dir) {
                return Ok(mount);
            }
            if let Some(status) = mount.try_wait() {
                return Err(format!(
                    "ftpfs exited with {status} before {} was mounted ({url})\n--- ftpfs log ---\n{}",
                    mount.dir.display(),
                    mount.log()
                ));
            }
            if Instant::now() >= deadline {
                let msg = format!(
                    "{} not mounted after {MOUNT_TIMEOUT:?} ({url})\n--- ftpfs log ---\n{}",
                    mount.dir.display(),
                    mount.log()
                );
                drop(mount);
                return Err(msg);
            }
            thread::sleep(Duration::from_millis(25));
        }
    }

    /// `dir.join(rel)` (leading '/' of `rel` ignored).
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel.trim_start_matches('/'))
    }

    /// Everything ftpfs wrote to stdout/stderr so far.
    pub fn log(&self) -> String {
        read_lossy(&self.log_path)
    }

    /// Runs `ftpfs status DIR`: (success, stdout, stderr).
    pub fn status(&self) -> (bool, String, String) {
        status_of(&self.dir)
    }

    /// ftpfs's pid, while it has not been reaped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Whether DIR is currently a FUSE mount.
    pub fn is_mounted(&self) -> bool {
        is_mounted(&self.dir)
    }

    /// Send a signal (name or number, as accepted by `kill -s`, e.g. "TERM")
    /// to the ftpfs process.
    pub fn signal(&self, sig: &str) -> bool {
        match self.pid() {
            Some(pid) if self.exit_status.is_none() => run_quiet(
                "kill",
                &["-s", sig, &pid.to_string()],
                Duration::from_secs(5),
            )
            .is_some_and(|s| s.success()),
            _ => false,
        }
    }

    /// Non-blocking: ftpfs's exit status if it has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.exit_status.is_none() {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.exit_status = Some(status);
                }
            }
        }
        self.exit_status
    }

    /// Wait up to `timeout` for ftpfs to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_wait() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Unmount with `fusermount3 -u` (only) and wait up to 10 s for ftpfs to
    /// exit. Err if fusermount3 fails or ftpfs does not exit in time.
    pub fn unmount(&mut self) -> Result<ExitStatus, String> {
        if is_mounted(&self.dir) {
            let out = Command::new("fusermount3")
                .arg("-u")
                .arg(&self.dir)
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("fusermount3: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "fusermount3 -u {} failed: {}",
                    self.dir.display(),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
        self.wait_exit(UNMOUNT_TIMEOUT).ok_or_else(|| {
            format!(
                "ftpfs did not exit within {UNMOUNT_TIMEOUT:?} after unmount\n{}",
                self.log()
            )
        })
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        force_unmount(&self.dir);
        if self.wait_exit(UNMOUNT_TIMEOUT).is_none() {
            if let Some(child) = self.child.as_mut() {
                let _ = child.kill();
                if let Ok(status) = child.wait() {
                    self.exit_status = Some(status);
                }
            }
        }
        // A killed ftpfs may leave a dead ("transport endpoint not
        // connected") mount behind.
        if !force_unmount(&self.dir) {
            // Never let TempDir's cleanup recurse into a live mount.
            if let Some(tmp) = self.mount_tmp.take() {
                let path = tmp.keep();
                eprintln!(
                    "warning: could not unmount {}; leaving it in place",
                    path.display()
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Running ftpfs for negative tests
// ---------------------------------------------------------------------------

/// Run `ftpfs ARGS...` with extra environment `env` (stdin = /dev/null, in a
/// new session via `setsid` when available, so it has no controlling
/// terminal to prompt on). Kills it after `timeout`. Returns
/// `(status, stdout, stderr)`; on timeout the status is the kill signal's.
/// If it timed out, any FUSE mount left at a directory argument is unmounted.
pub fn run_ftpfs(
    args: &[&str],
    env: &[(&str, &str)],
    timeout: Duration,
) -> (ExitStatus, String, String) {
    let setsid = ["/usr/bin/setsid", "/bin/setsid"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    let mut cmd = match setsid {
        Some(s) => {
            let mut c = Command::new(s);
            c.arg(ftpfs_bin());
            c
        }
        None => Command::new(ftpfs_bin()),
    };
    cmd.args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", ftpfs_bin().display()));

    let out_buf = Arc::new(Mutex::new(Vec::new()));
    let err_buf = Arc::new(Mutex::new(Vec::new()));
    let out_done = spawn_reader(child.stdout.take(), out_buf.clone());
    let err_done = spawn_reader(child.stderr.take(), err_buf.clone());

    let (status, timed_out) = match wait_timeout(&mut child, timeout) {
        Some(s) => (s, false),
        None => {
            let _ = child.kill();
            (child.wait().expect("wait for ftpfs"), true)
        }
    };
    // A daemonized grandchild might keep the pipes open: don't wait forever.
    let _ = out_done.recv_timeout(Duration::from_secs(2));
    let _ = err_done.recv_timeout(Duration::from_secs(2));

    if timed_out {
        for a in args {
            let p = Path::new(a);
            if p.is_absolute() && is_mounted(p) {
                force_unmount(p);
            }
        }
    }
    let take = |b: &Arc<Mutex<Vec<u8>>>| {
        let v = b.lock().map(|v| v.clone()).unwrap_or_default();
        String::from_utf8_lossy(&v).into_owned()
    };
    (status, take(&out_buf), take(&err_buf))
}

/// Runs `ftpfs status DIR` for any directory: (success, stdout, stderr).
pub fn status_of(dir: &Path) -> (bool, String, String) {
    let out = Command::new(ftpfs_bin())
        .arg("status")
        .arg(dir)
        .output()
        .expect("run ftpfs status");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
