//! A pcap tap on the switch: every frame on every port, as classic pcap with
//! LINKTYPE_ETHERNET (upstream writes LINKTYPE_RAW from the gateway only, so
//! guest-to-guest traffic and Ethernet headers are missing there).
//!
//! The switch loop only copies the frame into a bounded channel; a writer thread does
//! the file I/O. When the writer falls behind, frames are dropped and counted: capture
//! never slows the data path.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Sender, TrySendError};

/// Frames queued for the writer before the tap starts dropping.
const QUEUE_FRAMES: usize = 8192;
/// Bytes kept of each frame (upstream keeps everything; 64 KiB frames are rare).
const SNAPLEN: usize = 65_535;
const LINKTYPE_ETHERNET: u32 = 1;

struct Record {
    ts: SystemTime,
    orig_len: usize,
    data: Vec<u8>,
}

/// The switch side of the tap.
pub struct PcapTap {
    tx: Sender<Record>,
    dropped: Arc<AtomicU64>,
    written: Arc<AtomicU64>,
}

impl PcapTap {
    /// Creates (truncates) `path`, writes the file header and starts the writer thread.
    pub fn create(path: &Path) -> io::Result<PcapTap> {
        let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
        write_header(&mut out)?;
        out.flush()?;
        let (tx, rx) = crossbeam_channel::bounded::<Record>(QUEUE_FRAMES);
        let dropped = Arc::new(AtomicU64::new(0));
        let written = Arc::new(AtomicU64::new(0));
        let (d, w) = (dropped.clone(), written.clone());
        thread::Builder::new().name("pcap".into()).spawn(move || {
            while let Ok(first) = rx.recv() {
                // Write what queued up meanwhile too, then flush once: the file stays
                // readable (`tcpdump -r`) while capture runs, without a syscall per frame.
                let (mut n, mut ok) = (0u64, true);
                let mut next = Some(first);
                while let Some(rec) = next {
                    ok &= write_record(&mut out, &rec).is_ok();
                    n += 1;
                    next = rx.try_recv().ok();
                }
                ok &= out.flush().is_ok();
                if ok { &w } else { &d }.fetch_add(n, Ordering::Relaxed);
            }
        })?;
        Ok(PcapTap {
            tx,
            dropped,
            written,
        })
    }

    /// Queues a copy of `frame`; drops it (counted) when the writer is behind.
    pub fn capture(&self, frame: &[u8]) {
        let keep = frame.len().min(SNAPLEN);
        let rec = Record {
            ts: SystemTime::now(),
            orig_len: frame.len(),
            data: frame[..keep].to_vec(),
        };
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.tx.try_send(rec) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

fn write_header(w: &mut impl Write) -> io::Result<()> {
    // Classic pcap, microsecond timestamps, native byte order (readers detect it from
    // the magic number).
    w.write_all(&0xa1b2_c3d4u32.to_ne_bytes())?;
    w.write_all(&2u16.to_ne_bytes())?;
    w.write_all(&4u16.to_ne_bytes())?;
    w.write_all(&0i32.to_ne_bytes())?;
    w.write_all(&0u32.to_ne_bytes())?;
    w.write_all(&u32::try_from(SNAPLEN).unwrap_or(u32::MAX).to_ne_bytes())?;
    w.write_all(&LINKTYPE_ETHERNET.to_ne_bytes())
}

fn write_record(w: &mut impl Write, rec: &Record) -> io::Result<()> {
    let since = rec.ts.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = u32::try_from(since.as_secs()).unwrap_or(u32::MAX);
    let incl = u32::try_from(rec.data.len()).unwrap_or(u32::MAX);
    let orig = u32::try_from(rec.orig_len).unwrap_or(u32::MAX);
    w.write_all(&secs.to_ne_bytes())?;
    w.write_all(&since.subsec_micros().to_ne_bytes())?;
    w.write_all(&incl.to_ne_bytes())?;
    w.write_all(&orig.to_ne_bytes())?;
    w.write_all(&rec.data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn writes_a_readable_capture() {
        let path = std::env::temp_dir().join(format!("pcap-test-{}.pcap", std::process::id()));
        let tap = PcapTap::create(&path).unwrap();
        let frame: Vec<u8> = (0..60u8).collect();
        tap.capture(&frame);
        tap.capture(&frame[..42]);
        let deadline = Instant::now() + Duration::from_secs(5);
        while tap.written() < 2 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        let bytes = std::fs::read(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!(bytes.len(), 24 + 16 + 60 + 16 + 42);
        assert_eq!(&bytes[..4], &0xa1b2_c3d4u32.to_ne_bytes());
        assert_eq!(&bytes[20..24], &1u32.to_ne_bytes());
        assert_eq!(&bytes[24 + 8..24 + 12], &60u32.to_ne_bytes());
        assert_eq!(&bytes[40..100], &frame[..]);
        assert_eq!(tap.dropped(), 0);
    }
}
