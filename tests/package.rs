//! The Debian package: `scripts/package.sh` builds it with cargo-deb, the test
//! installs it on this machine with `dpkg -i`, and checks what a user gets:
//! its files and dependency, the man page, `mount -t fuse.ftpfs` as root, and
//! an fstab line with `user,noauto` that an ordinary user mounts with
//! `mount DIR` and unmounts with `umount DIR`. Drop removes the fstab line,
//! puts back the mode of /dev/fuse, and removes the package again unless it
//! was installed before.
//!
//! One test: it owns /etc/fstab's extra line and the installed package while
//! it runs (cargo runs test binaries one after another).

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use support::{
    as_user, is_mounted, repo_dir, run_for, text, user_ids, wait_until, DevFuseMode, FtpServer,
};

const T: Duration = Duration::from_secs(60);
/// Building the package compiles a release binary.
const BUILD: Duration = Duration::from_secs(900);
const FSTAB: &str = "/etc/fstab";

fn ok(what: &str, out: &Output) -> String {
    assert!(
        out.status.success(),
        "{what}: {}\n{}\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn cmd(prog: &str, args: &[&str]) -> Command {
    let mut c = Command::new(prog);
    c.args(args);
    c
}

/// Undoes what the test changed on the machine.
struct Installed {
    was_installed: bool,
    fstab_line: Option<String>,
    mounts: Vec<PathBuf>,
}

impl Drop for Installed {
    fn drop(&mut self) {
        for m in &self.mounts {
            if is_mounted(m) {
                let _ = Command::new("umount").arg("-l").arg(m).status();
            }
        }
        if let Some(line) = &self.fstab_line {
            if let Ok(t) = fs::read_to_string(FSTAB) {
                let kept: String = t
                    .lines()
                    .filter(|l| l != line)
                    .map(|l| format!("{l}\n"))
                    .collect();
                let _ = fs::write(FSTAB, kept);
            }
        }
        if !self.was_installed {
            let _ = Command::new("dpkg").args(["-r", "ftpfs"]).output();
        }
    }
}

fn package_installed() -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "ftpfs"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

#[test]
fn deb_installs_and_mounts_from_fstab_as_a_user() {
    // Build.
    let mut build = cmd("bash", &["scripts/package.sh"]);
    build.current_dir(repo_dir());
    let deb = ok("scripts/package.sh", &run_for(BUILD, build));
    let deb = repo_dir().join(deb.lines().last().expect("the .deb path"));
    assert!(deb.is_file(), "{} is not a file", deb.display());
    let deb_s = deb.to_str().expect("utf-8 path");

    // What is in it.
    let info = ok(
        "dpkg-deb -f",
        &run_for(T, cmd("dpkg-deb", &["-f", deb_s, "Depends"])),
    );
    assert!(info.split(", ").any(|d| d == "fuse3"), "Depends: {info}");
    let listing = ok("dpkg-deb -c", &run_for(T, cmd("dpkg-deb", &["-c", deb_s])));
    for want in [
        "./usr/bin/ftpfs",
        "./usr/share/man/man1/ftpfs.1.gz",
        "./usr/share/bash-completion/completions/ftpfs",
        "./usr/share/zsh/vendor-completions/_ftpfs",
        "./usr/share/fish/vendor_completions.d/ftpfs.fish",
        "./usr/share/doc/ftpfs/README.md",
        "./usr/share/doc/ftpfs/SEMANTICS.md",
        "./usr/sbin/mount.fuse.ftpfs -> mount.fuse3",
    ] {
        assert!(
            listing.contains(want),
            "{want} is not in the package:\n{listing}"
        );
    }

    // Install.
    let mut undo = Installed {
        was_installed: package_installed(),
        fstab_line: None,
        mounts: Vec::new(),
    };
    ok("dpkg -i", &run_for(T, cmd("dpkg", &["-i", deb_s])));
    let version = ok(
        "ftpfs --version",
        &run_for(T, cmd("/usr/bin/ftpfs", &["--version"])),
    );
    assert!(version.starts_with("ftpfs "), "{version}");
    let man = ok(
        "man ftpfs",
        &run_for(T, cmd("man", &["-P", "cat", "ftpfs"])),
    );
    assert!(
        man.contains("ftpfs - mount an FTP server as a local directory"),
        "man ftpfs:\n{man}"
    );

    let s = FtpServer::pyftpdlib();
    s.create_file("site/index.html", b"<h1>hello from the package</h1>\n");
    let work = tempfile::Builder::new()
        .prefix("ftpfs-deb-")
        .tempdir()
        .expect("temp dir");
    fs::set_permissions(work.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    let work = fs::canonicalize(work.path()).expect("canonicalize");

    // As root: mount -t fuse.ftpfs (mount.fuse.ftpfs -> mount.fuse3 -> ftpfs).
    let root_pw = work.join("root-password");
    fs::write(&root_pw, &s.password).expect("password file");
    fs::set_permissions(&root_pw, fs::Permissions::from_mode(0o600)).expect("chmod");
    let root_mnt = work.join("root-mnt");
    fs::create_dir(&root_mnt).expect("mkdir");
    undo.mounts.push(root_mnt.clone());
    let url = format!("ftp://{}@127.0.0.1:{}/site", s.user, s.port);
    let opts = format!("password_file={}", root_pw.display());
    let mnt_s = root_mnt.to_str().expect("utf-8 path");
    ok(
        "mount -t fuse.ftpfs",
        &run_for(
            T,
            cmd("mount", &["-t", "fuse.ftpfs", &url, mnt_s, "-o", &opts]),
        ),
    );
    assert_eq!(
        fs::read_to_string(root_mnt.join("index.html")).expect("read through mount -t"),
        "<h1>hello from the package</h1>\n"
    );
    ok("umount", &run_for(T, cmd("umount", &[mnt_s])));

    // As an ordinary user, from fstab (user,noauto), /dev/fuse at Debian's 0666.
    let _mode = DevFuseMode::set(0o666);
    let (uid, gid, _) = user_ids();
    let user_pw = work.join("user-password");
    fs::write(&user_pw, &s.password).expect("password file");
    fs::set_permissions(&user_pw, fs::Permissions::from_mode(0o600)).expect("chmod");
    std::os::unix::fs::chown(&user_pw, Some(uid), Some(gid)).expect("chown");
    let site = work.join("site");
    fs::create_dir(&site).expect("mkdir");
    std::os::unix::fs::chown(&site, Some(uid), Some(gid)).expect("chown");
    undo.mounts.push(site.clone());
    let line = format!(
        "{url} {} fuse.ftpfs user,noauto,password_file={} 0 0",
        site.display(),
        user_pw.display()
    );
    let mut fstab = fs::read_to_string(FSTAB).unwrap_or_default();
    if !fstab.is_empty() && !fstab.ends_with('\n') {
        fstab.push('\n');
    }
    fstab.push_str(&line);
    fstab.push('\n');
    fs::write(FSTAB, fstab).expect("write /etc/fstab");
    undo.fstab_line = Some(line);

    let site_s = site.to_str().expect("utf-8 path");
    ok(
        "mount DIR as the user",
        &run_for(T, as_user("mount", &[site_s])),
    );
    assert!(is_mounted(&site), "not mounted after the user's mount");
    let page = ok(
        "cat as the user",
        &run_for(T, as_user("cat", &[&format!("{site_s}/index.html")])),
    );
    assert_eq!(page, "<h1>hello from the package</h1>");
    ok(
        "write as the user",
        &run_for(
            T,
            as_user(
                "sh",
                &["-c", &format!("echo from fstab > {site_s}/user.txt")],
            ),
        ),
    );
    assert_eq!(
        fs::read(s.path("site/user.txt")).expect("user.txt on the server"),
        b"from fstab\n"
    );
    // The ftpfs process is the user's own.
    let info = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let mine = info
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(site_s))
        .expect("mountinfo line");
    assert!(mine.contains(&format!("user_id={uid}")), "{mine}");
    ok(
        "umount DIR as the user",
        &run_for(T, as_user("umount", &[site_s])),
    );
    assert!(
        wait_until(Duration::from_secs(10), || !is_mounted(&site)),
        "still mounted after the user's umount"
    );
}
