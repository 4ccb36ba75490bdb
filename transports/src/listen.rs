//! Listening sockets and blocking accepts, for acceptor threads.

use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use nix::sys::socket::{recv, MsgFlags};
use socket2::{Domain, SockAddr, SockRef, Socket, Type};

use crate::endpoint::Endpoint;
use crate::vsock;

const BACKLOG: i32 = 128;
/// vfkit socket buffers, as upstream.
pub(crate) const UNIXGRAM_SNDBUF: usize = 1 << 20;
pub(crate) const UNIXGRAM_RCVBUF: usize = 4 << 20;

/// A stream listener for the API and the qemu/hyperkit links.
#[derive(Debug)]
pub enum Listener {
    Unix(UnixListener, PathBuf),
    Tcp(TcpListener),
    Vsock(OwnedFd),
}

/// Errors when `path` exists (upstream refuses to reuse a socket path).
pub(crate) fn ensure_absent(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => Err(already_exists(path)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("cannot check socket path {}: {e}", path.display()),
        )),
    }
}

fn already_exists(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!(
            "socket path {} already exists (remove it if no other process uses it)",
            path.display()
        ),
    )
}

fn with_path(e: io::Error, what: &str, path: &Path) -> io::Error {
    if e.kind() == io::ErrorKind::AddrInUse {
        return already_exists(path);
    }
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

fn unix_sockaddr(path: &Path) -> io::Result<SockAddr> {
    SockAddr::unix(path).map_err(|e| with_path(e, "bad unix socket path", path))
}

impl Listener {
    /// unix: fails if the path exists ("... already exists"); created then chmod 0600 when
    /// `private` is set. tcp: SO_REUSEADDR; an empty host listens on all addresses.
    /// vsock: AF_VSOCK bind(cid or VMADDR_CID_ANY, port) + listen.
    pub fn bind(ep: &Endpoint, private: bool) -> io::Result<Listener> {
        match ep {
            Endpoint::Unix(path) => {
                ensure_absent(path)?;
                let l = UnixListener::bind(path).map_err(|e| with_path(e, "bind", path))?;
                if private {
                    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                        .map_err(|e| with_path(e, "chmod 0600", path))?;
                }
                Ok(Listener::Unix(l, path.clone()))
            }
            Endpoint::Tcp(hostport) => bind_tcp(hostport).map(Listener::Tcp),
            Endpoint::Vsock { cid, port, .. } => {
                vsock::listen(cid.unwrap_or(vsock::VMADDR_CID_ANY), *port, BACKLOG)
                    .map(Listener::Vsock)
            }
            Endpoint::Unixgram(_) | Endpoint::Unixpacket(_) | Endpoint::Stdio => {
                Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{ep} is not a stream endpoint (expected unix, tcp or vsock)"),
                ))
            }
        }
    }

    /// Blocking accept; returns the connection and a description of the peer.
    pub fn accept(&self) -> io::Result<(OwnedFd, String)> {
        match self {
            Listener::Unix(l, path) => {
                let (s, _) = retry_eintr(|| l.accept())?;
                Ok((OwnedFd::from(s), format!("unix:{}", path.display())))
            }
            Listener::Tcp(l) => {
                let (s, peer) = retry_eintr(|| l.accept())?;
                // Frames are small and latency-sensitive; never wait for Nagle.
                let _ = s.set_nodelay(true);
                Ok((OwnedFd::from(s), format!("tcp:{peer}")))
            }
            Listener::Vsock(fd) => {
                let (s, cid, port) = vsock::accept(fd)?;
                Ok((s, format!("vsock:{cid}:{port}")))
            }
        }
    }

    /// The unix socket path to remove at shutdown.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Listener::Unix(_, p) => Some(p),
            _ => None,
        }
    }

    /// The bound TCP address (useful with port 0).
    pub fn local_tcp_addr(&self) -> Option<SocketAddr> {
        match self {
            Listener::Tcp(l) => l.local_addr().ok(),
            _ => None,
        }
    }
}

fn retry_eintr<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

fn bind_tcp(hostport: &str) -> io::Result<TcpListener> {
    let bad = |e: io::Error| io::Error::new(e.kind(), format!("tcp listen {hostport}: {e}"));
    let addrs: Vec<SocketAddr> = match hostport.strip_prefix(':') {
        // Empty host: all addresses, dual-stack when IPv6 exists.
        Some(port) => {
            let port: u16 = port.parse().map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("bad port in {hostport:?}"),
                )
            })?;
            vec![
                SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port)),
                SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, port)),
            ]
        }
        None => hostport.to_socket_addrs().map_err(bad)?.collect(),
    };
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for addr in addrs {
        match bind_tcp_addr(addr) {
            Ok(l) => return Ok(l),
            Err(e) => last = e,
        }
    }
    Err(bad(last))
}

fn bind_tcp_addr(addr: SocketAddr) -> io::Result<TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        s.set_only_v6(false)?;
    }
    s.bind(&addr.into())?;
    s.listen(BACKLOG)?;
    Ok(s.into())
}

/// unixpacket (bess) listen socket; fails if the path exists.
pub fn bind_seqpacket(path: &Path) -> io::Result<OwnedFd> {
    ensure_absent(path)?;
    let addr = unix_sockaddr(path)?;
    let s = Socket::new(Domain::UNIX, Type::SEQPACKET, None)?;
    s.bind(&addr).map_err(|e| with_path(e, "bind", path))?;
    s.listen(BACKLOG)
        .map_err(|e| with_path(e, "listen", path))?;
    Ok(s.into())
}

/// Blocking accept on a seqpacket listener.
pub fn accept_seqpacket(listener: &OwnedFd) -> io::Result<OwnedFd> {
    let (s, _) = retry_eintr(|| SockRef::from(listener).accept())?;
    Ok(s.into())
}

/// vfkit datagram socket: SO_SNDBUF 1 MiB, SO_RCVBUF 4 MiB; fails if the path exists.
pub fn bind_unixgram(path: &Path) -> io::Result<OwnedFd> {
    ensure_absent(path)?;
    let addr = unix_sockaddr(path)?;
    let s = Socket::new(Domain::UNIX, Type::DGRAM, None)?;
    set_unixgram_buffers(&s);
    s.bind(&addr).map_err(|e| with_path(e, "bind", path))?;
    Ok(s.into())
}

pub(crate) fn set_unixgram_buffers(s: &Socket) {
    if let Err(e) = s.set_send_buffer_size(UNIXGRAM_SNDBUF) {
        log::warn!("unixgram SO_SNDBUF: {e}");
    }
    if let Err(e) = s.set_recv_buffer_size(UNIXGRAM_RCVBUF) {
        log::warn!("unixgram SO_RCVBUF: {e}");
    }
}

/// Blocks until the first datagram and learns its sender's path with
/// `recvfrom(MSG_PEEK|MSG_TRUNC)`. A first datagram of exactly `b"VFKT"` is consumed; anything
/// else stays queued (it is a frame, read later by `Link::read_frames`). A sender without a
/// named address is an error.
pub fn accept_vfkit(sock: &OwnedFd) -> io::Result<PathBuf> {
    let mut buf = [0u8; 4];
    let (n, from) = retry_eintr(|| {
        crate::sys::recv_from_unix(sock.as_fd(), &mut buf, libc::MSG_PEEK | libc::MSG_TRUNC)
    })?;
    let Some(path) = from else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "vfkit peer has no named unix address (it must bind a socket path)",
        ));
    };
    // With MSG_TRUNC `n` is the datagram's real length; `buf` holds its first min(n, 4) bytes.
    if n == 4 && &buf == b"VFKT" {
        retry_eintr(|| Ok(recv(sock.as_raw_fd(), &mut buf, MsgFlags::empty())?))?;
    }
    Ok(path)
}
