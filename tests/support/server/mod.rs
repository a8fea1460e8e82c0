//! [`FtpServer`]: a throw-away FTP server on 127.0.0.1 with its own root,
//! port and command log, killed on drop. This file has what every kind
//! shares (the struct, its accessors, the command log, waiting for the
//! greeting); one file per kind starts them, and restart.rs stops and
//! restarts them.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::{read_lossy, wait_until, RawFtp};
use vsftpd::chown_tree;

mod extra;
mod pyftpdlib;
mod restart;
mod vsftpd;

pub use extra::{extra_server_bin, extra_servers_dir};
pub use restart::RESTART_TIMEOUT;
pub use vsftpd::{
    ensure_vsftpd_user, lookup_user, VSFTPD_PASSWORD, VSFTPD_SECURE_CHROOT_DIR, VSFTPD_USER,
};

/// How long a server may take to start and greet us with `220`.
pub const SERVER_START_TIMEOUT: Duration = Duration::from_secs(10);

/// Which FTP server implementation an [`FtpServer`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerKind {
    Pyftpdlib,
    Vsftpd,
}

impl ServerKind {
    /// The server's name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            ServerKind::Pyftpdlib => "pyftpdlib",
            ServerKind::Vsftpd => "vsftpd",
        }
    }
}

/// The exact server an [`FtpServer`] runs. [`ServerKind`] stays at two
/// variants because tests/external.rs and tests/faults.rs match on it
/// exhaustively; pure-ftpd and ProFTPD servers have `kind ==
/// ServerKind::Vsftpd` (a real, root-run server with unix users) and are
/// told apart by this.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerFlavor {
    Pyftpdlib,
    Vsftpd,
    /// pure-ftpd unpacked by `install_extra_servers` (scripts/lib.sh).
    PureFtpd,
    /// ProFTPD unpacked by `install_extra_servers` (scripts/lib.sh).
    Proftpd,
    /// pyftpdlib with `--dos-list` ([`FtpServer::dos_style`]).
    DosStyle,
}

impl ServerFlavor {
    /// The server's name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            ServerFlavor::Pyftpdlib => "pyftpdlib",
            ServerFlavor::Vsftpd => "vsftpd",
            ServerFlavor::PureFtpd => "pure-ftpd",
            ServerFlavor::Proftpd => "proftpd",
            ServerFlavor::DosStyle => "dos-style",
        }
    }
}
/// A throw-away FTP server listening on 127.0.0.1 with its own root
/// directory, port and command log. Killed (and reaped) on drop.
pub struct FtpServer {
    pub port: u16,
    /// The directory served as `/` (a temporary directory owned by this struct).
    pub root: PathBuf,
    pub user: String,
    pub password: String,
    pub kind: ServerKind,
    /// Which server exactly (see [`ServerFlavor`]).
    pub flavor: ServerFlavor,
    cmdlog: PathBuf,
    /// stdout/stderr of the server process.
    outlog: PathBuf,
    cmd_offset: AtomicU64,
    /// (uid, gid) files under `root` must belong to (vsftpd only).
    owner: Option<(u32, u32)>,
    child: Child,
    /// pyftpdlib runs with --watch-stdin: it exits when this pipe closes,
    /// i.e. also when the test process dies without running destructors.
    _stdin: Option<ChildStdin>,
    _root_dir: TempDir,
    _work_dir: TempDir,
    /// `-o` options every [`Mount::new`] of this server adds (e.g. TLS and its CA).
    mount_opts: Vec<String>,
    /// Files the server needs for its lifetime (e.g. its certificates).
    _keep: Vec<TempDir>,
}

impl FtpServer {
    /// `ftp://user@127.0.0.1:port/` (the password is passed via
    /// `FTPFS_PASSWORD`); anonymous servers give `ftp://127.0.0.1:port/`.
    pub fn url(&self) -> String {
        if self.is_anonymous() {
            format!("ftp://127.0.0.1:{}/", self.port)
        } else {
            format!("ftp://{}@127.0.0.1:{}/", self.user, self.port)
        }
    }

    /// [`url`](Self::url) plus a sub-path, e.g. `url_with_path("a/b")`.
    pub fn url_with_path(&self, path: &str) -> String {
        format!("{}{}", self.url(), path.trim_start_matches('/'))
    }

    pub fn is_anonymous(&self) -> bool {
        self.user == "anonymous" && self.password.is_empty()
    }

    /// The FTP commands received since start (or the last
    /// [`clear_commands`](Self::clear_commands)), e.g. `"LIST -a"`,
    /// `"RETR /dir/file"`, with passwords masked as `"PASS ****"`.
    pub fn commands(&self) -> Vec<String> {
        let offset = self.cmd_offset.load(Ordering::SeqCst);
        let mut data = Vec::new();
        if let Ok(mut f) = File::open(&self.cmdlog) {
            if f.seek(SeekFrom::Start(offset)).is_ok() {
                let _ = f.read_to_end(&mut data);
            }
        }
        // Ignore a trailing partial line (still being written).
        if let Some(pos) = data.iter().rposition(|&b| b == b'\n') {
            data.truncate(pos + 1);
        } else {
            data.clear();
        }
        String::from_utf8_lossy(&data)
            .lines()
            .filter_map(|line| match self.flavor {
                ServerFlavor::Pyftpdlib | ServerFlavor::DosStyle => Some(line.to_string()),
                ServerFlavor::Vsftpd => parse_vsftpd_command(line),
                // pure-ftpd only logs commands to syslog: its log stays empty.
                ServerFlavor::PureFtpd => None,
                // ExtendedLog with LogFormat "%m %J" (PASS shows "(hidden)").
                ServerFlavor::Proftpd => Some(line.trim_end().to_string()),
            })
            .map(|c| mask_password(&c))
            .collect()
    }

    /// The raw command log file (pyftpdlib: one command per line;
    /// vsftpd: its protocol log).
    pub fn cmdlog_path(&self) -> &Path {
        &self.cmdlog
    }

    /// Forget the commands received so far.
    pub fn clear_commands(&self) {
        let len = fs::metadata(&self.cmdlog).map(|m| m.len()).unwrap_or(0);
        self.cmd_offset.store(len, Ordering::SeqCst);
    }

    /// Received commands whose verb (first word, case-insensitive) is `verb`.
    pub fn commands_named(&self, verb: &str) -> Vec<String> {
        self.commands()
            .into_iter()
            .filter(|c| {
                c.split(' ')
                    .next()
                    .is_some_and(|v| v.eq_ignore_ascii_case(verb))
            })
            .collect()
    }

    /// Poll [`commands`](Self::commands) until `pred` holds (true) or the
    /// timeout expires (false).
    pub fn wait_for_commands(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&[String]) -> bool,
    ) -> bool {
        wait_until(timeout, || pred(&self.commands()))
    }

    /// Server output (pyftpdlib's log / vsftpd's stderr) followed, for
    /// vsftpd, by its protocol log. Handy in assertion messages.
    pub fn log(&self) -> String {
        let mut s = read_lossy(&self.outlog);
        if self.flavor == ServerFlavor::Vsftpd {
            s.push_str("\n--- vsftpd.log ---\n");
            s.push_str(&read_lossy(&self.cmdlog));
        }
        if self.flavor == ServerFlavor::Proftpd {
            s.push_str("\n--- proftpd SystemLog ---\n");
            s.push_str(&read_lossy(&self._work_dir.path().join("system.log")));
            s.push_str("\n--- proftpd ExtendedLog ---\n");
            s.push_str(&read_lossy(&self.cmdlog));
        }
        s
    }

    /// `root.join(rel)` (leading '/' of `rel` ignored).
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel.trim_start_matches('/'))
    }

    /// Create a file under the root (parents included) with `data`, owned
    /// by the FTP user so the server may modify/delete it.
    pub fn create_file(&self, rel: &str, data: &[u8]) -> PathBuf {
        let p = self.path(rel);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent)
                .unwrap_or_else(|e| panic!("mkdir {}: {e}", parent.display()));
        }
        fs::write(&p, data).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        self.fix_ownership();
        p
    }

    /// Create a directory (and parents) under the root, owned by the FTP user.
    pub fn create_dir(&self, rel: &str) -> PathBuf {
        let p = self.path(rel);
        fs::create_dir_all(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        self.fix_ownership();
        p
    }

    /// After creating files under `root` directly (as root), give them to
    /// the FTP user (vsftpd runs sessions as `ftpfstest`). No-op for
    /// pyftpdlib, which runs as the test user.
    pub fn fix_ownership(&self) {
        if let Some((uid, gid)) = self.owner {
            chown_tree(&self.root, uid, gid)
                .unwrap_or_else(|e| panic!("chown -R {}: {e}", self.root.display()));
        }
    }

    /// A logged-in raw control connection to this server.
    pub fn raw_login(&self) -> io::Result<RawFtp> {
        let (mut ftp, code, text) = RawFtp::connect(self.port, SERVER_START_TIMEOUT)?;
        if code != 220 {
            return Err(io::Error::other(format!("unexpected greeting: {text}")));
        }
        ftp.login(&self.user, &self.password)?;
        Ok(ftp)
    }

    /// The server's pid (for diagnostics only).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl FtpServer {
    /// This server wants these `-o` options on every [`Mount::new`] (TLS, a CA),
    /// and keeps `keep` (its certificates) alive as long as it runs.
    pub fn with_mount_opts(mut self, opts: &[&str], keep: Option<TempDir>) -> FtpServer {
        self.mount_opts = opts.iter().map(|o| o.to_string()).collect();
        self._keep.extend(keep);
        self
    }

    /// The `-o` options every [`Mount::new`] of this server adds.
    pub(crate) fn mount_opts(&self) -> &[String] {
        &self.mount_opts
    }

    /// A file in the directories kept by [`with_mount_opts`](Self::with_mount_opts).
    pub fn kept_file(&self, name: &str) -> Option<PathBuf> {
        self._keep
            .iter()
            .map(|d| d.path().join(name))
            .find(|p| p.exists())
    }
}

impl Drop for FtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl FtpServer {
    /// A server started as root that logs users in as [`VSFTPD_USER`] (vsftpd,
    /// pure-ftpd, ProFTPD); their `kind` is [`ServerKind::Vsftpd`].
    fn run_as_test_user(
        flavor: ServerFlavor,
        port: u16,
        (root, root_dir, work): (PathBuf, TempDir, TempDir),
        (cmdlog, outlog): (PathBuf, PathBuf),
        owner: (u32, u32),
        child: Child,
    ) -> FtpServer {
        FtpServer {
            port,
            root,
            user: VSFTPD_USER.to_string(),
            password: VSFTPD_PASSWORD.to_string(),
            kind: ServerKind::Vsftpd,
            flavor,
            cmdlog,
            outlog,
            cmd_offset: AtomicU64::new(0),
            owner: Some(owner),
            child,
            _stdin: None,
            _root_dir: root_dir,
            _work_dir: work,
            mount_opts: Vec::new(),
            _keep: Vec::new(),
        }
    }
}

/// Extract the command from a vsftpd protocol log line such as
/// `Mon Nov 23 16:15:10 2026 [pid 4504] [ftpfstest] FTP command: Client "127.0.0.1", "LIST -a"`.
pub fn parse_vsftpd_command(line: &str) -> Option<String> {
    let rest = &line[line.find("FTP command: Client \"")? + "FTP command: Client \"".len()..];
    let rest = &rest[rest.find("\", \"")? + 4..];
    Some(rest.strip_suffix('"').unwrap_or(rest).to_string())
}

fn mask_password(cmd: &str) -> String {
    match cmd.split_once(' ') {
        Some((verb, _)) if verb.eq_ignore_ascii_case("PASS") => format!("{verb} ****"),
        _ => cmd.to_string(),
    }
}

/// Connect to `port` and read a `220` greeting (containing `token`, if
/// given), retrying until `timeout`.
pub(crate) fn wait_for_banner(
    port: u16,
    token: Option<&str>,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    while Instant::now() < deadline {
        match RawFtp::connect(port, Duration::from_secs(2)) {
            Ok((_ftp, 220, text)) => {
                if token.is_none_or(|t| text.contains(t)) {
                    return Ok(());
                }
                return Err(format!("wrong server answered on port {port}: {text}"));
            }
            Ok((_, _, text)) => last = format!("unexpected greeting: {text}"),
            Err(e) => last = e.to_string(),
        }
        thread::sleep(Duration::from_millis(50));
    }
    Err(format!(
        "no 220 greeting on port {port} within {timeout:?}: {last}"
    ))
}

/// Waits until `port` accepts connections while `child` still runs (for servers
/// whose greeting cannot be read in plain text).
pub(crate) fn wait_for_listen_or_exit(
    child: &mut Child,
    port: u16,
    what: &str,
) -> Result<(), String> {
    let deadline = Instant::now() + SERVER_START_TIMEOUT;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("{what} exited with {status}"));
        }
        if Instant::now() > deadline {
            return Err(format!("{what} did not listen on port {port} in time"));
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok() {
            // Give a server that lost a bind race a moment to die.
            thread::sleep(Duration::from_millis(100));
            return match child.try_wait() {
                Ok(None) => Ok(()),
                Ok(Some(status)) => Err(format!("{what} exited with {status} (bind)")),
                Err(e) => Err(e.to_string()),
            };
        }
        thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) fn wait_for_banner_or_exit(
    child: &mut Child,
    port: u16,
    token: &str,
) -> Result<(), String> {
    let deadline = Instant::now() + SERVER_START_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("vsftpd exited with {status}"));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("vsftpd did not greet on port {port} in time"));
        }
        match wait_for_banner(port, Some(token), left.min(Duration::from_millis(300))) {
            Ok(()) => {
                // Still ours and alive?
                return match child.try_wait() {
                    Ok(None) => Ok(()),
                    Ok(Some(status)) => Err(format!("vsftpd exited with {status}")),
                    Err(e) => Err(e.to_string()),
                };
            }
            Err(e) if e.contains("wrong server") => return Err(e),
            Err(_) => {}
        }
    }
}

/// Wait for a `220` greeting (containing `token`, if given) from `child` on
/// `port`; Err if the child exits first or nothing answers in time.
pub(crate) fn wait_for_child_banner(
    child: &mut Child,
    port: u16,
    token: Option<&str>,
    what: &str,
) -> Result<(), String> {
    let deadline = Instant::now() + SERVER_START_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("{what} exited with {status}"));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("{what} did not greet on port {port} in time"));
        }
        match wait_for_banner(port, token, left.min(Duration::from_millis(300))) {
            Ok(()) => {
                // Give a server that lost a bind race a moment to die.
                thread::sleep(Duration::from_millis(50));
                return match child.try_wait() {
                    Ok(None) => Ok(()),
                    Ok(Some(status)) => Err(format!("{what} exited with {status}")),
                    Err(e) => Err(e.to_string()),
                };
            }
            Err(e) if e.contains("wrong server") => return Err(e),
            Err(_) => {}
        }
    }
}
