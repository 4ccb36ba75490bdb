//! DNS server of the virtual gateway (192.168.127.1:53, UDP and TCP).
//!
//! # Theory of operation
//!
//! Names in the static zones ([`Zones`]: upstream's model, JSON shape and merge rules) are
//! answered here: one A record with TTL 0, NODATA for other types, NXDOMAIN for a name in
//! a zone that matches nothing. Every other query is forwarded **as the raw DNS message**
//! to the host's resolvers (the `nameserver` lines of resolv.conf), so that every type,
//! EDNS0, the TC bit and the exact rcode come back as the resolver said them. Upstream
//! gvproxy instead re-synthesises a few types through the system resolver and turns every
//! error into NXDOMAIN.
//!
//! ```text
//!  guest UDP ─NAT─> 127.0.0.1:eph ─> dns-udp ──┬─ zones / FORMERR / NOTIMP ──> reply
//!                                              └─ pending table ─> upstream UDP socket
//!                                                   (random id)       │  ▲ dns-upstream:
//!                                                                     ▼  │ match, relay,
//!                                                               host resolvers retry, SERVFAIL
//!  guest TCP ─socketpair─> serve_stream ─> dns-tcp (one per connection, bounded)
//!                                          └─ zones, or one TCP exchange per attempt
//! ```
//!
//! - **Ids.** A forwarded query leaves with a fresh random id; an answer is accepted only
//!   with that id, from a resolver the query was sent to, carrying the same question
//!   (RFC 5452 §4.1–4.3); the client's id is put back before relaying.
//! - **Truncation.** A UDP answer with TC set is relayed as is: the client retries over
//!   TCP, and queries arriving over TCP are forwarded over TCP.
//! - **Retries.** `attempts` per resolver, `timeout` each, then the next resolver; starting
//!   with the resolver that answered last. When all fail: SERVFAIL with the client's id and
//!   question. UDP retries are driven by the reader threads' 25 ms sweep, so a dead
//!   resolver costs no thread.
//! - **Bounds.** One thread per bound UDP socket, one reader per upstream address family,
//!   one per TCP connection up to `max_tcp_connections`; at most `max_inflight` UDP queries
//!   wait for resolvers (more are dropped and counted), each at most 4 KiB.
//! - **Bad input.** Messages are read through checked views ([`wire`]); a readable header
//!   with a bad body gets FORMERR, an unreadable one (or a response) is dropped; RFC 9619:
//!   QDCOUNT must be 1.
//! - **resolv.conf** is re-read when it changes (checked at most once a second); 127.0.0.x
//!   resolvers work like any other; without a nameserver line, 127.0.0.1 is used.

pub mod resolvers;
mod server;
mod tcp;
mod udp;
pub mod wire;
pub mod zones;

pub use resolvers::parse_resolv_conf;
pub use server::{DnsConfig, DnsCounters, DnsServer};
pub use tcp::DnsStream;
pub use udp::MAX_FORWARDED_QUERY_LEN;
pub use zones::{Lookup, Record, Zone, ZoneRegex, Zones};
