//! The one retry policy: which failures are worth another try, and how many tries
//! each kind of work gets. Every layer asks here instead of keeping its own count,
//! so retries never multiply across layers.
//!
//! - A control command (LIST, DELE, RNFR/RNTO, MKD...) is tried on a second
//!   connection when the first one broke: a pooled connection may have gone stale.
//! - A download is opened on a second connection likewise; a download that breaks
//!   mid-way is resumed where it stopped (the reader's own bound).
//! - An upload is never retried by the FTP layer. The filesystem tries it
//!   [`UPLOAD_ATTEMPTS`] times while close() or fsync() waits, then, after close,
//!   [`BACKGROUND_DELAYS`].len() more times in the background, and then keeps the
//!   content on disk. At most 6 STORs per version of a file.

use std::time::Duration;

use crate::remote::ErrorKind;

/// Tries of an idempotent control command or of opening a download.
pub const COMMAND_ATTEMPTS: usize = 2;

/// Tries of an upload while the application waits in close() or fsync().
pub const UPLOAD_ATTEMPTS: usize = 2;

/// Waits before each background retry of an upload that failed at close.
pub const BACKGROUND_DELAYS: [Duration; 4] = [
    Duration::from_secs(1),
    Duration::from_secs(3),
    Duration::from_secs(9),
    Duration::from_secs(27),
];

/// Whether another try may succeed: the connection broke or timed out. A refusal
/// (no space, no permission, a bad name) will not go away in seconds.
pub fn worth_retrying(kind: ErrorKind) -> bool {
    kind.is_transient()
}

/// The same question for an errno the filesystem already returned.
pub fn worth_retrying_errno(errno: i32) -> bool {
    matches!(errno, libc::EIO | libc::ETIMEDOUT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_broken_connections_are_retried() {
        assert!(worth_retrying(ErrorKind::Connection));
        assert!(worth_retrying(ErrorKind::Timeout));
        for k in [
            ErrorKind::NoSpace,
            ErrorKind::PermissionDenied,
            ErrorKind::NotFound,
            ErrorKind::Protocol,
        ] {
            assert!(!worth_retrying(k), "{k:?}");
        }
        assert!(worth_retrying_errno(libc::EIO));
        assert!(!worth_retrying_errno(libc::ENOSPC));
    }

    #[test]
    fn an_upload_gets_six_tries_at_most() {
        assert_eq!(UPLOAD_ATTEMPTS + BACKGROUND_DELAYS.len(), 6);
    }
}
