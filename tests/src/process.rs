//! Child processes that die with the test, and bounded waits for what they
//! are expected to create.

use crate::tmp::{tmp_dir, TempDir};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const POLL: Duration = Duration::from_millis(10);
const LOG_TAIL_LINES: usize = 60;

/// A spawned process, in a process group of its own, whose stderr (and
/// usually stdout) goes to a log file. On drop the whole group is killed
/// (SIGKILL) and the child reaped; while unwinding from a failure the log's
/// tail is printed first, so a failed test shows what the daemon said.
#[derive(Debug)]
pub struct ChildGuard {
    name: String,
    child: Child,
    pgid: Pid,
    log: PathBuf,
    status: Option<ExitStatus>,
    _dir: TempDir,
}

impl ChildGuard {
    /// Spawns `cmd` with stdin from /dev/null and stdout + stderr appended to
    /// the log file.
    pub fn spawn(name: &str, mut cmd: Command) -> ChildGuard {
        let dir = tmp_dir(&format!("log-{name}"));
        let log = dir.join(&format!("{name}.log"));
        let file = File::create(&log).expect("create log file");
        let file2 = file.try_clone().expect("dup log file");
        cmd.stdin(Stdio::null()).stdout(file).stderr(file2);
        Self::spawn_inner(name, cmd, dir, log)
    }

    /// Spawns `cmd` with stdin from /dev/null, stdout piped (take it with
    /// `child_mut().stdout.take()`), stderr to the log file.
    pub fn spawn_stdout_piped(name: &str, mut cmd: Command) -> ChildGuard {
        let dir = tmp_dir(&format!("log-{name}"));
        let log = dir.join(&format!("{name}.log"));
        let file = File::create(&log).expect("create log file");
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(file);
        Self::spawn_inner(name, cmd, dir, log)
    }

    fn spawn_inner(name: &str, mut cmd: Command, dir: TempDir, log: PathBuf) -> ChildGuard {
        become_subreaper();
        cmd.process_group(0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {name} ({cmd:?}): {e}"));
        let pgid = Pid::from_raw(i32::try_from(child.id()).expect("pid fits in i32"));
        ChildGuard {
            name: name.to_string(),
            child,
            pgid,
            log,
            status: None,
            _dir: dir,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Everything logged so far.
    pub fn log(&self) -> String {
        std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The exit status if the process has exited (reaps it).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self
                .child
                .try_wait()
                .unwrap_or_else(|e| panic!("waiting for {}: {e}", self.name));
        }
        self.status
    }

    pub fn is_running(&mut self) -> bool {
        self.try_wait().is_none()
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_wait() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits up to `timeout` for a clean exit (status 0); panics with the log
    /// otherwise.
    pub fn wait_success(&mut self, timeout: Duration) {
        match self.wait_timeout(timeout) {
            Some(st) if st.success() => {}
            Some(st) => panic!("{} exited with {st}; log:\n{}", self.name, self.log()),
            None => panic!(
                "{} still running after {timeout:?}; log tail:\n{}",
                self.name,
                self.log_tail(LOG_TAIL_LINES)
            ),
        }
    }

    /// SIGTERM to the process group, then SIGKILL after `grace`.
    pub fn terminate(&mut self, grace: Duration) -> Option<ExitStatus> {
        if self.try_wait().is_none() {
            let _ = killpg(self.pgid, Signal::SIGTERM);
            if self.wait_timeout(grace).is_none() {
                self.kill();
            }
        }
        self.status
    }

    /// SIGKILL to the process group and reap the child.
    pub fn kill(&mut self) {
        // The group may hold grandchildren even after the child exited.
        let _ = killpg(self.pgid, Signal::SIGKILL);
        if self.status.is_none() {
            self.status = self.child.wait().ok();
        }
        reap_group(self.pgid);
    }

    fn check_alive(&mut self, waiting_for: &str) {
        if let Some(st) = self.try_wait() {
            panic!(
                "{} exited ({st}) while waiting for {waiting_for}; log:\n{}",
                self.name,
                self.log_tail(LOG_TAIL_LINES)
            );
        }
    }

    fn wait_until(&mut self, what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            if ready() {
                return;
            }
            self.check_alive(what);
            if Instant::now() >= deadline {
                panic!(
                    "{} did not produce {what} within {timeout:?}; log tail:\n{}",
                    self.name,
                    self.log_tail(LOG_TAIL_LINES)
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits until `path` exists; panics (with the log) if the process exits
    /// first or the time runs out.
    pub fn wait_for_path(&mut self, path: &Path, timeout: Duration) {
        self.wait_until(&format!("path {}", path.display()), timeout, || {
            path.exists()
        });
    }

    /// Waits until a unix stream socket at `path` accepts a connection.
    pub fn wait_for_unix_socket(&mut self, path: &Path, timeout: Duration) {
        self.wait_until(&format!("unix socket {}", path.display()), timeout, || {
            UnixStream::connect(path).is_ok()
        });
    }

    /// Waits until a TCP listener at `addr` (in the test's own network
    /// namespace) accepts a connection.
    pub fn wait_for_tcp_port(&mut self, addr: SocketAddr, timeout: Duration) {
        self.wait_until(&format!("tcp listener {addr}"), timeout, || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        });
    }

    /// Waits until the log contains `needle`.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) {
        let log = self.log.clone();
        self.wait_until(&format!("log line {needle:?}"), timeout, || {
            std::fs::read(&log).is_ok_and(|b| String::from_utf8_lossy(&b).contains(needle))
        });
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let state = match self.try_wait() {
                Some(st) => format!("exited: {st}"),
                None => "still running".to_string(),
            };
            eprintln!(
                "---- {} (pid {}, {state}) log tail: {} ----\n{}\n---- end of {} ----",
                self.name,
                self.child.id(),
                self.log.display(),
                self.log_tail(LOG_TAIL_LINES),
                self.name
            );
        }
        self.kill();
    }
}

/// Makes this process the reaper of its orphaned descendants (UML's helper
/// processes outlive a SIGKILLed UML; this machine's pid 1 does not reap
/// them), so `reap_group` can collect them.
pub(crate) fn become_subreaper() {
    static DONE: std::sync::Once = std::sync::Once::new();
    DONE.call_once(|| {
        if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
            eprintln!("prctl(PR_SET_CHILD_SUBREAPER): {e}");
        }
    });
}

/// Reaps the zombies of process group `pgid` that are our children (after
/// the group was killed and its leader waited for). Bounded to about 1 s.
pub(crate) fn reap_group(pgid: Pid) {
    use nix::sys::wait::{waitpid, WaitPidFlag};
    let me = nix::unistd::getpid().as_raw();
    for _ in 0..100 {
        let mut ours_left = false;
        for (pid, ppid, pgrp) in processes() {
            if pgrp == pgid.as_raw() && ppid == me {
                ours_left = true;
                let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
            }
        }
        if !ours_left {
            return;
        }
        std::thread::sleep(POLL);
    }
}

/// (pid, ppid, pgrp) of every process, from /proc/*/stat.
fn processes() -> Vec<(i32, i32, i32)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // "pid (comm) state ppid pgrp ...": comm may hold spaces and ')'.
            let rest = &stat[stat.rfind(')')? + 1..];
            let mut f = rest.split_whitespace().skip(1);
            let ppid = f.next()?.parse().ok()?;
            let pgrp = f.next()?.parse().ok()?;
            Some((pid, ppid, pgrp))
        })
        .collect()
}

fn wait_bool(timeout: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if ready() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL);
    }
}

/// True once `path` exists (polled until `timeout`).
pub fn wait_for_path(path: &Path, timeout: Duration) -> bool {
    wait_bool(timeout, || path.exists())
}

/// True once a unix stream socket at `path` accepts a connection.
pub fn wait_for_unix_socket(path: &Path, timeout: Duration) -> bool {
    wait_bool(timeout, || UnixStream::connect(path).is_ok())
}

/// True once a TCP listener at `addr` accepts a connection.
pub fn wait_for_tcp_port(addr: SocketAddr, timeout: Duration) -> bool {
    wait_bool(timeout, || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
    })
}
