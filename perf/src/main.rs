//! perf: the benchmark harness. It sets up each engine (ours through
//! gvforwarder and directly on a TAP, another gvproxy build, slirp4netns,
//! pasta, and the kernel's veth and loopback paths as ceilings) serving a
//! guest network namespace, runs each workload both ways, measures the
//! engine's CPU and memory, tears everything down, and reports a Markdown
//! table (stdout), a JSON file of every run and an SVG chart.
//!
//! ```text
//!  perf ──► Session::start(engine, mtu) ──► for rep, workload, direction:
//!             bench::run: host-side server (iperf3 -s | perf __server)
//!                         guest client in the netns (iperf3 -c | ping | perf __client)
//!                         /proc CPU + VmHWM of the engine around it
//!        ──► report::summarize ──► Markdown, JSON, SVG
//! ```
//!
//! Only loopback and namespaces of our own carry traffic; the firewall guard
//! (nft table inet test_guard) must be installed and its counters are
//! compared at the end.

// One `unsafe` block: resetting the signal mask of children (proc.rs).
#![deny(unsafe_code)]

mod bench;
mod cleanup;
mod cli;
mod engines;
mod model;
mod netns;
mod parse;
mod proc;
mod report;
mod rr;
mod stats;
mod svg;

use cli::{Invocation, Options};
use engines::{Binaries, Session};
use model::{EngineKind, Metrics, RunRecord, Workload};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match cli::parse(&args) {
        Err(e) => {
            eprintln!("perf: {e}");
            ExitCode::from(2)
        }
        Ok(Invocation::Help) => {
            print!("{}", cli::USAGE);
            ExitCode::SUCCESS
        }
        Ok(Invocation::Client(c)) => exit_with(rr::client(
            c.mode,
            c.direction,
            c.connect,
            Duration::from_secs(u64::from(c.duration_s)),
        )),
        Ok(Invocation::Server(s)) => exit_with(rr::server(s.mode, s.direction, s.bind)),
        Ok(Invocation::Run(o)) if o.report_from.is_some() => {
            let from = o.report_from.clone().unwrap_or_default();
            exit_code(report_from(&from, &o.svg))
        }
        Ok(Invocation::Run(o)) => match run(&o) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("perf: {e}");
                cleanup::cleanup_all(o.keep_logs);
                ExitCode::from(2)
            }
        },
    }
}

fn exit_code(r: Result<ExitCode, String>) -> ExitCode {
    r.unwrap_or_else(|e| {
        eprintln!("perf: {e}");
        ExitCode::from(2)
    })
}

fn exit_with(r: Result<(), String>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("perf: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Packets the firewall guard has dropped so far.
fn guard_packets() -> Result<u64, String> {
    proc::run_ok(&["nft", "list", "table", "inet", "test_guard"])
        .map(|t| parse::nft_packets(&t))
        .map_err(|e| {
            format!(
                "the firewall guard (nft table inet test_guard) is not installed ({e}); \
                 install it as .ci/run does before running perf"
            )
        })
}

#[derive(Debug, Serialize, Deserialize)]
struct Machine {
    cpu: String,
    cpus: usize,
    mem_gib: f64,
    kernel: String,
    congestion_control: String,
}

fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|r| r.trim_start_matches([' ', '\t', ':']).trim().to_string())
        .unwrap_or_else(|| "unknown CPU".to_string());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    Machine {
        cpu,
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        mem_gib: (mem_kib as f64 / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        kernel: read("/proc/sys/kernel/osrelease"),
        congestion_control: read("/proc/sys/net/ipv4/tcp_congestion_control"),
    }
}

/// How an engine was run, for the report.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct EngineInfo {
    engine: EngineKind,
    status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    commands: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    notes: Vec<String>,
}

fn first_line(args: &[&str]) -> Option<String> {
    let (prog, rest) = args.split_first()?;
    let mut cmd = std::process::Command::new(prog);
    cmd.args(rest);
    let out = proc::run_bounded(prog, cmd, Duration::from_secs(5)).ok()?;
    format!("{}\n{}", out.stdout, out.stderr)
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_string)
}

fn engine_version(kind: EngineKind, bins: &Binaries) -> Option<String> {
    let path =
        |p: &Result<PathBuf, String>| p.as_ref().ok().map(|p| p.to_string_lossy().into_owned());
    match kind {
        EngineKind::Ours | EngineKind::OursTap => first_line(&[&path(&bins.gvproxy)?, "-version"]),
        EngineKind::Other => {
            let (g, _) = bins.other.as_ref()?;
            first_line(&[&g.to_string_lossy(), "-version"])
        }
        EngineKind::Slirp4netns => first_line(&[&path(&bins.slirp4netns)?, "--version"]),
        EngineKind::Pasta => first_line(&["dpkg-query", "-W", "-f", "passt ${Version}", "passt"])
            .or_else(|| first_line(&[&path(&bins.pasta)?, "--version"])),
        EngineKind::Veth | EngineKind::Loopback => None,
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Guard {
    packets_before: u64,
    packets_after: u64,
    unchanged: bool,
}

/// The JSON file: the run's context, every run, and the medians.
#[derive(Debug, Serialize, Deserialize)]
struct JsonReport {
    format: u32,
    started_unix_s: u64,
    started_utc: String,
    wall_s: f64,
    command: Vec<String>,
    machine: Machine,
    iperf3: Option<String>,
    reps: u32,
    duration_s: u32,
    timeout_s: u32,
    udp_rate: String,
    mtus: Vec<u32>,
    engines: Vec<EngineInfo>,
    guard: Guard,
    /// Derived from `runs` (recomputed when read back).
    #[serde(default, skip_deserializing)]
    summaries: Vec<report::Summary>,
    runs: Vec<RunRecord>,
}

/// "2024-05-01 12:34 UTC" from a Unix time (civil-from-days, proleptic
/// Gregorian).
fn utc(unix_s: u64) -> String {
    let days = i64::try_from(unix_s / 86400).unwrap_or(0);
    let secs = unix_s % 86400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        secs / 3600,
        (secs % 3600) / 60
    )
}

fn failed_record(
    kind: EngineKind,
    w: Workload,
    dir: model::Direction,
    mtu: u32,
    rep: u32,
    o: &Options,
    error: String,
) -> RunRecord {
    RunRecord {
        engine: kind,
        workload: w,
        direction: dir,
        mtu,
        guest_mtu: None,
        rep,
        duration_s: o.duration_s,
        started_unix_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0),
        wall_s: 0.0,
        ok: false,
        error: Some(error),
        metrics: Metrics::default(),
        cost: None,
    }
}

fn progress(i: usize, total: usize, r: &RunRecord) {
    let what = format!(
        "{:<11} {:<4} {} mtu {:<5} rep {}",
        r.engine.name(),
        r.workload.name(),
        r.direction.name(),
        r.mtu,
        r.rep
    );
    let result = if r.ok {
        let s = report::Summary {
            engine: r.engine,
            workload: r.workload,
            direction: r.direction,
            mtu: r.mtu,
            runs: 1,
            ok_runs: 1,
            median: r.headline(),
            unit: r.workload.unit(),
            median_p99_us: r.metrics.p99_us,
            median_lost_percent: r.metrics.lost_percent,
            median_cpu_s_per_gb: None,
            median_cpu_us_per_txn: None,
            max_peak_rss_kib: None,
            errors: Vec::new(),
            notes: Vec::new(),
        };
        let mut t = format!("{} {}", report::format_value(&s), r.workload.unit());
        if let Some(c) = &r.cost {
            if let Some(g) = c.cpu_s_per_gb {
                t.push_str(&format!(", cpu {g:.2} s/GB"));
            } else if let Some(u) = c.cpu_us_per_txn {
                t.push_str(&format!(", cpu {u:.1} µs/txn"));
            }
        }
        t
    } else {
        format!("FAILED: {}", r.error.as_deref().unwrap_or(""))
    };
    let note = r
        .metrics
        .note
        .as_deref()
        .map(|n| format!(" [{n}]"))
        .unwrap_or_default();
    eprintln!(
        "[{i:>3}/{total}] {what}: {result}{note} ({:.1} s)",
        r.wall_s
    );
}

const MAX_RESTARTS: u32 = 3;

fn run(o: &Options) -> Result<ExitCode, String> {
    // First, before any thread exists, so that every thread has SIGINT
    // and SIGTERM blocked and only the signal thread takes them.
    cleanup::install_signal_handler(o.keep_logs)?;
    cleanup::install_panic_hook(o.keep_logs);
    let start = Instant::now();
    let started_unix_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    if !nix::unistd::geteuid().is_root() {
        return Err("must run as root (namespaces, TAP devices)".to_string());
    }
    for tool in ["ip", "iperf3", "ping", "nft"] {
        engines::which(tool).map_err(|e| format!("{e}: install it (see .ci/run)"))?;
    }
    let guard_before = guard_packets()?;
    cleanup::remove_stale_netns();

    let dir = std::env::temp_dir().join(format!("gvperf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    cleanup::add_dir(dir.clone());
    let perf_exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;

    let bins = Binaries {
        gvproxy: engines::locate(o.gvproxy_bin.as_deref(), "gvproxy", "--gvproxy-bin"),
        gvforwarder: engines::locate(
            o.gvforwarder_bin.as_deref(),
            "gvforwarder",
            "--gvforwarder-bin",
        ),
        other: o.other_gvproxy.clone().zip(o.other_gvforwarder.clone()),
        slirp4netns: engines::which("slirp4netns"),
        pasta: engines::which("pasta"),
    };
    if let Some((g, f)) = &bins.other {
        for p in [g, f] {
            if !engines::is_executable(p) {
                return Err(format!("{}: not an executable file", p.display()));
            }
        }
    }

    let requested: Vec<EngineKind> = o.engines.clone().unwrap_or_else(|| {
        EngineKind::ALL
            .into_iter()
            .filter(|e| *e != EngineKind::Other || bins.other.is_some())
            .collect()
    });
    let mut infos: BTreeMap<EngineKind, EngineInfo> = BTreeMap::new();
    let mut engines_to_run = Vec::new();
    for &e in &requested {
        match engines::availability(e, &bins) {
            Ok(()) => {
                engines_to_run.push(e);
                infos.insert(
                    e,
                    EngineInfo {
                        engine: e,
                        status: "ran".to_string(),
                        version: engine_version(e, &bins),
                        commands: Vec::new(),
                        notes: Vec::new(),
                    },
                );
            }
            Err(why) => {
                eprintln!("perf: skipping {e}: {why}");
                infos.insert(
                    e,
                    EngineInfo {
                        engine: e,
                        status: format!("skipped: {why}"),
                        version: None,
                        commands: Vec::new(),
                        notes: Vec::new(),
                    },
                );
            }
        }
    }

    // The runs of one session (engine, MTU), in order.
    let plan = |kind: EngineKind| -> Vec<(u32, Workload, model::Direction)> {
        let mut runs = Vec::new();
        for rep in 1..=o.reps {
            for &w in &o.workloads {
                if engines::workload_supported(kind, w).is_err() {
                    continue;
                }
                for &d in w.directions() {
                    if w == Workload::Ping || o.directions.contains(&d) {
                        runs.push((rep, w, d));
                    }
                }
            }
        }
        runs
    };
    for &kind in &engines_to_run {
        for &w in &o.workloads {
            if let Err(why) = engines::workload_supported(kind, w) {
                eprintln!("perf: {kind}: {w} not run: {why}");
                if let Some(info) = infos.get_mut(&kind) {
                    info.notes.push(format!("{w} not run: {why}"));
                }
            }
        }
    }
    let total: usize = engines_to_run.iter().map(|&k| plan(k).len()).sum::<usize>() * o.mtus.len();
    let sessions = engines_to_run.len() * o.mtus.len();
    let estimate_s = total as f64 * (f64::from(o.duration_s) + 0.6) + sessions as f64 * 2.0;
    eprintln!(
        "perf: {total} runs ({} engines x {} MTUs), {} x {} s each; about {:.0} min",
        engines_to_run.len(),
        o.mtus.len(),
        o.reps,
        o.duration_s,
        estimate_s / 60.0
    );

    let ctx = bench::Ctx {
        opts: o,
        perf_exe: &perf_exe,
        dir: &dir,
    };
    let mut records: Vec<RunRecord> = Vec::new();
    'mtus: for &mtu in &o.mtus {
        for &kind in &engines_to_run {
            let mut session: Option<Session> = None;
            let mut setup_error: Option<String> = None;
            let mut restarts = 0;
            for (rep, w, d) in plan(kind) {
                if cleanup::interrupted() {
                    break 'mtus;
                }
                if let Some(s) = &mut session {
                    if let Err(dead) = s.check_alive() {
                        eprintln!("perf: {kind} mtu {mtu} died ({dead}); restarting it");
                        session = None;
                        restarts += 1;
                        if restarts > MAX_RESTARTS {
                            setup_error =
                                Some(format!("engine died {restarts} times; last: {dead}"));
                        }
                    }
                }
                if session.is_none() && setup_error.is_none() {
                    match Session::start(kind, mtu, &bins, &dir) {
                        Ok(s) => {
                            if let Some(info) = infos.get_mut(&kind) {
                                if info.commands.is_empty() {
                                    info.commands.clone_from(&s.commands);
                                }
                            }
                            if let Some(g) = s
                                .guest_mtu
                                .filter(|g| *g != mtu && kind != EngineKind::Loopback)
                            {
                                eprintln!("perf: {kind}: asked MTU {mtu}, the guest has {g}");
                            }
                            session = Some(s);
                        }
                        Err(e) => {
                            eprintln!("perf: {kind} mtu {mtu}: setup failed: {e}");
                            setup_error = Some(format!("setup: {e}"));
                        }
                    }
                }
                let record = match (&mut session, &setup_error) {
                    (Some(s), None) => {
                        let before = guard_packets()?;
                        let mut r = bench::run(s, w, d, rep, &ctx);
                        let after = guard_packets()?;
                        if after != before {
                            let n = after.saturating_sub(before);
                            eprintln!(
                                "perf: WARNING: the firewall guard dropped {n} packet(s) during this run"
                            );
                            r.ok = false;
                            r.error = Some(format!(
                                "the firewall guard dropped {n} packet(s) during this run: \
                                 traffic tried to leave the machine{}",
                                r.error.map(|e| format!("; {e}")).unwrap_or_default()
                            ));
                        }
                        r
                    }
                    (_, err) => failed_record(
                        kind,
                        w,
                        d,
                        mtu,
                        rep,
                        o,
                        err.clone().unwrap_or_else(|| "not set up".to_string()),
                    ),
                };
                progress(records.len() + 1, total, &record);
                records.push(record);
            }
            drop(session);
        }
    }

    let guard_after = guard_packets()?;
    let unchanged = guard_before == guard_after;
    let command: Vec<String> = std::iter::once("perf".to_string())
        .chain(std::env::args().skip(1))
        .collect();
    let mut json = JsonReport {
        format: 1,
        started_unix_s,
        started_utc: utc(started_unix_s),
        wall_s: start.elapsed().as_secs_f64(),
        command,
        machine: machine(),
        iperf3: first_line(&["iperf3", "--version"]),
        reps: o.reps,
        duration_s: o.duration_s,
        timeout_s: o.timeout_s,
        udp_rate: o.udp_rate.clone(),
        mtus: o.mtus.clone(),
        engines: infos.into_values().collect(),
        guard: Guard {
            packets_before: guard_before,
            packets_after: guard_after,
            unchanged,
        },
        summaries: Vec::new(),
        runs: records,
    };
    let summaries = report::summarize(&json.runs);
    json.summaries = summaries.values().cloned().collect();
    print!("{}", markdown(&json, &summaries, &o.workloads));
    write_file(
        &o.json,
        &serde_json::to_string_pretty(&json).map_err(|e| e.to_string())?,
    )?;
    write_file(
        &o.svg,
        &svg::chart(&summaries, &o.workloads, &chart_title(&json)),
    )?;
    eprintln!("perf: wrote {} and {}", o.json.display(), o.svg.display());
    if o.keep_logs {
        eprintln!("perf: logs kept in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    cleanup::remove_dir(&dir);
    cleanup::cleanup_all(o.keep_logs);
    if unchanged {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "perf: the firewall guard's counters moved: something tried to leave the machine"
        );
        Ok(ExitCode::from(1))
    }
}

fn chart_title(r: &JsonReport) -> String {
    format!(
        "perf: medians of {} x {} s, {} x {} CPUs, {}",
        r.reps, r.duration_s, r.machine.cpu, r.machine.cpus, r.started_utc
    )
}

/// The report printed on stdout: machine and command, the table of
/// medians and ratios, the engines' cost, how each engine ran, the guard.
fn markdown(
    r: &JsonReport,
    summaries: &BTreeMap<report::Key, report::Summary>,
    workloads: &[Workload],
) -> String {
    let m = &r.machine;
    let mut md = String::new();
    md.push_str(&format!(
        "machine: {} x {} CPUs, {} GiB, Linux {} ({}); {}\n",
        m.cpu, m.cpus, m.mem_gib, m.kernel, m.congestion_control, r.started_utc
    ));
    md.push_str(&format!(
        "command: `{}` ({} x {} s per run, hard limit {} s; UDP offered {}, datagrams of MTU - 28 bytes)\n\n",
        r.command.join(" "),
        r.reps,
        r.duration_s,
        r.timeout_s,
        r.udp_rate
    ));
    md.push_str(&report::markdown_table(summaries, workloads));
    let costs = report::markdown_costs(summaries);
    if !costs.is_empty() {
        md.push_str("\nEngine cost (medians):\n\n");
        md.push_str(&costs);
    }
    md.push_str("\nHow each engine ran:\n\n");
    for info in &r.engines {
        let version = info
            .version
            .as_deref()
            .map(|v| format!(" ({v})"))
            .unwrap_or_default();
        if info.status == "ran" {
            let cmds: Vec<String> = info.commands.iter().map(|c| format!("`{c}`")).collect();
            md.push_str(&format!(
                "- {}{version}: {}\n",
                info.engine,
                cmds.join("; ")
            ));
            for n in &info.notes {
                md.push_str(&format!("  ({n})\n"));
            }
        } else {
            md.push_str(&format!("- {}: {}\n", info.engine, info.status));
        }
    }
    let g = &r.guard;
    md.push_str(&format!(
        "\nfirewall guard (nft table inet test_guard): {}\n",
        if g.unchanged {
            format!(
                "counters unchanged ({} packets dropped before and after)",
                g.packets_after
            )
        } else {
            format!(
                "COUNTERS MOVED: {} -> {} packets dropped",
                g.packets_before, g.packets_after
            )
        }
    ));
    md.push_str(&format!("wall time: {:.0} s\n", r.wall_s));
    md
}

/// `--report-from PATH`: the table and the chart again from the JSON file
/// of an earlier run; runs nothing.
fn report_from(path: &Path, svg_path: &Path) -> Result<ExitCode, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    let r: JsonReport =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let workloads: Vec<Workload> = Workload::ALL
        .into_iter()
        .filter(|w| r.runs.iter().any(|run| run.workload == *w))
        .collect();
    let summaries = report::summarize(&r.runs);
    print!("{}", markdown(&r, &summaries, &workloads));
    write_file(
        svg_path,
        &svg::chart(&summaries, &workloads, &chart_title(&r)),
    )?;
    eprintln!("perf: wrote {}", svg_path.display());
    Ok(ExitCode::SUCCESS)
}

fn write_file(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(utc(1_700_000_000), "2023-11-14 22:13 UTC");
    }
}
