//! The inode table: inode numbers <-> (parent, name), kernel lookup counts,
//! forget, and renames (a renamed directory's children follow it for free,
//! because paths are computed by walking parents).

use std::collections::HashMap;

pub const ROOT: u64 = 1;

#[derive(Debug)]
struct Node {
    parent: u64,
    name: String,
    /// How many lookups the kernel holds on this inode.
    nlookup: u64,
    /// How many inodes name this one as their parent.
    children: u64,
}

#[derive(Debug)]
pub struct InodeTable {
    nodes: HashMap<u64, Node>,
    by_name: HashMap<(u64, String), u64>,
    next: u64,
}

impl Default for InodeTable {
    fn default() -> Self {
        Self::new()
    }
}

impl InodeTable {
    pub fn new() -> Self {
        let mut nodes = HashMap::new();
        nodes.insert(
            ROOT,
            Node {
                parent: ROOT,
                name: String::new(),
                nlookup: 1,
                children: 0,
            },
        );
        InodeTable {
            nodes,
            by_name: HashMap::new(),
            next: ROOT + 1,
        }
    }

    /// The inode of `parent/name`, created if new; the lookup count is unchanged.
    pub fn get_or_insert(&mut self, parent: u64, name: &str) -> u64 {
        if let Some(&ino) = self.by_name.get(&(parent, name.to_string())) {
            return ino;
        }
        let ino = self.next;
        self.next += 1;
        self.nodes.insert(
            ino,
            Node {
                parent,
                name: name.to_string(),
                nlookup: 0,
                children: 0,
            },
        );
        self.by_name.insert((parent, name.to_string()), ino);
        self.adjust_children(parent, 1);
        ino
    }

    /// Like [`get_or_insert`](Self::get_or_insert), and counts a kernel lookup.
    pub fn lookup(&mut self, parent: u64, name: &str) -> u64 {
        let ino = self.get_or_insert(parent, name);
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.nlookup += 1;
        }
        ino
    }

    /// The kernel drops `count` lookups; the inode goes when none are left
    /// and no other inode names it as parent.
    pub fn forget(&mut self, ino: u64, count: u64) {
        if ino == ROOT {
            return;
        }
        let Some(n) = self.nodes.get_mut(&ino) else {
            return;
        };
        n.nlookup = n.nlookup.saturating_sub(count);
        if n.nlookup == 0 {
            self.remove_if_unused(ino);
        }
    }

    fn adjust_children(&mut self, ino: u64, delta: i64) {
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.children = n.children.saturating_add_signed(delta);
        }
    }

    /// Removes an inode nobody holds; then its parent may have become removable too.
    fn remove_if_unused(&mut self, ino: u64) {
        let mut cur = ino;
        while cur != ROOT {
            let Some(n) = self.nodes.get(&cur) else {
                return;
            };
            if n.nlookup > 0 || n.children > 0 {
                return;
            }
            let Some(n) = self.nodes.remove(&cur) else {
                return;
            };
            if self.by_name.get(&(n.parent, n.name.clone())) == Some(&cur) {
                self.by_name.remove(&(n.parent, n.name));
            }
            self.adjust_children(n.parent, -1);
            cur = n.parent;
        }
    }

    pub fn exists(&self, ino: u64) -> bool {
        self.nodes.contains_key(&ino)
    }

    /// The inode's path relative to the mount root, as "/a/b" ("/" for the root).
    pub fn path(&self, ino: u64) -> Option<String> {
        let mut parts = Vec::new();
        let mut cur = ino;
        let mut guard = 0;
        while cur != ROOT {
            let n = self.nodes.get(&cur)?;
            parts.push(n.name.as_str());
            cur = n.parent;
            guard += 1;
            if guard > 4096 {
                return None;
            }
        }
        if parts.is_empty() {
            return Some("/".into());
        }
        parts.reverse();
        Some(format!("/{}", parts.join("/")))
    }

    /// The inode currently named `parent/name`, if any.
    pub fn get(&self, parent: u64, name: &str) -> Option<u64> {
        self.by_name.get(&(parent, name.to_string())).copied()
    }

    /// The (parent, name) an inode was last known under.
    pub fn name_of(&self, ino: u64) -> Option<(u64, &str)> {
        self.nodes.get(&ino).map(|n| (n.parent, n.name.as_str()))
    }

    pub fn parent(&self, ino: u64) -> Option<u64> {
        self.nodes.get(&ino).map(|n| n.parent)
    }

    /// Moves `parent/name` to `new_parent/new_name`; an inode already there is unlinked
    /// from the namespace (it keeps living while the kernel holds it).
    pub fn rename(&mut self, parent: u64, name: &str, new_parent: u64, new_name: &str) {
        let Some(ino) = self.by_name.remove(&(parent, name.to_string())) else {
            return;
        };
        self.unlink(new_parent, new_name);
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.parent = new_parent;
            n.name = new_name.to_string();
        }
        self.adjust_children(parent, -1);
        self.adjust_children(new_parent, 1);
        self.by_name.insert((new_parent, new_name.to_string()), ino);
    }

    /// Removes `parent/name` from the namespace; the inode itself lives on
    /// while the kernel holds it (an open, unlinked file).
    pub fn unlink(&mut self, parent: u64, name: &str) {
        if let Some(ino) = self.by_name.remove(&(parent, name.to_string())) {
            self.remove_if_unused(ino);
        }
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Drops inodes the kernel does not hold (listed by readdir but never looked up),
    /// keeping the table bounded; children go before their parents.
    pub fn prune_unreferenced(&mut self) {
        let leaves: Vec<u64> = self
            .nodes
            .iter()
            .filter(|(&ino, n)| ino != ROOT && n.nlookup == 0 && n.children == 0)
            .map(|(&ino, _)| ino)
            .collect();
        for ino in leaves {
            self.remove_if_unused(ino);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_parents() {
        let mut t = InodeTable::new();
        let a = t.lookup(ROOT, "a");
        let b = t.lookup(a, "b c");
        assert_eq!(t.path(ROOT).as_deref(), Some("/"));
        assert_eq!(t.path(b).as_deref(), Some("/a/b c"));
        assert_eq!(t.lookup(ROOT, "a"), a, "same name, same inode");
    }

    #[test]
    fn renamed_directory_carries_its_children() {
        let mut t = InodeTable::new();
        let a = t.lookup(ROOT, "a");
        let f = t.lookup(a, "f");
        let d = t.lookup(ROOT, "d");
        t.rename(ROOT, "a", d, "moved");
        assert_eq!(t.path(f).as_deref(), Some("/d/moved/f"));
        assert_eq!(t.lookup(d, "moved"), a);
    }

    #[test]
    fn rename_over_existing_replaces_it() {
        let mut t = InodeTable::new();
        let x = t.get_or_insert(ROOT, "x");
        let y = t.get_or_insert(ROOT, "y");
        t.rename(ROOT, "x", ROOT, "y");
        assert_eq!(t.get_or_insert(ROOT, "y"), x);
        assert!(!t.exists(y), "an unreferenced replaced inode is gone");
    }

    #[test]
    fn forget_frees_leaves_only() {
        let mut t = InodeTable::new();
        let a = t.lookup(ROOT, "a");
        let f = t.lookup(a, "f");
        t.forget(a, 1);
        assert!(t.exists(a), "a still has a child");
        t.forget(f, 1);
        assert!(!t.exists(f));
        t.forget(ROOT, 10);
        assert!(t.exists(ROOT));
    }

    #[test]
    fn prune_drops_only_unreferenced() {
        let mut t = InodeTable::new();
        let held = t.lookup(ROOT, "held");
        for i in 0..100 {
            t.get_or_insert(ROOT, &format!("n{i}"));
        }
        let d = t.get_or_insert(ROOT, "d");
        let inner = t.lookup(d, "inner");
        t.prune_unreferenced();
        assert!(t.exists(held) && t.exists(d) && t.exists(inner));
        assert_eq!(t.len(), 4);
    }
}
