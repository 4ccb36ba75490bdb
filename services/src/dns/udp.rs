//! DNS over UDP: one receiving thread per bound socket, and a table of queries waiting for
//! a resolver, served by one reader thread per upstream socket (address family).
//!
//! ```text
//!  client ──> dns-udp thread ──┬─ local / error ──> reply at once
//!                              └─ forward: new random id, entry in `pending`, send to the
//!                                 preferred resolver from the upstream socket
//!  resolver ──> dns-upstream thread: id, source and question must match a pending entry,
//!               then the client's id is put back and the answer relayed byte for byte;
//!               every 25 ms it also re-sends expired entries (next attempt, then next
//!               resolver) or gives up with SERVFAIL.
//! ```

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::server::{Action, Counters, DnsServer};
use super::wire::{
    build_error_reply, rcode, response_matches, set_id, Header, Question, MAX_MESSAGE_LEN,
};

/// How often the reader threads look for expired entries (also their receive timeout).
const SWEEP_INTERVAL: Duration = Duration::from_millis(25);
/// How often the client-facing thread checks for shutdown.
const CLIENT_POLL: Duration = Duration::from_millis(200);
/// A UDP query longer than this is not forwarded (FORMERR): it bounds the memory of the
/// pending table (`max_inflight` × this). Real queries, EDNS options and padding included,
/// are well under 1 KiB.
pub const MAX_FORWARDED_QUERY_LEN: usize = 4096;

/// A UDP query waiting for a resolver.
pub(crate) struct Pending {
    client_sock: Arc<UdpSocket>,
    client_addr: SocketAddr,
    client_id: u16,
    /// The client's message with our id in place.
    query: Vec<u8>,
    question: Question,
    servers: Arc<[SocketAddr]>,
    /// Index in `servers` of the resolver being tried.
    current: usize,
    /// Resolvers tried so far, `current` included.
    tried: usize,
    /// Attempts made on `current`.
    attempt: u32,
    /// Resolvers the query was sent to: answers are accepted only from these.
    sent_to: u32,
    deadline: Instant,
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

impl DnsServer {
    /// Serve DNS over UDP on `addr` (port 0: an ephemeral port). Returns the bound address.
    /// One thread receives and answers; forwarded queries are multiplexed on the upstream
    /// sockets, so a slow resolver never holds up local answers.
    pub fn bind_udp(self: &Arc<Self>, addr: SocketAddr) -> io::Result<SocketAddr> {
        let sock = UdpSocket::bind(addr)?;
        sock.set_read_timeout(Some(CLIENT_POLL))?;
        let local = sock.local_addr()?;
        let me = Arc::clone(self);
        let sock = Arc::new(sock);
        thread::Builder::new()
            .name("dns-udp".into())
            .spawn(move || me.udp_loop(&sock))?;
        Ok(local)
    }

    fn udp_loop(&self, sock: &Arc<UdpSocket>) {
        let mut buf = vec![0u8; MAX_MESSAGE_LEN];
        let mut out = Vec::with_capacity(512);
        while !self.is_shut_down() {
            let (n, from) = match sock.recv_from(&mut buf) {
                Ok(r) => r,
                Err(e) if is_timeout(&e) => continue,
                Err(e) => {
                    // E.g. ECONNREFUSED left by an ICMP error for an earlier reply.
                    log::debug!("dns: udp receive: {e}");
                    continue;
                }
            };
            Counters::inc(&self.counters.udp_queries);
            let Some(msg) = buf.get(..n) else { continue };
            match self.process(msg, &mut out) {
                Action::Drop => continue,
                Action::Reply => {}
                Action::Forward(q) if msg.len() > MAX_FORWARDED_QUERY_LEN => {
                    build_error_reply(&q.header, rcode::FORMERR, &mut out);
                    Counters::inc(&self.counters.formerr_sent);
                }
                Action::Forward(q) => {
                    self.forward_udp(sock, from, msg, q.header.id, q.question);
                    continue;
                }
            }
            if let Err(e) = sock.send_to(&out, from) {
                log::debug!("dns: udp reply to {from}: {e}");
            }
        }
    }

    /// Put a query in the pending table and send its first attempt.
    fn forward_udp(
        &self,
        client_sock: &Arc<UdpSocket>,
        client_addr: SocketAddr,
        msg: &[u8],
        client_id: u16,
        question: Question,
    ) {
        let now = Instant::now();
        let servers = self.resolvers.current(now);
        let mut table = self.pending.lock();
        if table.len() >= self.cfg.max_inflight {
            Counters::inc(&self.counters.dropped_overload);
            return;
        }
        // A fresh id not in use; with the table at most `max_inflight` full a few draws do.
        let Some(id) = (0..64)
            .map(|_| self.ids.next())
            .find(|id| !table.contains_key(id))
        else {
            Counters::inc(&self.counters.dropped_overload);
            return;
        };
        let mut query = msg.to_vec();
        set_id(&mut query, id);
        let n = servers.len().max(1);
        let mut p = Pending {
            client_sock: Arc::clone(client_sock),
            client_addr,
            client_id,
            query,
            question,
            current: self.preferred.load(Ordering::Relaxed) % n,
            servers,
            tried: 1,
            attempt: 0,
            sent_to: 0,
            deadline: now,
        };
        Counters::inc(&self.counters.forwarded);
        if self.send_next_attempt(&mut p, now) {
            table.insert(id, p);
        } else {
            drop(table);
            self.give_up(&p);
        }
    }

    /// Send the next attempt of `p`: another one to the same resolver while attempts are
    /// left, else the first one to the next resolver. False when all are used up.
    fn send_next_attempt(&self, p: &mut Pending, now: Instant) -> bool {
        let attempts = self.cfg.attempts.max(1);
        loop {
            if p.attempt < attempts {
                p.attempt += 1;
            } else if p.tried < p.servers.len() {
                p.tried += 1;
                p.current = (p.current + 1) % p.servers.len();
                p.attempt = 1;
            } else {
                return false;
            }
            let Some(&addr) = p.servers.get(p.current) else {
                return false;
            };
            if p.sent_to != 0 {
                Counters::inc(&self.counters.upstream_retries);
            }
            match self
                .upstream_socket(addr)
                .and_then(|s| s.send_to(&p.query, addr))
            {
                Ok(_) => {
                    p.sent_to |= 1 << (p.current % 32);
                    p.deadline = now + self.cfg.timeout;
                    return true;
                }
                Err(e) => {
                    // Unreachable, no IPv6, ...: further attempts there would fail alike.
                    log::debug!("dns: send to resolver {addr}: {e}");
                    p.attempt = attempts;
                }
            }
        }
    }

    fn give_up(&self, p: &Pending) {
        let mut out = Vec::new();
        self.servfail(&p.query, p.client_id, &mut out);
        if !out.is_empty() {
            if let Err(e) = p.client_sock.send_to(&out, p.client_addr) {
                log::debug!("dns: udp reply to {}: {e}", p.client_addr);
            }
        }
    }

    /// The upstream socket for `addr`'s family, created (with its reader thread) on first
    /// use. Bound to the wildcard address on an ephemeral port chosen by the kernel.
    fn upstream_socket(&self, addr: SocketAddr) -> io::Result<Arc<UdpSocket>> {
        let (slot, bind): (_, SocketAddr) = if addr.is_ipv4() {
            (
                &self.upstream_v4,
                (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
            )
        } else {
            (
                &self.upstream_v6,
                (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
            )
        };
        let mut slot = slot.lock();
        if let Some(s) = slot.as_ref() {
            return Ok(Arc::clone(s));
        }
        let sock = UdpSocket::bind(bind)?;
        sock.set_read_timeout(Some(SWEEP_INTERVAL))?;
        let sock = Arc::new(sock);
        let reader = Arc::clone(&sock);
        let me = self
            .me
            .upgrade()
            .ok_or_else(|| io::Error::other("dns server is gone"))?;
        thread::Builder::new()
            .name("dns-upstream".into())
            .spawn(move || me.upstream_loop(&reader))?;
        *slot = Some(Arc::clone(&sock));
        Ok(sock)
    }

    fn upstream_loop(&self, sock: &UdpSocket) {
        let mut buf = vec![0u8; MAX_MESSAGE_LEN];
        while !self.is_shut_down() {
            match sock.recv_from(&mut buf) {
                Ok((n, from)) => {
                    if let Some(msg) = buf.get_mut(..n) {
                        self.process_upstream(msg, from);
                    }
                }
                Err(e) if is_timeout(&e) => {}
                Err(e) => {
                    log::debug!("dns: upstream receive: {e}");
                    thread::sleep(SWEEP_INTERVAL);
                }
            }
            self.sweep(Instant::now());
        }
    }

    /// A message from a resolver: relay it if it answers a pending query.
    fn process_upstream(&self, msg: &mut [u8], from: SocketAddr) {
        let Ok(h) = Header::parse(msg) else {
            Counters::inc(&self.counters.upstream_mismatched);
            return;
        };
        let mut table = self.pending.lock();
        let accepted = table.get(&h.id).and_then(|p| {
            let index = p.servers.iter().enumerate().position(|(i, s)| {
                p.sent_to & (1 << (i % 32)) != 0 && s.ip() == from.ip() && s.port() == from.port()
            })?;
            response_matches(msg, h.id, &p.question).then_some(index)
        });
        let Some(index) = accepted else {
            Counters::inc(&self.counters.upstream_mismatched);
            return;
        };
        let Some(p) = table.remove(&h.id) else { return };
        drop(table);
        self.preferred.store(index, Ordering::Relaxed);
        Counters::inc(&self.counters.upstream_answers);
        set_id(msg, p.client_id);
        if let Err(e) = p.client_sock.send_to(msg, p.client_addr) {
            log::debug!("dns: udp reply to {}: {e}", p.client_addr);
        }
    }

    /// Re-send or give up on entries whose deadline has passed.
    fn sweep(&self, now: Instant) {
        {
            let mut next = self.next_sweep.lock();
            if now < *next {
                return;
            }
            *next = now + SWEEP_INTERVAL;
        }
        let mut failed = Vec::new();
        {
            let mut table = self.pending.lock();
            let expired: Vec<u16> = table
                .iter()
                .filter(|(_, p)| p.deadline <= now)
                .map(|(id, _)| *id)
                .collect();
            for id in expired {
                let Some(p) = table.get_mut(&id) else {
                    continue;
                };
                if !self.send_next_attempt(p, now) {
                    failed.extend(table.remove(&id));
                }
            }
        }
        for p in &failed {
            self.give_up(p);
        }
    }
}
