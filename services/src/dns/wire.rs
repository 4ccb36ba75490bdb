//! DNS message views (RFC 1035 §4.1): checked reads that never panic, and the few replies the
//! gateway writes itself (local answers, FORMERR/NOTIMP/SERVFAIL).
//!
//! Nothing here reads a byte before checking that it exists: every access goes through
//! `get()` or a length check, and names are decoded with a hop limit and backward-only
//! compression pointers, so a pointer loop ends in [`ParseError::BadPointer`].

use std::fmt;
use std::net::Ipv4Addr;

/// Fixed header length (RFC 1035 §4.1.1).
pub const HEADER_LEN: usize = 12;
/// RFC 1035 §2.3.4: names are 255 octets or less (wire form, length bytes included).
pub const MAX_NAME_LEN: usize = 255;
/// RFC 1035 §2.3.4: labels are 63 octets or less.
pub const MAX_LABEL_LEN: usize = 63;
/// The largest DNS message (TCP length prefix, RFC 1035 §4.2.2).
pub const MAX_MESSAGE_LEN: usize = 65535;
/// UDP payload size we advertise in the OPT record of our own replies (RFC 6891 §6.2.5,
/// the DNS flag day 2020 value that avoids IP fragmentation).
pub const EDNS_UDP_SIZE: u16 = 1232;

/// Response codes (RFC 1035 §4.1.1, RFC 6891 §9 for the extended BADVERS).
pub mod rcode {
    pub const NOERROR: u8 = 0;
    pub const FORMERR: u8 = 1;
    pub const SERVFAIL: u8 = 2;
    pub const NXDOMAIN: u8 = 3;
    pub const NOTIMP: u8 = 4;
    pub const REFUSED: u8 = 5;
    /// Extended RCODE 16: upper 8 bits (1) go in the OPT TTL, lower 4 bits (0) in the header.
    pub const BADVERS: u16 = 16;
}

/// Record types used by the server and its tests.
pub mod rtype {
    pub const A: u16 = 1;
    pub const NS: u16 = 2;
    pub const CNAME: u16 = 5;
    pub const SOA: u16 = 6;
    pub const PTR: u16 = 12;
    pub const MX: u16 = 15;
    pub const TXT: u16 = 16;
    pub const AAAA: u16 = 28;
    pub const SRV: u16 = 33;
    pub const OPT: u16 = 41;
    pub const ANY: u16 = 255;
    pub const CAA: u16 = 257;
}

/// Classes (RFC 1035 §3.2.4, §3.2.5).
pub const CLASS_IN: u16 = 1;
pub const CLASS_ANY: u16 = 255;

/// Why a message could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ParseError {
    /// Shorter than the header, or a count or length runs past the end.
    Truncated,
    /// A label length byte with the reserved 0x40/0x80 prefixes (RFC 6891 §5 retired them).
    BadLabel,
    /// A compression pointer that does not point strictly backwards, or too many hops.
    BadPointer,
    /// More than 255 octets once decompressed.
    NameTooLong,
    /// Structurally readable but not allowed (e.g. two OPT records, OPT with a name).
    Malformed,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParseError::Truncated => "truncated",
            ParseError::BadLabel => "bad label type",
            ParseError::BadPointer => "bad compression pointer",
            ParseError::NameTooLong => "name too long",
            ParseError::Malformed => "malformed",
        })
    }
}

impl std::error::Error for ParseError {}

fn be16(msg: &[u8], at: usize) -> Result<u16, ParseError> {
    match msg.get(at..at.checked_add(2).ok_or(ParseError::Truncated)?) {
        Some(&[a, b]) => Ok(u16::from_be_bytes([a, b])),
        _ => Err(ParseError::Truncated),
    }
}

fn be32(msg: &[u8], at: usize) -> Result<u32, ParseError> {
    match msg.get(at..at.checked_add(4).ok_or(ParseError::Truncated)?) {
        Some(&[a, b, c, d]) => Ok(u32::from_be_bytes([a, b, c, d])),
        _ => Err(ParseError::Truncated),
    }
}

/// The 12-byte header (RFC 1035 §4.1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub id: u16,
    /// QR, OPCODE, AA, TC, RD, RA, Z, AD, CD, RCODE as on the wire.
    pub flags: u16,
    pub qdcount: u16,
    pub ancount: u16,
    pub nscount: u16,
    pub arcount: u16,
}

impl Header {
    const QR: u16 = 0x8000;
    const AA: u16 = 0x0400;
    const TC: u16 = 0x0200;
    const RD: u16 = 0x0100;
    const RA: u16 = 0x0080;
    const CD: u16 = 0x0010;

    pub fn parse(msg: &[u8]) -> Result<Header, ParseError> {
        Ok(Header {
            id: be16(msg, 0)?,
            flags: be16(msg, 2)?,
            qdcount: be16(msg, 4)?,
            ancount: be16(msg, 6)?,
            nscount: be16(msg, 8)?,
            arcount: be16(msg, 10)?,
        })
    }

    pub fn is_response(&self) -> bool {
        self.flags & Self::QR != 0
    }
    pub fn opcode(&self) -> u8 {
        ((self.flags >> 11) & 0xf).to_be_bytes()[1]
    }
    pub fn authoritative(&self) -> bool {
        self.flags & Self::AA != 0
    }
    pub fn truncated(&self) -> bool {
        self.flags & Self::TC != 0
    }
    pub fn recursion_desired(&self) -> bool {
        self.flags & Self::RD != 0
    }
    pub fn recursion_available(&self) -> bool {
        self.flags & Self::RA != 0
    }
    pub fn checking_disabled(&self) -> bool {
        self.flags & Self::CD != 0
    }
    pub fn rcode(&self) -> u8 {
        (self.flags & 0xf).to_be_bytes()[1]
    }

    /// Flags of a reply to a query with these flags, as miekg/dns `SetReply` and RFC 1035
    /// §4.1.1 have it: QR set, OPCODE, RD and CD copied, RA set, AA/TC/AD clear.
    fn reply_flags(&self, rcode: u8) -> u16 {
        Self::QR | (self.flags & (0x7800 | Self::RD | Self::CD)) | Self::RA | u16::from(rcode & 0xf)
    }
}

/// Overwrite the id of a message in place (no-op on a message shorter than two bytes).
pub fn set_id(msg: &mut [u8], id: u16) {
    if let Some(b) = msg.get_mut(..2) {
        b.copy_from_slice(&id.to_be_bytes());
    }
}

/// A domain name, decompressed: wire-format labels (each with its length byte), without the
/// terminating root label. Case is kept as received.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Name {
    wire: Vec<u8>,
}

impl Name {
    /// The root name `.`.
    pub fn root() -> Name {
        Name { wire: Vec::new() }
    }

    /// Decode the name at `start`, following compression pointers (RFC 1035 §4.1.4).
    /// Returns the name and the offset just past it in `msg` (past the first pointer when
    /// compressed). Pointers must point strictly before the position they are read at, so
    /// decoding always terminates; the hop count is capped as well.
    pub fn parse(msg: &[u8], start: usize) -> Result<(Name, usize), ParseError> {
        const MAX_HOPS: usize = 64;
        let mut wire = Vec::new();
        let mut pos = start;
        let mut end = None;
        let mut hops = 0usize;
        loop {
            let len = *msg.get(pos).ok_or(ParseError::Truncated)?;
            match len & 0xc0 {
                0x00 => {
                    if len == 0 {
                        // RFC 1035 §3.1: the root label ends the name; +1 for the length byte
                        // of the root label we do not store.
                        if wire.len() + 1 > MAX_NAME_LEN {
                            return Err(ParseError::NameTooLong);
                        }
                        return Ok((Name { wire }, end.unwrap_or(pos + 1)));
                    }
                    let label = msg
                        .get(pos + 1..pos + 1 + usize::from(len))
                        .ok_or(ParseError::Truncated)?;
                    if wire.len() + 1 + label.len() + 1 > MAX_NAME_LEN {
                        return Err(ParseError::NameTooLong);
                    }
                    wire.push(len);
                    wire.extend_from_slice(label);
                    pos += 1 + usize::from(len);
                }
                0xc0 => {
                    let low = *msg.get(pos + 1).ok_or(ParseError::Truncated)?;
                    let target = usize::from(u16::from_be_bytes([len & 0x3f, low]));
                    hops += 1;
                    if target >= pos || hops > MAX_HOPS {
                        return Err(ParseError::BadPointer);
                    }
                    if end.is_none() {
                        end = Some(pos + 2);
                    }
                    pos = target;
                }
                _ => return Err(ParseError::BadLabel),
            }
        }
    }

    /// Build from presentation format (`gateway.containers.internal.`, trailing dot
    /// optional; `\.`, `\\` and `\DDD` escapes understood).
    pub fn from_text(text: &str) -> Result<Name, ParseError> {
        let mut wire = Vec::new();
        let bytes = text.as_bytes();
        if bytes == b"." || bytes.is_empty() {
            return Ok(Name::root());
        }
        let mut label: Vec<u8> = Vec::new();
        let mut i = 0;
        let flush = |label: &mut Vec<u8>, wire: &mut Vec<u8>| -> Result<(), ParseError> {
            let len = u8::try_from(label.len()).map_err(|_| ParseError::Malformed)?;
            if label.is_empty() || usize::from(len) > MAX_LABEL_LEN {
                return Err(ParseError::Malformed);
            }
            wire.push(len);
            wire.append(label);
            if wire.len() + 1 > MAX_NAME_LEN {
                return Err(ParseError::NameTooLong);
            }
            Ok(())
        };
        while let Some(&c) = bytes.get(i) {
            match c {
                b'.' => {
                    flush(&mut label, &mut wire)?;
                    i += 1;
                }
                b'\\' => {
                    let digits = bytes.get(i + 1..i + 4);
                    match digits {
                        Some(d) if d.iter().all(u8::is_ascii_digit) => {
                            let v = d.iter().fold(0u32, |acc, x| acc * 10 + u32::from(x - b'0'));
                            label.push(u8::try_from(v).map_err(|_| ParseError::Malformed)?);
                            i += 4;
                        }
                        _ => {
                            label.push(*bytes.get(i + 1).ok_or(ParseError::Malformed)?);
                            i += 2;
                        }
                    }
                }
                _ => {
                    label.push(c);
                    i += 1;
                }
            }
        }
        if !label.is_empty() {
            flush(&mut label, &mut wire)?;
        }
        Ok(Name { wire })
    }

    /// Wire form without the root label.
    pub fn wire_labels(&self) -> &[u8] {
        &self.wire
    }

    /// Labels, leftmost first.
    pub fn labels(&self) -> Labels<'_> {
        Labels { rest: &self.wire }
    }

    pub fn label_count(&self) -> usize {
        self.labels().count()
    }

    /// Append the uncompressed wire form, root label included.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.wire);
        out.push(0);
    }

    /// RFC 4343: names compare case-insensitively (ASCII only).
    pub fn eq_ignore_case(&self, other: &Name) -> bool {
        self.wire.eq_ignore_ascii_case(&other.wire)
    }

    /// Presentation form, lower-cased, with a trailing dot (`.` for the root).
    pub fn to_lowercase_text(&self) -> String {
        if self.wire.is_empty() {
            return ".".to_string();
        }
        let mut s = labels_to_text(self.labels());
        s.push('.');
        s
    }
}

/// Lower-cased presentation form of some labels joined by dots, without a trailing dot.
/// Bytes that would be ambiguous (`.`, `\`) or are not printable are escaped as
/// `\.`, `\\` and `\DDD`, so that a label containing a dot never looks like two labels.
pub fn labels_to_text<'a>(labels: impl Iterator<Item = &'a [u8]>) -> String {
    let mut s = String::new();
    for (i, label) in labels.enumerate() {
        if i > 0 {
            s.push('.');
        }
        for &b in label {
            let b = b.to_ascii_lowercase();
            match b {
                b'.' | b'\\' => {
                    s.push('\\');
                    s.push(char::from(b));
                }
                0x21..=0x7e => s.push(char::from(b)),
                _ => s.push_str(&format!("\\{b:03}")),
            }
        }
    }
    s
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Name({})", self.to_lowercase_text())
    }
}

/// Iterator over the labels of a [`Name`].
pub struct Labels<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Labels<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        let (&len, tail) = self.rest.split_first()?;
        let label = tail.get(..usize::from(len))?;
        self.rest = tail.get(usize::from(len)..).unwrap_or_default();
        Some(label)
    }
}

/// One entry of the question section (RFC 1035 §4.1.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Question {
    pub name: Name,
    pub qtype: u16,
    pub qclass: u16,
}

impl Question {
    /// Parse the question at `at`; returns it and the offset past it.
    pub fn parse(msg: &[u8], at: usize) -> Result<(Question, usize), ParseError> {
        let (name, pos) = Name::parse(msg, at)?;
        let qtype = be16(msg, pos)?;
        let qclass = be16(msg, pos + 2)?;
        Ok((
            Question {
                name,
                qtype,
                qclass,
            },
            pos + 4,
        ))
    }

    /// Same name (ignoring ASCII case, RFC 4343), type and class.
    pub fn matches(&self, other: &Question) -> bool {
        self.qtype == other.qtype
            && self.qclass == other.qclass
            && self.name.eq_ignore_case(&other.name)
    }

    fn emit(&self, out: &mut Vec<u8>) {
        self.name.emit(out);
        out.extend_from_slice(&self.qtype.to_be_bytes());
        out.extend_from_slice(&self.qclass.to_be_bytes());
    }
}

/// The EDNS(0) OPT pseudo-record of a message (RFC 6891 §6.1.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Edns {
    pub udp_size: u16,
    pub ext_rcode: u8,
    pub version: u8,
    /// The DO bit (RFC 3225): copied into our replies.
    pub dnssec_ok: bool,
}

/// A parsed query: header, its single question, and the OPT record if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    pub header: Header,
    pub question: Question,
    pub edns: Option<Edns>,
}

/// How a query fails to parse, decided in RFC order so the server can pick its reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueryError {
    /// Fewer than 12 bytes: nothing to reply to.
    NoHeader,
    /// A header with QR set: a response, never answered (no reflection loops).
    NotAQuery(Header),
    /// An opcode other than QUERY: NOTIMP.
    Opcode(Header),
    /// Readable header, unreadable or unusable rest: FORMERR. RFC 9619: QDCOUNT must be 1.
    Format(Header),
}

impl Query {
    /// Parse a query far enough to answer it: header, exactly one question, and (when
    /// `with_edns`) the answer/authority/additional sections to find the OPT record.
    pub fn parse(msg: &[u8], with_edns: bool) -> Result<Query, QueryError> {
        let header = Header::parse(msg).map_err(|_| QueryError::NoHeader)?;
        if header.is_response() {
            return Err(QueryError::NotAQuery(header));
        }
        if header.opcode() != 0 {
            return Err(QueryError::Opcode(header));
        }
        if header.qdcount != 1 {
            return Err(QueryError::Format(header));
        }
        let (question, end) =
            Question::parse(msg, HEADER_LEN).map_err(|_| QueryError::Format(header))?;
        let edns = if with_edns {
            find_opt(msg, &header, end).map_err(|_| QueryError::Format(header))?
        } else {
            None
        };
        Ok(Query {
            header,
            question,
            edns,
        })
    }
}

/// Skip one resource record at `at`; returns (name, type, class, ttl, rdata start, end).
fn skip_rr(msg: &[u8], at: usize) -> Result<(Name, u16, u16, u32, usize, usize), ParseError> {
    let (name, pos) = Name::parse(msg, at)?;
    let rtype = be16(msg, pos)?;
    let class = be16(msg, pos + 2)?;
    let ttl = be32(msg, pos + 4)?;
    let rdlen = usize::from(be16(msg, pos + 8)?);
    let rdata = pos + 10;
    let end = rdata + rdlen;
    if end > msg.len() {
        return Err(ParseError::Truncated);
    }
    Ok((name, rtype, class, ttl, rdata, end))
}

/// Walk the answer, authority and additional sections after the question and return the
/// OPT record, if any. RFC 6891 §6.1.1: more than one OPT, or an OPT whose owner is not the
/// root, is a format error.
fn find_opt(msg: &[u8], header: &Header, mut pos: usize) -> Result<Option<Edns>, ParseError> {
    for _ in 0..u32::from(header.ancount) + u32::from(header.nscount) {
        pos = skip_rr(msg, pos)?.5;
    }
    let mut edns = None;
    for _ in 0..header.arcount {
        let (name, rtype, class, ttl, _, end) = skip_rr(msg, pos)?;
        pos = end;
        if rtype == rtype::OPT {
            if edns.is_some() || name != Name::root() {
                return Err(ParseError::Malformed);
            }
            let [ext_rcode, version, flags_hi, _] = ttl.to_be_bytes();
            edns = Some(Edns {
                udp_size: class,
                ext_rcode,
                version,
                dnssec_ok: flags_hi & 0x80 != 0,
            });
        }
    }
    Ok(edns)
}

/// What a local reply says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocalReply {
    /// NOERROR with one A record (TTL 0).
    A(Ipv4Addr),
    /// NOERROR, empty answer section (the name exists, not with this type).
    NoData,
    /// Any rcode, empty answer section.
    Rcode(u8),
    /// EDNS version not supported (RFC 6891 §6.1.3).
    BadVers,
}

/// Build the reply to `query` that the server answers itself.
///
/// Header as miekg/dns `SetReply` (upstream): id, opcode, RD, CD copied, QR and RA set,
/// AA clear. The question is echoed uncompressed with its case kept; the answer's owner is a
/// pointer to it (offset 12). TTL 0 as upstream: zones can change at runtime through the
/// API and a guest should see that at once. When the query carried an OPT record the reply
/// carries one too (RFC 6891 §6.1.1; upstream omits it), with the DO bit copied.
pub fn build_local_reply(query: &Query, reply: LocalReply, out: &mut Vec<u8>) {
    out.clear();
    let (rc, ext_hi, answer) = match reply {
        LocalReply::A(ip) => (rcode::NOERROR, 0u8, Some(ip)),
        LocalReply::NoData => (rcode::NOERROR, 0, None),
        LocalReply::Rcode(rc) => (rc, 0, None),
        // BADVERS = 16: low four bits (0) in the header, high eight bits (1) in the OPT TTL.
        LocalReply::BadVers => (0, 1, None),
    };
    let h = &query.header;
    out.extend_from_slice(&h.id.to_be_bytes());
    out.extend_from_slice(&h.reply_flags(rc).to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&u16::from(answer.is_some()).to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&u16::from(query.edns.is_some()).to_be_bytes());
    query.question.emit(out);
    if let Some(ip) = answer {
        out.extend_from_slice(&[0xc0, 0x0c]); // RFC 1035 §4.1.4: pointer to the question name
        out.extend_from_slice(&rtype::A.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out.extend_from_slice(&0u32.to_be_bytes());
        out.extend_from_slice(&4u16.to_be_bytes());
        out.extend_from_slice(&ip.octets());
    }
    if let Some(edns) = query.edns {
        out.push(0); // root owner
        out.extend_from_slice(&rtype::OPT.to_be_bytes());
        out.extend_from_slice(&EDNS_UDP_SIZE.to_be_bytes());
        let do_bit = if edns.dnssec_ok { 0x80 } else { 0 };
        out.extend_from_slice(&[ext_hi, 0, do_bit, 0]);
        out.extend_from_slice(&0u16.to_be_bytes());
    }
}

/// A header-only error reply (FORMERR, NOTIMP) to a message whose question cannot be used:
/// id, opcode, RD and CD copied, QDCOUNT 0.
pub fn build_error_reply(header: &Header, rc: u8, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&header.id.to_be_bytes());
    out.extend_from_slice(&header.reply_flags(rc).to_be_bytes());
    out.extend_from_slice(&[0; 8]);
}

/// Does `resp` answer the query we sent with id `id` and question `question`?
///
/// The id must match and QR be set; the question must be the same (name compared without
/// case, RFC 4343, since resolvers may randomise it). Some servers send FORMERR, SERVFAIL,
/// NOTIMP or REFUSED without a question section; those are accepted with QDCOUNT 0.
pub fn response_matches(resp: &[u8], id: u16, question: &Question) -> bool {
    let Ok(h) = Header::parse(resp) else {
        return false;
    };
    if h.id != id || !h.is_response() || h.opcode() != 0 {
        return false;
    }
    match h.qdcount {
        0 => matches!(
            h.rcode(),
            rcode::FORMERR | rcode::SERVFAIL | rcode::NOTIMP | rcode::REFUSED
        ),
        1 => Question::parse(resp, HEADER_LEN).is_ok_and(|(q, _)| q.matches(question)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query_bytes(name: &str, qtype: u16) -> Vec<u8> {
        let mut m = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        Name::from_text(name).unwrap().emit(&mut m);
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&CLASS_IN.to_be_bytes());
        m
    }

    #[test]
    fn parses_a_plain_query() {
        let m = query_bytes("Gateway.Containers.Internal.", rtype::A);
        let q = Query::parse(&m, true).unwrap();
        assert_eq!(q.header.id, 0x1234);
        assert!(q.header.recursion_desired());
        assert_eq!(q.question.qtype, rtype::A);
        assert_eq!(
            q.question.name.to_lowercase_text(),
            "gateway.containers.internal."
        );
        assert_eq!(q.edns, None);
    }

    #[test]
    fn pointer_loops_and_forward_pointers_are_rejected() {
        // A pointer to itself at offset 12.
        let mut m = vec![0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1];
        assert_eq!(Name::parse(&m, 12), Err(ParseError::BadPointer));
        // A forward pointer.
        m[13] = 16;
        assert_eq!(Name::parse(&m, 12), Err(ParseError::BadPointer));
        // Two labels pointing at each other: 12 -> "a" then pointer to 12.
        let m = [0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, b'a', 0xc0, 12];
        assert_eq!(Name::parse(&m, 12), Err(ParseError::BadPointer));
    }

    #[test]
    fn backward_pointer_is_followed() {
        let mut m = query_bytes("example.com.", rtype::A);
        let at = m.len();
        m.extend_from_slice(&[3, b'w', b'w', b'w', 0xc0, 12]);
        let (n, end) = Name::parse(&m, at).unwrap();
        assert_eq!(n.to_lowercase_text(), "www.example.com.");
        assert_eq!(end, m.len());
    }

    #[test]
    fn long_names_are_rejected() {
        let label = "a".repeat(63);
        let ok = format!("{label}.{label}.{label}.{}.", "a".repeat(61));
        assert!(Name::from_text(&ok).is_ok());
        let m = query_bytes(&ok, 1);
        assert!(Name::parse(&m, 12).is_ok());
        let too_long = format!("{label}.{label}.{label}.{}.", "a".repeat(62));
        assert_eq!(Name::from_text(&too_long), Err(ParseError::NameTooLong));
    }

    #[test]
    fn escaped_text_round_trips() {
        let n = Name::from_text("a\\.b.c\\032d.").unwrap();
        assert_eq!(n.label_count(), 2);
        assert_eq!(n.to_lowercase_text(), "a\\.b.c\\032d.");
    }

    #[test]
    fn local_reply_layout() {
        let mut m = query_bytes("host.docker.internal.", rtype::A);
        m[3] = 0x10; // CD
        let q = Query::parse(&m, true).unwrap();
        let mut out = Vec::new();
        build_local_reply(
            &q,
            LocalReply::A(Ipv4Addr::new(192, 168, 127, 254)),
            &mut out,
        );
        let h = Header::parse(&out).unwrap();
        assert_eq!(h.id, 0x1234);
        assert!(h.is_response() && h.recursion_desired() && h.recursion_available());
        assert!(h.checking_disabled() && !h.authoritative());
        assert_eq!((h.qdcount, h.ancount, h.arcount), (1, 1, 0));
        assert_eq!(&out[out.len() - 4..], &[192, 168, 127, 254]);
        assert!(response_matches(&out, 0x1234, &q.question));
    }
}
