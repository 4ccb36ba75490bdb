//! Connecting to gvproxy: dial the URL, run the protocol's preamble (HTTP `POST /connect`, the
//! HyperKit handshake, vfkit's `VFKT`), and hand back a [`LinkIo`] and its [`Framing`]. Blocking;
//! the event loop takes over once this returns.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use log::info;
use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::{TimeVal, TimeValLike};
use transports::{http, hyperkit, Framing, LinkIo};

use crate::cli::{Dial, Protocol, Target};

/// How long the blocking preamble (HTTP request, HyperKit handshake) may stall on a socket.
const PREAMBLE_TIMEOUT: Duration = Duration::from_secs(10);

/// A connected link to gvproxy, not yet wrapped in a `Link`.
pub struct Connection {
    pub io: LinkIo,
    pub framing: Framing,
    /// Bytes read past the HTTP response head (`/connect-vnet`): the first frames.
    pub leftover: Vec<u8>,
    /// The `stdio:` child; killed and reaped when the connection is dropped.
    pub child: Option<ChildGuard>,
}

/// Reaps the child on drop, so a redial never leaves a zombie or a second peer. Drop it after
/// the pipes are closed: the child gets EOF on its stdin and a moment to exit on its own (and
/// clean up) before it is killed.
pub struct ChildGuard(Child);

/// How long a stdio peer may take to exit after its stdin closed.
const CHILD_EXIT_GRACE: Duration = Duration::from_secs(1);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let pid = self.0.id();
        let deadline = std::time::Instant::now() + CHILD_EXIT_GRACE;
        let status = loop {
            match self.0.try_wait() {
                Ok(Some(status)) => break Ok(status),
                Ok(None) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Ok(None) | Err(_) => {
                    let _ = self.0.kill();
                    break self.0.wait();
                }
            }
        };
        match status {
            Ok(status) => info!("stdio peer {pid} exited: {status}"),
            Err(e) => info!("stdio peer {pid}: cannot wait: {e}"),
        }
    }
}

/// Whether `target` may use `/connect-vnet` (gvforwarder's own `/connect` over a stream).
pub fn vnet_capable(target: &Target) -> bool {
    matches!(&target.dial, Dial::Stream(_))
        && matches!(&target.protocol, Protocol::Connect(p) if p == "/connect")
}

/// Dials `target`. With `vnet` (only where [`vnet_capable`]), asks for `/connect-vnet`:
/// records of virtio-net header + frame behind a u32 BE length. A gvproxy without it
/// (upstream answers 404) yields an `Unsupported` error: reopen the TAP without the
/// header and dial again without `vnet`.
pub fn connect(target: &Target, vnet: bool) -> io::Result<Connection> {
    match &target.dial {
        Dial::Stream(endpoint) => {
            let fd = transports::dial_stream(endpoint)?;
            if vnet && vnet_capable(target) {
                let (fd, leftover) = vnet_preamble(fd)?;
                return Ok(Connection {
                    io: LinkIo::Stream {
                        read: fd,
                        write: None,
                    },
                    framing: Framing::Qemu,
                    leftover,
                    child: None,
                });
            }
            let fd = stream_preamble(fd, &target.protocol)?;
            Ok(Connection {
                io: LinkIo::Stream {
                    read: fd,
                    write: None,
                },
                framing: stream_framing(&target.protocol),
                leftover: Vec::new(),
                child: None,
            })
        }
        Dial::Exec { program, args } => {
            let mut child = Command::new(program)
                .args(args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .map_err(|e| io::Error::new(e.kind(), format!("cannot run {program}: {e}")))?;
            info!("started stdio peer {program} (pid {})", child.id());
            let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
                let _guard = ChildGuard(child);
                return Err(io::Error::other("child has no stdin/stdout pipes"));
            };
            let guard = ChildGuard(child);
            let mut pipes = Pipes {
                read: File::from(OwnedFd::from(stdout)),
                write: File::from(OwnedFd::from(stdin)),
            };
            if let Protocol::Hyperkit(uuid) = &target.protocol {
                hyperkit_handshake(&mut pipes, uuid)?;
            }
            Ok(Connection {
                io: LinkIo::Stream {
                    read: OwnedFd::from(pipes.read),
                    write: Some(OwnedFd::from(pipes.write)),
                },
                framing: stream_framing(&target.protocol),
                leftover: Vec::new(),
                child: Some(guard),
            })
        }
        Dial::Seqpacket(path) => Ok(Connection {
            io: LinkIo::Packet(transports::dial_seqpacket(path)?),
            framing: Framing::Message,
            leftover: Vec::new(),
            child: None,
        }),
        Dial::Unixgram(remote) => {
            let (local, send_vfkt) = match &target.protocol {
                Protocol::Vfkit { local, send_vfkt } => (local.as_path(), *send_vfkt),
                other => {
                    return Err(io::Error::other(format!(
                        "protocol {other} does not work over unixgram"
                    )))
                }
            };
            Ok(Connection {
                io: LinkIo::Packet(transports::dial_unixgram(local, remote, send_vfkt)?),
                framing: Framing::Message,
                leftover: Vec::new(),
                child: None,
            })
        }
    }
}

fn stream_framing(protocol: &Protocol) -> Framing {
    match protocol {
        Protocol::Qemu => Framing::Qemu,
        _ => Framing::LenU16Le,
    }
}

/// Runs the preamble of a socket stream, with a timeout so a silent peer cannot hang us.
fn stream_preamble(fd: OwnedFd, protocol: &Protocol) -> io::Result<OwnedFd> {
    let timeout =
        TimeVal::milliseconds(i64::try_from(PREAMBLE_TIMEOUT.as_millis()).unwrap_or(i64::MAX));
    let none = TimeVal::zero();
    match protocol {
        Protocol::Connect(path) => {
            info!("sending post request to {path}");
            setsockopt(&fd, sockopt::SendTimeout, &timeout)?;
            let mut file = File::from(fd);
            file.write_all(&http::connect_request(path))?;
            let fd = OwnedFd::from(file);
            setsockopt(&fd, sockopt::SendTimeout, &none)?;
            Ok(fd)
        }
        Protocol::Hyperkit(uuid) => {
            setsockopt(&fd, sockopt::SendTimeout, &timeout)?;
            setsockopt(&fd, sockopt::ReceiveTimeout, &timeout)?;
            let mut file = File::from(fd);
            hyperkit_handshake(&mut file, uuid)?;
            let fd = OwnedFd::from(file);
            setsockopt(&fd, sockopt::SendTimeout, &none)?;
            setsockopt(&fd, sockopt::ReceiveTimeout, &none)?;
            Ok(fd)
        }
        Protocol::U16 | Protocol::Qemu | Protocol::Bess | Protocol::Vfkit { .. } => Ok(fd),
    }
}

/// `POST /connect-vnet`, then the response head: 200 = records follow (and may already
/// have), anything else = not offered.
fn vnet_preamble(fd: OwnedFd) -> io::Result<(OwnedFd, Vec<u8>)> {
    let timeout =
        TimeVal::milliseconds(i64::try_from(PREAMBLE_TIMEOUT.as_millis()).unwrap_or(i64::MAX));
    let none = TimeVal::zero();
    info!("sending post request to {}", http::VNET_CONNECT_PATH);
    setsockopt(&fd, sockopt::SendTimeout, &timeout)?;
    setsockopt(&fd, sockopt::ReceiveTimeout, &timeout)?;
    let mut file = File::from(fd);
    file.write_all(&http::connect_request(http::VNET_CONNECT_PATH))?;
    let (status, leftover) = http::read_response_head(&mut file, 16 * 1024)?;
    if status != 200 {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "gvproxy answered {status} to {}: plain /connect",
                http::VNET_CONNECT_PATH
            ),
        ));
    }
    let fd = OwnedFd::from(file);
    setsockopt(&fd, sockopt::SendTimeout, &none)?;
    setsockopt(&fd, sockopt::ReceiveTimeout, &none)?;
    Ok((fd, leftover))
}

fn hyperkit_handshake(s: &mut (impl Read + Write), uuid: &str) -> io::Result<()> {
    let (mtu, mac) = hyperkit::client_handshake(s, uuid)
        .map_err(|e| io::Error::new(e.kind(), format!("hyperkit handshake: {e}")))?;
    info!(
        "hyperkit handshake done: mtu {mtu}, mac {}",
        mac.iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    );
    Ok(())
}

/// A child's stdout and stdin as one duplex stream, for the HyperKit handshake.
struct Pipes {
    read: File,
    write: File,
}

impl Read for Pipes {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read.read(buf)
    }
}

impl Write for Pipes {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.write.flush()
    }
}
