//! Security properties against real servers: hostile names from the server and
//! from local programs cannot inject FTP commands, the password never leaks
//! (command line, log at trace level, error messages, /proc/mounts), unsaved
//! data is spooled privately, the mount is private unless `allow_other`, and
//! a server sending garbage cannot crash the mount.
//! Scenarios that depend on the server run on pyftpdlib (MLSD) and vsftpd (LIST).

#[macro_use]
mod support;

use support::{diag, tail, within};

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use support::{gen_bytes, is_mounted, random_u64, run_ftpfs, FtpServer, Mount, ServerKind};
use tempfile::TempDir;

on_both_servers!(
    server_names_with_cr_or_lf_are_dropped,
    local_names_with_cr_or_lf_are_refused,
    spool_is_private,
    overlong_command_lines_do_not_shift_replies,
);

/// Listings of `garbage*` directories answered with nonsense by
/// `scripts/ftpserver.py --garbage-list MODE`.
mod garbage {
    #[test]
    fn mlsd_nonsense_listing() {
        super::garbage_listing_does_not_break_the_mount(&["--garbage-list", "data"])
    }
    #[test]
    fn list_nonsense_listing() {
        super::garbage_listing_does_not_break_the_mount(&["--garbage-list", "data", "--no-mlsd"])
    }
    #[test]
    fn reply_without_a_code() {
        super::garbage_listing_does_not_break_the_mount(&["--garbage-list", "reply"])
    }
    #[test]
    fn reply_that_never_ends() {
        super::garbage_listing_does_not_break_the_mount(&["--garbage-list", "unterminated"])
    }
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// The names in a directory, as raw strings (lossy), sorted.
fn names(dir: &Path) -> io::Result<Vec<String>> {
    let mut v = Vec::new();
    for e in fs::read_dir(dir)? {
        v.push(e?.file_name().to_string_lossy().into_owned());
    }
    v.sort();
    Ok(v)
}

fn errno(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

fn assert_alive(m: &mut Mount) {
    assert!(m.try_wait().is_none(), "ftpfs exited:\n{}", m.log());
    assert!(m.is_mounted(), "the mount went away:\n{}", m.log());
    let log = m.log();
    assert!(!log.contains("panicked"), "ftpfs panicked:\n{log}");
}

fn contains_bytes(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// `(mount options, super options)` of the mount at `dir`, from
/// /proc/self/mountinfo.
fn mount_options(dir: &Path) -> Option<(String, String)> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let dir = dir.to_string_lossy();
    let mut found = None;
    for line in info.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        if fields.len() < 6 || fields[4] != dir {
            continue;
        }
        let sep = fields.iter().position(|f| *f == "-")?;
        let superopts = fields.get(sep + 3).copied().unwrap_or("");
        found = Some((fields[5].to_string(), superopts.to_string()));
    }
    found
}

fn has_option(opts: &str, name: &str) -> bool {
    opts.split(',').any(|o| o == name)
}

// ---------------------------------------------------------------------------
// 1. Names from the server with CR or LF
// ---------------------------------------------------------------------------

fn server_names_with_cr_or_lf_are_dropped(s: FtpServer) {
    let kind = s.kind.name();
    s.create_file("ok.txt", b"ok");
    s.create_file("victim", b"precious");
    s.create_file("sub/inner.txt", b"inner");
    s.create_file(" leading space.txt", b"lead");
    s.create_file("semi;colon.txt", b"semi");
    s.create_file("semi; colon; space.txt", b"semi2");
    let hostile = [
        "cr\rname.txt",
        "trailing-cr\r",
        "lf\nname.txt",
        "crlf\r\nDELE victim",
        "x\r\nRNFR ok.txt\r\nRNTO gone.txt",
    ];
    for name in hostile {
        fs::write(s.root.join(name), b"hostile").unwrap();
    }
    s.fix_ownership();
    let mut m = Mount::new(&s, &[]);

    let shown = names(&m.dir).unwrap_or_else(|e| panic!("ls: {e}\n{}", diag(&m, &s)));
    eprintln!("[{kind}] listing of a root with CR/LF names: {shown:?}");
    for n in &shown {
        assert!(
            !n.contains(['\r', '\n']),
            "a name with CR or LF is shown: {n:?}\n{}",
            diag(&m, &s)
        );
    }
    for expected in ["ok.txt", "victim", "sub", "semi;colon.txt"] {
        assert!(
            shown.iter().any(|n| n == expected),
            "{expected} is missing from {shown:?}\n{}",
            diag(&m, &s)
        );
    }
    if s.kind == ServerKind::Pyftpdlib {
        // MLSD: everything after "; " is the name, spaces and semicolons included.
        for (name, content) in [
            (" leading space.txt", &b"lead"[..]),
            ("semi;colon.txt", b"semi"),
            ("semi; colon; space.txt", b"semi2"),
        ] {
            assert!(
                shown.iter().any(|n| n == name),
                "{name:?} is missing from {shown:?}\n{}",
                diag(&m, &s)
            );
            assert_eq!(
                fs::read(m.path(name)).unwrap_or_else(|e| panic!("read {name:?}: {e}")),
                content,
                "{name:?}"
            );
        }
    }
    let log = m.log();
    let dropped: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("unusable name"))
        .collect();
    eprintln!("[{kind}] log lines about dropped names: {dropped:#?}");
    assert!(
        log.contains("unusable name") && log.contains("cr\\rname.txt"),
        "the log does not mention the dropped name\n{}",
        diag(&m, &s)
    );

    // Read everything that is shown (phantoms may fail): nothing is ever
    // sent to the server but reads and listings.
    s.clear_commands();
    for n in &shown {
        let p = m.path(n);
        if fs::symlink_metadata(&p).is_ok_and(|md| md.is_file()) {
            let _ = fs::read(&p);
        }
    }
    assert_eq!(names(&m.path("sub")).unwrap(), ["inner.txt"]);
    assert_eq!(fs::read(m.path("ok.txt")).unwrap(), b"ok");
    let writes: Vec<String> = s
        .commands()
        .into_iter()
        .filter(|c| {
            let verb = c.split(' ').next().unwrap_or("").to_ascii_uppercase();
            matches!(
                verb.as_str(),
                "DELE" | "RNFR" | "RNTO" | "STOR" | "MKD" | "RMD" | "SITE" | "MFMT"
            )
        })
        .collect();
    assert!(writes.is_empty(), "write commands sent: {writes:?}");
    assert_eq!(fs::read(s.path("victim")).unwrap(), b"precious");
    assert!(s.path("ok.txt").exists());
    assert_alive(&mut m);
}

// ---------------------------------------------------------------------------
// 2. Names from local programs with CR or LF
// ---------------------------------------------------------------------------

fn local_names_with_cr_or_lf_are_refused(s: FtpServer) {
    let kind = s.kind.name();
    s.create_file("victim", b"precious");
    s.create_file("existing.txt", b"e");
    s.create_file("dir/inside.txt", b"i");
    let mut m = Mount::new(&s, &[]);
    s.clear_commands();

    let bad = [
        "a\r\nDELE victim",
        "b\nDELE victim",
        "c\rDELE victim",
        "d\r\nDELE /victim\r\n",
        "\r\nDELE victim",
    ];
    let expect_einval = |what: &str, r: io::Result<()>| match r {
        Ok(()) => panic!("{what} succeeded\n{}", diag(&m, &s)),
        Err(e) => assert_eq!(errno(&e), libc::EINVAL, "{what}: {e}\n{}", diag(&m, &s)),
    };
    for name in bad {
        expect_einval(
            &format!("create {name:?}"),
            File::create(m.path(name)).map(|_| ()),
        );
        expect_einval(
            &format!("create_new {name:?}"),
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(m.path(name))
                .map(|_| ()),
        );
        expect_einval(&format!("mkdir {name:?}"), fs::create_dir(m.path(name)));
        expect_einval(
            &format!("rename to {name:?}"),
            fs::rename(m.path("existing.txt"), m.path(name)),
        );
        expect_einval(
            &format!("rename dir to {name:?}"),
            fs::rename(m.path("dir"), m.path(name)),
        );
        expect_einval(
            &format!("rename into dir as {name:?}"),
            fs::rename(m.path("existing.txt"), m.path("dir").join(name)),
        );
        expect_einval(
            &format!("stat {name:?}"),
            fs::metadata(m.path(name)).map(|_| ()),
        );
        // Whatever symlink and link say, they must not reach the server.
        let _ = std::os::unix::fs::symlink("victim", m.path(name));
        let _ = fs::hard_link(m.path("existing.txt"), m.path(name));
    }
    eprintln!(
        "[{kind}] every create/mkdir/rename/stat with CR or LF gave EINVAL; server saw: {:?}",
        s.commands()
    );
    let sent = s.commands();
    assert!(
        s.commands_named("DELE").is_empty(),
        "the server received DELE: {sent:?}"
    );
    assert!(
        !sent
            .iter()
            .any(|c| c.contains("victim") || c.contains("\\r") || c.contains("\\n")),
        "an injected name reached the server: {sent:?}"
    );
    assert_eq!(fs::read(s.path("victim")).unwrap(), b"precious");
    assert_eq!(fs::read(s.path("existing.txt")).unwrap(), b"e");
    assert!(s.path("dir/inside.txt").exists());
    // The mount goes on working.
    fs::write(m.path("fine.txt"), b"fine").unwrap();
    assert_eq!(fs::read(s.path("fine.txt")).unwrap(), b"fine");
    assert_alive(&mut m);
}

// ---------------------------------------------------------------------------
// 3. The password
// ---------------------------------------------------------------------------

/// Percent-encodes everything but unreserved characters (RFC 3986).
/// Paths past the server's command-line limit (pyftpdlib: 2048 bytes) fail,
/// and the commands after them still get their own replies. pyftpdlib answers
/// such a line twice ("500 Command too long.", then a 500 for the rest); a
/// client that reused the connection read every later reply one command late
/// (a STOR "failed" with the 257 of an earlier MKD, a DELE "succeeded" with the
/// 250 of an earlier RMD).
fn overlong_command_lines_do_not_shift_replies(s: FtpServer) {
    let mut m = Mount::new(&s, &[]);
    let mut deep = m.path("deep");
    fs::create_dir(&deep).unwrap();
    let mut refused = None;
    for level in 0..24 {
        deep = deep.join(format!("{level:02}{}", "x".repeat(198)));
        if let Err(e) = fs::create_dir(&deep) {
            refused = Some((level, e));
            break;
        }
    }
    eprintln!("[{}] deep mkdir refused at: {refused:?}", s.kind.name());
    // By the server's line limit or by the kernel's PATH_MAX (4096): either way
    // the name is too long, not "unsupported".
    let (_, e) = refused.expect("a 4800-byte path must be refused");
    assert_eq!(
        e.raw_os_error(),
        Some(libc::ENAMETOOLONG),
        "{e}\n{}",
        diag(&m, &s)
    );
    // The same connection (the pool's command connection) serves what follows.
    for i in 0..5 {
        let dir = m.path(&format!("after{i}"));
        fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir after{i}: {e}\n{}", diag(&m, &s)));
        let body = format!("content {i}\n");
        fs::write(dir.join("f.txt"), &body)
            .unwrap_or_else(|e| panic!("write after{i}/f.txt: {e}\n{}", diag(&m, &s)));
        fs::rename(dir.join("f.txt"), dir.join("g.txt"))
            .unwrap_or_else(|e| panic!("rename in after{i}: {e}\n{}", diag(&m, &s)));
        assert_eq!(
            fs::read_to_string(s.path(&format!("after{i}/g.txt"))).unwrap(),
            body,
            "server copy of after{i}/g.txt\n{}",
            diag(&m, &s)
        );
        assert!(!s.path(&format!("after{i}/f.txt")).exists());
        fs::remove_file(dir.join("g.txt")).unwrap();
        fs::remove_dir(&dir).unwrap_or_else(|e| panic!("rmdir after{i}: {e}\n{}", diag(&m, &s)));
        assert!(!s.path(&format!("after{i}")).exists(), "{}", diag(&m, &s));
    }
    assert_alive(&mut m);
}

fn pct(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[test]
fn password_never_in_cmdline_log_or_mountinfo() {
    let token = format!("{:016x}", random_u64());
    // Characters that need percent-encoding in a URL, around a unique token.
    let pw = format!("Pw:{token}@x/%y z");
    let mut s = FtpServer::pyftpdlib_with_args(&["--password", &pw]);
    s.password = pw.clone();
    s.create_file("f.txt", b"hello");
    s.create_file("d/x.txt", b"x");
    let url = format!("ftp://{}:{}@127.0.0.1:{}/", s.user, pct(&pw), s.port);
    let mut m = Mount::try_spawn(&url, None, &[], &["-d"], &[("RUST_LOG", "trace")])
        .unwrap_or_else(|e| panic!("{e}"));
    let pid = m.pid().unwrap();

    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    eprintln!(
        "/proc/{pid}/cmdline: {:?}",
        String::from_utf8_lossy(&cmdline).replace('\0', " ")
    );
    assert!(
        !contains_bytes(&cmdline, token.as_bytes()),
        "the password is in /proc/{pid}/cmdline: {:?}",
        String::from_utf8_lossy(&cmdline)
    );
    // ftpfs re-executed itself with the URL minus its password.
    assert!(
        contains_bytes(
            &cmdline,
            format!("\0ftp://{}@127.0.0.1:{}/\0", s.user, s.port).as_bytes()
        ),
        "the URL in /proc/{pid}/cmdline is not the one without the password: {:?}",
        String::from_utf8_lossy(&cmdline)
    );
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mountinfo.contains(&token),
        "the password is in /proc/self/mountinfo"
    );

    // A few operations, some failing, some opening more connections.
    assert_eq!(names(&m.dir).unwrap(), ["d", "f.txt"]);
    assert_eq!(fs::read(m.path("f.txt")).unwrap(), b"hello");
    fs::write(m.path("new.txt"), b"new").unwrap();
    assert_eq!(
        errno(&fs::read(m.path("missing")).unwrap_err()),
        libc::ENOENT
    );
    assert!(fs::create_dir(m.path("d")).is_err());
    assert!(fs::remove_dir(m.path("d")).is_err());
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let p = m.path("d/x.txt");
            thread::spawn(move || fs::read(p))
        })
        .collect();
    for r in readers {
        assert_eq!(r.join().unwrap().unwrap(), b"x");
    }
    m.unmount().unwrap();

    let log = m.log();
    assert!(
        log.contains("CC OUT") && log.contains("PASS ****"),
        "trace logging of the FTP dialogue was not on:\n{}",
        tail(&log, 40)
    );
    let logins = log.matches("PASS ****").count();
    eprintln!(
        "log: {} lines, {logins} masked PASS lines, password absent: {}",
        log.lines().count(),
        !log.contains(&token)
    );
    assert!(
        !log.contains(&token),
        "the password is in the log:\n{}",
        log.lines()
            .filter(|l| l.contains(&token))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn password_never_in_error_messages() {
    let s = FtpServer::pyftpdlib_with_args(&["--auth-failed-delay", "0"]);
    let token = format!("{:016x}", random_u64());
    let wrong = format!("wrong-{token}");
    let mnt = TempDir::new().unwrap();
    let dir = mnt.path().to_str().unwrap().to_string();
    let env_trace = ("RUST_LOG", "trace");

    let mut cases: Vec<(String, Vec<(&str, String)>)> = vec![
        // Wrong password in the URL, and from the environment.
        (
            format!("ftp://{}:{wrong}@127.0.0.1:{}/", s.user, s.port),
            vec![],
        ),
        (s.url(), vec![("FTPFS_PASSWORD", wrong.clone())]),
        // Malformed URLs that carry a password.
        (format!("ftp://{}:{wrong}@127.0.0.1:99999/", s.user), vec![]),
        (format!("ftp://{}:{wrong}@127.0.0.1:port/", s.user), vec![]),
        (format!("ftp://{}:{wrong}@/", s.user), vec![]),
        (format!("ftps://{}:{wrong}@127.0.0.1/", s.user), vec![]),
        (
            format!("ftp://{}:{wrong}@127.0.0.1:{}/?q=1", s.user, s.port),
            vec![],
        ),
        (format!("ftp://{}:{wrong}@127.0.0.1:1/", s.user), vec![]),
        (format!("ftp://{}:{wrong}@[::1/", s.user), vec![]),
    ];
    // A path that is not valid UTF-8 after percent-decoding.
    cases.push((
        format!("ftp://{}:{wrong}@127.0.0.1:{}/%FF%FE", s.user, s.port),
        vec![],
    ));
    for (url, env) in &cases {
        let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        env.push(env_trace);
        let (status, out, err) = run_ftpfs(&["-f", "-d", url, &dir], &env, Duration::from_secs(30));
        eprintln!(
            "{}: {status}: {}",
            url.replace(&token, "<token>"),
            tail(err.trim(), 1).replace(&token, "<token>")
        );
        assert!(!status.success(), "{url}: ftpfs succeeded");
        assert!(
            !out.contains(&token) && !err.contains(&token),
            "the password is in ftpfs's output for {url}:\nstdout:\n{out}\nstderr:\n{err}"
        );
        assert!(!err.contains("panicked"), "{url}: {err}");
        assert!(!is_mounted(mnt.path()), "{url}: mounted");
    }
}

#[test]
fn user_or_password_with_cr_lf_cannot_inject_commands() {
    let s = FtpServer::pyftpdlib();
    s.create_file("victim", b"precious");
    let mnt = TempDir::new().unwrap();
    let dir = mnt.path().to_str().unwrap().to_string();
    let cases = [
        // A password with a second command in it.
        (s.url(), format!("{}\r\nDELE victim", s.password)),
        // A user name with one (percent-encoded in the URL).
        (
            format!("ftp://{}%0D%0ADELE%20victim@127.0.0.1:{}/", s.user, s.port),
            s.password.clone(),
        ),
    ];
    for (url, pw) in &cases {
        let (status, _, err) = run_ftpfs(
            &["-f", url, &dir],
            &[("FTPFS_PASSWORD", pw.as_str())],
            Duration::from_secs(30),
        );
        eprintln!("{url:?}: {status}: {}", err.trim());
        if status.success() || is_mounted(mnt.path()) {
            support::force_unmount(mnt.path());
        }
    }
    let sent = s.commands();
    assert!(
        s.commands_named("DELE").is_empty(),
        "the server received DELE: {sent:?}"
    );
    assert_eq!(fs::read(s.path("victim")).unwrap(), b"precious");
    eprintln!("server saw: {sent:?}");
}

// ---------------------------------------------------------------------------
// 4. The spool is private
// ---------------------------------------------------------------------------

fn spool_is_private(s: FtpServer) {
    let kind = s.kind.name();
    let old = gen_bytes(300_000, 5);
    s.create_file("existing.bin", &old);
    let cache = TempDir::new().unwrap();
    fs::set_permissions(cache.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let opt = format!("cache_dir={}", cache.path().display());
    let mut m = Mount::new(&s, &[&opt]);

    // Two files with unsaved data, kept open: a new one and an old one
    // changed in the middle (its old bytes are fetched into the spool).
    let mut f = File::create(m.path("new.txt")).unwrap();
    f.write_all(b"secret data").unwrap();
    f.flush().unwrap();
    let g = OpenOptions::new()
        .write(true)
        .open(m.path("existing.bin"))
        .unwrap();
    g.write_at(b"XYZ", 1000).unwrap();

    let spools: Vec<PathBuf> = fs::read_dir(cache.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(
        !spools.is_empty(),
        "nothing under {}",
        cache.path().display()
    );
    let mut files = Vec::new();
    for d in &spools {
        let md = fs::symlink_metadata(d).unwrap();
        assert!(md.is_dir(), "{} is not a directory", d.display());
        let mode = md.permissions().mode() & 0o7777;
        eprintln!("[{kind}] spool dir {} mode {mode:o}", d.display());
        assert_eq!(mode, 0o700, "spool dir {} mode {mode:o}", d.display());
        assert_eq!(md.uid(), unsafe { libc::getuid() });
        for e in fs::read_dir(d).unwrap().flatten() {
            let md = fs::symlink_metadata(e.path()).unwrap();
            let mode = md.permissions().mode() & 0o7777;
            eprintln!(
                "[{kind}] spool file {} mode {mode:o}, {} bytes",
                e.path().display(),
                md.len()
            );
            assert!(md.is_file(), "{} is not a plain file", e.path().display());
            assert_eq!(
                mode,
                0o600,
                "spool file {} mode {mode:o}",
                e.path().display()
            );
            files.push(e.path());
        }
    }
    assert!(
        files.len() >= 2,
        "expected a spool file per open file, found {files:?}\n{}",
        m.log()
    );
    let cache_mode = fs::metadata(cache.path()).unwrap().permissions().mode() & 0o7777;
    eprintln!("[{kind}] cache_dir itself: mode {cache_mode:o} (was 755 before mounting)");

    drop(f);
    drop(g);
    assert_eq!(fs::read(s.path("new.txt")).unwrap(), b"secret data");
    let mut want = old.clone();
    want[1000..1003].copy_from_slice(b"XYZ");
    assert!(fs::read(s.path("existing.bin")).unwrap() == want);
    assert_alive(&mut m);
}

// ---------------------------------------------------------------------------
// 5. allow_other
// ---------------------------------------------------------------------------

#[test]
fn allow_other_is_off_by_default() {
    let s = FtpServer::pyftpdlib();
    let m = Mount::new(&s, &[]);
    let (opts, superopts) = mount_options(&m.dir).expect("mount not in mountinfo");
    eprintln!("default: mount options {opts}, super options {superopts}");
    assert!(
        !has_option(&superopts, "allow_other") && !has_option(&opts, "allow_other"),
        "allow_other without asking: {opts} / {superopts}"
    );
    assert!(
        has_option(&opts, "nosuid") && has_option(&opts, "nodev"),
        "{opts}"
    );
}

#[test]
fn allow_other_turns_on_default_permissions() {
    let s = FtpServer::pyftpdlib();
    let m = Mount::new(&s, &["allow_other"]);
    let (opts, superopts) = mount_options(&m.dir).expect("mount not in mountinfo");
    eprintln!("allow_other: mount options {opts}, super options {superopts}");
    assert!(
        has_option(&superopts, "allow_other"),
        "no allow_other in {superopts}"
    );
    assert!(
        has_option(&superopts, "default_permissions"),
        "allow_other without default_permissions: {superopts}"
    );
}

// ---------------------------------------------------------------------------
// 6. Garbage replies
// ---------------------------------------------------------------------------

fn garbage_listing_does_not_break_the_mount(args: &[&str]) {
    let s = FtpServer::pyftpdlib_with_args(args);
    s.create_file("garbage/real.txt", b"real");
    s.create_file("normal/ok.txt", b"ok");
    let mut m = Mount::new(&s, &["timeout=3"]);
    let what = args.join(" ");

    let t0 = Instant::now();
    let out = Command::new("timeout")
        .args(["-k", "5", "40", "ls", "-la"])
        .arg(m.path("garbage"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let took = t0.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "[{what}] ls -la garbage: {} after {took:?}\n{stdout}{stderr}",
        out.status
    );
    assert!(
        out.status.code().is_some_and(|c| c < 124),
        "ls hung or crashed: {}\n{}",
        out.status,
        diag(&m, &s)
    );
    assert!(took < Duration::from_secs(20), "ls took {took:?}");
    let p = m.path("garbage");
    let (listed, _) = within(Duration::from_secs(20), move || names(&p)).expect("readdir hung");
    match listed {
        Ok(shown) => {
            // The listing succeeded: every entry in it must be sane, i.e. a
            // valid, unique name whose attributes the kernel accepts.
            let unique: BTreeSet<&String> = shown.iter().collect();
            assert_eq!(unique.len(), shown.len(), "duplicate names: {shown:?}");
            let mut insane = Vec::new();
            for n in &shown {
                assert!(
                    !n.is_empty() && n != "." && n != ".." && !n.contains(['/', '\0', '\r', '\n']),
                    "insane name {n:?} in {shown:?}"
                );
                let p = m.path("garbage").join(n);
                let md = fs::symlink_metadata(&p);
                match &md {
                    Ok(md) if md.size() <= i64::MAX as u64 => {}
                    Ok(md) => insane.push(format!(
                        "{n:?}: size {} (negative in the kernel)",
                        md.size()
                    )),
                    Err(e) => insane.push(format!("{n:?}: listed, but lstat fails: {e}")),
                }
                // Reading it must not hurt the mount, whatever it returns.
                let p2 = p.clone();
                let r = within(Duration::from_secs(20), move || {
                    let mut buf = vec![0u8; 4096];
                    File::open(&p2).and_then(|mut f| f.read(&mut buf))
                });
                eprintln!(
                    "[{what}]   {n:?}: {:?} read: {:?}",
                    md.map(|md| (md.file_type(), md.size(), md.mode() & 0o7777)),
                    r.map(|(r, _)| r)
                );
            }
            assert!(
                insane.is_empty(),
                "[{what}] the listing shows entries the kernel cannot stat:\n{}\n{}",
                insane.join("\n"),
                diag(&m, &s)
            );
        }
        Err(e) => {
            let ok = if what.contains("unterminated") {
                matches!(errno(&e), libc::EIO | libc::ETIMEDOUT)
            } else {
                errno(&e) == libc::EIO
            };
            assert!(ok, "the listing failed with {e}\n{}", diag(&m, &s));
        }
    }

    // The rest of the mount works.
    let p = m.path("normal");
    let (res, took) = within(Duration::from_secs(20), move || names(&p)).expect("ls normal hung");
    assert_eq!(
        res.unwrap_or_else(|e| panic!("ls normal after the garbage: {e}\n{}", diag(&m, &s))),
        ["ok.txt"]
    );
    eprintln!("[{what}] then ls normal in {took:?}");
    assert_eq!(fs::read(m.path("normal/ok.txt")).unwrap(), b"ok");
    assert_alive(&mut m);
}
