//! ARP for Ethernet/IPv4 (RFC 826).

use std::net::Ipv4Addr;

use super::{read_ipv4, read_u16, write_ipv4, write_u16, MacAddr, WireError};

/// ARP opcodes (RFC 826; IANA "Operation Codes").
pub struct ArpOperation;

impl ArpOperation {
    pub const REQUEST: u16 = 1;
    pub const REPLY: u16 = 2;
}

/// RFC 826: hardware type 1 is Ethernet.
const HTYPE_ETHERNET: u16 = 1;
/// RFC 826: the protocol type space is the EtherType space; IPv4 is 0x0800.
const PTYPE_IPV4: u16 = 0x0800;

/// A checked view of an Ethernet/IPv4 ARP packet (28 bytes):
/// htype(2) ptype(2) hlen(1) plen(1) oper(2) sha(6) spa(4) tha(6) tpa(4).
#[derive(Clone, Copy, Debug)]
pub struct ArpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    pub const LEN: usize = 28;

    /// Wraps `buffer` (the Ethernet payload; trailing padding is ignored) after checking the
    /// length and that it is Ethernet/IPv4 ARP (htype 1, ptype 0x0800, hlen 6, plen 4).
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let b = buffer.as_ref();
        if b.len() < 8 {
            return Err(WireError::Truncated);
        }
        if read_u16(b, 0) != HTYPE_ETHERNET
            || read_u16(b, 2) != PTYPE_IPV4
            || b[4] != 6
            || b[5] != 4
        {
            return Err(WireError::Unsupported);
        }
        if b.len() < Self::LEN {
            return Err(WireError::Truncated);
        }
        Ok(ArpPacket { buffer })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn operation(&self) -> u16 {
        read_u16(self.buffer.as_ref(), 6)
    }

    pub fn sender_hw_addr(&self) -> MacAddr {
        self.mac_at(8)
    }

    pub fn sender_proto_addr(&self) -> Ipv4Addr {
        read_ipv4(self.buffer.as_ref(), 14)
    }

    pub fn target_hw_addr(&self) -> MacAddr {
        self.mac_at(18)
    }

    pub fn target_proto_addr(&self) -> Ipv4Addr {
        read_ipv4(self.buffer.as_ref(), 24)
    }

    fn mac_at(&self, at: usize) -> MacAddr {
        self.buffer
            .as_ref()
            .get(at..)
            .and_then(MacAddr::from_bytes)
            .unwrap_or_default()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ArpPacket<T> {
    pub fn set_operation(&mut self, op: u16) {
        write_u16(self.buffer.as_mut(), 6, op);
    }

    pub fn set_sender_hw_addr(&mut self, mac: MacAddr) {
        self.buffer.as_mut()[8..14].copy_from_slice(&mac.0);
    }

    pub fn set_sender_proto_addr(&mut self, ip: Ipv4Addr) {
        write_ipv4(self.buffer.as_mut(), 14, ip);
    }

    pub fn set_target_hw_addr(&mut self, mac: MacAddr) {
        self.buffer.as_mut()[18..24].copy_from_slice(&mac.0);
    }

    pub fn set_target_proto_addr(&mut self, ip: Ipv4Addr) {
        write_ipv4(self.buffer.as_mut(), 24, ip);
    }
}

/// An Ethernet/IPv4 ARP message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArpRepr {
    pub operation: u16,
    pub sender_hw: MacAddr,
    pub sender_ip: Ipv4Addr,
    pub target_hw: MacAddr,
    pub target_ip: Ipv4Addr,
}

impl ArpRepr {
    pub const LEN: usize = 28;

    pub fn parse<T: AsRef<[u8]>>(p: &ArpPacket<T>) -> ArpRepr {
        ArpRepr {
            operation: p.operation(),
            sender_hw: p.sender_hw_addr(),
            sender_ip: p.sender_proto_addr(),
            target_hw: p.target_hw_addr(),
            target_ip: p.target_proto_addr(),
        }
    }

    /// RFC 826 ("Packet Reception"): swap sender and target, fill in our hardware address as
    /// the sender, set the opcode to reply. The sender IP is the address that was asked for.
    pub fn reply(&self, our_mac: MacAddr) -> ArpRepr {
        ArpRepr {
            operation: ArpOperation::REPLY,
            sender_hw: our_mac,
            sender_ip: self.target_ip,
            target_hw: self.sender_hw,
            target_ip: self.sender_ip,
        }
    }

    /// RFC 5227 §2.1.1: a probe has sender IP 0.0.0.0.
    pub fn is_probe(&self) -> bool {
        self.operation == ArpOperation::REQUEST && self.sender_ip.is_unspecified()
    }

    /// RFC 5227 §2.3 / RFC 5944 §4.6: an announcement (gratuitous ARP) names the sender's
    /// own address as the target.
    pub fn is_gratuitous(&self) -> bool {
        self.sender_ip == self.target_ip
    }

    /// Writes the 28-byte packet at the start of `buf`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        let b = buf.get_mut(..Self::LEN).ok_or(WireError::Exhausted)?;
        write_u16(b, 0, HTYPE_ETHERNET);
        write_u16(b, 2, PTYPE_IPV4);
        b[4] = 6;
        b[5] = 4;
        write_u16(b, 6, self.operation);
        b[8..14].copy_from_slice(&self.sender_hw.0);
        write_ipv4(b, 14, self.sender_ip);
        b[18..24].copy_from_slice(&self.target_hw.0);
        write_ipv4(b, 24, self.target_ip);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GW: MacAddr = MacAddr([0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xdd]);
    const GUEST: MacAddr = MacAddr([0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xee]);

    fn request() -> [u8; 28] {
        let mut b = [0u8; 28];
        ArpRepr {
            operation: ArpOperation::REQUEST,
            sender_hw: GUEST,
            sender_ip: Ipv4Addr::new(192, 168, 127, 2),
            target_hw: MacAddr::ZERO,
            target_ip: Ipv4Addr::new(192, 168, 127, 1),
        }
        .emit(&mut b)
        .unwrap();
        b
    }

    #[test]
    fn parse_fields() {
        let b = request();
        assert_eq!(
            &b[..8],
            &[0, 1, 8, 0, 6, 4, 0, 1],
            "fixed header of an Ethernet/IPv4 request"
        );
        let p = ArpPacket::new_checked(&b[..]).unwrap();
        assert_eq!(p.operation(), ArpOperation::REQUEST);
        assert_eq!(p.sender_hw_addr(), GUEST);
        assert_eq!(p.sender_proto_addr(), Ipv4Addr::new(192, 168, 127, 2));
        assert_eq!(p.target_hw_addr(), MacAddr::ZERO);
        assert_eq!(p.target_proto_addr(), Ipv4Addr::new(192, 168, 127, 1));
    }

    #[test]
    fn malformed() {
        let b = request();
        for len in 0..28 {
            assert!(ArpPacket::new_checked(&b[..len]).is_err(), "len {len}");
        }
        // Trailing Ethernet padding is fine.
        let mut padded = [0u8; 46];
        padded[..28].copy_from_slice(&b);
        assert!(ArpPacket::new_checked(&padded[..]).is_ok());
        for (at, v) in [(1, 6u8), (2, 0x86), (4, 8), (5, 16)] {
            let mut m = b;
            m[at] = v;
            assert_eq!(
                ArpPacket::new_checked(&m[..]).unwrap_err(),
                WireError::Unsupported
            );
        }
    }

    #[test]
    fn reply_and_setters() {
        let b = request();
        let req = ArpRepr::parse(&ArpPacket::new_checked(&b[..]).unwrap());
        assert!(!req.is_probe());
        assert!(!req.is_gratuitous());
        let rep = req.reply(GW);
        assert_eq!(rep.operation, ArpOperation::REPLY);
        assert_eq!(rep.sender_hw, GW);
        assert_eq!(rep.sender_ip, req.target_ip);
        assert_eq!(rep.target_hw, GUEST);
        assert_eq!(rep.target_ip, req.sender_ip);
        let mut m = b;
        let mut p = ArpPacket::new_checked(&mut m[..]).unwrap();
        p.set_operation(ArpOperation::REPLY);
        p.set_sender_hw_addr(GW);
        p.set_sender_proto_addr(rep.sender_ip);
        p.set_target_hw_addr(GUEST);
        p.set_target_proto_addr(rep.target_ip);
        assert_eq!(ArpRepr::parse(&p), rep);
        assert_eq!(rep.emit(&mut [0u8; 27]), Err(WireError::Exhausted));
    }

    #[test]
    fn etherparse_cross_check() {
        use etherparse::{ArpHardwareId, ArpOperation as EpOp, ArpPacket as EpArp, EtherType};
        let ep = EpArp::new(
            ArpHardwareId::ETHERNET,
            EtherType::IPV4,
            EpOp::REPLY,
            &GW.0,
            &[192, 168, 127, 1],
            &GUEST.0,
            &[192, 168, 127, 2],
        )
        .unwrap();
        let bytes = ep.to_bytes();
        let p = ArpPacket::new_checked(&bytes[..]).unwrap();
        assert_eq!(p.operation(), ArpOperation::REPLY);
        assert_eq!(p.sender_hw_addr(), GW);
        assert_eq!(p.sender_proto_addr(), Ipv4Addr::new(192, 168, 127, 1));
        assert_eq!(p.target_hw_addr(), GUEST);
        assert_eq!(p.target_proto_addr(), Ipv4Addr::new(192, 168, 127, 2));

        let ours = request();
        let parsed = EpArp::from_slice(&ours).unwrap();
        let eth = parsed.try_eth_ipv4().unwrap();
        assert_eq!(parsed.operation, EpOp::REQUEST);
        assert_eq!(eth.sender_mac, GUEST.0);
        assert_eq!(eth.sender_ipv4, [192, 168, 127, 2]);
        assert_eq!(eth.target_mac, [0; 6]);
        assert_eq!(eth.target_ipv4, [192, 168, 127, 1]);
    }
}
