//! Getting the FUSE mount: the mount options, and the way in. Root, or a user
//! who may open /dev/fuse, goes through fuser (mount(2), or fuser's own
//! fusermount3 fallback when mount(2) is refused). A user who may not open
//! /dev/fuse (mode 0600, as on hardened systems) mounts through the setuid
//! `fusermount3`, as libfuse does: it opens the device, mounts, and hands the
//! descriptor back over a socket.

use std::io::{IoSliceMut, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use fuser::{Config, Filesystem, MountOption, Session, SessionACL};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixAddr};

/// What the mount looks like, whichever way it is made.
pub struct MountSpec {
    /// The source shown in /proc/mounts (the URL without the password).
    pub fsname: String,
    pub read_only: bool,
    pub default_permissions: bool,
    pub allow_other: bool,
}

/// How the mount was made: it decides how to unmount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    /// fuser mounted it (itself or through fusermount3), and unmounts it.
    Fuser,
    /// ftpfs ran `fusermount3`: unmounting is up to ftpfs (`daemon::unmount`).
    Fusermount,
}

/// What to do when neither ftpfs nor fusermount3 may open /dev/fuse (recent
/// fusermount3 opens it with the user's own rights, so its mode decides).
const DEV_FUSE_ADVICE: &str = ". FUSE mounts by users other than root need \
     /dev/fuse readable and writable by them: as root, run chmod 0666 /dev/fuse \
     (the default on Debian and most systems), or mount as root";

/// The fuse.conf line that lets users pass `allow_other`.
const USER_ALLOW_OTHER: &str = "user_allow_other";

/// Whether this process may open /dev/fuse itself.
pub fn dev_fuse_openable() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .is_ok()
}

/// Whether `text` (an /etc/fuse.conf) enables `user_allow_other`.
pub fn fuse_conf_allows_other(text: &str) -> bool {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .any(|l| l == USER_ALLOW_OTHER)
}

/// Refuses what fusermount3 would refuse later, with the fix named.
pub fn check_allowed(allow_other: bool, euid: u32) -> Result<(), String> {
    if !allow_other || euid == 0 {
        return Ok(());
    }
    let conf = std::fs::read_to_string("/etc/fuse.conf").unwrap_or_default();
    if fuse_conf_allows_other(&conf) {
        return Ok(());
    }
    Err(format!(
        "-o allow_other needs '{USER_ALLOW_OTHER}' in /etc/fuse.conf for a mount by a user \
         other than root; as root, run: echo {USER_ALLOW_OTHER} >> /etc/fuse.conf"
    ))
}

/// The mount options as fuser takes them.
pub fn fuser_options(spec: &MountSpec, euid: u32) -> Vec<MountOption> {
    let mut opts = vec![
        MountOption::FSName(spec.fsname.clone()),
        // As root fuser calls mount(2) itself and drops Subtype; the kernel takes it as data.
        if euid == 0 {
            MountOption::CUSTOM("subtype=ftpfs".into())
        } else {
            MountOption::Subtype("ftpfs".into())
        },
        MountOption::NoDev,
        MountOption::NoSuid,
        if spec.read_only {
            MountOption::RO
        } else {
            MountOption::RW
        },
    ];
    if spec.default_permissions {
        opts.push(MountOption::DefaultPermissions);
    }
    opts
}

/// The same options as `fusermount3 -o` takes them.
pub fn fusermount_options(spec: &MountSpec) -> String {
    // fusermount3 splits at commas and takes backslash escapes.
    let fsname = spec.fsname.replace('\\', "\\\\").replace(',', "\\,");
    let mut o = vec![
        format!("fsname={fsname}"),
        "subtype=ftpfs".to_string(),
        "nodev".to_string(),
        "nosuid".to_string(),
        if spec.read_only { "ro" } else { "rw" }.to_string(),
    ];
    if spec.default_permissions {
        o.push("default_permissions".into());
    }
    if spec.allow_other {
        o.push("allow_other".into());
    }
    o.join(",")
}

/// Mounts `fs` on `mountpoint`, the way this process may. The caller has
/// checked `allow_other` with [`check_allowed`] (before logging in).
pub fn mount<FS: Filesystem>(
    fs: FS,
    mountpoint: &Path,
    spec: &MountSpec,
    mut config: Config,
    euid: u32,
) -> Result<(Session<FS>, Way), String> {
    if spec.allow_other {
        config.acl = SessionACL::All;
    }
    if euid == 0 || dev_fuse_openable() {
        config.mount_options = fuser_options(spec, euid);
        let session = Session::new(fs, mountpoint, &config)
            .map_err(|e| format!("cannot mount on {}: {e}", mountpoint.display()))?;
        // fuser falls back to fusermount3 itself when mount(2) is refused.
        return Ok((session, Way::Fuser));
    }
    log::info!("/dev/fuse cannot be opened by this user: mounting through fusermount3");
    let fd = fusermount(mountpoint, &fusermount_options(spec)).map_err(|e| {
        format!(
            "cannot mount on {}: {e}{}",
            mountpoint.display(),
            if e.contains("/dev/fuse") {
                DEV_FUSE_ADVICE
            } else {
                ""
            }
        )
    })?;
    // Cloning the descriptor would open /dev/fuse again, which is refused here.
    config.clone_fd = false;
    let acl = config.acl;
    let session = Session::from_fd(fs, fd, acl, config).map_err(|e| {
        crate::daemon::unmount(mountpoint);
        format!("cannot start FUSE on {}: {e}", mountpoint.display())
    })?;
    Ok((session, Way::Fusermount))
}

/// The fusermount3 program: on PATH, else where Debian puts it.
fn fusermount_bin() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("fusermount3"))
            .find(|c| c.is_file())
    });
    on_path.unwrap_or_else(|| PathBuf::from("/usr/bin/fusermount3"))
}

/// Runs `fusermount3 -o OPTIONS -- MOUNTPOINT` and receives the /dev/fuse
/// descriptor it sends back (libfuse's `_FUSE_COMMFD` protocol).
fn fusermount(mountpoint: &Path, options: &str) -> Result<OwnedFd, String> {
    let (ours, theirs) = UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
    let theirs_fd = theirs.as_raw_fd();
    let bin = fusermount_bin();
    let mut cmd = Command::new(&bin);
    cmd.arg("-o")
        .arg(options)
        .arg("--")
        .arg(mountpoint)
        .env("_FUSE_COMMFD", theirs_fd.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: only fcntl on a descriptor we own, between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(theirs_fd, libc::F_SETFD, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    drop(theirs);
    let received = receive_fd(&ours);
    drop(ours);
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    let status = child.wait().map_err(|e| format!("fusermount3: {e}"))?;
    match received {
        Some(fd) if status.success() => Ok(fd),
        _ => {
            let why = stderr.trim();
            Err(if why.is_empty() {
                format!("fusermount3 failed ({status})")
            } else {
                why.to_string()
            })
        }
    }
}

/// The descriptor that fusermount3 sends, or None when it sent none.
fn receive_fd(sock: &UnixStream) -> Option<OwnedFd> {
    let mut byte = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!(RawFd);
    let msg = loop {
        match recvmsg::<UnixAddr>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return None,
            Ok(m) => break m,
        }
    };
    let mut cmsgs = msg.cmsgs().ok()?;
    cmsgs.find_map(|c| match c {
        ControlMessageOwned::ScmRights(fds) => fds
            .first()
            .filter(|fd| **fd >= 0)
            // SAFETY: the kernel just installed this descriptor for us.
            .map(|fd| unsafe { OwnedFd::from_raw_fd(*fd) }),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> MountSpec {
        MountSpec {
            fsname: "ftp://u@h:21/a,b".into(),
            read_only: false,
            default_permissions: true,
            allow_other: true,
        }
    }

    #[test]
    fn fuse_conf_needs_the_line_itself() {
        assert!(fuse_conf_allows_other("user_allow_other\n"));
        assert!(fuse_conf_allows_other("# x\n  user_allow_other  # yes\n"));
        assert!(!fuse_conf_allows_other("#user_allow_other\n"));
        assert!(!fuse_conf_allows_other("mount_max = 1000\n"));
        assert!(!fuse_conf_allows_other(""));
    }

    #[test]
    fn fusermount_options_escape_the_name_and_carry_every_flag() {
        assert_eq!(
            fusermount_options(&spec()),
            "fsname=ftp://u@h:21/a\\,b,subtype=ftpfs,nodev,nosuid,rw,default_permissions,allow_other"
        );
        let ro = MountSpec {
            read_only: true,
            default_permissions: false,
            allow_other: false,
            ..spec()
        };
        assert_eq!(
            fusermount_options(&ro),
            "fsname=ftp://u@h:21/a\\,b,subtype=ftpfs,nodev,nosuid,ro"
        );
    }

    #[test]
    fn allow_other_is_checked_only_for_users() {
        assert!(check_allowed(true, 0).is_ok());
        assert!(check_allowed(false, 1000).is_ok());
    }
}
