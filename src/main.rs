//! ftpfs: mount an FTP server as a local directory.
//!
//! The entry point: parse the command line, find the credentials, log in once to
//! check them, mount, go to the background, and unmount cleanly on a signal.
//! Or, with a subcommand instead of the URL: report a mount's status, wait for
//! its uploads, or print shell completions or the man page.

use ftpfs::{
    argv, cli, credentials, daemon, fs, ftp, fuse, logging, mount, reference, stats, status,
};

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::Arc;

use clap::{error::ErrorKind, CommandFactory, Parser};
use fuser::Config;

use cli::{Args, Cli, Command, MountOpts};
use credentials::{parse_url, resolve_login, Sources};
use ftp::conn::ConnConfig;
use ftp::FtpRemote;

fn main() {
    let cli = Cli::parse();
    let result = match (cli.command, cli.mount) {
        (Some(Command::Status { mountpoint }), _) => status::print(&mountpoint),
        (
            Some(Command::Sync {
                mountpoint,
                timeout,
            }),
            _,
        ) => status::sync(&mountpoint, timeout),
        (Some(Command::Completions { shell }), _) => print(&reference::completions(shell)),
        (Some(Command::Man), _) => reference::man_page()
            .map_err(|e| format!("rendering the man page: {e}"))
            .and_then(|page| print(&page)),
        (None, Some(args)) => run(args),
        // Not reached: clap requires URL and MOUNTPOINT without a subcommand.
        (None, None) => Cli::command()
            .error(
                ErrorKind::MissingRequiredArgument,
                "URL and MOUNTPOINT are required",
            )
            .exit(),
    };
    if let Err(msg) = result {
        eprintln!("ftpfs: {msg}");
        std::process::exit(1);
    }
}

/// Writes generated text to stdout; a reader that stops early (`| head`) is fine.
fn print(bytes: &[u8]) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(format!("writing to stdout: {e}"))
        }
        _ => Ok(()),
    }
}

/// Answers `ftpfs status MOUNTPOINT`. Without it the mount still works, so a
/// failure is only logged.
fn start_status(
    mountpoint: &Path,
    shared: bool,
    display: &str,
    tls: ftp::tls::TlsMode,
    encoding: ftp::names::NameEncoding,
    remote: &Arc<FtpRemote>,
    filesystem: &Arc<fs::FtpFs>,
) -> Option<status::StatusServer> {
    let mut security = match tls {
        ftp::tls::TlsMode::Off => "plain FTP, not encrypted",
        ftp::tls::TlsMode::Try => "TLS when the server offers it (tls=try)",
        ftp::tls::TlsMode::Explicit => "TLS, explicit (AUTH TLS)",
        ftp::tls::TlsMode::Implicit => "TLS, implicit (ftps://)",
    }
    .to_string();
    if !encoding.is_utf8() {
        security.push_str(&format!("; names in {}", encoding.name()));
    }
    let cfg = filesystem.config();
    let writeback = match (cfg.writeback, &cfg.journal_dir) {
        (fs::Writeback::Async, Some(dir)) => format!("async, journal in {}", dir.display()),
        _ => "close (close() waits for the upload)".to_string(),
    };
    let sync_fs = Arc::clone(filesystem);
    let sync = move |limit| sync_fs.sync_uploads(limit);
    let (mnt, server) = (mountpoint.to_path_buf(), display.to_string());
    let (remote, filesystem) = (Arc::clone(remote), Arc::clone(filesystem));
    let started = std::time::Instant::now();
    let report = move || {
        let pool = remote.pool().snapshot();
        let (bytes_down, bytes_up) = stats::STATS.bytes();
        status::Report {
            mountpoint: mnt.clone(),
            pid: std::process::id(),
            uptime: started.elapsed(),
            server: server.clone(),
            security: security.clone(),
            features: remote.features().summary(),
            pool: status::PoolView {
                open: pool.open,
                idle: pool.idle,
                transfers: pool.transfers,
                limit: pool.limit,
                configured: pool.configured,
            },
            uploads: stats::STATS.uploads(),
            pending: filesystem.pending_uploads(),
            writeback: writeback.clone(),
            queue: filesystem.queue_view(),
            cache: filesystem.cache_stats(),
            bytes_down,
            bytes_up,
            errors: stats::STATS.errors(),
        }
    };
    status::serve(mountpoint, shared, report, sync)
        .map_err(|e| log::warn!("no `ftpfs status` for this mount: {e}"))
        .ok()
}

fn netrc_text() -> Option<String> {
    let path = std::env::var_os("NETRC")
        .map(std::path::PathBuf::from)
        .or_else(|| daemon::home_dir().map(|h| h.join(".netrc")))?;
    std::fs::read_to_string(path).ok()
}

fn run(args: Args) -> Result<(), String> {
    let opts = MountOpts::parse(&args.options)?;
    let debug = args.debug || opts.debug;
    let foreground = args.foreground || debug;
    logging::init(debug);

    let mut target = parse_url(&args.url)?;
    if let Some(password) = argv::take_handed_password() {
        target.password = Some(password);
    } else if let (Some(password), Some(public)) =
        (&target.password, argv::without_password(&args.url))
    {
        // Only returns when ftpfs could not run itself again.
        let why = argv::reexec_without(&args.url, &public, password.expose());
        log::warn!("could not hide the password from the process list: {why}");
    }
    let mountpoint = daemon::check_mountpoint(&args.mountpoint, opts.nonempty)?;
    // SAFETY: geteuid cannot fail.
    let euid = unsafe { libc::geteuid() };
    // Before the login: what fusermount3 would refuse after it.
    mount::check_allowed(opts.allow_other, euid)?;

    let prompt = |q: &str| {
        if std::io::stdin().is_terminal() {
            rpassword::prompt_password(q).ok()
        } else {
            None
        }
    };
    let env_password = std::env::var("FTPFS_PASSWORD").ok();
    let login = resolve_login(
        &target,
        opts.user.as_deref(),
        &Sources {
            password_file: opts.password_file.as_deref(),
            env_password,
            netrc: netrc_text(),
            prompt: Some(&prompt),
        },
    )?;
    let display = target.display(&login.user);

    let tls_opts = ftp::tls::TlsOptions {
        mode: if target.tls == ftp::tls::TlsMode::Off {
            opts.tls
        } else {
            target.tls
        },
        cacert: opts.cacert.clone(),
        no_verify: opts.no_verify,
    };
    let tls = ftp::tls::client_config(&tls_opts)?;
    let cfg = ConnConfig {
        tls_mode: tls_opts.mode,
        tls,
        active: opts.active,
        pasv_ip_workaround: opts.pasv_ip_workaround,
        encoding: opts.encoding,
        host: target.host.clone(),
        port: target.port,
        user: login.user.clone(),
        password: login.password.clone(),
        connect_timeout: opts.connect_timeout,
        timeout: opts.timeout,
    };
    let remote = FtpRemote::connect(cfg, opts.connections, &target.path)
        .map_err(|e| format!("cannot mount {display}: {}", e.message))?;

    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let fs_cfg = fs::FsConfig {
        uid: opts.uid.unwrap_or(uid),
        gid: opts.gid.unwrap_or(gid),
        umask: opts.umask,
        cache_timeout: opts.cache_timeout,
        block_cache: opts.block_cache_mib << 20,
        timeout: opts.timeout,
        read_only: opts.read_only,
        spool_dir: daemon::spool_dir(opts.cache_dir.as_deref())?,
        upload_mode: if opts.direct_upload {
            fs::lifecycle::UploadMode::Direct
        } else {
            fs::lifecycle::UploadMode::Atomic
        },
        writeback: opts.writeback,
        // Uploads left by an earlier mount are resumed whatever the mode.
        journal_dir: daemon::journal_dir(
            opts.cache_dir.as_deref(),
            &display,
            opts.writeback == fs::Writeback::Async,
        )?,
        // Transfers may take all connections but one (kept for listings).
        upload_workers: opts.connections.saturating_sub(1).max(1),
        set_times_file: daemon::set_times_file(opts.cache_dir.as_deref(), &display),
        read_streams: opts.read_streams,
        ..fs::FsConfig::default()
    };

    let mut ready = if foreground {
        daemon::ReadyPipe::none()
    } else {
        let ready = daemon::daemonize().map_err(|e| format!("cannot go to the background: {e}"))?;
        // stderr is /dev/null now.
        logging::to_syslog();
        ready
    };
    let mounted = Mounted {
        opts: &opts,
        display: &display,
        mountpoint: &mountpoint,
        tls_mode: tls_opts.mode,
        euid,
        remote,
        fs_cfg,
    };
    let result = mounted.serve(&mut ready);
    if let Err(e) = &result {
        if !foreground {
            // For the system log; the parent, still on the terminal, prints it.
            log::error!("{e}");
            ready.notify_failed(e);
        }
    }
    result
}

/// Everything the mount needs once ftpfs is logged in (and in the background).
struct Mounted<'a> {
    opts: &'a MountOpts,
    display: &'a str,
    mountpoint: &'a Path,
    tls_mode: ftp::tls::TlsMode,
    euid: u32,
    remote: FtpRemote,
    fs_cfg: fs::FsConfig,
}

impl Mounted<'_> {
    /// Mounts, tells the waiting parent, and serves until unmounted.
    fn serve(self, ready: &mut daemon::ReadyPipe) -> Result<(), String> {
        let Mounted {
            opts,
            display,
            mountpoint,
            tls_mode,
            euid,
            remote,
            fs_cfg,
        } = self;
        let spool_dir = fs_cfg.spool_dir.clone();
        let journal_dir = fs_cfg.journal_dir.clone();
        let signals = daemon::block_signals();
        daemon::raise_open_file_limit();
        // Threads start only now: after the fork, and with the signals blocked.
        remote.pool().start_keepalive();

        let remote = Arc::new(remote);
        let filesystem = fs::FtpFs::new_shared(Arc::clone(&remote) as _, fs_cfg);
        filesystem.warm_up();
        filesystem.resume_journal();
        let _status = start_status(
            mountpoint,
            opts.allow_other,
            display,
            tls_mode,
            opts.encoding,
            &remote,
            &filesystem,
        );
        let spec = mount::MountSpec {
            fsname: opts.fsname.clone().unwrap_or(display.to_string()),
            read_only: opts.read_only,
            default_permissions: opts.default_permissions,
            allow_other: opts.allow_other,
        };
        let mut config = Config::default();
        config.n_threads = Some((opts.connections * 2).clamp(4, 16));
        config.clone_fd = true;
        let (mut session, way) = mount::mount(
            fuse::FuseAdapter::new(Arc::clone(&filesystem)),
            mountpoint,
            &spec,
            config,
            euid,
        )?;
        fuse::raise_readahead(mountpoint, 2048);
        let mut unmounter = session.unmount_callable();
        let mnt = mountpoint.to_path_buf();
        daemon::on_termination(signals, move |sig| {
            log::info!("signal {sig}: unmounting {}", mnt.display());
            let done = way == mount::Way::Fuser && unmounter.unmount().is_ok();
            if !done && !daemon::unmount(&mnt) {
                log::error!("could not unmount {}", mnt.display());
            }
        });
        log::info!("mounted {display} on {}", mountpoint.display());
        ready.notify_ready();
        let result = session.run();
        filesystem.wait_for_uploads();
        remote.pool().close_idle();
        // Empty unless an upload failed for good (its data is kept there, and logged).
        let _ = std::fs::remove_dir(&spool_dir);
        if let Some(dir) = &journal_dir {
            daemon::remove_journal_if_empty(dir);
        }
        result.map_err(|e| format!("session ended with an error: {e}"))
    }
}
