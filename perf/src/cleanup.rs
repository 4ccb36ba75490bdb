//! Everything the harness creates (process groups, namespaces, its run
//! directory) is registered here, so that it is torn down whatever happens:
//! guards remove it on drop, and on SIGINT/SIGTERM or a panic (release
//! builds abort on panic, so no drop runs) `cleanup_all` removes whatever is
//! still registered, by process id and by name.

use nix::sys::signal::{kill, killpg, SigSet, Signal};
use nix::unistd::Pid;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
struct Registry {
    /// Set once teardown has begun: nothing new may be started.
    stopping: bool,
    /// Process groups (each child leads its own).
    groups: BTreeSet<i32>,
    /// Network namespaces, by name.
    netns: BTreeSet<String>,
    /// Directories to remove (the run directory).
    dirs: BTreeSet<PathBuf>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    stopping: false,
    groups: BTreeSet::new(),
    netns: BTreeSet::new(),
    dirs: BTreeSet::new(),
});

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(|p| p.into_inner())
}

/// Something to tear down.
pub enum Resource {
    /// A process group (each child leads its own).
    Group(i32),
    /// A network namespace, by name.
    Netns(String),
}

/// Runs `f` (which starts something and names it) with the registry
/// locked, so that a signal arriving meanwhile waits until what `f` started
/// is registered; refuses once teardown has begun.
pub fn start_registered<T>(f: impl FnOnce() -> Result<(T, Resource), String>) -> Result<T, String> {
    let mut reg = registry();
    if reg.stopping {
        return Err("interrupted".to_string());
    }
    let (out, resource) = f()?;
    match resource {
        Resource::Group(g) => {
            reg.groups.insert(g);
        }
        Resource::Netns(n) => {
            reg.netns.insert(n);
        }
    }
    Ok(out)
}

pub fn remove_group(pgid: i32) {
    registry().groups.remove(&pgid);
}

pub fn remove_netns(name: &str) {
    registry().netns.remove(name);
}

pub fn add_dir(dir: PathBuf) {
    registry().dirs.insert(dir);
}

pub fn remove_dir(dir: &PathBuf) {
    registry().dirs.remove(dir);
}

/// Whether SIGINT or SIGTERM arrived.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Blocks SIGINT and SIGTERM in this thread (call it first in `main`, so
/// every later thread inherits the mask) and waits for them on a thread of
/// their own: on a signal, tears everything down and exits with 130.
/// Children get a clean signal mask from `std::process::Command`.
pub fn install_signal_handler(keep_dirs: bool) -> Result<(), String> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set.thread_block()
        .map_err(|e| format!("cannot block SIGINT/SIGTERM: {e}"))?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Ok(sig) = set.wait() {
                INTERRUPTED.store(true, Ordering::SeqCst);
                eprintln!("\nperf: {sig}, tearing down");
                let mut reg = registry();
                teardown(&mut reg, keep_dirs);
                eprintln!("perf: everything removed");
                std::process::exit(130);
            }
        })
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    Ok(())
}

/// On panic (which aborts in release builds), tear down first.
pub fn install_panic_hook(keep_dirs: bool) {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        match REGISTRY.try_lock() {
            Ok(mut reg) => teardown(&mut reg, keep_dirs),
            Err(TryLockError::Poisoned(p)) => teardown(&mut p.into_inner(), keep_dirs),
            Err(TryLockError::WouldBlock) => {
                eprintln!("perf: panicked while starting something; teardown skipped")
            }
        }
    }));
}

/// Tears down whatever is still registered (normal exit path after every
/// guard is gone: only stragglers).
pub fn cleanup_all(keep_dirs: bool) {
    let mut reg = registry();
    teardown(&mut reg, keep_dirs);
}

fn teardown(reg: &mut Registry, keep_dirs: bool) {
    reg.stopping = true;
    let groups: Vec<i32> = std::mem::take(&mut reg.groups).into_iter().collect();
    for &g in &groups {
        let _ = killpg(Pid::from_raw(g), Signal::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline && groups.iter().any(|&g| group_alive(g)) {
        std::thread::sleep(Duration::from_millis(20));
    }
    for &g in &groups {
        let _ = killpg(Pid::from_raw(g), Signal::SIGKILL);
    }
    for ns in std::mem::take(&mut reg.netns) {
        delete_netns(&ns);
    }
    let dirs = std::mem::take(&mut reg.dirs);
    if keep_dirs {
        for d in dirs {
            eprintln!("perf: logs kept in {}", d.display());
        }
    } else {
        for d in dirs {
            let _ = std::fs::remove_dir_all(&d);
        }
    }
}

fn group_alive(pgid: i32) -> bool {
    killpg(Pid::from_raw(pgid), None).is_ok()
}

/// Pids of the processes in a namespace (`ip netns pids`).
pub fn netns_pids(name: &str) -> Vec<i32> {
    Command::new("ip")
        .args(["netns", "pids", name])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Kills every process in the namespace, then deletes it.
pub fn delete_netns(name: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let pids = netns_pids(name);
        if pids.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            eprintln!("perf: netns {name}: processes {pids:?} survive SIGKILL");
            break;
        }
        for pid in pids {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = Command::new("ip").args(["netns", "del", name]).output();
    if let Ok(o) = out {
        if !o.status.success() && std::path::Path::new("/run/netns").join(name).exists() {
            eprintln!(
                "perf: ip netns del {name}: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
        }
    }
}

/// Namespaces `gvperf-<pid>-<n>` left by a perf run that is gone (killed
/// with SIGKILL): removed, with what runs in them.
pub fn remove_stale_netns() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    for ns in text.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(pid) = stale_owner(ns) else { continue };
        if kill(Pid::from_raw(pid), None).is_err() {
            delete_netns(ns);
            eprintln!("perf: removed stale namespace {ns}");
        }
    }
}

/// The owner pid of a namespace named `gvperf-<pid>-<n>`.
fn stale_owner(name: &str) -> Option<i32> {
    let rest = name.strip_prefix("gvperf-")?;
    let (pid, n) = rest.split_once('-')?;
    n.parse::<u32>().ok()?;
    pid.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_names() {
        assert_eq!(stale_owner("gvperf-123-4"), Some(123));
        assert_eq!(stale_owner("gvt-udp1-423-51"), None);
        assert_eq!(stale_owner("gvperf-x-1"), None);
        assert_eq!(stale_owner("gvperf-12"), None);
    }
}
