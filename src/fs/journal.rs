//! The crash-safe journal of `writeback=async`: for every file whose upload is
//! still pending, its content and a small record of where it goes, on local
//! disk, fsync'd before close() returns. A mount of the same server with the
//! same `cache_dir` resumes whatever is left in it (see `async_writeback`).
//!
//! One pending file is two files in the journal directory:
//! - `ID.data`: the content, a hard link to the file's spool (no copy);
//! - `ID.entry`: the record (path, size, time, mode, and what the upload
//!   replaces), written to `ID.entry.tmp`, fsync'd and renamed into place.
//!
//! The data is complete and synced before its record appears, and the record
//! goes before the data when an upload is done, so a record always has its data.
//! A record without data, or data without a record, is a leftover of a crash
//! between two steps and is removed when the journal is loaded.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// First line of every record: the format's name and version.
const MAGIC: &str = "ftpfs-journal 1";

/// What an upload replaces on the server, as the mount saw it when the file was
/// opened: a conflict is a server file that no longer looks like this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base {
    /// The file did not exist on the server.
    New,
    /// The server's file had this size and, if known, this time.
    Remote {
        size: u64,
        mtime: Option<SystemTime>,
    },
}

impl Base {
    /// The server's file as a listing shows it.
    pub fn of(e: &crate::remote::Entry) -> Base {
        Base::Remote {
            size: e.size,
            mtime: e.mtime,
        }
    }

    /// Whether the server's file `now` (None: there is none) is no longer the
    /// one this base describes, for an upload of `ours` bytes that may have
    /// left part of itself there (`partial`). Times compare to the minute, as
    /// LIST shows them.
    pub fn conflicts_with(
        &self,
        now: Option<&crate::remote::Entry>,
        ours: u64,
        partial: bool,
    ) -> bool {
        match (self, now) {
            // An empty file holds nothing to lose (a private new file is
            // created empty before its content goes up), and what our own cut
            // upload left is ours.
            (Base::New, now) => now.is_some_and(|e| e.size > 0 && !(partial && e.size <= ours)),
            // Gone from the server: nothing of anyone else's to overwrite.
            (Base::Remote { .. }, None) => false,
            (Base::Remote { size, mtime }, Some(e)) => {
                let moved = match (mtime, e.mtime) {
                    (Some(a), Some(b)) => {
                        let d = a.duration_since(b).or_else(|e| Ok::<_, ()>(e.duration()));
                        d.map_or(true, |d| d >= Duration::from_secs(60))
                    }
                    _ => false,
                };
                *size != e.size || moved
            }
        }
    }
}

/// One pending upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Where the content goes on the server.
    pub path: String,
    pub size: u64,
    /// When the content last changed: the time the file gets.
    pub modified: SystemTime,
    /// A time set explicitly (utimens), to set on the server after the upload.
    pub mtime: Option<SystemTime>,
    /// A mode to set after the upload.
    pub mode: Option<u32>,
    pub base: Base,
    /// An upload of a new file went straight to its name: what the server has
    /// there (no bigger than ours) may be the part of it that a crash cut off.
    pub partial: bool,
}

/// A record found in the journal at mount time, with its content.
#[derive(Debug)]
pub struct Pending {
    pub id: String,
    pub record: Record,
    pub data: PathBuf,
}

/// The journal directory of one server.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

fn secs(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    format!("{}.{:09}", d.as_secs(), d.subsec_nanos())
}

fn parse_secs(v: &str) -> Option<SystemTime> {
    let (s, n) = v.split_once('.').unwrap_or((v, "0"));
    let d = Duration::new(s.parse().ok()?, n.parse().ok()?);
    Some(UNIX_EPOCH + d)
}

impl Record {
    fn render(&self) -> String {
        let mode = self.mode.map_or("-".to_string(), |m| format!("{m:o}"));
        let mtime = self.mtime.map_or("-".to_string(), secs);
        let base = match self.base {
            Base::New => "new".to_string(),
            Base::Remote { size, mtime } => {
                format!("{size} {}", mtime.map_or("-".to_string(), secs))
            }
        };
        let partial = if self.partial { "maybe" } else { "no" };
        format!(
            "{MAGIC}\nsize={}\nmodified={}\nmtime={mtime}\nmode={mode}\nbase={base}\npartial={partial}\npath={}\n",
            self.size,
            secs(self.modified),
            self.path
        )
    }

    fn parse(text: &str) -> Option<Record> {
        let mut lines = text.lines();
        if lines.next()? != MAGIC {
            return None;
        }
        let (mut size, mut modified, mut mode, mut base, mut path) = (None, None, None, None, None);
        let mut mtime = None;
        let mut partial = false;
        for line in lines {
            let (k, v) = line.split_once('=')?;
            match k {
                "size" => size = v.parse().ok(),
                "modified" => modified = parse_secs(v),
                "mtime" if v == "-" => mtime = None,
                "mtime" => mtime = Some(parse_secs(v)?),
                "mode" if v == "-" => mode = Some(None),
                "mode" => mode = Some(Some(u32::from_str_radix(v, 8).ok()?)),
                "base" if v == "new" => base = Some(Base::New),
                "base" => {
                    let (s, t) = v.split_once(' ')?;
                    let mtime = if t == "-" { None } else { Some(parse_secs(t)?) };
                    base = Some(Base::Remote {
                        size: s.parse().ok()?,
                        mtime,
                    });
                }
                "partial" => partial = v == "maybe",
                "path" => path = Some(v.to_string()),
                _ => {}
            }
        }
        let path = path.filter(|p| p.starts_with('/'))?;
        Some(Record {
            path,
            size: size?,
            modified: modified?,
            mtime,
            mode: mode?,
            base: base?,
            partial,
        })
    }
}

/// fsync of a directory, so that the names created or removed in it last.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Journal {
    /// The journal in `dir`, created private (0700) if need be.
    pub fn open(dir: &Path) -> io::Result<Journal> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        Ok(Journal {
            dir: dir.to_path_buf(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A name for a new entry, unique across mounts of this journal.
    pub fn new_id(&self) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        format!(
            "{}-{}-{}",
            now.as_secs(),
            std::process::id(),
            NEXT_ID.fetch_add(1, Ordering::Relaxed)
        )
    }

    fn data_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.data"))
    }

    fn entry_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.entry"))
    }

    /// Makes `content` (the spool file, complete) durable as entry `id`'s data:
    /// synced, and linked into the journal unless it is linked there already.
    pub fn save_data(&self, id: &str, content: &File, spool: &Path) -> io::Result<()> {
        content.sync_data()?;
        let data = self.data_path(id);
        if fs::metadata(&data).is_ok_and(|m| same_file(&m, content)) {
            return Ok(());
        }
        let tmp = self.dir.join(format!("{id}.data.tmp"));
        let _ = fs::remove_file(&tmp);
        fs::hard_link(spool, &tmp)?;
        fs::rename(&tmp, &data)?;
        Ok(())
    }

    /// Writes entry `id`'s record (after its data), durably.
    pub fn save_record(&self, id: &str, record: &Record) -> io::Result<()> {
        let tmp = self.dir.join(format!("{id}.entry.tmp"));
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(record.render().as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, self.entry_path(id))?;
        sync_dir(&self.dir)
    }

    /// Drops entry `id`: its upload is done (or no longer wanted).
    pub fn remove(&self, id: &str) -> io::Result<()> {
        match fs::remove_file(self.entry_path(id)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let _ = fs::remove_file(self.data_path(id));
        sync_dir(&self.dir)
    }

    /// Every complete entry, oldest first; leftovers of a crash between two
    /// steps are removed.
    pub fn load(&self) -> io::Result<Vec<Pending>> {
        let mut ids = Vec::new();
        let mut stray = Vec::new();
        for item in fs::read_dir(&self.dir)? {
            let item = item?;
            let name = item.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_suffix(".entry") {
                ids.push(id.to_string());
            } else if name.ends_with(".tmp") {
                stray.push(item.path());
            } else if let Some(id) = name.strip_suffix(".data") {
                if !self.entry_path(id).exists() {
                    stray.push(item.path());
                }
            }
        }
        for p in stray {
            log::info!("journal: removing the leftover {}", p.display());
            let _ = fs::remove_file(p);
        }
        ids.sort_by_key(|id| {
            let (secs, rest) = id.split_once('-').unwrap_or((id, ""));
            (secs.parse::<u64>().unwrap_or(0), rest.to_string())
        });
        let mut out = Vec::new();
        for id in ids {
            let data = self.data_path(&id);
            let text = fs::read_to_string(self.entry_path(&id))?;
            match Record::parse(&text) {
                Some(record) if data.exists() => out.push(Pending { id, record, data }),
                Some(_) => {
                    log::warn!("journal: entry {id} has no data; removing it");
                    self.remove(&id)?;
                }
                None => log::error!(
                    "journal: cannot read entry {} (kept for inspection)",
                    self.entry_path(&id).display()
                ),
            }
        }
        Ok(out)
    }
}

fn same_file(m: &fs::Metadata, f: &File) -> bool {
    use std::os::unix::fs::MetadataExt;
    f.metadata()
        .is_ok_and(|o| o.ino() == m.ino() && o.dev() == m.dev())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(path: &str, base: Base) -> Record {
        Record {
            path: path.to_string(),
            size: 5,
            modified: UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789),
            mtime: Some(UNIX_EPOCH + Duration::from_secs(1_500_000_000)),
            mode: Some(0o640),
            base,
            partial: true,
        }
    }

    #[test]
    fn records_survive_the_round_trip() {
        for base in [
            Base::New,
            Base::Remote {
                size: 7,
                mtime: None,
            },
            Base::Remote {
                size: 0,
                mtime: Some(UNIX_EPOCH + Duration::from_secs(1_600_000_000)),
            },
        ] {
            let r = record("/a dir/b=c.txt", base);
            assert_eq!(Record::parse(&r.render()), Some(r));
        }
        assert_eq!(Record::parse("something else\n"), None);
        assert_eq!(Record::parse(&format!("{MAGIC}\nsize=1\n")), None);
    }

    #[test]
    fn a_conflict_is_a_server_file_that_changed_size_or_minute() {
        use crate::remote::{Entry, EntryKind};
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_040);
        let entry = |size, mtime| {
            let mut e = Entry::new("f", EntryKind::File, size);
            e.mtime = mtime;
            e
        };
        let base = Base::Remote {
            size: 10,
            mtime: Some(t),
        };
        let c = |b: &Base, e: Option<&Entry>| b.conflicts_with(e, 10, false);
        assert!(!c(&base, None), "deleted on the server");
        assert!(!c(&base, Some(&entry(10, Some(t)))));
        // LIST shows the same time to the minute.
        let minute = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert!(!c(&base, Some(&entry(10, Some(minute)))));
        assert!(c(&base, Some(&entry(11, Some(t)))));
        let later = t + Duration::from_secs(3600);
        assert!(c(&base, Some(&entry(10, Some(later)))));
        assert!(!c(&base, Some(&entry(10, None))));
        assert!(c(&Base::New, Some(&entry(1, None))));
        assert!(!c(&Base::New, Some(&entry(0, None))));
        assert!(!c(&Base::New, None));
        // What our own cut upload left: no bigger than ours.
        assert!(!Base::New.conflicts_with(Some(&entry(4, None)), 10, true));
        assert!(Base::New.conflicts_with(Some(&entry(11, None)), 10, true));
    }

    #[test]
    fn saved_entries_load_with_their_data_and_leftovers_go() {
        let dir = tempfile::tempdir().expect("tempdir");
        let j = Journal::open(&dir.path().join("j")).expect("open");
        let spool = dir.path().join("spool");
        fs::write(&spool, b"hello").expect("write");
        let f = File::open(&spool).expect("open spool");
        let id = j.new_id();
        j.save_data(&id, &f, &spool).expect("data");
        j.save_data(&id, &f, &spool).expect("data again is a no-op");
        let data = fs::metadata(j.data_path(&id)).expect("data");
        assert!(same_file(&data, &f), "the data is the spool itself");
        j.save_record(&id, &record("/x", Base::New))
            .expect("record");
        // A crash between two steps leaves these behind.
        fs::write(j.dir().join("9-9-9.data"), b"orphan").expect("write");
        fs::write(j.dir().join("9-9-8.entry.tmp"), b"half").expect("write");

        let pending = j.load().expect("load");
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].id, id);
        assert_eq!(pending[0].record.path, "/x");
        assert_eq!(fs::read(&pending[0].data).expect("data"), b"hello");
        assert!(!j.dir().join("9-9-9.data").exists());
        assert!(!j.dir().join("9-9-8.entry.tmp").exists());

        j.remove(&id).expect("remove");
        assert!(j.load().expect("load").is_empty());
        assert_eq!(fs::read(&spool).expect("spool stays"), b"hello");
    }

    #[test]
    fn entries_load_oldest_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let j = Journal::open(dir.path()).expect("open");
        let spool = dir.path().join("s");
        fs::write(&spool, b"x").expect("write");
        let f = File::open(&spool).expect("open");
        for (id, path) in [("20-1-0", "/b"), ("3-1-0", "/a"), ("100-1-0", "/c")] {
            let copy = dir.path().join(format!("copy-{id}"));
            fs::copy(&spool, &copy).expect("copy");
            let cf = File::open(&copy).expect("open");
            j.save_data(id, &cf, &copy).expect("data");
            j.save_record(id, &record(path, Base::New)).expect("record");
        }
        let _ = f;
        let paths: Vec<String> = j
            .load()
            .expect("load")
            .into_iter()
            .map(|p| p.record.path)
            .collect();
        assert_eq!(paths, ["/a", "/b", "/c"]);
    }
}
