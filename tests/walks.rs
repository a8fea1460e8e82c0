//! Tree walks at a distance (issue 14): `find` of a tree of many small
//! directories, through the delay proxy, lists several directories at once
//! (the listings of subdirectories are prefetched when a directory is opened),
//! each directory once.

#[macro_use]
mod support;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use support::{FtpServer, Mount, Proxy, ProxyConfig};

on_both_servers!(find_lists_directories_in_parallel_and_once);

/// 24 directories of 2 files and a subdirectory with 1 file: 49 directories.
const DIRS: usize = 24;

fn find_lists_directories_in_parallel_and_once(s: FtpServer) {
    for d in 0..DIRS {
        s.create_file(&format!("t/d{d:02}/a.txt"), b"a\n");
        s.create_file(&format!("t/d{d:02}/b.txt"), b"b\n");
        s.create_file(&format!("t/d{d:02}/sub/c.txt"), b"c\n");
    }
    let upstream = SocketAddr::from(([127, 0, 0, 1], s.port));
    let proxy = Proxy::start(ProxyConfig::new(upstream).with_delay(Duration::from_millis(20)))
        .expect("start proxy");
    let url = format!("ftp://{}@127.0.0.1:{}/", s.user, proxy.port);
    let m = Mount::try_spawn(&url, Some(&s.password), &[], &[], &[]).unwrap();
    s.clear_commands();
    let before = proxy.stats();
    let start = Instant::now();
    let out = Command::new("find")
        .arg(m.path("t"))
        .arg("-type")
        .arg("f")
        .output()
        .expect("find");
    let took = start.elapsed();
    assert!(out.status.success(), "find: {out:?}\n{}", m.log());
    let files = String::from_utf8_lossy(&out.stdout).lines().count();
    assert_eq!(files, 3 * DIRS, "{}", m.log());
    let stats = proxy.stats();
    let listings: Vec<String> = s
        .commands()
        .into_iter()
        .filter(|c| {
            let verb = c
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_ascii_uppercase();
            ["LIST", "MLSD", "NLST"].contains(&verb.as_str())
        })
        .collect();
    eprintln!(
        "find of {} directories at 20 ms: {took:?}, {} listings, at most {} at once",
        2 * DIRS + 1,
        listings.len(),
        stats.peak_data_connections
    );
    assert!(
        stats.peak_data_connections >= 2,
        "never more than one listing at once ({} data connections, {} before)\n{}",
        stats.data_connections,
        before.data_connections,
        m.log()
    );
    // Each directory once (the mount lists the root and t itself too).
    assert!(
        listings.len() <= 2 * DIRS + 3,
        "{} listings: {listings:?}",
        listings.len()
    );
    assert_eq!(stats.rejected_sessions, 0);
}
