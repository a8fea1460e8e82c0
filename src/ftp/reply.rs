//! Turns FTP replies and client errors into protocol-neutral [`RemoteError`]s.
//!
//! This is the one place where reply codes become error kinds (and so errno values).
//! The original reply line is kept in the error message and logged by the caller.

use std::io;

use suppaftp::FtpError;

use crate::remote::{ErrorKind, RemoteError};

/// Classifies a reply code and its text.
///
/// 550 is used by servers for "no such file", "permission denied", "not empty"
/// and more, so its text decides; without a telling text it means ENOENT.
pub fn classify(code: u32, text: &str) -> ErrorKind {
    let lower = text.to_ascii_lowercase();
    let says = |needles: &[&str]| needles.iter().any(|n| lower.contains(n));
    if says(&["quota"]) {
        return ErrorKind::QuotaExceeded;
    }
    match code {
        421 | 425 | 426 => ErrorKind::Connection,
        450 if says(&["no such", "not found"]) => ErrorKind::NotFound,
        450 => ErrorKind::Connection,
        452 | 552 => ErrorKind::NoSpace,
        530 | 532 => ErrorKind::PermissionDenied,
        500 | 501 if says(&["too long"]) => ErrorKind::NameTooLong,
        500 | 502 | 504 => ErrorKind::Unsupported,
        501 if says(&["not a directory"]) => ErrorKind::NotADirectory,
        501 => ErrorKind::InvalidName,
        553 if says(&["exist"]) => ErrorKind::AlreadyExists,
        553 => ErrorKind::PermissionDenied,
        550 | 451 => {
            if says(&["not empty", "directory not empty"]) {
                ErrorKind::NotEmpty
            } else if says(&["permission", "access denied", "not allowed", "denied"]) {
                ErrorKind::PermissionDenied
            } else if says(&["already exists", "file exists", "exists"]) {
                ErrorKind::AlreadyExists
            } else if says(&["not a directory"]) {
                ErrorKind::NotADirectory
            } else if says(&["is a directory"]) {
                ErrorKind::IsADirectory
            } else if says(&["no space", "disk full", "storage"]) {
                ErrorKind::NoSpace
            } else if code == 451 {
                ErrorKind::Protocol
            } else {
                ErrorKind::NotFound
            }
        }
        _ => ErrorKind::Protocol,
    }
}

/// The reply line(s) as text, trimmed.
pub fn reply_text(resp: &suppaftp::types::Response) -> String {
    String::from_utf8_lossy(&resp.body).trim().to_string()
}

/// Converts a suppaftp error for `what` (e.g. `RETR /a`) into a [`RemoteError`].
pub fn from_ftp(what: &str, err: FtpError) -> RemoteError {
    match err {
        FtpError::UnexpectedResponse(resp) => {
            let code = resp.status.code();
            let text = reply_text(&resp);
            let kind = classify(code, &text);
            log::debug!("{what}: server replied {text:?} -> {kind:?}");
            RemoteError::new(kind, format!("{what}: {text}"))
        }
        FtpError::ConnectionError(e) => from_io(what, &e),
        FtpError::BadResponse => {
            RemoteError::new(ErrorKind::Protocol, format!("{what}: malformed reply"))
        }
        FtpError::InvalidAddress(e) => {
            RemoteError::new(ErrorKind::Protocol, format!("{what}: bad address: {e}"))
        }
        FtpError::DataConnectionAlreadyOpen => RemoteError::new(
            ErrorKind::Protocol,
            format!("{what}: data connection already open"),
        ),
        #[allow(unreachable_patterns)]
        other => RemoteError::new(ErrorKind::Protocol, format!("{what}: {other}")),
    }
}

/// Command lines at least this long may be over a server's line limit
/// (ProFTPD's default is 512 bytes, pyftpdlib's 2048).
pub const LONG_LINE: usize = 256;

/// Whether `err`, the answer to the command line `line`, may be one of two
/// replies to it: a syntax error (500, 501) to a long line. pyftpdlib answers
/// a line over its 2048-byte limit with "500 Command too long." and then the
/// rest of the line with another 500. Every later command would read the reply
/// meant for the one before it, so such a connection is not reused. A 500 to a
/// short line (a probe such as `OPTS UTF8 ON` on a server without it) is a
/// single reply and keeps the connection.
pub fn may_desync(line: &str, err: &FtpError) -> bool {
    line.len() >= LONG_LINE
        && matches!(err, FtpError::UnexpectedResponse(r) if matches!(r.status.code(), 500 | 501))
}

/// Converts a socket error into a [`RemoteError`].
pub fn from_io(what: &str, e: &io::Error) -> RemoteError {
    match e.kind() {
        // A socket timeout shows as EAGAIN on Linux: say what it means.
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
            RemoteError::new(ErrorKind::Timeout, format!("{what}: timed out"))
        }
        io::ErrorKind::InvalidInput => {
            RemoteError::new(ErrorKind::InvalidName, format!("{what}: {e}"))
        }
        _ => RemoteError::new(ErrorKind::Connection, format!("{what}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_specific_kinds() {
        assert_eq!(
            classify(550, "550 No such file or directory."),
            ErrorKind::NotFound
        );
        assert_eq!(
            classify(550, "550 Failed to open file."),
            ErrorKind::NotFound
        );
        assert_eq!(
            classify(550, "550 Permission denied."),
            ErrorKind::PermissionDenied
        );
        assert_eq!(
            classify(550, "550 Directory not empty."),
            ErrorKind::NotEmpty
        );
        assert_eq!(classify(550, "550 File exists."), ErrorKind::AlreadyExists);
        assert_eq!(
            classify(552, "552 Exceeded storage allocation"),
            ErrorKind::NoSpace
        );
        assert_eq!(
            classify(452, "452 Insufficient storage space"),
            ErrorKind::NoSpace
        );
        assert_eq!(
            classify(552, "552 Quota exceeded"),
            ErrorKind::QuotaExceeded
        );
        assert_eq!(
            classify(530, "530 Login incorrect."),
            ErrorKind::PermissionDenied
        );
        assert_eq!(classify(421, "421 Timeout."), ErrorKind::Connection);
        assert_eq!(
            classify(502, "502 Command not implemented."),
            ErrorKind::Unsupported
        );
        assert_eq!(
            classify(553, "553 Could not create file."),
            ErrorKind::PermissionDenied
        );
        assert_eq!(classify(554, "554 Invalid REST"), ErrorKind::Protocol);
        assert_eq!(
            classify(500, "500 Command too long."),
            ErrorKind::NameTooLong
        );
        assert_eq!(classify(299, "299 odd"), ErrorKind::Protocol);
    }

    proptest::proptest! {
        /// Any code and any text, however hostile, classify without a panic.
        #[test]
        fn classify_never_panics(code in 0u32..1000, text in proptest::prelude::any::<String>()) {
            let _ = classify(code, &text);
        }

        #[test]
        fn unexpected_replies_become_errors(code in 100u32..600, body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let resp = suppaftp::types::Response::new(suppaftp::Status::from(code), body);
            let e = from_ftp("CMD x", FtpError::UnexpectedResponse(resp));
            proptest::prop_assert!(e.message.starts_with("CMD x"));
            proptest::prop_assert!(e.errno() > 0);
        }
    }

    #[test]
    fn syntax_errors_may_desync_the_connection() {
        let reply = |code: u32| {
            FtpError::UnexpectedResponse(suppaftp::types::Response::new(
                suppaftp::Status::from(code),
                format!("{code} x").into_bytes(),
            ))
        };
        let long = format!("MKD /{}", "d".repeat(LONG_LINE));
        assert!(may_desync(&long, &reply(500)));
        assert!(may_desync(&long, &reply(501)));
        assert!(!may_desync(&long, &reply(550)));
        assert!(!may_desync(&long, &reply(502)));
        // A probe refused with 500 is one reply: the connection stays in use.
        assert!(!may_desync("OPTS UTF8 ON", &reply(500)));
        assert!(!may_desync(&long, &FtpError::BadResponse));
    }

    #[test]
    fn timeouts_are_told_apart_from_broken_connections() {
        let t = from_io("RETR /x", &io::Error::from(io::ErrorKind::TimedOut));
        assert_eq!(t.kind, ErrorKind::Timeout);
        let r = from_io("RETR /x", &io::Error::from(io::ErrorKind::ConnectionReset));
        assert_eq!(r.kind, ErrorKind::Connection);
        assert!(r.message.starts_with("RETR /x"));
    }
}
