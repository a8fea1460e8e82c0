//! Stopping a server (as in a crash) and starting it again on the same port,
//! for the fault-injection tests.

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::{
    wait_for_banner, wait_for_banner_or_exit, FtpServer, ServerFlavor, ServerKind,
    SERVER_START_TIMEOUT,
};
use crate::support::process::descendants_of;
use crate::support::{file_for_child, ftpserver_script, read_lossy};

/// How long [`FtpServer::start_again`] keeps trying to bind the old port.
pub const RESTART_TIMEOUT: Duration = Duration::from_secs(10);

impl FtpServer {
    /// Kills the server (for vsftpd also every session process it forked),
    /// so that every client connection breaks, as in a crash or a restart.
    /// The root directory, the command log and the port number are kept for
    /// [`start_again`](Self::start_again).
    pub fn stop(&mut self) {
        let pid = self.child.id();
        // vsftpd forks a process per session; they outlive the listener.
        let sessions = descendants_of(pid);
        let _ = self.child.kill();
        let _ = self.child.wait();
        for p in sessions {
            // SAFETY: plain kill(2) on processes this server forked.
            unsafe {
                libc::kill(p as libc::pid_t, libc::SIGKILL);
            }
        }
    }

    /// Starts the server again on the same port, root, user and password
    /// (after [`stop`](Self::stop)), retrying the bind for up to
    /// [`RESTART_TIMEOUT`]. pyftpdlib gets `extra` arguments (the ones given
    /// at creation are not remembered); vsftpd reuses its config file.
    pub fn start_again_with_args(&mut self, extra: &[&str]) -> Result<(), String> {
        let deadline = Instant::now() + RESTART_TIMEOUT;
        if matches!(self.flavor, ServerFlavor::PureFtpd | ServerFlavor::Proftpd) {
            return Err(format!(
                "restarting {} is not supported",
                self.flavor.name()
            ));
        }
        let mut last = String::new();
        while Instant::now() < deadline {
            let started = match self.kind {
                ServerKind::Pyftpdlib => self.spawn_pyftpdlib_again(extra),
                ServerKind::Vsftpd => self.spawn_vsftpd_again(),
            };
            match started {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
            thread::sleep(Duration::from_millis(200));
        }
        Err(format!(
            "could not restart the server on port {} within {RESTART_TIMEOUT:?}: {last}",
            self.port
        ))
    }

    /// [`start_again_with_args`](Self::start_again_with_args) without extra arguments.
    pub fn start_again(&mut self) -> Result<(), String> {
        self.start_again_with_args(&[])
    }

    /// [`stop`](Self::stop), then [`start_again`](Self::start_again); panics
    /// if the server does not come back.
    pub fn restart(&mut self) {
        self.stop();
        self.start_again().unwrap_or_else(|e| panic!("{e}"));
    }

    fn spawn_pyftpdlib_again(&mut self, extra: &[&str]) -> Result<(), String> {
        let ready = self._work_dir.path().join("server.out");
        File::create(&ready).map_err(|e| format!("create {}: {e}", ready.display()))?;
        let port = self.port.to_string();
        let mut cmd = Command::new("python3");
        cmd.arg(ftpserver_script())
            .args(["--host", "127.0.0.1", "--port", &port, "--watch-stdin"])
            .arg("--root")
            .arg(&self.root)
            .arg("--cmdlog")
            .arg(&self.cmdlog);
        if !self.is_anonymous() {
            cmd.args(["--user", &self.user, "--password", &self.password]);
        }
        cmd.args(extra)
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::piped())
            .stdout(file_for_child(&ready)?)
            .stderr(file_for_child(&self.outlog)?);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start python3 scripts/ftpserver.py: {e}"))?;
        let deadline = Instant::now() + SERVER_START_TIMEOUT;
        loop {
            if read_lossy(&ready).contains(&format!("READY {port}")) {
                break;
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
                return Err(format!("scripts/ftpserver.py {why} before printing READY"));
            }
            thread::sleep(Duration::from_millis(20));
        }
        self._stdin = child.stdin.take();
        self.child = child;
        wait_for_banner(self.port, None, SERVER_START_TIMEOUT)
    }

    fn spawn_vsftpd_again(&mut self) -> Result<(), String> {
        let conf_path = self._work_dir.path().join("vsftpd.conf");
        let conf = read_lossy(&conf_path);
        let token = conf
            .lines()
            .find_map(|l| l.strip_prefix("ftpd_banner=vsFTPd ftpfs-test "))
            .ok_or("no banner token in vsftpd.conf")?
            .trim()
            .to_string();
        let vsftpd_bin = ["/usr/sbin/vsftpd", "/usr/bin/vsftpd", "/sbin/vsftpd"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .ok_or("vsftpd is not installed")?;
        let mut child = Command::new(vsftpd_bin)
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(file_for_child(&self.outlog)?)
            .stderr(file_for_child(&self.outlog)?)
            .spawn()
            .map_err(|e| format!("cannot start {vsftpd_bin}: {e}"))?;
        match wait_for_banner_or_exit(&mut child, self.port, &token) {
            Ok(()) => {
                self.child = child;
                Ok(())
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(e)
            }
        }
    }
}
