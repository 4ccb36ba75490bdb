//! Acceptor threads: one per listening endpoint. They do the blocking part of a new
//! link (accept, the HyperKit handshake, the `/connect` request head, vfkit's first
//! datagram) and hand a ready [`Link`] to the switch loop.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::thread;
use std::time::Duration;

use log::{info, warn};
use socket2::Socket;

use stack::wire::MacAddr;
use transports::framing::Framing;
use transports::link::{Link, LinkIo};
use transports::listen::{accept_seqpacket, accept_vfkit, Listener};

use services::api;
use services::notify::{Notification, Notifier};
use stack::shard::LocalConn;

use crate::api::GvBackend;
use crate::netloop::{Handle, NewLink, TX_LIMIT_BYTES};

/// How long a client may take to send its request head or handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings every acceptor needs.
#[derive(Clone)]
pub struct Ctx {
    pub handle: Handle,
    pub backend: std::sync::Arc<GvBackend>,
    pub notifier: Notifier,
    pub mtu: u16,
    pub vpnkit_macs: Vec<(String, MacAddr)>,
}

impl Ctx {
    fn frame_hint(&self) -> usize {
        usize::from(self.mtu) + 14
    }

    fn stream_link(&self, fd: OwnedFd, framing: Framing) -> Link {
        Link::new(
            LinkIo::Stream {
                read: fd,
                write: None,
            },
            framing,
            self.frame_hint(),
            TX_LIMIT_BYTES,
        )
    }

    fn hand_over(&self, link: Link, name: String) {
        if !self.handle.add_link(NewLink {
            link,
            name,
            fatal_on_close: false,
            on_close: None,
        }) {
            warn!("switch loop is gone; dropping a new link");
        }
    }
}

fn spawn(name: String, f: impl FnOnce() + Send + 'static) {
    if let Err(e) = thread::Builder::new().name(name.clone()).spawn(f) {
        warn!("{name}: cannot start a thread: {e}");
    }
}

/// Accepts forever, giving each connection to `serve` on a thread of its own so a slow
/// client cannot hold up the next one.
fn accept_loop(listener: Listener, what: String, ctx: Ctx, serve: fn(&Ctx, OwnedFd, String)) {
    spawn(format!("accept {what}"), move || loop {
        match listener.accept() {
            Ok((fd, peer)) => {
                let ctx = ctx.clone();
                let name = format!("{what} {peer}");
                spawn(name.clone(), move || serve(&ctx, fd, name));
            }
            Err(e) => {
                warn!("{what}: accept failed: {e}");
                ctx.notifier.send(Notification::hypervisor_error());
                thread::sleep(Duration::from_millis(100));
            }
        }
    });
}

/// `-listen`: the HTTP endpoint; `/connect` turns the connection into a VM link.
pub fn spawn_api(listener: Listener, url: String, ctx: Ctx) {
    accept_loop(listener, url, ctx, serve_api);
}

/// `-listen-qemu`: u32 big-endian framing from the first byte.
pub fn spawn_qemu(listener: Listener, url: String, ctx: Ctx) {
    accept_loop(listener, format!("qemu {url}"), ctx, |ctx, fd, name| {
        ctx.hand_over(ctx.stream_link(fd, Framing::Qemu), name);
    });
}

/// `-listen-vpnkit`: the VMN3T handshake, then u16 little-endian framing.
pub fn spawn_vpnkit(listener: Listener, url: String, ctx: Ctx) {
    accept_loop(listener, format!("vpnkit {url}"), ctx, serve_vpnkit);
}

fn serve_vpnkit(ctx: &Ctx, fd: OwnedFd, name: String) {
    let mut sock = Socket::from(fd);
    let _ = sock.set_read_timeout(Some(HANDSHAKE_TIMEOUT));
    let lookup = |uuid: &str| {
        ctx.vpnkit_macs
            .iter()
            .find(|(u, _)| u.eq_ignore_ascii_case(uuid))
            .map(|(_, m)| m.0)
    };
    match transports::hyperkit::server_handshake(&mut sock, ctx.mtu, &lookup) {
        Ok((uuid, mac)) => {
            info!("{name}: handshake done, uuid {uuid}, mac {}", MacAddr(mac));
            let _ = sock.set_read_timeout(None);
            ctx.hand_over(ctx.stream_link(sock.into(), Framing::LenU16Le), name);
        }
        Err(e) => {
            warn!("{name}: handshake failed: {e}");
            ctx.notifier.send(Notification::hypervisor_error());
        }
    }
}

/// `-listen-bess`: one SOCK_SEQPACKET message per frame.
pub fn spawn_bess(listener: OwnedFd, url: String, ctx: Ctx) {
    spawn(format!("accept bess {url}"), move || loop {
        match accept_seqpacket(&listener) {
            Ok(fd) => {
                let link = Link::new(
                    LinkIo::Packet(fd),
                    Framing::Message,
                    ctx.frame_hint(),
                    TX_LIMIT_BYTES,
                );
                ctx.hand_over(link, format!("bess {url}"));
            }
            Err(e) => {
                warn!("bess {url}: accept failed: {e}");
                ctx.notifier.send(Notification::hypervisor_error());
                thread::sleep(Duration::from_millis(100));
            }
        }
    });
}

/// `-listen-vfkit`: the peer's address comes from its first datagram. One peer at a
/// time; when its link fails, the next datagram names the next peer.
pub fn spawn_vfkit(sock: OwnedFd, url: String, ctx: Ctx) {
    spawn(format!("accept vfkit {url}"), move || loop {
        // The link shares this socket's file description and made it non-blocking.
        let _ = transports::set_nonblocking(std::os::fd::AsRawFd::as_raw_fd(&sock), false);
        let peer = match accept_vfkit(&sock) {
            Ok(p) => p,
            Err(e) => {
                warn!("vfkit {url}: {e}");
                ctx.notifier.send(Notification::hypervisor_error());
                thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let fd = match sock.as_fd().try_clone_to_owned() {
            Ok(fd) => fd,
            Err(e) => {
                warn!("vfkit {url}: {e}");
                thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        let name = format!("vfkit {url} peer {}", peer.display());
        let link = Link::new(
            LinkIo::Datagram { fd, peer },
            Framing::Message,
            ctx.frame_hint(),
            TX_LIMIT_BYTES,
        );
        let (tx, rx) = crossbeam_channel::bounded(1);
        if !ctx.handle.add_link(NewLink {
            link,
            name,
            fatal_on_close: false,
            on_close: Some(tx),
        }) {
            return;
        }
        let _ = rx.recv();
    });
}

/// `-listen-stdio`: u16 little-endian framing on stdin/stdout. Nobody can reconnect, so
/// when the peer goes, gvproxy goes.
pub fn stdio_link(ctx: &Ctx) -> io::Result<()> {
    let read = std::io::stdin().as_fd().try_clone_to_owned()?;
    let write = std::io::stdout().as_fd().try_clone_to_owned()?;
    let link = Link::new(
        LinkIo::Stream {
            read,
            write: Some(write),
        },
        Framing::LenU16Le,
        ctx.frame_hint(),
        TX_LIMIT_BYTES,
    );
    ctx.handle.add_link(NewLink {
        link,
        name: "stdio".to_string(),
        fatal_on_close: true,
        on_close: None,
    });
    Ok(())
}

/// `-listen-tap`: the TAP is a switch port like a VM link. Frames carry the virtio-net
/// header (TSO both ways) and may exceed the MTU.
pub fn tap_link(tap: transports::tap::ServedTap, ctx: &Ctx) {
    let link = Link::new(
        LinkIo::VnetTap(tap.fd),
        Framing::Message,
        ctx.frame_hint(),
        TX_LIMIT_BYTES,
    );
    ctx.handle.add_link(NewLink {
        link,
        name: format!("tap {}", tap.name),
        fatal_on_close: false,
        on_close: None,
    });
}

fn serve_api(ctx: &Ctx, fd: OwnedFd, _name: String) {
    api::serve_connection(Socket::from(fd), api::Endpoint::Listen, &*ctx.backend);
}

fn serve_services(ctx: &Ctx, fd: OwnedFd, _name: String) {
    api::serve_connection(Socket::from(fd), api::Endpoint::Services, &*ctx.backend);
}

/// `-services`: the API without `/connect`.
pub fn spawn_services(listener: Listener, url: String, ctx: Ctx) {
    accept_loop(listener, url, ctx, serve_services);
}

/// Guests' connections to the gateway's port 80 (the in-VM API) and 53 (DNS over TCP),
/// handed over by the shards.
pub fn spawn_local_service(
    name: &'static str,
    rx: crossbeam_channel::Receiver<LocalConn>,
    serve: impl Fn(LocalConn) + Send + Sync + 'static,
) {
    let serve = std::sync::Arc::new(serve);
    spawn(name.to_string(), move || {
        for conn in rx {
            let serve = serve.clone();
            spawn(format!("{name} {}", conn.guest), move || serve(conn));
        }
    });
}
