//! `ftpfs status MOUNTPOINT`: the report of a running mount, read while a slow
//! upload (through the delay proxy) is in flight, after it, and after a failure.

mod support;

use std::fs;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use support::{gen_bytes, status_of, wait_until, DataFault, FtpServer, Mount, Proxy, ProxyConfig};

/// A link with 20 ms each way.
fn slow_proxy(s: &FtpServer) -> Proxy {
    let upstream = SocketAddr::from(([127, 0, 0, 1], s.port));
    Proxy::start(ProxyConfig::new(upstream).with_delay(Duration::from_millis(20)))
        .expect("start proxy")
}

#[test]
fn status_shows_a_slow_upload_in_flight_then_its_traffic() {
    let s = FtpServer::pyftpdlib();
    s.create_file("seen.txt", b"hello\n");
    let proxy = slow_proxy(&s);
    let url = format!("ftp://{}@127.0.0.1:{}/", s.user, proxy.port);
    let m = Mount::try_spawn(&url, Some(&s.password), &[], &[], &[]).unwrap();
    assert_eq!(fs::read(m.path("seen.txt")).unwrap(), b"hello\n");

    // cp holds the file open, not this process: every process this test
    // spawns closes its inherited descriptors at exec, and each such close is a
    // FUSE flush, which would upload the file then and there.
    let local = tempfile::tempdir().unwrap();
    let data = gen_bytes(6 << 20, 5);
    fs::write(local.path().join("big.bin"), &data).unwrap();
    // The upload stalls after 1 MiB until the fault is cleared: in flight for sure.
    proxy
        .faults()
        .set_data_fault(Some(DataFault::stall_after(1 << 20)));
    let mut cp = Command::new("cp")
        .arg(local.path().join("big.bin"))
        .arg(m.path("big.bin"))
        .spawn()
        .expect("start cp");
    // While it is in flight: the upload with its progress, and the file waiting.
    let mut seen = String::new();
    let found = wait_until(Duration::from_secs(60), || {
        let (ok, out, err) = m.status();
        assert!(ok, "status failed: {err}\n{}", m.log());
        seen = out;
        seen.contains("uploading  /big.bin: ") && !seen.contains("uploading  /big.bin: 0 B")
    });
    assert!(found, "no upload in flight in:\n{seen}\n{}", m.log());
    assert!(seen.contains("pending    /big.bin"), "{seen}");
    assert!(
        seen.contains(&format!("ftp://{}@127.0.0.1:{}", s.user, proxy.port)),
        "{seen}"
    );
    assert!(seen.contains("plain FTP"), "{seen}");
    assert!(seen.contains("features:     MLSD"), "{seen}");
    assert!(seen.contains("connections:  "), "{seen}");
    assert!(!seen.contains(&s.password), "{seen}");
    proxy.faults().set_data_fault(None);

    assert!(
        cp.wait().unwrap().success(),
        "cp into the mount\n{}",
        m.log()
    );
    assert_eq!(fs::read(s.path("big.bin")).unwrap(), data);
    let (ok, out, err) = m.status();
    assert!(ok, "{err}");
    assert!(
        out.contains("uploads:      0 in flight, 0 waiting"),
        "{out}"
    );
    assert!(out.contains("MiB up"), "{out}");
    assert!(out.contains("errors:       none"), "{out}");
    // A read is traffic down, and a listing a cache lookup.
    assert_eq!(fs::read(m.path("big.bin")).unwrap().len(), data.len());
    let (_, out, _) = m.status();
    let down = out
        .lines()
        .find_map(|l| l.strip_prefix("transferred:  "))
        .and_then(|l| l.split(" MiB down").next())
        .and_then(|mib| mib.trim().parse::<f64>().ok());
    assert!(down.is_some_and(|d| d >= 6.0), "{out}");
    assert!(
        out.contains("listings:     ") && out.contains("% hits"),
        "{out}"
    );
}

#[test]
fn status_lists_a_failed_upload_among_the_recent_errors() {
    let s = FtpServer::pyftpdlib_with_args(&["--refuse-stor"]);
    let m = Mount::new(&s, &[]);
    // fsync reports the upload's error (a dropped File ignores close's).
    let err = fs::File::create(m.path("refused.txt"))
        .and_then(|mut f| {
            std::io::Write::write_all(&mut f, b"no")?;
            f.sync_all()
        })
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EACCES), "{err}");
    let (ok, out, _) = m.status();
    assert!(ok);
    assert!(out.contains("errors:       "), "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains("UTC") && l.contains("STOR") && l.contains("553")),
        "{out}"
    );
}

#[test]
fn status_of_a_directory_without_ftpfs_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out, err) = status_of(dir.path());
    assert!(!ok);
    assert!(out.is_empty(), "{out}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].starts_with("ftpfs: ") && lines[0].contains("no ftpfs"),
        "{err}"
    );
}

#[test]
fn unmount_waits_for_a_background_upload_and_shows_its_progress() {
    let s = FtpServer::pyftpdlib();
    let proxy = slow_proxy(&s);
    let url = format!("ftp://{}@127.0.0.1:{}/", s.user, proxy.port);
    let mut m = Mount::try_spawn(&url, Some(&s.password), &[], &[], &[]).unwrap();
    let local = tempfile::tempdir().unwrap();
    let data = gen_bytes(4 << 20, 9);
    fs::write(local.path().join("big.bin"), &data).unwrap();
    // Every upload is cut: close fails and the upload is retried in the background.
    proxy
        .faults()
        .set_data_fault(Some(DataFault::reset_after(256 << 10).repeat()));
    let cp = Command::new("cp")
        .arg(local.path().join("big.bin"))
        .arg(m.path("big.bin"))
        .output()
        .unwrap();
    assert!(!cp.status.success(), "cp succeeded\n{}", m.log());
    // The next retry stalls after 1 MiB: still running when we unmount.
    proxy
        .faults()
        .set_data_fault(Some(DataFault::stall_after(1 << 20)));
    assert!(
        wait_until(Duration::from_secs(20), || m
            .status()
            .1
            .contains("uploading  /big.bin: ")),
        "no background upload\n{}",
        m.log()
    );
    assert!(m.signal("TERM"));
    assert!(
        wait_until(Duration::from_secs(20), || m
            .log()
            .contains("still uploading /big.bin: ")),
        "no progress at unmount\n{}",
        m.log()
    );
    assert!(m.log().contains(" of 4.0 MiB sent"), "{}", m.log());
    proxy.faults().set_data_fault(None);
    let exit = m.wait_exit(Duration::from_secs(60));
    assert!(exit.is_some_and(|e| e.success()), "{exit:?}\n{}", m.log());
    assert_eq!(fs::read(s.path("big.bin")).unwrap(), data);
}
