//! DNS over TCP (RFC 1035 §4.2.2, RFC 7766): one thread per connection, up to
//! `max_tcp_connections`; queries on a connection are answered in order; forwarded queries
//! go to the resolvers over TCP too, one connection per query (over UDP for a resolver
//! that refuses TCP).

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::server::{Action, Counters, DnsServer};
use super::wire::{response_matches, set_id, Query, Question, MAX_MESSAGE_LEN};

/// A connected byte stream the server can put timeouts on (the guest's TCP connections
/// arrive as unix socketpair ends; tests use TCP).
pub trait DnsStream: Read + Write + Send + 'static {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;
    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;
}

impl DnsStream for UnixStream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        UnixStream::set_read_timeout(self, timeout)
    }
    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        UnixStream::set_write_timeout(self, timeout)
    }
}

impl DnsStream for TcpStream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        TcpStream::set_read_timeout(self, timeout)
    }
    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        TcpStream::set_write_timeout(self, timeout)
    }
}

/// Fill `buf` before `deadline`. `Ok(false)` when the peer closed before the first byte.
fn read_full<S: DnsStream>(s: &mut S, buf: &mut [u8], deadline: Instant) -> io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        s.set_read_timeout(Some(left))?;
        let Some(rest) = buf.get_mut(got..) else {
            break;
        };
        match s.read(rest) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// One length-prefixed message (RFC 1035 §4.2.2) in a single write.
fn write_framed<S: Write>(s: &mut S, msg: &[u8], framed: &mut Vec<u8>) -> io::Result<()> {
    let len = u16::try_from(msg.len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    framed.clear();
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(msg);
    s.write_all(framed)
}

/// Decrements the open-connection count however the connection thread ends.
struct ConnSlot(Arc<DnsServer>);

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.0.tcp_active.fetch_sub(1, Ordering::Relaxed);
    }
}

impl DnsServer {
    /// Serve DNS over TCP on a connected stream: 2-byte length prefix, any number of queries
    /// in order, closed after `tcp_idle_timeout` without a complete query, on EOF, on a
    /// message without a readable header, or on shutdown. Returns at once; the stream is
    /// served on a thread of its own, or closed if `max_tcp_connections` are open.
    pub fn serve_stream<S: DnsStream>(self: &Arc<Self>, stream: S) {
        if self.tcp_active.fetch_add(1, Ordering::Relaxed) >= self.cfg.max_tcp_connections {
            self.tcp_active.fetch_sub(1, Ordering::Relaxed);
            Counters::inc(&self.counters.tcp_rejected);
            return;
        }
        Counters::inc(&self.counters.tcp_connections);
        let slot = ConnSlot(Arc::clone(self));
        let spawned = thread::Builder::new()
            .name("dns-tcp".into())
            .spawn(move || {
                let slot = slot;
                slot.0.tcp_conn(stream);
            });
        if let Err(e) = spawned {
            // The closure (and with it the slot) is dropped: the count is given back.
            log::warn!("dns: cannot start a tcp connection thread: {e}");
        }
    }

    /// Accept TCP connections on `addr` and serve each with [`DnsServer::serve_stream`]
    /// (for tests and tools; gvproxy hands the guest's connections to `serve_stream`).
    pub fn bind_tcp(self: &Arc<Self>, addr: SocketAddr) -> io::Result<SocketAddr> {
        let listener = TcpListener::bind(addr)?;
        let local = listener.local_addr()?;
        let me = Arc::clone(self);
        thread::Builder::new()
            .name("dns-tcp-accept".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    // `shutdown` connects once to wake this blocking accept.
                    if me.is_shut_down() {
                        return;
                    }
                    match conn {
                        Ok(s) => {
                            let _ = s.set_nodelay(true);
                            me.serve_stream(s);
                        }
                        Err(e) => {
                            log::debug!("dns: tcp accept: {e}");
                            thread::sleep(Duration::from_millis(20));
                        }
                    }
                }
            })?;
        self.tcp_listeners.lock().push(local);
        Ok(local)
    }

    fn tcp_conn<S: DnsStream>(&self, mut s: S) {
        if let Err(e) = s.set_write_timeout(Some(self.cfg.tcp_idle_timeout)) {
            log::debug!("dns: tcp: {e}");
            return;
        }
        let mut buf = vec![0u8; MAX_MESSAGE_LEN];
        let mut out = Vec::with_capacity(512);
        let mut framed = Vec::with_capacity(514);
        while !self.is_shut_down() {
            let deadline = Instant::now() + self.cfg.tcp_idle_timeout;
            let mut len = [0u8; 2];
            match read_full(&mut s, &mut len, deadline) {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => {
                    log::trace!("dns: tcp: {e}");
                    return;
                }
            }
            let Some(msg) = buf.get_mut(..usize::from(u16::from_be_bytes(len))) else {
                return;
            };
            if !matches!(read_full(&mut s, msg, deadline), Ok(true)) {
                return;
            }
            Counters::inc(&self.counters.tcp_queries);
            match self.process(msg, &mut out) {
                // RFC 7766 §6.2.4 leaves it to the server; nothing to reply to, so close.
                Action::Drop => return,
                Action::Reply => {}
                Action::Forward(q) => self.forward_tcp(msg, &q, &mut out),
            }
            if out.is_empty() || write_framed(&mut s, &out, &mut framed).is_err() {
                return;
            }
        }
    }

    /// Forward a query over TCP: resolvers in order from the preferred one, `attempts`
    /// each, `timeout` per attempt (connect, send and answer together); SERVFAIL if none
    /// answers. Each attempt has a fresh random id; the answer must carry it and the
    /// question, and gets the client's id back.
    ///
    /// A resolver that refuses or drops TCP at once (some host resolvers serve UDP only)
    /// is asked over UDP for that attempt instead: its answer, TC bit included, is the best
    /// there is, and better than a SERVFAIL.
    fn forward_tcp(&self, msg: &[u8], q: &Query, out: &mut Vec<u8>) {
        let servers = self.resolvers.current(Instant::now());
        let n = servers.len();
        let start = self.preferred.load(Ordering::Relaxed) % n.max(1);
        let mut query = msg.to_vec();
        Counters::inc(&self.counters.forwarded);
        let mut first = true;
        for i in 0..n {
            let index = (start + i) % n;
            let Some(&addr) = servers.get(index) else {
                continue;
            };
            for _ in 0..self.cfg.attempts.max(1) {
                if !first {
                    Counters::inc(&self.counters.upstream_retries);
                }
                first = false;
                let id = self.ids.next();
                set_id(&mut query, id);
                let answer = match exchange_tcp(addr, &query, self.cfg.timeout) {
                    Err(e) if tcp_unsupported(&e) => {
                        log::debug!("dns: tcp to {addr}: {e}; asking over udp");
                        self.exchange_udp(addr, &query, id, &q.question)
                    }
                    Ok(resp) if !response_matches(&resp, id, &q.question) => {
                        Counters::inc(&self.counters.upstream_mismatched);
                        continue;
                    }
                    other => other,
                };
                match answer {
                    Ok(resp) => {
                        *out = resp;
                        set_id(out, q.header.id);
                        self.preferred.store(index, Ordering::Relaxed);
                        Counters::inc(&self.counters.upstream_answers);
                        return;
                    }
                    Err(e) => log::debug!("dns: exchange with {addr}: {e}"),
                }
            }
        }
        self.servfail(msg, q.header.id, out);
    }

    /// One query over UDP from a connected socket of its own (the kernel filters the
    /// source); messages that do not match `id` and `question` are skipped until the
    /// attempt's `timeout` runs out.
    fn exchange_udp(
        &self,
        addr: SocketAddr,
        query: &[u8],
        id: u16,
        question: &Question,
    ) -> io::Result<Vec<u8>> {
        let deadline = Instant::now() + self.cfg.timeout;
        let bind: SocketAddr = if addr.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let sock = UdpSocket::bind(bind)?;
        sock.connect(addr)?;
        sock.send(query)?;
        let mut buf = vec![0u8; MAX_MESSAGE_LEN];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            sock.set_read_timeout(Some(left))?;
            let n = match sock.recv(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let resp = buf.get(..n).unwrap_or_default();
            if response_matches(resp, id, question) {
                return Ok(resp.to_vec());
            }
            Counters::inc(&self.counters.upstream_mismatched);
        }
    }
}

/// The resolver does not do TCP (nothing listens, or it closes at once).
fn tcp_unsupported(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
    )
}

/// One query and its answer over a new TCP connection, all within `timeout`.
fn exchange_tcp(addr: SocketAddr, query: &[u8], timeout: Duration) -> io::Result<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_nodelay(true)?;
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::ErrorKind::TimedOut.into());
    }
    s.set_write_timeout(Some(left))?;
    write_framed(&mut s, query, &mut Vec::with_capacity(query.len() + 2))?;
    let mut len = [0u8; 2];
    if !read_full(&mut s, &mut len, deadline)? {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    let mut resp = vec![0u8; usize::from(u16::from_be_bytes(len))];
    if !read_full(&mut s, &mut resp, deadline)? {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(resp)
}
