//! Process plumbing: going to the background once the mount is up (as sshfs does),
//! and turning SIGINT, SIGTERM and SIGHUP into a clean unmount.

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// The write end held by the background child: it tells the waiting parent
/// that the mount is up (a byte 1), or why it failed (a byte 0 and the
/// message, which the parent prints: the child's stderr is /dev/null).
pub struct ReadyPipe(Option<std::fs::File>);

impl ReadyPipe {
    /// In the foreground there is nobody to tell.
    pub fn none() -> Self {
        ReadyPipe(None)
    }

    pub fn notify_ready(&mut self) {
        if let Some(mut f) = self.0.take() {
            let _ = f.write_all(&[1]);
        }
    }

    /// Hands the error that ends the mount to the waiting parent.
    pub fn notify_failed(&mut self, msg: &str) {
        if let Some(mut f) = self.0.take() {
            let mut out = vec![0];
            out.extend_from_slice(msg.as_bytes());
            let _ = f.write_all(&out);
        }
    }
}

/// What the parent makes of what the child sent: None when the mount is up,
/// else the message to print.
fn parent_verdict(sent: &[u8]) -> Option<String> {
    match sent.split_first() {
        Some((1, _)) => None,
        Some((0, msg)) if !msg.is_empty() => Some(String::from_utf8_lossy(msg).into_owned()),
        _ => Some(
            "the mount failed in the background without saying why; \
             run with -f to see it, or look in the system log (journalctl -t ftpfs)"
                .into(),
        ),
    }
}

/// Forks. The parent waits until the child reports the mount ready (exit 0) or
/// gives up (exit 1) and never returns; the child detaches and carries on.
/// Must run before any thread is started.
pub fn daemonize() -> std::io::Result<ReadyPipe> {
    let mut fds = [0; 2];
    // SAFETY: plain syscalls on fresh descriptors; the process has one thread here.
    unsafe {
        if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let (r, w) = (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]));
        match libc::fork() {
            -1 => Err(std::io::Error::last_os_error()),
            0 => {
                drop(r);
                libc::setsid();
                // Detach from the terminal; errors then go to the log only.
                let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
                if null >= 0 {
                    libc::dup2(null, 0);
                    libc::dup2(null, 1);
                    libc::dup2(null, 2);
                    if null > 2 {
                        libc::close(null);
                    }
                }
                Ok(ReadyPipe(Some(std::fs::File::from(w))))
            }
            _child => {
                drop(w);
                let mut sent = Vec::new();
                let _ = std::fs::File::from(r).read_to_end(&mut sent);
                let code = match parent_verdict(&sent) {
                    None => 0,
                    Some(msg) => {
                        let _ = writeln!(std::io::stderr(), "ftpfs: {msg}");
                        1
                    }
                };
                // Skip destructors: the child owns the FTP connection now.
                libc::_exit(code)
            }
        }
    }
}

/// Blocks the termination signals in this thread and every thread started after,
/// so that one thread can wait for them with sigwait.
pub fn block_signals() -> libc::sigset_t {
    // SAFETY: initialises and applies a signal set owned by this function.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Starts a thread that waits for a termination signal and then runs `on_signal`.
pub fn on_termination(set: libc::sigset_t, on_signal: impl FnOnce(i32) + Send + 'static) {
    let _ = std::thread::Builder::new()
        .name("ftpfs-signals".into())
        .spawn(move || {
            let mut sig = 0;
            // SAFETY: waits on a valid, blocked signal set.
            let rc = unsafe { libc::sigwait(&set, &mut sig) };
            if rc == 0 {
                on_signal(sig);
            }
        });
}

/// Unmounts `mnt`: umount(2) when we may (root), else fusermount3. Lazy if busy.
pub fn unmount(mnt: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(mnt.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: a valid NUL-terminated path.
    unsafe {
        if libc::umount2(c.as_ptr(), 0) == 0 || libc::umount2(c.as_ptr(), libc::MNT_DETACH) == 0 {
            return true;
        }
    }
    std::process::Command::new("fusermount3")
        .arg("-u")
        .arg("-z")
        .arg(mnt)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// The mount point as an absolute path, checked to be an existing directory,
/// and empty unless `nonempty` (a mount would hide its files).
pub fn check_mountpoint(p: &Path, nonempty: bool) -> Result<PathBuf, String> {
    let abs = std::fs::canonicalize(p).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!(
            "mount point {} does not exist (create it with mkdir)",
            p.display()
        ),
        _ => format!("mount point {}: {e}", p.display()),
    })?;
    if !abs.is_dir() {
        return Err(format!("mount point {} is not a directory", p.display()));
    }
    if !nonempty {
        let mut entries =
            std::fs::read_dir(&abs).map_err(|e| format!("mount point {}: {e}", p.display()))?;
        if entries.next().is_some() {
            return Err(format!(
                "mount point {} is not empty (mounting would hide its files; \
                 add -o nonempty to mount over them anyway)",
                p.display()
            ));
        }
    }
    Ok(abs)
}

/// The user's home directory: `$HOME` when it belongs to this user, else the
/// passwd entry's. mount(8) runs helpers with HOME=/root even for a user mount.
pub fn home_dir() -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    let from_env = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .filter(|h| std::fs::metadata(h).is_ok_and(|m| m.uid() == uid));
    from_env.or_else(|| passwd_home(uid))
}

/// The home directory in the passwd entry of `uid`.
fn passwd_home(uid: libc::uid_t) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: all-zero is a valid passwd (null pointers, zero ids).
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: the buffers outlive the call; on success `result` points to `pwd`,
    // whose strings point into `buf`.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) };
    if rc != 0 || result.is_null() || pwd.pw_dir.is_null() {
        return None;
    }
    // SAFETY: pw_dir is a NUL-terminated string inside `buf`.
    let dir = unsafe { std::ffi::CStr::from_ptr(pwd.pw_dir) };
    Some(PathBuf::from(std::ffi::OsStr::from_bytes(dir.to_bytes())))
}

/// The base of ftpfs's local files: `-o cache_dir`, else
/// `$XDG_CACHE_HOME/ftpfs`, else `~/.cache/ftpfs`.
fn cache_base(configured: Option<&Path>) -> PathBuf {
    match configured {
        Some(p) => p.to_path_buf(),
        None => std::env::var_os("XDG_CACHE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| home_dir().map(|h| h.join(".cache")))
            .unwrap_or_else(std::env::temp_dir)
            .join("ftpfs"),
    }
}

/// Creates `dir` (and what leads to it) private to the user: mode 0700.
fn private_dir(dir: &Path, what: &str) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    // Directories created on the way are private; an existing base (a configured
    // cache_dir, /tmp...) keeps its mode: only our own directory is made 0700.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .and_then(|_| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)))
        .map_err(|e| format!("cannot create the {what} directory {}: {e}", dir.display()))
}

/// The private spool directory of this mount: `BASE/spool-PID`, mode 0700
/// (BASE as in [`cache_base`]).
pub fn spool_dir(configured: Option<&Path>) -> Result<PathBuf, String> {
    let dir = cache_base(configured).join(format!("spool-{}", std::process::id()));
    private_dir(&dir, "spool")?;
    Ok(dir)
}

/// The journal directory of one server: `BASE/journal-HASH`, where HASH is of
/// `server` (user, host, port and path; no password), so that every mount of
/// the same server with the same cache_dir shares it. With `create` it is
/// made if need be (async mode), else only an existing one is returned (to
/// resume what an async mount left). The server's name is written next to it
/// for people who look.
pub fn journal_dir(
    configured: Option<&Path>,
    server: &str,
    create: bool,
) -> Result<Option<PathBuf>, String> {
    let hash = crate::status::fnv1a(server.as_bytes());
    let dir = cache_base(configured).join(format!("journal-{hash:016x}"));
    if !create {
        return Ok(dir.is_dir().then_some(dir));
    }
    private_dir(&dir, "journal")?;
    let _ = std::fs::write(dir.join("SERVER"), format!("{server}\n"));
    Ok(Some(dir))
}

/// The file that keeps the exact times ftpfs set on `server` across mounts
/// (see `fs::set_times`): `BASE/times-HASH`, next to the spool directories
/// (made first); None (times kept for this mount only) without a BASE.
pub fn set_times_file(configured: Option<&Path>, server: &str) -> Option<PathBuf> {
    let base = cache_base(configured);
    if !base.is_dir() {
        return None;
    }
    let hash = crate::status::fnv1a(server.as_bytes());
    Some(base.join(format!("times-{hash:016x}")))
}

/// Removes a journal directory that holds nothing pending any more.
pub fn remove_journal_if_empty(dir: &Path) {
    let pending = std::fs::read_dir(dir).map(|rd| {
        rd.flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".entry"))
    });
    if pending.is_ok_and(|p| !p) {
        let _ = std::fs::remove_file(dir.join("SERVER"));
        let _ = std::fs::remove_dir(dir);
    }
}

/// Raises the limit of open files to the hard limit: every file pending in
/// async mode keeps its spool open.
pub fn raise_open_file_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write `lim`.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                log::debug!("could not raise the open-file limit");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_passwd_home_of_root_is_found() {
        assert_eq!(passwd_home(0), Some(PathBuf::from("/root")));
        assert!(home_dir().is_some());
    }

    #[test]
    fn the_parent_prints_what_the_child_sent() {
        assert_eq!(parent_verdict(&[1]), None);
        assert_eq!(
            parent_verdict(b"\0cannot mount on /m: Permission denied").as_deref(),
            Some("cannot mount on /m: Permission denied")
        );
        // A child that died without a word still gets a message.
        assert!(parent_verdict(&[]).is_some_and(|m| m.contains("-f")));
        assert!(parent_verdict(&[0]).is_some_and(|m| m.contains("-f")));
    }
}
