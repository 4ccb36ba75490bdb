//! From runs to results: medians per (engine, workload, direction, MTU),
//! ratios of ours to each peer, the Markdown tables, and the JSON file.

use crate::model::{Better, Direction, EngineKind, RunRecord, Workload};
use crate::stats::median;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

/// Where a summary belongs: one row of the table is (workload, direction,
/// MTU), one column an engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Key {
    pub workload: Workload,
    pub mtu: u32,
    pub direction: Direction,
    pub engine: EngineKind,
}

/// Medians over the repetitions of one (engine, workload, direction, MTU).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub engine: EngineKind,
    pub workload: Workload,
    pub direction: Direction,
    pub mtu: u32,
    pub runs: usize,
    pub ok_runs: usize,
    /// Median of the headline number (`Workload::unit`).
    pub median: Option<f64>,
    pub unit: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub median_p99_us: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub median_lost_percent: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub median_cpu_s_per_gb: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub median_cpu_us_per_txn: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_peak_rss_kib: Option<u64>,
    /// Distinct errors of the failed runs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// Notes of the successful runs (failed connections, lost pings).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

pub fn summarize(records: &[RunRecord]) -> BTreeMap<Key, Summary> {
    let mut groups: BTreeMap<Key, Vec<&RunRecord>> = BTreeMap::new();
    for r in records {
        let key = Key {
            workload: r.workload,
            mtu: r.mtu,
            direction: r.direction,
            engine: r.engine,
        };
        groups.entry(key).or_default().push(r);
    }
    groups
        .into_iter()
        .map(|(key, runs)| {
            let ok: Vec<&&RunRecord> = runs.iter().filter(|r| r.ok).collect();
            let collect = |f: &dyn Fn(&RunRecord) -> Option<f64>| -> Option<f64> {
                median(&ok.iter().filter_map(|r| f(r)).collect::<Vec<f64>>())
            };
            let mut errors: Vec<String> = Vec::new();
            for r in &runs {
                if let Some(e) = &r.error {
                    if !errors.contains(e) {
                        errors.push(e.clone());
                    }
                }
            }
            let notes: Vec<String> = ok.iter().filter_map(|r| r.metrics.note.clone()).collect();
            let summary = Summary {
                engine: key.engine,
                workload: key.workload,
                direction: key.direction,
                mtu: key.mtu,
                runs: runs.len(),
                ok_runs: ok.len(),
                median: collect(&|r| r.headline()),
                unit: key.workload.unit(),
                median_p99_us: collect(&|r| r.metrics.p99_us),
                median_lost_percent: if key.workload == Workload::Udp {
                    collect(&|r| r.metrics.lost_percent)
                } else {
                    None
                },
                median_cpu_s_per_gb: collect(&|r| r.cost.as_ref().and_then(|c| c.cpu_s_per_gb)),
                median_cpu_us_per_txn: collect(&|r| r.cost.as_ref().and_then(|c| c.cpu_us_per_txn)),
                max_peak_rss_kib: runs
                    .iter()
                    .filter_map(|r| r.cost.as_ref().map(|c| c.peak_rss_kib))
                    .max(),
                errors,
                notes,
            };
            (key, summary)
        })
        .collect()
}

/// How much better `ours` is than `peer`: > 1 means ours is better, for
/// rates (ours / peer) and latencies (peer / ours) alike.
pub fn advantage(workload: Workload, ours: f64, peer: f64) -> Option<f64> {
    let (num, den) = match workload.better() {
        Better::Higher => (ours, peer),
        Better::Lower => (peer, ours),
    };
    (den > 0.0 && num.is_finite() && den.is_finite()).then(|| num / den)
}

/// The headline number as the table shows it.
pub fn format_value(s: &Summary) -> String {
    let Some(v) = s.median else {
        return String::new();
    };
    match s.workload {
        Workload::Tcp | Workload::Tcp4 => format!("{v:.2}"),
        Workload::Udp => match s.median_lost_percent {
            Some(l) => format!("{v:.2} ({} loss)", format_percent(l)),
            None => format!("{v:.2}"),
        },
        Workload::Crr => format!("{v:.0}"),
        Workload::Rr | Workload::Ping => match s.median_p99_us {
            Some(p99) => format!("{v:.0} / {p99:.0}"),
            None => format!("{v:.0}"),
        },
    }
}

fn format_percent(p: f64) -> String {
    if p == 0.0 {
        "0%".to_string()
    } else if p < 0.1 {
        format!("{p:.3}%")
    } else {
        format!("{p:.1}%")
    }
}

/// Row order: workloads as asked, then MTU, then direction.
pub fn rows(
    summaries: &BTreeMap<Key, Summary>,
    workloads: &[Workload],
) -> Vec<(Workload, u32, Direction)> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for &w in workloads {
        for k in summaries.keys().filter(|k| k.workload == w) {
            if seen.insert((k.workload, k.mtu, k.direction)) {
                out.push((k.workload, k.mtu, k.direction));
            }
        }
    }
    out
}

/// Engines present in the summaries, in the canonical order.
pub fn engines_present(summaries: &BTreeMap<Key, Summary>) -> Vec<EngineKind> {
    let present: BTreeSet<EngineKind> = summaries.keys().map(|k| k.engine).collect();
    EngineKind::ALL
        .into_iter()
        .filter(|e| present.contains(e))
        .collect()
}

/// Footnotes collected while rendering cells.
#[derive(Default)]
struct Notes {
    list: Vec<String>,
}

impl Notes {
    fn add(&mut self, text: String) -> usize {
        if let Some(i) = self.list.iter().position(|t| *t == text) {
            return i + 1;
        }
        self.list.push(text);
        self.list.len()
    }
}

fn one_line(e: &str, max: usize) -> String {
    let flat: String = e
        .chars()
        .map(|c| if c == '\n' || c == '|' { ' ' } else { c })
        .collect();
    if flat.chars().count() > max {
        let cut: String = flat.chars().take(max).collect();
        format!("{cut}…")
    } else {
        flat
    }
}

fn cell(s: Option<&Summary>, notes: &mut Notes) -> String {
    let Some(s) = s else {
        return "—".to_string();
    };
    let label = format!("{} {} {} mtu {}", s.engine, s.workload, s.direction, s.mtu);
    if s.ok_runs == 0 {
        let n = notes.add(format!(
            "{label}: failed: {}",
            one_line(s.errors.first().map_or("no result", String::as_str), 300)
        ));
        return format!("FAIL[{n}]");
    }
    let mut text = format_value(s);
    if s.ok_runs < s.runs {
        let n = notes.add(format!(
            "{label}: {} of {} runs failed: {}",
            s.runs - s.ok_runs,
            s.runs,
            one_line(s.errors.first().map_or("", String::as_str), 300)
        ));
        text.push_str(&format!(" [{n}]"));
    }
    if let Some(first) = s.notes.first() {
        let n = notes.add(format!(
            "{label}: in {} of {} runs: {}",
            s.notes.len(),
            s.ok_runs,
            one_line(first, 300)
        ));
        text.push_str(&format!(" [{n}]"));
    }
    text
}

/// The main table: one row per (workload, MTU, direction), a column per
/// engine (medians), and the advantage of each of ours over each peer.
pub fn markdown_table(summaries: &BTreeMap<Key, Summary>, workloads: &[Workload]) -> String {
    let engines = engines_present(summaries);
    let ours: Vec<EngineKind> = engines.iter().copied().filter(|e| e.is_ours()).collect();
    let peers: Vec<EngineKind> = engines
        .iter()
        .copied()
        .filter(|e| !e.is_ours() && *e != EngineKind::Loopback)
        .collect();
    let mut notes = Notes::default();
    let mut out = String::new();
    let mut header = vec![
        "workload".to_string(),
        "unit".to_string(),
        "MTU".to_string(),
        "direction".to_string(),
    ];
    header.extend(engines.iter().map(|e| e.name().to_string()));
    for o in &ours {
        for p in &peers {
            header.push(format!("{o} vs {p}"));
        }
    }
    let _ = writeln!(out, "| {} |", header.join(" | "));
    let aligns: Vec<&str> = header
        .iter()
        .enumerate()
        .map(|(i, _)| if i < 4 { "---" } else { "---:" })
        .collect();
    let _ = writeln!(out, "|{}|", aligns.join("|"));
    for (w, mtu, dir) in rows(summaries, workloads) {
        let get = |e: EngineKind| {
            summaries.get(&Key {
                workload: w,
                mtu,
                direction: dir,
                engine: e,
            })
        };
        let mut row = vec![
            w.label().to_string(),
            w.unit().to_string(),
            mtu.to_string(),
            if w == Workload::Ping {
                "guest→gateway".to_string()
            } else {
                dir.arrow().to_string()
            },
        ];
        for &e in &engines {
            row.push(cell(get(e), &mut notes));
        }
        for &o in &ours {
            for &p in &peers {
                let ratio = match (get(o).and_then(|s| s.median), get(p).and_then(|s| s.median)) {
                    (Some(a), Some(b)) => advantage(w, a, b).map(|r| format!("{r:.2}×")),
                    _ => None,
                };
                row.push(ratio.unwrap_or_else(|| "—".to_string()));
            }
        }
        let _ = writeln!(out, "| {} |", row.join(" | "));
    }
    if !ours.is_empty() && !peers.is_empty() {
        out.push_str(
            "\n\"X vs Y\": how many times better X is than Y (rates: X/Y; latencies: Y/X); \
             above 1 means X is better. Cells are medians of the repetitions; \
             p50 / p99 for latencies. Loopback (the host's lo) runs at every MTU \
             but keeps lo's own MTU; the MTU only sets its UDP datagram size.\n",
        );
    }
    if !notes.list.is_empty() {
        out.push('\n');
        for (i, n) in notes.list.iter().enumerate() {
            let _ = writeln!(out, "[{}] {n}  ", i + 1);
        }
    }
    out
}

/// What the engines cost: CPU seconds per GB moved (bulk workloads), CPU
/// per connection, and peak RSS, per engine and MTU.
pub fn markdown_costs(summaries: &BTreeMap<Key, Summary>) -> String {
    let engines: Vec<EngineKind> = engines_present(summaries)
        .into_iter()
        .filter(|e| !e.is_ceiling())
        .collect();
    let mut cols: Vec<(Workload, Direction)> = Vec::new();
    for w in [Workload::Tcp, Workload::Tcp4, Workload::Udp, Workload::Crr] {
        for dir in [Direction::GuestToHost, Direction::HostToGuest] {
            if summaries
                .keys()
                .any(|k| k.workload == w && k.direction == dir)
            {
                cols.push((w, dir));
            }
        }
    }
    if engines.is_empty() {
        return String::new();
    }
    let mtus: BTreeSet<u32> = summaries.keys().map(|k| k.mtu).collect();
    let mut out = String::new();
    let mut header = vec!["engine".to_string(), "MTU".to_string()];
    for (w, dir) in &cols {
        let unit = if *w == Workload::Crr {
            "CPU µs/conn"
        } else {
            "CPU s/GB"
        };
        header.push(format!("{} {} {unit}", w.name(), dir.name()));
    }
    header.push("peak RSS MiB".to_string());
    let _ = writeln!(out, "| {} |", header.join(" | "));
    let aligns: Vec<&str> = header
        .iter()
        .enumerate()
        .map(|(i, _)| if i < 2 { "---" } else { "---:" })
        .collect();
    let _ = writeln!(out, "|{}|", aligns.join("|"));
    for &e in &engines {
        for &mtu in &mtus {
            let of_engine: Vec<&Summary> = summaries
                .values()
                .filter(|s| s.engine == e && s.mtu == mtu)
                .collect();
            if of_engine.is_empty() {
                continue;
            }
            let mut row = vec![e.name().to_string(), mtu.to_string()];
            for (w, dir) in &cols {
                let s = of_engine
                    .iter()
                    .find(|s| s.workload == *w && s.direction == *dir);
                let v = s.and_then(|s| {
                    if *w == Workload::Crr {
                        s.median_cpu_us_per_txn.map(|v| format!("{v:.1}"))
                    } else {
                        s.median_cpu_s_per_gb.map(|v| format!("{v:.2}"))
                    }
                });
                row.push(v.unwrap_or_else(|| "—".to_string()));
            }
            let rss = of_engine.iter().filter_map(|s| s.max_peak_rss_kib).max();
            row.push(rss.map_or_else(|| "—".to_string(), |k| format!("{:.1}", k as f64 / 1024.0)));
            let _ = writeln!(out, "| {} |", row.join(" | "));
        }
    }
    out.push_str(
        "\nCPU: utime+stime of every engine process (ours: gvproxy and gvforwarder), \
         sampled before and after each run, per 10^9 bytes received (medians). \
         Peak RSS: the sum of the processes' VmHWM, reset before each run (largest run).\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Cost, Metrics};

    fn rec(engine: EngineKind, w: Workload, dir: Direction, mtu: u32, v: Option<f64>) -> RunRecord {
        let mut metrics = Metrics::default();
        match w {
            Workload::Crr => metrics.rate_per_s = v,
            Workload::Rr | Workload::Ping => {
                metrics.p50_us = v;
                metrics.p99_us = v.map(|x| x * 2.0);
            }
            _ => {
                metrics.gbps = v;
                metrics.bytes = Some(1_000_000_000);
            }
        }
        RunRecord {
            engine,
            workload: w,
            direction: dir,
            mtu,
            guest_mtu: Some(mtu),
            rep: 1,
            duration_s: 1,
            started_unix_ms: 0,
            wall_s: 1.0,
            ok: v.is_some(),
            error: v.is_none().then(|| "iperf3: unable to connect".to_string()),
            metrics,
            cost: (!engine.is_ceiling()).then(|| Cost {
                cpu_s: 2.0,
                cpu_s_per_gb: Some(2.0),
                cpu_us_per_txn: None,
                peak_rss_kib: 10240,
                processes: vec![],
            }),
        }
    }

    const G: Direction = Direction::GuestToHost;

    #[test]
    fn medians_and_failures() {
        let records = vec![
            rec(EngineKind::Ours, Workload::Tcp, G, 1500, Some(3.0)),
            rec(EngineKind::Ours, Workload::Tcp, G, 1500, Some(1.0)),
            rec(EngineKind::Ours, Workload::Tcp, G, 1500, Some(2.0)),
            rec(EngineKind::Pasta, Workload::Tcp, G, 1500, None),
        ];
        let s = summarize(&records);
        let ours = &s[&Key {
            workload: Workload::Tcp,
            mtu: 1500,
            direction: G,
            engine: EngineKind::Ours,
        }];
        assert_eq!((ours.runs, ours.ok_runs, ours.median), (3, 3, Some(2.0)));
        assert_eq!(ours.median_cpu_s_per_gb, Some(2.0));
        assert_eq!(ours.max_peak_rss_kib, Some(10240));
        let pasta = s.values().find(|s| s.engine == EngineKind::Pasta).unwrap();
        assert_eq!(pasta.ok_runs, 0);
        assert_eq!(pasta.errors, vec!["iperf3: unable to connect".to_string()]);
    }

    #[test]
    fn advantage_is_above_one_when_ours_is_better() {
        assert_eq!(advantage(Workload::Tcp, 6.0, 2.0), Some(3.0));
        assert_eq!(advantage(Workload::Rr, 50.0, 100.0), Some(2.0));
        assert_eq!(advantage(Workload::Crr, 1.0, 0.0), None);
    }

    #[test]
    fn table_has_ratios_and_footnotes() {
        let records = vec![
            rec(EngineKind::Ours, Workload::Tcp, G, 1500, Some(3.0)),
            rec(EngineKind::Slirp4netns, Workload::Tcp, G, 1500, Some(1.0)),
            rec(EngineKind::Pasta, Workload::Tcp, G, 1500, None),
            rec(EngineKind::Loopback, Workload::Tcp, G, 1500, Some(20.0)),
            rec(EngineKind::Ours, Workload::Ping, G, 1500, Some(40.0)),
            rec(EngineKind::Slirp4netns, Workload::Ping, G, 1500, Some(80.0)),
        ];
        let s = summarize(&records);
        let t = markdown_table(&s, &[Workload::Tcp, Workload::Ping]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "| workload | unit | MTU | direction | ours | slirp4netns | pasta | loopback | ours vs slirp4netns | ours vs pasta |"
        );
        assert_eq!(
            lines[2],
            "| TCP 1 stream | Gbit/s | 1500 | guest→host | 3.00 | 1.00 | FAIL[1] | 20.00 | 3.00× | — |"
        );
        assert_eq!(
            lines[3],
            "| ping gateway | µs p50 / p99 | 1500 | guest→gateway | 40 / 80 | 80 / 160 | — | — | 2.00× | — |"
        );
        assert!(t.contains("[1] pasta tcp g2h mtu 1500: failed: iperf3: unable to connect"));
        let c = markdown_costs(&s);
        assert!(c.contains("| ours | 1500 | 2.00 | 10.0 |"), "{c}");
        assert!(!c.contains("loopback"));
    }

    #[test]
    fn partial_failures_are_marked() {
        let records = vec![
            rec(EngineKind::Ours, Workload::Crr, G, 1500, Some(1000.0)),
            rec(EngineKind::Ours, Workload::Crr, G, 1500, None),
        ];
        let t = markdown_table(&summarize(&records), &[Workload::Crr]);
        assert!(t.contains("| 1000 [1] |"), "{t}");
        assert!(t.contains("1 of 2 runs failed"));
    }

    #[test]
    fn notes_of_good_runs_are_footnotes() {
        let mut r = rec(EngineKind::Ours, Workload::Ping, G, 1500, Some(100.0));
        r.metrics.note = Some("2 of 200 echo requests unanswered".to_string());
        let t = markdown_table(&summarize(&[r]), &[Workload::Ping]);
        assert!(t.contains("| 100 / 200 [1] |"), "{t}");
        assert!(t.contains("[1] ours ping g2h mtu 1500: in 1 of 1 runs: 2 of 200 echo"));
    }

    #[test]
    fn values_format_per_workload() {
        let mut s = summarize(&[rec(EngineKind::Ours, Workload::Udp, G, 1500, Some(0.4912))])
            .into_values()
            .next()
            .unwrap();
        s.median_lost_percent = Some(0.26);
        assert_eq!(format_value(&s), "0.49 (0.3% loss)");
        s.median_lost_percent = Some(0.0);
        assert_eq!(format_value(&s), "0.49 (0% loss)");
        assert_eq!(one_line("a|b\nc", 10), "a b c");
        assert_eq!(one_line("abcdef", 3), "abc…");
    }
}
