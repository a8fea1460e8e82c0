//! Commands for the real tools that tests run on a mount.

use std::path::Path;
use std::process::{Command, Stdio};

/// `timeout LIMIT git -C dir` with a private HOME, no system config, a fixed
/// identity and fixed dates, and stdin from /dev/null; a hung mount fails the
/// command after `limit_secs` instead of hanging the test.
pub fn git(dir: &Path, home: &Path, limit_secs: u64) -> Command {
    let mut c = Command::new("timeout");
    c.args(["-k", "10", &limit_secs.to_string(), "git", "-C"])
        .arg(dir)
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
        .args(["-c", "safe.directory=*", "-c", "init.defaultBranch=main"])
        .env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_DATE", "2024-01-02T03:04:05Z")
        .env("GIT_COMMITTER_DATE", "2024-01-02T03:04:05Z")
        .stdin(Stdio::null());
    c
}
