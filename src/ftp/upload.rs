//! Uploads: STOR of a whole rewindable source, or a STOR stream fed while the
//! application writes. The closing reply decides success: a 552 there is a full disk.

use std::io::{self, Write};

use suppaftp::TransferStream;

use super::conn::RustlsStream;

use super::pool::PooledConn;
use super::reply;
use crate::remote::{ErrorKind, RemoteError, RemoteResult, Source, UploadStream};

/// Uploads all of `data` to `path` on the checked-out connection.
pub fn store(pc: &mut PooledConn, path: &str, data: &mut dyn Source) -> RemoteResult<u64> {
    let what = format!("STOR {path}");
    data.rewind()
        .map_err(|e| RemoteError::new(ErrorKind::Connection, format!("{what}: spool: {e}")))?;
    let id = pc.conn().id;
    log::debug!("[conn {id}] > {what}");
    let mut stream = start_stor(pc, path, &what)?;
    let sent = match copy_with_progress(data, &mut stream, pc.pool()) {
        Ok(n) => n,
        Err(e) => {
            // The server may have refused mid-way (552 on a full disk): its reply says why.
            let local = reply::from_io(&what, &e);
            let err = finish_reply(pc, stream, &what).err().unwrap_or(local);
            return Err(fail(pc, &what, err));
        }
    };
    finish_reply(pc, stream, &what).map_err(|e| fail(pc, &what, e))?;
    verify_size(pc, path, sent).map_err(|e| fail(pc, &what, e))?;
    log::debug!("[conn {id}] stored {sent} bytes to {path}");
    Ok(sent)
}

/// Copies the source into the data connection, telling the pool that data moves.
fn copy_with_progress(
    data: &mut dyn Source,
    out: &mut impl Write,
    pool: &super::pool::Pool,
) -> io::Result<u64> {
    let copied = crate::copy::copy_chunks(data, |chunk| {
        out.write_all(chunk)?;
        pool.progress();
        Ok(())
    });
    copied.map_err(|(crate::copy::CopyError::Read(e) | crate::copy::CopyError::Write(e))| e)
}

/// Checks with SIZE (where the server has it) that the server holds every byte
/// sent: some servers answer 226 even when the data connection was cut.
fn verify_size(pc: &mut PooledConn, path: &str, sent: u64) -> RemoteResult<()> {
    if !pc.pool().features().size {
        return Ok(());
    }
    let id = pc.conn().id;
    log::debug!("[conn {id}] > SIZE {path}");
    match pc.conn().ftp.size(path) {
        Ok(n) if n as u64 == sent => Ok(()),
        Ok(n) => Err(RemoteError::new(
            ErrorKind::Connection,
            format!("STOR {path}: the server has {n} bytes of the {sent} sent"),
        )),
        // A server that lists SIZE but will not answer it here: nothing to compare.
        Err(e) => {
            let err = pc.conn().error(&format!("SIZE {path}"), e);
            log::debug!("[conn {id}] {}", err.message);
            Ok(())
        }
    }
}

/// Sends STOR for `path` (`what` is the command line) and opens its data connection.
fn start_stor(
    pc: &mut PooledConn,
    path: &str,
    what: &str,
) -> RemoteResult<TransferStream<RustlsStream>> {
    let conn = pc.conn();
    match conn.ftp.put_with_stream(path) {
        Ok(s) => Ok(s),
        Err(e) => {
            let err = conn.error(what, e);
            Err(fail(pc, what, err))
        }
    }
}

fn finish_reply(
    pc: &mut PooledConn,
    stream: TransferStream<RustlsStream>,
    what: &str,
) -> RemoteResult<()> {
    stream.finish().map_err(|e| pc.conn().error(what, e))
}

fn fail(pc: &mut PooledConn, what: &str, e: RemoteError) -> RemoteError {
    log::warn!("{what} failed: {}", e.message);
    if e.kind.is_transient() || e.kind == ErrorKind::Protocol {
        pc.mark_broken();
    }
    e
}

/// A STOR in progress.
pub struct FtpUpload {
    stream: Option<TransferStream<RustlsStream>>,
    pc: PooledConn,
    what: String,
    path: String,
    /// Bytes handed to the data connection.
    sent: u64,
}

/// Starts an upload to `path`, to be fed with `write`.
pub fn open(mut pc: PooledConn, path: &str) -> RemoteResult<Box<dyn UploadStream>> {
    let what = format!("STOR {path}");
    log::debug!("[conn {}] > {what} (streaming)", pc.conn().id);
    let stream = start_stor(&mut pc, path, &what)?;
    Ok(Box::new(FtpUpload {
        stream: Some(stream),
        pc,
        what,
        path: path.to_string(),
        sent: 0,
    }))
}

impl Write for FtpUpload {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.stream.as_mut() {
            Some(s) => {
                let n = s.write(buf)?;
                self.sent += n as u64;
                self.pc.pool().progress();
                Ok(n)
            }
            None => Err(io::Error::other("upload already finished")),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.stream.as_mut() {
            Some(s) => s.flush(),
            None => Ok(()),
        }
    }
}

impl UploadStream for FtpUpload {
    fn finish(mut self: Box<Self>) -> RemoteResult<()> {
        let Some(stream) = self.stream.take() else {
            return Ok(());
        };
        let what = self.what.clone();
        finish_reply(&mut self.pc, stream, &what).map_err(|e| fail(&mut self.pc, &what, e))?;
        let (path, sent) = (self.path.clone(), self.sent);
        verify_size(&mut self.pc, &path, sent).map_err(|e| fail(&mut self.pc, &what, e))
    }
}

impl Drop for FtpUpload {
    fn drop(&mut self) {
        if let Some(stream) = self.stream.take() {
            // Abandoned: close the data connection; the reply (226 or an error) is read
            // and the connection checked before it is reused.
            let _ = stream.finish();
            if !self.pc.conn().noop() {
                self.pc.mark_broken();
            }
        }
    }
}
