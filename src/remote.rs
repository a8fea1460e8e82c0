//! The seam between the filesystem logic and the wire protocol.
//!
//! `fs` talks only to the [`Remote`] trait, so it can be tested against the
//! in-memory implementation in `fs::memory` and run for real against `ftp::FtpRemote`.
//! Errors are protocol-neutral [`ErrorKind`]s that map onto errno values.

use std::fmt;
use std::io::{Read, Seek, Write};
use std::time::SystemTime;

/// What a directory entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
}

/// One entry of a remote directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The bare name (never contains `/`, NUL, CR or LF, and is never `.` or `..`).
    pub name: String,
    pub kind: EntryKind,
    /// Size in bytes (0 when the server does not say).
    pub size: u64,
    /// Last modification time, when the server gives one.
    pub mtime: Option<SystemTime>,
    /// Permission bits (`0o7777` mask), when the server gives them.
    pub mode: Option<u32>,
    /// The target of a symbolic link.
    pub target: Option<String>,
}

impl Entry {
    /// A plain entry with no optional facts; handy in tests and parsers.
    pub fn new(name: impl Into<String>, kind: EntryKind, size: u64) -> Self {
        Entry {
            name: name.into(),
            kind,
            size,
            mtime: None,
            mode: None,
            target: None,
        }
    }
}

/// Why a remote operation failed, independent of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    NotFound,
    PermissionDenied,
    AlreadyExists,
    NotEmpty,
    NotADirectory,
    IsADirectory,
    NoSpace,
    QuotaExceeded,
    InvalidName,
    /// The path (the command line carrying it) is longer than the server takes.
    NameTooLong,
    Unsupported,
    Timeout,
    /// The connection broke or could not be made.
    Connection,
    /// The server answered something we cannot use.
    Protocol,
}

impl ErrorKind {
    /// The errno value that a local program sees for this kind.
    pub fn errno(self) -> i32 {
        match self {
            ErrorKind::NotFound => libc::ENOENT,
            ErrorKind::PermissionDenied => libc::EACCES,
            ErrorKind::AlreadyExists => libc::EEXIST,
            ErrorKind::NotEmpty => libc::ENOTEMPTY,
            ErrorKind::NotADirectory => libc::ENOTDIR,
            ErrorKind::IsADirectory => libc::EISDIR,
            ErrorKind::NoSpace => libc::ENOSPC,
            ErrorKind::QuotaExceeded => libc::EDQUOT,
            ErrorKind::InvalidName => libc::EINVAL,
            ErrorKind::NameTooLong => libc::ENAMETOOLONG,
            ErrorKind::Unsupported => libc::ENOTSUP,
            ErrorKind::Timeout => libc::ETIMEDOUT,
            ErrorKind::Connection | ErrorKind::Protocol => libc::EIO,
        }
    }

    /// Whether retrying the same idempotent operation on a fresh connection may help.
    pub fn is_transient(self) -> bool {
        matches!(self, ErrorKind::Connection | ErrorKind::Timeout)
    }
}

/// A failed remote operation: its kind and a human-readable cause (never a password).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteError {
    pub kind: ErrorKind,
    pub message: String,
}

impl RemoteError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        RemoteError {
            kind,
            message: message.into(),
        }
    }

    pub fn errno(&self) -> i32 {
        self.kind.errno()
    }
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.message)
    }
}

impl std::error::Error for RemoteError {}

pub type RemoteResult<T> = Result<T, RemoteError>;

/// An open download. Reading yields the file's bytes from the offset it was opened at;
/// dropping it early aborts the transfer and frees the connection.
pub type ReadStream = Box<dyn Read + Send>;

/// Something an upload can read from, and rewind to retry.
pub trait Source: Read + Seek + Send {}
impl<T: Read + Seek + Send> Source for T {}

/// An upload in progress, fed as the application writes. Dropping it without
/// [`finish`](UploadStream::finish) aborts the transfer.
pub trait UploadStream: Write + Send {
    /// Completes the transfer and returns the server's verdict on it.
    fn finish(self: Box<Self>) -> RemoteResult<()>;
}

/// What the filesystem needs from a server. Paths are absolute within the mount
/// (`/` is the mount's root).
pub trait Remote: Send + Sync {
    /// Lists a directory: one round trip.
    fn list(&self, dir: &str) -> RemoteResult<Vec<Entry>>;

    /// Opens `path` for reading, starting `offset` bytes in.
    fn open_read(&self, path: &str, offset: u64) -> RemoteResult<ReadStream>;

    /// Uploads everything `data` holds (from its start) to `path`, replacing it.
    fn store(&self, path: &str, data: &mut dyn Source) -> RemoteResult<u64>;

    /// Starts an upload to `path` that is fed while it runs.
    fn open_upload(&self, path: &str) -> RemoteResult<Box<dyn UploadStream>>;

    /// Renames `from` to `to`, replacing a file at `to` where the server allows it.
    fn rename(&self, from: &str, to: &str) -> RemoteResult<()>;

    /// Deletes a file.
    fn remove_file(&self, path: &str) -> RemoteResult<()>;

    fn mkdir(&self, path: &str) -> RemoteResult<()>;

    fn rmdir(&self, path: &str) -> RemoteResult<()>;

    /// Sets the modification time; `Unsupported` when the server cannot.
    fn set_mtime(&self, path: &str, mtime: SystemTime) -> RemoteResult<()>;

    /// The server's own modification time of a file, to the second (MDTM);
    /// `Unsupported` when the server cannot tell.
    fn mtime(&self, _path: &str) -> RemoteResult<SystemTime> {
        Err(RemoteError::new(ErrorKind::Unsupported, "no MDTM"))
    }

    /// Sets the permission bits; `Unsupported` when the server cannot.
    fn chmod(&self, path: &str, mode: u32) -> RemoteResult<()>;

    /// Whether a transfer has been waiting a while for a connection: a long
    /// streaming upload should then give its connection up.
    fn transfer_contended(&self) -> bool {
        false
    }

    /// Connections free for background work now (idle, or not opened yet within
    /// the limit), less one kept for whatever the user does next.
    fn spare_connections(&self) -> usize {
        usize::MAX
    }

    /// Sets what to call when a transfer starts waiting for a connection, so that
    /// the filesystem can give up idle streams that hold one.
    fn on_contention(&self, _hook: ContentionHook) {}
}

/// Called (on the waiting thread, with no lock held) when transfers wait for a
/// connection.
pub type ContentionHook = Box<dyn Fn() + Send + Sync>;

/// Checks a single path component, from the server or from the user.
///
/// Rejects empty names, `.` and `..`, and any name containing `/`, NUL, CR or LF:
/// the last two would let a name inject FTP commands.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0', '\r', '\n'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_inject_commands_are_refused() {
        assert!(is_valid_name("index.html"));
        assert!(is_valid_name("with space"));
        assert!(is_valid_name(".hidden"));
        assert!(is_valid_name("ünïcødé"));
        for bad in ["", ".", "..", "a/b", "a\rb", "a\nDELE x", "a\0b"] {
            assert!(!is_valid_name(bad), "{bad:?} must be refused");
        }
    }

    #[test]
    fn errno_mapping_is_specific() {
        assert_eq!(ErrorKind::NotFound.errno(), libc::ENOENT);
        assert_eq!(ErrorKind::NotEmpty.errno(), libc::ENOTEMPTY);
        assert_eq!(ErrorKind::NoSpace.errno(), libc::ENOSPC);
        assert_eq!(ErrorKind::Protocol.errno(), libc::EIO);
    }
}
