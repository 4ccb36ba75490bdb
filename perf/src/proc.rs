//! Child processes: engine daemons and host-side servers that live for a
//! while (`ChildGuard`, killed by process group on drop), bounded one-shot
//! commands (`run_bounded`), and the CPU and peak memory of a process tree
//! read from `/proc`.

use crate::cleanup;
use crate::parse;
use nix::sys::signal::{killpg, SigSet, Signal};
use nix::unistd::Pid;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

const POLL: Duration = Duration::from_millis(10);

/// A spawned process leading its own process group, its stdout and stderr
/// appended to a log file (or stdout piped as lines, see `spawn_lines`).
/// Drop: SIGTERM to the group, SIGKILL after a grace period, reaped.
#[derive(Debug)]
pub struct ChildGuard {
    label: String,
    child: Child,
    pgid: i32,
    log: PathBuf,
    status: Option<ExitStatus>,
    lines: Option<Receiver<String>>,
}

/// Spawns `cmd` leading a process group of its own, with an empty signal
/// mask (the harness blocks SIGINT/SIGTERM in every thread so that its
/// signal thread takes them, and a mask survives exec), registered for
/// teardown.
#[allow(unsafe_code)]
fn spawn_registered(label: &str, mut cmd: Command) -> Result<(Child, i32), String> {
    cmd.process_group(0);
    let empty = SigSet::empty();
    // SAFETY: the closure runs in the child between fork and exec; it only
    // calls pthread_sigmask, which is async-signal-safe, on a set built
    // before the fork, and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            empty
                .thread_set_mask()
                .map_err(|e| std::io::Error::from_raw_os_error(e as i32))
        });
    }
    cleanup::start_registered(|| {
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {label} ({}): {e}", show_command(&cmd)))?;
        let pgid = i32::try_from(child.id()).map_err(|_| "pid out of range".to_string())?;
        Ok(((child, pgid), cleanup::Resource::Group(pgid)))
    })
}

impl ChildGuard {
    /// Starts `cmd`, stdin from /dev/null, stdout and stderr to `log`.
    pub fn spawn(label: &str, mut cmd: Command, log: &Path) -> Result<ChildGuard, String> {
        let file = File::create(log).map_err(|e| format!("create {}: {e}", log.display()))?;
        let file2 = file
            .try_clone()
            .map_err(|e| format!("dup {}: {e}", log.display()))?;
        cmd.stdin(Stdio::null()).stdout(file).stderr(file2);
        let (child, pgid) = spawn_registered(label, cmd)?;
        Ok(ChildGuard {
            label: label.to_string(),
            child,
            pgid,
            log: log.to_path_buf(),
            status: None,
            lines: None,
        })
    }

    /// Starts `cmd` with stdout read line by line (see `wait_line`), stderr
    /// to `log`.
    pub fn spawn_lines(label: &str, mut cmd: Command, log: &Path) -> Result<ChildGuard, String> {
        let file = File::create(log).map_err(|e| format!("create {}: {e}", log.display()))?;
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(file);
        let (mut child, pgid) = spawn_registered(label, cmd)?;
        let (tx, rx) = mpsc::channel();
        if let Some(out) = child.stdout.take() {
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Ok(ChildGuard {
            label: label.to_string(),
            child,
            pgid,
            log: log.to_path_buf(),
            status: None,
            lines: Some(rx),
        })
    }

    pub fn pid(&self) -> i32 {
        self.pgid
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// Waits up to `timeout` for a stdout line for which `pred` holds
    /// (`spawn_lines` only); returns it. Fails if the process exits first.
    pub fn wait_line(
        &mut self,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        let Some(rx) = &self.lines else {
            return Err(format!("{}: stdout is not piped", self.label));
        };
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left.min(Duration::from_millis(100))) {
                Ok(line) => {
                    if pred(&line) {
                        return Ok(line);
                    }
                    seen.push(line);
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.wait_timeout(Duration::from_secs(1));
                    return Err(format!(
                        "{} exited ({}) without the expected output: {}",
                        self.label,
                        status.map_or_else(|| "still running".to_string(), |s| s.to_string()),
                        self.describe_output(&seen)
                    ));
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} printed nothing expected within {timeout:?}: {}",
                    self.label,
                    self.describe_output(&seen)
                ));
            }
        }
    }

    fn describe_output(&self, seen: &[String]) -> String {
        let mut out: Vec<String> = seen.iter().rev().take(3).rev().cloned().collect();
        let log = self.log_tail(3);
        if !log.is_empty() {
            out.push(log);
        }
        let joined = out.join(" | ");
        if joined.is_empty() {
            "(nothing)".to_string()
        } else {
            joined
        }
    }

    /// The exit status once the process has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

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

    /// The last `n` lines of the log, joined with " | ".
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        tail_lines(&text, n)
    }

    /// SIGTERM to the group, SIGKILL after `grace`; reaped.
    pub fn stop(&mut self, grace: Duration) {
        if self.try_wait().is_none() {
            let _ = killpg(Pid::from_raw(self.pgid), Signal::SIGTERM);
            if self.wait_timeout(grace).is_none() {
                let _ = killpg(Pid::from_raw(self.pgid), Signal::SIGKILL);
                let _ = self.child.wait();
            }
        }
        // Whatever else the group started.
        let _ = killpg(Pid::from_raw(self.pgid), Signal::SIGKILL);
        cleanup::remove_group(self.pgid);
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(2));
    }
}

/// The last `n` non-empty lines of `text`, joined with " | ".
pub fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// A command line for messages.
pub fn show_command(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// What a bounded command printed.
#[derive(Debug)]
pub struct Bounded {
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
}

/// Runs `cmd` to completion, stdout and stderr captured; killed (its whole
/// process group) if it is still running after `timeout`.
pub fn run_bounded(label: &str, mut cmd: Command, timeout: Duration) -> Result<Bounded, String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let (mut child, pgid) = spawn_registered(label, cmd)?;
    let out_reader = child.stdout.take().map(reader_thread);
    let err_reader = child.stderr.take().map(reader_thread);
    let deadline = start + timeout;
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) => {}
            Err(_) => break None,
        }
        if Instant::now() >= deadline {
            timed_out = true;
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
            break child.wait().ok();
        }
        std::thread::sleep(POLL);
    };
    // Grandchildren holding the pipes open die with the group.
    let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    cleanup::remove_group(pgid);
    let stdout = out_reader
        .map(|h| h.join().unwrap_or_default())
        .unwrap_or_default();
    let stderr = err_reader
        .map(|h| h.join().unwrap_or_default())
        .unwrap_or_default();
    Ok(Bounded {
        status,
        stdout,
        stderr,
        timed_out,
    })
}

fn reader_thread(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Runs a short command to completion (30 s bound); Ok(stdout) if it exits 0.
pub fn run_ok(args: &[&str]) -> Result<String, String> {
    let (prog, rest) = args
        .split_first()
        .ok_or_else(|| "empty command".to_string())?;
    let mut cmd = Command::new(prog);
    cmd.args(rest);
    let shown = args.join(" ");
    let out = run_bounded(prog, cmd, Duration::from_secs(30))?;
    match out.status {
        Some(st) if st.success() => Ok(out.stdout),
        st => Err(format!(
            "`{shown}` failed ({}): {}",
            st.map_or_else(|| "killed".to_string(), |s| s.to_string()),
            tail_lines(&format!("{}\n{}", out.stdout, out.stderr), 3)
        )),
    }
}

/// Clock ticks per second of `/proc/PID/stat` times.
pub fn clock_ticks() -> f64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => t as f64,
        _ => 100.0,
    }
}

/// `pids` and all their descendants (scanning `/proc`), with their
/// (ppid, cpu ticks).
fn process_tree(roots: &[i32]) -> BTreeMap<i32, u64> {
    let mut all: BTreeMap<i32, (i32, u64)> = BTreeMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                if let Some(st) = parse::proc_stat(&text) {
                    all.insert(pid, st);
                }
            }
        }
    }
    let mut tree: BTreeMap<i32, u64> = BTreeMap::new();
    for &r in roots {
        if let Some(&(_, t)) = all.get(&r) {
            tree.insert(r, t);
        }
    }
    // Descendants: repeat until no new child is found.
    loop {
        let before = tree.len();
        for (&pid, &(ppid, t)) in &all {
            if tree.contains_key(&ppid) && !tree.contains_key(&pid) {
                tree.insert(pid, t);
            }
        }
        if tree.len() == before {
            break;
        }
    }
    tree
}

/// CPU seconds (user + system, all threads) used so far by `roots` and
/// their descendants, per process.
pub fn cpu_seconds(roots: &[i32]) -> BTreeMap<i32, f64> {
    let hz = clock_ticks();
    process_tree(roots)
        .into_iter()
        .map(|(pid, t)| (pid, t as f64 / hz))
        .collect()
}

/// CPU used between two samples: processes present in `after` only count
/// from zero; processes gone by `after` are lost (engines are long-lived).
pub fn cpu_delta(before: &BTreeMap<i32, f64>, after: &BTreeMap<i32, f64>) -> f64 {
    after
        .iter()
        .map(|(pid, a)| (a - before.get(pid).copied().unwrap_or(0.0)).max(0.0))
        .sum()
}

/// Resets the peak RSS (VmHWM) of `roots` and their descendants.
pub fn reset_peak_rss(roots: &[i32]) {
    for pid in process_tree(roots).keys() {
        // "5": reset the peak resident set size (proc(5), clear_refs).
        let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
    }
}

/// Sum of VmHWM over `roots` and their descendants, in KiB.
pub fn peak_rss_kib(roots: &[i32]) -> u64 {
    process_tree(roots)
        .keys()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .filter_map(|s| parse::vm_hwm_kib(&s))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_delta_counts_new_processes_from_zero() {
        let before = BTreeMap::from([(1, 1.0), (2, 5.0)]);
        let after = BTreeMap::from([(1, 1.5), (2, 5.25), (3, 0.5)]);
        assert!((cpu_delta(&before, &after) - 1.25).abs() < 1e-9);
    }

    #[test]
    fn own_process_is_measured() {
        let me = i32::try_from(std::process::id()).unwrap();
        let cpu = cpu_seconds(&[me]);
        assert!(cpu.contains_key(&me));
        assert!(peak_rss_kib(&[me]) > 0);
    }

    #[test]
    fn bounded_command_is_killed_at_the_deadline() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo hi; sleep 30"]);
        let t0 = Instant::now();
        let out = run_bounded("sh", cmd, Duration::from_millis(300)).unwrap();
        assert!(t0.elapsed() < Duration::from_secs(5));
        assert!(out.timed_out);
        assert_eq!(out.stdout, "hi\n");

        assert_eq!(run_ok(&["sh", "-c", "echo ok"]).unwrap(), "ok\n");
        assert!(run_ok(&["sh", "-c", "echo bad >&2; exit 3"])
            .unwrap_err()
            .contains("bad"));
    }

    #[test]
    fn tails() {
        assert_eq!(tail_lines("a\n\nb\nc\n", 2), "b | c");
        assert_eq!(tail_lines("", 2), "");
    }
}
