//! The TAP device: opened through `/dev/net/tun` (`IFF_TAP | IFF_NO_PI`: whole Ethernet frames,
//! no packet-info header), then given its MAC and brought up with the classic netdevice ioctls.
//! These ioctls are the only `unsafe` code in gvforwarder.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};

/// `struct ifreq`: the interface name, then a union of which we use `ifr_flags` (a short) and
/// `ifr_hwaddr` (a `struct sockaddr`). Our own layout so it can be built without `zeroed()`;
/// the size is checked against libc's below.
#[repr(C, align(8))]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    data: [u8; IFREQ_DATA_BYTES],
}

const IFREQ_DATA_BYTES: usize = std::mem::size_of::<libc::ifreq>() - libc::IFNAMSIZ;
const _: () = assert!(std::mem::size_of::<IfReq>() == std::mem::size_of::<libc::ifreq>());
const _: () = assert!(IFREQ_DATA_BYTES >= 16);

impl IfReq {
    fn new(name: &str) -> io::Result<IfReq> {
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            data: [0; IFREQ_DATA_BYTES],
        };
        let bytes = name.as_bytes();
        // Leave room for the terminating NUL.
        if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad interface name {name:?}"),
            ));
        }
        req.name[..bytes.len()].copy_from_slice(bytes);
        Ok(req)
    }

    fn name(&self) -> String {
        let len = self
            .name
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.name.len());
        String::from_utf8_lossy(&self.name[..len]).into_owned()
    }

    fn flags(&self) -> libc::c_short {
        libc::c_short::from_ne_bytes([self.data[0], self.data[1]])
    }

    fn set_flags(&mut self, flags: libc::c_short) {
        self.data[..2].copy_from_slice(&flags.to_ne_bytes());
    }
}

nix::ioctl_write_ptr_bad!(tun_set_iff, libc::TUNSETIFF, IfReq);
nix::ioctl_readwrite_bad!(get_if_flags, libc::SIOCGIFFLAGS, IfReq);
nix::ioctl_write_ptr_bad!(set_if_flags, libc::SIOCSIFFLAGS, IfReq);
nix::ioctl_write_ptr_bad!(set_if_hwaddr, libc::SIOCSIFHWADDR, IfReq);

fn short(flags: libc::c_int) -> io::Result<libc::c_short> {
    libc::c_short::try_from(flags).map_err(|_| io::Error::other("interface flags overflow"))
}

fn with_context(e: nix::Error, what: &str, name: &str) -> io::Error {
    let e = io::Error::from(e);
    io::Error::new(e.kind(), format!("{what} {name}: {e}"))
}

/// Opens (creating it if needed) the TAP interface `name` and returns its actual name and the
/// queue's fd (blocking; the caller's `Link` makes it non-blocking). The interface lives as long
/// as this fd unless it was made persistent by whoever created it.
pub fn open(name: &str) -> io::Result<(String, OwnedFd)> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(|e| io::Error::new(e.kind(), format!("cannot open /dev/net/tun: {e}")))?;
    let mut req = IfReq::new(name)?;
    req.set_flags(short(libc::IFF_TAP | libc::IFF_NO_PI)?);
    // SAFETY: the fd is an open /dev/net/tun file owned by `file`; `req` is a valid, initialised
    // ifreq-sized buffer that lives across the call, and TUNSETIFF only reads and writes it.
    unsafe { tun_set_iff(file.as_raw_fd(), &req) }
        .map_err(|e| with_context(e, "cannot create tap device", name))?;
    Ok((req.name(), OwnedFd::from(file)))
}

/// Any socket will do for netdevice ioctls.
fn control_socket() -> io::Result<OwnedFd> {
    socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .or_else(|_| {
        socket(
            AddressFamily::Unix,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
    })
    .map_err(io::Error::from)
}

/// Sets the interface's MAC address (SIOCSIFHWADDR).
pub fn set_mac(name: &str, mac: [u8; 6]) -> io::Result<()> {
    let sock = control_socket()?;
    let mut req = IfReq::new(name)?;
    // struct sockaddr: sa_family (ARPHRD_ETHER for a MAC), then the address bytes.
    req.data[..2].copy_from_slice(&libc::ARPHRD_ETHER.to_ne_bytes());
    req.data[2..8].copy_from_slice(&mac);
    // SAFETY: `sock` is an open socket; `req` is a valid ifreq-sized buffer holding a
    // NUL-terminated name and a sockaddr, read (not kept) by the kernel.
    unsafe { set_if_hwaddr(sock.as_raw_fd(), &req) }
        .map_err(|e| with_context(e, "cannot set mac address of", name))?;
    Ok(())
}

/// Sets IFF_UP on the interface (SIOCGIFFLAGS, then SIOCSIFFLAGS).
pub fn set_up(name: &str) -> io::Result<()> {
    let sock = control_socket()?;
    let mut req = IfReq::new(name)?;
    // SAFETY: `sock` is an open socket; `req` is a valid ifreq-sized buffer that the kernel
    // fills with the flags and that outlives the call.
    unsafe { get_if_flags(sock.as_raw_fd(), &mut req) }
        .map_err(|e| with_context(e, "cannot read flags of", name))?;
    let up = short(libc::IFF_UP)?;
    if req.flags() & up != 0 {
        return Ok(());
    }
    req.set_flags(req.flags() | up);
    // SAFETY: as above; SIOCSIFFLAGS only reads `req`.
    unsafe { set_if_flags(sock.as_raw_fd(), &req) }
        .map_err(|e| with_context(e, "cannot bring up", name))?;
    Ok(())
}

/// Whether a network interface of that name exists in our network namespace.
pub fn exists(name: &str) -> bool {
    nix::net::if_::if_nametoindex(name).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifreq_names() {
        let req = IfReq::new("tap0").unwrap();
        assert_eq!(req.name(), "tap0");
        assert!(IfReq::new("").is_err());
        assert!(IfReq::new("0123456789abcdef").is_err());
        assert!(IfReq::new("0123456789abcde").is_ok());
        let mut req = IfReq::new("x").unwrap();
        req.set_flags(0x1002);
        assert_eq!(req.flags(), 0x1002);
    }

    #[test]
    fn loopback_exists() {
        assert!(exists("lo"));
        assert!(!exists("no-such-if0"));
    }
}
