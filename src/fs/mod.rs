//! The filesystem logic: FUSE-shaped operations (lookup, readdir, read...) over a
//! [`Remote`], with no FUSE types and no FTP types, so it is testable in memory.

#[cfg(test)]
mod async_tests;
mod async_writeback;
mod background;
mod dir_prefetch;
#[cfg(any(test, feature = "testing"))]
pub mod faulty;
pub mod inodes;
pub mod journal;
pub mod lifecycle;
#[cfg(test)]
mod lifecycle_tests;
mod lost_reply;
#[cfg(any(test, feature = "testing"))]
pub mod memory;
pub mod meta;
mod namespace;
mod prefetch;
pub mod reader;
mod segments;
pub mod set_times;
mod spool;
mod streaming;
#[cfg(test)]
mod tests;
pub(crate) mod write_ops;
#[cfg(test)]
mod write_tests;
mod writeback;

pub use async_writeback::{QueueView, SyncReport};
pub use namespace::RenameMode;
pub use write_ops::SetAttr;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, SystemTime};

use crate::remote::{Entry, EntryKind, ErrorKind, Remote, RemoteError};
use inodes::{InodeTable, ROOT};
use lifecycle::{Content, FileSlot, UploadMode, TEMP_PREFIX};
use meta::{split_path, Listing, MetaCache};
use reader::{BlockCache, FileKey, Reader};

/// An errno value to hand back to the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

impl From<RemoteError> for Errno {
    fn from(e: RemoteError) -> Self {
        log::warn!("{e}");
        crate::stats::STATS.error(e.to_string());
        Errno(e.errno())
    }
}

pub type FsResult<T> = Result<T, Errno>;

/// Hits, misses and sizes of the listing and block caches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub listing_hits: u64,
    pub listing_misses: u64,
    /// Directories and entries held.
    pub dirs: usize,
    pub entries: usize,
    pub block_hits: u64,
    pub block_misses: u64,
    pub block_bytes: u64,
    pub block_capacity: u64,
}

/// When close() returns, relative to the upload of what was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writeback {
    /// close() uploads and returns the upload's error (the default).
    Close,
    /// close() returns once the content is durable in the journal; uploads run
    /// in the background.
    Async,
}

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
    /// Where spool files live (a private 0700 directory).
    pub spool_dir: PathBuf,
    pub upload_mode: UploadMode,
    /// How long unmount waits for uploads still running.
    pub unmount_wait: Duration,
    pub writeback: Writeback,
    /// The journal of pending uploads (async mode, and resuming at mount).
    pub journal_dir: Option<PathBuf>,
    /// Background uploads at once in async mode.
    pub upload_workers: usize,
    /// Downloads at once for one large sequential read (see `segments`).
    pub read_streams: usize,
    /// Where the exact times ftpfs set are remembered across mounts (None:
    /// for this mount only).
    pub set_times_file: Option<PathBuf>,
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
            spool_dir: std::env::temp_dir(),
            upload_mode: UploadMode::Atomic,
            unmount_wait: Duration::from_secs(120),
            writeback: Writeback::Close,
            journal_dir: None,
            upload_workers: 3,
            read_streams: 4,
            set_times_file: None,
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
    File {
        ino: u64,
        reader: Mutex<Reader>,
        /// Opened for writing.
        write: bool,
    },
    Dir {
        ino: u64,
        items: Vec<DirItem>,
    },
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
    /// The shared write-back state of files with local changes or open for
    /// writing, by inode (see `lifecycle` for the states and the lock order).
    files: Mutex<HashMap<u64, Arc<FileSlot>>>,
    /// Modification times we set, by inode, with the server's time when we set them:
    /// LIST shows only minutes, and some servers cannot store times at all.
    local_mtimes: Mutex<HashMap<u64, (SystemTime, Option<SystemTime>)>>,
    /// The exact times we set on the server, by path, across mounts.
    set_times: set_times::SetTimes,
    /// The listing (identity, length) served at each directory's last opendir.
    dir_versions: Mutex<HashMap<u64, (usize, usize)>>,
    /// Background downloads of the small files a directory walk will open next.
    prefetch: prefetch::Prefetcher,
    /// Background listings of the directories a tree walk will open next.
    dir_prefetch: dir_prefetch::DirPrefetch,
    /// Ourselves, for background work (empty when not built with `new_shared`).
    me: Weak<FtpFs>,
    /// Uploads retried in the background after close: (inode -> path, signal).
    background: Arc<(Mutex<HashMap<u64, String>>, Condvar)>,
    /// Where pending uploads are kept durably (async mode).
    journal: Option<journal::Journal>,
    /// The background uploaders of async mode.
    uploader: async_writeback::Uploader,
}

/// Above this many inodes, those the kernel does not hold are pruned.
const INODE_SOFT_LIMIT: usize = 100_000;

pub(crate) use crate::sync::lock;

impl FtpFs {
    pub fn new(remote: Arc<dyn Remote>, cfg: FsConfig) -> Self {
        let journal =
            cfg.journal_dir
                .as_deref()
                .and_then(|dir| match journal::Journal::open(dir) {
                    Ok(j) => Some(j),
                    Err(e) => {
                        log::error!("cannot open the journal in {}: {e}", dir.display());
                        None
                    }
                });
        let set_times = match &cfg.set_times_file {
            Some(f) => set_times::SetTimes::open(f),
            None => set_times::SetTimes::in_memory(),
        };
        FtpFs {
            journal,
            set_times,
            uploader: Default::default(),
            meta: MetaCache::new(cfg.cache_timeout, cfg.max_cached_entries),
            blocks: Arc::new(BlockCache::new(cfg.block_cache)),
            remote,
            cfg,
            inodes: Mutex::new(InodeTable::new()),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            opened_versions: Mutex::new(HashMap::new()),
            mounted_at: SystemTime::now(),
            files: Mutex::new(HashMap::new()),
            local_mtimes: Mutex::new(HashMap::new()),
            background: Arc::new((Mutex::new(HashMap::new()), Condvar::new())),
            me: Weak::new(),
            prefetch: prefetch::Prefetcher::default(),
            dir_prefetch: dir_prefetch::DirPrefetch::default(),
            dir_versions: Mutex::new(HashMap::new()),
        }
    }

    /// Like [`new`](Self::new), shared, so that uploads can be retried in the background.
    pub fn new_shared(remote: Arc<dyn Remote>, cfg: FsConfig) -> Arc<Self> {
        let fs = Arc::new_cyclic(|me| FtpFs {
            me: me.clone(),
            ..FtpFs::new(remote, cfg)
        });
        let me = Arc::downgrade(&fs);
        fs.remote.on_contention(Box::new(move || {
            if let Some(fs) = me.upgrade() {
                fs.yield_idle_streams();
            }
        }));
        fs
    }

    /// Lists the root once, so that the first lookups after mounting cost nothing.
    pub fn warm_up(&self) {
        if let Err(Errno(e)) = self.listing("/") {
            log::debug!("could not list the root in advance (errno {e})");
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
        Ok(self.meta.listing(dir, || {
            let mut entries = self.remote.list(dir)?;
            // Our own uploads in progress are not the user's files.
            entries.retain(|e| !e.name.starts_with(TEMP_PREFIX));
            self.set_times.apply(dir, &mut entries);
            Ok(entries)
        })?)
    }

    /// The attributes of `ino`, with local state laid over what the server said:
    /// unsaved writes, times the server could not store.
    fn attr_with_local(&self, ino: u64, e: &Entry) -> Attr {
        let mut a = self.attr_of(ino, e);
        if let Some((t, seen)) = lock(&self.local_mtimes).get(&ino) {
            // Ours while the server's time is what it was, or the same up to LIST's minutes.
            let close = |x: SystemTime| {
                let d = x.duration_since(*t).or_else(|e| Ok::<_, ()>(e.duration()));
                d.is_ok_and(|d| d < Duration::from_secs(60))
            };
            if e.mtime.is_none() || e.mtime == *seen || e.mtime.is_some_and(close) {
                a.mtime = *t;
            }
        }
        if let Some(slot) = self.slot(ino) {
            // The mount's own truth while it has one: also while an upload runs.
            let st = slot.lock();
            if st.content == Content::Local || st.phase.is_dirty() {
                a.size = st.size;
                if st.phase.is_dirty() {
                    // Whole seconds, as the server will store them.
                    a.mtime = writeback::whole_seconds(st.pending_mtime.unwrap_or(st.modified));
                }
            }
        }
        a
    }

    /// A file created here and not uploaded yet, looked up by name.
    fn unsaved_entry(&self, parent: u64, name: &str) -> Option<(u64, Entry)> {
        let ino = lock(&self.inodes).get(parent, name)?;
        let slot = self.slot(ino)?;
        let st = slot.lock();
        (!st.exists_remotely && st.phase != lifecycle::Phase::Unlinked).then(|| {
            let mut e = Entry::new(name, EntryKind::File, st.size);
            e.mtime = Some(st.modified);
            e.mode = st.pending_mode;
            (ino, e)
        })
    }

    /// Files created in directory `dir` that are not uploaded yet.
    fn unsaved_in(&self, dir: u64) -> Vec<(u64, Entry)> {
        let inos: Vec<u64> = lock(&self.files).keys().copied().collect();
        let names: Vec<(u64, String)> = {
            let inodes = lock(&self.inodes);
            inos.into_iter()
                .filter_map(|ino| {
                    let (p, n) = inodes.name_of(ino)?;
                    (p == dir).then(|| (ino, n.to_string()))
                })
                .collect()
        };
        names
            .into_iter()
            .filter_map(|(_, name)| self.unsaved_entry(dir, &name))
            .collect()
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
                // The kernel refuses sizes past the largest signed 64-bit offset.
                _ => e.size.min(i64::MAX as u64),
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
        self.attr_with_local(ROOT, &e)
    }

    /// The entry of inode `ino` (not the root): from its parent's listing, or
    /// from local state for a file not uploaded yet.
    fn entry_of(&self, ino: u64) -> FsResult<(String, Entry)> {
        let path = self.path_of(ino)?;
        let (dir, name) = split_path(&path).ok_or(Errno(libc::ENOENT))?;
        let parent = lock(&self.inodes).parent(ino).unwrap_or(ROOT);
        match self.find(parent, dir, name)? {
            Some(e) => Ok((path.clone(), e)),
            None => Err(Errno(libc::ENOENT)),
        }
    }

    /// `dir/name` (`dir` is the path of `parent`) as the mount sees it: a file
    /// of ours not uploaded yet, else the server's entry. Local state is asked
    /// first: an upload that lands meanwhile puts its entry into the cached
    /// listing before the file stops counting as not uploaded, so one of the
    /// two has it (asked the other way round, neither might).
    fn find(&self, parent: u64, dir: &str, name: &str) -> FsResult<Option<Entry>> {
        if let Some((_, e)) = self.unsaved_entry(parent, name) {
            return Ok(Some(e));
        }
        Ok(self.listing(dir)?.get(name).cloned())
    }

    pub fn lookup(&self, parent: u64, name: &str) -> FsResult<Attr> {
        if name.contains(['\r', '\n', '\0']) {
            return Err(Errno(libc::EINVAL));
        }
        if name.len() > 255 {
            return Err(Errno(libc::ENAMETOOLONG));
        }
        let dir = self.path_of(parent)?;
        match self.find(parent, &dir, name)? {
            Some(entry) => {
                let ino = lock(&self.inodes).lookup(parent, name);
                Ok(self.attr_with_local(ino, &entry))
            }
            None => Err(Errno(libc::ENOENT)),
        }
    }

    pub fn forget(&self, ino: u64, nlookup: u64) {
        let gone = {
            let mut inodes = lock(&self.inodes);
            inodes.forget(ino, nlookup);
            !inodes.exists(ino)
        };
        if gone {
            lock(&self.local_mtimes).remove(&ino);
        }
    }

    pub fn getattr(&self, ino: u64) -> FsResult<Attr> {
        if ino == ROOT {
            return Ok(self.root_attr());
        }
        let (_, e) = self.entry_of(ino)?;
        Ok(self.attr_with_local(ino, &e))
    }

    pub fn readlink(&self, ino: u64) -> FsResult<String> {
        let (_, e) = self.entry_of(ino)?;
        match (e.kind, e.target) {
            (EntryKind::Symlink, Some(t)) => Ok(t),
            _ => Err(Errno(libc::EINVAL)),
        }
    }

    /// Opens a directory: its listing is taken once, so offsets stay stable.
    /// Opens a directory: its listing is taken once, so offsets stay stable. The
    /// bool says whether the kernel may keep what it cached of an earlier readdir:
    /// true when the listing is the very one served last time.
    pub fn opendir_cached(&self, ino: u64) -> FsResult<(u64, bool)> {
        let path = self.path_of(ino)?;
        let fh = self.opendir(ino)?;
        let listing = self.listing(&path)?;
        let version = (Arc::as_ptr(&listing) as usize, listing.entries.len());
        let clean = self.unsaved_in(ino).is_empty();
        let same = lock(&self.dir_versions).insert(ino, version) == Some(version);
        Ok((fh, same && clean))
    }

    pub fn opendir(&self, ino: u64) -> FsResult<u64> {
        let path = self.path_of(ino)?;
        if ino != ROOT && self.entry_of(ino)?.1.kind != EntryKind::Dir {
            return Err(Errno(libc::ENOTDIR));
        }
        let listing = self.listing(&path)?;
        self.prefetch_subdirs(&path, &listing);
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
                    attr: None,
                });
            }
        }
        for (item, e) in items.iter_mut().skip(2).zip(&listing.entries) {
            item.attr = Some(self.attr_with_local(item.ino, e));
        }
        for (child, e) in self.unsaved_in(ino) {
            if listing.get(&e.name).is_none() {
                items.push(DirItem {
                    ino: child,
                    kind: e.kind,
                    name: e.name.clone(),
                    attr: Some(self.attr_with_local(child, &e)),
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

    /// The caches' numbers, for logs and `ftpfs status`.
    pub fn cache_stats(&self) -> CacheStats {
        let (listing_hits, listing_misses, dirs, entries) = self.meta.stats();
        let (blocks, block_capacity) = self.blocks.usage();
        CacheStats {
            listing_hits,
            listing_misses,
            dirs,
            entries,
            block_hits: self.blocks.hits.load(Ordering::Relaxed),
            block_misses: self.blocks.misses.load(Ordering::Relaxed),
            block_bytes: blocks as u64 * reader::BLOCK,
            block_capacity: block_capacity as u64 * reader::BLOCK,
        }
    }
}

impl From<ErrorKind> for Errno {
    fn from(k: ErrorKind) -> Self {
        Errno(k.errno())
    }
}
