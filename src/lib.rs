//! ftpfs as a library: the layers behind the `ftpfs` binary.
//!
//! `fuse` adapts [`fs::FtpFs`] to the kernel; `fs` is the filesystem logic over the
//! [`remote::Remote`] seam; `ftp` implements that seam over FTP.

pub mod argv;
pub mod cli;
pub mod copy;
pub mod credentials;
pub mod daemon;
pub mod fs;
pub mod ftp;
pub mod fuse;
pub mod logging;
pub mod mount;
pub mod reference;
pub mod remote;
pub mod retry;
pub mod stats;
pub mod status;
pub mod sync;
