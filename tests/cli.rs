//! Start-up and process behaviour of the ftpfs binary, against real servers:
//! one-line errors (and nothing mounted) for bad passwords, hosts, URLs,
//! mount points and options; `--help`; where the password may come from and
//! where it must never show up; background mode, signals, `-d`, `-o ro` and
//! a URL path.
//!
//! Every test starts its own server and mount point; everything is cleaned up
//! through Drop, so the tests can run in parallel.

mod support;

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use support::{
    force_unmount, free_port, is_mounted, mount_fstype, run_ftpfs, wait_until, FtpServer, Mount,
};

/// Generous limit for ftpfs invocations that are expected to fail fast.
const RUN_TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// An empty temporary directory to use as a mount point. Drop unmounts
/// whatever ftpfs may have left there (and never deletes a live mount).
struct MountDir {
    tmp: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl MountDir {
    fn new() -> MountDir {
        let tmp = tempfile::Builder::new()
            .prefix("ftpfs-cli-mnt-")
            .tempdir()
            .expect("create mount dir");
        let path = fs::canonicalize(tmp.path()).expect("canonicalize mount dir");
        MountDir {
            tmp: Some(tmp),
            path,
        }
    }

    fn as_str(&self) -> &str {
        self.path.to_str().expect("utf-8 temp path")
    }
}

impl Drop for MountDir {
    fn drop(&mut self) {
        if !force_unmount(&self.path) {
            if let Some(tmp) = self.tmp.take() {
                let p = tmp.keep();
                eprintln!("warning: could not unmount {}; leaving it", p.display());
            }
        }
    }
}

/// Runs ftpfs with a controlled logging environment (`RUST_LOG` empty, so
/// only ftpfs's own defaults apply whatever the caller's shell has).
fn ftpfs(args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String, String, Duration) {
    let mut full_env: Vec<(&str, &str)> = vec![("RUST_LOG", "")];
    full_env.extend_from_slice(env);
    let start = Instant::now();
    let (status, out, err) = run_ftpfs(args, &full_env, RUN_TIMEOUT);
    (status, out, err, start.elapsed())
}

/// Asserts a failed start-up: a real non-zero exit code (not a kill by the
/// harness), nothing on stdout and exactly one `ftpfs: ...` line on stderr.
/// Returns that line.
fn assert_one_line_failure(what: &str, status: ExitStatus, out: &str, err: &str) -> String {
    let code = status.code();
    assert!(
        code.is_some_and(|c| c != 0),
        "{what}: expected a non-zero exit code, got {status}\nstdout: {out:?}\nstderr: {err:?}"
    );
    assert!(out.is_empty(), "{what}: unexpected stdout {out:?}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "{what}: stderr must be exactly one line, got {err:?}"
    );
    assert!(
        err.ends_with('\n'),
        "{what}: the error line must end with a newline: {err:?}"
    );
    assert!(
        lines[0].starts_with("ftpfs: ") && lines[0].len() > "ftpfs: ".len(),
        "{what}: the error must start with \"ftpfs: \": {err:?}"
    );
    lines[0].to_string()
}

fn assert_not_mounted(what: &str, dir: &Path) {
    assert_eq!(
        mount_fstype(dir),
        None,
        "{what}: something is mounted at {}",
        dir.display()
    );
}

/// The `/proc/self/mountinfo` line of the mount at `dir`, split in fields.
fn mountinfo_fields(dir: &Path) -> Option<Vec<String>> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = dir.to_str()?;
    info.lines()
        .rfind(|l| l.split(' ').nth(4) == Some(want))
        .map(|l| l.split(' ').map(str::to_string).collect())
}

/// Mount options (field 6) of the mount at `dir`.
fn mount_options(dir: &Path) -> Option<Vec<String>> {
    mountinfo_fields(dir).and_then(|f| {
        f.get(5)
            .map(|o| o.split(',').map(str::to_string).collect::<Vec<_>>())
    })
}

/// Names in a directory, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    v.sort();
    v
}

/// `ls -A DIR` through the real tool; returns its stdout.
fn ls(dir: &Path) -> String {
    let out = Command::new("ls")
        .arg("-A")
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run ls");
    assert!(
        out.status.success(),
        "ls {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn contains_bytes(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// argv of a process, from /proc/PID/cmdline.
fn proc_argv(pid: u32) -> Option<Vec<String>> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    )
}

/// Whether `pid` is alive (exists and is not a zombie).
fn alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().next())
                .unwrap_or("");
            state != "Z" && state != "X"
        }
        Err(_) => false,
    }
}

/// Pids of running ftpfs processes whose command line has `dir` as an argument.
fn ftpfs_pids_for(dir: &Path) -> Vec<u32> {
    let bin = support::ftpfs_bin();
    let want = dir.to_str().unwrap_or_default().to_string();
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc").expect("read /proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Some(argv) = proc_argv(pid) else {
            continue;
        };
        let is_ftpfs = argv
            .first()
            .is_some_and(|a0| Path::new(a0) == bin || Path::new(a0).file_name() == bin.file_name());
        if is_ftpfs && argv.iter().skip(1).any(|a| *a == want) && alive(pid) {
            pids.push(pid);
        }
    }
    pids
}

// ---------------------------------------------------------------------------
// 1. Wrong password
// ---------------------------------------------------------------------------

#[test]
fn wrong_password_is_one_line_error_without_the_password() {
    let server = FtpServer::pyftpdlib_with_args(&["--auth-failed-delay", "0"]);
    let wrong = "Wr0ng-Pa55w0rd-q7z";
    let mnt = MountDir::new();

    // Password from the environment, and password in the URL.
    let url_env = server.url();
    let url_inline = format!("ftp://ftpuser:{wrong}@127.0.0.1:{}/", server.port);
    type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>);
    let cases: [Case; 2] = [
        ("FTPFS_PASSWORD", &url_env, vec![("FTPFS_PASSWORD", wrong)]),
        ("password in URL", &url_inline, vec![]),
    ];
    for (what, url, env) in cases {
        server.clear_commands();
        let (status, out, err, took) = ftpfs(&[url, mnt.as_str()], &env);
        let line = assert_one_line_failure(what, status, &out, &err);
        let lower = line.to_lowercase();
        assert!(
            lower.contains("login") && lower.contains("refused"),
            "{what}: the message must say the login was refused: {line:?}"
        );
        assert!(
            line.contains("ftpuser"),
            "{what}: the message should name the user: {line:?}"
        );
        for leak in [wrong, server.password.as_str()] {
            assert!(
                !out.contains(leak) && !err.contains(leak),
                "{what}: a password leaked: stdout {out:?} stderr {err:?}"
            );
        }
        assert_not_mounted(what, &mnt.path);
        assert!(
            took < Duration::from_secs(10),
            "{what}: took {took:?} with --auth-failed-delay 0"
        );
        // It really tried to log in (and the server saw the masked PASS).
        let cmds = server.commands();
        assert!(
            cmds.contains(&"USER ftpuser".to_string()) && cmds.contains(&"PASS ****".to_string()),
            "{what}: server commands {cmds:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// 2. Unreachable port / silent server
// ---------------------------------------------------------------------------

#[test]
fn unreachable_port_fails_fast_with_one_line() {
    let port = free_port();
    let mnt = MountDir::new();
    let url = format!("ftp://ftpuser@127.0.0.1:{port}/");
    let (status, out, err, took) = ftpfs(
        &["-o", "connect_timeout=2", &url, mnt.as_str()],
        &[("FTPFS_PASSWORD", "some-password-4411")],
    );
    let line = assert_one_line_failure("unreachable port", status, &out, &err);
    assert!(
        took < Duration::from_secs(10),
        "took {took:?} with connect_timeout=2"
    );
    assert!(
        line.contains(&port.to_string()),
        "the message should name the address: {line:?}"
    );
    assert!(
        !err.contains("some-password-4411"),
        "password leaked: {err:?}"
    );
    assert_not_mounted("unreachable port", &mnt.path);
}

/// A port that accepts TCP connections but never greets: the greeting must
/// be bounded by connect_timeout too.
#[test]
fn silent_server_times_out_within_connect_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().unwrap().port();
    let mnt = MountDir::new();
    let url = format!("ftp://ftpuser@127.0.0.1:{port}/");
    let (status, out, err, took) = ftpfs(
        &["-o", "connect_timeout=2", &url, mnt.as_str()],
        &[("FTPFS_PASSWORD", "some-password-4412")],
    );
    drop(listener);
    assert_one_line_failure("silent server", status, &out, &err);
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(10),
        "connect_timeout=2 against a silent server took {took:?}: {err:?}"
    );
    assert_not_mounted("silent server", &mnt.path);
}

// ---------------------------------------------------------------------------
// 3. Malformed URLs
// ---------------------------------------------------------------------------

#[test]
fn malformed_urls_are_one_line_errors_without_the_password() {
    let mnt = MountDir::new();
    for url in [
        "ftp//nohost",
        "http://127.0.0.1/",
        "ftp://u:secretpw@127.0.0.1:99999/",
    ] {
        let (status, out, err, took) = ftpfs(&[url, mnt.as_str()], &[]);
        let line = assert_one_line_failure(url, status, &out, &err);
        assert!(
            !out.contains("secretpw") && !err.contains("secretpw"),
            "{url}: password printed: {err:?}"
        );
        assert!(
            took < Duration::from_secs(5),
            "{url}: a malformed URL took {took:?}"
        );
        assert_not_mounted(url, &mnt.path);
        let lower = line.to_lowercase();
        match url {
            "http://127.0.0.1/" => assert!(
                lower.contains("scheme") || lower.contains("http"),
                "{url}: {line:?}"
            ),
            "ftp://u:secretpw@127.0.0.1:99999/" => {
                assert!(lower.contains("port"), "{url}: {line:?}")
            }
            _ => assert!(
                lower.contains("url") || lower.contains("ftp//nohost"),
                "{url}: {line:?}"
            ),
        }
    }
}

// ---------------------------------------------------------------------------
// 4. Missing mount point
// ---------------------------------------------------------------------------

#[test]
fn missing_or_non_directory_mount_point_is_one_line_error() {
    let server = FtpServer::pyftpdlib();
    let parent = tempfile::tempdir().expect("tempdir");
    let missing = parent.path().join("does-not-exist");
    let file = parent.path().join("a-file");
    fs::write(&file, b"x").unwrap();

    for (what, mp) in [("missing", &missing), ("regular file", &file)] {
        let mp_s = mp.to_str().unwrap();
        let (status, out, err, took) = ftpfs(
            &[&server.url(), mp_s],
            &[("FTPFS_PASSWORD", &server.password)],
        );
        let line = assert_one_line_failure(what, status, &out, &err);
        assert!(
            line.contains("mount point") && line.contains(mp_s),
            "{what}: the message must name the mount point {mp_s}: {line:?}"
        );
        assert!(
            took < Duration::from_secs(5),
            "{what}: took {took:?} to fail"
        );
        assert!(!err.contains(&server.password), "password leaked: {err:?}");
        assert_not_mounted(what, mp);
    }
    assert!(!missing.exists(), "ftpfs created the missing mount point");
}

/// Each failing start-up prints exactly this one line, in the background
/// (the default: the parent prints what the child reports) as with -f.
#[test]
fn startup_failures_print_exactly_this() {
    let server = FtpServer::pyftpdlib_with_args(&["--auth-failed-delay", "0"]);
    let parent = tempfile::tempdir().expect("tempdir");
    let parent_path = fs::canonicalize(parent.path()).expect("canonicalize");
    let missing = parent_path.join("missing");
    let full = parent_path.join("full");
    fs::create_dir(&full).unwrap();
    fs::write(full.join("keep.txt"), b"x").unwrap();
    let mnt = MountDir::new();
    let port = server.port;
    let closed = free_port();
    let user = format!("ftp://ftpuser@127.0.0.1:{port}/");
    let pw = [("FTPFS_PASSWORD", server.password.as_str())];
    let bad = [("FTPFS_PASSWORD", "not-the-password")];
    let (m, f) = (missing.to_str().unwrap(), full.to_str().unwrap());
    type Case<'a> = (&'a str, String, &'a str, &'a [(&'a str, &'a str)], String);
    let cases: Vec<Case> = vec![
        (
            "missing mount point",
            user.clone(),
            m,
            &pw,
            format!("ftpfs: mount point {m} does not exist (create it with mkdir)"),
        ),
        (
            "mount point not empty",
            user.clone(),
            f,
            &pw,
            format!(
                "ftpfs: mount point {f} is not empty (mounting would hide its files; \
                 add -o nonempty to mount over them anyway)"
            ),
        ),
        (
            "refused login",
            user.clone(),
            mnt.as_str(),
            &bad,
            format!(
                "ftpfs: cannot mount ftp://ftpuser@127.0.0.1:{port}: login as \"ftpuser\" \
                 refused: 530 Authentication failed."
            ),
        ),
        (
            "unreachable host",
            format!("ftp://ftpuser@127.0.0.1:{closed}/"),
            mnt.as_str(),
            &pw,
            format!(
                "ftpfs: cannot mount ftp://ftpuser@127.0.0.1:{closed}: connect to \
                 127.0.0.1:{closed}: Connection refused (os error 111)"
            ),
        ),
        (
            "TLS refused",
            format!("ftpes://ftpuser@127.0.0.1:{port}/"),
            mnt.as_str(),
            &pw,
            format!(
                "ftpfs: cannot mount ftpes://ftpuser@127.0.0.1:{port}: 127.0.0.1 refused TLS \
                 (AUTH TLS: 500 Command \"AUTH\" not understood.); use ftp:// for plain FTP, \
                 or -o tls=try to fall back to it"
            ),
        ),
    ];
    for (what, url, mp, env, want) in &cases {
        for foreground in [false, true] {
            let mut args = vec![url.as_str(), mp];
            if foreground {
                args.insert(0, "-f");
            }
            let (status, out, err, _) = ftpfs(&args, env);
            let line = assert_one_line_failure(what, status, &out, &err);
            eprintln!("[{what}, foreground={foreground}] {line}");
            assert_eq!(&line, want, "{what} (foreground={foreground})");
            assert_not_mounted(what, Path::new(mp));
        }
    }
    assert!(!missing.exists(), "ftpfs created the missing mount point");
    assert!(full.join("keep.txt").exists());
}

// ---------------------------------------------------------------------------
// 5. Unknown -o option
// ---------------------------------------------------------------------------

#[test]
fn unknown_mount_option_is_refused() {
    let server = FtpServer::pyftpdlib();
    let mnt = MountDir::new();
    let (status, out, err, _) = ftpfs(
        &[
            "-o",
            "connections=2,no_such_option=3",
            &server.url(),
            mnt.as_str(),
        ],
        &[("FTPFS_PASSWORD", &server.password)],
    );
    let line = assert_one_line_failure("unknown option", status, &out, &err);
    assert!(
        line.contains("unknown mount option") && line.contains("no_such_option"),
        "{line:?}"
    );
    assert_not_mounted("unknown option", &mnt.path);
}

// ---------------------------------------------------------------------------
// 6. --help
// ---------------------------------------------------------------------------

#[test]
fn help_lists_every_readme_option_with_its_default() {
    let (status, out, err, _) = ftpfs(&["--help"], &[]);
    assert_eq!(status.code(), Some(0), "--help: {status}\n{err}");
    assert!(out.contains("Usage:"), "{out}");

    // The README's options table (`| `name` | default | meaning |`) and the
    // code's list of options say the same, option for option.
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let table: Vec<(String, String)> = readme
        .lines()
        .skip_while(|l| *l != "## Options")
        .skip(1)
        .take_while(|l| !l.starts_with("## "))
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.split(" | ").collect();
            let clean = |c: &str| c.trim_matches(|ch| ch == '|' || ch == ' ').replace('`', "");
            (clean(cells[0]), clean(cells[1]))
        })
        .collect();
    let code: Vec<(String, String)> = ftpfs::cli::OPTIONS
        .iter()
        .map(|(name, default, _)| (name.to_string(), default.to_string()))
        .collect();
    assert_eq!(
        table, code,
        "README's options table and cli::OPTIONS differ"
    );

    // --help lists each with its default (an entry may wrap onto following lines).
    let lines: Vec<&str> = out.lines().collect();
    let starts = |l: &str, name: &str| l.starts_with("  ") && l.trim_start().starts_with(name);
    for (name, default) in &code {
        let i = lines
            .iter()
            .position(|l| starts(l, name))
            .unwrap_or_else(|| panic!("--help does not list option {name}:\n{out}"));
        let mut entry = lines[i].to_string();
        for l in &lines[i + 1..] {
            if l.trim().is_empty() || code.iter().any(|(n, _)| starts(l, n)) {
                break;
            }
            entry.push(' ');
            entry.push_str(l.trim());
        }
        assert!(
            entry.contains(&format!("[default: {default}]")),
            "option {name}: expected [default: {default}]: {entry:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// 7. Password in the URL is hidden from /proc/PID/cmdline
// ---------------------------------------------------------------------------

#[test]
fn url_password_is_wiped_from_cmdline() {
    let server = FtpServer::pyftpdlib();
    server.create_file("hello.txt", b"hello\n");
    let url = format!(
        "ftp://ftpuser:{}@127.0.0.1:{}/",
        server.password, server.port
    );
    let m = Mount::try_spawn(&url, None, &[], &[], &[]).unwrap_or_else(|e| panic!("{e}"));
    let pid = m.pid().expect("ftpfs pid");

    let raw = fs::read(format!("/proc/{pid}/cmdline")).expect("read cmdline");
    let shown = String::from_utf8_lossy(&raw).replace('\0', " ");
    // Sanity: this is the ftpfs process of this mount.
    assert!(
        shown.contains(m.dir.to_str().unwrap()),
        "cmdline of {pid} does not mention the mount point: {shown:?}"
    );
    assert!(
        !contains_bytes(&raw, server.password.as_bytes()),
        "the password is visible in /proc/{pid}/cmdline: {shown:?}"
    );
    assert!(
        shown.contains(&format!("127.0.0.1:{}", server.port)),
        "the URL (without password) should still be shown: {shown:?}"
    );
    // Nor in /proc/self/mountinfo (the fsname) or in the log.
    let info = mountinfo_fields(&m.dir).expect("mountinfo line").join(" ");
    assert!(!info.contains(&server.password), "mountinfo: {info}");
    assert!(!m.log().contains(&server.password), "log:\n{}", m.log());

    // And the mount works.
    assert_eq!(ls(&m.dir), "hello.txt\n");
    assert_eq!(fs::read(m.path("hello.txt")).unwrap(), b"hello\n");
}

// ---------------------------------------------------------------------------
// 8. Password sources
// ---------------------------------------------------------------------------

fn assert_mount_works(what: &str, m: &Mount, server: &FtpServer) {
    assert_eq!(
        names(&m.dir),
        vec!["data.txt".to_string()],
        "{what}\n{}",
        m.log()
    );
    assert_eq!(
        fs::read(m.path("data.txt")).unwrap(),
        b"some data\n",
        "{what}"
    );
    assert!(
        !m.log().contains(&server.password),
        "{what}: password in log:\n{}",
        m.log()
    );
}

#[test]
fn password_from_password_file() {
    let server = FtpServer::pyftpdlib();
    server.create_file("data.txt", b"some data\n");
    let dir = tempfile::tempdir().unwrap();
    let pwfile = dir.path().join("pw");
    // Only the first line counts.
    fs::write(&pwfile, format!("{}\nnot-the-password\n", server.password)).unwrap();
    // Private, as ftpfs insists.
    fs::set_permissions(&pwfile, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let opt = format!("password_file={}", pwfile.display());
    let m = Mount::try_spawn(&server.url(), None, &[&opt], &[], &[("NETRC", "/dev/null")])
        .unwrap_or_else(|e| panic!("password_file: {e}"));
    assert_mount_works("password_file", &m, &server);
}

#[test]
fn password_from_environment() {
    let server = FtpServer::pyftpdlib();
    server.create_file("data.txt", b"some data\n");
    let m = Mount::try_spawn(
        &server.url(),
        Some(&server.password),
        &[],
        &[],
        &[("NETRC", "/dev/null")],
    )
    .unwrap_or_else(|e| panic!("FTPFS_PASSWORD: {e}"));
    assert_mount_works("FTPFS_PASSWORD", &m, &server);
}

#[test]
fn user_and_password_from_netrc() {
    let server = FtpServer::pyftpdlib();
    server.create_file("data.txt", b"some data\n");
    let dir = tempfile::tempdir().unwrap();
    let netrc = dir.path().join("netrc");
    fs::write(
        &netrc,
        format!(
            "machine other.example.com login nobody password nope\n\
             machine 127.0.0.1\n  login ftpuser\n  password {}\n",
            server.password
        ),
    )
    .unwrap();
    let url = format!("ftp://127.0.0.1:{}/", server.port); // no user
    let m = Mount::try_spawn(&url, None, &[], &[], &[("NETRC", netrc.to_str().unwrap())])
        .unwrap_or_else(|e| panic!("netrc: {e}"));
    assert_mount_works("netrc", &m, &server);
    let users = server.commands_named("USER");
    assert!(
        !users.is_empty() && users.iter().all(|u| u == "USER ftpuser"),
        "netrc login not used: {users:?}"
    );
}

// ---------------------------------------------------------------------------
// 9. Background mode
// ---------------------------------------------------------------------------

/// Kills (by pid) a background ftpfs left running by a failed test.
struct PidGuard(Vec<u32>);

impl Drop for PidGuard {
    fn drop(&mut self) {
        for &pid in &self.0 {
            if alive(pid) {
                let _ = Command::new("kill")
                    .args(["-s", "KILL", &pid.to_string()])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

/// `fusermount3 -u dir`, which must succeed.
fn fusermount_u(dir: &Path) {
    let un = Command::new("fusermount3")
        .arg("-u")
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run fusermount3");
    assert!(
        un.status.success(),
        "fusermount3 -u: {}",
        String::from_utf8_lossy(&un.stderr)
    );
}

#[test]
fn background_mode_mounts_then_exits_on_unmount() {
    let server = FtpServer::pyftpdlib();
    server.create_file("file.bin", &support::gen_bytes(300_000, 9));
    // Drops run in reverse order: a leftover daemon is killed first, then
    // MountDir unmounts whatever is left.
    let mnt = MountDir::new();
    let mut guard = PidGuard(Vec::new());

    let (status, out, err, took) = ftpfs(
        &[&server.url(), mnt.as_str()],
        &[("FTPFS_PASSWORD", &server.password), ("NETRC", "/dev/null")],
    );
    // Record the daemon before any assertion can fail.
    guard.0 = ftpfs_pids_for(&mnt.path);
    assert_eq!(
        status.code(),
        Some(0),
        "background ftpfs: {status} after {took:?}\nstdout: {out}\nstderr: {err}"
    );
    assert!(!err.contains("ftpfs:"), "unexpected error output: {err:?}");
    // Mounted as soon as the foreground process has returned.
    assert_eq!(
        mount_fstype(&mnt.path).as_deref(),
        Some("fuse.ftpfs"),
        "fstype right after ftpfs returned"
    );
    assert_eq!(
        guard.0.len(),
        1,
        "expected one background ftpfs for {}: {:?}",
        mnt.path.display(),
        guard.0
    );
    let pid = guard.0[0];

    assert_eq!(
        fs::read(mnt.path.join("file.bin")).expect("read through the mount"),
        support::gen_bytes(300_000, 9)
    );

    fusermount_u(&mnt.path);
    assert!(!is_mounted(&mnt.path), "still mounted after fusermount3 -u");
    assert!(
        wait_until(Duration::from_secs(5), || !alive(pid)),
        "background ftpfs {pid} still running 5 s after unmount: {:?}",
        proc_argv(pid)
    );
}

#[test]
fn background_mode_logs_to_syslog_without_the_password() {
    let server = FtpServer::pyftpdlib_with_args(&["--refuse-stor"]);
    let mnt = MountDir::new();
    let mut guard = PidGuard(Vec::new());
    // A stand-in for /dev/log.
    let logdir = tempfile::tempdir().unwrap();
    let sock_path = logdir.path().join("log");
    let syslog = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    syslog
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let (status, _out, err, _) = ftpfs(
        &[&server.url(), mnt.as_str()],
        &[
            ("FTPFS_PASSWORD", &server.password),
            ("NETRC", "/dev/null"),
            ("FTPFS_SYSLOG_SOCKET", sock_path.to_str().unwrap()),
        ],
    );
    guard.0 = ftpfs_pids_for(&mnt.path);
    assert_eq!(status.code(), Some(0), "{err}");
    // A refused upload is a warning; in the background it goes to syslog.
    let write = fs::File::create(mnt.path.join("refused.txt")).and_then(|mut f| {
        std::io::Write::write_all(&mut f, b"x")?;
        f.sync_all()
    });
    assert!(write.is_err());
    let mut lines = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = syslog.recv(&mut buf) {
        let line = String::from_utf8_lossy(&buf[..n]).into_owned();
        let done = line.contains("553");
        lines.push(line);
        if done {
            break;
        }
    }
    let refused = lines.iter().find(|l| l.contains("553"));
    assert!(
        refused.is_some_and(|l| l.starts_with("<28>ftpfs[") || l.starts_with("<27>ftpfs[")),
        "no syslog line about the refused STOR: {lines:?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains(&server.password)),
        "{lines:?}"
    );
    fusermount_u(&mnt.path);
}

// ---------------------------------------------------------------------------
// 10. Signals
// ---------------------------------------------------------------------------

fn signal_unmounts_and_exits_zero(sig: &str) {
    let server = FtpServer::pyftpdlib();
    server.create_file("a.txt", b"a\n");
    let mut m = Mount::new(&server, &[]);
    assert_eq!(names(&m.dir), vec!["a.txt".to_string()]);
    assert!(m.signal(sig), "kill -s {sig} failed");
    let status = m.wait_exit(Duration::from_secs(10));
    assert!(
        status.is_some(),
        "ftpfs still running 10 s after SIG{sig}\n{}",
        m.log()
    );
    let status = status.unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIG{sig}: {status}\n{}",
        m.log()
    );
    assert!(!m.is_mounted(), "still mounted after SIG{sig}");
}

#[test]
fn sigterm_unmounts_and_exits_zero() {
    signal_unmounts_and_exits_zero("TERM");
}

#[test]
fn sigint_unmounts_and_exits_zero() {
    signal_unmounts_and_exits_zero("INT");
}

// ---------------------------------------------------------------------------
// 11. Debug output
// ---------------------------------------------------------------------------

#[test]
fn debug_flag_logs_ftp_commands_with_password_masked() {
    let server = FtpServer::pyftpdlib();
    server.create_file("listed.txt", b"x\n");
    // RUST_LOG empty: the output comes from -d alone.
    let m = Mount::try_spawn(
        &server.url(),
        Some(&server.password),
        &[],
        &["-d"],
        &[("RUST_LOG", "")],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ls(&m.dir), "listed.txt\n");
    let has_listing = |log: &str| log.contains("> MLSD") || log.contains("> LIST");
    assert!(
        wait_until(Duration::from_secs(5), || has_listing(&m.log())),
        "no MLSD/LIST in the -d log:\n{}",
        m.log()
    );
    let log = m.log();
    assert!(log.contains("> USER ftpuser"), "log:\n{log}");
    assert!(log.contains("> PASS ****"), "log:\n{log}");
    assert!(
        !log.contains(&server.password),
        "password in the -d log:\n{log}"
    );
}

/// Even at trace level (suppaftp logs every line it sends) and with
/// `-o debug`, the password never reaches the log.
#[test]
fn trace_logging_never_shows_the_password() {
    let server = FtpServer::pyftpdlib();
    server.create_file("d/f.txt", b"content\n");
    let m = Mount::try_spawn(
        &server.url(),
        Some(&server.password),
        &["debug"],
        &[],
        &[("RUST_LOG", "trace")],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(names(&m.dir), vec!["d".to_string()]);
    assert_eq!(fs::read(m.path("d/f.txt")).unwrap(), b"content\n");
    let log = m.log();
    assert!(log.contains("PASS ****"), "log:\n{log}");
    assert!(
        !log.contains(&server.password),
        "password in the trace log:\n{log}"
    );
}

// ---------------------------------------------------------------------------
// 12. Read-only mount
// ---------------------------------------------------------------------------

#[test]
fn ro_mount_refuses_writes_and_reads() {
    let server = FtpServer::pyftpdlib();
    server.create_file("existing.txt", b"existing\n");
    let m = Mount::new(&server, &["ro"]);

    let opts = mount_options(&m.dir).expect("mountinfo");
    assert!(opts.iter().any(|o| o == "ro"), "mount options {opts:?}");

    let writes_refused = |what: &str, r: std::io::Result<()>| match r {
        Ok(()) => panic!("{what} succeeded on a ro mount"),
        Err(e) => assert!(
            matches!(
                e.raw_os_error(),
                Some(libc::EROFS) | Some(libc::EACCES) | Some(libc::EPERM)
            ),
            "{what}: expected EROFS/EACCES/EPERM, got {e:?}"
        ),
    };
    writes_refused("create", fs::File::create(m.path("new.txt")).map(|_| ()));
    writes_refused(
        "open existing for writing",
        fs::OpenOptions::new()
            .write(true)
            .open(m.path("existing.txt"))
            .map(|_| ()),
    );
    writes_refused("mkdir", fs::create_dir(m.path("newdir")));
    writes_refused("unlink", fs::remove_file(m.path("existing.txt")));
    assert!(!server.path("new.txt").exists());
    assert!(!server.path("newdir").exists());
    assert!(server.path("existing.txt").exists());

    assert_eq!(fs::read(m.path("existing.txt")).unwrap(), b"existing\n");
    assert_eq!(names(&m.dir), vec!["existing.txt".to_string()]);
}

// ---------------------------------------------------------------------------
// 13. URL with a path
// ---------------------------------------------------------------------------

#[test]
fn url_path_is_the_mount_root() {
    let server = FtpServer::pyftpdlib();
    server.create_file("top.txt", b"top\n");
    server.create_file("sub/inner.txt", b"inner\n");
    server.create_file("sub/deeper/leaf.txt", b"leaf\n");
    let m = Mount::new_at(&server, "sub", &[]);
    assert_eq!(
        names(&m.dir),
        vec!["deeper".to_string(), "inner.txt".to_string()],
        "{}",
        m.log()
    );
    assert_eq!(fs::read(m.path("inner.txt")).unwrap(), b"inner\n");
    assert_eq!(fs::read(m.path("deeper/leaf.txt")).unwrap(), b"leaf\n");
    assert!(!m.path("top.txt").exists());
    let src = mountinfo_fields(&m.dir).expect("mountinfo").join(" ");
    assert!(
        src.contains("/sub"),
        "the source in mountinfo should show the path: {src}"
    );
}
