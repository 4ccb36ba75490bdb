//! Shard counters: per protocol, per shard, summed by the caller for `/stats`.

use crate::counters::DropCounters;
use crate::tcp::TcbStats;

macro_rules! counter_struct {
    ($(#[$sdoc:meta])* $name:ident { $($(#[$doc:meta])* $field:ident,)* }) => {
        $(#[$sdoc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct $name {
            $($(#[$doc])* pub $field: u64,)*
        }

        impl $name {
            /// Adds another set (e.g. summing shards).
            pub fn add(&mut self, other: &Self) {
                $(self.$field += other.$field;)*
            }

            /// `(name, value)` for every counter, in declaration order.
            pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> {
                [$((stringify!($field), self.$field),)*].into_iter()
            }
        }
    };
}

counter_struct! {
    /// TCP flows (guest connections re-originated as host connections).
    TcpCounters {
        /// Flows in the table now (any state, TIME-WAIT included).
        flows_open,
        /// Host `connect()`s in progress now.
        connecting,
        /// Guest SYNs that started a host `connect()`.
        connects_started,
        /// Host connections set up (SYN-ACK sent to the guest).
        connects_ok,
        /// Host said ECONNREFUSED: RST to the guest.
        connects_refused,
        /// Host or network unreachable: ICMP unreachable to the guest.
        connects_unreachable,
        /// No answer within the connect timeout: RST to the guest.
        connects_timed_out,
        /// Any other connect failure (out of file descriptors...): RST to the guest.
        connects_failed,
        /// SYNs to the gateway, unused subnet addresses or link-local: RST.
        policy_rejected,
        /// Segments for no flow answered with RST (RFC 9293 §3.10.7.1).
        rst_for_unknown,
        /// Established host connections that failed or were reset by the host.
        host_resets,
        /// Flows closed and forgotten.
        flows_closed,
        /// Guest bytes written to host sockets.
        bytes_to_host,
        /// Host bytes read for the guest.
        bytes_from_host,
        /// New flows refused because the shard's table is full.
        flow_limit,
    }
}

counter_struct! {
    /// UDP flows: one connected host socket per (guest address:port, destination).
    UdpCounters {
        flows_open,
        flows_created,
        /// Closed after the idle timeout.
        flows_expired,
        datagrams_to_host,
        bytes_to_host,
        /// sendmsg() calls that carried several guest datagrams of one flow (UDP_SEGMENT).
        gso_sends,
        datagrams_from_host,
        bytes_from_host,
        /// ICMP port unreachable sent to the guest (host ECONNREFUSED, gateway, unused address).
        port_unreachable_sent,
        /// Datagrams to a broadcast address.
        broadcast_dropped,
        /// Link-local (without -ec2-metadata-access) or unroutable destinations.
        policy_dropped,
        /// Host datagrams larger than the MTU allows (no fragmentation).
        too_big_dropped,
        /// Host socket send failures (buffer full, no route...).
        send_errors,
        /// Socket creation failures.
        socket_errors,
        /// New flows refused because the shard's table is full.
        flow_limit,
    }
}

counter_struct! {
    /// ICMP echo through unprivileged ping sockets.
    IcmpCounters {
        flows_open,
        flows_created,
        flows_expired,
        echo_requests,
        echo_replies,
        /// Ping sockets are not permitted (net.ipv4.ping_group_range): dropped.
        not_permitted,
        /// Echo to addresses never pinged (unused subnet addresses, link-local...).
        policy_dropped,
        /// ICMP from the guest other than echo requests.
        unsupported_dropped,
        send_errors,
        socket_errors,
        flow_limit,
    }
}

counter_struct! {
    /// Gateway services and forwards into the guests (also counted in `tcp` / `udp` as flows).
    ForwardCounters {
        /// Guest connections to a gateway TCP service handed to it.
        local_accepted,
        /// Guest connections to a gateway TCP service refused (channel full or gone): RST.
        local_refused,
        /// Guest UDP flows to a gateway UDP service (NATed to its host address).
        service_udp_flows,
        /// `OpenTcp` requests.
        active_opens,
        /// Active opens the guest accepted (its SYN-ACK arrived).
        active_open_established,
        /// Active opens that failed (not a guest address, unusable host socket, flow
        /// limit, guest RST, SYN retries exhausted).
        active_open_failed,
        /// Active opens refused because no source port hashing to this shard was free.
        active_open_no_port,
        /// `ServeUdp` sockets open now.
        serve_sockets_open,
        /// `ServeUdp` sockets refused (not a guest address, cannot be watched).
        serve_refused,
        /// Reverse UDP flows (client of a serve socket ↔ guest) open now.
        reverse_flows_open,
        reverse_flows_created,
        /// Closed after the idle timeout.
        reverse_flows_expired,
        /// Datagrams from serve socket clients sent to the guest.
        reverse_datagrams_to_guest,
        /// Guest datagrams sent back to serve socket clients.
        reverse_datagrams_to_client,
        /// Client datagrams dropped: too many clients on the socket, no free port, the
        /// flow limit, or larger than the MTU allows.
        reverse_dropped,
        /// `CloseTag` messages.
        close_tag_msgs,
        /// TCP flows reset by `CloseTag`.
        tag_closed_tcp,
        /// UDP flows dropped by `CloseTag`.
        tag_closed_udp,
        /// Serve sockets closed by `CloseTag`.
        tag_closed_serve_sockets,
    }
}

counter_struct! {
    /// The shard's own frame traffic.
    FrameCounters {
        /// Guest frames received from the switch.
        frames_in,
        /// Frames sent to guests.
        frames_out,
        bytes_out,
        /// Batches handed to the switch.
        batches_out,
        /// Turns that ended with output held back because the switch had not returned
        /// enough batches yet (backpressure from the guest links).
        output_stalls,
    }
}

/// A snapshot of one shard's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardStats {
    pub shard: usize,
    pub tcp: TcpCounters,
    /// Sum of the TCP engine's per-connection counters (closed and open connections).
    pub tcp_engine: TcbStats,
    pub udp: UdpCounters,
    pub icmp: IcmpCounters,
    /// Gateway services, port forwards and tunnels.
    pub forward: ForwardCounters,
    pub frames: FrameCounters,
    /// Guest frames the shard could not use (malformed; never expected after the gateway).
    pub drops: DropCounters,
}

impl ShardStats {
    /// Adds another shard's counters (the `shard` number is kept).
    pub fn add(&mut self, other: &ShardStats) {
        self.tcp.add(&other.tcp);
        add_tcb_stats(&mut self.tcp_engine, &other.tcp_engine);
        self.udp.add(&other.udp);
        self.icmp.add(&other.icmp);
        self.forward.add(&other.forward);
        self.frames.add(&other.frames);
        self.drops.add(&other.drops);
    }

    /// Open flows of every protocol.
    pub fn flows_open(&self) -> u64 {
        self.tcp.flows_open + self.udp.flows_open + self.icmp.flows_open
    }
}

/// `a += b` field by field.
pub fn add_tcb_stats(a: &mut TcbStats, b: &TcbStats) {
    for ((_, x), (_, y)) in tcb_stats_fields_mut(a).into_iter().zip(tcb_stats_iter(b)) {
        *x += y;
    }
}

/// Every field by name. Destructured exhaustively: a new engine counter fails to compile
/// here until it is listed.
fn tcb_stats_fields_mut(s: &mut TcbStats) -> [(&'static str, &mut u64); 19] {
    let TcbStats {
        segments_in,
        segments_out,
        bytes_in,
        bytes_out,
        retransmits,
        retransmitted_bytes,
        fast_retransmits,
        spurious_retransmits,
        rto_expiries,
        dup_acks,
        sack_reneging,
        ooo_segments,
        ooo_dropped,
        unacceptable,
        challenge_acks,
        paws_rejected,
        window_probes,
        resets_in,
        resets_out,
    } = s;
    [
        ("segments_in", segments_in),
        ("segments_out", segments_out),
        ("bytes_in", bytes_in),
        ("bytes_out", bytes_out),
        ("retransmits", retransmits),
        ("retransmitted_bytes", retransmitted_bytes),
        ("fast_retransmits", fast_retransmits),
        ("spurious_retransmits", spurious_retransmits),
        ("rto_expiries", rto_expiries),
        ("dup_acks", dup_acks),
        ("sack_reneging", sack_reneging),
        ("ooo_segments", ooo_segments),
        ("ooo_dropped", ooo_dropped),
        ("unacceptable", unacceptable),
        ("challenge_acks", challenge_acks),
        ("paws_rejected", paws_rejected),
        ("window_probes", window_probes),
        ("resets_in", resets_in),
        ("resets_out", resets_out),
    ]
}

/// `(name, value)` for every field of the engine's counters.
pub fn tcb_stats_iter(s: &TcbStats) -> [(&'static str, u64); 19] {
    let mut c = *s;
    tcb_stats_fields_mut(&mut c).map(|(n, v)| (n, *v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_and_iter() {
        let mut a = ShardStats::default();
        let mut b = ShardStats {
            shard: 1,
            ..ShardStats::default()
        };
        b.tcp.flows_open = 2;
        b.udp.flows_open = 3;
        b.icmp.echo_replies = 4;
        b.tcp_engine.retransmits = 5;
        a.add(&b);
        a.add(&b);
        assert_eq!(a.shard, 0);
        assert_eq!(a.flows_open(), 10);
        assert_eq!(a.tcp_engine.retransmits, 10);
        assert!(a.icmp.iter().any(|(n, v)| n == "echo_replies" && v == 8));
        assert!(tcb_stats_iter(&a.tcp_engine)
            .iter()
            .any(|&(n, v)| n == "retransmits" && v == 10));
        assert_eq!(a.tcp.iter().count(), 15);
    }
}
