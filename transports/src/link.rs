//! Non-blocking frame I/O on a connected fd: large reads split into many frames, outgoing frames
//! queued in one contiguous buffer and written with as few syscalls as the transport allows.
//!
//! ```text
//! read side:  read() 256 KiB --> StreamDecoder --> on_frame(&[u8]) x N      (stream)
//!             recvmmsg() N slots --> on_frame(&[u8]) x N                    (seqpacket, dgram)
//!             read() per frame --> on_frame                                 (TAP, other non-sockets)
//!             read() per frame, virtio-net header, checksum completed --> on_frame  (vnet TAP)
//! write side: queue_frame() --> TxQueue (one Vec<u8>) --> send()/write()    (stream)
//!                                                    --> sendmmsg()         (seqpacket, dgram)
//!                                                    --> write() per frame  (TAP)
//!                                   runs of one TCP flow --> writev() as one TSO segment (vnet TAP)
//! ```

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::PathBuf;

use nix::errno::Errno;
use nix::sys::socket::{send, MsgFlags};

use crate::framing::{encode_frame, Framing, FramingError, StreamDecoder, MIN_FRAME};
use crate::sys::{self, FdKind, RecvInfo, MAX_BATCH};
use crate::vnet::{self, PartialCsum, VnetHdr, VNET_HDR_LEN};

/// Receive buffer of a stream link: many frames per `read()`.
const STREAM_RX_BYTES: usize = 256 * 1024;
/// Records a vnet stream encodes before one send().
const VNET_OUT_BYTES: usize = 256 * 1024;
/// Receive area of a message link, split into `MAX_BATCH`-at-most slots of one frame each.
const MESSAGE_RX_BYTES: usize = 256 * 1024;

/// The fds a link moves frames over.
#[derive(Debug)]
pub enum LinkIo {
    /// Byte stream with a length-prefix framing. `write` None = same fd as `read` (sockets);
    /// stdio: fd 0 / fd 1.
    Stream {
        read: OwnedFd,
        write: Option<OwnedFd>,
    },
    /// Seqpacket, connected unixgram, TAP: one read()/write() = one frame.
    Packet(OwnedFd),
    /// vfkit server side: recvfrom any sender, sendto(`peer`).
    Datagram { fd: OwnedFd, peer: PathBuf },
    /// A TAP opened with `IFF_VNET_HDR` (see [`crate::vnet`]): frames in may be 64 KiB TCP
    /// segments with partial checksums (completed here); runs of TCP segments out are
    /// written as one TSO segment.
    VnetTap(OwnedFd),
    /// A stream socket carrying records of virtio-net header + frame, each behind a u32
    /// big-endian length (`POST /connect-vnet`): a vnet TAP at the other end, relayed.
    /// Same offloads as `VnetTap`.
    VnetStream(OwnedFd),
}

/// Per-link counters (frames and bytes count only frame bytes, not length prefixes).
#[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkCounters {
    pub rx_frames: u64,
    pub rx_bytes: u64,
    /// Frames queued for sending (counted when accepted by `queue_frame`).
    pub tx_frames: u64,
    pub tx_bytes: u64,
    /// Received frames shorter than `MIN_FRAME`, dropped.
    pub rx_runts: u64,
    /// Outgoing frames dropped because the queue was over `tx_limit_bytes` (or empty frames).
    pub tx_dropped: u64,
    /// Outgoing frames dropped because the framing or the socket cannot carry their size.
    pub tx_oversize: u64,
    /// Received messages larger than the receive slot (truncated by the kernel), dropped.
    pub rx_oversize: u64,
    /// Received frames with a bad virtio-net header (checksum offsets outside the frame).
    pub rx_malformed: u64,
    /// TSO writes (vnet TAP): each carried several queued frames as one segment.
    pub tx_gso_writes: u64,
}

/// Why `read_frames` returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadStatus {
    /// Drained: the kernel has nothing more (edge-triggered readiness is re-armed).
    WouldBlock,
    /// Stopped after `budget` frames with data maybe left: the caller must come back.
    Budget,
    /// The peer closed the connection (EOF).
    Closed,
}

/// A link failure: the caller logs one line and drops the link.
#[derive(Debug)]
pub enum LinkError {
    Io(io::Error),
    /// A stream length prefix announced a frame over `MAX_STREAM_FRAME`.
    TooLong(usize),
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkError::Io(e) => write!(f, "{e}"),
            LinkError::TooLong(len) => write!(f, "{}", FramingError::TooLong(*len)),
        }
    }
}

impl std::error::Error for LinkError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LinkError::Io(e) => Some(e),
            LinkError::TooLong(_) => None,
        }
    }
}

impl From<io::Error> for LinkError {
    fn from(e: io::Error) -> Self {
        LinkError::Io(e)
    }
}

impl From<Errno> for LinkError {
    fn from(e: Errno) -> Self {
        LinkError::Io(io::Error::from(e))
    }
}

impl From<FramingError> for LinkError {
    fn from(e: FramingError) -> Self {
        match e {
            FramingError::TooLong(len) => LinkError::TooLong(len),
        }
    }
}

enum Io {
    Stream {
        read: OwnedFd,
        write: Option<OwnedFd>,
        write_is_socket: bool,
        decoder: StreamDecoder,
    },
    Packet {
        fd: OwnedFd,
        kind: FdKind,
        rx: MessageRx,
    },
    Datagram {
        fd: OwnedFd,
        peer: Result<socket2::SockAddr, String>,
        rx: MessageRx,
    },
    VnetStream {
        fd: OwnedFd,
        decoder: StreamDecoder,
        /// Records being written, from `out_off`.
        out: Vec<u8>,
        out_off: usize,
        hdr: Vec<u8>,
    },
    VnetTap {
        fd: OwnedFd,
        /// One frame with its header; one spare byte to see truncation.
        rx: Vec<u8>,
        /// Headers of the merged segment being written.
        hdr: Vec<u8>,
        /// Cleared if the kernel refuses a TSO write: single frames from then on.
        gso: bool,
    },
}

/// Receive slots for message transports, allocated once.
struct MessageRx {
    buf: Vec<u8>,
    slot: usize,
    batch: usize,
}

impl MessageRx {
    fn new(mtu_hint: usize, batched: bool) -> Self {
        // Room for the Ethernet header and a VLAN tag; at least a standard frame.
        let slot = mtu_hint
            .saturating_add(18)
            .clamp(1518, crate::framing::MAX_STREAM_FRAME + 64)
            .next_multiple_of(64);
        let batch = if batched {
            (MESSAGE_RX_BYTES / slot).clamp(1, MAX_BATCH)
        } else {
            1
        };
        MessageRx {
            // One spare byte: a per-frame read() that fills past `slot` was truncated.
            buf: vec![0; slot * batch + 1],
            slot,
            batch,
        }
    }
}

/// Outgoing frames: bytes in one buffer (already encoded for streams), plus each frame's length
/// for message transports. Written from `off`; reset when empty, compacted only when needed.
#[derive(Default)]
struct TxQueue {
    buf: Vec<u8>,
    off: usize,
    lens: Vec<usize>,
    /// Beside `lens` (vnet links): the frame's TCP/UDP checksum is partial, to be sent as
    /// `NEEDS_CSUM`.
    partial: Vec<Option<PartialCsum>>,
    head: usize,
}

impl TxQueue {
    fn queued_bytes(&self) -> usize {
        self.buf.len() - self.off
    }

    fn is_empty(&self) -> bool {
        self.off == self.buf.len()
    }

    /// Make room for `extra` bytes without growing the buffer if the written prefix can go.
    fn reserve(&mut self, extra: usize) {
        if self.off > 0 && self.buf.len() + extra > self.buf.capacity() {
            self.buf.copy_within(self.off.., 0);
            self.buf.truncate(self.buf.len() - self.off);
            self.off = 0;
            self.lens.copy_within(self.head.., 0);
            self.lens.truncate(self.lens.len() - self.head);
            self.partial.copy_within(self.head.., 0);
            self.partial.truncate(self.partial.len() - self.head);
            self.head = 0;
        }
    }

    fn reset_if_empty(&mut self) {
        if self.is_empty() {
            self.buf.clear();
            self.off = 0;
            self.lens.clear();
            self.partial.clear();
            self.head = 0;
        }
    }

    /// The next frame's partial checksum, if it has one.
    fn head_partial(&self) -> Option<PartialCsum> {
        self.partial.get(self.head).copied().flatten()
    }

    /// Frames not yet sent (message transports).
    fn frames(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let mut at = self.off;
        self.lens[self.head..].iter().map(move |&len| {
            let f = &self.buf[at..at + len];
            at += len;
            f
        })
    }

    /// The first `n` pending frames were sent (or dropped).
    fn advance_frames(&mut self, n: usize) {
        let n = n.min(self.lens.len() - self.head);
        let bytes: usize = self.lens[self.head..self.head + n].iter().sum();
        self.head += n;
        self.off += bytes;
        self.reset_if_empty();
    }
}

/// One VM link: non-blocking frame reads and batched writes on connected fds.
///
/// Not thread-safe by itself (`&mut self`), but `Send`: one owner thread drives it.
pub struct Link {
    io: Io,
    framing: Framing,
    tx: TxQueue,
    tx_limit_bytes: usize,
    counters: LinkCounters,
    runts_seen: u64,
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.io {
            Io::Stream { .. } => "stream",
            Io::Packet {
                kind: FdKind::Other,
                ..
            } => "packet (non-socket)",
            Io::Packet { .. } => "packet",
            Io::Datagram { .. } => "datagram",
            Io::VnetTap { .. } => "vnet tap",
            Io::VnetStream { .. } => "vnet stream",
        };
        f.debug_struct("Link")
            .field("kind", &kind)
            .field("framing", &self.framing)
            .field("read_fd", &self.read_fd())
            .field("write_fd", &self.write_fd())
            .field("pending_bytes", &self.tx.queued_bytes())
            .field("counters", &self.counters)
            .finish()
    }
}

fn nonblock(fd: &OwnedFd) {
    if let Err(e) = sys::set_nonblocking(fd.as_raw_fd(), true) {
        log::warn!("cannot set O_NONBLOCK on fd {}: {e}", fd.as_raw_fd());
    }
}

impl Link {
    /// Sets O_NONBLOCK on the fds. `tx_limit_bytes` bounds queued outgoing bytes (frames
    /// beyond it are dropped and counted; a frame is always accepted into an empty queue).
    /// `framing` applies to `LinkIo::Stream`; message transports always carry one frame per
    /// message. `mtu_hint` sizes the receive slots of message transports (frames larger than
    /// `mtu_hint + 18` are dropped and counted in `rx_oversize`).
    pub fn new(io: LinkIo, framing: Framing, mtu_hint: usize, tx_limit_bytes: usize) -> Self {
        let io = match io {
            LinkIo::Stream { read, write } => {
                nonblock(&read);
                if let Some(w) = &write {
                    nonblock(w);
                }
                let wfd = write.as_ref().unwrap_or(&read);
                let write_is_socket = sys::fd_kind(wfd.as_fd()) != FdKind::Other;
                Io::Stream {
                    read,
                    write,
                    write_is_socket,
                    decoder: StreamDecoder::new(framing, STREAM_RX_BYTES),
                }
            }
            LinkIo::Packet(fd) => {
                nonblock(&fd);
                let kind = sys::fd_kind(fd.as_fd());
                let rx = MessageRx::new(mtu_hint, kind != FdKind::Other);
                Io::Packet { fd, kind, rx }
            }
            LinkIo::Datagram { fd, peer } => {
                nonblock(&fd);
                let peer = socket2::SockAddr::unix(&peer)
                    .map_err(|e| format!("bad vfkit peer address {}: {e}", peer.display()));
                Io::Datagram {
                    fd,
                    peer,
                    rx: MessageRx::new(mtu_hint, true),
                }
            }
            LinkIo::VnetStream(fd) => {
                nonblock(&fd);
                Io::VnetStream {
                    fd,
                    decoder: StreamDecoder::new(Framing::Qemu, STREAM_RX_BYTES),
                    out: Vec::with_capacity(VNET_OUT_BYTES + vnet::MAX_GSO_FRAME + 64),
                    out_off: 0,
                    hdr: Vec::with_capacity(256),
                }
            }
            LinkIo::VnetTap(fd) => {
                nonblock(&fd);
                Io::VnetTap {
                    fd,
                    rx: vec![0; VNET_HDR_LEN + vnet::MAX_GSO_FRAME + 1],
                    hdr: Vec::with_capacity(256),
                    gso: true,
                }
            }
        };
        Link {
            io,
            framing,
            tx: TxQueue::default(),
            tx_limit_bytes,
            counters: LinkCounters::default(),
            runts_seen: 0,
        }
    }

    /// The fd to poll for readability.
    pub fn read_fd(&self) -> RawFd {
        match &self.io {
            Io::Stream { read, .. } => read.as_raw_fd(),
            Io::Packet { fd, .. }
            | Io::Datagram { fd, .. }
            | Io::VnetTap { fd, .. }
            | Io::VnetStream { fd, .. } => fd.as_raw_fd(),
        }
    }

    /// The fd to poll for writability; equals `read_fd` unless stdio-like split.
    pub fn write_fd(&self) -> RawFd {
        match &self.io {
            Io::Stream {
                read, write: None, ..
            } => read.as_raw_fd(),
            Io::Stream { write: Some(w), .. } => w.as_raw_fd(),
            Io::Packet { fd, .. }
            | Io::Datagram { fd, .. }
            | Io::VnetTap { fd, .. }
            | Io::VnetStream { fd, .. } => fd.as_raw_fd(),
        }
    }

    /// Bytes that arrived before the link (leftover after a `/connect` head). Streams only;
    /// ignored on message transports.
    pub fn prefill(&mut self, bytes: &[u8]) {
        if let Io::Stream { decoder, .. } | Io::VnetStream { decoder, .. } = &mut self.io {
            decoder.prefill(bytes);
        }
    }

    /// Reads as much as available and calls `on_frame` for each whole frame, stopping after
    /// `budget` frames. Frames shorter than `MIN_FRAME` are counted (`rx_runts`) and skipped.
    pub fn read_frames(
        &mut self,
        budget: usize,
        on_frame: &mut dyn FnMut(&[u8]),
    ) -> Result<ReadStatus, LinkError> {
        self.read_frames_inner(budget, true, &mut |frame, _| on_frame(frame))
    }

    /// [`Link::read_frames`], except that a checksum a virtio-net peer left partial stays
    /// so: `on_frame` gets it as a [`PartialCsum`], to finish only if the frame leaves for
    /// a port that needs it.
    pub fn read_frames_partial(
        &mut self,
        budget: usize,
        on_frame: &mut OnFrame<'_>,
    ) -> Result<ReadStatus, LinkError> {
        self.read_frames_inner(budget, false, on_frame)
    }

    fn read_frames_inner(
        &mut self,
        budget: usize,
        complete: bool,
        on_frame: &mut OnFrame<'_>,
    ) -> Result<ReadStatus, LinkError> {
        let c = &mut self.counters;
        let status = match &mut self.io {
            Io::Stream { read, decoder, .. } => {
                let r = read_stream(read.as_fd(), decoder, None, budget, c, on_frame);
                let runts = decoder.runts();
                c.rx_runts += runts - self.runts_seen;
                self.runts_seen = runts;
                r
            }
            Io::Packet { fd, kind, rx } => match kind {
                FdKind::Other => read_each(fd.as_fd(), rx, budget, c, on_frame),
                FdKind::SeqPacket | FdKind::Stream => {
                    read_batched(fd.as_fd(), rx, true, budget, c, on_frame)
                }
                FdKind::Datagram => read_batched(fd.as_fd(), rx, false, budget, c, on_frame),
            },
            Io::Datagram { fd, rx, .. } => read_batched(fd.as_fd(), rx, false, budget, c, on_frame),
            Io::VnetTap { fd, rx, .. } => read_vnet(fd.as_fd(), rx, complete, budget, c, on_frame),
            Io::VnetStream { fd, decoder, .. } => {
                let r = read_stream(fd.as_fd(), decoder, Some(complete), budget, c, on_frame);
                let runts = decoder.runts();
                c.rx_runts += runts - self.runts_seen;
                self.runts_seen = runts;
                r
            }
        };
        status
    }

    /// Queues one frame encoded for the framing. Returns false if dropped (queue over the
    /// limit, empty, or too big to encode).
    pub fn queue_frame(&mut self, frame: &[u8]) -> bool {
        self.queue(frame, None)
    }

    /// [`Link::queue_frame`] for a frame whose TCP/UDP checksum may be partial: a vnet
    /// link sends it so (`NEEDS_CSUM`, the guest kernel trusts it), any other link
    /// finishes it in its queue first.
    pub fn queue_frame_partial(&mut self, frame: &[u8], partial: Option<PartialCsum>) -> bool {
        self.queue(frame, partial)
    }

    fn queue(&mut self, frame: &[u8], partial: Option<PartialCsum>) -> bool {
        let stream = matches!(self.io, Io::Stream { .. });
        let framing = if stream {
            self.framing
        } else {
            Framing::Message
        };
        let max = if matches!(self.io, Io::VnetTap { .. } | Io::VnetStream { .. }) {
            vnet::MAX_GSO_FRAME
        } else {
            framing.max_frame()
        };
        if frame.len() > max {
            self.counters.tx_oversize += 1;
            return false;
        }
        if frame.is_empty() {
            // An empty seqpacket message reads as EOF at the peer.
            self.counters.tx_dropped += 1;
            return false;
        }
        let size = framing.header_len() + frame.len();
        let queued = self.tx.queued_bytes();
        if queued > 0 && queued + size > self.tx_limit_bytes {
            self.counters.tx_dropped += 1;
            return false;
        }
        self.tx.reserve(size);
        if !encode_frame(framing, frame, &mut self.tx.buf) {
            self.counters.tx_oversize += 1;
            return false;
        }
        let vnet = matches!(self.io, Io::VnetTap { .. } | Io::VnetStream { .. });
        let partial = match partial {
            Some(p) if !vnet => {
                let at = self.tx.buf.len() - frame.len();
                p.complete(&mut self.tx.buf[at..]);
                None
            }
            p => p,
        };
        if !stream {
            self.tx.lens.push(frame.len());
            self.tx.partial.push(partial);
        }
        self.counters.tx_frames += 1;
        self.counters.tx_bytes += frame.len() as u64;
        true
    }

    /// Writes queued frames with as few syscalls as possible. Ok(true) = queue empty;
    /// Ok(false) = kernel buffer full (or ENOBUFS): register WRITABLE interest and call again.
    pub fn flush(&mut self) -> Result<bool, LinkError> {
        let r = match &mut self.io {
            Io::Stream {
                read,
                write,
                write_is_socket,
                ..
            } => {
                let fd = write.as_ref().unwrap_or(read);
                flush_stream(fd.as_fd(), *write_is_socket, &mut self.tx)
            }
            Io::Packet { fd, kind, .. } => match kind {
                FdKind::Other => flush_each(fd.as_fd(), &mut self.tx, &mut self.counters),
                _ => flush_batched(fd.as_fd(), None, &mut self.tx, &mut self.counters),
            },
            Io::VnetStream {
                fd,
                out,
                out_off,
                hdr,
                ..
            } => flush_vnet_stream(
                fd.as_fd(),
                out,
                out_off,
                hdr,
                &mut self.tx,
                &mut self.counters,
            ),
            Io::VnetTap { fd, hdr, gso, .. } => {
                flush_vnet(fd.as_fd(), hdr, gso, &mut self.tx, &mut self.counters)
            }
            Io::Datagram { fd, peer, .. } => match peer {
                Ok(addr) => flush_batched(fd.as_fd(), Some(addr), &mut self.tx, &mut self.counters),
                Err(msg) => Err(LinkError::Io(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    msg.clone(),
                ))),
            },
        };
        self.tx.reset_if_empty();
        r
    }

    /// Frames (or bytes of them) are waiting to be written.
    pub fn has_pending(&self) -> bool {
        !self.tx.is_empty() || self.out_pending() > 0
    }

    /// Encoded bytes not yet written (vnet stream).
    fn out_pending(&self) -> usize {
        match &self.io {
            Io::VnetStream { out, out_off, .. } => out.len() - out_off,
            _ => 0,
        }
    }

    /// Outgoing bytes queued (including length prefixes on streams).
    pub fn pending_bytes(&self) -> usize {
        self.tx.queued_bytes() + self.out_pending()
    }

    pub fn counters(&self) -> LinkCounters {
        self.counters
    }

    /// The framing given to `new`.
    pub fn framing(&self) -> Framing {
        self.framing
    }
}

/// What a link hands over per frame: the frame, and its partial checksum if it has one.
pub type OnFrame<'a> = dyn FnMut(&[u8], Option<PartialCsum>) + 'a;

fn deliver(
    c: &mut LinkCounters,
    on_frame: &mut OnFrame<'_>,
    frame: &[u8],
    partial: Option<PartialCsum>,
) {
    c.rx_frames += 1;
    c.rx_bytes += frame.len() as u64;
    on_frame(frame, partial);
}

/// Reads a length-prefixed stream. `vnet`: each record is a virtio-net header and a frame
/// (`/connect-vnet`), see [`vnet_record`]; `Some(true)` finishes partial checksums.
fn read_stream(
    fd: BorrowedFd<'_>,
    decoder: &mut StreamDecoder,
    vnet: Option<bool>,
    budget: usize,
    c: &mut LinkCounters,
    on_frame: &mut OnFrame<'_>,
) -> Result<ReadStatus, LinkError> {
    let mut delivered = 0;
    loop {
        while delivered < budget {
            let frame = if let Some(complete) = vnet {
                match decoder.next_frame_mut()? {
                    Some(record) => vnet_record(record, complete, c),
                    None => break,
                }
            } else {
                match decoder.next_frame()? {
                    Some(frame) => Some((frame, None)),
                    None => break,
                }
            };
            if let Some((frame, partial)) = frame {
                deliver(c, on_frame, frame, partial);
                delivered += 1;
            }
        }
        if delivered >= budget {
            return Ok(ReadStatus::Budget);
        }
        let spare = decoder.spare();
        if spare.is_empty() {
            // Unreachable with a capacity above MAX_STREAM_FRAME; never mistake it for EOF.
            return Err(LinkError::Io(io::Error::other(
                "stream receive buffer full",
            )));
        }
        match nix::unistd::read(fd, spare) {
            Ok(0) => return Ok(ReadStatus::Closed),
            Ok(n) => decoder.commit(n),
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => return Ok(ReadStatus::WouldBlock),
            Err(e) => return Err(e.into()),
        }
    }
}

/// recvmmsg on a socket. `zero_is_eof`: seqpacket (and stream) sockets report EOF as a
/// zero-length message; on datagram sockets an empty datagram is just a runt.
fn read_batched(
    fd: BorrowedFd<'_>,
    rx: &mut MessageRx,
    zero_is_eof: bool,
    budget: usize,
    c: &mut LinkCounters,
    on_frame: &mut OnFrame<'_>,
) -> Result<ReadStatus, LinkError> {
    let mut delivered = 0;
    let mut infos = [RecvInfo::default(); MAX_BATCH];
    loop {
        if delivered >= budget {
            return Ok(ReadStatus::Budget);
        }
        let want = rx.batch.min(budget - delivered);
        let n = match sys::recv_batch(fd, &mut rx.buf, rx.slot, want, &mut infos) {
            Ok(n) => n,
            Err(e) => match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) => return Ok(ReadStatus::WouldBlock),
                _ => return Err(e.into()),
            },
        };
        for (info, slot) in infos.iter().zip(rx.buf.chunks_exact(rx.slot)).take(n) {
            if info.truncated {
                c.rx_oversize += 1;
            } else if info.len == 0 && zero_is_eof {
                return Ok(ReadStatus::Closed);
            } else if info.len < MIN_FRAME {
                c.rx_runts += 1;
            } else {
                deliver(c, on_frame, &slot[..info.len], None);
                delivered += 1;
            }
        }
    }
}

/// read() per frame: TAP devices and other non-sockets.
fn read_each(
    fd: BorrowedFd<'_>,
    rx: &mut MessageRx,
    budget: usize,
    c: &mut LinkCounters,
    on_frame: &mut OnFrame<'_>,
) -> Result<ReadStatus, LinkError> {
    let mut delivered = 0;
    let slot = rx.slot;
    let buf = &mut rx.buf[..slot + 1];
    loop {
        if delivered >= budget {
            return Ok(ReadStatus::Budget);
        }
        match nix::unistd::read(fd, buf) {
            Ok(0) => return Ok(ReadStatus::Closed),
            Ok(n) if n > slot => c.rx_oversize += 1,
            Ok(n) if n < MIN_FRAME => c.rx_runts += 1,
            Ok(n) => {
                deliver(c, on_frame, &buf[..n], None);
                delivered += 1;
            }
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => return Ok(ReadStatus::WouldBlock),
            Err(e) => return Err(e.into()),
        }
    }
}

fn flush_stream(fd: BorrowedFd<'_>, is_socket: bool, tx: &mut TxQueue) -> Result<bool, LinkError> {
    while !tx.is_empty() {
        let pending = &tx.buf[tx.off..];
        let r = if is_socket {
            send(
                fd.as_raw_fd(),
                pending,
                MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
            )
        } else {
            nix::unistd::write(fd, pending)
        };
        match r {
            Ok(0) => {
                return Err(LinkError::Io(io::Error::from(io::ErrorKind::WriteZero)));
            }
            Ok(n) => tx.off += n.min(pending.len()),
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => return Ok(false),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(true)
}

fn flush_batched(
    fd: BorrowedFd<'_>,
    dest: Option<&socket2::SockAddr>,
    tx: &mut TxQueue,
    c: &mut LinkCounters,
) -> Result<bool, LinkError> {
    while !tx.is_empty() {
        match sys::send_batch(fd, tx.frames(), dest) {
            Ok(0) => return Ok(false),
            Ok(n) => tx.advance_frames(n),
            Err(e) => match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) | Some(libc::ENOBUFS) => return Ok(false),
                Some(libc::EMSGSIZE) => {
                    // The first frame of the batch is too big for this socket: drop it alone.
                    c.tx_oversize += 1;
                    tx.advance_frames(1);
                }
                _ => return Err(e.into()),
            },
        }
    }
    Ok(true)
}

/// write() per frame: TAP devices and other non-sockets.
fn flush_each(
    fd: BorrowedFd<'_>,
    tx: &mut TxQueue,
    c: &mut LinkCounters,
) -> Result<bool, LinkError> {
    while !tx.is_empty() {
        let len = tx.lens[tx.head];
        let frame = &tx.buf[tx.off..tx.off + len];
        match nix::unistd::write(fd, frame) {
            Ok(_) => tx.advance_frames(1),
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) | Err(Errno::ENOBUFS) => return Ok(false),
            Err(Errno::EMSGSIZE) | Err(Errno::EINVAL) => {
                c.tx_oversize += 1;
                tx.advance_frames(1);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(true)
}

/// read() per frame on a vnet TAP: strip the virtio-net header; a partial checksum is
/// completed (`complete`) or handed on.
fn read_vnet(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    complete: bool,
    budget: usize,
    c: &mut LinkCounters,
    on_frame: &mut OnFrame<'_>,
) -> Result<ReadStatus, LinkError> {
    let mut delivered = 0;
    let slot = buf.len().saturating_sub(1);
    loop {
        if delivered >= budget {
            return Ok(ReadStatus::Budget);
        }
        let n = match nix::unistd::read(fd, buf) {
            Ok(0) => return Ok(ReadStatus::Closed),
            Ok(n) => n,
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => return Ok(ReadStatus::WouldBlock),
            Err(e) => return Err(e.into()),
        };
        if n > slot {
            c.rx_oversize += 1;
            continue;
        }
        if n < VNET_HDR_LEN + MIN_FRAME {
            c.rx_runts += 1;
            continue;
        }
        if let Some((frame, partial)) = vnet_record(&mut buf[..n], complete, c) {
            deliver(c, on_frame, frame, partial);
            delivered += 1;
        }
    }
}

/// writev() per frame on a vnet TAP, or per run of one TCP flow's consecutive segments
/// merged into one TSO segment ([`vnet::plan_gso`]): the payloads are gathered straight
/// from the queue, only the headers are rewritten.
fn flush_vnet(
    fd: BorrowedFd<'_>,
    hdr: &mut Vec<u8>,
    gso: &mut bool,
    tx: &mut TxQueue,
    c: &mut LinkCounters,
) -> Result<bool, LinkError> {
    const PLAIN: [u8; VNET_HDR_LEN] = [0; VNET_HDR_LEN];
    while !tx.is_empty() {
        let count = if *gso { vnet::plan_gso(tx.frames()) } else { 1 };
        let mut vh = PLAIN;
        let mut iov = [io::IoSlice::new(&[]); vnet::MAX_GSO_SEGS + 2];
        let mut n_iov = 0;
        if count > 1 {
            let (h, hdr_len) = merged_header(tx, count, hdr)?;
            vh = h.emit();
            iov[1] = io::IoSlice::new(hdr);
            n_iov = 2;
            for f in tx.frames().take(count) {
                iov[n_iov] = io::IoSlice::new(f.get(hdr_len..).unwrap_or(&[]));
                n_iov += 1;
            }
        } else if let Some(f) = tx.frames().next() {
            if let Some(p) = tx.head_partial() {
                vh = p.header().emit();
            }
            iov[1] = io::IoSlice::new(f);
            n_iov = 2;
        }
        iov[0] = io::IoSlice::new(&vh);
        match nix::sys::uio::writev(fd, &iov[..n_iov]) {
            Ok(_) => {
                if count > 1 {
                    c.tx_gso_writes += 1;
                }
                tx.advance_frames(count.max(1));
            }
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) | Err(Errno::ENOBUFS) => return Ok(false),
            Err(Errno::EMSGSIZE) | Err(Errno::EINVAL) if count > 1 => {
                log::warn!("the TAP refused a TSO write: sending single frames from now on");
                *gso = false;
            }
            Err(Errno::EMSGSIZE) | Err(Errno::EINVAL) => {
                c.tx_oversize += 1;
                tx.advance_frames(1);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(true)
}

/// The frame of one record (virtio-net header + frame), its checksum completed; None (and
/// counted) if the record is malformed.
fn vnet_record<'a>(
    record: &'a mut [u8],
    complete: bool,
    c: &mut LinkCounters,
) -> Option<(&'a [u8], Option<PartialCsum>)> {
    if record.len() < VNET_HDR_LEN + MIN_FRAME {
        c.rx_runts += 1;
        return None;
    }
    let (head, frame) = record.split_at_mut(VNET_HDR_LEN);
    let h = VnetHdr::parse(head)?;
    if h.flags & vnet::F_NEEDS_CSUM == 0 {
        return Some((frame, None));
    }
    let Some(partial) = PartialCsum::new(frame.len(), h.csum_start, h.csum_offset) else {
        c.rx_malformed += 1;
        return None;
    };
    if complete {
        partial.complete(frame);
        return Some((frame, None));
    }
    Some((frame, Some(partial)))
}

/// Encodes queued frames as records (runs of one TCP flow merged, as on a vnet TAP) into
/// `out`, up to about 256 KiB at a time, and sends them.
fn flush_vnet_stream(
    fd: BorrowedFd<'_>,
    out: &mut Vec<u8>,
    out_off: &mut usize,
    hdr: &mut Vec<u8>,
    tx: &mut TxQueue,
    c: &mut LinkCounters,
) -> Result<bool, LinkError> {
    const PLAIN: [u8; VNET_HDR_LEN] = [0; VNET_HDR_LEN];
    loop {
        if *out_off == out.len() {
            out.clear();
            *out_off = 0;
            if tx.is_empty() {
                return Ok(true);
            }
            while !tx.is_empty() && out.len() < VNET_OUT_BYTES {
                let count = vnet::plan_gso(tx.frames()).max(1);
                let len_at = out.len();
                out.extend_from_slice(&[0; 4]);
                if count > 1 {
                    let (vh, hdr_len) = merged_header(tx, count, hdr)?;
                    out.extend_from_slice(&vh.emit());
                    out.extend_from_slice(hdr);
                    for f in tx.frames().take(count) {
                        out.extend_from_slice(f.get(hdr_len..).unwrap_or(&[]));
                    }
                    c.tx_gso_writes += 1;
                } else if let Some(f) = tx.frames().next() {
                    let vh = tx.head_partial().map_or(PLAIN, |p| p.header().emit());
                    out.extend_from_slice(&vh);
                    out.extend_from_slice(f);
                }
                let rec = u32::try_from(out.len() - len_at - 4).unwrap_or(u32::MAX);
                out[len_at..len_at + 4].copy_from_slice(&rec.to_be_bytes());
                tx.advance_frames(count);
            }
        }
        let pending = &out[*out_off..];
        match send(
            fd.as_raw_fd(),
            pending,
            MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(0) => return Err(LinkError::Io(io::Error::from(io::ErrorKind::WriteZero))),
            Ok(n) => *out_off += n.min(pending.len()),
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => return Ok(false),
            Err(e) => return Err(e.into()),
        }
    }
}

/// The headers (into `hdr`) and virtio-net header of the first `count` queued frames merged
/// as one TSO segment ([`vnet::plan_gso`] chose them), and the header length of each frame.
fn merged_header(
    tx: &TxQueue,
    count: usize,
    hdr: &mut Vec<u8>,
) -> Result<(VnetHdr, usize), LinkError> {
    let mut frames = tx.frames().take(count);
    let head = frames.next().unwrap_or(&[]);
    let Some(seg) = vnet::tcp_seg(head) else {
        return Err(LinkError::Io(io::Error::other("gso plan without a head")));
    };
    let mut payload = seg.payload;
    let mut last = head;
    for f in frames {
        payload += f.len().saturating_sub(seg.hdr_len);
        last = f;
    }
    vnet::gso_header(head, payload, vnet::tcp_flags(last), hdr)
        .map(|h| (h, seg.hdr_len))
        .ok_or_else(|| LinkError::Io(io::Error::other("gso header")))
}
