//! One run: a workload in one direction through a running engine, bounded
//! in time, with the engine's CPU and peak memory measured around it.

use crate::cli::Options;
use crate::engines::Session;
use crate::model::{Cost, Direction, Metrics, RunRecord, Workload};
use crate::netns::command_in;
use crate::parse;
use crate::proc::{self, run_bounded, tail_lines, ChildGuard};
use crate::rr::{Mode, RrReport};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What a run needs besides the engine.
pub struct Ctx<'a> {
    pub opts: &'a Options,
    /// The perf binary (run in namespaces for `__client`/`__server`).
    pub perf_exe: &'a Path,
    /// Logs of host-side servers.
    pub dir: &'a Path,
}

impl Ctx<'_> {
    fn timeout(&self) -> Duration {
        Duration::from_secs(u64::from(self.opts.timeout_s))
    }
}

pub fn run(s: &mut Session, w: Workload, dir: Direction, rep: u32, ctx: &Ctx<'_>) -> RunRecord {
    let started_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    let t0 = Instant::now();
    let pids = s.pids();
    let cpu_before = proc::cpu_seconds(&pids);
    proc::reset_peak_rss(&pids);
    let result = match w {
        Workload::Tcp | Workload::Tcp4 | Workload::Udp => iperf3(s, w, dir, ctx),
        Workload::Crr | Workload::Rr => request_response(s, w, dir, ctx),
        Workload::Ping => ping(s, ctx),
    };
    let cpu_after = proc::cpu_seconds(&pids);
    let cost = (!pids.is_empty()).then(|| {
        let cpu_s = proc::cpu_delta(&cpu_before, &cpu_after);
        let metrics = result.as_ref().ok();
        Cost {
            cpu_s,
            cpu_s_per_gb: metrics
                .filter(|_| w.is_bulk())
                .and_then(|m| m.bytes)
                .filter(|&b| b > 0)
                .map(|b| cpu_s / (b as f64 / 1e9)),
            cpu_us_per_txn: metrics
                .filter(|_| matches!(w, Workload::Crr | Workload::Rr))
                .and_then(|m| m.transactions)
                .filter(|&n| n > 0)
                .map(|n| cpu_s * 1e6 / n as f64),
            peak_rss_kib: proc::peak_rss_kib(&pids),
            processes: s.process_names(),
        }
    });
    // A failure may be the engine dying: say so.
    let result = match (result, s.check_alive()) {
        (Err(e), Err(dead)) => Err(format!("{e}; engine died: {dead}")),
        (Ok(_), Err(dead)) => Err(format!("engine died during the run: {dead}")),
        (r, Ok(())) => r,
    };
    let (ok, error, metrics) = match result {
        Ok(m) => (true, None, m),
        Err(e) => (false, Some(e), Metrics::default()),
    };
    RunRecord {
        engine: s.kind,
        workload: w,
        direction: dir,
        mtu: s.mtu,
        guest_mtu: s.guest_mtu,
        rep,
        duration_s: ctx.opts.duration_s,
        started_unix_ms,
        wall_s: t0.elapsed().as_secs_f64(),
        ok,
        error,
        metrics,
        cost,
    }
}

/// A free TCP/UDP port number on the host's loopback (the namespaces of the
/// veth ceiling are empty: any port is free there).
fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    let tcp = l.local_addr().map_err(|e| e.to_string())?.port();
    // iperf3 UDP tests use the same number for UDP.
    std::net::UdpSocket::bind(("127.0.0.1", tcp))
        .map(|_| tcp)
        .or_else(|_| free_port_retry())
}

fn free_port_retry() -> Result<u16, String> {
    for _ in 0..20 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
        let p = l.local_addr().map_err(|e| e.to_string())?.port();
        if std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok() {
            return Ok(p);
        }
    }
    Err("no free port".to_string())
}

/// UDP datagram size: one full frame at the guest's MTU (IPv4 + UDP headers
/// off), within what iperf3 accepts.
pub fn udp_len(mtu: u32) -> u32 {
    mtu.saturating_sub(28).clamp(64, 65507)
}

fn iperf3(s: &Session, w: Workload, dir: Direction, ctx: &Ctx<'_>) -> Result<Metrics, String> {
    let port = free_port()?.to_string();
    let bind = s.bind.to_string();
    let log = ctx.dir.join("iperf3-server.log");
    let cmd = command_in(
        s.host_ns.as_ref(),
        "iperf3",
        &["-s", "-1", "--forceflush", "-B", &bind, "-p", &port],
    );
    let mut server = ChildGuard::spawn_lines("iperf3 server", cmd, &log)?;
    server.wait_line(Duration::from_secs(5), |l| l.contains("listening"))?;
    let target = s.target.to_string();
    let secs = ctx.opts.duration_s.to_string();
    let mut args: Vec<String> = [
        "-c",
        &target,
        "-p",
        &port,
        "-t",
        &secs,
        "-J",
        "--connect-timeout",
        "5000",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    if dir == Direction::HostToGuest {
        args.push("-R".into());
    }
    match w {
        Workload::Tcp4 => args.extend(["-P".into(), "4".into()]),
        Workload::Udp => {
            let len = udp_len(s.guest_mtu.unwrap_or(s.mtu).min(s.mtu));
            args.extend([
                "-u".into(),
                "-b".into(),
                ctx.opts.udp_rate.clone(),
                "-l".into(),
                len.to_string(),
            ]);
        }
        _ => {}
    }
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let cmd = command_in(s.guest_ns.as_ref(), "iperf3", &argv);
    let out = run_bounded("iperf3 client", cmd, ctx.timeout())?;
    if out.timed_out {
        return Err(format!(
            "iperf3 client still running after {:?} (killed); server log: {}",
            ctx.timeout(),
            server.log_tail(2)
        ));
    }
    parse::iperf3_json(&out.stdout).map_err(|e| {
        let err = tail_lines(&out.stderr, 2);
        if err.is_empty() {
            e
        } else {
            format!("{e}; stderr: {err}")
        }
    })
}

fn request_response(
    s: &Session,
    w: Workload,
    dir: Direction,
    ctx: &Ctx<'_>,
) -> Result<Metrics, String> {
    let mode = if w == Workload::Crr {
        Mode::Crr
    } else {
        Mode::Rr
    }
    .name();
    let exe = ctx.perf_exe.to_string_lossy().into_owned();
    let bind = s.bind.to_string();
    let cmd = command_in(
        s.host_ns.as_ref(),
        &exe,
        &[
            "__server",
            "--mode",
            mode,
            "--dir",
            dir.name(),
            "--bind",
            &bind,
        ],
    );
    let log = ctx.dir.join("rr-server.log");
    let mut server = ChildGuard::spawn_lines("rr server", cmd, &log)?;
    let line = server.wait_line(Duration::from_secs(5), |l| l.starts_with("listening "))?;
    let port = line.trim_start_matches("listening ").trim();
    let connect = format!("{}:{port}", s.target);
    let secs = ctx.opts.duration_s.to_string();
    let cmd = command_in(
        s.guest_ns.as_ref(),
        &exe,
        &[
            "__client",
            "--mode",
            mode,
            "--dir",
            dir.name(),
            "--connect",
            &connect,
            "--duration",
            &secs,
        ],
    );
    let out = run_bounded("rr client", cmd, ctx.timeout())?;
    if out.timed_out {
        return Err(format!(
            "{mode} client still running after {:?} (killed)",
            ctx.timeout()
        ));
    }
    let client: RrReport = serde_json::from_str(out.stdout.trim()).map_err(|e| {
        format!(
            "{mode} client printed no report ({e}): {}",
            tail_lines(&format!("{}\n{}", out.stdout, out.stderr), 2)
        )
    })?;
    // Host-initiated round trips are timed by the host side.
    let timed = if w == Workload::Rr && dir == Direction::HostToGuest {
        let line = server.wait_line(Duration::from_secs(5), |l| l.starts_with('{'))?;
        serde_json::from_str::<RrReport>(&line)
            .map_err(|e| format!("rr server report: {e}: {line}"))?
    } else {
        client.clone()
    };
    if timed.transactions == 0 {
        return Err(client
            .first_error
            .or(timed.first_error)
            .unwrap_or_else(|| "no transaction completed".to_string()));
    }
    let first_error = client.first_error.clone().unwrap_or_default();
    let note = (client.failures > 0).then(|| match w {
        Workload::Crr => format!(
            "{} of {} connections failed: {first_error}",
            client.failures,
            client.failures + timed.transactions
        ),
        _ => format!(
            "the connection broke after {} round trips: {first_error}",
            timed.transactions
        ),
    });
    Ok(Metrics {
        transactions: Some(timed.transactions),
        failures: Some(client.failures),
        note,
        rate_per_s: Some(timed.rate_per_s),
        p50_us: timed.p50_us,
        p99_us: timed.p99_us,
        mean_us: timed.mean_us,
        ..Metrics::default()
    })
}

/// Echo requests every 10 ms for the run's duration.
fn ping(s: &Session, ctx: &Ctx<'_>) -> Result<Metrics, String> {
    let count = (ctx.opts.duration_s * 100).to_string();
    let deadline = (ctx.opts.duration_s + 3).to_string();
    let gw = s.gateway.to_string();
    let cmd = command_in(
        s.guest_ns.as_ref(),
        "ping",
        &[
            "-n", "-i", "0.01", "-W", "1", "-c", &count, "-w", &deadline, &gw,
        ],
    );
    let out = run_bounded("ping", cmd, ctx.timeout())?;
    let mut m = parse::ping_output(&format!("{}\n{}", out.stdout, out.stderr))
        .map_err(|e| format!("ping {gw}: {e}"))?;
    if let (Some(lost), Some(got)) = (m.failures, m.transactions) {
        if lost > 0 {
            m.note = Some(format!("{lost} of {} echo requests unanswered", lost + got));
        }
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_datagrams_fill_a_frame() {
        assert_eq!(udp_len(1500), 1472);
        assert_eq!(udp_len(65520), 65492);
        assert_eq!(udp_len(65536), 65507);
    }

    #[test]
    fn ports_are_free_on_both_protocols() {
        let p = free_port().unwrap();
        assert!(std::net::TcpListener::bind(("127.0.0.1", p)).is_ok());
    }
}
