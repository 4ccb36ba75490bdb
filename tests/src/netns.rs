//! Network namespaces (a "guest" behind a TAP device, a "remote host" behind
//! a veth pair), deleted with everything running in them on drop.

use crate::process::ChildGuard;
use crate::{check_output, run_cmd, run_ok};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::fs::File;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A network namespace `gvt-<prefix>-<pid>-<n>` with `lo` up and
/// `net.ipv4.ping_group_range` opened (ping sockets work inside). Drop kills
/// every process in it (`ip netns pids`) and deletes it, which also removes
/// its TAP devices and veth pairs.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    pub fn new(prefix: &str) -> Netns {
        let prefix: String = prefix
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(16)
            .collect();
        let name = format!("gvt-{prefix}-{}-{}", std::process::id(), crate::next_id());
        run_ok(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns.exec_ok(&[
            "sh",
            "-c",
            "echo '0 2147483647' > /proc/sys/net/ipv4/ping_group_range",
        ]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NAME ARGS...`, panics unless it succeeds; returns stdout.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["ip", "-n", &self.name];
        full.extend_from_slice(args);
        run_ok(&full)
    }

    /// Creates a persistent TAP device (no carrier until a process attaches,
    /// e.g. `gvforwarder -preexisting`), sets its MAC and MTU, brings it up.
    pub fn add_tap(&self, name: &str, mac: &str, mtu: u32) {
        self.ip(&["tuntap", "add", "dev", name, "mode", "tap"]);
        self.ip(&[
            "link",
            "set",
            name,
            "address",
            mac,
            "mtu",
            &mtu.to_string(),
            "up",
        ]);
    }

    /// `ip addr add CIDR dev DEV` (IPv4 or IPv6).
    pub fn addr_add(&self, dev: &str, cidr: &str) {
        self.ip(&["addr", "add", cidr, "dev", dev]);
    }

    /// `ip route add default via GATEWAY`.
    pub fn route_add_default(&self, via: &str) {
        self.ip(&["route", "add", "default", "via", via]);
    }

    /// `ip link set DEV up`.
    pub fn link_up(&self, dev: &str) {
        self.ip(&["link", "set", dev, "up"]);
    }

    /// `ip netns exec NAME ARGS...` as a `Command`, to adjust before running.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).args(args);
        cmd
    }

    /// Runs ARGS inside the namespace to completion (stdin from /dev/null).
    pub fn exec(&self, args: &[&str]) -> Output {
        self.command(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {args:?} in {}: {e}", self.name))
    }

    /// Like `exec`, but panics with stdout/stderr unless it exits 0; returns
    /// stdout.
    pub fn exec_ok(&self, args: &[&str]) -> String {
        let out = self.exec(args);
        check_output(args, &out);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts ARGS inside the namespace as a `ChildGuard` (output to its log).
    pub fn spawn(&self, args: &[&str]) -> ChildGuard {
        let label = args
            .first()
            .map(|a| a.rsplit('/').next().unwrap_or(a))
            .unwrap_or("cmd");
        ChildGuard::spawn(label, self.command(args))
    }

    /// Runs `f` on a thread that has entered this namespace, so std sockets
    /// (TcpStream, UdpSocket, ...) opened in `f` live inside it.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name);
        let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        std::thread::scope(|s| {
            s.spawn(move || {
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .unwrap_or_else(|e| panic!("setns {path}: {e}"));
                f()
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    /// Pids of the processes in this namespace.
    pub fn pids(&self) -> Vec<i32> {
        let out = run_cmd(&["ip", "netns", "pids", &self.name]);
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let pids = self.pids();
            if pids.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                eprintln!("netns {}: processes {pids:?} survive SIGKILL", self.name);
                break;
            }
            for pid in pids {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = run_cmd(&["ip", "netns", "del", &self.name]);
        if !out.status.success() {
            eprintln!(
                "ip netns del {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr).trim_end()
            );
        }
    }
}

/// One end of a veth pair: a device name and the namespace it lives in
/// (`None`: the host's namespace).
#[derive(Debug, Clone)]
pub struct VethEnd {
    pub ns: Option<String>,
    pub name: String,
}

impl VethEnd {
    /// `ip [-n NS] ARGS...`, panics unless it succeeds; returns stdout.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["ip"];
        if let Some(ns) = &self.ns {
            full.extend_from_slice(&["-n", ns]);
        }
        full.extend_from_slice(args);
        run_ok(&full)
    }

    pub fn addr_add(&self, cidr: &str) {
        self.ip(&["addr", "add", cidr, "dev", &self.name]);
    }

    pub fn set_mtu(&self, mtu: u32) {
        self.ip(&["link", "set", &self.name, "mtu", &mtu.to_string()]);
    }

    pub fn set_mac(&self, mac: &str) {
        self.ip(&["link", "set", &self.name, "address", mac]);
    }
}

/// A veth pair between the host (`a: None`) or a namespace and another
/// namespace, both ends up. Device names are unique on the machine
/// (`gv<pid>-<n>a`/`b`). Drop deletes the pair (deleting either namespace
/// does too).
#[derive(Debug)]
pub struct Veth {
    pub a: VethEnd,
    pub b: VethEnd,
}

impl Veth {
    pub fn new(a: Option<&Netns>, b: &Netns) -> Veth {
        let stem = format!("gv{:x}-{:x}", std::process::id(), crate::next_id());
        assert!(stem.len() < 15, "veth name {stem} too long");
        let a = VethEnd {
            ns: a.map(|n| n.name().to_string()),
            name: format!("{stem}a"),
        };
        let b = VethEnd {
            ns: Some(b.name().to_string()),
            name: format!("{stem}b"),
        };
        let mut cmd = vec!["ip", "link", "add", &a.name];
        if let Some(ns) = &a.ns {
            cmd.extend_from_slice(&["netns", ns]);
        }
        let b_ns = b.ns.as_deref().unwrap_or_default();
        cmd.extend_from_slice(&["type", "veth", "peer", "name", &b.name, "netns", b_ns]);
        run_ok(&cmd);
        let veth = Veth { a, b };
        veth.a.ip(&["link", "set", &veth.a.name, "up"]);
        veth.b.ip(&["link", "set", &veth.b.name, "up"]);
        veth
    }

    /// A pair from the host's namespace (`a`) into `ns` (`b`).
    pub fn host_to(ns: &Netns) -> Veth {
        Veth::new(None, ns)
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        // Fails harmlessly when a namespace holding an end is already gone.
        let mut cmd = vec!["ip"];
        if let Some(ns) = &self.a.ns {
            cmd.extend_from_slice(&["-n", ns]);
        }
        cmd.extend_from_slice(&["link", "del", &self.a.name]);
        let _ = run_cmd(&cmd);
    }
}
