//! Certificates and TLS servers for the FTPS tests: a throw-away CA made with
//! openssl, and vsftpd, pure-ftpd and ProFTPD configured for TLS with it.

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use tempfile::TempDir;

use super::{extra_server_bin, FtpServer};

/// A CA and a server certificate for 127.0.0.1 signed by it.
pub struct Pki {
    dir: TempDir,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = TempDir::new().unwrap();
        let d = dir.path();
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(d)
                .output()
                .expect("openssl (scripts/test.sh installs it)");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=ftpfs test CA",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "key.pem",
            "-out",
            "leaf.csr",
            "-subj",
            "/CN=127.0.0.1",
        ]);
        fs::write(
            d.join("ext.cnf"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "cert.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ]);
        // vsftpd reads them as its own user after dropping privileges in some setups.
        for f in ["cert.pem", "key.pem", "ca.pem"] {
            let _ = Command::new("chmod").arg("644").arg(d.join(f)).status();
        }
        Pki { dir }
    }

    pub fn path(&self, f: &str) -> PathBuf {
        self.dir.path().join(f)
    }

    /// `-o` options that trust this CA and require TLS.
    pub fn mount_opt(&self) -> String {
        format!("tls,cacert={}", self.path("ca.pem").display())
    }
}

impl FtpServer {
    /// vsftpd with forced TLS for logins and data, and its default
    /// `require_ssl_reuse=YES` written out; mounts add `tls,cacert=`.
    pub fn vsftpd_tls() -> FtpServer {
        let pki = Pki::new();
        let s = Self::vsftpd_with_config(
            &vsftpd_tls_config(&pki, &[])
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        );
        let opt = pki.mount_opt();
        s.with_mount_opts(&[&opt], Some(pki.dir))
    }

    /// pure-ftpd that refuses logins without TLS (`-Y 2`).
    pub fn pure_ftpd_tls() -> FtpServer {
        let pki = Pki::new();
        // pure-ftpd wants the key and the certificate in one file.
        let both = pki.path("both.pem");
        let pem = [
            fs::read(pki.path("key.pem")).unwrap(),
            fs::read(pki.path("cert.pem")).unwrap(),
        ]
        .concat();
        fs::write(&both, pem).unwrap();
        let certfile = format!("--certfile={}", both.display());
        let s = Self::try_pure_ftpd(&["-Y", "2", &certfile]).unwrap_or_else(|e| panic!("{e}"));
        let opt = pki.mount_opt();
        s.with_mount_opts(&[&opt], Some(pki.dir))
    }

    /// ProFTPD with mod_tls: TLS required, only `protocol` (e.g. "TLSv1.2")
    /// allowed, session reuse required on data connections (its default);
    /// the TLS log is `tls.log` in the server's work directory.
    pub fn proftpd_tls(protocol: &str) -> FtpServer {
        let pki = Pki::new();
        let modules =
            extra_server_bin("proftpd", "usr/lib/proftpd").unwrap_or_else(|e| panic!("{e}"));
        let log = pki.path("tls.log");
        let lines = [
            format!("ModulePath {}", modules.display()),
            "LoadModule mod_tls.c".to_string(),
            "TLSEngine on".to_string(),
            "TLSRequired on".to_string(),
            format!("TLSProtocol {protocol}"),
            format!("TLSRSACertificateFile {}", pki.path("cert.pem").display()),
            format!("TLSRSACertificateKeyFile {}", pki.path("key.pem").display()),
            "TLSVerifyClient off".to_string(),
            format!("TLSLog {}", log.display()),
        ];
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        let s = Self::try_proftpd(&lines).unwrap_or_else(|e| panic!("{e}"));
        let opt = pki.mount_opt();
        s.with_mount_opts(&[&opt], Some(pki.dir))
    }
}

impl FtpServer {
    /// ProFTPD that speaks nothing older than TLS 1.3: every upload's data
    /// connection resumes with a fresh ticket.
    pub fn proftpd_tls13() -> FtpServer {
        Self::proftpd_tls("TLSv1.3")
    }
}

/// vsftpd config lines for TLS with `pki`'s certificate, plus `extra`.
pub fn vsftpd_tls_config(pki: &Pki, extra: &[&str]) -> Vec<String> {
    let mut lines = vec![
        "ssl_enable=YES".to_string(),
        "force_local_logins_ssl=YES".to_string(),
        "force_local_data_ssl=YES".to_string(),
        "require_ssl_reuse=YES".to_string(),
        format!("rsa_cert_file={}", pki.path("cert.pem").display()),
        format!("rsa_private_key_file={}", pki.path("key.pem").display()),
    ];
    lines.extend(extra.iter().map(|l| l.to_string()));
    lines
}
