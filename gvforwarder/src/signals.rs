//! Signals as readable events: SIGINT, SIGTERM, SIGHUP, SIGUSR1 and SIGCHLD are blocked and read
//! from a signalfd that the event loop polls. (std's `Command` clears the signal mask in children, so the
//! stdio peer still gets the default dispositions.)

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

/// What a signal asks of us.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// SIGUSR1: log the counters.
    Report,
    /// SIGINT, SIGTERM, SIGHUP: log the counters and exit.
    Exit(Signal),
    /// SIGCHLD: a child (the DHCP client, a stdio peer) changed state.
    Child,
}

pub struct Signals {
    fd: SignalFd,
}

impl Signals {
    /// Blocks the handled signals in this (the only) thread and opens the signalfd.
    /// Call before starting any thread or child.
    pub fn install() -> io::Result<Signals> {
        let mut mask = SigSet::empty();
        for s in [
            Signal::SIGINT,
            Signal::SIGTERM,
            Signal::SIGHUP,
            Signal::SIGUSR1,
            Signal::SIGCHLD,
        ] {
            mask.add(s);
        }
        mask.thread_block()?;
        let fd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
        Ok(Signals { fd })
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The next pending request, if any (non-blocking).
    pub fn next(&self) -> io::Result<Option<Request>> {
        loop {
            let Some(info) = self.fd.read_signal()? else {
                return Ok(None);
            };
            let Ok(signo) = i32::try_from(info.ssi_signo) else {
                continue;
            };
            match Signal::try_from(signo) {
                Ok(Signal::SIGUSR1) => return Ok(Some(Request::Report)),
                Ok(Signal::SIGCHLD) => return Ok(Some(Request::Child)),
                Ok(s) => return Ok(Some(Request::Exit(s))),
                Err(_) => continue,
            }
        }
    }

    /// Sleeps for `pause`, waking early for signals; `on_request` handles each one and says
    /// whether to stop. Returns the exit request that cut the pause short, if any.
    pub fn pause(
        &self,
        pause: Duration,
        on_request: &mut dyn FnMut(Request),
    ) -> io::Result<Option<Signal>> {
        let deadline = Instant::now() + pause;
        loop {
            while let Some(req) = self.next()? {
                on_request(req);
                if let Request::Exit(s) = req {
                    return Ok(Some(s));
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
            let fd: BorrowedFd<'_> = self.fd.as_fd();
            match poll(&mut [PollFd::new(fd, PollFlags::POLLIN)], timeout) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}
