//! [`RawFtp`]: a minimal FTP control connection (no data connections), for
//! harness checks and server-side asserts.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A minimal FTP control-connection client (no data connections).
pub struct RawFtp {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl RawFtp {
    /// Connect and read the greeting; returns the client and the greeting.
    pub fn connect(port: u16, timeout: Duration) -> io::Result<(RawFtp, u32, String)> {
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let writer = stream.try_clone()?;
        let mut ftp = RawFtp {
            reader: BufReader::new(stream),
            writer,
        };
        let (code, text) = ftp.read_reply()?;
        Ok((ftp, code, text))
    }

    /// Read one (possibly multi-line) reply: `(code, full text)`.
    pub fn read_reply(&mut self) -> io::Result<(u32, String)> {
        let mut text = String::new();
        let mut first = String::new();
        if self.reader.read_line(&mut first)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        text.push_str(&first);
        let code: u32 = first
            .get(..3)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, first.clone()))?;
        if first.as_bytes().get(3) == Some(&b'-') {
            let end = format!("{code} ");
            loop {
                let mut line = String::new();
                if self.reader.read_line(&mut line)? == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed in multi-line reply",
                    ));
                }
                text.push_str(&line);
                if line.starts_with(&end) {
                    break;
                }
            }
        }
        Ok((code, text))
    }

    /// Send a command line and read its reply.
    pub fn cmd(&mut self, line: &str) -> io::Result<(u32, String)> {
        self.writer.write_all(format!("{line}\r\n").as_bytes())?;
        self.writer.flush()?;
        self.read_reply()
    }

    /// `USER` + `PASS`; Ok if the server answered 230.
    pub fn login(&mut self, user: &str, password: &str) -> io::Result<()> {
        let (code, text) = self.cmd(&format!("USER {user}"))?;
        let (code, text) = if code == 331 {
            self.cmd(&format!("PASS {password}"))?
        } else {
            (code, text)
        };
        if code == 230 {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("login failed: {text}"),
            ))
        }
    }
}
