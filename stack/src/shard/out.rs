//! Frames for the guests: built in place in a [`FrameBatch`], handed to the switch loop in
//! batches, and recycled when the switch is done with them.
//!
//! Batching adapts to load: at the end of a turn the batch is handed over only if fewer
//! than [`EAGER_OUTSTANDING`] batches are at the switch (an idle pipeline: lowest
//! latency); otherwise frames accumulate until a batch comes back (which wakes the shard)
//! or the batch is full. Under load batches are large and hand-overs few.
//!
//! Backpressure: at most [`MAX_OUTSTANDING`] batches are at the switch at once. When they
//! are all out and the current batch is full, the shard stops producing bulk output (it
//! stops reading host sockets and polling connections for data) until a batch comes back,
//! so a slow guest link slows the host senders instead of growing memory or dropping.

use std::net::Ipv4Addr;
use std::sync::Arc;

use crossbeam_channel::Sender;
use mio::Waker;

use crate::batch::FrameBatch;
use crate::counters::{DropCounters, DropReason};
use crate::gateway::DEFAULT_TTL;
use crate::tcp::{Endpoints, SegmentSink, TcpRepr};
use crate::wire::checksum::L4Checksum;
use crate::wire::{Icmpv4Repr, Ipv4FrameRepr, MacAddr, UdpRepr};

use super::stats::FrameCounters;
use super::SwitchMsg;

/// A batch is handed over once it holds this many bytes (and at the end of every turn).
pub(crate) const BATCH_BYTES: usize = 512 << 10;
/// Batches at the switch before the shard holds back bulk output.
pub(crate) const MAX_OUTSTANDING: usize = 8;
/// At the end of a turn a partial batch is handed over only below this many at the switch.
pub(crate) const EAGER_OUTSTANDING: usize = 2;

pub(crate) struct Out {
    shard: usize,
    gateway_mac: MacAddr,
    batch: FrameBatch,
    spare: Vec<FrameBatch>,
    outstanding: usize,
    to_switch: Sender<SwitchMsg>,
    switch_waker: Arc<Waker>,
    ident: u16,
    /// The switch loop is gone: frames are dropped.
    closed: bool,
    /// How TCP and UDP checksums are written (`ShardConfig::l4_checksum`).
    pub l4_checksum: L4Checksum,
    pub counters: FrameCounters,
    pub drops: DropCounters,
}

impl Out {
    pub fn new(
        shard: usize,
        gateway_mac: MacAddr,
        to_switch: Sender<SwitchMsg>,
        switch_waker: Arc<Waker>,
    ) -> Out {
        Out {
            shard,
            gateway_mac,
            batch: new_batch(),
            spare: Vec::new(),
            outstanding: 0,
            to_switch,
            switch_waker,
            ident: 1,
            closed: false,
            l4_checksum: L4Checksum::Full,
            counters: FrameCounters::default(),
            drops: DropCounters::default(),
        }
    }

    /// Whether bulk output may be produced now.
    pub fn can_send(&self) -> bool {
        self.batch.bytes() < BATCH_BYTES || self.outstanding < MAX_OUTSTANDING
    }

    /// A batch the switch is done with.
    pub fn recycle(&mut self, mut batch: FrameBatch) {
        self.outstanding = self.outstanding.saturating_sub(1);
        if self.spare.len() < MAX_OUTSTANDING {
            batch.clear();
            self.spare.push(batch);
        }
    }

    /// End of a turn: hands the current batch to the switch if the pipeline is idle enough
    /// (else it grows until a batch comes back). Returns false when frames stay held back.
    pub fn flush(&mut self) -> bool {
        if self.batch.is_empty() {
            return true;
        }
        if self.outstanding >= MAX_OUTSTANDING {
            self.counters.output_stalls += 1;
            return false;
        }
        if self.outstanding >= EAGER_OUTSTANDING && self.batch.bytes() < BATCH_BYTES {
            return false;
        }
        self.ship();
        true
    }

    fn ship(&mut self) {
        let next = self.spare.pop().unwrap_or_else(new_batch);
        let batch = std::mem::replace(&mut self.batch, next);
        if self.closed {
            self.spare.push(batch);
            return;
        }
        self.counters.batches_out += 1;
        self.outstanding += 1;
        let msg = SwitchMsg::Frames {
            shard: self.shard,
            batch,
        };
        if self.to_switch.send(msg).is_err() {
            self.closed = true;
            return;
        }
        let _ = self.switch_waker.wake();
    }

    fn after_push(&mut self, len: usize) {
        self.counters.frames_out += 1;
        self.counters.bytes_out += len as u64;
        if self.batch.bytes() >= BATCH_BYTES && self.outstanding < MAX_OUTSTANDING {
            self.ship();
        }
    }

    fn take_ident(&mut self) -> u16 {
        let id = self.ident;
        self.ident = self.ident.wrapping_add(1);
        id
    }

    fn frame(&mut self, dst_mac: MacAddr, src: Ipv4Addr, dst: Ipv4Addr, df: bool) -> Ipv4FrameRepr {
        Ipv4FrameRepr {
            src_mac: self.gateway_mac,
            dst_mac,
            src_ip: src,
            dst_ip: dst,
            ttl: DEFAULT_TTL,
            ident: self.take_ident(),
            dont_frag: df,
            dscp_ecn: 0,
        }
    }

    /// A TCP segment from `ep.remote` to `ep.guest`.
    pub fn tcp(&mut self, guest_mac: MacAddr, ep: &Endpoints, repr: &TcpRepr, payload: [&[u8]; 2]) {
        let fr = self.frame(guest_mac, *ep.remote.ip(), *ep.guest.ip(), true);
        let plen = payload[0].len() + payload[1].len();
        let at = repr.frame_payload_offset();
        let csum = self.l4_checksum;
        let r = self.batch.try_push_parts(at, payload, |buf| {
            repr.emit_frame_csum(buf, &fr, plen, csum)
        });
        match r {
            Ok(n) => self.after_push(n),
            Err(_) => self.drops.count(DropReason::ReplyBuildFailed),
        }
    }

    /// A UDP datagram from `remote` to `guest` whose payload is `payload`.
    pub fn udp(
        &mut self,
        guest_mac: MacAddr,
        remote: std::net::SocketAddrV4,
        guest: std::net::SocketAddrV4,
        payload: &[u8],
    ) {
        let fr = self.frame(guest_mac, *remote.ip(), *guest.ip(), false);
        let repr = UdpRepr {
            src_port: remote.port(),
            dst_port: guest.port(),
        };
        let at = UdpRepr::frame_payload_offset();
        let csum = self.l4_checksum;
        let r = self.batch.try_push_parts(at, [payload, &[]], |buf| {
            repr.emit_frame_csum(buf, &fr, payload.len(), csum)
        });
        match r {
            Ok(n) => self.after_push(n),
            Err(_) => self.drops.count(DropReason::ReplyBuildFailed),
        }
    }

    /// An ICMP message from `src` to `dst`.
    pub fn icmp(&mut self, guest_mac: MacAddr, src: Ipv4Addr, dst: Ipv4Addr, msg: &Icmpv4Repr<'_>) {
        let fr = self.frame(guest_mac, src, dst, false);
        let len = Ipv4FrameRepr::HEADER_LEN + msg.buffer_len();
        match self
            .batch
            .try_push_with(len, |buf| msg.emit_frame(buf, &fr))
        {
            Ok(n) => self.after_push(n),
            Err(_) => self.drops.count(DropReason::ReplyBuildFailed),
        }
    }

    /// ICMP destination unreachable (`code`) from `src` about `original`: the guest's IPv4
    /// packet, whole or already cut to its header + 8 bytes. RFC 792: quote "the internet
    /// header plus the first 64 bits of the original datagram's data".
    pub fn unreachable(&mut self, guest_mac: MacAddr, src: Ipv4Addr, code: u8, original: &[u8]) {
        let ihl = original.first().map_or(0, |b| usize::from(b & 0x0f) * 4);
        let (Some(quote), Some(dst)) = (
            original.get(..(ihl + 8).min(original.len())),
            original.get(12..16),
        ) else {
            self.drops.count(DropReason::ReplyBuildFailed);
            return;
        };
        if ihl < 20 {
            self.drops.count(DropReason::ReplyBuildFailed);
            return;
        }
        let dst = Ipv4Addr::new(dst[0], dst[1], dst[2], dst[3]);
        let msg = Icmpv4Repr::DstUnreachable {
            code,
            next_hop_mtu: 0,
            original: quote,
        };
        self.icmp(guest_mac, src, dst, &msg);
    }
}

fn new_batch() -> FrameBatch {
    FrameBatch::with_capacity(64 << 10, 64)
}

/// Where a connection's segments go: Ethernet + IPv4 around them, into the batch.
pub(crate) struct TcpSink<'a> {
    pub out: &'a mut Out,
    pub guest_mac: MacAddr,
    pub ep: Endpoints,
}

impl SegmentSink for TcpSink<'_> {
    fn emit(&mut self, repr: &TcpRepr, payload: [&[u8]; 2]) {
        self.out.tcp(self.guest_mac, &self.ep, repr, payload);
    }
}

/// Swallows segments (a connection closed in favour of an ICMP error).
pub(crate) struct NullSink;

impl SegmentSink for NullSink {
    fn emit(&mut self, _repr: &TcpRepr, _payload: [&[u8]; 2]) {}
}
