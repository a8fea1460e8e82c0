//! The read side against real servers: listings, stat, reads at any offset,
//! symlinks, big directories, concurrency and the FTP command count.
//! Every scenario runs on pyftpdlib (MLSD) and on vsftpd (LIST only).

#[macro_use]
mod support;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use support::{files_equal, gen_bytes, FtpServer, Mount, ServerKind};

on_both_servers!(
    tree_matches_the_server,
    files_of_edge_sizes_read_back_exactly,
    random_offset_reads_match,
    big_directory_lists_completely,
    two_large_files_read_at_once,
    listing_costs_constant_commands,
    long_read_does_not_block_ls,
    symlinks,
    same_size_replacement_is_seen,
    shrinking_while_open_gives_short_reads,
);

#[derive(Debug, PartialEq)]
struct Meta {
    kind: &'static str,
    size: Option<u64>,
}

/// Walks a tree without following symlinks: relative path -> (kind, size of files).
fn walk(root: &Path) -> BTreeMap<String, Meta> {
    fn go(root: &Path, dir: &Path, out: &mut BTreeMap<String, Meta>) {
        for e in fs::read_dir(dir).unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display())) {
            let e = e.unwrap();
            let p = e.path();
            let md = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let (kind, size) = if md.is_dir() {
                ("dir", None)
            } else if md.file_type().is_symlink() {
                ("link", None)
            } else {
                ("file", Some(md.len()))
            };
            out.insert(rel, Meta { kind, size });
            if md.is_dir() {
                go(root, &p, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    go(root, root, &mut out);
    out
}

fn populate_tree(s: &FtpServer) {
    s.create_file("index.html", b"<h1>hello</h1>\n");
    s.create_file(".htaccess", b"Deny from all\n");
    s.create_file("empty", b"");
    s.create_file("with space.txt", b"spaces\n");
    s.create_file("ünïcødé 日本.txt", "unicode\n".as_bytes());
    s.create_file("css/site.css", b"body{}\n");
    s.create_file("css/.hidden/inner", &gen_bytes(10_000, 1));
    s.create_file("deep/a/b/c/d.bin", &gen_bytes(123_457, 2));
    s.create_dir("empty-dir");
}

fn tree_matches_the_server(s: FtpServer) {
    populate_tree(&s);
    let m = Mount::new(&s, &[]);
    assert_eq!(walk(&m.dir), walk(&s.root), "{}", m.log());

    // mtimes: LIST has minute precision, MLSD seconds
    for rel in ["index.html", "deep/a/b/c/d.bin"] {
        let local = fs::metadata(s.path(rel)).unwrap().modified().unwrap();
        let remote = fs::metadata(m.path(rel)).unwrap().modified().unwrap();
        let diff = match local.duration_since(remote) {
            Ok(d) => d,
            Err(e) => e.duration(),
        };
        assert!(
            diff < Duration::from_secs(61),
            "{rel}: mtime off by {diff:?}"
        );
    }

    // real tools agree
    let ls = Command::new("ls").arg("-la").arg(&m.dir).output().unwrap();
    assert!(ls.status.success());
    let ls = String::from_utf8_lossy(&ls.stdout);
    for name in [".htaccess", "with space.txt", "ünïcødé 日本.txt", "css"] {
        assert!(ls.contains(name), "ls -la lacks {name}:\n{ls}");
    }
    let find = |dir: &Path| {
        let o = Command::new("find")
            .arg(".")
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(o.status.success());
        let mut v: Vec<String> = String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(String::from)
            .collect();
        v.sort();
        v
    };
    assert_eq!(find(&m.dir), find(&s.root));
    let stat = Command::new("stat")
        .args(["-c", "%s %F"])
        .arg(m.path("deep/a/b/c/d.bin"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&stat.stdout).trim(),
        "123457 regular file"
    );
    assert_eq!(fs::read(m.path("ünïcødé 日本.txt")).unwrap(), b"unicode\n");
    assert!(fs::metadata(m.path("missing")).is_err());
}

fn files_of_edge_sizes_read_back_exactly(s: FtpServer) {
    let sizes = [0usize, 1, (1 << 20) + 1, 100 << 20];
    for (i, size) in sizes.iter().enumerate() {
        s.create_file(&format!("f{i}"), &gen_bytes(*size, i as u64 + 10));
    }
    let m = Mount::new(&s, &[]);
    for (i, size) in sizes.iter().enumerate() {
        let name = format!("f{i}");
        assert_eq!(fs::metadata(m.path(&name)).unwrap().len(), *size as u64);
        let st = Command::new("cmp")
            .arg(m.path(&name))
            .arg(s.path(&name))
            .status()
            .unwrap();
        assert!(st.success(), "cmp of {size} bytes failed\n{}", m.log());
    }
}

fn random_offset_reads_match(s: FtpServer) {
    let data = gen_bytes(20 << 20, 99);
    s.create_file("r.bin", &data);
    let m = Mount::new(&s, &[]);
    let f = fs::File::open(m.path("r.bin")).unwrap();
    let mut x = 0x9e3779b97f4a7c15u64;
    for i in 0..500 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let off = (x % data.len() as u64) as usize;
        let len = 1 + (x >> 40) as usize % 70_000;
        let mut buf = vec![0u8; len];
        let n = f.read_at(&mut buf, off as u64).unwrap();
        let want = &data[off..(off + len).min(data.len())];
        assert_eq!(n, want.len(), "read {i} at {off}");
        assert!(buf[..n] == *want, "read {i} at {off}+{len} differs");
    }
}

fn big_directory_lists_completely(s: FtpServer) {
    for i in 0..2000 {
        let p = s.path(&format!("big/file-{i:05}.txt"));
        if i == 0 {
            fs::create_dir_all(p.parent().unwrap()).unwrap();
        }
        fs::write(p, format!("{i}\n")).unwrap();
    }
    s.fix_ownership();
    let m = Mount::new(&s, &[]);
    let mut names: Vec<String> = fs::read_dir(m.path("big"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 2000);
    assert_eq!(names[1999], "file-01999.txt");
    assert_eq!(
        fs::read_to_string(m.path("big/file-01234.txt")).unwrap(),
        "1234\n"
    );
}

fn two_large_files_read_at_once(s: FtpServer) {
    s.create_file("one.bin", &gen_bytes(30 << 20, 5));
    s.create_file("two.bin", &gen_bytes(30 << 20, 6));
    let m = Mount::new(&s, &[]);
    let readers: Vec<_> = ["one.bin", "two.bin"]
        .into_iter()
        .map(|n| {
            let (a, b) = (m.path(n), s.path(n));
            std::thread::spawn(move || files_equal(&a, &b))
        })
        .collect();
    for r in readers {
        assert!(r.join().unwrap(), "{}", m.log());
    }
    let retrs = s.commands_named("RETR");
    assert!(
        retrs.iter().any(|c| c.contains("one.bin")) && retrs.iter().any(|c| c.contains("two.bin"))
    );
    if s.kind == ServerKind::Vsftpd {
        // vsftpd logs the session's process id: the two downloads ran on two connections.
        let log = fs::read_to_string(s.cmdlog_path()).unwrap();
        let pid_of = |name: &str| {
            log.lines()
                .find(|l| l.contains("\"RETR") && l.contains(name))
                .and_then(|l| l.split("[pid ").nth(1))
                .and_then(|r| r.split(']').next())
                .map(String::from)
        };
        assert_ne!(
            pid_of("one.bin"),
            pid_of("two.bin"),
            "both RETRs on one connection"
        );
    }
}

fn listing_costs_constant_commands(s: FtpServer) {
    for n in [10, 100, 1000] {
        for i in 0..n {
            let p = s.path(&format!("d{n}/f{i}"));
            if i == 0 {
                fs::create_dir_all(p.parent().unwrap()).unwrap();
            }
            fs::write(p, b"x").unwrap();
        }
    }
    s.fix_ownership();
    let m = Mount::new(&s, &[]);
    s.clear_commands();
    // The root listing; opening it also prefetches the three directories'.
    fs::read_dir(&m.dir).unwrap().for_each(drop);
    for n in [10, 100, 1000] {
        let out = Command::new("ls")
            .arg("-l")
            .arg(m.path(&format!("d{n}")))
            .output()
            .unwrap();
        assert!(out.status.success());
        assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), n + 1);
    }
    let cmds = s.commands();
    assert!(
        !cmds
            .iter()
            .any(|c| c.starts_with("SIZE") || c.starts_with("MDTM")),
        "per-file commands: {cmds:?}"
    );
    // One listing per directory, whatever its size (the root's may be
    // cached since the mount).
    let listings = cmds
        .iter()
        .filter(|c| c.starts_with("MLSD") || c.starts_with("LIST"))
        .count();
    assert!((3..=4).contains(&listings), "{cmds:?}");
}

fn long_read_does_not_block_ls(s: FtpServer) {
    s.create_file("huge.bin", &gen_bytes(64 << 20, 7));
    s.create_file("dir/x", b"x");
    let m = Mount::new(&s, &["cache_timeout=0"]);
    let (a, b) = (m.path("huge.bin"), s.path("huge.bin"));
    let reader = std::thread::spawn(move || files_equal(&a, &b));
    std::thread::sleep(Duration::from_millis(50));
    let start = SystemTime::now();
    for _ in 0..5 {
        assert_eq!(fs::read_dir(m.path("dir")).unwrap().count(), 1);
    }
    assert!(start.elapsed().unwrap() < Duration::from_secs(5));
    assert!(reader.join().unwrap());
}

fn symlinks(s: FtpServer) {
    s.create_file("target.txt", b"pointed at\n");
    std::os::unix::fs::symlink("target.txt", s.path("link")).unwrap();
    let m = Mount::new(&s, &[]);
    match s.kind {
        // LIST shows "link -> target.txt"
        ServerKind::Vsftpd => {
            let md = fs::symlink_metadata(m.path("link")).unwrap();
            assert!(md.file_type().is_symlink());
            assert_eq!(
                fs::read_link(m.path("link")).unwrap(),
                Path::new("target.txt")
            );
            assert_eq!(fs::read(m.path("link")).unwrap(), b"pointed at\n");
        }
        // pyftpdlib's MLSD follows links: the link is shown as the file it points to
        _ => {
            assert_eq!(fs::read(m.path("link")).unwrap(), b"pointed at\n");
        }
    }
}

/// A file replaced on the server by another of the same size is seen by the
/// next open once `cache_timeout` has passed: cached blocks belong to the size
/// and time they were read with (issue 14).
fn same_size_replacement_is_seen(s: FtpServer) {
    let (old, new) = (gen_bytes(300_000, 1), gen_bytes(300_000, 2));
    s.create_file("f.bin", &old);
    let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
    fs::File::options()
        .write(true)
        .open(s.path("f.bin"))
        .and_then(|f| f.set_modified(an_hour_ago))
        .expect("set the server file's time");
    let m = Mount::new(&s, &["cache_timeout=1"]);
    assert!(fs::read(m.path("f.bin")).unwrap() == old);
    s.create_file("f.bin", &new);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        fs::read(m.path("f.bin")).unwrap() == new,
        "the old content came back\n{}",
        m.log()
    );
}

/// A file cut short on the server while it is open: reads before the new end
/// give the file's bytes, reads past it EOF, and a read across it (which the
/// kernel, still holding the old size, would fill up with zeros) EIO; never
/// bytes the file did not have, and never a hang.
fn shrinking_while_open_gives_short_reads(s: FtpServer) {
    let data = gen_bytes(8 << 20, 3);
    s.create_file("s.bin", &data);
    let m = Mount::new(&s, &["cache_timeout=1"]);
    let f = fs::File::open(m.path("s.bin")).unwrap();
    let mut buf = vec![0u8; 1 << 16];
    // Cut before the first read: a server sending the file while it is cut
    // may itself send bytes that were never the file's (sendfile of truncated
    // pages), which no client can tell from data.
    fs::File::options()
        .write(true)
        .open(s.path("s.bin"))
        .and_then(|f| f.set_len(1 << 20))
        .expect("truncate on the server");
    for offset in [0, (1 << 20) - 100, 6 << 20, (8 << 20) - 10] {
        let start = std::time::Instant::now();
        let got = f.read_at(&mut buf, offset as u64);
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "read at {offset} took {:?}",
            start.elapsed()
        );
        let n = match got {
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(libc::EIO) && offset > 0 && offset < 1 << 20 => 0,
            Err(e) => panic!("read at {offset}: {e}\n{}", m.log()),
        };
        assert!(
            buf[..n] == data[offset..offset + n],
            "read at {offset} gave {n} bytes that the file never had (first {} match)\n{}",
            buf[..n]
                .iter()
                .zip(&data[offset..offset + n])
                .take_while(|(a, b)| a == b)
                .count(),
            m.log()
        );
    }
    drop(f);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(fs::read(m.path("s.bin")).unwrap() == data[..1 << 20]);
}

/// A large sequential read from a server that paces each data connection
/// (2 MiB/s here) uses several REST+RETR streams at once, and the bytes match
/// (issue 14).
#[test]
fn segmented_read_through_a_paced_server() {
    let s = FtpServer::pyftpdlib_with_args(&["--throttle", "2097152"]);
    let data = gen_bytes(24 << 20, 11);
    s.create_file("big.bin", &data);
    let m = Mount::new(&s, &["read_streams=4"]);
    s.clear_commands();
    let start = std::time::Instant::now();
    let got = fs::read(m.path("big.bin")).unwrap();
    let took = start.elapsed();
    assert!(got == data, "the bytes differ\n{}", m.log());
    let retrs = s
        .commands()
        .into_iter()
        .filter(|c| c.starts_with("RETR"))
        .count();
    let (_, sha_src) = sha256_of(&data);
    let (_, sha_got) = sha256_of(&got);
    eprintln!("24 MiB at 2 MiB/s per connection: {took:?} over {retrs} RETR (sha256 {sha_got})");
    assert_eq!(sha_src, sha_got);
    assert!(retrs >= 3, "{retrs} RETR: one stream only?\n{}", m.log());
    assert!(
        m.log().contains("in segments"),
        "no segmented read in the log\n{}",
        m.log()
    );
}

fn sha256_of(data: &[u8]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f");
    fs::write(&p, data).unwrap();
    let out = Command::new("sha256sum").arg(&p).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    (
        out.status.success(),
        text.split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string(),
    )
}
