//! The protocol core of the user-mode network: wire formats, the virtual gateway, and (next)
//! the TCP/UDP/ICMP flow state that the NAT layer drives.
//!
//! The core is pure: no sockets, no clock reads (time arrives as an argument), no allocation
//! per frame, and no panic on any input. Frames are parsed through checked views that
//! validate lengths once ([`wire`]); replies are built in place in a [`FrameBatch`], checksum
//! last. Every frame the gateway refuses is counted under one [`DropReason`].
//!
//! ```text
//!  guest frame ──> Gateway::process_frame ──┬─ ARP request for .1/.254 ──> reply ─┐
//!                                           ├─ ICMP echo to .1/.254 ────> reply ─┤──> FrameBatch
//!                                           ├─ valid TCP/UDP/ICMP ──> Verdict::Transport
//!                                           │                          (NAT, DHCP, DNS, API)
//!                                           └─ anything else ──> Verdict::Dropped(reason)
//!                                                                 + DropCounters[reason]
//! ```

#![forbid(unsafe_code)]

pub mod batch;
pub mod counters;
pub mod gateway;
pub mod tcp;
pub mod wire;

pub use batch::FrameBatch;
pub use counters::{DropCounters, DropReason};
pub use gateway::{Gateway, GatewayConfig, GatewayCounters, Verdict};
