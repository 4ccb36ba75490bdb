//! AF_VSOCK helpers: `sockaddr_vm` building and blocking bind/listen/accept/connect.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Any CID (listen on every context the host has).
pub const VMADDR_CID_ANY: u32 = libc::VMADDR_CID_ANY;
/// The host, as seen from a guest.
pub const VMADDR_CID_HOST: u32 = libc::VMADDR_CID_HOST;

/// A `sockaddr_vm` for `cid:port`.
pub fn sockaddr_vm(cid: u32, port: u32) -> libc::sockaddr_vm {
    libc::sockaddr_vm {
        svm_family: sa_family_vsock(),
        svm_reserved1: 0,
        svm_port: port,
        svm_cid: cid,
        svm_zero: [0; 4],
    }
}

fn sa_family_vsock() -> libc::sa_family_t {
    // AF_VSOCK is 40: it always fits the family type.
    libc::sa_family_t::try_from(libc::AF_VSOCK).unwrap_or(40)
}

fn addr_len() -> libc::socklen_t {
    libc::socklen_t::try_from(size_of::<libc::sockaddr_vm>()).unwrap_or(16)
}

fn context(e: io::Error, what: &str, cid: u32, port: u32) -> io::Error {
    let cid = if cid == VMADDR_CID_ANY {
        "any".to_string()
    } else {
        cid.to_string()
    };
    io::Error::new(e.kind(), format!("vsock {what} {cid}:{port}: {e}"))
}

/// A new blocking AF_VSOCK stream socket (close-on-exec).
pub fn socket() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments.
    let fd = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket() and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Binds `cid:port` (use [`VMADDR_CID_ANY`] for any) and listens.
pub fn listen(cid: u32, port: u32, backlog: i32) -> io::Result<OwnedFd> {
    let fd = socket().map_err(|e| context(e, "socket for", cid, port))?;
    let sa = sockaddr_vm(cid, port);
    // SAFETY: `sa` is a valid sockaddr_vm of `addr_len()` bytes that outlives the call.
    let r = unsafe { libc::bind(fd.as_raw_fd(), std::ptr::from_ref(&sa).cast(), addr_len()) };
    if r < 0 {
        return Err(context(io::Error::last_os_error(), "bind", cid, port));
    }
    // SAFETY: plain syscall with integer arguments on an fd we own.
    if unsafe { libc::listen(fd.as_raw_fd(), backlog) } < 0 {
        return Err(context(io::Error::last_os_error(), "listen", cid, port));
    }
    Ok(fd)
}

/// Blocking accept; returns the connection and the peer's (cid, port).
pub fn accept(listener: &OwnedFd) -> io::Result<(OwnedFd, u32, u32)> {
    loop {
        let mut sa = sockaddr_vm(0, 0);
        let mut len = addr_len();
        // SAFETY: `sa`/`len` are valid for writes of a sockaddr_vm; the kernel writes at most
        // `len` bytes and updates `len`.
        let fd = unsafe {
            libc::accept4(
                listener.as_raw_fd(),
                std::ptr::from_mut(&mut sa).cast(),
                &mut len,
                libc::SOCK_CLOEXEC,
            )
        };
        if fd < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        // SAFETY: `fd` was just returned by accept4() and is owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        return Ok((fd, sa.svm_cid, sa.svm_port));
    }
}

/// Blocking connect to `cid:port`.
pub fn connect(cid: u32, port: u32) -> io::Result<OwnedFd> {
    let fd = socket().map_err(|e| context(e, "socket for", cid, port))?;
    let sa = sockaddr_vm(cid, port);
    // SAFETY: `sa` is a valid sockaddr_vm of `addr_len()` bytes that outlives the call.
    let r = unsafe { libc::connect(fd.as_raw_fd(), std::ptr::from_ref(&sa).cast(), addr_len()) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(context(e, "connect", cid, port));
        }
        // The connect goes on in the background: wait for it, then read its result.
        wait_connected(&fd).map_err(|e| context(e, "connect", cid, port))?;
    }
    Ok(fd)
}

fn wait_connected(fd: &OwnedFd) -> io::Result<()> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    loop {
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLOUT)];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => break,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    match nix::sys::socket::getsockopt(fd, nix::sys::socket::sockopt::SocketError)? {
        0 => Ok(()),
        errno => Err(io::Error::from_raw_os_error(errno)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddr_layout() {
        let sa = sockaddr_vm(3, 1024);
        assert_eq!(i32::from(sa.svm_family), libc::AF_VSOCK);
        assert_eq!(sa.svm_cid, 3);
        assert_eq!(sa.svm_port, 1024);
        assert_eq!(sa.svm_reserved1, 0);
        assert_eq!(sa.svm_zero, [0; 4]);
        assert_eq!(addr_len(), 16);
        // Byte layout as the kernel reads it: family u16, reserved u16, port u32, cid u32.
        let any = sockaddr_vm(VMADDR_CID_ANY, 0x0400);
        let bytes: Vec<u8> = [
            &any.svm_family.to_ne_bytes()[..],
            &any.svm_reserved1.to_ne_bytes(),
            &any.svm_port.to_ne_bytes(),
            &any.svm_cid.to_ne_bytes(),
            &any.svm_zero,
        ]
        .concat();
        assert_eq!(bytes.len(), 16);
        assert_eq!(&bytes[8..12], &[0xff; 4]);
        assert_eq!(VMADDR_CID_HOST, 2);
    }

    #[test]
    fn errors_are_clean() {
        // No vsock transport here (or no loopback): must be an error, not a panic.
        // CID 1 = local loopback, absent here: fails at once instead of reaching a host.
        match connect(1, 1) {
            Ok(_) => {}
            Err(e) => assert!(e.to_string().starts_with("vsock "), "{e}"),
        }
        match listen(1_000_000, 1, 1) {
            Ok(_) => {}
            Err(e) => assert!(e.to_string().starts_with("vsock "), "{e}"),
        }
    }
}
