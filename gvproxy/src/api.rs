//! gvproxy's side of the control API: the [`Backend`] the HTTP handlers call, over the
//! switch loop's and shards' channels, the DNS server and the port forwarder; and the
//! [`GuestDialer`] that carries forwarded connections into the guests through the shards.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::bounded;
use log::warn;
use serde_json::{json, Map, Value};

use services::api::{ApiError, Backend, Forward};
use services::dns::{DnsServer, Zone};
use services::forwarder::{Forwarder, GuestDialer};
use stack::shard::{ShardHandle, ShardMsg};
use transports::framing::Framing;
use transports::link::{Link, LinkIo};

use crate::netloop::{Command, Handle, NewLink, TX_LIMIT_BYTES};

const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// Carries host connections into the guests: each goes to one shard, round robin.
pub struct ShardDialer {
    shards: Vec<ShardHandle>,
    next: AtomicUsize,
}

impl ShardDialer {
    pub fn new(shards: Vec<ShardHandle>) -> Arc<ShardDialer> {
        Arc::new(ShardDialer {
            shards,
            next: AtomicUsize::new(0),
        })
    }

    fn pick(&self) -> Option<&ShardHandle> {
        let n = self.shards.len();
        (n > 0).then(|| &self.shards[self.next.fetch_add(1, Ordering::Relaxed) % n])
    }
}

impl GuestDialer for ShardDialer {
    fn open_tcp(&self, host: OwnedFd, guest: SocketAddrV4, tag: u64) {
        match self.pick() {
            Some(s) if s.send(ShardMsg::OpenTcp { host, guest, tag }) => {}
            _ => warn!("no shard took a connection to {guest}"),
        }
    }

    fn serve_udp(&self, socket: UdpSocket, guest: SocketAddrV4, tag: u64) {
        match self.pick() {
            Some(s) if s.send(ShardMsg::ServeUdp { socket, guest, tag }) => {}
            _ => warn!("no shard took the UDP forward to {guest}"),
        }
    }

    fn close_tag(&self, tag: u64) {
        for s in &self.shards {
            s.send(ShardMsg::CloseTag(tag));
        }
    }
}

/// What the API endpoints read and change.
pub struct GvBackend {
    pub handle: Handle,
    pub dns: Arc<DnsServer>,
    pub forwarder: Arc<Forwarder>,
    pub dialer: Arc<ShardDialer>,
    pub mtu: u16,
}

impl GvBackend {
    fn ask<T>(
        &self,
        make: impl FnOnce(crossbeam_channel::Sender<T>) -> Command,
    ) -> Result<T, ApiError> {
        let (tx, rx) = bounded(1);
        if !self.handle.send(make(tx)) {
            return Err(ApiError::unavailable("the switch loop is gone"));
        }
        rx.recv_timeout(REPLY_TIMEOUT)
            .map_err(|_| ApiError::unavailable("the switch loop did not answer"))
    }
}

impl Backend for GvBackend {
    fn stats(&self) -> Result<Value, ApiError> {
        let mut v = self
            .handle
            .stats()
            .ok_or_else(|| ApiError::unavailable("the switch loop did not answer"))?;
        if let (Some(m), Ok(dns)) = (v.as_object_mut(), serde_json::to_value(self.dns.counters())) {
            m.insert("dns".into(), dns);
        }
        Ok(v)
    }

    fn cam(&self) -> Result<Value, ApiError> {
        let cam = self.ask(Command::Cam)?;
        let m: Map<String, Value> = cam
            .into_iter()
            .map(|(mac, port)| (mac.to_string(), json!(port)))
            .collect();
        Ok(Value::Object(m))
    }

    fn leases(&self) -> Result<Value, ApiError> {
        let leases = self.ask(Command::Leases)?;
        let m: Map<String, Value> = leases
            .into_iter()
            .map(|(ip, mac)| (ip.to_string(), json!(mac.to_string())))
            .collect();
        Ok(Value::Object(m))
    }

    fn dns_zones(&self) -> Result<Value, ApiError> {
        serde_json::to_value(self.dns.zones()).map_err(|e| ApiError::unavailable(e.to_string()))
    }

    fn dns_add(&self, zone: Value) -> Result<(), ApiError> {
        let zone: Zone = serde_json::from_value(zone)
            .map_err(|e| ApiError::bad_request(format!("bad zone: {e}")))?;
        self.dns.add_zone(zone);
        Ok(())
    }

    fn forwards(&self) -> Result<Vec<Forward>, ApiError> {
        Ok(self.forwarder.all())
    }

    fn expose(&self, forward: Forward) -> Result<(), ApiError> {
        self.forwarder.expose(forward)
    }

    fn unexpose(&self, forward: Forward) -> Result<(), ApiError> {
        self.forwarder.unexpose(&forward)
    }

    fn connect(&self, socket: OwnedFd, leftover: Vec<u8>, vnet: bool) {
        let io = if vnet {
            LinkIo::VnetStream(socket)
        } else {
            LinkIo::Stream {
                read: socket,
                write: None,
            }
        };
        let mut link = Link::new(
            io,
            Framing::LenU16Le,
            usize::from(self.mtu) + 14,
            TX_LIMIT_BYTES,
        );
        link.prefill(&leftover);
        self.handle.add_link(NewLink {
            link,
            name: if vnet { "/connect-vnet" } else { "/connect" }.into(),
            fatal_on_close: false,
            on_close: None,
        });
    }

    fn tunnel(&self, socket: OwnedFd, leftover: Vec<u8>, ip: Ipv4Addr, port: u16) {
        if !leftover.is_empty() {
            // Bytes the client sent right after the request go first.
            let mut s = std::os::unix::net::UnixStream::from(socket);
            let (ours, theirs) = match std::os::unix::net::UnixStream::pair() {
                Ok(p) => p,
                Err(e) => {
                    warn!("/tunnel: {e}");
                    return;
                }
            };
            splice_prefixed(s.try_clone().ok(), &mut s, ours, leftover);
            self.dialer
                .open_tcp(theirs.into(), SocketAddrV4::new(ip, port), 0);
            return;
        }
        self.dialer.open_tcp(socket, SocketAddrV4::new(ip, port), 0);
    }
}

/// Rare case of a `/tunnel` client that wrote before reading `OK`: relay through a
/// socketpair whose first bytes are the leftover.
fn splice_prefixed(
    reader: Option<std::os::unix::net::UnixStream>,
    client: &mut std::os::unix::net::UnixStream,
    ours: std::os::unix::net::UnixStream,
    leftover: Vec<u8>,
) {
    use std::io::{copy, Write};
    let (Some(mut client_r), Ok(mut ours_w), Ok(mut ours_r)) =
        (reader, ours.try_clone(), ours.try_clone())
    else {
        return;
    };
    let Ok(mut client_w) = client.try_clone() else {
        return;
    };
    std::thread::spawn(move || {
        if ours_w.write_all(&leftover).is_ok() {
            let _ = copy(&mut client_r, &mut ours_w);
        }
        let _ = ours_w.shutdown(std::net::Shutdown::Write);
    });
    std::thread::spawn(move || {
        let _ = copy(&mut ours_r, &mut client_w);
        let _ = client_w.shutdown(std::net::Shutdown::Write);
    });
}
