//! The command line: `perf [options]`, and the hidden `__client` and
//! `__server` modes the harness runs in namespaces.

use crate::model::{Direction, EngineKind, Workload};
use crate::rr::Mode;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

pub const USAGE: &str = "\
perf: gvproxy against slirp4netns, pasta and the kernel's own paths (run as root)

usage: perf [options]

  --quick                 one short repetition of the main workloads (tcp,crr,ping;
                          2 s each), for CI-sized checks
  --engines LIST          ours,ours-tap,other,slirp4netns,pasta,veth,loopback
                          (default: all that are available; `other` needs --gvproxy)
  --workloads LIST        tcp,tcp4,crr,rr,udp,ping (default: all)
  --directions LIST       g2h,h2g (default: both)
  --mtus LIST             default 1500,65520
  --reps N                repetitions of every run (default 3; --quick: 1)
  --duration S            seconds per run (default 10; --quick: 2)
  --timeout S             hard limit per run (default 2 x duration + 15)
  --udp-rate RATE         UDP offered rate, iperf3 -b syntax (default 500M)
  --json PATH             every run, as JSON (default perf-results.json)
  --svg PATH              bar chart (default perf.svg)
  --gvproxy-bin PATH      our gvproxy (default: next to the perf binary)
  --gvforwarder-bin PATH  our gvforwarder (default: next to the perf binary)
  --gvproxy PATH          another gvproxy (e.g. the Go original): engine `other`
  --gvforwarder PATH      ... and its gvforwarder
  --keep-logs             keep the run directory (engine logs) at the end
  --report-from PATH      print the table and write the chart (--svg) again from
                          the JSON file of an earlier run; runs nothing
  -h, --help              this text

Workloads run guest->host and host->guest (the guest always opens the
connection: host->guest is iperf3 -R; for crr/rr the host side speaks
first). Needs iperf3, ping, ip, nft and the firewall guard (nft table inet
test_guard), whose counters are checked at the end.
";

#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// `None`: every available engine.
    pub engines: Option<Vec<EngineKind>>,
    pub workloads: Vec<Workload>,
    pub directions: Vec<Direction>,
    pub mtus: Vec<u32>,
    pub reps: u32,
    pub duration_s: u32,
    pub timeout_s: u32,
    pub udp_rate: String,
    pub json: PathBuf,
    pub svg: PathBuf,
    pub gvproxy_bin: Option<PathBuf>,
    pub gvforwarder_bin: Option<PathBuf>,
    pub other_gvproxy: Option<PathBuf>,
    pub other_gvforwarder: Option<PathBuf>,
    pub quick: bool,
    pub keep_logs: bool,
    pub report_from: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClientArgs {
    pub mode: Mode,
    pub direction: Direction,
    pub connect: SocketAddr,
    pub duration_s: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServerArgs {
    pub mode: Mode,
    pub direction: Direction,
    pub bind: IpAddr,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Invocation {
    Run(Box<Options>),
    Client(ClientArgs),
    Server(ServerArgs),
    Help,
}

/// Splits `--flag=value` / `--flag value` pairs; boolean flags take none.
struct Args {
    items: Vec<String>,
    pos: usize,
}

impl Args {
    fn next_flag(&mut self) -> Option<(String, Option<String>)> {
        let item = self.items.get(self.pos)?.clone();
        self.pos += 1;
        match item.split_once('=') {
            Some((f, v)) if f.starts_with('-') => Some((f.to_string(), Some(v.to_string()))),
            _ => Some((item, None)),
        }
    }

    fn value(&mut self, flag: &str, inline: Option<String>) -> Result<String, String> {
        if let Some(v) = inline {
            return Ok(v);
        }
        let v = self
            .items
            .get(self.pos)
            .cloned()
            .ok_or_else(|| format!("{flag} needs a value"))?;
        self.pos += 1;
        Ok(v)
    }
}

fn list<T>(flag: &str, text: &str, parse: impl Fn(&str) -> Option<T>) -> Result<Vec<T>, String> {
    let items: Result<Vec<T>, String> = text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| parse(s).ok_or_else(|| format!("{flag}: unknown value {s:?}")))
        .collect();
    let items = items?;
    if items.is_empty() {
        return Err(format!("{flag}: empty list"));
    }
    Ok(items)
}

fn number(flag: &str, text: &str, min: u32) -> Result<u32, String> {
    text.trim()
        .parse::<u32>()
        .ok()
        .filter(|n| *n >= min)
        .ok_or_else(|| format!("{flag}: {text:?} is not a number >= {min}"))
}

pub fn parse(args: &[String]) -> Result<Invocation, String> {
    match args.first().map(String::as_str) {
        Some("__client") => return parse_client(&args[1..]).map(Invocation::Client),
        Some("__server") => return parse_server(&args[1..]).map(Invocation::Server),
        _ => {}
    }
    let mut a = Args {
        items: args.to_vec(),
        pos: 0,
    };
    let mut engines = None;
    let mut workloads = None;
    let mut directions = None;
    let mut mtus = None;
    let mut reps = None;
    let mut duration = None;
    let mut timeout = None;
    let mut o = Options {
        engines: None,
        workloads: Vec::new(),
        directions: Vec::new(),
        mtus: Vec::new(),
        reps: 0,
        duration_s: 0,
        timeout_s: 0,
        udp_rate: "500M".to_string(),
        json: PathBuf::from("perf-results.json"),
        svg: PathBuf::from("perf.svg"),
        gvproxy_bin: None,
        gvforwarder_bin: None,
        other_gvproxy: None,
        other_gvforwarder: None,
        quick: false,
        keep_logs: false,
        report_from: None,
    };
    while let Some((flag, inline)) = a.next_flag() {
        let f = flag.trim_start_matches('-');
        match f {
            "h" | "help" => return Ok(Invocation::Help),
            "quick" => o.quick = true,
            "keep-logs" => o.keep_logs = true,
            "engines" => engines = Some(list(&flag, &a.value(&flag, inline)?, EngineKind::parse)?),
            "workloads" => {
                workloads = Some(list(&flag, &a.value(&flag, inline)?, Workload::parse)?)
            }
            "directions" => {
                directions = Some(list(&flag, &a.value(&flag, inline)?, Direction::parse)?)
            }
            "mtus" => {
                mtus = Some(list(&flag, &a.value(&flag, inline)?, |s| {
                    s.parse::<u32>().ok().filter(|m| (1280..=65535).contains(m))
                })?)
            }
            "reps" => reps = Some(number(&flag, &a.value(&flag, inline)?, 1)?),
            "duration" => duration = Some(number(&flag, &a.value(&flag, inline)?, 1)?),
            "timeout" => timeout = Some(number(&flag, &a.value(&flag, inline)?, 1)?),
            "udp-rate" => o.udp_rate = a.value(&flag, inline)?,
            "json" => o.json = PathBuf::from(a.value(&flag, inline)?),
            "svg" => o.svg = PathBuf::from(a.value(&flag, inline)?),
            "gvproxy-bin" => o.gvproxy_bin = Some(PathBuf::from(a.value(&flag, inline)?)),
            "gvforwarder-bin" => o.gvforwarder_bin = Some(PathBuf::from(a.value(&flag, inline)?)),
            "report-from" => o.report_from = Some(PathBuf::from(a.value(&flag, inline)?)),
            "gvproxy" => o.other_gvproxy = Some(PathBuf::from(a.value(&flag, inline)?)),
            "gvforwarder" => o.other_gvforwarder = Some(PathBuf::from(a.value(&flag, inline)?)),
            _ => return Err(format!("unknown option {flag:?} (see --help)")),
        }
    }
    if o.other_gvproxy.is_some() != o.other_gvforwarder.is_some() {
        return Err("--gvproxy and --gvforwarder go together".to_string());
    }
    if let Some(e) = &engines {
        if e.contains(&EngineKind::Other) && o.other_gvproxy.is_none() {
            return Err("engine `other` needs --gvproxy PATH --gvforwarder PATH".to_string());
        }
    }
    let (def_workloads, def_reps, def_duration) = if o.quick {
        (vec![Workload::Tcp, Workload::Crr, Workload::Ping], 1, 2)
    } else {
        (Workload::ALL.to_vec(), 3, 10)
    };
    o.engines = engines;
    o.workloads = workloads.unwrap_or(def_workloads);
    o.directions =
        directions.unwrap_or_else(|| vec![Direction::GuestToHost, Direction::HostToGuest]);
    o.mtus = mtus.unwrap_or_else(|| vec![1500, 65520]);
    o.reps = reps.unwrap_or(def_reps);
    o.duration_s = duration.unwrap_or(def_duration);
    o.timeout_s = timeout.unwrap_or(2 * o.duration_s + 15);
    Ok(Invocation::Run(Box::new(o)))
}

fn parse_client(args: &[String]) -> Result<ClientArgs, String> {
    let mut a = Args {
        items: args.to_vec(),
        pos: 0,
    };
    let (mut mode, mut direction, mut connect, mut duration) = (None, None, None, None);
    while let Some((flag, inline)) = a.next_flag() {
        match flag.trim_start_matches('-') {
            "mode" => mode = Mode::parse(&a.value(&flag, inline)?),
            "dir" => direction = Direction::parse(&a.value(&flag, inline)?),
            "connect" => connect = a.value(&flag, inline)?.parse().ok(),
            "duration" => duration = Some(number(&flag, &a.value(&flag, inline)?, 1)?),
            _ => return Err(format!("__client: unknown option {flag:?}")),
        }
    }
    Ok(ClientArgs {
        mode: mode.ok_or("__client: --mode crr|rr")?,
        direction: direction.ok_or("__client: --dir g2h|h2g")?,
        connect: connect.ok_or("__client: --connect IP:PORT")?,
        duration_s: duration.ok_or("__client: --duration S")?,
    })
}

fn parse_server(args: &[String]) -> Result<ServerArgs, String> {
    let mut a = Args {
        items: args.to_vec(),
        pos: 0,
    };
    let (mut mode, mut direction, mut bind) = (None, None, None);
    while let Some((flag, inline)) = a.next_flag() {
        match flag.trim_start_matches('-') {
            "mode" => mode = Mode::parse(&a.value(&flag, inline)?),
            "dir" => direction = Direction::parse(&a.value(&flag, inline)?),
            "bind" => bind = a.value(&flag, inline)?.parse().ok(),
            _ => return Err(format!("__server: unknown option {flag:?}")),
        }
    }
    Ok(ServerArgs {
        mode: mode.ok_or("__server: --mode crr|rr")?,
        direction: direction.ok_or("__server: --dir g2h|h2g")?,
        bind: bind.ok_or("__server: --bind IP")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Options, String> {
        let v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        match parse(&v)? {
            Invocation::Run(o) => Ok(*o),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults_full_and_quick() {
        let o = run(&[]).unwrap();
        assert_eq!((o.reps, o.duration_s, o.timeout_s), (3, 10, 35));
        assert_eq!(o.workloads, Workload::ALL.to_vec());
        assert_eq!(o.mtus, vec![1500, 65520]);
        assert_eq!(o.engines, None);
        let q = run(&["--quick"]).unwrap();
        assert_eq!((q.reps, q.duration_s), (1, 2));
        assert_eq!(
            q.workloads,
            vec![Workload::Tcp, Workload::Crr, Workload::Ping]
        );
    }

    #[test]
    fn explicit_values_win_over_quick() {
        let o = run(&[
            "--quick",
            "--engines=pasta,veth",
            "--workloads",
            "udp",
            "--mtus",
            "9000",
            "--reps",
            "2",
            "--duration=5",
            "--directions",
            "h2g",
            "--udp-rate",
            "1G",
        ])
        .unwrap();
        assert_eq!(o.engines, Some(vec![EngineKind::Pasta, EngineKind::Veth]));
        assert_eq!(o.workloads, vec![Workload::Udp]);
        assert_eq!(o.mtus, vec![9000]);
        assert_eq!((o.reps, o.duration_s, o.timeout_s), (2, 5, 25));
        assert_eq!(o.directions, vec![Direction::HostToGuest]);
        assert_eq!(o.udp_rate, "1G");
    }

    #[test]
    fn bad_options_name_the_flag() {
        assert!(run(&["--engines", "qemu"]).unwrap_err().contains("qemu"));
        assert!(run(&["--mtus", "70000"]).unwrap_err().contains("--mtus"));
        assert!(run(&["--reps", "0"]).unwrap_err().contains("--reps"));
        assert!(run(&["--duration"]).unwrap_err().contains("needs a value"));
        assert!(run(&["--frobnicate"]).unwrap_err().contains("unknown"));
        assert!(run(&["--gvproxy", "/x"]).unwrap_err().contains("together"));
        assert!(run(&["--engines", "other"])
            .unwrap_err()
            .contains("--gvproxy"));
        let o = run(&["--gvproxy", "/a", "--gvforwarder", "/b"]).unwrap();
        assert_eq!(o.other_gvproxy, Some(PathBuf::from("/a")));
    }

    #[test]
    fn hidden_modes() {
        let v: Vec<String> = [
            "__client",
            "--mode",
            "crr",
            "--dir",
            "h2g",
            "--connect",
            "10.0.2.2:5000",
            "--duration",
            "3",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let Invocation::Client(c) = parse(&v).unwrap() else {
            panic!()
        };
        assert_eq!(c.mode, Mode::Crr);
        assert_eq!(c.connect.port(), 5000);
        let v: Vec<String> = ["__server", "--mode=rr", "--dir=g2h", "--bind=127.0.0.1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let Invocation::Server(s) = parse(&v).unwrap() else {
            panic!()
        };
        assert_eq!(s.mode, Mode::Rr);
        assert!(parse(&["__server".to_string()]).is_err());
        assert_eq!(parse(&["-h".to_string()]).unwrap(), Invocation::Help);
    }
}
