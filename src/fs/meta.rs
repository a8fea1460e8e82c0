//! The attribute and directory cache: one remote listing per directory answers
//! readdir, lookup and getattr for every entry in it until the TTL runs out.
//!
//! Bounded by the number of entries held (LRU over directories). A name missing from
//! a fresh listing is a negative entry: ENOENT without a round trip. Concurrent misses
//! on one directory share a single listing (single flight).

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use lru::LruCache;

use crate::remote::{Entry, RemoteResult};

/// A directory's entries, in the server's order, with a name index.
#[derive(Debug, Default, Clone)]
pub struct Listing {
    pub entries: Vec<Entry>,
    index: HashMap<String, usize>,
}

impl Listing {
    pub fn new(mut entries: Vec<Entry>) -> Self {
        // A name listed twice (some servers do) keeps its first entry.
        let mut index = HashMap::with_capacity(entries.len());
        let mut keep = Vec::with_capacity(entries.len());
        for e in entries.drain(..) {
            if !index.contains_key(&e.name) {
                index.insert(e.name.clone(), keep.len());
                keep.push(e);
            }
        }
        Listing {
            entries: keep,
            index,
        }
    }

    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.index.get(name).map(|&i| &self.entries[i])
    }

    /// Where `name` stands in the listing.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// Adds or replaces an entry.
    pub fn upsert(&mut self, e: Entry) {
        match self.index.get(&e.name) {
            Some(&i) => self.entries[i] = e,
            None => {
                self.index.insert(e.name.clone(), self.entries.len());
                self.entries.push(e);
            }
        }
    }

    /// Removes an entry; the order of the others is kept.
    pub fn remove(&mut self, name: &str) -> Option<Entry> {
        let i = self.index.remove(name)?;
        let e = self.entries.remove(i);
        for v in self.index.values_mut() {
            if *v > i {
                *v -= 1;
            }
        }
        Some(e)
    }
}

struct Cached {
    fetched: Instant,
    listing: Arc<Listing>,
}

type Flight = Arc<(Mutex<Option<RemoteResult<Arc<Listing>>>>, Condvar)>;

struct Inner {
    dirs: LruCache<String, Cached>,
    entries: usize,
    in_flight: HashMap<String, Flight>,
    /// Directories changed by us while a listing of them was being fetched: that
    /// listing may predate the change, so it must not be trusted as fresh.
    changed_in_flight: std::collections::HashSet<String>,
}

/// How many times a listing that raced with our own change is fetched again
/// when no cached listing has the change.
const RACED_TRIES: usize = 3;

pub struct MetaCache {
    ttl: Duration,
    max_entries: usize,
    inner: Mutex<Inner>,
    hits: std::sync::atomic::AtomicU64,
    misses: std::sync::atomic::AtomicU64,
}

impl MetaCache {
    /// `max_entries` bounds the entries held over all cached directories.
    pub fn new(ttl: Duration, max_entries: usize) -> Self {
        MetaCache {
            ttl,
            max_entries: max_entries.max(1),
            inner: Mutex::new(Inner {
                dirs: LruCache::unbounded(),
                entries: 0,
                in_flight: HashMap::new(),
                changed_in_flight: Default::default(),
            }),
            hits: 0.into(),
            misses: 0.into(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        crate::sync::lock(&self.inner)
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The cached listing of `dir` if it is still fresh.
    pub fn fresh(&self, dir: &str) -> Option<Arc<Listing>> {
        let mut inner = self.lock();
        let c = inner.dirs.get(dir)?;
        if c.fetched.elapsed() < self.ttl {
            Some(Arc::clone(&c.listing))
        } else {
            None
        }
    }

    /// The listing of `dir`: from the cache while fresh, else from `fetch` (once,
    /// however many threads ask at the same moment; again when one of our own
    /// changes to `dir` happened while it ran and no cached listing has it).
    pub fn listing(
        &self,
        dir: &str,
        fetch: impl Fn() -> RemoteResult<Vec<Entry>>,
    ) -> RemoteResult<Arc<Listing>> {
        use std::sync::atomic::Ordering::Relaxed;
        let (flight, leader) = {
            let mut inner = self.lock();
            if let Some(c) = inner.dirs.get(dir) {
                if c.fetched.elapsed() < self.ttl {
                    self.hits.fetch_add(1, Relaxed);
                    return Ok(Arc::clone(&c.listing));
                }
            }
            match inner.in_flight.get(dir) {
                Some(f) => (Arc::clone(f), false),
                None => {
                    let f: Flight = Arc::new((Mutex::new(None), Condvar::new()));
                    inner.in_flight.insert(dir.to_string(), Arc::clone(&f));
                    (f, true)
                }
            }
        };
        if !leader {
            let (lock, cv) = &*flight;
            let mut slot = crate::sync::lock(lock);
            loop {
                if let Some(result) = slot.as_ref() {
                    self.hits.fetch_add(1, Relaxed);
                    return result.clone();
                }
                slot = cv.wait(slot).unwrap_or_else(|p| p.into_inner());
            }
        }
        self.misses.fetch_add(1, Relaxed);
        // If the fetch panics, the waiters must still be released (with an error).
        let guard = FlightGuard {
            cache: self,
            dir,
            flight: &flight,
        };
        let mut tries = 0;
        let result = loop {
            tries += 1;
            let mut result = fetch().map(|entries| Arc::new(Listing::new(entries)));
            let mut inner = self.lock();
            let raced = inner.changed_in_flight.remove(dir);
            if let Ok(l) = &result {
                if !raced {
                    self.insert_locked(&mut inner, dir, Arc::clone(l));
                } else if let Some(c) = inner.dirs.get(dir) {
                    // The answer predates our change: list again next time, and
                    // serve the cached listing, which has the change.
                    log::debug!("listing of {dir} raced with a change; not caching it");
                    result = Ok(Arc::clone(&c.listing));
                } else if tries < RACED_TRIES {
                    // Nothing cached has the change: this answer may lack it.
                    log::debug!("listing of {dir} raced with a change; listing again");
                    continue;
                }
            }
            inner.in_flight.remove(dir);
            break result;
        };
        std::mem::forget(guard);
        let (lock, cv) = &*flight;
        *crate::sync::lock(lock) = Some(result.clone());
        cv.notify_all();
        result
    }

    fn insert_locked(&self, inner: &mut Inner, dir: &str, listing: Arc<Listing>) {
        if let Some(old) = inner.dirs.pop(dir) {
            inner.entries -= old.listing.entries.len();
        }
        inner.entries += listing.entries.len();
        inner.dirs.put(
            dir.to_string(),
            Cached {
                fetched: Instant::now(),
                listing,
            },
        );
        while inner.entries > self.max_entries && inner.dirs.len() > 1 {
            match inner.dirs.pop_lru() {
                Some((_, c)) => inner.entries -= c.listing.entries.len(),
                None => break,
            }
        }
    }

    /// Forgets a directory's listing (after a change to it).
    pub fn invalidate(&self, dir: &str) {
        let mut inner = self.lock();
        if inner.in_flight.contains_key(dir) {
            inner.changed_in_flight.insert(dir.to_string());
        }
        if let Some(old) = inner.dirs.pop(dir) {
            inner.entries -= old.listing.entries.len();
        }
    }

    /// Forgets `dir` and every cached directory below it (after a rename or rmdir).
    pub fn invalidate_tree(&self, dir: &str) {
        let prefix = format!("{}/", dir.trim_end_matches('/'));
        let mut inner = self.lock();
        let doomed: Vec<String> = inner
            .dirs
            .iter()
            .map(|(k, _)| k.clone())
            .filter(|k| k == dir || k.starts_with(&prefix))
            .collect();
        for k in doomed {
            if let Some(old) = inner.dirs.pop(&k) {
                inner.entries -= old.listing.entries.len();
            }
        }
        let racing: Vec<String> = inner
            .in_flight
            .keys()
            .filter(|k| *k == dir || k.starts_with(&prefix))
            .cloned()
            .collect();
        inner.changed_in_flight.extend(racing);
    }

    /// Applies our own change to a cached listing, keeping its age; a directory
    /// that is not cached is left alone (its next listing shows the change).
    pub fn update(&self, dir: &str, change: impl FnOnce(&mut Listing)) {
        let mut inner = self.lock();
        if inner.in_flight.contains_key(dir) {
            inner.changed_in_flight.insert(dir.to_string());
        }
        let Some(c) = inner.dirs.get_mut(dir) else {
            return;
        };
        let before = c.listing.entries.len();
        change(Arc::make_mut(&mut c.listing));
        let after = c.listing.entries.len();
        inner.entries = inner.entries + after - before;
    }

    /// Records a directory we just created: it is empty, no need to list it.
    pub fn insert_empty(&self, dir: &str) {
        let mut inner = self.lock();
        self.insert_locked(&mut inner, dir, Arc::new(Listing::default()));
    }

    /// (hits, misses, directories, entries), for statistics.
    pub fn stats(&self) -> (u64, u64, usize, usize) {
        use std::sync::atomic::Ordering::Relaxed;
        let inner = self.lock();
        (
            self.hits.load(Relaxed),
            self.misses.load(Relaxed),
            inner.dirs.len(),
            inner.entries,
        )
    }
}

/// Releases the callers waiting on a listing whose fetch unwound (a panic).
struct FlightGuard<'a> {
    cache: &'a MetaCache,
    dir: &'a str,
    flight: &'a Flight,
}

impl Drop for FlightGuard<'_> {
    fn drop(&mut self) {
        self.cache.lock().in_flight.remove(self.dir);
        let (lock, cv) = &**self.flight;
        *crate::sync::lock(lock) = Some(Err(crate::remote::RemoteError::new(
            crate::remote::ErrorKind::Protocol,
            format!("listing of {} failed", self.dir),
        )));
        cv.notify_all();
    }
}

/// Splits "/a/b/c" into ("/a/b", "c"); the root has no parent.
pub fn split_path(path: &str) -> Option<(&str, &str)> {
    let path = path.trim_end_matches('/');
    let i = path.rfind('/')?;
    let parent = if i == 0 { "/" } else { &path[..i] };
    Some((parent, &path[i + 1..]))
}

/// Joins a directory path and a name.
pub fn child_path(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::{EntryKind, ErrorKind, RemoteError};
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn entries(n: usize) -> Vec<Entry> {
        (0..n)
            .map(|i| Entry::new(format!("f{i}"), EntryKind::File, i as u64))
            .collect()
    }

    #[test]
    fn fresh_listing_is_served_without_fetching() {
        let c = MetaCache::new(Duration::from_secs(60), 1000);
        let calls = AtomicUsize::new(0);
        for _ in 0..3 {
            let l = c
                .listing("/d", || {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Ok(entries(3))
                })
                .unwrap();
            assert_eq!(l.get("f2").map(|e| e.size), Some(2));
            assert!(l.get("nope").is_none());
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn expired_listing_is_fetched_again() {
        let c = MetaCache::new(Duration::from_millis(0), 1000);
        let calls = AtomicUsize::new(0);
        for _ in 0..2 {
            c.listing("/d", || {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok(entries(1))
            })
            .unwrap();
        }
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn errors_are_not_cached() {
        let c = MetaCache::new(Duration::from_secs(60), 1000);
        let e = c.listing("/d", || Err(RemoteError::new(ErrorKind::NotFound, "x")));
        assert_eq!(e.unwrap_err().kind, ErrorKind::NotFound);
        assert!(c.listing("/d", || Ok(entries(1))).is_ok());
    }

    #[test]
    fn entry_budget_evicts_least_recently_used_directories() {
        let c = MetaCache::new(Duration::from_secs(60), 10);
        c.listing("/a", || Ok(entries(6))).unwrap();
        c.listing("/b", || Ok(entries(6))).unwrap();
        assert!(c.fresh("/a").is_none(), "a was evicted");
        assert!(c.fresh("/b").is_some());
        assert_eq!(c.stats().3, 6);
    }

    #[test]
    fn concurrent_misses_share_one_fetch() {
        let c = Arc::new(MetaCache::new(Duration::from_secs(60), 1000));
        let calls = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let c = Arc::clone(&c);
                let calls = Arc::clone(&calls);
                std::thread::spawn(move || {
                    c.listing("/d", || {
                        calls.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(100));
                        Ok(entries(2))
                    })
                    .unwrap()
                    .entries
                    .len()
                })
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap(), 2);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn our_changes_update_the_cached_listing() {
        let c = MetaCache::new(Duration::from_secs(60), 1000);
        c.listing("/d", || Ok(entries(3))).unwrap();
        c.update("/d", |l| {
            l.remove("f0");
            l.upsert(Entry::new("new", EntryKind::File, 9));
            l.upsert(Entry::new("f2", EntryKind::File, 99));
        });
        let l = c.fresh("/d").unwrap();
        let names: Vec<&str> = l.entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["f1", "f2", "new"]);
        assert_eq!(l.get("f2").map(|e| e.size), Some(99));
        assert_eq!(c.stats().3, 3);
        c.update("/uncached", |l| {
            l.upsert(Entry::new("x", EntryKind::File, 1))
        });
        assert!(c.fresh("/uncached").is_none());
        c.insert_empty("/d/sub");
        c.listing("/d/sub/deeper", || Ok(entries(1))).unwrap();
        c.invalidate_tree("/d");
        assert!(c.fresh("/d").is_none() && c.fresh("/d/sub").is_none());
        assert!(c.fresh("/d/sub/deeper").is_none());
    }

    #[test]
    fn a_listing_fetched_across_our_change_is_not_cached() {
        let c = MetaCache::new(Duration::from_secs(60), 1000);
        let l = c
            .listing("/d", || {
                // our own change lands while the server's answer is on its way
                c.update("/d", |l| l.upsert(Entry::new("new", EntryKind::File, 1)));
                Ok(entries(1))
            })
            .unwrap();
        assert!(
            l.get("new").is_none(),
            "the fetched listing predates the change"
        );
        assert!(c.fresh("/d").is_none(), "so it is not trusted afterwards");
    }

    #[test]
    fn a_raced_fetch_serves_the_cached_listing_with_our_change() {
        let c = MetaCache::new(Duration::from_millis(1), 1000);
        c.listing("/d", || Ok(vec![Entry::new("f", EntryKind::File, 1)]))
            .unwrap();
        std::thread::sleep(Duration::from_millis(5));
        let l = c
            .listing("/d", || {
                // our upload grows f while the server's older answer is on its way
                c.update("/d", |l| l.upsert(Entry::new("f", EntryKind::File, 2)));
                Ok(vec![Entry::new("f", EntryKind::File, 1)])
            })
            .unwrap();
        assert_eq!(l.get("f").map(|e| e.size), Some(2), "never the stale size");
    }

    #[test]
    fn a_panicking_fetch_releases_the_waiters() {
        let c = Arc::new(MetaCache::new(Duration::from_secs(60), 1000));
        let c2 = Arc::clone(&c);
        let leader = std::thread::spawn(move || {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                c2.listing("/d", || {
                    std::thread::sleep(Duration::from_millis(100));
                    panic!("bug in a parser");
                })
            }));
        });
        std::thread::sleep(Duration::from_millis(20));
        // joins the flight, and must come back with an error instead of hanging
        let r = c.listing("/d", || Ok(entries(1)));
        leader.join().unwrap();
        assert!(r.is_err() || r.is_ok_and(|l| l.entries.len() == 1));
        assert!(
            c.listing("/d", || Ok(entries(2))).is_ok(),
            "the next fetch works"
        );
    }

    #[test]
    fn duplicate_names_keep_the_first() {
        let mut e = entries(2);
        e.push(Entry::new("f0", EntryKind::Dir, 0));
        let l = Listing::new(e);
        assert_eq!(l.entries.len(), 2);
        assert_eq!(l.get("f0").map(|e| e.kind), Some(EntryKind::File));
    }

    #[test]
    fn paths_split_and_join() {
        assert_eq!(split_path("/a/b"), Some(("/a", "b")));
        assert_eq!(split_path("/a"), Some(("/", "a")));
        assert_eq!(child_path("/", "x"), "/x");
        assert_eq!(child_path("/a", "x"), "/a/x");
    }
}
