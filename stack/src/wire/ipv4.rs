//! IPv4 (RFC 791).

use std::net::Ipv4Addr;

use super::checksum;
use super::{read_ipv4, read_u16, write_ipv4, write_u16, WireError};

/// IP protocol numbers (IANA "Assigned Internet Protocol Numbers").
pub struct IpProtocol;

impl IpProtocol {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
}

// RFC 791 §3.1: flags are the top three bits of the 16-bit word at offset 6.
const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const FRAG_OFFSET_MASK: u16 = 0x1fff;

/// A checked view of an IPv4 packet.
///
/// `new_checked` guarantees: version 4, IHL >= 5, IHL*4 <= buffer length, and
/// IHL*4 <= total length <= buffer length. Bytes past the total length (Ethernet padding) are
/// not part of the packet.
#[derive(Clone, Copy, Debug)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    pub const MIN_HEADER_LEN: usize = 20;

    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let b = buffer.as_ref();
        if b.len() < Self::MIN_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        // RFC 791 §3.1: Version 4; IHL counts 32-bit words, minimum 5.
        if b[0] >> 4 != 4 {
            return Err(WireError::Malformed);
        }
        let header_len = usize::from(b[0] & 0x0f) * 4;
        if header_len < Self::MIN_HEADER_LEN {
            return Err(WireError::Malformed);
        }
        if header_len > b.len() {
            return Err(WireError::Truncated);
        }
        let total_len = usize::from(read_u16(b, 2));
        if total_len < header_len {
            return Err(WireError::Malformed);
        }
        if total_len > b.len() {
            return Err(WireError::Truncated);
        }
        Ok(Ipv4Packet { buffer })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    pub fn version(&self) -> u8 {
        self.b()[0] >> 4
    }

    /// Header length in bytes (IHL * 4), options included.
    pub fn header_len(&self) -> usize {
        usize::from(self.b()[0] & 0x0f) * 4
    }

    /// RFC 2474 differentiated services code point (top six bits of the old TOS byte).
    pub fn dscp(&self) -> u8 {
        self.b()[1] >> 2
    }

    /// RFC 3168 ECN field (low two bits of the old TOS byte).
    pub fn ecn(&self) -> u8 {
        self.b()[1] & 0x03
    }

    pub fn total_len(&self) -> usize {
        usize::from(read_u16(self.b(), 2))
    }

    pub fn ident(&self) -> u16 {
        read_u16(self.b(), 4)
    }

    pub fn dont_frag(&self) -> bool {
        read_u16(self.b(), 6) & FLAG_DF != 0
    }

    pub fn more_frags(&self) -> bool {
        read_u16(self.b(), 6) & FLAG_MF != 0
    }

    /// Fragment offset in bytes (the field counts 8-byte units).
    pub fn frag_offset(&self) -> usize {
        usize::from(read_u16(self.b(), 6) & FRAG_OFFSET_MASK) * 8
    }

    /// Part of a fragmented datagram: MF set or a non-zero offset (RFC 791 §2.3).
    pub fn is_fragment(&self) -> bool {
        read_u16(self.b(), 6) & (FLAG_MF | FRAG_OFFSET_MASK) != 0
    }

    pub fn ttl(&self) -> u8 {
        self.b()[8]
    }

    pub fn protocol(&self) -> u8 {
        self.b()[9]
    }

    pub fn checksum(&self) -> u16 {
        read_u16(self.b(), 10)
    }

    pub fn src(&self) -> Ipv4Addr {
        read_ipv4(self.b(), 12)
    }

    pub fn dst(&self) -> Ipv4Addr {
        read_ipv4(self.b(), 16)
    }

    /// The options area (`header_len - 20` bytes); we never interpret it.
    pub fn options(&self) -> &[u8] {
        self.b()
            .get(Self::MIN_HEADER_LEN..self.header_len())
            .unwrap_or_default()
    }

    /// RFC 791 §3.1: the header checksum sums to all ones over the header.
    pub fn verify_checksum(&self) -> bool {
        self.b()
            .get(..self.header_len())
            .is_some_and(|h| checksum::data(h) == 0xffff)
    }

    /// The packet as received, without link padding: `total_len` bytes.
    pub fn packet(&self) -> &[u8] {
        self.b().get(..self.total_len()).unwrap_or_default()
    }

    /// Payload: from the end of the header (options skipped) to the total length.
    pub fn payload(&self) -> &[u8] {
        self.b()
            .get(self.header_len()..self.total_len())
            .unwrap_or_default()
    }
}

impl<'a> Ipv4Packet<&'a [u8]> {
    /// [`payload`](Self::payload) with the buffer's lifetime, for views over the payload
    /// that outlive this one.
    pub fn payload_slice(&self) -> &'a [u8] {
        self.buffer
            .get(self.header_len()..self.total_len())
            .unwrap_or_default()
    }

    /// [`packet`](Self::packet) with the buffer's lifetime.
    pub fn packet_slice(&self) -> &'a [u8] {
        self.buffer.get(..self.total_len()).unwrap_or_default()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    fn bm(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }

    pub fn set_dscp_ecn(&mut self, dscp: u8, ecn: u8) {
        self.bm()[1] = (dscp << 2) | (ecn & 0x03);
    }

    pub fn set_ident(&mut self, ident: u16) {
        write_u16(self.bm(), 4, ident);
    }

    /// Sets DF, clears MF and the fragment offset.
    pub fn set_unfragmented(&mut self, dont_frag: bool) {
        write_u16(self.bm(), 6, if dont_frag { FLAG_DF } else { 0 });
    }

    pub fn set_ttl(&mut self, ttl: u8) {
        self.bm()[8] = ttl;
    }

    pub fn set_protocol(&mut self, protocol: u8) {
        self.bm()[9] = protocol;
    }

    pub fn set_checksum(&mut self, checksum: u16) {
        write_u16(self.bm(), 10, checksum);
    }

    pub fn set_src(&mut self, ip: Ipv4Addr) {
        write_ipv4(self.bm(), 12, ip);
    }

    pub fn set_dst(&mut self, ip: Ipv4Addr) {
        write_ipv4(self.bm(), 16, ip);
    }

    /// Recompute the header checksum; call after the last header change.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let hl = self.header_len();
        let sum = self.b().get(..hl).map_or(0, checksum::data);
        self.set_checksum(!sum);
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (hl, tl) = (self.header_len(), self.total_len());
        self.bm().get_mut(hl..tl).unwrap_or_default()
    }
}

/// The fields of an outgoing IPv4 header without options (20 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Repr {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    /// Bytes after the header; the total length is `20 + payload_len`.
    pub payload_len: usize,
    pub ttl: u8,
    pub ident: u16,
    pub dont_frag: bool,
    /// The whole DSCP/ECN byte (old TOS).
    pub dscp_ecn: u8,
}

impl Ipv4Repr {
    pub const HEADER_LEN: usize = 20;

    /// The header fields of a checked packet. Options are dropped; a fragment's offset and MF
    /// are not representable (we never emit fragments).
    pub fn parse<T: AsRef<[u8]>>(p: &Ipv4Packet<T>) -> Ipv4Repr {
        Ipv4Repr {
            src: p.src(),
            dst: p.dst(),
            protocol: p.protocol(),
            payload_len: p.total_len().saturating_sub(p.header_len()),
            ttl: p.ttl(),
            ident: p.ident(),
            dont_frag: p.dont_frag(),
            dscp_ecn: (p.dscp() << 2) | p.ecn(),
        }
    }

    /// Writes the 20-byte header at the start of `buf`, checksum included (it covers only the
    /// header, RFC 791 §3.1, so it does not wait for the payload).
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        let total = Self::HEADER_LEN
            .checked_add(self.payload_len)
            .and_then(|t| u16::try_from(t).ok())
            .ok_or(WireError::Exhausted)?;
        let h = buf
            .get_mut(..Self::HEADER_LEN)
            .ok_or(WireError::Exhausted)?;
        h[0] = 0x45;
        h[1] = self.dscp_ecn;
        write_u16(h, 2, total);
        write_u16(h, 4, self.ident);
        write_u16(h, 6, if self.dont_frag { FLAG_DF } else { 0 });
        h[8] = self.ttl;
        h[9] = self.protocol;
        write_u16(h, 10, 0);
        write_ipv4(h, 12, self.src);
        write_ipv4(h, 16, self.dst);
        let sum = checksum::data(h);
        write_u16(h, 10, !sum);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(192, 168, 127, 2);
    const DST: Ipv4Addr = Ipv4Addr::new(192, 168, 127, 1);

    fn repr(payload_len: usize) -> Ipv4Repr {
        Ipv4Repr {
            src: SRC,
            dst: DST,
            protocol: IpProtocol::UDP,
            payload_len,
            ttl: 64,
            ident: 0x1234,
            dont_frag: true,
            dscp_ecn: 0xb9,
        }
    }

    #[test]
    fn emit_then_parse() {
        let mut b = [0u8; 28];
        repr(8).emit(&mut b).unwrap();
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.total_len(), 28);
        assert_eq!(p.dscp(), 0xb9 >> 2);
        assert_eq!(p.ecn(), 1);
        assert_eq!(p.ident(), 0x1234);
        assert!(p.dont_frag());
        assert!(!p.more_frags());
        assert!(!p.is_fragment());
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.protocol(), IpProtocol::UDP);
        assert_eq!(p.src(), SRC);
        assert_eq!(p.dst(), DST);
        assert_eq!(p.payload().len(), 8);
        assert!(p.options().is_empty());
        assert_eq!(Ipv4Repr::parse(&p), repr(8));
    }

    #[test]
    fn padding_ignored_and_options_skipped() {
        // 24-byte header (one 4-byte option: NOP NOP NOP EOL), 4 payload bytes, 10 pad bytes.
        let mut b = [0u8; 38];
        repr(8).emit(&mut b).unwrap();
        b[0] = 0x46;
        b[2..4].copy_from_slice(&28u16.to_be_bytes());
        b[20..24].copy_from_slice(&[1, 1, 1, 0]);
        b[24..28].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        let mut p = Ipv4Packet::new_checked(&mut b[..]).unwrap();
        p.fill_checksum();
        assert!(p.verify_checksum());
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.options(), &[1, 1, 1, 0]);
        assert_eq!(p.payload(), &[0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(p.packet().len(), 28);
    }

    #[test]
    fn malformed_cases() {
        let mut good = [0u8; 28];
        repr(8).emit(&mut good).unwrap();
        for len in 0..28 {
            assert!(Ipv4Packet::new_checked(&good[..len]).is_err(), "len {len}");
        }
        let cases: [(usize, u8, WireError); 5] = [
            (0, 0x65, WireError::Malformed), // version 6
            (0, 0x44, WireError::Malformed), // IHL 4
            (0, 0x48, WireError::Truncated), // IHL 8 = 32 bytes > 28
            (3, 19, WireError::Malformed),   // total length 19 < header
            (3, 29, WireError::Truncated),   // total length past the buffer
        ];
        for (at, v, err) in cases {
            let mut b = good;
            b[at] = v;
            assert_eq!(
                Ipv4Packet::new_checked(&b[..]).unwrap_err(),
                err,
                "byte {at} = {v:#x}"
            );
        }
        let mut b = good;
        b[15] ^= 1;
        assert!(!Ipv4Packet::new_checked(&b[..]).unwrap().verify_checksum());
    }

    #[test]
    fn fragments() {
        let mut b = [0u8; 28];
        repr(8).emit(&mut b).unwrap();
        for (flags, off, frag) in [
            (0x40u8, 0u8, false),
            (0x20, 0, true),
            (0x00, 1, true),
            (0x1f, 0xff, true),
        ] {
            b[6] = flags;
            b[7] = off;
            let p = Ipv4Packet::new_checked(&b[..]).unwrap();
            assert_eq!(p.is_fragment(), frag, "{flags:#x} {off:#x}");
        }
        b[6] = 0x20;
        b[7] = 0x02;
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert!(p.more_frags());
        assert_eq!(p.frag_offset(), 16);
    }

    #[test]
    fn setters() {
        let mut b = [0u8; 28];
        repr(8).emit(&mut b).unwrap();
        let mut p = Ipv4Packet::new_checked(&mut b[..]).unwrap();
        p.set_src(DST);
        p.set_dst(SRC);
        p.set_ttl(1);
        p.set_ident(7);
        p.set_protocol(IpProtocol::TCP);
        p.set_dscp_ecn(46, 2);
        p.set_unfragmented(false);
        p.payload_mut().fill(0xab);
        assert!(!p.verify_checksum());
        p.fill_checksum();
        assert!(p.verify_checksum());
        assert_eq!((p.src(), p.dst(), p.ttl(), p.ident()), (DST, SRC, 1, 7));
        assert_eq!((p.dscp(), p.ecn(), p.dont_frag()), (46, 2, false));
        assert_eq!(p.payload(), &[0xab; 8]);
    }

    #[test]
    fn emit_limits() {
        assert_eq!(repr(0).emit(&mut [0u8; 19]), Err(WireError::Exhausted));
        assert_eq!(repr(65_516).emit(&mut [0u8; 20]), Err(WireError::Exhausted));
        assert!(repr(65_515).emit(&mut [0u8; 20]).is_ok());
    }

    #[test]
    fn etherparse_cross_check() {
        use etherparse::{IpNumber, Ipv4Header, Ipv4HeaderSlice};
        let mut h = Ipv4Header::new(100, 64, IpNumber::TCP, SRC.octets(), DST.octets()).unwrap();
        h.identification = 0xbeef;
        h.dont_fragment = true;
        h.header_checksum = h.calc_header_checksum();
        let mut bytes = h.to_bytes().to_vec();
        bytes.resize(120, 0x55);
        let p = Ipv4Packet::new_checked(&bytes[..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!(p.total_len(), 120);
        assert_eq!(p.ident(), 0xbeef);
        assert!(p.dont_frag());
        assert_eq!(p.protocol(), IpProtocol::TCP);
        assert_eq!(p.src(), SRC);
        assert_eq!(p.dst(), DST);
        assert_eq!(p.checksum(), h.header_checksum);

        let mut b = [0u8; 28];
        repr(8).emit(&mut b).unwrap();
        let s = Ipv4HeaderSlice::from_slice(&b).unwrap();
        assert_eq!(s.header_checksum(), s.to_header().calc_header_checksum());
        assert_eq!(s.total_len(), 28);
        assert_eq!(s.identification(), 0x1234);
        assert!(s.dont_fragment());
        assert_eq!(s.ttl(), 64);
        assert_eq!(s.protocol(), IpNumber::UDP);
        assert_eq!(s.source(), SRC.octets());
        assert_eq!(s.destination(), DST.octets());
    }
}
