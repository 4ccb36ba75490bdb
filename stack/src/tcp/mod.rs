//! The guest-side TCP engine: one [`Tcb`] per connection between the guest's kernel and us.
//!
//! # Theory of Operation
//!
//! The guest's Linux kernel is our peer. For a connection the guest opens (passive open on
//! our side) we stand in for the remote host: the guest's SYN creates a `Tcb` in
//! `AwaitingHost` ([`Tcb::accept_syn`]) and nothing is answered until the shard's host
//! `connect()` finishes: [`Tcb::host_connected`] sends the SYN-ACK, [`Tcb::host_refused`] a
//! RST, so the guest sees exactly what a real network would show. For port forwards we open
//! the connection into the guest ([`Tcb::connect`], active open). The other end of every
//! connection is a host kernel socket that the shard owns; this module never touches it.
//!
//! ```text
//!              guest segments                              host socket (shard)
//!  on_segment ─> PAWS/seq check ─> RST/SYN ─> ACK ─> text ─> recv ring ─> host_data/host_wrote
//!                                              │            (window = its free room)
//!                                              v
//!                                    snd_una advances, SACK scoreboard,
//!                                    RACK loss detection, RTT, cwnd/PRR
//!  poll_output <─ lost segments / new data / FIN / ACK <─ send ring <─ send_spare/host_read
//!  on_timer: RACK reordering timer, loss probe, RTO (backoff), zero-window probe,
//!            delayed ACK, TIME-WAIT
//! ```
//!
//! Both directions are byte rings that are allocated lazily and grow (by doubling) up to the
//! configured bound, so an idle connection costs little and no segment allocates:
//!
//! * **Receive** (guest → host): in-order guest payload is copied once into the receive
//!   ring; out-of-order payload is copied once into the same ring at its offset beyond the
//!   in-order tail, and `reassembly` only tracks which ranges are present. When a gap
//!   fills, the ring's length simply advances. The window we advertise is the ring's free
//!   room (bytes not yet written to the host), so a slow host socket closes the guest's
//!   window instead of making it retransmit. We acknowledge everything in order that we
//!   hold (ACK = RCV.NXT): the ring *is* the receive buffer.
//! * **Send** (host → guest): the shard reads the host socket straight into the send ring's
//!   spare space ([`Tcb::send_spare`], [`Tcb::host_read`]); segments are emitted from the
//!   ring's two halves without copying ([`SegmentSink::emit`]). The ring starts at SND.UNA
//!   and holds unacknowledged and unsent bytes; the FIN, once queued, sits right after them
//!   in sequence space.
//!
//! Loss detection is RACK-TLP (RFC 8985), as in Linux, because the RFC 6675 rules cannot
//! see a lost retransmission or a lost tail: both then wait for the RTO, and on this link
//! one RTO costs thousands of round trips. Every segment sent (new data, and the FIN in a
//! record of its own) has a record in `rack::Rack`: its range, its last transmission time
//! in microseconds, and flags; the records in flight are also linked in transmission order.
//! An ACK delivers records (cumulatively or by SACK, byte ranges on `send::Scoreboard`);
//! the most recently *sent* delivered one is RACK.segment, and a record in flight sent
//! before it is lost once RACK.rtt + the reordering window has passed since it was sent
//! (a timer covers the wait). Retransmissions are ordinary transmissions, so a lost
//! retransmission is found the same way. The reordering window is 0 in recovery until
//! reordering is seen, then min_RTT / 4, growing with D-SACKs up to SRTT (§6.2). A tail
//! loss, with nothing sent later to be delivered, is found by a loss probe (§7): after
//! 2 * SRTT (at least 2 ms; plus the guest's 40 ms delayed ACK when one segment is in
//! flight) without an ACK, one segment goes out (new data, else the last segment again)
//! and its ACK or SACK lets RACK find the loss. The RTO (RFC 6298, floor 50 ms, with
//! RACK's marking, §6.3) is the last resort.
//!
//! A loss starts fast recovery (RFC 6675 episode: one reduction until RecoveryPoint),
//! with Proportional Rate Reduction (RFC 6937) setting cwnd on every ACK so that the
//! flight falls to ssthresh gradually, and cwnd = ssthresh at the end. A reduction is
//! undone when the timestamps (Eifel, RFC 3522) or D-SACKs for every retransmission of the
//! episode show it spurious. Without SACK, NewReno (RFC 6582) marks the segment at
//! SND.UNA lost on three duplicate ACKs and on partial ACKs. `poll_output` first
//! retransmits lost segments (within cwnd - pipe), then sends new data within
//! min(SND.WND, cwnd - pipe), then the FIN. In the common in-order case the scoreboard and
//! the reassembly list are empty, an ACK pops records from the front of the log, and every
//! step is O(1); with loss, an ACK costs O(1) plus the segments it delivers or marks.
//!
//! Acknowledgments are batched: `on_segment` only notes that an ACK is due (every second
//! full-sized segment, out-of-order data, a FIN, the first segments of a connection) and
//! `poll_output` sends it once per shard turn, after the shard wrote to the host, so the ACK
//! carries a fresh window. Otherwise the delayed-ACK timer sends it.
//!
//! Time is a parameter (`now`), never read here. TSval is milliseconds since the Tcb was
//! created plus a per-connection offset.
//!
//! Where the letter of an RFC and Linux differ, we behave like Linux (the guest is Linux,
//! and so is the peer it expects), each noted at the code:
//!
//! * Sequence test (`tcp_sequence()`): acceptable when the segment ends at or after
//!   Last.ACK.sent and starts at or before the right edge. A retransmission of the segment
//!   our lost ACK covered is thus processed, its TSval recorded (RFC 7323 §4.3) and echoed,
//!   so the guest never measures a whole RTO as its RTT; entirely old segments still get
//!   an immediate ACK.
//! * PAWS tolerates one tick of reordering and exempts reordered pure duplicate ACKs
//!   (`tcp_disordered_ack()`), which carry SACK information.
//! * A retransmitted SYN in SYN-RECEIVED gets the SYN-ACK again (echoing its timestamp).
//! * RACK-TLP loss detection with PRR (Linux's defaults); reductions found spurious by
//!   timestamps or D-SACKs are undone (Eifel, RFC 3522/4015; Linux's undo); quick ACKs
//!   for the first 16 data segments and after a duplicate segment (`tcp_send_dupack()`);
//!   slow start grows by the bytes acknowledged (stretch ACKs); SACK reneging is detected
//!   from the cumulative ACK. The RTO floor is 50 ms rather than Linux's 200 ms (see
//!   `TcpConfig::rto_min`).
//!
//! Memory per connection: the struct (about 1 KiB), the two rings, which grow on demand
//! (16 KiB first, doubling) up to `recv_buf` (+ one window unit) and `send_buf`, RACK's log
//! of the segments in flight (32 bytes each: 128 KiB for a full 4 MiB window of 1448-byte
//! segments, freed when the connection stops sending), and when there is loss at most 256
//! ranges (2 KiB) each for reassembly and the scoreboard.

pub mod isn;
mod rack;
mod reassembly;
mod recv;
mod ring;
mod rtt;
mod send;
mod state;
mod timer;

use std::net::SocketAddrV4;
use std::time::Duration;

pub use crate::wire::tcp::{
    SackBlock, SackBlocks, SeqNumber, TcpFlags, TcpPacket, TcpRepr, TcpTimestamps,
};
pub use isn::isn;
pub use rack::LossStats;
pub use state::{reset_for_unknown, Tcb};

/// Connection parameters, shared by all connections of a shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpConfig {
    /// Largest segment we send = min(this, the guest's MSS option); also the MSS we
    /// advertise. Set from the link MTU - 40.
    pub mss: u16,
    /// Guest→host bytes held while the host socket cannot take them (bounds our receive
    /// window).
    pub recv_buf: usize,
    /// Host→guest bytes held until the guest acknowledges them (bounds what we read from
    /// the host).
    pub send_buf: usize,
    /// Out-of-order guest bytes held for reassembly (bounded; beyond it segments are
    /// dropped).
    pub ooo_buf: usize,
    /// Floor of the retransmission timeout. RFC 6298 §2.4 says 1 s, which dates from coarse
    /// clocks; Linux uses 200 ms; we use 50 ms. The guest link's RTT is tens of
    /// microseconds to a few milliseconds, so every RTO stalls the connection for
    /// thousands of RTTs, and the RTO is only the last resort: RACK finds lost segments and
    /// lost retransmissions, a loss probe (RFC 8985 §7) repairs tail losses first, so the
    /// RTO fires only when a probe and whatever followed it got no answer. The floor must
    /// stay above the longest the guest holds an ACK, or an idle-ish flow of single
    /// segments would time out spuriously: a Linux guest delays an ACK by at most
    /// max(its SRTT, 40 ms) (TCP_DELACK_MIN) once it has an RTT estimate, and the timer
    /// restarts at every ACK and after a probe. A spurious RTO is undone (Eifel, D-SACK).
    pub rto_min: Duration,
    /// Ceiling of the retransmission timeout (RFC 6298 §2.5 allows >= 60 s).
    pub rto_max: Duration,
    /// RTO before the first RTT sample (RFC 6298 §2.1: 1 s).
    pub rto_initial: Duration,
    /// Consecutive RTO expiries without any acknowledgment from the guest before we give
    /// up and reset the connection.
    pub max_retries: u32,
    /// SYN (active open) and SYN-ACK (passive open) retransmissions before giving up.
    pub syn_retries: u32,
    /// How long a connection we closed first lingers in TIME-WAIT to re-acknowledge a
    /// retransmitted FIN (the guest link cannot hold old segments for long, so 2 s is
    /// plenty).
    pub time_wait: Duration,
    /// Longest we delay an ACK (RFC 9293 §3.8.6.3: < 0.5 s; Linux: 40 ms). Zero disables
    /// delayed ACKs.
    pub delayed_ack: Duration,
}

impl Default for TcpConfig {
    fn default() -> TcpConfig {
        TcpConfig {
            mss: 1460,
            recv_buf: 4 << 20,
            send_buf: 4 << 20,
            ooo_buf: 1 << 20,
            rto_min: Duration::from_millis(50),
            rto_max: Duration::from_secs(60),
            rto_initial: Duration::from_secs(1),
            max_retries: 15,
            syn_retries: 6,
            time_wait: Duration::from_secs(2),
            delayed_ack: Duration::from_millis(40),
        }
    }
}

/// RFC 9293 state names. `AwaitingHost` is ours: a guest SYN was received and the host
/// `connect()` is in progress, nothing has been sent to the guest yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    AwaitingHost,
    SynSent,
    SynReceived,
    Established,
    FinWait1,
    FinWait2,
    CloseWait,
    Closing,
    LastAck,
    TimeWait,
    Closed,
}

/// The addresses of a connection, from the guest's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Endpoints {
    pub guest: SocketAddrV4,
    pub remote: SocketAddrV4,
}

/// Where segments go: the shard builds Ethernet + IPv4 around them.
pub trait SegmentSink {
    /// `repr` has ports/seq/ack/flags/window/options set; `payload` is up to two slices
    /// (a ring buffer's two halves) whose total length is the segment's data length.
    fn emit(&mut self, repr: &TcpRepr, payload: [&[u8]; 2]);
}

/// What the shard must do after an input, besides emitting segments.
///
/// `host_shutdown` and `host_close` are reported exactly once per connection;
/// `host_write` and `want_host_read` are edges (something changed in this call).
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Effects {
    /// New in-order guest data arrived: write `host_data()` to the host socket and report
    /// with `host_wrote()`. (If the socket is full, keep write interest and retry when it
    /// is writable; this flag does not repeat for data already announced.)
    pub host_write: bool,
    /// The guest's FIN was reached and every byte before it was written to the host:
    /// `shutdown(SHUT_WR)` the host socket.
    pub host_shutdown: bool,
    /// The connection is over (RST either way, retries exhausted, or both FINs exchanged
    /// and all guest data written): close the host socket. Not reported for
    /// `host_reset`/`host_refused`, which the shard itself initiated.
    pub host_close: bool,
    /// Room appeared for host data after `send_room()` had been 0: resume reading the host
    /// socket.
    pub want_host_read: bool,
}

impl Effects {
    /// Both sets of flags.
    pub fn merge(self, other: Effects) -> Effects {
        Effects {
            host_write: self.host_write || other.host_write,
            host_shutdown: self.host_shutdown || other.host_shutdown,
            host_close: self.host_close || other.host_close,
            want_host_read: self.want_host_read || other.want_host_read,
        }
    }
}

/// Per-connection counters (summed by the shard into /stats).
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcbStats {
    pub segments_in: u64,
    pub segments_out: u64,
    /// Guest payload bytes accepted in order.
    pub bytes_in: u64,
    /// New host→guest payload bytes sent (retransmissions not counted).
    pub bytes_out: u64,
    /// Segments retransmitted (RTO, fast retransmit and SACK recovery, SYN, FIN).
    pub retransmits: u64,
    pub retransmitted_bytes: u64,
    /// Fast recovery episodes entered (three duplicate ACKs or SACK evidence).
    pub fast_retransmits: u64,
    /// Fast retransmits and RTOs found spurious by their timestamps (RFC 3522) and undone.
    pub spurious_retransmits: u64,
    pub rto_expiries: u64,
    pub dup_acks: u64,
    /// The guest discarded data it had SACKed (RFC 2018 §8); the scoreboard was reset.
    pub sack_reneging: u64,
    /// Segments stored out of order.
    pub ooo_segments: u64,
    /// Out-of-order segments dropped because `ooo_buf` or the range list was full.
    pub ooo_dropped: u64,
    /// Segments failing the sequence test (answered with an ACK unless RST).
    pub unacceptable: u64,
    pub challenge_acks: u64,
    pub paws_rejected: u64,
    /// Zero-window probes sent.
    pub window_probes: u64,
    pub resets_in: u64,
    pub resets_out: u64,
}

/// A snapshot of the connection variables (RFC 9293 names), for tests and debugging.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcbVars {
    pub state: State,
    pub iss: SeqNumber,
    pub snd_una: SeqNumber,
    pub snd_nxt: SeqNumber,
    /// Scaled.
    pub snd_wnd: u32,
    pub snd_wl1: SeqNumber,
    pub snd_wl2: SeqNumber,
    pub snd_shift: u8,
    /// Largest payload we put in a segment before options: min(guest MSS, cfg.mss).
    pub snd_mss: u16,
    pub irs: SeqNumber,
    pub rcv_nxt: SeqNumber,
    /// What is left of the window we advertised (right edge - RCV.NXT).
    pub rcv_wnd: u32,
    pub rcv_shift: u8,
    pub cwnd: u32,
    pub ssthresh: u32,
    pub srtt: Option<Duration>,
    pub rto: Duration,
    pub in_recovery: bool,
    pub sack_ok: bool,
    pub ts_ok: bool,
    pub ts_recent: u32,
    /// Host→guest bytes held (unacknowledged + unsent).
    pub send_buffered: usize,
    /// Guest→host bytes held in order, not yet written to the host.
    pub recv_buffered: usize,
    /// Out-of-order guest bytes held.
    pub ooo_bytes: usize,
    /// SACKed bytes on the scoreboard.
    pub sacked_bytes: u32,
    /// RACK's windowed minimum RTT (RFC 8985 §6.2 Step 1), from our transmission times.
    pub min_rtt: Option<Duration>,
    /// RACK saw the guest link reorder segments (RFC 8985 §6.2 Step 3).
    pub reordering_seen: bool,
}
