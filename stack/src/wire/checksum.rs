//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! Sums are 16-bit one's-complement values in network (big-endian) word order, folded but not
//! complemented; a header's checksum field holds `!combine(&[...])`. A received header
//! verifies when the sum over it, checksum field included, is `0xffff`.

use std::net::Ipv4Addr;

/// One's-complement sum of `data`, folded to 16 bits (RFC 1071 §4.1, odd byte padded with 0).
///
/// Hot path: the bytes are read as native-endian `u64` words whose two 32-bit halves are added
/// into a `u64` accumulator, so no carry is lost for any input shorter than 16 GiB. This works
/// because 2^16 ≡ 1 (mod 2^16 - 1): wider words fold to the same sum. RFC 1071 §2(B): the sum
/// is byte-order independent, so summing native-endian words and swapping once at the end is
/// exact.
pub fn data(data: &[u8]) -> u16 {
    u16::from_be(fold(sum_native(data)))
}

fn sum_native(data: &[u8]) -> u64 {
    // Four independent accumulators let the CPU (or the vectoriser) overlap the adds.
    let mut acc = [0u64; 4];
    let mut blocks = data.chunks_exact(32);
    for block in &mut blocks {
        for (a, word) in acc.iter_mut().zip(block.chunks_exact(8)) {
            let w = word_ne(word);
            *a += (w & 0xffff_ffff) + (w >> 32);
        }
    }
    let mut total = acc[0] + acc[1] + acc[2] + acc[3];
    let rest = blocks.remainder();
    let mut words = rest.chunks_exact(8);
    for word in &mut words {
        let w = word_ne(word);
        total += (w & 0xffff_ffff) + (w >> 32);
    }
    let tail = words.remainder();
    if !tail.is_empty() {
        // Zero padding at the end is exactly RFC 1071's odd-byte rule.
        let mut pad = [0u8; 8];
        pad[..tail.len()].copy_from_slice(tail);
        let w = u64::from_ne_bytes(pad);
        total += (w & 0xffff_ffff) + (w >> 32);
    }
    total
}

#[inline(always)]
fn word_ne(chunk: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(chunk);
    u64::from_ne_bytes(b)
}

/// Fold a wide one's-complement accumulator to 16 bits with end-around carries.
#[inline]
pub fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // The loop leaves sum <= 0xffff.
    #[allow(clippy::cast_possible_truncation)]
    let folded = sum as u16;
    folded
}

/// One's-complement sum of several partial sums.
#[inline]
pub fn combine(sums: &[u16]) -> u16 {
    fold(sums.iter().map(|&s| u64::from(s)).sum())
}

/// How a TCP or UDP header's checksum is written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum L4Checksum {
    /// The whole checksum (RFC 9293 §3.1, RFC 768).
    #[default]
    Full,
    /// Only the folded pseudo-header sum, as a kernel leaves it for checksum offload
    /// (`CHECKSUM_PARTIAL`): whoever sends the frame on finishes it over the segment, or a
    /// virtio-net peer takes it as `NEEDS_CSUM`.
    Partial,
}

/// The IPv4 pseudo-header sum (RFC 793 §3.1, RFC 768): addresses, protocol and the
/// transport length (header + data).
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, length: usize) -> u16 {
    let s = u32::from(src);
    let d = u32::from(dst);
    let len = u64::try_from(length).unwrap_or(u64::MAX >> 16);
    fold(
        u64::from(s >> 16)
            + u64::from(s & 0xffff)
            + u64::from(d >> 16)
            + u64::from(d & 0xffff)
            + u64::from(protocol)
            + len,
    )
}

/// RFC 1624 eqn. 3: the checksum after one 16-bit word of the covered data changes from
/// `old` to `new`: `HC' = ~(~HC + ~m + m')`. Used when NAT rewrites a port.
#[inline]
pub fn update(checksum: u16, old: u16, new: u16) -> u16 {
    !fold(u64::from(!checksum) + u64::from(!old) + u64::from(new))
}

/// [`update`] for a 32-bit field (an IPv4 address or a sequence number).
#[inline]
pub fn update_u32(checksum: u16, old: u32, new: u32) -> u16 {
    !fold(
        u64::from(!checksum)
            + u64::from(!(old >> 16) & 0xffff)
            + u64::from(!old & 0xffff)
            + u64::from(new >> 16)
            + u64::from(new & 0xffff),
    )
}

/// [`update`] for an IPv4 address rewrite (affects the IP header checksum and, through the
/// pseudo-header, the TCP/UDP checksum).
#[inline]
pub fn update_ipv4(checksum: u16, old: Ipv4Addr, new: Ipv4Addr) -> u16 {
    update_u32(checksum, u32::from(old), u32::from(new))
}

#[cfg(test)]
// Test data: truncating random or counter values to bytes is the intent.
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;

    /// RFC 1071 §4.1, literally: 16-bit big-endian words, 32-bit accumulator, fold at the end.
    fn naive(data: &[u8]) -> u16 {
        let mut sum: u32 = 0;
        let mut i = 0;
        while i + 1 < data.len() {
            sum += u32::from(u16::from_be_bytes([data[i], data[i + 1]]));
            i += 2;
        }
        if i < data.len() {
            sum += u32::from(data[i]) << 8;
        }
        while sum >> 16 != 0 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u16
    }

    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: the example bytes sum to 0xddf2.
        let bytes = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(data(&bytes), 0xddf2);
        assert_eq!(naive(&bytes), 0xddf2);
    }

    #[test]
    fn matches_naive_on_random_lengths_and_offsets() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let mut buf = vec![0u8; 70_000];
        for b in buf.iter_mut() {
            *b = rng.next() as u8;
        }
        for _ in 0..3000 {
            let off = (rng.next() % 64) as usize;
            let len = (rng.next() % 2000) as usize;
            let s = &buf[off..off + len];
            assert_eq!(data(s), naive(s), "off {off} len {len}");
        }
        for len in 0..130 {
            for off in 0..9 {
                let s = &buf[off..off + len];
                assert_eq!(data(s), naive(s), "off {off} len {len}");
            }
        }
        // Big (jumbo) buffers.
        for len in [65_535, 65_536, 65_520, 69_999] {
            assert_eq!(data(&buf[..len]), naive(&buf[..len]));
            assert_eq!(data(&buf[1..len]), naive(&buf[1..len]));
        }
    }

    #[test]
    fn all_ones_never_overflows() {
        let buf = vec![0xffu8; 1 << 20];
        assert_eq!(data(&buf), 0xffff);
        assert_eq!(data(&buf[..3]), naive(&buf[..3]));
    }

    #[test]
    fn combine_and_fold() {
        assert_eq!(combine(&[]), 0);
        assert_eq!(combine(&[0xffff, 0x0001]), 0x0001);
        assert_eq!(combine(&[0x8000, 0x8000]), 0x0001);
        assert_eq!(fold(0x1_fffe), 0xffff);
        // Split sums combine to the whole sum when the split is at an even offset.
        let d: Vec<u8> = (0..101u8).collect();
        assert_eq!(combine(&[data(&d[..40]), data(&d[40..])]), data(&d));
    }

    #[test]
    fn pseudo_header() {
        let src = Ipv4Addr::new(192, 168, 127, 2);
        let dst = Ipv4Addr::new(192, 168, 127, 1);
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&src.octets());
        bytes.extend_from_slice(&dst.octets());
        bytes.extend_from_slice(&[0, 6, 0x05, 0xdc]);
        assert_eq!(pseudo_header_v4(src, dst, 6, 1500), naive(&bytes));
    }

    #[test]
    fn incremental_update_matches_recompute() {
        let mut rng = XorShift(42);
        for _ in 0..1000 {
            let mut d = [0u8; 40];
            for b in d.iter_mut() {
                *b = rng.next() as u8;
            }
            // Checksum field at 10..12 as in an IPv4 header.
            d[10] = 0;
            d[11] = 0;
            let c = !data(&d);
            let old16 = u16::from_be_bytes([d[20], d[21]]);
            let new16 = rng.next() as u16;
            d[20..22].copy_from_slice(&new16.to_be_bytes());
            let c2 = update(c, old16, new16);
            let old32 = u32::from_be_bytes([d[12], d[13], d[14], d[15]]);
            let new32 = rng.next() as u32;
            d[12..16].copy_from_slice(&new32.to_be_bytes());
            let c3 = update_u32(c2, old32, new32);
            d[10..12].copy_from_slice(&c3.to_be_bytes());
            // RFC 1624 §3: eqn. 3 may yield 0xffff where a recompute gives 0x0000 (both
            // are "zero"); what matters is that the header verifies.
            assert_eq!(data(&d), 0xffff);
        }
    }
}
