//! ICMP echo through unprivileged ICMP datagram sockets ("ping sockets",
//! `socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP)`, allowed for the groups in
//! `net.ipv4.ping_group_range`).
//!
//! One socket per (guest address, echo identifier, destination), connected to the NATed
//! destination. The kernel replaces the identifier with the socket's own; the reply gets
//! the guest's identifier back, so the guest's `ping` recognises it. Where ping sockets
//! are not permitted, that is said once in the log and echo requests are dropped.

use std::io::{self, Read};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use mio::unix::SourceFd;
use mio::{Interest, Registry};
use socket2::{Domain, Protocol as SockProtocol, SockAddr, Socket, Type};

use crate::counters::DropReason;
use crate::flow::FlowKey;
use crate::nat::Destination;
use crate::wire::{Icmpv4Packet, Icmpv4Repr, Icmpv4Type, Ipv4Packet, MacAddr};

use super::table::{self, FlowId, Kind};
use super::{later, Flow, Proto, Shard};

/// Replies read from one socket per turn.
const READ_BUDGET: usize = 64;

/// "Ping sockets are not permitted" is logged once per process.
static NOT_PERMITTED_LOGGED: AtomicBool = AtomicBool::new(false);

pub(super) struct IcmpFlow {
    sock: Socket,
    last_active: Instant,
    pub readable: bool,
}

impl IcmpFlow {
    pub fn close(self, registry: &Registry) {
        let fd = self.sock.as_raw_fd();
        let _ = registry.deregister(&mut SourceFd(&fd));
    }
}

fn open_ping_socket(host: Ipv4Addr) -> io::Result<Socket> {
    let sock = Socket::new(
        Domain::IPV4,
        Type::DGRAM.nonblocking(),
        Some(SockProtocol::ICMPV4),
    )?;
    sock.connect(&SockAddr::from(SocketAddrV4::new(host, 0)))?;
    Ok(sock)
}

impl Shard {
    /// A guest ICMP message (the gateway already answered echo to its own addresses).
    pub(super) fn process_icmp(
        &mut self,
        guest_mac: MacAddr,
        ip: &Ipv4Packet<&[u8]>,
        now: Instant,
    ) {
        let msg = ip.payload_slice();
        let Ok(icmp) = Icmpv4Packet::new_checked(msg) else {
            self.counters.drops.count(DropReason::IcmpMalformed);
            return;
        };
        if icmp.msg_type() != Icmpv4Type::ECHO_REQUEST || icmp.code() != 0 {
            // Errors about our replies, timestamps...: not forwarded.
            self.counters.icmp.unsupported_dropped += 1;
            return;
        }
        let key = FlowKey::icmp(ip.src(), icmp.echo_ident(), ip.dst());
        let id = match self.index.get(&key) {
            Some(&id) => id,
            None => match self.cfg.nat.resolve(ip.dst()) {
                Destination::Host(host) => {
                    if self.flow_limit_reached() {
                        self.counters.icmp.flow_limit += 1;
                        return;
                    }
                    match self.icmp_open(key, guest_mac, host, now) {
                        Some(id) => id,
                        None => return,
                    }
                }
                // Nobody there (or not ours to ping): no answer, as on a real LAN.
                Destination::Gateway
                | Destination::InSubnetUnused
                | Destination::LinkLocalRefused
                | Destination::Broadcast
                | Destination::Unroutable => {
                    self.counters.icmp.policy_dropped += 1;
                    return;
                }
            },
        };
        let Some(Flow {
            proto: Proto::Icmp(f),
            guest_mac: mac,
            ..
        }) = self.flows.get_mut(id)
        else {
            return;
        };
        *mac = guest_mac;
        f.last_active = now;
        // The kernel checks type and code, sets the identifier and the checksum.
        match f.sock.send(msg) {
            Ok(_) => self.counters.icmp.echo_requests += 1,
            Err(e) => {
                self.counters.icmp.send_errors += 1;
                log::trace!("shard {}: {key}: send failed: {e}", self.id);
            }
        }
    }

    fn icmp_open(
        &mut self,
        key: FlowKey,
        guest_mac: MacAddr,
        host: Ipv4Addr,
        now: Instant,
    ) -> Option<FlowId> {
        let id = self.flows.next_id();
        let sock = match open_ping_socket(host) {
            Ok(s) => s,
            Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM)) => {
                self.counters.icmp.not_permitted += 1;
                if !NOT_PERMITTED_LOGGED.swap(true, Ordering::Relaxed) {
                    log::warn!(
                        "ICMP echo from guests is dropped: ping sockets are not permitted \
                         for this process ({e}); allow its group in net.ipv4.ping_group_range"
                    );
                }
                return None;
            }
            Err(e) => {
                self.counters.icmp.socket_errors += 1;
                log::debug!("shard {}: {key}: cannot open a ping socket: {e}", self.id);
                return None;
            }
        };
        let fd = sock.as_raw_fd();
        if let Err(e) = self.poll.registry().register(
            &mut SourceFd(&fd),
            table::token(Kind::Flow, id),
            Interest::READABLE,
        ) {
            self.counters.icmp.socket_errors += 1;
            log::debug!("shard {}: {key}: cannot watch a ping socket: {e}", self.id);
            return None;
        }
        self.counters.icmp.flows_created += 1;
        let flow = IcmpFlow {
            sock,
            last_active: now,
            readable: false,
        };
        let got = self.insert_flow(key, guest_mac, None, Proto::Icmp(flow));
        self.schedule(got, Some(later(now, self.cfg.icmp_idle)));
        Some(got)
    }

    /// Echo replies to the guest, with its identifier restored.
    pub(super) fn service_icmp(&mut self, id: FlowId, now: Instant) {
        let Some(Flow {
            proto: Proto::Icmp(f),
            guest_mac,
            key,
            ..
        }) = self.flows.get_mut(id)
        else {
            return;
        };
        let mut again = false;
        let mut n_read = 0;
        while f.readable {
            if n_read >= READ_BUDGET || !self.out.can_send() {
                again = true;
                break;
            }
            n_read += 1;
            match (&f.sock).read(&mut self.scratch) {
                Ok(n) => {
                    let Some(Ok(reply)) = self.scratch.get(..n).map(Icmpv4Packet::new_checked)
                    else {
                        continue;
                    };
                    if reply.msg_type() != Icmpv4Type::ECHO_REPLY {
                        continue;
                    }
                    f.last_active = now;
                    self.counters.icmp.echo_replies += 1;
                    let msg = Icmpv4Repr::EchoReply {
                        ident: key.guest.port(),
                        seq_no: reply.echo_seq_no(),
                        data: reply.data_slice(),
                    };
                    self.out
                        .icmp(*guest_mac, *key.remote.ip(), *key.guest.ip(), &msg);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => f.readable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // A queued error (unreachable...): the guest's ping sees no answer.
                Err(_) => {}
            }
        }
        if again {
            self.mark_dirty(id);
        }
    }

    pub(super) fn icmp_timer(&mut self, id: FlowId, now: Instant) {
        let Some(Flow {
            proto: Proto::Icmp(f),
            ..
        }) = self.flows.get_mut(id)
        else {
            return;
        };
        let expiry = later(f.last_active, self.cfg.icmp_idle);
        if expiry <= now {
            self.counters.icmp.flows_expired += 1;
            self.remove_flow(id);
        } else {
            self.schedule(id, Some(expiry));
        }
    }
}
