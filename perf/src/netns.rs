//! Network namespaces of our own (`gvperf-<pid>-<n>`), deleted on drop with
//! every process in them; and where a command runs: the host or one of them.

use crate::cleanup;
use crate::proc::run_ok;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(1);

#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a namespace with `lo` up.
    pub fn create() -> Result<Netns, String> {
        let name = format!(
            "gvperf-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        // Registered before it exists, so that a signal in between still
        // removes it.
        cleanup::start_registered(|| Ok(((), cleanup::Resource::Netns(name.clone()))))?;
        let ns = Netns { name };
        run_ok(&["ip", "netns", "add", &ns.name])?;
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// `ip -n NAME ARGS...`; Ok(stdout) if it succeeds.
    pub fn ip(&self, args: &[&str]) -> Result<String, String> {
        let mut full = vec!["ip", "-n", &self.name];
        full.extend_from_slice(args);
        run_ok(&full)
    }

    /// The MTU of a device in this namespace.
    pub fn mtu_of(&self, dev: &str) -> Option<u32> {
        self.ip(&["-o", "link", "show", "dev", dev])
            .ok()
            .and_then(|t| crate::parse::link_mtu(&t))
    }

    /// Whether `dev` holds IPv4 address `addr`.
    pub fn has_addr(&self, dev: &str, addr: &str) -> bool {
        self.ip(&["-o", "-4", "addr", "show", "dev", dev])
            .map(|t| t.contains(&format!("inet {addr}/")))
            .unwrap_or(false)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        cleanup::delete_netns(&self.name);
        cleanup::remove_netns(&self.name);
    }
}

/// A command run on the host, or inside a namespace through `ip netns exec`
/// (which execs the program: the pid is the program's).
pub fn command_in(ns: Option<&Netns>, program: &str, args: &[&str]) -> Command {
    match ns {
        None => {
            let mut c = Command::new(program);
            c.args(args);
            c
        }
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns.name(), program]).args(args);
            c
        }
    }
}
