//! The filesystem logic: FUSE-shaped operations (lookup, readdir, read...) over a
//! [`Remote`], with no FUSE types and no FTP types, so it is testable in memory.

pub mod inodes;
#[cfg(test)]
pub mod memory;
pub mod meta;
pub mod reader;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use crate::remote::{Entry, EntryKind, ErrorKind, Remote, RemoteError};
use inodes::{InodeTable, ROOT};
use meta::{split_path, Listing, MetaCache};
use reader::{BlockCache, Bytes, FileKey, Reader};

/// An errno value to hand back to the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

impl From<RemoteError> for Errno {
    fn from(e: RemoteError) -> Self {
        log::warn!("{e}");
        Errno(e.errno())
    }
}

pub type FsResult<T> = Result<T, Errno>;

/// Settings of the filesystem logic.
#[derive(Debug, Clone)]
pub struct FsConfig {
    pub uid: u32,
    pub gid: u32,
    /// Bits removed from every mode.
    pub umask: u32,
    /// How long listings and attributes stay fresh, here and in the kernel.
    pub cache_timeout: Duration,
    /// Bytes for the block cache.
    pub block_cache: usize,
    /// Entries kept in the directory cache, over all directories.
    pub max_cached_entries: usize,
    /// Timeout for one network step.
    pub timeout: Duration,
    pub read_only: bool,
}

impl Default for FsConfig {
    fn default() -> Self {
        FsConfig {
            uid: 0,
            gid: 0,
            umask: 0,
            cache_timeout: Duration::from_secs(30),
            block_cache: 32 << 20,
            max_cached_entries: 200_000,
            timeout: Duration::from_secs(30),
            read_only: false,
        }
    }
}

/// File attributes, as the kernel wants them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub kind: EntryKind,
    pub size: u64,
    pub perm: u16,
    pub mtime: SystemTime,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
}

/// One readdir entry.
#[derive(Debug, Clone)]
pub struct DirItem {
    pub ino: u64,
    pub kind: EntryKind,
    pub name: String,
    /// None for "." and "..".
    pub attr: Option<Attr>,
}

/// Filesystem-wide numbers for statfs.
#[derive(Debug, Clone, Copy)]
pub struct StatFs {
    pub blocks: u64,
    pub bfree: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
}

enum Handle {
    File(Mutex<Reader>),
    Dir { ino: u64, items: Vec<DirItem> },
}

pub struct FtpFs {
    remote: Arc<dyn Remote>,
    cfg: FsConfig,
    inodes: Mutex<InodeTable>,
    meta: MetaCache,
    blocks: Arc<BlockCache>,
    handles: Mutex<HashMap<u64, Arc<Handle>>>,
    next_fh: AtomicU64,
    /// Size and mtime at the last open, per inode, to decide FOPEN_KEEP_CACHE.
    opened_versions: Mutex<HashMap<u64, FileKey>>,
    mounted_at: SystemTime,
}

/// Above this many inodes, those the kernel does not hold are pruned.
const INODE_SOFT_LIMIT: usize = 100_000;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl FtpFs {
    pub fn new(remote: Arc<dyn Remote>, cfg: FsConfig) -> Self {
        FtpFs {
            meta: MetaCache::new(cfg.cache_timeout, cfg.max_cached_entries),
            blocks: Arc::new(BlockCache::new(cfg.block_cache)),
            remote,
            cfg,
            inodes: Mutex::new(InodeTable::new()),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            opened_versions: Mutex::new(HashMap::new()),
            mounted_at: SystemTime::now(),
        }
    }

    pub fn config(&self) -> &FsConfig {
        &self.cfg
    }

    pub fn ttl(&self) -> Duration {
        self.cfg.cache_timeout
    }

    fn path_of(&self, ino: u64) -> FsResult<String> {
        lock(&self.inodes).path(ino).ok_or(Errno(libc::ENOENT))
    }

    fn listing(&self, dir: &str) -> FsResult<Arc<Listing>> {
        Ok(self.meta.listing(dir, || self.remote.list(dir))?)
    }

    fn attr_of(&self, ino: u64, e: &Entry) -> Attr {
        let default = match e.kind {
            EntryKind::Dir => 0o755,
            EntryKind::File => 0o644,
            EntryKind::Symlink => 0o777,
        };
        let mode = e.mode.unwrap_or(default) & 0o7777 & !self.cfg.umask;
        let mode = if self.cfg.read_only && e.kind != EntryKind::Symlink {
            mode & !0o222
        } else {
            mode
        };
        Attr {
            ino,
            kind: e.kind,
            size: match e.kind {
                EntryKind::Symlink => e.target.as_ref().map(|t| t.len() as u64).unwrap_or(0),
                _ => e.size,
            },
            perm: mode as u16,
            mtime: e.mtime.unwrap_or(self.mounted_at),
            nlink: if e.kind == EntryKind::Dir { 2 } else { 1 },
            uid: self.cfg.uid,
            gid: self.cfg.gid,
        }
    }

    fn root_attr(&self) -> Attr {
        let mut e = Entry::new("", EntryKind::Dir, 0);
        e.mtime = Some(self.mounted_at);
        self.attr_of(ROOT, &e)
    }

    /// The entry at `path` (not the root), from its parent's listing.
    fn entry(&self, path: &str) -> FsResult<Entry> {
        let (dir, name) = split_path(path).ok_or(Errno(libc::ENOENT))?;
        let listing = self.listing(dir)?;
        listing.get(name).cloned().ok_or(Errno(libc::ENOENT))
    }

    pub fn lookup(&self, parent: u64, name: &str) -> FsResult<Attr> {
        if name.contains(['\r', '\n', '\0']) {
            return Err(Errno(libc::EINVAL));
        }
        if name.len() > 255 {
            return Err(Errno(libc::ENAMETOOLONG));
        }
        let dir = self.path_of(parent)?;
        let listing = self.listing(&dir)?;
        let entry = listing.get(name).ok_or(Errno(libc::ENOENT))?;
        let ino = lock(&self.inodes).lookup(parent, name);
        Ok(self.attr_of(ino, entry))
    }

    pub fn forget(&self, ino: u64, nlookup: u64) {
        lock(&self.inodes).forget(ino, nlookup);
    }

    pub fn getattr(&self, ino: u64) -> FsResult<Attr> {
        if ino == ROOT {
            return Ok(self.root_attr());
        }
        let path = self.path_of(ino)?;
        let e = self.entry(&path)?;
        Ok(self.attr_of(ino, &e))
    }

    pub fn readlink(&self, ino: u64) -> FsResult<String> {
        let path = self.path_of(ino)?;
        let e = self.entry(&path)?;
        match (e.kind, e.target) {
            (EntryKind::Symlink, Some(t)) => Ok(t),
            _ => Err(Errno(libc::EINVAL)),
        }
    }

    /// Opens a directory: its listing is taken once, so offsets stay stable.
    pub fn opendir(&self, ino: u64) -> FsResult<u64> {
        let path = self.path_of(ino)?;
        if ino != ROOT && self.entry(&path)?.kind != EntryKind::Dir {
            return Err(Errno(libc::ENOTDIR));
        }
        let listing = self.listing(&path)?;
        let parent = lock(&self.inodes).parent(ino).unwrap_or(ROOT);
        let mut items = Vec::with_capacity(listing.entries.len() + 2);
        for (name, i) in [(".", ino), ("..", parent)] {
            items.push(DirItem {
                ino: i,
                kind: EntryKind::Dir,
                name: name.into(),
                attr: None,
            });
        }
        {
            let mut inodes = lock(&self.inodes);
            if inodes.len() > INODE_SOFT_LIMIT {
                inodes.prune_unreferenced();
            }
            for e in &listing.entries {
                let child = inodes.get_or_insert(ino, &e.name);
                items.push(DirItem {
                    ino: child,
                    kind: e.kind,
                    name: e.name.clone(),
                    attr: Some(self.attr_of(child, e)),
                });
            }
        }
        Ok(self.add_handle(Handle::Dir { ino, items }))
    }

    /// Hands out the entries from `offset` on. `add` returns false once the
    /// kernel's buffer is full. With `plus`, each entry handed out counts as a lookup.
    pub fn readdir(
        &self,
        fh: u64,
        offset: u64,
        plus: bool,
        mut add: impl FnMut(&DirItem, u64) -> bool,
    ) -> FsResult<()> {
        let handle = self.handle(fh)?;
        let Handle::Dir { ino: dir, items } = handle.as_ref() else {
            return Err(Errno(libc::ENOTDIR));
        };
        for (i, item) in items.iter().enumerate().skip(offset as usize) {
            let next = i as u64 + 1;
            if !plus || item.attr.is_none() {
                if !add(item, next) {
                    break;
                }
                continue;
            }
            // The inode may have been pruned since opendir: look it up again.
            let ino = lock(&self.inodes).lookup(*dir, &item.name);
            let mut item = item.clone();
            item.ino = ino;
            if let Some(a) = item.attr.as_mut() {
                a.ino = ino;
            }
            if !add(&item, next) {
                self.forget(ino, 1);
                break;
            }
        }
        Ok(())
    }

    pub fn releasedir(&self, fh: u64) {
        lock(&self.handles).remove(&fh);
    }

    /// Opens a file for reading; the bool says whether the kernel may keep its page cache.
    pub fn open(&self, ino: u64) -> FsResult<(u64, bool)> {
        let path = self.path_of(ino)?;
        let e = self.entry(&path)?;
        match e.kind {
            EntryKind::Dir => return Err(Errno(libc::EISDIR)),
            EntryKind::Symlink => return Err(Errno(libc::ELOOP)),
            EntryKind::File => {}
        }
        let key = FileKey {
            ino,
            size: e.size,
            mtime: e.mtime,
        };
        let keep_cache = lock(&self.opened_versions).insert(ino, key) == Some(key);
        let fh = self.add_handle(Handle::File(Mutex::new(Reader::new(path, key))));
        Ok((fh, keep_cache))
    }

    pub fn read(&self, fh: u64, offset: u64, size: u32) -> FsResult<Bytes> {
        let handle = self.handle(fh)?;
        let Handle::File(reader) = handle.as_ref() else {
            return Err(Errno(libc::EISDIR));
        };
        let mut reader = lock(reader);
        Ok(reader.read(
            &self.remote,
            &self.blocks,
            offset,
            size as u64,
            self.cfg.timeout,
        )?)
    }

    pub fn release(&self, fh: u64) {
        lock(&self.handles).remove(&fh);
    }

    pub fn statfs(&self) -> StatFs {
        // FTP cannot tell free space; report plenty so tools do not refuse to write.
        StatFs {
            blocks: 1 << 32,
            bfree: 1 << 32,
            files: 1 << 24,
            ffree: 1 << 24,
            bsize: 4096,
            namelen: 255,
        }
    }

    fn add_handle(&self, h: Handle) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.handles).insert(fh, Arc::new(h));
        fh
    }

    fn handle(&self, fh: u64) -> FsResult<Arc<Handle>> {
        lock(&self.handles)
            .get(&fh)
            .cloned()
            .ok_or(Errno(libc::EBADF))
    }

    /// Numbers for logs and status: (dir cache hits, misses, block cache hits, misses).
    pub fn cache_stats(&self) -> (u64, u64, u64, u64) {
        let (h, m, _, _) = self.meta.stats();
        (
            h,
            m,
            self.blocks.hits.load(Ordering::Relaxed),
            self.blocks.misses.load(Ordering::Relaxed),
        )
    }
}

impl From<ErrorKind> for Errno {
    fn from(k: ErrorKind) -> Self {
        Errno(k.errno())
    }
}
