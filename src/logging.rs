//! Logging through `log` and env_logger, with one guarantee on top: the
//! password never reaches the log, even at trace level from suppaftp. In the
//! background (stderr is /dev/null then) records go to syslog instead.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::OnceLock;

use log::{Level, Log, Metadata, Record};

/// Where background records go, once [`to_syslog`] was called.
static SYSLOG: OnceLock<Syslog> = OnceLock::new();

/// A minimal syslog client: one datagram per record to /dev/log (or to
/// `$FTPFS_SYSLOG_SOCKET`), facility daemon. A missing syslog drops records.
struct Syslog {
    socket: UnixDatagram,
    path: PathBuf,
}

impl Syslog {
    fn send(&self, level: Level, target: &str, text: &str) {
        let _ = self
            .socket
            .send_to(syslog_line(level, target, text).as_bytes(), &self.path);
    }
}

/// `<PRI>ftpfs[PID]: target: text` (RFC 3164 without the optional timestamp and
/// host, which the local syslog daemon adds), on one line.
fn syslog_line(level: Level, target: &str, text: &str) -> String {
    const DAEMON: u8 = 3 << 3;
    let severity = match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    };
    let text = text.replace(['\n', '\r'], " ");
    format!(
        "<{}>ftpfs[{}]: {target}: {text}",
        DAEMON + severity,
        std::process::id()
    )
}

/// From now on, log records go to syslog (call it after going to the background).
pub fn to_syslog() {
    let path = std::env::var_os("FTPFS_SYSLOG_SOCKET")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/dev/log"));
    if let Ok(socket) = UnixDatagram::unbound() {
        let _ = SYSLOG.set(Syslog { socket, path });
    }
}

struct Masking {
    inner: env_logger::Logger,
}

impl Log for Masking {
    fn enabled(&self, m: &Metadata) -> bool {
        self.inner.enabled(m)
    }

    fn log(&self, record: &Record) {
        if !self.inner.matches(record) {
            return;
        }
        let text = record.args().to_string();
        if let Some(syslog) = SYSLOG.get() {
            syslog.send(record.level(), record.target(), &mask(&text));
            return;
        }
        match mask(&text) {
            std::borrow::Cow::Borrowed(_) => self.inner.log(record),
            // suppaftp traces every command line it sends, the password included.
            std::borrow::Cow::Owned(masked) => self.inner.log(
                &Record::builder()
                    .args(format_args!("{masked}"))
                    .level(record.level())
                    .target(record.target())
                    .module_path(record.module_path())
                    .file(record.file())
                    .line(record.line())
                    .build(),
            ),
        }
    }

    fn flush(&self) {
        self.inner.flush()
    }
}

/// `text` with anything after `PASS ` replaced.
fn mask(text: &str) -> std::borrow::Cow<'_, str> {
    match text.find("PASS ") {
        Some(i) => format!("{}PASS ****", &text[..i]).into(),
        None => text.into(),
    }
}

/// Installs the logger: `RUST_LOG` if set, else warnings only (the FTP dialogue with `debug`).
pub fn init(debug: bool) {
    // suppaftp logs TLS shutdown hiccups as errors; ftpfs reports what matters itself.
    let default = if debug {
        "ftpfs=debug,info"
    } else {
        "warn,suppaftp=off"
    };
    let mut b = env_logger::Builder::new();
    b.parse_filters(default);
    if let Ok(s) = std::env::var("RUST_LOG") {
        b.parse_filters(&s);
    }
    b.format_timestamp_millis();
    let inner = b.build();
    let max = inner.filter();
    if log::set_boxed_logger(Box::new(Masking { inner })).is_ok() {
        log::set_max_level(max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syslog_lines_carry_the_severity_and_never_the_password() {
        let line = syslog_line(Level::Error, "ftpfs::fs", &mask("upload failed\nfor good"));
        assert!(line.starts_with("<27>ftpfs["), "{line}");
        assert!(
            line.ends_with("]: ftpfs::fs: upload failed for good"),
            "{line}"
        );
        assert!(syslog_line(Level::Warn, "t", "x").starts_with("<28>"));
        assert!(syslog_line(Level::Debug, "t", "x").starts_with("<31>"));
        assert_eq!(mask("> PASS hunter2"), "> PASS ****");
    }
}
