//! Real Linux guests: QEMU (TCG) with Debian's kernel, or User Mode Linux,
//! both booting the same initramfs (see `image.rs`). A guest runs one shell
//! script passed on its kernel command line and powers off; the console
//! shows `GVTEST-BEGIN ...`, the script's output, `GVTEST-EXIT <code>`.

mod image;

pub use image::GuestImage;

use crate::tmp::TempDir;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// Longest encoded script (base64, gzip'd when that is shorter) that fits on
/// the kernel command line (x86's limit is 2048 bytes in all).
pub const MAX_SCRIPT_CMDLINE: usize = 1700;

/// What a finished guest left behind.
#[derive(Debug, Clone)]
pub struct GuestResult {
    /// Everything the guest (and QEMU/UML themselves) printed, `\r` removed.
    pub console: String,
    /// The script's exit code from `GVTEST-EXIT <code>`; `None` if the guest
    /// never got there (timeout, panic, boot failure).
    pub exit_code: Option<i32>,
    /// True if the guest was killed at the timeout.
    pub timed_out: bool,
    /// From spawn to exit.
    pub elapsed: Duration,
}

impl GuestResult {
    /// The script's output: the lines between `GVTEST-BEGIN` and `GVTEST-EXIT`.
    pub fn output(&self) -> String {
        let mut inside = false;
        let mut out = String::new();
        for line in self.console.lines() {
            if line.contains("GVTEST-BEGIN") {
                inside = true;
                continue;
            }
            if line.contains("GVTEST-EXIT ") {
                break;
            }
            if inside {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// Panics with the whole console unless the script exited 0.
    pub fn assert_success(&self) {
        assert_eq!(
            self.exit_code,
            Some(0),
            "guest script failed (exit {:?}, timed out: {}, {:.1} s); console:\n{}",
            self.exit_code,
            self.timed_out,
            self.elapsed.as_secs_f64(),
            self.console
        );
    }
}

fn parse_exit_code(console: &str) -> Option<i32> {
    console.lines().rev().find_map(|line| {
        let rest = &line[line.find("GVTEST-EXIT ")? + "GVTEST-EXIT ".len()..];
        let digits: String = rest
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '-')
            .collect();
        digits.parse().ok()
    })
}

/// A QEMU guest: `-accel tcg -nodefaults -serial stdio -no-reboot`, Debian's
/// kernel, one virtio-net-pci NIC on netdev `n0` (which `netdev_args` must
/// define, e.g. `["-netdev", "stream,id=n0,server=off,addr.type=unix,addr.path=..."]`).
#[derive(Debug, Clone)]
pub struct QemuConfig {
    pub netdev_args: Vec<String>,
    pub mac: String,
    pub script: String,
    pub smp: u32,
    pub mem_mb: u32,
    /// Appended to the `-device virtio-net-pci,...` options (e.g. `host_mtu=9000`).
    pub nic_options: Vec<String>,
    /// More QEMU arguments.
    pub extra_args: Vec<String>,
    /// More kernel command line arguments.
    pub kernel_args: Vec<String>,
    /// Run QEMU inside this network namespace (`ip netns exec`), e.g. to
    /// use `-netdev tap` on a TAP device there.
    pub netns: Option<String>,
}

impl QemuConfig {
    pub fn new(netdev_args: &[String], mac: &str, script: &str) -> QemuConfig {
        QemuConfig {
            netdev_args: netdev_args.to_vec(),
            mac: mac.to_string(),
            script: script.to_string(),
            smp: 1,
            mem_mb: 256,
            nic_options: Vec::new(),
            extra_args: Vec::new(),
            kernel_args: Vec::new(),
            netns: None,
        }
    }
}

/// A User Mode Linux guest (`linux` from user-mode-linux). `vec_args` is the
/// NIC, e.g. `vec0:transport=bess,src=...,dst=...,mac=...,mtu=1500`, or ""
/// for none; it shows up in the guest as `vec0`.
#[derive(Debug, Clone)]
pub struct UmlConfig {
    pub vec_args: String,
    pub script: String,
    pub mem_mb: u32,
    /// More kernel command line arguments.
    pub kernel_args: Vec<String>,
    /// Run `linux` inside this network namespace (`ip netns exec`), e.g. to
    /// use `transport=tap` on a TAP device there.
    pub netns: Option<String>,
}

impl UmlConfig {
    pub fn new(vec_args: &str, script: &str) -> UmlConfig {
        UmlConfig {
            vec_args: vec_args.to_string(),
            script: script.to_string(),
            mem_mb: 256,
            kernel_args: Vec::new(),
            netns: None,
        }
    }
}

/// Boots a QEMU guest, runs `script`, returns when it powers off or at
/// `timeout` (then it is killed).
pub fn run_qemu(netdev_args: &[String], mac: &str, script: &str, timeout: Duration) -> GuestResult {
    Guest::start_qemu(&QemuConfig::new(netdev_args, mac, script)).wait(timeout)
}

/// Boots a UML guest, runs `script`, returns when it powers off or at
/// `timeout` (then it is killed).
pub fn run_uml(vec_args: &str, script: &str, timeout: Duration) -> GuestResult {
    Guest::start_uml(&UmlConfig::new(vec_args, script)).wait(timeout)
}

/// `gvtest=<base64>` or, when shorter, `gvtestgz=<base64 of gzip>`.
fn script_arg(script: &str) -> String {
    let plain = format!("gvtest={}", base64(script.as_bytes()));
    let arg = if plain.len() <= 600 {
        plain
    } else {
        let gz = gzip(script.as_bytes());
        let packed = format!("gvtestgz={}", base64(&gz));
        if packed.len() < plain.len() {
            packed
        } else {
            plain
        }
    };
    assert!(
        arg.len() <= MAX_SCRIPT_CMDLINE,
        "guest script too long for the kernel command line ({} bytes encoded, max {}): \
         keep scripts short or ship the work as a file",
        arg.len(),
        MAX_SCRIPT_CMDLINE
    );
    arg
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut child = Command::new("gzip")
        .args(["-9", "-n", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run gzip");
    let mut stdin = child.stdin.take().expect("gzip stdin");
    let data = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().expect("gzip output");
    writer.join().expect("gzip writer").expect("write to gzip");
    assert!(out.status.success(), "gzip failed");
    out.stdout
}

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(T[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// How many guests run at once in this process (`GVTEST_MAX_GUESTS`,
/// default: the number of CPUs). TCG guests are CPU-bound: more at once on
/// 2 cores only makes every one of them slow enough to hit its timeout. A
/// thread that already holds a slot starts more guests without waiting, so
/// a test that needs two guests at once cannot deadlock against another.
fn max_guests() -> usize {
    std::env::var("GVTEST_MAX_GUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
}

static ACTIVE_GUESTS: Mutex<usize> = Mutex::new(0);
static GUEST_FREED: std::sync::Condvar = std::sync::Condvar::new();
thread_local! {
    static HELD: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

#[derive(Debug)]
struct GuestSlot {
    counted: bool,
}

impl GuestSlot {
    fn acquire() -> GuestSlot {
        let counted = HELD.with(|h| h.get()) == 0;
        if counted {
            let limit = max_guests();
            let mut active = ACTIVE_GUESTS.lock().unwrap_or_else(|p| p.into_inner());
            while *active >= limit {
                active = GUEST_FREED.wait(active).unwrap_or_else(|p| p.into_inner());
            }
            *active += 1;
        }
        HELD.with(|h| h.set(h.get() + 1));
        GuestSlot { counted }
    }
}

impl Drop for GuestSlot {
    fn drop(&mut self) {
        HELD.with(|h| h.set(h.get().saturating_sub(1)));
        if self.counted {
            let mut active = ACTIVE_GUESTS.lock().unwrap_or_else(|p| p.into_inner());
            *active = active.saturating_sub(1);
            GUEST_FREED.notify_all();
        }
    }
}

/// `prog`, or `ip netns exec NS prog` (which execs it: same pid).
fn command_in(netns: Option<&str>, prog: &str) -> Command {
    match netns {
        None => Command::new(prog),
        Some(ns) => {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", ns, prog]);
            cmd
        }
    }
}

/// A running guest. Drop kills its process group (QEMU, or UML and its
/// helper processes) and prints the console's tail if the test is failing.
#[derive(Debug)]
pub struct Guest {
    name: String,
    child: Child,
    pgid: Pid,
    console: Arc<Mutex<Vec<u8>>>,
    reader_done: mpsc::Receiver<()>,
    started: Instant,
    status: Option<ExitStatus>,
    dir: TempDir,
    _slot: GuestSlot,
}

impl Guest {
    pub fn start_qemu(cfg: &QemuConfig) -> Guest {
        let image = GuestImage::get();
        let dir = crate::tmp::tmp_dir("qemu");
        let mut append = vec![
            "console=ttyS0".to_string(),
            "quiet".to_string(),
            "panic=-1".to_string(),
            "gvnic=1".to_string(),
        ];
        append.extend(cfg.kernel_args.iter().cloned());
        append.push(script_arg(&cfg.script));
        let mut nic = format!("virtio-net-pci,netdev=n0,mac={},romfile=", cfg.mac);
        for o in &cfg.nic_options {
            nic.push(',');
            nic.push_str(o);
        }
        let mut cmd = command_in(cfg.netns.as_deref(), "qemu-system-x86_64");
        cmd.args(["-accel", "tcg", "-m"])
            .arg(format!("{}M", cfg.mem_mb))
            .arg("-smp")
            .arg(cfg.smp.to_string())
            .args(["-nodefaults", "-display", "none", "-serial", "stdio"])
            .args(["-no-reboot", "-kernel"])
            .arg(&image.kernel)
            .arg("-initrd")
            .arg(&image.initrd)
            .arg("-append")
            .arg(append.join(" "))
            .args(&cfg.netdev_args)
            .args(["-device", &nic])
            .args(&cfg.extra_args)
            .current_dir(dir.path());
        Guest::spawn("qemu", cmd, dir)
    }

    pub fn start_uml(cfg: &UmlConfig) -> Guest {
        let image = GuestImage::get();
        // UML backs guest memory with a file in $TMPDIR: keep it in memory.
        let base = Path::new("/dev/shm");
        let dir = if base.is_dir() {
            TempDir::new_in(base, "uml")
        } else {
            crate::tmp::tmp_dir("uml")
        };
        let mut args = vec![
            format!("mem={}M", cfg.mem_mb),
            format!("initrd={}", image.initrd.display()),
            "con0=null,fd:1".to_string(),
            "con=null".to_string(),
            "ssl=null".to_string(),
            "quiet".to_string(),
            "panic=-1".to_string(),
            format!("uml_dir={}", dir.path().display()),
            "umid=gvtest".to_string(),
        ];
        let nic: Vec<String> = cfg.vec_args.split_whitespace().map(String::from).collect();
        if !nic.is_empty() {
            args.extend(nic);
            args.push("gvnic=1".to_string());
        }
        args.extend(cfg.kernel_args.iter().cloned());
        args.push(script_arg(&cfg.script));
        let mut cmd = command_in(cfg.netns.as_deref(), "linux");
        cmd.args(&args)
            .env("TMPDIR", dir.path())
            .env("HOME", dir.path())
            .current_dir(dir.path());
        Guest::spawn("uml", cmd, dir)
    }

    fn spawn(name: &str, mut cmd: Command, dir: TempDir) -> Guest {
        let (rd, wr) = nix::unistd::pipe().expect("pipe");
        let wr2 = wr.try_clone().expect("dup pipe");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(wr))
            .stderr(Stdio::from(wr2))
            .process_group(0);
        crate::process::become_subreaper();
        let slot = GuestSlot::acquire();
        let started = Instant::now();
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot start {name} ({cmd:?}): {e} (is the package installed?)")
        });
        drop(cmd); // closes our copies of the pipe's write end
        let pgid = Pid::from_raw(i32::try_from(child.id()).expect("pid fits in i32"));
        let console = Arc::new(Mutex::new(Vec::new()));
        let (done_tx, reader_done) = mpsc::channel();
        let sink = Arc::clone(&console);
        let mut file = File::from(rd);
        let log_path = dir.join("console.log");
        std::thread::spawn(move || {
            let mut log = File::create(log_path).ok();
            let mut buf = [0u8; 16384];
            loop {
                match file.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        sink.lock().unwrap().extend_from_slice(&buf[..n]);
                        if let Some(l) = log.as_mut() {
                            let _ = l.write_all(&buf[..n]);
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            let _ = done_tx.send(());
        });
        Guest {
            name: name.to_string(),
            child,
            pgid,
            console,
            reader_done,
            started,
            status: None,
            dir,
            _slot: slot,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The guest's private directory (UML's `uml_dir` and `TMPDIR`;
    /// `console.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn console_log_path(&self) -> PathBuf {
        self.dir.join("console.log")
    }

    /// The console so far, `\r` removed.
    pub fn console(&self) -> String {
        let bytes = self.console.lock().unwrap().clone();
        String::from_utf8_lossy(&bytes).replace('\r', "")
    }

    fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Waits until the console contains `needle`; false if the guest exits
    /// first or `timeout` passes.
    pub fn wait_for_console(&mut self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.console().contains(needle) {
                return true;
            }
            if self.try_wait().is_some() || Instant::now() >= deadline {
                // One last look: output may have landed just before exit.
                std::thread::sleep(Duration::from_millis(50));
                return self.console().contains(needle);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        let _ = killpg(self.pgid, Signal::SIGKILL);
        if self.status.is_none() {
            self.status = self.child.wait().ok();
        }
        crate::process::reap_group(self.pgid);
    }

    /// Waits for the guest to power off (killing it at `timeout`) and
    /// collects the result.
    pub fn wait(mut self, timeout: Duration) -> GuestResult {
        let deadline = self.started + timeout;
        let mut timed_out = false;
        while self.try_wait().is_none() {
            if Instant::now() >= deadline {
                timed_out = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let elapsed = self.started.elapsed();
        // Whatever is left of the group (UML helpers) goes too; then the
        // console pipe reaches EOF.
        self.kill();
        let _ = self.reader_done.recv_timeout(Duration::from_secs(3));
        let console = self.console();
        GuestResult {
            exit_code: parse_exit_code(&console),
            console,
            timed_out,
            elapsed,
        }
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let console = self.console();
            let lines: Vec<&str> = console.lines().collect();
            eprintln!(
                "---- {} guest (pid {}) console tail ----\n{}\n---- end of {} console ----",
                self.name,
                self.child.id(),
                lines[lines.len().saturating_sub(80)..].join("\n"),
                self.name
            );
        }
        self.kill();
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn base64_matches_coreutils_alphabet() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foob"), "Zm9vYg==");
        assert_eq!(base64(&[0xfb, 0xff]), "+/8=");
    }

    #[test]
    fn exit_code_is_parsed_from_the_last_marker() {
        let c = "GVTEST-BEGIN\nhello\n[  1.0] noise GVTEST-EXIT 3\n";
        assert_eq!(parse_exit_code(c), Some(3));
        assert_eq!(parse_exit_code("GVTEST-BEGIN\n"), None);
        let r = GuestResult {
            console: "boot\nGVTEST-BEGIN iface=eth0\na\nb\nGVTEST-EXIT 0\n".into(),
            exit_code: Some(0),
            timed_out: false,
            elapsed: Duration::ZERO,
        };
        assert_eq!(r.output(), "a\nb\n");
    }
}
