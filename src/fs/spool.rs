//! The local copy of one file's content: a private temporary file on disk that
//! every handle of the file shares. Reads and writes are positional, so an upload
//! can read the spool (through a [`SpoolSource`]) while no lock is held.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tempfile::{NamedTempFile, TempPath};

use crate::copy::CopyError;
use crate::remote::{ErrorKind, RemoteError, RemoteResult};

/// A spool I/O error as a remote error: a full local disk is ENOSPC, as it would be
/// on the server.
pub fn io_err(what: &str, e: io::Error) -> RemoteError {
    let kind = match e.raw_os_error() {
        Some(libc::ENOSPC) => ErrorKind::NoSpace,
        Some(libc::EDQUOT) => ErrorKind::QuotaExceeded,
        _ => ErrorKind::Connection,
    };
    RemoteError::new(kind, format!("{what}: {e}"))
}

/// One spool file. Cloning shares the file.
#[derive(Clone)]
pub struct Spool {
    file: Arc<NamedTempFile>,
}

impl Spool {
    /// A new, empty spool in `dir` (mode 0600, as tempfile makes them).
    pub fn new(dir: &Path) -> io::Result<Spool> {
        let file = tempfile::Builder::new().prefix("spool-").tempfile_in(dir)?;
        Ok(Spool {
            file: Arc::new(file),
        })
    }

    /// A spool over `data` (a journal entry's content) without copying it: a
    /// second name for it in `dir`, removed with the spool.
    pub fn adopt(dir: &Path, data: &Path) -> io::Result<Spool> {
        static ADOPTED: AtomicU64 = AtomicU64::new(0);
        let n = ADOPTED.fetch_add(1, Ordering::Relaxed);
        let name = dir.join(format!("spool-journal-{}-{n}", std::process::id()));
        let _ = std::fs::remove_file(&name);
        std::fs::hard_link(data, &name)?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&name)?;
        Ok(Spool {
            file: Arc::new(NamedTempFile::from_parts(
                file,
                TempPath::try_from_path(name)?,
            )),
        })
    }

    pub fn file(&self) -> &File {
        self.file.as_file()
    }

    pub fn path(&self) -> &Path {
        self.file.path()
    }

    pub fn write_at(&self, offset: u64, data: &[u8]) -> RemoteResult<()> {
        self.file()
            .write_all_at(data, offset)
            .map_err(|e| io_err("spool", e))
    }

    pub fn set_len(&self, len: u64) -> RemoteResult<()> {
        self.file().set_len(len).map_err(|e| io_err("spool", e))
    }

    /// Up to `len` bytes at `offset`, from content `size` bytes long: a hole
    /// past the written data reads as zeros.
    pub fn read_at(&self, offset: u64, len: u64, size: u64) -> RemoteResult<Vec<u8>> {
        if offset >= size {
            return Ok(Vec::new());
        }
        let len = len.min(size - offset) as usize;
        let mut buf = vec![0u8; len];
        let mut done = 0;
        while done < len {
            match self.file().read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_err("spool", e)),
            }
        }
        Ok(buf)
    }

    /// Copies everything `src` yields into the spool, from its start; returns the length.
    /// A read error is the server's (`what` names the download), a write error the disk's.
    pub fn fill_from(&self, src: &mut dyn Read, what: &str) -> RemoteResult<u64> {
        let mut f = self.file();
        f.set_len(0).map_err(|e| io_err("spool", e))?;
        f.seek(SeekFrom::Start(0)).map_err(|e| io_err("spool", e))?;
        crate::copy::copy_chunks(src, |chunk| f.write_all(chunk)).map_err(|e| match e {
            CopyError::Read(e) => RemoteError::new(ErrorKind::Connection, format!("{what}: {e}")),
            CopyError::Write(e) => io_err("spool", e),
        })
    }

    /// A private copy of the first `len` bytes (a snapshot for an upload of a file
    /// that keeps changing).
    pub fn snapshot(&self, dir: &Path, len: u64) -> RemoteResult<Spool> {
        let copy = Spool::new(dir).map_err(|e| io_err("spool", e))?;
        let mut src = self.source(len, None);
        copy.fill_from(&mut src, "spool")?;
        Ok(copy)
    }

    /// A reader of the first `len` bytes, for an upload. With `watch`, reading fails
    /// as soon as the counter moves away from the value it had when the source was
    /// made: the content changed under the upload, which must not land half old, half new.
    pub fn source(&self, len: u64, watch: Option<(Arc<AtomicU64>, u64)>) -> SpoolSource {
        SpoolSource {
            spool: self.clone(),
            len,
            pos: 0,
            watch,
        }
    }

    /// Keeps a copy of the content that outlives the spool (a hard link named
    /// after the file, next to the spool) and returns where it is.
    pub fn keep(&self, path: &str) -> io::Result<PathBuf> {
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
        let dir = self.path().parent().unwrap_or(Path::new("."));
        for n in 0..1000 {
            let kept = dir.join(format!("unsaved-{n}-{base}"));
            match std::fs::hard_link(self.path(), &kept) {
                Ok(()) => return Ok(kept),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::other("no free name to keep the spool under"))
    }
}

/// The content of a spool as an upload reads it (rewindable, bounded).
pub struct SpoolSource {
    spool: Spool,
    len: u64,
    pos: u64,
    watch: Option<(Arc<AtomicU64>, u64)>,
}

/// The error a [`SpoolSource`] gives when the content changed while it was read.
pub const CHANGED_DURING_UPLOAD: &str = "the file changed while it was uploaded";

impl SpoolSource {
    fn changed(&self) -> bool {
        self.watch
            .as_ref()
            .is_some_and(|(g, at)| g.load(Ordering::SeqCst) != *at)
    }
}

impl Read for SpoolSource {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.changed() {
            return Err(io::Error::other(CHANGED_DURING_UPLOAD));
        }
        if self.pos >= self.len {
            return Ok(0);
        }
        let want = (buf.len() as u64).min(self.len - self.pos) as usize;
        let n = self.spool.file().read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            // Shorter than it was: it was truncated under us.
            return Err(io::Error::other(CHANGED_DURING_UPLOAD));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for SpoolSource {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let pos = match to {
            SeekFrom::Start(p) => p as i128,
            SeekFrom::Current(d) => self.pos as i128 + d as i128,
            SeekFrom::End(d) => self.len as i128 + d as i128,
        };
        if pos < 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before start",
            ));
        }
        self.pos = pos as u64;
        Ok(self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_see_writes_and_holes_read_as_zeros() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Spool::new(dir.path()).expect("spool");
        s.write_at(4, b"abcd").expect("write");
        assert_eq!(s.read_at(0, 100, 8).expect("read"), b"\0\0\0\0abcd");
        assert_eq!(s.read_at(0, 100, 10).expect("read").len(), 10);
        assert!(s.read_at(10, 4, 10).expect("read").is_empty());
    }

    #[test]
    fn a_source_stops_when_the_content_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Spool::new(dir.path()).expect("spool");
        s.write_at(0, b"hello").expect("write");
        let g = Arc::new(AtomicU64::new(3));
        let mut src = s.source(5, Some((Arc::clone(&g), 3)));
        let mut out = String::new();
        src.read_to_string(&mut out).expect("unchanged");
        assert_eq!(out, "hello");
        src.rewind().expect("rewind");
        g.store(4, Ordering::SeqCst);
        let err = src.read_to_string(&mut out).expect_err("changed");
        assert_eq!(err.to_string(), CHANGED_DURING_UPLOAD);
    }

    #[test]
    fn a_snapshot_does_not_follow_later_writes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Spool::new(dir.path()).expect("spool");
        s.write_at(0, b"one").expect("write");
        let snap = s.snapshot(dir.path(), 3).expect("snapshot");
        s.write_at(0, b"two").expect("write");
        assert_eq!(snap.read_at(0, 3, 3).expect("read"), b"one");
    }
}
