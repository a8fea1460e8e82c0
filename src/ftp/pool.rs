//! A bounded pool of logged-in control connections.
//!
//! Callers check a connection out, use it, and the guard puts it back when dropped,
//! unless it was marked broken. Idle connections are checked with NOOP before reuse,
//! and transfers may take all but one connection, so listings never starve behind reads.
//!
//! Fairness: a transfer that has waited [`CONTENTION_AFTER`] for a connection makes
//! the pool *contended*: streaming uploads see it at their next write and give their
//! connection up, and the contention hook asks idle ones to do the same. A wait
//! times out only when no connection has moved data or come back for a whole
//! timeout, so a long transfer on a one-connection server delays others, never
//! fails them.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use suppaftp::Mode;

use super::conn::{Conn, ConnConfig, Features};
use crate::remote::{ContentionHook, ErrorKind, RemoteError, RemoteResult};

/// After this long unused, a pooled connection is checked with NOOP before reuse.
const VALIDATE_AFTER: Duration = Duration::from_secs(15);
/// How often idle connections are looked after.
const KEEPALIVE_EVERY: Duration = Duration::from_secs(30);
/// Idle longer than this, one connection is kept alive with NOOP and the rest closed,
/// well before servers' usual idle timeouts (300 s for vsftpd and pyftpdlib).
const IDLE_LIMIT: Duration = Duration::from_secs(60);
/// A transfer waiting this long for a connection makes the pool contended.
pub const CONTENTION_AFTER: Duration = Duration::from_millis(200);
/// How often a contended waiter calls the contention hook again.
const HOOK_EVERY: Duration = Duration::from_millis(500);

/// What a connection is wanted for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Listings and single commands: may use every connection.
    Command,
    /// Long data transfers: leave one connection free for commands.
    Transfer,
}

#[derive(Default)]
struct State {
    idle: Vec<Conn>,
    /// Connections in existence: idle, checked out, or being opened.
    total: usize,
    /// Checked-out connections used for transfers.
    transfers: usize,
    /// Since when each transfer waiting for a connection has waited, by ticket.
    waiting: Vec<(u64, Instant)>,
}

/// Connection counts, as `ftpfs status` shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSnapshot {
    /// Connections in existence (idle, in use, or being opened).
    pub open: usize,
    pub idle: usize,
    /// In use for data transfers.
    pub transfers: usize,
    /// The size in use: lower than `configured` after the server said 421.
    pub limit: usize,
    pub configured: usize,
}

pub struct Pool {
    cfg: ConnConfig,
    /// The configured size.
    max: usize,
    /// The size in use: lowered when the server says it has too many connections.
    limit: AtomicUsize,
    state: Mutex<State>,
    freed: Condvar,
    features: OnceLock<Features>,
    /// Cleared when the server refuses EPSV; PASV is used from then on.
    epsv: AtomicBool,
    next_id: AtomicU64,
    /// When a connection last moved data or came back (ms since `born`).
    last_progress: AtomicU64,
    born: Instant,
    hook: Mutex<Option<Arc<ContentionHook>>>,
}

impl Pool {
    pub fn new(cfg: ConnConfig, max: usize) -> Arc<Pool> {
        Arc::new(Pool {
            cfg,
            max: max.max(1),
            limit: AtomicUsize::new(max.max(1)),
            state: Mutex::new(State::default()),
            freed: Condvar::new(),
            features: OnceLock::new(),
            epsv: AtomicBool::new(true),
            next_id: AtomicU64::new(1),
            last_progress: AtomicU64::new(0),
            born: Instant::now(),
            hook: Mutex::new(None),
        })
    }

    /// Starts the thread that looks after idle connections. Separate from `new`
    /// because the process may still fork (to go to the background) after logging in.
    pub fn start_keepalive(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let _ = std::thread::Builder::new()
            .name("ftpfs-keepalive".into())
            .spawn(move || keepalive(weak));
    }

    /// The pool right now, for `ftpfs status`.
    pub fn snapshot(&self) -> PoolSnapshot {
        let st = self.lock();
        PoolSnapshot {
            open: st.total,
            idle: st.idle.len(),
            transfers: st.transfers,
            limit: self.limit(),
            configured: self.max,
        }
    }

    /// The size asked for with `-o connections`.
    pub fn configured_size(&self) -> usize {
        self.max
    }

    /// The number of connections in use at most (the server may have lowered it).
    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// Closes every idle connection: after one broke, the others (from before a
    /// server restart, say) are likely broken too.
    pub fn discard_idle(&self) {
        let idle: Vec<Conn> = {
            let mut st = self.lock();
            let v: Vec<Conn> = st.idle.drain(..).collect();
            st.total -= v.len();
            v
        };
        if !idle.is_empty() {
            log::debug!("discarding {} idle connection(s)", idle.len());
            self.freed.notify_all();
        }
    }

    /// One round of keep-alive: idle connections past [`IDLE_LIMIT`] are closed,
    /// except one, which is kept alive with NOOP.
    fn tend_idle(&self) {
        let stale: Vec<Conn> = {
            let mut st = self.lock();
            let (old, fresh): (Vec<Conn>, Vec<Conn>) = st
                .idle
                .drain(..)
                .partition(|c| c.last_used.elapsed() >= IDLE_LIMIT);
            st.idle = fresh;
            st.total -= old.len();
            old
        };
        let mut keep_one = self.lock().idle.is_empty();
        for mut c in stale {
            if keep_one && c.noop() {
                keep_one = false;
                c.last_used = Instant::now();
                let mut st = self.lock();
                st.idle.push(c);
                st.total += 1;
            } else {
                c.quit();
            }
        }
        self.freed.notify_all();
    }

    pub fn config(&self) -> &ConnConfig {
        &self.cfg
    }

    /// The server's features, known after the first connection.
    pub fn features(&self) -> Features {
        self.features.get().cloned().unwrap_or_default()
    }

    /// Switches every connection from EPSV to PASV for good.
    pub fn disable_epsv(&self) {
        if self.epsv.swap(false, Ordering::Relaxed) {
            log::info!("server refused EPSV; using PASV from now on");
        }
    }

    pub fn epsv_enabled(&self) -> bool {
        self.epsv.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        crate::sync::lock(&self.state)
    }

    /// A connection moved data or came back: waiters are not stuck.
    pub fn progress(&self) {
        let ms = self.born.elapsed().as_millis() as u64;
        self.last_progress.fetch_max(ms, Ordering::Relaxed);
    }

    fn last_progress(&self) -> Instant {
        self.born + Duration::from_millis(self.last_progress.load(Ordering::Relaxed))
    }

    /// Whether a transfer (or a command, when transfers hold every connection) has
    /// waited [`CONTENTION_AFTER`] or longer for a connection.
    /// Connections free now (idle, or room to open one) beyond one kept back
    /// for the user, and none while a transfer waits.
    pub fn spare(&self) -> usize {
        let st = self.lock();
        if !st.waiting.is_empty() {
            return 0;
        }
        let unopened = self.limit().saturating_sub(st.total);
        (st.idle.len() + unopened).saturating_sub(1)
    }

    pub fn transfer_contended(&self) -> bool {
        self.lock()
            .waiting
            .iter()
            .any(|(_, since)| since.elapsed() >= CONTENTION_AFTER)
    }

    /// What to call when transfers wait: it gives idle streams' connections back.
    pub fn set_contention_hook(&self, hook: ContentionHook) {
        *crate::sync::lock(&self.hook) = Some(Arc::new(hook));
    }

    fn call_hook(&self) {
        let hook = crate::sync::lock(&self.hook).clone();
        if let Some(h) = hook {
            h();
        }
    }

    /// Checks out a connection, opening one if the pool has room, or waiting for
    /// one to be returned (up to the I/O timeout without any progress in the pool).
    pub fn get(self: &Arc<Self>, purpose: Purpose) -> RemoteResult<PooledConn> {
        let ticket = self.next_id.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let mut hooked: Option<Instant> = None;
        let mut st = self.lock();
        let result = loop {
            let limit = self.limit();
            let transfer_cap = if limit > 1 { limit - 1 } else { 1 };
            let may_transfer = purpose == Purpose::Command || st.transfers < transfer_cap;
            if may_transfer {
                if let Some(mut conn) = st.idle.pop() {
                    if purpose == Purpose::Transfer {
                        st.transfers += 1;
                    }
                    drop(st);
                    if conn.last_used.elapsed() >= VALIDATE_AFTER && !conn.noop() {
                        log::debug!("[conn {}] went stale while idle; replacing it", conn.id);
                        let mut s = self.lock();
                        s.total -= 1;
                        if purpose == Purpose::Transfer {
                            s.transfers -= 1;
                        }
                        st = s;
                        continue;
                    }
                    break Ok(self.wrap(conn, purpose));
                }
                if st.total < limit {
                    st.total += 1;
                    if purpose == Purpose::Transfer {
                        st.transfers += 1;
                    }
                    drop(st);
                    match self.open() {
                        Ok(conn) => break Ok(self.wrap(conn, purpose)),
                        Err(e) => {
                            self.release_slot(purpose);
                            if !too_many_connections(&e) {
                                break Err(e);
                            }
                            let others = self.lock().total;
                            if others == 0 {
                                break Err(e);
                            }
                            // The server allows only as many as we have: use that many and wait.
                            self.limit.store(others, Ordering::Relaxed);
                            log::warn!(
                                "server refused connection {} ({}); using {others} from now on",
                                others + 1,
                                e.message
                            );
                            st = self.lock();
                            continue;
                        }
                    }
                }
            }
            let now = Instant::now();
            let deadline = started.max(self.last_progress()) + self.cfg.timeout;
            if now >= deadline {
                drop(st);
                break Err(RemoteError::new(
                    ErrorKind::Timeout,
                    "timed out waiting for a free FTP connection",
                ));
            }
            // A command waits behind transfers only when they hold every connection.
            if purpose == Purpose::Transfer || st.transfers >= limit {
                if !st.waiting.iter().any(|(t, _)| *t == ticket) {
                    st.waiting.push((ticket, now));
                }
                let due = now.duration_since(started) >= CONTENTION_AFTER
                    && hooked.is_none_or(|h| now.duration_since(h) >= HOOK_EVERY);
                if due {
                    hooked = Some(now);
                    drop(st);
                    self.call_hook();
                    st = self.lock();
                    continue;
                }
            }
            let step = (deadline - now).min(HOOK_EVERY).min(CONTENTION_AFTER);
            st = crate::sync::wait(&self.freed, st, step);
        };
        self.lock().waiting.retain(|(t, _)| *t != ticket);
        result
    }

    fn open(&self) -> RemoteResult<Conn> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut conn = Conn::open(&self.cfg, id)?;
        if self.features.get().is_none() {
            let f = conn.features();
            log::info!("server features: {}", f.summary());
            // Try EPSV once; a server that refuses it gets PASV from now on.
            if self.cfg.active {
                // no passive mode at all
            } else if let Err(e) = conn.probe_epsv() {
                log::debug!("EPSV probe failed: {}", e.message);
                if e.kind == ErrorKind::Unsupported {
                    self.disable_epsv();
                }
            }
            let _ = self.features.set(f);
        }
        conn.apply_features(&self.features(), self.cfg.encoding);
        Ok(conn)
    }

    fn wrap(self: &Arc<Self>, mut conn: Conn, purpose: Purpose) -> PooledConn {
        let mode = if self.cfg.active {
            Mode::Active
        } else if self.epsv_enabled() {
            Mode::ExtendedPassive
        } else {
            Mode::Passive
        };
        conn.ftp.set_mode(mode);
        PooledConn {
            conn: Some(conn),
            pool: Arc::clone(self),
            purpose,
            broken: false,
        }
    }

    fn release_slot(&self, purpose: Purpose) {
        self.progress();
        let mut st = self.lock();
        st.total -= 1;
        if purpose == Purpose::Transfer {
            st.transfers -= 1;
        }
        drop(st);
        self.freed.notify_all();
    }

    fn put_back(&self, mut conn: Conn, purpose: Purpose) {
        self.progress();
        conn.last_used = Instant::now();
        let mut st = self.lock();
        st.idle.push(conn);
        if purpose == Purpose::Transfer {
            st.transfers -= 1;
        }
        drop(st);
        self.freed.notify_all();
    }

    /// Numbers for status and tests: (total, idle, transfers).
    pub fn counts(&self) -> (usize, usize, usize) {
        let st = self.lock();
        (st.total, st.idle.len(), st.transfers)
    }

    /// Closes the idle connections (at unmount).
    pub fn close_idle(&self) {
        let idle: Vec<Conn> = {
            let mut st = self.lock();
            let v: Vec<Conn> = st.idle.drain(..).collect();
            st.total -= v.len();
            v
        };
        for c in idle {
            c.quit();
        }
    }
}

/// Whether a failed connect or login means the server has too many connections
/// (421, or a 530 saying so, as some servers do).
fn too_many_connections(e: &RemoteError) -> bool {
    let m = e.message.to_ascii_lowercase();
    m.contains("421") || m.contains("too many")
}

/// Looks after idle connections until the pool is gone.
fn keepalive(pool: Weak<Pool>) {
    loop {
        std::thread::sleep(KEEPALIVE_EVERY);
        match pool.upgrade() {
            Some(p) => p.tend_idle(),
            None => return,
        }
    }
}

/// A checked-out connection; returns to the pool on drop unless marked broken.
pub struct PooledConn {
    conn: Option<Conn>,
    pool: Arc<Pool>,
    purpose: Purpose,
    broken: bool,
}

impl PooledConn {
    /// The connection is in an unknown state: close it instead of reusing it.
    pub fn mark_broken(&mut self) {
        self.broken = true;
    }

    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    pub fn conn(&mut self) -> &mut Conn {
        // The Option is only emptied in Drop.
        self.conn.as_mut().expect("connection present until drop")
    }
}

impl Drop for PooledConn {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        if self.broken || conn.suspect {
            let why = if self.broken {
                "an error"
            } else {
                "a syntax-error reply (the server may have sent two)"
            };
            log::debug!("[conn {}] closing after {why}", conn.id);
            drop(conn);
            self.pool.release_slot(self.purpose);
        } else {
            self.pool.put_back(conn, self.purpose);
        }
    }
}
