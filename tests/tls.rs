//! FTPS with explicit TLS (AUTH TLS) against vsftpd with forced TLS and its
//! default `require_ssl_reuse=YES`: data connections must resume the control
//! connection's TLS session. Certificates come from a throw-away CA made with openssl.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::{files_equal, is_mounted, run_ftpfs, write_file, FtpServer, Mount};
use tempfile::TempDir;

/// A CA and a server certificate for 127.0.0.1 signed by it.
struct Pki {
    dir: TempDir,
}

impl Pki {
    fn new() -> Pki {
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

    fn path(&self, f: &str) -> PathBuf {
        self.dir.path().join(f)
    }
}

fn tls_vsftpd(pki: &Pki) -> FtpServer {
    let cert = format!("rsa_cert_file={}", pki.path("cert.pem").display());
    let key = format!("rsa_private_key_file={}", pki.path("key.pem").display());
    FtpServer::vsftpd_with_config(&[
        "ssl_enable=YES",
        "force_local_logins_ssl=YES",
        "force_local_data_ssl=YES",
        "require_ssl_reuse=YES",
        &cert,
        &key,
    ])
}

fn cacert_opt(pki: &Pki) -> String {
    format!("tls,cacert={}", pki.path("ca.pem").display())
}

#[test]
fn forced_tls_with_session_reuse_reads_and_writes() {
    let pki = Pki::new();
    let s = tls_vsftpd(&pki);
    s.create_file("hello.txt", b"over TLS\n");
    let m = Mount::new(&s, &[&cacert_opt(&pki)]);
    assert_eq!(
        fs::read(m.path("hello.txt")).unwrap(),
        b"over TLS\n",
        "{}",
        m.log()
    );
    let local = TempDir::new().unwrap();
    let src = local.path().join("big.bin");
    write_file(&src, 12 << 20, 7);
    fs::copy(&src, m.path("big.bin")).unwrap();
    assert!(
        files_equal(&src, s.path("big.bin")),
        "upload over TLS differs\n{}",
        m.log()
    );
    assert!(
        files_equal(&src, m.path("big.bin")),
        "download over TLS differs\n{}",
        m.log()
    );
    fs::create_dir(m.path("dir")).unwrap();
    fs::rename(m.path("hello.txt"), m.path("dir/hello.txt")).unwrap();
    assert_eq!(fs::read(s.path("dir/hello.txt")).unwrap(), b"over TLS\n");
    let names: Vec<String> = fs::read_dir(m.path("dir"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["hello.txt"]);
    // every command after AUTH TLS was encrypted: the server saw a protected session
    let cmds = s.commands();
    assert!(cmds.iter().any(|c| c == "AUTH TLS"), "{cmds:?}");
    assert!(cmds.iter().any(|c| c == "PROT P"), "{cmds:?}");
}

#[test]
fn ftpes_url_means_tls() {
    let pki = Pki::new();
    let s = tls_vsftpd(&pki);
    s.create_file("a.txt", b"a");
    let url = format!("ftpes://{}@127.0.0.1:{}/", s.user, s.port);
    let opt = format!("cacert={}", pki.path("ca.pem").display());
    let m = Mount::try_spawn(&url, Some(&s.password), &[&opt], &[], &[]).unwrap();
    assert_eq!(fs::read(m.path("a.txt")).unwrap(), b"a");
}

#[test]
fn an_untrusted_certificate_is_a_clear_error_and_no_mount() {
    let pki = Pki::new();
    let s = tls_vsftpd(&pki);
    let mnt = TempDir::new().unwrap();
    let dir = mnt.path().to_string_lossy().into_owned();
    let url = s.url();
    let (status, _out, err) = run_ftpfs(
        &["-f", "-o", "tls", &url, &dir],
        &[("FTPFS_PASSWORD", &s.password)],
        Duration::from_secs(30),
    );
    assert!(!status.success());
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line expected: {err}");
    assert!(
        lines[0].starts_with("ftpfs: ") && lines[0].contains("certificate"),
        "{err}"
    );
    assert!(!err.contains(&s.password));
    assert!(!is_mounted(Path::new(&dir)));
}

#[test]
fn no_verify_connects_with_a_warning() {
    let pki = Pki::new();
    let s = tls_vsftpd(&pki);
    s.create_file("a.txt", b"a");
    let m = Mount::new(&s, &["tls,no_verify"]);
    assert_eq!(fs::read(m.path("a.txt")).unwrap(), b"a");
    assert!(m.log().contains("NOT verified"), "{}", m.log());
}

#[test]
fn plain_server_refuses_required_tls_but_try_falls_back() {
    let s = FtpServer::pyftpdlib();
    s.create_file("a.txt", b"plain");
    let mnt = TempDir::new().unwrap();
    let dir = mnt.path().to_string_lossy().into_owned();
    let url = s.url();
    let (status, _, err) = run_ftpfs(
        &["-f", "-o", "tls", &url, &dir],
        &[("FTPFS_PASSWORD", &s.password)],
        Duration::from_secs(30),
    );
    assert!(!status.success(), "TLS was required: {err}");
    assert!(err.contains("TLS"), "{err}");
    assert!(!is_mounted(Path::new(&dir)));
    let m = Mount::new(&s, &["tls=try"]);
    assert_eq!(fs::read(m.path("a.txt")).unwrap(), b"plain");
    assert!(m.log().contains("WITHOUT encryption"), "{}", m.log());
}
