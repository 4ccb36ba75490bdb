//! What a run is: the engines, the workloads, the directions, and the record
//! kept of every run (the JSON file holds a list of these).

use serde::{Deserialize, Serialize};
use std::fmt;

/// A user-mode network (or a kernel path used as a ceiling) serving a guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum EngineKind {
    /// gvproxy + gvforwarder over `/connect` (the VM-like path).
    #[serde(rename = "ours")]
    Ours,
    /// gvproxy serving the namespace's TAP itself (`-listen-tap`).
    #[serde(rename = "ours-tap")]
    OursTap,
    /// Another gvproxy/gvforwarder pair given by path (e.g. the Go original).
    #[serde(rename = "other")]
    Other,
    #[serde(rename = "slirp4netns")]
    Slirp4netns,
    #[serde(rename = "pasta")]
    Pasta,
    /// Ceiling: a veth pair between two namespaces, no user-mode stack.
    #[serde(rename = "veth")]
    Veth,
    /// Ceiling: the host's loopback, no namespace.
    #[serde(rename = "loopback")]
    Loopback,
}

impl EngineKind {
    pub const ALL: [EngineKind; 7] = [
        EngineKind::Ours,
        EngineKind::OursTap,
        EngineKind::Other,
        EngineKind::Slirp4netns,
        EngineKind::Pasta,
        EngineKind::Veth,
        EngineKind::Loopback,
    ];

    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Ours => "ours",
            EngineKind::OursTap => "ours-tap",
            EngineKind::Other => "other",
            EngineKind::Slirp4netns => "slirp4netns",
            EngineKind::Pasta => "pasta",
            EngineKind::Veth => "veth",
            EngineKind::Loopback => "loopback",
        }
    }

    pub fn parse(s: &str) -> Option<EngineKind> {
        EngineKind::ALL.into_iter().find(|e| e.name() == s)
    }

    /// Engines built from this repository: the left side of every ratio.
    pub fn is_ours(self) -> bool {
        matches!(self, EngineKind::Ours | EngineKind::OursTap)
    }

    /// Kernel paths with no user-mode stack (no process to charge CPU to).
    pub fn is_ceiling(self) -> bool {
        matches!(self, EngineKind::Veth | EngineKind::Loopback)
    }
}

impl fmt::Display for EngineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Workload {
    /// iperf3, TCP, one stream.
    #[serde(rename = "tcp")]
    Tcp,
    /// iperf3, TCP, 4 parallel streams.
    #[serde(rename = "tcp4")]
    Tcp4,
    /// New connection, one small request, one small reply, close.
    #[serde(rename = "crr")]
    Crr,
    /// 1-byte round trips on one connection.
    #[serde(rename = "rr")]
    Rr,
    /// iperf3, UDP at a fixed offered rate.
    #[serde(rename = "udp")]
    Udp,
    /// ICMP echo to the engine's gateway.
    #[serde(rename = "ping")]
    Ping,
}

/// Whether a bigger number is better (rates) or a smaller one (latencies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
}

impl Workload {
    pub const ALL: [Workload; 6] = [
        Workload::Tcp,
        Workload::Tcp4,
        Workload::Crr,
        Workload::Rr,
        Workload::Udp,
        Workload::Ping,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Workload::Tcp => "tcp",
            Workload::Tcp4 => "tcp4",
            Workload::Crr => "crr",
            Workload::Rr => "rr",
            Workload::Udp => "udp",
            Workload::Ping => "ping",
        }
    }

    pub fn parse(s: &str) -> Option<Workload> {
        Workload::ALL.into_iter().find(|w| w.name() == s)
    }

    /// Label used in the table and the chart.
    pub fn label(self) -> &'static str {
        match self {
            Workload::Tcp => "TCP 1 stream",
            Workload::Tcp4 => "TCP 4 streams",
            Workload::Crr => "TCP connect+req+resp",
            Workload::Rr => "TCP 1-byte round trip",
            Workload::Udp => "UDP fixed rate",
            Workload::Ping => "ping gateway",
        }
    }

    /// Unit of the headline number.
    pub fn unit(self) -> &'static str {
        match self {
            Workload::Tcp | Workload::Tcp4 | Workload::Udp => "Gbit/s",
            Workload::Crr => "conn/s",
            Workload::Rr | Workload::Ping => "µs p50 / p99",
        }
    }

    pub fn better(self) -> Better {
        match self {
            Workload::Rr | Workload::Ping => Better::Lower,
            _ => Better::Higher,
        }
    }

    /// Moves bulk data: CPU per GB is meaningful.
    pub fn is_bulk(self) -> bool {
        matches!(self, Workload::Tcp | Workload::Tcp4 | Workload::Udp)
    }

    /// Directions this workload runs in: ping only goes from the guest.
    pub fn directions(self) -> &'static [Direction] {
        match self {
            Workload::Ping => &[Direction::GuestToHost],
            _ => &[Direction::GuestToHost, Direction::HostToGuest],
        }
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which way the data (or, for round trips, the first byte) goes. The guest
/// always opens the connection (user-mode NATs need no port forwarding that
/// way): host→guest is iperf3 `-R`, and for our request/response workloads
/// the host side speaks first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Direction {
    #[serde(rename = "g2h")]
    GuestToHost,
    #[serde(rename = "h2g")]
    HostToGuest,
}

impl Direction {
    pub fn name(self) -> &'static str {
        match self {
            Direction::GuestToHost => "g2h",
            Direction::HostToGuest => "h2g",
        }
    }

    pub fn parse(s: &str) -> Option<Direction> {
        match s {
            "g2h" | "guest-to-host" => Some(Direction::GuestToHost),
            "h2g" | "host-to-guest" => Some(Direction::HostToGuest),
            _ => None,
        }
    }

    pub fn arrow(self) -> &'static str {
        match self {
            Direction::GuestToHost => "guest→host",
            Direction::HostToGuest => "host→guest",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What one run measured. Every field is optional: each workload fills the
/// ones that apply.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Receiver-side throughput.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gbps: Option<f64>,
    /// Bytes the receiver got.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retransmits: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lost_percent: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jitter_ms: Option<f64>,
    /// Completed transactions (connections, round trips, echo replies).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transactions: Option<u64>,
    /// Failed transactions (connections that failed, pings unanswered).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failures: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p50_us: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99_us: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean_us: Option<f64>,
    /// Something a successful run should still report (failed connections,
    /// unanswered pings).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Metrics {
    /// The headline number of `workload` (see `Workload::unit`).
    pub fn headline(&self, workload: Workload) -> Option<f64> {
        match workload {
            Workload::Tcp | Workload::Tcp4 | Workload::Udp => self.gbps,
            Workload::Crr => self.rate_per_s,
            Workload::Rr | Workload::Ping => self.p50_us,
        }
    }
}

/// CPU and memory the engine's processes used during one run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cost {
    /// utime + stime of every engine process, after minus before.
    pub cpu_s: f64,
    /// `cpu_s` per 10^9 bytes received (bulk workloads only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_s_per_gb: Option<f64>,
    /// `cpu_s` per transaction, in µs (connect rate and round trips).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_us_per_txn: Option<f64>,
    /// Sum over the engine's processes of VmHWM, reset before the run.
    pub peak_rss_kib: u64,
    /// The processes measured ("gvproxy 1234", ...).
    pub processes: Vec<String>,
}

/// One run of one workload in one direction through one engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub engine: EngineKind,
    pub workload: Workload,
    pub direction: Direction,
    /// The MTU asked for (loopback keeps lo's own; it sets the UDP
    /// datagram size there).
    pub mtu: u32,
    /// The MTU the guest interface really had.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest_mtu: Option<u32>,
    pub rep: u32,
    pub duration_s: u32,
    pub started_unix_ms: u64,
    pub wall_s: f64,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub metrics: Metrics,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost: Option<Cost>,
}

impl RunRecord {
    pub fn headline(&self) -> Option<f64> {
        if self.ok {
            self.metrics.headline(self.workload)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for e in EngineKind::ALL {
            assert_eq!(EngineKind::parse(e.name()), Some(e));
            let json = serde_json::to_string(&e).unwrap();
            assert_eq!(json, format!("\"{}\"", e.name()));
        }
        for w in Workload::ALL {
            assert_eq!(Workload::parse(w.name()), Some(w));
        }
        assert_eq!(Direction::parse("h2g"), Some(Direction::HostToGuest));
        assert_eq!(Direction::parse("x"), None);
    }

    #[test]
    fn headline_follows_the_workload() {
        let m = Metrics {
            gbps: Some(2.0),
            rate_per_s: Some(900.0),
            p50_us: Some(40.0),
            ..Metrics::default()
        };
        assert_eq!(m.headline(Workload::Tcp4), Some(2.0));
        assert_eq!(m.headline(Workload::Crr), Some(900.0));
        assert_eq!(m.headline(Workload::Ping), Some(40.0));
        assert_eq!(Workload::Ping.directions().len(), 1);
        assert_eq!(Workload::Rr.better(), Better::Lower);
    }
}
