//! External file-system test suites against real mounts, on pyftpdlib and on
//! vsftpd:
//!
//! * **pjdfstest** (crates.io `pjdfstest`, the Rust rewrite): the POSIX
//!   conformance groups of the operations ftpfs implements. Its results are
//!   compared with `tests/pjdfstest-expected-failures.txt`: any failure not
//!   listed there fails the test; a listed test that passes is a warning.
//! * **fsx** (crates.io `fsx`): random reads, writes, truncates, closes and
//!   reopens with every read verified, for several seeds. Operations FTP
//!   cannot do (fallocate, hole punching, copy_file_range) are off; mmap is
//!   used when the mount supports shared writable mappings.
//!
//! Both tools are installed by `scripts/test.sh` (`install_test_tools` in
//! `scripts/lib.sh`, i.e. `cargo install --locked pjdfstest fsx`). A missing
//! tool fails the test instead of skipping it.
//!
//! Knobs for reproducing a failure (environment variables):
//!
//! * `FTPFS_FSX_SEEDS=7,8` runs fsx with these seeds instead of the defaults;
//! * `FTPFS_FSX_OPS=500` sets the number of operations per seed.
//!
//! For example:
//! `FTPFS_FSX_SEEDS=2 cargo test --test external fsx_on_vsftpd -- --nocapture`.

mod support;

use support::tail;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use support::{FtpServer, Mount, ServerKind};

// ---------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------

/// pjdfstest groups (test-name prefixes) for the operations ftpfs implements.
const PJDFSTEST_GROUPS: &[&str] = &[
    "open",
    "mkdir",
    "rmdir",
    "unlink",
    "rename",
    "truncate",
    "ftruncate",
    "chmod",
    "utimensat",
];

/// The expected-failures list, relative to the crate root.
const EXPECTED_FAILURES_FILE: &str = "tests/pjdfstest-expected-failures.txt";

/// Server names usable in `[...]` tags of the expected-failures list.
const SERVER_NAMES: &[&str] = &["pyftpdlib", "vsftpd"];

/// pjdfstest sleeps this long (seconds) before checking that a timestamp
/// changed. MLSD times have whole seconds, so it must exceed 1 s.
const PJDFSTEST_NAPTIME: f64 = 1.1;

/// Kill pjdfstest after this long (a local disk takes about a minute, mostly
/// the naps).
const PJDFSTEST_TIMEOUT: Duration = Duration::from_secs(285);

/// Default fsx seeds (fixed, so failures reproduce) and operations per seed.
const FSX_SEEDS: &[u64] = &[1, 2, 3];
const FSX_OPS: u64 = 10_000;

/// The fsx runs go in parallel (one file each); kill any after this long.
const FSX_TIMEOUT: Duration = Duration::from_secs(240);

/// What fsx prints when every operation verified.
const FSX_OK: &str = "All operations completed A-OK!";

/// Lines of the ftpfs log and of tool output quoted in failure messages.
const LOG_TAIL_LINES: usize = 80;

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[test]
fn pjdfstest_on_pyftpdlib() {
    pjdfstest_on(FtpServer::pyftpdlib());
}

#[test]
fn pjdfstest_on_vsftpd() {
    pjdfstest_on(FtpServer::vsftpd());
}

#[test]
fn fsx_on_pyftpdlib() {
    fsx_on(FtpServer::pyftpdlib());
}

#[test]
fn fsx_on_vsftpd() {
    fsx_on(FtpServer::vsftpd());
}

fn server_name(kind: ServerKind) -> &'static str {
    match kind {
        ServerKind::Pyftpdlib => "pyftpdlib",
        ServerKind::Vsftpd => "vsftpd",
    }
}

// ---------------------------------------------------------------------------
// pjdfstest
// ---------------------------------------------------------------------------

/// pjdfstest's configuration: the opt-in features ftpfs can offer, the nap
/// for timestamp checks, and two unprivileged users for the tests that switch
/// users. `rename_ctime` (ctime bumped by rename) and `posix_fallocate` stay
/// off: FTP has neither. Remount (EROFS) tests stay off too.
fn pjdfstest_config() -> String {
    let users = dummy_users()
        .iter()
        .map(|(u, g)| format!("[\"{u}\", \"{g}\"]"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "[features]\n\
         utimensat = {{}}\n\
         utime_now = {{}}\n\
         \n\
         [settings]\n\
         naptime = {PJDFSTEST_NAPTIME}\n\
         allow_remount = false\n\
         \n\
         [dummy_auth]\n\
         entries = [{users}]\n"
    )
}

/// Two (user, primary group name) pairs of existing unprivileged users:
/// `nobody` plus one system user (pjdfstest's default, a user named `tests`,
/// does not exist on Debian).
fn dummy_users() -> Vec<(String, String)> {
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    let group = fs::read_to_string("/etc/group").unwrap_or_default();
    let group_name = |gid: &str| {
        group.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 3 && f[2] == gid).then(|| f[0].to_string())
        })
    };
    let me = unsafe { libc::geteuid() }.to_string();
    let mut users: Vec<(String, String)> = Vec::new();
    let mut consider = |name: &str, uid: &str, gid: &str| {
        if uid == "0" || uid == me || users.iter().any(|(u, _)| u == name) {
            return;
        }
        if let Some(g) = group_name(gid) {
            users.push((name.to_string(), g));
        }
    };
    let entries: Vec<Vec<&str>> = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 4)
        .collect();
    for preferred in ["nobody", "daemon", "bin"] {
        if let Some(f) = entries.iter().find(|f| f[0] == preferred) {
            consider(f[0], f[2], f[3]);
        }
    }
    for f in &entries {
        consider(f[0], f[2], f[3]);
    }
    assert!(
        users.len() >= 2,
        "pjdfstest needs two unprivileged users with a primary group; found {users:?}"
    );
    users.truncate(2);
    users
}

fn pjdfstest_on(server: FtpServer) {
    let tool = find_tool("pjdfstest");
    let sname = server_name(server.kind);
    let expected = load_expected_failures(sname);

    let work = tempfile::TempDir::with_prefix("ftpfs-pjdfstest-").expect("temp dir");
    let config = work.path().join("pjdfstest.toml");
    fs::write(&config, pjdfstest_config()).expect("write pjdfstest.toml");
    // A local directory for the EXDEV case (rename across file systems).
    let secondary = work.path().join("secondary");
    fs::create_dir(&secondary).expect("mkdir secondary");

    // allow_other (which turns on default_permissions): the tests that switch
    // to an unprivileged user then see the kernel enforce the modes ftpfs
    // shows, as on a local disk, instead of being locked out of the mount.
    let mount = Mount::new(&server, &["allow_other"]);
    let dir = mount.path("pjdfstest");
    if let Err(e) = fs::create_dir(&dir) {
        panic!(
            "cannot create {} on the mount ({sname}): {e}\n--- ftpfs log (tail) ---\n{}",
            dir.display(),
            tail(&mount.log(), LOG_TAIL_LINES)
        );
    }

    let mut cmd = Command::new(&tool);
    cmd.arg("-c")
        .arg(&config)
        .arg("-p")
        .arg(&dir)
        .arg("-s")
        .arg(&secondary)
        // Names are "group::case[::filetype]"; pjdfstest selects by substring.
        .args(PJDFSTEST_GROUPS.iter().map(|g| format!("{g}::")))
        .env("NO_COLOR", "1")
        .env("RUST_BACKTRACE", "0")
        .env("RUST_LIB_BACKTRACE", "0")
        .current_dir(work.path());
    let cmdline = format!("{cmd:?}");
    let run = run_with_timeout(cmd, PJDFSTEST_TIMEOUT);
    // Captured by the test harness; shown on failure or with --nocapture.
    println!(
        "$ {cmdline}\n--- pjdfstest stdout ---\n{}\n--- pjdfstest stderr ---\n{}",
        run.stdout, run.stderr
    );

    let parsed = parse_pjdfstest(&run.stdout);
    let Some(status) = run.status else {
        panic!(
            "pjdfstest on {sname} did not finish within {PJDFSTEST_TIMEOUT:?} and was killed; \
             {} cases had finished, the last one was {:?} (the next one hung)\n\
             --- ftpfs log (tail) ---\n{}",
            parsed.cases.len(),
            parsed.cases.last().map(|c| c.name.as_str()),
            tail(&mount.log(), LOG_TAIL_LINES)
        )
    };
    if let Err(e) = check_complete(&parsed) {
        panic!(
            "pjdfstest on {sname} (exit status {status}): {e}\n--- stderr ---\n{}\n\
             --- stdout (tail) ---\n{}",
            tail(&run.stderr, LOG_TAIL_LINES),
            tail(&run.stdout, LOG_TAIL_LINES)
        );
    }
    let foreign: Vec<&str> = parsed
        .cases
        .iter()
        .map(|c| c.name.as_str())
        .filter(|n| !PJDFSTEST_GROUPS.contains(&group_of(n)))
        .collect();
    assert!(
        foreign.is_empty(),
        "pjdfstest ran cases outside the selected groups: {foreign:?}"
    );

    let verdict = judge(&parsed.cases, &expected);
    let line = format!(
        "pjdfstest: {} passed, {} failed, {} expected failures",
        verdict.passed.len(),
        verdict.unexpected_failures.len(),
        verdict.expected_failures.len()
    );
    let detail = format!(
        "({sname}: {} skipped, {} cases in {:.0} s)",
        verdict.skipped.len(),
        parsed.cases.len(),
        run.elapsed.as_secs_f64()
    );
    eprintln!("{line} {detail}");
    for (name, reason) in &verdict.unexpected_passes {
        eprintln!(
            "warning: pjdfstest on {sname}: {name} passed but is listed as an expected \
             failure ({reason}); remove it from {EXPECTED_FAILURES_FILE}"
        );
    }
    for name in &verdict.not_run {
        eprintln!(
            "warning: pjdfstest on {sname}: {name} is listed in {EXPECTED_FAILURES_FILE} \
             but pjdfstest did not run it (renamed or removed?)"
        );
    }

    if !verdict.unexpected_failures.is_empty() {
        let mut msg = format!(
            "pjdfstest on {sname}: {} unexpected failure(s). Fix ftpfs, or, only if FTP \
             cannot express the operation, list them in {EXPECTED_FAILURES_FILE} with a reason:\n",
            verdict.unexpected_failures.len()
        );
        for case in &verdict.unexpected_failures {
            msg.push_str(&format!("  {}\n", case.name));
            for d in case.details.iter().take(6) {
                msg.push_str(&format!("      {d}\n"));
            }
        }
        // The tail is the end of the run; the warnings say what went wrong
        // at the time of the failed case (a read error, a retried upload...).
        let log = mount.log();
        let warnings: Vec<&str> = log
            .lines()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .collect();
        msg.push_str(&format!(
            "--- ftpfs warnings and errors (last {LOG_TAIL_LINES}) ---\n{}\n--- ftpfs log (tail) ---\n{}",
            tail(&warnings.join("\n"), LOG_TAIL_LINES),
            tail(&log, LOG_TAIL_LINES)
        ));
        panic!("{msg}");
    }
}

/// The group of a pjdfstest case name (`"rename::preserve_metadata::fifo"` ->
/// `"rename"`).
fn group_of(name: &str) -> &str {
    name.split("::").next().unwrap_or(name)
}

/// How pjdfstest reported one case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PjdStatus {
    Ok,
    Failed,
    Skipped,
    /// Failed, and pjdfstest's own `expected_failures` setting listed it
    /// (we do not use that setting, but count it as a failure if it shows).
    FailedAsExpected,
    /// Passed although pjdfstest's own `expected_failures` listed it.
    PassedUnexpectedly,
}

impl PjdStatus {
    fn failed(self) -> bool {
        matches!(self, PjdStatus::Failed | PjdStatus::FailedAsExpected)
    }

    fn passed(self) -> bool {
        matches!(self, PjdStatus::Ok | PjdStatus::PassedUnexpectedly)
    }
}

#[derive(Debug)]
struct PjdCase {
    name: String,
    status: PjdStatus,
    /// The lines after the result line: the panic message of a failure (and
    /// a backtrace, if enabled), the reasons for a skip.
    details: Vec<String>,
}

/// pjdfstest's last line: `Summary: F failed, S skipped, P passed,
/// E expected failures, T total` (its "failed" includes unexpected passes).
#[derive(Debug, Default, PartialEq, Eq)]
struct PjdSummary {
    failed: usize,
    skipped: usize,
    passed: usize,
    expected_failures: usize,
    total: usize,
}

#[derive(Debug)]
struct PjdOutput {
    cases: Vec<PjdCase>,
    summary: Option<PjdSummary>,
}

/// Parse pjdfstest's stdout. Each case prints `NAME <padding> STATUS` on a
/// line of its own, where STATUS is `ok`, `FAILED`, `skipped`,
/// `failed as expected` or `PASSED UNEXPECTEDLY`; detail lines follow
/// (tab-indented panic message or skip reason, which may continue on
/// unindented lines, and `Backtrace:` with indented frames). Colours are
/// stripped in case they were forced on.
fn parse_pjdfstest(stdout: &str) -> PjdOutput {
    let mut cases: Vec<PjdCase> = Vec::new();
    let mut summary = None;
    for raw in stdout.lines() {
        let line = strip_ansi(raw);
        let line = line.trim_end();
        if let Some(rest) = line.strip_prefix("Summary:") {
            summary = parse_summary(rest);
            continue;
        }
        if let Some((name, status)) = parse_result_line(line) {
            cases.push(PjdCase {
                name: name.to_string(),
                status,
                details: Vec::new(),
            });
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        if let Some(last) = cases.last_mut() {
            last.details.push(line.trim_start_matches('\t').to_string());
        }
    }
    PjdOutput { cases, summary }
}

fn parse_result_line(line: &str) -> Option<(&str, PjdStatus)> {
    const STATUSES: [(&str, PjdStatus); 5] = [
        ("PASSED UNEXPECTEDLY", PjdStatus::PassedUnexpectedly),
        ("failed as expected", PjdStatus::FailedAsExpected),
        ("FAILED", PjdStatus::Failed),
        ("skipped", PjdStatus::Skipped),
        ("ok", PjdStatus::Ok),
    ];
    if line.starts_with(char::is_whitespace) {
        return None;
    }
    STATUSES.iter().find_map(|&(word, status)| {
        let head = line.strip_suffix(word)?;
        if !head.ends_with(char::is_whitespace) {
            return None;
        }
        let name = head.trim_end();
        is_case_name(name).then_some((name, status))
    })
}

/// `group::case` or `group::case::filetype`, made of identifier characters.
fn is_case_name(name: &str) -> bool {
    let parts: Vec<&str> = name.split("::").collect();
    parts.len() >= 2
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
}

fn parse_summary(rest: &str) -> Option<PjdSummary> {
    let mut s = PjdSummary::default();
    for part in rest.split(',') {
        let part = part.trim();
        let (num, what) = part.split_once(' ')?;
        let n: usize = num.parse().ok()?;
        match what.trim() {
            "failed" => s.failed = n,
            "skipped" => s.skipped = n,
            "passed" => s.passed = n,
            "expected failures" => s.expected_failures = n,
            "total" => s.total = n,
            _ => return None,
        }
    }
    Some(s)
}

/// Remove ANSI escape sequences (`ESC [ ... letter`).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// The run finished and the parser saw exactly what pjdfstest counted.
fn check_complete(out: &PjdOutput) -> Result<(), String> {
    let s = out
        .summary
        .as_ref()
        .ok_or("no \"Summary:\" line: pjdfstest did not finish (or failed to start)")?;
    let count = |f: fn(PjdStatus) -> bool| out.cases.iter().filter(|c| f(c.status)).count();
    let parsed = PjdSummary {
        failed: count(|s| matches!(s, PjdStatus::Failed | PjdStatus::PassedUnexpectedly)),
        skipped: count(|s| s == PjdStatus::Skipped),
        passed: count(|s| s == PjdStatus::Ok),
        expected_failures: count(|s| s == PjdStatus::FailedAsExpected),
        total: out.cases.len(),
    };
    if &parsed != s {
        return Err(format!(
            "result lines and pjdfstest's summary disagree: parsed {parsed:?}, summary {s:?}"
        ));
    }
    if s.total == 0 {
        return Err("pjdfstest ran no cases (wrong group names?)".to_string());
    }
    let mut seen = BTreeSet::new();
    if let Some(dup) = out.cases.iter().find(|c| !seen.insert(c.name.as_str())) {
        return Err(format!("case {} reported twice", dup.name));
    }
    Ok(())
}

#[derive(Debug, Default)]
struct Verdict<'a> {
    passed: Vec<&'a str>,
    /// Failed and not listed: these fail the test.
    unexpected_failures: Vec<&'a PjdCase>,
    /// Failed and listed.
    expected_failures: Vec<&'a str>,
    /// Passed although listed: (name, listed reason). A warning.
    unexpected_passes: Vec<(&'a str, String)>,
    skipped: Vec<&'a str>,
    /// Listed but not run at all. A warning.
    not_run: Vec<String>,
}

fn judge<'a>(cases: &'a [PjdCase], expected: &BTreeMap<String, String>) -> Verdict<'a> {
    let mut v = Verdict::default();
    for case in cases {
        let listed = expected.get(&case.name);
        if case.status == PjdStatus::Skipped {
            v.skipped.push(&case.name);
        } else if case.status.failed() {
            match listed {
                Some(_) => v.expected_failures.push(&case.name),
                None => v.unexpected_failures.push(case),
            }
        } else if case.status.passed() {
            v.passed.push(&case.name);
            if let Some(reason) = listed {
                v.unexpected_passes.push((&case.name, reason.clone()));
            }
        }
    }
    let ran: BTreeSet<&str> = cases.iter().map(|c| c.name.as_str()).collect();
    v.not_run = expected
        .keys()
        .filter(|n| !ran.contains(n.as_str()))
        .cloned()
        .collect();
    v
}

/// One entry of the expected-failures list.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ExpectedFailure {
    name: String,
    /// `None`: every server.
    servers: Option<Vec<String>>,
    reason: String,
}

/// Parse the expected-failures list: `[SERVERS] group::case  # reason` per
/// line (the tag is optional, the reason is not), `#` lines are comments.
fn parse_expected_failures(text: &str) -> Result<Vec<ExpectedFailure>, String> {
    let mut out: Vec<ExpectedFailure> = Vec::new();
    let mut seen: BTreeSet<(String, String)> = BTreeSet::new();
    for (i, raw) in text.lines().enumerate() {
        let lineno = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (entry, reason) = line
            .split_once('#')
            .ok_or_else(|| format!("line {lineno}: no \"# reason\": {raw:?}"))?;
        let reason = reason.trim();
        if reason.is_empty() {
            return Err(format!("line {lineno}: empty reason: {raw:?}"));
        }
        let entry = entry.trim();
        let (servers, name) = match entry.strip_prefix('[') {
            Some(rest) => {
                let (tag, name) = rest
                    .split_once(']')
                    .ok_or_else(|| format!("line {lineno}: unclosed '[': {raw:?}"))?;
                let servers: Vec<String> = tag.split(',').map(|s| s.trim().to_string()).collect();
                if let Some(bad) = servers.iter().find(|s| !SERVER_NAMES.contains(&s.as_str())) {
                    return Err(format!(
                        "line {lineno}: unknown server {bad:?} (known: {SERVER_NAMES:?})"
                    ));
                }
                (Some(servers), name.trim())
            }
            None => (None, entry),
        };
        if !is_case_name(name) {
            return Err(format!(
                "line {lineno}: not a pjdfstest case name: {name:?}"
            ));
        }
        for s in SERVER_NAMES {
            if servers.as_ref().is_none_or(|v| v.iter().any(|x| x == s))
                && !seen.insert((s.to_string(), name.to_string()))
            {
                return Err(format!("line {lineno}: {name} listed twice for {s}"));
            }
        }
        out.push(ExpectedFailure {
            name: name.to_string(),
            servers,
            reason: reason.to_string(),
        });
    }
    Ok(out)
}

/// name -> reason, for the entries that apply to `server`.
fn expected_for(list: &[ExpectedFailure], server: &str) -> BTreeMap<String, String> {
    list.iter()
        .filter(|e| {
            e.servers
                .as_ref()
                .is_none_or(|v| v.iter().any(|s| s == server))
        })
        .map(|e| (e.name.clone(), e.reason.clone()))
        .collect()
}

fn load_expected_failures(server: &str) -> BTreeMap<String, String> {
    let path = support::repo_dir().join(EXPECTED_FAILURES_FILE);
    let text =
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let list = parse_expected_failures(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    expected_for(&list, server)
}

// ---------------------------------------------------------------------------
// fsx
// ---------------------------------------------------------------------------

/// fsx's configuration. A close (or fsync, or the msync after a mapwrite) of
/// a changed file uploads it; close_open is about 1 operation in 15. Not
/// more: every upload is a new data connection, and each leaves a local port
/// in TIME_WAIT for a minute (3 x 10,000 operations already make about 4,000
/// uploads per server, out of some 28,000 ephemeral ports).
/// Off because FTP cannot do them: posix_fallocate (no space
/// reservation), punch_hole (no holes), copy_file_range (no server-side
/// copy); fsx-rs has no zero-range, collapse-range or insert-range
/// operations at all. The mmap operations need shared writable mappings.
fn fsx_config(mmap: bool) -> String {
    let m = if mmap { 2 } else { 0 };
    let inv = if mmap { 1 } else { 0 };
    format!(
        "# written by tests/external.rs\n\
         # flen: default (256 KiB)\n\
         nosizechecks = false\n\
         nomsyncafterwrite = false\n\
         \n\
         [opsize]\n\
         min = 0\n\
         max = 65536\n\
         align = 1\n\
         \n\
         [weights]\n\
         close_open = 2\n\
         read = 10\n\
         write = 10\n\
         truncate = 1\n\
         fsync = 0.5\n\
         fdatasync = 0.5\n\
         sendfile = 1\n\
         posix_fadvise = 1\n\
         mapread = {m}\n\
         mapwrite = {m}\n\
         invalidate = {inv}\n\
         posix_fallocate = 0\n\
         punch_hole = 0\n\
         copy_file_range = 0\n"
    )
}

fn fsx_seeds() -> Vec<u64> {
    match std::env::var("FTPFS_FSX_SEEDS") {
        Ok(s) if !s.trim().is_empty() => s
            .split(',')
            .map(|x| {
                x.trim()
                    .parse()
                    .unwrap_or_else(|e| panic!("FTPFS_FSX_SEEDS: {x:?}: {e}"))
            })
            .collect(),
        _ => FSX_SEEDS.to_vec(),
    }
}

fn fsx_ops() -> u64 {
    match std::env::var("FTPFS_FSX_OPS") {
        Ok(s) if !s.trim().is_empty() => s
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("FTPFS_FSX_OPS: {s:?}: {e}")),
        _ => FSX_OPS,
    }
}

fn fsx_on(server: FtpServer) {
    let tool = find_tool("fsx");
    let sname = server_name(server.kind);
    let seeds = fsx_seeds();
    let ops = fsx_ops();

    let work = tempfile::TempDir::with_prefix("ftpfs-fsx-").expect("temp dir");
    let mut mount = Mount::new(&server, &[]);
    let dir = mount.path("fsx");
    let probe = dir.join("mmap-probe");
    if let Err(e) = fs::create_dir(&dir).and_then(|_| fs::write(&probe, b"")) {
        panic!(
            "cannot create {} on the mount ({sname}): {e}\n--- ftpfs log (tail) ---\n{}",
            probe.display(),
            tail(&mount.log(), LOG_TAIL_LINES)
        );
    }
    let mmap = probe_shared_mmap(&probe);
    let _ = fs::remove_file(&probe);
    if let Err(why) = &mmap {
        eprintln!(
            "fsx on {sname}: shared writable mmap does not work on the mount ({why}); \
             mapread, mapwrite and invalidate are off"
        );
    }
    let config = work.path().join("fsx.toml");
    let config_text = fsx_config(mmap.is_ok());
    fs::write(&config, &config_text).expect("write fsx.toml");
    println!("--- fsx.toml ---\n{config_text}");

    // One fsx per seed, in parallel, each on its own file; artifacts (the
    // expected image on failure) stay on the local disk.
    server.clear_commands();
    let started = Instant::now();
    let runs: Vec<(u64, PathBuf, thread::JoinHandle<Finished>)> = seeds
        .iter()
        .map(|&seed| {
            let file = dir.join(format!("fsx-{seed}"));
            let artifacts = work.path().join(format!("artifacts-{seed}"));
            fs::create_dir_all(&artifacts).expect("mkdir artifacts");
            let mut cmd = Command::new(&tool);
            cmd.arg("-f")
                .arg(&config)
                .arg("-N")
                .arg(ops.to_string())
                .arg("-S")
                .arg(seed.to_string())
                .arg("-P")
                .arg(&artifacts)
                .arg(&file)
                .env("RUST_BACKTRACE", "1")
                .current_dir(work.path());
            (
                seed,
                file,
                thread::spawn(move || run_with_timeout(cmd, FSX_TIMEOUT)),
            )
        })
        .collect();
    let results: Vec<(u64, PathBuf, Finished)> = runs
        .into_iter()
        .map(|(seed, file, h)| (seed, file, h.join().expect("fsx runner thread")))
        .collect();
    let elapsed = started.elapsed();

    let mut failures = Vec::new();
    let mut ok_ops = 0u64;
    for (seed, _, run) in &results {
        println!(
            "--- fsx seed {seed}: {:?} in {:.1} s ---\n{}{}",
            run.status,
            run.elapsed.as_secs_f64(),
            run.stdout,
            run.stderr
        );
        match run.status {
            Some(s) if s.success() && run.stdout.contains(FSX_OK) => ok_ops += ops,
            status => {
                let what = match status {
                    None => format!("timed out after {FSX_TIMEOUT:?} (killed)"),
                    Some(s) => format!("exited with {s}"),
                };
                failures.push(format!(
                    "fsx seed {seed} {what}; reproduce with \
                     FTPFS_FSX_SEEDS={seed} FTPFS_FSX_OPS={ops} cargo test --test external \
                     fsx_on_{sname} -- --nocapture\n--- fsx stderr (tail) ---\n{}",
                    tail(&run.stderr, 40)
                ));
            }
        }
    }
    // The FTP traffic proves the data really went through the server.
    let uploads = server.commands_named("STOR").len() + server.commands_named("APPE").len();
    let downloads = server.commands_named("RETR").len();
    let line = format!(
        "fsx: {ok_ops} operations verified ({} of {} seeds x {ops} ops) on {sname} in {:.0} s, \
         {uploads} uploads, {downloads} downloads{}",
        ok_ops / ops.max(1),
        seeds.len(),
        elapsed.as_secs_f64(),
        if mmap.is_ok() { "" } else { ", without mmap" }
    );
    eprintln!("{line}");
    if failures.is_empty() && uploads == 0 {
        failures.push(format!(
            "fsx passed but {sname} received no STOR or APPE: the data never reached the server"
        ));
    }
    if !failures.is_empty() {
        panic!(
            "{}\n--- ftpfs log (tail) ---\n{}",
            failures.join("\n"),
            tail(&mount.log(), LOG_TAIL_LINES)
        );
    }

    // What the mount shows must be what reaches the server: read every file
    // back, unmount (which flushes whatever is pending), compare.
    let shown: Vec<(String, Vec<u8>)> = results
        .iter()
        .map(|(seed, file, _)| {
            let data = fs::read(file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
            (format!("fsx/fsx-{seed}"), data)
        })
        .collect();
    if let Err(e) = mount.unmount() {
        panic!("unmount after fsx on {sname}: {e}");
    }
    let log = mount.log();
    drop(mount);
    // ... and a fresh mount reads the same bytes back from the server.
    let again = Mount::new(&server, &[]);
    for (rel, data) in &shown {
        let on_server =
            fs::read(server.path(rel)).unwrap_or_else(|e| panic!("read {rel} on the server: {e}"));
        let remounted =
            fs::read(again.path(rel)).unwrap_or_else(|e| panic!("read {rel} on a new mount: {e}"));
        for (what, got, log) in [
            ("on the server", &on_server, &log),
            ("through a new mount", &remounted, &again.log()),
        ] {
            if got != data {
                let at = got
                    .iter()
                    .zip(data)
                    .position(|(a, b)| a != b)
                    .unwrap_or(got.len().min(data.len()));
                panic!(
                    "{rel} {what} ({} bytes) differs from what the fsx mount showed ({} bytes), \
                     first at byte {at}\n--- ftpfs log (tail) ---\n{}",
                    got.len(),
                    data.len(),
                    tail(log, LOG_TAIL_LINES)
                );
            }
        }
    }
}

/// Map `path` shared and writable, write through the mapping, msync, and
/// read the data back with read(2). `Err` when the mount refuses the mapping
/// (e.g. ENODEV with direct I/O); a mapping that silently loses the data is
/// a bug and panics.
fn probe_shared_mmap(path: &Path) -> Result<(), String> {
    const LEN: usize = 4096;
    let pattern: Vec<u8> = (0..LEN).map(|i| (i % 251) as u8).collect();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| format!("open: {e}"))?;
    file.set_len(LEN as u64)
        .map_err(|e| format!("ftruncate: {e}"))?;
    // SAFETY: a fresh mapping of LEN bytes of a file of LEN bytes, written
    // only within bounds, unmapped before the file is closed.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            LEN,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        );
        if p == libc::MAP_FAILED {
            return Err(format!(
                "mmap(PROT_WRITE, MAP_SHARED): {}",
                io::Error::last_os_error()
            ));
        }
        std::ptr::copy_nonoverlapping(pattern.as_ptr(), p.cast::<u8>(), LEN);
        let synced = libc::msync(p, LEN, libc::MS_SYNC);
        let sync_err = io::Error::last_os_error();
        libc::munmap(p, LEN);
        if synced != 0 {
            return Err(format!("msync: {sync_err}"));
        }
    }
    drop(file);
    let back = fs::read(path).map_err(|e| format!("read back: {e}"))?;
    assert!(
        back == pattern,
        "data written through a shared mapping of {} was lost ({} bytes read back)",
        path.display(),
        back.len()
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// The installed tool: on PATH, else in `$CARGO_HOME/bin` or `~/.cargo/bin`
/// (where `cargo install` puts it). Panics if it is missing.
fn find_tool(name: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(h) = std::env::var_os("CARGO_HOME") {
        dirs.push(PathBuf::from(h).join("bin"));
    }
    if let Some(h) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(h).join(".cargo").join("bin"));
    }
    dirs.iter()
        .map(|d| d.join(name))
        .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
        .unwrap_or_else(|| {
            panic!(
                "{name} is not installed (looked on PATH, in $CARGO_HOME/bin and ~/.cargo/bin). \
                 scripts/test.sh installs it; by hand: cargo install --locked {name}"
            )
        })
}

struct Finished {
    /// `None`: timed out and killed.
    status: Option<ExitStatus>,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

/// Run `cmd` (stdin /dev/null, output captured), killing it after `timeout`.
fn run_with_timeout(mut cmd: Command, timeout: Duration) -> Finished {
    let started = Instant::now();
    let mut child: Child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let out = Arc::new(Mutex::new(Vec::new()));
    let err = Arc::new(Mutex::new(Vec::new()));
    let out_done = support::spawn_reader(child.stdout.take(), out.clone());
    let err_done = support::spawn_reader(child.stderr.take(), err.clone());
    let status = support::wait_timeout(&mut child, timeout);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    // A grandchild (pjdfstest runs `sleep 10` for ETXTBSY) may hold the
    // pipes a little longer; take what is there.
    let _ = out_done.recv_timeout(Duration::from_secs(15));
    let _ = err_done.recv_timeout(Duration::from_secs(5));
    let text = |b: &Arc<Mutex<Vec<u8>>>| {
        String::from_utf8_lossy(&b.lock().map(|v| v.clone()).unwrap_or_default()).into_owned()
    };
    Finished {
        status,
        stdout: text(&out),
        stderr: text(&err),
        elapsed: started.elapsed(),
    }
}

// ---------------------------------------------------------------------------
// Unit tests of the harness (no mounts)
// ---------------------------------------------------------------------------

#[cfg(test)]
mod harness {
    use super::*;

    /// Real pjdfstest 0.2.2 output (a tmpfs with too few inodes, so that
    /// some cases fail; RUST_BACKTRACE=1 adds the backtrace lines), trimmed,
    /// plus one coloured line and an assert_eq failure in pjdfstest's format.
    const SAMPLE: &str = "\
unlink::remove_type::symlink                                                  ok
unlink::enametoolong_path                                                 FAILED
\tcalled `Result::unwrap()` on an `Err` value: Os { code: 28, kind: StorageFull, message: \"No space left on device\" }
Backtrace:
   0: pjdfstest::main::{{closure}}
   7: pjdfstest::context::TestContext::create_path_max
   8: pjdfstest::tests::unlink::enametoolong_path
             at ./csu/../sysdeps/nptl/libc_start_call_main.h:58:16
  16: _start

unlink::erofs_named                                                      skipped
\tRemounts (allow_remount) are not allowed in the configuration file
rename::changed_ctime_success::dir                                       skipped
\trequires features: rename_ctime
\x1b[34mchmod::update_ctime::regular\x1b[0m                                               \x1b[31mFAILED\x1b[0m
\tTimestamps did not change as expected
rename::enotdir_component_either::regular                                 FAILED
\tassertion `left == right` failed
  left: ENOENT
 right: ENOTDIR
mkdir::permission_bits_from_mode                                              ok
utimensat::y2038                                             failed as expected
open::exists_no_update                                       PASSED UNEXPECTEDLY
chmod::change_perm::fifo                                                      ok

Summary: 4 failed, 2 skipped, 3 passed, 1 expected failures, 10 total
";

    #[test]
    fn parses_captured_pjdfstest_output() {
        let out = parse_pjdfstest(SAMPLE);
        let got: Vec<(&str, PjdStatus)> = out
            .cases
            .iter()
            .map(|c| (c.name.as_str(), c.status))
            .collect();
        use PjdStatus::*;
        assert_eq!(
            got,
            vec![
                ("unlink::remove_type::symlink", Ok),
                ("unlink::enametoolong_path", Failed),
                ("unlink::erofs_named", Skipped),
                ("rename::changed_ctime_success::dir", Skipped),
                ("chmod::update_ctime::regular", Failed),
                ("rename::enotdir_component_either::regular", Failed),
                ("mkdir::permission_bits_from_mode", Ok),
                ("utimensat::y2038", FailedAsExpected),
                ("open::exists_no_update", PassedUnexpectedly),
                ("chmod::change_perm::fifo", Ok),
            ]
        );
        assert_eq!(
            out.summary,
            Some(PjdSummary {
                failed: 4,
                skipped: 2,
                passed: 3,
                expected_failures: 1,
                total: 10
            })
        );
        check_complete(&out).unwrap();

        let failed = &out.cases[1];
        assert!(failed.details[0].starts_with("called `Result::unwrap()`"));
        assert_eq!(failed.details[1], "Backtrace:");
        assert_eq!(failed.details.len(), 7, "{:?}", failed.details);
        assert_eq!(
            out.cases[2].details,
            vec!["Remounts (allow_remount) are not allowed in the configuration file"]
        );
        assert_eq!(
            out.cases[5].details,
            vec![
                "assertion `left == right` failed",
                "  left: ENOENT",
                " right: ENOTDIR"
            ]
        );
        assert!(out.cases[0].details.is_empty());
    }

    #[test]
    fn incomplete_or_inconsistent_output_is_an_error() {
        // Killed before the summary.
        let cut = SAMPLE.split("Summary:").next().unwrap();
        assert!(check_complete(&parse_pjdfstest(cut)).is_err());
        // A result line the parser did not see (e.g. a new status word).
        let odd = SAMPLE.replace(
            "mkdir::permission_bits_from_mode                                              ok",
            "mkdir::permission_bits_from_mode                                              okay",
        );
        let e = check_complete(&parse_pjdfstest(&odd)).unwrap_err();
        assert!(e.contains("disagree"), "{e}");
        // Failed to start: only an error on stderr.
        assert!(check_complete(&parse_pjdfstest("")).is_err());
        // Nothing selected.
        let none = "\nSummary: 0 failed, 0 skipped, 0 passed, 0 expected failures, 0 total\n";
        assert!(check_complete(&parse_pjdfstest(none)).is_err());
    }

    #[test]
    fn not_every_line_ending_in_ok_is_a_result() {
        assert_eq!(parse_result_line("  indented::name   ok"), None);
        assert_eq!(parse_result_line("Backtrace: ok"), None);
        assert_eq!(parse_result_line("open::eisdirok"), None);
        assert_eq!(parse_result_line("a b::c ok"), None);
        assert_eq!(
            parse_result_line("open::eisdir ok"),
            Some(("open::eisdir", PjdStatus::Ok))
        );
    }

    #[test]
    fn judges_against_the_expected_list() {
        let out = parse_pjdfstest(SAMPLE);
        let expected: BTreeMap<String, String> = [
            ("chmod::update_ctime::regular", "ctime"),
            ("open::exists_no_update", "listed but passes"),
            ("utimensat::y2038", "atime"),
            ("symlink::gone", "not in this run"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        let v = judge(&out.cases, &expected);
        let unexpected: Vec<&str> = v
            .unexpected_failures
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            unexpected,
            vec![
                "unlink::enametoolong_path",
                "rename::enotdir_component_either::regular"
            ]
        );
        assert_eq!(
            v.expected_failures,
            vec!["chmod::update_ctime::regular", "utimensat::y2038"]
        );
        assert_eq!(v.passed.len(), 4);
        assert_eq!(
            v.unexpected_passes,
            vec![("open::exists_no_update", "listed but passes".to_string())]
        );
        assert_eq!(v.skipped.len(), 2);
        assert_eq!(v.not_run, vec!["symlink::gone".to_string()]);
    }

    #[test]
    fn expected_failures_format() {
        let text = "\
# comment

open::a          # for all
[vsftpd] open::b # only vsftpd
[pyftpdlib, vsftpd] open::c::fifo  # both, tagged
";
        let list = parse_expected_failures(text).unwrap();
        assert_eq!(list.len(), 3);
        let py = expected_for(&list, "pyftpdlib");
        let vs = expected_for(&list, "vsftpd");
        assert_eq!(
            py.keys().collect::<Vec<_>>(),
            vec!["open::a", "open::c::fifo"]
        );
        assert_eq!(
            vs.keys().collect::<Vec<_>>(),
            vec!["open::a", "open::b", "open::c::fifo"]
        );
        assert_eq!(vs["open::b"], "only vsftpd");

        for bad in [
            "open::a\n",                           // no reason
            "open::a   #   \n",                    // empty reason
            "[proftpd] open::a # x\n",             // unknown server
            "[vsftpd open::a # x\n",               // unclosed tag
            "open # x\n",                          // not a case name
            "open::a # x\nopen::a # y\n",          // duplicate
            "open::a # x\n[vsftpd] open::a # y\n", // duplicate for vsftpd
        ] {
            assert!(parse_expected_failures(bad).is_err(), "accepted {bad:?}");
        }
        // The same test listed for different servers is fine.
        parse_expected_failures("[vsftpd] open::a # x\n[pyftpdlib] open::a # y\n").unwrap();
    }

    #[test]
    fn the_expected_failures_file_is_valid() {
        let path = support::repo_dir().join(EXPECTED_FAILURES_FILE);
        let text = fs::read_to_string(&path).unwrap();
        let list = parse_expected_failures(&text).unwrap_or_else(|e| panic!("{e}"));
        assert!(!list.is_empty());
        for e in &list {
            assert!(
                PJDFSTEST_GROUPS.contains(&group_of(&e.name)),
                "{} is not in a selected group",
                e.name
            );
        }
    }

    #[test]
    fn configs_are_well_formed() {
        let cfg = pjdfstest_config();
        assert!(cfg.contains("naptime = 1.1"), "{cfg}");
        assert!(cfg.contains("entries = [[\""), "{cfg}");
        let fsx = fsx_config(false);
        assert!(fsx.contains("mapwrite = 0") && fsx.contains("posix_fallocate = 0"));
        assert!(fsx_config(true).contains("mapwrite = 2"));
    }

    #[test]
    fn strips_colours() {
        assert_eq!(strip_ansi("\x1b[1;32mSummary\x1b[0m: 0"), "Summary: 0");
        assert_eq!(strip_ansi("plain"), "plain");
    }
}
