//! The reference material and the command line around it: the shipped man
//! page and completion scripts equal what the binary generates, the man page
//! renders with man(1) and lists every `-o` option with its default, the
//! completion scripts parse in bash, zsh and fish, and the subcommands parse
//! next to `ftpfs [OPTIONS] URL MOUNTPOINT`.
//!
//! No FTP server and no FUSE needed. man, zsh and fish must be installed
//! (scripts/lib.sh's install_deps does it); a missing one fails the test.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use clap::{error::ErrorKind, CommandFactory, Parser};
use ftpfs::cli::{self, Cli, OPTIONS};

const FTPFS: &str = env!("CARGO_BIN_EXE_ftpfs");

/// The shipped files and the arguments that generate each.
const SHIPPED: &[(&str, &[&str])] = &[
    ("docs/ftpfs.1", &["man"]),
    ("completions/ftpfs.bash", &["completions", "bash"]),
    ("completions/_ftpfs", &["completions", "zsh"]),
    ("completions/ftpfs.fish", &["completions", "fish"]),
];

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Runs `program args`, failing the test (with a hint) if it cannot start.
fn run(program: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {program}: {e}\n\
                 (scripts/lib.sh's install_deps installs man-db, zsh and fish)"
            )
        })
}

/// Runs ftpfs, asserts success and returns its stdout.
fn ftpfs(args: &[&str]) -> String {
    let out = run(FTPFS, args, &[]);
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "ftpfs {args:?}: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Writes `text` to a temporary file, to hand to a shell.
fn temp_file(text: &str) -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().expect("create temp file");
    std::fs::write(f.path(), text).expect("write temp file");
    f
}

fn path_str(f: &tempfile::NamedTempFile) -> &str {
    f.path().to_str().expect("utf-8 temp path")
}

// ---------------------------------------------------------------------------
// The shipped files
// ---------------------------------------------------------------------------

#[test]
fn shipped_man_page_and_completions_are_up_to_date() {
    let mut stale = Vec::new();
    for (rel, args) in SHIPPED {
        let generated = ftpfs(args);
        let shipped = std::fs::read_to_string(repo_file(rel)).unwrap_or_default();
        if shipped != generated {
            stale.push(format!("{rel} (ftpfs {})", args.join(" ")));
        }
    }
    assert!(
        stale.is_empty(),
        "stale or missing: {}\nrun scripts/gen-reference.sh to regenerate them",
        stale.join(", ")
    );
}

// ---------------------------------------------------------------------------
// The man page
// ---------------------------------------------------------------------------

/// Removes overstrike (`c\bc`, `_\bc`) and SGR escapes, as `col -b` would,
/// makes every hyphen ASCII and collapses all white space to single spaces.
fn plain_text(rendered: &str) -> String {
    let mut out: Vec<char> = Vec::new();
    let mut chars = rendered.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{8}' => {
                out.pop();
            }
            '\u{1b}' => {
                // ESC [ params m
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            '\u{2010}' | '\u{2011}' | '\u{2212}' => out.push('-'),
            c => out.push(c),
        }
    }
    let text: String = out.into_iter().collect();
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The man page rendered by man(1) as plain text, white space collapsed.
fn rendered_man_page() -> String {
    let page = repo_file("docs/ftpfs.1");
    let page = page.to_str().expect("utf-8 repo path");
    let out = run(
        "man",
        &[
            "--no-hyphenation",
            "--no-justification",
            "-P",
            "cat",
            "-l",
            page,
        ],
        &[
            ("MANWIDTH", "100"),
            ("LC_ALL", "C.UTF-8"),
            ("MANPAGER", "cat"),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "man -l {page}: {}\n{stderr}",
        out.status
    );
    assert!(
        !stderr.contains("warning"),
        "man -l {page} warns:\n{stderr}"
    );
    plain_text(&String::from_utf8_lossy(&out.stdout))
}

#[test]
fn man_page_renders_with_its_sections() {
    let text = rendered_man_page();
    for section in [
        "NAME ftpfs - mount an FTP server as a local directory",
        "SYNOPSIS ftpfs [-o OPTIONS]... [-f] [-d] URL MOUNTPOINT",
        "ftpfs status MOUNTPOINT",
        "ftpfs completions SHELL",
        "ftpfs man",
        "DESCRIPTION",
        "OPTIONS",
        "MOUNT OPTIONS",
        "COMMANDS",
        "EXIT STATUS",
        "ENVIRONMENT",
        "FTPFS_PASSWORD",
        "NETRC",
        "RUST_LOG",
        "FILES ~/.netrc",
        "EXAMPLES",
        "ftp://user@host/path /mnt/site fuse.ftpfs \
         noauto,_netdev,user=NAME,password_file=/etc/ftpfs/site.pass 0 0",
        "fusermount3 -u /mnt/site",
        "SEE ALSO",
    ] {
        assert!(
            text.contains(section),
            "man page lacks {section:?}:\n{text}"
        );
    }
}

#[test]
fn man_page_lists_every_mount_option_with_its_default() {
    let text = rendered_man_page();
    let (_, options) = text
        .split_once("MOUNT OPTIONS")
        .expect("a MOUNT OPTIONS section");
    for (name, default, help) in OPTIONS {
        let entry = format!("{name} {help} [default: {default}]");
        assert!(
            options.contains(&entry),
            "MOUNT OPTIONS lacks {entry:?}:\n{options}"
        );
    }
}

// ---------------------------------------------------------------------------
// Completions
// ---------------------------------------------------------------------------

#[test]
fn bash_completion_parses_defines_the_function_and_completes_commands() {
    let script = temp_file(&ftpfs(&["completions", "bash"]));
    let path = path_str(&script);
    let check = run("bash", &["-n", path], &[]);
    assert!(
        check.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    // Source it, show the registration, and complete `ftpfs st<TAB>`.
    let probe = format!(
        "source {path} && complete -p ftpfs && \
         COMP_WORDS=(ftpfs st) COMP_CWORD=1 && _ftpfs ftpfs st ftpfs && \
         echo \"reply: ${{COMPREPLY[*]}}\""
    );
    let out = run("bash", &["--norc", "--noprofile", "-c", &probe], &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "sourcing the bash completion: {}\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let registration = stdout.lines().next().unwrap_or_default();
    assert!(
        registration.contains("-F _ftpfs") && registration.ends_with(" ftpfs"),
        "complete -p ftpfs: {stdout}"
    );
    assert!(stdout.contains("reply: status"), "{stdout}");
}

#[test]
fn zsh_completion_parses() {
    let script = temp_file(&ftpfs(&["completions", "zsh"]));
    let out = run("zsh", &["-n", path_str(&script)], &[]);
    assert!(
        out.status.success(),
        "zsh -n: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn fish_completion_parses() {
    let script = temp_file(&ftpfs(&["completions", "fish"]));
    let out = run("fish", &["--no-execute", path_str(&script)], &[]);
    assert!(
        out.status.success(),
        "fish --no-execute: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------
// The command line
// ---------------------------------------------------------------------------

#[test]
fn version_prints_name_and_version() {
    assert_eq!(
        ftpfs(&["--version"]),
        concat!("ftpfs ", env!("CARGO_PKG_VERSION"), "\n")
    );
}

#[test]
fn clap_definition_is_consistent() {
    Cli::command().debug_assert();
}

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("ftpfs").chain(args.iter().copied()))
}

#[test]
fn mount_arguments_parse_with_options_before_or_after() {
    // mount.fuse3 calls `ftpfs URL MOUNTPOINT -o opts`.
    for args in [
        &["ftp://h/p", "/mnt", "-o", "ro", "-f", "-o", "uid=1"][..],
        &["-f", "-o", "ro", "ftp://h/p", "-o", "uid=1", "/mnt"][..],
    ] {
        let cli = parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        assert!(cli.command.is_none(), "{args:?}");
        let m = cli.mount.expect("mount arguments");
        assert_eq!(
            (
                m.url.as_str(),
                m.mountpoint.as_path(),
                m.foreground,
                m.debug
            ),
            ("ftp://h/p", Path::new("/mnt"), true, false)
        );
        assert_eq!(m.options, ["ro", "uid=1"]);
    }
    // A mount point may be named like a subcommand.
    let m = parse(&["ftp://h/", "status"]).expect("parse").mount;
    assert_eq!(m.expect("mount").mountpoint, Path::new("status"));
}

#[test]
fn url_and_mountpoint_are_required_without_a_subcommand() {
    for args in [&[][..], &["ftp://h/"][..], &["-f", "ftp://h/"][..]] {
        let err = parse(args).expect_err("should not parse");
        assert_eq!(err.kind(), ErrorKind::MissingRequiredArgument, "{args:?}");
    }
}

#[test]
fn subcommands_parse() {
    let cli = parse(&["status", "/mnt/site"]).expect("status");
    assert!(cli.mount.is_none());
    assert_eq!(
        cli.command,
        Some(cli::Command::Status {
            mountpoint: "/mnt/site".into()
        })
    );
    assert_eq!(
        parse(&["completions", "zsh"]).expect("completions").command,
        Some(cli::Command::Completions {
            shell: cli::Shell::Zsh
        })
    );
    assert_eq!(
        parse(&["man"]).expect("man").command,
        Some(cli::Command::Man)
    );
    assert_eq!(
        parse(&["status"]).expect_err("no mount point").kind(),
        ErrorKind::MissingRequiredArgument
    );
    assert_eq!(
        parse(&["completions", "ksh"]).expect_err("ksh").kind(),
        ErrorKind::InvalidValue
    );
    assert!(parse(&["man", "extra"]).is_err());
}

#[test]
fn status_error_is_one_line_and_exit_code_1() {
    let out = run(FTPFS, &["status", "/nonexistent/ftpfs-reference-test"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.starts_with("ftpfs: ") && stderr.lines().count() == 1,
        "{stderr:?}"
    );
}
