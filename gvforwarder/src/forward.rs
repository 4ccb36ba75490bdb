//! The data path: one mio loop moving frames between the TAP and the link to gvproxy.
//!
//! ```text
//!   kernel ==TAP fd (one read = one frame)==> tap Link --queue_frame--> host Link ==> gvproxy
//!   kernel <=================================  tap Link <--queue_frame-- host Link <== gvproxy
//! ```
//!
//! Each turn reads a source up to a budget, queues the frames on the other side and flushes it.
//! WRITABLE interest is registered only while a flush leaves frames queued, and while a sink has
//! frames queued its source is not read (backpressure: the kernel's buffers hold the rest, memory
//! stays bounded). Readiness is edge-triggered, so a source cut off by the budget or by
//! backpressure stays marked "ready" and is read again without waiting for a new event.

use std::fmt;
use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use log::trace;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token};
use nix::sys::signal::Signal;
use transports::{Link, LinkCounters, LinkError, ReadStatus};

use crate::signals::{Request, Signals};

const TAP: Token = Token(0);
const HOST_READ: Token = Token(1);
const HOST_WRITE: Token = Token(2);
const SIGNALS: Token = Token(3);

/// Frames read from one source before the other side gets a turn.
pub const READ_BUDGET: usize = 64;

/// The bound on a link's queue of outgoing bytes. A source is read only while its sink's queue
/// is empty, so the queue must hold one whole read batch of the largest frames (room for
/// slot rounding and a length prefix included): then nothing is dropped for lack of room, and
/// the bound is still a small constant.
pub fn tx_limit_bytes(max_frame_bytes: usize) -> usize {
    2 * READ_BUDGET * (max_frame_bytes + 64 + 4)
}

/// Why a session ended.
#[derive(Debug)]
pub enum End {
    /// A termination signal: stop for good.
    Exit(Signal),
    /// The link to gvproxy failed (EOF, error, over-long frame): redial, keep the TAP.
    Host(String),
    /// The TAP failed: reopen it (and redial).
    Tap(String),
}

/// Counters of one run of the program, across redials.
#[derive(Default, Clone, Copy, Debug)]
pub struct Totals {
    /// Counters of host links that are gone.
    pub closed_host: LinkCounters,
    /// Counters of TAP links that are gone.
    pub closed_tap: LinkCounters,
    /// Frames from gvproxy larger than `-mtu` + 14: dropped.
    pub to_guest_oversize: u64,
    pub redials: u64,
}

/// A snapshot of all counters, printed on SIGUSR1 and at exit as one line.
pub struct Report {
    pub host: LinkCounters,
    pub tap: LinkCounters,
    pub to_guest_oversize: u64,
    pub redials: u64,
}

impl Totals {
    pub fn report(&self, tap: Option<&Link>, host: Option<&Link>) -> Report {
        let mut h = self.closed_host;
        let mut t = self.closed_tap;
        if let Some(l) = host {
            add(&mut h, &l.counters());
        }
        if let Some(l) = tap {
            add(&mut t, &l.counters());
        }
        Report {
            host: h,
            tap: t,
            to_guest_oversize: self.to_guest_oversize,
            redials: self.redials,
        }
    }
}

pub fn add(sum: &mut LinkCounters, c: &LinkCounters) {
    sum.rx_frames += c.rx_frames;
    sum.rx_bytes += c.rx_bytes;
    sum.tx_frames += c.tx_frames;
    sum.tx_bytes += c.tx_bytes;
    sum.rx_runts += c.rx_runts;
    sum.tx_dropped += c.tx_dropped;
    sum.tx_oversize += c.tx_oversize;
    sum.rx_oversize += c.rx_oversize;
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (h, t) = (&self.host, &self.tap);
        write!(
            f,
            "counters: to_host frames={} bytes={} dropped_queue_full={} dropped_too_big={} \
             dropped_runt={}; to_guest frames={} bytes={} dropped_over_mtu={} \
             dropped_queue_full={} dropped_too_big={} dropped_runt={}; redials={}",
            h.tx_frames,
            h.tx_bytes,
            h.tx_dropped,
            h.tx_oversize + t.rx_oversize,
            t.rx_runts,
            t.tx_frames,
            t.tx_bytes,
            self.to_guest_oversize + h.rx_oversize,
            t.tx_dropped,
            t.tx_oversize,
            h.rx_runts,
            self.redials,
        )
    }
}

/// Registration of one fd with the interest it should have now; `None` = not registered.
struct Reg {
    fd: RawFd,
    token: Token,
    current: Option<Interest>,
}

impl Reg {
    fn new(fd: RawFd, token: Token) -> Reg {
        Reg {
            fd,
            token,
            current: None,
        }
    }

    fn set(&mut self, registry: &Registry, readable: bool, writable: bool) -> io::Result<()> {
        let want = match (readable, writable) {
            (true, true) => Some(Interest::READABLE | Interest::WRITABLE),
            (true, false) => Some(Interest::READABLE),
            (false, true) => Some(Interest::WRITABLE),
            (false, false) => None,
        };
        if want == self.current {
            return Ok(());
        }
        let mut source = SourceFd(&self.fd);
        match (self.current, want) {
            (None, Some(i)) => registry.register(&mut source, self.token, i)?,
            (Some(_), Some(i)) => registry.reregister(&mut source, self.token, i)?,
            (Some(_), None) => registry.deregister(&mut source)?,
            (None, None) => {}
        }
        self.current = want;
        Ok(())
    }
}

/// Moves frames until one side fails, an exit signal arrives, or `on_child` (called on
/// SIGCHLD) returns how the session ends.
///
/// `max_frame_bytes`: frames from gvproxy longer than this (`-mtu` plus the Ethernet header
/// and a VLAN tag) are dropped and counted, as the TAP side's buffers are sized for that.
pub fn run(
    tap: &mut Link,
    host: &mut Link,
    signals: &Signals,
    totals: &mut Totals,
    max_frame_bytes: usize,
    on_child: &mut dyn FnMut() -> Option<End>,
) -> End {
    match run_inner(tap, host, signals, totals, max_frame_bytes, on_child) {
        Ok(end) => end,
        // Errors of the poller itself: treat like a failed link and start over.
        Err(e) => End::Host(format!("event loop: {e}")),
    }
}

fn run_inner(
    tap: &mut Link,
    host: &mut Link,
    signals: &Signals,
    totals: &mut Totals,
    max_frame_bytes: usize,
    on_child: &mut dyn FnMut() -> Option<End>,
) -> io::Result<End> {
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(64);
    let registry = poll.registry().try_clone()?;
    let split = host.read_fd() != host.write_fd();

    let mut tap_reg = Reg::new(tap.read_fd(), TAP);
    let mut host_read_reg = Reg::new(host.read_fd(), HOST_READ);
    let mut host_write_reg = Reg::new(host.write_fd(), HOST_WRITE);
    let signal_fd = signals.raw_fd();
    registry.register(&mut SourceFd(&signal_fd), SIGNALS, Interest::READABLE)?;

    // Edge-triggered: start by assuming both sides may hold data.
    let mut tap_ready = true;
    let mut host_ready = true;
    let mut tap_writable = true;
    let mut host_writable = true;

    let end = loop {
        // Flush what a previous turn left queued, if the sink said it has room again.
        if tap_writable && tap.has_pending() {
            match tap.flush() {
                Ok(done) => tap_writable = done,
                Err(e) => break End::Tap(format!("cannot write to tap: {}", describe(&e))),
            }
        }
        if host_writable && host.has_pending() {
            match host.flush() {
                Ok(done) => host_writable = done,
                Err(e) => break End::Host(format!("cannot write to host: {}", describe(&e))),
            }
        }

        // Guest -> host.
        if tap_ready && !host.has_pending() {
            let status = tap.read_frames(READ_BUDGET, &mut |frame| {
                trace!("guest -> host: {}", summary(frame));
                // A frame the host link cannot take is counted by the link (tx_dropped,
                // tx_oversize).
                let _ = host.queue_frame(frame);
            });
            match status {
                Ok(ReadStatus::WouldBlock) => tap_ready = false,
                Ok(ReadStatus::Budget) => {}
                Ok(ReadStatus::Closed) => break End::Tap("tap device closed".into()),
                Err(e) => break End::Tap(format!("cannot read from tap: {}", describe(&e))),
            }
            match host.flush() {
                Ok(done) => host_writable = done,
                Err(e) => break End::Host(format!("cannot write to host: {}", describe(&e))),
            }
        }

        // Host -> guest.
        if host_ready && !tap.has_pending() {
            let oversize = &mut totals.to_guest_oversize;
            let status = host.read_frames(READ_BUDGET, &mut |frame| {
                trace!("host -> guest: {}", summary(frame));
                if frame.len() > max_frame_bytes {
                    *oversize += 1;
                    return;
                }
                let _ = tap.queue_frame(frame);
            });
            match status {
                Ok(ReadStatus::WouldBlock) => host_ready = false,
                Ok(ReadStatus::Budget) => {}
                Ok(ReadStatus::Closed) => break End::Host("connection closed by the host".into()),
                Err(e) => break End::Host(format!("cannot read from host: {}", describe(&e))),
            }
            match tap.flush() {
                Ok(done) => tap_writable = done,
                Err(e) => break End::Tap(format!("cannot write to tap: {}", describe(&e))),
            }
        }

        // Interest: always READABLE on both sources (cheap with edge triggering); WRITABLE only
        // while something is queued.
        tap_reg.set(&registry, true, tap.has_pending())?;
        if split {
            host_read_reg.set(&registry, true, false)?;
            host_write_reg.set(&registry, false, host.has_pending())?;
        } else {
            host_read_reg.set(&registry, true, host.has_pending())?;
        }

        let backlog = (tap_ready && !host.has_pending()) || (host_ready && !tap.has_pending());
        let timeout = if backlog { Some(Duration::ZERO) } else { None };
        match poll.poll(&mut events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        let mut end = None;
        for event in events.iter() {
            // A hang-up or error is reported as readable/writable so the next read or flush
            // sees it and ends the session with the real error.
            let readable = event.is_readable() || event.is_read_closed() || event.is_error();
            let writable = event.is_writable() || event.is_write_closed() || event.is_error();
            match event.token() {
                TAP => {
                    tap_ready |= readable;
                    tap_writable |= writable;
                }
                HOST_READ => {
                    host_ready |= readable;
                    if !split {
                        host_writable |= writable;
                    }
                }
                HOST_WRITE => host_writable |= writable,
                SIGNALS => {
                    while let Some(req) = signals.next()? {
                        match req {
                            Request::Report => {
                                log::info!("{}", totals.report(Some(tap), Some(host)));
                            }
                            Request::Exit(s) => end = Some(End::Exit(s)),
                            Request::Child => {
                                if end.is_none() {
                                    end = on_child();
                                }
                            }
                        }
                    }
                }
                // Stale or unknown token: nothing to do.
                _ => {}
            }
        }
        if let Some(end) = end {
            break end;
        }
    };
    // The Poll is dropped with this function; the fds stay open for the caller.
    Ok(end)
}

fn describe(e: &LinkError) -> String {
    match e {
        LinkError::Io(e) => e.to_string(),
        LinkError::TooLong(n) => format!("frame of {n} bytes is too long"),
    }
}

/// One short line about a frame, for trace logs only.
fn summary(frame: &[u8]) -> String {
    match (frame.get(0..6), frame.get(6..12), frame.get(12..14)) {
        (Some(dst), Some(src), Some(ty)) => format!(
            "{} > {} type 0x{:02x}{:02x} len {}",
            mac(src),
            mac(dst),
            ty[0],
            ty[1],
            frame.len()
        ),
        _ => format!("runt of {} bytes", frame.len()),
    }
}

fn mac(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::{AsRawFd, OwnedFd};
    use std::os::unix::net::UnixStream;
    use std::thread;

    use nix::sys::socket::{recv, send, socketpair, AddressFamily, MsgFlags, SockFlag, SockType};
    use transports::{Framing, LinkIo};

    const FRAMES: usize = 3000;
    const MTU: usize = 1500;

    fn frame(i: usize, len: usize) -> Vec<u8> {
        let mut f = vec![0u8; len];
        f[..6].copy_from_slice(&[0x5a, 0x94, 0xef, 0, 0, 1]);
        f[6..12].copy_from_slice(&[0x5a, 0x94, 0xef, 0, 0, 2]);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14..22].copy_from_slice(&(i as u64).to_be_bytes());
        f
    }

    fn pair(ty: SockType) -> (OwnedFd, OwnedFd) {
        socketpair(AddressFamily::Unix, ty, None, SockFlag::SOCK_CLOEXEC).unwrap()
    }

    /// A seqpacket socketpair stands in for the TAP (one message = one frame) and a stream
    /// socketpair for gvproxy's /connect stream; thousands of frames go both ways through
    /// `run`, in order, while the peers read slowly enough to exercise backpressure.
    #[test]
    fn frames_cross_both_ways_in_order() {
        let signals = Signals::install().unwrap();
        let (tap_far, tap_near) = pair(SockType::SeqPacket);
        let (host_far, host_near) = pair(SockType::Stream);
        let limit = tx_limit_bytes(MTU + 18);
        let mut tap = Link::new(LinkIo::Packet(tap_near), Framing::Message, MTU, limit);
        let mut host = Link::new(
            LinkIo::Stream {
                read: host_near,
                write: None,
            },
            Framing::LenU16Le,
            MTU,
            limit,
        );
        let tap_far = std::sync::Arc::new(tap_far);
        let host_far = UnixStream::from(host_far);
        // A lost frame fails the test after a while instead of blocking a reader forever.
        let limit_wait = Some(std::time::Duration::from_secs(30));
        host_far.set_read_timeout(limit_wait).unwrap();
        nix::sys::socket::setsockopt(
            &*tap_far,
            nix::sys::socket::sockopt::ReceiveTimeout,
            &nix::sys::time::TimeVal::new(30, 0),
        )
        .unwrap();

        let t = tap_far.clone();
        let guest_writer = thread::spawn(move || {
            for i in 0..FRAMES {
                let f = frame(i, 60 + i % 1400);
                send(t.as_raw_fd(), &f, MsgFlags::empty()).unwrap();
            }
        });
        let mut hr = host_far.try_clone().unwrap();
        let host_reader = thread::spawn(move || {
            for i in 0..FRAMES {
                let mut len = [0u8; 2];
                hr.read_exact(&mut len).unwrap();
                let mut f = vec![0u8; usize::from(u16::from_le_bytes(len))];
                hr.read_exact(&mut f).unwrap();
                assert_eq!(f, frame(i, 60 + i % 1400));
            }
        });
        let mut hw = host_far.try_clone().unwrap();
        let host_writer = thread::spawn(move || {
            for i in 0..FRAMES {
                // Every 100th frame is over the MTU: dropped and counted, never delivered.
                let len = if i % 100 == 99 {
                    MTU + 100
                } else {
                    60 + i % 1400
                };
                let f = frame(i, len);
                let mut buf = u16::try_from(f.len()).unwrap().to_le_bytes().to_vec();
                buf.extend_from_slice(&f);
                hw.write_all(&buf).unwrap();
            }
        });
        let t = tap_far.clone();
        let guest_reader = thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            for i in (0..FRAMES).filter(|i| i % 100 != 99) {
                let n = recv(t.as_raw_fd(), &mut buf, MsgFlags::empty()).unwrap();
                assert_eq!(&buf[..n], &frame(i, 60 + i % 1400)[..]);
            }
        });
        let closer = thread::spawn(move || {
            let results = [
                guest_writer.join(),
                host_reader.join(),
                host_writer.join(),
                guest_reader.join(),
            ];
            // EOF from "gvproxy" ends the session, also when a peer thread failed, so a
            // failure shows as a failed test rather than a hang.
            host_far.shutdown(std::net::Shutdown::Both).unwrap();
            for r in results {
                r.unwrap();
            }
        });

        let mut totals = Totals::default();
        let end = run(
            &mut tap,
            &mut host,
            &signals,
            &mut totals,
            MTU + 18,
            &mut || None,
        );
        closer.join().unwrap();
        assert!(
            matches!(end, End::Host(ref m) if m.contains("closed")),
            "{end:?}"
        );
        let report = totals.report(Some(&tap), Some(&host));
        assert_eq!(report.host.tx_frames, FRAMES as u64);
        assert_eq!(report.tap.tx_frames, (FRAMES - FRAMES / 100) as u64);
        assert_eq!(report.to_guest_oversize, (FRAMES / 100) as u64);
        assert_eq!(report.host.tx_dropped + report.tap.tx_dropped, 0);
        assert!(report
            .to_string()
            .starts_with("counters: to_host frames=3000 "));
    }
}
