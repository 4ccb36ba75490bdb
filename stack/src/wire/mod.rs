//! Wire formats: checked, zero-copy views over byte buffers and in-place builders.
//!
//! The shape follows smoltcp: a view (`EthernetFrame<T>`, `Ipv4Packet<T>`, ...) wraps any
//! `T: AsRef<[u8]>`; `new_checked` validates every length the accessors rely on, once, so the
//! accessors never panic afterwards. Variable-length parts (options, payloads) are read with
//! `get()` so that even a setter misuse cannot turn into a panic. The `*Repr` types are the
//! emit side: they write headers in place into a caller's buffer (typically one frame of a
//! [`FrameBatch`](crate::batch::FrameBatch)) around a payload that is already there, and fill
//! the checksum last, once the payload is known.

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod icmpv4;
pub mod ipv4;
pub mod tcp;
pub mod udp;

use std::fmt;
use std::net::Ipv4Addr;

pub use arp::{ArpOperation, ArpPacket, ArpRepr};
pub use ethernet::{EtherType, EthernetFrame, EthernetRepr, MacAddr, ParseMacError};
pub use icmpv4::{Icmpv4Packet, Icmpv4Repr, Icmpv4Type, Icmpv4Unreachable};
pub use ipv4::{IpProtocol, Ipv4Packet, Ipv4Repr};
pub use tcp::{
    SackBlock, SackBlocks, SeqNumber, TcpFlags, TcpOption, TcpOptions, TcpPacket, TcpRepr,
    TcpTimestamps,
};
pub use udp::{UdpPacket, UdpRepr};

/// Why bytes could not be parsed, or a header could not be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WireError {
    /// The input is shorter than a header or a length field says.
    Truncated,
    /// A field holds a value the format forbids (bad version, length, option...).
    Malformed,
    /// Well-formed but not something we handle (e.g. ARP for another hardware type).
    Unsupported,
    /// The output buffer is too small, or a length does not fit its header field.
    Exhausted,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WireError::Truncated => "truncated",
            WireError::Malformed => "malformed",
            WireError::Unsupported => "unsupported",
            WireError::Exhausted => "buffer too small",
        })
    }
}

impl std::error::Error for WireError {}

/// Ethernet + IPv4 header fields of an outgoing frame (no VLAN tag, no IP options).
///
/// The transport `Repr`s use it to write a whole frame: `emit_frame` on `TcpRepr`, `UdpRepr`
/// and `Icmpv4Repr`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4FrameRepr {
    pub src_mac: MacAddr,
    pub dst_mac: MacAddr,
    pub src_ip: Ipv4Addr,
    pub dst_ip: Ipv4Addr,
    pub ttl: u8,
    pub ident: u16,
    pub dont_frag: bool,
    pub dscp_ecn: u8,
}

impl Ipv4FrameRepr {
    /// Ethernet (14) + IPv4 without options (20): where the transport header starts.
    pub const HEADER_LEN: usize =
        EthernetFrame::<&[u8]>::HEADER_LEN + Ipv4Packet::<&[u8]>::MIN_HEADER_LEN;

    /// Write the Ethernet and IPv4 headers for an IP payload of `ip_payload_len` bytes of
    /// `protocol`. Returns the whole frame length (`HEADER_LEN + ip_payload_len`).
    pub fn emit(
        &self,
        buf: &mut [u8],
        protocol: u8,
        ip_payload_len: usize,
    ) -> Result<usize, WireError> {
        let frame_len = Self::HEADER_LEN
            .checked_add(ip_payload_len)
            .ok_or(WireError::Exhausted)?;
        if buf.len() < frame_len {
            return Err(WireError::Exhausted);
        }
        EthernetRepr {
            src: self.src_mac,
            dst: self.dst_mac,
            ethertype: EtherType::IPV4,
        }
        .emit(buf)?;
        let ip = buf
            .get_mut(EthernetFrame::<&[u8]>::HEADER_LEN..)
            .ok_or(WireError::Exhausted)?;
        Ipv4Repr {
            src: self.src_ip,
            dst: self.dst_ip,
            protocol,
            payload_len: ip_payload_len,
            ttl: self.ttl,
            ident: self.ident,
            dont_frag: self.dont_frag,
            dscp_ecn: self.dscp_ecn,
        }
        .emit(ip)?;
        Ok(frame_len)
    }
}

// Big-endian field helpers. Callers pass offsets already validated by `new_checked`.

#[inline]
pub(crate) fn read_u16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline]
pub(crate) fn read_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[inline]
pub(crate) fn write_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

#[inline]
pub(crate) fn write_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

#[inline]
pub(crate) fn read_ipv4(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}

#[inline]
pub(crate) fn write_ipv4(b: &mut [u8], at: usize, a: Ipv4Addr) {
    b[at..at + 4].copy_from_slice(&a.octets());
}
