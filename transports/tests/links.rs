//! Links over real sockets (socketpairs, seqpacket and unixgram pairs, TCP on 127.0.0.1).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use socket2::SockRef;
use transports::{
    accept_seqpacket, accept_vfkit, bind_seqpacket, bind_unixgram, dial_seqpacket, dial_stream,
    dial_unixgram, encode_frame, read_request_head, Endpoint, Framing, Link, LinkError, LinkIo,
    Listener, ReadStatus, GO_CONNECT_REQUEST, MAX_STREAM_FRAME,
};

const BIG_LIMIT: usize = 64 << 20;

/// A private directory under /tmp, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "transports-t{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A frame whose first bytes carry its index and length, the rest a pattern.
fn frame(index: usize, len: usize) -> Vec<u8> {
    let mut f: Vec<u8> = (0..len)
        .map(|i| u8::try_from((i * 7 + index) % 256).unwrap())
        .collect();
    let tag = u32::try_from(index).unwrap().to_be_bytes();
    let n = tag.len().min(len);
    f[..n].copy_from_slice(&tag[..n]);
    f
}

/// Mixed sizes: tiny, typical, jumbo, the maximum; deterministic.
fn mixed_sizes(count: usize, max: usize) -> Vec<usize> {
    let fixed = [
        14, 15, 60, 64, 1514, 1518, 4000, 9014, 16384, 32768, 65535, max,
    ];
    let mut seed: u32 = 0x1234_5678;
    (0..count)
        .map(|i| {
            if i % 3 == 0 {
                fixed[i / 3 % fixed.len()].min(max)
            } else {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                let r = usize::try_from(seed >> 8).unwrap();
                14 + r % (max - 13)
            }
        })
        .collect()
}

/// Queues `frames` on `tx` (in groups, flushing in between) and reads them all from `rx`.
fn pump(tx: &mut Link, rx: &mut Link, frames: &[Vec<u8>], expect: usize) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut next = 0;
    while got.len() < expect {
        assert!(
            Instant::now() < deadline,
            "timeout: got {}/{expect}",
            got.len()
        );
        // Queue a group, leaving the rest for later rounds.
        while next < frames.len() && tx.pending_bytes() < 1 << 20 {
            assert!(tx.queue_frame(&frames[next]), "frame {next} refused");
            next += 1;
        }
        let flushed = tx.flush().unwrap();
        let status = rx.read_frames(64, &mut |f| got.push(f.to_vec())).unwrap();
        assert_ne!(status, ReadStatus::Closed);
        if status == ReadStatus::WouldBlock && !flushed {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    got
}

fn check_roundtrip(tx: &mut Link, rx: &mut Link, frames: &[Vec<u8>]) {
    let got = pump(tx, rx, frames, frames.len());
    assert_eq!(got.len(), frames.len());
    for (i, (g, w)) in got.iter().zip(frames).enumerate() {
        assert!(g == w, "frame {i}: got {} bytes, want {}", g.len(), w.len());
    }
    let (t, r) = (tx.counters(), rx.counters());
    assert_eq!(t.tx_frames, frames.len() as u64);
    assert_eq!(r.rx_frames, frames.len() as u64);
    assert_eq!(t.tx_bytes, r.rx_bytes);
    assert_eq!(r.rx_runts, 0);
    assert!(!tx.has_pending());
}

fn stream_pair(framing: Framing) -> (Link, Link) {
    let (a, b) = UnixStream::pair().unwrap();
    (
        Link::new(
            LinkIo::Stream {
                read: a.into(),
                write: None,
            },
            framing,
            1500,
            BIG_LIMIT,
        ),
        Link::new(
            LinkIo::Stream {
                read: b.into(),
                write: None,
            },
            framing,
            1500,
            BIG_LIMIT,
        ),
    )
}

#[test]
fn qemu_stream_roundtrip_up_to_128k() {
    let (mut a, mut b) = stream_pair(Framing::Qemu);
    let frames: Vec<Vec<u8>> = mixed_sizes(400, MAX_STREAM_FRAME)
        .into_iter()
        .enumerate()
        .map(|(i, n)| frame(i, n))
        .collect();
    check_roundtrip(&mut a, &mut b, &frames);
    // And back the other way on the same pair.
    check_roundtrip(&mut b, &mut a, &frames[..50]);
}

#[test]
fn u16le_stream_roundtrip_over_tcp_loopback() {
    let l = Listener::bind(&"tcp://127.0.0.1:0".parse().unwrap(), false).unwrap();
    let addr = l.local_tcp_addr().unwrap();
    let client = dial_stream(&format!("tcp://{addr}").parse().unwrap()).unwrap();
    let (server, peer) = l.accept().unwrap();
    assert!(peer.starts_with("tcp:127.0.0.1:"), "{peer}");
    let mut a = Link::new(
        LinkIo::Stream {
            read: client,
            write: None,
        },
        Framing::LenU16Le,
        1500,
        BIG_LIMIT,
    );
    let mut b = Link::new(
        LinkIo::Stream {
            read: server,
            write: None,
        },
        Framing::LenU16Le,
        1500,
        BIG_LIMIT,
    );
    let frames: Vec<Vec<u8>> = mixed_sizes(600, 65535)
        .into_iter()
        .enumerate()
        .map(|(i, n)| frame(i, n))
        .collect();
    check_roundtrip(&mut a, &mut b, &frames);
    check_roundtrip(&mut b, &mut a, &frames[..100]);
}

#[test]
fn u16le_stdio_like_split_fds() {
    // Link A reads pipe 1 and writes pipe 2; link B the other way round.
    let (r1, w1) = nix::unistd::pipe().unwrap();
    let (r2, w2) = nix::unistd::pipe().unwrap();
    let mut a = Link::new(
        LinkIo::Stream {
            read: r1,
            write: Some(w2),
        },
        Framing::LenU16Le,
        1500,
        BIG_LIMIT,
    );
    let mut b = Link::new(
        LinkIo::Stream {
            read: r2,
            write: Some(w1),
        },
        Framing::LenU16Le,
        1500,
        BIG_LIMIT,
    );
    assert_ne!(a.read_fd(), a.write_fd());
    let frames: Vec<Vec<u8>> = mixed_sizes(200, 65535)
        .into_iter()
        .enumerate()
        .map(|(i, n)| frame(i, n))
        .collect();
    check_roundtrip(&mut a, &mut b, &frames);
    check_roundtrip(&mut b, &mut a, &frames);
}

#[test]
fn stream_frames_split_across_reads_and_many_per_read() {
    for framing in [Framing::Qemu, Framing::LenU16Le] {
        let (mut raw, b) = UnixStream::pair().unwrap();
        let mut rx = Link::new(
            LinkIo::Stream {
                read: b.into(),
                write: None,
            },
            framing,
            1500,
            BIG_LIMIT,
        );
        let frames: Vec<Vec<u8>> = (0..300).map(|i| frame(i, 14 + (i * 37) % 1500)).collect();
        let mut wire = Vec::new();
        for f in &frames {
            assert!(encode_frame(framing, f, &mut wire));
        }
        let mut got = Vec::new();
        // Split: dribble the first third in chunks of 1..=7 bytes, reading after each.
        let third = wire.len() / 3;
        let mut at = 0;
        let mut step = 1;
        while at < third {
            let n = step.min(third - at);
            raw.write_all(&wire[at..at + n]).unwrap();
            at += n;
            step = step % 7 + 1;
            let st = rx
                .read_frames(usize::MAX, &mut |f| got.push(f.to_vec()))
                .unwrap();
            assert_eq!(st, ReadStatus::WouldBlock);
        }
        // Many per read: the rest in one write, then one call takes every frame.
        raw.write_all(&wire[at..]).unwrap();
        let st = rx
            .read_frames(usize::MAX, &mut |f| got.push(f.to_vec()))
            .unwrap();
        assert_eq!(st, ReadStatus::WouldBlock);
        assert_eq!(got, frames, "{framing:?}");
        // EOF.
        drop(raw);
        assert_eq!(rx.read_frames(10, &mut |_| {}).unwrap(), ReadStatus::Closed);
    }
}

#[test]
fn stream_budget_then_resume() {
    let (mut raw, b) = UnixStream::pair().unwrap();
    let mut rx = Link::new(
        LinkIo::Stream {
            read: b.into(),
            write: None,
        },
        Framing::Qemu,
        1500,
        BIG_LIMIT,
    );
    let mut wire = Vec::new();
    for i in 0..10 {
        encode_frame(Framing::Qemu, &frame(i, 100), &mut wire);
    }
    raw.write_all(&wire).unwrap();
    let mut got = Vec::new();
    assert_eq!(
        rx.read_frames(4, &mut |f| got.push(f.to_vec())).unwrap(),
        ReadStatus::Budget
    );
    assert_eq!(got.len(), 4);
    assert_eq!(
        rx.read_frames(4, &mut |f| got.push(f.to_vec())).unwrap(),
        ReadStatus::Budget
    );
    assert_eq!(
        rx.read_frames(4, &mut |f| got.push(f.to_vec())).unwrap(),
        ReadStatus::WouldBlock
    );
    assert_eq!(got, (0..10).map(|i| frame(i, 100)).collect::<Vec<_>>());
}

#[test]
fn qemu_encode_golden_on_the_wire() {
    let (a, mut raw) = UnixStream::pair().unwrap();
    let mut tx = Link::new(
        LinkIo::Stream {
            read: a.into(),
            write: None,
        },
        Framing::Qemu,
        1500,
        BIG_LIMIT,
    );
    assert!(tx.queue_frame(&[0xab; 16]));
    assert!(tx.queue_frame(&vec![0xcd; 0x0102]));
    assert!(tx.flush().unwrap());
    let mut buf = vec![0; 4 + 16 + 4 + 0x0102];
    raw.read_exact(&mut buf).unwrap();
    assert_eq!(&buf[..4], &[0, 0, 0, 16]);
    assert_eq!(&buf[20..24], &[0, 0, 1, 2]);

    let (a, mut raw) = UnixStream::pair().unwrap();
    let mut tx = Link::new(
        LinkIo::Stream {
            read: a.into(),
            write: None,
        },
        Framing::LenU16Le,
        1500,
        BIG_LIMIT,
    );
    assert!(tx.queue_frame(&vec![0xee; 0x0302]));
    assert!(!tx.queue_frame(&vec![0; 65536]), "u16 cannot carry 65536");
    assert_eq!(tx.counters().tx_oversize, 1);
    assert!(tx.flush().unwrap());
    let mut buf = vec![0; 2 + 0x0302];
    raw.read_exact(&mut buf).unwrap();
    assert_eq!(&buf[..2], &[0x02, 0x03]);
}

#[test]
fn too_long_prefix_is_an_error() {
    let (mut raw, b) = UnixStream::pair().unwrap();
    let mut rx = Link::new(
        LinkIo::Stream {
            read: b.into(),
            write: None,
        },
        Framing::Qemu,
        1500,
        BIG_LIMIT,
    );
    let mut wire = Vec::new();
    encode_frame(Framing::Qemu, &frame(0, 60), &mut wire);
    wire.extend_from_slice(&(1u32 << 20).to_be_bytes());
    wire.extend_from_slice(&[0; 100]);
    raw.write_all(&wire).unwrap();
    let mut n = 0;
    match rx.read_frames(100, &mut |_| n += 1) {
        Err(LinkError::TooLong(len)) => assert_eq!(len, 1 << 20),
        other => panic!("want TooLong, got {other:?}"),
    }
    assert_eq!(n, 1, "the frame before the bad prefix is delivered");
}

#[test]
fn runt_is_counted_and_skipped() {
    for framing in [Framing::Qemu, Framing::LenU16Le] {
        let (mut raw, b) = UnixStream::pair().unwrap();
        let mut rx = Link::new(
            LinkIo::Stream {
                read: b.into(),
                write: None,
            },
            framing,
            1500,
            BIG_LIMIT,
        );
        let mut wire = Vec::new();
        encode_frame(framing, &[1, 2, 3], &mut wire);
        encode_frame(framing, &frame(7, 64), &mut wire);
        raw.write_all(&wire).unwrap();
        let mut got = Vec::new();
        rx.read_frames(10, &mut |f| got.push(f.to_vec())).unwrap();
        assert_eq!(got, vec![frame(7, 64)]);
        assert_eq!(rx.counters().rx_runts, 1);
        assert_eq!(rx.counters().rx_frames, 1);
    }
    // Message transports too.
    let (a, b) = UnixDatagram::pair().unwrap();
    let mut rx = Link::new(LinkIo::Packet(b.into()), Framing::Message, 1500, BIG_LIMIT);
    a.send(&[1, 2, 3]).unwrap();
    a.send(&frame(1, 60)).unwrap();
    let mut got = Vec::new();
    rx.read_frames(10, &mut |f| got.push(f.to_vec())).unwrap();
    assert_eq!(got, vec![frame(1, 60)]);
    assert_eq!(rx.counters().rx_runts, 1);
}

#[test]
fn seqpacket_roundtrip_and_eof() {
    let dir = TempDir::new();
    let path = dir.path("bess.sock");
    let l = bind_seqpacket(&path).unwrap();
    let client = dial_seqpacket(&path).unwrap();
    let server = accept_seqpacket(&l).unwrap();
    let mut a = Link::new(LinkIo::Packet(client), Framing::Message, 65535, BIG_LIMIT);
    let mut b = Link::new(LinkIo::Packet(server), Framing::Message, 65535, BIG_LIMIT);
    let frames: Vec<Vec<u8>> = mixed_sizes(500, 65535)
        .into_iter()
        .enumerate()
        .map(|(i, n)| frame(i, n))
        .collect();
    check_roundtrip(&mut a, &mut b, &frames);
    check_roundtrip(&mut b, &mut a, &frames[..100]);
    drop(a);
    assert_eq!(b.read_frames(10, &mut |_| {}).unwrap(), ReadStatus::Closed);
    // The path exists now: a second bind fails clearly.
    let e = bind_seqpacket(&path).unwrap_err();
    assert!(e.to_string().contains("already exists"), "{e}");
}

#[test]
fn seqpacket_oversize_frame_dropped() {
    let dir = TempDir::new();
    let path = dir.path("bess.sock");
    let l = bind_seqpacket(&path).unwrap();
    let client = dial_seqpacket(&path).unwrap();
    let server = accept_seqpacket(&l).unwrap();
    let mut a = Link::new(LinkIo::Packet(client), Framing::Message, 1500, BIG_LIMIT);
    let mut b = Link::new(LinkIo::Packet(server), Framing::Message, 1500, BIG_LIMIT);
    assert!(a.queue_frame(&frame(0, 9000)));
    assert!(a.queue_frame(&frame(1, 1500)));
    assert!(a.flush().unwrap());
    let mut got = Vec::new();
    b.read_frames(10, &mut |f| got.push(f.to_vec())).unwrap();
    assert_eq!(got, vec![frame(1, 1500)]);
    assert_eq!(b.counters().rx_oversize, 1);
}

#[test]
fn unixgram_pair_roundtrip() {
    let (a, b) = UnixDatagram::pair().unwrap();
    let mut a = Link::new(LinkIo::Packet(a.into()), Framing::Message, 65535, BIG_LIMIT);
    let mut b = Link::new(LinkIo::Packet(b.into()), Framing::Message, 65535, BIG_LIMIT);
    let frames: Vec<Vec<u8>> = mixed_sizes(300, 65535)
        .into_iter()
        .enumerate()
        .map(|(i, n)| frame(i, n))
        .collect();
    check_roundtrip(&mut a, &mut b, &frames);
}

#[test]
fn non_socket_packet_fd_reads_and_writes_per_frame() {
    // A pipe stands in for a TAP fd: one write() per frame, one read() per frame.
    let (r, w) = nix::unistd::pipe().unwrap();
    let mut tx = Link::new(LinkIo::Packet(w), Framing::Message, 1500, BIG_LIMIT);
    let mut rx = Link::new(LinkIo::Packet(r), Framing::Message, 1500, BIG_LIMIT);
    for i in 0..20 {
        let f = frame(i, 60 + i * 50);
        assert!(tx.queue_frame(&f));
        assert!(tx.flush().unwrap());
        let mut got = Vec::new();
        assert_eq!(
            rx.read_frames(10, &mut |g| got.push(g.to_vec())).unwrap(),
            ReadStatus::WouldBlock
        );
        assert_eq!(got, vec![f]);
    }
    drop(tx);
    assert_eq!(rx.read_frames(10, &mut |_| {}).unwrap(), ReadStatus::Closed);
}

#[test]
fn vfkit_peer_sending_vfkt_first() {
    let dir = TempDir::new();
    let server_path = dir.path("gvproxy.sock");
    let client_path = dir.path("vfkit.sock");
    let server = bind_unixgram(&server_path).unwrap();
    let client = dial_unixgram(&client_path, &server_path, true).unwrap();
    let peer = accept_vfkit(&server).unwrap();
    assert_eq!(peer, client_path);
    let mut s = Link::new(
        LinkIo::Datagram { fd: server, peer },
        Framing::Message,
        1500,
        BIG_LIMIT,
    );
    let mut c = Link::new(LinkIo::Packet(client), Framing::Message, 1500, BIG_LIMIT);
    let frames: Vec<Vec<u8>> = (0..200).map(|i| frame(i, 14 + i * 7)).collect();
    check_roundtrip(&mut c, &mut s, &frames);
    check_roundtrip(&mut s, &mut c, &frames);
    assert_eq!(
        s.counters().rx_runts,
        0,
        "VFKT was consumed, not read as a runt"
    );
}

#[test]
fn vfkit_peer_sending_a_frame_first() {
    let dir = TempDir::new();
    let server_path = dir.path("gvproxy.sock");
    let client_path = dir.path("krun.sock");
    let server = bind_unixgram(&server_path).unwrap();
    let client = dial_unixgram(&client_path, &server_path, false).unwrap();
    let first = frame(42, 60);
    nix::sys::socket::send(
        client.as_raw_fd(),
        &first,
        nix::sys::socket::MsgFlags::empty(),
    )
    .unwrap();
    // A 4-byte datagram that is not VFKT would also stay queued; here a real frame follows.
    let second = frame(43, 1514);
    nix::sys::socket::send(
        client.as_raw_fd(),
        &second,
        nix::sys::socket::MsgFlags::empty(),
    )
    .unwrap();
    let peer = accept_vfkit(&server).unwrap();
    assert_eq!(peer, client_path);
    let mut s = Link::new(
        LinkIo::Datagram { fd: server, peer },
        Framing::Message,
        1500,
        BIG_LIMIT,
    );
    let mut got = Vec::new();
    s.read_frames(10, &mut |f| got.push(f.to_vec())).unwrap();
    assert_eq!(got, vec![first, second]);
    // Replies reach the peer's bound path.
    assert!(s.queue_frame(&frame(1, 100)));
    assert!(s.flush().unwrap());
    let mut buf = [0u8; 200];
    let n = nix::sys::socket::recv(
        client.as_raw_fd(),
        &mut buf,
        nix::sys::socket::MsgFlags::empty(),
    )
    .unwrap();
    assert_eq!(&buf[..n], &frame(1, 100)[..]);
}

#[test]
fn vfkit_unnamed_peer_is_an_error() {
    let dir = TempDir::new();
    let server_path = dir.path("gvproxy.sock");
    let server = bind_unixgram(&server_path).unwrap();
    let anon = UnixDatagram::unbound().unwrap();
    anon.send_to(&frame(0, 60), &server_path).unwrap();
    let e = accept_vfkit(&server).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
    assert!(e.to_string().contains("named"), "{e}");
}

#[test]
fn connect_head_then_frames_in_one_write() {
    let (mut client, server) = UnixStream::pair().unwrap();
    let mut frames_wire = Vec::new();
    encode_frame(Framing::LenU16Le, &frame(1, 60), &mut frames_wire);
    encode_frame(Framing::LenU16Le, &frame(2, 342), &mut frames_wire);
    let mut wire = GO_CONNECT_REQUEST.to_vec();
    wire.extend_from_slice(&frames_wire);
    client.write_all(&wire).unwrap();
    let mut server = server;
    let (head, leftover) = read_request_head(&mut server, 8192).unwrap();
    assert_eq!(head.method, "POST");
    assert_eq!(head.path, "/connect");
    assert_eq!(head.header("content-length"), Some("0"));
    assert_eq!(leftover, frames_wire);
    // The leftover feeds the link, then later frames arrive normally.
    let mut link = Link::new(
        LinkIo::Stream {
            read: server.into(),
            write: None,
        },
        Framing::LenU16Le,
        1500,
        BIG_LIMIT,
    );
    link.prefill(&leftover);
    let mut third = Vec::new();
    encode_frame(Framing::LenU16Le, &frame(3, 1514), &mut third);
    client.write_all(&third).unwrap();
    let mut got = Vec::new();
    link.read_frames(10, &mut |f| got.push(f.to_vec())).unwrap();
    assert_eq!(got, vec![frame(1, 60), frame(2, 342), frame(3, 1514)]);
}

#[test]
fn listener_bind_existing_path_fails_clearly() {
    let dir = TempDir::new();
    let path = dir.path("api.sock");
    std::fs::write(&path, b"").unwrap();
    let ep = Endpoint::Unix(path.clone());
    let e = Listener::bind(&ep, false).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains(path.to_str().unwrap()) && msg.contains("already exists"),
        "{msg}"
    );
    assert!(!msg.contains('\n'));
    let e = bind_unixgram(&path).unwrap_err();
    assert!(e.to_string().contains("already exists"), "{e}");
    std::fs::remove_file(&path).unwrap();

    // A fresh path works, is private when asked, and accepts.
    let l = Listener::bind(&ep, true).unwrap();
    assert_eq!(l.path(), Some(path.as_path()));
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let c = dial_stream(&ep).unwrap();
    let (s, peer) = l.accept().unwrap();
    assert!(peer.starts_with("unix:"), "{peer}");
    drop((c, s));
    // Binding the same path again: it exists now.
    assert!(Listener::bind(&ep, false)
        .unwrap_err()
        .to_string()
        .contains("already exists"));
    // Non-stream endpoints are refused with a clear error.
    assert!(Listener::bind(&Endpoint::Unixgram(dir.path("x")), false).is_err());
    assert!(dial_stream(&"vsock://:1024".parse().unwrap())
        .unwrap_err()
        .to_string()
        .contains("CID"));
}

#[test]
fn vsock_endpoints_fail_cleanly() {
    // No vsock loopback in this kernel: errors, never a panic.
    if let Err(e) = Listener::bind(&"vsock://7:1024".parse().unwrap(), false) {
        assert!(e.to_string().contains("vsock"), "{e}");
    }
    if let Err(e) = dial_stream(&"vsock://1:1024/connect".parse().unwrap()) {
        assert!(e.to_string().contains("vsock"), "{e}");
    }
}

#[test]
fn tx_limit_drops_and_counts() {
    for framing in [Framing::Qemu, Framing::LenU16Le] {
        let (a, _b) = UnixStream::pair().unwrap();
        let mut tx = Link::new(
            LinkIo::Stream {
                read: a.into(),
                write: None,
            },
            framing,
            1500,
            10_000,
        );
        let f = frame(0, 1000);
        let hdr = framing.header_len();
        let fits = 10_000 / (1000 + hdr);
        for _ in 0..fits {
            assert!(tx.queue_frame(&f));
        }
        assert!(!tx.queue_frame(&f));
        assert!(!tx.queue_frame(&f));
        let c = tx.counters();
        assert_eq!(c.tx_frames, fits as u64);
        assert_eq!(c.tx_dropped, 2);
        assert_eq!(tx.pending_bytes(), fits * (1000 + hdr));
        assert!(tx.flush().unwrap());
        assert!(tx.queue_frame(&f), "room again after flushing");
    }
    // Message transports bound bytes the same way.
    let (a, _b) = UnixDatagram::pair().unwrap();
    let mut tx = Link::new(LinkIo::Packet(a.into()), Framing::Message, 1500, 3000);
    assert!(tx.queue_frame(&frame(0, 1500)));
    assert!(tx.queue_frame(&frame(1, 1500)));
    assert!(!tx.queue_frame(&frame(2, 60)));
    assert_eq!(tx.counters().tx_dropped, 1);
    assert!(!tx.queue_frame(&[]), "empty frames are refused");
}

fn small_buffers(fd: &impl AsFd) {
    let s = SockRef::from(fd);
    s.set_send_buffer_size(4096).unwrap();
    s.set_recv_buffer_size(4096).unwrap();
}

/// Writes until the kernel pushes back, then the peer drains and the queue empties.
fn backpressure(mut tx: Link, mut rx: Link, frame_len: usize) {
    let mut queued = 0;
    let mut full = false;
    for i in 0..2000 {
        assert!(tx.queue_frame(&frame(i, frame_len)));
        queued += 1;
        if !tx.flush().unwrap() {
            full = true;
            break;
        }
    }
    assert!(full, "flush never reported a full kernel buffer");
    assert!(tx.has_pending());
    // Still full while nobody reads.
    assert!(!tx.flush().unwrap());
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline);
        rx.read_frames(1000, &mut |f| got.push(f.to_vec())).unwrap();
        if tx.flush().unwrap() {
            break;
        }
    }
    while got.len() < queued {
        assert!(Instant::now() < deadline);
        rx.read_frames(1000, &mut |f| got.push(f.to_vec())).unwrap();
    }
    assert_eq!(got.len(), queued);
    for (i, g) in got.iter().enumerate() {
        assert_eq!(g, &frame(i, frame_len));
    }
    assert!(!tx.has_pending());
}

#[test]
fn flush_reports_full_then_completes_stream() {
    let (a, b) = UnixStream::pair().unwrap();
    small_buffers(&a);
    small_buffers(&b);
    let tx = Link::new(
        LinkIo::Stream {
            read: a.into(),
            write: None,
        },
        Framing::LenU16Le,
        1500,
        BIG_LIMIT,
    );
    let rx = Link::new(
        LinkIo::Stream {
            read: b.into(),
            write: None,
        },
        Framing::LenU16Le,
        1500,
        BIG_LIMIT,
    );
    backpressure(tx, rx, 1514);
}

#[test]
fn flush_reports_full_then_completes_seqpacket_and_dgram() {
    let dir = TempDir::new();
    let path = dir.path("bess.sock");
    let l = bind_seqpacket(&path).unwrap();
    let client = dial_seqpacket(&path).unwrap();
    let server = accept_seqpacket(&l).unwrap();
    small_buffers(&client);
    small_buffers(&server);
    backpressure(
        Link::new(LinkIo::Packet(client), Framing::Message, 1500, BIG_LIMIT),
        Link::new(LinkIo::Packet(server), Framing::Message, 1500, BIG_LIMIT),
        1000,
    );

    let (a, b) = UnixDatagram::pair().unwrap();
    small_buffers(&a);
    small_buffers(&b);
    backpressure(
        Link::new(LinkIo::Packet(a.into()), Framing::Message, 1500, BIG_LIMIT),
        Link::new(LinkIo::Packet(b.into()), Framing::Message, 1500, BIG_LIMIT),
        1000,
    );

    let server_path = dir.path("gv.sock");
    let client_path = dir.path("vm.sock");
    let server = bind_unixgram(&server_path).unwrap();
    let client = dial_unixgram(&client_path, &server_path, true).unwrap();
    let peer = accept_vfkit(&server).unwrap();
    small_buffers(&server);
    small_buffers(&client);
    backpressure(
        Link::new(
            LinkIo::Datagram { fd: server, peer },
            Framing::Message,
            1500,
            BIG_LIMIT,
        ),
        Link::new(LinkIo::Packet(client), Framing::Message, 1500, BIG_LIMIT),
        1000,
    );
}

#[test]
fn links_are_send() {
    fn is_send<T: Send>() {}
    is_send::<Link>();
    let _ = Path::new("/");
}
