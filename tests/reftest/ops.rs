//! The operations a reftest case is made of, their proptest strategies, and what
//! an operation returns (compared between the filesystem and the model).

use proptest::prelude::*;
use std::fmt;

/// The files a case works on: three in the root and one in a subdirectory
/// (which always exists), so renames also cross directories.
pub const PATHS: [&str; 4] = ["/a", "/b", "/c", "/d/a"];
/// How many handles may be open at once.
pub const MAX_HANDLES: usize = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    ReadWrite,
}

impl Access {
    pub fn reads(self) -> bool {
        self != Access::Write
    }

    pub fn writes(self) -> bool {
        self != Access::Read
    }

    pub fn flags(self) -> i32 {
        match self {
            Access::Read => libc::O_RDONLY,
            Access::Write => libc::O_WRONLY,
            Access::ReadWrite => libc::O_RDWR,
        }
    }
}

/// How an `open(2)` is called.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct OpenFlags {
    pub access: Access,
    pub create: bool,
    /// Only with `create`.
    pub excl: bool,
    /// Only with write access.
    pub trunc: bool,
    pub append: bool,
}

impl OpenFlags {
    pub fn bits(self) -> i32 {
        let mut f = self.access.flags();
        for (on, bit) in [
            (self.create, libc::O_CREAT),
            (self.excl, libc::O_EXCL),
            (self.trunc, libc::O_TRUNC),
            (self.append, libc::O_APPEND),
        ] {
            if on {
                f |= bit;
            }
        }
        f
    }
}

/// One system call. Handles are picked by index modulo the number open (an
/// operation on a handle when none is open is skipped).
#[derive(Clone)]
pub enum Op {
    Open {
        path: usize,
        flags: OpenFlags,
    },
    /// `pwrite` (on an `O_APPEND` handle the kernel writes at the end instead).
    Write {
        h: usize,
        offset: u64,
        data: Vec<u8>,
    },
    /// `lseek(SEEK_END)` and `write`.
    Append {
        h: usize,
        data: Vec<u8>,
    },
    Read {
        h: usize,
        offset: u64,
        len: u32,
    },
    /// `truncate(2)` by path.
    Truncate {
        path: usize,
        size: u64,
    },
    Rename {
        from: usize,
        to: usize,
    },
    Unlink {
        path: usize,
    },
    Fsync {
        h: usize,
    },
    /// `close(2)`: flush, then release.
    Close {
        h: usize,
    },
    Stat {
        path: usize,
    },
    /// The daemon dies (async mode): every handle is gone, and a new mount
    /// with the same journal takes over.
    Crash,
}

/// What an operation gave back.
#[derive(Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Not run: no handle to run it on, or too many handles open.
    Skipped,
    Ok,
    Err(i32),
    Data(Vec<u8>),
    Size(u64),
}

impl Outcome {
    pub fn is_err(&self) -> bool {
        matches!(self, Outcome::Err(_))
    }
}

impl fmt::Debug for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Skipped => write!(f, "skipped"),
            Outcome::Ok => write!(f, "ok"),
            Outcome::Err(e) => write!(f, "{}", errno_name(*e)),
            Outcome::Data(d) => write!(f, "data {}", Bytes(d)),
            Outcome::Size(s) => write!(f, "size {s}"),
        }
    }
}

pub fn errno_name(e: i32) -> String {
    let name = match e {
        libc::ENOENT => "ENOENT",
        libc::EEXIST => "EEXIST",
        libc::EBADF => "EBADF",
        libc::EIO => "EIO",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::ENOTEMPTY => "ENOTEMPTY",
        _ => return format!("errno {e}"),
    };
    name.to_string()
}

/// Bytes shown as a compact string: `"ab\x00"` style.
pub struct Bytes<'a>(pub &'a [u8]);

impl fmt::Display for Bytes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.0.escape_ascii())
    }
}

impl fmt::Debug for OpenFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = vec![match self.access {
            Access::Read => "O_RDONLY",
            Access::Write => "O_WRONLY",
            Access::ReadWrite => "O_RDWR",
        }];
        for (on, name) in [
            (self.create, "O_CREAT"),
            (self.excl, "O_EXCL"),
            (self.trunc, "O_TRUNC"),
            (self.append, "O_APPEND"),
        ] {
            if on {
                parts.push(name);
            }
        }
        write!(f, "{}", parts.join("|"))
    }
}

impl fmt::Debug for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = |i: &usize| PATHS[*i];
        match self {
            Op::Open { path, flags } => write!(f, "open({}, {flags:?})", p(path)),
            Op::Write { h, offset, data } => write!(f, "pwrite(#{h}, {}, @{offset})", Bytes(data)),
            Op::Append { h, data } => write!(f, "append(#{h}, {})", Bytes(data)),
            Op::Read { h, offset, len } => write!(f, "pread(#{h}, {len}, @{offset})"),
            Op::Truncate { path, size } => write!(f, "truncate({}, {size})", p(path)),
            Op::Rename { from, to } => write!(f, "rename({}, {})", p(from), p(to)),
            Op::Unlink { path } => write!(f, "unlink({})", p(path)),
            Op::Fsync { h } => write!(f, "fsync(#{h})"),
            Op::Close { h } => write!(f, "close(#{h})"),
            Op::Stat { path } => write!(f, "stat({})", p(path)),
            Op::Crash => write!(f, "crash and remount"),
        }
    }
}

fn path() -> impl Strategy<Value = usize> {
    0..PATHS.len()
}

fn handle() -> impl Strategy<Value = usize> {
    0..MAX_HANDLES
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    // Few distinct byte values, so shrunk cases stay readable.
    prop::collection::vec(prop::sample::select(b"xyz0".to_vec()), 1..6)
}

fn open_flags() -> impl Strategy<Value = OpenFlags> {
    (
        prop_oneof![
            Just(Access::Read),
            Just(Access::Write),
            Just(Access::ReadWrite)
        ],
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(access, create, excl, trunc, append)| OpenFlags {
            access,
            create,
            excl: excl && create,
            trunc: trunc && access.writes(),
            append,
        })
}

pub fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (path(), open_flags()).prop_map(|(path, flags)| Op::Open { path, flags }),
        4 => (handle(), 0u64..12, bytes()).prop_map(|(h, offset, data)| Op::Write { h, offset, data }),
        2 => (handle(), bytes()).prop_map(|(h, data)| Op::Append { h, data }),
        3 => (handle(), 0u64..12, 1u32..24).prop_map(|(h, offset, len)| Op::Read { h, offset, len }),
        1 => (path(), 0u64..12).prop_map(|(path, size)| Op::Truncate { path, size }),
        2 => (path(), path()).prop_map(|(from, to)| Op::Rename { from, to }),
        1 => path().prop_map(|path| Op::Unlink { path }),
        1 => handle().prop_map(|h| Op::Fsync { h }),
        3 => handle().prop_map(|h| Op::Close { h }),
        2 => path().prop_map(|path| Op::Stat { path }),
    ]
}

/// The operations of the async phase: the usual ones, and now and then a crash.
pub fn op_with_crashes() -> impl Strategy<Value = Op> {
    prop_oneof![
        15 => op(),
        1 => Just(Op::Crash),
    ]
}

/// The files on the server before the case starts.
pub fn initial_files() -> impl Strategy<Value = Vec<Option<Vec<u8>>>> {
    prop::collection::vec(
        prop::option::of(prop::collection::vec(
            prop::sample::select(b"abc".to_vec()),
            0..8,
        )),
        PATHS.len(),
    )
}
