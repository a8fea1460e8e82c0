//! The command line: clap arguments and the mount(8)-style `-o` options,
//! turned into plain configuration values. Every option, with its default,
//! is described once in [`OPTIONS`], which also feeds `--help` and the man page.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum, ValueHint};

/// Every `-o` option: name, default, description.
pub const OPTIONS: &[(&str, &str, &str)] = &[
    ("ro", "off", "mount read-only"),
    ("rw", "on", "mount read-write (the default)"),
    (
        "allow_other",
        "off",
        "let other users use the mount (turns on default_permissions)",
    ),
    (
        "default_permissions",
        "off",
        "let the kernel check permissions from the modes shown",
    ),
    ("uid=N", "your uid", "owner shown for every file"),
    ("gid=N", "your gid", "group shown for every file"),
    (
        "umask=OCTAL",
        "0",
        "bits removed from the modes the server reports",
    ),
    ("user=NAME", "from URL", "login name, when the URL has none"),
    (
        "password_file=FILE",
        "none",
        "read the password from FILE (first line)",
    ),
    ("connections=N", "5", "size of the FTP connection pool"),
    (
        "read_streams=N",
        "4",
        "downloads at once for one large sequential read, where one stream is slow (a server that paces each connection); 1 turns it off",
    ),
    (
        "cache_timeout=SECS",
        "30",
        "how long attributes and listings are trusted",
    ),
    (
        "block_cache=MIB",
        "32",
        "memory for cached file blocks, in MiB (0 turns it off)",
    ),
    (
        "connect_timeout=SECS",
        "10",
        "timeout for connecting and logging in",
    ),
    (
        "timeout=SECS",
        "30",
        "timeout for every command and data transfer step",
    ),
    (
        "debug",
        "off",
        "log every FTP command (PASS masked); implies -f",
    ),
    (
        "nonempty",
        "off",
        "mount over a directory that is not empty (its files are hidden meanwhile)",
    ),
    (
        "fsname=NAME",
        "the URL",
        "source name shown in /proc/mounts",
    ),
    (
        "cache_dir=DIR",
        "$XDG_CACHE_HOME/ftpfs",
        "where unsaved writes are spooled (a private 0700 directory), the async journal, and the exact times ftpfs set (kept across mounts)",
    ),
    (
        "writeback=MODE",
        "close",
        "close: close() waits for the upload and returns its error; async: close() returns once the data is safe on local disk (a journal in cache_dir) and uploads run in the background (see `ftpfs sync`)",
    ),
    (
        "direct_upload",
        "off",
        "upload in place instead of to a temporary name renamed over the file",
    ),
    (
        "tls[=try]",
        "off",
        "require explicit TLS (AUTH TLS); tls=try falls back to plain FTP if refused",
    ),
    (
        "cacert=FILE",
        "system roots",
        "also trust the CA certificates in FILE (PEM)",
    ),
    (
        "no_verify",
        "off",
        "do not verify the server's certificate (insecure; logged loudly)",
    ),
    (
        "active",
        "off",
        "active mode (PORT/EPRT): the server connects back for data",
    ),
    (
        "pasv_ip_workaround",
        "off",
        "ignore the address in PASV replies and use the server's (NAT)",
    ),
    (
        "encoding=NAME",
        "utf8",
        "character set of names on the server: utf8, latin1, or a codepage such as windows-1251, shift_jis, gbk",
    ),
];

/// Options that mount(8) or mount.fuse3 pass on and that do not concern us, so that
/// an fstab line works whether mount(8) strips them or not. `x-*`, `X-*` and
/// `comment=` (fstab comments for systemd and friends) are ignored too.
/// mount(8) adds `noexec,nosuid,nodev` for `user`/`users` mounts and mount.fuse3
/// adds `dev,suid`; ftpfs always mounts nodev,nosuid.
const IGNORED: &[&str] = &[
    "auto",
    "noauto",
    "_netdev",
    "nofail",
    "user",
    "users",
    "nouser",
    "owner",
    "noowner",
    "group",
    "nogroup",
    "defaults",
    "dev",
    "nodev",
    "suid",
    "nosuid",
    "exec",
    "noexec",
    "atime",
    "noatime",
    "relatime",
    "norelatime",
    "strictatime",
    "diratime",
    "nodiratime",
    "async",
    "sync",
    "dirsync",
    "silent",
    "loud",
    "rootmode",
    "blkdev",
    "subtype",
];

/// What URL means and where the password comes from, one paragraph each:
/// the prose that `--help` and the man page share.
pub const URL_HELP: &[&str] = &[
    "URL is ftp://[user[:password]@]host[:port][/path]; percent-encoding is decoded. \
     A path is relative to the login directory; start it with // (or %2F) for an absolute one. \
     ftpes:// asks for explicit TLS (as -o tls does), ftps:// for implicit TLS (port 990 by default).",
    "The password comes from, in order: the URL, -o password_file=FILE, the FTPFS_PASSWORD \
     environment variable, ~/.netrc, or a prompt when stdin is a terminal. \
     Without a user, the login is anonymous.",
];

fn after_help() -> String {
    let mut s = URL_HELP.join("\n\n");
    s.push_str("\n\nMount options (-o name[=value],...):\n");
    for (name, default, help) in OPTIONS {
        s.push_str(&format!("  {name:<22} {help} [default: {default}]\n"));
    }
    s.push_str("\nUnmount with: fusermount3 -u MOUNTPOINT\nLogging: RUST_LOG=ftpfs=debug (see env_logger).");
    s
}

/// The whole command line: `ftpfs [OPTIONS] URL MOUNTPOINT` mounts; a
/// subcommand instead of URL does one of the other jobs.
#[derive(Parser, Debug)]
#[command(
    name = "ftpfs",
    version,
    about = "Mount an FTP server as a local directory",
    after_help = after_help(),
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    disable_help_subcommand = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The mount arguments; present exactly when there is no subcommand.
    #[command(flatten)]
    pub mount: Option<Args>,
}

/// The subcommands, which do not mount anything.
#[derive(Subcommand, Debug, PartialEq)]
pub enum Command {
    /// Show the state of a running ftpfs mount
    Status {
        /// Where ftpfs is mounted
        #[arg(value_hint = ValueHint::DirPath)]
        mountpoint: PathBuf,
    },
    /// Wait until a mount has uploaded everything written to it; exit 1,
    /// naming the files, if an upload failed for good
    Sync {
        /// Where ftpfs is mounted
        #[arg(value_hint = ValueHint::DirPath)]
        mountpoint: PathBuf,
        /// Give up waiting after this many seconds (exit 1); default: no limit
        #[arg(long, value_name = "SECS")]
        timeout: Option<f64>,
    },
    /// Print a shell completion script to stdout
    Completions {
        /// The shell to complete for
        shell: Shell,
    },
    /// Print the man page (roff) to stdout
    Man,
}

/// The shells `ftpfs completions` writes scripts for.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// The arguments of a mount: `ftpfs [OPTIONS] URL MOUNTPOINT`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// ftp://[user[:password]@]host[:port][/path] (or ftpes://, ftps:// for TLS)
    #[arg(value_hint = ValueHint::Url)]
    pub url: String,
    /// An existing, empty directory to mount on
    #[arg(value_hint = ValueHint::DirPath)]
    pub mountpoint: PathBuf,
    /// Mount options, comma separated (see below); may be repeated
    #[arg(
        short = 'o',
        value_name = "OPTIONS",
        action = clap::ArgAction::Append,
        value_hint = ValueHint::Other
    )]
    pub options: Vec<String>,
    /// Stay in the foreground instead of going to the background
    #[arg(short = 'f', long = "foreground")]
    pub foreground: bool,
    /// Debug output: log the FTP dialogue (PASS masked); implies -f
    #[arg(short = 'd', long = "debug")]
    pub debug: bool,
}

/// The values of the `-o` options.
#[derive(Debug, Clone, PartialEq)]
pub struct MountOpts {
    pub read_only: bool,
    pub allow_other: bool,
    pub default_permissions: bool,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub umask: u32,
    pub user: Option<String>,
    pub password_file: Option<PathBuf>,
    pub connections: usize,
    pub read_streams: usize,
    pub cache_timeout: Duration,
    pub block_cache_mib: usize,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub debug: bool,
    pub fsname: Option<String>,
    pub nonempty: bool,
    pub cache_dir: Option<PathBuf>,
    pub direct_upload: bool,
    pub writeback: crate::fs::Writeback,
    pub tls: crate::ftp::tls::TlsMode,
    pub cacert: Option<PathBuf>,
    pub no_verify: bool,
    pub active: bool,
    pub pasv_ip_workaround: bool,
    pub encoding: crate::ftp::names::NameEncoding,
}

impl Default for MountOpts {
    fn default() -> Self {
        MountOpts {
            read_only: false,
            allow_other: false,
            default_permissions: false,
            uid: None,
            gid: None,
            umask: 0,
            user: None,
            password_file: None,
            connections: 5,
            read_streams: 4,
            cache_timeout: Duration::from_secs(30),
            block_cache_mib: 32,
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(30),
            debug: false,
            fsname: None,
            nonempty: false,
            cache_dir: None,
            direct_upload: false,
            writeback: crate::fs::Writeback::Close,
            tls: crate::ftp::tls::TlsMode::Off,
            cacert: None,
            no_verify: false,
            active: false,
            pasv_ip_workaround: false,
            encoding: Default::default(),
        }
    }
}

fn number<T: std::str::FromStr>(name: &str, v: Option<&str>) -> Result<T, String> {
    let v = v.ok_or_else(|| format!("option {name} needs a value"))?;
    v.parse()
        .map_err(|_| format!("option {name}: {v:?} is not a valid number"))
}

fn seconds(name: &str, v: Option<&str>) -> Result<Duration, String> {
    let s: f64 = number(name, v)?;
    if !(0.0..=86400.0).contains(&s) {
        return Err(format!("option {name}: {s} is out of range"));
    }
    Ok(Duration::from_secs_f64(s))
}

impl MountOpts {
    /// Parses every `-o` argument (each comma separated) on top of the defaults.
    pub fn parse(args: &[String]) -> Result<MountOpts, String> {
        let mut o = MountOpts::default();
        for arg in args {
            for item in arg.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let (name, value) = match item.split_once('=') {
                    Some((n, v)) => (n, Some(v)),
                    None => (item, None),
                };
                match name {
                    "ro" => o.read_only = true,
                    "rw" => o.read_only = false,
                    "allow_other" => o.allow_other = true,
                    "default_permissions" => o.default_permissions = true,
                    "uid" => o.uid = Some(number(name, value)?),
                    "gid" => o.gid = Some(number(name, value)?),
                    "umask" => {
                        let v = value.ok_or("option umask needs a value")?;
                        o.umask = u32::from_str_radix(v, 8)
                            .ok()
                            .filter(|m| *m <= 0o7777)
                            .ok_or_else(|| format!("option umask: {v:?} is not an octal mode"))?;
                    }
                    // mount(8) keeps `user=NAME` only when root mounts; `username=` always passes.
                    "user" | "username" if value.is_some() => {
                        let v = value.filter(|v| !v.is_empty());
                        o.user = Some(
                            v.ok_or(format!("option {name}= needs a login name"))?
                                .into(),
                        )
                    }
                    "password_file" => {
                        o.password_file =
                            Some(value.ok_or("option password_file needs a value")?.into())
                    }
                    "connections" => {
                        o.connections = number(name, value)?;
                        if !(1..=64).contains(&o.connections) {
                            return Err("option connections must be between 1 and 64".into());
                        }
                    }
                    "read_streams" => {
                        o.read_streams = number(name, value)?;
                        if !(1..=16).contains(&o.read_streams) {
                            return Err("option read_streams must be between 1 and 16".into());
                        }
                    }
                    "cache_timeout" => o.cache_timeout = seconds(name, value)?,
                    "block_cache" => o.block_cache_mib = number(name, value)?,
                    "connect_timeout" => o.connect_timeout = seconds(name, value)?,
                    "timeout" => o.timeout = seconds(name, value)?,
                    "debug" => o.debug = true,
                    "direct_upload" => o.direct_upload = true,
                    "writeback" => {
                        o.writeback = match value {
                            Some("close") => crate::fs::Writeback::Close,
                            Some("async") => crate::fs::Writeback::Async,
                            v => {
                                return Err(format!(
                                    "option writeback: {:?} is not one of close, async",
                                    v.unwrap_or("")
                                ))
                            }
                        }
                    }
                    "tls" => {
                        o.tls = match value {
                            None | Some("yes") | Some("require") => {
                                crate::ftp::tls::TlsMode::Explicit
                            }
                            Some("try") => crate::ftp::tls::TlsMode::Try,
                            Some("no") | Some("off") => crate::ftp::tls::TlsMode::Off,
                            Some(v) => {
                                return Err(format!("option tls: {v:?} is not one of yes, try, no"))
                            }
                        }
                    }
                    "cacert" => o.cacert = Some(value.ok_or("option cacert needs a file")?.into()),
                    "no_verify" => o.no_verify = true,
                    "active" => o.active = true,
                    "pasv_ip_workaround" => o.pasv_ip_workaround = true,
                    "encoding" => {
                        o.encoding = crate::ftp::names::NameEncoding::from_label(
                            value.ok_or("option encoding needs a value")?,
                        )?
                    }
                    "cache_dir" => {
                        o.cache_dir = Some(value.ok_or("option cache_dir needs a value")?.into())
                    }
                    "fsname" => o.fsname = value.map(str::to_string),
                    "nonempty" => o.nonempty = true,
                    n if IGNORED.contains(&n)
                        || n.starts_with("x-")
                        || n.starts_with("X-")
                        || n == "comment" =>
                    {
                        log::debug!("ignoring mount option {item:?}");
                    }
                    "password" => {
                        return Err("option password= is not accepted (it would show in ps); \
                             use password_file=, FTPFS_PASSWORD or ~/.netrc"
                            .into())
                    }
                    _ => return Err(format!("unknown mount option {name:?} (see --help)")),
                }
            }
        }
        if o.allow_other {
            o.default_permissions = true;
        }
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &[&str]) -> Result<MountOpts, String> {
        MountOpts::parse(&s.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn defaults() {
        let o = parse(&[]).unwrap();
        assert_eq!(o.connections, 5);
        assert_eq!(o.cache_timeout, Duration::from_secs(30));
        assert!(!o.read_only && !o.allow_other);
    }

    #[test]
    fn comma_separated_and_repeated() {
        let o = parse(&[
            "ro,uid=1000,gid=100",
            "umask=022,connections=8",
            "cache_timeout=1.5",
        ])
        .unwrap();
        assert!(o.read_only);
        assert_eq!(
            (o.uid, o.gid, o.umask, o.connections),
            (Some(1000), Some(100), 0o22, 8)
        );
        assert_eq!(o.cache_timeout, Duration::from_millis(1500));
    }

    #[test]
    fn writeback_is_close_unless_async_is_asked_for() {
        use crate::fs::Writeback;
        assert_eq!(parse(&[]).unwrap().writeback, Writeback::Close);
        assert_eq!(
            parse(&["writeback=close"]).unwrap().writeback,
            Writeback::Close
        );
        assert_eq!(
            parse(&["writeback=async"]).unwrap().writeback,
            Writeback::Async
        );
        assert!(parse(&["writeback=later"])
            .unwrap_err()
            .contains("close, async"));
        assert!(parse(&["writeback"]).is_err());
    }

    #[test]
    fn allow_other_turns_on_default_permissions() {
        assert!(parse(&["allow_other"]).unwrap().default_permissions);
    }

    #[test]
    fn mount_helper_options_are_ignored_but_typos_are_not() {
        assert!(parse(&["_netdev,noauto,x-systemd.automount,nosuid,nodev,rw"]).is_ok());
        assert!(parse(&["conections=3"]).unwrap_err().contains("unknown"));
        assert!(parse(&["uid=abc"]).is_err());
        assert!(parse(&["umask=999"]).is_err());
        assert!(parse(&["connections=0"]).is_err());
        assert!(parse(&["password=x"]).unwrap_err().contains("ps"));
        assert!(parse(&["tls=maybe"]).is_err());
        let o = parse(&["tls,cacert=/ca.pem"]).unwrap();
        assert_eq!(o.tls, crate::ftp::tls::TlsMode::Explicit);
        assert_eq!(
            parse(&["tls=try"]).unwrap().tls,
            crate::ftp::tls::TlsMode::Try
        );
    }

    #[test]
    fn what_mount_and_mount_fuse3_pass_is_accepted() {
        // As seen from `mount -t fuse.ftpfs` (root, and a `users` fstab line).
        let o = parse(&["rw,password_file=/pw,user=bob,exec,suid,dev,dev,suid"]).unwrap();
        assert_eq!(o.user.as_deref(), Some("bob"));
        assert!(parse(&["rw,noexec,nosuid,nodev,user,users,_netdev"]).is_ok());
        // Given to ftpfs directly: fstab comments for systemd and others.
        let o = parse(&["x-systemd.automount,x-systemd.mount-timeout=30,X-mount.mkdir=0755"]);
        assert_eq!(o.unwrap(), MountOpts::default());
        assert!(parse(&["comment=systemd.automount,defaults,nofail,noauto"]).is_ok());
        assert_eq!(
            parse(&["username=carol"]).unwrap().user.as_deref(),
            Some("carol")
        );
        assert!(parse(&["user="]).unwrap_err().contains("login name"));
    }

    #[test]
    fn help_lists_every_option_with_its_default() {
        let h = after_help();
        for (name, default, _) in OPTIONS {
            assert!(h.contains(name) && h.contains(default), "{name}");
        }
    }
}
