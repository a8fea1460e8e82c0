//! Keeps a password given in the URL out of the process list. ftpfs runs
//! itself again (exec, same PID) with the URL's password removed from argv, and
//! hands the password over through a pipe named in `FTPFS_PASSWORD_FD`: no
//! `/proc/PID/cmdline` shows it after start-up, whoever runs ftpfs.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;

use crate::ftp::conn::Secret;

/// The environment variable naming the pipe that carries the password.
const FD_ENV: &str = "FTPFS_PASSWORD_FD";

/// `url` without its password (the user name stays), or None when it has none.
pub fn without_password(url: &str) -> Option<String> {
    let mut u = url::Url::parse(url).ok()?;
    u.password()?;
    u.set_password(None).ok()?;
    Some(u.to_string())
}

/// Runs this program again with `secret_arg` replaced by `public_arg` in argv,
/// the password passing through a pipe. Returns only if that failed, with why.
pub fn reexec_without(secret_arg: &str, public_arg: &str, password: &str) -> String {
    let mut fds = [0; 2];
    // SAFETY: a plain syscall filling a two-int array.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return format!("pipe: {}", std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors are fresh and owned from here on.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // A password is far smaller than a pipe's buffer: this never blocks.
    if let Err(e) = std::fs::File::from(write_end).write_all(password.as_bytes()) {
        return format!("pipe: {e}");
    }
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_else(|| OsString::from("ftpfs"));
    let rest: Vec<OsString> = args
        .map(|a| {
            if a == secret_arg {
                OsString::from(public_arg)
            } else {
                a
            }
        })
        .collect();
    // The real path (not /proc/self/exe), so that the process keeps its name.
    let exe = std::env::current_exe().unwrap_or_else(|_| "/proc/self/exe".into());
    let err = std::process::Command::new(exe)
        .arg0(argv0)
        .args(rest)
        .env(FD_ENV, fds[0].to_string())
        .exec();
    drop(read_end);
    format!("exec: {err}")
}

/// The password handed over by [`reexec_without`] (read once; the pipe is
/// closed and the variable removed), or None when ftpfs was not re-executed.
pub fn take_handed_password() -> Option<Secret> {
    let fd: i32 = std::env::var(FD_ENV).ok()?.parse().ok()?;
    // Single-threaded here: nothing else reads the environment meanwhile.
    std::env::remove_var(FD_ENV);
    if fd < 3 {
        return None;
    }
    // SAFETY: the descriptor was left open for us by the exec above; taking it
    // closes it once read. A stray value fails the read and is closed harmlessly.
    let mut pipe = unsafe { std::fs::File::from_raw_fd(fd) };
    let mut text = String::new();
    pipe.read_to_string(&mut text).ok()?;
    Some(Secret::new(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_goes_and_the_rest_stays() {
        assert_eq!(
            without_password("ftp://bob:s3cr%40t@example.org:2121/dir/").as_deref(),
            Some("ftp://bob@example.org:2121/dir/")
        );
        assert_eq!(
            without_password("ftps://b%20b:x@h/").as_deref(),
            Some("ftps://b%20b@h/")
        );
        assert_eq!(without_password("ftp://bob@example.org/"), None);
        assert_eq!(without_password("ftp://example.org/"), None);
        assert_eq!(without_password("not a url"), None);
    }
}
