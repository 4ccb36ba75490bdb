//! The host side of a TCP flow: a kernel TCP socket (a connection the shard dialled, or a
//! host client's connection handed over for a port forward) or a unix stream (one end of
//! a pair whose other end a gateway service serves, or a host client of a unix forward).
//! Both are driven the same way: non-blocking reads, vectored writes, `shutdown`, close.

use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::net::Shutdown;
use std::os::fd::OwnedFd;
use std::time::Duration;

use mio::event::Source;
use mio::net::{TcpStream, UnixStream};
use mio::{Interest, Registry, Token};
use socket2::{Domain, SockRef, Type};

/// Closes a socket handed over for a connection that cannot be made: a TCP peer sees a
/// reset (as when the guest refused), a unix peer EOF.
pub(super) fn refuse(fd: OwnedFd) {
    let _ = SockRef::from(&fd).set_linger(Some(Duration::ZERO));
}

pub(super) enum HostStream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl HostStream {
    /// A connected stream socket handed over by another thread (TCP or unix; anything else
    /// is refused). Made non-blocking; TCP gets TCP_NODELAY (we forward what we get).
    pub fn from_fd(fd: OwnedFd) -> io::Result<HostStream> {
        let (domain, ty) = {
            let s = SockRef::from(&fd);
            (s.domain()?, s.r#type()?)
        };
        if ty != Type::STREAM {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a stream socket",
            ));
        }
        if domain == Domain::UNIX {
            let s = std::os::unix::net::UnixStream::from(fd);
            s.set_nonblocking(true)?;
            Ok(HostStream::Unix(UnixStream::from_std(s)))
        } else if domain == Domain::IPV4 || domain == Domain::IPV6 {
            let s = std::net::TcpStream::from(fd);
            s.set_nonblocking(true)?;
            let _ = s.set_nodelay(true);
            Ok(HostStream::Tcp(TcpStream::from_std(s)))
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "neither a TCP nor a unix socket",
            ))
        }
    }

    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            HostStream::Tcp(s) => s.shutdown(how),
            HostStream::Unix(s) => s.shutdown(how),
        }
    }

    /// The next close resets the connection (TCP: SO_LINGER 0, the peer sees a RST). A
    /// unix stream has no reset: its peer sees EOF.
    pub fn set_abortive(&self) {
        if let HostStream::Tcp(s) = self {
            let _ = SockRef::from(s).set_linger(Some(Duration::ZERO));
        }
    }
}

impl Read for HostStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            HostStream::Tcp(s) => s.read(buf),
            HostStream::Unix(s) => s.read(buf),
        }
    }

    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        match self {
            HostStream::Tcp(s) => s.read_vectored(bufs),
            HostStream::Unix(s) => s.read_vectored(bufs),
        }
    }
}

impl Write for HostStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            HostStream::Tcp(s) => s.write(buf),
            HostStream::Unix(s) => s.write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            HostStream::Tcp(s) => s.write_vectored(bufs),
            HostStream::Unix(s) => s.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Source for HostStream {
    fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            HostStream::Tcp(s) => s.register(r, t, i),
            HostStream::Unix(s) => s.register(r, t, i),
        }
    }

    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            HostStream::Tcp(s) => s.reregister(r, t, i),
            HostStream::Unix(s) => s.reregister(r, t, i),
        }
    }

    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        match self {
            HostStream::Tcp(s) => s.deregister(r),
            HostStream::Unix(s) => s.deregister(r),
        }
    }
}
