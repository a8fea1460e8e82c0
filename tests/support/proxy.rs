//! An FTP-aware TCP proxy that adds latency and injects faults between an FTP
//! client (ftpfs, curl, ...) and a real FTP server.
//!
//! `tc netem` is not available everywhere, so delays and failures are modelled
//! here instead. Used by the fault-injection tests (`support::Proxy`, ...) and,
//! through `examples/ftp_proxy.rs`, by the benchmark script.
//!
//! # How it works
//!
//! [`Proxy::start`] listens on `127.0.0.1` (port [`ProxyConfig::listen_port`],
//! 0 = any free one). For each client control connection it connects to
//! [`ProxyConfig::upstream`] and relays both ways, line by line, so that it can
//! count commands and rewrite what needs rewriting:
//!
//! * `227 Entering Passive Mode (h1,h2,h3,h4,p1,p2)` and
//!   `229 Entering Extended Passive Mode (|||port|)` replies: the proxy opens a
//!   listener of its own on `127.0.0.1:0`, puts it into the reply, accepts the
//!   client's data connection there and connects it to the server's real data
//!   port (for 227, the address in the reply, or the upstream's if that is
//!   `0.0.0.0`; for 229, the upstream's address).
//! * `PORT` / `EPRT` commands (active mode): the proxy listens on the address it
//!   uses towards the server, sends that to the server instead, and connects
//!   the server's data connection to the client's original address.
//! * `AUTH` (TLS): answered by the proxy itself with `502` and not forwarded,
//!   so TLS-only clients fail cleanly (see *Not supported*).
//!
//! Data connections are relayed as plain bytes (with the delay and the data
//! faults below). Every relayed socket has `TCP_NODELAY` set.
//!
//! # Delay
//!
//! [`ProxyConfig::delay`] models one-way latency, added in each direction, on
//! the control and on the data connections: every chunk read from one side is
//! written to the other side no earlier than `read time + delay`. Each
//! direction has a queue of time-stamped chunks and a writer thread that
//! sleeps until each chunk is due, so throughput is not limited to one chunk
//! per delay. Like a TCP window, [`ProxyConfig::max_in_flight`] bounds the
//! bytes waiting in one direction's queue (the reader stops reading while it
//! is full). That keeps memory bounded when a client reads slowly, and caps
//! one connection at about `max_in_flight / delay` plus what the kernel's
//! socket buffers hold (measured with the default 8 MiB at 20 ms: ~0.8 GB/s
//! for one RETR on loopback). End of stream (FIN) is forwarded with the same
//! delay. With a zero delay the reader thread writes straight through
//! ([`DATA_BUF`] buffers, no queue, no extra thread).
//!
//! Connection set-up costs a round trip as well: the proxy connects to the
//! other side `delay` after accepting, so e.g. the greeting arrives
//! `2 * delay` after connecting. The client's own `connect()` to the proxy
//! still completes at once (the kernel does that handshake), so a client that
//! waits for its data connection to be established before it sends the
//! transfer command saves one round trip compared with a real link.
//!
//! # Faults
//!
//! All faults live in [`Faults`] (see [`Proxy::faults`]) and can be changed
//! while the proxy runs; they act on connections that already exist as well as
//! new ones. A "reset" always means a TCP RST (`SO_LINGER` 0) on both the
//! client's and the server's connection.
//!
//! * [`Faults::set_control_reset`]: reset a control session after N commands
//!   (optionally only counting one verb), once or every time.
//! * [`Faults::set_data_fault`]: reset or stall a data connection after N
//!   bytes, once or every time.
//! * [`Faults::set_max_sessions`]: answer control connections beyond a number
//!   of concurrent sessions with `421 Too many connections`.
//! * [`Faults::set_down`]: the server disappears (connections refused,
//!   existing ones reset) and comes back when cleared.
//! * [`Faults::set_stalled`]: stop forwarding anything, without closing.
//!
//! [`Proxy::stats`] counts sessions, commands, data connections and bytes.
//!
//! # Not supported
//!
//! * TLS (`AUTH TLS`/`AUTH SSL`): the proxy refuses `AUTH` with `502`, so
//!   `ftps://` (explicit) fails and clients that only try TLS opportunistically
//!   go on in plain text. Implicit FTPS is not supported either.
//! * TCP urgent data (the Telnet "Synch" some clients send with `ABOR`) is not
//!   relayed as urgent; the rest of the command is.
//! * The proxy listens on 127.0.0.1 only (clients must run on the same host);
//!   active-mode data connections are made to whatever the client put in
//!   `PORT`/`EPRT`.
//! * `EPRT |2|...|` (IPv6) is rewritten to an IPv4 `EPRT |1|...|` when the
//!   upstream connection is IPv4.
//! * The delay is fixed for the proxy's lifetime, the same in both directions,
//!   without jitter, loss or a bandwidth limit.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Read buffer for data connections. Large, to keep loopback throughput
/// high: with 256 KiB a 1 GiB RETR ran at ~70 % of the direct speed, with
/// 4 MiB at about the direct speed (pages are only touched when used).
/// (splice(2) through a pipe was measured too, and was slower.)
pub const DATA_BUF: usize = 4 << 20;
/// Read buffer for control connections.
const CONTROL_BUF: usize = 16 * 1024;
/// A control "line" longer than this is forwarded as is, without parsing.
const MAX_LINE: usize = 64 * 1024;
/// Default [`ProxyConfig::max_in_flight`].
pub const DEFAULT_MAX_IN_FLIGHT: usize = 8 << 20;
/// How often blocked threads look at their connection's state.
const TICK: Duration = Duration::from_millis(50);
/// Timeout for the proxy's own outgoing connections.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A data listener nobody connects to is closed after this long.
const DATA_ACCEPT_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// Configuration and faults
// ---------------------------------------------------------------------------

/// What [`Proxy::start`] needs.
pub struct ProxyConfig {
    /// The real FTP server (control connection address).
    pub upstream: SocketAddr,
    /// Port to listen on (on 127.0.0.1); 0 picks a free one.
    pub listen_port: u16,
    /// One-way latency added in each direction, on control and data
    /// connections. Fixed for the proxy's lifetime.
    pub delay: Duration,
    /// With a delay: at most this many bytes wait in one direction's queue
    /// (then the reader stops reading: TCP back-pressure). Default
    /// [`DEFAULT_MAX_IN_FLIGHT`].
    pub max_in_flight: usize,
    /// Initial faults (all off by default); change them later through
    /// [`Proxy::faults`].
    pub faults: Faults,
}

impl ProxyConfig {
    /// No delay, no faults, any free port.
    pub fn new(upstream: SocketAddr) -> ProxyConfig {
        ProxyConfig {
            upstream,
            listen_port: 0,
            delay: Duration::ZERO,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            faults: Faults::default(),
        }
    }

    /// The same with a one-way `delay`.
    pub fn with_delay(mut self, delay: Duration) -> ProxyConfig {
        self.delay = delay;
        self
    }
}

/// Reset control connections after some commands; see
/// [`Faults::set_control_reset`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlReset {
    /// Number of (matching) commands let through before the reset.
    pub after: u64,
    /// Count only commands with this verb (case-insensitive), e.g. `"RETR"`;
    /// `None` counts every command.
    pub verb: Option<String>,
    /// `false`: only the first session to get there is reset, then the fault
    /// disarms itself. `true`: every session is, until cleared.
    pub repeat: bool,
}

impl ControlReset {
    /// Reset the first session that sends more than `n` commands.
    pub fn after(n: u64) -> ControlReset {
        ControlReset {
            after: n,
            verb: None,
            repeat: false,
        }
    }

    /// Count only `verb` commands.
    pub fn verb(mut self, verb: &str) -> ControlReset {
        self.verb = Some(verb.to_string());
        self
    }

    /// Apply to every session, not just the first.
    pub fn repeat(mut self) -> ControlReset {
        self.repeat = true;
        self
    }
}

/// What happens to a data connection that reached its byte limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataAction {
    /// Reset it (RST to both sides).
    Reset,
    /// Stop forwarding in that direction, without closing, until the data
    /// fault is changed or cleared ([`Faults::set_data_fault`]) or the
    /// connection is killed (down mode, proxy dropped).
    Stall,
}

/// A fault for data connections; see [`Faults::set_data_fault`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataFault {
    /// Bytes (both directions together) relayed before the fault hits; the
    /// client gets exactly this many bytes of a download. The fault hits when
    /// data arrives that would go beyond this, so with 0 it hits as soon as
    /// the first data flows, and a transfer with no data at all is never hit.
    pub after_bytes: u64,
    pub action: DataAction,
    /// `false`: only the first data connection that goes beyond
    /// `after_bytes` is hit, then the fault disarms itself (smaller
    /// transfers, e.g. listings, are not affected). `true`: every data
    /// connection is, until cleared.
    pub repeat: bool,
}

impl DataFault {
    /// Reset the first data connection that relays more than `n` bytes,
    /// after exactly `n`.
    pub fn reset_after(n: u64) -> DataFault {
        DataFault {
            after_bytes: n,
            action: DataAction::Reset,
            repeat: false,
        }
    }

    /// Stall the first data connection that relays more than `n` bytes,
    /// after exactly `n`.
    pub fn stall_after(n: u64) -> DataFault {
        DataFault {
            after_bytes: n,
            action: DataAction::Stall,
            repeat: false,
        }
    }

    /// Apply to every data connection, not just the first.
    pub fn repeat(mut self) -> DataFault {
        self.repeat = true;
        self
    }
}

#[derive(Default)]
struct FaultState {
    control_reset: Option<ControlReset>,
    /// Bumped by every `set_control_reset` (sessions restart their count).
    control_gen: u64,
    data_fault: Option<DataFault>,
    /// Bumped by every `set_data_fault` (stalled connections resume).
    data_gen: u64,
    max_sessions: Option<usize>,
    down: bool,
    stalled: bool,
}

#[derive(Default)]
struct Net {
    /// The listening socket (None while down or after the proxy stopped).
    listener: Option<Arc<TcpListener>>,
    /// Where to listen again when coming back up.
    addr: Option<SocketAddr>,
    /// Every relayed connection pair (control and data), for down mode.
    links: Vec<Weak<Link>>,
    /// The proxy is gone: never listen again.
    closed: bool,
}

/// The proxy's fault switches. All of them can be flipped while it runs
/// (they are behind a mutex); get them with [`Proxy::faults`].
#[derive(Default)]
pub struct Faults {
    state: Mutex<FaultState>,
    changed: Condvar,
    /// Fast-path copy of `state.stalled`.
    stalled_flag: AtomicBool,
    /// Fast-path copy of `state.data_fault.is_some()`.
    data_armed: AtomicBool,
    net: Mutex<Net>,
}

impl Faults {
    fn st(&self) -> MutexGuard<'_, FaultState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn net(&self) -> MutexGuard<'_, Net> {
        self.net.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reset control sessions after some commands (`None` clears). A session
    /// sends `after` commands normally (counted from this call, or from the
    /// session's start if later); the next one is not forwarded, and both the
    /// client's and the server's connection are reset instead.
    pub fn set_control_reset(&self, reset: Option<ControlReset>) {
        let mut st = self.st();
        st.control_reset = reset;
        st.control_gen += 1;
    }

    /// Fault data connections after some bytes (`None` clears). Applies to
    /// running transfers too: bytes are counted from this call (or from the
    /// connection's start, if later). Changing or clearing it also lets
    /// connections stalled by a previous [`DataAction::Stall`] go on.
    pub fn set_data_fault(&self, fault: Option<DataFault>) {
        let mut st = self.st();
        st.data_fault = fault;
        st.data_gen += 1;
        self.data_armed.store(fault.is_some(), Ordering::SeqCst);
        drop(st);
        self.changed.notify_all();
    }

    /// Limit concurrent control sessions (`None`: unlimited). A client that
    /// connects while `n` sessions are open gets
    /// `421 Too many connections` and is disconnected, without the server
    /// ever seeing it.
    pub fn set_max_sessions(&self, n: Option<usize>) {
        self.st().max_sessions = n;
    }

    /// "Server down" mode. `true`: stop listening (new connections are
    /// refused: ECONNREFUSED) and reset every existing control and data
    /// connection. `false`: listen on the same port again (fails only if
    /// someone else took the port meanwhile).
    pub fn set_down(&self, down: bool) -> io::Result<()> {
        if down {
            self.st().down = true;
            let (listener, links) = {
                let mut net = self.net();
                (net.listener.take(), std::mem::take(&mut net.links))
            };
            if let Some(l) = listener {
                shutdown_fd(l.as_raw_fd(), libc::SHUT_RDWR);
            }
            for link in links.iter().filter_map(Weak::upgrade) {
                link.kill();
            }
            return Ok(());
        }
        let addr = {
            let net = self.net();
            if net.closed {
                return Err(io::Error::other("the proxy has stopped"));
            }
            if net.listener.is_some() {
                drop(net);
                self.st().down = false;
                return Ok(());
            }
            net.addr
        };
        let listener = match addr {
            Some(addr) => Some(bind_listener(addr)?),
            None => None, // not started yet
        };
        self.st().down = false;
        let mut net = self.net();
        if !net.closed {
            net.listener = listener.map(Arc::new);
        }
        Ok(())
    }

    /// Stall mode: `true` stops all forwarding (control and data, both
    /// directions, existing and new connections) without closing anything;
    /// `false` resumes, delivering what was held back.
    pub fn set_stalled(&self, stalled: bool) {
        self.st().stalled = stalled;
        self.stalled_flag.store(stalled, Ordering::SeqCst);
        self.changed.notify_all();
    }

    /// Turn every fault off (and come back up if down).
    pub fn clear(&self) -> io::Result<()> {
        self.set_control_reset(None);
        self.set_data_fault(None);
        self.set_max_sessions(None);
        self.set_stalled(false);
        self.set_down(false)
    }

    pub fn is_down(&self) -> bool {
        self.st().down
    }

    pub fn is_stalled(&self) -> bool {
        self.stalled_flag.load(Ordering::SeqCst)
    }

    fn max_sessions(&self) -> Option<usize> {
        self.st().max_sessions
    }

    /// Whether this command triggers the control reset fault. `counter` is
    /// the session's `(generation, matching commands)`.
    fn control_reset_hit(&self, verb: &str, counter: &mut (u64, u64)) -> bool {
        let mut st = self.st();
        let gen = st.control_gen;
        let Some(cfg) = st.control_reset.as_ref() else {
            return false;
        };
        if counter.0 != gen {
            *counter = (gen, 0);
        }
        if cfg
            .verb
            .as_deref()
            .is_some_and(|v| !v.eq_ignore_ascii_case(verb))
        {
            return false;
        }
        counter.1 += 1;
        if counter.1 <= cfg.after {
            return false;
        }
        if !cfg.repeat {
            st.control_reset = None;
        }
        true
    }

    /// The data fault armed now (with its generation).
    fn data_fault(&self) -> Option<(DataFault, u64)> {
        if !self.data_armed.load(Ordering::SeqCst) {
            return None;
        }
        let st = self.st();
        st.data_fault.map(|f| (f, st.data_gen))
    }

    /// A data connection reached the limit of fault generation `gen`: does it
    /// get the fault (still armed, and not taken by another connection)?
    fn data_fault_fire(&self, gen: u64) -> bool {
        let mut st = self.st();
        match st.data_fault {
            Some(f) if st.data_gen == gen => {
                if !f.repeat {
                    st.data_fault = None; // disarm, but keep stalls stalled
                    self.data_armed.store(false, Ordering::SeqCst);
                }
                true
            }
            _ => false,
        }
    }

    /// Block while stall mode is on (false if the link died meanwhile).
    fn wait_unstalled(&self, link: &Link) -> bool {
        if !self.stalled_flag.load(Ordering::SeqCst) {
            return !link.dead();
        }
        let mut st = self.st();
        while st.stalled && !link.dead() {
            st = self
                .changed
                .wait_timeout(st, TICK)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        !link.dead()
    }

    /// Block while data fault generation `gen` is current (a stalled data
    /// connection); false if the link died meanwhile.
    fn wait_data_gen_changes(&self, gen: u64, link: &Link) -> bool {
        let mut st = self.st();
        while st.data_gen == gen && !link.dead() {
            st = self
                .changed
                .wait_timeout(st, TICK)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        !link.dead()
    }

    /// Remember `link` for down mode; false if the proxy has stopped.
    fn register(&self, link: &Arc<Link>) -> bool {
        let mut net = self.net();
        if net.closed {
            return false;
        }
        net.links.retain(|w| w.strong_count() > 0);
        net.links.push(Arc::downgrade(link));
        true
    }

    /// Stop listening for good and reset every connection (proxy dropped).
    fn close(&self) {
        let (listener, links) = {
            let mut net = self.net();
            net.closed = true;
            (net.listener.take(), std::mem::take(&mut net.links))
        };
        if let Some(l) = listener {
            shutdown_fd(l.as_raw_fd(), libc::SHUT_RDWR);
        }
        for link in links.iter().filter_map(Weak::upgrade) {
            link.kill();
        }
        self.changed.notify_all();
    }
}

// ---------------------------------------------------------------------------
// Statistics
// ---------------------------------------------------------------------------

/// Counters since the proxy started; see [`Proxy::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Control connections relayed to the server.
    pub sessions: u64,
    /// Control sessions currently open (what the 421 limit compares to).
    pub active_sessions: u64,
    /// Control connections answered with 421 by the session limit.
    pub rejected_sessions: u64,
    /// Command lines received from clients.
    pub commands: u64,
    /// Data connections relayed (passive and active).
    pub data_connections: u64,
    /// The most data connections relayed at the same moment.
    pub peak_data_connections: u64,
    /// Bytes relayed on data connections, client to server (uploads).
    pub bytes_to_server: u64,
    /// Bytes relayed on data connections, server to client (downloads, listings).
    pub bytes_to_client: u64,
    /// Control sessions reset by [`Faults::set_control_reset`].
    pub control_resets: u64,
    /// Data connections hit by [`Faults::set_data_fault`].
    pub data_faults: u64,
}

#[derive(Default)]
struct Counters {
    sessions: AtomicU64,
    active_sessions: AtomicU64,
    rejected_sessions: AtomicU64,
    commands: AtomicU64,
    data_connections: AtomicU64,
    active_data_connections: AtomicU64,
    peak_data_connections: AtomicU64,
    bytes_to_server: AtomicU64,
    bytes_to_client: AtomicU64,
    control_resets: AtomicU64,
    data_faults: AtomicU64,
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

// ---------------------------------------------------------------------------
// The proxy
// ---------------------------------------------------------------------------

struct Inner {
    upstream: SocketAddr,
    delay: Duration,
    max_in_flight: usize,
    faults: Faults,
    stats: Counters,
    shutdown: AtomicBool,
    /// Live threads (Drop waits for them).
    threads: AtomicUsize,
}

/// A running proxy. Dropping it stops listening, resets every relayed
/// connection and waits (briefly) for its threads to end.
pub struct Proxy {
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    inner: Arc<Inner>,
    acceptor: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Listen on 127.0.0.1 and start relaying to `cfg.upstream`.
    pub fn start(cfg: ProxyConfig) -> io::Result<Proxy> {
        let listener = bind_listener(SocketAddr::from((Ipv4Addr::LOCALHOST, cfg.listen_port)))?;
        let addr = listener.local_addr()?;
        {
            let down = cfg.faults.st().down;
            let mut net = cfg.faults.net();
            net.addr = Some(addr);
            if !down {
                net.listener = Some(Arc::new(listener));
            }
        }
        let inner = Arc::new(Inner {
            upstream: cfg.upstream,
            delay: cfg.delay,
            max_in_flight: cfg.max_in_flight.max(1),
            faults: cfg.faults,
            stats: Counters::default(),
            shutdown: AtomicBool::new(false),
            threads: AtomicUsize::new(0),
        });
        let acceptor = spawn(&inner, "proxy-accept", {
            let inner = inner.clone();
            move || accept_loop(inner)
        })?;
        Ok(Proxy {
            port: addr.port(),
            inner,
            acceptor: Some(acceptor),
        })
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The configured one-way delay.
    pub fn delay(&self) -> Duration {
        self.inner.delay
    }

    /// The fault switches (take effect immediately).
    pub fn faults(&self) -> &Faults {
        &self.inner.faults
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        let c = &self.inner.stats;
        let get = |a: &AtomicU64| a.load(Ordering::SeqCst);
        Stats {
            sessions: get(&c.sessions),
            active_sessions: get(&c.active_sessions),
            rejected_sessions: get(&c.rejected_sessions),
            commands: get(&c.commands),
            data_connections: get(&c.data_connections),
            peak_data_connections: get(&c.peak_data_connections),
            bytes_to_server: get(&c.bytes_to_server),
            bytes_to_client: get(&c.bytes_to_client),
            control_resets: get(&c.control_resets),
            data_faults: get(&c.data_faults),
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.inner.shutdown.store(true, Ordering::SeqCst);
        self.inner.faults.close();
        if let Some(h) = self.acceptor.take() {
            let _ = h.join();
        }
        // Every other thread notices within a few ticks.
        let deadline = Instant::now() + Duration::from_secs(3);
        while self.inner.threads.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Spawn a thread counted in `inner.threads`.
fn spawn<F>(inner: &Arc<Inner>, name: &str, f: F) -> io::Result<JoinHandle<()>>
where
    F: FnOnce() + Send + 'static,
{
    struct Guard(Arc<Inner>);
    impl Drop for Guard {
        fn drop(&mut self) {
            self.0.threads.fetch_sub(1, Ordering::SeqCst);
        }
    }
    inner.threads.fetch_add(1, Ordering::SeqCst);
    let guard = Guard(inner.clone());
    thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let _guard = guard;
            f()
        })
}

fn bind_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match TcpListener::bind(addr) {
            Ok(l) => {
                l.set_nonblocking(true)?;
                return Ok(l);
            }
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e),
        }
    }
}

fn accept_loop(inner: Arc<Inner>) {
    while !inner.shutdown.load(Ordering::SeqCst) {
        let listener = inner.faults.net().listener.clone();
        let Some(listener) = listener else {
            thread::sleep(Duration::from_millis(5));
            continue;
        };
        if !poll_readable(listener.as_raw_fd(), TICK) {
            continue;
        }
        let client = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(_) => {
                thread::sleep(Duration::from_millis(5));
                continue;
            }
        };
        drop(listener);
        if inner.shutdown.load(Ordering::SeqCst) || inner.faults.is_down() {
            reset_socket(&client);
            continue;
        }
        if client.set_nonblocking(false).is_err() {
            continue;
        }
        let active = inner.stats.active_sessions.load(Ordering::SeqCst);
        if inner
            .faults
            .max_sessions()
            .is_some_and(|max| active >= max as u64)
        {
            bump(&inner.stats.rejected_sessions, 1);
            let delay = inner.delay;
            let _ = spawn(&inner, "proxy-421", move || {
                thread::sleep(delay * 2);
                let _ = (&client).write_all(b"421 Too many connections (proxy session limit).\r\n");
                let _ = client.shutdown(Shutdown::Write);
                // Let the client read it before the socket goes away.
                let _ = client.set_read_timeout(Some(Duration::from_secs(1)));
                let _ = (&client).read(&mut [0u8; 256]);
            });
            continue;
        }
        bump(&inner.stats.active_sessions, 1);
        bump(&inner.stats.sessions, 1);
        let session_inner = inner.clone();
        let spawned = spawn(&inner, "proxy-session", move || {
            run_session(&session_inner, client);
            session_inner
                .stats
                .active_sessions
                .fetch_sub(1, Ordering::SeqCst);
        });
        if spawned.is_err() {
            inner.stats.active_sessions.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

// ---------------------------------------------------------------------------
// Links: a relayed pair of sockets that can be reset together
// ---------------------------------------------------------------------------

struct Link {
    socks: Mutex<Vec<Arc<TcpStream>>>,
    dead: AtomicBool,
}

impl Link {
    fn new(faults: &Faults) -> Arc<Link> {
        let link = Arc::new(Link {
            socks: Mutex::new(Vec::new()),
            dead: AtomicBool::new(false),
        });
        if !faults.register(&link) {
            link.dead.store(true, Ordering::SeqCst);
        }
        link
    }

    fn socks(&self) -> MutexGuard<'_, Vec<Arc<TcpStream>>> {
        self.socks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a socket (reset at once if the link is already dead).
    fn add(&self, s: &Arc<TcpStream>) {
        let mut socks = self.socks();
        if self.dead() {
            reset_socket(s);
        } else {
            socks.push(s.clone());
        }
    }

    fn dead(&self) -> bool {
        self.dead.load(Ordering::SeqCst)
    }

    /// Reset every socket of the link: RST once the last reference is
    /// dropped; blocked readers wake up at once (shutdown of the read side).
    fn kill(&self) {
        let socks = {
            let mut socks = self.socks();
            self.dead.store(true, Ordering::SeqCst);
            std::mem::take(&mut *socks)
        };
        for s in &socks {
            reset_socket(s);
        }
    }

    /// Normal end: forget the sockets (closed when the relay threads drop
    /// them) and stop whatever still waits on this link.
    fn finish(&self) {
        let socks = {
            let mut socks = self.socks();
            self.dead.store(true, Ordering::SeqCst);
            std::mem::take(&mut *socks)
        };
        drop(socks);
    }
}

// ---------------------------------------------------------------------------
// Out: one direction's output, direct or through a delay queue
// ---------------------------------------------------------------------------

enum Item {
    Data(Vec<u8>),
    /// Forward end of stream (shutdown of the write side).
    Eof,
    /// Reset the whole link.
    Kill,
    /// Stall until the data fault generation changes.
    Hold(u64),
}

struct Queue {
    state: Mutex<QueueState>,
    cv: Condvar,
}

#[derive(Default)]
struct QueueState {
    items: VecDeque<(Instant, Item)>,
    bytes: usize,
}

struct Out {
    to: Arc<TcpStream>,
    link: Arc<Link>,
    inner: Arc<Inner>,
    queue: Option<Arc<Queue>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Serializes direct writes (the control channel has two writers).
    direct: Mutex<()>,
}

impl Out {
    fn new(inner: &Arc<Inner>, link: &Arc<Link>, to: &Arc<TcpStream>) -> io::Result<Arc<Out>> {
        let queue = (!inner.delay.is_zero()).then(|| {
            Arc::new(Queue {
                state: Mutex::new(QueueState::default()),
                cv: Condvar::new(),
            })
        });
        let out = Arc::new(Out {
            to: to.clone(),
            link: link.clone(),
            inner: inner.clone(),
            queue,
            writer: Mutex::new(None),
            direct: Mutex::new(()),
        });
        if out.queue.is_some() {
            let o = out.clone();
            let h = spawn(inner, "proxy-writer", move || o.writer_loop())?;
            *out.writer.lock().unwrap_or_else(|p| p.into_inner()) = Some(h);
        }
        Ok(out)
    }

    /// Forward `buf` (now, or `delay` from now). False if the link is dead.
    fn data(&self, buf: &[u8]) -> bool {
        self.data_at(Instant::now() + self.inner.delay, buf)
    }

    fn data_at(&self, due: Instant, buf: &[u8]) -> bool {
        if buf.is_empty() {
            return !self.link.dead();
        }
        if self.queue.is_none() {
            let _g = self.direct.lock().unwrap_or_else(|p| p.into_inner());
            return self.write(buf);
        }
        self.push(due, Item::Data(buf.to_vec()))
    }

    /// Forward an end of stream / reset / stall marker, in order with the data.
    fn control(&self, item: Item) -> bool {
        if self.queue.is_none() {
            let _g = self.direct.lock().unwrap_or_else(|p| p.into_inner());
            return self.execute(item);
        }
        self.push(Instant::now() + self.inner.delay, item)
    }

    fn push(&self, due: Instant, item: Item) -> bool {
        let Some(q) = &self.queue else {
            return false;
        };
        let len = match &item {
            Item::Data(d) => d.len(),
            _ => 0,
        };
        let mut st = q.state.lock().unwrap_or_else(|p| p.into_inner());
        while st.bytes >= self.inner.max_in_flight && !self.link.dead() {
            st =
                q.cv.wait_timeout(st, TICK)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|p| p.into_inner().0);
        }
        if self.link.dead() {
            return false;
        }
        st.bytes += len;
        st.items.push_back((due, item));
        drop(st);
        q.cv.notify_all();
        true
    }

    fn writer_loop(&self) {
        let Some(q) = &self.queue else {
            return;
        };
        loop {
            let (due, item) = {
                let mut st = q.state.lock().unwrap_or_else(|p| p.into_inner());
                loop {
                    if self.link.dead() {
                        return;
                    }
                    if let Some(front) = st.items.pop_front() {
                        if let Item::Data(d) = &front.1 {
                            st.bytes -= d.len();
                        }
                        break front;
                    }
                    st =
                        q.cv.wait_timeout(st, TICK)
                            .map(|(g, _)| g)
                            .unwrap_or_else(|p| p.into_inner().0);
                }
            };
            q.cv.notify_all(); // room for the reader
            loop {
                let now = Instant::now();
                if now >= due {
                    break;
                }
                if self.link.dead() {
                    return;
                }
                thread::sleep((due - now).min(TICK));
            }
            let go_on = matches!(item, Item::Data(_) | Item::Hold(_));
            if !self.execute(item) || !go_on {
                return;
            }
        }
    }

    /// Carry out one item now. False: nothing more will be written.
    fn execute(&self, item: Item) -> bool {
        let faults = &self.inner.faults;
        match item {
            Item::Data(d) => self.write(&d),
            Item::Eof => {
                if faults.wait_unstalled(&self.link) {
                    let _ = self.to.shutdown(Shutdown::Write);
                }
                false
            }
            Item::Kill => {
                self.link.kill();
                false
            }
            Item::Hold(gen) => faults.wait_data_gen_changes(gen, &self.link),
        }
    }

    /// Write all of `buf` (in stall mode: once it ends); on failure the
    /// link is reset.
    fn write(&self, buf: &[u8]) -> bool {
        if !self.inner.faults.wait_unstalled(&self.link) {
            return false;
        }
        let mut off = 0;
        while off < buf.len() {
            match (&*self.to).write(&buf[off..]) {
                Ok(0) => {
                    self.link.kill();
                    return false;
                }
                Ok(n) => off += n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) =>
                {
                    if self.link.dead() {
                        return false;
                    }
                }
                Err(_) => {
                    self.link.kill();
                    return false;
                }
            }
        }
        true
    }

    /// Wait for the writer thread (if any) to finish.
    fn join(&self) {
        let h = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = h {
            let _ = h.join();
        }
    }
}

/// Socket set-up common to every relayed connection.
fn prepare(s: &TcpStream) {
    let _ = s.set_nodelay(true);
    // Writes wake up now and then to notice a dead link.
    let _ = s.set_write_timeout(Some(TICK));
}

/// Sleep `d`, giving up early (false) if the link dies.
fn sleep_unless_dead(d: Duration, link: &Link) -> bool {
    let end = Instant::now() + d;
    loop {
        if link.dead() {
            return false;
        }
        let now = Instant::now();
        if now >= end {
            return true;
        }
        thread::sleep((end - now).min(TICK));
    }
}

/// Read from `from` until end of stream or error, handing each chunk to
/// `handle` (which returns false to stop). On a clean end of stream `Ok(())`
/// (the caller forwards it); a read error resets the link.
fn read_loop(
    link: &Link,
    from: &TcpStream,
    buf_size: usize,
    mut handle: impl FnMut(&[u8]) -> bool,
) -> Result<(), ()> {
    let mut buf = vec![0u8; buf_size];
    loop {
        let n = match (&*from).read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => {
                link.kill();
                return Err(());
            }
        };
        if link.dead() {
            return Err(());
        }
        if n == 0 {
            return Ok(());
        }
        if !handle(&buf[..n]) {
            return Err(());
        }
    }
}

// ---------------------------------------------------------------------------
// Control sessions
// ---------------------------------------------------------------------------

struct Session {
    inner: Arc<Inner>,
    link: Arc<Link>,
    client: Arc<TcpStream>,
    server: Arc<TcpStream>,
    to_client: Arc<Out>,
    to_server: Arc<Out>,
    /// Cancels the data listener of the previous PASV/EPSV/PORT/EPRT.
    pending_data: Mutex<Option<Arc<AtomicBool>>>,
}

fn run_session(inner: &Arc<Inner>, client: TcpStream) {
    let link = Link::new(&inner.faults);
    let client = Arc::new(client);
    prepare(&client);
    link.add(&client);
    if inner.faults.is_down() {
        link.kill();
        return;
    }
    // The connection to the server is made one (one-way) delay later.
    if !sleep_unless_dead(inner.delay, &link) {
        link.kill();
        return;
    }
    let server = match TcpStream::connect_timeout(&inner.upstream, CONNECT_TIMEOUT) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            let msg = format!("421 Proxy cannot reach {}: {e}\r\n", inner.upstream);
            let _ = (&*client).write_all(msg.as_bytes());
            let _ = client.shutdown(Shutdown::Write);
            link.finish();
            return;
        }
    };
    prepare(&server);
    link.add(&server);
    let outs = Out::new(inner, &link, &client)
        .and_then(|c| Out::new(inner, &link, &server).map(|s| (c, s)));
    let Ok((to_client, to_server)) = outs else {
        link.kill();
        return;
    };
    let sess = Arc::new(Session {
        inner: inner.clone(),
        link: link.clone(),
        client,
        server,
        to_client,
        to_server,
        pending_data: Mutex::new(None),
    });
    let up = {
        let sess = sess.clone();
        spawn(inner, "proxy-ctl-up", move || sess.client_to_server())
    };
    if up.is_err() {
        link.kill();
    }
    sess.server_to_client();
    if let Ok(h) = up {
        let _ = h.join();
    }
    sess.to_client.join();
    sess.to_server.join();
    sess.cancel_pending_data();
    link.finish();
}

impl Session {
    fn client_to_server(&self) {
        let mut pending = Vec::new();
        let mut counter = (0u64, 0u64);
        let res = read_loop(&self.link, &self.client, CONTROL_BUF, |chunk| {
            pending.extend_from_slice(chunk);
            while let Some(pos) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=pos).collect();
                if !self.command(&line, &mut counter) {
                    return false;
                }
            }
            if pending.len() > MAX_LINE {
                let ok = self.to_server.data(&pending);
                pending.clear();
                return ok;
            }
            true
        });
        if res.is_ok() && self.to_server.data(&pending) {
            self.to_server.control(Item::Eof);
        }
    }

    /// Handle one command line from the client; false stops the relay.
    fn command(&self, line: &[u8], counter: &mut (u64, u64)) -> bool {
        let inner = &self.inner;
        bump(&inner.stats.commands, 1);
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches(['\r', '\n']);
        let (verb, arg) = text.split_once(' ').unwrap_or((text, ""));
        let verb = verb.trim().to_ascii_uppercase();
        let arg = arg.trim();

        if inner.faults.control_reset_hit(&verb, counter) {
            // The reset happens when the command would reach the server.
            bump(&inner.stats.control_resets, 1);
            self.to_server.control(Item::Kill);
            return false;
        }
        match verb.as_str() {
            "AUTH" => {
                // Answered by "the server": one round trip from now.
                let due = Instant::now() + inner.delay * 2;
                return self.to_client.data_at(
                    due,
                    b"502 AUTH (TLS) is not supported through the ftpfs test proxy.\r\n",
                );
            }
            "PORT" => {
                if let Some(target) = parse_port(arg) {
                    if let Some(addr) = self.active_listener(target) {
                        let line = format!("PORT {}\r\n", format_port(addr));
                        return self.to_server.data(line.as_bytes());
                    }
                }
            }
            "EPRT" => {
                if let Some(target) = parse_eprt(arg) {
                    if let Some(addr) = self.active_listener(target) {
                        let line = format!("EPRT {}\r\n", format_eprt(addr));
                        return self.to_server.data(line.as_bytes());
                    }
                }
            }
            _ => {}
        }
        self.to_server.data(line)
    }

    fn server_to_client(&self) {
        let mut pending = Vec::new();
        // Code of the multi-line reply in progress.
        let mut multi: Option<[u8; 3]> = None;
        let res = read_loop(&self.link, &self.server, CONTROL_BUF, |chunk| {
            pending.extend_from_slice(chunk);
            while let Some(pos) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=pos).collect();
                let line = self.reply_line(line, &mut multi);
                if !self.to_client.data(&line) {
                    return false;
                }
            }
            if pending.len() > MAX_LINE {
                let ok = self.to_client.data(&pending);
                pending.clear();
                return ok;
            }
            true
        });
        if res.is_ok() && self.to_client.data(&pending) {
            self.to_client.control(Item::Eof);
        }
    }

    /// One reply line from the server, rewritten if it is a 227/229.
    fn reply_line(&self, line: Vec<u8>, multi: &mut Option<[u8; 3]>) -> Vec<u8> {
        if let Some(code) = *multi {
            if line.len() >= 4 && line[..3] == code && line[3] == b' ' {
                *multi = None;
            }
            return line;
        }
        if line.len() < 4 || !line[..3].iter().all(u8::is_ascii_digit) {
            return line;
        }
        if line[3] == b'-' {
            *multi = Some([line[0], line[1], line[2]]);
            return line;
        }
        let rewritten = match &line[..3] {
            b"227" => self.rewrite_227(&line),
            b"229" => self.rewrite_229(&line),
            _ => None,
        };
        rewritten.unwrap_or(line)
    }

    fn rewrite_227(&self, line: &[u8]) -> Option<Vec<u8>> {
        let text = std::str::from_utf8(line).ok()?;
        let (start, end, nums) = find_port_numbers(text, 4)?;
        let ip = Ipv4Addr::new(nums[0], nums[1], nums[2], nums[3]);
        let port = (u16::from(nums[4]) << 8) | u16::from(nums[5]);
        let ip = if ip.is_unspecified() {
            self.inner.upstream.ip()
        } else {
            IpAddr::V4(ip)
        };
        let addr = self.passive_listener(SocketAddr::new(ip, port))?;
        let SocketAddr::V4(addr) = addr else {
            return None;
        };
        Some(format!("{}{}{}", &text[..start], format_port(addr), &text[end..]).into_bytes())
    }

    fn rewrite_229(&self, line: &[u8]) -> Option<Vec<u8>> {
        let text = std::str::from_utf8(line).ok()?;
        let open = text.find('(')?;
        let rest = &text[open + 1..];
        let d = rest.chars().next()?;
        let prefix = format!("{d}{d}{d}");
        let body = rest.strip_prefix(&prefix)?;
        let digits = body.find(d)?;
        let port: u16 = body[..digits].parse().ok()?;
        let start = open + 1 + prefix.len();
        let end = start + digits;
        let addr = self.passive_listener(SocketAddr::new(self.inner.upstream.ip(), port))?;
        Some(format!("{}{}{}", &text[..start], addr.port(), &text[end..]).into_bytes())
    }

    /// Passive mode: listen where the client reaches us; relay to `target`.
    fn passive_listener(&self, target: SocketAddr) -> Option<SocketAddr> {
        let ip = self.client.local_addr().ok()?.ip();
        self.data_listener(ip, true, target)
    }

    /// Active mode: listen where the server reaches us; relay to `target`.
    fn active_listener(&self, target: SocketAddr) -> Option<SocketAddr> {
        let ip = self.server.local_addr().ok()?.ip();
        self.data_listener(ip, false, target)
    }

    fn data_listener(
        &self,
        ip: IpAddr,
        accepted_is_client: bool,
        target: SocketAddr,
    ) -> Option<SocketAddr> {
        let listener = match bind_listener(SocketAddr::new(ip, 0)) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("ftp proxy: cannot listen for a data connection: {e}");
                return None;
            }
        };
        let addr = listener.local_addr().ok()?;
        let cancel = Arc::new(AtomicBool::new(false));
        if let Some(old) = self
            .pending_data
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replace(cancel.clone())
        {
            old.store(true, Ordering::SeqCst);
        }
        let inner = self.inner.clone();
        let session = self.link.clone();
        spawn(&self.inner, "proxy-data", move || {
            accept_data(inner, session, cancel, listener, accepted_is_client, target)
        })
        .ok()?;
        Some(addr)
    }

    fn cancel_pending_data(&self) {
        if let Some(c) = self
            .pending_data
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            c.store(true, Ordering::SeqCst);
        }
    }
}

// ---------------------------------------------------------------------------
// Data connections
// ---------------------------------------------------------------------------

/// Wait for the one data connection of a PASV/EPSV/PORT/EPRT, then relay it.
fn accept_data(
    inner: Arc<Inner>,
    session: Arc<Link>,
    cancel: Arc<AtomicBool>,
    listener: TcpListener,
    accepted_is_client: bool,
    target: SocketAddr,
) {
    let deadline = Instant::now() + DATA_ACCEPT_TIMEOUT;
    let accepted = loop {
        if inner.shutdown.load(Ordering::SeqCst)
            || session.dead()
            || cancel.load(Ordering::SeqCst)
            || Instant::now() >= deadline
        {
            return;
        }
        if !poll_readable(listener.as_raw_fd(), TICK) {
            continue;
        }
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(_) => return,
        }
    };
    drop(listener);
    drop(session); // the data connection may outlive its control session
    if accepted.set_nonblocking(false).is_err() {
        return;
    }
    relay_data(&inner, accepted, accepted_is_client, target);
}

/// Per data connection: bytes relayed (both directions together) since the
/// current data fault was set, and whether it hit this connection.
#[derive(Default)]
struct DataState {
    count: Mutex<DataCount>,
}

#[derive(Default)]
struct DataCount {
    /// Fault generation the count belongs to.
    gen: u64,
    relayed: u64,
    fired: bool,
}

/// Counts one data connection as open while it lives, and keeps the peak.
struct ActiveData<'a>(&'a Counters);

impl<'a> ActiveData<'a> {
    fn new(c: &'a Counters) -> Self {
        let now = c.active_data_connections.fetch_add(1, Ordering::SeqCst) + 1;
        c.peak_data_connections.fetch_max(now, Ordering::SeqCst);
        ActiveData(c)
    }
}

impl Drop for ActiveData<'_> {
    fn drop(&mut self) {
        self.0
            .active_data_connections
            .fetch_sub(1, Ordering::SeqCst);
    }
}

fn relay_data(
    inner: &Arc<Inner>,
    accepted: TcpStream,
    accepted_is_client: bool,
    target: SocketAddr,
) {
    let link = Link::new(&inner.faults);
    let accepted = Arc::new(accepted);
    prepare(&accepted);
    link.add(&accepted);
    if inner.faults.is_down() {
        link.kill();
        return;
    }
    bump(&inner.stats.data_connections, 1);
    let _active = ActiveData::new(&inner.stats);
    if !sleep_unless_dead(inner.delay, &link) {
        return;
    }
    let other = match TcpStream::connect_timeout(&target, CONNECT_TIMEOUT) {
        Ok(s) => Arc::new(s),
        Err(_) => {
            link.kill();
            return;
        }
    };
    prepare(&other);
    link.add(&other);
    let (client, server) = if accepted_is_client {
        (accepted, other)
    } else {
        (other, accepted)
    };
    let outs = Out::new(inner, &link, &client)
        .and_then(|c| Out::new(inner, &link, &server).map(|s| (c, s)));
    let Ok((to_client, to_server)) = outs else {
        link.kill();
        return;
    };
    let state = Arc::new(DataState::default());
    let up = {
        let (inner2, link2, state2, out) = (
            inner.clone(),
            link.clone(),
            state.clone(),
            to_server.clone(),
        );
        let from = client.clone();
        spawn(inner, "proxy-data-up", move || {
            data_pump(&inner2, &link2, &state2, &from, &out, true)
        })
    };
    if up.is_err() {
        link.kill();
    }
    data_pump(inner, &link, &state, &server, &to_client, false);
    if let Ok(h) = up {
        let _ = h.join();
    }
    to_client.join();
    to_server.join();
    link.finish();
}

/// What to do with a chunk of `n` bytes read from a data connection.
enum Plan {
    Forward,
    /// The data fault hits: forward `allowed` (<= n) bytes, then reset/stall.
    Fault {
        action: DataAction,
        gen: u64,
        allowed: u64,
    },
}

impl DataState {
    fn plan(&self, faults: &Faults, n: u64) -> Plan {
        let Some((fault, gen)) = faults.data_fault() else {
            return Plan::Forward;
        };
        let mut c = self.count.lock().unwrap_or_else(|p| p.into_inner());
        if c.gen != gen {
            *c = DataCount {
                gen,
                relayed: 0,
                fired: false,
            };
        }
        let before = c.relayed;
        c.relayed += n;
        if c.fired || before + n <= fault.after_bytes || !faults.data_fault_fire(gen) {
            return Plan::Forward;
        }
        c.fired = true;
        Plan::Fault {
            action: fault.action,
            gen,
            allowed: fault.after_bytes.saturating_sub(before).min(n),
        }
    }
}

/// Relay one direction of a data connection, applying the data fault.
fn data_pump(
    inner: &Inner,
    link: &Link,
    state: &DataState,
    from: &TcpStream,
    out: &Out,
    to_server: bool,
) {
    let counter = if to_server {
        &inner.stats.bytes_to_server
    } else {
        &inner.stats.bytes_to_client
    };
    let res = read_loop(link, from, DATA_BUF, |chunk| {
        let n = chunk.len() as u64;
        let Plan::Fault {
            action,
            gen,
            allowed,
        } = state.plan(&inner.faults, n)
        else {
            bump(counter, n);
            return out.data(chunk);
        };
        bump(&inner.stats.data_faults, 1);
        bump(counter, allowed);
        let (head, tail) = chunk.split_at(allowed as usize);
        if !out.data(head) {
            return false;
        }
        match action {
            DataAction::Reset => {
                out.control(Item::Kill);
                false
            }
            DataAction::Stall => {
                bump(counter, tail.len() as u64);
                out.control(Item::Hold(gen)) && out.data(tail)
            }
        }
    });
    if res.is_ok() {
        out.control(Item::Eof);
    }
}

// ---------------------------------------------------------------------------
// FTP address formats
// ---------------------------------------------------------------------------

/// Finds `h1,h2,h3,h4,p1,p2` in `text` (the first run of digits and commas
/// with exactly six numbers, each 0..=255, after the first `skip` bytes).
/// Returns its byte range and the numbers.
fn find_port_numbers(text: &str, skip: usize) -> Option<(usize, usize, [u8; 6])> {
    let b = text.as_bytes();
    let mut i = skip.min(b.len());
    while i < b.len() {
        if !b[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && (b[i].is_ascii_digit() || b[i] == b',') {
            i += 1;
        }
        let parts: Vec<&str> = text[start..i].split(',').collect();
        if parts.len() == 6 {
            let mut nums = [0u8; 6];
            let ok = parts
                .iter()
                .zip(nums.iter_mut())
                .all(|(p, n)| p.parse().map(|v| *n = v).is_ok());
            if ok {
                return Some((start, i, nums));
            }
        }
    }
    None
}

/// `PORT` argument -> address.
fn parse_port(arg: &str) -> Option<SocketAddr> {
    let (start, end, n) = find_port_numbers(arg, 0)?;
    if start != 0 || end != arg.len() {
        return None;
    }
    let ip = Ipv4Addr::new(n[0], n[1], n[2], n[3]);
    Some(SocketAddr::from((
        ip,
        (u16::from(n[4]) << 8) | u16::from(n[5]),
    )))
}

/// Address -> `h1,h2,h3,h4,p1,p2` (IPv4 only).
fn format_port(addr: impl Into<SocketAddr>) -> String {
    let addr = addr.into();
    let ip = match addr.ip() {
        IpAddr::V4(ip) => ip,
        IpAddr::V6(ip) => ip.to_ipv4_mapped().unwrap_or(Ipv4Addr::LOCALHOST),
    };
    let [a, b, c, d] = ip.octets();
    let p = addr.port();
    format!("{a},{b},{c},{d},{},{}", p >> 8, p & 0xff)
}

/// `EPRT` argument (`|1|h|port|`, any delimiter) -> address.
fn parse_eprt(arg: &str) -> Option<SocketAddr> {
    let d = arg.chars().next()?;
    let fields: Vec<&str> = arg.split(d).collect();
    // "", proto, addr, port, ""
    if fields.len() != 5 {
        return None;
    }
    let ip: IpAddr = fields[2].parse().ok()?;
    let port: u16 = fields[3].parse().ok()?;
    Some(SocketAddr::new(ip, port))
}

/// Address -> `|1|h|port|` / `|2|h|port|`.
fn format_eprt(addr: SocketAddr) -> String {
    let proto = if addr.is_ipv4() { 1 } else { 2 };
    format!("|{proto}|{}|{}|", addr.ip(), addr.port())
}

// ---------------------------------------------------------------------------
// Socket helpers (libc)
// ---------------------------------------------------------------------------

/// Make `s` send RST when closed, and wake up its blocked readers now.
fn reset_socket(s: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: valid fd owned by `s`; the option value is a properly sized
    // `linger` struct that lives across the call.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    // Shutting down only the read side sends nothing to the peer.
    shutdown_fd(s.as_raw_fd(), libc::SHUT_RD);
}

fn shutdown_fd(fd: libc::c_int, how: libc::c_int) {
    // SAFETY: plain syscall on an fd we own; errors are irrelevant here.
    unsafe {
        libc::shutdown(fd, how);
    }
}

/// Wait up to `timeout` for `fd` to become readable (or hung up).
fn poll_readable(fd: libc::c_int, timeout: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    let r = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as libc::c_int) };
    r > 0
}
