//! The FTP-aware fault-injection proxy (tests/support/proxy.rs) against real
//! servers: it relays passive and active transfers byte for byte, adds the
//! configured latency, and injects each of its faults. Last, ftpfs itself
//! mounts a server through a delayed proxy.

#[macro_use]
mod support;

use std::fs;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use support::{
    files_equal, gen_bytes, wait_until, ControlReset, DataFault, FtpServer, Mount, Proxy,
    ProxyConfig, RawFtp,
};

on_both_servers!(
    relays_listings_and_files_in_every_mode,
    upload_goes_through,
    data_reset_fails_the_download_only,
    aborted_download_keeps_the_session_usable,
    ftpfs_reads_through_a_delayed_proxy,
);

const T: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// A small FTP client on top of support::RawFtp
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq)]
enum DataMode {
    Epsv,
    Pasv,
    Port,
    Eprt,
}

const ALL_MODES: [DataMode; 4] = [
    DataMode::Epsv,
    DataMode::Pasv,
    DataMode::Port,
    DataMode::Eprt,
];

/// A data connection being set up: passive ones are connected already,
/// active ones are accepted once the transfer command was sent.
enum Data {
    Connected(TcpStream),
    Listening(TcpListener),
}

impl Data {
    fn stream(self) -> io::Result<TcpStream> {
        let s = match self {
            Data::Connected(s) => s,
            Data::Listening(l) => {
                l.set_nonblocking(true)?;
                let deadline = Instant::now() + T;
                loop {
                    match l.accept() {
                        Ok((s, _)) => break s,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            if Instant::now() > deadline {
                                return Err(io::Error::new(
                                    io::ErrorKind::TimedOut,
                                    "no data connection",
                                ));
                            }
                            thread::sleep(Duration::from_millis(2));
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
        };
        s.set_nonblocking(false)?;
        s.set_read_timeout(Some(T))?;
        Ok(s)
    }
}

fn other(msg: String) -> io::Error {
    io::Error::other(msg)
}

/// Connect to the proxy and log in.
fn login(proxy: &Proxy, s: &FtpServer) -> RawFtp {
    let (mut ftp, code, text) = RawFtp::connect(proxy.port, T).expect("connect to proxy");
    assert_eq!(code, 220, "greeting through the proxy: {text}");
    ftp.login(&s.user, &s.password)
        .unwrap_or_else(|e| panic!("login through the proxy: {e}\n{}", s.log()));
    let (code, text) = ftp.cmd("TYPE I").unwrap();
    assert_eq!(code, 200, "TYPE I: {text}");
    ftp
}

/// The port of a `229 ... (|||port|)` reply.
fn epsv_port(text: &str) -> Option<u16> {
    let inner = text.split('(').nth(1)?.split(')').next()?;
    inner.trim_matches('|').parse().ok()
}

/// The address of a `227 ... (h1,h2,h3,h4,p1,p2)` reply.
fn pasv_addr(text: &str) -> Option<SocketAddr> {
    let inner = text.split('(').nth(1)?.split(')').next()?;
    let n: Vec<u16> = inner
        .split(',')
        .map(|x| x.trim().parse().ok())
        .collect::<Option<_>>()?;
    if n.len() != 6 {
        return None;
    }
    format!("{}.{}.{}.{}:{}", n[0], n[1], n[2], n[3], n[4] * 256 + n[5])
        .parse()
        .ok()
}

/// Prepare a data connection in `mode` (before the transfer command).
fn open_data(ftp: &mut RawFtp, mode: DataMode) -> io::Result<Data> {
    match mode {
        DataMode::Epsv => {
            let (code, text) = ftp.cmd("EPSV")?;
            let port = epsv_port(&text).filter(|_| code == 229);
            let port = port.ok_or_else(|| other(format!("EPSV: {text}")))?;
            Ok(Data::Connected(TcpStream::connect(("127.0.0.1", port))?))
        }
        DataMode::Pasv => {
            let (code, text) = ftp.cmd("PASV")?;
            let addr = pasv_addr(&text).filter(|_| code == 227);
            let addr = addr.ok_or_else(|| other(format!("PASV: {text}")))?;
            assert_eq!(addr.ip().to_string(), "127.0.0.1", "{text}");
            Ok(Data::Connected(TcpStream::connect(addr)?))
        }
        DataMode::Port | DataMode::Eprt => {
            let l = TcpListener::bind("127.0.0.1:0")?;
            let port = l.local_addr()?.port();
            let cmd = if mode == DataMode::Port {
                format!("PORT 127,0,0,1,{},{}", port >> 8, port & 0xff)
            } else {
                format!("EPRT |1|127.0.0.1|{port}|")
            };
            let (code, text) = ftp.cmd(&cmd)?;
            if code != 200 {
                return Err(other(format!("{cmd}: {text}")));
            }
            Ok(Data::Listening(l))
        }
    }
}

/// Run a download-type command (`RETR x`, `LIST`, `NLST`) and return the
/// data and the final reply code. The final reply is read even when the
/// data connection fails (the error is returned then), so the control
/// connection stays in step.
fn download(ftp: &mut RawFtp, cmd: &str, mode: DataMode) -> io::Result<(Vec<u8>, u32)> {
    let data = open_data(ftp, mode)?;
    let (code, text) = ftp.cmd(cmd)?;
    if code != 150 && code != 125 {
        return Err(other(format!("{cmd}: {text}")));
    }
    let mut buf = Vec::new();
    let res = data.stream().and_then(|mut d| d.read_to_end(&mut buf));
    let (code, text) = ftp.read_reply()?;
    match res {
        Ok(_) => Ok((buf, code)),
        Err(e) => Err(other(format!(
            "{cmd}: {e} after {} bytes; then {text}",
            buf.len()
        ))),
    }
}

fn assert_transfer_started(code: u32, what: &str) {
    assert!(code == 150 || code == 125, "{what}: {code}");
}

/// `RETR path`, which must succeed.
fn retr(ftp: &mut RawFtp, path: &str, mode: DataMode) -> Vec<u8> {
    let (data, code) = download(ftp, &format!("RETR {path}"), mode)
        .unwrap_or_else(|e| panic!("RETR {path} ({mode:?}): {e}"));
    assert_eq!(code, 226, "RETR {path} ({mode:?}) final reply");
    data
}

fn proxy_for(s: &FtpServer, delay_ms: u64) -> Proxy {
    let upstream = SocketAddr::from(([127, 0, 0, 1], s.port));
    Proxy::start(ProxyConfig::new(upstream).with_delay(Duration::from_millis(delay_ms)))
        .expect("start proxy")
}

/// The command failed because the connection is gone (not a timeout).
fn is_disconnected(r: &io::Result<(u32, String)>) -> bool {
    r.as_ref().is_err_and(|e| !is_timeout(e))
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

// ---------------------------------------------------------------------------
// Relaying
// ---------------------------------------------------------------------------

fn relays_listings_and_files_in_every_mode(s: FtpServer) {
    let big = gen_bytes(3 << 20, 7);
    s.create_file("big.bin", &big);
    s.create_file("with space.txt", b"spaces\n");
    s.create_file("empty", b"");
    let proxy = proxy_for(&s, 0);
    let mut ftp = login(&proxy, &s);
    for mode in ALL_MODES {
        let (list, code) = download(&mut ftp, "LIST", mode).unwrap();
        assert_eq!(code, 226, "LIST ({mode:?})");
        let list = String::from_utf8_lossy(&list);
        for name in ["big.bin", "with space.txt", "empty"] {
            assert!(list.contains(name), "LIST ({mode:?}) lacks {name}:\n{list}");
        }
        assert!(
            retr(&mut ftp, "big.bin", mode) == big,
            "big.bin differs ({mode:?})"
        );
        assert_eq!(retr(&mut ftp, "with space.txt", mode), b"spaces\n");
        assert!(retr(&mut ftp, "empty", mode).is_empty());
    }
    assert_eq!(ftp.cmd("QUIT").unwrap().0, 221);
    let st = proxy.stats();
    assert_eq!(st.data_connections, 16, "{st:?}");
    assert!(st.bytes_to_client >= 4 * (3 << 20), "{st:?}");
    assert_eq!(
        (st.sessions, st.control_resets, st.data_faults),
        (1, 0, 0),
        "{st:?}"
    );
}

fn upload_goes_through(s: FtpServer) {
    let proxy = proxy_for(&s, 2);
    let mut ftp = login(&proxy, &s);
    for (i, mode) in ALL_MODES.into_iter().enumerate() {
        let content = gen_bytes(1_500_000 + i, i as u64);
        let name = format!("up{i}.bin");
        let data = open_data(&mut ftp, mode).unwrap();
        let (code, text) = ftp.cmd(&format!("STOR {name}")).unwrap();
        assert_transfer_started(code, &format!("STOR ({mode:?}): {text}"));
        let mut d = data.stream().unwrap();
        d.write_all(&content).unwrap();
        d.shutdown(Shutdown::Write).unwrap();
        drop(d);
        let (code, text) = ftp.read_reply().unwrap();
        assert_eq!(code, 226, "STOR ({mode:?}): {text}");
        assert!(
            fs::read(s.path(&name)).unwrap() == content,
            "{name} differs ({mode:?})"
        );
    }
    let st = proxy.stats();
    assert!(st.bytes_to_server >= 4 * 1_500_000, "{st:?}");
}

fn aborted_download_keeps_the_session_usable(s: FtpServer) {
    let big = gen_bytes(8 << 20, 3);
    s.create_file("big.bin", &big);
    let proxy = proxy_for(&s, 1);
    let mut ftp = login(&proxy, &s);
    // Read a little, then close the data connection (what ftpfs does on a seek).
    let data = open_data(&mut ftp, DataMode::Epsv).unwrap();
    assert_transfer_started(ftp.cmd("RETR big.bin").unwrap().0, "RETR");
    let mut d = data.stream().unwrap();
    let mut head = vec![0u8; 10_000];
    d.read_exact(&mut head).unwrap();
    assert!(head == big[..10_000]);
    drop(d);
    let (code, text) = ftp.read_reply().unwrap();
    assert!(
        code == 426 || code == 226 || code == 451,
        "after abort: {text}"
    );
    let (code, text) = ftp.cmd("NOOP").unwrap();
    assert_eq!(code, 200, "NOOP after abort: {text}");
    assert!(retr(&mut ftp, "big.bin", DataMode::Pasv) == big);
}

#[test]
fn auth_tls_is_refused_and_plain_login_goes_on() {
    let s = FtpServer::pyftpdlib();
    let proxy = proxy_for(&s, 0);
    let (mut ftp, code, _) = RawFtp::connect(proxy.port, T).unwrap();
    assert_eq!(code, 220);
    let (code, text) = ftp.cmd("AUTH TLS").unwrap();
    assert_eq!(code, 502, "{text}");
    ftp.login(&s.user, &s.password).unwrap();
    assert_eq!(ftp.cmd("NOOP").unwrap().0, 200);
    assert!(
        s.commands_named("AUTH").is_empty(),
        "AUTH reached the server"
    );
}

// ---------------------------------------------------------------------------
// Delay
// ---------------------------------------------------------------------------

#[test]
fn delay_applies_to_both_directions_without_capping_throughput() {
    let s = FtpServer::pyftpdlib();
    let big = gen_bytes(16 << 20, 5);
    s.create_file("big.bin", &big);
    let proxy = proxy_for(&s, 50);

    let t0 = Instant::now();
    let (mut ftp, code, _) = RawFtp::connect(proxy.port, T).unwrap();
    assert_eq!(code, 220);
    let greeting = t0.elapsed();
    assert!(
        greeting >= Duration::from_millis(100),
        "greeting after {greeting:?}"
    );
    ftp.login(&s.user, &s.password).unwrap();

    for _ in 0..3 {
        let t = Instant::now();
        let (code, _) = ftp.cmd("NOOP").unwrap();
        let rtt = t.elapsed();
        assert_eq!(code, 200);
        assert!(rtt >= Duration::from_millis(100), "NOOP round trip {rtt:?}");
        assert!(rtt < Duration::from_secs(1), "NOOP round trip {rtt:?}");
    }

    // 16 MiB arrive in a few round trips, not one chunk per delay.
    ftp.cmd("TYPE I").unwrap();
    let t = Instant::now();
    let got = retr(&mut ftp, "big.bin", DataMode::Epsv);
    let took = t.elapsed();
    assert!(got == big, "big.bin differs");
    // EPSV, then RETR with the data connection's set-up: >= 2 round trips.
    assert!(took >= Duration::from_millis(200), "RETR took {took:?}");
    assert!(took < Duration::from_secs(3), "RETR took {took:?}");
}

// ---------------------------------------------------------------------------
// Faults
// ---------------------------------------------------------------------------

#[test]
fn control_reset_after_n_commands() {
    let s = FtpServer::pyftpdlib();
    let proxy = proxy_for(&s, 0);
    let mut ftp = login(&proxy, &s);
    s.clear_commands();

    // Once: two more commands pass, the third resets the session.
    proxy
        .faults()
        .set_control_reset(Some(ControlReset::after(2)));
    assert_eq!(ftp.cmd("NOOP").unwrap().0, 200);
    assert_eq!(ftp.cmd("PWD").unwrap().0, 257);
    let r = ftp.cmd("SYST");
    assert!(is_disconnected(&r), "SYST after the limit: {r:?}");
    assert!(ftp.cmd("NOOP").is_err());
    assert_eq!(proxy.stats().control_resets, 1);
    assert!(
        s.wait_for_commands(T, |c| c.iter().any(|c| c == "PWD")),
        "{:?}",
        s.commands()
    );
    assert!(
        s.commands_named("SYST").is_empty(),
        "the resetting command was forwarded"
    );

    // The fault disarmed itself: a new session works.
    let mut ftp = login(&proxy, &s);
    for _ in 0..5 {
        assert_eq!(ftp.cmd("NOOP").unwrap().0, 200);
    }

    // Repeat, counting only one verb: every session dies at its first SIZE.
    s.create_file("f", b"abc");
    proxy
        .faults()
        .set_control_reset(Some(ControlReset::after(0).verb("size").repeat()));
    for _ in 0..2 {
        let mut ftp = login(&proxy, &s);
        assert_eq!(ftp.cmd("NOOP").unwrap().0, 200);
        let r = ftp.cmd("SIZE f");
        assert!(is_disconnected(&r), "SIZE: {r:?}");
    }
    assert_eq!(proxy.stats().control_resets, 3);
    proxy.faults().set_control_reset(None);
    let mut ftp = login(&proxy, &s);
    assert_eq!(ftp.cmd("SIZE f").unwrap().0, 213);
}

fn data_reset_fails_the_download_only(s: FtpServer) {
    let big = gen_bytes(2 << 20, 9);
    s.create_file("big.bin", &big);
    let proxy = proxy_for(&s, 0);
    let mut ftp = login(&proxy, &s);
    proxy
        .faults()
        .set_data_fault(Some(DataFault::reset_after(100_000)));

    // A listing stays below the limit and is not hit.
    let (list, code) = download(&mut ftp, "LIST", DataMode::Epsv).unwrap();
    assert_eq!(code, 226);
    assert!(String::from_utf8_lossy(&list).contains("big.bin"));

    // The download is cut after at most 100000 bytes, with an error.
    let data = open_data(&mut ftp, DataMode::Epsv).unwrap();
    assert_transfer_started(ftp.cmd("RETR big.bin").unwrap().0, "RETR");
    let mut d = data.stream().unwrap();
    let mut got = Vec::new();
    let res = d.read_to_end(&mut got);
    assert!(got.len() <= 100_000, "got {} bytes", got.len());
    assert!(got[..] == big[..got.len()]);
    let (code, text) = ftp.read_reply().unwrap();
    assert!(
        res.is_err() || code != 226,
        "the download looked complete: {res:?}, {text}"
    );
    assert_eq!(proxy.stats().data_faults, 1);

    // The control connection survives and the fault is spent.
    assert_eq!(ftp.cmd("NOOP").unwrap().0, 200);
    assert!(retr(&mut ftp, "big.bin", DataMode::Pasv) == big);

    // Repeat mode hits every transfer.
    proxy
        .faults()
        .set_data_fault(Some(DataFault::reset_after(0).repeat()));
    for mode in [DataMode::Epsv, DataMode::Port] {
        let r = download(&mut ftp, "RETR big.bin", mode);
        assert!(
            !matches!(&r, Ok((d, 226)) if d.len() == big.len()),
            "download survived a repeat reset ({mode:?})"
        );
        assert_eq!(ftp.cmd("NOOP").unwrap().0, 200);
    }
    assert_eq!(proxy.stats().data_faults, 3);
}

#[test]
fn data_fault_applies_to_a_running_transfer() {
    let s = FtpServer::pyftpdlib();
    let len = 64 << 20;
    s.create_file("zeros", &vec![0u8; len]);
    let proxy = proxy_for(&s, 0);
    let mut ftp = login(&proxy, &s);
    let data = open_data(&mut ftp, DataMode::Epsv).unwrap();
    assert_transfer_started(ftp.cmd("RETR zeros").unwrap().0, "RETR");
    let mut d = data.stream().unwrap();
    let mut got = vec![0u8; 1 << 20];
    d.read_exact(&mut got).unwrap();
    proxy
        .faults()
        .set_data_fault(Some(DataFault::reset_after(1 << 20)));
    let res = d.read_to_end(&mut got);
    let (code, text) = ftp.read_reply().unwrap();
    assert!(
        got.len() < len && (res.is_err() || code != 226),
        "transfer survived: {} bytes, {res:?}, {text}",
        got.len()
    );
    assert_eq!(proxy.stats().data_faults, 1);
}

#[test]
fn data_stall_holds_the_transfer_until_cleared() {
    let s = FtpServer::pyftpdlib();
    let big = gen_bytes(1 << 20, 11);
    s.create_file("big.bin", &big);
    let proxy = proxy_for(&s, 0);
    let mut ftp = login(&proxy, &s);
    proxy
        .faults()
        .set_data_fault(Some(DataFault::stall_after(50_000)));
    let data = open_data(&mut ftp, DataMode::Epsv).unwrap();
    assert_transfer_started(ftp.cmd("RETR big.bin").unwrap().0, "RETR");
    let mut d = data.stream().unwrap();
    d.set_read_timeout(Some(Duration::from_millis(400)))
        .unwrap();
    let mut got = Vec::new();
    let err = d.read_to_end(&mut got).unwrap_err();
    assert!(is_timeout(&err), "{err}");
    assert_eq!(got.len(), 50_000);

    proxy.faults().set_data_fault(None);
    d.set_read_timeout(Some(T)).unwrap();
    d.read_to_end(&mut got).unwrap();
    assert!(got == big, "{} bytes after the stall", got.len());
    assert_eq!(ftp.read_reply().unwrap().0, 226);
}

#[test]
fn session_limit_answers_421() {
    let s = FtpServer::pyftpdlib();
    let proxy = proxy_for(&s, 0);
    proxy.faults().set_max_sessions(Some(1));
    let mut first = login(&proxy, &s);

    let (_, code, text) = RawFtp::connect(proxy.port, T).unwrap();
    assert_eq!(code, 421, "{text}");
    assert!(text.contains("Too many connections"), "{text}");
    assert_eq!(first.cmd("NOOP").unwrap().0, 200);
    let st = proxy.stats();
    assert_eq!((st.sessions, st.rejected_sessions), (1, 1), "{st:?}");

    assert_eq!(first.cmd("QUIT").unwrap().0, 221);
    drop(first);
    assert!(wait_until(T, || proxy.stats().active_sessions == 0));
    let mut again = login(&proxy, &s);
    assert_eq!(again.cmd("NOOP").unwrap().0, 200);

    proxy.faults().set_max_sessions(None);
    let mut second = login(&proxy, &s);
    assert_eq!(second.cmd("NOOP").unwrap().0, 200);
}

#[test]
fn down_mode_refuses_and_kills_then_recovers() {
    let s = FtpServer::pyftpdlib();
    s.create_file("big.bin", &gen_bytes(8 << 20, 1));
    let proxy = proxy_for(&s, 0);
    let mut ftp = login(&proxy, &s);
    // A transfer in progress dies too.
    let data = open_data(&mut ftp, DataMode::Epsv).unwrap();
    assert_transfer_started(ftp.cmd("RETR big.bin").unwrap().0, "RETR");
    let mut d = data.stream().unwrap();
    d.read_exact(&mut [0u8; 1000]).unwrap();

    proxy.faults().set_down(true).unwrap();
    let r = ftp.cmd("NOOP");
    assert!(is_disconnected(&r), "NOOP while down: {r:?}");
    let mut rest = Vec::new();
    let r = d.read_to_end(&mut rest);
    assert!(r.is_err(), "data connection survived: {r:?}");
    let err = TcpStream::connect(proxy.addr()).map(|_| ()).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");

    proxy.faults().set_down(false).unwrap();
    let mut ftp = login(&proxy, &s);
    assert_eq!(ftp.cmd("NOOP").unwrap().0, 200);
    assert_eq!(retr(&mut ftp, "big.bin", DataMode::Epsv).len(), 8 << 20);
}

#[test]
fn stall_mode_holds_everything_until_cleared() {
    let s = FtpServer::pyftpdlib();
    let proxy = proxy_for(&s, 0);
    let (mut ftp, code, _) = RawFtp::connect(proxy.port, Duration::from_millis(400)).unwrap();
    assert_eq!(code, 220);
    ftp.login(&s.user, &s.password).unwrap();

    proxy.faults().set_stalled(true);
    let r = ftp.cmd("NOOP");
    assert!(
        r.as_ref().is_err_and(is_timeout),
        "NOOP while stalled: {r:?}"
    );
    // New sessions connect but get no greeting.
    let r = RawFtp::connect(proxy.port, Duration::from_millis(300));
    assert!(r.is_err(), "greeting while stalled");

    proxy.faults().set_stalled(false);
    let (code, text) = ftp.read_reply().unwrap();
    assert_eq!(code, 200, "{text}");
    assert_eq!(ftp.cmd("NOOP").unwrap().0, 200);
}

#[test]
fn dropping_the_proxy_closes_everything() {
    let s = FtpServer::pyftpdlib();
    let proxy = proxy_for(&s, 20);
    let addr = proxy.addr();
    let mut ftp = login(&proxy, &s);
    let t = Instant::now();
    drop(proxy);
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "drop took {:?}",
        t.elapsed()
    );
    assert!(ftp.cmd("NOOP").is_err());
    assert!(TcpStream::connect(addr).is_err());
}

// ---------------------------------------------------------------------------
// ftpfs through the proxy
// ---------------------------------------------------------------------------

fn ftpfs_reads_through_a_delayed_proxy(s: FtpServer) {
    let content = gen_bytes(10 << 20, 42);
    s.create_file("dir/ten.bin", &content);
    s.create_file("small.txt", b"hello\n");
    let proxy = proxy_for(&s, 5);
    let url = format!("ftp://{}@127.0.0.1:{}/", s.user, proxy.port);
    let m =
        Mount::try_spawn(&url, Some(&s.password), &[], &[], &[]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        fs::read(m.path("small.txt")).unwrap(),
        b"hello\n",
        "{}",
        m.log()
    );
    assert!(
        files_equal(m.path("dir/ten.bin"), s.path("dir/ten.bin")),
        "{}",
        m.log()
    );
    let st = proxy.stats();
    assert!(st.bytes_to_client >= 10 << 20, "{st:?}");
    assert!(st.commands > 0 && st.data_connections > 0, "{st:?}");
}

// ---------------------------------------------------------------------------
// The command-line wrapper (examples/ftp_proxy.rs)
// ---------------------------------------------------------------------------

/// `target/<profile>/examples/ftp_proxy`, which plain `cargo test` builds.
fn example_bin() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let p = exe.parent()?.parent()?.join("examples").join("ftp_proxy");
    p.exists().then_some(p)
}

#[test]
fn cli_prints_ready_and_relays() {
    let Some(bin) = example_bin() else {
        eprintln!("skipped: examples/ftp_proxy is not built (plain `cargo test` builds it)");
        return;
    };
    let s = FtpServer::pyftpdlib();
    s.create_file("f.bin", &gen_bytes(200_000, 2));
    let mut child = Command::new(&bin)
        .args([
            "--upstream",
            &format!("127.0.0.1:{}", s.port),
            "--delay-ms",
            "10",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut out = child.stdout.take().unwrap();
    let child = Kill(child);
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while out.read(&mut b).unwrap() == 1 && b[0] != b'\n' {
        line.push(b[0]);
    }
    let line = String::from_utf8(line).unwrap();
    let port: u16 = line
        .strip_prefix("READY ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("first line: {line:?}"));
    let (mut ftp, code, _) = RawFtp::connect(port, T).unwrap();
    assert_eq!(code, 220);
    ftp.login(&s.user, &s.password).unwrap();
    ftp.cmd("TYPE I").unwrap();
    let t = Instant::now();
    assert_eq!(ftp.cmd("NOOP").unwrap().0, 200);
    assert!(t.elapsed() >= Duration::from_millis(20));
    assert!(retr(&mut ftp, "f.bin", DataMode::Epsv) == gen_bytes(200_000, 2));
    drop(child);
}
