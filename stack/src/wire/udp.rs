//! UDP (RFC 768).

use std::net::Ipv4Addr;

use super::checksum::{self, L4Checksum};
use super::ipv4::IpProtocol;
use super::{read_u16, write_u16, Ipv4FrameRepr, WireError};

/// A checked view of a UDP datagram: src(2) dst(2) length(2) checksum(2) payload.
///
/// The buffer is the IP payload. `new_checked` guarantees 8 <= length field <= buffer length;
/// bytes past the length field are not part of the datagram (as Linux trims them).
#[derive(Clone, Copy, Debug)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    pub const HEADER_LEN: usize = 8;

    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let b = buffer.as_ref();
        if b.len() < Self::HEADER_LEN {
            return Err(WireError::Truncated);
        }
        // RFC 768: "Length is the length in octets of this user datagram including this
        // header and the data. (This means the minimum value of the length is eight.)"
        let len = usize::from(read_u16(b, 4));
        if len < Self::HEADER_LEN {
            return Err(WireError::Malformed);
        }
        if len > b.len() {
            return Err(WireError::Truncated);
        }
        Ok(UdpPacket { buffer })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    pub fn src_port(&self) -> u16 {
        read_u16(self.b(), 0)
    }

    pub fn dst_port(&self) -> u16 {
        read_u16(self.b(), 2)
    }

    /// The length field: header + payload.
    pub fn len(&self) -> usize {
        usize::from(read_u16(self.b(), 4))
    }

    /// Never true for a checked packet (the length is at least 8); here for clippy's sake.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn checksum(&self) -> u16 {
        read_u16(self.b(), 6)
    }

    pub fn payload(&self) -> &[u8] {
        self.b()
            .get(Self::HEADER_LEN..self.len())
            .unwrap_or_default()
    }

    /// RFC 768: checksum over the pseudo-header and the datagram; over IPv4 a zero checksum
    /// means the sender computed none, which verifies.
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        if self.checksum() == 0 {
            return true;
        }
        let len = self.len();
        let Some(datagram) = self.b().get(..len) else {
            return false;
        };
        checksum::combine(&[
            checksum::pseudo_header_v4(src, dst, IpProtocol::UDP, len),
            checksum::data(datagram),
        ]) == 0xffff
    }
}

impl<'a> UdpPacket<&'a [u8]> {
    /// [`payload`](Self::payload) with the buffer's lifetime.
    pub fn payload_slice(&self) -> &'a [u8] {
        self.buffer
            .get(Self::HEADER_LEN..self.len())
            .unwrap_or_default()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    pub fn set_src_port(&mut self, port: u16) {
        write_u16(self.buffer.as_mut(), 0, port);
    }

    pub fn set_dst_port(&mut self, port: u16) {
        write_u16(self.buffer.as_mut(), 2, port);
    }

    pub fn set_checksum(&mut self, c: u16) {
        write_u16(self.buffer.as_mut(), 6, c);
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        let len = self.len();
        self.buffer
            .as_mut()
            .get_mut(Self::HEADER_LEN..len)
            .unwrap_or_default()
    }

    /// Recompute the checksum; call after the payload and ports are final.
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        let len = self.len();
        if let Some(datagram) = self.buffer.as_mut().get_mut(..len) {
            fill(datagram, src, dst);
        }
    }
}

/// RFC 768: "If the computed checksum is zero, it is transmitted as all ones".
fn fill(datagram: &mut [u8], src: Ipv4Addr, dst: Ipv4Addr) {
    write_u16(datagram, 6, 0);
    let sum = checksum::combine(&[
        checksum::pseudo_header_v4(src, dst, IpProtocol::UDP, datagram.len()),
        checksum::data(datagram),
    ]);
    let c = !sum;
    write_u16(datagram, 6, if c == 0 { 0xffff } else { c });
}

/// The header of an outgoing UDP datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpRepr {
    pub src_port: u16,
    pub dst_port: u16,
}

impl UdpRepr {
    pub const HEADER_LEN: usize = 8;

    pub fn parse<T: AsRef<[u8]>>(p: &UdpPacket<T>) -> UdpRepr {
        UdpRepr {
            src_port: p.src_port(),
            dst_port: p.dst_port(),
        }
    }

    /// Writes the header in front of a payload already at `buf[8..8 + payload_len]` and fills
    /// the checksum last. Returns the datagram length.
    pub fn emit(
        &self,
        buf: &mut [u8],
        payload_len: usize,
        src: Ipv4Addr,
        dst: Ipv4Addr,
    ) -> Result<usize, WireError> {
        self.emit_csum(buf, payload_len, src, dst, L4Checksum::Full)
    }

    /// [`emit`](Self::emit) with the checksum written as `csum` says.
    pub fn emit_csum(
        &self,
        buf: &mut [u8],
        payload_len: usize,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        csum: L4Checksum,
    ) -> Result<usize, WireError> {
        let len = Self::HEADER_LEN
            .checked_add(payload_len)
            .ok_or(WireError::Exhausted)?;
        let len16 = u16::try_from(len).map_err(|_| WireError::Exhausted)?;
        let d = buf.get_mut(..len).ok_or(WireError::Exhausted)?;
        write_u16(d, 0, self.src_port);
        write_u16(d, 2, self.dst_port);
        write_u16(d, 4, len16);
        match csum {
            L4Checksum::Full => fill(d, src, dst),
            L4Checksum::Partial => write_u16(
                d,
                6,
                checksum::pseudo_header_v4(src, dst, IpProtocol::UDP, len),
            ),
        }
        Ok(len)
    }

    /// Copies `payload` after the header, then [`emit`](Self::emit)s.
    pub fn emit_with_payload(
        &self,
        buf: &mut [u8],
        payload: &[u8],
        src: Ipv4Addr,
        dst: Ipv4Addr,
    ) -> Result<usize, WireError> {
        buf.get_mut(Self::HEADER_LEN..Self::HEADER_LEN.saturating_add(payload.len()))
            .ok_or(WireError::Exhausted)?
            .copy_from_slice(payload);
        self.emit(buf, payload.len(), src, dst)
    }

    /// Offset of the payload in an Ethernet + IPv4 frame carrying this datagram.
    pub const fn frame_payload_offset() -> usize {
        Ipv4FrameRepr::HEADER_LEN + Self::HEADER_LEN
    }

    /// Writes Ethernet, IPv4 and UDP headers around a payload already at
    /// [`frame_payload_offset`](Self::frame_payload_offset); checksum last. Returns the frame
    /// length.
    pub fn emit_frame(
        &self,
        buf: &mut [u8],
        frame: &Ipv4FrameRepr,
        payload_len: usize,
    ) -> Result<usize, WireError> {
        self.emit_frame_csum(buf, frame, payload_len, L4Checksum::Full)
    }

    /// [`emit_frame`](Self::emit_frame) with the checksum written as `csum` says.
    pub fn emit_frame_csum(
        &self,
        buf: &mut [u8],
        frame: &Ipv4FrameRepr,
        payload_len: usize,
        csum: L4Checksum,
    ) -> Result<usize, WireError> {
        let l4_len = Self::HEADER_LEN
            .checked_add(payload_len)
            .ok_or(WireError::Exhausted)?;
        let len = frame.emit(buf, IpProtocol::UDP, l4_len)?;
        let l4 = buf
            .get_mut(Ipv4FrameRepr::HEADER_LEN..)
            .ok_or(WireError::Exhausted)?;
        self.emit_csum(l4, payload_len, frame.src_ip, frame.dst_ip, csum)?;
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{EthernetFrame, Ipv4Packet, MacAddr};

    const SRC: Ipv4Addr = Ipv4Addr::new(192, 168, 127, 2);
    const DST: Ipv4Addr = Ipv4Addr::new(192, 168, 127, 1);

    #[test]
    fn emit_parse_roundtrip() {
        let mut b = [0u8; 13];
        let repr = UdpRepr {
            src_port: 5353,
            dst_port: 53,
        };
        assert_eq!(repr.emit_with_payload(&mut b, b"hello", SRC, DST), Ok(13));
        let p = UdpPacket::new_checked(&b[..]).unwrap();
        assert_eq!((p.src_port(), p.dst_port(), p.len()), (5353, 53, 13));
        assert!(!p.is_empty());
        assert_eq!(p.payload(), b"hello");
        assert!(p.verify_checksum(SRC, DST));
        assert!(!p.verify_checksum(SRC, Ipv4Addr::new(192, 168, 127, 3)));
        assert_eq!(UdpRepr::parse(&p), repr);
        assert_eq!(
            repr.emit_with_payload(&mut [0u8; 12], b"hello", SRC, DST),
            Err(WireError::Exhausted)
        );
        assert_eq!(
            repr.emit(&mut vec![0u8; 70_000], 65_528, SRC, DST),
            Err(WireError::Exhausted)
        );
    }

    #[test]
    fn zero_checksum_means_none() {
        let mut b = [0u8; 10];
        UdpRepr {
            src_port: 68,
            dst_port: 67,
        }
        .emit(&mut b, 2, SRC, DST)
        .unwrap();
        b[6] = 0;
        b[7] = 0;
        assert!(UdpPacket::new_checked(&b[..])
            .unwrap()
            .verify_checksum(SRC, DST));
    }

    #[test]
    fn computed_zero_is_sent_as_ones() {
        // Find a payload whose checksum computes to zero: choose the last word so that the
        // total sum is 0xffff.
        let mut b = [0u8; 10];
        let repr = UdpRepr {
            src_port: 1,
            dst_port: 2,
        };
        repr.emit(&mut b, 2, SRC, DST).unwrap();
        b[6] = 0;
        b[7] = 0;
        let partial = checksum::combine(&[
            checksum::pseudo_header_v4(SRC, DST, IpProtocol::UDP, 10),
            checksum::data(&b),
        ]);
        let word = 0xffff - partial;
        b[8..10].copy_from_slice(&word.to_be_bytes());
        repr.emit(&mut b, 2, SRC, DST).unwrap();
        assert_eq!(&b[6..8], &[0xff, 0xff]);
        assert!(UdpPacket::new_checked(&b[..])
            .unwrap()
            .verify_checksum(SRC, DST));
    }

    #[test]
    fn length_checked_against_ip_payload() {
        let mut b = [0u8; 16];
        UdpRepr {
            src_port: 1,
            dst_port: 2,
        }
        .emit(&mut b, 4, SRC, DST)
        .unwrap();
        // Datagram is 12 bytes; 4 trailing bytes in the buffer are not payload.
        let p = UdpPacket::new_checked(&b[..]).unwrap();
        assert_eq!(p.payload().len(), 4);
        assert!(p.verify_checksum(SRC, DST));
        for len in 0..12 {
            assert!(UdpPacket::new_checked(&b[..len]).is_err(), "len {len}");
        }
        for (field, err) in [(7u16, WireError::Malformed), (17, WireError::Truncated)] {
            let mut m = b;
            m[4..6].copy_from_slice(&field.to_be_bytes());
            assert_eq!(UdpPacket::new_checked(&m[..]).unwrap_err(), err);
        }
    }

    #[test]
    fn setters_and_fill() {
        let mut b = [0u8; 12];
        UdpRepr {
            src_port: 1,
            dst_port: 2,
        }
        .emit(&mut b, 4, SRC, DST)
        .unwrap();
        let mut p = UdpPacket::new_checked(&mut b[..]).unwrap();
        p.set_src_port(1000);
        p.set_dst_port(2000);
        p.payload_mut().copy_from_slice(b"ping");
        assert!(!p.verify_checksum(SRC, DST));
        p.fill_checksum(SRC, DST);
        assert!(p.verify_checksum(SRC, DST));
        // Incremental NAT rewrite of the source address (RFC 1624 via pseudo-header).
        let new_src = Ipv4Addr::new(127, 0, 0, 1);
        let c = checksum::update_ipv4(p.checksum(), SRC, new_src);
        p.set_checksum(c);
        assert!(p.verify_checksum(new_src, DST));
    }

    #[test]
    fn emit_frame_in_place() {
        let frame = Ipv4FrameRepr {
            src_mac: MacAddr([0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xdd]),
            dst_mac: MacAddr([0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xee]),
            src_ip: DST,
            dst_ip: SRC,
            ttl: 64,
            ident: 1,
            dont_frag: true,
            dscp_ecn: 0,
        };
        let mut b = [0u8; 64];
        let off = UdpRepr::frame_payload_offset();
        b[off..off + 3].copy_from_slice(b"abc");
        let n = UdpRepr {
            src_port: 53,
            dst_port: 40000,
        }
        .emit_frame(&mut b, &frame, 3)
        .unwrap();
        assert_eq!(n, 45);
        let eth = EthernetFrame::new_checked(&b[..n]).unwrap();
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        assert!(ip.verify_checksum());
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        assert!(udp.verify_checksum(DST, SRC));
        assert_eq!(udp.payload(), b"abc");

        // Partial: the pseudo-header sum, finished by whoever sends the frame on.
        let mut p = b;
        UdpRepr {
            src_port: 53,
            dst_port: 40000,
        }
        .emit_frame_csum(&mut p, &frame, 3, L4Checksum::Partial)
        .unwrap();
        let pseudo = checksum::pseudo_header_v4(DST, SRC, IpProtocol::UDP, 11);
        assert_eq!(read_u16(&p[34..], 6), pseudo);
        let sum = checksum::data(&p[34..n]);
        p[40..42].copy_from_slice(&(!sum).to_be_bytes());
        assert_eq!(p, b);
    }

    #[test]
    fn etherparse_cross_check() {
        use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
        let payload = b"cross-check";
        let builder = PacketBuilder::ethernet2([1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12])
            .ipv4(SRC.octets(), DST.octets(), 64)
            .udp(12345, 53);
        let mut bytes = Vec::new();
        builder.write(&mut bytes, payload).unwrap();
        let eth = EthernetFrame::new_checked(&bytes[..]).unwrap();
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        assert!(udp.verify_checksum(SRC, DST));
        assert_ne!(udp.checksum(), 0);
        assert_eq!((udp.src_port(), udp.dst_port()), (12345, 53));
        assert_eq!(udp.payload(), payload);

        let frame = Ipv4FrameRepr {
            src_mac: MacAddr([1, 2, 3, 4, 5, 6]),
            dst_mac: MacAddr([7, 8, 9, 10, 11, 12]),
            src_ip: SRC,
            dst_ip: DST,
            ttl: 64,
            ident: 0,
            dont_frag: true,
            dscp_ecn: 0,
        };
        let mut ours = vec![0u8; UdpRepr::frame_payload_offset() + payload.len()];
        ours[UdpRepr::frame_payload_offset()..].copy_from_slice(payload);
        UdpRepr {
            src_port: 12345,
            dst_port: 53,
        }
        .emit_frame(&mut ours, &frame, payload.len())
        .unwrap();
        // Same headers as etherparse's builder (which also sets DF and ident 0).
        assert_eq!(ours, bytes);
        let s = SlicedPacket::from_ethernet(&ours).unwrap();
        match s.transport {
            Some(TransportSlice::Udp(u)) => {
                assert_eq!(
                    u.checksum(),
                    u.to_header()
                        .calc_checksum_ipv4_raw(SRC.octets(), DST.octets(), payload)
                        .unwrap()
                );
                assert_eq!(u.payload(), payload);
            }
            other => panic!("{other:?}"),
        }
    }
}
