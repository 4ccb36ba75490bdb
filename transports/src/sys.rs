//! Thin syscall wrappers that need `unsafe`: `fcntl` on a raw fd and batched
//! `recvmmsg`/`sendmmsg` (nix's versions allocate their header arrays; these use stack arrays).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

use nix::sys::socket::{getsockopt, sockopt, SockType};
use nix::sys::stat::{fstat, SFlag};

/// Most messages moved by one `recvmmsg`/`sendmmsg` call.
pub(crate) const MAX_BATCH: usize = 64;

/// Sets or clears `O_NONBLOCK` on `fd`.
pub fn set_nonblocking(fd: RawFd, on: bool) -> io::Result<()> {
    // SAFETY: F_GETFL takes no pointer argument; an invalid fd only yields EBADF.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    let new = if on {
        flags | libc::O_NONBLOCK
    } else {
        flags & !libc::O_NONBLOCK
    };
    if new != flags {
        // SAFETY: F_SETFL takes an int argument; an invalid fd only yields EBADF.
        if unsafe { libc::fcntl(fd, libc::F_SETFL, new) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// What kind of file an fd is, decided once when a link is built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FdKind {
    /// Not a socket (TAP device, pipe, tty, file).
    Other,
    Stream,
    Datagram,
    SeqPacket,
}

pub(crate) fn fd_kind(fd: BorrowedFd<'_>) -> FdKind {
    let Ok(st) = fstat(fd) else {
        return FdKind::Other;
    };
    if SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) != SFlag::S_IFSOCK {
        return FdKind::Other;
    }
    match getsockopt(&fd, sockopt::SockType) {
        Ok(SockType::Datagram) => FdKind::Datagram,
        Ok(SockType::SeqPacket) => FdKind::SeqPacket,
        _ => FdKind::Stream,
    }
}

/// Outcome of one received message.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RecvInfo {
    pub len: usize,
    pub truncated: bool,
}

/// `recvmmsg(MSG_DONTWAIT)` into `count` slots of `slot` bytes each, laid out back to back in
/// `buf`. Fills `out[..n]` and returns `n` (at least 1).
pub(crate) fn recv_batch(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    slot: usize,
    count: usize,
    out: &mut [RecvInfo; MAX_BATCH],
) -> io::Result<usize> {
    let count = count.min(MAX_BATCH).min(buf.len() / slot.max(1));
    if count == 0 || slot == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "empty receive batch",
        ));
    }
    // SAFETY: iovec and mmsghdr are plain C structs for which all-zero bytes are valid values.
    let mut iovs: [libc::iovec; MAX_BATCH] = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut hdrs: [libc::mmsghdr; MAX_BATCH] = unsafe { std::mem::zeroed() };
    for (i, chunk) in buf.chunks_exact_mut(slot).take(count).enumerate() {
        iovs[i].iov_base = chunk.as_mut_ptr().cast();
        iovs[i].iov_len = chunk.len();
        hdrs[i].msg_hdr.msg_iov = &mut iovs[i];
        hdrs[i].msg_hdr.msg_iovlen = 1;
    }
    let vlen = libc::c_uint::try_from(count).unwrap_or(1);
    // SAFETY: hdrs[..count] each point at one iovec that points into `buf` (exclusively borrowed
    // for this call, each chunk `slot` bytes long); msg_name/msg_control are null; no timeout.
    let n = unsafe {
        libc::recvmmsg(
            fd.as_raw_fd(),
            hdrs.as_mut_ptr(),
            vlen,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = usize::try_from(n).unwrap_or(0).min(count);
    for (o, h) in out.iter_mut().zip(hdrs.iter()).take(n) {
        o.len = usize::try_from(h.msg_len).unwrap_or(0).min(slot);
        o.truncated = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
    }
    Ok(n)
}

/// `sendmmsg(MSG_DONTWAIT|MSG_NOSIGNAL)` of up to [`MAX_BATCH`] frames, to `dest` when given
/// (unconnected datagram socket). Returns how many were sent (at least 1).
pub(crate) fn send_batch<'a>(
    fd: BorrowedFd<'_>,
    frames: impl Iterator<Item = &'a [u8]>,
    dest: Option<&socket2::SockAddr>,
) -> io::Result<usize> {
    // SAFETY: iovec and mmsghdr are plain C structs for which all-zero bytes are valid values.
    let mut iovs: [libc::iovec; MAX_BATCH] = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut hdrs: [libc::mmsghdr; MAX_BATCH] = unsafe { std::mem::zeroed() };
    let mut count = 0;
    for (i, frame) in frames.take(MAX_BATCH).enumerate() {
        // The kernel only reads through iov_base on send.
        iovs[i].iov_base = frame.as_ptr().cast_mut().cast();
        iovs[i].iov_len = frame.len();
        count = i + 1;
    }
    if count == 0 {
        return Ok(0);
    }
    for i in 0..count {
        hdrs[i].msg_hdr.msg_iov = &mut iovs[i];
        hdrs[i].msg_hdr.msg_iovlen = 1;
        if let Some(addr) = dest {
            hdrs[i].msg_hdr.msg_name = addr.as_ptr().cast_mut().cast();
            hdrs[i].msg_hdr.msg_namelen = addr.len();
        }
    }
    let vlen = libc::c_uint::try_from(count).unwrap_or(1);
    // SAFETY: hdrs[..count] each point at one iovec describing a live borrowed frame and, when
    // set, at `dest`'s sockaddr (valid for `addr.len()` bytes); all outlive the call.
    let n = unsafe {
        libc::sendmmsg(
            fd.as_raw_fd(),
            hdrs.as_mut_ptr(),
            vlen,
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(n).unwrap_or(0).min(count))
}

/// `recvfrom(flags)` into `buf` on a unix datagram socket; returns the length the kernel
/// reported (the real datagram length with `MSG_TRUNC`) and the sender's socket path, `None`
/// for unnamed or abstract senders.
pub(crate) fn recv_from_unix(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    flags: libc::c_int,
) -> io::Result<(usize, Option<std::path::PathBuf>)> {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: sockaddr_un is a plain C struct for which all-zero bytes are a valid value.
    let mut sa: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    let cap = std::mem::size_of::<libc::sockaddr_un>();
    let mut len = libc::socklen_t::try_from(cap).unwrap_or(0);
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes and `sa` for `len` bytes; the
    // kernel writes at most that much and updates `len`.
    let n = unsafe {
        libc::recvfrom(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            flags,
            std::ptr::from_mut(&mut sa).cast(),
            &mut len,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = usize::try_from(n).unwrap_or(0);
    let base = std::mem::offset_of!(libc::sockaddr_un, sun_path);
    let len = usize::try_from(len).unwrap_or(0).min(cap);
    if len <= base || sa.sun_path[0] == 0 {
        return Ok((n, None));
    }
    let raw: Vec<u8> = sa.sun_path[..len - base]
        .iter()
        .map(|&c| c.to_ne_bytes()[0])
        .take_while(|&b| b != 0)
        .collect();
    if raw.is_empty() {
        return Ok((n, None));
    }
    Ok((n, Some(std::ffi::OsStr::from_bytes(&raw).into())))
}
