//! DHCP messages on the wire (RFC 2131 §2, options RFC 2132): a checked view of what a client
//! sends, and the writer of our replies.
//!
//! ```text
//!   0        1        2        3
//!   op       htype    hlen     hops
//!   xid (4)
//!   secs (2)          flags (2)
//!   ciaddr (4)  yiaddr (4)  siaddr (4)  giaddr (4)
//!   chaddr (16)  sname (64)  file (128)
//!   magic cookie 99.130.83.99 (4)      <- offset 236
//!   options: code, len, data... ; 0 = pad, 255 = end   <- offset 240
//! ```

use std::net::Ipv4Addr;

use stack::wire::{MacAddr, WireError};

pub const SERVER_PORT: u16 = 67;
pub const CLIENT_PORT: u16 = 68;

/// RFC 2131 §3: the first four octets of the options field.
pub const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
/// op, htype, hlen, hops, xid, secs, flags, four addresses, chaddr, sname, file.
pub const FIXED_LEN: usize = 236;
/// Where the options start, after the magic cookie.
pub const OPTIONS_OFFSET: usize = FIXED_LEN + 4;
/// RFC 1542 §3.4 / RFC 2131 §2: BOOTP relays and old clients expect at least the 300-byte
/// BOOTP message (64-byte vendor area), so short replies are padded to it.
pub const MIN_MESSAGE_LEN: usize = 300;
/// RFC 2131 §2: "a DHCP client must be prepared to receive a message of up to 576 octets"
/// (IP and UDP headers included); option 57 may raise it.
pub const MIN_MAX_MESSAGE_SIZE: usize = 576;
/// IPv4 + UDP headers, counted in the limit above.
pub const IP_UDP_HEADERS: usize = 28;

pub const OP_BOOTREQUEST: u8 = 1;
pub const OP_BOOTREPLY: u8 = 2;
/// ARP hardware type 1 (Ethernet), whose addresses are 6 bytes.
pub const HTYPE_ETHERNET: u8 = 1;
/// RFC 2131 §2, figure 2: the leftmost bit of `flags`.
pub const FLAG_BROADCAST: u16 = 0x8000;

const CHADDR: usize = 28;
const CHADDR_LEN: usize = 16;
const SNAME: usize = 44;
const SNAME_LEN: usize = 64;
const FILE: usize = 108;
const FILE_LEN: usize = 128;

/// Option codes (RFC 2132 and later) that we read or write.
pub struct OptionCode;

impl OptionCode {
    pub const PAD: u8 = 0;
    pub const SUBNET_MASK: u8 = 1;
    pub const ROUTER: u8 = 3;
    pub const DNS_SERVERS: u8 = 6;
    pub const DOMAIN_NAME: u8 = 15;
    pub const INTERFACE_MTU: u8 = 26;
    pub const REQUESTED_IP: u8 = 50;
    pub const LEASE_TIME: u8 = 51;
    pub const OVERLOAD: u8 = 52;
    pub const MESSAGE_TYPE: u8 = 53;
    pub const SERVER_ID: u8 = 54;
    pub const MESSAGE: u8 = 56;
    pub const MAX_MESSAGE_SIZE: u8 = 57;
    pub const CLIENT_ID: u8 = 61;
    /// RFC 3046 relay agent information.
    pub const RELAY_AGENT_INFO: u8 = 82;
    /// RFC 3397 domain search list.
    pub const DOMAIN_SEARCH: u8 = 119;
    pub const END: u8 = 255;
}

/// RFC 2132 §9.6: DHCP message type (option 53).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MessageType {
    Discover = 1,
    Offer = 2,
    Request = 3,
    Decline = 4,
    Ack = 5,
    Nak = 6,
    Release = 7,
    Inform = 8,
}

impl MessageType {
    pub fn from_u8(v: u8) -> Option<MessageType> {
        Some(match v {
            1 => MessageType::Discover,
            2 => MessageType::Offer,
            3 => MessageType::Request,
            4 => MessageType::Decline,
            5 => MessageType::Ack,
            6 => MessageType::Nak,
            7 => MessageType::Release,
            8 => MessageType::Inform,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            MessageType::Discover => "DHCPDISCOVER",
            MessageType::Offer => "DHCPOFFER",
            MessageType::Request => "DHCPREQUEST",
            MessageType::Decline => "DHCPDECLINE",
            MessageType::Ack => "DHCPACK",
            MessageType::Nak => "DHCPNAK",
            MessageType::Release => "DHCPRELEASE",
            MessageType::Inform => "DHCPINFORM",
        }
    }
}

/// Why a client message could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Shorter than the fixed fields and the magic cookie.
    Truncated,
    /// `op` is not BOOTREQUEST (a reply, or garbage).
    NotRequest,
    /// Not Ethernet addresses (htype 1, hlen 6).
    UnsupportedHardware,
    BadMagicCookie,
    /// An option runs past the end of its area, or a known option has a wrong length.
    BadOptions,
    /// No option 53: plain BOOTP, which we do not serve.
    NoMessageType,
}

/// A checked client message. Options we use are pulled out once; the client identifier and
/// relay agent information are kept as slices of the input so that they can be echoed
/// without allocating.
#[derive(Clone, Copy, Debug)]
pub struct DhcpMessage<'a> {
    pub op: u8,
    pub xid: u32,
    pub secs: u16,
    pub flags: u16,
    pub ciaddr: Ipv4Addr,
    pub yiaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    pub chaddr: MacAddr,
    /// The whole 16-byte chaddr field, echoed as is.
    pub chaddr_field: &'a [u8],
    /// Option 53 as sent; `None` if its value is not a known type.
    pub message_type: Option<MessageType>,
    pub message_type_raw: u8,
    pub options: ClientOptions<'a>,
}

/// The options a server acts on. First occurrence wins (RFC 3396 concatenation of split
/// options is not needed for any of these but 61 and 82, which are echoed as first sent).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientOptions<'a> {
    pub message_type: Option<u8>,
    pub requested_ip: Option<Ipv4Addr>,
    pub server_id: Option<Ipv4Addr>,
    pub max_message_size: Option<u16>,
    pub client_id: Option<&'a [u8]>,
    pub relay_agent_info: Option<&'a [u8]>,
    pub overload: Option<u8>,
}

impl<'a> DhcpMessage<'a> {
    /// Checks the fixed fields, the cookie and every option's length (in `sname` and `file`
    /// too when option 52 says they hold options).
    pub fn parse(b: &'a [u8]) -> Result<DhcpMessage<'a>, ParseError> {
        if b.len() < OPTIONS_OFFSET {
            return Err(ParseError::Truncated);
        }
        let op = b[0];
        if op != OP_BOOTREQUEST {
            return Err(ParseError::NotRequest);
        }
        if b[1] != HTYPE_ETHERNET || b[2] != 6 {
            return Err(ParseError::UnsupportedHardware);
        }
        if b[FIXED_LEN..OPTIONS_OFFSET] != MAGIC_COOKIE {
            return Err(ParseError::BadMagicCookie);
        }
        let mut options = ClientOptions::default();
        read_options(&b[OPTIONS_OFFSET..], &mut options, true)?;
        // RFC 2131 §4.1: with option 52 the `file` field, then `sname`, carry more options.
        if let Some(overload) = options.overload {
            if overload & 1 != 0 {
                read_options(&b[FILE..FILE + FILE_LEN], &mut options, false)?;
            }
            if overload & 2 != 0 {
                read_options(&b[SNAME..SNAME + SNAME_LEN], &mut options, false)?;
            }
        }
        let Some(message_type_raw) = options.message_type else {
            return Err(ParseError::NoMessageType);
        };
        let chaddr_field = &b[CHADDR..CHADDR + CHADDR_LEN];
        Ok(DhcpMessage {
            op,
            xid: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
            secs: u16::from_be_bytes([b[8], b[9]]),
            flags: u16::from_be_bytes([b[10], b[11]]),
            ciaddr: ip_at(b, 12),
            yiaddr: ip_at(b, 16),
            giaddr: ip_at(b, 24),
            chaddr: MacAddr::from_bytes(chaddr_field).unwrap_or_default(),
            chaddr_field,
            message_type: MessageType::from_u8(message_type_raw),
            message_type_raw,
            options,
        })
    }

    /// RFC 2131 §2: the client cannot receive unicast before it has an address.
    pub fn broadcast_flag(&self) -> bool {
        self.flags & FLAG_BROADCAST != 0
    }
}

fn ip_at(b: &[u8], at: usize) -> Ipv4Addr {
    match b.get(at..at + 4) {
        Some(&[a, b2, c, d]) => Ipv4Addr::new(a, b2, c, d),
        _ => Ipv4Addr::UNSPECIFIED,
    }
}

fn ip_of(data: &[u8]) -> Result<Ipv4Addr, ParseError> {
    match *data {
        [a, b, c, d] => Ok(Ipv4Addr::new(a, b, c, d)),
        _ => Err(ParseError::BadOptions),
    }
}

/// Walks one options area. RFC 2132 §2: pad (0) and end (255) are one byte; every other
/// option is code, length, data. An area that ends without an end option is accepted (the
/// input ran out at an option boundary); one whose last option runs past it is not.
fn read_options<'a>(
    area: &'a [u8],
    opts: &mut ClientOptions<'a>,
    main_area: bool,
) -> Result<(), ParseError> {
    let mut i = 0;
    while let Some(&code) = area.get(i) {
        match code {
            OptionCode::PAD => {
                i += 1;
                continue;
            }
            OptionCode::END => return Ok(()),
            _ => {}
        }
        let len = usize::from(*area.get(i + 1).ok_or(ParseError::BadOptions)?);
        let data = area.get(i + 2..i + 2 + len).ok_or(ParseError::BadOptions)?;
        i += 2 + len;
        match code {
            OptionCode::MESSAGE_TYPE => {
                let [t] = *data else {
                    return Err(ParseError::BadOptions);
                };
                opts.message_type.get_or_insert(t);
            }
            OptionCode::REQUESTED_IP => {
                let ip = ip_of(data)?;
                opts.requested_ip.get_or_insert(ip);
            }
            OptionCode::SERVER_ID => {
                let ip = ip_of(data)?;
                opts.server_id.get_or_insert(ip);
            }
            OptionCode::MAX_MESSAGE_SIZE => {
                let [hi, lo] = *data else {
                    return Err(ParseError::BadOptions);
                };
                opts.max_message_size
                    .get_or_insert(u16::from_be_bytes([hi, lo]));
            }
            // RFC 2132 §9.14: at least two octets (a type and an identifier).
            OptionCode::CLIENT_ID if data.len() >= 2 => {
                opts.client_id.get_or_insert(data);
            }
            OptionCode::CLIENT_ID => return Err(ParseError::BadOptions),
            OptionCode::RELAY_AGENT_INFO if !data.is_empty() => {
                opts.relay_agent_info.get_or_insert(data);
            }
            OptionCode::RELAY_AGENT_INFO => return Err(ParseError::BadOptions),
            // RFC 2132 §9.3: only in the options field itself; values 1, 2, 3.
            OptionCode::OVERLOAD if main_area => match *data {
                [v @ 1..=3] => {
                    opts.overload.get_or_insert(v);
                }
                _ => return Err(ParseError::BadOptions),
            },
            _ => {}
        }
    }
    Ok(())
}

/// Bytes an option takes on the wire, split into 255-byte pieces as RFC 3396 §7 allows.
pub fn encoded_len(data_len: usize) -> usize {
    if data_len == 0 {
        2
    } else {
        data_len + 2 * data_len.div_ceil(255)
    }
}

/// Room for the options of one reply. Pushed in code order (RFC 2131 does not require an
/// order; upstream sorts by code and so do we).
pub const MAX_REPLY_OPTIONS: usize = 16;

#[derive(Clone, Copy, Debug)]
pub struct OptionList<'a> {
    items: [(u8, &'a [u8]); MAX_REPLY_OPTIONS],
    len: usize,
}

impl Default for OptionList<'_> {
    fn default() -> Self {
        OptionList {
            items: [(0, &[]); MAX_REPLY_OPTIONS],
            len: 0,
        }
    }
}

impl<'a> OptionList<'a> {
    /// Adds an option; ignored when the list is full (it never is with our fixed set).
    pub fn push(&mut self, code: u8, data: &'a [u8]) {
        if let Some(slot) = self.items.get_mut(self.len) {
            *slot = (code, data);
            self.len += 1;
        }
    }

    pub fn remove(&mut self, code: u8) {
        let mut kept = 0;
        for i in 0..self.len {
            if self.items[i].0 != code {
                self.items[kept] = self.items[i];
                kept += 1;
            }
        }
        self.len = kept;
    }

    pub fn contains(&self, code: u8) -> bool {
        self.iter().any(|(c, _)| c == code)
    }

    pub fn iter(&self) -> impl Iterator<Item = (u8, &'a [u8])> + '_ {
        self.items.iter().take(self.len).copied()
    }

    /// Every option plus the end option.
    pub fn wire_len(&self) -> usize {
        self.iter()
            .map(|(_, d)| encoded_len(d.len()))
            .sum::<usize>()
            + 1
    }

    /// Writes every option and the end option at the start of `buf`; returns the bytes used.
    fn write(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let mut at = 0;
        for (code, data) in self.iter() {
            let mut chunks = data.chunks(255).peekable();
            if chunks.peek().is_none() {
                let h = buf.get_mut(at..at + 2).ok_or(WireError::Exhausted)?;
                h.copy_from_slice(&[code, 0]);
                at += 2;
            }
            for chunk in chunks {
                let n = u8::try_from(chunk.len()).map_err(|_| WireError::Exhausted)?;
                let dst = buf
                    .get_mut(at..at + 2 + chunk.len())
                    .ok_or(WireError::Exhausted)?;
                dst[0] = code;
                dst[1] = n;
                dst[2..].copy_from_slice(chunk);
                at += dst.len();
            }
        }
        *buf.get_mut(at).ok_or(WireError::Exhausted)? = OptionCode::END;
        Ok(at + 1)
    }
}

/// The fixed fields of a reply (RFC 2131 §4.3.1, table 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplyHeader<'a> {
    pub xid: u32,
    pub flags: u16,
    pub ciaddr: Ipv4Addr,
    pub yiaddr: Ipv4Addr,
    pub siaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    /// The request's 16-byte chaddr field.
    pub chaddr_field: &'a [u8],
}

/// Length of a reply message with these options (padded to [`MIN_MESSAGE_LEN`]).
pub fn reply_len(options: &OptionList<'_>) -> usize {
    (OPTIONS_OFFSET + options.wire_len()).max(MIN_MESSAGE_LEN)
}

/// Writes a BOOTREPLY at the start of `buf` (which must be zeroed, as `FrameBatch` hands it
/// out); `sname` and `file` stay empty. Returns the message length.
pub fn emit_reply(
    buf: &mut [u8],
    header: &ReplyHeader<'_>,
    options: &OptionList<'_>,
) -> Result<usize, WireError> {
    let len = reply_len(options);
    let m = buf.get_mut(..len).ok_or(WireError::Exhausted)?;
    m[0] = OP_BOOTREPLY;
    m[1] = HTYPE_ETHERNET;
    m[2] = 6;
    m[3] = 0;
    m[4..8].copy_from_slice(&header.xid.to_be_bytes());
    m[8..10].copy_from_slice(&[0, 0]);
    m[10..12].copy_from_slice(&header.flags.to_be_bytes());
    m[12..16].copy_from_slice(&header.ciaddr.octets());
    m[16..20].copy_from_slice(&header.yiaddr.octets());
    m[20..24].copy_from_slice(&header.siaddr.octets());
    m[24..28].copy_from_slice(&header.giaddr.octets());
    let chaddr = header
        .chaddr_field
        .get(..CHADDR_LEN)
        .ok_or(WireError::Exhausted)?;
    m[CHADDR..CHADDR + CHADDR_LEN].copy_from_slice(chaddr);
    m[SNAME..FIXED_LEN].fill(0);
    m[FIXED_LEN..OPTIONS_OFFSET].copy_from_slice(&MAGIC_COOKIE);
    let used = options.write(&mut m[OPTIONS_OFFSET..])?;
    // RFC 2131 §4.1 / RFC 1542: pad after the end option with zeros (pad options).
    m[OPTIONS_OFFSET + used..].fill(0);
    Ok(len)
}

/// RFC 1035 §3.1 names as RFC 3397 wants them in option 119: labels, uncompressed (as
/// upstream sends them; compression is allowed, not required). Returns the encoded list and
/// the names that were skipped as invalid (empty, a label over 63 bytes, over 255 bytes).
pub fn encode_search_list(domains: &[String]) -> (Vec<u8>, Vec<String>) {
    let mut out = Vec::new();
    let mut bad = Vec::new();
    for d in domains {
        match encode_name(d) {
            Some(n) => out.extend_from_slice(&n),
            None => bad.push(d.clone()),
        }
    }
    (out, bad)
}

fn encode_name(name: &str) -> Option<Vec<u8>> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(name.len() + 2);
    for label in name.split('.') {
        let len = u8::try_from(label.len())
            .ok()
            .filter(|l| (1..=63).contains(l))?;
        out.push(len);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    (out.len() <= 255).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(options: &[u8]) -> Vec<u8> {
        let mut m = vec![0u8; OPTIONS_OFFSET];
        m[0] = OP_BOOTREQUEST;
        m[1] = HTYPE_ETHERNET;
        m[2] = 6;
        m[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
        m[CHADDR..CHADDR + 6].copy_from_slice(&[0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xee]);
        m[FIXED_LEN..OPTIONS_OFFSET].copy_from_slice(&MAGIC_COOKIE);
        m.extend_from_slice(options);
        m
    }

    #[test]
    fn parses_fixed_fields_and_options() {
        let mut m = message(&[
            53, 1, 3, 0, 0, 50, 4, 192, 168, 127, 9, 54, 4, 192, 168, 127, 1, 57, 2, 2, 64, 61, 7,
            1, 0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xee, 82, 3, 1, 1, 7, 12, 3, b'v', b'm', b'1', 255, 0,
            0,
        ]);
        m[10] = 0x80;
        m[12..16].copy_from_slice(&[10, 0, 0, 1]);
        let d = DhcpMessage::parse(&m).unwrap();
        assert_eq!(d.xid, 0x1234_5678);
        assert!(d.broadcast_flag());
        assert_eq!(d.ciaddr, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(d.chaddr.to_string(), "5a:94:ef:e4:0c:ee");
        assert_eq!(d.message_type, Some(MessageType::Request));
        assert_eq!(
            d.options.requested_ip,
            Some(Ipv4Addr::new(192, 168, 127, 9))
        );
        assert_eq!(d.options.server_id, Some(Ipv4Addr::new(192, 168, 127, 1)));
        assert_eq!(d.options.max_message_size, Some(576));
        assert_eq!(d.options.client_id.unwrap().len(), 7);
        assert_eq!(d.options.relay_agent_info, Some(&[1u8, 1, 7][..]));
    }

    #[test]
    fn rejects_bad_headers_and_options() {
        let good = message(&[53, 1, 1, 255]);
        assert!(DhcpMessage::parse(&good).is_ok());
        for len in 0..OPTIONS_OFFSET {
            assert_eq!(
                DhcpMessage::parse(&good[..len]).unwrap_err(),
                ParseError::Truncated
            );
        }
        // Cut inside the options: the message type option itself is cut.
        assert_eq!(
            DhcpMessage::parse(&good[..OPTIONS_OFFSET + 2]).unwrap_err(),
            ParseError::BadOptions
        );
        // No end option but whole options: accepted.
        assert!(DhcpMessage::parse(&good[..OPTIONS_OFFSET + 3]).is_ok());
        let mut m = good.clone();
        m[0] = OP_BOOTREPLY;
        assert_eq!(DhcpMessage::parse(&m).unwrap_err(), ParseError::NotRequest);
        let mut m = good.clone();
        m[2] = 16;
        assert_eq!(
            DhcpMessage::parse(&m).unwrap_err(),
            ParseError::UnsupportedHardware
        );
        let mut m = good.clone();
        m[239] = 0;
        assert_eq!(
            DhcpMessage::parse(&m).unwrap_err(),
            ParseError::BadMagicCookie
        );
        for opts in [
            &[53, 1, 1, 12, 200, 1, 2][..],
            &[53, 2, 1, 1, 255],
            &[53, 1, 1, 50, 3, 1, 2, 3, 255],
            &[53, 1, 1, 54, 5, 1, 2, 3, 4, 5, 255],
            &[53, 1, 1, 57, 1, 2, 255],
            &[53, 1, 1, 61, 1, 1, 255],
            &[53, 1, 1, 82, 0, 255],
            &[53, 1, 1, 52, 1, 4, 255],
            &[53],
        ] {
            assert_eq!(
                DhcpMessage::parse(&message(opts)).unwrap_err(),
                ParseError::BadOptions,
                "{opts:?}"
            );
        }
        assert_eq!(
            DhcpMessage::parse(&message(&[12, 1, b'x', 255])).unwrap_err(),
            ParseError::NoMessageType
        );
        assert_eq!(
            DhcpMessage::parse(&message(&[])).unwrap_err(),
            ParseError::NoMessageType
        );
        let m = message(&[53, 1, 42, 255]);
        let d = DhcpMessage::parse(&m).unwrap();
        assert_eq!((d.message_type, d.message_type_raw), (None, 42));
    }

    #[test]
    fn overloaded_fields_carry_options() {
        // Option 52 = 3: the message type is in `file`, the requested IP in `sname`.
        let mut m = message(&[52, 1, 3, 255]);
        m[FILE..FILE + 4].copy_from_slice(&[53, 1, 1, 255]);
        m[SNAME..SNAME + 7].copy_from_slice(&[50, 4, 10, 0, 0, 7, 255]);
        let d = DhcpMessage::parse(&m).unwrap();
        assert_eq!(d.message_type, Some(MessageType::Discover));
        assert_eq!(d.options.requested_ip, Some(Ipv4Addr::new(10, 0, 0, 7)));
        // Overload 1: only `file` is read; a garbage `sname` does not matter.
        let mut m = message(&[52, 1, 1, 255]);
        m[FILE..FILE + 3].copy_from_slice(&[53, 1, 3]);
        m[SNAME..SNAME + 2].copy_from_slice(&[50, 200]);
        assert!(DhcpMessage::parse(&m).is_ok());
        // A bad length in an overloaded field is a bad message.
        let mut m = message(&[53, 1, 1, 52, 1, 2, 255]);
        m[SNAME..SNAME + 2].copy_from_slice(&[50, 200]);
        assert_eq!(DhcpMessage::parse(&m).unwrap_err(), ParseError::BadOptions);
        // Option 52 inside an overloaded field is not followed again.
        let mut m = message(&[53, 1, 1, 52, 1, 1, 255]);
        m[FILE..FILE + 3].copy_from_slice(&[52, 1, 2]);
        m[SNAME..SNAME + 2].copy_from_slice(&[50, 200]);
        assert!(DhcpMessage::parse(&m).is_ok());
    }

    #[test]
    fn search_list_encoding() {
        let (bytes, bad) = encode_search_list(&[
            "example.com".into(),
            "corp.example.org.".into(),
            "".into(),
            "a..b".into(),
            format!("{}.com", "x".repeat(64)),
        ]);
        assert_eq!(
            bytes,
            b"\x07example\x03com\x00\x04corp\x07example\x03org\x00".to_vec()
        );
        assert_eq!(bad.len(), 3);
        let long = vec!["a".repeat(60); 5].join(".");
        assert!(encode_name(&long).is_none());
    }

    #[test]
    fn long_options_are_split() {
        let data = vec![7u8; 300];
        let mut l = OptionList::default();
        l.push(OptionCode::DOMAIN_SEARCH, &data);
        l.push(OptionCode::MESSAGE, &[]);
        assert_eq!(l.wire_len(), 2 + 255 + 2 + 45 + 2 + 1);
        let mut buf = vec![0u8; 400];
        assert_eq!(l.write(&mut buf), Ok(l.wire_len()));
        assert_eq!(&buf[..2], &[119, 255]);
        assert_eq!(&buf[257..259], &[119, 45]);
        assert_eq!(&buf[304..307], &[56, 0, 255]);
        assert_eq!(l.write(&mut buf[..306]), Err(WireError::Exhausted));
        l.remove(OptionCode::DOMAIN_SEARCH);
        assert!(!l.contains(OptionCode::DOMAIN_SEARCH) && l.contains(OptionCode::MESSAGE));
        assert_eq!(l.wire_len(), 3);
    }
}
