//! `ftpfs status MOUNTPOINT` and `ftpfs sync MOUNTPOINT`: a running mount
//! answers on a private Unix socket. The client sends one request line:
//! `status` (or nothing) gets a plain-text report (server and features,
//! connections, uploads, the async queue, caches, traffic, recent errors);
//! `sync [SECS]` waits until every upload is done and answers `done`, or
//! `failed N` / `pending N` followed by the files concerned.
//!
//! The socket lives in a directory of the mounting user: `/run/ftpfs` for root,
//! else `$XDG_RUNTIME_DIR/ftpfs`, else `/tmp/ftpfs-UID`. Its name is a hash of
//! the mount point, so `status` finds it from the mount point alone. It is
//! private to the user (root can always connect); with `allow_other` every user
//! may read it, as they may read the files.

use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::stats::{human, UploadView};

/// How long `status` waits for a mount's answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything `status` shows, gathered by the mount when asked.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub mountpoint: PathBuf,
    pub pid: u32,
    pub uptime: Duration,
    /// The URL without a password.
    pub server: String,
    /// "plain FTP", or the TLS mode.
    pub security: String,
    pub features: String,
    pub pool: PoolView,
    pub uploads: Vec<UploadView>,
    /// Files the server does not have yet: (path, size, why).
    pub pending: Vec<(String, Option<u64>, String)>,
    /// The write-back mode, as shown.
    pub writeback: String,
    pub queue: crate::fs::QueueView,
    pub cache: crate::fs::CacheStats,
    pub bytes_down: u64,
    pub bytes_up: u64,
    pub errors: Vec<(SystemTime, String)>,
}

/// The connection pool, as the report shows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolView {
    pub open: usize,
    pub idle: usize,
    pub transfers: usize,
    pub limit: usize,
    pub configured: usize,
}

fn rate(hits: u64, misses: u64) -> String {
    match hits + misses {
        0 => "no lookups yet".to_string(),
        n => format!(
            "{hits} hits, {misses} misses ({:.0}% hits)",
            hits as f64 * 100.0 / n as f64
        ),
    }
}

fn clock(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let day = secs % 86_400;
    format!(
        "{:02}:{:02}:{:02} UTC",
        day / 3600,
        day % 3600 / 60,
        day % 60
    )
}

fn duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

impl Report {
    /// The text `ftpfs status` prints.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut line = |s: String| {
            out.push_str(&s);
            out.push('\n');
        };
        line(format!(
            "ftpfs {} (pid {}) on {}, up {}",
            env!("CARGO_PKG_VERSION"),
            self.pid,
            self.mountpoint.display(),
            duration(self.uptime)
        ));
        line(format!("server:       {} ({})", self.server, self.security));
        line(format!(
            "features:     {}",
            if self.features.is_empty() {
                "none announced (no FEAT)"
            } else {
                &self.features
            }
        ));
        let p = &self.pool;
        let limit = if p.limit < p.configured {
            format!(
                "limit {} (learnt from the server; {} configured)",
                p.limit, p.configured
            )
        } else {
            format!("limit {}", p.limit)
        };
        line(format!(
            "connections:  {} open ({} busy, {} idle; {} in transfers), {limit}",
            p.open,
            p.open.saturating_sub(p.idle),
            p.idle,
            p.transfers
        ));
        line(format!(
            "uploads:      {} in flight, {} waiting",
            self.uploads.len(),
            self.pending
                .iter()
                .filter(|(_, size, _)| size.is_some())
                .count()
        ));
        let q = &self.queue;
        line(format!(
            "writeback:    {}; {} queued, {} uploading, {} failed",
            self.writeback, q.queued, q.running, q.failed
        ));
        for (path, ours) in &q.conflicts {
            line(format!(
                "  conflict   {path} changed on the server; ours is {ours}"
            ));
        }
        for u in &self.uploads {
            let progress = match u.total {
                Some(total) if total > 0 => format!(
                    "{} of {} ({:.0}%)",
                    human(u.done),
                    human(total),
                    u.done.min(total) as f64 * 100.0 / total as f64
                ),
                Some(_) => human(u.done),
                None => format!("{} sent so far (streaming while written)", human(u.done)),
            };
            line(format!(
                "  uploading  {}: {progress}, {}",
                u.path,
                duration(u.elapsed)
            ));
        }
        for (path, size, why) in &self.pending {
            match size {
                Some(size) => line(format!("  pending    {path} ({}): {why}", human(*size))),
                None => line(format!("  pending    {path}: {why}")),
            }
        }
        let c = &self.cache;
        line(format!(
            "listings:     {}; {} directories, {} entries cached",
            rate(c.listing_hits, c.listing_misses),
            c.dirs,
            c.entries
        ));
        line(format!(
            "blocks:       {}; {} of {} cached",
            rate(c.block_hits, c.block_misses),
            human(c.block_bytes),
            human(c.block_capacity)
        ));
        line(format!(
            "transferred:  {} down, {} up",
            human(self.bytes_down),
            human(self.bytes_up)
        ));
        if self.errors.is_empty() {
            line("errors:       none".to_string());
        } else {
            line(format!("errors:       {} recent", self.errors.len()));
            for (t, e) in &self.errors {
                line(format!("  {}  {e}", clock(*t)));
            }
        }
        out
    }
}

/// The directory for this user's status sockets.
fn socket_dir() -> PathBuf {
    // SAFETY: geteuid cannot fail.
    let uid = unsafe { libc::geteuid() };
    if uid == 0 {
        return PathBuf::from("/run/ftpfs");
    }
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(d) => Path::new(&d).join("ftpfs"),
        None => std::env::temp_dir().join(format!("ftpfs-{uid}")),
    }
}

/// FNV-1a: a stable name for a mount point.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Where the mount on `mountpoint` (absolute, canonical) answers.
pub fn socket_path_in(dir: &Path, mountpoint: &Path) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    dir.join(format!(
        "{:016x}.sock",
        fnv1a(mountpoint.as_os_str().as_bytes())
    ))
}

/// Answers status requests until dropped; removes its socket then.
pub struct StatusServer {
    path: PathBuf,
}

impl Drop for StatusServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Starts answering for the mount on `mountpoint` with what `report` gathers.
pub fn serve(
    mountpoint: &Path,
    shared: bool,
    report: impl Fn() -> Report + Send + 'static,
    sync: impl Fn(Option<Duration>) -> crate::fs::SyncReport + Send + Sync + 'static,
) -> Result<StatusServer, String> {
    let dir = socket_dir();
    let dir_mode = if shared { 0o755 } else { 0o700 };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(dir_mode)
        .create(&dir)
        .map_err(|e| format!("status socket directory {}: {e}", dir.display()))?;
    // The directory may have existed already (/tmp is everyone's): it must be
    // ours and closed to others, or someone else could replace the socket.
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(&dir)
        .map_err(|e| format!("status socket directory {}: {e}", dir.display()))?;
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    if !meta.is_dir() || meta.uid() != me || meta.mode() & 0o022 != 0 {
        return Err(format!(
            "status socket directory {} is not a directory of this user closed to others",
            dir.display()
        ));
    }
    let path = socket_path_in(&dir, mountpoint);
    // A socket left by an ftpfs that died: nobody answers on it.
    if UnixStream::connect(&path).is_err() {
        let _ = std::fs::remove_file(&path);
    }
    let listener =
        UnixListener::bind(&path).map_err(|e| format!("status socket {}: {e}", path.display()))?;
    let mode = if shared { 0o666 } else { 0o600 };
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("status socket {}: {e}", path.display()))?;
    let sync = std::sync::Arc::new(sync);
    std::thread::Builder::new()
        .name("ftpfs-status".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let _ = conn.set_write_timeout(Some(ANSWER_TIMEOUT));
                match read_request(&mut conn) {
                    Request::Sync(limit) => {
                        // A sync may wait long: it gets a thread of its own.
                        let sync = std::sync::Arc::clone(&sync);
                        let _ = std::thread::Builder::new().name("ftpfs-sync".into()).spawn(
                            move || {
                                let answer =
                                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                        sync(limit)
                                    }))
                                    .map(|r| render_sync(&r))
                                    .unwrap_or_else(|_| {
                                        "failed 0\nthe sync failed (see the log)\n".into()
                                    });
                                let _ = conn.write_all(answer.as_bytes());
                            },
                        );
                    }
                    Request::Status => {
                        let text =
                            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(&report)) {
                                Ok(r) => r.render(),
                                Err(_) => {
                                    "ftpfs: the status report failed (see the log)\n".to_string()
                                }
                            };
                        let _ = conn.write_all(text.as_bytes());
                    }
                }
            }
        })
        .map_err(|e| format!("status thread: {e}"))?;
    log::debug!("status on {}", path.display());
    Ok(StatusServer { path })
}

/// What a client asks for.
#[derive(Debug, PartialEq)]
enum Request {
    Status,
    /// Wait for the uploads, at most this long.
    Sync(Option<Duration>),
}

fn parse_request(line: &str) -> Request {
    let mut words = line.split_whitespace();
    match words.next() {
        Some("sync") => Request::Sync(
            words
                .next()
                .and_then(|w| w.parse::<f64>().ok())
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(Duration::from_secs_f64),
        ),
        _ => Request::Status,
    }
}

/// The request line of a client (a client that sends nothing wants the status).
fn read_request(conn: &mut UnixStream) -> Request {
    let _ = conn.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 128];
    let mut got = Vec::new();
    while !got.contains(&b'\n') && got.len() < buf.len() {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    parse_request(&String::from_utf8_lossy(&got))
}

/// The answer to a sync: a first line `done`, `failed N` or `pending N`,
/// then one line per file concerned.
fn render_sync(r: &crate::fs::SyncReport) -> String {
    let mut out = if !r.failed.is_empty() {
        format!("failed {}\n", r.failed.len())
    } else if r.pending > 0 {
        format!("pending {}\n", r.pending)
    } else {
        "done\n".to_string()
    };
    for (path, why) in &r.failed {
        out.push_str(&format!("{path}: {why} (kept in the journal)\n"));
    }
    for (path, ours) in &r.conflicts {
        out.push_str(&format!(
            "{path} changed on the server; ours was saved as {ours}\n"
        ));
    }
    out
}

/// The socket of the mount on `mountpoint`, connected (the user's own mounts
/// first, then root's, readable with allow_other).
fn connect(mountpoint: &Path) -> Result<(PathBuf, UnixStream), String> {
    let abs =
        std::fs::canonicalize(mountpoint).map_err(|e| format!("{}: {e}", mountpoint.display()))?;
    let mut dirs = vec![socket_dir()];
    if dirs[0] != Path::new("/run/ftpfs") {
        dirs.push(PathBuf::from("/run/ftpfs"));
    }
    let mut last = None;
    for dir in dirs {
        match UnixStream::connect(socket_path_in(&dir, &abs)) {
            Ok(s) => return Ok((abs, s)),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                last = Some(format!(
                    "{}: the mount belongs to another user (its status is private)",
                    abs.display()
                ));
            }
            Err(_) => {}
        }
    }
    Err(last.unwrap_or_else(|| format!("{}: no ftpfs mounted there answers", abs.display())))
}

/// `ftpfs sync MOUNTPOINT`: waits for the mount's uploads; an error names the
/// files that failed or are still pending.
pub fn sync(mountpoint: &Path, timeout: Option<f64>) -> Result<(), String> {
    let (abs, mut s) = connect(mountpoint)?;
    let request = match timeout {
        Some(t) => format!("sync {t}\n"),
        None => "sync\n".to_string(),
    };
    s.write_all(request.as_bytes())
        .map_err(|e| format!("asking {} to sync: {e}", abs.display()))?;
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut text = String::new();
    s.read_to_string(&mut text)
        .map_err(|e| format!("waiting for {} to sync: {e}", abs.display()))?;
    let mut lines = text.lines();
    let head = lines.next().unwrap_or("");
    let details: Vec<&str> = lines.collect();
    for d in details
        .iter()
        .filter(|d| d.contains("changed on the server"))
    {
        eprintln!("ftpfs: conflict: {d}");
    }
    let problems: Vec<&&str> = details
        .iter()
        .filter(|d| !d.contains("changed on the server"))
        .collect();
    let list = problems
        .iter()
        .map(|d| format!("\n  {d}"))
        .collect::<String>();
    match head.split_once(' ') {
        _ if head == "done" => Ok(()),
        Some(("failed", n)) => Err(format!(
            "{n} upload(s) on {} failed for good:{list}",
            abs.display()
        )),
        Some(("pending", n)) => Err(format!(
            "{n} upload(s) on {} still pending after the timeout",
            abs.display()
        )),
        _ => Err(format!(
            "{}: the mount gave no answer to sync (did it exit?)",
            abs.display()
        )),
    }
}

/// Asks the mount on `mountpoint` for its report.
pub fn query(mountpoint: &Path) -> Result<String, String> {
    let (abs, mut s) = connect(mountpoint)?;
    let _ = s.write_all(b"status\n");
    s.set_read_timeout(Some(ANSWER_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut text = String::new();
    s.read_to_string(&mut text)
        .map_err(|e| format!("reading the status of {}: {e}", abs.display()))?;
    Ok(text)
}

/// Prints the status of the ftpfs mounted on `mountpoint`.
pub fn print(mountpoint: &Path) -> Result<(), String> {
    let text = query(mountpoint)?;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_names_depend_only_on_the_mount_point() {
        let d = Path::new("/run/ftpfs");
        let a = socket_path_in(d, Path::new("/mnt/a"));
        assert_eq!(a, socket_path_in(d, Path::new("/mnt/a")));
        assert_ne!(a, socket_path_in(d, Path::new("/mnt/b")));
        assert!(a.to_string_lossy().ends_with(".sock"));
    }

    #[test]
    fn requests_and_sync_answers() {
        assert_eq!(parse_request(""), Request::Status);
        assert_eq!(parse_request("status\n"), Request::Status);
        assert_eq!(parse_request("sync\n"), Request::Sync(None));
        assert_eq!(
            parse_request("sync 2.5\n"),
            Request::Sync(Some(Duration::from_millis(2500)))
        );
        let mut r = crate::fs::SyncReport::default();
        assert_eq!(render_sync(&r), "done\n");
        r.pending = 3;
        assert_eq!(render_sync(&r), "pending 3\n");
        r.failed = vec![("/a".into(), "552 quota".into())];
        assert_eq!(
            render_sync(&r),
            "failed 1\n/a: 552 quota (kept in the journal)\n"
        );
    }

    #[test]
    fn the_report_shows_uploads_limits_and_errors() {
        let r = Report {
            mountpoint: "/mnt/site".into(),
            pid: 42,
            server: "ftp://alice@example.com:21/www".into(),
            security: "TLS, explicit".into(),
            features: "MLSD, SIZE".into(),
            pool: PoolView {
                open: 3,
                idle: 1,
                transfers: 1,
                limit: 3,
                configured: 4,
            },
            uploads: vec![UploadView {
                path: "/www/big.bin".into(),
                done: 5 << 20,
                total: Some(10 << 20),
                elapsed: Duration::from_secs(3),
            }],
            pending: vec![(
                "/www/a.txt".into(),
                Some(10),
                "open for writing; uploads at close".into(),
            )],
            writeback: "async, journal in /j".into(),
            queue: crate::fs::QueueView {
                queued: 2,
                running: 1,
                failed: 0,
                conflicts: vec![("/www/b.txt".into(), "/www/b.conflict-1.txt".into())],
            },
            bytes_up: 5 << 20,
            errors: vec![(SystemTime::UNIX_EPOCH, "STOR /x: 552 disk full".into())],
            ..Report::default()
        };
        let text = r.render();
        for want in [
            "on /mnt/site",
            "ftp://alice@example.com:21/www (TLS, explicit)",
            "3 open (2 busy, 1 idle; 1 in transfers), limit 3 (learnt from the server; 4 configured)",
            "1 in flight, 1 waiting",
            "uploading  /www/big.bin: 5.0 MiB of 10.0 MiB (50%)",
            "pending    /www/a.txt (10 B): open for writing",
            "transferred:  0 B down, 5.0 MiB up",
            "00:00:00 UTC  STOR /x: 552 disk full",
            "listings:     no lookups yet",
            "writeback:    async, journal in /j; 2 queued, 1 uploading, 0 failed",
            "conflict   /www/b.txt changed on the server; ours is /www/b.conflict-1.txt",
        ] {
            assert!(text.contains(want), "{want:?} missing from:\n{text}");
        }
    }
}
