//! Initial sequence numbers (RFC 6528) from SipHash-2-4.

use super::{Endpoints, SeqNumber};

/// RFC 6528 §3: ISN = M + F(localip, localport, remoteip, remoteport, secretkey), where M is a
/// 4-microsecond timer and F a keyed pseudo-random function (here SipHash-2-4, truncated to
/// 32 bits). The shard keeps `secret` (random, per process) and passes a monotonic
/// microsecond clock.
pub fn isn(secret: &[u8; 16], ep: &Endpoints, micros: u64) -> SeqNumber {
    let mut msg = [0u8; 12];
    msg[..4].copy_from_slice(&ep.guest.ip().octets());
    msg[4..6].copy_from_slice(&ep.guest.port().to_be_bytes());
    msg[6..10].copy_from_slice(&ep.remote.ip().octets());
    msg[10..].copy_from_slice(&ep.remote.port().to_be_bytes());
    let f = siphash24(secret, &msg);
    // Fold the 64-bit hash to 32 bits; the 4 us clock wraps modulo 2^32 (RFC 6528 §3).
    let f32 = u32::try_from((f ^ (f >> 32)) & 0xffff_ffff).unwrap_or(0);
    let m = u32::try_from((micros / 4) & 0xffff_ffff).unwrap_or(0);
    SeqNumber(f32.wrapping_add(m))
}

fn u64_le(b: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    for (d, s) in w.iter_mut().zip(b) {
        *d = *s;
    }
    u64::from_le_bytes(w)
}

/// SipHash-2-4 (Aumasson and Bernstein, 2012) of `msg` under `key`.
pub fn siphash24(key: &[u8; 16], msg: &[u8]) -> u64 {
    let k0 = u64_le(&key[..8]);
    let k1 = u64_le(&key[8..]);
    let mut v = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];
    fn round(v: &mut [u64; 4]) {
        v[0] = v[0].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(13) ^ v[0];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(16) ^ v[2];
        v[0] = v[0].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(21) ^ v[0];
        v[2] = v[2].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(17) ^ v[2];
        v[2] = v[2].rotate_left(32);
    }
    let mut chunks = msg.chunks_exact(8);
    for c in &mut chunks {
        let m = u64_le(c);
        v[3] ^= m;
        round(&mut v);
        round(&mut v);
        v[0] ^= m;
    }
    // The length byte is the message length modulo 256 by definition.
    let last = u64_le(chunks.remainder()) | ((msg.len() as u64 & 0xff) << 56);
    v[3] ^= last;
    round(&mut v);
    round(&mut v);
    v[0] ^= last;
    v[2] ^= 0xff;
    for _ in 0..4 {
        round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

#[cfg(test)]
// Test data: truncating counters to bytes is the intent.
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, SocketAddrV4};

    fn key() -> [u8; 16] {
        core::array::from_fn(|i| i as u8)
    }

    #[test]
    fn siphash_reference_vectors() {
        // vectors.h of the reference implementation: key 00..0f, message 00..(n-1).
        let msg: Vec<u8> = (0u8..64).collect();
        assert_eq!(siphash24(&key(), &msg[..0]), 0x726f_db47_dd0e_0e31);
        assert_eq!(siphash24(&key(), &msg[..1]), 0x74f8_39c5_93dc_67fd);
        assert_eq!(siphash24(&key(), &msg[..8]), 0x93f5_f579_9a93_2462);
        // The paper's worked example (Appendix A): 15 bytes.
        assert_eq!(siphash24(&key(), &msg[..15]), 0xa129_ca61_49be_45e5);
    }

    #[test]
    fn isn_depends_on_tuple_secret_and_clock() {
        let ep = Endpoints {
            guest: SocketAddrV4::new(Ipv4Addr::new(192, 168, 127, 2), 40000),
            remote: SocketAddrV4::new(Ipv4Addr::new(1, 2, 3, 4), 443),
        };
        let mut ep2 = ep;
        ep2.guest.set_port(40001);
        let a = isn(&key(), &ep, 0);
        assert_eq!(a, isn(&key(), &ep, 3), "4 us granularity");
        assert_eq!(isn(&key(), &ep, 4), a + 1);
        assert_eq!(isn(&key(), &ep, 4_000_000), a + 1_000_000);
        assert_ne!(isn(&key(), &ep2, 0), a);
        assert_ne!(isn(&[7; 16], &ep, 0), a);
    }
}
