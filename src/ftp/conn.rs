//! One logged-in FTP control connection: connect and I/O timeouts, login,
//! binary mode, FEAT, and the command log (with PASS masked).

use std::fmt;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use std::sync::Arc;
use suppaftp::types::FileType;

use suppaftp::{FtpError, Mode, RustlsConnector, RustlsFtpStream, Status, TlsConnector};

use super::reply;
use super::tls::TlsMode;
use crate::remote::{ErrorKind, RemoteError, RemoteResult};

/// A password that never prints.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("****")
    }
}

/// The control connection type: TLS-capable, plain until AUTH TLS.
pub type Ftp = RustlsFtpStream;

/// Where and how to log in.
#[derive(Debug, Clone)]
pub struct ConnConfig {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Secret,
    pub connect_timeout: Duration,
    /// Timeout of every control reply and every data read or write.
    pub timeout: Duration,
    /// TLS: when, and the shared client configuration (None: plain FTP).
    pub tls_mode: super::tls::TlsMode,
    pub tls: Option<Arc<super::tls::TlsConfig>>,
    /// Active mode (PORT/EPRT) instead of passive.
    pub active: bool,
    /// Connect data connections to the control connection's peer, whatever PASV says.
    pub pasv_ip_workaround: bool,
    /// The character set of names on the server.
    pub encoding: super::names::NameEncoding,
}

/// What the server said it can do, from FEAT.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Features {
    pub mlsd: bool,
    pub mfmt: bool,
    pub mdtm: bool,
    pub size: bool,
    pub rest_stream: bool,
    pub utf8: bool,
    pub epsv: bool,
    /// MLST facts the server offers but does not send by default (without the `*`).
    pub mlst_optional: Vec<String>,
}

impl Features {
    /// Reads the features from FEAT's key/value lines (keys are upper-cased by suppaftp's parser or not).
    pub fn from_feat(feat: &suppaftp::types::Features) -> Self {
        let has = |k: &str| feat.keys().any(|key| key.eq_ignore_ascii_case(k));
        let rest_stream = feat.iter().any(|(k, v)| {
            k.eq_ignore_ascii_case("REST")
                && v.as_deref()
                    .is_some_and(|v| v.to_ascii_uppercase().contains("STREAM"))
        });
        let mlst_optional = feat
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("MLST"))
            .filter_map(|(_, v)| v.as_deref())
            .flat_map(|v| v.split(';'))
            .map(str::trim)
            .filter(|f| !f.is_empty() && !f.ends_with('*'))
            .map(|f| f.to_ascii_lowercase())
            .collect();
        Features {
            mlsd: has("MLST") || has("MLSD"),
            mlst_optional,
            mfmt: has("MFMT"),
            mdtm: has("MDTM"),
            size: has("SIZE"),
            rest_stream,
            utf8: has("UTF8"),
            epsv: has("EPSV"),
        }
    }

    /// A short human-readable list, for logs and status output.
    pub fn summary(&self) -> String {
        let mut v = Vec::new();
        for (on, name) in [
            (self.mlsd, "MLSD"),
            (self.mfmt, "MFMT"),
            (self.mdtm, "MDTM"),
            (self.size, "SIZE"),
            (self.rest_stream, "REST STREAM"),
            (self.utf8, "UTF8"),
            (self.epsv, "EPSV"),
        ] {
            if on {
                v.push(name);
            }
        }
        v.join(", ")
    }
}

/// A TLS failure (certificate, handshake, PBSZ/PROT refused) as a login-stopping error.
fn tls_error(cfg: &ConnConfig, e: impl fmt::Display) -> RemoteError {
    RemoteError::new(
        ErrorKind::PermissionDenied,
        format!("TLS with {}: {e}", cfg.host),
    )
}

/// suppaftp's rustls connector, but every socket it wraps gets read and write
/// timeouts first: the control connection of implicit FTPS is connected inside
/// suppaftp, where nothing else could set them before the handshake.
#[derive(Debug)]
struct TimedTls {
    inner: RustlsConnector,
    connect_timeout: Duration,
    timeout: Duration,
}

impl TimedTls {
    /// Each control connection gets its own session cache: its data connections
    /// must resume *its* session (vsftpd's `require_ssl_reuse`), and a cache shared
    /// by server name would hand them the session of another control connection.
    fn new(tls: &Arc<rustls::ClientConfig>, cfg: &ConnConfig) -> Self {
        let mut own = rustls::ClientConfig::clone(tls);
        own.resumption = rustls::client::Resumption::in_memory_sessions(4);
        TimedTls {
            inner: RustlsConnector::from(Arc::new(own)),
            connect_timeout: cfg.connect_timeout,
            timeout: cfg.timeout,
        }
    }
}

/// suppaftp names its rustls stream type only through the connector.
pub type RustlsStream = <RustlsConnector as TlsConnector>::Stream;

impl TlsConnector for TimedTls {
    type Stream = RustlsStream;

    fn connect(&self, domain: &str, stream: TcpStream) -> suppaftp::FtpResult<RustlsStream> {
        // Data sockets come with timeouts already; a bare control socket gets the
        // connect timeout for the handshake and greeting (raised after login).
        if stream.read_timeout().ok().flatten().is_none() {
            stream
                .set_read_timeout(Some(self.connect_timeout))
                .and_then(|_| stream.set_write_timeout(Some(self.timeout)))
                .and_then(|_| stream.set_nodelay(true))
                .map_err(FtpError::ConnectionError)?;
        }
        self.inner.connect(domain, stream)
    }
}

/// A logged-in control connection in binary mode.
pub struct Conn {
    pub ftp: Ftp,
    pub id: u64,
    pub last_used: Instant,
    /// A syntax-error reply to a long line was seen: the server may have sent two
    /// replies for it, so the connection is closed rather than reused.
    pub suspect: bool,
}

impl Conn {
    /// Maps a suppaftp error for the command line `what`, and marks the connection
    /// suspect after a reply that may be followed by a second one
    /// ([`reply::may_desync`]).
    pub fn error(&mut self, what: &str, err: FtpError) -> RemoteError {
        if reply::may_desync(what, &err) {
            self.suspect = true;
        }
        reply::from_ftp(what, err)
    }

    /// Connects (trying every address of the host), logs in and switches to binary mode.
    pub fn open(cfg: &ConnConfig, id: u64) -> RemoteResult<Conn> {
        let addrs: Vec<SocketAddr> = (cfg.host.as_str(), cfg.port)
            .to_socket_addrs()
            .map_err(|e| {
                RemoteError::new(
                    ErrorKind::Connection,
                    format!("cannot resolve {}: {e}", cfg.host),
                )
            })?
            .collect();
        let mut last_err = RemoteError::new(
            ErrorKind::Connection,
            format!("no address found for {}", cfg.host),
        );
        for addr in addrs {
            match Self::open_addr(cfg, addr, id) {
                Ok(conn) => return Ok(conn),
                Err(e) if e.kind == ErrorKind::PermissionDenied => return Err(e),
                Err(e) => last_err = e,
            }
        }
        Err(last_err)
    }

    fn open_addr(cfg: &ConnConfig, addr: SocketAddr, id: u64) -> RemoteResult<Conn> {
        log::debug!("[conn {id}] connecting to {addr}");
        let what = format!("connect to {addr}");
        let (connect_timeout, timeout) = (cfg.connect_timeout, cfg.timeout);
        let ftp = match (&cfg.tls, cfg.tls_mode) {
            (Some(tls), TlsMode::Implicit) => {
                match Self::connect_implicit(cfg, addr, TimedTls::new(tls.current(), cfg)) {
                    Ok(ftp) => ftp,
                    Err(e) if tls.learn_from(&e.message) => return Self::open_addr(cfg, addr, id),
                    Err(e) => return Err(e),
                }
            }
            _ => {
                let tcp = TcpStream::connect_timeout(&addr, cfg.connect_timeout)
                    .map_err(|e| reply::from_io(&what, &e))?;
                // The greeting and the login must also arrive within the connect timeout.
                tcp.set_read_timeout(Some(cfg.connect_timeout))
                    .and_then(|_| tcp.set_write_timeout(Some(cfg.timeout)))
                    .and_then(|_| tcp.set_nodelay(true))
                    .map_err(|e| reply::from_io(&what, &e))?;
                Ftp::connect_with_stream(tcp).map_err(|e| reply::from_ftp(&what, e))?
            }
        };
        let mut ftp = ftp.passive_stream_builder(move |addr| {
            let s = TcpStream::connect_timeout(&addr, connect_timeout)
                .map_err(FtpError::ConnectionError)?;
            s.set_read_timeout(Some(timeout))
                .and_then(|_| s.set_write_timeout(Some(timeout)))
                .map_err(FtpError::ConnectionError)?;
            Ok(s)
        });
        if cfg.pasv_ip_workaround {
            ftp.set_passive_nat_workaround(true);
        }
        if !cfg.encoding.is_utf8() {
            ftp.set_encoding(cfg.encoding);
        }
        let ftp = if cfg.active {
            ftp.active_mode(cfg.timeout)
        } else {
            ftp
        };
        let mut ftp = match (&cfg.tls, cfg.tls_mode) {
            (Some(tls), mode @ (TlsMode::Explicit | TlsMode::Try)) => {
                log::debug!("[conn {id}] > AUTH TLS");
                match ftp.into_secure(TimedTls::new(tls.current(), cfg), &cfg.host) {
                    Ok(f) => f,
                    Err(FtpError::UnexpectedResponse(r)) if mode == TlsMode::Try => {
                        log::warn!(
                            "server refused TLS ({}); going on WITHOUT encryption (-o tls=try)",
                            reply::reply_text(&r)
                        );
                        let plain = ConnConfig {
                            tls_mode: TlsMode::Off,
                            ..cfg.clone()
                        };
                        return Self::open_addr(&plain, addr, id);
                    }
                    Err(e) if tls.learn_from(&e.to_string()) => {
                        return Self::open_addr(cfg, addr, id)
                    }
                    Err(FtpError::UnexpectedResponse(r)) => {
                        return Err(RemoteError::new(
                            ErrorKind::PermissionDenied,
                            format!(
                                "{} refused TLS (AUTH TLS: {}); use ftp:// for plain FTP, \
                                 or -o tls=try to fall back to it",
                                cfg.host,
                                reply::reply_text(&r)
                            ),
                        ))
                    }
                    Err(e) => return Err(tls_error(cfg, e)),
                }
            }
            (Some(_), TlsMode::Implicit) => {
                // suppaftp's implicit connect does not protect the data connections itself.
                let mut conn = Conn {
                    ftp,
                    id,
                    last_used: Instant::now(),
                    suspect: false,
                };
                conn.command("PBSZ 0").map_err(|e| tls_error(cfg, e))?;
                conn.command("PROT P").map_err(|e| tls_error(cfg, e))?;
                conn.ftp
            }
            _ => ftp,
        };
        log::debug!("[conn {id}] > USER {}", cfg.user);
        log::debug!("[conn {id}] > PASS ****");
        ftp.login(cfg.user.as_str(), cfg.password.expose())
            .map_err(|e| match e {
                FtpError::UnexpectedResponse(r) => {
                    let text = reply::reply_text(&r);
                    let kind = if r.status == Status::NotLoggedIn {
                        ErrorKind::PermissionDenied
                    } else {
                        reply::classify(r.status.code(), &text)
                    };
                    RemoteError::new(kind, format!("login as {:?} refused: {text}", cfg.user))
                }
                other => reply::from_ftp("login", other),
            })?;
        log::debug!("[conn {id}] > TYPE I");
        ftp.transfer_type(FileType::Binary)
            .map_err(|e| reply::from_ftp("TYPE I", e))?;
        ftp.get_ref()
            .set_read_timeout(Some(cfg.timeout))
            .map_err(|e| reply::from_io("set timeout", &e))?;
        if !cfg.active {
            ftp.set_mode(Mode::ExtendedPassive);
        }
        log::debug!("[conn {id}] logged in as {:?}", cfg.user);
        Ok(Conn {
            ftp,
            id,
            last_used: Instant::now(),
            suspect: false,
        })
    }

    /// Implicit FTPS: TLS from the first byte, then the greeting. suppaftp connects
    /// without a timeout, so the TCP connect runs on a helper thread that is abandoned
    /// (it ends with the system's own connect timeout) when `connect_timeout` passes.
    fn connect_implicit(
        cfg: &ConnConfig,
        addr: SocketAddr,
        connector: TimedTls,
    ) -> RemoteResult<Ftp> {
        let host = cfg.host.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("ftps-connect".into())
            .spawn(move || {
                let _ = tx.send(Ftp::connect_secure_implicit(addr, connector, &host));
            })
            .map_err(|e| reply::from_io("start the connect thread", &e))?;
        // The greeting is bounded by the socket timeouts TimedTls sets, so wait for both.
        match rx.recv_timeout(cfg.connect_timeout + cfg.timeout) {
            Ok(Ok(ftp)) => Ok(ftp),
            Ok(Err(e @ FtpError::SecureError(_))) => Err(tls_error(cfg, e)),
            // rustls reports a bad handshake as invalid data on the socket.
            Ok(Err(FtpError::ConnectionError(e)))
                if e.kind() == std::io::ErrorKind::InvalidData =>
            {
                Err(tls_error(
                    cfg,
                    format!(
                        "{e} (does port {} speak implicit FTPS? ftpes:// is explicit TLS)",
                        addr.port()
                    ),
                ))
            }
            Ok(Err(e)) => Err(reply::from_ftp(&format!("connect to {addr}"), e)),
            Err(_) => Err(RemoteError::new(
                ErrorKind::Timeout,
                format!("connect to {addr}: timed out"),
            )),
        }
    }

    /// Asks FEAT; a server without FEAT has no features.
    pub fn features(&mut self) -> Features {
        log::debug!("[conn {}] > FEAT", self.id);
        match self.ftp.feat() {
            Ok(f) => Features::from_feat(&f),
            Err(e) => {
                log::debug!("[conn {}] FEAT failed: {e}", self.id);
                Features::default()
            }
        }
    }

    /// Sends a command that expects a positive reply (2xx, or 350 to RNFR); logs both.
    pub fn command(&mut self, line: &str) -> RemoteResult<String> {
        log::debug!("[conn {}] > {line}", self.id);
        let ok = [
            Status::CommandOk,
            Status::CommandNotImplemented,
            Status::RequestedFileActionOk,
            Status::PathCreated,
            Status::System,
            Status::Help,
            Status::File,
            Status::RequestFilePending,
        ];
        let resp = match self.ftp.custom_command(line, &ok) {
            Ok(r) => r,
            Err(e) => return Err(self.error(line, e)),
        };
        let text = reply::reply_text(&resp);
        log::debug!("[conn {}] < {text}", self.id);
        if resp.status == Status::CommandNotImplemented {
            return Err(RemoteError::new(
                ErrorKind::Unsupported,
                format!("{line}: {text}"),
            ));
        }
        Ok(text)
    }

    /// Per-session setup that depends on the server's features: UTF-8 names (not
    /// when the user named another character set), and the MLST facts we want
    /// (unix.mode) when the server does not send them by default.
    pub fn apply_features(&mut self, f: &Features, encoding: super::names::NameEncoding) {
        if f.utf8 && encoding.is_utf8() {
            // Not every server accepts it (pure-ftpd answers 504); names are UTF-8 either way.
            let _ = self.command("OPTS UTF8 ON");
        }
        if f.mlsd && f.mlst_optional.iter().any(|x| x == "unix.mode") {
            let _ = self.command("OPTS MLST type;size;modify;perm;unix.mode;");
        }
    }

    /// Sends a bare EPSV to learn whether the server supports it.
    pub fn probe_epsv(&mut self) -> RemoteResult<()> {
        log::debug!("[conn {}] > EPSV", self.id);
        match self
            .ftp
            .custom_command("EPSV", &[Status::ExtendedPassiveMode])
        {
            Ok(_) => Ok(()),
            Err(e) => Err(self.error("EPSV", e)),
        }
    }

    /// The server's current directory (the login directory right after login).
    pub fn pwd(&mut self) -> RemoteResult<String> {
        log::debug!("[conn {}] > PWD", self.id);
        self.ftp.pwd().map_err(|e| reply::from_ftp("PWD", e))
    }

    /// Checks that the connection still answers.
    pub fn noop(&mut self) -> bool {
        log::trace!("[conn {}] > NOOP", self.id);
        self.ftp.noop().is_ok()
    }

    /// Says goodbye politely; errors do not matter any more.
    pub fn quit(mut self) {
        log::debug!("[conn {}] > QUIT", self.id);
        let _ = self.ftp.quit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "****");
        let cfg = ConnConfig {
            host: "h".into(),
            port: 21,
            user: "u".into(),
            password: s,
            connect_timeout: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            tls_mode: Default::default(),
            tls: None,
            active: false,
            pasv_ip_workaround: false,
            encoding: Default::default(),
        };
        assert!(!format!("{cfg:?}").contains("hunter2"));
    }

    #[test]
    fn features_are_read_case_insensitively() {
        let mut feat = suppaftp::types::Features::new();
        feat.insert("MLST".into(), Some("type*;size*;modify*;".into()));
        feat.insert("rest".into(), Some("STREAM".into()));
        feat.insert("UTF8".into(), None);
        let f = Features::from_feat(&feat);
        assert!(f.mlsd && f.rest_stream && f.utf8);
        assert!(f.mlst_optional.is_empty());
        feat.insert(
            "MLST".into(),
            Some("type*;perm*;size*;modify*;unix.mode;unique;".into()),
        );
        let f = Features::from_feat(&feat);
        assert_eq!(f.mlst_optional, ["unix.mode", "unique"]);
        assert!(!f.mfmt && !f.size);
        assert_eq!(f.summary(), "MLSD, REST STREAM, UTF8");
    }
}
