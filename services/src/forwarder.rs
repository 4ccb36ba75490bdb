//! Port forwarding host → guest (upstream's forwarder/ports.go): a host listener per
//! forward; each connection (or UDP client) is carried into the virtual network by the
//! data path through a [`GuestDialer`].
//!
//! | protocol | local | remote |
//! |---|---|---|
//! | `tcp` | `127.0.0.1:9090`, `:9090` (all interfaces) | `IP:PORT` in the guest network |
//! | `udp` | as tcp | `IP:PORT` |
//! | `unix` | a socket path (an existing file is replaced) | `tcp://IP:PORT` |
//!
//! Unexpose closes the listener, every connection it opened, and removes a unix socket.

use std::collections::BTreeMap;
use std::io;
use std::net::{SocketAddr, SocketAddrV4, TcpListener, ToSocketAddrs, UdpSocket};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use log::{info, warn};
use parking_lot::Mutex;

use crate::api::{ApiError, Forward};

/// The data path's side of a forward.
pub trait GuestDialer: Send + Sync {
    /// Opens a TCP connection from the gateway into `guest` and splices it with `host`
    /// (a connected stream socket). `tag` groups the connections of one forward.
    fn open_tcp(&self, host: OwnedFd, guest: SocketAddrV4, tag: u64);
    /// Serves a bound host UDP socket: each client's datagrams become a flow to `guest`,
    /// and the guest's replies go back to that client.
    fn serve_udp(&self, socket: UdpSocket, guest: SocketAddrV4, tag: u64);
    /// Closes every connection and socket of `tag`.
    fn close_tag(&self, tag: u64);
}

enum Listener {
    Tcp(Arc<TcpListener>),
    Unix(Arc<UnixListener>, PathBuf),
    Udp,
}

struct Entry {
    forward: Forward,
    tag: u64,
    listener: Listener,
    stop: Arc<AtomicBool>,
}

/// The running forwards.
pub struct Forwarder {
    dialer: Arc<dyn GuestDialer>,
    entries: Mutex<BTreeMap<(String, String), Entry>>,
    next_tag: AtomicU64,
}

impl Forwarder {
    pub fn new(dialer: Arc<dyn GuestDialer>) -> Arc<Forwarder> {
        Arc::new(Forwarder {
            dialer,
            entries: Mutex::new(BTreeMap::new()),
            next_tag: AtomicU64::new(1),
        })
    }

    /// Every forward, sorted by local address then protocol (as upstream).
    pub fn all(&self) -> Vec<Forward> {
        let mut v: Vec<Forward> = self
            .entries
            .lock()
            .values()
            .map(|e| e.forward.clone())
            .collect();
        v.sort_by(|a, b| (&a.local, &a.protocol).cmp(&(&b.local, &b.protocol)));
        v
    }

    /// Starts a forward. `f.remote` is already validated (`IP:PORT`, or `tcp://IP:PORT`
    /// for unix).
    pub fn expose(&self, f: Forward) -> Result<(), ApiError> {
        let key = (f.protocol.clone(), f.local.clone());
        let mut entries = self.entries.lock();
        if entries.contains_key(&key) {
            return Err(ApiError::conflict(format!(
                "proxy already running for {} on {}",
                f.protocol, f.local
            )));
        }
        let guest = guest_addr(&f)?;
        let tag = self.next_tag.fetch_add(1, Ordering::Relaxed);
        let stop = Arc::new(AtomicBool::new(false));
        let listener = match f.protocol.as_str() {
            "tcp" => {
                let l = TcpListener::bind(local_addr(&f.local)?).map_err(|e| bind_error(&f, &e))?;
                let l = Arc::new(l);
                self.spawn_accept(AcceptOn::Tcp(l.clone()), guest, tag, stop.clone(), &f)?;
                Listener::Tcp(l)
            }
            "unix" => {
                let path = PathBuf::from(&f.local);
                if path.as_os_str().is_empty() || path.is_dir() {
                    return Err(ApiError::bad_request(format!(
                        "bad socket path {:?}",
                        f.local
                    )));
                }
                // Upstream replaces an existing file.
                let _ = std::fs::remove_file(&path);
                let l = UnixListener::bind(&path).map_err(|e| bind_error(&f, &e))?;
                let l = Arc::new(l);
                self.spawn_accept(AcceptOn::Unix(l.clone()), guest, tag, stop.clone(), &f)?;
                Listener::Unix(l, path)
            }
            "udp" => {
                let s = UdpSocket::bind(local_addr(&f.local)?).map_err(|e| bind_error(&f, &e))?;
                self.dialer.serve_udp(s, guest, tag);
                Listener::Udp
            }
            p => return Err(ApiError::bad_request(format!("unknown protocol {p:?}"))),
        };
        info!("forwarding {} {} to {}", f.protocol, f.local, f.remote);
        entries.insert(
            key,
            Entry {
                forward: f,
                tag,
                listener,
                stop,
            },
        );
        Ok(())
    }

    /// Stops a forward: the listener, its connections, its socket file.
    pub fn unexpose(&self, f: &Forward) -> Result<(), ApiError> {
        let key = (f.protocol.clone(), f.local.clone());
        let Some(e) = self.entries.lock().remove(&key) else {
            return Err(ApiError::not_found(format!(
                "proxy not found for {} on {}",
                f.protocol, f.local
            )));
        };
        e.stop.store(true, Ordering::SeqCst);
        match &e.listener {
            // shutdown() on a listening socket wakes a thread blocked in accept().
            Listener::Tcp(l) => {
                let _ =
                    nix::sys::socket::shutdown(fd_of(l.as_fd()), nix::sys::socket::Shutdown::Both);
            }
            Listener::Unix(l, path) => {
                let _ =
                    nix::sys::socket::shutdown(fd_of(l.as_fd()), nix::sys::socket::Shutdown::Both);
                let _ = std::fs::remove_file(path);
            }
            Listener::Udp => {}
        }
        self.dialer.close_tag(e.tag);
        info!(
            "stopped forwarding {} {}",
            e.forward.protocol, e.forward.local
        );
        Ok(())
    }

    fn spawn_accept(
        &self,
        on: AcceptOn,
        guest: SocketAddrV4,
        tag: u64,
        stop: Arc<AtomicBool>,
        f: &Forward,
    ) -> Result<(), ApiError> {
        let dialer = self.dialer.clone();
        let name = format!("forward {} {}", f.protocol, f.local);
        thread::Builder::new()
            .name(name.clone())
            .spawn(move || loop {
                let conn = on.accept();
                if stop.load(Ordering::SeqCst) {
                    if let Ok(fd) = conn {
                        let _ = nix::sys::socket::shutdown(
                            fd_of(fd.as_fd()),
                            nix::sys::socket::Shutdown::Both,
                        );
                    }
                    return;
                }
                match conn {
                    Ok(fd) => dialer.open_tcp(fd, guest, tag),
                    Err(e) => {
                        warn!("{name}: accept failed: {e}");
                        thread::sleep(Duration::from_millis(100));
                    }
                }
            })
            .map(|_| ())
            .map_err(|e| ApiError::unavailable(format!("cannot start a thread: {e}")))
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        for e in self.entries.lock().values() {
            if let Listener::Unix(_, path) = &e.listener {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

enum AcceptOn {
    Tcp(Arc<TcpListener>),
    Unix(Arc<UnixListener>),
}

impl AcceptOn {
    fn accept(&self) -> io::Result<OwnedFd> {
        match self {
            AcceptOn::Tcp(l) => l.accept().map(|(s, _)| {
                let _ = s.set_nodelay(true);
                s.into()
            }),
            AcceptOn::Unix(l) => l.accept().map(|(s, _)| s.into()),
        }
    }
}

fn fd_of(fd: std::os::fd::BorrowedFd<'_>) -> std::os::fd::RawFd {
    use std::os::fd::AsRawFd;
    fd.as_raw_fd()
}

/// `:9090` is every interface, as Go's net.Listen reads it.
fn local_addr(local: &str) -> Result<SocketAddr, ApiError> {
    let full = if local.starts_with(':') {
        format!("0.0.0.0{local}")
    } else {
        local.to_string()
    };
    full.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| {
            ApiError::bad_request(format!("bad local address {local:?}: expected HOST:PORT"))
        })
}

fn guest_addr(f: &Forward) -> Result<SocketAddrV4, ApiError> {
    let r = f.remote.strip_prefix("tcp://").unwrap_or(&f.remote);
    r.parse()
        .map_err(|_| ApiError::bad_request(format!("bad remote {:?}: expected IP:PORT", f.remote)))
}

fn bind_error(f: &Forward, e: &io::Error) -> ApiError {
    let msg = format!("cannot listen on {} ({}): {e}", f.local, f.protocol);
    if e.kind() == io::ErrorKind::AddrInUse {
        ApiError::conflict(msg)
    } else {
        ApiError::bad_request(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;

    /// Splices each connection with a local echo instead of a guest.
    #[derive(Default)]
    struct EchoDialer {
        closed: Mutex<Vec<u64>>,
    }

    impl GuestDialer for EchoDialer {
        fn open_tcp(&self, host: OwnedFd, _guest: SocketAddrV4, _tag: u64) {
            thread::spawn(move || {
                let mut s = std::os::unix::net::UnixStream::from(host);
                let mut buf = [0u8; 64];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
        fn serve_udp(&self, _socket: UdpSocket, _guest: SocketAddrV4, _tag: u64) {}
        fn close_tag(&self, tag: u64) {
            self.closed.lock().push(tag);
        }
    }

    fn fwd(local: &str, remote: &str, protocol: &str) -> Forward {
        Forward {
            local: local.into(),
            remote: remote.into(),
            protocol: protocol.into(),
        }
    }

    #[test]
    fn tcp_forward_lifecycle() {
        let dialer = Arc::new(EchoDialer::default());
        let fw = Forwarder::new(dialer.clone());
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let local = format!("127.0.0.1:{port}");
        fw.expose(fwd(&local, "192.168.127.2:8080", "tcp")).unwrap();
        let e = fw
            .expose(fwd(&local, "192.168.127.2:8080", "tcp"))
            .unwrap_err();
        assert_eq!(
            e.message,
            format!("proxy already running for tcp on {local}")
        );
        let mut c = TcpStream::connect(&local).unwrap();
        c.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
        assert_eq!(fw.all().len(), 1);
        fw.unexpose(&fwd(&local, "", "tcp")).unwrap();
        assert_eq!(dialer.closed.lock().len(), 1);
        thread::sleep(Duration::from_millis(50));
        assert!(TcpStream::connect(&local).is_err(), "still listening");
        assert_eq!(
            fw.unexpose(&fwd(&local, "", "tcp")).unwrap_err().status,
            404
        );
    }

    #[test]
    fn unix_forward_removes_its_socket() {
        let fw = Forwarder::new(Arc::new(EchoDialer::default()));
        let path = std::env::temp_dir().join(format!("fwd-test-{}.sock", std::process::id()));
        let local = path.display().to_string();
        fw.expose(fwd(&local, "tcp://192.168.127.2:8080", "unix"))
            .unwrap();
        assert!(path.exists());
        let mut c = std::os::unix::net::UnixStream::connect(&path).unwrap();
        c.write_all(b"x").unwrap();
        let mut b = [0u8; 1];
        c.read_exact(&mut b).unwrap();
        fw.unexpose(&fwd(&local, "", "unix")).unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn bad_addresses_are_4xx() {
        let fw = Forwarder::new(Arc::new(EchoDialer::default()));
        assert_eq!(
            fw.expose(fwd("nonsense", "192.168.127.2:1", "tcp"))
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(
            fw.expose(fwd("127.0.0.1:1", "bad", "tcp"))
                .unwrap_err()
                .status,
            400
        );
        let busy = TcpListener::bind("127.0.0.1:0").unwrap();
        let local = busy.local_addr().unwrap().to_string();
        assert_eq!(
            fw.expose(fwd(&local, "192.168.127.2:1", "tcp"))
                .unwrap_err()
                .status,
            409
        );
    }
}
