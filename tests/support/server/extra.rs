//! More server kinds, unpacked by `install_extra_servers` (scripts/lib.sh):
//! pure-ftpd and ProFTPD, run as root with logins as the test user.

use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use tempfile::TempDir;

use super::{
    ensure_vsftpd_user, wait_for_child_banner, FtpServer, ServerFlavor, VSFTPD_PASSWORD,
    VSFTPD_USER,
};
use crate::support::process::run_checked;
use crate::support::{file_for_child, free_port, random_u64, read_lossy, tmpdir};

/// Where `install_extra_servers` (scripts/lib.sh) unpacks pure-ftpd and
/// ProFTPD: `$FTPFS_EXTRA_SERVERS_DIR`, default `/opt/ftpfs-test-servers`.
pub fn extra_servers_dir() -> PathBuf {
    std::env::var_os("FTPFS_EXTRA_SERVERS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/ftpfs-test-servers"))
}

pub fn extra_server_bin(dir: &str, rel: &str) -> Result<PathBuf, String> {
    let p = extra_servers_dir().join(dir).join(rel);
    if p.exists() {
        Ok(p)
    } else {
        Err(format!(
            "{} is missing: run scripts/test.sh (install_extra_servers in scripts/lib.sh)",
            p.display()
        ))
    }
}

/// A fresh work dir and a root dir (mode 0755) owned by `uid:gid`.
fn private_root(uid: u32, gid: u32) -> Result<(TempDir, TempDir, PathBuf), String> {
    let work = tmpdir("ftpfs-srv-")?;
    let root_dir = tmpdir("ftpfs-root-")?;
    let root = root_dir.path().to_path_buf();
    fs::set_permissions(&root, fs::Permissions::from_mode(0o755))
        .and_then(|_| std::os::unix::fs::chown(&root, Some(uid), Some(gid)))
        .map_err(|e| format!("chown {}: {e}", root.display()))?;
    Ok((work, root_dir, root))
}

impl FtpServer {
    /// pure-ftpd (unpacked by `install_extra_servers`), user [`VSFTPD_USER`]
    /// as a virtual user (private `pure-pw` database) chrooted to a fresh
    /// root. Needs root. [`commands`](Self::commands) is always empty:
    /// pure-ftpd only logs commands to syslog.
    pub fn pure_ftpd() -> FtpServer {
        Self::try_pure_ftpd(&[]).unwrap_or_else(|e| panic!("{e}"))
    }

    /// pure-ftpd with extra command-line arguments (e.g. `-Y 2` for required TLS).
    pub fn try_pure_ftpd(extra_args: &[&str]) -> Result<FtpServer, String> {
        let (uid, gid) = ensure_vsftpd_user()?;
        let bin = extra_server_bin("pure-ftpd", "usr/sbin/pure-ftpd")?;
        let pure_pw = extra_server_bin("pure-ftpd", "usr/bin/pure-pw")?;
        let (work, root_dir, root) = private_root(uid, gid)?;
        let passwd = work.path().join("pureftpd.passwd");
        let pdb = work.path().join("pureftpd.pdb");
        let cmdlog = work.path().join("commands.log");
        let outlog = work.path().join("server.log");
        File::create(&cmdlog).map_err(|e| format!("create {}: {e}", cmdlog.display()))?;
        let s = |p: &Path| p.to_string_lossy().into_owned();
        run_checked(
            &s(&pure_pw),
            &[
                "useradd",
                VSFTPD_USER,
                "-u",
                &uid.to_string(),
                "-g",
                &gid.to_string(),
                "-d",
                &s(&root),
                "-f",
                &s(&passwd),
                "-m",
                "-F",
                &s(&pdb),
            ],
            Some(&format!("{VSFTPD_PASSWORD}\n{VSFTPD_PASSWORD}\n")),
        )?;

        let mut last_err = String::new();
        for _attempt in 0..8 {
            let port = free_port();
            let mut child = Command::new(&bin)
                .arg("-S")
                .arg(format!("127.0.0.1,{port}"))
                .arg("-l")
                .arg(format!("puredb:{}", pdb.display()))
                // No anonymous logins, no DNS lookups, chroot everyone,
                // IPv4 only.
                .args(["-E", "-H", "-A", "-4"])
                .args(extra_args)
                .stdin(Stdio::null())
                .stdout(file_for_child(&outlog)?)
                .stderr(file_for_child(&outlog)?)
                .spawn()
                .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
            match wait_for_child_banner(&mut child, port, Some("Pure-FTPd"), "pure-ftpd") {
                Ok(()) => {
                    return Ok(FtpServer::run_as_test_user(
                        ServerFlavor::PureFtpd,
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
                    last_err = format!("{e}\npure-ftpd output:\n{}", read_lossy(&outlog));
                }
            }
        }
        Err(format!("pure-ftpd failed to start: {last_err}"))
    }

    /// ProFTPD (unpacked by `install_extra_servers`) with a generated config:
    /// unix logins as [`VSFTPD_USER`], `DefaultRoot` a fresh root, commands
    /// recorded with `ExtendedLog` (see [`commands`](Self::commands)).
    /// Needs root.
    pub fn proftpd() -> FtpServer {
        Self::try_proftpd(&[]).unwrap_or_else(|e| panic!("{e}"))
    }

    /// ProFTPD with extra config lines appended to the generated config.
    pub fn try_proftpd(extra_config: &[&str]) -> Result<FtpServer, String> {
        let (uid, gid) = ensure_vsftpd_user()?;
        let bin = extra_server_bin("proftpd", "usr/sbin/proftpd")?;
        let (work, root_dir, root) = private_root(uid, gid)?;
        let w = work.path();
        let cmdlog = w.join("commands.log");
        let outlog = w.join("server.log");
        File::create(&cmdlog).map_err(|e| format!("create {}: {e}", cmdlog.display()))?;
        let conf_path = w.join("proftpd.conf");
        let group = if fs::read_to_string("/etc/group")
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with("nogroup:"))
        {
            "nogroup"
        } else {
            "nobody"
        };

        let mut last_err = String::new();
        for _attempt in 0..8 {
            let port = free_port();
            let token = format!("{:016x}", random_u64());
            let mut conf = format!(
                "ServerName \"ftpfs-test {token}\"\n\
                 ServerType standalone\n\
                 Port {port}\n\
                 DefaultAddress 127.0.0.1\n\
                 SocketBindTight on\n\
                 UseIPv6 off\n\
                 User nobody\n\
                 Group {group}\n\
                 Umask 022\n\
                 AuthOrder mod_auth_unix.c\n\
                 RequireValidShell off\n\
                 DefaultRoot {root}\n\
                 AllowOverwrite on\n\
                 WtmpLog off\n\
                 UseReverseDNS off\n\
                 DelayTable none\n\
                 MaxInstances 100\n\
                 ScoreboardFile {w}/proftpd.scoreboard\n\
                 PidFile {w}/proftpd.pid\n\
                 SystemLog {w}/system.log\n\
                 TransferLog none\n\
                 LogFormat ftpfscmds \"%m %J\"\n\
                 ExtendedLog {cmdlog} ALL ftpfscmds\n",
                root = root.display(),
                w = w.display(),
                cmdlog = cmdlog.display(),
            );
            for line in extra_config {
                conf.push_str(line);
                conf.push('\n');
            }
            fs::write(&conf_path, conf).map_err(|e| format!("write proftpd.conf: {e}"))?;
            let mut child = Command::new(&bin)
                .args(["-n", "-q", "-c"])
                .arg(&conf_path)
                .stdin(Stdio::null())
                .stdout(file_for_child(&outlog)?)
                .stderr(file_for_child(&outlog)?)
                .spawn()
                .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
            match wait_for_child_banner(&mut child, port, Some(&token), "proftpd") {
                Ok(()) => {
                    return Ok(FtpServer::run_as_test_user(
                        ServerFlavor::Proftpd,
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
                    last_err = format!(
                        "{e}\nproftpd output:\n{}\nSystemLog:\n{}",
                        read_lossy(&outlog),
                        read_lossy(&w.join("system.log"))
                    );
                }
            }
        }
        Err(format!("proftpd failed to start: {last_err}"))
    }
}
