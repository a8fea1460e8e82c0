//! Write-back state of one file: its private spool, whether the spool holds the
//! file's content yet, the dirty flag, attributes waiting for the upload, and a
//! sequential upload that streams while the application writes.
//!
//! Uploads go to a hidden temporary name in the same directory and are renamed
//! over the target, so a failed upload never leaves a truncated file behind.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use tempfile::NamedTempFile;

use crate::remote::{ErrorKind, Remote, RemoteError, RemoteResult, UploadStream};
use crate::stats::{Counted, UploadProgress, STATS};

/// Names of temporary upload files start with this; listings never show them.
pub const TEMP_PREFIX: &str = ".ftpfs-tmp.";

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh temporary name next to `path` ("/d/f" -> "/d/.ftpfs-tmp.PID-N").
pub fn temp_path_for(path: &str) -> String {
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = match path.rfind('/') {
        Some(0) | None => "",
        Some(i) => &path[..i],
    };
    format!("{dir}/{TEMP_PREFIX}{}-{n}", std::process::id())
}

fn io_err(what: &str, e: io::Error) -> RemoteError {
    let kind = match e.raw_os_error() {
        Some(libc::ENOSPC) => ErrorKind::NoSpace,
        Some(libc::EDQUOT) => ErrorKind::QuotaExceeded,
        _ => ErrorKind::Connection,
    };
    RemoteError::new(kind, format!("{what}: {e}"))
}

/// An upload streaming alongside sequential writes.
struct Streaming {
    upload: Box<dyn UploadStream>,
    /// Shown by `ftpfs status` while the stream is open.
    progress: UploadProgress,
    temp: String,
    /// The next offset the stream expects.
    next: u64,
}

/// How an upload should land.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadMode {
    /// To a temporary name, then renamed over the target (the default).
    Atomic,
    /// Straight to the target (for servers that forbid rename).
    Direct,
}

pub struct WriteState {
    spool: NamedTempFile,
    /// The file's size as the application sees it.
    pub size: u64,
    /// The spool holds the whole content (fetched, created, or truncated to zero).
    pub filled: bool,
    /// The spool has changes the server does not have yet.
    pub dirty: bool,
    /// The file exists on the server (false for a new file not yet uploaded).
    pub exists_remotely: bool,
    /// The file was unlinked while open: never upload it again.
    pub unlinked: bool,
    pub pending_mtime: Option<SystemTime>,
    pub pending_mode: Option<u32>,
    /// When the content last changed locally.
    pub modified: SystemTime,
    /// Open handles that may write.
    pub writers: usize,
    streaming: Option<Streaming>,
    /// Streaming was given up for this version of the content.
    no_streaming: bool,
    /// The temporary name of an abandoned stream, to delete at the next upload.
    orphan_temp: Option<String>,
    /// `exists_remotely` as it was when the last successful upload started.
    existed_before_upload: bool,
    /// The mode the last upload set on the server, if it set one.
    pub applied_mode: Option<u32>,
}

impl WriteState {
    /// A new spool in `dir`. `exists` tells whether the remote file is there already.
    pub fn new(dir: &Path, exists: bool, filled: bool) -> io::Result<WriteState> {
        let spool = tempfile::Builder::new().prefix("spool-").tempfile_in(dir)?;
        Ok(WriteState {
            spool,
            size: 0,
            filled,
            dirty: false,
            exists_remotely: exists,
            unlinked: false,
            pending_mtime: None,
            pending_mode: None,
            modified: SystemTime::now(),
            writers: 0,
            streaming: None,
            no_streaming: false,
            orphan_temp: None,
            existed_before_upload: exists,
            applied_mode: None,
        })
    }

    pub fn spool_path(&self) -> &Path {
        self.spool.path()
    }

    /// Makes the spool hold the remote content, so partial writes keep what is around them.
    pub fn fill(&mut self, remote: &dyn Remote, path: &str) -> RemoteResult<()> {
        if self.filled {
            return Ok(());
        }
        let mut src = remote.open_read(path, 0)?;
        let f = self.spool.as_file_mut();
        f.set_len(0).map_err(|e| io_err("spool", e))?;
        f.seek(SeekFrom::Start(0)).map_err(|e| io_err("spool", e))?;
        let n = copy_checked(&mut src, f).map_err(|e| match e {
            CopyError::Read(e) => {
                RemoteError::new(ErrorKind::Connection, format!("RETR {path}: {e}"))
            }
            CopyError::Write(e) => io_err("spool", e),
        })?;
        log::debug!("fetched {n} bytes of {path} into the spool");
        self.size = n;
        self.filled = true;
        Ok(())
    }

    /// Discards the content: the file is now empty (O_TRUNC, or truncate to 0).
    pub fn truncate_all(&mut self) -> RemoteResult<()> {
        self.spool
            .as_file()
            .set_len(0)
            .map_err(|e| io_err("spool", e))?;
        self.size = 0;
        self.filled = true;
        self.dirty = true;
        self.modified = SystemTime::now();
        self.drop_stream();
        self.no_streaming = false;
        Ok(())
    }

    /// Sets the size (the spool must be filled, or the new size zero).
    pub fn set_size(&mut self, size: u64) -> RemoteResult<()> {
        if size == 0 {
            return self.truncate_all();
        }
        self.spool
            .as_file()
            .set_len(size)
            .map_err(|e| io_err("spool", e))?;
        if self
            .streaming
            .as_ref()
            .is_some_and(|s| s.next != size || size < self.size)
        {
            self.drop_stream();
        }
        self.size = size;
        self.dirty = true;
        self.modified = SystemTime::now();
        Ok(())
    }

    /// Writes at `offset` (the spool must be filled). With `stream_to`, sequential
    /// writes of a file rewritten from the start also feed an upload to the name it gives.
    pub fn write(
        &mut self,
        remote: &dyn Remote,
        path: &str,
        stream_to: Option<&dyn Fn() -> String>,
        offset: u64,
        data: &[u8],
    ) -> RemoteResult<()> {
        self.spool
            .as_file()
            .write_all_at(data, offset)
            .map_err(|e| io_err("spool", e))?;
        let end = offset + data.len() as u64;
        let was = self.size;
        self.size = self.size.max(end);
        self.dirty = true;
        self.modified = SystemTime::now();
        match stream_to {
            Some(target) => self.feed_stream(remote, path, target, offset, data, was),
            None => self.no_streaming = true,
        }
        Ok(())
    }

    fn feed_stream(
        &mut self,
        remote: &dyn Remote,
        path: &str,
        temp_target: &dyn Fn() -> String,
        offset: u64,
        data: &[u8],
        size_before: u64,
    ) {
        if self.no_streaming {
            return;
        }
        if self.streaming.is_none() {
            // Only a file rewritten from its start, in order, can stream.
            if offset != 0 || size_before != 0 {
                self.no_streaming = true;
                return;
            }
            let temp = temp_target();
            match remote.open_upload(&temp) {
                Ok(upload) => {
                    self.streaming = Some(Streaming {
                        upload,
                        progress: STATS.upload(path, None),
                        temp,
                        next: 0,
                    })
                }
                Err(e) => {
                    log::debug!(
                        "no streaming upload ({}); the spool will be uploaded",
                        e.message
                    );
                    self.no_streaming = true;
                    return;
                }
            }
        }
        let ok = match self.streaming.as_mut() {
            Some(s) if s.next == offset => match s.upload.write_all(data) {
                Ok(()) => {
                    s.next += data.len() as u64;
                    s.progress.add(data.len() as u64);
                    true
                }
                Err(e) => {
                    log::debug!("streaming upload to {} failed: {e}", s.temp);
                    false
                }
            },
            _ => false,
        };
        if !ok {
            self.drop_stream();
            self.no_streaming = true;
        }
    }

    fn drop_stream(&mut self) {
        if let Some(s) = self.streaming.take() {
            drop(s.upload);
            log::debug!("abandoned streaming upload to {}", s.temp);
            self.orphan_temp = Some(s.temp);
        }
    }

    /// Reads the spooled content (the spool must be filled).
    pub fn read(&self, offset: u64, size: u32) -> RemoteResult<Vec<u8>> {
        if offset >= self.size {
            return Ok(Vec::new());
        }
        let len = (size as u64).min(self.size - offset) as usize;
        let mut buf = vec![0u8; len];
        let mut done = 0;
        while done < len {
            match self
                .spool
                .as_file()
                .read_at(&mut buf[done..], offset + done as u64)
            {
                Ok(0) => break, // a hole past the written data reads as zeros
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_err("spool", e)),
            }
        }
        Ok(buf)
    }

    /// Puts the content on the server at `path` and applies waiting attributes.
    /// On failure the state stays dirty and the spool is kept for a retry.
    pub fn upload(
        &mut self,
        remote: &dyn Remote,
        path: &str,
        mode: UploadMode,
    ) -> RemoteResult<()> {
        if !self.dirty || self.unlinked {
            return Ok(());
        }
        // A new file has nothing to protect: it goes straight to its name.
        let direct = mode == UploadMode::Direct || !self.exists_remotely;
        let streamed = match self.streaming.take() {
            Some(s) if s.next == self.size && mode == UploadMode::Atomic => {
                match s.upload.finish() {
                    Ok(()) => Some(s.temp),
                    Err(e) => {
                        log::info!(
                            "streaming upload of {path} failed ({}); uploading the spool",
                            e.message
                        );
                        let _ = remote.remove_file(&s.temp);
                        None
                    }
                }
            }
            Some(s) => {
                drop(s.upload);
                let _ = remote.remove_file(&s.temp);
                None
            }
            None => None,
        };
        if let Some(temp) = self.orphan_temp.take() {
            if Some(&temp) != streamed.as_ref() {
                let _ = remote.remove_file(&temp);
            }
        }
        match streamed {
            Some(temp) if temp == path => {}
            Some(temp) => replace(remote, &temp, path)?,
            None if direct => {
                if let (Some(mode), false) = (self.private_mode(), self.exists_remotely) {
                    // A new private file: create it empty and restrict it before any
                    // content lands, so other server users never see the content.
                    // The owner keeps write access until the content is in.
                    remote.store(path, &mut io::Cursor::new(Vec::new()))?;
                    let restricted = (mode | 0o600) & 0o7777;
                    match remote.chmod(path, restricted) {
                        Ok(()) => {
                            self.applied_mode = Some(restricted);
                            if restricted == mode {
                                self.pending_mode = None;
                            }
                        }
                        Err(e) if e.kind.is_transient() => return Err(e),
                        Err(e) => {
                            // A server without SITE CHMOD keeps its own mode; the data
                            // must still get there.
                            log::warn!("cannot restrict {path} before upload: {}", e.message);
                            self.pending_mode = None;
                        }
                    }
                }
                let progress = STATS.upload(path, Some(self.size));
                let mut source = Counted::new(self.spool.as_file_mut(), &progress);
                if let Err(e) = remote.store(path, &mut source) {
                    if !self.exists_remotely {
                        let _ = remote.remove_file(path);
                    }
                    return Err(e);
                }
            }
            None => {
                let temp = temp_path_for(path);
                let progress = STATS.upload(path, Some(self.size));
                let mut source = Counted::new(self.spool.as_file_mut(), &progress);
                if let Err(e) = remote.store(&temp, &mut source) {
                    let _ = remote.remove_file(&temp);
                    return Err(e);
                }
                replace(remote, &temp, path)?;
            }
        }
        self.dirty = false;
        self.existed_before_upload = self.exists_remotely;
        self.exists_remotely = true;
        self.no_streaming = true;
        Ok(())
    }

    /// The mode asked for a new file when it hides content that 0644 would show.
    pub fn private_mode(&self) -> Option<u32> {
        self.pending_mode.filter(|m| m & 0o044 != 0o044)
    }

    /// Whether the file was on the server before the upload now finishing
    /// (read right after a successful upload, which sets `exists_remotely`).
    pub fn exists_remotely_before_upload(&self) -> bool {
        self.existed_before_upload
    }

    /// Gives up a streaming upload and removes what it wrote (after an unlink).
    pub fn abandon_upload(&mut self, remote: &dyn Remote) {
        self.drop_stream();
        if let Some(temp) = self.orphan_temp.take() {
            let _ = remote.remove_file(&temp);
        }
    }

    /// Keeps a copy of the content that outlives the spool (a hard link named
    /// after the file, next to the spool) and returns where it is.
    pub fn keep_spool(&self, path: &str) -> io::Result<PathBuf> {
        let base: String = path
            .rsplit('/')
            .next()
            .unwrap_or("file")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || ".-_".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let dir = self.spool.path().parent().unwrap_or(Path::new("."));
        for n in 0..1000 {
            let kept = dir.join(format!("unsaved-{n}-{base}"));
            match std::fs::hard_link(self.spool.path(), &kept) {
                Ok(()) => return Ok(kept),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::other("no free name to keep the spool under"))
    }
}

/// Renames the uploaded temporary file over the target; where the server refuses
/// to rename over an existing file, deletes the target first (not atomic, logged).
fn replace(remote: &dyn Remote, temp: &str, path: &str) -> RemoteResult<()> {
    match remote.rename(temp, path) {
        Ok(()) => Ok(()),
        Err(e) if !e.kind.is_transient() => {
            log::info!(
                "rename over {path} refused ({}); deleting it first",
                e.message
            );
            match remote
                .remove_file(path)
                .and_then(|_| remote.rename(temp, path))
            {
                Ok(()) => Ok(()),
                Err(e2) => {
                    let _ = remote.remove_file(temp);
                    Err(e2)
                }
            }
        }
        Err(e) => {
            let _ = remote.remove_file(temp);
            Err(e)
        }
    }
}

enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

fn copy_checked(src: &mut dyn Read, dst: &mut File) -> Result<u64, CopyError> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0;
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        dst.write_all(&buf[..n]).map_err(CopyError::Write)?;
        total += n as u64;
    }
}
