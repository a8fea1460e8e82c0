//! FTPS with explicit TLS (AUTH TLS) against vsftpd with forced TLS and its
//! default `require_ssl_reuse=YES`: data connections must resume the control
//! connection's TLS session. Certificates come from a throw-away CA made with openssl.

mod support;

use std::fs;
use std::path::Path;
use std::time::Duration;

use support::pki::{vsftpd_tls_config, Pki};
use support::{files_equal, is_mounted, run_ftpfs, write_file, FtpServer, Mount, ServerFlavor};
use tempfile::TempDir;

fn tls_vsftpd(pki: &Pki) -> FtpServer {
    let lines = vsftpd_tls_config(pki, &[]);
    FtpServer::vsftpd_with_config(&lines.iter().map(String::as_str).collect::<Vec<_>>())
}

/// Reads, writes 12 MiB each way, renames and lists over TLS (the server's
/// mount options carry `tls,cacert=`), and checks the session was protected.
fn tls_workload(s: &FtpServer) {
    s.create_file("hello.txt", b"over TLS\n");
    let m = Mount::new(s, &[]);
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
    drop(m);
    // The server insists on TLS: the same mount without it is refused at login.
    let plain = Mount::try_spawn(&s.url(), Some(&s.password), &[], &[], &[]);
    assert!(plain.is_err(), "a plain login was accepted");
    // And where the server logs commands, it saw a protected session.
    if s.flavor != ServerFlavor::PureFtpd {
        let cmds = s.commands();
        assert!(
            cmds.iter().any(|c| c.eq_ignore_ascii_case("AUTH TLS")),
            "{cmds:?}"
        );
        assert!(
            cmds.iter().any(|c| c.eq_ignore_ascii_case("PROT P")),
            "{cmds:?}"
        );
    }
}

#[test]
fn forced_tls_with_session_reuse_reads_and_writes() {
    tls_workload(&FtpServer::vsftpd_tls());
}

#[test]
fn pure_ftpd_with_required_tls() {
    tls_workload(&FtpServer::pure_ftpd_tls());
}

/// ProFTPD allows exactly one protocol version, so each test proves that version works.
fn proftpd_tls_version(version: &str) {
    let s = FtpServer::proftpd_tls(version);
    tls_workload(&s);
    let log = s
        .kept_file("tls.log")
        .map(|p| fs::read_to_string(p).unwrap_or_default())
        .unwrap_or_default();
    assert!(
        log.contains(&format!("{version} connection accepted")),
        "{version} not negotiated:\n{log}"
    );
    assert!(!log.contains("connection failed"), "{log}");
}

#[test]
fn proftpd_tls_1_2_with_session_reuse() {
    proftpd_tls_version("TLSv1.2");
}

#[test]
fn proftpd_tls_1_3_with_session_reuse() {
    proftpd_tls_version("TLSv1.3");
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

#[test]
fn implicit_tls_ftps_url_reads_and_writes() {
    let pki = Pki::new();
    let lines = vsftpd_tls_config(&pki, &["implicit_ssl=YES"]);
    let s = FtpServer::vsftpd_with_config(&lines.iter().map(String::as_str).collect::<Vec<_>>());
    s.create_file("a.txt", b"implicit");
    let url = format!("ftps://{}@127.0.0.1:{}/", s.user, s.port);
    let opt = format!("cacert={}", pki.path("ca.pem").display());
    let m = Mount::try_spawn(&url, Some(&s.password), &[&opt], &[], &[]).unwrap();
    assert_eq!(
        fs::read(m.path("a.txt")).unwrap(),
        b"implicit",
        "{}",
        m.log()
    );
    fs::write(m.path("b.txt"), b"written over implicit TLS").unwrap();
    assert_eq!(
        fs::read(s.path("b.txt")).unwrap(),
        b"written over implicit TLS",
        "{}",
        m.log()
    );
    let cmds = s.commands();
    assert!(cmds.iter().any(|c| c == "PROT P"), "{cmds:?}");
    assert!(!cmds.iter().any(|c| c == "AUTH TLS"), "{cmds:?}");
}

#[test]
fn implicit_tls_against_a_plain_server_fails_in_time() {
    // A plain FTP server sends its greeting in clear text: the handshake fails
    // at once with a TLS error, not a hang.
    let s = FtpServer::pyftpdlib();
    let mnt = TempDir::new().unwrap();
    let dir = mnt.path().to_string_lossy().into_owned();
    let url = format!("ftps://{}@127.0.0.1:{}/", s.user, s.port);
    let started = std::time::Instant::now();
    let (status, _, err) = run_ftpfs(
        &["-f", "-o", "connect_timeout=5", &url, &dir],
        &[("FTPFS_PASSWORD", &s.password)],
        Duration::from_secs(60),
    );
    assert!(!status.success(), "{err}");
    assert!(err.contains("TLS"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(30), "{err}");
    assert!(!is_mounted(Path::new(&dir)));
}
