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
//! One file per concern: `server/` (the servers: pyftpdlib, vsftpd,
//! pure-ftpd, ProFTPD, stop and restart), `mount.rs` (ftpfs mounts),
//! `raw_ftp.rs` (a bare control connection), `files.rs` (test data),
//! `process.rs` (child processes), `tools.rs` (commands for real tools), `proxy.rs` (the fault-injecting proxy),
//! `pki.rs` (TLS certificates), `users.rs` (an ordinary user for non-root runs). This file keeps the macro, the paths, the
//! small shared helpers, and re-exports every public name, so tests write
//! `support::X` whatever file it lives in.
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

mod files;
mod mount;
pub mod pki;
mod process;
mod proxy;
mod raw_ftp;
mod server;
mod tools;
mod users;

#[allow(unused_imports)] // not every test binary uses every helper
pub use files::{files_equal, first_difference, gen_bytes, write_file};
#[allow(unused_imports)]
pub use mount::{
    force_unmount, is_mounted, mount_fstype, run_ftpfs, status_of, Mount, MOUNT_TIMEOUT,
    UNMOUNT_TIMEOUT,
};
#[allow(unused_imports)]
pub use process::{descendants_of, spawn_reader, wait_timeout};
#[allow(unused_imports)] // not every test binary uses the proxy
pub use proxy::{ControlReset, DataAction, DataFault, Faults, Proxy, ProxyConfig, Stats};
#[allow(unused_imports)]
pub use raw_ftp::RawFtp;
#[allow(unused_imports)]
pub use server::{
    ensure_vsftpd_user, extra_server_bin, extra_servers_dir, lookup_user, parse_vsftpd_command,
    FtpServer, ServerFlavor, ServerKind, RESTART_TIMEOUT, SERVER_START_TIMEOUT, VSFTPD_PASSWORD,
    VSFTPD_SECURE_CHROOT_DIR, VSFTPD_USER,
};
#[allow(unused_imports)]
pub use tools::git;
#[allow(unused_imports)]
pub use users::{as_user, run_for, text, user_ids, DevFuseMode, TEST_USER};

use std::collections::hash_map::RandomState;
use std::fs::{self, File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

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

/// Pick a currently free TCP port on 127.0.0.1 (bind to port 0 and release
/// it). Callers must cope with the (rare) race of someone else taking it.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
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
