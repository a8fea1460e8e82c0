//! A download in progress: REST+RETR on a pooled connection, read as a byte stream.
//!
//! Reaching the end reads the transfer's closing reply. Dropping the stream early closes
//! the data connection, consumes the server's abort reply and checks the control
//! connection with NOOP before it goes back to the pool.

use std::io::{self, Read};

use suppaftp::{FtpError, TlsStream, TransferStream};

use super::pool::PooledConn;
use super::reply;
use crate::remote::{ErrorKind, ReadStream, RemoteResult};

pub struct FtpReadStream<T: TlsStream> {
    stream: Option<TransferStream<T>>,
    pc: PooledConn,
    what: String,
    /// Bytes still to discard, when the server cannot start at the offset.
    skip: u64,
    /// The transfer failed: every later read fails too (never a silent end).
    failed: bool,
}

/// Starts a download of `path` at `offset` on the checked-out connection.
pub fn open(mut pc: PooledConn, path: &str, offset: u64) -> RemoteResult<ReadStream> {
    let what = format!("RETR {path}");
    let id = pc.conn().id;
    let mut skip = 0;
    let start = |pc: &mut PooledConn, offset: u64| {
        if offset > 0 {
            log::debug!("[conn {id}] > REST {offset}");
            // Only fails on absurd offsets; the server's answer comes with RETR.
            let _ = pc.conn().ftp.resume_transfer(offset as usize);
        }
        log::debug!("[conn {id}] > {what}");
        let conn = pc.conn();
        conn.ftp
            .retr_as_stream(path)
            .map_err(|e| conn.error(&what, e))
    };
    let stream = match start(&mut pc, offset) {
        Ok(s) => s,
        Err(e) if offset > 0 && e.kind == ErrorKind::Unsupported => {
            log::warn!(
                "server refused REST {offset} ({}); reading from the start",
                e.message
            );
            skip = offset;
            start(&mut pc, 0)?
        }
        Err(e) => {
            if e.kind.is_transient() || e.kind == ErrorKind::Protocol {
                pc.mark_broken();
            }
            return Err(e);
        }
    };
    Ok(Box::new(FtpReadStream {
        stream: Some(stream),
        pc,
        what,
        skip,
        failed: false,
    }))
}

impl<T: TlsStream> FtpReadStream<T> {
    /// Reads the closing reply after the last byte.
    fn finish(&mut self) -> io::Result<()> {
        let Some(stream) = self.stream.take() else {
            return Ok(());
        };
        match stream.finish() {
            Ok(()) => Ok(()),
            Err(e) => {
                self.failed = true;
                let err = self.pc.conn().error(&self.what, e);
                log::warn!("{}", err.message);
                if err.kind.is_transient() || err.kind == ErrorKind::Protocol {
                    self.pc.mark_broken();
                }
                Err(io::Error::other(err.message))
            }
        }
    }

    fn read_inner(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.failed {
            return Err(io::Error::other(format!(
                "{}: the transfer failed",
                self.what
            )));
        }
        let Some(stream) = self.stream.as_mut() else {
            return Ok(0);
        };
        match stream.read(buf) {
            Ok(0) => self.finish().map(|_| 0),
            Ok(n) => {
                crate::stats::STATS.downloaded(n as u64);
                self.pc.pool().progress();
                Ok(n)
            }
            Err(e) => {
                log::warn!("{}: data connection failed: {e}", self.what);
                self.failed = true;
                self.pc.mark_broken();
                // Close it without waiting for a reply: the connection is discarded.
                if let Some(s) = self.stream.take() {
                    let _ = s.get_ref().get_ref().shutdown(std::net::Shutdown::Both);
                    std::mem::forget(s);
                }
                Err(e)
            }
        }
    }
}

impl<T: TlsStream> Read for FtpReadStream<T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.skip > 0 {
            let mut scratch = [0u8; 16384];
            let want = scratch.len().min(self.skip as usize);
            let n = self.read_inner(&mut scratch[..want])?;
            if n == 0 {
                return Ok(0);
            }
            self.skip -= n as u64;
        }
        self.read_inner(buf)
    }
}

impl<T: TlsStream> Drop for FtpReadStream<T> {
    fn drop(&mut self) {
        let Some(stream) = self.stream.take() else {
            return;
        };
        // Closing the data connection early makes the server answer 426 (or 226 if
        // it had sent everything already). Either way exactly one reply is due.
        let id = self.pc.conn().id;
        match stream.finish() {
            Ok(()) => {}
            Err(FtpError::UnexpectedResponse(r)) => {
                log::debug!("[conn {id}] transfer cut short: {}", reply::reply_text(&r));
            }
            Err(e) => {
                log::debug!("[conn {id}] abort failed: {e}");
                self.pc.mark_broken();
                return;
            }
        }
        // Some servers send a second reply after 426; NOOP proves the connection is in step.
        if !self.pc.conn().noop() {
            log::debug!("[conn {id}] out of step after abort; closing it");
            self.pc.mark_broken();
        }
    }
}
