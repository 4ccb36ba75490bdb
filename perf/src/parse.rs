//! Parsers for what the tools print: iperf3's JSON (`-J`), ping's output,
//! `/proc/PID/stat` and `/proc/PID/status`, and nft's counters.

use crate::model::Metrics;
use crate::stats;
use serde_json::Value;

/// Metrics from an iperf3 client's JSON report (`iperf3 -c ... -J`), for
/// TCP or UDP, either direction (`-R` too: the client's report holds both
/// sides' sums). Throughput is the receiver's.
pub fn iperf3_json(text: &str) -> Result<Metrics, String> {
    let v: Value = serde_json::from_str(text.trim()).map_err(|e| {
        let head: String = text.chars().take(200).collect();
        format!("iperf3 printed no JSON report ({e}): {head:?}")
    })?;
    if let Some(err) = v.get("error").and_then(Value::as_str) {
        return Err(format!("iperf3: {err}"));
    }
    let end = v
        .get("end")
        .ok_or_else(|| "iperf3 report has no \"end\" section".to_string())?;
    let received = end
        .get("sum_received")
        .or_else(|| end.get("sum"))
        .ok_or_else(|| "iperf3 report has no sum_received".to_string())?;
    let bps = received
        .get("bits_per_second")
        .and_then(Value::as_f64)
        .ok_or_else(|| "iperf3 report has no bits_per_second".to_string())?;
    let mut m = Metrics {
        gbps: Some(bps / 1e9),
        bytes: received.get("bytes").and_then(Value::as_u64),
        ..Metrics::default()
    };
    if let Some(sent) = end.get("sum_sent") {
        m.retransmits = sent.get("retransmits").and_then(Value::as_u64);
    }
    // UDP: loss and jitter are the receiver's (`sum_received`; older
    // iperf3 versions only have `sum`).
    let udp = end
        .get("sum_received")
        .filter(|s| s.get("lost_percent").is_some())
        .or_else(|| end.get("sum"));
    if let Some(udp) = udp {
        m.lost_percent = udp.get("lost_percent").and_then(Value::as_f64);
        m.jitter_ms = udp.get("jitter_ms").and_then(Value::as_f64);
        if let (Some(p), Some(l)) = (
            udp.get("packets").and_then(Value::as_u64),
            udp.get("lost_packets").and_then(Value::as_u64),
        ) {
            m.transactions = Some(p.saturating_sub(l));
            m.failures = Some(l);
        }
    }
    Ok(m)
}

/// Metrics from `ping -n` output: one `time=X ms` per reply, and the
/// "N packets transmitted, M received" summary.
pub fn ping_output(text: &str) -> Result<Metrics, String> {
    let mut rtts_us: Vec<f64> = Vec::new();
    let mut transmitted: Option<u64> = None;
    let mut received: Option<u64> = None;
    for line in text.lines() {
        if let Some(pos) = line.find("time=") {
            let rest = &line[pos + 5..];
            let num: String = rest
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            if let Ok(ms) = num.parse::<f64>() {
                let unit = rest[num.len()..].trim_start();
                let us = if unit.starts_with("us") || unit.starts_with("µs") {
                    ms
                } else {
                    ms * 1000.0
                };
                rtts_us.push(us);
            }
        }
        if line.contains("packets transmitted") {
            for part in line.split(',') {
                let mut words = part.split_whitespace();
                let n = words.next().and_then(|w| w.parse::<u64>().ok());
                let what = words.next();
                match (n, what) {
                    (Some(n), Some("packets")) => transmitted = Some(n),
                    (Some(n), Some("received")) => received = Some(n),
                    _ => {}
                }
            }
        }
    }
    let transmitted = transmitted.ok_or_else(|| {
        let tail: String = text.lines().rev().take(3).collect::<Vec<_>>().join(" | ");
        format!("ping printed no summary: {tail:?}")
    })?;
    let received = received.unwrap_or(0);
    let Some((p50, p99, mean)) = stats::summarize(&mut rtts_us) else {
        return Err(format!("no echo reply ({transmitted} sent)"));
    };
    Ok(Metrics {
        transactions: Some(received),
        failures: Some(transmitted.saturating_sub(received)),
        lost_percent: Some(if transmitted == 0 {
            0.0
        } else {
            100.0 * transmitted.saturating_sub(received) as f64 / transmitted as f64
        }),
        p50_us: Some(p50),
        p99_us: Some(p99),
        mean_us: Some(mean),
        ..Metrics::default()
    })
}

/// From `/proc/PID/stat`: (ppid, utime + stime in clock ticks). The command
/// name may hold spaces and parentheses, so fields are counted from the
/// last `)`.
pub fn proc_stat(text: &str) -> Option<(i32, u64)> {
    let after = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the name: state(3) ppid(4) ... utime(14) stime(15), 1-based
    // over the whole line; here index 0 is field 3.
    let ppid = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((ppid, utime + stime))
}

/// `VmHWM` (peak resident set) from `/proc/PID/status`, in KiB.
pub fn vm_hwm_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// Sum of the `counter packets N` of an `nft list table` output.
pub fn nft_packets(text: &str) -> u64 {
    let words: Vec<&str> = text.split_whitespace().collect();
    words
        .windows(3)
        .filter(|w| w[0] == "counter" && w[1] == "packets")
        .filter_map(|w| w[2].parse::<u64>().ok())
        .sum()
}

/// `mtu N` from `ip -o link show DEV`.
pub fn link_mtu(text: &str) -> Option<u32> {
    let words: Vec<&str> = text.split_whitespace().collect();
    words
        .windows(2)
        .find(|w| w[0] == "mtu")
        .and_then(|w| w[1].parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP_R: &str = r#"{"start":{"version":"iperf 3.12"},"intervals":[],
      "end":{"streams":[],
        "sum_sent":{"start":0,"end":1.00299,"seconds":1.00299,"bytes":1631846400,
                    "bits_per_second":13015853797.146532,"retransmits":3,"sender":false},
        "sum_received":{"start":0,"end":1.00027,"seconds":1.00027,"bytes":1619263488,
                    "bits_per_second":12950611238.965479,"sender":false},
        "cpu_utilization_percent":{}}}"#;

    const UDP: &str = r#"{"start":{},"end":{"streams":[],
        "sum":{"bytes":12489920,"bits_per_second":99907471.0,"jitter_ms":0.0075,
               "lost_packets":0,"packets":8485,"lost_percent":0,"sender":true},
        "sum_sent":{"bytes":12489920,"bits_per_second":99907471.0,"jitter_ms":0,
               "lost_packets":0,"packets":8485,"lost_percent":0,"sender":true},
        "sum_received":{"bytes":12000000,"bits_per_second":96000000.0,"jitter_ms":0.02,
               "lost_packets":85,"packets":8485,"lost_percent":1.0017,"sender":false}}}"#;

    #[test]
    fn iperf3_tcp_reverse() {
        let m = iperf3_json(TCP_R).unwrap();
        assert!((m.gbps.unwrap() - 12.950611238965479).abs() < 1e-9);
        assert_eq!(m.bytes, Some(1619263488));
        assert_eq!(m.retransmits, Some(3));
        assert_eq!(m.lost_percent, None);
    }

    #[test]
    fn iperf3_udp_loss_is_the_receivers() {
        let m = iperf3_json(UDP).unwrap();
        assert!((m.gbps.unwrap() - 0.096).abs() < 1e-9);
        assert_eq!(m.lost_percent, Some(1.0017));
        assert_eq!(m.jitter_ms, Some(0.02));
        assert_eq!(m.transactions, Some(8400));
        assert_eq!(m.failures, Some(85));
    }

    #[test]
    fn iperf3_old_udp_has_only_sum() {
        let old = r#"{"end":{"sum":{"bytes":100,"bits_per_second":8e8,"jitter_ms":0.1,
            "lost_packets":1,"packets":10,"lost_percent":10}}}"#;
        let m = iperf3_json(old).unwrap();
        assert_eq!(m.gbps, Some(0.8));
        assert_eq!(m.lost_percent, Some(10.0));
    }

    #[test]
    fn iperf3_errors() {
        let e = iperf3_json(
            r#"{"start":{},"error":"unable to connect to server: Connection refused"}"#,
        )
        .unwrap_err();
        assert_eq!(e, "iperf3: unable to connect to server: Connection refused");
        assert!(iperf3_json("").unwrap_err().contains("no JSON"));
        assert!(iperf3_json("{}").unwrap_err().contains("end"));
    }

    const PING: &str = "PING 192.168.127.1 (192.168.127.1) 56(84) bytes of data.
64 bytes from 192.168.127.1: icmp_seq=1 ttl=64 time=0.120 ms
64 bytes from 192.168.127.1: icmp_seq=2 ttl=64 time=0.080 ms
64 bytes from 192.168.127.1: icmp_seq=3 ttl=64 time=1.50 ms
64 bytes from 192.168.127.1: icmp_seq=4 ttl=64 time=0.100 ms

--- 192.168.127.1 ping statistics ---
5 packets transmitted, 4 received, 20% packet loss, time 41ms
rtt min/avg/max/mdev = 0.080/0.450/1.500/0.600 ms
";

    #[test]
    fn ping_percentiles_and_loss() {
        let m = ping_output(PING).unwrap();
        assert_eq!(m.p50_us, Some(100.0));
        assert_eq!(m.p99_us, Some(1500.0));
        assert_eq!(m.transactions, Some(4));
        assert_eq!(m.failures, Some(1));
        assert_eq!(m.lost_percent, Some(20.0));
    }

    #[test]
    fn ping_without_replies() {
        let text = "PING 10.0.2.2 (10.0.2.2) 56(84) bytes of data.\n\n--- 10.0.2.2 ping statistics ---\n3 packets transmitted, 0 received, 100% packet loss, time 2004ms\n";
        assert_eq!(ping_output(text).unwrap_err(), "no echo reply (3 sent)");
        assert!(ping_output("ping: connect: Network is unreachable")
            .unwrap_err()
            .contains("no summary"));
    }

    #[test]
    fn proc_stat_with_odd_names() {
        let line = "4242 (my (odd) name) S 17 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0 1000 1000000 200 18446744073709551615";
        assert_eq!(proc_stat(line), Some((17, 325)));
        assert_eq!(proc_stat("garbage"), None);
    }

    #[test]
    fn status_hwm() {
        let s = "Name:\tgvproxy\nVmPeak:\t  20000 kB\nVmHWM:\t    8123 kB\nVmRSS:\t 7000 kB\n";
        assert_eq!(vm_hwm_kib(s), Some(8123));
        assert_eq!(vm_hwm_kib("Name: x\n"), None);
    }

    #[test]
    fn nft_counters() {
        let t = "table inet test_guard {
	chain out {
		oifname \"eth0\" ip daddr { 10.0.0.0/8 } counter packets 3 bytes 180 drop
		oifname \"eth0\" ip6 daddr { fc00::/7 } counter packets 0 bytes 0 drop
	}
}";
        assert_eq!(nft_packets(t), 3);
        assert_eq!(nft_packets(""), 0);
    }

    #[test]
    fn mtu_of_a_link() {
        let t = "5: tap0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 65520 qdisc fq_codel state UP mode DEFAULT group default qlen 1000\\    link/ether 5a:94:ef:e4:0c:ee brd ff:ff:ff:ff:ff:ff";
        assert_eq!(link_mtu(t), Some(65520));
        assert_eq!(link_mtu("nothing"), None);
    }
}
