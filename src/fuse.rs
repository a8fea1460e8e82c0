//! The thin fuser adapter: unpack each request, call [`FtpFs`], turn the
//! result into a reply. No filesystem logic lives here.
//!
//! Every call runs under `catch_unwind`, so a bug answers EIO instead of
//! taking the mount down.

use std::ffi::OsStr;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use std::path::Path;
use std::time::SystemTime;

use fuser::{
    Errno as FuseErrno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::fs::{Attr, Errno, FsResult, FtpFs, RenameMode, SetAttr};
use crate::remote::EntryKind;

/// Largest read and write requests, and the kernel's read-ahead.
const MAX_IO: u32 = 1024 * 1024;

pub struct FuseAdapter {
    fs: Arc<FtpFs>,
}

impl FuseAdapter {
    pub fn new(fs: Arc<FtpFs>) -> Self {
        FuseAdapter { fs }
    }
}

/// Runs one operation; a panic becomes EIO.
fn run<T>(op: &str, f: impl FnOnce() -> FsResult<T>) -> Result<T, FuseErrno> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(Errno(e))) => Err(FuseErrno::from_i32(e)),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            log::error!("bug: {op} panicked: {msg}");
            Err(FuseErrno::EIO)
        }
    }
}

fn name_str(name: &OsStr) -> FsResult<&str> {
    name.to_str().ok_or(Errno(libc::EINVAL))
}

fn reply_entry(reply: ReplyEntry, ttl: &std::time::Duration, r: Result<Attr, FuseErrno>) {
    match r {
        Ok(a) => reply.entry(ttl, &file_attr(&a), Generation(0)),
        Err(e) => reply.error(e),
    }
}

fn reply_empty(reply: ReplyEmpty, r: Result<(), FuseErrno>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

fn file_type(k: EntryKind) -> FileType {
    match k {
        EntryKind::File => FileType::RegularFile,
        EntryKind::Dir => FileType::Directory,
        EntryKind::Symlink => FileType::Symlink,
    }
}

fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: a.mtime,
        mtime: a.mtime,
        ctime: a.mtime,
        crtime: a.mtime,
        kind: file_type(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: 0,
        // Tools size their buffers by this: 1 MiB matches the largest FUSE request.
        blksize: MAX_IO,
        flags: 0,
    }
}

impl Filesystem for FuseAdapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        let _ = config.set_max_readahead(MAX_IO);
        let _ = config.set_max_write(MAX_IO);
        // Each is optional: an older kernel without one just works a little slower.
        for flag in [
            // attributes come with readdir: `ls -l` costs no lookup per entry
            InitFlags::FUSE_DO_READDIRPLUS,
            // lookups in one directory run in parallel
            InitFlags::FUSE_PARALLEL_DIROPS,
            // Not FUSE_ATOMIC_O_TRUNC: with it the file is truncated inside open,
            // before the kernel checks that it may be written at all (a running
            // executable gives ETXTBSY only after the truncate). Without it the
            // kernel checks first and then sends the truncate as a setattr.
            InitFlags::FUSE_CACHE_SYMLINKS,
        ] {
            if let Err(missing) = config.add_capabilities(flag) {
                log::debug!("kernel lacks {missing:?}");
            }
        }
        Ok(())
    }

    fn destroy(&mut self) {
        log::info!("unmounted");
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let r = run("lookup", || {
            let name = name.to_str().ok_or(Errno(libc::EINVAL))?;
            self.fs.lookup(parent.0, name)
        });
        match r {
            Ok(a) => reply.entry(&self.fs.ttl(), &file_attr(&a), Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        let _ = run("forget", || {
            self.fs.forget(ino.0, nlookup);
            Ok(())
        });
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match run("getattr", || self.fs.getattr(ino.0)) {
            Ok(a) => reply.attr(&self.fs.ttl(), &file_attr(&a)),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match run("readlink", || self.fs.readlink(ino.0)) {
            Ok(t) => reply.data(t.as_bytes()),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match run("open", || self.fs.open(ino.0, flags.0)) {
            Ok((fh, keep)) => {
                let flags = if keep {
                    FopenFlags::FOPEN_KEEP_CACHE
                } else {
                    FopenFlags::empty()
                };
                reply.opened(FileHandle(fh), flags)
            }
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let r = run("create", || {
            self.fs
                .create(parent.0, name_str(name)?, mode & !umask, flags)
        });
        match r {
            Ok((a, fh)) => reply.created(
                &self.fs.ttl(),
                &file_attr(&a),
                Generation(0),
                FileHandle(fh),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        log::trace!("write fh={} offset={offset} size={}", fh.0, data.len());
        match run("write", || self.fs.write(fh.0, offset, data)) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply_empty(reply, run("flush", || self.fs.flush(fh.0)));
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply_empty(reply, run("fsync", || self.fs.fsync(fh.0)));
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Directory changes are made on the server at once.
        reply.ok();
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let set = SetAttr {
            mode,
            uid,
            gid,
            size,
            mtime: match mtime {
                // The "now" of a truncate (O_TRUNC, ftruncate) is the content change
                // itself, which the upload records: no separate time to store.
                Some(TimeOrNow::Now) if size.is_some() => None,
                Some(TimeOrNow::Now) => Some(SystemTime::now()),
                Some(TimeOrNow::SpecificTime(t)) => Some(t),
                None => None,
            },
            through_handle: fh.is_some(),
        };
        match run("setattr", || self.fs.setattr(ino.0, &set)) {
            Ok(a) => reply.attr(&self.fs.ttl(), &file_attr(&a)),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let r = run("mkdir", || {
            self.fs.mkdir(parent.0, name_str(name)?, mode & !umask)
        });
        reply_entry(reply, &self.fs.ttl(), r);
    }

    fn mknod(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        let r = run("mknod", || {
            self.fs
                .mknod(parent.0, name_str(name)?, mode & !(umask & 0o777))
        });
        reply_entry(reply, &self.fs.ttl(), r);
    }

    fn symlink(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _target: &Path,
        reply: ReplyEntry,
    ) {
        // FTP has no command to create links.
        reply.error(FuseErrno::EPERM);
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(FuseErrno::EPERM);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(
            reply,
            run("unlink", || self.fs.unlink(parent.0, name_str(name)?)),
        );
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(
            reply,
            run("rmdir", || self.fs.rmdir(parent.0, name_str(name)?)),
        );
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let r = run("rename", || {
            if flags.contains(RenameFlags::RENAME_EXCHANGE) {
                return Err(Errno(libc::EINVAL));
            }
            let mode = if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                RenameMode::NoReplace
            } else {
                RenameMode::Replace
            };
            self.fs.rename(
                parent.0,
                name_str(name)?,
                newparent.0,
                name_str(newname)?,
                mode,
            )
        });
        reply_empty(reply, r);
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        log::trace!("read fh={} offset={offset} size={size}", fh.0);
        match run("read", || self.fs.read(fh.0, offset, size)) {
            Ok(d) => {
                log::trace!("read fh={} offset={offset} gave {}", fh.0, d.len());
                reply.data(&d)
            }
            Err(e) => reply.error(e),
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let _ = run("release", || {
            self.fs.release(fh.0);
            Ok(())
        });
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match run("opendir", || self.fs.opendir_cached(ino.0)) {
            Ok((fh, keep)) => {
                // The kernel may cache readdir results; it keeps them only while
                // the listing is unchanged, and drops them itself when we change
                // the directory through the mount.
                let mut flags = FopenFlags::FOPEN_CACHE_DIR;
                if keep {
                    flags |= FopenFlags::FOPEN_KEEP_CACHE;
                }
                reply.opened(FileHandle(fh), flags)
            }
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let r = run("readdir", || {
            self.fs.readdir(fh.0, offset, false, |item, next| {
                !reply.add(INodeNo(item.ino), next, file_type(item.kind), &item.name)
            })
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let ttl = self.fs.ttl();
        let r = run("readdirplus", || {
            let dot = self.fs.getattr(ino.0).ok();
            self.fs.readdir(fh.0, offset, true, |item, next| {
                let attr = match (&item.attr, &dot) {
                    (Some(a), _) => file_attr(a),
                    (None, Some(d)) => FileAttr {
                        ino: INodeNo(item.ino),
                        ..file_attr(d)
                    },
                    (None, None) => return true, // "." and ".." are optional
                };
                !reply.add(
                    INodeNo(item.ino),
                    next,
                    &item.name,
                    &ttl,
                    &attr,
                    Generation(0),
                )
            })
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.fs.releasedir(fh.0);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let s = self.fs.statfs();
        reply.statfs(
            s.blocks, s.bfree, s.bfree, s.files, s.ffree, s.bsize, s.namelen, s.bsize,
        );
    }

    // Extended attributes: ENOSYS tells the kernel to answer ENOTSUP by itself from
    // then on, so `ls -l` and `cp -a` do not cost a request per file.
    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        reply.error(FuseErrno::ENOSYS);
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(FuseErrno::ENOSYS);
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(FuseErrno::ENOSYS);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: ReplyXattr) {
        reply.error(FuseErrno::ENOSYS);
    }
}

/// Raises the kernel's read-ahead for this mount (the FUSE INIT reply cannot go
/// above 128 KiB): larger sequential reads mean fewer requests and better overlap.
/// Needs root; otherwise the default stays, which is only slower.
pub fn raise_readahead(mountpoint: &std::path::Path, kib: u32) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let target = mountpoint.to_string_lossy();
    // Fields: id parent major:minor root mountpoint ...
    let dev = info.lines().rev().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        (f.len() > 4 && f[4] == target).then(|| f[2].to_string())
    });
    let Some(dev) = dev else { return };
    let path = format!("/sys/class/bdi/{dev}/read_ahead_kb");
    match std::fs::write(&path, kib.to_string()) {
        Ok(()) => log::debug!("read-ahead set to {kib} KiB ({path})"),
        Err(e) => log::debug!("could not raise read-ahead ({path}): {e}"),
    }
}
