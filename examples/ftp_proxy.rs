//! A stand-alone FTP-aware TCP proxy that adds latency between an FTP client
//! and server (the same code the tests use: `tests/support/proxy.rs`).
//!
//! ```text
//! cargo run --release --example ftp_proxy -- --upstream 127.0.0.1:2121 \
//!     [--listen-port 0] [--delay-ms 20] [--max-in-flight-mb 8]
//! ```
//!
//! Prints `READY <port>` on stdout (flushed) once it listens on
//! 127.0.0.1:<port>, then relays until it is killed (SIGTERM/SIGINT).
//! Control and data connections (passive and active mode) get `--delay-ms`
//! of one-way latency in each direction. TLS is not supported.

#[path = "../tests/support/proxy.rs"]
mod proxy;

use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::thread;
use std::time::Duration;

use proxy::{Proxy, ProxyConfig};

const USAGE: &str = "usage: ftp_proxy --upstream HOST:PORT [--listen-port PORT] [--delay-ms MS]
                 [--max-in-flight-mb MB]

  --upstream HOST:PORT    the FTP server to relay to (required)
  --listen-port PORT      port to listen on, on 127.0.0.1 (default 0: any free port)
  --delay-ms MS           one-way delay added in each direction, on control and
                          data connections (default 0; fractions allowed)
  --max-in-flight-mb MB   with a delay, at most this much data waits per
                          direction and connection, like a TCP window: one
                          connection gets at most MB / delay (default 8)

Prints \"READY <port>\" on stdout when listening; runs until killed.";

struct Args {
    upstream: SocketAddr,
    listen_port: u16,
    delay: Duration,
    max_in_flight: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut upstream = None;
    let mut listen_port = 0u16;
    let mut delay = Duration::ZERO;
    let mut max_in_flight = proxy::DEFAULT_MAX_IN_FLIGHT;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        if name == "-h" || name == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match name.as_str() {
            "--upstream" => {
                let v = value()?;
                let addr = v
                    .to_socket_addrs()
                    .map_err(|e| format!("--upstream {v}: {e}"))?
                    .next()
                    .ok_or_else(|| format!("--upstream {v}: no address"))?;
                upstream = Some(addr);
            }
            "--listen-port" => {
                let v = value()?;
                listen_port = v
                    .parse()
                    .map_err(|_| format!("--listen-port {v}: not a port number"))?;
            }
            "--delay-ms" => {
                let v = value()?;
                let ms: f64 = v
                    .parse()
                    .ok()
                    .filter(|ms: &f64| ms.is_finite() && *ms >= 0.0)
                    .ok_or_else(|| format!("--delay-ms {v}: not a non-negative number"))?;
                delay = Duration::from_secs_f64(ms / 1000.0);
            }
            "--max-in-flight-mb" => {
                let v = value()?;
                let mb: f64 = v
                    .parse()
                    .ok()
                    .filter(|mb: &f64| mb.is_finite() && *mb > 0.0 && *mb < 1e6)
                    .ok_or_else(|| format!("--max-in-flight-mb {v}: not a positive number"))?;
                max_in_flight = (mb * 1048576.0) as usize;
            }
            _ => return Err(format!("unknown argument {arg}")),
        }
    }
    Ok(Args {
        upstream: upstream.ok_or("--upstream is required")?,
        listen_port,
        delay,
        max_in_flight,
    })
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("ftp_proxy: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    // A shell without job control starts background jobs with SIGINT
    // ignored; "runs until killed" should hold for SIGINT as well.
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: restoring the default disposition; no handler involved.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
        }
    }
    let mut cfg = ProxyConfig::new(args.upstream).with_delay(args.delay);
    cfg.listen_port = args.listen_port;
    cfg.max_in_flight = args.max_in_flight;
    let proxy = match Proxy::start(cfg) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("ftp_proxy: cannot listen: {e}");
            return ExitCode::from(1);
        }
    };
    eprintln!(
        "ftp_proxy: 127.0.0.1:{} -> {} (one-way delay {:?})",
        proxy.port, args.upstream, args.delay
    );
    let mut out = std::io::stdout().lock();
    if writeln!(out, "READY {}", proxy.port)
        .and_then(|_| out.flush())
        .is_err()
    {
        return ExitCode::from(1);
    }
    drop(out);
    // Relay until killed (SIGTERM/SIGINT end the process).
    loop {
        thread::park();
    }
}
