//! Ethernet II frames (IEEE 802.3 with an EtherType, RFC 894).

use std::fmt;
use std::str::FromStr;

use super::{read_u16, write_u16, WireError};

/// A 48-bit IEEE 802 MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    /// Reads the first six bytes of `b`; `None` if shorter.
    pub fn from_bytes(b: &[u8]) -> Option<MacAddr> {
        let mut a = [0u8; 6];
        a.copy_from_slice(b.get(..6)?);
        Some(MacAddr(a))
    }

    pub const fn octets(&self) -> [u8; 6] {
        self.0
    }

    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }

    /// IEEE 802: the I/G bit (bit 0 of the first octet) marks group addresses; broadcast is
    /// one of them.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    pub fn is_unicast(&self) -> bool {
        !self.is_multicast()
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A MAC address string was not six `:`- or `-`-separated pairs of hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParseMacError;

impl fmt::Display for ParseMacError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid MAC address (expected six hex pairs like 5a:94:ef:e4:0c:dd)")
    }
}

impl std::error::Error for ParseMacError {}

impl FromStr for MacAddr {
    type Err = ParseMacError;

    /// Accepts `5a:94:ef:e4:0c:dd` or `5A-94-EF-E4-0C-DD` (one separator kind, any case).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        if b.len() != 17 {
            return Err(ParseMacError);
        }
        let sep = b[2];
        if sep != b':' && sep != b'-' {
            return Err(ParseMacError);
        }
        let mut out = [0u8; 6];
        for (i, o) in out.iter_mut().enumerate() {
            let at = i * 3;
            if i > 0 && b[at - 1] != sep {
                return Err(ParseMacError);
            }
            *o = (hex(b[at]).ok_or(ParseMacError)? << 4) | hex(b[at + 1]).ok_or(ParseMacError)?;
        }
        Ok(MacAddr(out))
    }
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// EtherType values (IEEE registry) this stack knows about.
pub struct EtherType;

impl EtherType {
    pub const IPV4: u16 = 0x0800;
    pub const ARP: u16 = 0x0806;
    pub const IPV6: u16 = 0x86dd;
    /// IEEE 802.1Q VLAN tag.
    pub const VLAN: u16 = 0x8100;
    /// IEEE 802.1ad service tag (QinQ).
    pub const QINQ: u16 = 0x88a8;
    /// Pre-standard QinQ tag still seen in the wild.
    pub const QINQ_LEGACY: u16 = 0x9100;
}

/// A checked view of an Ethernet II frame: dst(6) src(6) ethertype(2) payload.
#[derive(Clone, Copy, Debug)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    pub const HEADER_LEN: usize = 14;

    /// Wraps `buffer` after checking that it holds at least the 14-byte header.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        if buffer.as_ref().len() < Self::HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(EthernetFrame { buffer })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    pub fn dst(&self) -> MacAddr {
        MacAddr::from_bytes(self.buffer.as_ref()).unwrap_or_default()
    }

    pub fn src(&self) -> MacAddr {
        self.buffer
            .as_ref()
            .get(6..)
            .and_then(MacAddr::from_bytes)
            .unwrap_or_default()
    }

    pub fn ethertype(&self) -> u16 {
        read_u16(self.buffer.as_ref(), 12)
    }

    /// IEEE 802.1Q/802.1ad tagged: the ethertype field holds a tag protocol identifier. We do
    /// not switch VLANs, so callers drop and count these.
    pub fn is_vlan_tagged(&self) -> bool {
        matches!(
            self.ethertype(),
            EtherType::VLAN | EtherType::QINQ | EtherType::QINQ_LEGACY
        )
    }

    pub fn payload(&self) -> &[u8] {
        self.buffer
            .as_ref()
            .get(Self::HEADER_LEN..)
            .unwrap_or_default()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    pub fn set_dst(&mut self, mac: MacAddr) {
        self.buffer.as_mut()[0..6].copy_from_slice(&mac.0);
    }

    pub fn set_src(&mut self, mac: MacAddr) {
        self.buffer.as_mut()[6..12].copy_from_slice(&mac.0);
    }

    pub fn set_ethertype(&mut self, ethertype: u16) {
        write_u16(self.buffer.as_mut(), 12, ethertype);
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        self.buffer
            .as_mut()
            .get_mut(Self::HEADER_LEN..)
            .unwrap_or_default()
    }
}

/// The header fields of an Ethernet II frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EthernetRepr {
    pub src: MacAddr,
    pub dst: MacAddr,
    pub ethertype: u16,
}

impl EthernetRepr {
    pub const HEADER_LEN: usize = 14;

    pub fn parse<T: AsRef<[u8]>>(frame: &EthernetFrame<T>) -> EthernetRepr {
        EthernetRepr {
            src: frame.src(),
            dst: frame.dst(),
            ethertype: frame.ethertype(),
        }
    }

    /// Writes the 14-byte header at the start of `buf`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        let h = buf
            .get_mut(..Self::HEADER_LEN)
            .ok_or(WireError::Exhausted)?;
        h[0..6].copy_from_slice(&self.dst.0);
        h[6..12].copy_from_slice(&self.src.0);
        write_u16(h, 12, self.ethertype);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GW: MacAddr = MacAddr([0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xdd]);

    #[test]
    fn mac_display_and_parse() {
        assert_eq!(GW.to_string(), "5a:94:ef:e4:0c:dd");
        assert_eq!("5a:94:ef:e4:0c:dd".parse::<MacAddr>(), Ok(GW));
        assert_eq!("5A-94-EF-E4-0C-DD".parse::<MacAddr>(), Ok(GW));
        assert_eq!("5a:94:EF:e4:0C:dd".parse::<MacAddr>(), Ok(GW));
        for bad in [
            "",
            "5a:94:ef:e4:0c",
            "5a:94:ef:e4:0c:dd:",
            "5a:94:ef:e4:0c:dg",
            "5a:94-ef:e4:0c:dd",
            "5a.94.ef.e4.0c.dd",
            "5a:94:ef:e4:0c:d",
            "5a:94:ef:e4:0c:ddd",
            "5a:94:ef:e4:0c:é",
            "5a::94:ef:e4:0c:d",
        ] {
            assert_eq!(bad.parse::<MacAddr>(), Err(ParseMacError), "{bad:?}");
        }
    }

    #[test]
    fn mac_kinds() {
        assert!(MacAddr::BROADCAST.is_broadcast());
        assert!(MacAddr::BROADCAST.is_multicast());
        assert!(MacAddr([0x01, 0, 0x5e, 0, 0, 0xfb]).is_multicast());
        assert!(!MacAddr([0x01, 0, 0x5e, 0, 0, 0xfb]).is_broadcast());
        assert!(GW.is_unicast());
        assert!(!GW.is_multicast());
    }

    #[test]
    fn frame_fields() {
        let mut b = [0u8; 20];
        b[..6].copy_from_slice(&[0xff; 6]);
        b[6..12].copy_from_slice(&GW.0);
        b[12..14].copy_from_slice(&[0x08, 0x06]);
        b[14] = 0xaa;
        let f = EthernetFrame::new_checked(&b[..]).unwrap();
        assert_eq!(f.dst(), MacAddr::BROADCAST);
        assert_eq!(f.src(), GW);
        assert_eq!(f.ethertype(), EtherType::ARP);
        assert!(!f.is_vlan_tagged());
        assert_eq!(f.payload().len(), 6);
        assert_eq!(f.payload()[0], 0xaa);
        assert_eq!(
            EthernetFrame::new_checked(&b[..13]).unwrap_err(),
            WireError::Truncated
        );
        // Exactly a header: empty payload.
        assert!(EthernetFrame::new_checked(&b[..14])
            .unwrap()
            .payload()
            .is_empty());
    }

    #[test]
    fn vlan_recognised() {
        for tpid in [0x8100u16, 0x88a8, 0x9100] {
            let mut b = [0u8; 18];
            b[12..14].copy_from_slice(&tpid.to_be_bytes());
            assert!(EthernetFrame::new_checked(&b[..]).unwrap().is_vlan_tagged());
        }
    }

    #[test]
    fn setters_and_repr_roundtrip() {
        let mut b = [0u8; 16];
        let repr = EthernetRepr {
            src: GW,
            dst: MacAddr::BROADCAST,
            ethertype: EtherType::IPV6,
        };
        repr.emit(&mut b).unwrap();
        let f = EthernetFrame::new_checked(&b[..]).unwrap();
        assert_eq!(EthernetRepr::parse(&f), repr);
        let mut f = EthernetFrame::new_checked(&mut b[..]).unwrap();
        f.set_dst(GW);
        f.set_src(MacAddr::ZERO);
        f.set_ethertype(EtherType::IPV4);
        f.payload_mut().copy_from_slice(&[1, 2]);
        assert_eq!(f.dst(), GW);
        assert_eq!(f.src(), MacAddr::ZERO);
        assert_eq!(f.ethertype(), EtherType::IPV4);
        assert_eq!(&b[14..], &[1, 2]);
        assert_eq!(repr.emit(&mut [0u8; 13]), Err(WireError::Exhausted));
    }

    #[test]
    fn etherparse_cross_check() {
        use etherparse::{EtherType as EpType, Ethernet2Header, Ethernet2HeaderSlice};
        // Built by etherparse, parsed by us.
        let h = Ethernet2Header {
            source: GW.0,
            destination: [0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xee],
            ether_type: EpType::IPV4,
        };
        let bytes = h.to_bytes();
        let f = EthernetFrame::new_checked(&bytes[..]).unwrap();
        assert_eq!(f.src(), GW);
        assert_eq!(f.dst().0, h.destination);
        assert_eq!(f.ethertype(), EtherType::IPV4);
        // Built by us, parsed by etherparse.
        let mut b = [0u8; 14];
        EthernetRepr {
            src: GW,
            dst: MacAddr::BROADCAST,
            ethertype: EtherType::ARP,
        }
        .emit(&mut b)
        .unwrap();
        let s = Ethernet2HeaderSlice::from_slice(&b).unwrap();
        assert_eq!(s.source(), GW.0);
        assert_eq!(s.destination(), [0xff; 6]);
        assert_eq!(s.ether_type(), EpType::ARP);
    }
}
