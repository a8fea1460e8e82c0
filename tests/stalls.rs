//! Contention inside one mount: a slow transfer must not stall metadata, a
//! server that allows only two connections must still serve a `git clone`,
//! and two processes appending to one file must both see every line land.
//! The slow server is pyftpdlib with `--throttle` (every data connection paced
//! from its first byte), the stingy one pyftpdlib with `--max-cons-per-ip`.
//! Latencies are printed (`cargo test --test stalls -- --nocapture`); the
//! asserted bounds are generous, not benchmarks.

#[macro_use]
mod support;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::IntoRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use support::{
    diag, files_equal, gen_bytes, tail, wait_timeout, within, write_file, FtpServer, Mount,
};
use tempfile::TempDir;

on_both_servers!(concurrent_appends_all_land);

/// Pace of every data connection of the slow server: 1 MiB/s.
const THROTTLE: &str = "1048576";
/// Size of the big file: 10 s per direction at [`THROTTLE`].
const BIG: usize = 10_000_000;
/// The worst `ls -l` (or `stat`) we accept while a big transfer runs. The
/// target is 0.5 s; this leaves room for a loaded CI machine.
const WORST_OK: Duration = Duration::from_secs(2);
/// Pause between two metadata probes.
const PROBE_EVERY: Duration = Duration::from_millis(100);
/// A probe that takes this long counts as hung (and as this long).
const PROBE_LIMIT: Duration = Duration::from_secs(60);
/// Upper bound for a whole big transfer (20 s expected).
const TRANSFER_LIMIT: Duration = Duration::from_secs(180);

// ---------------------------------------------------------------------------
// Metadata during a big transfer
// ---------------------------------------------------------------------------

/// The throttled server with `ten.bin` (10 MB) and a few small files, and a
/// mount whose caches expire after 1 s, so that `ls -l` during the transfer
/// needs fresh listings from the server and cannot be answered from the cache.
fn slow_server_and_mount() -> (FtpServer, Mount, Vec<u8>) {
    let s = FtpServer::pyftpdlib_with_args(&["--throttle", THROTTLE]);
    let ten = gen_bytes(BIG, 10);
    s.create_file("ten.bin", &ten);
    for (i, name) in ["a.txt", "b.txt", "c.txt", "notes.md"].iter().enumerate() {
        s.create_file(name, format!("small file {i}\n").as_bytes());
    }
    let m = Mount::new(&s, &["cache_timeout=1"]);
    (s, m, ten)
}

/// `ls -l dir` (every entry's lstat) and `stat other`: how long it took and
/// which step was the slowest.
fn probe(dir: &Path, other: &Path) -> io::Result<(Duration, String)> {
    let t0 = Instant::now();
    let mut slowest = (Duration::ZERO, String::new());
    let mut step = |what: String, t: Instant| {
        if t.elapsed() > slowest.0 {
            slowest = (t.elapsed(), what);
        }
    };
    let t = Instant::now();
    let entries = fs::read_dir(dir)?.collect::<io::Result<Vec<_>>>()?;
    step("readdir".into(), t);
    for e in entries {
        let t = Instant::now();
        fs::symlink_metadata(e.path())?;
        step(format!("lstat {}", e.file_name().to_string_lossy()), t);
    }
    let t = Instant::now();
    fs::metadata(other)?;
    step(format!("stat {}", other.display()), t);
    Ok((t0.elapsed(), format!("{} took {:?}", slowest.1, slowest.0)))
}

/// What the probes saw while the work ran: each probe's time and slowest step.
struct Latencies {
    all: Vec<(Duration, String)>,
    errors: Vec<String>,
}

impl Latencies {
    fn worst(&self) -> Duration {
        self.all.iter().map(|p| p.0).max().unwrap_or_default()
    }

    fn median(&self) -> Duration {
        let mut v: Vec<Duration> = self.all.iter().map(|p| p.0).collect();
        v.sort();
        v.get(v.len() / 2).copied().unwrap_or_default()
    }

    fn summary(&self) -> String {
        let worst = self.all.iter().max_by_key(|p| p.0);
        format!(
            "{} probes, worst {:?} ({}), median {:?}, {} over {WORST_OK:?}, errors: {:?}",
            self.all.len(),
            self.worst(),
            worst.map(|p| p.1.as_str()).unwrap_or("-"),
            self.median(),
            self.all.iter().filter(|p| p.0 > WORST_OK).count(),
            self.errors
        )
    }
}

/// Runs `work` on a thread and, until it ends, probes `ls -l m.dir` and
/// `stat other` every [`PROBE_EVERY`]. Panics (with the ftpfs log) if the
/// work takes longer than [`TRANSFER_LIMIT`].
fn probe_while<R: Send + 'static>(
    m: &Mount,
    s: &FtpServer,
    other: &str,
    work: impl FnOnce() -> R + Send + 'static,
) -> (R, Latencies) {
    let (tx, rx) = mpsc::channel();
    let t0 = Instant::now();
    thread::spawn(move || {
        let _ = tx.send(work());
    });
    let mut seen = Latencies {
        all: Vec::new(),
        errors: Vec::new(),
    };
    loop {
        match rx.recv_timeout(PROBE_EVERY) {
            Ok(r) => {
                eprintln!("work took {:?}", t0.elapsed());
                return (r, seen);
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => panic!("the work thread panicked"),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        assert!(
            t0.elapsed() < TRANSFER_LIMIT,
            "the transfer did not finish within {TRANSFER_LIMIT:?}; probes so far: {}\n{}",
            seen.summary(),
            diag(m, s)
        );
        let (dir, file) = (m.dir.clone(), m.path(other));
        match within(PROBE_LIMIT, move || probe(&dir, &file)) {
            Some((Ok(p), _)) => seen.all.push(p),
            Some((Err(e), d)) => {
                seen.all.push((d, "an error".into()));
                seen.errors.push(e.to_string());
            }
            None => {
                seen.all.push((PROBE_LIMIT, "a hang".into()));
                seen.errors.push(format!("hung for {PROBE_LIMIT:?}"));
            }
        }
    }
}

/// `close(2)` whose error is returned (dropping a `File` ignores it, and
/// ftpfs reports a failed upload there).
fn close_checked(f: File) -> io::Result<()> {
    // SAFETY: the descriptor comes from into_raw_fd and is closed once.
    if unsafe { libc::close(f.into_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `echo x >> path`: open with O_APPEND, write, close.
fn append_x(path: &Path) -> io::Result<()> {
    let mut f = OpenOptions::new().append(true).open(path)?;
    f.write_all(b"x\n")?;
    close_checked(f)
}

fn assert_fast(what: &str, seen: &Latencies, m: &Mount, s: &FtpServer) {
    eprintln!("{what}: {}", seen.summary());
    assert!(
        seen.worst() < WORST_OK && seen.errors.is_empty(),
        "ls -l / stat during {what}: {}\n{}",
        seen.summary(),
        diag(m, s)
    );
}

#[test]
fn metadata_stays_fast_while_a_big_file_is_appended() {
    let (s, m, ten) = slow_server_and_mount();
    let target = m.path("ten.bin");
    let (res, seen) = probe_while(&m, &s, "a.txt", move || append_x(&target));
    res.unwrap_or_else(|e| panic!("echo x >> ten.bin: {e}\n{}", diag(&m, &s)));

    let on_server = fs::read(s.path("ten.bin")).expect("read ten.bin on the server");
    assert_eq!(
        on_server.len(),
        BIG + 2,
        "size on the server\n{}",
        diag(&m, &s)
    );
    assert!(
        on_server.ends_with(b"x\n") && on_server[..BIG] == ten[..],
        "ten.bin on the server is not the old content plus \"x\\n\"\n{}",
        diag(&m, &s)
    );
    assert_fast("echo x >> ten.bin", &seen, &m, &s);
}

#[test]
fn metadata_stays_fast_while_a_big_file_is_copied_in() {
    let (s, m, _) = slow_server_and_mount();
    let local = TempDir::new().expect("temp dir");
    let src = local.path().join("new.bin");
    write_file(&src, BIG, 11);
    let (from, to) = (src.clone(), m.path("new.bin"));
    let (out, seen) = probe_while(&m, &s, "a.txt", move || {
        Command::new("timeout")
            .args(["-k", "10", "170", "cp"])
            .arg(&from)
            .arg(&to)
            .stdin(Stdio::null())
            .output()
    });
    let out = out.expect("run cp");
    assert!(
        out.status.success(),
        "cp new.bin into the mount: {}\n{}",
        describe(&out),
        diag(&m, &s)
    );
    assert!(
        files_equal(&src, s.path("new.bin")),
        "new.bin on the server differs\n{}",
        diag(&m, &s)
    );
    assert_fast("cp of a 10 MB file into the mount", &seen, &m, &s);
}

// ---------------------------------------------------------------------------
// git clone on a server that allows two connections
// ---------------------------------------------------------------------------

/// How many commits the origin repository has.
const COMMITS: usize = 3;
/// Files added by each commit.
const FILES_PER_COMMIT: usize = 67;

/// [`support::git`] with room for a slow mount.
fn git(dir: &Path, home: &Path) -> Command {
    support::git(dir, home, 300)
}

fn describe(out: &Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        tail(&String::from_utf8_lossy(&out.stdout), 40),
        tail(&String::from_utf8_lossy(&out.stderr), 40)
    )
}

/// Runs `git -C dir args...`; panics with its output, the ftpfs log, the
/// server's commands and the server's log unless it succeeds.
fn git_ok(m: &Mount, s: &FtpServer, dir: &Path, home: &Path, args: &[&str]) -> String {
    let t0 = Instant::now();
    let mut cmd = git(dir, home);
    let out = cmd
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    eprintln!("git {} took {:?}", args.join(" "), t0.elapsed());
    assert!(
        out.status.success(),
        "{cmd:?} -> {}\n{}\n--- server log (tail) ---\n{}",
        describe(&out),
        diag(m, s),
        tail(&s.log(), 40)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A local repository with [`COMMITS`] commits of a few KB of random data per
/// file, packed by `git gc` (so that a clone transfers and writes a pack).
fn origin_repo(home: &Path) -> PathBuf {
    let origin = home.join("origin");
    fs::create_dir(&origin).expect("mkdir origin");
    let run = |cmd: &mut Command| {
        let out = cmd.output().expect("run git");
        assert!(out.status.success(), "{cmd:?}: {}", describe(&out));
    };
    run(git(&origin, home).args(["init", "-q"]));
    for c in 0..COMMITS {
        for f in 0..FILES_PER_COMMIT {
            let seed = (c * FILES_PER_COMMIT + f) as u64;
            let len = 2000 + (seed as usize * 37) % 4000;
            write_file(origin.join(format!("d{c}/f{f}.bin")), len, seed);
        }
        run(git(&origin, home).args(["add", "-A"]));
        run(git(&origin, home).args(["commit", "-q", "-m", &format!("commit {c}")]));
    }
    run(git(&origin, home).args(["gc", "-q"]));
    let packs = fs::read_dir(origin.join(".git/objects/pack"))
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".pack"))
                .count()
        })
        .unwrap_or(0);
    assert!(packs > 0, "git gc wrote no pack in {}", origin.display());
    origin
}

/// Connections the server turned away with 421 so far.
fn refused(s: &FtpServer) -> usize {
    s.log().matches("Too many connections").count()
}

/// Three 4 MiB files for [`meet_the_limit`] (created before the mount, so
/// that its first listing has them).
fn warm_up_files(s: &FtpServer) -> Vec<String> {
    let names: Vec<String> = (0..3).map(|i| format!("warm-up-{i}.bin")).collect();
    for (i, name) in names.iter().enumerate() {
        s.create_file(name, &gen_bytes(4 << 20, i as u64));
    }
    names
}

/// Makes ftpfs meet the server's limit of `limit` (1 or 2): three files read
/// at once (each open reader keeps its download going), so that a connection
/// beyond the limit gets a 421. Every read must still succeed.
fn meet_the_limit(m: &Mount, s: &FtpServer, names: &[String], limit: usize) {
    let paths: Vec<PathBuf> = names.iter().map(|n| m.path(n)).collect();
    let reads = within(Duration::from_secs(120), move || {
        let mut open = Vec::new();
        for p in &paths {
            let mut f = File::open(p)?;
            let mut buf = vec![0u8; 256 * 1024];
            f.read_exact(&mut buf)?;
            open.push(f);
        }
        io::Result::Ok(open.len())
    });
    let outcome = match &reads {
        Some((Ok(_), took)) => format!("took {took:?}"),
        Some((Err(e), took)) => format!("failed after {took:?}: {e}"),
        None => "hung for 120 s".to_string(),
    };
    eprintln!(
        "three readers at once {outcome}; the server refused {} connections",
        refused(s)
    );
    assert!(
        matches!(reads, Some((Ok(3), _))),
        "three readers at once on a {limit}-connection server: {outcome}\n{}",
        diag(m, s)
    );
    assert!(
        refused(s) > 0,
        "ftpfs never met the server's limit of {limit} connections, so this test \
         tests nothing\n{}",
        diag(m, s)
    );
}

/// Mounts a server that allows `limit` connections per client with the
/// default pool of 4, makes ftpfs meet the limit, then clones a repository
/// with a pack into the mount and checks it with `git fsck --full`.
fn git_clone_works_with_at_most(limit: usize) {
    let s = FtpServer::pyftpdlib_with_args(&["--max-cons-per-ip", &limit.to_string()]);
    // The default pool size is 4; the server's 421 must teach ftpfs the limit.
    let warm_up = warm_up_files(&s);
    let m = Mount::new(&s, &["connections=4"]);
    meet_the_limit(&m, &s, &warm_up, limit);
    let home = TempDir::new().expect("temp dir");
    let h = home.path();
    let origin = origin_repo(h);

    let url = format!("file://{}", origin.display());
    let clone = m.path("clone");
    let dest = clone.to_str().expect("mount path is UTF-8");
    git_ok(&m, &s, h, h, &["clone", "-q", "--no-hardlinks", &url, dest]);
    git_ok(&m, &s, &clone, h, &["fsck", "--full"]);
    let log = git_ok(&m, &s, &clone, h, &["log", "--oneline"]);
    eprintln!(
        "limit {limit}: ftpfs logged in {} times; the server refused {} connections with 421",
        s.commands_named("USER").len(),
        refused(&s)
    );
    assert_eq!(
        log.lines().count(),
        COMMITS,
        "git log:\n{log}\n{}",
        diag(&m, &s)
    );
    let (_, status, _) = m.status();
    let learnt = format!("limit {limit} (learnt from the server; 4 configured)");
    assert!(
        status.contains(&learnt),
        "ftpfs status does not show \"{learnt}\":\n{status}"
    );
}

#[test]
fn git_clone_works_on_a_two_connection_server() {
    git_clone_works_with_at_most(2);
}

/// Everything works on a server that allows a single connection, only more
/// slowly: there the one connection serves listings, downloads and uploads in
/// turn, and a streaming upload or an open reader must give it up.
#[test]
fn git_clone_works_on_a_one_connection_server() {
    git_clone_works_with_at_most(1);
}

// ---------------------------------------------------------------------------
// Two processes appending to one file
// ---------------------------------------------------------------------------

/// Lines each appender writes.
const LINES: usize = 150;
/// Rounds of the race, each on a fresh file.
const ROUNDS: usize = 3;
/// Upper bound for one round (both loops).
const ROUND_LIMIT: Duration = Duration::from_secs(300);

/// `for i in $(seq LINES); do echo "$p $i" >> "$f"; done` in the background.
fn appender(p: &str, f: &Path) -> Child {
    Command::new("sh")
        .arg("-c")
        .arg(format!(
            "for i in $(seq {LINES}); do echo \"$0 $i\" >> \"$1\"; done"
        ))
        .arg(p)
        .arg(f)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sh")
}

/// Waits for an appender (killing it at `deadline`); `Err` with what it
/// printed unless it ended well and silently.
fn finish(p: &str, mut child: Child, deadline: Instant) -> Result<(), String> {
    let left = deadline.saturating_duration_since(Instant::now());
    let killed = wait_timeout(&mut child, left).is_none();
    if killed {
        let _ = child.kill();
    }
    let out = child.wait_with_output().expect("wait for sh");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && printed.is_empty() && !killed {
        return Ok(());
    }
    Err(format!(
        "appender {p}: {}{}, printed {} lines, the last ones:\n{}",
        out.status,
        if killed { " (killed: too slow)" } else { "" },
        printed.lines().count(),
        tail(&printed, 10)
    ))
}

/// `("A", 7)` for the line "A 7"; `None` for a line no writer wrote.
fn parse_line(line: &str) -> Option<(&str, usize)> {
    let (p, n) = line.split_once(' ')?;
    let n: usize = n.parse().ok()?;
    (matches!(p, "A" | "B") && (1..=LINES).contains(&n)).then_some((p, n))
}

/// Checks that `data` holds "A 1".."A LINES" and "B 1".."B LINES", each line
/// once, each writer's lines in order, and no NUL byte.
fn check_appends(data: &[u8]) -> Result<(), String> {
    let text = String::from_utf8_lossy(data);
    let lines: Vec<&str> = text.lines().collect();
    let parsed: Vec<(&str, usize)> = lines.iter().filter_map(|l| parse_line(l)).collect();
    let mut problems = Vec::new();
    let nuls = data.iter().filter(|b| **b == 0).count();
    if nuls > 0 {
        problems.push(format!("{nuls} NUL bytes"));
    }
    if lines.len() != 2 * LINES {
        problems.push(format!("{} lines, want {}", lines.len(), 2 * LINES));
    }
    if parsed.len() != lines.len() {
        problems.push(format!(
            "{} lines that no writer wrote",
            lines.len() - parsed.len()
        ));
    }
    for p in ["A", "B"] {
        let mine: Vec<usize> = parsed.iter().filter(|l| l.0 == p).map(|l| l.1).collect();
        let missing = (1..=LINES).filter(|i| !mine.contains(i)).count();
        let repeated = mine.len() + missing - LINES;
        let in_order = mine.windows(2).all(|w| w[0] < w[1]);
        if missing > 0 || repeated > 0 || !in_order {
            problems.push(format!(
                "{p}: {} lines, {missing} missing, {repeated} repeated, {}",
                mine.len(),
                if in_order { "in order" } else { "out of order" }
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// One race on `name`: both appenders at once, then the file through the
/// mount and on the server. Returns what went wrong, if anything.
fn append_round(m: &Mount, s: &FtpServer, name: &str) -> Vec<String> {
    let f = m.path(name);
    let t0 = Instant::now();
    let (a, b) = (appender("A", &f), appender("B", &f));
    let deadline = t0 + ROUND_LIMIT;
    let mut problems: Vec<String> = [finish("A", a, deadline), finish("B", b, deadline)]
        .into_iter()
        .filter_map(Result::err)
        .collect();
    eprintln!("{name}: both loops done after {:?}", t0.elapsed());
    for (place, path) in [("through the mount", f), ("on the server", s.path(name))] {
        match fs::read(&path) {
            Ok(data) => {
                let verdict = check_appends(&data);
                eprintln!("{name} {place}: {verdict:?}");
                if let Err(e) = verdict {
                    problems.push(format!("{name} {place}: {e}"));
                }
            }
            Err(e) => problems.push(format!("{name} {place}: cannot read: {e}")),
        }
    }
    problems
}

fn concurrent_appends_all_land(s: FtpServer) {
    let m = Mount::new(&s, &[]);
    let problems: Vec<String> = (0..ROUNDS)
        .flat_map(|round| append_round(&m, &s, &format!("f{round}")))
        .collect();
    assert!(
        problems.is_empty(),
        "concurrent appends on {}:\n{}\n{}",
        s.flavor.name(),
        problems.join("\n"),
        diag(&m, &s)
    );
}
