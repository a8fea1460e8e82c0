//! Changes whose reply was lost: a DELE, RNFR/RNTO, MKD or RMD that failed with a
//! broken connection or a timeout may or may not have happened on the server.
//! Before the filesystem answers, it looks at the server (a fresh listing of the
//! directory, retried while the network timeout allows) and goes on as if the
//! change succeeded when the server shows it did; only a change that surely did
//! not happen, or whose outcome the server cannot tell, is an error. Either way
//! the caches of the directories involved stop trusting what they held.

use std::time::{Duration, Instant};

use super::meta::child_path;
use super::FtpFs;
use crate::remote::RemoteError;

/// The first wait between two looks at the server; it doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(10);
const MAX_PAUSE: Duration = Duration::from_millis(500);

impl FtpFs {
    /// After `err` from a change of `dir/name`: whether the server now shows the
    /// name (`Some(true)`), shows it missing (`Some(false)`), or cannot be asked
    /// (`None`) within the network timeout. Only transient errors leave a doubt;
    /// for the others this is `None` without asking.
    pub(super) fn present_after(&self, err: &RemoteError, dir: &str, name: &str) -> Option<bool> {
        if !err.kind.is_transient() {
            return None;
        }
        let path = child_path(dir, name);
        log::warn!(
            "{}; checking whether the change to {path} happened",
            err.message
        );
        let deadline = Instant::now() + self.cfg.timeout;
        let mut pause = FIRST_PAUSE;
        // Failed fetches are never cached: one invalidation covers every try.
        self.meta.invalidate(dir);
        loop {
            match self.listing(dir) {
                Ok(l) => {
                    let present = l.get(name).is_some();
                    log::info!(
                        "after the lost reply, {path} is {}",
                        if present { "there" } else { "not there" }
                    );
                    return Some(present);
                }
                Err(_) if Instant::now() + pause < deadline => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(MAX_PAUSE);
                }
                Err(_) => {
                    log::warn!("could not tell whether the change to {path} happened");
                    return None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::fs::faulty::{FaultConfig, FaultScope, FaultyRemote};
    use crate::fs::inodes::ROOT;
    use crate::fs::memory::MemoryRemote;
    use crate::fs::{Errno, FsConfig, FtpFs, RenameMode};
    use crate::remote::Remote;

    /// A mount whose server breaks every change in the way `scope` says.
    fn breaking_changes(scope: FaultScope) -> (Arc<MemoryRemote>, Arc<FaultyRemote>, FtpFs) {
        let mem = Arc::new(MemoryRemote::new());
        mem.add_dir("/d");
        mem.add_file("/a", b"abc");
        let faulty = Arc::new(FaultyRemote::new(
            Arc::clone(&mem) as Arc<dyn Remote>,
            FaultConfig {
                probability: 1.0,
                scope,
                ..FaultConfig::default()
            },
        ));
        faulty.set_failing(false);
        let fs = FtpFs::new(Arc::clone(&faulty) as Arc<dyn Remote>, FsConfig::default());
        (mem, faulty, fs)
    }

    #[test]
    fn changes_that_happened_succeed_although_their_reply_was_lost() {
        let (mem, faulty, fs) = breaking_changes(FaultScope::ChangesLostReply);
        let d = fs.lookup(ROOT, "d").unwrap().ino;
        faulty.set_failing(true);
        fs.rename(ROOT, "a", d, "b", RenameMode::Replace).unwrap();
        assert_eq!(mem.content("/d/b").as_deref(), Some(&b"abc"[..]));
        assert_eq!(fs.lookup(ROOT, "a"), Err(Errno(libc::ENOENT)));
        assert_eq!(fs.lookup(d, "b").unwrap().size, 3);

        fs.mkdir(ROOT, "new", 0o755).unwrap();
        assert!(fs.lookup(ROOT, "new").is_ok());
        fs.rmdir(ROOT, "new").unwrap();
        assert_eq!(fs.lookup(ROOT, "new"), Err(Errno(libc::ENOENT)));

        fs.unlink(d, "b").unwrap();
        assert_eq!(mem.content("/d/b"), None);
        assert_eq!(fs.lookup(d, "b"), Err(Errno(libc::ENOENT)));
        assert_eq!(faulty.injected.load(std::sync::atomic::Ordering::SeqCst), 4);
    }

    #[test]
    fn an_unlink_that_did_not_happen_fails_and_open_handles_still_save() {
        let (mem, faulty, fs) = breaking_changes(FaultScope::ChangesBefore);
        let a = fs.lookup(ROOT, "a").unwrap().ino;
        let (fh, _) = fs.open(a, libc::O_WRONLY | libc::O_APPEND).unwrap();
        fs.write(fh, 3, b"d").unwrap();
        faulty.set_failing(true);
        assert!(fs.unlink(ROOT, "a").is_err());
        let renamed = fs.rename(ROOT, "a", ROOT, "b", RenameMode::Replace);
        assert!(
            matches!(renamed, Err(Errno(libc::EIO | libc::ETIMEDOUT))),
            "{renamed:?}"
        );
        faulty.set_failing(false);
        assert_eq!(fs.lookup(ROOT, "b"), Err(Errno(libc::ENOENT)));
        fs.write(fh, 4, b"e").unwrap();
        fs.flush(fh).unwrap();
        fs.release(fh);
        assert_eq!(mem.content("/a").as_deref(), Some(&b"abcde"[..]));
    }
}
