//! State-machine tests for `stack::tcp`: one input against a fixture, the reply and the
//! connection variables asserted field by field. RFC sections in the test names' comments.

// Test code: a failed unwrap is a failed test; casts are of small values.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]

mod tcp_common;

use std::time::Duration;

use stack::tcp::reset_for_unknown;
use tcp_common::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

// ---------------------------------------------------------------------------------------
// Opening: passive (guest SYN → host connect → SYN-ACK).

#[test]
fn accept_syn_validates_the_syn() {
    let cfg = TcpConfig::default();
    let now = std::time::Instant::now();
    for bad in [SYN | ACK, SYN | RST, SYN | FIN, ACK, TcpFlags::empty()] {
        let syn = TcpRepr {
            flags: bad,
            ..guest_syn()
        };
        assert!(
            Tcb::accept_syn(ep(), &syn, ISS, &cfg, now).is_none(),
            "{bad:?}"
        );
    }
    let syn = TcpRepr {
        flags: SYN | PSH | TcpFlags::ECE | TcpFlags::CWR,
        ..guest_syn()
    };
    assert!(Tcb::accept_syn(ep(), &syn, ISS, &cfg, now).is_some());
}

#[test]
fn awaiting_host_sends_nothing() {
    let mut f = Fix::awaiting();
    assert_eq!(f.t.state(), State::AwaitingHost);
    assert!(f.poll().is_empty());
    assert_eq!(f.t.next_deadline(), None);
    assert_eq!(f.t.send_room(), 0);
    // A retransmitted SYN is not answered before the host connected.
    let syn = guest_syn();
    f.input(syn, b"");
    assert!(f.poll().is_empty());
    let v = f.t.vars();
    assert_eq!(v.irs, GUEST_ISN);
    assert_eq!(v.rcv_nxt, GUEST_ISN + 1);
}

#[test]
fn syn_ack_carries_the_options_the_guest_offered() {
    let mut f = Fix::awaiting();
    f.tick(5);
    f.t.host_connected(f.now, &mut f.out);
    let s = f.take_one();
    assert_eq!(s.flags(), SYN | ACK);
    assert_eq!(s.r.seq, ISS);
    assert_eq!(s.r.ack, GUEST_ISN + 1);
    // RFC 7323 §2.2: the window in a SYN is never scaled.
    assert_eq!(s.r.window, 65_535);
    assert_eq!(s.r.mss, Some(1460));
    // 4 MiB needs a shift of 7 to be expressed.
    assert_eq!(s.r.window_scale, Some(7));
    assert!(s.r.sack_permitted);
    let ts = s.r.timestamps.unwrap();
    assert_eq!(ts.tsecr, 1_000, "echoes the guest's TSval");
    assert!(s.data.is_empty());
    assert_eq!(f.t.state(), State::SynReceived);
    let v = f.t.vars();
    assert_eq!((v.snd_una, v.snd_nxt), (ISS, ISS + 1));
    assert_eq!(v.rcv_wnd, 65_535);
    assert_eq!(v.snd_shift, 7);
    assert_eq!(f.deadline_in(), Some(ms(1000)), "RFC 6298 §2.1 initial RTO");
}

#[test]
fn syn_ack_omits_options_the_guest_did_not_offer() {
    let mut f = Fix::awaiting_with(guest_syn_plain(), TcpConfig::default());
    f.t.host_connected(f.now, &mut f.out);
    let s = f.take_one();
    assert_eq!(s.r.window_scale, None);
    assert!(!s.r.sack_permitted);
    assert_eq!(s.r.timestamps, None);
    assert_eq!(s.r.mss, Some(1460));
    let v = f.t.vars();
    assert_eq!((v.snd_shift, v.rcv_shift), (0, 0));
    assert!(!v.sack_ok && !v.ts_ok);
}

#[test]
fn host_refused_sends_rst_ack() {
    let mut f = Fix::awaiting();
    f.t.host_refused(&mut f.out);
    let s = f.take_one();
    // RFC 9293 §3.10.7.1: <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>.
    assert_eq!(s.flags(), RST | ACK);
    assert_eq!(s.r.seq, SeqNumber(0));
    assert_eq!(s.r.ack, GUEST_ISN + 1);
    assert_eq!(s.r.window, 0);
    assert_eq!(f.t.state(), State::Closed);
    assert!(f.t.is_closed());
    assert_eq!(f.t.next_deadline(), None);
}

#[test]
fn handshake_completes_and_records_the_window() {
    let mut f = Fix::syn_received();
    f.tick(3);
    let mut r = f.seg(ACK);
    r.window = 502;
    let e = f.input(r, b"");
    assert_eq!(e, Effects::default());
    assert_eq!(f.t.state(), State::Established);
    let v = f.t.vars();
    assert_eq!(v.snd_una, ISS + 1);
    assert_eq!(v.snd_nxt, ISS + 1);
    // RFC 7323 §2.3: SEG.WND << Snd.Wind.Shift.
    assert_eq!(v.snd_wnd, 502 << 7);
    assert_eq!(v.snd_wl1, GUEST_ISN + 1);
    assert_eq!(v.snd_wl2, ISS + 1);
    assert_eq!(v.srtt, Some(ms(3)), "RTT from the timestamp echo");
    assert_eq!(f.t.next_deadline(), None, "nothing outstanding: no timer");
    assert!(
        f.poll().is_empty(),
        "the ACK of a SYN-ACK is not acknowledged"
    );
}

#[test]
fn syn_received_unacceptable_ack_gets_rst() {
    let mut f = Fix::syn_received();
    let mut r = f.seg(ACK);
    r.ack = ISS + 5;
    f.input(r, b"");
    // RFC 9293 §3.10.7.4: <SEQ=SEG.ACK><CTL=RST>, the connection stays.
    let s = f.take_one();
    assert_eq!(s.flags(), RST);
    assert_eq!(s.r.seq, ISS + 5);
    assert_eq!(f.t.state(), State::SynReceived);
}

#[test]
fn syn_received_segment_without_ack_is_dropped() {
    let mut f = Fix::syn_received();
    let r = f.seg(PSH);
    f.input(r, b"data");
    assert!(f.poll().is_empty());
    assert_eq!(f.t.state(), State::SynReceived);
    assert!(f.host_pending().is_empty());
}

#[test]
fn duplicate_syn_gets_the_syn_ack_again() {
    let mut f = Fix::syn_received();
    f.tick(300);
    let mut syn = guest_syn();
    syn.timestamps = Some(TcpTimestamps {
        tsval: 1_300,
        tsecr: 0,
    });
    f.input(syn, b"");
    let s = f.take_one();
    assert_eq!(s.flags(), SYN | ACK);
    assert_eq!(s.r.seq, ISS);
    assert_eq!(s.r.timestamps.unwrap().tsecr, 1_300, "echoes the new SYN");
}

#[test]
fn syn_ack_retransmitted_with_backoff_then_given_up() {
    let mut f = Fix::syn_received();
    let mut waits = vec![];
    loop {
        let d = f.deadline_in().unwrap();
        let (e, segs) = f.fire();
        if f.t.state() == State::Closed {
            // Given up silently after syn_retries, and the host socket is closed.
            assert!(segs.is_empty());
            assert!(e.host_close);
            break;
        }
        waits.push(d.as_secs());
        assert_eq!(segs.len(), 1);
        assert_eq!(segs[0].flags(), SYN | ACK);
        assert_eq!(segs[0].r.seq, ISS);
    }
    assert_eq!(waits, [1, 2, 4, 8, 16, 32]);
    assert_eq!(f.t.stats().retransmits, 6);
    assert!(f.t.is_closed());
}

#[test]
fn guest_rst_while_awaiting_host() {
    let mut f = Fix::awaiting();
    let mut r = f.seg(RST);
    r.seq = GUEST_ISN + 7;
    assert_eq!(f.input(r, b""), Effects::default(), "not exact: ignored");
    let r = f.seg(RST);
    let e = f.input(r, b"");
    assert!(e.host_close);
    assert_eq!(f.t.state(), State::Closed);
    assert!(f.t.is_closed());
}

#[test]
fn rst_in_syn_received() {
    let mut f = Fix::syn_received();
    let r = f.seg(RST);
    let e = f.input(r, b"");
    assert!(e.host_close);
    assert_eq!(f.t.state(), State::Closed);
}

#[test]
fn guest_mss_is_sanitized() {
    for (offered, expect) in [
        (None, 536),
        (Some(0), 536),
        (Some(10), 88),
        (Some(1200), 1200),
        (Some(9000), 1460),
    ] {
        let syn = TcpRepr {
            mss: offered,
            ..guest_syn()
        };
        let f = Fix::established_with(syn, TcpConfig::default());
        assert_eq!(f.t.vars().snd_mss, expect, "{offered:?}");
    }
}

#[test]
fn window_scale_above_14_is_used_as_14() {
    let syn = TcpRepr {
        window_scale: Some(20),
        ..guest_syn()
    };
    let mut f = Fix::syn_received_with(syn, TcpConfig::default());
    let mut r = f.seg(ACK);
    r.window = 65_535;
    f.input(r, b"");
    let v = f.t.vars();
    assert_eq!(v.snd_shift, 14);
    assert_eq!(v.snd_wnd, 65_535 << 14, "no overflow");
}

// ---------------------------------------------------------------------------------------
// Opening: active (port forward into the guest).

#[test]
fn connect_sends_syn_with_our_options() {
    let (f, syn) = Fix::syn_sent();
    assert_eq!(f.t.state(), State::SynSent);
    assert_eq!(syn.flags(), SYN);
    assert_eq!(syn.r.seq, ISS);
    assert_eq!(syn.r.window, 65_535);
    assert_eq!(syn.r.mss, Some(1460));
    assert_eq!(syn.r.window_scale, Some(7));
    assert!(syn.r.sack_permitted);
    assert_eq!(syn.r.timestamps.unwrap().tsecr, 0);
    assert_eq!(f.deadline_in(), Some(ms(1000)));
    assert!(
        f.t.send_room() > 0,
        "host data may be buffered before the handshake"
    );
}

fn guest_syn_ack(f: &Fix) -> TcpRepr {
    TcpRepr {
        src_port: GUEST_PORT,
        dst_port: REMOTE_PORT,
        seq: GUEST_ISN,
        ack: ISS + 1,
        flags: SYN | ACK,
        window: 65_160,
        mss: Some(1460),
        window_scale: Some(7),
        sack_permitted: true,
        timestamps: Some(TcpTimestamps {
            tsval: f.gts,
            tsecr: f.our_tsval,
        }),
        ..TcpRepr::default()
    }
}

#[test]
fn connect_completes_on_syn_ack() {
    let (mut f, _) = Fix::syn_sent();
    f.host_send(100);
    f.tick(2);
    let sa = guest_syn_ack(&f);
    let e = f.input(sa, b"");
    assert_eq!(f.t.state(), State::Established);
    assert!(!e.host_write);
    let v = f.t.vars();
    assert_eq!(v.snd_wnd, 65_160, "SYN-ACK window unscaled");
    assert_eq!((v.snd_shift, v.rcv_shift), (7, 7));
    assert!(v.sack_ok && v.ts_ok);
    assert_eq!(v.srtt, Some(ms(2)));
    // The ACK of the SYN-ACK goes out with the buffered data.
    let segs = f.poll();
    assert_eq!(segs.len(), 1);
    assert_eq!(segs[0].flags(), ACK | PSH);
    assert_eq!(segs[0].r.seq, ISS + 1);
    assert_eq!(segs[0].r.ack, GUEST_ISN + 1);
    assert_eq!(segs[0].data, pattern(100));
    assert_eq!(segs[0].r.timestamps.unwrap().tsecr, f.gts);
}

#[test]
fn connect_without_window_scaling_in_syn_ack() {
    let (mut f, _) = Fix::syn_sent();
    let mut sa = guest_syn_ack(&f);
    sa.window_scale = None;
    sa.sack_permitted = false;
    f.input(sa, b"");
    let v = f.t.vars();
    assert_eq!((v.snd_shift, v.rcv_shift), (0, 0));
    assert!(!v.sack_ok);
    let s = f.poll().remove(0);
    assert_eq!(s.flags(), ACK);
    assert_eq!(s.r.window, 65_535, "unscaled window capped at 65535");
}

#[test]
fn syn_sent_unacceptable_ack_gets_rst() {
    let (mut f, _) = Fix::syn_sent();
    for bad in [ISS, ISS + 2] {
        let mut sa = guest_syn_ack(&f);
        sa.ack = bad;
        f.input(sa, b"");
        // RFC 9293 §3.10.7.3: <SEQ=SEG.ACK><CTL=RST>.
        let s = f.take_one();
        assert_eq!(s.flags(), RST);
        assert_eq!(s.r.seq, bad);
        assert_eq!(f.t.state(), State::SynSent);
    }
}

#[test]
fn syn_sent_rst() {
    let (mut f, _) = Fix::syn_sent();
    // Without an ACK the RST is ignored.
    let rst = TcpRepr {
        flags: RST,
        ..guest_syn_ack(&f)
    };
    assert_eq!(f.input(rst, b""), Effects::default());
    assert_eq!(f.t.state(), State::SynSent);
    // With an acceptable ACK: connection refused by the guest.
    let rst = TcpRepr {
        flags: RST | ACK,
        ..guest_syn_ack(&f)
    };
    let e = f.input(rst, b"");
    assert!(e.host_close);
    assert_eq!(f.t.state(), State::Closed);
    assert!(f.take().is_empty());
}

#[test]
fn syn_retransmitted_then_given_up() {
    let (mut f, _) = Fix::syn_sent();
    let mut n = 0;
    loop {
        let (e, segs) = f.fire();
        if e.host_close {
            break;
        }
        assert_eq!(segs[0].flags(), SYN);
        n += 1;
    }
    assert_eq!(n, 6);
    assert!(f.t.is_closed());
}

#[test]
fn simultaneous_open() {
    let (mut f, _) = Fix::syn_sent();
    let syn = TcpRepr {
        flags: SYN,
        ack: SeqNumber(0),
        ..guest_syn_ack(&f)
    };
    f.input(syn, b"");
    assert_eq!(f.t.state(), State::SynReceived);
    let s = f.take_one();
    assert_eq!(s.flags(), SYN | ACK);
    assert_eq!(s.r.seq, ISS);
    assert_eq!(s.r.ack, GUEST_ISN + 1);
    f.ack_now();
    assert_eq!(f.t.state(), State::Established);
}

// ---------------------------------------------------------------------------------------
// Guest → host data.

#[test]
fn in_order_data_reaches_the_host() {
    let mut f = Fix::established();
    let e = f.data(b"hello");
    assert!(e.host_write);
    assert!(!e.host_shutdown);
    assert_eq!(f.host_pending(), b"hello");
    assert_eq!(f.rcv_nxt(), GUEST_ISN + 6);
    // Quick ACK at the start of the connection; the ACK waits for poll_output.
    assert!(f.take().is_empty());
    let (_, e) = f.host_write_all();
    assert_eq!(e, Effects::default());
    let s = f.poll().remove(0);
    assert_eq!(s.flags(), ACK);
    assert_eq!(s.r.ack, GUEST_ISN + 6);
    assert_eq!(s.r.seq, ISS + 1);
    assert_eq!(u32::from(s.r.window), (4u32 << 20) >> 7);
    assert_eq!(f.t.stats().bytes_in, 5);
}

#[test]
fn delayed_ack_and_every_second_full_segment() {
    let mut f = Fix::established_no_quickack();
    // One small segment: the ACK is delayed (RFC 9293 §3.8.6.3).
    f.data(b"abc");
    f.host_write_all();
    assert!(f.poll().is_empty());
    assert_eq!(f.deadline_in(), Some(ms(40)));
    let (_, segs) = f.fire();
    assert_eq!(segs.len(), 1);
    assert_eq!(segs[0].r.ack, f.gseq);
    // Two full-sized segments: acknowledged at once.
    f.data(&[7; 1448]);
    f.host_write_all();
    assert!(f.poll().is_empty());
    f.data(&[7; 1448]);
    f.host_write_all();
    let segs = f.poll();
    assert_eq!(segs.len(), 1);
    assert_eq!(segs[0].r.ack, f.gseq);
    assert_eq!(f.t.next_deadline(), None);
}

#[test]
fn many_segments_in_one_turn_get_one_ack() {
    let mut f = Fix::established_no_quickack();
    for _ in 0..20 {
        f.data(&[1; 1448]);
    }
    f.host_write_all();
    let segs = f.poll();
    assert_eq!(segs.len(), 1);
    assert_eq!(segs[0].r.ack, f.gseq);
}

#[test]
fn out_of_order_held_sacked_and_reassembled() {
    let mut f = Fix::established();
    let base = f.gseq;
    // Segment 2 of 3 arrives first.
    let mut r = f.seg(ACK);
    r.seq = base + 100;
    let e = f.input(r, &[2; 100]);
    assert!(!e.host_write);
    assert!(f.host_pending().is_empty());
    // RFC 5681 §4.2: an immediate duplicate ACK, with a SACK block (RFC 2018).
    let s = f.poll().remove(0);
    assert_eq!(s.r.ack, base);
    assert_eq!(s.sacks(), [((base + 100).0, (base + 200).0)]);
    // Segment 3, then segment 1.
    r.seq = base + 200;
    f.input(r, &[3; 100]);
    let s = f.poll().remove(0);
    assert_eq!(s.sacks(), [((base + 100).0, (base + 300).0)]);
    r.seq = base;
    let e = f.input(r, &[1; 100]);
    assert!(e.host_write);
    let s = f.poll().remove(0);
    assert_eq!(
        s.r.ack,
        base + 300,
        "the gap filled: everything acknowledged"
    );
    assert!(s.sacks().is_empty());
    let mut expect = vec![1u8; 100];
    expect.extend([2u8; 100]);
    expect.extend([3u8; 100]);
    assert_eq!(f.host_pending(), expect);
    assert_eq!(f.t.stats().ooo_segments, 2);
    assert_eq!(f.t.vars().ooo_bytes, 0);
}

#[test]
fn sack_blocks_most_recent_first() {
    let mut f = Fix::established();
    let base = f.gseq;
    for k in [1u32, 3, 5] {
        let mut r = f.seg(ACK);
        r.seq = base + k * 10;
        f.input(r, &[0; 10]);
    }
    let s = f.poll().remove(0);
    let b = |k: u32| ((base + k * 10).0, (base + k * 10 + 10).0);
    // RFC 2018 §4: the block of the latest segment first; three fit with timestamps.
    assert_eq!(s.sacks(), [b(5), b(3), b(1)]);
    assert_eq!(s.r.header_len(), 20 + 12 + 4 + 24);
}

#[test]
fn no_sack_blocks_without_sack_permitted() {
    let mut f = Fix::established_plain();
    let mut r = f.seg(ACK);
    r.seq = f.gseq + 10;
    f.input(r, &[0; 10]);
    let s = f.poll().remove(0);
    assert!(s.sacks().is_empty());
    assert_eq!(s.r.timestamps, None);
}

#[test]
fn old_duplicate_segment_gets_an_ack() {
    let mut f = Fix::established();
    let base = f.gseq;
    f.data(b"01234");
    f.data(b"56789");
    f.host_write_all();
    f.poll();
    // RFC 9293 §3.10.7.4: entirely old (it ends before Last.ACK.sent), not acceptable:
    // <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK> at once, and dropped.
    let mut r = f.seg(ACK);
    r.seq = base;
    let e = f.input(r, b"01234");
    assert!(!e.host_write);
    let s = f.take_one();
    assert_eq!(s.flags(), ACK);
    assert_eq!(s.r.seq, f.our_nxt());
    assert_eq!(s.r.ack, base + 10);
    assert!(f.host_pending().is_empty());
    assert_eq!(f.t.stats().unacceptable, 1);
}

#[test]
fn duplicate_of_the_last_acked_segment_echoes_its_timestamp() {
    // Our ACK of "56789" was lost and the guest retransmits it after an RTO. Like Linux
    // (tcp_sequence() bounds with RCV.WUP), the segment ending at Last.ACK.sent is
    // processed: RFC 7323 §4.3 records its TSval, so our ACK echoes the retransmission and
    // the guest does not measure a whole RTO as its RTT.
    let mut f = Fix::established();
    let base = f.gseq;
    f.gts = 10_000;
    f.data(b"01234");
    f.data(b"56789");
    f.host_write_all();
    f.poll();
    f.tick(1000);
    let mut r = f.seg(ACK);
    r.seq = base + 5;
    let e = f.input(r, b"56789");
    assert!(!e.host_write, "old text is dropped");
    assert_eq!(f.t.stats().unacceptable, 0);
    let s = f.poll().remove(0);
    assert_eq!(s.r.ack, base + 10);
    assert_eq!(s.r.timestamps.unwrap().tsecr, 11_000);
    assert!(f.host_pending().is_empty());
}

#[test]
fn keepalive_probe_gets_an_ack() {
    let mut f = Fix::established();
    let mut r = f.seg(ACK);
    r.seq = f.gseq - 1;
    f.input(r, b"");
    let s = f.take_one();
    assert_eq!(s.r.ack, f.gseq);
}

#[test]
fn partially_old_segment_is_trimmed_in_front() {
    let mut f = Fix::established();
    let base = f.gseq;
    f.data(b"abcde");
    let mut r = f.seg(ACK);
    r.seq = base + 3;
    let e = f.input(r, b"defgh");
    assert!(e.host_write);
    assert_eq!(f.host_pending(), b"abcdefgh");
    assert_eq!(f.rcv_nxt(), base + 8);
}

fn small_window_cfg(recv_buf: usize) -> TcpConfig {
    TcpConfig {
        recv_buf,
        ..TcpConfig::default()
    }
}

#[test]
fn data_beyond_the_window_is_trimmed() {
    // No window scaling: the window is exactly the free room.
    let mut f = Fix::established_with(guest_syn_plain(), small_window_cfg(4000));
    assert_eq!(f.t.vars().rcv_wnd, 4000);
    let e = f.data(&pattern(6000));
    assert!(e.host_write);
    assert_eq!(f.host_pending(), pattern(4000));
    assert_eq!(f.rcv_nxt(), GUEST_ISN + 1 + 4000);
    let s = f.poll().remove(0);
    assert_eq!(s.r.ack, GUEST_ISN + 1 + 4000);
    assert_eq!(s.r.window, 0, "the window is full");
}

#[test]
fn segment_beyond_the_window_gets_an_ack_and_is_dropped() {
    let mut f = Fix::established_with(guest_syn_plain(), small_window_cfg(4000));
    // Starting beyond the right edge: not acceptable, an ACK at once.
    let mut r = f.seg(ACK);
    r.seq = f.gseq + 4001;
    f.input(r, b"x");
    let s = f.take_one();
    assert_eq!(s.r.ack, f.gseq);
    assert_eq!(f.t.stats().unacceptable, 1);
    // Starting at the right edge: its ACK is processed (as Linux does), its text dropped
    // and acknowledged.
    r.seq = f.gseq + 4000;
    f.input(r, b"x");
    assert!(f.take().is_empty());
    let s = f.poll().remove(0);
    assert_eq!(s.r.ack, f.gseq);
    assert_eq!(f.t.vars().ooo_bytes, 0);
}

#[test]
fn zero_window_probes_from_the_guest() {
    let mut f = Fix::established_with(guest_syn_plain(), small_window_cfg(4000));
    f.data(&pattern(4000));
    let s = f.poll().remove(0);
    assert_eq!(s.r.window, 0);
    // RFC 9293 §3.8.6.1 probe: one byte at RCV.NXT. Its ACK is processed, its data is not
    // accepted, and it gets an ACK showing the window.
    let e = f.data(b"P");
    f.gseq = f.gseq - 1;
    assert!(!e.host_write);
    let s = f.poll().remove(0);
    assert_eq!(s.r.ack, f.gseq);
    assert_eq!(s.r.window, 0);
    assert_eq!(f.host_pending().len(), 4000);
    // Linux's probe: an old sequence number, no data.
    let mut r = f.seg(ACK);
    r.seq = f.gseq - 1;
    f.input(r, b"");
    let s = f.take_one();
    assert_eq!((s.r.ack, s.r.window), (f.gseq, 0));
    // A bare FIN is accepted at a zero window.
    let e = f.send_flags(FIN | ACK, b"");
    assert!(!e.host_shutdown, "data still to be written");
    assert_eq!(f.t.state(), State::CloseWait);
}

#[test]
fn window_reopens_when_the_host_takes_data() {
    let mut f = Fix::established_with(guest_syn_plain(), small_window_cfg(4000));
    f.data(&pattern(4000));
    f.poll();
    // The host takes a little: below the SWS threshold (RFC 1122 §4.2.3.3:
    // min(RCV.BUFF/2, MSS) = 2000 with this buffer), no update.
    let e = f.t.host_wrote(1000, f.now, &mut f.out);
    assert!(!e.host_write);
    assert!(f.take().is_empty());
    assert!(f.poll().is_empty());
    // Now 2500 free: the window had been closed, so the update goes out at once.
    f.t.host_wrote(1500, f.now, &mut f.out);
    let s = f.take_one();
    assert_eq!(s.flags(), ACK);
    assert_eq!(s.r.window, 2500);
    assert_eq!(s.r.ack, f.gseq);
}

#[test]
fn window_right_edge_never_moves_back() {
    let mut f = Fix::established_with(guest_syn_plain(), small_window_cfg(10_000));
    f.data(&pattern(3000));
    let s = f.poll().remove(0);
    let edge = s.r.ack + u32::from(s.r.window);
    assert_eq!(edge, GUEST_ISN + 1 + 10_000);
    // More data without the host taking any: the edge stays put, the window shrinks from
    // the left only.
    f.data(&pattern(1000));
    let s = f.poll().remove(0);
    assert_eq!(s.r.ack + u32::from(s.r.window), edge);
    // The host takes 500 bytes: below the SWS threshold, the edge does not move.
    f.t.host_wrote(500, f.now, &mut f.out);
    f.data(b"x");
    let s = f.poll().remove(0);
    assert_eq!(s.r.ack + u32::from(s.r.window), edge);
}

#[test]
fn scaled_window_math() {
    let mut f = Fix::established();
    // Our side: free room >> 7.
    f.data(&[0; 1000]);
    let s = f.poll().remove(0);
    // The free room, 4 MiB - 1000, in units of 128 (rounded down: the edge moves forward
    // from the 65535 of the SYN-ACK).
    assert_eq!(u32::from(s.r.window), ((4 << 20) - 1000u32) / 128);
    let edge = s.r.ack + u32::from(s.r.window) * 128;
    // 100 more bytes: the edge cannot stay exactly (not a multiple of 128 away), so the
    // window is rounded up rather than moving the edge back.
    f.data(&[0; 100]);
    let s = f.poll().remove(0);
    let edge2 = s.r.ack + u32::from(s.r.window) * 128;
    assert!(edge2 >= edge && edge2 < edge + 128);
    // The guest's side: SEG.WND << 7.
    f.gwin = 3;
    f.ack_now();
    assert_eq!(f.t.vars().snd_wnd, 384);
}

#[test]
fn out_of_order_bound_drops_and_counts() {
    let cfg = TcpConfig {
        ooo_buf: 1000,
        ..TcpConfig::default()
    };
    let mut f = Fix::established_with(guest_syn(), cfg);
    let mut r = f.seg(ACK);
    r.seq = f.gseq + 100;
    f.input(r, &[0; 800]);
    r.seq = f.gseq + 2000;
    f.input(r, &[0; 800]);
    assert_eq!(f.t.stats().ooo_dropped, 1);
    assert_eq!(f.t.vars().ooo_bytes, 800);
    // In-order data is never refused for lack of out-of-order room.
    let e = f.data(&[0; 100]);
    assert!(e.host_write);
    assert_eq!(f.host_pending().len(), 900);
}

// ---------------------------------------------------------------------------------------
// Host → guest data.

#[test]
fn host_data_goes_out_in_mss_segments() {
    let mut f = Fix::established();
    assert_eq!(f.host_send(5000), 5000);
    let segs = f.poll();
    // 1460 - 12 bytes of timestamps option = 1448 per segment (RFC 6691).
    let lens: Vec<usize> = segs.iter().map(|s| s.data.len()).collect();
    assert_eq!(lens, [1448, 1448, 1448, 656]);
    let mut seq = ISS + 1;
    for s in &segs {
        assert_eq!(s.r.seq, seq);
        assert_eq!(s.r.ack, f.gseq);
        assert!(s.flags().contains(ACK));
        seq = seq + s.data.len() as u32;
    }
    assert!(
        segs[3].flags().contains(PSH),
        "PSH on the last of the buffered data"
    );
    assert!(!segs[0].flags().contains(PSH));
    let all: Vec<u8> = segs.iter().flat_map(|s| s.data.clone()).collect();
    assert_eq!(all, pattern(5000));
    assert_eq!(f.our_nxt(), ISS + 5001);
    assert_eq!(
        f.deadline_in(),
        Some(ms(2)),
        "a loss probe timeout: 2 * SRTT, at least 2 ms (RFC 8985 §7.2)"
    );
}

#[test]
fn sending_is_limited_by_the_guest_window() {
    let mut f = Fix::established_plain();
    f.gwin = 3000;
    f.ack_now();
    f.host_send(10_000);
    let segs = f.poll();
    let total: usize = segs.iter().map(|s| s.data.len()).sum();
    // Two full segments; the 80-byte rest of the window is not worth a segment while data
    // is in flight (RFC 9293 §3.8.6.2.1 sender SWS avoidance).
    assert_eq!(total, 2920);
    assert_eq!(segs[0].data.len(), 1460, "no timestamps: the full MSS");
    assert!(f.poll().is_empty());
    // The guest acknowledges and opens the window further.
    f.gwin = 6000;
    f.ack_now();
    let total: usize = f.poll().iter().map(|s| s.data.len()).sum();
    assert_eq!(total, 4 * 1460);
    // With nothing in flight, a partial segment goes (no ACK would come to open more).
    f.gwin = 100;
    f.ack_now();
    let segs = f.poll();
    assert_eq!(segs.len(), 1);
    assert_eq!(segs[0].data.len(), 100);
}

#[test]
fn initial_window_is_ten_segments() {
    let mut f = Fix::established();
    f.gwin = 65_535;
    f.ack_now();
    f.host_send(100_000);
    let segs = f.poll();
    // RFC 6928: min(10 * MSS, max(2 * MSS, 14600)).
    let total: usize = segs.iter().map(|s| s.data.len()).sum();
    assert_eq!(total, 10 * 1448);
    // Slow start: each acknowledged byte opens one more.
    f.ack_now();
    let total: usize = f.poll().iter().map(|s| s.data.len()).sum();
    assert_eq!(total, 20 * 1448);
}

#[test]
fn send_room_and_want_host_read() {
    let mut f = Fix::established();
    // Twice the guest's window (128000 bytes scaled), at least 64 KiB.
    assert_eq!(f.t.send_room(), 256_000);
    assert_eq!(f.host_send(1 << 20), 256_000);
    assert_eq!(f.t.send_room(), 0);
    let [a, b] = f.t.send_spare();
    assert_eq!(a.len() + b.len(), 0);
    let segs = f.poll();
    let sent: usize = segs.iter().map(|s| s.data.len()).sum();
    // The guest acknowledges: room appears, the shard is told to read again.
    let e = f.ack_now();
    assert!(e.want_host_read);
    assert_eq!(f.t.send_room(), sent);
    // Only once.
    assert!(!f.ack_now().want_host_read);
    // Bounded by send_buf.
    let cfg = TcpConfig {
        send_buf: 10_000,
        ..TcpConfig::default()
    };
    let f = Fix::established_with(guest_syn(), cfg);
    assert_eq!(f.t.send_room(), 10_000);
}

#[test]
fn ack_frees_the_send_buffer() {
    let mut f = Fix::established();
    f.host_send(3000);
    f.poll();
    assert_eq!(f.t.vars().send_buffered, 3000);
    f.ack_to(ISS + 1 + 1448);
    let v = f.t.vars();
    assert_eq!(v.snd_una, ISS + 1 + 1448);
    assert_eq!(v.send_buffered, 3000 - 1448);
    assert_eq!(
        f.deadline_in(),
        Some(ms(2)),
        "restarted (RFC 6298 §5.3), as a loss probe timeout (RFC 8985 §7.2)"
    );
    f.ack_now();
    assert_eq!(f.t.vars().send_buffered, 0);
    assert_eq!(f.t.next_deadline(), None, "stopped (RFC 6298 §5.2)");
}

#[test]
fn ack_of_unsent_data_gets_an_ack_and_is_dropped() {
    let mut f = Fix::established();
    f.host_send(100);
    f.poll();
    let mut r = f.seg(ACK);
    r.ack = ISS + 500;
    let e = f.input(r, b"data");
    // RFC 9293 §3.10.7.4: send an ACK, drop the segment (its data too).
    assert!(!e.host_write);
    let s = f.take_one();
    assert_eq!(s.flags(), ACK);
    assert_eq!(s.r.seq, ISS + 101);
    assert_eq!(s.r.ack, f.gseq);
    assert_eq!(f.our_una(), ISS + 1);
    assert!(f.host_pending().is_empty());
}

#[test]
fn old_ack_is_ignored_but_data_accepted() {
    let mut f = Fix::established();
    f.host_send(100);
    f.poll();
    f.ack_now();
    let mut r = f.seg(ACK);
    r.ack = ISS + 50;
    let e = f.input(r, b"hi");
    assert!(e.host_write);
    assert_eq!(f.our_una(), ISS + 101);
    assert_eq!(f.host_pending(), b"hi");
}

#[test]
fn ack_far_below_the_window_gets_a_challenge_ack() {
    let mut f = Fix::established();
    let mut r = f.seg(ACK);
    // RFC 5961 §5.2: SEG.ACK < SND.UNA - MAX.SND.WND.
    r.ack = ISS + 1 - 200_000;
    let e = f.input(r, b"data");
    assert!(!e.host_write);
    let s = f.take_one();
    assert_eq!(s.r.ack, f.gseq);
    assert_eq!(f.t.stats().challenge_acks, 1);
}

#[test]
fn window_update_follows_wl1_wl2() {
    let mut f = Fix::established();
    f.data(b"abc");
    f.data(b"def");
    let v = f.t.vars();
    assert_eq!(v.snd_wl1, f.gseq - 3);
    // An older segment (SEG.SEQ < SND.WL1), here a retransmission of "abc", must not
    // change the window.
    let mut r = f.seg(ACK);
    r.seq = f.gseq - 6;
    r.window = 5;
    f.input(r, b"abc");
    assert_eq!(f.t.vars().snd_wnd, 1000 << 7);
    assert_eq!(f.t.vars().snd_wl1, f.gseq - 3);
    // A newer one does.
    f.gwin = 5;
    f.ack_now();
    let v = f.t.vars();
    assert_eq!(v.snd_wnd, 5 << 7);
    assert_eq!(v.snd_wl1, f.gseq);
}

// ---------------------------------------------------------------------------------------
// Retransmission.

#[test]
fn rto_retransmits_the_first_segment_with_backoff() {
    let mut f = Fix::established();
    f.host_send(3000);
    let first = f.poll();
    assert_eq!(first.len(), 3);
    // RFC 8985 §7.3: the probe timeout comes first and resends the last segment.
    let (_, probe) = f.fire();
    assert_eq!(probe.len(), 1);
    assert_eq!(probe[0].r.seq, first[2].r.seq);
    assert_eq!(f.deadline_in(), Some(ms(50)), "then the RTO (rto_min)");
    let (_, segs) = f.fire();
    // RFC 6298 §5.4: retransmit the earliest unacknowledged segment; cwnd = 1 SMSS.
    assert_eq!(segs.len(), 1);
    assert_eq!(segs[0].r.seq, ISS + 1);
    assert_eq!(segs[0].data, first[0].data);
    let v = f.t.vars();
    assert_eq!(v.cwnd, 1448);
    assert_eq!(v.ssthresh, 2 * 1448, "max(FlightSize / 2, 2 * SMSS)");
    // RFC 6298 §5.5: doubled.
    assert_eq!(f.deadline_in(), Some(ms(100)));
    let (_, segs) = f.fire();
    assert_eq!(segs[0].r.seq, ISS + 1);
    assert_eq!(f.deadline_in(), Some(ms(200)));
    assert_eq!(f.t.stats().rto_expiries, 2);
    // The ACK arrives: slow start resends the rest, which it presumes lost.
    f.ack_to(ISS + 1 + 1448);
    let segs = f.poll();
    let seqs: Vec<u32> = segs.iter().map(|s| s.seq()).collect();
    assert_eq!(seqs, [(ISS + 1 + 1448).0, (ISS + 1 + 2896).0]);
    f.ack_now();
    assert!(!f.t.vars().in_recovery);
}

#[test]
fn gives_up_after_max_retries_with_rst() {
    let cfg = TcpConfig {
        max_retries: 3,
        ..TcpConfig::default()
    };
    let mut f = Fix::established_with(guest_syn(), cfg);
    f.host_send(100);
    f.poll();
    // A loss probe first (RFC 8985 §7.3), then the RTOs.
    let (_, segs) = f.fire();
    assert_eq!(segs[0].data.len(), 100);
    assert_eq!(f.t.loss_stats().tlp_probes, 1);
    for _ in 0..3 {
        let (e, segs) = f.fire();
        assert!(!e.host_close);
        assert_eq!(segs[0].data.len(), 100);
    }
    assert_eq!(f.t.stats().rto_expiries, 3);
    let (e, segs) = f.fire();
    assert!(e.host_close);
    assert_eq!(segs.len(), 1);
    assert_eq!(segs[0].flags(), RST | ACK);
    assert_eq!(segs[0].r.seq, ISS + 101);
    assert!(f.t.is_closed());
}

#[test]
fn rto_is_capped_at_rto_max() {
    let cfg = TcpConfig {
        rto_max: ms(1000),
        ..TcpConfig::default()
    };
    let mut f = Fix::established_with(guest_syn(), cfg);
    f.host_send(10);
    f.poll();
    // The loss probe, then RTOs of 50, 100, 200, 400, 800 ms.
    for _ in 0..6 {
        f.fire();
    }
    assert_eq!(f.deadline_in(), Some(ms(1000)));
}

#[test]
fn fast_retransmit_on_three_duplicate_acks() {
    let mut f = Fix::established_plain();
    f.gwin = 60_000;
    f.ack_now();
    f.host_send(10 * 1460);
    assert_eq!(f.poll().len(), 10);
    let una = ISS + 1;
    for _ in 0..2 {
        f.ack_to(una);
        assert!(f.poll().is_empty());
    }
    // RFC 5681 §3.2: the third duplicate ACK retransmits the missing segment.
    f.ack_to(una);
    let segs = f.poll();
    assert_eq!(segs.len(), 1);
    assert_eq!(segs[0].r.seq, una);
    assert_eq!(segs[0].data.len(), 1460);
    let v = f.t.vars();
    assert!(v.in_recovery);
    assert_eq!(v.ssthresh, 5 * 1460);
    assert_eq!(f.t.stats().fast_retransmits, 1);
    assert_eq!(f.t.stats().dup_acks, 3);
    // A partial ACK (RFC 6582): the next segment is missing too.
    f.ack_to(una + 1460);
    let segs = f.poll();
    assert_eq!(segs[0].r.seq, una + 1460);
    // The full ACK ends recovery.
    f.ack_now();
    assert!(!f.t.vars().in_recovery);
}

#[test]
fn duplicate_acks_need_an_unchanged_window_and_no_data() {
    let mut f = Fix::established_plain();
    f.gwin = 60_000;
    f.ack_now();
    f.host_send(5 * 1460);
    f.poll();
    let una = ISS + 1;
    f.gwin = 59_000;
    f.ack_to(una); // window update, not a duplicate
    f.data(b"x"); // carries data, not a duplicate
    assert_eq!(f.t.stats().dup_acks, 0);
}

#[test]
fn sack_recovery_retransmits_only_the_holes() {
    let mut f = Fix::established();
    f.gwin = 1000;
    f.ack_now();
    // Grow cwnd first so that 20 segments go out at once.
    f.host_send(20 * 1448);
    f.poll();
    f.ack_now();
    f.poll();
    f.ack_now();
    f.host_send(20 * 1448);
    let segs = f.poll();
    assert_eq!(segs.len(), 20);
    let s0 = segs[0].r.seq;
    let seg = |k: u32| s0 + k * 1448;
    // The guest lost segments 2 and 5 and 6; it SACKs the rest.
    f.sack(seg(2), &[(seg(3), seg(5))]);
    f.sack(seg(2), &[(seg(7), seg(20)), (seg(3), seg(5))]);
    let rtx = f.poll();
    let seqs: Vec<u32> = rtx.iter().map(|s| s.seq()).collect();
    // RFC 6675: IsLost for all three; nothing SACKed is resent, no new data yet.
    assert_eq!(seqs, [seg(2).0, seg(5).0, seg(6).0]);
    assert!(rtx.iter().all(|s| s.data.len() == 1448));
    assert!(f.t.vars().in_recovery);
    assert_eq!(f.t.vars().sacked_bytes, 15 * 1448);
    // The holes arrive: all acknowledged, recovery over.
    f.ack_to(seg(20));
    assert!(!f.t.vars().in_recovery);
    assert_eq!(f.t.vars().sacked_bytes, 0);
}

#[test]
fn sack_blocks_outside_the_window_are_ignored() {
    let mut f = Fix::established();
    f.host_send(3000);
    f.poll();
    let una = ISS + 1;
    f.sack(
        una,
        &[
            (una - 5000, una - 100),      // below SND.UNA (a D-SACK)
            (una + 5000, una + 9000),     // beyond SND.NXT
            (una + 2000, una + 1000),     // inverted
            (SeqNumber(0), SeqNumber(1)), // wild
        ],
    );
    assert_eq!(f.t.vars().sacked_bytes, 0);
    // Clipped to SND.NXT.
    f.sack(una, &[(una + 2000, una + 9000)]);
    assert_eq!(f.t.vars().sacked_bytes, 1000);
}

#[test]
fn rto_keeps_sacked_data_marked() {
    let mut f = Fix::established();
    f.host_send(5 * 1448);
    let segs = f.poll();
    assert_eq!(segs.len(), 5);
    let s = |k: u32| ISS + 1 + k * 1448;
    // Segments 1 and 3 SACKed a millisecond later: 0 and 2, sent with them, are lost once
    // RACK's reordering window (no reordering seen, fewer than DupThresh SACKed: min_RTT
    // / 4) has passed.
    f.tick(1);
    f.sack(s(0), &[(s(1), s(2)), (s(3), s(4))]);
    assert!(f.poll().is_empty());
    assert_eq!(f.deadline_in(), Some(Duration::from_micros(250)));
    let (_, rtx) = f.fire();
    let seqs: Vec<u32> = rtx.iter().map(|x| x.seq()).collect();
    assert_eq!(seqs, [s(0).0], "PRR: one segment until ACKs come");
    assert!(f.t.vars().in_recovery);
    // Nothing comes back: the RTO resends the first segment.
    let (_, rtx) = f.fire();
    assert_eq!(f.t.stats().rto_expiries, 1);
    assert_eq!(rtx.len(), 1);
    assert_eq!(rtx[0].r.seq, s(0));
    // Slow start continues with the holes only: 2 and 4, never 1 or 3.
    f.sack(s(2), &[(s(3), s(4))]);
    let seqs: Vec<u32> = f.poll().iter().map(|x| x.seq()).collect();
    assert_eq!(seqs, [s(2).0, s(4).0]);
}

// ---------------------------------------------------------------------------------------
// RACK-TLP loss detection (RFC 8985).

/// Established with cwnd grown past 30 segments (and every RTT sample 1 ms).
fn grown() -> Fix {
    let mut f = Fix::established();
    f.host_send(20 * 1448);
    f.poll();
    f.tick(1);
    f.ack_now();
    f.poll();
    f.tick(1);
    f.ack_now();
    assert!(f.t.vars().cwnd >= 30 * 1448);
    f
}

#[test]
fn rack_detects_a_lost_retransmission_without_the_rto() {
    let mut f = grown();
    f.host_send(20 * 1448);
    let segs = f.poll();
    assert_eq!(segs.len(), 20);
    let s0 = segs[0].r.seq;
    let seg = |k: u32| s0 + k * 1448;
    // Segment 2 is lost; the guest SACKs 3..10 a millisecond later: more than DupThresh
    // SACKed and no reordering seen, so RACK marks 2 lost at once.
    f.tick(1);
    f.sack(seg(2), &[(seg(3), seg(10))]);
    let rtx = f.poll();
    assert_eq!(rtx[0].r.seq, seg(2));
    assert!(f.t.vars().in_recovery);
    // New data follows (PRR lets some out as ACKs come).
    f.host_send(10 * 1448);
    f.tick(1);
    f.sack(seg(2), &[(seg(3), seg(14))]);
    let after: Vec<u32> = f.poll().iter().map(|s| s.seq()).collect();
    assert!(
        after.contains(&seg(20).0),
        "new data after the retransmission: {after:?}"
    );
    // The retransmission of 2 is lost too. Segments sent after it arrive and are SACKed:
    // RACK marks the retransmission lost (it was sent before them) and resends it, where
    // RFC 6675 alone would wait for the RTO.
    f.tick(1);
    f.sack(seg(2), &[(seg(3), seg(21))]);
    let rtx = f.poll();
    assert_eq!(rtx[0].r.seq, seg(2), "{rtx:?}");
    assert_eq!(rtx[0].data.len(), 1448);
    let st = f.t.stats();
    assert_eq!(st.rto_expiries, 0);
    assert_eq!(f.t.loss_stats().lost_retransmits, 1);
    f.ack_now();
    assert!(!f.t.vars().in_recovery);
}

#[test]
fn rack_allows_for_reordering_once_seen() {
    let mut f = grown();
    f.host_send(20 * 1448);
    let segs = f.poll();
    let s0 = segs[0].r.seq;
    let seg = |k: u32| s0 + k * 1448;
    // Segment 1 is SACKed first, then 0 arrives: the path reorders (RFC 8985 §6.2 Step
    // 3). Meanwhile RACK only armed its timer: one segment SACKed is not enough.
    f.tick(1);
    f.sack(seg(0), &[(seg(1), seg(2))]);
    assert!(f.poll().is_empty());
    assert!(!f.t.vars().reordering_seen);
    f.ack_to(seg(2));
    assert!(f.t.vars().reordering_seen);
    assert_eq!(f.t.stats().retransmits, 0);
    // Now 2 is missing while four later segments are SACKed: without reordering seen,
    // that would be a loss at once (DupThresh); with it, RACK waits min_RTT / 4.
    f.sack(seg(2), &[(seg(3), seg(7))]);
    assert!(f.poll().is_empty(), "within the reordering window");
    let wait = f.deadline_in().unwrap();
    assert!(wait > Duration::ZERO && wait <= ms(1), "{wait:?}");
    // 2 arrives within the window: nothing was resent, no recovery.
    f.ack_to(seg(7));
    assert_eq!(f.t.stats().retransmits, 0);
    assert!(!f.t.vars().in_recovery);
    // 7 is missing and stays missing: once the window passes, the reordering timer marks
    // it lost and it is resent.
    f.sack(seg(7), &[(seg(8), seg(12))]);
    assert!(f.poll().is_empty());
    let (_, rtx) = f.fire();
    assert_eq!(rtx[0].r.seq, seg(7));
    assert_eq!(f.t.loss_stats().reo_timeouts, 1);
    assert!(f.t.vars().in_recovery);
}

#[test]
fn tlp_repairs_a_tail_loss_without_the_rto() {
    let mut f = Fix::established();
    f.host_send(5 * 1448);
    let segs = f.poll();
    let s = |k: u32| ISS + 1 + k * 1448;
    // The first three arrive; the last two are lost and nothing follows them.
    f.tick(1);
    f.ack_to(s(3));
    assert!(f.poll().is_empty());
    // RFC 8985 §7.2: the probe timeout, 2 * SRTT (at least 2 ms), not the RTO.
    assert_eq!(f.deadline_in(), Some(ms(2)));
    let (_, probe) = f.fire();
    assert_eq!(probe.len(), 1, "one probe: the last segment again");
    assert_eq!(probe[0].r.seq, s(4));
    assert_eq!(probe[0].data, segs[4].data);
    assert_eq!(f.t.loss_stats().tlp_probes, 1);
    // The probe is SACKed: 3, sent before it, is lost (RACK) and repaired at once.
    f.tick(1);
    f.sack(s(3), &[(s(4), s(5))]);
    let rtx = f.poll();
    assert_eq!(rtx.len(), 1);
    assert_eq!(rtx[0].r.seq, s(3));
    f.ack_now();
    assert_eq!(f.t.stats().rto_expiries, 0);
    assert!(!f.t.vars().in_recovery);
}

#[test]
fn tlp_of_a_single_segment_waits_for_the_delayed_ack() {
    let mut f = Fix::established();
    f.host_send(100);
    f.poll();
    // One segment in flight: the guest may hold its ACK up to 40 ms.
    assert_eq!(f.deadline_in(), Some(ms(42)));
    let cwnd = f.t.vars().cwnd;
    let (_, probe) = f.fire();
    assert_eq!(probe.len(), 1);
    // Both the original and the probe arrived: the guest D-SACKs the probe. No loss, no
    // reduction (RFC 8985 §7.4).
    let mut r = f.seg(ACK);
    let mut sb = SackBlocks::new();
    sb.push(SackBlock {
        left: ISS + 1,
        right: ISS + 101,
    });
    r.sack_blocks = sb;
    f.input(r, b"");
    assert_eq!(
        f.t.vars().cwnd,
        cwnd + 100,
        "grown by what was acknowledged"
    );
    assert_eq!(f.t.loss_stats().tlp_recoveries, 0);
    assert_eq!(f.t.next_deadline(), None);
}

#[test]
fn tlp_that_repairs_a_loss_reduces_cwnd_once() {
    let mut f = Fix::established();
    f.host_send(3 * 1448);
    f.poll();
    let s = |k: u32| ISS + 1 + k * 1448;
    f.tick(1);
    f.ack_to(s(2));
    let cwnd = f.t.vars().cwnd;
    // The last segment was lost: the probe repairs it, and the ACK covers it without a
    // D-SACK.
    let (_, probe) = f.fire();
    assert_eq!(probe[0].r.seq, s(2));
    f.ack_now();
    // More data, acknowledged beyond the probe: that was a loss (RFC 8985 §7.4.2).
    f.host_send(1448);
    f.poll();
    f.ack_now();
    assert_eq!(f.t.loss_stats().tlp_recoveries, 1);
    assert!(f.t.vars().cwnd < cwnd + 2 * 1448, "reduced");
    assert_eq!(f.t.stats().rto_expiries, 0);
}

#[test]
fn tlp_sends_new_data_when_it_can() {
    let cfg = TcpConfig::default();
    let mut f = Fix::established_with(guest_syn(), cfg);
    // Ten segments fill the initial window; two more wait for cwnd.
    f.host_send(12 * 1448);
    assert_eq!(f.poll().len(), 10);
    let (_, probe) = f.fire();
    assert_eq!(probe.len(), 1);
    assert_eq!(
        probe[0].r.seq,
        ISS + 1 + 10 * 1448,
        "the first unsent segment"
    );
    assert_eq!(f.t.stats().retransmits, 0);
}

#[test]
fn dsack_undoes_a_spurious_fast_recovery() {
    let mut f = grown();
    f.host_send(20 * 1448);
    let segs = f.poll();
    let s0 = segs[0].r.seq;
    let seg = |k: u32| s0 + k * 1448;
    let cwnd = f.t.vars().cwnd;
    // 0 is late, not lost: four later segments are SACKed first, RACK (no reordering
    // seen yet) resends it, recovery reduces cwnd.
    f.tick(1);
    f.sack(seg(0), &[(seg(1), seg(5))]);
    let rtx = f.poll();
    assert_eq!(rtx[0].r.seq, seg(0));
    assert!(f.t.vars().cwnd < cwnd);
    // The original arrives, then the retransmission: the guest reports it with a D-SACK
    // (RFC 2883). Every retransmission of the episode was a duplicate: undone.
    f.ack_to(seg(5));
    let mut r = f.seg(ACK);
    r.ack = seg(5);
    let mut sb = SackBlocks::new();
    sb.push(SackBlock {
        left: seg(0),
        right: seg(1),
    });
    r.sack_blocks = sb;
    f.input(r, b"");
    let v = f.t.vars();
    assert!(!v.in_recovery);
    assert!(v.cwnd >= cwnd, "{} < {cwnd}", v.cwnd);
    assert!(v.reordering_seen);
    assert_eq!(f.t.stats().spurious_retransmits, 1);
    assert_eq!(f.t.loss_stats().dsacks, 1);
}

#[test]
fn network_duplicate_dsack_undoes_nothing() {
    let mut f = grown();
    f.host_send(20 * 1448);
    let segs = f.poll();
    let s0 = segs[0].r.seq;
    let seg = |k: u32| s0 + k * 1448;
    f.tick(1);
    f.sack(seg(0), &[(seg(1), seg(5))]);
    f.poll();
    let reduced = f.t.vars().cwnd;
    // A D-SACK for segment 3, which was never retransmitted (the link duplicated it).
    let mut r = f.seg(ACK);
    r.ack = seg(0);
    let mut sb = SackBlocks::new();
    sb.push(SackBlock {
        left: seg(3),
        right: seg(4),
    });
    sb.push(SackBlock {
        left: seg(1),
        right: seg(5),
    });
    r.sack_blocks = sb;
    f.input(r, b"");
    assert!(f.t.vars().in_recovery);
    assert!(f.t.vars().cwnd <= reduced + 1448);
    assert_eq!(f.t.stats().spurious_retransmits, 0);
}

#[test]
fn spurious_fast_retransmit_is_undone() {
    let mut f = Fix::established();
    f.host_send(20 * 1448);
    f.poll();
    f.ack_now();
    f.host_send(20 * 1448);
    let segs = f.poll();
    let s0 = segs[0].r.seq;
    let cwnd_before = f.t.vars().cwnd;
    let tsval_orig = segs[0].r.timestamps.unwrap().tsval;
    f.tick(5);
    f.sack(s0, &[(s0 + 1448, s0 + 5 * 1448)]);
    let rtx = f.poll();
    assert_eq!(rtx[0].r.seq, s0);
    assert!(f.t.vars().cwnd < cwnd_before);
    // The original was only late: the ACK echoes its (older) timestamp (RFC 3522).
    let mut r = f.seg(ACK);
    r.ack = s0 + 5 * 1448;
    r.timestamps = Some(TcpTimestamps {
        tsval: f.gts,
        tsecr: tsval_orig,
    });
    f.input(r, b"");
    let v = f.t.vars();
    assert!(!v.in_recovery);
    // Restored, then grown by this ACK in slow start.
    assert_eq!(v.cwnd, cwnd_before + 5 * 1448);
    assert_eq!(f.t.stats().spurious_retransmits, 1);
}

#[test]
fn rtt_from_timestamps_and_karn_without() {
    let mut f = Fix::established();
    f.host_send(100);
    f.poll();
    f.tick(30);
    f.ack_now();
    // First sample 1 ms (handshake), then 30 ms.
    let srtt = f.t.vars().srtt.unwrap();
    assert_eq!(srtt, ms(1) * 7 / 8 + ms(30) / 8);

    // Without timestamps: a retransmitted segment gives no sample (Karn).
    let mut f = Fix::established_plain();
    let before = f.t.vars().srtt;
    f.host_send(100);
    f.poll();
    f.fire();
    f.tick(10);
    f.ack_now();
    assert_eq!(f.t.vars().srtt, before);
    // A fresh segment does.
    f.host_send(100);
    f.poll();
    f.tick(10);
    f.ack_now();
    assert_ne!(f.t.vars().srtt, before);
}

// ---------------------------------------------------------------------------------------
// Zero window from the guest: persist timer and probes.

#[test]
fn zero_window_probing() {
    let mut f = Fix::established();
    f.gwin = 0;
    f.ack_now();
    f.host_send(1000);
    assert!(f.poll().is_empty(), "nothing fits a zero window");
    assert_eq!(f.deadline_in(), Some(ms(50)), "persist timer (the RTO)");
    // RFC 9293 §3.8.6.1: a one-byte probe.
    let (_, segs) = f.fire();
    assert_eq!(segs.len(), 1);
    assert_eq!(segs[0].data, pattern(1));
    assert_eq!(segs[0].r.seq, ISS + 1);
    assert_eq!(f.t.stats().window_probes, 1);
    // The guest drops it and acknowledges with a zero window; probing backs off, many
    // times more than max_retries, without giving up while the guest answers.
    let mut waits = vec![];
    for _ in 0..20 {
        f.ack_to(ISS + 1);
        waits.push(f.deadline_in().unwrap());
        let (e, segs) = f.fire();
        assert!(!e.host_close);
        assert_eq!(segs.len(), 1);
        assert_eq!(segs[0].r.seq, ISS + 1);
        assert_eq!(segs[0].data.len(), 1);
    }
    assert!(waits[1] > waits[0]);
    assert_eq!(*waits.last().unwrap(), ms(60_000), "backoff capped");
    assert_eq!(f.t.state(), State::Established);
    // The window opens: the probe byte and the rest go out at once.
    f.gwin = 1000;
    f.ack_to(ISS + 1);
    let segs = f.poll();
    let all: Vec<u8> = segs.iter().flat_map(|s| s.data.clone()).collect();
    assert_eq!(segs[0].r.seq, ISS + 1);
    assert_eq!(all, pattern(1000));
    f.ack_now();
    assert_eq!(f.t.vars().send_buffered, 0);
}

#[test]
fn accepted_probe_byte_counts() {
    let mut f = Fix::established();
    f.gwin = 0;
    f.ack_now();
    f.host_send(10);
    f.poll();
    let (_, segs) = f.fire();
    assert_eq!(segs[0].data.len(), 1);
    // The guest took the byte and opened its window.
    f.gwin = 100;
    f.ack_now();
    let segs = f.poll();
    assert_eq!(segs[0].r.seq, ISS + 2);
    assert_eq!(segs[0].data, pattern(10)[1..].to_vec());
}

// ---------------------------------------------------------------------------------------
// RST and SYN in synchronized states (RFC 5961).

#[test]
fn rst_with_exact_sequence_resets() {
    let mut f = Fix::established();
    f.data(b"unwritten");
    let r = f.seg(RST);
    let e = f.input(r, b"");
    assert!(e.host_close);
    assert!(!e.host_shutdown);
    assert_eq!(f.t.state(), State::Closed);
    assert!(f.t.is_closed());
    assert!(f.take().is_empty(), "no reply to a RST");
    assert_eq!(f.t.stats().resets_in, 1);
    assert!(f.host_pending().is_empty());
}

#[test]
fn rst_in_window_but_not_exact_gets_a_challenge_ack() {
    let mut f = Fix::established();
    let mut r = f.seg(RST);
    r.seq = f.gseq + 100;
    let e = f.input(r, b"");
    assert!(!e.host_close);
    let s = f.take_one();
    assert_eq!(s.flags(), ACK);
    assert_eq!(s.r.seq, ISS + 1);
    assert_eq!(s.r.ack, f.gseq);
    assert_eq!(f.t.state(), State::Established);
    assert_eq!(f.t.stats().challenge_acks, 1);
}

#[test]
fn rst_outside_the_window_is_dropped_silently() {
    let mut f = Fix::established();
    for seq in [f.gseq - 1, f.gseq + (4 << 20) + 10] {
        let mut r = f.seg(RST);
        r.seq = seq;
        assert_eq!(f.input(r, b""), Effects::default());
        assert!(f.take().is_empty());
    }
    assert_eq!(f.t.state(), State::Established);
}

#[test]
fn syn_in_established_gets_a_challenge_ack() {
    let mut f = Fix::established();
    for seq in [f.gseq, f.gseq + 1000] {
        let mut r = guest_syn();
        r.seq = seq;
        r.timestamps = Some(TcpTimestamps {
            tsval: f.gts,
            tsecr: 0,
        });
        f.input(r, b"");
        let s = f.take_one();
        assert_eq!(s.flags(), ACK);
        assert_eq!(s.r.ack, f.gseq);
    }
    assert_eq!(f.t.state(), State::Established);
    assert_eq!(f.t.stats().challenge_acks, 2);
}

#[test]
fn rst_while_established_with_window_zero() {
    let mut f = Fix::established_with(guest_syn_plain(), small_window_cfg(1000));
    f.data(&pattern(1000));
    assert_eq!(f.t.vars().rcv_wnd, 0);
    let r = f.seg(RST);
    assert!(f.input(r, b"").host_close);
}

// ---------------------------------------------------------------------------------------
// Timestamps and PAWS (RFC 7323).

#[test]
fn timestamps_echo_and_clock() {
    let mut f = Fix::established();
    f.gts = 77_777;
    f.data(b"a");
    let s = f.poll().remove(0);
    let ts = s.r.timestamps.unwrap();
    assert_eq!(ts.tsecr, 77_777);
    let t1 = ts.tsval;
    f.tick(250);
    f.data(b"b");
    let ts = f.poll().remove(0).r.timestamps.unwrap();
    assert_eq!(ts.tsval.wrapping_sub(t1), 250, "a millisecond clock");
    assert_eq!(ts.tsecr, 77_777 + 250);
}

#[test]
fn paws_rejects_old_timestamps() {
    let mut f = Fix::established();
    f.gts = 50_000;
    f.data(b"new");
    f.poll();
    let mut r = f.seg(ACK);
    r.timestamps = Some(TcpTimestamps {
        tsval: 49_000,
        tsecr: 0,
    });
    let e = f.input(r, b"old");
    assert!(!e.host_write);
    let s = f.take_one();
    assert_eq!(s.flags(), ACK);
    assert_eq!(s.r.ack, f.gseq);
    assert_eq!(s.r.timestamps.unwrap().tsecr, 50_000);
    assert_eq!(f.t.stats().paws_rejected, 1);
    // One tick older is tolerated (segments of the same millisecond reordered).
    r.timestamps = Some(TcpTimestamps {
        tsval: 49_999,
        tsecr: 0,
    });
    assert!(f.input(r, b"ok!").host_write);
    // RSTs are not subject to PAWS.
    let mut r = f.seg(RST);
    r.seq = f.gseq + 3;
    r.timestamps = Some(TcpTimestamps { tsval: 1, tsecr: 0 });
    assert!(f.input(r, b"").host_close);
}

#[test]
fn ts_recent_follows_the_left_edge() {
    let mut f = Fix::established();
    f.gts = 10_000;
    f.data(b"a");
    f.poll();
    assert_eq!(f.t.vars().ts_recent, 10_000);
    // An out-of-order segment does not update TS.Recent (RFC 7323 §4.3: SEG.SEQ >
    // Last.ACK.sent).
    let mut r = f.seg(ACK);
    r.seq = f.gseq + 10;
    r.timestamps = Some(TcpTimestamps {
        tsval: 20_000,
        tsecr: 0,
    });
    f.input(r, b"x");
    assert_eq!(f.t.vars().ts_recent, 10_000);
    // The segment at the left edge does.
    r.seq = f.gseq;
    r.timestamps = Some(TcpTimestamps {
        tsval: 15_000,
        tsecr: 0,
    });
    f.input(r, b"0123456789");
    assert_eq!(f.t.vars().ts_recent, 15_000);
}

// ---------------------------------------------------------------------------------------
// Closing, both directions independently.

#[test]
fn guest_fin_shuts_the_host_write_side() {
    let mut f = Fix::established();
    f.data(b"last words");
    let e = f.send_flags(FIN | ACK, b"");
    assert_eq!(f.t.state(), State::CloseWait);
    // Data still to be written: the shutdown waits for it.
    assert!(!e.host_shutdown);
    let s = f.poll().remove(0);
    assert_eq!(s.r.ack, f.gseq, "the FIN is acknowledged");
    let (data, e) = f.host_write_all();
    assert_eq!(data, b"last words");
    assert!(e.host_shutdown);
    assert!(!e.host_close);
    // The other direction still works: host data goes out in CLOSE-WAIT.
    f.host_send(100);
    let segs = f.poll();
    assert_eq!(segs[0].data.len(), 100);
}

#[test]
fn fin_with_data_in_one_segment() {
    let mut f = Fix::established();
    let e = f.send_flags(FIN | ACK | PSH, b"bye");
    assert!(e.host_write);
    assert!(!e.host_shutdown);
    assert_eq!(f.rcv_nxt(), f.gseq);
    let (_, e) = f.host_write_all();
    assert!(e.host_shutdown);
}

#[test]
fn out_of_order_fin_waits_for_the_gap() {
    let mut f = Fix::established();
    let base = f.gseq;
    let mut r = f.seg(FIN | ACK);
    r.seq = base + 5;
    let e = f.input(r, b"world");
    assert!(!e.host_shutdown);
    assert_eq!(f.t.state(), State::Established);
    r = f.seg(ACK);
    r.seq = base;
    f.input(r, b"hello");
    assert_eq!(f.t.state(), State::CloseWait);
    assert_eq!(f.rcv_nxt(), base + 11);
    let (data, e) = f.host_write_all();
    assert_eq!(data, b"helloworld");
    assert!(e.host_shutdown);
}

#[test]
fn passive_close_through_last_ack() {
    let mut f = Fix::close_wait();
    f.host_send(10);
    f.t.host_eof();
    assert_eq!(f.t.state(), State::LastAck);
    assert_eq!(f.t.send_room(), 0);
    let segs = f.poll();
    // The FIN rides on the last data.
    assert_eq!(segs.len(), 1);
    assert_eq!(segs[0].flags(), ACK | PSH | FIN);
    assert_eq!(segs[0].data.len(), 10);
    assert_eq!(f.our_nxt(), ISS + 12);
    let e = f.ack_now();
    assert!(e.host_close);
    assert_eq!(f.t.state(), State::Closed);
    assert!(f.t.is_closed());
}

#[test]
fn active_close_through_fin_wait_and_time_wait() {
    let mut f = Fix::fin_wait1();
    assert_eq!(f.our_nxt(), ISS + 2);
    f.ack_now();
    assert_eq!(f.t.state(), State::FinWait2);
    // Half-close: the guest keeps sending.
    let e = f.data(b"more");
    assert!(e.host_write);
    f.host_write_all();
    let e = f.send_flags(FIN | ACK, b"");
    assert_eq!(f.t.state(), State::TimeWait);
    assert!(e.host_shutdown && e.host_close);
    let s = f.poll().remove(0);
    assert_eq!(s.r.ack, f.gseq);
    assert!(!f.t.is_closed());
    assert_eq!(f.deadline_in(), Some(ms(2000)));
    f.fire();
    assert_eq!(f.t.state(), State::Closed);
    assert!(f.t.is_closed());
}

#[test]
fn time_wait_waits_for_unwritten_data() {
    let mut f = Fix::fin_wait2();
    f.data(b"pending");
    let e = f.send_flags(FIN | ACK, b"");
    assert_eq!(f.t.state(), State::TimeWait);
    assert!(!e.host_close && !e.host_shutdown);
    f.poll();
    f.fire();
    assert_eq!(f.t.state(), State::Closed);
    assert!(!f.t.is_closed(), "guest data not yet written");
    let (data, e) = f.host_write_all();
    assert_eq!(data, b"pending");
    assert!(e.host_shutdown && e.host_close);
    assert!(f.t.is_closed());
}

#[test]
fn simultaneous_close_through_closing() {
    let mut f = Fix::closing();
    assert_eq!(f.t.state(), State::Closing);
    let e = f.ack_now();
    assert_eq!(f.t.state(), State::TimeWait);
    assert!(e.host_close);
}

#[test]
fn fin_retransmitted_in_last_ack() {
    let mut f = Fix::last_ack();
    let (_, segs) = f.fire();
    assert_eq!(segs.len(), 1);
    assert_eq!(segs[0].flags(), ACK | FIN);
    assert_eq!(segs[0].r.seq, ISS + 1);
    let e = f.ack_now();
    assert!(e.host_close);
    assert!(f.t.is_closed());
}

#[test]
fn time_wait_acks_a_retransmitted_fin_and_restarts() {
    let mut f = Fix::time_wait();
    f.tick(1500);
    let mut r = f.seg(FIN | ACK);
    r.seq = f.gseq - 1;
    f.input(r, b"");
    let s = f.poll().remove(0);
    assert_eq!(s.r.ack, f.gseq);
    assert_eq!(f.deadline_in(), Some(ms(2000)), "restarted");
}

#[test]
fn host_eof_before_the_handshake_completes() {
    let mut f = Fix::syn_received();
    f.host_send(5);
    f.t.host_eof();
    assert_eq!(f.t.state(), State::SynReceived);
    assert!(f.poll().is_empty());
    f.ack_now();
    assert_eq!(f.t.state(), State::FinWait1);
    let segs = f.poll();
    assert_eq!(segs.len(), 1);
    assert_eq!(segs[0].flags(), ACK | PSH | FIN);
    assert_eq!(segs[0].data, pattern(5));
}

#[test]
fn fin_waits_for_the_data_before_it() {
    let mut f = Fix::established_plain();
    f.gwin = 2000;
    f.ack_now();
    f.host_send(3000);
    f.t.host_eof();
    let segs = f.poll();
    assert!(segs.iter().all(|s| !s.flags().contains(FIN)));
    f.ack_now();
    let segs = f.poll();
    assert!(segs.last().unwrap().flags().contains(FIN));
    assert_eq!(f.our_nxt(), ISS + 3002);
}

#[test]
fn host_reset_sends_rst() {
    let mut f = Fix::established();
    f.host_send(100);
    f.poll();
    f.t.host_reset(&mut f.out);
    let s = f.take_one();
    assert_eq!(s.flags(), RST | ACK);
    assert_eq!(s.r.seq, ISS + 101);
    assert_eq!(s.r.ack, f.gseq);
    assert!(f.t.is_closed());
    assert_eq!(f.t.next_deadline(), None);
    // Nothing more: a closed Tcb ignores input.
    let e = f.data(b"late");
    assert_eq!(e, Effects::default());
    assert!(f.poll().is_empty());
}

#[test]
fn reset_for_segments_without_a_connection() {
    let seg = TcpRepr {
        src_port: GUEST_PORT,
        dst_port: REMOTE_PORT,
        seq: SeqNumber(100),
        ack: SeqNumber(777),
        flags: ACK,
        ..TcpRepr::default()
    };
    let r = reset_for_unknown(&seg, 10).unwrap();
    assert_eq!((r.flags, r.seq), (RST, SeqNumber(777)));
    assert_eq!((r.src_port, r.dst_port), (REMOTE_PORT, GUEST_PORT));
    let seg = TcpRepr { flags: SYN, ..seg };
    let r = reset_for_unknown(&seg, 0).unwrap();
    assert_eq!(
        (r.flags, r.seq, r.ack),
        (RST | ACK, SeqNumber(0), SeqNumber(101))
    );
    let seg = TcpRepr { flags: FIN, ..seg };
    assert_eq!(reset_for_unknown(&seg, 5).unwrap().ack, SeqNumber(106));
    let seg = TcpRepr { flags: RST, ..seg };
    assert_eq!(reset_for_unknown(&seg, 0), None);
}

#[test]
fn time_wait_reusable_by_a_newer_syn() {
    let f = Fix::time_wait();
    let mut syn = guest_syn();
    syn.seq = f.gseq + 1000;
    assert!(f.t.reusable_by(&syn));
    syn.seq = f.gseq - 1000;
    assert!(!f.t.reusable_by(&syn));
    assert!(!Fix::established().t.reusable_by(&guest_syn()));
}

// ---------------------------------------------------------------------------------------
// Sequence numbers wrap.

#[test]
fn data_across_the_sequence_wrap() {
    let syn = TcpRepr {
        seq: SeqNumber(u32::MAX - 1000),
        ..guest_syn()
    };
    let mut f = Fix::established_with(syn, TcpConfig::default());
    for _ in 0..3 {
        f.data(&pattern(1000));
    }
    assert_eq!(f.host_pending().len(), 3000);
    assert_eq!(f.rcv_nxt(), SeqNumber(u32::MAX - 1000) + 3001);
    let s = f.poll().remove(0);
    assert_eq!(s.r.ack, SeqNumber(2000));
}

#[test]
fn retransmitted_fin_in_close_wait_and_last_ack_is_acknowledged() {
    for mut f in [Fix::close_wait(), Fix::last_ack()] {
        let mut r = f.seg(FIN | ACK);
        r.seq = f.gseq - 1;
        r.ack = f.our_una();
        f.input(r, b"");
        let s = f.poll().remove(0);
        assert_eq!(s.r.ack, f.gseq);
    }
}

#[test]
fn reordered_duplicate_ack_is_exempt_from_paws() {
    let mut f = Fix::established();
    f.host_send(5 * 1448);
    f.poll();
    f.gts = 20_000;
    f.ack_to(ISS + 1);
    // A duplicate ACK with SACK information, overtaken by the one above (older TSval by
    // more than the PAWS window): Linux's tcp_disordered_ack() lets it through.
    let mut r = f.seg(ACK);
    r.ack = ISS + 1;
    r.timestamps = Some(TcpTimestamps {
        tsval: 19_990,
        tsecr: f.our_tsval,
    });
    let mut sb = SackBlocks::new();
    sb.push(SackBlock {
        left: ISS + 1 + 1448,
        right: ISS + 1 + 2896,
    });
    r.sack_blocks = sb;
    f.input(r, b"");
    assert_eq!(f.t.stats().paws_rejected, 0);
    assert_eq!(f.t.vars().sacked_bytes, 1448);
    assert_eq!(f.t.vars().ts_recent, 20_000, "not recorded");
    // With data it is not exempt.
    let mut r = f.seg(ACK);
    r.timestamps = Some(TcpTimestamps {
        tsval: 19_990,
        tsecr: 0,
    });
    f.input(r, b"data");
    assert_eq!(f.t.stats().paws_rejected, 1);
}

#[test]
fn rtt_not_sampled_from_echoes_older_than_the_rto() {
    let mut f = Fix::established();
    f.host_send(3 * 1448);
    let segs = f.poll();
    let old_tsval = segs[0].r.timestamps.unwrap().tsval;
    let srtt = f.t.vars().srtt;
    // The loss probe and then the RTO fire; the guest's ACK echoes the original
    // transmission (its ACK of it was lost), so the sample would measure the timeout:
    // skipped.
    f.fire();
    f.fire();
    assert_eq!(f.t.stats().rto_expiries, 1);
    f.tick(5);
    let mut r = f.seg(ACK);
    r.timestamps = Some(TcpTimestamps {
        tsval: f.gts,
        tsecr: old_tsval,
    });
    f.input(r, b"");
    assert_eq!(f.t.vars().srtt, srtt);
    assert_eq!(f.t.vars().snd_una, f.our_nxt());
}

#[test]
fn sack_reneging_resets_the_scoreboard() {
    let mut f = Fix::established();
    f.host_send(4 * 1448);
    f.poll();
    let s = |k: u32| ISS + 1 + k * 1448;
    f.sack(s(0), &[(s(1), s(2))]);
    assert_eq!(f.t.vars().sacked_bytes, 1448);
    // The guest acknowledges up to the SACKed block but not through it: it dropped it
    // (RFC 2018 §8).
    f.ack_to(s(1));
    assert_eq!(f.t.vars().sacked_bytes, 0);
    assert_eq!(f.t.stats().sack_reneging, 1);
    // The RTO resends from SND.UNA, the reneged segment included.
    let (_, segs) = f.fire();
    assert_eq!(segs[0].r.seq, s(1));
}

#[test]
fn window_update_after_the_host_drains_a_full_buffer() {
    let mut f = Fix::established_with(guest_syn_plain(), small_window_cfg(40_000));
    f.data(&pattern(30_000));
    let s = f.poll().remove(0);
    assert_eq!(s.r.window, 10_000);
    // The host takes everything: the window quadruples. Not urgent (10000 >= 2 segments),
    // so it rides on this turn's poll_output instead of going out at once.
    f.host_write_all();
    assert!(f.take().is_empty());
    let s = f.poll().remove(0);
    assert_eq!(s.r.window, 40_000);
    // A small drain does not announce anything by itself.
    f.data(&pattern(1000));
    f.poll();
    f.host_write_all();
    assert!(f.poll().is_empty());
}

#[test]
fn delayed_ack_zero_acks_every_segment() {
    let cfg = TcpConfig {
        delayed_ack: Duration::ZERO,
        ..TcpConfig::default()
    };
    let mut f = Fix::established_with(guest_syn(), cfg);
    for _ in 0..20 {
        f.data(b"x");
        assert_eq!(f.poll().len(), 1);
    }
}

#[test]
fn ack_rides_on_data() {
    let mut f = Fix::established();
    f.data(b"request");
    f.host_write_all();
    f.host_send(100);
    let segs = f.poll();
    assert_eq!(segs.len(), 1, "one segment: data carrying the ACK");
    assert_eq!(segs[0].r.ack, f.gseq);
    assert_eq!(segs[0].data.len(), 100);
    assert_eq!(
        f.t.next_deadline(),
        Some(f.now + ms(42)),
        "only the loss probe: one segment in flight, 2 ms + the guest's delayed ACK"
    );
}

#[test]
fn host_write_is_an_edge() {
    let mut f = Fix::established();
    assert!(f.data(b"abc").host_write);
    // A partial write reports nothing new; the data stays until written.
    let e = f.t.host_wrote(1, f.now, &mut f.out);
    assert!(!e.host_write);
    assert_eq!(f.host_pending(), b"bc");
    // A pure ACK brings no data.
    assert!(!f.ack_now().host_write);
    assert!(f.data(b"d").host_write);
    assert_eq!(f.host_pending(), b"bcd");
}

#[test]
fn send_spare_is_two_slices_when_the_ring_wraps() {
    let cfg = TcpConfig {
        send_buf: 16 * 1024,
        ..TcpConfig::default()
    };
    let mut f = Fix::established_with(guest_syn(), cfg);
    assert_eq!(f.host_send(10_000), 10_000);
    f.poll();
    // 6000 acknowledged: the data sits in the middle of the 16 KiB ring, so the room is
    // after it and, wrapping, before it.
    f.ack_to(ISS + 1 + 6000);
    let [a, b] = f.t.send_spare();
    assert_eq!((a.len(), b.len()), (16 * 1024 - 10_000, 6000));
    assert_eq!(f.host_send(20_000), 16 * 1024 - 4000);
    assert_eq!(f.t.send_room(), 0);
    // What goes out across the wrap is the host's bytes in order.
    let all: Vec<u8> = f.poll().iter().flat_map(|s| s.data.clone()).collect();
    assert_eq!(all, pattern(16 * 1024 + 6000)[10_000..].to_vec());
}

#[test]
fn fin_goes_out_into_a_zero_window() {
    let mut f = Fix::established();
    f.gwin = 0;
    f.ack_now();
    f.t.host_eof();
    let segs = f.poll();
    assert_eq!(segs.len(), 1);
    assert_eq!(segs[0].flags(), ACK | FIN);
}

#[test]
fn data_after_the_guest_fin_is_ignored() {
    let mut f = Fix::close_wait();
    let e = f.data(b"late");
    assert!(!e.host_write);
    assert!(f.host_pending().is_empty());
}

#[test]
fn syn_ack_with_data() {
    let (mut f, _) = Fix::syn_sent();
    let sa = guest_syn_ack(&f);
    let e = f.input(sa, b"banner");
    assert!(e.host_write);
    assert_eq!(f.host_pending(), b"banner");
    let s = f.poll().remove(0);
    assert_eq!(s.r.ack, GUEST_ISN + 7);
}

#[test]
fn segments_fit_the_mss_with_sack_blocks() {
    let mut f = Fix::established();
    // Out-of-order data from the guest: our data segments carry SACK blocks, and shrink.
    let mut r = f.seg(ACK);
    r.seq = f.gseq + 100;
    f.input(r, b"x");
    r.seq = f.gseq + 200;
    f.input(r, b"y");
    f.host_send(3000);
    let segs = f.poll();
    for s in &segs {
        assert!(s.data.len() + s.r.header_len() - 20 <= 1460);
        assert_eq!(s.sacks().len(), 2);
    }
    assert_eq!(segs[0].data.len(), 1460 - 12 - 4 - 16);
}

/// `on_segment_direct`: in-order text that finds the ring empty goes to the host first.
fn direct(f: &mut Fix, payload: &[u8], take: usize, got: &mut Vec<u8>) -> Effects {
    let r = f.seg(ACK | PSH);
    f.gseq = f.gseq + payload.len() as u32;
    let mut w = |d: &[u8]| {
        let n = take.min(d.len());
        got.extend_from_slice(&d[..n]);
        n
    };
    f.t.on_segment_direct(&r, payload, f.now, &mut f.out, &mut w)
}

#[test]
fn direct_write_skips_the_ring_and_keeps_the_order() {
    let mut f = Fix::established();
    let data = pattern(4000);
    let mut host = Vec::new();
    // All of it taken: nothing held, RCV.NXT past it, an ACK for it.
    direct(&mut f, &data[..1000], usize::MAX, &mut host);
    assert!(f.host_pending().is_empty());
    assert_eq!(f.t.vars().rcv_nxt, GUEST_ISN + 1 + 1000);
    assert_eq!(f.t.stats().bytes_in, 1000);
    // The host takes 300 of the next 1000: the rest waits in the ring, in order.
    direct(&mut f, &data[1000..2000], 300, &mut host);
    assert_eq!(f.host_pending(), &data[1300..2000]);
    // Bytes are waiting: the next segment must queue behind them, never jump ahead.
    let e = direct(&mut f, &data[2000..3000], usize::MAX, &mut host);
    assert!(e.host_write);
    assert_eq!(host, &data[..1300]);
    assert_eq!(f.host_pending(), &data[1300..3000]);
    assert_eq!(f.t.vars().rcv_nxt, GUEST_ISN + 1 + 3000);
    assert_eq!(f.t.stats().bytes_in, 3000);
    let acks = f.poll();
    assert_eq!(acks.last().map(|s| s.ack()), Some((GUEST_ISN + 1 + 3000).0));
}

#[test]
fn direct_write_never_sees_out_of_order_text() {
    let mut f = Fix::established();
    let mut host = Vec::new();
    // A segment beyond a gap is stored; the direct writer is not offered it.
    let mut r = f.seg(ACK);
    r.seq = f.gseq + 100;
    let mut w = |d: &[u8]| {
        host.extend_from_slice(d);
        d.len()
    };
    f.t.on_segment_direct(&r, b"later", f.now, &mut f.out, &mut w);
    assert!(host.is_empty());
    assert_eq!(f.t.vars().rcv_nxt, GUEST_ISN + 1);
}
