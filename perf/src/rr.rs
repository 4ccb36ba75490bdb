//! Our own request/response client and server (hidden subcommands
//! `__client` and `__server` of the perf binary): the client runs inside
//! the guest namespace (`ip netns exec NS perf __client ...`), the server on
//! the host side.
//!
//! - `crr`: per transaction a new connection, one `REQ_BYTES` request, one
//!   `REQ_BYTES` reply, and the server closes (so that TIME_WAIT stays on
//!   the host side and the guest never runs out of ports). g2h: the guest
//!   sends the request; h2g: the host side does, as soon as it accepts.
//! - `rr`: one connection, `TCP_NODELAY`, 1-byte round trips for the
//!   duration. The side that starts each round trip measures it: the guest
//!   (g2h) or the host side (h2g), which prints its numbers when the guest
//!   closes.
//!
//! Both print one JSON line (`RrReport`).

use crate::model::Direction;
use crate::stats;
use serde::{Deserialize, Serialize};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// Size of a crr request and of its reply.
pub const REQ_BYTES: usize = 32;
/// Per-operation timeout: a stuck engine fails a transaction, not the run.
const IO_TIMEOUT: Duration = Duration::from_secs(3);
/// Give up after this many failures in a row.
const MAX_CONSECUTIVE_FAILURES: u32 = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Crr,
    Rr,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Crr => "crr",
            Mode::Rr => "rr",
        }
    }

    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "crr" => Some(Mode::Crr),
            "rr" => Some(Mode::Rr),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RrReport {
    pub transactions: u64,
    pub failures: u64,
    pub elapsed_s: f64,
    pub rate_per_s: f64,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    pub mean_us: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

impl RrReport {
    fn from_samples(
        mut samples_us: Vec<f64>,
        failures: u64,
        elapsed: Duration,
        first_error: Option<String>,
    ) -> RrReport {
        let transactions = samples_us.len() as u64;
        let elapsed_s = elapsed.as_secs_f64();
        let summary = stats::summarize(&mut samples_us);
        RrReport {
            transactions,
            failures,
            elapsed_s,
            rate_per_s: if elapsed_s > 0.0 {
                transactions as f64 / elapsed_s
            } else {
                0.0
            },
            p50_us: summary.map(|s| s.0),
            p99_us: summary.map(|s| s.1),
            mean_us: summary.map(|s| s.2),
            first_error,
        }
    }
}

fn print_report(r: &RrReport) -> Result<(), String> {
    let line = serde_json::to_string(r).map_err(|e| e.to_string())?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").map_err(|e| e.to_string())?;
    out.flush().map_err(|e| e.to_string())
}

fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(s)
}

/// Reads until the peer closes; fails if it sends anything more.
fn expect_eof(s: &mut TcpStream) -> std::io::Result<()> {
    let mut b = [0u8; 16];
    match s.read(&mut b)? {
        0 => Ok(()),
        n => Err(std::io::Error::new(
            ErrorKind::InvalidData,
            format!("{n} unexpected bytes"),
        )),
    }
}

fn one_crr(addr: SocketAddr, dir: Direction) -> std::io::Result<()> {
    let mut s = connect(addr)?;
    let mut buf = [0u8; REQ_BYTES];
    match dir {
        Direction::GuestToHost => {
            s.write_all(&[b'q'; REQ_BYTES])?;
            s.read_exact(&mut buf)?;
        }
        Direction::HostToGuest => {
            s.read_exact(&mut buf)?;
            s.write_all(&[b'r'; REQ_BYTES])?;
        }
    }
    expect_eof(&mut s)
}

/// The guest side: runs for `duration` and prints an `RrReport`.
pub fn client(
    mode: Mode,
    dir: Direction,
    addr: SocketAddr,
    duration: Duration,
) -> Result<(), String> {
    let report = match mode {
        Mode::Crr => crr_client(addr, dir, duration),
        Mode::Rr => rr_client(addr, dir, duration)?,
    };
    print_report(&report)
}

fn crr_client(addr: SocketAddr, dir: Direction, duration: Duration) -> RrReport {
    let start = Instant::now();
    let mut samples = Vec::new();
    let mut failures = 0u64;
    let mut in_a_row = 0u32;
    let mut first_error = None;
    while start.elapsed() < duration {
        let t0 = Instant::now();
        match one_crr(addr, dir) {
            Ok(()) => {
                samples.push(t0.elapsed().as_secs_f64() * 1e6);
                in_a_row = 0;
            }
            Err(e) => {
                failures += 1;
                in_a_row += 1;
                first_error.get_or_insert_with(|| format!("connection {}: {e}", samples.len() + 1));
                if in_a_row >= MAX_CONSECUTIVE_FAILURES {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
    RrReport::from_samples(samples, failures, start.elapsed(), first_error)
}

fn rr_client(addr: SocketAddr, dir: Direction, duration: Duration) -> Result<RrReport, String> {
    let mut s = connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    let start = Instant::now();
    let mut samples = Vec::new();
    let mut byte = [0u8; 1];
    let mut first_error = None;
    match dir {
        Direction::GuestToHost => {
            while start.elapsed() < duration {
                let t0 = Instant::now();
                if let Err(e) = s.write_all(b"x").and_then(|()| s.read_exact(&mut byte)) {
                    first_error = Some(format!("round trip {}: {e}", samples.len() + 1));
                    break;
                }
                samples.push(t0.elapsed().as_secs_f64() * 1e6);
            }
        }
        Direction::HostToGuest => {
            // Echo what the host side starts; it measures.
            while start.elapsed() < duration {
                if let Err(e) = s.read_exact(&mut byte).and_then(|()| s.write_all(&byte)) {
                    first_error = Some(format!("round trip {}: {e}", samples.len() + 1));
                    break;
                }
                samples.push(0.0);
            }
        }
    }
    let elapsed = start.elapsed();
    let _ = s.shutdown(Shutdown::Both);
    let failures = u64::from(first_error.is_some());
    let mut r = RrReport::from_samples(samples, failures, elapsed, first_error);
    if dir == Direction::HostToGuest {
        // The host side's report holds the times.
        r.p50_us = None;
        r.p99_us = None;
        r.mean_us = None;
    }
    Ok(r)
}

/// The host side: binds `bind:0`, prints `listening PORT`, then serves
/// connections one after the other until killed.
pub fn server(mode: Mode, dir: Direction, bind: std::net::IpAddr) -> Result<(), String> {
    let listener =
        TcpListener::bind(SocketAddr::new(bind, 0)).map_err(|e| format!("bind {bind}: {e}"))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening {port}").map_err(|e| e.to_string())?;
        out.flush().map_err(|e| e.to_string())?;
    }
    for conn in listener.incoming() {
        let Ok(mut s) = conn else { continue };
        if s.set_nodelay(true).is_err() || s.set_read_timeout(Some(IO_TIMEOUT)).is_err() {
            continue;
        }
        let _ = s.set_write_timeout(Some(IO_TIMEOUT));
        match mode {
            Mode::Crr => {
                let _ = serve_crr(&mut s, dir);
            }
            Mode::Rr => serve_rr(&mut s, dir)?,
        }
    }
    Ok(())
}

fn serve_crr(s: &mut TcpStream, dir: Direction) -> std::io::Result<()> {
    let mut buf = [0u8; REQ_BYTES];
    match dir {
        Direction::GuestToHost => {
            s.read_exact(&mut buf)?;
            s.write_all(&[b'r'; REQ_BYTES])?;
        }
        Direction::HostToGuest => {
            s.write_all(&[b'q'; REQ_BYTES])?;
            s.read_exact(&mut buf)?;
        }
    }
    // Closing first keeps TIME_WAIT on this side.
    Ok(())
}

fn serve_rr(s: &mut TcpStream, dir: Direction) -> Result<(), String> {
    let mut byte = [0u8; 1];
    match dir {
        Direction::GuestToHost => {
            // The guest may pause for a while between runs: no read timeout.
            let _ = s.set_read_timeout(None);
            while s
                .read_exact(&mut byte)
                .and_then(|()| s.write_all(&byte))
                .is_ok()
            {}
            Ok(())
        }
        Direction::HostToGuest => {
            let start = Instant::now();
            let mut samples = Vec::new();
            loop {
                let t0 = Instant::now();
                if s.write_all(b"x")
                    .and_then(|()| s.read_exact(&mut byte))
                    .is_err()
                {
                    break;
                }
                samples.push(t0.elapsed().as_secs_f64() * 1e6);
            }
            print_report(&RrReport::from_samples(samples, 0, start.elapsed(), None))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local_server(mode: Mode, dir: Direction) -> (SocketAddr, std::thread::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let h = std::thread::spawn(move || {
            // Serve exactly what one test needs, as `server` would.
            for conn in listener.incoming() {
                let mut s = conn.unwrap();
                s.set_nodelay(true).unwrap();
                match mode {
                    Mode::Crr => {
                        if serve_crr(&mut s, dir).is_err() {
                            break;
                        }
                    }
                    Mode::Rr => {
                        let mut byte = [0u8; 1];
                        while s
                            .read_exact(&mut byte)
                            .and_then(|()| s.write_all(&byte))
                            .is_ok()
                        {}
                        break;
                    }
                }
            }
        });
        (addr, h)
    }

    #[test]
    fn crr_both_directions_on_loopback() {
        for dir in [Direction::GuestToHost, Direction::HostToGuest] {
            let (addr, _h) = local_server(Mode::Crr, dir);
            let r = crr_client(addr, dir, Duration::from_millis(200));
            assert!(r.transactions > 10, "{dir}: {r:?}");
            assert_eq!(r.failures, 0, "{r:?}");
            assert!(r.p50_us.unwrap() <= r.p99_us.unwrap());
        }
    }

    #[test]
    fn rr_guest_to_host_on_loopback() {
        let (addr, _h) = local_server(Mode::Rr, Direction::GuestToHost);
        let r = rr_client(addr, Direction::GuestToHost, Duration::from_millis(200)).unwrap();
        assert!(r.transactions > 100, "{r:?}");
        assert!(r.p50_us.unwrap() > 0.0);
    }

    #[test]
    fn crr_counts_refused_connections() {
        // A port nobody listens on: every connection is refused.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let r = crr_client(addr, Direction::GuestToHost, Duration::from_secs(5));
        assert_eq!(r.transactions, 0);
        assert_eq!(r.failures, u64::from(MAX_CONSECUTIVE_FAILURES));
        assert!(r.first_error.unwrap().contains("connection 1"));
    }

    #[test]
    fn report_json_round_trips() {
        let r = RrReport::from_samples(vec![1.0, 2.0, 3.0], 1, Duration::from_secs(1), None);
        let back: RrReport = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.rate_per_s, 3.0);
    }
}
