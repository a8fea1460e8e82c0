//! pyftpdlib servers (`scripts/ftpserver.py`), including the DOS/IIS-style
//! one (`--dos-list`).

use std::fs::File;
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicU64;
use std::thread;
use std::time::{Duration, Instant};

use super::{wait_for_banner, FtpServer, ServerFlavor, ServerKind, SERVER_START_TIMEOUT};
use crate::support::{file_for_child, ftpserver_script, random_u64, read_lossy, tmpdir};

impl FtpServer {
    /// pyftpdlib server with user `ftpuser` and a random password.
    pub fn pyftpdlib() -> FtpServer {
        Self::pyftpdlib_with_args(&[])
    }

    /// pyftpdlib server with extra `scripts/ftpserver.py` arguments
    /// (e.g. `&["--no-mlsd"]`).
    pub fn pyftpdlib_with_args(extra: &[&str]) -> FtpServer {
        Self::try_pyftpdlib(Some("ftpuser"), extra).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Anonymous, read-only pyftpdlib server (`user` is "anonymous").
    pub fn pyftpdlib_anonymous() -> FtpServer {
        Self::try_pyftpdlib(None, &[]).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Start a pyftpdlib server; `user: None` means anonymous read-only.
    pub fn try_pyftpdlib(user: Option<&str>, extra: &[&str]) -> Result<FtpServer, String> {
        let work = tmpdir("ftpfs-srv-")?;
        let root_dir = tmpdir("ftpfs-root-")?;
        let root = root_dir.path().to_path_buf();
        let cmdlog = work.path().join("commands.log");
        let outlog = work.path().join("server.log");
        let ready = work.path().join("server.out");
        File::create(&cmdlog).map_err(|e| format!("create {}: {e}", cmdlog.display()))?;
        let password = match user {
            Some(_) => format!("pw-{:016x}", random_u64()),
            None => String::new(),
        };

        let mut cmd = Command::new("python3");
        cmd.arg(ftpserver_script())
            .args(["--host", "127.0.0.1", "--port", "0", "--watch-stdin"])
            .arg("--root")
            .arg(&root)
            .arg("--cmdlog")
            .arg(&cmdlog);
        if let Some(u) = user {
            cmd.args(["--user", u, "--password", &password]);
        }
        cmd.args(extra)
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::piped())
            .stdout(file_for_child(&ready)?)
            .stderr(file_for_child(&outlog)?);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start python3 scripts/ftpserver.py: {e}"))?;
        let stdin = child.stdin.take();

        // Wait for "READY <port>".
        let deadline = Instant::now() + SERVER_START_TIMEOUT;
        let port = loop {
            let out = read_lossy(&ready);
            if let Some(p) = out
                .lines()
                .find_map(|l| l.strip_prefix("READY "))
                .and_then(|p| p.trim().parse::<u16>().ok())
            {
                break p;
            }
            let failure = match child.try_wait() {
                Ok(Some(status)) => Some(format!("exited with {status}")),
                Err(e) => Some(format!("try_wait: {e}")),
                Ok(None) if Instant::now() >= deadline => Some("timed out".to_string()),
                Ok(None) => None,
            };
            if let Some(why) = failure {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "scripts/ftpserver.py {why} before printing READY (is pyftpdlib \
                     installed? run scripts/lib.sh install_deps)\nstdout:\n{out}\nstderr:\n{}",
                    read_lossy(&outlog)
                ));
            }
            thread::sleep(Duration::from_millis(20));
        };

        let server = FtpServer {
            port,
            root,
            user: user.unwrap_or("anonymous").to_string(),
            password,
            kind: ServerKind::Pyftpdlib,
            flavor: ServerFlavor::Pyftpdlib,
            cmdlog,
            outlog,
            cmd_offset: AtomicU64::new(0),
            owner: None,
            child,
            _stdin: stdin,
            _root_dir: root_dir,
            _work_dir: work,
            mount_opts: Vec::new(),
            _keep: Vec::new(),
        };
        // Make sure it really talks FTP.
        wait_for_banner(port, None, SERVER_START_TIMEOUT)
            .map_err(|e| format!("pyftpdlib on port {port}: {e}\n{}", server.log()))?;
        Ok(server)
    }
}

impl FtpServer {
    /// A DOS/IIS-style server: pyftpdlib with `--dos-list` (LIST lines like
    /// `01-15-24  10:30AM       <DIR>          name`; no MLSD/MLST, MFMT,
    /// SIZE or SITE CHMOD). Its `kind` is [`ServerKind::Pyftpdlib`]; a
    /// restart does not keep `--dos-list` unless passed again.
    pub fn dos_style() -> FtpServer {
        let mut s = Self::pyftpdlib_with_args(&["--dos-list"]);
        s.flavor = ServerFlavor::DosStyle;
        s
    }
}
