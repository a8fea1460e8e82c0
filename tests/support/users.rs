//! An ordinary user for tests that run ftpfs without root: [`user_ids`]
//! creates it once, [`as_user`] runs a command as it, and [`DevFuseMode`]
//! sets the mode of /dev/fuse for a test and puts the old one back.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use super::wait_timeout;

/// The user the tests run ftpfs as.
pub const TEST_USER: &str = "ftpfs-nonroot";

/// The test user (uid, gid, home): created once (idempotent), with a home.
pub fn user_ids() -> (u32, u32, PathBuf) {
    let exists = Command::new("id")
        .arg("-u")
        .arg(TEST_USER)
        .output()
        .is_ok_and(|o| o.status.success());
    if !exists {
        let out = Command::new("useradd")
            .args(["-m", "-s", "/bin/sh", TEST_USER])
            .output()
            .expect("run useradd");
        assert!(
            out.status.success() || String::from_utf8_lossy(&out.stderr).contains("exists"),
            "useradd {TEST_USER}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let id = |flag: &str| -> u32 {
        let o = Command::new("id")
            .arg(flag)
            .arg(TEST_USER)
            .output()
            .expect("id");
        String::from_utf8_lossy(&o.stdout)
            .trim()
            .parse()
            .expect("numeric id")
    };
    let home = PathBuf::from(format!("/home/{TEST_USER}"));
    (id("-u"), id("-g"), home)
}

/// `runuser -u TEST_USER -- PROG ARGS` with the user's home and a clean environment.
pub fn as_user(prog: &str, args: &[&str]) -> Command {
    let mut c = Command::new("runuser");
    c.args(["-u", TEST_USER, "--", "env", "-i"])
        .arg(format!("HOME=/home/{TEST_USER}"))
        .arg("PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
        .arg("RUST_LOG=")
        .arg(prog)
        .args(args)
        .stdin(Stdio::null());
    c
}

/// Runs a command to its end, killed after `limit`.
pub fn run_for(limit: Duration, mut c: Command) -> Output {
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn");
    if wait_timeout(&mut child, limit).is_none() {
        let _ = child.kill();
    }
    child.wait_with_output().expect("wait")
}

/// A command's output as trimmed text.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).trim().to_string()
}

/// Sets the mode of /dev/fuse (machine-wide: hold a lock shared by the tests
/// of the binary that change it), and puts the old one back on drop.
pub struct DevFuseMode(u32);

impl DevFuseMode {
    pub fn set(mode: u32) -> DevFuseMode {
        let old = fs::metadata("/dev/fuse").expect("/dev/fuse").mode() & 0o7777;
        fs::set_permissions("/dev/fuse", fs::Permissions::from_mode(mode))
            .expect("chmod /dev/fuse");
        DevFuseMode(old)
    }
}

impl Drop for DevFuseMode {
    fn drop(&mut self) {
        let _ = fs::set_permissions("/dev/fuse", fs::Permissions::from_mode(self.0));
    }
}
