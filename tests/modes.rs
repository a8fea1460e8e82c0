//! Connection modes and name encodings: active mode (PORT/EPRT), the PASV address
//! workaround for servers behind NAT, and Latin-1 names on legacy servers.

#[macro_use]
mod support;

use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;

use support::{files_equal, write_file, FtpServer, Mount};
use tempfile::TempDir;

on_both_servers!(active_mode_reads_and_writes, pasv_ip_workaround_works);

fn active_mode_reads_and_writes(s: FtpServer) {
    s.create_file("dir/a.txt", b"active");
    let m = Mount::new(&s, &["active"]);
    assert_eq!(
        fs::read(m.path("dir/a.txt")).unwrap(),
        b"active",
        "{}",
        m.log()
    );
    let local = TempDir::new().unwrap();
    let src = local.path().join("f.bin");
    write_file(&src, 3 << 20, 3);
    fs::copy(&src, m.path("f.bin")).unwrap();
    assert!(files_equal(&src, s.path("f.bin")), "{}", m.log());
    let cmds = s.commands();
    assert!(
        cmds.iter()
            .any(|c| c.starts_with("PORT") || c.starts_with("EPRT")),
        "no active-mode command in {cmds:?}"
    );
    assert!(!cmds.iter().any(|c| c == "PASV" || c == "EPSV"), "{cmds:?}");
}

fn pasv_ip_workaround_works(s: FtpServer) {
    s.create_file("a.txt", b"nat");
    let m = Mount::new(&s, &["pasv_ip_workaround"]);
    assert_eq!(fs::read(m.path("a.txt")).unwrap(), b"nat", "{}", m.log());
}

/// Mounts vsftpd (which passes name bytes through, so it can hold names in
/// any codepage) with `-o encoding=LABEL`: `server` (bytes on the server) reads
/// as `local`, `written` (a new local name) lands as `written_bytes`, and a
/// name the codepage cannot hold is refused with EINVAL, never mangled.
fn names_in_codepage(
    (label, canonical): (&str, &str),
    server: &[u8],
    local: &str,
    written: &str,
    written_bytes: &[u8],
) {
    let s = FtpServer::vsftpd();
    fs::write(s.root.join(std::ffi::OsStr::from_bytes(server)), b"legacy").unwrap();
    s.fix_ownership();
    let opt = format!("encoding={label}");
    let m = Mount::new(&s, &[opt.as_str()]);
    let listed: Vec<String> = fs::read_dir(&m.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        listed.iter().any(|n| n == local),
        "{label}: listing {listed:?}\n{}",
        m.log()
    );
    assert_eq!(
        fs::read(m.path(local)).unwrap(),
        b"legacy",
        "{label}\n{}",
        m.log()
    );
    fs::write(m.path(written), b"new").unwrap();
    let on_server = s.root.join(std::ffi::OsStr::from_bytes(written_bytes));
    assert_eq!(fs::read(on_server).unwrap(), b"new", "{label}");
    // a name the codepage cannot hold is refused when the upload is due, not mangled
    let mut f = fs::File::create(m.path("\u{1F600}.txt")).unwrap();
    f.write_all(b"x").unwrap();
    let e = f
        .sync_all()
        .expect_err("the name cannot be written in the codepage");
    assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{label}: {e}");
    drop(f);
    let names: Vec<Vec<u8>> = fs::read_dir(&s.root)
        .unwrap()
        .map(|e| e.unwrap().file_name().as_bytes().to_vec())
        .collect();
    assert!(
        names.iter().all(|n| n == server || n == written_bytes),
        "{label}: a mangled name reached the server: {names:?}"
    );
    // `ftpfs status` says which character set the names are in.
    let out = std::process::Command::new(support::ftpfs_bin())
        .arg("status")
        .arg(&m.dir)
        .output()
        .expect("ftpfs status");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains(&format!("names in {canonical}")),
        "{label}: status:\n{report}"
    );
    // Names are not UTF-8 here: ftpfs must not ask the server to switch to it.
    assert!(
        !m.log().contains("OPTS UTF8 ON"),
        "{label}: OPTS UTF8 ON sent\n{}",
        m.log()
    );
}

#[test]
fn latin1_names_are_translated_both_ways() {
    names_in_codepage(
        ("latin1", "ISO-8859-1"),
        b"caf\xe9.txt",
        "café.txt",
        "né.txt",
        b"n\xe9.txt",
    );
}

#[test]
fn windows_1251_names_are_translated_both_ways() {
    names_in_codepage(
        ("cp1251", "windows-1251"),
        b"\xcf\xf0\xe8\xe2\xe5\xf2.txt",
        "Привет.txt",
        "мир.txt",
        b"\xec\xe8\xf0.txt",
    );
}

#[test]
fn shift_jis_names_are_translated_both_ways() {
    names_in_codepage(
        ("shift_jis", "Shift_JIS"),
        b"\x93\xfa\x96\x7b.txt",
        "日本.txt",
        "語.txt",
        b"\x8c\xea.txt",
    );
}

/// A pyftpdlib server on [::1], started directly (the harness binds 127.0.0.1).
struct V6Server {
    child: std::process::Child,
    port: u16,
    root: TempDir,
}

impl V6Server {
    fn start() -> V6Server {
        use std::io::BufRead;
        let root = TempDir::new().unwrap();
        let mut child = std::process::Command::new("python3")
            .arg(support::ftpserver_script())
            .args([
                "--host",
                "::1",
                "--port",
                "0",
                "--user",
                "u6",
                "--password",
                "pw6",
                "--quiet",
            ])
            .arg("--root")
            .arg(root.path())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3");
        let out = child.stdout.take().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(out).read_line(&mut line).unwrap();
        let port = line
            .trim()
            .strip_prefix("READY ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| {
                let _ = child.kill();
                panic!("no READY line: {line:?}")
            });
        V6Server { child, port, root }
    }
}

impl Drop for V6Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads and writes over IPv6 with `opts`; the log must show `command`
/// (EPSV for passive mode, EPRT for active mode: PASV and PORT are IPv4-only).
fn ipv6_round_trip(opts: &[&str], command: &str) {
    let s = V6Server::start();
    fs::write(s.root.path().join("a.txt"), b"over IPv6").unwrap();
    let url = format!("ftp://u6@[::1]:{}/", s.port);
    let env = [("RUST_LOG", "ftpfs=debug,suppaftp=debug")];
    let m = Mount::try_spawn(&url, Some("pw6"), opts, &[], &env).unwrap();
    assert_eq!(
        fs::read(m.path("a.txt")).unwrap(),
        b"over IPv6",
        "{}",
        m.log()
    );
    fs::write(m.path("b.txt"), b"back").unwrap();
    assert_eq!(fs::read(s.root.path().join("b.txt")).unwrap(), b"back");
    let log = m.log();
    assert!(
        log.contains(command),
        "no {command} in the dialogue:\n{log}"
    );
}

#[test]
fn ipv6_host_with_epsv() {
    ipv6_round_trip(&[], "EPSV");
}

#[test]
fn ipv6_host_with_eprt_in_active_mode() {
    ipv6_round_trip(&["active"], "EPRT");
}
