//! HyperKit / VPNKit handshake (blocking), then `u16` little-endian framed frames.
//!
//! ```text
//! client -> server  init (49):     "VMN3T" | version u32 LE (22) | commit (40)
//! server -> client  the same 49 bytes, echoed
//! client -> server  command (41):  cmd u8 (1 ethernet, 8 preferred IPv4) | UUID (36 ASCII) | 4
//! server -> client  response (258): 0x01 | MTU u16 LE | MTU+14 u16 LE | MAC (6) | zeros
//! ```

use std::io::{self, Read, Write};

pub const INIT_LEN: usize = 49;
pub const COMMAND_LEN: usize = 41;
pub const RESPONSE_LEN: usize = 258;

const MAGIC: &[u8; 5] = b"VMN3T";
/// The protocol version HyperKit sends.
const VERSION: u32 = 22;
/// HyperKit's placeholder commit string (40 bytes).
const COMMIT: &[u8; 40] = b"0123456789012345678901234567890123456789";
const CMD_ETHERNET: u8 = 1;
const CMD_PREFERRED_IPV4: u8 = 8;
const RESP_VIF: u8 = 1;
const RESP_DISCONNECT: u8 = 2;
const UUID_LEN: usize = 36;

fn invalid(msg: String) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("vpnkit handshake: {msg}"),
    )
}

/// Server: reads the 49-byte init and echoes it verbatim, reads the 41-byte command (UUID at
/// bytes 1..37), writes the 258-byte response. MAC = `lookup(uuid)` or a random locally
/// administered unicast MAC. Returns (uuid, mac).
pub fn server_handshake(
    s: &mut (impl Read + Write),
    mtu: u16,
    lookup: &dyn Fn(&str) -> Option<[u8; 6]>,
) -> io::Result<(String, [u8; 6])> {
    let max_packet = mtu.checked_add(14).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("vpnkit handshake: MTU {mtu} too large (max 65521)"),
        )
    })?;
    let mut init = [0u8; INIT_LEN];
    s.read_exact(&mut init)?;
    if &init[..5] != MAGIC {
        return Err(invalid(format!(
            "bad magic {:?} (expected \"VMN3T\")",
            String::from_utf8_lossy(&init[..5])
        )));
    }
    s.write_all(&init)?;
    let mut cmd = [0u8; COMMAND_LEN];
    s.read_exact(&mut cmd)?;
    let uuid = parse_command(&cmd)?;
    let mac = lookup(&uuid).unwrap_or_else(random_local_mac);
    s.write_all(&vif_response(mtu, max_packet, mac))?;
    s.flush()?;
    Ok((uuid, mac))
}

fn parse_command(cmd: &[u8; COMMAND_LEN]) -> io::Result<String> {
    if cmd[0] != CMD_ETHERNET && cmd[0] != CMD_PREFERRED_IPV4 {
        return Err(invalid(format!("unknown command {}", cmd[0])));
    }
    let raw = &cmd[1..1 + UUID_LEN];
    if !raw.iter().all(u8::is_ascii_graphic) {
        return Err(invalid("UUID is not printable ASCII".to_string()));
    }
    Ok(String::from_utf8_lossy(raw).into_owned())
}

fn vif_response(mtu: u16, max_packet: u16, mac: [u8; 6]) -> [u8; RESPONSE_LEN] {
    let mut r = [0u8; RESPONSE_LEN];
    r[0] = RESP_VIF;
    r[1..3].copy_from_slice(&mtu.to_le_bytes());
    r[3..5].copy_from_slice(&max_packet.to_le_bytes());
    r[5..11].copy_from_slice(&mac);
    r
}

/// Client (what HyperKit does): sends "VMN3T" + u32 LE 22 + 40-byte commit, expects the echo,
/// sends command 1 + uuid, reads the response; returns (mtu, mac).
pub fn client_handshake(s: &mut (impl Read + Write), uuid: &str) -> io::Result<(u16, [u8; 6])> {
    if uuid.len() != UUID_LEN || !uuid.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("vpnkit handshake: UUID {uuid:?} is not 36 ASCII characters"),
        ));
    }
    let mut init = [0u8; INIT_LEN];
    init[..5].copy_from_slice(MAGIC);
    init[5..9].copy_from_slice(&VERSION.to_le_bytes());
    init[9..].copy_from_slice(COMMIT);
    s.write_all(&init)?;
    let mut echo = [0u8; INIT_LEN];
    s.read_exact(&mut echo)?;
    if echo != init {
        return Err(invalid("server did not echo the init message".to_string()));
    }
    let mut cmd = [0u8; COMMAND_LEN];
    cmd[0] = CMD_ETHERNET;
    cmd[1..1 + UUID_LEN].copy_from_slice(uuid.as_bytes());
    s.write_all(&cmd)?;
    s.flush()?;
    let mut resp = [0u8; RESPONSE_LEN];
    s.read_exact(&mut resp)?;
    match resp[0] {
        RESP_VIF => {}
        RESP_DISCONNECT => {
            let reason: Vec<u8> = resp[1..].iter().copied().take_while(|&b| b != 0).collect();
            return Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!(
                    "vpnkit handshake: server disconnected: {}",
                    String::from_utf8_lossy(&reason)
                ),
            ));
        }
        t => return Err(invalid(format!("unknown response type {t}"))),
    }
    let mtu = u16::from_le_bytes([resp[1], resp[2]]);
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&resp[5..11]);
    Ok((mtu, mac))
}

/// A random locally administered unicast MAC (bit 0x02 set, bit 0x01 clear in byte 0).
pub fn random_local_mac() -> [u8; 6] {
    let mut mac = [0u8; 6];
    let from_urandom = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut mac));
    if from_urandom.is_err() {
        mac = fallback_random();
    }
    mac[0] = (mac[0] | 0x02) & !0x01;
    mac
}

/// Time, pid and a per-process random hasher key: good enough for a MAC when /dev/urandom
/// is missing.
fn fallback_random() -> [u8; 6] {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    if let Ok(d) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(d.as_nanos());
    }
    h.write_u32(std::process::id());
    let v = h.finish().to_le_bytes();
    [v[0], v[1], v[2], v[3], v[4], v[5]]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    const KNOWN_UUID: &str = "c3d68012-0208-11ea-9fd7-f2189899ab08";
    const KNOWN_MAC: [u8; 6] = [0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xee];

    /// Input bytes to read, output bytes recorded.
    struct Duplex {
        input: Cursor<Vec<u8>>,
        output: Vec<u8>,
    }

    impl Read for Duplex {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.input.read(buf)
        }
    }

    impl Write for Duplex {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.output.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn client_bytes(uuid: &str) -> Vec<u8> {
        let mut v = b"VMN3T".to_vec();
        v.extend_from_slice(&[22, 0, 0, 0]);
        v.extend_from_slice(&[b'x'; 40]);
        v.push(1);
        v.extend_from_slice(uuid.as_bytes());
        v.extend_from_slice(&[192, 168, 127, 2]);
        v
    }

    fn lookup(uuid: &str) -> Option<[u8; 6]> {
        (uuid == KNOWN_UUID).then_some(KNOWN_MAC)
    }

    #[test]
    fn golden_known_uuid() {
        let input = client_bytes(KNOWN_UUID);
        assert_eq!(input.len(), INIT_LEN + COMMAND_LEN);
        let mut d = Duplex {
            input: Cursor::new(input.clone()),
            output: Vec::new(),
        };
        let (uuid, mac) = server_handshake(&mut d, 1500, &lookup).unwrap();
        assert_eq!(uuid, KNOWN_UUID);
        assert_eq!(mac, KNOWN_MAC);
        assert_eq!(d.output.len(), INIT_LEN + RESPONSE_LEN);
        assert_eq!(&d.output[..INIT_LEN], &input[..INIT_LEN]);
        let mut want = vec![0u8; RESPONSE_LEN];
        want[..11].copy_from_slice(&[
            0x01, 0xdc, 0x05, 0xea, 0x05, 0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xee,
        ]);
        assert_eq!(&d.output[INIT_LEN..], &want[..]);
    }

    #[test]
    fn golden_unknown_uuid_random_mac() {
        let other = "00000000-1111-2222-3333-444444444444";
        let mut d = Duplex {
            input: Cursor::new(client_bytes(other)),
            output: Vec::new(),
        };
        let (uuid, mac) = server_handshake(&mut d, 65520, &lookup).unwrap();
        assert_eq!(uuid, other);
        let resp = &d.output[INIT_LEN..];
        assert_eq!(&resp[..5], &[0x01, 0xf0, 0xff, 0xfe, 0xff]);
        assert_eq!(&resp[5..11], &mac);
        assert_eq!(mac[0] & 0x03, 0x02, "local unicast: {mac:02x?}");
        assert!(resp[11..].iter().all(|&b| b == 0));
    }

    #[test]
    fn random_macs_are_local_unicast() {
        for _ in 0..64 {
            assert_eq!(random_local_mac()[0] & 0x03, 0x02);
        }
        assert_eq!(fallback_random().len(), 6);
    }

    #[test]
    fn server_rejects_junk() {
        let mut bad_magic = client_bytes(KNOWN_UUID);
        bad_magic[0] = b'G';
        let mut bad_cmd = client_bytes(KNOWN_UUID);
        bad_cmd[INIT_LEN] = 7;
        let mut bad_uuid = client_bytes(KNOWN_UUID);
        bad_uuid[INIT_LEN + 3] = 0;
        for input in [bad_magic, bad_cmd, bad_uuid] {
            let mut d = Duplex {
                input: Cursor::new(input),
                output: Vec::new(),
            };
            let e = server_handshake(&mut d, 1500, &lookup).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        }
        let mut short = Duplex {
            input: Cursor::new(b"VMN3T".to_vec()),
            output: Vec::new(),
        };
        assert_eq!(
            server_handshake(&mut short, 1500, &lookup)
                .unwrap_err()
                .kind(),
            io::ErrorKind::UnexpectedEof
        );
        let mut big = Duplex {
            input: Cursor::new(client_bytes(KNOWN_UUID)),
            output: Vec::new(),
        };
        assert!(server_handshake(&mut big, 65522, &lookup).is_err());
    }

    #[test]
    fn client_against_server_over_socketpair() {
        let (mut a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
        let server = std::thread::spawn(move || server_handshake(&mut b, 4000, &lookup));
        let (mtu, mac) = client_handshake(&mut a, KNOWN_UUID).unwrap();
        assert_eq!(mtu, 4000);
        assert_eq!(mac, KNOWN_MAC);
        assert_eq!(
            server.join().unwrap().unwrap(),
            (KNOWN_UUID.to_string(), KNOWN_MAC)
        );
    }

    #[test]
    fn client_rejects_bad_uuid_and_disconnect() {
        let (mut a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        assert_eq!(
            client_handshake(&mut a, "short").unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        let mut init = b"VMN3T".to_vec();
        init.extend_from_slice(&22u32.to_le_bytes());
        init.extend_from_slice(COMMIT);
        let mut resp = vec![0u8; RESPONSE_LEN];
        resp[0] = RESP_DISCONNECT;
        resp[1..5].copy_from_slice(b"full");
        init.extend_from_slice(&resp);
        let mut d = Duplex {
            input: Cursor::new(init),
            output: Vec::new(),
        };
        let e = client_handshake(&mut d, KNOWN_UUID).unwrap_err();
        assert!(e.to_string().contains("full"), "{e}");
    }
}
