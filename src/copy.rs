//! The one copy loop of the crate: a reader into a sink in 256 KiB chunks, with
//! read and write errors kept apart (a download's fault, or the disk's).

use std::io::{self, Read};

/// Which side of a copy failed.
pub enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

/// Copies everything `src` yields into `sink`, chunk by chunk; returns the length.
pub fn copy_chunks(
    src: &mut dyn Read,
    mut sink: impl FnMut(&[u8]) -> io::Result<()>,
) -> Result<u64, CopyError> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0;
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        sink(&buf[..n]).map_err(CopyError::Write)?;
        total += n as u64;
    }
}
