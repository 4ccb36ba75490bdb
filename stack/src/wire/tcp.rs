//! TCP segments (RFC 9293 §3.1) and options (RFC 9293 §3.2, RFC 7323, RFC 2018).

use std::cmp::Ordering;
use std::fmt;
use std::net::Ipv4Addr;
use std::ops::{Add, BitAnd, BitOr, BitOrAssign, Sub};

use super::checksum::{self, L4Checksum};
use super::ipv4::IpProtocol;
use super::{read_u16, read_u32, write_u16, write_u32, Ipv4FrameRepr, WireError};

/// A TCP sequence number. RFC 9293 §3.4: "all arithmetic dealing with sequence numbers must
/// be performed modulo 2**32", so ordering compares the signed 32-bit distance (meaningful
/// for numbers less than 2^31 apart, which is all a window can span).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SeqNumber(pub u32);

impl SeqNumber {
    /// Signed distance `self - other`, modulo 2^32.
    pub fn diff(self, other: SeqNumber) -> i32 {
        // Reinterpreting the wrapped difference as two's complement is the point.
        self.0.wrapping_sub(other.0) as i32
    }

    pub fn wrapping_add(self, n: u32) -> SeqNumber {
        SeqNumber(self.0.wrapping_add(n))
    }

    pub fn max(self, other: SeqNumber) -> SeqNumber {
        if self >= other {
            self
        } else {
            other
        }
    }

    pub fn min(self, other: SeqNumber) -> SeqNumber {
        if self <= other {
            self
        } else {
            other
        }
    }
}

impl PartialOrd for SeqNumber {
    fn partial_cmp(&self, other: &SeqNumber) -> Option<Ordering> {
        Some(self.diff(*other).cmp(&0))
    }
}

impl Add<u32> for SeqNumber {
    type Output = SeqNumber;
    fn add(self, n: u32) -> SeqNumber {
        self.wrapping_add(n)
    }
}

impl Sub<u32> for SeqNumber {
    type Output = SeqNumber;
    fn sub(self, n: u32) -> SeqNumber {
        SeqNumber(self.0.wrapping_sub(n))
    }
}

impl fmt::Display for SeqNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for SeqNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// The control bits at byte 13 (RFC 9293 §3.1; ECE/CWR from RFC 3168).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    pub const FIN: TcpFlags = TcpFlags(0x01);
    pub const SYN: TcpFlags = TcpFlags(0x02);
    pub const RST: TcpFlags = TcpFlags(0x04);
    pub const PSH: TcpFlags = TcpFlags(0x08);
    pub const ACK: TcpFlags = TcpFlags(0x10);
    pub const URG: TcpFlags = TcpFlags(0x20);
    pub const ECE: TcpFlags = TcpFlags(0x40);
    pub const CWR: TcpFlags = TcpFlags(0x80);

    pub const fn empty() -> TcpFlags {
        TcpFlags(0)
    }

    pub const fn bits(self) -> u8 {
        self.0
    }

    /// All bits of `other` are set.
    pub const fn contains(self, other: TcpFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Any bit of `other` is set.
    pub const fn intersects(self, other: TcpFlags) -> bool {
        self.0 & other.0 != 0
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl BitOr for TcpFlags {
    type Output = TcpFlags;
    fn bitor(self, o: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 | o.0)
    }
}

impl BitOrAssign for TcpFlags {
    fn bitor_assign(&mut self, o: TcpFlags) {
        self.0 |= o.0;
    }
}

impl BitAnd for TcpFlags {
    type Output = TcpFlags;
    fn bitand(self, o: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 & o.0)
    }
}

impl fmt::Debug for TcpFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [(TcpFlags, &str); 8] = [
            (TcpFlags::FIN, "FIN"),
            (TcpFlags::SYN, "SYN"),
            (TcpFlags::RST, "RST"),
            (TcpFlags::PSH, "PSH"),
            (TcpFlags::ACK, "ACK"),
            (TcpFlags::URG, "URG"),
            (TcpFlags::ECE, "ECE"),
            (TcpFlags::CWR, "CWR"),
        ];
        let mut first = true;
        for (flag, name) in NAMES {
            if self.contains(flag) {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        if first {
            f.write_str("-")?;
        }
        Ok(())
    }
}

impl fmt::Display for TcpFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// RFC 7323 §3.2 timestamps option values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct TcpTimestamps {
    pub tsval: u32,
    pub tsecr: u32,
}

/// One RFC 2018 SACK block: bytes `[left, right)` received.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct SackBlock {
    pub left: SeqNumber,
    pub right: SeqNumber,
}

/// Up to four SACK blocks, stored inline (no allocation).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SackBlocks {
    blocks: [SackBlock; 4],
    len: u8,
}

impl SackBlocks {
    /// RFC 2018 §3: at most 4 blocks fit in 40 option bytes.
    pub const MAX: usize = 4;

    pub const fn new() -> SackBlocks {
        SackBlocks {
            blocks: [SackBlock {
                left: SeqNumber(0),
                right: SeqNumber(0),
            }; 4],
            len: 0,
        }
    }

    /// Appends a block; false (and nothing stored) when full.
    pub fn push(&mut self, block: SackBlock) -> bool {
        match self.blocks.get_mut(usize::from(self.len)) {
            Some(slot) => {
                *slot = block;
                self.len += 1;
                true
            }
            None => false,
        }
    }

    pub fn as_slice(&self) -> &[SackBlock] {
        self.blocks.get(..usize::from(self.len)).unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }
}

impl fmt::Debug for SackBlocks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

/// Option kinds (IANA "TCP Option Kind Numbers").
mod kind {
    pub const EOL: u8 = 0;
    pub const NOP: u8 = 1;
    pub const MSS: u8 = 2;
    pub const WINDOW_SCALE: u8 = 3;
    pub const SACK_PERMITTED: u8 = 4;
    pub const SACK: u8 = 5;
    pub const TIMESTAMPS: u8 = 8;
}

/// One TCP option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpOption<'a> {
    /// Kind 0: the options end here (RFC 9293 §3.2).
    EndOfList,
    /// Kind 1: padding between options.
    NoOperation,
    /// Kind 2, length 4 (RFC 9293 §3.7.1).
    MaxSegmentSize(u16),
    /// Kind 3, length 3: the shift count as sent (RFC 7323 §2.3 says a receiver uses 14 for
    /// anything larger; that is the state machine's job).
    WindowScale(u8),
    /// Kind 4, length 2 (RFC 2018 §2).
    SackPermitted,
    /// Kind 5, length 2 + 8n, n in 1..=4 (RFC 2018 §3).
    Sack(SackBlocks),
    /// Kind 8, length 10 (RFC 7323 §3.2).
    Timestamps(TcpTimestamps),
    /// Any other kind with a sane length: skipped by the receiver.
    Unknown { kind: u8, data: &'a [u8] },
}

impl TcpOption<'_> {
    /// Bytes this option takes on the wire.
    pub fn buffer_len(&self) -> usize {
        match self {
            TcpOption::EndOfList | TcpOption::NoOperation => 1,
            TcpOption::MaxSegmentSize(_) => 4,
            TcpOption::WindowScale(_) => 3,
            TcpOption::SackPermitted => 2,
            TcpOption::Sack(blocks) => 2 + 8 * blocks.len(),
            TcpOption::Timestamps(_) => 10,
            TcpOption::Unknown { data, .. } => 2 + data.len(),
        }
    }

    /// Writes the option at the start of `buf`; returns its length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let len = self.buffer_len();
        let len8 = u8::try_from(len).map_err(|_| WireError::Exhausted)?;
        let b = buf.get_mut(..len).ok_or(WireError::Exhausted)?;
        match *self {
            TcpOption::EndOfList => b[0] = kind::EOL,
            TcpOption::NoOperation => b[0] = kind::NOP,
            TcpOption::MaxSegmentSize(mss) => {
                b[..2].copy_from_slice(&[kind::MSS, len8]);
                write_u16(b, 2, mss);
            }
            TcpOption::WindowScale(shift) => b.copy_from_slice(&[kind::WINDOW_SCALE, len8, shift]),
            TcpOption::SackPermitted => b.copy_from_slice(&[kind::SACK_PERMITTED, len8]),
            TcpOption::Sack(blocks) => {
                if blocks.is_empty() {
                    return Err(WireError::Malformed);
                }
                b[..2].copy_from_slice(&[kind::SACK, len8]);
                for (i, block) in blocks.as_slice().iter().enumerate() {
                    write_u32(b, 2 + 8 * i, block.left.0);
                    write_u32(b, 6 + 8 * i, block.right.0);
                }
            }
            TcpOption::Timestamps(ts) => {
                b[..2].copy_from_slice(&[kind::TIMESTAMPS, len8]);
                write_u32(b, 2, ts.tsval);
                write_u32(b, 6, ts.tsecr);
            }
            TcpOption::Unknown { kind, data } => {
                b[..2].copy_from_slice(&[kind, len8]);
                b[2..].copy_from_slice(data);
            }
        }
        Ok(len)
    }
}

/// Iterator over the options area. Never panics: a malformed option yields one `Err` and
/// ends the iteration; `EndOfList` is yielded and ends it too.
#[derive(Clone, Debug)]
pub struct TcpOptions<'a> {
    rest: &'a [u8],
    done: bool,
}

impl<'a> TcpOptions<'a> {
    pub fn new(options: &'a [u8]) -> TcpOptions<'a> {
        TcpOptions {
            rest: options,
            done: false,
        }
    }

    fn parse_one(&mut self) -> Result<TcpOption<'a>, WireError> {
        let (&k, after_kind) = self.rest.split_first().ok_or(WireError::Truncated)?;
        match k {
            kind::EOL => {
                self.done = true;
                return Ok(TcpOption::EndOfList);
            }
            kind::NOP => {
                self.rest = after_kind;
                return Ok(TcpOption::NoOperation);
            }
            _ => {}
        }
        // RFC 9293 §3.2: every other option is kind, length (counting both), data.
        let &len = after_kind.first().ok_or(WireError::Malformed)?;
        let len = usize::from(len);
        if len < 2 {
            return Err(WireError::Malformed);
        }
        let body = self.rest.get(2..len).ok_or(WireError::Malformed)?;
        let opt = match (k, len) {
            (kind::MSS, 4) => TcpOption::MaxSegmentSize(read_u16(body, 0)),
            (kind::WINDOW_SCALE, 3) => TcpOption::WindowScale(body[0]),
            (kind::SACK_PERMITTED, 2) => TcpOption::SackPermitted,
            (kind::TIMESTAMPS, 10) => TcpOption::Timestamps(TcpTimestamps {
                tsval: read_u32(body, 0),
                tsecr: read_u32(body, 4),
            }),
            (kind::SACK, 10 | 18 | 26 | 34) => {
                let mut blocks = SackBlocks::new();
                for chunk in body.chunks_exact(8) {
                    blocks.push(SackBlock {
                        left: SeqNumber(read_u32(chunk, 0)),
                        right: SeqNumber(read_u32(chunk, 4)),
                    });
                }
                TcpOption::Sack(blocks)
            }
            (kind::MSS | kind::WINDOW_SCALE | kind::SACK_PERMITTED | kind::TIMESTAMPS, _)
            | (kind::SACK, _) => return Err(WireError::Malformed),
            (other, _) => TcpOption::Unknown {
                kind: other,
                data: body,
            },
        };
        self.rest = self.rest.get(len..).unwrap_or_default();
        Ok(opt)
    }
}

impl<'a> Iterator for TcpOptions<'a> {
    type Item = Result<TcpOption<'a>, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.rest.is_empty() {
            return None;
        }
        let r = self.parse_one();
        if r.is_err() {
            self.done = true;
        }
        Some(r)
    }
}

/// A checked view of a TCP segment. The buffer is the IP payload (the checksum covers all of
/// it). `new_checked` guarantees 20 <= data offset * 4 <= buffer length.
#[derive(Clone, Copy, Debug)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    pub const MIN_HEADER_LEN: usize = 20;
    pub const MAX_HEADER_LEN: usize = 60;

    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let b = buffer.as_ref();
        if b.len() < Self::MIN_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        // RFC 9293 §3.1: Data Offset counts 32-bit words, at least 5.
        let header_len = usize::from(b[12] >> 4) * 4;
        if header_len < Self::MIN_HEADER_LEN {
            return Err(WireError::Malformed);
        }
        if header_len > b.len() {
            return Err(WireError::Truncated);
        }
        Ok(TcpPacket { buffer })
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

    pub fn seq_number(&self) -> SeqNumber {
        SeqNumber(read_u32(self.b(), 4))
    }

    pub fn ack_number(&self) -> SeqNumber {
        SeqNumber(read_u32(self.b(), 8))
    }

    /// Header length in bytes (data offset * 4), options included.
    pub fn header_len(&self) -> usize {
        usize::from(self.b()[12] >> 4) * 4
    }

    pub fn flags(&self) -> TcpFlags {
        TcpFlags(self.b()[13])
    }

    pub fn fin(&self) -> bool {
        self.flags().contains(TcpFlags::FIN)
    }

    pub fn syn(&self) -> bool {
        self.flags().contains(TcpFlags::SYN)
    }

    pub fn rst(&self) -> bool {
        self.flags().contains(TcpFlags::RST)
    }

    pub fn psh(&self) -> bool {
        self.flags().contains(TcpFlags::PSH)
    }

    pub fn ack(&self) -> bool {
        self.flags().contains(TcpFlags::ACK)
    }

    pub fn urg(&self) -> bool {
        self.flags().contains(TcpFlags::URG)
    }

    pub fn window_len(&self) -> u16 {
        read_u16(self.b(), 14)
    }

    pub fn checksum(&self) -> u16 {
        read_u16(self.b(), 16)
    }

    pub fn urgent_at(&self) -> u16 {
        read_u16(self.b(), 18)
    }

    /// The raw options area.
    pub fn options(&self) -> &[u8] {
        self.b()
            .get(Self::MIN_HEADER_LEN..self.header_len())
            .unwrap_or_default()
    }

    pub fn options_iter(&self) -> TcpOptions<'_> {
        TcpOptions::new(self.options())
    }

    pub fn payload(&self) -> &[u8] {
        self.b().get(self.header_len()..).unwrap_or_default()
    }

    /// RFC 9293 §3.4: sequence space taken: data plus one each for SYN and FIN.
    pub fn segment_len(&self) -> usize {
        self.payload().len() + usize::from(self.syn()) + usize::from(self.fin())
    }

    /// RFC 9293 §3.1: checksum over the pseudo-header, header and data.
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        checksum::combine(&[
            checksum::pseudo_header_v4(src, dst, IpProtocol::TCP, self.b().len()),
            checksum::data(self.b()),
        ]) == 0xffff
    }
}

impl<'a> TcpPacket<&'a [u8]> {
    /// [`payload`](Self::payload) with the buffer's lifetime.
    pub fn payload_slice(&self) -> &'a [u8] {
        self.buffer.get(self.header_len()..).unwrap_or_default()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    fn bm(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }

    pub fn set_src_port(&mut self, port: u16) {
        write_u16(self.bm(), 0, port);
    }

    pub fn set_dst_port(&mut self, port: u16) {
        write_u16(self.bm(), 2, port);
    }

    pub fn set_seq_number(&mut self, seq: SeqNumber) {
        write_u32(self.bm(), 4, seq.0);
    }

    pub fn set_ack_number(&mut self, ack: SeqNumber) {
        write_u32(self.bm(), 8, ack.0);
    }

    pub fn set_flags(&mut self, flags: TcpFlags) {
        self.bm()[13] = flags.0;
    }

    pub fn set_window_len(&mut self, window: u16) {
        write_u16(self.bm(), 14, window);
    }

    pub fn set_checksum(&mut self, c: u16) {
        write_u16(self.bm(), 16, c);
    }

    pub fn set_urgent_at(&mut self, at: u16) {
        write_u16(self.bm(), 18, at);
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        self.bm().get_mut(hl..).unwrap_or_default()
    }

    /// Recompute the checksum over the whole buffer; call last.
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        fill(self.bm(), src, dst);
    }
}

fn fill(segment: &mut [u8], src: Ipv4Addr, dst: Ipv4Addr) {
    write_u16(segment, 16, 0);
    let sum = checksum::combine(&[
        checksum::pseudo_header_v4(src, dst, IpProtocol::TCP, segment.len()),
        checksum::data(segment),
    ]);
    write_u16(segment, 16, !sum);
}

/// The header of a TCP segment, options included, without the payload.
///
/// `parse` reads the options we understand (unknown ones are skipped); `emit` writes them in
/// the layout Linux uses (MSS, SACK-permitted + timestamps, NOP + window scale, NOP NOP +
/// SACK blocks), each 4-byte aligned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TcpRepr {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: SeqNumber,
    /// Meaningful only with `TcpFlags::ACK`.
    pub ack: SeqNumber,
    pub flags: TcpFlags,
    pub window: u16,
    pub urgent: u16,
    pub mss: Option<u16>,
    pub window_scale: Option<u8>,
    pub sack_permitted: bool,
    pub timestamps: Option<TcpTimestamps>,
    /// Emitted up to what fits in 40 option bytes, first blocks first (RFC 2018 §4: the
    /// first block reports the most recent segment).
    pub sack_blocks: SackBlocks,
}

impl TcpRepr {
    pub const MIN_HEADER_LEN: usize = 20;
    const MAX_OPTIONS_LEN: usize = 40;

    /// Header fields and options of a checked segment; a malformed option is an error.
    pub fn parse<T: AsRef<[u8]>>(p: &TcpPacket<T>) -> Result<TcpRepr, WireError> {
        let mut repr = TcpRepr {
            src_port: p.src_port(),
            dst_port: p.dst_port(),
            seq: p.seq_number(),
            ack: p.ack_number(),
            flags: p.flags(),
            window: p.window_len(),
            urgent: p.urgent_at(),
            ..TcpRepr::default()
        };
        for opt in p.options_iter() {
            match opt? {
                TcpOption::EndOfList | TcpOption::NoOperation | TcpOption::Unknown { .. } => {}
                TcpOption::MaxSegmentSize(mss) => repr.mss = Some(mss),
                TcpOption::WindowScale(shift) => repr.window_scale = Some(shift),
                TcpOption::SackPermitted => repr.sack_permitted = true,
                TcpOption::Sack(blocks) => repr.sack_blocks = blocks,
                TcpOption::Timestamps(ts) => repr.timestamps = Some(ts),
            }
        }
        Ok(repr)
    }

    /// Option bytes other than SACK blocks.
    fn fixed_options_len(&self) -> usize {
        let mut len = 0;
        if self.mss.is_some() {
            len += 4;
        }
        if self.timestamps.is_some() {
            len += 12;
        } else if self.sack_permitted {
            len += 4;
        }
        if self.window_scale.is_some() {
            len += 4;
        }
        len
    }

    /// How many SACK blocks `emit` writes.
    pub fn sack_blocks_emitted(&self) -> usize {
        let room = Self::MAX_OPTIONS_LEN - self.fixed_options_len();
        self.sack_blocks.len().min(room.saturating_sub(4) / 8)
    }

    /// Header length in bytes, options included (a multiple of 4, at most 60).
    pub fn header_len(&self) -> usize {
        let n = self.sack_blocks_emitted();
        let sack = if n > 0 { 4 + 8 * n } else { 0 };
        Self::MIN_HEADER_LEN + self.fixed_options_len() + sack
    }

    /// Offset of the payload in an Ethernet + IPv4 frame carrying this segment.
    pub fn frame_payload_offset(&self) -> usize {
        Ipv4FrameRepr::HEADER_LEN + self.header_len()
    }

    /// Writes the header and options in front of a payload already at
    /// `buf[header_len()..header_len() + payload_len]`, then the checksum. Returns the
    /// segment length.
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
        let header_len = self.header_len();
        let len = header_len
            .checked_add(payload_len)
            .ok_or(WireError::Exhausted)?;
        let seg = buf.get_mut(..len).ok_or(WireError::Exhausted)?;
        write_u16(seg, 0, self.src_port);
        write_u16(seg, 2, self.dst_port);
        write_u32(seg, 4, self.seq.0);
        write_u32(seg, 8, self.ack.0);
        // header_len <= 60, so header_len / 4 <= 15 fits the 4-bit field.
        let words = u8::try_from(header_len / 4).map_err(|_| WireError::Exhausted)?;
        seg[12] = words << 4;
        seg[13] = self.flags.0;
        write_u16(seg, 14, self.window);
        write_u16(seg, 16, 0);
        write_u16(seg, 18, self.urgent);
        self.emit_options(&mut seg[Self::MIN_HEADER_LEN..header_len])?;
        match csum {
            L4Checksum::Full => fill(seg, src, dst),
            L4Checksum::Partial => write_u16(
                seg,
                16,
                checksum::pseudo_header_v4(src, dst, IpProtocol::TCP, len),
            ),
        }
        Ok(len)
    }

    fn emit_options(&self, mut b: &mut [u8]) -> Result<(), WireError> {
        fn put<'b>(b: &'b mut [u8], opt: TcpOption<'_>) -> Result<&'b mut [u8], WireError> {
            let n = opt.emit(b)?;
            Ok(&mut b[n..])
        }
        if let Some(mss) = self.mss {
            b = put(b, TcpOption::MaxSegmentSize(mss))?;
        }
        match (self.sack_permitted, self.timestamps) {
            (true, Some(ts)) => {
                b = put(b, TcpOption::SackPermitted)?;
                b = put(b, TcpOption::Timestamps(ts))?;
            }
            (false, Some(ts)) => {
                b = put(b, TcpOption::NoOperation)?;
                b = put(b, TcpOption::NoOperation)?;
                b = put(b, TcpOption::Timestamps(ts))?;
            }
            (true, None) => {
                b = put(b, TcpOption::NoOperation)?;
                b = put(b, TcpOption::NoOperation)?;
                b = put(b, TcpOption::SackPermitted)?;
            }
            (false, None) => {}
        }
        if let Some(shift) = self.window_scale {
            b = put(b, TcpOption::NoOperation)?;
            b = put(b, TcpOption::WindowScale(shift))?;
        }
        let n = self.sack_blocks_emitted();
        if n > 0 {
            let mut blocks = SackBlocks::new();
            for &block in self.sack_blocks.as_slice().iter().take(n) {
                blocks.push(block);
            }
            b = put(b, TcpOption::NoOperation)?;
            b = put(b, TcpOption::NoOperation)?;
            b = put(b, TcpOption::Sack(blocks))?;
        }
        if b.is_empty() {
            Ok(())
        } else {
            Err(WireError::Malformed)
        }
    }

    /// Copies `payload` after the header, then [`emit`](Self::emit)s.
    pub fn emit_with_payload(
        &self,
        buf: &mut [u8],
        payload: &[u8],
        src: Ipv4Addr,
        dst: Ipv4Addr,
    ) -> Result<usize, WireError> {
        let at = self.header_len();
        buf.get_mut(at..at.saturating_add(payload.len()))
            .ok_or(WireError::Exhausted)?
            .copy_from_slice(payload);
        self.emit(buf, payload.len(), src, dst)
    }

    /// Writes Ethernet, IPv4 and TCP headers around a payload already at
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
        let l4_len = self
            .header_len()
            .checked_add(payload_len)
            .ok_or(WireError::Exhausted)?;
        let len = frame.emit(buf, IpProtocol::TCP, l4_len)?;
        let l4 = buf
            .get_mut(Ipv4FrameRepr::HEADER_LEN..)
            .ok_or(WireError::Exhausted)?;
        self.emit_csum(l4, payload_len, frame.src_ip, frame.dst_ip, csum)?;
        Ok(len)
    }
}

#[cfg(test)]
// Test data: truncating random or counter values to bytes is the intent.
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;
    use crate::wire::{EthernetFrame, Ipv4Packet, MacAddr};

    const SRC: Ipv4Addr = Ipv4Addr::new(192, 168, 127, 2);
    const DST: Ipv4Addr = Ipv4Addr::new(93, 184, 216, 34);

    fn opts(bytes: &[u8]) -> Vec<Result<TcpOption<'_>, WireError>> {
        TcpOptions::new(bytes).collect()
    }

    fn blocks(list: &[(u32, u32)]) -> SackBlocks {
        let mut b = SackBlocks::new();
        for &(l, r) in list {
            assert!(b.push(SackBlock {
                left: SeqNumber(l),
                right: SeqNumber(r),
            }));
        }
        b
    }

    #[test]
    fn seq_number_wraps() {
        let a = SeqNumber(u32::MAX - 10);
        let b = a + 20;
        assert_eq!(b, SeqNumber(9));
        assert!(a < b);
        assert!(b > a);
        assert_eq!(b.diff(a), 20);
        assert_eq!(a.diff(b), -20);
        assert_eq!(b - 20, a);
        assert_eq!(a.max(b), b);
        assert_eq!(a.min(b), a);
        assert!(SeqNumber(5) <= SeqNumber(5));
        assert_eq!(format!("{:?}", SeqNumber(7)), "7");
    }

    #[test]
    fn flags() {
        let f = TcpFlags::SYN | TcpFlags::ACK;
        assert!(f.contains(TcpFlags::SYN));
        assert!(!f.contains(TcpFlags::SYN | TcpFlags::FIN));
        assert!(f.intersects(TcpFlags::SYN | TcpFlags::FIN));
        assert_eq!(format!("{f:?}"), "SYN|ACK");
        assert_eq!(format!("{}", TcpFlags::empty()), "-");
        assert_eq!(f & TcpFlags::ACK, TcpFlags::ACK);
        let mut g = TcpFlags::FIN;
        g |= TcpFlags::CWR;
        assert_eq!(g.bits(), 0x81);
    }

    #[test]
    fn options_each_kind() {
        let bytes = [
            1, // NOP
            2, 4, 0x05, 0xb4, // MSS 1460
            3, 3, 7, // WS 7
            4, 2, // SACK-permitted
            8, 10, 0, 0, 0, 1, 0, 0, 0, 2, // TS 1, 2
            5, 18, 0, 0, 0, 10, 0, 0, 0, 20, 0, 0, 0, 30, 0, 0, 0, 40, // SACK x2
            99, 4, 0xaa, 0xbb, // unknown kind 99, skipped
            0,    // EOL
            0xff, // garbage after EOL is not looked at
        ];
        assert_eq!(
            opts(&bytes),
            vec![
                Ok(TcpOption::NoOperation),
                Ok(TcpOption::MaxSegmentSize(1460)),
                Ok(TcpOption::WindowScale(7)),
                Ok(TcpOption::SackPermitted),
                Ok(TcpOption::Timestamps(TcpTimestamps { tsval: 1, tsecr: 2 })),
                Ok(TcpOption::Sack(blocks(&[(10, 20), (30, 40)]))),
                Ok(TcpOption::Unknown {
                    kind: 99,
                    data: &[0xaa, 0xbb]
                }),
                Ok(TcpOption::EndOfList),
            ]
        );
        // Each option re-emits to its own bytes.
        let mut out = [0u8; 64];
        let mut at = 0;
        for o in opts(&bytes[..bytes.len() - 1]) {
            at += o.unwrap().emit(&mut out[at..]).unwrap();
        }
        assert_eq!(&out[..at], &bytes[..bytes.len() - 1]);
    }

    #[test]
    fn sack_one_to_four_blocks() {
        for n in 1..=4u32 {
            let mut b = vec![5u8, (2 + 8 * n) as u8];
            for i in 0..n {
                b.extend_from_slice(&(i * 100).to_be_bytes());
                b.extend_from_slice(&(i * 100 + 50).to_be_bytes());
            }
            match opts(&b).as_slice() {
                [Ok(TcpOption::Sack(s))] => {
                    assert_eq!(s.len(), n as usize);
                    assert_eq!(
                        s.as_slice()[n as usize - 1].right,
                        SeqNumber((n - 1) * 100 + 50)
                    );
                }
                other => panic!("{n}: {other:?}"),
            }
        }
        let mut full = blocks(&[(1, 2), (3, 4), (5, 6), (7, 8)]);
        assert!(!full.push(SackBlock::default()));
        assert_eq!(full.len(), 4);
        full.clear();
        assert!(full.is_empty());
    }

    #[test]
    fn malformed_options_error_without_panic() {
        let bad: &[&[u8]] = &[
            &[2],                                // kind without length
            &[2, 0],                             // length 0
            &[2, 1],                             // length 1
            &[2, 4, 5],                          // runs past the end
            &[2, 3, 5],                          // MSS length 3
            &[2, 5, 5, 0xb4, 0],                 // MSS length 5
            &[3, 2],                             // WS length 2
            &[3, 4, 1, 1],                       // WS length 4
            &[4, 3, 0],                          // SACK-permitted length 3
            &[5, 2],                             // SACK with no blocks
            &[5, 11, 0, 0, 0, 0, 0, 0, 0, 0, 0], // SACK length not 2 + 8n
            &[8, 9, 0, 0, 0, 0, 0, 0, 0],        // TS length 9
            &[99, 1],                            // unknown with length 1
            &[99, 40],                           // unknown running past the end
        ];
        for b in bad {
            let got = opts(b);
            assert_eq!(got.last(), Some(&Err(WireError::Malformed)), "{b:?}");
            assert_eq!(got.len(), 1, "{b:?}");
        }
        // An error after good options: the good ones come first, then one Err, then None.
        let got = opts(&[1, 1, 3, 3, 2, 8, 1]);
        assert_eq!(
            got,
            vec![
                Ok(TcpOption::NoOperation),
                Ok(TcpOption::NoOperation),
                Ok(TcpOption::WindowScale(2)),
                Err(WireError::Malformed)
            ]
        );
        // 40 bytes of SACK (too many blocks) is malformed too.
        let mut b = vec![5u8, 42];
        b.resize(42, 0);
        assert_eq!(opts(&b), vec![Err(WireError::Malformed)]);
    }

    #[test]
    fn options_never_panic_exhaustive_short() {
        // Every 1-, 2- and 3-byte string over an alphabet of interesting bytes, then random.
        let alphabet = [0u8, 1, 2, 3, 4, 5, 8, 10, 18, 34, 99, 255];
        for &a in &alphabet {
            let _ = opts(&[a]);
            for &b in &alphabet {
                let _ = opts(&[a, b]);
                for &c in &alphabet {
                    let _ = opts(&[a, b, c]);
                }
            }
        }
        let mut x = 0x1234_5678_9abc_def0u64;
        for _ in 0..20_000 {
            let mut b = [0u8; 40];
            for v in b.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *v = (x % 12) as u8;
            }
            let n = (x % 41) as usize;
            let v = opts(&b[..n]);
            // At most one error, and only last.
            let errs = v.iter().filter(|r| r.is_err()).count();
            assert!(errs <= 1);
            if errs == 1 {
                assert!(v.last().unwrap().is_err());
            }
        }
    }

    fn syn_repr() -> TcpRepr {
        TcpRepr {
            src_port: 40000,
            dst_port: 80,
            seq: SeqNumber(0x0102_0304),
            ack: SeqNumber(0),
            flags: TcpFlags::SYN,
            window: 64240,
            urgent: 0,
            mss: Some(1460),
            window_scale: Some(7),
            sack_permitted: true,
            timestamps: Some(TcpTimestamps {
                tsval: 0xaabb_ccdd,
                tsecr: 0,
            }),
            sack_blocks: SackBlocks::new(),
        }
    }

    #[test]
    fn linux_syn_layout() {
        let repr = syn_repr();
        assert_eq!(repr.header_len(), 40);
        let mut b = [0u8; 40];
        assert_eq!(repr.emit(&mut b, 0, SRC, DST), Ok(40));
        assert_eq!(b[12], 0xa0);
        assert_eq!(b[13], 0x02);
        assert_eq!(
            &b[20..],
            &[2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0xaa, 0xbb, 0xcc, 0xdd, 0, 0, 0, 0, 1, 3, 3, 7]
        );
        let p = TcpPacket::new_checked(&b[..]).unwrap();
        assert!(p.verify_checksum(SRC, DST));
        assert_eq!(TcpRepr::parse(&p).unwrap(), repr);
        assert_eq!(p.segment_len(), 1);
    }

    #[test]
    fn option_combinations_roundtrip() {
        let ts = Some(TcpTimestamps { tsval: 5, tsecr: 6 });
        for mss in [None, Some(536)] {
            for ws in [None, Some(0), Some(14)] {
                for sp in [false, true] {
                    for t in [None, ts] {
                        for n in 0..=4 {
                            let all = [(1, 2), (3, 4), (5, 6), (7, 8)];
                            let repr = TcpRepr {
                                flags: TcpFlags::ACK,
                                mss,
                                window_scale: ws,
                                sack_permitted: sp,
                                timestamps: t,
                                sack_blocks: blocks(&all[..n]),
                                ..syn_repr()
                            };
                            let hl = repr.header_len();
                            assert!(hl <= 60 && hl % 4 == 0, "{repr:?}");
                            let mut b = [0u8; 64];
                            let len = repr.emit_with_payload(&mut b, b"xy", SRC, DST).unwrap();
                            assert_eq!(len, hl + 2);
                            let p = TcpPacket::new_checked(&b[..len]).unwrap();
                            assert!(p.verify_checksum(SRC, DST));
                            assert_eq!(p.payload(), b"xy");
                            let back = TcpRepr::parse(&p).unwrap();
                            let sent = repr.sack_blocks_emitted();
                            assert!(sent == n || hl > 60 - 8, "blocks dropped only when full");
                            assert_eq!(
                                back.sack_blocks.as_slice(),
                                &all[..sent]
                                    .iter()
                                    .map(|&(l, r)| SackBlock {
                                        left: SeqNumber(l),
                                        right: SeqNumber(r)
                                    })
                                    .collect::<Vec<_>>()[..]
                            );
                            assert_eq!(
                                back,
                                TcpRepr {
                                    sack_blocks: back.sack_blocks,
                                    ..repr
                                }
                            );
                        }
                    }
                }
            }
        }
        // RFC 2018 §3: with timestamps, three blocks fit; with MSS + TS + WS, two.
        let r = TcpRepr {
            mss: None,
            window_scale: None,
            sack_permitted: false,
            sack_blocks: blocks(&[(1, 2), (3, 4), (5, 6), (7, 8)]),
            ..syn_repr()
        };
        assert_eq!(r.sack_blocks_emitted(), 3);
        assert_eq!(r.header_len(), 60);
        let r = TcpRepr {
            sack_blocks: blocks(&[(1, 2), (3, 4), (5, 6), (7, 8)]),
            ..syn_repr()
        };
        assert_eq!(r.sack_blocks_emitted(), 2);
        let r = TcpRepr {
            sack_blocks: blocks(&[(1, 2), (3, 4), (5, 6), (7, 8)]),
            ..TcpRepr::default()
        };
        assert_eq!(r.sack_blocks_emitted(), 4);
        assert_eq!(r.header_len(), 56);
    }

    #[test]
    fn header_checks() {
        let mut b = [0u8; 24];
        TcpRepr {
            flags: TcpFlags::ACK,
            ..TcpRepr::default()
        }
        .emit(&mut b, 4, SRC, DST)
        .unwrap();
        for len in 0..20 {
            assert_eq!(
                TcpPacket::new_checked(&b[..len]).unwrap_err(),
                WireError::Truncated
            );
        }
        for (doff, err) in [
            (0u8, Some(WireError::Malformed)),
            (4, Some(WireError::Malformed)),
            (5, None),
            (6, None),
            (7, Some(WireError::Truncated)),
            (15, Some(WireError::Truncated)),
        ] {
            let mut m = b;
            m[12] = doff << 4;
            assert_eq!(TcpPacket::new_checked(&m[..]).err(), err, "doff {doff}");
        }
        let mut m = b;
        m[21] ^= 1;
        assert!(!TcpPacket::new_checked(&m[..])
            .unwrap()
            .verify_checksum(SRC, DST));
    }

    #[test]
    fn malformed_option_in_segment_is_parse_error() {
        let mut b = [0u8; 24];
        TcpRepr::default().emit(&mut b, 4, SRC, DST).unwrap();
        b[12] = 6 << 4;
        b[20..24].copy_from_slice(&[2, 4, 0x05, 0x00]); // fine: MSS 1280
        assert!(TcpRepr::parse(&TcpPacket::new_checked(&b[..]).unwrap()).is_ok());
        b[20..24].copy_from_slice(&[1, 2, 9, 0]);
        assert_eq!(
            TcpRepr::parse(&TcpPacket::new_checked(&b[..]).unwrap()),
            Err(WireError::Malformed)
        );
    }

    #[test]
    fn setters_and_accessors() {
        let mut b = [0u8; 23];
        TcpRepr::default().emit(&mut b, 3, SRC, DST).unwrap();
        let mut p = TcpPacket::new_checked(&mut b[..]).unwrap();
        p.set_src_port(1);
        p.set_dst_port(2);
        p.set_seq_number(SeqNumber(3));
        p.set_ack_number(SeqNumber(4));
        p.set_flags(TcpFlags::FIN | TcpFlags::PSH | TcpFlags::ACK | TcpFlags::URG);
        p.set_window_len(5);
        p.set_urgent_at(6);
        p.payload_mut().copy_from_slice(b"abc");
        p.fill_checksum(SRC, DST);
        assert!(p.verify_checksum(SRC, DST));
        assert_eq!((p.src_port(), p.dst_port()), (1, 2));
        assert_eq!(
            (p.seq_number(), p.ack_number()),
            (SeqNumber(3), SeqNumber(4))
        );
        assert!(p.fin() && p.psh() && p.ack() && p.urg() && !p.syn() && !p.rst());
        assert_eq!((p.window_len(), p.urgent_at()), (5, 6));
        assert_eq!(p.segment_len(), 4);
        // NAT port rewrite, incrementally (RFC 1624).
        let c = checksum::update(p.checksum(), 2, 8080);
        p.set_dst_port(8080);
        p.set_checksum(c);
        assert!(p.verify_checksum(SRC, DST));
    }

    #[test]
    fn emit_errors() {
        let repr = syn_repr();
        assert_eq!(
            repr.emit(&mut [0u8; 39], 0, SRC, DST),
            Err(WireError::Exhausted)
        );
        assert_eq!(
            repr.emit_with_payload(&mut [0u8; 41], b"ab", SRC, DST),
            Err(WireError::Exhausted)
        );
        assert_eq!(
            TcpOption::Sack(SackBlocks::new()).emit(&mut [0u8; 8]),
            Err(WireError::Malformed)
        );
    }

    #[test]
    fn emit_frame_with_headroom() {
        let frame = Ipv4FrameRepr {
            src_mac: MacAddr([0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xdd]),
            dst_mac: MacAddr([0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xee]),
            src_ip: DST,
            dst_ip: SRC,
            ttl: 64,
            ident: 77,
            dont_frag: true,
            dscp_ecn: 0,
        };
        let repr = TcpRepr {
            flags: TcpFlags::ACK | TcpFlags::PSH,
            ack: SeqNumber(1000),
            timestamps: Some(TcpTimestamps { tsval: 1, tsecr: 2 }),
            ..TcpRepr::default()
        };
        let payload: Vec<u8> = (0..=255).cycle().take(1400).collect();
        let mut b = vec![0u8; 1600];
        // Payload first (as a socket read would put it), headers after, checksum last.
        let off = repr.frame_payload_offset();
        assert_eq!(off, 14 + 20 + 32);
        b[off..off + payload.len()].copy_from_slice(&payload);
        let n = repr.emit_frame(&mut b, &frame, payload.len()).unwrap();
        assert_eq!(n, off + 1400);
        let eth = EthernetFrame::new_checked(&b[..n]).unwrap();
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(ip.total_len(), 20 + 32 + 1400);
        let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
        assert!(tcp.verify_checksum(DST, SRC));
        assert_eq!(tcp.payload(), &payload[..]);
        assert_eq!(TcpRepr::parse(&tcp).unwrap(), repr);
        // Too big for IPv4.
        assert_eq!(
            repr.emit_frame(&mut vec![0u8; 70_000], &frame, 65_500),
            Err(WireError::Exhausted)
        );

        // Partial: the field holds the pseudo-header sum; finishing it over the segment
        // (what NEEDS_CSUM asks of the receiver) gives the full checksum.
        let mut p = b.clone();
        let n2 = repr
            .emit_frame_csum(&mut p, &frame, payload.len(), L4Checksum::Partial)
            .unwrap();
        assert_eq!(n2, n);
        let l4 = 14 + 20;
        let pseudo = checksum::pseudo_header_v4(DST, SRC, IpProtocol::TCP, n - l4);
        assert_eq!(read_u16(&p[l4..], 16), pseudo);
        let sum = checksum::data(&p[l4..n]);
        p[l4 + 16..l4 + 18].copy_from_slice(&(!sum).to_be_bytes());
        assert_eq!(p[..n], b[..n]);
    }

    #[test]
    fn etherparse_cross_check() {
        use etherparse::{
            PacketBuilder, SlicedPacket, TcpHeader, TcpHeaderSlice, TcpOptionElement as E,
            TransportSlice,
        };
        // Built by etherparse (with options), parsed by us.
        let payload = b"GET / HTTP/1.1\r\n\r\n";
        let builder = PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv4(SRC.octets(), DST.octets(), 64)
            .tcp(40000, 80, 0xdead_beef, 29200)
            .ack(0x0102_0304)
            .psh()
            .options(&[
                E::Noop,
                E::Noop,
                E::Timestamp(111, 222),
                E::Noop,
                E::Noop,
                E::SelectiveAcknowledgement((10, 20), [Some((30, 40)), None, None]),
            ])
            .unwrap();
        let mut bytes = Vec::new();
        builder.write(&mut bytes, payload).unwrap();
        let eth = EthernetFrame::new_checked(&bytes[..]).unwrap();
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
        assert!(tcp.verify_checksum(SRC, DST));
        assert_eq!(tcp.payload(), payload);
        let repr = TcpRepr::parse(&tcp).unwrap();
        assert_eq!(repr.seq, SeqNumber(0xdead_beef));
        assert_eq!(repr.ack, SeqNumber(0x0102_0304));
        assert_eq!(repr.flags, TcpFlags::ACK | TcpFlags::PSH);
        assert_eq!(repr.window, 29200);
        assert_eq!(
            repr.timestamps,
            Some(TcpTimestamps {
                tsval: 111,
                tsecr: 222
            })
        );
        assert_eq!(repr.sack_blocks, blocks(&[(10, 20), (30, 40)]));

        // Built by us, parsed by etherparse.
        let ours = TcpRepr {
            sack_blocks: blocks(&[(100, 200)]),
            ..syn_repr()
        };
        let ours = TcpRepr {
            timestamps: None,
            ..ours
        };
        let mut b = vec![0u8; ours.header_len() + 5];
        ours.emit_with_payload(&mut b, b"hello", SRC, DST).unwrap();
        let s = TcpHeaderSlice::from_slice(&b).unwrap();
        assert_eq!(s.source_port(), 40000);
        assert_eq!(s.destination_port(), 80);
        assert_eq!(s.sequence_number(), 0x0102_0304);
        assert!(s.syn() && !s.ack());
        assert_eq!(s.window_size(), 64240);
        let got: Vec<E> = s.options_iterator().map(|o| o.unwrap()).collect();
        assert_eq!(
            got,
            vec![
                E::MaximumSegmentSize(1460),
                E::Noop,
                E::Noop,
                E::SelectiveAcknowledgementPermitted,
                E::Noop,
                E::WindowScale(7),
                E::Noop,
                E::Noop,
                E::SelectiveAcknowledgement((100, 200), [None, None, None]),
            ]
        );
        let header: TcpHeader = s.to_header();
        assert_eq!(
            header
                .calc_checksum_ipv4_raw(SRC.octets(), DST.octets(), b"hello")
                .unwrap(),
            s.checksum()
        );

        // A whole frame built by us, sliced by etherparse.
        let frame = Ipv4FrameRepr {
            src_mac: MacAddr([1; 6]),
            dst_mac: MacAddr([2; 6]),
            src_ip: SRC,
            dst_ip: DST,
            ttl: 64,
            ident: 9,
            dont_frag: true,
            dscp_ecn: 0,
        };
        let repr = syn_repr();
        let mut f = vec![0u8; repr.frame_payload_offset() + 3];
        let at = repr.frame_payload_offset();
        f[at..].copy_from_slice(b"abc");
        repr.emit_frame(&mut f, &frame, 3).unwrap();
        let sp = SlicedPacket::from_ethernet(&f).unwrap();
        match sp.transport {
            Some(TransportSlice::Tcp(t)) => {
                assert_eq!(t.payload(), b"abc");
                assert_eq!(
                    t.to_header()
                        .calc_checksum_ipv4_raw(SRC.octets(), DST.octets(), b"abc")
                        .unwrap(),
                    t.checksum()
                );
                assert_eq!(t.sequence_number(), 0x0102_0304);
            }
            other => panic!("{other:?}"),
        }
    }
}
