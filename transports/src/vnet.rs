//! The virtio-net header of a TAP opened with `IFF_VNET_HDR` (virtio spec 1.2 §5.1.6,
//! `struct virtio_net_hdr`, 10 bytes, little-endian on the architectures we run on), and
//! the two offloads it carries:
//!
//! - from the guest (`TUNSETOFFLOAD`): frames whose TCP/UDP checksum is only partial
//!   (`NEEDS_CSUM`: the field holds the pseudo-header sum) and TCP segments of up to 64 KiB
//!   (`gso_type` TCPV4/TCPV6). [`complete_checksum`] finishes the checksum so the rest of
//!   the stack sees an ordinary, if large, frame.
//! - to the guest: runs of consecutive TCP segments of one flow that the shards built at
//!   the guest's MSS are written as one 64 KiB segment with `gso_size` = that MSS
//!   ([`plan_gso`], [`gso_header`]); the guest kernel takes it like a GRO'd packet.
//!
//! The only module of this crate that looks inside frames: IPv4 and TCP headers, by offset.

use stack::wire::checksum;

/// `sizeof(struct virtio_net_hdr)` without `num_buffers` (the TAP default, TUNSETVNETHDRSZ).
pub const VNET_HDR_LEN: usize = 10;
/// The checksum from `csum_start` on is partial: the reader completes it.
pub const F_NEEDS_CSUM: u8 = 1;
pub const GSO_NONE: u8 = 0;
pub const GSO_TCPV4: u8 = 1;
pub const GSO_TCPV6: u8 = 4;
/// Largest frame a TSO read can yield: a 64 KiB IP packet plus Ethernet and VLAN headers.
pub const MAX_GSO_FRAME: usize = 65_535 + 18;
/// Segments merged into one write at most (iovec count stays small).
pub const MAX_GSO_SEGS: usize = 64;

const ETH: usize = 14;
const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_PSH: u8 = 0x08;
const TCP_ACK: u8 = 0x10;
const TCP_URG: u8 = 0x20;
const TCP_CWR: u8 = 0x80;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    pub fn parse(b: &[u8]) -> Option<VnetHdr> {
        let b: &[u8; VNET_HDR_LEN] = b.get(..VNET_HDR_LEN)?.try_into().ok()?;
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Some(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
        })
    }

    pub fn emit(&self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        b
    }
}

/// A checksum the sender left partial (`NEEDS_CSUM`), still to be finished when the frame
/// leaves for a port that needs it. The stack skips it: it only reads payloads, and a
/// kernel's own frame over a local TAP or socket cannot be corrupted on a wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartialCsum {
    start: u16,
    offset: u16,
}

impl PartialCsum {
    /// The header's `csum_start`/`csum_offset`, if they fit a frame of `len` bytes.
    pub fn new(len: usize, start: u16, offset: u16) -> Option<PartialCsum> {
        let at = usize::from(start).checked_add(usize::from(offset))?;
        (at.checked_add(2)? <= len).then_some(PartialCsum { start, offset })
    }

    /// Where a TCP or UDP checksum sits in an unfragmented IPv4 frame (no VLAN tag).
    pub fn of_frame(frame: &[u8]) -> Option<PartialCsum> {
        let h = Ipv4Head::of(frame)?;
        if h.fragmented {
            return None;
        }
        let offset = match h.proto {
            6 => 16,
            17 => 6,
            _ => return None,
        };
        let start = u16::try_from(ETH + h.hdr_len).ok()?;
        PartialCsum::new(frame.len(), start, offset)
    }

    /// Finishes the checksum in `frame` (false if the offsets do not fit it).
    pub fn complete(self, frame: &mut [u8]) -> bool {
        complete_checksum(frame, usize::from(self.start), usize::from(self.offset))
    }

    /// The virtio-net header that hands the frame over as it is (`NEEDS_CSUM`).
    pub fn header(self) -> VnetHdr {
        VnetHdr {
            flags: F_NEEDS_CSUM,
            csum_start: self.start,
            csum_offset: self.offset,
            ..VnetHdr::default()
        }
    }
}

/// Finishes a partial checksum: the one's-complement sum from `start` to the end (the field
/// at `start + offset` holds the pseudo-header sum) is complemented into the field. False if
/// the offsets do not fit the frame (the frame is malformed).
pub fn complete_checksum(frame: &mut [u8], start: usize, offset: usize) -> bool {
    let at = start.saturating_add(offset);
    if start > frame.len() || at.saturating_add(2) > frame.len() {
        return false;
    }
    let sum = !checksum::data(&frame[start..]);
    // RFC 768: a computed zero goes out as all ones (zero means "no checksum" in UDP); for
    // TCP both are the same one's-complement zero.
    let sum = if sum == 0 { 0xffff } else { sum };
    frame[at..at + 2].copy_from_slice(&sum.to_be_bytes());
    true
}

/// The IPv4 header of an untagged Ethernet frame, as far as this module cares.
struct Ipv4Head {
    hdr_len: usize,
    proto: u8,
    /// The header's total length.
    total: usize,
    /// More fragments, or an offset.
    fragmented: bool,
}

impl Ipv4Head {
    fn of(frame: &[u8]) -> Option<Ipv4Head> {
        if frame.get(12..14)? != [0x08, 0x00] {
            return None;
        }
        let ip = frame.get(ETH..)?;
        let vihl = *ip.first()?;
        let hdr_len = usize::from(vihl & 0x0f) * 4;
        if vihl >> 4 != 4 || hdr_len < 20 || ip.len() < hdr_len {
            return None;
        }
        let frag = u16::from_be_bytes([ip[6], ip[7]]);
        Some(Ipv4Head {
            hdr_len,
            proto: ip[9],
            total: usize::from(u16::from_be_bytes([ip[2], ip[3]])),
            fragmented: frag & 0x3fff != 0,
        })
    }
}

/// A TCP/IPv4 frame as far as coalescing cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpSeg {
    /// Ethernet + IPv4 + TCP header bytes.
    pub hdr_len: usize,
    pub ip_hdr_len: usize,
    pub seq: u32,
    pub payload: usize,
    pub flags: u8,
}

/// Parses an unfragmented IPv4 TCP frame carrying data, with no trailing padding.
pub fn tcp_seg(frame: &[u8]) -> Option<TcpSeg> {
    let h = Ipv4Head::of(frame)?;
    let ip = frame.get(ETH..)?;
    let ip_hdr_len = h.hdr_len;
    // A fragment is not a whole segment; trailing padding is not payload.
    if h.proto != 6 || h.total != ip.len() || h.fragmented {
        return None;
    }
    let tcp = ip.get(ip_hdr_len..)?;
    let tcp_hdr_len = usize::from(*tcp.get(12)? >> 4) * 4;
    if tcp_hdr_len < 20 || tcp.len() < tcp_hdr_len {
        return None;
    }
    Some(TcpSeg {
        hdr_len: ETH + ip_hdr_len + tcp_hdr_len,
        ip_hdr_len,
        seq: u32::from_be_bytes(tcp.get(4..8)?.try_into().ok()?),
        payload: tcp.len() - tcp_hdr_len,
        flags: *tcp.get(13)?,
    })
}

/// Whether `s` may head a merged segment: data, and no flag that GSO would have to split.
fn can_lead(s: &TcpSeg) -> bool {
    s.payload > 0 && s.flags & !TCP_PSH == TCP_ACK
}

/// Whether `next` continues `head`'s run: same addresses, ports, ack, window, options, TTL,
/// TOS and header sizes; sequence right after what is merged so far; plain ACK flags (PSH
/// allowed: it ends the run).
fn continues(head: &[u8], h: &TcpSeg, next: &[u8], n: &TcpSeg, seq: u32) -> bool {
    if n.hdr_len != h.hdr_len || n.seq != seq || !can_lead(n) || n.payload > h.payload {
        return false;
    }
    let ip = ETH;
    let t = ETH + h.ip_hdr_len;
    let same = |a: usize, b: usize| head.get(a..b).is_some() && head.get(a..b) == next.get(a..b);
    // MACs and ethertype; version/IHL and TOS; flags/fragment, TTL, protocol; addresses and
    // IP options; ports; ack and data offset; window; urgent pointer and TCP options (the
    // flags were checked by `can_lead`).
    same(0, ip + 2)
        && same(ip + 6, ip + 10)
        && same(ip + 12, t)
        && same(t, t + 4)
        && same(t + 8, t + 13)
        && same(t + 14, t + 16)
        && same(t + 18, h.hdr_len)
}

/// How many of `frames` (from the first) go out as one GSO write: 1 when the first cannot
/// lead or nothing continues it. All but the last of a run carry exactly the first's
/// payload size; a PSH ends the run; the merged IP packet stays within 65535 bytes.
pub fn plan_gso<'a>(mut frames: impl Iterator<Item = &'a [u8]>) -> usize {
    let Some(head) = frames.next() else {
        return 0;
    };
    let Some(h) = tcp_seg(head).filter(can_lead) else {
        return 1;
    };
    let mut count = 1;
    let mut seq = h.seq.wrapping_add(to_u32(h.payload));
    let mut ip_len = head.len() - ETH;
    let mut last = h;
    for next in frames {
        if count >= MAX_GSO_SEGS || last.flags & TCP_PSH != 0 || last.payload != h.payload {
            break;
        }
        let Some(n) = tcp_seg(next) else { break };
        if !continues(head, &h, next, &n, seq) || ip_len + n.payload > 65_535 {
            break;
        }
        count += 1;
        seq = seq.wrapping_add(to_u32(n.payload));
        ip_len += n.payload;
        last = n;
    }
    count
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Writes into `out` the headers of the merged segment that starts with `head` and carries
/// `payload` bytes in all, with `last_flags` (the run's last segment: PSH travels to the
/// end), and returns the virtio-net header that makes the guest kernel take it as TSO.
/// The TCP checksum is left partial (pseudo-header only, `NEEDS_CSUM`), as a TSO sender's.
pub fn gso_header(
    head: &[u8],
    payload: usize,
    last_flags: u8,
    out: &mut Vec<u8>,
) -> Option<VnetHdr> {
    let h = tcp_seg(head)?;
    out.clear();
    out.extend_from_slice(head.get(..h.hdr_len)?);
    let ip_len = h.hdr_len - ETH + payload;
    let tcp_len = ip_len - h.ip_hdr_len;
    let ip_len16 = u16::try_from(ip_len).ok()?;
    let ip = &mut out[ETH..ETH + h.ip_hdr_len];
    ip[2..4].copy_from_slice(&ip_len16.to_be_bytes());
    ip[10..12].copy_from_slice(&[0, 0]);
    let ip_sum = !checksum::data(ip);
    ip[10..12].copy_from_slice(&ip_sum.to_be_bytes());
    let src = std::net::Ipv4Addr::from(<[u8; 4]>::try_from(&ip[12..16]).ok()?);
    let dst = std::net::Ipv4Addr::from(<[u8; 4]>::try_from(&ip[16..20]).ok()?);
    let t = ETH + h.ip_hdr_len;
    out[t + 13] = h.flags | (last_flags & TCP_PSH);
    let pseudo = checksum::pseudo_header_v4(src, dst, 6, tcp_len);
    out[t + 16..t + 18].copy_from_slice(&pseudo.to_be_bytes());
    Some(VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: GSO_TCPV4,
        hdr_len: u16::try_from(h.hdr_len).ok()?,
        gso_size: u16::try_from(h.payload).ok()?,
        csum_start: u16::try_from(t).ok()?,
        csum_offset: 16,
    })
}

/// The flags byte of a TCP/IPv4 frame (0 if it is not one).
pub fn tcp_flags(frame: &[u8]) -> u8 {
    tcp_seg(frame).map_or(0, |s| s.flags)
}

// Flags that must never be merged; listed for the reader of `can_lead`.
const _: u8 = TCP_FIN | TCP_SYN | TCP_RST | TCP_URG | TCP_CWR;

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    /// A TCP/IPv4 frame with a timestamp option, checksums complete.
    fn seg(seq: u32, payload: &[u8], flags: u8) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&[2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00]);
        let tcp_len = 32 + payload.len();
        let ip_len = 20 + tcp_len;
        f.extend_from_slice(&[0x45, 0, 0, 0, 0, 7, 0x40, 0, 64, 6, 0, 0]);
        f[16..18].copy_from_slice(&u16::try_from(ip_len).unwrap().to_be_bytes());
        f.extend_from_slice(&[192, 168, 127, 254, 192, 168, 127, 2]);
        let ipsum = !checksum::data(&f[14..34]);
        f[24..26].copy_from_slice(&ipsum.to_be_bytes());
        f.extend_from_slice(&5201u16.to_be_bytes());
        f.extend_from_slice(&40000u16.to_be_bytes());
        f.extend_from_slice(&seq.to_be_bytes());
        f.extend_from_slice(&777u32.to_be_bytes());
        f.extend_from_slice(&[0x80, flags, 0x01, 0x00, 0, 0, 0, 0]);
        f.extend_from_slice(&[1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 3]);
        f.extend_from_slice(payload);
        let pseudo = checksum::pseudo_header_v4(
            Ipv4Addr::new(192, 168, 127, 254),
            Ipv4Addr::new(192, 168, 127, 2),
            6,
            tcp_len,
        );
        let sum = !checksum::combine(&[pseudo, checksum::data(&f[34..])]);
        f[50..52].copy_from_slice(&sum.to_be_bytes());
        f
    }

    fn tcp_ok(frame: &[u8]) -> bool {
        let tcp_len = frame.len() - 34;
        let pseudo = checksum::pseudo_header_v4(
            Ipv4Addr::new(192, 168, 127, 254),
            Ipv4Addr::new(192, 168, 127, 2),
            6,
            tcp_len,
        );
        checksum::combine(&[pseudo, checksum::data(&frame[34..])]) == 0xffff
    }

    /// A `VnetStream` link over a socketpair: three segments of one flow leave as one
    /// TSO record; a record with a partial checksum arrives as a complete frame.
    #[test]
    fn vnet_stream_link_both_ways() {
        use crate::link::{Link, LinkIo};
        use std::io::{Read, Write};
        use std::os::unix::net::UnixStream;
        let (ours, mut peer) = UnixStream::pair().unwrap();
        let mut link = Link::new(
            LinkIo::VnetStream(ours.into()),
            crate::Framing::Qemu,
            1514,
            1 << 20,
        );
        let p = [9u8; 1448];
        for (i, flags) in [(0u32, TCP_ACK), (1, TCP_ACK), (2, TCP_ACK | TCP_PSH)] {
            assert!(link.queue_frame(&seg(1 + i * 1448, &p, flags)));
        }
        let syn = seg(7, &[], TCP_SYN);
        assert!(link.queue_frame(&syn));
        assert!(link.flush().unwrap());
        assert_eq!(link.counters().tx_gso_writes, 1);
        let mut got = vec![0u8; 4 + 10 + 66 + 3 * 1448 + 4 + 10 + syn.len()];
        peer.read_exact(&mut got).unwrap();
        let rec = u32::from_be_bytes(got[..4].try_into().unwrap()) as usize;
        assert_eq!(rec, 10 + 66 + 3 * 1448);
        let h = VnetHdr::parse(&got[4..14]).unwrap();
        assert_eq!(
            (h.gso_type, h.gso_size, h.flags),
            (GSO_TCPV4, 1448, F_NEEDS_CSUM)
        );
        let mut merged = got[14..4 + rec].to_vec();
        assert!(complete_checksum(&mut merged, 34, 16));
        assert!(tcp_ok(&merged));
        assert_eq!(tcp_flags(&merged), TCP_ACK | TCP_PSH);
        let second = &got[4 + rec..];
        assert_eq!(
            u32::from_be_bytes(second[..4].try_into().unwrap()) as usize,
            10 + syn.len()
        );
        assert_eq!(&second[4..14], &[0u8; 10]);
        assert_eq!(&second[14..], &syn[..]);

        // Peer -> us: a TSO-sized segment with only the pseudo-header sum.
        let big = vec![5u8; 20_000];
        let mut f = seg(100, &big, TCP_ACK);
        let pseudo = checksum::pseudo_header_v4(
            Ipv4Addr::new(192, 168, 127, 254),
            Ipv4Addr::new(192, 168, 127, 2),
            6,
            f.len() - 34,
        );
        f[50..52].copy_from_slice(&pseudo.to_be_bytes());
        let vh = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: 66,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        };
        let mut rec = ((10 + f.len()) as u32).to_be_bytes().to_vec();
        rec.extend_from_slice(&vh.emit());
        rec.extend_from_slice(&f);
        // A record whose checksum offset is outside the frame: dropped and counted.
        let bad = VnetHdr {
            csum_offset: 60_000,
            ..vh
        };
        rec.extend_from_slice(&((10 + 60) as u32).to_be_bytes());
        rec.extend_from_slice(&bad.emit());
        rec.extend_from_slice(&[0u8; 60]);
        peer.write_all(&rec).unwrap();
        let mut frames = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while frames.is_empty() && std::time::Instant::now() < deadline {
            link.read_frames(16, &mut |fr| frames.push(fr.to_vec()))
                .unwrap();
        }
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].len(), f.len());
        assert!(tcp_ok(&frames[0]));
        assert_eq!(link.counters().rx_malformed, 1);

        // read_frames_partial hands the same record over untouched, with its offsets.
        rec.truncate(4 + 10 + f.len());
        peer.write_all(&rec).unwrap();
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while got.is_empty() && std::time::Instant::now() < deadline {
            link.read_frames_partial(16, &mut |fr, p| got.push((fr.to_vec(), p)))
                .unwrap();
        }
        assert_eq!(got.len(), 1);
        let (mut partial_frame, p) = got.remove(0);
        assert_eq!(partial_frame, f);
        let p = p.expect("a partial checksum");
        assert_eq!(p, PartialCsum::new(f.len(), 34, 16).unwrap());
        assert!(p.complete(&mut partial_frame));
        assert!(tcp_ok(&partial_frame));
    }

    /// `seg` with the checksum left as a kernel leaves it for offload.
    fn partial_seg(seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = seg(seq, payload, TCP_ACK);
        let pseudo = checksum::pseudo_header_v4(
            Ipv4Addr::new(192, 168, 127, 254),
            Ipv4Addr::new(192, 168, 127, 2),
            6,
            f.len() - 34,
        );
        f[50..52].copy_from_slice(&pseudo.to_be_bytes());
        f
    }

    #[test]
    fn finds_the_l4_checksum_of_a_frame() {
        let f = seg(1, b"x", TCP_ACK);
        assert_eq!(PartialCsum::of_frame(&f), PartialCsum::new(f.len(), 34, 16));
        let mut u = f.clone();
        u[23] = 17;
        assert_eq!(PartialCsum::of_frame(&u), PartialCsum::new(u.len(), 34, 6));
        let mut icmp = f.clone();
        icmp[23] = 1;
        assert_eq!(PartialCsum::of_frame(&icmp), None);
        let mut frag = f.clone();
        frag[20] = 0x20; // more fragments
        assert_eq!(PartialCsum::of_frame(&frag), None);
        let mut arp = f.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(PartialCsum::of_frame(&arp), None);
        assert_eq!(PartialCsum::of_frame(&f[..40]), None);
    }

    /// A partial frame leaves a vnet link as `NEEDS_CSUM`, and any other link finished.
    #[test]
    fn partial_frames_offloaded_or_finished_per_link() {
        use crate::link::{Link, LinkIo};
        use std::io::Read;
        use std::os::unix::net::UnixStream;
        let f = partial_seg(1, &[9u8; 700]);
        let p = PartialCsum::of_frame(&f);
        assert!(p.is_some() && !tcp_ok(&f));

        let (ours, mut peer) = UnixStream::pair().unwrap();
        let mut link = Link::new(
            LinkIo::VnetStream(ours.into()),
            crate::Framing::Qemu,
            1514,
            1 << 20,
        );
        assert!(link.queue_frame_partial(&f, p));
        assert!(link.flush().unwrap());
        let mut got = vec![0u8; 4 + 10 + f.len()];
        peer.read_exact(&mut got).unwrap();
        let h = VnetHdr::parse(&got[4..14]).unwrap();
        assert_eq!((h.flags, h.gso_type), (F_NEEDS_CSUM, GSO_NONE));
        assert_eq!((h.csum_start, h.csum_offset), (34, 16));
        assert_eq!(&got[14..], &f[..]);

        let (ours, mut peer) = UnixStream::pair().unwrap();
        let io = LinkIo::Stream {
            read: ours.into(),
            write: None,
        };
        let mut link = Link::new(io, crate::Framing::Qemu, 1514, 1 << 20);
        assert!(link.queue_frame_partial(&f, p));
        assert!(link.flush().unwrap());
        let mut got = vec![0u8; 4 + f.len()];
        peer.read_exact(&mut got).unwrap();
        assert!(tcp_ok(&got[4..]));
        assert_eq!(&got[4..4 + 50], &f[..50]);
    }

    #[test]
    fn a_finished_zero_checksum_goes_out_as_all_ones() {
        // Bytes whose one's-complement sum is 0xffff: the checksum computes to zero.
        let mut f = vec![0xff, 0xff, 0, 0];
        assert!(complete_checksum(&mut f, 0, 2));
        assert_eq!(&f[2..], &[0xff, 0xff]);
    }

    #[test]
    fn partial_checksum_offsets_must_fit() {
        assert!(PartialCsum::new(100, 34, 16).is_some());
        assert!(PartialCsum::new(52, 34, 16).is_some());
        assert!(PartialCsum::new(51, 34, 16).is_none());
        assert!(PartialCsum::new(100, u16::MAX, u16::MAX).is_none());
    }

    #[test]
    fn header_round_trip() {
        let h = VnetHdr {
            flags: 1,
            gso_type: GSO_TCPV4,
            hdr_len: 66,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        };
        assert_eq!(VnetHdr::parse(&h.emit()), Some(h));
        assert_eq!(VnetHdr::parse(&[0; 9]), None);
    }

    #[test]
    fn completes_a_partial_checksum() {
        let mut f = seg(1000, &[7u8; 301], TCP_ACK);
        assert!(tcp_ok(&f));
        // What a CHECKSUM_PARTIAL sender leaves: the folded pseudo-header sum.
        let pseudo = checksum::pseudo_header_v4(
            Ipv4Addr::new(192, 168, 127, 254),
            Ipv4Addr::new(192, 168, 127, 2),
            6,
            f.len() - 34,
        );
        f[50..52].copy_from_slice(&pseudo.to_be_bytes());
        assert!(!tcp_ok(&f));
        assert!(complete_checksum(&mut f, 34, 16));
        assert!(tcp_ok(&f));
        assert!(!complete_checksum(&mut f, 34, 400));
        assert!(!complete_checksum(&mut f, 4000, 0));
        assert!(!complete_checksum(&mut f, usize::MAX, usize::MAX));
    }

    #[test]
    fn plans_runs_of_one_flow() {
        let p = [1u8; 1448];
        let a = seg(1, &p, TCP_ACK);
        let b = seg(1449, &p, TCP_ACK);
        let c = seg(2897, &p[..100], TCP_ACK | TCP_PSH);
        let d = seg(2997, &p, TCP_ACK);
        let frames = [&a[..], &b, &c, &d];
        assert_eq!(plan_gso(frames.iter().copied()), 3, "PSH ends the run");
        assert_eq!(plan_gso(frames[3..].iter().copied()), 1);
        assert_eq!(plan_gso(std::iter::empty()), 0);
        // A gap in sequence, a different ack, a short segment in the middle, a SYN.
        let gap = seg(1450, &p, TCP_ACK);
        assert_eq!(plan_gso([&a[..], &gap].into_iter()), 1);
        let mut other_ack = seg(1449, &p, TCP_ACK);
        other_ack[45] ^= 1;
        assert_eq!(plan_gso([&a[..], &other_ack].into_iter()), 1);
        let short = seg(1, &p[..500], TCP_ACK);
        let after = seg(501, &p[..500], TCP_ACK);
        assert_eq!(plan_gso([&short[..], &after].into_iter()), 2);
        let after_short = seg(1449, &p[..10], TCP_ACK);
        let then = seg(1459, &p[..10], TCP_ACK);
        assert_eq!(plan_gso([&a[..], &after_short, &then].into_iter()), 2);
        let syn = seg(1, &[], TCP_SYN);
        assert_eq!(plan_gso([&syn[..], &a].into_iter()), 1);
        let fin = seg(1449, &p, TCP_ACK | TCP_FIN);
        assert_eq!(plan_gso([&a[..], &fin].into_iter()), 1);
        // Not TCP at all.
        assert_eq!(plan_gso([&[0u8; 60][..], &a].into_iter()), 1);
    }

    #[test]
    fn caps_at_64k() {
        let p = vec![3u8; 16_000];
        let segs: Vec<Vec<u8>> = (0..6u32).map(|i| seg(i * 16_000, &p, TCP_ACK)).collect();
        // 4 x 16000 + 52 bytes of headers fits in 65535, a fifth does not.
        assert_eq!(plan_gso(segs.iter().map(|s| &s[..])), 4);
    }

    #[test]
    fn merged_header_is_what_tso_would_send() {
        let p: Vec<u8> = (0..1448u32).map(|i| (i % 251) as u8).collect();
        let a = seg(1, &p, TCP_ACK);
        let b = seg(1449, &p[..600], TCP_ACK | TCP_PSH);
        let mut hdr = Vec::new();
        let v = gso_header(&a, 1448 + 600, TCP_ACK | TCP_PSH, &mut hdr).unwrap();
        assert_eq!(v.gso_type, GSO_TCPV4);
        assert_eq!(
            (v.hdr_len, v.gso_size, v.csum_start, v.csum_offset),
            (66, 1448, 34, 16)
        );
        assert_eq!(hdr.len(), 66);
        // IP length and checksum fixed, PSH carried.
        assert_eq!(u16::from_be_bytes([hdr[16], hdr[17]]), 20 + 32 + 2048);
        assert_eq!(checksum::data(&hdr[14..34]), 0xffff);
        assert_eq!(hdr[47], TCP_ACK | TCP_PSH);
        // Completing the partial checksum over the whole payload gives a valid segment.
        let mut whole = hdr.clone();
        whole.extend_from_slice(&a[66..]);
        whole.extend_from_slice(&b[66..]);
        assert!(complete_checksum(&mut whole, 34, 16));
        assert!(tcp_ok(&whole));
        assert_eq!(tcp_flags(&whole), TCP_ACK | TCP_PSH);
    }
}
