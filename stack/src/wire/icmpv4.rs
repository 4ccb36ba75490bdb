//! ICMP for IPv4 (RFC 792).

use super::checksum;
use super::ipv4::{IpProtocol, Ipv4Packet};
use super::{read_u16, write_u16, Ipv4FrameRepr, WireError};

/// ICMPv4 message types (RFC 792).
pub struct Icmpv4Type;

impl Icmpv4Type {
    pub const ECHO_REPLY: u8 = 0;
    pub const DST_UNREACHABLE: u8 = 3;
    pub const ECHO_REQUEST: u8 = 8;
    pub const TIME_EXCEEDED: u8 = 11;
}

/// Codes of "destination unreachable" (RFC 792; RFC 1191 for frag-needed).
pub struct Icmpv4Unreachable;

impl Icmpv4Unreachable {
    pub const NET: u8 = 0;
    pub const HOST: u8 = 1;
    pub const PROTOCOL: u8 = 2;
    pub const PORT: u8 = 3;
    pub const FRAG_NEEDED: u8 = 4;
}

/// A checked view of an ICMPv4 message: type(1) code(1) checksum(2) rest-of-header(4) data.
/// The buffer is the whole IP payload (the checksum covers all of it).
#[derive(Clone, Copy, Debug)]
pub struct Icmpv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Icmpv4Packet<T> {
    pub const HEADER_LEN: usize = 8;

    /// Every message type we read or write has the 8-byte header (RFC 792).
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        if buffer.as_ref().len() < Self::HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(Icmpv4Packet { buffer })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    pub fn msg_type(&self) -> u8 {
        self.b()[0]
    }

    pub fn code(&self) -> u8 {
        self.b()[1]
    }

    pub fn checksum(&self) -> u16 {
        read_u16(self.b(), 2)
    }

    /// Echo request/reply identifier (RFC 792).
    pub fn echo_ident(&self) -> u16 {
        read_u16(self.b(), 4)
    }

    /// Echo request/reply sequence number (RFC 792).
    pub fn echo_seq_no(&self) -> u16 {
        read_u16(self.b(), 6)
    }

    /// RFC 1191 §4: next-hop MTU of a "fragmentation needed" message.
    pub fn next_hop_mtu(&self) -> u16 {
        read_u16(self.b(), 6)
    }

    /// Bytes after the 8-byte header: echo data, or the quoted datagram of an error.
    pub fn data(&self) -> &[u8] {
        self.b().get(Self::HEADER_LEN..).unwrap_or_default()
    }

    /// RFC 792: the checksum is the one's complement of the sum over the whole message.
    pub fn verify_checksum(&self) -> bool {
        checksum::data(self.b()) == 0xffff
    }
}

impl<'a> Icmpv4Packet<&'a [u8]> {
    /// [`data`](Self::data) with the buffer's lifetime.
    pub fn data_slice(&self) -> &'a [u8] {
        self.buffer.get(Self::HEADER_LEN..).unwrap_or_default()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv4Packet<T> {
    pub fn set_msg_type(&mut self, t: u8) {
        self.buffer.as_mut()[0] = t;
    }

    pub fn set_code(&mut self, c: u8) {
        self.buffer.as_mut()[1] = c;
    }

    pub fn set_checksum(&mut self, c: u16) {
        write_u16(self.buffer.as_mut(), 2, c);
    }

    pub fn set_echo_ident(&mut self, v: u16) {
        write_u16(self.buffer.as_mut(), 4, v);
    }

    pub fn set_echo_seq_no(&mut self, v: u16) {
        write_u16(self.buffer.as_mut(), 6, v);
    }

    pub fn data_mut(&mut self) -> &mut [u8] {
        self.buffer
            .as_mut()
            .get_mut(Self::HEADER_LEN..)
            .unwrap_or_default()
    }

    /// Recompute the checksum over the whole buffer; call last.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let sum = checksum::data(self.b());
        self.set_checksum(!sum);
    }
}

/// An ICMPv4 message this stack reads or writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Icmpv4Repr<'a> {
    EchoRequest {
        ident: u16,
        seq_no: u16,
        data: &'a [u8],
    },
    EchoReply {
        ident: u16,
        seq_no: u16,
        data: &'a [u8],
    },
    /// `original`: the offending datagram's IP header + the first 8 bytes of its payload.
    DstUnreachable {
        code: u8,
        /// Only meaningful for code 4 (RFC 1191); 0 otherwise.
        next_hop_mtu: u16,
        original: &'a [u8],
    },
    TimeExceeded {
        code: u8,
        original: &'a [u8],
    },
}

impl<'a> Icmpv4Repr<'a> {
    /// Echo and the two error types; other types are `Unsupported`. The checksum is not
    /// checked here (see [`Icmpv4Packet::verify_checksum`]).
    pub fn parse(p: &Icmpv4Packet<&'a [u8]>) -> Result<Self, WireError> {
        let data = p.data_slice();
        match p.msg_type() {
            Icmpv4Type::ECHO_REQUEST if p.code() == 0 => Ok(Icmpv4Repr::EchoRequest {
                ident: p.echo_ident(),
                seq_no: p.echo_seq_no(),
                data,
            }),
            Icmpv4Type::ECHO_REPLY if p.code() == 0 => Ok(Icmpv4Repr::EchoReply {
                ident: p.echo_ident(),
                seq_no: p.echo_seq_no(),
                data,
            }),
            Icmpv4Type::DST_UNREACHABLE => Ok(Icmpv4Repr::DstUnreachable {
                code: p.code(),
                next_hop_mtu: p.next_hop_mtu(),
                original: data,
            }),
            Icmpv4Type::TIME_EXCEEDED => Ok(Icmpv4Repr::TimeExceeded {
                code: p.code(),
                original: data,
            }),
            _ => Err(WireError::Unsupported),
        }
    }

    /// A "destination unreachable" about `original_ip` (a whole IPv4 packet, link padding
    /// allowed). RFC 792: quote "the internet header plus the first 64 bits of the original
    /// datagram's data".
    pub fn dst_unreachable(code: u8, original_ip: &'a [u8]) -> Result<Self, WireError> {
        Ok(Icmpv4Repr::DstUnreachable {
            code,
            next_hop_mtu: 0,
            original: quote(original_ip)?,
        })
    }

    /// A "time exceeded in transit" (code 0) about `original_ip`, quoted as for
    /// [`dst_unreachable`](Self::dst_unreachable).
    pub fn time_exceeded(original_ip: &'a [u8]) -> Result<Self, WireError> {
        Ok(Icmpv4Repr::TimeExceeded {
            code: 0,
            original: quote(original_ip)?,
        })
    }

    /// Message length: 8 + data.
    pub fn buffer_len(&self) -> usize {
        Icmpv4Packet::<&[u8]>::HEADER_LEN + self.data().len()
    }

    fn data(&self) -> &'a [u8] {
        match *self {
            Icmpv4Repr::EchoRequest { data, .. } | Icmpv4Repr::EchoReply { data, .. } => data,
            Icmpv4Repr::DstUnreachable { original, .. }
            | Icmpv4Repr::TimeExceeded { original, .. } => original,
        }
    }

    /// Writes the message at the start of `buf`, checksum last. Returns its length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let len = self.buffer_len();
        let b = buf.get_mut(..len).ok_or(WireError::Exhausted)?;
        let (msg_type, code, rest) = match *self {
            Icmpv4Repr::EchoRequest { ident, seq_no, .. } => {
                (Icmpv4Type::ECHO_REQUEST, 0, (ident, seq_no))
            }
            Icmpv4Repr::EchoReply { ident, seq_no, .. } => {
                (Icmpv4Type::ECHO_REPLY, 0, (ident, seq_no))
            }
            Icmpv4Repr::DstUnreachable {
                code, next_hop_mtu, ..
            } => (Icmpv4Type::DST_UNREACHABLE, code, (0, next_hop_mtu)),
            Icmpv4Repr::TimeExceeded { code, .. } => (Icmpv4Type::TIME_EXCEEDED, code, (0, 0)),
        };
        b[0] = msg_type;
        b[1] = code;
        write_u16(b, 2, 0);
        write_u16(b, 4, rest.0);
        write_u16(b, 6, rest.1);
        b[Icmpv4Packet::<&[u8]>::HEADER_LEN..].copy_from_slice(self.data());
        let sum = checksum::data(b);
        write_u16(b, 2, !sum);
        Ok(len)
    }

    /// Writes a whole Ethernet + IPv4 + ICMP frame. Returns the frame length.
    pub fn emit_frame(&self, buf: &mut [u8], frame: &Ipv4FrameRepr) -> Result<usize, WireError> {
        let len = frame.emit(buf, IpProtocol::ICMP, self.buffer_len())?;
        let l4 = buf
            .get_mut(Ipv4FrameRepr::HEADER_LEN..)
            .ok_or(WireError::Exhausted)?;
        self.emit(l4)?;
        Ok(len)
    }
}

fn quote(original_ip: &[u8]) -> Result<&[u8], WireError> {
    let ip = Ipv4Packet::new_checked(original_ip)?;
    let end = ip.total_len().min(ip.header_len() + 8);
    ip.packet_slice().get(..end).ok_or(WireError::Truncated)
}

#[cfg(test)]
// Test data: truncating random or counter values to bytes is the intent.
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;
    use crate::wire::{EthernetFrame, Ipv4Repr, MacAddr};
    use std::net::Ipv4Addr;

    #[test]
    fn echo_roundtrip() {
        let data = b"abcdefghijklmnopqrstuvwabcdefghi";
        let repr = Icmpv4Repr::EchoRequest {
            ident: 0x1c46,
            seq_no: 3,
            data,
        };
        let mut b = [0u8; 40];
        assert_eq!(repr.emit(&mut b).unwrap(), 40);
        let p = Icmpv4Packet::new_checked(&b[..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!(p.msg_type(), Icmpv4Type::ECHO_REQUEST);
        assert_eq!(p.code(), 0);
        assert_eq!(p.echo_ident(), 0x1c46);
        assert_eq!(p.echo_seq_no(), 3);
        assert_eq!(p.data(), data);
        assert_eq!(Icmpv4Repr::parse(&p).unwrap(), repr);
        let mut bad = b;
        bad[10] ^= 0x40;
        assert!(!Icmpv4Packet::new_checked(&bad[..])
            .unwrap()
            .verify_checksum());
        assert_eq!(repr.emit(&mut [0u8; 39]), Err(WireError::Exhausted));
    }

    #[test]
    fn short_and_unknown() {
        for len in 0..8 {
            assert_eq!(
                Icmpv4Packet::new_checked(&[0u8; 8][..len]).unwrap_err(),
                WireError::Truncated
            );
        }
        let b = [13u8, 0, 0, 0, 0, 0, 0, 0];
        let p = Icmpv4Packet::new_checked(&b[..]).unwrap();
        assert_eq!(Icmpv4Repr::parse(&p), Err(WireError::Unsupported));
        // Echo with a non-zero code is not an echo (RFC 792: code 0).
        let b = [8u8, 1, 0, 0, 0, 0, 0, 0];
        let p = Icmpv4Packet::new_checked(&b[..]).unwrap();
        assert_eq!(Icmpv4Repr::parse(&p), Err(WireError::Unsupported));
    }

    #[test]
    fn setters() {
        let mut b = [0u8; 12];
        let mut p = Icmpv4Packet::new_checked(&mut b[..]).unwrap();
        p.set_msg_type(Icmpv4Type::ECHO_REPLY);
        p.set_code(0);
        p.set_echo_ident(9);
        p.set_echo_seq_no(10);
        p.data_mut().copy_from_slice(&[1, 2, 3, 4]);
        p.fill_checksum();
        assert!(p.verify_checksum());
        assert_eq!(
            Icmpv4Repr::parse(&Icmpv4Packet::new_checked(&b[..]).unwrap()).unwrap(),
            Icmpv4Repr::EchoReply {
                ident: 9,
                seq_no: 10,
                data: &[1, 2, 3, 4]
            }
        );
    }

    #[test]
    fn dst_unreachable_quotes_header_plus_8() {
        // Original: UDP datagram with a 24-byte IP header (options) and 100 bytes of payload,
        // plus 6 bytes of link padding.
        let mut orig = [0u8; 130];
        Ipv4Repr {
            src: Ipv4Addr::new(192, 168, 127, 2),
            dst: Ipv4Addr::new(8, 8, 8, 8),
            protocol: IpProtocol::UDP,
            payload_len: 104,
            ttl: 64,
            ident: 1,
            dont_frag: false,
            dscp_ecn: 0,
        }
        .emit(&mut orig)
        .unwrap();
        orig[0] = 0x46;
        for (i, b) in orig[24..124].iter_mut().enumerate() {
            *b = i as u8;
        }
        let repr = Icmpv4Repr::dst_unreachable(Icmpv4Unreachable::PORT, &orig).unwrap();
        match repr {
            Icmpv4Repr::DstUnreachable { code, original, .. } => {
                assert_eq!(code, 3);
                assert_eq!(original, &orig[..32]);
            }
            _ => unreachable!(),
        }
        let mut b = [0u8; 40];
        assert_eq!(repr.emit(&mut b).unwrap(), 40);
        let p = Icmpv4Packet::new_checked(&b[..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!((p.msg_type(), p.code()), (3, 3));
        assert_eq!(&b[4..8], &[0; 4], "unused field");
        assert_eq!(Icmpv4Repr::parse(&p).unwrap(), repr);

        // A short original (8-byte payload total) is quoted whole.
        let short = &orig[..0];
        assert!(Icmpv4Repr::dst_unreachable(1, short).is_err());
        let mut tiny = [0u8; 22];
        Ipv4Repr {
            src: Ipv4Addr::new(192, 168, 127, 2),
            dst: Ipv4Addr::new(1, 1, 1, 1),
            protocol: IpProtocol::TCP,
            payload_len: 2,
            ttl: 1,
            ident: 0,
            dont_frag: false,
            dscp_ecn: 0,
        }
        .emit(&mut tiny)
        .unwrap();
        match Icmpv4Repr::time_exceeded(&tiny).unwrap() {
            Icmpv4Repr::TimeExceeded { code, original } => {
                assert_eq!(code, 0);
                assert_eq!(original, &tiny[..]);
            }
            _ => unreachable!(),
        }
    }

    #[test]
    fn emit_frame_layout() {
        let frame = Ipv4FrameRepr {
            src_mac: MacAddr([2, 0, 0, 0, 0, 1]),
            dst_mac: MacAddr([2, 0, 0, 0, 0, 2]),
            src_ip: Ipv4Addr::new(10, 0, 0, 1),
            dst_ip: Ipv4Addr::new(10, 0, 0, 2),
            ttl: 64,
            ident: 5,
            dont_frag: false,
            dscp_ecn: 0,
        };
        let repr = Icmpv4Repr::EchoReply {
            ident: 1,
            seq_no: 2,
            data: &[9; 5],
        };
        let mut b = [0u8; 60];
        let n = repr.emit_frame(&mut b, &frame).unwrap();
        assert_eq!(n, 14 + 20 + 13);
        let eth = EthernetFrame::new_checked(&b[..n]).unwrap();
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(ip.protocol(), IpProtocol::ICMP);
        let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
        assert!(icmp.verify_checksum());
        assert_eq!(
            repr.emit_frame(&mut b[..46], &frame),
            Err(WireError::Exhausted)
        );
    }

    #[test]
    fn etherparse_cross_check() {
        use etherparse::{IcmpEchoHeader, Icmpv4Header, Icmpv4Slice, Icmpv4Type as EpType};
        let payload = [7u8; 24];
        let h = Icmpv4Header::with_checksum(
            EpType::EchoRequest(IcmpEchoHeader { id: 77, seq: 1234 }),
            &payload,
        );
        let mut bytes = h.to_bytes().to_vec();
        bytes.extend_from_slice(&payload);
        let p = Icmpv4Packet::new_checked(&bytes[..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!(
            Icmpv4Repr::parse(&p).unwrap(),
            Icmpv4Repr::EchoRequest {
                ident: 77,
                seq_no: 1234,
                data: &payload
            }
        );

        let mut b = [0u8; 32];
        Icmpv4Repr::EchoReply {
            ident: 77,
            seq_no: 1234,
            data: &payload,
        }
        .emit(&mut b)
        .unwrap();
        let s = Icmpv4Slice::from_slice(&b).unwrap();
        assert_eq!(
            s.icmp_type(),
            EpType::EchoReply(IcmpEchoHeader { id: 77, seq: 1234 })
        );
        assert_eq!(s.checksum(), s.icmp_type().calc_checksum(s.payload()));
        assert_eq!(s.payload(), &payload);
    }
}
