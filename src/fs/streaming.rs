//! An upload that streams while the application writes a file from its start, in
//! order (`cp` of a new file, or an O_TRUNC rewrite). It ends in one of two ways:
//! finished at close (its data is all there), or abandoned (the application jumped
//! around, the stream broke, or another transfer needs its connection), in which
//! case the spool is uploaded later and the partial temporary file is deleted.

use crate::remote::{Remote, RemoteResult, UploadStream};
use crate::stats::{UploadProgress, STATS};

pub struct Streaming {
    upload: Box<dyn UploadStream>,
    /// Shown by `ftpfs status` while the stream is open.
    progress: UploadProgress,
    /// Where the stream writes: a temporary name, or the file's own name when
    /// the file is new.
    pub temp: String,
    /// The next offset the stream expects.
    pub next: u64,
}

impl Streaming {
    /// Starts a STOR of `temp` for the file at `path`.
    pub fn start(remote: &dyn Remote, path: &str, temp: String) -> RemoteResult<Streaming> {
        let upload = remote.open_upload(&temp)?;
        Ok(Streaming {
            upload,
            progress: STATS.upload(path, None),
            temp,
            next: 0,
        })
    }

    /// Sends `data`, which must start at `next`; false when the stream broke.
    pub fn feed(&mut self, data: &[u8]) -> bool {
        match self.upload.write_all(data) {
            Ok(()) => {
                self.next += data.len() as u64;
                self.progress.add(data.len() as u64);
                true
            }
            Err(e) => {
                log::debug!("streaming upload to {} failed: {e}", self.temp);
                false
            }
        }
    }

    /// Completes the transfer: the server's verdict on it.
    pub fn finish(self) -> RemoteResult<()> {
        self.upload.finish()
    }

    /// Aborts the transfer and returns the temporary name it leaves behind.
    pub fn abandon(self) -> String {
        drop(self.upload);
        log::debug!("abandoned streaming upload to {}", self.temp);
        self.temp
    }
}
