//! The user-mode network's stack: wire formats, the virtual gateway, the guest-side TCP
//! engine, and the NAT that re-originates guest flows as host sockets.
//!
//! Two layers. The protocol core is pure: no sockets, no clock reads (time arrives as an
//! argument), no allocation per frame, and no panic on any input. Frames are parsed through
//! checked views that validate lengths once ([`wire`]); replies are built in place in a
//! [`FrameBatch`], checksum last. Every frame the gateway refuses is counted under one
//! [`DropReason`]. The I/O layer ([`shard`]) is the only part with sockets: each shard is a
//! mio loop on a thread of its own that owns the flows hashed to it ([`flow`]), decides with
//! the [`nat`] policy where they may go, and drives [`tcp`] connections and UDP/ICMP
//! associations against host sockets.
//!
//! ```text
//!  guest frame ──> Gateway::process_frame ──┬─ ARP request for .1/.254 ──> reply ─┐
//!                                           ├─ ICMP echo to .1 ─────────> reply ─┤──> FrameBatch
//!                                           ├─ valid TCP/UDP/ICMP ──> Verdict::Transport
//!                                           │     └─> FlowKey ─> shard_of ─> shard k (NAT, host sockets)
//!                                           └─ anything else ──> Verdict::Dropped(reason)
//!                                                                 + DropCounters[reason]
//! ```

#![forbid(unsafe_code)]

pub mod batch;
pub mod counters;
pub mod flow;
pub mod gateway;
pub mod nat;
pub mod shard;
pub mod tcp;
pub mod wire;

pub use batch::FrameBatch;
pub use counters::{DropCounters, DropReason};
pub use gateway::{Gateway, GatewayConfig, GatewayCounters, Verdict};
