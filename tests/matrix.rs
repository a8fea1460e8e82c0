#[macro_use]
mod support;

// Server matrix (issue #6): the same workload on pyftpdlib, vsftpd, pure-ftpd,
// ProFTPD, vsftpd with forced TLS and ProFTPD with TLS 1.3 only
// (tests/support/pki.rs), and a DOS/IIS-style server (pyftpdlib with
// `--dos-list`: LIST only, no MLSD, MFMT, SIZE or SITE CHMOD). pure-ftpd and ProFTPD come from
// `install_extra_servers` (scripts/lib.sh) and, like vsftpd, need root.
//
// What a server can do (set times, chmod) is never derived from its name:
// the tests probe the server itself where the expected outcome depends on it
// (SEMANTICS.md documents the fallbacks).

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use support::{files_equal, gen_bytes, random_u64, write_file, FtpServer, Mount};

/// `matrix_tests!([module => constructor, ...], [scenario, ...])`: one test
/// per server and scenario `fn(FtpServer)`, on the server made by
/// `FtpServer::constructor()`, in a module named after the server.
macro_rules! matrix_tests {
    ([$($module:ident => $ctor:ident),* $(,)?], $scenarios:tt) => {
        $( matrix_tests!(@server $module, $ctor, $scenarios); )*
    };
    (@server $module:ident, $ctor:ident, [$($name:ident),* $(,)?]) => {
        mod $module {
            $( #[test] fn $name() { super::$name(super::support::FtpServer::$ctor()) } )*
        }
    };
}

matrix_tests!(
    [
        pyftpdlib => pyftpdlib,
        vsftpd => vsftpd,
        pure_ftpd => pure_ftpd,
        proftpd => proftpd,
        dos_style => dos_style,
        vsftpd_tls => vsftpd_tls,
        proftpd_tls13 => proftpd_tls13,
    ],
    [
        read_big_file_and_random_offset,
        write_copy_in_and_out,
        rename_file,
        mkdir_rmdir,
        mtime_touch,
        chmod_or_eperm,
        rsync_twice,
        rsync_after_a_remount_sends_nothing,
        cp_r_tree,
        list_2000_entries,
    ]
);

const MIB: usize = 1024 * 1024;

fn sh(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn sha256(p: &Path) -> String {
    let (ok, out) = sh(Command::new("sha256sum").arg(p));
    assert!(ok, "sha256sum {}: {out}", p.display());
    out.split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

fn ctx(s: &FtpServer, m: &Mount) -> String {
    format!(
        "server {}\n{}\n--- server log (tail) ---\n{}",
        s.flavor.name(),
        support::diag(m, s),
        support::tail(&s.log(), 40)
    )
}

fn read_big_file_and_random_offset(s: FtpServer) {
    let data = gen_bytes(5 * MIB, 1);
    s.create_file("big.bin", &data);
    let local = tempfile::tempdir().unwrap();
    fs::write(local.path().join("big.bin"), &data).unwrap();
    let m = Mount::new(&s, &[]);
    assert!(
        files_equal(m.path("big.bin"), local.path().join("big.bin")),
        "{}",
        ctx(&s, &m)
    );
    let mut f = fs::File::open(m.path("big.bin")).unwrap();
    for _ in 0..4 {
        let off = (random_u64() % (data.len() as u64 - 70_000)) as usize;
        f.seek(SeekFrom::Start(off as u64)).unwrap();
        let mut buf = vec![0u8; 65_536];
        f.read_exact(&mut buf).unwrap();
        assert!(
            buf == data[off..off + buf.len()],
            "random read at {off} differs\n{}",
            ctx(&s, &m)
        );
    }
}

fn write_copy_in_and_out(s: FtpServer) {
    let local = tempfile::tempdir().unwrap();
    let src = local.path().join("src.bin");
    write_file(&src, 3 * MIB + 123, 7);
    let m = Mount::new(&s, &[]);
    let (ok, out) = sh(Command::new("cp").arg(&src).arg(m.path("in.bin")));
    assert!(ok, "cp in: {out}\n{}", ctx(&s, &m));
    let back = local.path().join("back.bin");
    let (ok, out) = sh(Command::new("cp").arg(m.path("in.bin")).arg(&back));
    assert!(ok, "cp out: {out}\n{}", ctx(&s, &m));
    let want = sha256(&src);
    assert_eq!(sha256(&back), want, "{}", ctx(&s, &m));
    assert_eq!(
        sha256(&s.path("in.bin")),
        want,
        "server copy\n{}",
        ctx(&s, &m)
    );
}

fn rename_file(s: FtpServer) {
    s.create_file("old name.txt", b"renamed content\n");
    let m = Mount::new(&s, &[]);
    fs::rename(m.path("old name.txt"), m.path("new name.txt"))
        .unwrap_or_else(|e| panic!("rename: {e}\n{}", ctx(&s, &m)));
    assert!(!m.path("old name.txt").exists());
    assert_eq!(
        fs::read(m.path("new name.txt")).unwrap(),
        b"renamed content\n"
    );
    assert!(!s.path("old name.txt").exists());
    assert_eq!(
        fs::read(s.path("new name.txt")).unwrap(),
        b"renamed content\n"
    );
}

fn mkdir_rmdir(s: FtpServer) {
    let m = Mount::new(&s, &[]);
    fs::create_dir(m.path("d1")).unwrap_or_else(|e| panic!("mkdir: {e}\n{}", ctx(&s, &m)));
    fs::create_dir(m.path("d1/d2")).unwrap();
    assert!(s.path("d1/d2").is_dir());
    assert!(fs::metadata(m.path("d1/d2")).unwrap().is_dir());
    fs::remove_dir(m.path("d1/d2")).unwrap_or_else(|e| panic!("rmdir: {e}\n{}", ctx(&s, &m)));
    fs::remove_dir(m.path("d1")).unwrap();
    assert!(!s.path("d1").exists());
    assert!(!m.path("d1").exists());
}

fn stat_mtime(p: &Path) -> i64 {
    let (ok, out) = sh(Command::new("stat").args(["-c", "%Y"]).arg(p));
    assert!(ok, "stat {}: {out}", p.display());
    out.trim().parse().unwrap()
}

/// `touch -d` shows the new mtime: set on the server (MFMT / MDTM-set) or,
/// where the server cannot store it, kept by ftpfs for the life of the mount.
fn mtime_touch(s: FtpServer) {
    s.create_file("t.txt", b"time\n");
    let m = Mount::new(&s, &[]);
    // 2020-01-02 03:04:05 UTC
    let want = 1_577_934_245i64;
    let (ok, out) = sh(Command::new("touch")
        .args(["-d", "2020-01-02 03:04:05 UTC"])
        .arg(m.path("t.txt")));
    assert!(ok, "touch: {out}\n{}", ctx(&s, &m));
    assert_eq!(stat_mtime(&m.path("t.txt")), want, "{}", ctx(&s, &m));
    // Still there after a listing of the directory.
    let _ = fs::read_dir(&m.dir).unwrap().count();
    assert_eq!(stat_mtime(&m.path("t.txt")), want, "{}", ctx(&s, &m));
    // Also on a file written through the mount.
    fs::write(m.path("w.txt"), b"written\n").unwrap();
    let (ok, out) = sh(Command::new("touch")
        .args(["-d", "2020-01-02 03:04:05 UTC"])
        .arg(m.path("w.txt")));
    assert!(ok, "touch: {out}\n{}", ctx(&s, &m));
    assert_eq!(stat_mtime(&m.path("w.txt")), want, "{}", ctx(&s, &m));
}

/// Whether the server itself accepts `SITE CHMOD` (probed on a scratch file,
/// with curl, which also speaks TLS to the servers that insist on it).
fn server_has_site_chmod(s: &FtpServer) -> bool {
    s.create_file(".chmod-probe", b"");
    let mut curl = Command::new("curl");
    curl.args(["-sS", "--max-time", "30", "-u"])
        .arg(format!("{}:{}", s.user, s.password))
        .args(["-Q", "SITE CHMOD 640 .chmod-probe"])
        .arg(format!("ftp://127.0.0.1:{}/", s.port));
    if let Some(ca) = s.kept_file("ca.pem") {
        curl.arg("--ssl-reqd").arg("--cacert").arg(ca);
    }
    let (ok, out) = sh(&mut curl);
    let _ = fs::remove_file(s.path(".chmod-probe"));
    // 500-series answers are "no"; anything else (no connection) is a broken test.
    assert!(
        ok || out.to_lowercase().contains("quot"),
        "curl probe: {out}"
    );
    ok
}

fn chmod_or_eperm(s: FtpServer) {
    let can_chmod = server_has_site_chmod(&s);
    s.create_file("c.txt", b"mode\n");
    let m = Mount::new(&s, &[]);
    let res = fs::set_permissions(m.path("c.txt"), fs::Permissions::from_mode(0o600));
    if can_chmod {
        res.unwrap_or_else(|e| panic!("chmod: {e}\n{}", ctx(&s, &m)));
        let mode = fs::metadata(m.path("c.txt")).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600, "{}", ctx(&s, &m));
        let smode = fs::metadata(s.path("c.txt")).unwrap().permissions().mode() & 0o7777;
        assert_eq!(smode, 0o600, "server side\n{}", ctx(&s, &m));
    } else {
        let err = res.expect_err("chmod without SITE CHMOD must fail");
        assert_eq!(
            err.raw_os_error(),
            Some(libc::EPERM),
            "{err}\n{}",
            ctx(&s, &m)
        );
    }
}

fn make_tree(dir: &Path) {
    for d in 0..3 {
        for f in 0..5 {
            write_file(
                dir.join(format!("dir {d}/sub/file-{f}.bin")),
                1000 * (f + 1) + d * 7,
                (d * 10 + f) as u64,
            );
        }
        fs::write(dir.join(format!("dir {d}/ünï-{d}.txt")), format!("{d}\n")).unwrap();
    }
    write_file(dir.join("top.bin"), 300_000, 99);
}

fn trees_equal(a: &Path, b: &Path) {
    let (ok, out) = sh(Command::new("diff").arg("-r").arg(a).arg(b));
    assert!(ok, "diff -r {} {}: {out}", a.display(), b.display());
}

/// `rsync -a` twice; the second run transfers nothing. Where the server has
/// no SITE CHMOD, -p (perms) is left out (chmod gives EPERM there).
fn rsync_twice(s: FtpServer) {
    let can_chmod = server_has_site_chmod(&s);
    let local = tempfile::tempdir().unwrap();
    let src = local.path().join("src");
    make_tree(&src);
    let m = Mount::new(&s, &[]);
    let flags: &[&str] = if can_chmod { &["-a"] } else { &["-rltgoD"] };
    for run in 1..=2 {
        let (ok, out) = sh(Command::new("rsync")
            .args(flags)
            .arg("--stats")
            .arg(format!("{}/", src.display()))
            .arg(format!("{}/", m.path("dst").display())));
        assert!(ok, "rsync run {run} {flags:?}: {out}\n{}", ctx(&s, &m));
        if run == 2 {
            assert!(
                out.contains("Number of regular files transferred: 0"),
                "second rsync transferred files:\n{out}\n{}",
                ctx(&s, &m)
            );
        }
    }
    trees_equal(&src, &m.path("dst"));
    trees_equal(&src, &s.path("dst"));
}

/// `rsync -a` onto a fresh mount of what an earlier mount wrote: nothing is
/// sent, though LIST shows only minutes (or days), and the walk costs listings
/// only: no command per file (issue 14). The two mounts share a cache_dir,
/// where the first one leaves the exact times it set.
fn rsync_after_a_remount_sends_nothing(s: FtpServer) {
    let can_chmod = server_has_site_chmod(&s);
    let local = tempfile::tempdir().unwrap();
    let src = local.path().join("src");
    make_tree(&src);
    // Old enough for LIST to show only the day.
    let (ok, out) = sh(Command::new("touch")
        .args(["-d", "2019-03-04 05:06:07 UTC"])
        .arg(src.join("top.bin"))
        .arg(src.join("dir 1/sub/file-2.bin")));
    assert!(ok, "touch: {out}");
    let cache = tempfile::tempdir().unwrap();
    let cache_opt = format!("cache_dir={}", cache.path().display());
    let flags: &[&str] = if can_chmod { &["-a"] } else { &["-rltgoD"] };
    let rsync = |m: &Mount| {
        sh(Command::new("rsync")
            .args(flags)
            .arg("--stats")
            .arg(format!("{}/", src.display()))
            .arg(format!("{}/", m.path("dst").display())))
    };
    let mut first = Mount::new(&s, &[&cache_opt]);
    let (ok, out) = rsync(&first);
    assert!(ok, "first rsync {flags:?}: {out}\n{}", ctx(&s, &first));
    first.unmount().expect("unmount");

    let m = Mount::new(&s, &[&cache_opt]);
    s.clear_commands();
    let (ok, out) = rsync(&m);
    assert!(ok, "rsync after the remount: {out}\n{}", ctx(&s, &m));
    assert!(
        out.contains("Number of regular files transferred: 0"),
        "rsync after the remount sent files:\n{out}\n{}",
        ctx(&s, &m)
    );
    let cmds = s.commands();
    let verb = |c: &String| {
        c.split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase()
    };
    // Directory times that the server keeps its own way are set again: one
    // command per directory, not per file.
    let sets_a_dir_time = |c: &String| {
        let dir = c.splitn(3, ' ').nth(2).unwrap_or("");
        ["MDTM", "MFMT"].contains(&verb(c).as_str()) && s.path(dir.trim_start_matches('/')).is_dir()
    };
    let per_file: Vec<&String> = cmds
        .iter()
        .filter(|c| ["RETR", "STOR", "MDTM", "SIZE", "MFMT", "MLST"].contains(&verb(c).as_str()))
        .filter(|c| !sets_a_dir_time(c))
        .collect();
    assert!(per_file.is_empty(), "commands per file: {per_file:?}");
    // 8 directories (dst, 3 dirs, 3 subs... and the root): one listing each,
    // with room for a re-list after the cache times out.
    let listings = cmds
        .iter()
        .filter(|c| ["LIST", "MLSD", "NLST"].contains(&verb(c).as_str()))
        .count();
    assert!(listings <= 16, "{listings} listings: {cmds:?}");
    trees_equal(&src, &m.path("dst"));
}

fn cp_r_tree(s: FtpServer) {
    let local = tempfile::tempdir().unwrap();
    let src = local.path().join("tree");
    make_tree(&src);
    let m = Mount::new(&s, &[]);
    let (ok, out) = sh(Command::new("cp").arg("-r").arg(&src).arg(m.path("tree")));
    assert!(ok, "cp -r in: {out}\n{}", ctx(&s, &m));
    trees_equal(&src, &s.path("tree"));
    let back = local.path().join("back");
    let (ok, out) = sh(Command::new("cp").arg("-r").arg(m.path("tree")).arg(&back));
    assert!(ok, "cp -r out: {out}\n{}", ctx(&s, &m));
    trees_equal(&src, &back);
}

fn list_2000_entries(s: FtpServer) {
    let dir = s.create_dir("many");
    for i in 0..2000 {
        fs::write(dir.join(format!("entry-{i:04}.txt")), format!("{i}\n")).unwrap();
    }
    s.fix_ownership();
    let m = Mount::new(&s, &[]);
    let mut names: Vec<String> = fs::read_dir(m.path("many"))
        .unwrap_or_else(|e| panic!("readdir: {e}\n{}", ctx(&s, &m)))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let want: Vec<String> = (0..2000).map(|i| format!("entry-{i:04}.txt")).collect();
    assert_eq!(names.len(), 2000, "{}", ctx(&s, &m));
    assert!(names == want, "names differ\n{}", ctx(&s, &m));
    assert_eq!(fs::read(m.path("many/entry-1999.txt")).unwrap(), b"1999\n");
}
