//! An in-memory [`Remote`], for testing the filesystem logic without FUSE or FTP.
//! It counts the operations it serves, so tests can check round trips. Built for
//! unit tests and with the `testing` feature (for tests/reftest).

use std::collections::BTreeMap;
use std::io::{Cursor, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::remote::{
    Entry, EntryKind, ErrorKind, ReadStream, Remote, RemoteError, RemoteResult, Source,
    UploadStream,
};

#[derive(Debug, Clone)]
pub enum Node {
    Dir,
    File(Vec<u8>, SystemTime, u32),
    Link(String),
}

type Nodes = Arc<Mutex<BTreeMap<String, Node>>>;

#[derive(Default)]
pub struct MemoryRemote {
    nodes: Nodes,
    pub lists: AtomicUsize,
    pub opens: AtomicUsize,
    pub stores: AtomicUsize,
    pub renames: AtomicUsize,
    /// Makes every upload fail with ENOSPC, as a full disk would.
    pub disk_full: AtomicBool,
    /// Makes renames fail, as on servers that forbid them.
    pub no_rename: AtomicBool,
    /// The next download breaks after this many bytes, as a dropped data connection.
    pub break_next_read_after: Mutex<Option<usize>>,
}

impl MemoryRemote {
    pub fn new() -> Self {
        let r = MemoryRemote::default();
        r.lock().insert("/".into(), Node::Dir);
        r
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Node>> {
        crate::sync::lock(&self.nodes)
    }

    /// A file's content, if it is a file.
    pub fn content(&self, path: &str) -> Option<Vec<u8>> {
        match self.lock().get(path) {
            Some(Node::File(d, _, _)) => Some(d.clone()),
            _ => None,
        }
    }

    /// Every path, for checking that no temporary file is left behind.
    pub fn paths(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    pub fn mtime(&self, path: &str) -> Option<SystemTime> {
        match self.lock().get(path) {
            Some(Node::File(_, t, _)) => Some(*t),
            _ => None,
        }
    }

    pub fn mode(&self, path: &str) -> Option<u32> {
        match self.lock().get(path) {
            Some(Node::File(_, _, m)) => Some(*m),
            _ => None,
        }
    }

    fn parent_is_dir(&self, path: &str) -> RemoteResult<()> {
        match self.lock().get(parent_of(path)) {
            Some(Node::Dir) => Ok(()),
            _ => Err(RemoteError::new(
                ErrorKind::NotFound,
                format!("no parent for {path}"),
            )),
        }
    }

    fn full(&self) -> RemoteResult<()> {
        if self.disk_full.load(Ordering::SeqCst) {
            return Err(RemoteError::new(ErrorKind::NoSpace, "552 disk full"));
        }
        Ok(())
    }

    pub fn add_dir(&self, path: &str) {
        self.lock().insert(path.into(), Node::Dir);
    }

    pub fn add_file(&self, path: &str, data: &[u8]) {
        self.lock().insert(
            path.into(),
            Node::File(data.to_vec(), SystemTime::now(), 0o640),
        );
    }

    pub fn add_link(&self, path: &str, target: &str) {
        self.lock().insert(path.into(), Node::Link(target.into()));
    }

    pub fn remove(&self, path: &str) {
        self.lock().remove(path);
    }
}

fn parent_of(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) => "/",
        Some(i) => &path[..i],
        None => "/",
    }
}

impl Remote for MemoryRemote {
    fn list(&self, dir: &str) -> RemoteResult<Vec<Entry>> {
        self.lists.fetch_add(1, Ordering::SeqCst);
        let nodes = self.lock();
        match nodes.get(dir) {
            Some(Node::Dir) => {}
            Some(_) => return Err(RemoteError::new(ErrorKind::NotADirectory, dir)),
            None => return Err(RemoteError::new(ErrorKind::NotFound, dir)),
        }
        Ok(nodes
            .iter()
            .filter(|(p, _)| p.as_str() != "/" && parent_of(p) == dir)
            .map(|(p, n)| {
                let name = &p[p.rfind('/').map(|i| i + 1).unwrap_or(0)..];
                match n {
                    Node::Dir => Entry::new(name, EntryKind::Dir, 0),
                    Node::File(d, t, m) => Entry {
                        mtime: Some(*t),
                        mode: Some(*m),
                        ..Entry::new(name, EntryKind::File, d.len() as u64)
                    },
                    Node::Link(t) => Entry {
                        target: Some(t.clone()),
                        ..Entry::new(name, EntryKind::Symlink, t.len() as u64)
                    },
                }
            })
            .collect())
    }

    fn open_read(&self, path: &str, offset: u64) -> RemoteResult<ReadStream> {
        self.opens.fetch_add(1, Ordering::SeqCst);
        match self.lock().get(path) {
            Some(Node::File(d, _, _)) => {
                let start = (offset as usize).min(d.len());
                let data = d[start..].to_vec();
                let brk = self
                    .break_next_read_after
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take();
                match brk {
                    Some(n) => Ok(Box::new(Breaking {
                        data: Cursor::new(data),
                        left: n,
                    })),
                    None => Ok(Box::new(Cursor::new(data))),
                }
            }
            Some(_) => Err(RemoteError::new(ErrorKind::IsADirectory, path)),
            None => Err(RemoteError::new(ErrorKind::NotFound, path)),
        }
    }

    fn store(&self, path: &str, data: &mut dyn Source) -> RemoteResult<u64> {
        self.stores.fetch_add(1, Ordering::SeqCst);
        self.parent_is_dir(path)?;
        self.full()?;
        let mut buf = Vec::new();
        data.rewind()
            .and_then(|_| data.read_to_end(&mut buf))
            .map_err(|e| RemoteError::new(ErrorKind::Connection, e.to_string()))?;
        let n = buf.len() as u64;
        let mode = self.mode(path).unwrap_or(0o644);
        self.lock()
            .insert(path.into(), Node::File(buf, SystemTime::now(), mode));
        Ok(n)
    }

    fn open_upload(&self, path: &str) -> RemoteResult<Box<dyn UploadStream>> {
        self.stores.fetch_add(1, Ordering::SeqCst);
        self.parent_is_dir(path)?;
        Ok(Box::new(MemUpload {
            nodes: Arc::clone(&self.nodes),
            path: path.into(),
            buf: Vec::new(),
            fail: self.disk_full.load(Ordering::SeqCst),
        }))
    }

    fn rename(&self, from: &str, to: &str) -> RemoteResult<()> {
        self.renames.fetch_add(1, Ordering::SeqCst);
        if self.no_rename.load(Ordering::SeqCst) {
            return Err(RemoteError::new(
                ErrorKind::PermissionDenied,
                "553 rename refused",
            ));
        }
        self.parent_is_dir(to)?;
        let mut nodes = self.lock();
        let moved: Vec<(String, Node)> = nodes
            .iter()
            .filter(|(p, _)| p.as_str() == from || p.starts_with(&format!("{from}/")))
            .map(|(p, n)| (p.clone(), n.clone()))
            .collect();
        if moved.is_empty() {
            return Err(RemoteError::new(ErrorKind::NotFound, from));
        }
        if matches!(nodes.get(to), Some(Node::Dir))
            && nodes.keys().any(|p| p.starts_with(&format!("{to}/")))
        {
            return Err(RemoteError::new(ErrorKind::NotEmpty, to));
        }
        for (p, _) in &moved {
            nodes.remove(p);
        }
        for (p, n) in moved {
            nodes.insert(format!("{to}{}", &p[from.len()..]), n);
        }
        Ok(())
    }

    fn remove_file(&self, path: &str) -> RemoteResult<()> {
        let mut nodes = self.lock();
        match nodes.get(path) {
            Some(Node::Dir) => Err(RemoteError::new(ErrorKind::IsADirectory, path)),
            Some(_) => {
                nodes.remove(path);
                Ok(())
            }
            None => Err(RemoteError::new(ErrorKind::NotFound, path)),
        }
    }

    fn mkdir(&self, path: &str) -> RemoteResult<()> {
        self.parent_is_dir(path)?;
        let mut nodes = self.lock();
        if nodes.contains_key(path) {
            return Err(RemoteError::new(ErrorKind::AlreadyExists, path));
        }
        nodes.insert(path.into(), Node::Dir);
        Ok(())
    }

    fn rmdir(&self, path: &str) -> RemoteResult<()> {
        let mut nodes = self.lock();
        match nodes.get(path) {
            Some(Node::Dir) => {}
            Some(_) => return Err(RemoteError::new(ErrorKind::NotADirectory, path)),
            None => return Err(RemoteError::new(ErrorKind::NotFound, path)),
        }
        if nodes.keys().any(|p| p.starts_with(&format!("{path}/"))) {
            return Err(RemoteError::new(ErrorKind::NotEmpty, path));
        }
        nodes.remove(path);
        Ok(())
    }

    fn mtime(&self, path: &str) -> RemoteResult<SystemTime> {
        match self.lock().get(path) {
            Some(Node::File(_, t, _)) => Ok(*t),
            Some(_) => Err(RemoteError::new(ErrorKind::NotFound, "not a file")),
            None => Err(RemoteError::new(ErrorKind::NotFound, path)),
        }
    }

    fn set_mtime(&self, path: &str, mtime: SystemTime) -> RemoteResult<()> {
        match self.lock().get_mut(path) {
            Some(Node::File(_, t, _)) => {
                *t = mtime;
                Ok(())
            }
            Some(_) => Err(RemoteError::new(
                ErrorKind::Unsupported,
                "dirs keep their time",
            )),
            None => Err(RemoteError::new(ErrorKind::NotFound, path)),
        }
    }

    fn chmod(&self, path: &str, mode: u32) -> RemoteResult<()> {
        match self.lock().get_mut(path) {
            Some(Node::File(_, _, m)) => {
                *m = mode;
                Ok(())
            }
            Some(_) => Ok(()),
            None => Err(RemoteError::new(ErrorKind::NotFound, path)),
        }
    }
}

/// A download that fails after `left` bytes.
struct Breaking {
    data: Cursor<Vec<u8>>,
    left: usize,
}

impl std::io::Read for Breaking {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        }
        let n = buf.len().min(self.left);
        let got = self.data.read(&mut buf[..n])?;
        self.left -= got;
        Ok(got)
    }
}

struct MemUpload {
    nodes: Nodes,
    path: String,
    buf: Vec<u8>,
    fail: bool,
}

impl Write for MemUpload {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl UploadStream for MemUpload {
    fn finish(self: Box<Self>) -> RemoteResult<()> {
        if self.fail {
            return Err(RemoteError::new(ErrorKind::NoSpace, "552 disk full"));
        }
        let mut nodes = crate::sync::lock(&self.nodes);
        nodes.insert(
            self.path.clone(),
            Node::File(self.buf.clone(), SystemTime::now(), 0o644),
        );
        Ok(())
    }
}
