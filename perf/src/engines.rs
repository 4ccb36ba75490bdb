//! Setting up each engine at one MTU: a guest namespace behind a TAP device
//! served by the engine's processes (or, for the ceilings, a veth pair or the
//! host's loopback), and where the host-side servers listen and the guest
//! connects.
//!
//! ```text
//!   host (127.0.0.1:PORT servers)            guest netns gvperf-<pid>-<n>
//!   gvproxy -listen unix://S ◄── /connect ── gvforwarder ── tap0 192.168.127.2
//!   gvproxy -listen-tap NS:tap0 ─────────────────────────── tap0 192.168.127.2
//!   slirp4netns / pasta ─────────────────────────────────── tap0 10.0.2.100
//!   [netns H] veth0 192.168.127.254 ─────────────────────── veth1 192.168.127.2
//! ```

use crate::model::{EngineKind, Workload};
use crate::netns::{command_in, Netns};
use crate::proc::{run_bounded, show_command, ChildGuard};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const GUEST_MAC: &str = "5a:94:ef:e4:0c:ee";
const TAP: &str = "tap0";
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// slirp4netns refuses larger MTUs (its `--mtu` limit).
pub const SLIRP4NETNS_MAX_MTU: u32 = 65521;
/// pasta's limit (65535 minus the 802.3 header, rounded to 32 bits).
pub const PASTA_MAX_MTU: u32 = 65520;

/// Where the engine binaries are; resolved once.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub gvproxy: Result<PathBuf, String>,
    pub gvforwarder: Result<PathBuf, String>,
    /// `--gvproxy PATH --gvforwarder PATH`.
    pub other: Option<(PathBuf, PathBuf)>,
    pub slirp4netns: Result<PathBuf, String>,
    pub pasta: Result<PathBuf, String>,
}

/// Finds `name` in PATH.
pub fn which(name: &str) -> Result<PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
        .ok_or_else(|| format!("{name} not found in PATH"))
}

pub fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// `explicit`, or `name` next to the perf binary.
pub fn locate(explicit: Option<&Path>, name: &str, flag: &str) -> Result<PathBuf, String> {
    if let Some(p) = explicit {
        return if is_executable(p) {
            Ok(p.to_path_buf())
        } else {
            Err(format!("{flag} {}: not an executable file", p.display()))
        };
    }
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    let p = dir.join(name);
    if is_executable(&p) {
        Ok(p)
    } else {
        Err(format!(
            "{name} not found next to perf ({}); build it in the same target dir \
             (cargo build --release -p gvproxy -p gvforwarder) or pass {flag}",
            dir.display()
        ))
    }
}

/// What `PROGRAM -help` prints (stdout and stderr), for feature checks.
pub fn help_text(program: &Path) -> String {
    let mut cmd = Command::new(program);
    cmd.arg("-help");
    run_bounded("help", cmd, Duration::from_secs(5))
        .map(|o| format!("{}\n{}", o.stdout, o.stderr))
        .unwrap_or_default()
}

/// Whether a Go-style `-help` text lists `-flag`.
pub fn help_lists_flag(help: &str, flag: &str) -> bool {
    help.split_whitespace()
        .any(|w| w.trim_start_matches('-') == flag && w.starts_with('-'))
}

/// Why an engine cannot run at all (a clear line for the report), or Ok.
pub fn availability(kind: EngineKind, bins: &Binaries) -> Result<(), String> {
    match kind {
        EngineKind::Ours => {
            bins.gvproxy.as_ref().map_err(Clone::clone)?;
            bins.gvforwarder.as_ref().map_err(Clone::clone)?;
            Ok(())
        }
        EngineKind::OursTap => {
            let gvproxy = bins.gvproxy.as_ref().map_err(Clone::clone)?;
            if help_lists_flag(&help_text(gvproxy), "listen-tap") {
                Ok(())
            } else {
                Err(format!(
                    "{} -help does not list -listen-tap (gvproxy cannot serve a TAP directly yet)",
                    gvproxy.display()
                ))
            }
        }
        EngineKind::Other => match &bins.other {
            Some(_) => Ok(()),
            None => Err("no --gvproxy PATH --gvforwarder PATH given".to_string()),
        },
        EngineKind::Slirp4netns => bins.slirp4netns.as_ref().map(|_| ()).map_err(Clone::clone),
        EngineKind::Pasta => bins.pasta.as_ref().map(|_| ()).map_err(Clone::clone),
        EngineKind::Veth | EngineKind::Loopback => Ok(()),
    }
}

/// Why an engine cannot run at this MTU, or Ok.
pub fn mtu_supported(kind: EngineKind, mtu: u32) -> Result<(), String> {
    match kind {
        EngineKind::Slirp4netns if mtu > SLIRP4NETNS_MAX_MTU => Err(format!(
            "slirp4netns caps the MTU at {SLIRP4NETNS_MAX_MTU} (asked {mtu})"
        )),
        EngineKind::Pasta if mtu > PASTA_MAX_MTU => Err(format!(
            "pasta caps the MTU at {PASTA_MAX_MTU} (asked {mtu})"
        )),
        _ if mtu < 1280 => Err(format!("MTU {mtu} is below 1280")),
        _ => Ok(()),
    }
}

/// Why a workload is not run through an engine at all, or Ok.
pub fn workload_supported(kind: EngineKind, w: Workload) -> Result<(), String> {
    match (kind, w) {
        // Measured: 10.0.2.2 is no address of pasta's own; it relays the
        // echo requests to the real 10.0.2.2 through a ping socket, off the
        // machine (the firewall guard dropped them).
        (EngineKind::Pasta, Workload::Ping) => Err(
            "pasta does not answer ICMP echo for its gateway: it relays it to the real \
             address off the machine, so ping is not run through pasta"
                .to_string(),
        ),
        _ => Ok(()),
    }
}

/// One engine running at one MTU. Fields drop in order: the engine's
/// processes first, then the namespaces.
#[derive(Debug)]
pub struct Session {
    pub kind: EngineKind,
    pub mtu: u32,
    /// The MTU the guest's interface really has.
    pub guest_mtu: Option<u32>,
    procs: Vec<ChildGuard>,
    /// Where clients run (`None`: the host).
    pub guest_ns: Option<Netns>,
    /// Where host-side servers run (`None`: the host).
    pub host_ns: Option<Netns>,
    /// Address the host-side servers bind.
    pub bind: Ipv4Addr,
    /// Address the guest connects to for the host side.
    pub target: Ipv4Addr,
    /// The engine's gateway (ping target).
    pub gateway: Ipv4Addr,
    /// How it was run: the command lines.
    pub commands: Vec<String>,
}

impl Session {
    /// Sets up `kind` at `mtu`; `dir` holds sockets and logs.
    pub fn start(
        kind: EngineKind,
        mtu: u32,
        bins: &Binaries,
        dir: &Path,
    ) -> Result<Session, String> {
        mtu_supported(kind, mtu)?;
        let mut s = match kind {
            EngineKind::Ours => {
                let gvproxy = bins.gvproxy.clone()?;
                let gvforwarder = bins.gvforwarder.clone()?;
                start_connect(kind, mtu, &gvproxy, &gvforwarder, dir)?
            }
            EngineKind::Other => {
                let (gvproxy, gvforwarder) = bins
                    .other
                    .clone()
                    .ok_or_else(|| "no --gvproxy/--gvforwarder".to_string())?;
                start_connect(kind, mtu, &gvproxy, &gvforwarder, dir)?
            }
            EngineKind::OursTap => start_tap(mtu, &bins.gvproxy.clone()?, dir)?,
            EngineKind::Slirp4netns => start_slirp4netns(mtu, &bins.slirp4netns.clone()?, dir)?,
            EngineKind::Pasta => start_pasta(mtu, &bins.pasta.clone()?, dir)?,
            EngineKind::Veth => start_veth(mtu)?,
            EngineKind::Loopback => Session {
                kind,
                mtu,
                guest_mtu: std::fs::read_to_string("/sys/class/net/lo/mtu")
                    .ok()
                    .and_then(|t| t.trim().parse().ok()),
                procs: Vec::new(),
                guest_ns: None,
                host_ns: None,
                bind: Ipv4Addr::LOCALHOST,
                target: Ipv4Addr::LOCALHOST,
                gateway: Ipv4Addr::LOCALHOST,
                commands: vec!["(no namespace: client and server on the host's lo)".to_string()],
            },
        };
        if let Some(ns) = &s.guest_ns {
            let dev = if kind == EngineKind::Veth {
                "veth1"
            } else {
                TAP
            };
            s.guest_mtu = ns.mtu_of(dev);
        }
        Ok(s)
    }

    /// Pids of the engine's processes (empty for the ceilings).
    pub fn pids(&self) -> Vec<i32> {
        self.procs.iter().map(ChildGuard::pid).collect()
    }

    /// "gvproxy 1234", ...
    pub fn process_names(&self) -> Vec<String> {
        self.procs
            .iter()
            .map(|p| format!("{} {}", p.label(), p.pid()))
            .collect()
    }

    /// Ok while every engine process runs; otherwise which one exited, how,
    /// and the end of its log.
    pub fn check_alive(&mut self) -> Result<(), String> {
        for p in &mut self.procs {
            if let Some(st) = p.try_wait() {
                return Err(format!(
                    "{} exited ({st}); log: {}",
                    p.label(),
                    p.log_tail(4)
                ));
            }
        }
        Ok(())
    }

    fn spawn(&mut self, label: &str, cmd: Command, dir: &Path) -> Result<(), String> {
        let log = dir.join(format!("{label}-{}-{}.log", self.kind, self.mtu));
        self.commands.push(show_command(&cmd));
        let child = ChildGuard::spawn(label, cmd, &log)?;
        self.procs.push(child);
        Ok(())
    }

    /// Waits until `ready` holds, failing early if an engine process exits.
    fn wait_until(&mut self, what: &str, ready: impl Fn(&Session) -> bool) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            self.check_alive()?;
            if ready(self) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let logs: Vec<String> = self
                    .procs
                    .iter()
                    .map(|p| format!("{}: {}", p.label(), p.log_tail(3)))
                    .collect();
                return Err(format!(
                    "{} not ready after {READY_TIMEOUT:?}: {what}; {}",
                    self.kind,
                    logs.join("; ")
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// One echo to the gateway answered within a second.
    fn gateway_answers(&self) -> bool {
        let gw = self.gateway.to_string();
        let cmd = command_in(
            self.guest_ns.as_ref(),
            "ping",
            &["-n", "-c", "1", "-W", "1", &gw],
        );
        run_bounded("ping", cmd, Duration::from_secs(3))
            .map(|o| o.status.is_some_and(|s| s.success()))
            .unwrap_or(false)
    }
}

fn empty_session(kind: EngineKind, mtu: u32, guest_ns: Netns) -> Session {
    Session {
        kind,
        mtu,
        guest_mtu: None,
        procs: Vec::new(),
        guest_ns: Some(guest_ns),
        host_ns: None,
        bind: Ipv4Addr::LOCALHOST,
        target: Ipv4Addr::new(192, 168, 127, 254),
        gateway: Ipv4Addr::new(192, 168, 127, 1),
        commands: Vec::new(),
    }
}

/// A persistent TAP in `ns`, configured statically as a guest of
/// 192.168.127.0/24 (the engine attaches to it).
fn static_tap(ns: &Netns, mtu: u32) -> Result<(), String> {
    let m = mtu.to_string();
    ns.ip(&["tuntap", "add", "dev", TAP, "mode", "tap"])?;
    ns.ip(&["link", "set", TAP, "address", GUEST_MAC, "mtu", &m, "up"])?;
    ns.ip(&["addr", "add", "192.168.127.2/24", "dev", TAP])?;
    ns.ip(&["route", "add", "default", "via", "192.168.127.1"])?;
    Ok(())
}

/// gvproxy on the host, gvforwarder in the namespace over `/connect`.
fn start_connect(
    kind: EngineKind,
    mtu: u32,
    gvproxy: &Path,
    gvforwarder: &Path,
    dir: &Path,
) -> Result<Session, String> {
    let ns = Netns::create()?;
    static_tap(&ns, mtu)?;
    let mut s = empty_session(kind, mtu, ns);
    let sock = dir.join(format!("{kind}-{mtu}.sock"));
    let url = format!("unix://{}", sock.display());
    let m = mtu.to_string();
    let mut cmd = Command::new(gvproxy);
    cmd.args(["-listen", &url, "-mtu", &m]);
    if kind == EngineKind::Other && help_lists_flag(&help_text(gvproxy), "ssh-port") {
        // Upstream forwards host port 2222 to the guest by default.
        cmd.args(["-ssh-port", "-1"]);
    }
    s.spawn("gvproxy", cmd, dir)?;
    s.wait_until("API socket", |_| sock.exists())?;
    let fwd = gvforwarder.to_string_lossy().into_owned();
    let cmd = command_in(
        s.guest_ns.as_ref(),
        &fwd,
        &[
            "-preexisting",
            "-iface",
            TAP,
            "-stop-if-exist=",
            "-mtu",
            &m,
            "-url",
            &url,
        ],
    );
    s.spawn("gvforwarder", cmd, dir)?;
    s.wait_until(
        "ping 192.168.127.1 from the guest",
        Session::gateway_answers,
    )?;
    Ok(s)
}

/// gvproxy serving the namespace's TAP itself.
fn start_tap(mtu: u32, gvproxy: &Path, dir: &Path) -> Result<Session, String> {
    let ns = Netns::create()?;
    static_tap(&ns, mtu)?;
    let tap_spec = format!("{}:{TAP}", ns.path());
    let mut s = empty_session(EngineKind::OursTap, mtu, ns);
    let sock = dir.join(format!("ours-tap-{mtu}.sock"));
    let url = format!("unix://{}", sock.display());
    let mut cmd = Command::new(gvproxy);
    cmd.args([
        "-listen",
        &url,
        "-listen-tap",
        &tap_spec,
        "-mtu",
        &mtu.to_string(),
    ]);
    s.spawn("gvproxy", cmd, dir)?;
    s.wait_until(
        "ping 192.168.127.1 from the guest",
        Session::gateway_answers,
    )?;
    Ok(s)
}

fn peer_session(kind: EngineKind, mtu: u32, ns: Netns) -> Session {
    Session {
        target: Ipv4Addr::new(10, 0, 2, 2),
        gateway: Ipv4Addr::new(10, 0, 2, 2),
        ..empty_session(kind, mtu, ns)
    }
}

/// `slirp4netns --configure`: it creates and configures tap0 itself
/// (10.0.2.100/24 via 10.0.2.2, which is the host's loopback).
fn start_slirp4netns(mtu: u32, bin: &Path, dir: &Path) -> Result<Session, String> {
    let ns = Netns::create()?;
    let path = ns.path();
    let mut s = peer_session(EngineKind::Slirp4netns, mtu, ns);
    let mut cmd = Command::new(bin);
    cmd.args([
        "--configure",
        &format!("--mtu={mtu}"),
        "--disable-dns",
        "--netns-type=path",
        &path,
        TAP,
    ]);
    s.spawn("slirp4netns", cmd, dir)?;
    s.wait_until("tap0 has 10.0.2.100", |s| {
        s.guest_ns
            .as_ref()
            .is_some_and(|ns| ns.has_addr(TAP, "10.0.2.100"))
    })?;
    Ok(s)
}

/// pasta on the TAP path: no port forwards at all (`-t/-u/-T/-U none`), so
/// its loopback splice shortcut is never used and every byte crosses tap0;
/// the gateway 10.0.2.2 maps to the host's loopback.
fn start_pasta(mtu: u32, bin: &Path, dir: &Path) -> Result<Session, String> {
    let ns = Netns::create()?;
    let path = ns.path();
    let mut s = peer_session(EngineKind::Pasta, mtu, ns);
    let m = mtu.to_string();
    let mut cmd = Command::new(bin);
    cmd.args([
        "-f",
        "-q",
        "--runas",
        "0:0",
        "--config-net",
        "--netns",
        &path,
        "-I",
        TAP,
        "-4",
        "-a",
        "10.0.2.100",
        "-n",
        "24",
        "-g",
        "10.0.2.2",
        "-t",
        "none",
        "-u",
        "none",
        "-T",
        "none",
        "-U",
        "none",
        "--no-dhcpv6",
        "--no-ra",
        "-m",
        &m,
    ]);
    s.spawn("pasta", cmd, dir)?;
    s.wait_until("tap0 has 10.0.2.100", |s| {
        s.guest_ns
            .as_ref()
            .is_some_and(|ns| ns.has_addr(TAP, "10.0.2.100"))
    })?;
    Ok(s)
}

/// A veth pair between two namespaces of our own: the kernel's path with no
/// user-mode stack.
fn start_veth(mtu: u32) -> Result<Session, String> {
    let host = Netns::create()?;
    let guest = Netns::create()?;
    let m = mtu.to_string();
    host.ip(&[
        "link",
        "add",
        "veth0",
        "type",
        "veth",
        "peer",
        "name",
        "veth1",
        "netns",
        guest.name(),
    ])?;
    host.ip(&["link", "set", "veth0", "mtu", &m, "up"])?;
    guest.ip(&["link", "set", "veth1", "mtu", &m, "up"])?;
    host.ip(&["addr", "add", "192.168.127.254/24", "dev", "veth0"])?;
    guest.ip(&["addr", "add", "192.168.127.2/24", "dev", "veth1"])?;
    let peer = Ipv4Addr::new(192, 168, 127, 254);
    Ok(Session {
        kind: EngineKind::Veth,
        mtu,
        guest_mtu: None,
        procs: Vec::new(),
        commands: vec![format!(
            "veth pair {} veth0 192.168.127.254/24 <-> {} veth1 192.168.127.2/24, mtu {mtu}",
            host.name(),
            guest.name()
        )],
        guest_ns: Some(guest),
        host_ns: Some(host),
        bind: peer,
        target: peer,
        gateway: peer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_in_go_help() {
        let help = "Usage of gvproxy:\n  -listen string\n    \tcontrol endpoint\n  -listen-tap string\n    \tserve a TAP\n  -mtu int\n";
        assert!(help_lists_flag(help, "listen-tap"));
        assert!(help_lists_flag(help, "listen"));
        assert!(!help_lists_flag(help, "ssh-port"));
        assert!(!help_lists_flag("a TAP listen-tap mention", "listen-tap"));
    }

    #[test]
    fn mtu_limits() {
        assert!(mtu_supported(EngineKind::Slirp4netns, 65520).is_ok());
        assert!(mtu_supported(EngineKind::Slirp4netns, 65521).is_ok());
        assert!(mtu_supported(EngineKind::Slirp4netns, 65522)
            .unwrap_err()
            .contains("65521"));
        assert!(mtu_supported(EngineKind::Pasta, 65521).is_err());
        assert!(mtu_supported(EngineKind::Ours, 65535).is_ok());
        assert!(mtu_supported(EngineKind::Veth, 500).is_err());
    }

    #[test]
    fn which_finds_sh() {
        assert!(which("sh").is_ok());
        assert!(which("surely-not-a-program-xyz").is_err());
    }
}
