//! Dialling gvproxy (gvforwarder side, blocking).

use std::io;
use std::net::TcpStream;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::Path;

use socket2::{Domain, SockAddr, Socket, Type};

use crate::endpoint::Endpoint;
use crate::listen::set_unixgram_buffers;
use crate::vsock;

fn ctx(e: io::Error, what: &str, target: &dyn std::fmt::Display) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {target}: {e}"))
}

/// Connects a stream endpoint: unix, tcp (an empty host dials 127.0.0.1), vsock (CID required).
pub fn dial_stream(ep: &Endpoint) -> io::Result<OwnedFd> {
    match ep {
        Endpoint::Unix(path) => UnixStream::connect(path)
            .map(OwnedFd::from)
            .map_err(|e| ctx(e, "connect", ep)),
        Endpoint::Tcp(hostport) => {
            let target = match hostport.strip_prefix(':') {
                Some(port) => format!("127.0.0.1:{port}"),
                None => hostport.clone(),
            };
            let s = TcpStream::connect(target).map_err(|e| ctx(e, "connect", ep))?;
            let _ = s.set_nodelay(true);
            Ok(OwnedFd::from(s))
        }
        Endpoint::Vsock {
            cid: Some(cid),
            port,
            ..
        } => vsock::connect(*cid, *port),
        Endpoint::Vsock { cid: None, .. } => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cannot dial {ep}: a CID is required (e.g. vsock://2:1024/connect)"),
        )),
        Endpoint::Unixgram(_) | Endpoint::Unixpacket(_) | Endpoint::Stdio => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cannot dial {ep} as a stream (expected unix, tcp or vsock)"),
        )),
    }
}

/// bess client: connects a SOCK_SEQPACKET unix socket.
pub fn dial_seqpacket(path: &Path) -> io::Result<OwnedFd> {
    let addr = SockAddr::unix(path).map_err(|e| ctx(e, "bad socket path", &path.display()))?;
    let s = Socket::new(Domain::UNIX, Type::SEQPACKET, None)?;
    s.connect(&addr)
        .map_err(|e| ctx(e, "connect", &path.display()))?;
    Ok(s.into())
}

/// vfkit client: binds `local` (removing a stale socket file), connects to `remote`,
/// optionally sends `b"VFKT"`.
pub fn dial_unixgram(local: &Path, remote: &Path, send_vfkt: bool) -> io::Result<OwnedFd> {
    match std::fs::symlink_metadata(local) {
        Ok(md) if md.file_type().is_socket() => std::fs::remove_file(local)
            .map_err(|e| ctx(e, "remove stale socket", &local.display()))?,
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} already exists and is not a socket", local.display()),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(ctx(e, "cannot check", &local.display())),
    }
    let local_addr =
        SockAddr::unix(local).map_err(|e| ctx(e, "bad socket path", &local.display()))?;
    let remote_addr =
        SockAddr::unix(remote).map_err(|e| ctx(e, "bad socket path", &remote.display()))?;
    let s = Socket::new(Domain::UNIX, Type::DGRAM, None)?;
    set_unixgram_buffers(&s);
    s.bind(&local_addr)
        .map_err(|e| ctx(e, "bind", &local.display()))?;
    s.connect(&remote_addr)
        .map_err(|e| ctx(e, "connect", &remote.display()))?;
    if send_vfkt {
        loop {
            match s.send(b"VFKT") {
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ctx(e, "send VFKT to", &remote.display())),
            }
        }
    }
    Ok(s.into())
}
