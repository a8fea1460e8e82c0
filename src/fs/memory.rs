//! An in-memory [`Remote`], for testing the filesystem logic without FUSE or FTP.
//! It counts the operations it serves, so tests can check round trips.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

use crate::remote::{Entry, EntryKind, ErrorKind, ReadStream, Remote, RemoteError, RemoteResult};

#[derive(Debug, Clone)]
pub enum Node {
    Dir,
    File(Vec<u8>, SystemTime),
    Link(String),
}

#[derive(Default)]
pub struct MemoryRemote {
    nodes: Mutex<BTreeMap<String, Node>>,
    pub lists: AtomicUsize,
    pub opens: AtomicUsize,
}

impl MemoryRemote {
    pub fn new() -> Self {
        let r = MemoryRemote::default();
        r.lock().insert("/".into(), Node::Dir);
        r
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Node>> {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn add_dir(&self, path: &str) {
        self.lock().insert(path.into(), Node::Dir);
    }

    pub fn add_file(&self, path: &str, data: &[u8]) {
        self.lock()
            .insert(path.into(), Node::File(data.to_vec(), SystemTime::now()));
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
                    Node::File(d, t) => Entry {
                        mtime: Some(*t),
                        mode: Some(0o640),
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
            Some(Node::File(d, _)) => {
                let start = (offset as usize).min(d.len());
                Ok(Box::new(Cursor::new(d[start..].to_vec())))
            }
            Some(_) => Err(RemoteError::new(ErrorKind::IsADirectory, path)),
            None => Err(RemoteError::new(ErrorKind::NotFound, path)),
        }
    }
}
