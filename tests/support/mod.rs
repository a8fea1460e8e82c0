//! Integration-test harness for ftpfs.
//!
//! Every `tests/*.rs` file does `mod support;` and uses what it needs:
//!
//! * [`FtpServer`]: a throw-away FTP server (pyftpdlib via
//!   `scripts/ftpserver.py`, or a per-test vsftpd instance) with its own root
//!   directory, port and command log.
//! * [`Mount`]: an `ftpfs -f` process mounted on a fresh temporary directory,
//!   unmounted (and reaped) on drop.
//! * [`run_ftpfs`]: run ftpfs with arbitrary arguments (negative tests).
//! * Small helpers: deterministic file contents, streaming compare, polling.
//!
//! Everything is safe for the parallel test threads of `cargo test`: each
//! server/mount uses its own temporary directories and ports, and the only
//! process-wide state is the one-time creation of the vsftpd system user.
#![allow(dead_code)]

/// Generates one test per server kind for a scenario `fn(FtpServer)`; use it
/// after `#[macro_use] mod support;`.
#[allow(unused_macros)] // not every test file runs on both servers
macro_rules! on_both_servers {
    ($($name:ident),* $(,)?) => {
        mod pyftpdlib {
            $( #[test] fn $name() { super::$name($crate::support::FtpServer::pyftpdlib()) } )*
        }
        mod vsftpd {
            $( #[test] fn $name() { super::$name($crate::support::FtpServer::vsftpd()) } )*
        }
    };
}

use std::collections::hash_map::RandomState;
use std::fs::{self, File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub mod pki;
mod proxy;
#[allow(unused_imports)] // not every test binary uses the proxy
pub use proxy::{ControlReset, DataAction, DataFault, Faults, Proxy, ProxyConfig, Stats};

/// System user used for vsftpd logins (created on demand, see [`ensure_vsftpd_user`]).
pub const VSFTPD_USER: &str = "ftpfstest";
/// Password of [`VSFTPD_USER`].
pub const VSFTPD_PASSWORD: &str = "ftpfstest-pw";
/// vsftpd needs this (empty, root-owned) directory to exist.
pub const VSFTPD_SECURE_CHROOT_DIR: &str = "/var/run/vsftpd/empty";

/// How long a server may take to start and greet us with `220`.
pub const SERVER_START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `Mount::new` waits for the mount to appear in /proc/self/mountinfo.
pub const MOUNT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long `Mount`'s drop waits for ftpfs to exit after unmounting.
pub const UNMOUNT_TIMEOUT: Duration = Duration::from_secs(10);

/// Path of the ftpfs binary built by cargo for these tests.
pub fn ftpfs_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ftpfs"))
}

/// Root of the repository (the crate's manifest directory).
pub fn repo_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Path of `scripts/ftpserver.py`.
pub fn ftpserver_script() -> PathBuf {
    repo_dir().join("scripts").join("ftpserver.py")
}

// ---------------------------------------------------------------------------
// Small generic helpers
// ---------------------------------------------------------------------------

/// A fresh random-ish u64 (std's `RandomState` is randomly keyed per call).
pub fn random_u64() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// Poll `cond` every 20 ms until it returns true or `timeout` expires.
/// Returns whether the condition became true.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Read a file as (lossy) UTF-8; empty string if it cannot be read.
pub fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// Deterministic pseudo-random bytes (xorshift64*), identical for equal
/// `(len, seed)`.
pub fn gen_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut rng = XorShift::new(seed);
    while out.len() < len {
        let v = rng.next().to_le_bytes();
        let n = (len - out.len()).min(8);
        out.extend_from_slice(&v[..n]);
    }
    out
}

/// Write `len` deterministic pseudo-random bytes (see [`gen_bytes`]) to
/// `path`, creating parent directories. Panics on I/O errors.
pub fn write_file(path: impl AsRef<Path>, len: usize, seed: u64) {
    let path = path.as_ref();
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)
            .unwrap_or_else(|e| panic!("create_dir_all {}: {e}", parent.display()));
    }
    let mut f = io::BufWriter::new(
        File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display())),
    );
    let mut rng = XorShift::new(seed);
    let mut left = len;
    let mut buf = [0u8; 64 * 1024];
    while left > 0 {
        let n = left.min(buf.len());
        for chunk in buf[..n].chunks_mut(8) {
            let v = rng.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
        f.write_all(&buf[..n])
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        left -= n;
    }
    f.flush()
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        // Mix the seed so that small seeds give unrelated streams; never 0.
        let s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
        XorShift(if s == 0 { 0x2545_F491_4F6C_DD1D } else { s })
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Streaming byte-for-byte comparison of two files. Returns false (and prints
/// the reason to stderr) if they differ or either cannot be read.
pub fn files_equal(a: impl AsRef<Path>, b: impl AsRef<Path>) -> bool {
    let (a, b) = (a.as_ref(), b.as_ref());
    match first_difference(a, b) {
        Ok(None) => true,
        Ok(Some(off)) => {
            eprintln!(
                "files_equal: {} and {} differ at byte {off}",
                a.display(),
                b.display()
            );
            false
        }
        Err(e) => {
            eprintln!("files_equal: {} vs {}: {e}", a.display(), b.display());
            false
        }
    }
}

/// Offset of the first differing byte (or of the end of the shorter file),
/// `None` if the files are identical.
pub fn first_difference(a: &Path, b: &Path) -> io::Result<Option<u64>> {
    let mut fa = BufReader::with_capacity(256 * 1024, File::open(a)?);
    let mut fb = BufReader::with_capacity(256 * 1024, File::open(b)?);
    let mut off = 0u64;
    loop {
        let ba = fa.fill_buf()?;
        let bb = fb.fill_buf()?;
        if ba.is_empty() || bb.is_empty() {
            return Ok(if ba.is_empty() && bb.is_empty() {
                None
            } else {
                Some(off)
            });
        }
        let n = ba.len().min(bb.len());
        if let Some(i) = ba[..n].iter().zip(&bb[..n]).position(|(x, y)| x != y) {
            return Ok(Some(off + i as u64));
        }
        fa.consume(n);
        fb.consume(n);
        off += n as u64;
    }
}

/// Pick a currently free TCP port on 127.0.0.1 (bind to port 0 and release
/// it). Callers must cope with the (rare) race of someone else taking it.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// Run a command with a timeout (killing it on expiry), discarding output.
/// Returns `None` if it could not be started or timed out.
fn run_quiet(program: &str, args: &[&str], timeout: Duration) -> Option<ExitStatus> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let status = wait_timeout(&mut child, timeout);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    status
}

/// Wait for `child` up to `timeout`; `None` if it is still running.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => {}
            Err(_) => return None,
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

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
fn fs_canonical(p: &Path) -> PathBuf {
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
// vsftpd system user
// ---------------------------------------------------------------------------

/// Look up `(uid, gid)` of a user in /etc/passwd.
pub fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() >= 4 && f[0] == name {
            Some((f[2].parse().ok()?, f[3].parse().ok()?))
        } else {
            None
        }
    })
}

fn run_checked(program: &str, args: &[&str], stdin_data: Option<&str>) -> Result<(), String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin_data.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if let Some(data) = stdin_data {
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(data.as_bytes())
                .map_err(|e| format!("{program}: writing stdin: {e}"))?;
        }
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn create_vsftpd_user() -> Result<(u32, u32), String> {
    if lookup_user(VSFTPD_USER).is_none() {
        // Another process (e.g. a parallel test binary) may create it at the
        // same time; only complain if it still does not exist afterwards.
        let res = run_checked(
            "useradd",
            &["--create-home", "--shell", "/bin/bash", VSFTPD_USER],
            None,
        );
        if lookup_user(VSFTPD_USER).is_none() {
            return Err(format!(
                "cannot create user {VSFTPD_USER} (tests using vsftpd must run as root): {}",
                res.err().unwrap_or_default()
            ));
        }
    }
    run_checked(
        "chpasswd",
        &[],
        Some(&format!("{VSFTPD_USER}:{VSFTPD_PASSWORD}\n")),
    )?;
    // vsftpd's PAM config denies users listed in /etc/ftpusers.
    if let Ok(list) = fs::read_to_string("/etc/ftpusers") {
        if list.lines().any(|l| l.trim() == VSFTPD_USER) {
            let kept: String = list
                .lines()
                .filter(|l| l.trim() != VSFTPD_USER)
                .map(|l| format!("{l}\n"))
                .collect();
            fs::write("/etc/ftpusers", kept).map_err(|e| format!("/etc/ftpusers: {e}"))?;
        }
    }
    fs::create_dir_all(VSFTPD_SECURE_CHROOT_DIR)
        .map_err(|e| format!("mkdir {VSFTPD_SECURE_CHROOT_DIR}: {e}"))?;
    lookup_user(VSFTPD_USER).ok_or_else(|| format!("user {VSFTPD_USER} vanished"))
}

/// Make sure the system user for vsftpd logins exists with the expected
/// password (done once per test process). Returns its `(uid, gid)`.
pub fn ensure_vsftpd_user() -> Result<(u32, u32), String> {
    static USER: OnceLock<Result<(u32, u32), String>> = OnceLock::new();
    USER.get_or_init(create_vsftpd_user).clone()
}

/// Recursively chown `path` (without following symlinks).
fn chown_tree(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
    let meta = fs::symlink_metadata(path)?;
    if meta.is_dir() {
        for entry in fs::read_dir(path)? {
            chown_tree(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Raw FTP control connection (for harness checks and server-side asserts)
// ---------------------------------------------------------------------------

/// A minimal FTP control-connection client (no data connections).
pub struct RawFtp {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl RawFtp {
    /// Connect and read the greeting; returns the client and the greeting.
    pub fn connect(port: u16, timeout: Duration) -> io::Result<(RawFtp, u32, String)> {
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let writer = stream.try_clone()?;
        let mut ftp = RawFtp {
            reader: BufReader::new(stream),
            writer,
        };
        let (code, text) = ftp.read_reply()?;
        Ok((ftp, code, text))
    }

    /// Read one (possibly multi-line) reply: `(code, full text)`.
    pub fn read_reply(&mut self) -> io::Result<(u32, String)> {
        let mut text = String::new();
        let mut first = String::new();
        if self.reader.read_line(&mut first)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        text.push_str(&first);
        let code: u32 = first
            .get(..3)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, first.clone()))?;
        if first.as_bytes().get(3) == Some(&b'-') {
            let end = format!("{code} ");
            loop {
                let mut line = String::new();
                if self.reader.read_line(&mut line)? == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed in multi-line reply",
                    ));
                }
                text.push_str(&line);
                if line.starts_with(&end) {
                    break;
                }
            }
        }
        Ok((code, text))
    }

    /// Send a command line and read its reply.
    pub fn cmd(&mut self, line: &str) -> io::Result<(u32, String)> {
        self.writer.write_all(format!("{line}\r\n").as_bytes())?;
        self.writer.flush()?;
        self.read_reply()
    }

    /// `USER` + `PASS`; Ok if the server answered 230.
    pub fn login(&mut self, user: &str, password: &str) -> io::Result<()> {
        let (code, text) = self.cmd(&format!("USER {user}"))?;
        let (code, text) = if code == 331 {
            self.cmd(&format!("PASS {password}"))?
        } else {
            (code, text)
        };
        if code == 230 {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("login failed: {text}"),
            ))
        }
    }
}

// ---------------------------------------------------------------------------
// FTP servers
// ---------------------------------------------------------------------------

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

/// Runs `f` on its own thread and returns its result and how long it took;
/// `None` if it did not finish within `limit` (the thread is left behind,
/// blocked in the mount, and ends when the mount goes away).
pub fn within<R: Send + 'static>(
    limit: Duration,
    f: impl FnOnce() -> R + Send + 'static,
) -> Option<(R, Duration)> {
    let (tx, rx) = std::sync::mpsc::channel();
    let t0 = Instant::now();
    std::thread::spawn(move || {
        let r = f();
        let _ = tx.send((r, t0.elapsed()));
    });
    rx.recv_timeout(limit).ok()
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The end of the ftpfs log and of the server's command list, for assertion messages.
pub fn diag(m: &Mount, s: &FtpServer) -> String {
    format!(
        "--- ftpfs log (tail) ---\n{}\n--- server commands (tail) ---\n{}",
        tail(&m.log(), 120),
        tail(&s.commands().join("\n"), 80)
    )
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
    /// pyftpdlib server with user `ftpuser` and a random password.
    pub fn pyftpdlib() -> FtpServer {
        Self::pyftpdlib_with_args(&[])
    }

    /// pyftpdlib server with extra `scripts/ftpserver.py` arguments
    /// (e.g. `&["--no-mlsd"]`).
    pub fn pyftpdlib_with_args(extra: &[&str]) -> FtpServer {
        Self::try_pyftpdlib(Some("ftpuser"), extra).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Anonymous, read-only pyftpdlib server (`user` is "anonymous").
    pub fn pyftpdlib_anonymous() -> FtpServer {
        Self::try_pyftpdlib(None, &[]).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Start a pyftpdlib server; `user: None` means anonymous read-only.
    pub fn try_pyftpdlib(user: Option<&str>, extra: &[&str]) -> Result<FtpServer, String> {
        let work = tmpdir("ftpfs-srv-")?;
        let root_dir = tmpdir("ftpfs-root-")?;
        let root = root_dir.path().to_path_buf();
        let cmdlog = work.path().join("commands.log");
        let outlog = work.path().join("server.log");
        let ready = work.path().join("server.out");
        File::create(&cmdlog).map_err(|e| format!("create {}: {e}", cmdlog.display()))?;
        let password = match user {
            Some(_) => format!("pw-{:016x}", random_u64()),
            None => String::new(),
        };

        let mut cmd = Command::new("python3");
        cmd.arg(ftpserver_script())
            .args(["--host", "127.0.0.1", "--port", "0", "--watch-stdin"])
            .arg("--root")
            .arg(&root)
            .arg("--cmdlog")
            .arg(&cmdlog);
        if let Some(u) = user {
            cmd.args(["--user", u, "--password", &password]);
        }
        cmd.args(extra)
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::piped())
            .stdout(file_for_child(&ready)?)
            .stderr(file_for_child(&outlog)?);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start python3 scripts/ftpserver.py: {e}"))?;
        let stdin = child.stdin.take();

        // Wait for "READY <port>".
        let deadline = Instant::now() + SERVER_START_TIMEOUT;
        let port = loop {
            let out = read_lossy(&ready);
            if let Some(p) = out
                .lines()
                .find_map(|l| l.strip_prefix("READY "))
                .and_then(|p| p.trim().parse::<u16>().ok())
            {
                break p;
            }
            let failure = match child.try_wait() {
                Ok(Some(status)) => Some(format!("exited with {status}")),
                Err(e) => Some(format!("try_wait: {e}")),
                Ok(None) if Instant::now() >= deadline => Some("timed out".to_string()),
                Ok(None) => None,
            };
            if let Some(why) = failure {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "scripts/ftpserver.py {why} before printing READY (is pyftpdlib \
                     installed? run scripts/lib.sh install_deps)\nstdout:\n{out}\nstderr:\n{}",
                    read_lossy(&outlog)
                ));
            }
            thread::sleep(Duration::from_millis(20));
        };

        let server = FtpServer {
            port,
            root,
            user: user.unwrap_or("anonymous").to_string(),
            password,
            kind: ServerKind::Pyftpdlib,
            flavor: ServerFlavor::Pyftpdlib,
            cmdlog,
            outlog,
            cmd_offset: AtomicU64::new(0),
            owner: None,
            child,
            _stdin: stdin,
            _root_dir: root_dir,
            _work_dir: work,
            mount_opts: Vec::new(),
            _keep: Vec::new(),
        };
        // Make sure it really talks FTP.
        wait_for_banner(port, None, SERVER_START_TIMEOUT)
            .map_err(|e| format!("pyftpdlib on port {port}: {e}\n{}", server.log()))?;
        Ok(server)
    }

    /// vsftpd server (user [`VSFTPD_USER`]), chrooted to a fresh root dir.
    /// Needs root and /usr/sbin/vsftpd.
    pub fn vsftpd() -> FtpServer {
        Self::try_vsftpd(&[]).unwrap_or_else(|e| panic!("{e}"))
    }

    /// vsftpd with extra `key=value` config lines (appended, so they override
    /// the defaults, e.g. `&["pasv_enable=NO"]`).
    pub fn vsftpd_with_config(extra: &[&str]) -> FtpServer {
        Self::try_vsftpd(extra).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn try_vsftpd(extra_config: &[&str]) -> Result<FtpServer, String> {
        let (uid, gid) = ensure_vsftpd_user()?;
        let vsftpd_bin = ["/usr/sbin/vsftpd", "/usr/bin/vsftpd", "/sbin/vsftpd"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .ok_or("vsftpd is not installed (run scripts/lib.sh install_deps)")?;
        fs::create_dir_all(VSFTPD_SECURE_CHROOT_DIR)
            .map_err(|e| format!("mkdir {VSFTPD_SECURE_CHROOT_DIR}: {e}"))?;

        let work = tmpdir("ftpfs-srv-")?;
        let root_dir = tmpdir("ftpfs-root-")?;
        let root = root_dir.path().to_path_buf();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755))
            .and_then(|_| std::os::unix::fs::chown(&root, Some(uid), Some(gid)))
            .map_err(|e| format!("chown {}: {e}", root.display()))?;
        let cmdlog = work.path().join("vsftpd.log");
        let outlog = work.path().join("server.log");
        File::create(&cmdlog).map_err(|e| format!("create {}: {e}", cmdlog.display()))?;
        let conf_path = work.path().join("vsftpd.conf");

        let mut last_err = String::new();
        for _attempt in 0..8 {
            let port = free_port();
            let token = format!("{:016x}", random_u64());
            let mut conf = format!(
                "listen=YES\n\
                 listen_ipv6=NO\n\
                 listen_address=127.0.0.1\n\
                 listen_port={port}\n\
                 background=NO\n\
                 anonymous_enable=NO\n\
                 local_enable=YES\n\
                 write_enable=YES\n\
                 local_umask=022\n\
                 chroot_local_user=YES\n\
                 allow_writeable_chroot=YES\n\
                 local_root={root}\n\
                 pasv_enable=YES\n\
                 seccomp_sandbox=NO\n\
                 isolate=NO\n\
                 isolate_network=NO\n\
                 userlist_enable=NO\n\
                 log_ftp_protocol=YES\n\
                 xferlog_enable=YES\n\
                 xferlog_std_format=NO\n\
                 vsftpd_log_file={log}\n\
                 dual_log_enable=NO\n\
                 syslog_enable=NO\n\
                 use_localtime=NO\n\
                 pam_service_name=vsftpd\n\
                 secure_chroot_dir={VSFTPD_SECURE_CHROOT_DIR}\n\
                 ftpd_banner=vsFTPd ftpfs-test {token}\n",
                root = root.display(),
                log = cmdlog.display(),
            );
            for line in extra_config {
                conf.push_str(line);
                conf.push('\n');
            }
            fs::write(&conf_path, conf).map_err(|e| format!("write vsftpd.conf: {e}"))?;

            let mut child = Command::new(vsftpd_bin)
                .arg(&conf_path)
                .stdin(Stdio::null())
                .stdout(file_for_child(&outlog)?)
                .stderr(file_for_child(&outlog)?)
                .spawn()
                .map_err(|e| format!("cannot start {vsftpd_bin}: {e}"))?;

            // Implicit TLS greets only after a handshake: wait for the port instead.
            let ready = if extra_config.contains(&"implicit_ssl=YES") {
                wait_for_listen_or_exit(&mut child, port, "vsftpd")
            } else {
                wait_for_banner_or_exit(&mut child, port, &token)
            };
            match ready {
                Ok(()) => {
                    return Ok(FtpServer::run_as_test_user(
                        ServerFlavor::Vsftpd,
                        port,
                        (root, root_dir, work),
                        (cmdlog, outlog),
                        (uid, gid),
                        child,
                    ));
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_err = format!("{e}\nvsftpd output:\n{}", read_lossy(&outlog));
                    // Only a port collision is worth retrying.
                    if !last_err.contains("bind") && !last_err.contains("wrong server") {
                        break;
                    }
                }
            }
        }
        Err(format!("vsftpd failed to start: {last_err}"))
    }

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

// ---------------------------------------------------------------------------
// More server kinds: pure-ftpd, ProFTPD, a DOS/IIS-style pyftpdlib
// ---------------------------------------------------------------------------

/// Where `install_extra_servers` (scripts/lib.sh) unpacks pure-ftpd and
/// ProFTPD: `$FTPFS_EXTRA_SERVERS_DIR`, default `/opt/ftpfs-test-servers`.
pub fn extra_servers_dir() -> PathBuf {
    std::env::var_os("FTPFS_EXTRA_SERVERS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/ftpfs-test-servers"))
}

pub fn extra_server_bin(dir: &str, rel: &str) -> Result<PathBuf, String> {
    let p = extra_servers_dir().join(dir).join(rel);
    if p.exists() {
        Ok(p)
    } else {
        Err(format!(
            "{} is missing: run scripts/test.sh (install_extra_servers in scripts/lib.sh)",
            p.display()
        ))
    }
}

/// A fresh work dir and a root dir (mode 0755) owned by `uid:gid`.
fn private_root(uid: u32, gid: u32) -> Result<(TempDir, TempDir, PathBuf), String> {
    let work = tmpdir("ftpfs-srv-")?;
    let root_dir = tmpdir("ftpfs-root-")?;
    let root = root_dir.path().to_path_buf();
    fs::set_permissions(&root, fs::Permissions::from_mode(0o755))
        .and_then(|_| std::os::unix::fs::chown(&root, Some(uid), Some(gid)))
        .map_err(|e| format!("chown {}: {e}", root.display()))?;
    Ok((work, root_dir, root))
}

/// Wait for a `220` greeting (containing `token`, if given) from `child` on
/// `port`; Err if the child exits first or nothing answers in time.
fn wait_for_child_banner(
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

impl FtpServer {
    /// pure-ftpd (unpacked by `install_extra_servers`), user [`VSFTPD_USER`]
    /// as a virtual user (private `pure-pw` database) chrooted to a fresh
    /// root. Needs root. [`commands`](Self::commands) is always empty:
    /// pure-ftpd only logs commands to syslog.
    pub fn pure_ftpd() -> FtpServer {
        Self::try_pure_ftpd(&[]).unwrap_or_else(|e| panic!("{e}"))
    }

    /// pure-ftpd with extra command-line arguments (e.g. `-Y 2` for required TLS).
    pub fn try_pure_ftpd(extra_args: &[&str]) -> Result<FtpServer, String> {
        let (uid, gid) = ensure_vsftpd_user()?;
        let bin = extra_server_bin("pure-ftpd", "usr/sbin/pure-ftpd")?;
        let pure_pw = extra_server_bin("pure-ftpd", "usr/bin/pure-pw")?;
        let (work, root_dir, root) = private_root(uid, gid)?;
        let passwd = work.path().join("pureftpd.passwd");
        let pdb = work.path().join("pureftpd.pdb");
        let cmdlog = work.path().join("commands.log");
        let outlog = work.path().join("server.log");
        File::create(&cmdlog).map_err(|e| format!("create {}: {e}", cmdlog.display()))?;
        let s = |p: &Path| p.to_string_lossy().into_owned();
        run_checked(
            &s(&pure_pw),
            &[
                "useradd",
                VSFTPD_USER,
                "-u",
                &uid.to_string(),
                "-g",
                &gid.to_string(),
                "-d",
                &s(&root),
                "-f",
                &s(&passwd),
                "-m",
                "-F",
                &s(&pdb),
            ],
            Some(&format!("{VSFTPD_PASSWORD}\n{VSFTPD_PASSWORD}\n")),
        )?;

        let mut last_err = String::new();
        for _attempt in 0..8 {
            let port = free_port();
            let mut child = Command::new(&bin)
                .arg("-S")
                .arg(format!("127.0.0.1,{port}"))
                .arg("-l")
                .arg(format!("puredb:{}", pdb.display()))
                // No anonymous logins, no DNS lookups, chroot everyone,
                // IPv4 only.
                .args(["-E", "-H", "-A", "-4"])
                .args(extra_args)
                .stdin(Stdio::null())
                .stdout(file_for_child(&outlog)?)
                .stderr(file_for_child(&outlog)?)
                .spawn()
                .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
            match wait_for_child_banner(&mut child, port, Some("Pure-FTPd"), "pure-ftpd") {
                Ok(()) => {
                    return Ok(FtpServer::run_as_test_user(
                        ServerFlavor::PureFtpd,
                        port,
                        (root, root_dir, work),
                        (cmdlog, outlog),
                        (uid, gid),
                        child,
                    ));
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_err = format!("{e}\npure-ftpd output:\n{}", read_lossy(&outlog));
                }
            }
        }
        Err(format!("pure-ftpd failed to start: {last_err}"))
    }

    /// ProFTPD (unpacked by `install_extra_servers`) with a generated config:
    /// unix logins as [`VSFTPD_USER`], `DefaultRoot` a fresh root, commands
    /// recorded with `ExtendedLog` (see [`commands`](Self::commands)).
    /// Needs root.
    pub fn proftpd() -> FtpServer {
        Self::try_proftpd(&[]).unwrap_or_else(|e| panic!("{e}"))
    }

    /// ProFTPD with extra config lines appended to the generated config.
    pub fn try_proftpd(extra_config: &[&str]) -> Result<FtpServer, String> {
        let (uid, gid) = ensure_vsftpd_user()?;
        let bin = extra_server_bin("proftpd", "usr/sbin/proftpd")?;
        let (work, root_dir, root) = private_root(uid, gid)?;
        let w = work.path();
        let cmdlog = w.join("commands.log");
        let outlog = w.join("server.log");
        File::create(&cmdlog).map_err(|e| format!("create {}: {e}", cmdlog.display()))?;
        let conf_path = w.join("proftpd.conf");
        let group = if fs::read_to_string("/etc/group")
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with("nogroup:"))
        {
            "nogroup"
        } else {
            "nobody"
        };

        let mut last_err = String::new();
        for _attempt in 0..8 {
            let port = free_port();
            let token = format!("{:016x}", random_u64());
            let mut conf = format!(
                "ServerName \"ftpfs-test {token}\"\n\
                 ServerType standalone\n\
                 Port {port}\n\
                 DefaultAddress 127.0.0.1\n\
                 SocketBindTight on\n\
                 UseIPv6 off\n\
                 User nobody\n\
                 Group {group}\n\
                 Umask 022\n\
                 AuthOrder mod_auth_unix.c\n\
                 RequireValidShell off\n\
                 DefaultRoot {root}\n\
                 AllowOverwrite on\n\
                 WtmpLog off\n\
                 UseReverseDNS off\n\
                 DelayTable none\n\
                 MaxInstances 100\n\
                 ScoreboardFile {w}/proftpd.scoreboard\n\
                 PidFile {w}/proftpd.pid\n\
                 SystemLog {w}/system.log\n\
                 TransferLog none\n\
                 LogFormat ftpfscmds \"%m %J\"\n\
                 ExtendedLog {cmdlog} ALL ftpfscmds\n",
                root = root.display(),
                w = w.display(),
                cmdlog = cmdlog.display(),
            );
            for line in extra_config {
                conf.push_str(line);
                conf.push('\n');
            }
            fs::write(&conf_path, conf).map_err(|e| format!("write proftpd.conf: {e}"))?;
            let mut child = Command::new(&bin)
                .args(["-n", "-q", "-c"])
                .arg(&conf_path)
                .stdin(Stdio::null())
                .stdout(file_for_child(&outlog)?)
                .stderr(file_for_child(&outlog)?)
                .spawn()
                .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
            match wait_for_child_banner(&mut child, port, Some(&token), "proftpd") {
                Ok(()) => {
                    return Ok(FtpServer::run_as_test_user(
                        ServerFlavor::Proftpd,
                        port,
                        (root, root_dir, work),
                        (cmdlog, outlog),
                        (uid, gid),
                        child,
                    ));
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_err = format!(
                        "{e}\nproftpd output:\n{}\nSystemLog:\n{}",
                        read_lossy(&outlog),
                        read_lossy(&w.join("system.log"))
                    );
                }
            }
        }
        Err(format!("proftpd failed to start: {last_err}"))
    }

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

    /// A DOS/IIS-style server: pyftpdlib with `--dos-list` (LIST lines like
    /// `01-15-24  10:30AM       <DIR>          name`; no MLSD/MLST, MFMT,
    /// SIZE or SITE CHMOD). Its `kind` is [`ServerKind::Pyftpdlib`]; a
    /// restart does not keep `--dos-list` unless passed again.
    pub fn dos_style() -> FtpServer {
        let mut s = Self::pyftpdlib_with_args(&["--dos-list"]);
        s.flavor = ServerFlavor::DosStyle;
        s
    }
}

// ---------------------------------------------------------------------------
// Stopping and restarting a server (fault-injection tests)
// ---------------------------------------------------------------------------

/// How long [`FtpServer::start_again`] keeps trying to bind the old port.
pub const RESTART_TIMEOUT: Duration = Duration::from_secs(10);

impl FtpServer {
    /// Kills the server (for vsftpd also every session process it forked),
    /// so that every client connection breaks, as in a crash or a restart.
    /// The root directory, the command log and the port number are kept for
    /// [`start_again`](Self::start_again).
    pub fn stop(&mut self) {
        let pid = self.child.id();
        // vsftpd forks a process per session; they outlive the listener.
        let sessions = descendants_of(pid);
        let _ = self.child.kill();
        let _ = self.child.wait();
        for p in sessions {
            // SAFETY: plain kill(2) on processes this server forked.
            unsafe {
                libc::kill(p as libc::pid_t, libc::SIGKILL);
            }
        }
    }

    /// Starts the server again on the same port, root, user and password
    /// (after [`stop`](Self::stop)), retrying the bind for up to
    /// [`RESTART_TIMEOUT`]. pyftpdlib gets `extra` arguments (the ones given
    /// at creation are not remembered); vsftpd reuses its config file.
    pub fn start_again_with_args(&mut self, extra: &[&str]) -> Result<(), String> {
        let deadline = Instant::now() + RESTART_TIMEOUT;
        if matches!(self.flavor, ServerFlavor::PureFtpd | ServerFlavor::Proftpd) {
            return Err(format!(
                "restarting {} is not supported",
                self.flavor.name()
            ));
        }
        let mut last = String::new();
        while Instant::now() < deadline {
            let started = match self.kind {
                ServerKind::Pyftpdlib => self.spawn_pyftpdlib_again(extra),
                ServerKind::Vsftpd => self.spawn_vsftpd_again(),
            };
            match started {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
            thread::sleep(Duration::from_millis(200));
        }
        Err(format!(
            "could not restart the server on port {} within {RESTART_TIMEOUT:?}: {last}",
            self.port
        ))
    }

    /// [`start_again_with_args`](Self::start_again_with_args) without extra arguments.
    pub fn start_again(&mut self) -> Result<(), String> {
        self.start_again_with_args(&[])
    }

    /// [`stop`](Self::stop), then [`start_again`](Self::start_again); panics
    /// if the server does not come back.
    pub fn restart(&mut self) {
        self.stop();
        self.start_again().unwrap_or_else(|e| panic!("{e}"));
    }

    fn spawn_pyftpdlib_again(&mut self, extra: &[&str]) -> Result<(), String> {
        let ready = self._work_dir.path().join("server.out");
        File::create(&ready).map_err(|e| format!("create {}: {e}", ready.display()))?;
        let port = self.port.to_string();
        let mut cmd = Command::new("python3");
        cmd.arg(ftpserver_script())
            .args(["--host", "127.0.0.1", "--port", &port, "--watch-stdin"])
            .arg("--root")
            .arg(&self.root)
            .arg("--cmdlog")
            .arg(&self.cmdlog);
        if !self.is_anonymous() {
            cmd.args(["--user", &self.user, "--password", &self.password]);
        }
        cmd.args(extra)
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::piped())
            .stdout(file_for_child(&ready)?)
            .stderr(file_for_child(&self.outlog)?);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start python3 scripts/ftpserver.py: {e}"))?;
        let deadline = Instant::now() + SERVER_START_TIMEOUT;
        loop {
            if read_lossy(&ready).contains(&format!("READY {port}")) {
                break;
            }
            let failure = match child.try_wait() {
                Ok(Some(status)) => Some(format!("exited with {status}")),
                Err(e) => Some(format!("try_wait: {e}")),
                Ok(None) if Instant::now() >= deadline => Some("timed out".to_string()),
                Ok(None) => None,
            };
            if let Some(why) = failure {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("scripts/ftpserver.py {why} before printing READY"));
            }
            thread::sleep(Duration::from_millis(20));
        }
        self._stdin = child.stdin.take();
        self.child = child;
        wait_for_banner(self.port, None, SERVER_START_TIMEOUT)
    }

    fn spawn_vsftpd_again(&mut self) -> Result<(), String> {
        let conf_path = self._work_dir.path().join("vsftpd.conf");
        let conf = read_lossy(&conf_path);
        let token = conf
            .lines()
            .find_map(|l| l.strip_prefix("ftpd_banner=vsFTPd ftpfs-test "))
            .ok_or("no banner token in vsftpd.conf")?
            .trim()
            .to_string();
        let vsftpd_bin = ["/usr/sbin/vsftpd", "/usr/bin/vsftpd", "/sbin/vsftpd"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .ok_or("vsftpd is not installed")?;
        let mut child = Command::new(vsftpd_bin)
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(file_for_child(&self.outlog)?)
            .stderr(file_for_child(&self.outlog)?)
            .spawn()
            .map_err(|e| format!("cannot start {vsftpd_bin}: {e}"))?;
        match wait_for_banner_or_exit(&mut child, self.port, &token) {
            Ok(()) => {
                self.child = child;
                Ok(())
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(e)
            }
        }
    }
}

/// Every live descendant of `pid` (children, their children...), from /proc.
pub fn descendants_of(pid: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    if let Ok(rd) = fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let stat = read_lossy(&e.path().join("stat"));
            // The command name is in parentheses and may contain spaces.
            let ppid = stat
                .rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().nth(1))
                .and_then(|v| v.parse::<u32>().ok());
            if let Some(pp) = ppid {
                parent_of.push((p, pp));
            }
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for &(p, pp) in &parent_of {
            if pp == parent && !out.contains(&p) {
                out.push(p);
                frontier.push(p);
            }
        }
    }
    out
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

fn tmpdir(prefix: &str) -> Result<TempDir, String> {
    TempDir::with_prefix(prefix).map_err(|e| format!("cannot create temp dir: {e}"))
}

fn file_for_child(path: &Path) -> Result<File, String> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("open {}: {e}", path.display()))
}

/// Connect to `port` and read a `220` greeting (containing `token`, if
/// given), retrying until `timeout`.
fn wait_for_banner(port: u16, token: Option<&str>, timeout: Duration) -> Result<(), String> {
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
fn wait_for_listen_or_exit(child: &mut Child, port: u16, what: &str) -> Result<(), String> {
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

fn wait_for_banner_or_exit(child: &mut Child, port: u16, token: &str) -> Result<(), String> {
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
        let mut opts: Vec<&str> = server.mount_opts.iter().map(String::as_str).collect();
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
        cmd.env("RUST_LOG", "ftpfs=debug")
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

/// Copies a child's pipe into `buf` on a thread; the receiver fires at its end.
pub fn spawn_reader(
    pipe: Option<impl Read + Send + 'static>,
    buf: Arc<Mutex<Vec<u8>>>,
) -> std::sync::mpsc::Receiver<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        if let Some(mut pipe) = pipe {
            let mut chunk = [0u8; 8192];
            loop {
                match pipe.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if let Ok(mut b) = buf.lock() {
                            b.extend_from_slice(&chunk[..n]);
                        }
                    }
                }
            }
        }
        let _ = tx.send(());
    });
    rx
}
