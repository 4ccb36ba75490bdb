//! The server object shared by the UDP and TCP paths: configuration, zones, counters, and
//! the decision every query goes through ([`DnsServer::process`]).

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use serde::Serialize;

use super::resolvers::Resolvers;
use super::udp::Pending;
use super::wire::{
    build_error_reply, build_local_reply, rcode, LocalReply, Query, QueryError, CLASS_ANY, CLASS_IN,
};
use super::zones::{Lookup, Zone, Zones};

/// How the server reaches the host's resolvers, and its bounds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsConfig {
    /// Where the resolvers are listed (`nameserver` lines). Re-read when it changes.
    pub resolv_conf: PathBuf,
    /// Port of every resolver (resolv.conf has no port syntax; tests use their own).
    pub resolver_port: u16,
    /// How long to wait for one resolver's answer to one attempt.
    pub timeout: Duration,
    /// Attempts per resolver before moving on to the next one.
    pub attempts: u32,
    /// UDP queries waiting for a resolver at once; beyond that new ones are dropped
    /// (counted in `dropped_overload`) and the client retries.
    pub max_inflight: usize,
    /// DNS-over-TCP connections served at once (one thread each); beyond that a new
    /// connection is closed at once.
    pub max_tcp_connections: usize,
    /// A TCP connection is closed when no complete query arrives within this time
    /// (RFC 7766 §6.2.3: servers should close idle connections after a few seconds).
    pub tcp_idle_timeout: Duration,
}

impl Default for DnsConfig {
    fn default() -> DnsConfig {
        DnsConfig {
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
            resolver_port: 53,
            timeout: Duration::from_secs(2),
            attempts: 2,
            max_inflight: 1024,
            max_tcp_connections: 64,
            tcp_idle_timeout: Duration::from_secs(10),
        }
    }
}

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// A snapshot of the server's counters (for `/stats`).
        #[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
        pub struct DnsCounters {
            $($(#[$doc])* pub $name: u64,)*
        }

        #[derive(Default)]
        pub(crate) struct Counters {
            $(pub(crate) $name: AtomicU64,)*
        }

        impl Counters {
            fn snapshot(&self) -> DnsCounters {
                DnsCounters { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }
    };
}

counters! {
    /// Datagrams received from clients.
    udp_queries,
    /// Messages received over TCP.
    tcp_queries,
    /// TCP connections served.
    tcp_connections,
    /// TCP connections refused because `max_tcp_connections` were open.
    tcp_rejected,
    /// Queries answered from the local zones (A, NODATA or NXDOMAIN).
    local_answers,
    /// Queries sent to the host's resolvers.
    forwarded,
    /// Re-sends to a resolver (same or next) after a timeout or send error.
    upstream_retries,
    /// Resolver answers relayed to clients.
    upstream_answers,
    /// Resolver messages ignored: unknown or late id, wrong source, wrong question.
    upstream_mismatched,
    /// SERVFAIL sent because no resolver answered in time.
    servfail_sent,
    /// FORMERR sent for a malformed query with a readable header.
    formerr_sent,
    /// NOTIMP sent for an opcode other than QUERY.
    notimp_sent,
    /// Messages dropped without a reply: shorter than a header, or a response (QR set).
    dropped_malformed,
    /// UDP queries dropped because `max_inflight` were waiting for a resolver.
    dropped_overload,
}

impl Counters {
    pub(crate) fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// Random 16-bit ids for queries sent upstream: a process-random SipHash key (std's
/// `RandomState`) over a counter, so ids are unpredictable to an off-path spoofer without
/// reading a random device per query.
pub(crate) struct IdGen {
    keys: RandomState,
    counter: AtomicU64,
}

impl IdGen {
    fn new() -> IdGen {
        IdGen {
            keys: RandomState::new(),
            counter: AtomicU64::new(0),
        }
    }
    pub(crate) fn next(&self) -> u16 {
        let v = self
            .keys
            .hash_one(self.counter.fetch_add(1, Ordering::Relaxed));
        let b = v.to_le_bytes();
        u16::from_le_bytes([b[0], b[1]])
    }
}

/// What to do with one received message.
pub(crate) enum Action {
    /// Nothing to answer (no header, or a response): drop it (UDP) or close (TCP).
    Drop,
    /// The reply is in the output buffer.
    Reply,
    /// Not local: send it to the host's resolvers.
    Forward(Query),
}

/// The DNS server of the virtual gateway. See the module documentation.
pub struct DnsServer {
    /// Itself, for threads spawned from `&self` (upstream readers).
    pub(crate) me: Weak<DnsServer>,
    pub(crate) cfg: DnsConfig,
    zones: RwLock<Zones>,
    pub(crate) resolvers: Resolvers,
    pub(crate) counters: Counters,
    pub(crate) ids: IdGen,
    /// Index (in the resolver list) of the resolver that answered last: tried first.
    pub(crate) preferred: AtomicUsize,
    pub(crate) shutdown: AtomicBool,
    /// UDP queries waiting for a resolver, by the id we sent them with.
    pub(crate) pending: Mutex<HashMap<u16, Pending>>,
    pub(crate) next_sweep: Mutex<Instant>,
    /// Upstream UDP sockets, one per address family, created on first use.
    pub(crate) upstream_v4: Mutex<Option<Arc<UdpSocket>>>,
    pub(crate) upstream_v6: Mutex<Option<Arc<UdpSocket>>>,
    pub(crate) tcp_active: AtomicUsize,
    /// Addresses of `bind_tcp` listeners, to wake their accept on shutdown.
    pub(crate) tcp_listeners: Mutex<Vec<SocketAddr>>,
}

impl DnsServer {
    pub fn new(cfg: DnsConfig, zones: Zones) -> Arc<DnsServer> {
        Arc::new_cyclic(|me| DnsServer {
            me: me.clone(),
            resolvers: Resolvers::new(cfg.resolv_conf.clone(), cfg.resolver_port),
            cfg,
            zones: RwLock::new(zones),
            counters: Counters::default(),
            ids: IdGen::new(),
            preferred: AtomicUsize::new(0),
            shutdown: AtomicBool::new(false),
            pending: Mutex::new(HashMap::new()),
            next_sweep: Mutex::new(Instant::now()),
            upstream_v4: Mutex::new(None),
            upstream_v6: Mutex::new(None),
            tcp_active: AtomicUsize::new(0),
            tcp_listeners: Mutex::new(Vec::new()),
        })
    }

    pub fn config(&self) -> &DnsConfig {
        &self.cfg
    }

    /// A copy of the zones, in order (for `/services/dns/all`).
    pub fn zones(&self) -> Zones {
        self.zones.read().clone()
    }

    /// Merge a zone as upstream's `/services/dns/add` does ([`Zones::add`]); effective for
    /// the next query.
    pub fn add_zone(&self, zone: Zone) {
        self.zones.write().add(zone);
    }

    /// Answer from the zones only (no forwarding): what a query for `qname`/`qtype` gets.
    pub fn lookup(&self, qname: &str, qtype: u16) -> Lookup {
        self.zones.read().lookup(qname, qtype)
    }

    pub fn counters(&self) -> DnsCounters {
        self.counters.snapshot()
    }

    /// The resolvers queries go to now (re-reads resolv.conf if it changed).
    pub fn resolvers(&self) -> Vec<SocketAddr> {
        self.resolvers.current(Instant::now()).to_vec()
    }

    /// Stop every thread of this server: UDP loops and upstream readers within a fraction
    /// of a second, TCP connections after their current query or idle timeout.
    pub fn shutdown(&self) {
        self.shutdown.store(true, Ordering::Relaxed);
        for addr in self.tcp_listeners.lock().drain(..) {
            let wake = match addr.ip() {
                IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
                IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, addr.port()).into(),
                _ => addr,
            };
            let _ = TcpStream::connect_timeout(&wake, Duration::from_millis(100));
        }
    }

    pub(crate) fn is_shut_down(&self) -> bool {
        self.shutdown.load(Ordering::Relaxed)
    }

    /// Decide what one message from a client gets. Local answers and errors are written to
    /// `out`; a query for a name outside the zones comes back as [`Action::Forward`].
    pub(crate) fn process(&self, msg: &[u8], out: &mut Vec<u8>) -> Action {
        let c = &self.counters;
        let query = match Query::parse(msg, false) {
            Ok(q) => q,
            Err(QueryError::NoHeader | QueryError::NotAQuery(_)) => {
                Counters::inc(&c.dropped_malformed);
                return Action::Drop;
            }
            Err(QueryError::Opcode(h)) => {
                build_error_reply(&h, rcode::NOTIMP, out);
                Counters::inc(&c.notimp_sent);
                return Action::Reply;
            }
            Err(QueryError::Format(h)) => {
                build_error_reply(&h, rcode::FORMERR, out);
                Counters::inc(&c.formerr_sent);
                return Action::Reply;
            }
        };
        let q = &query.question;
        let lookup = if matches!(q.qclass, CLASS_IN | CLASS_ANY) {
            self.zones.read().lookup_name(&q.name, q.qtype)
        } else {
            Lookup::NotLocal
        };
        let reply = match lookup {
            Lookup::NotLocal => return Action::Forward(query),
            Lookup::A(ip) => LocalReply::A(ip),
            Lookup::NoData => LocalReply::NoData,
            Lookup::NxDomain => LocalReply::Rcode(rcode::NXDOMAIN),
        };
        // Answered here: read the rest of the message for its OPT record.
        let query = match Query::parse(msg, true) {
            Ok(q) => q,
            Err(_) => {
                build_error_reply(&query.header, rcode::FORMERR, out);
                Counters::inc(&c.formerr_sent);
                return Action::Reply;
            }
        };
        let reply = match query.edns {
            Some(e) if e.version > 0 => LocalReply::BadVers,
            _ => reply,
        };
        build_local_reply(&query, reply, out);
        Counters::inc(&c.local_answers);
        Action::Reply
    }

    /// The SERVFAIL a client gets when no resolver answered: its id and question, its OPT
    /// echoed (or FORMERR-less header only if even that cannot be read back).
    pub(crate) fn servfail(&self, msg: &[u8], client_id: u16, out: &mut Vec<u8>) {
        Counters::inc(&self.counters.servfail_sent);
        match Query::parse(msg, true).or_else(|_| Query::parse(msg, false)) {
            Ok(mut q) => {
                q.header.id = client_id;
                build_local_reply(&q, LocalReply::Rcode(rcode::SERVFAIL), out);
            }
            Err(
                QueryError::NotAQuery(mut h)
                | QueryError::Opcode(mut h)
                | QueryError::Format(mut h),
            ) => {
                h.id = client_id;
                build_error_reply(&h, rcode::SERVFAIL, out);
            }
            Err(QueryError::NoHeader) => out.clear(),
        }
    }
}
