//! Everything that speaks FTP: connections, the pool, listing parsers, reply
//! mapping, and [`FtpRemote`], the [`Remote`] implementation the filesystem uses.

pub mod conn;
pub mod listing;
pub mod names;
pub mod pool;
mod read_stream;
pub mod reply;
pub mod tls;
mod upload;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use crate::remote::{
    ContentionHook, Entry, ErrorKind, ReadStream, Remote, RemoteError, RemoteResult, Source,
    UploadStream,
};
use crate::retry;
use conn::{ConnConfig, Features};
use pool::{Pool, PooledConn, Purpose};

/// A [`Remote`] over a pool of FTP connections, rooted at a remote directory.
pub struct FtpRemote {
    pool: Arc<Pool>,
    /// Absolute remote path of the mount's root, without a trailing slash ("" for "/").
    base: String,
    /// Cleared once the server refuses `LIST -a`.
    list_a: AtomicBool,
    /// Cleared once the server refuses `MDTM time path` (setting a time).
    mdtm_set: AtomicBool,
    /// Cleared once the server refuses `SITE CHMOD`.
    site_chmod: AtomicBool,
}

impl FtpRemote {
    /// Logs in once (so that a bad password or host fails now, not at first use),
    /// learns the server's features and resolves the mount root.
    ///
    /// `path` is the URL's path: relative to the login directory, unless it starts with `/`.
    pub fn connect(cfg: ConnConfig, connections: usize, path: &str) -> RemoteResult<FtpRemote> {
        let pool = Pool::new(cfg, connections);
        let mut pc = pool.get(Purpose::Command)?;
        let base = if path.starts_with('/') {
            path.to_string()
        } else {
            let home = pc.conn().pwd()?;
            join(&home, path)
        };
        let base = base.trim_end_matches('/').to_string();
        drop(pc);
        log::info!(
            "mounted remote directory {:?}",
            if base.is_empty() { "/" } else { &base }
        );
        Ok(FtpRemote {
            pool,
            base,
            list_a: AtomicBool::new(true),
            mdtm_set: AtomicBool::new(true),
            site_chmod: AtomicBool::new(true),
        })
    }

    pub fn features(&self) -> Features {
        self.pool.features()
    }

    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// The absolute remote path for a mount-relative path ("/" is the mount root).
    pub fn full_path(&self, path: &str) -> String {
        let rel = path.trim_start_matches('/');
        if rel.is_empty() {
            if self.base.is_empty() {
                "/".to_string()
            } else {
                self.base.clone()
            }
        } else {
            format!("{}/{}", self.base, rel)
        }
    }

    /// Runs an idempotent operation, retrying once on a fresh connection when the
    /// connection broke (a stale pooled connection, a server restart).
    fn with_conn<T>(
        &self,
        mut op: impl FnMut(&mut PooledConn) -> RemoteResult<T>,
    ) -> RemoteResult<T> {
        let mut last = None;
        for attempt in 0..retry::COMMAND_ATTEMPTS {
            let mut pc = self.pool.get(Purpose::Command)?;
            match op(&mut pc) {
                Ok(v) => return Ok(v),
                Err(e) if retry::worth_retrying(e.kind) => {
                    pc.mark_broken();
                    drop(pc);
                    self.pool.discard_idle();
                    log::warn!("{} (attempt {})", e.message, attempt + 1);
                    last = Some(e);
                }
                Err(e) => {
                    if e.kind == ErrorKind::Protocol {
                        pc.mark_broken();
                    }
                    return Err(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| RemoteError::new(ErrorKind::Connection, "no attempt made")))
    }

    /// Runs one control command that expects a 2xx reply, retried like [`Self::with_conn`].
    fn simple(&self, line: &str) -> RemoteResult<String> {
        self.with_conn(|pc| pc.conn().command(line))
    }

    /// Runs a change (DELE, RNFR+RNTO, MKD, RMD), retried like [`Self::with_conn`].
    /// When the first try broke after the command was sent, the server may have
    /// done it: a retry that then fails with `done` (the file is gone, the
    /// directory exists) proves nothing, so the first, transient error is
    /// returned, and the filesystem looks at the server to settle it.
    fn change(
        &self,
        done: ErrorKind,
        mut op: impl FnMut(&mut PooledConn) -> RemoteResult<()>,
    ) -> RemoteResult<()> {
        let mut first_broke = None;
        self.with_conn(|pc| match op(pc) {
            Err(e) if e.kind.is_transient() => {
                first_broke.get_or_insert_with(|| e.clone());
                Err(e)
            }
            Err(e) if e.kind == done => Err(first_broke.clone().unwrap_or(e)),
            other => other,
        })
    }

    /// One change command on a path (`DELE path`), run like [`Self::change`].
    fn simple_change(&self, done: ErrorKind, verb: &str, path: &str) -> RemoteResult<()> {
        let line = format!("{verb} {}", self.full_path(path));
        self.change(done, |pc| pc.conn().command(&line).map(|_| ()))
    }

    fn list_lines(&self, pc: &mut PooledConn, dir: &str) -> RemoteResult<Vec<Entry>> {
        let features = self.pool.features();
        if features.mlsd {
            let lines = data_command(pc, &format!("MLSD {dir}"), |f| f.mlsd(Some(dir)))?;
            return Ok(listing::parse_mlsd(&lines));
        }
        let now = SystemTime::now();
        if self.list_a.load(Ordering::Relaxed) {
            let arg = format!("-a {dir}");
            match data_command(pc, &format!("LIST {arg}"), |f| f.list(Some(&arg))) {
                Ok(lines) => return Ok(listing::parse_list(&lines, now)),
                Err(e) if !e.kind.is_transient() => {
                    // Either the server rejects -a, or the directory is missing: plain LIST tells.
                    let lines = data_command(pc, &format!("LIST {dir}"), |f| f.list(Some(dir)))?;
                    log::info!("server refused `LIST -a` ({}); using plain LIST", e.message);
                    self.list_a.store(false, Ordering::Relaxed);
                    return Ok(listing::parse_list(&lines, now));
                }
                Err(e) => return Err(e),
            }
        }
        let lines = data_command(pc, &format!("LIST {dir}"), |f| f.list(Some(dir)))?;
        Ok(listing::parse_list(&lines, now))
    }
}

/// Runs a data command on a pooled connection, logging it and its failure.
fn data_command<T>(
    pc: &mut PooledConn,
    what: &str,
    op: impl FnOnce(&mut conn::Ftp) -> suppaftp::FtpResult<T>,
) -> RemoteResult<T> {
    let id = pc.conn().id;
    log::debug!("[conn {id}] > {what}");
    let conn = pc.conn();
    op(&mut conn.ftp).map_err(|e| {
        let err = conn.error(what, e);
        log::debug!("[conn {id}] {}", err.message);
        err
    })
}

/// Joins a directory and a relative path with exactly one slash.
fn join(dir: &str, rel: &str) -> String {
    let rel = rel.trim_matches('/');
    let dir = dir.trim_end_matches('/');
    if rel.is_empty() {
        if dir.is_empty() {
            "/".into()
        } else {
            dir.into()
        }
    } else {
        format!("{dir}/{rel}")
    }
}

impl Remote for FtpRemote {
    fn list(&self, dir: &str) -> RemoteResult<Vec<Entry>> {
        let full = self.full_path(dir);
        self.with_conn(|pc| self.list_lines(pc, &full))
    }

    fn open_read(&self, path: &str, offset: u64) -> RemoteResult<ReadStream> {
        let full = self.full_path(path);
        let mut last = None;
        for _ in 0..retry::COMMAND_ATTEMPTS {
            let pc = self.pool.get(Purpose::Transfer)?;
            match read_stream::open(pc, &full, offset) {
                Ok(s) => return Ok(s),
                Err(e) if retry::worth_retrying(e.kind) => {
                    self.pool.discard_idle();
                    last = Some(e)
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| RemoteError::new(ErrorKind::Connection, "no attempt made")))
    }

    /// One STOR: whether and when an upload is tried again is the filesystem's
    /// call (see `retry`), so tries never multiply across layers.
    fn store(&self, path: &str, data: &mut dyn Source) -> RemoteResult<u64> {
        let full = self.full_path(path);
        let mut pc = self.pool.get(Purpose::Transfer)?;
        let r = upload::store(&mut pc, &full, data);
        if r.as_ref().is_err_and(|e| e.kind.is_transient()) {
            drop(pc);
            self.pool.discard_idle();
        }
        r
    }

    fn open_upload(&self, path: &str) -> RemoteResult<Box<dyn UploadStream>> {
        let full = self.full_path(path);
        let pc = self.pool.get(Purpose::Transfer)?;
        upload::open(pc, &full)
    }

    fn rename(&self, from: &str, to: &str) -> RemoteResult<()> {
        let (from, to) = (self.full_path(from), self.full_path(to));
        self.change(ErrorKind::NotFound, |pc| {
            pc.conn()
                .command(&format!("RNFR {from}"))
                .and_then(|_| pc.conn().command(&format!("RNTO {to}")).map(|_| ()))
        })
    }

    fn remove_file(&self, path: &str) -> RemoteResult<()> {
        self.simple_change(ErrorKind::NotFound, "DELE", path)
    }

    fn mkdir(&self, path: &str) -> RemoteResult<()> {
        self.simple_change(ErrorKind::AlreadyExists, "MKD", path)
    }

    fn rmdir(&self, path: &str) -> RemoteResult<()> {
        self.simple_change(ErrorKind::NotFound, "RMD", path)
    }

    fn mtime(&self, path: &str) -> RemoteResult<SystemTime> {
        let line = format!("MDTM {}", self.full_path(path));
        let reply = self.simple(&line)?;
        reply
            .split_whitespace()
            .find_map(listing::parse_time_val)
            .ok_or_else(|| RemoteError::new(ErrorKind::Protocol, format!("{line}: {reply}")))
    }

    fn set_mtime(&self, path: &str, mtime: SystemTime) -> RemoteResult<()> {
        let full = self.full_path(path);
        let stamp = listing::format_time_val(mtime);
        if self.features().mfmt {
            return self.simple(&format!("MFMT {stamp} {full}")).map(|_| ());
        }
        if !self.mdtm_set.load(Ordering::Relaxed) {
            return Err(RemoteError::new(
                ErrorKind::Unsupported,
                "the server cannot set times",
            ));
        }
        // vsftpd and others take a time before the path to set it. A server that
        // cannot takes the time for part of the file name, and says it is not there.
        let line = format!("MDTM {stamp} {full}");
        match self.simple(&line) {
            Err(e)
                if matches!(e.kind, ErrorKind::Unsupported | ErrorKind::InvalidName)
                    || (e.kind == ErrorKind::NotFound
                        && e.message
                            .strip_prefix(&format!("{line}: "))
                            .is_some_and(|reply| reply.contains(&stamp))) =>
            {
                log::info!(
                    "server cannot set modification times ({}); keeping them locally",
                    e.message
                );
                self.mdtm_set.store(false, Ordering::Relaxed);
                Err(RemoteError::new(ErrorKind::Unsupported, e.message))
            }
            other => other.map(|_| ()),
        }
    }

    fn chmod(&self, path: &str, mode: u32) -> RemoteResult<()> {
        if !self.site_chmod.load(Ordering::Relaxed) {
            return Err(RemoteError::new(
                ErrorKind::Unsupported,
                "the server has no SITE CHMOD",
            ));
        }
        let full = self.full_path(path);
        match self.simple(&format!("SITE CHMOD {:o} {full}", mode & 0o7777)) {
            Err(e) if e.kind == ErrorKind::Unsupported => {
                self.site_chmod.store(false, Ordering::Relaxed);
                Err(e)
            }
            other => other.map(|_| ()),
        }
    }

    fn transfer_contended(&self) -> bool {
        self.pool.transfer_contended()
    }

    fn spare_connections(&self) -> usize {
        self.pool.spare()
    }

    fn on_contention(&self, hook: ContentionHook) {
        self.pool.set_contention_hook(hook);
    }
}

#[cfg(test)]
mod tests {
    use super::join;

    #[test]
    fn join_paths() {
        assert_eq!(join("/home/u", "www"), "/home/u/www");
        assert_eq!(join("/", "www/"), "/www");
        assert_eq!(join("/", ""), "/");
        assert_eq!(join("/home/u/", ""), "/home/u");
    }
}
