//! TAP devices: opened through `/dev/net/tun` (`IFF_TAP | IFF_NO_PI`: whole Ethernet frames,
//! no packet-info header), optionally with `IFF_VNET_HDR` and offloads (see [`crate::vnet`]),
//! in this or another network namespace; given a MAC, an MTU and brought up with the classic
//! netdevice ioctls.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

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
nix::ioctl_write_ptr_bad!(set_if_mtu, SIOCSIFMTU, IfReq);
nix::ioctl_write_int_bad!(tun_set_offload, libc::TUNSETOFFLOAD);

/// linux/sockios.h (not in libc for Linux).
const SIOCSIFMTU: libc::c_ulong = 0x8922;

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
    open_with(name, false)
}

/// [`open`], with `IFF_VNET_HDR` when `vnet_hdr` is set: every read and write then starts
/// with a 10-byte `struct virtio_net_hdr` ([`crate::vnet`]).
pub fn open_with(name: &str, vnet_hdr: bool) -> io::Result<(String, OwnedFd)> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(|e| io::Error::new(e.kind(), format!("cannot open /dev/net/tun: {e}")))?;
    let mut req = IfReq::new(name)?;
    let vnet = if vnet_hdr { libc::IFF_VNET_HDR } else { 0 };
    req.set_flags(short(libc::IFF_TAP | libc::IFF_NO_PI | vnet)?);
    // SAFETY: the fd is an open /dev/net/tun file owned by `file`; `req` is a valid, initialised
    // ifreq-sized buffer that lives across the call, and TUNSETIFF only reads and writes it.
    unsafe { tun_set_iff(file.as_raw_fd(), &req) }
        .map_err(|e| with_context(e, "cannot create tap device", name))?;
    Ok((req.name(), OwnedFd::from(file)))
}

/// Asks the kernel to hand us partially checksummed frames and TCP segments of up to 64 KiB
/// (`TUNSETOFFLOAD` with `TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6`). Only for a queue opened
/// with `IFF_VNET_HDR`, whose reader completes checksums ([`crate::vnet`]).
pub fn enable_offload(fd: &OwnedFd) -> io::Result<()> {
    set_offload(fd, libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6)
}

/// `TUNSETOFFLOAD` with `flags` (0: none; the kernel then segments and checksums itself).
pub fn set_offload(fd: &OwnedFd, flags: libc::c_uint) -> io::Result<()> {
    let flags = libc::c_int::try_from(flags).map_err(|_| io::Error::other("offload flags"))?;
    // SAFETY: TUNSETOFFLOAD takes an int by value on an open tun fd; no memory is passed.
    unsafe { tun_set_offload(fd.as_raw_fd(), flags) }
        .map_err(|e| with_context(e, "cannot enable offloads on", "tap"))?;
    Ok(())
}

/// Runs `f` on a thread that has entered the network namespace `ns` (a path such as
/// `/proc/PID/ns/net` or `/run/netns/NAME`), so that devices it creates and sockets it opens
/// belong there. The fds it returns stay usable from any thread.
pub fn in_netns<T: Send + 'static>(
    ns: &Path,
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let file = std::fs::File::open(ns).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot open network namespace {}: {e}", ns.display()),
        )
    })?;
    let shown = ns.display().to_string();
    std::thread::Builder::new()
        .name("netns".into())
        .spawn(move || {
            // setns(2) changes only the calling thread, which ends with `f`.
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
                let e = io::Error::from(e);
                io::Error::new(
                    e.kind(),
                    format!("cannot enter network namespace {shown}: {e}"),
                )
            })?;
            f()
        })?
        .join()
        .map_err(|_| io::Error::other("network namespace thread panicked"))?
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

/// Sets the interface's MTU (SIOCSIFMTU).
pub fn set_mtu(name: &str, mtu: u32) -> io::Result<()> {
    let sock = control_socket()?;
    let mut req = IfReq::new(name)?;
    let mtu = libc::c_int::try_from(mtu)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "mtu out of range"))?;
    req.data[..4].copy_from_slice(&mtu.to_ne_bytes());
    // SAFETY: `sock` is an open socket; `req` is a valid ifreq-sized buffer holding a
    // NUL-terminated name and ifr_mtu, read (not kept) by the kernel.
    unsafe { set_if_mtu(sock.as_raw_fd(), &req) }
        .map_err(|e| with_context(e, "cannot set the mtu of", name))?;
    Ok(())
}

/// Whether a network interface of that name exists in our network namespace.
pub fn exists(name: &str) -> bool {
    nix::net::if_::if_nametoindex(name).is_ok()
}

/// A TAP to serve: `NAME` in our namespace, or `NSPATH:NAME` in the network namespace
/// at `NSPATH` (`/proc/PID/ns/net`, `/run/netns/NAME`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TapSpec {
    pub netns: Option<PathBuf>,
    pub name: String,
}

impl std::str::FromStr for TapSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (netns, name) = match s.rsplit_once(':') {
            Some((ns, name)) if !ns.is_empty() => (Some(PathBuf::from(ns)), name),
            Some(_) => return Err(format!("empty namespace path in {s:?}")),
            None => (None, s),
        };
        IfReq::new(name).map_err(|_| {
            format!(
                "bad interface name {name:?} in {s:?} (1 to 15 bytes, e.g. /proc/PID/ns/net:tap0)"
            )
        })?;
        Ok(TapSpec {
            netns,
            name: name.to_string(),
        })
    }
}

impl std::fmt::Display for TapSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.netns {
            Some(ns) => write!(f, "{}:{}", ns.display(), self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// A TAP opened to be served as a switch port.
#[derive(Debug)]
pub struct ServedTap {
    pub fd: OwnedFd,
    pub name: String,
    /// Offloads are on: reads may carry 64 KiB TCP segments with partial checksums.
    pub offload: bool,
}

/// Opens `spec` (creating the device if needed) with `IFF_VNET_HDR` and offloads, sets its
/// MTU to `mtu` and brings it up, inside its namespace. Addresses stay the guest's business
/// (static, or DHCP from our gateway).
pub fn open_served(spec: &TapSpec, mtu: u32) -> io::Result<ServedTap> {
    let name = spec.name.clone();
    let open = move || -> io::Result<ServedTap> {
        let (name, fd) = open_with(&name, true)?;
        let offload = match enable_offload(&fd) {
            Ok(()) => true,
            Err(e) => {
                log::warn!("{e}: serving {name} without offloads");
                false
            }
        };
        set_mtu(&name, mtu)?;
        set_up(&name)?;
        Ok(ServedTap { fd, name, offload })
    };
    match &spec.netns {
        Some(ns) => in_netns(ns, open),
        None => open(),
    }
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
    fn tap_specs() {
        let s: TapSpec = "/proc/42/ns/net:tap0".parse().unwrap();
        assert_eq!(s.netns.as_deref(), Some(Path::new("/proc/42/ns/net")));
        assert_eq!(s.name, "tap0");
        assert_eq!(s.to_string(), "/proc/42/ns/net:tap0");
        let s: TapSpec = "tap1".parse().unwrap();
        assert_eq!((s.netns, s.name.as_str()), (None, "tap1"));
        assert!("/run/netns/x:".parse::<TapSpec>().is_err());
        assert!(":tap0".parse::<TapSpec>().is_err());
        assert!("/run/netns/x:0123456789abcdef".parse::<TapSpec>().is_err());
    }

    #[test]
    fn loopback_exists() {
        assert!(exists("lo"));
        assert!(!exists("no-such-if0"));
    }
}
