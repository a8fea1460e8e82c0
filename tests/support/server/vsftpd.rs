//! vsftpd servers (a per-test instance with its own config), and the system
//! user that vsftpd, pure-ftpd and ProFTPD log in as.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use super::{wait_for_banner_or_exit, wait_for_listen_or_exit, FtpServer, ServerFlavor};
use crate::support::process::run_checked;
use crate::support::{file_for_child, free_port, random_u64, read_lossy, tmpdir};

/// System user used for vsftpd logins (created on demand, see [`ensure_vsftpd_user`]).
pub const VSFTPD_USER: &str = "ftpfstest";
/// Password of [`VSFTPD_USER`].
pub const VSFTPD_PASSWORD: &str = "ftpfstest-pw";
/// vsftpd needs this (empty, root-owned) directory to exist.
pub const VSFTPD_SECURE_CHROOT_DIR: &str = "/var/run/vsftpd/empty";

/// Look up `(uid, gid)` of a user in /etc/passwd.
pub fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() >= 4 && f[0] == name {
            Some((f[2].parse().ok()?, f[3].parse().ok()?))
        } else {
            None
        }
    })
}

fn create_vsftpd_user() -> Result<(u32, u32), String> {
    if lookup_user(VSFTPD_USER).is_none() {
        // Another process (e.g. a parallel test binary) may create it at the
        // same time; only complain if it still does not exist afterwards.
        let res = run_checked(
            "useradd",
            &["--create-home", "--shell", "/bin/bash", VSFTPD_USER],
            None,
        );
        if lookup_user(VSFTPD_USER).is_none() {
            return Err(format!(
                "cannot create user {VSFTPD_USER} (tests using vsftpd must run as root): {}",
                res.err().unwrap_or_default()
            ));
        }
    }
    run_checked(
        "chpasswd",
        &[],
        Some(&format!("{VSFTPD_USER}:{VSFTPD_PASSWORD}\n")),
    )?;
    // vsftpd's PAM config denies users listed in /etc/ftpusers.
    if let Ok(list) = fs::read_to_string("/etc/ftpusers") {
        if list.lines().any(|l| l.trim() == VSFTPD_USER) {
            let kept: String = list
                .lines()
                .filter(|l| l.trim() != VSFTPD_USER)
                .map(|l| format!("{l}\n"))
                .collect();
            fs::write("/etc/ftpusers", kept).map_err(|e| format!("/etc/ftpusers: {e}"))?;
        }
    }
    fs::create_dir_all(VSFTPD_SECURE_CHROOT_DIR)
        .map_err(|e| format!("mkdir {VSFTPD_SECURE_CHROOT_DIR}: {e}"))?;
    lookup_user(VSFTPD_USER).ok_or_else(|| format!("user {VSFTPD_USER} vanished"))
}

/// Make sure the system user for vsftpd logins exists with the expected
/// password (done once per test process). Returns its `(uid, gid)`.
pub fn ensure_vsftpd_user() -> Result<(u32, u32), String> {
    static USER: OnceLock<Result<(u32, u32), String>> = OnceLock::new();
    USER.get_or_init(create_vsftpd_user).clone()
}

/// Recursively chown `path` (without following symlinks).
pub(crate) fn chown_tree(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
    let meta = fs::symlink_metadata(path)?;
    if meta.is_dir() {
        for entry in fs::read_dir(path)? {
            chown_tree(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
}

impl FtpServer {
    /// vsftpd server (user [`VSFTPD_USER`]), chrooted to a fresh root dir.
    /// Needs root and /usr/sbin/vsftpd.
    pub fn vsftpd() -> FtpServer {
        Self::try_vsftpd(&[]).unwrap_or_else(|e| panic!("{e}"))
    }

    /// vsftpd with extra `key=value` config lines (appended, so they override
    /// the defaults, e.g. `&["pasv_enable=NO"]`).
    pub fn vsftpd_with_config(extra: &[&str]) -> FtpServer {
        Self::try_vsftpd(extra).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn try_vsftpd(extra_config: &[&str]) -> Result<FtpServer, String> {
        let (uid, gid) = ensure_vsftpd_user()?;
        let vsftpd_bin = ["/usr/sbin/vsftpd", "/usr/bin/vsftpd", "/sbin/vsftpd"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .ok_or("vsftpd is not installed (run scripts/lib.sh install_deps)")?;
        fs::create_dir_all(VSFTPD_SECURE_CHROOT_DIR)
            .map_err(|e| format!("mkdir {VSFTPD_SECURE_CHROOT_DIR}: {e}"))?;

        let work = tmpdir("ftpfs-srv-")?;
        let root_dir = tmpdir("ftpfs-root-")?;
        let root = root_dir.path().to_path_buf();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755))
            .and_then(|_| std::os::unix::fs::chown(&root, Some(uid), Some(gid)))
            .map_err(|e| format!("chown {}: {e}", root.display()))?;
        let cmdlog = work.path().join("vsftpd.log");
        let outlog = work.path().join("server.log");
        File::create(&cmdlog).map_err(|e| format!("create {}: {e}", cmdlog.display()))?;
        let conf_path = work.path().join("vsftpd.conf");

        let mut last_err = String::new();
        for _attempt in 0..8 {
            let port = free_port();
            let token = format!("{:016x}", random_u64());
            let mut conf = format!(
                "listen=YES\n\
                 listen_ipv6=NO\n\
                 listen_address=127.0.0.1\n\
                 listen_port={port}\n\
                 background=NO\n\
                 anonymous_enable=NO\n\
                 local_enable=YES\n\
                 write_enable=YES\n\
                 local_umask=022\n\
                 chroot_local_user=YES\n\
                 allow_writeable_chroot=YES\n\
                 local_root={root}\n\
                 pasv_enable=YES\n\
                 seccomp_sandbox=NO\n\
                 isolate=NO\n\
                 isolate_network=NO\n\
                 userlist_enable=NO\n\
                 log_ftp_protocol=YES\n\
                 xferlog_enable=YES\n\
                 xferlog_std_format=NO\n\
                 vsftpd_log_file={log}\n\
                 dual_log_enable=NO\n\
                 syslog_enable=NO\n\
                 use_localtime=NO\n\
                 pam_service_name=vsftpd\n\
                 secure_chroot_dir={VSFTPD_SECURE_CHROOT_DIR}\n\
                 ftpd_banner=vsFTPd ftpfs-test {token}\n",
                root = root.display(),
                log = cmdlog.display(),
            );
            for line in extra_config {
                conf.push_str(line);
                conf.push('\n');
            }
            fs::write(&conf_path, conf).map_err(|e| format!("write vsftpd.conf: {e}"))?;

            let mut child = Command::new(vsftpd_bin)
                .arg(&conf_path)
                .stdin(Stdio::null())
                .stdout(file_for_child(&outlog)?)
                .stderr(file_for_child(&outlog)?)
                .spawn()
                .map_err(|e| format!("cannot start {vsftpd_bin}: {e}"))?;

            // Implicit TLS greets only after a handshake: wait for the port instead.
            let ready = if extra_config.contains(&"implicit_ssl=YES") {
                wait_for_listen_or_exit(&mut child, port, "vsftpd")
            } else {
                wait_for_banner_or_exit(&mut child, port, &token)
            };
            match ready {
                Ok(()) => {
                    return Ok(FtpServer::run_as_test_user(
                        ServerFlavor::Vsftpd,
                        port,
                        (root, root_dir, work),
                        (cmdlog, outlog),
                        (uid, gid),
                        child,
                    ));
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_err = format!("{e}\nvsftpd output:\n{}", read_lossy(&outlog));
                    // Only a port collision is worth retrying.
                    if !last_err.contains("bind") && !last_err.contains("wrong server") {
                        break;
                    }
                }
            }
        }
        Err(format!("vsftpd failed to start: {last_err}"))
    }
}
