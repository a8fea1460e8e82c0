//! Test data: deterministic pseudo-random contents ([`gen_bytes`],
//! [`write_file`]) and streaming comparison of two files ([`files_equal`]).

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Write};
use std::path::Path;

/// Deterministic pseudo-random bytes (xorshift64*), identical for equal
/// `(len, seed)`.
pub fn gen_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut rng = XorShift::new(seed);
    while out.len() < len {
        let v = rng.next().to_le_bytes();
        let n = (len - out.len()).min(8);
        out.extend_from_slice(&v[..n]);
    }
    out
}

/// Write `len` deterministic pseudo-random bytes (see [`gen_bytes`]) to
/// `path`, creating parent directories. Panics on I/O errors.
pub fn write_file(path: impl AsRef<Path>, len: usize, seed: u64) {
    let path = path.as_ref();
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)
            .unwrap_or_else(|e| panic!("create_dir_all {}: {e}", parent.display()));
    }
    let mut f = io::BufWriter::new(
        File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display())),
    );
    let mut rng = XorShift::new(seed);
    let mut left = len;
    let mut buf = [0u8; 64 * 1024];
    while left > 0 {
        let n = left.min(buf.len());
        for chunk in buf[..n].chunks_mut(8) {
            let v = rng.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
        f.write_all(&buf[..n])
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        left -= n;
    }
    f.flush()
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        // Mix the seed so that small seeds give unrelated streams; never 0.
        let s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
        XorShift(if s == 0 { 0x2545_F491_4F6C_DD1D } else { s })
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Streaming byte-for-byte comparison of two files. Returns false (and prints
/// the reason to stderr) if they differ or either cannot be read.
pub fn files_equal(a: impl AsRef<Path>, b: impl AsRef<Path>) -> bool {
    let (a, b) = (a.as_ref(), b.as_ref());
    match first_difference(a, b) {
        Ok(None) => true,
        Ok(Some(off)) => {
            eprintln!(
                "files_equal: {} and {} differ at byte {off}",
                a.display(),
                b.display()
            );
            false
        }
        Err(e) => {
            eprintln!("files_equal: {} vs {}: {e}", a.display(), b.display());
            false
        }
    }
}

/// Offset of the first differing byte (or of the end of the shorter file),
/// `None` if the files are identical.
pub fn first_difference(a: &Path, b: &Path) -> io::Result<Option<u64>> {
    let mut fa = BufReader::with_capacity(256 * 1024, File::open(a)?);
    let mut fb = BufReader::with_capacity(256 * 1024, File::open(b)?);
    let mut off = 0u64;
    loop {
        let ba = fa.fill_buf()?;
        let bb = fb.fill_buf()?;
        if ba.is_empty() || bb.is_empty() {
            return Ok(if ba.is_empty() && bb.is_empty() {
                None
            } else {
                Some(off)
            });
        }
        let n = ba.len().min(bb.len());
        if let Some(i) = ba[..n].iter().zip(&bb[..n]).position(|(x, y)| x != y) {
            return Ok(Some(off + i as u64));
        }
        fa.consume(n);
        fb.consume(n);
        off += n as u64;
    }
}
