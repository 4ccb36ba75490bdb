//! End-to-end test harness: real guests against the real `gvproxy` and
//! `gvforwarder` binaries.
//!
//! ```text
//!   host (test process, root)
//!    ├── gvproxy  ──unix/tcp socket──┐
//!    │                               │ frames
//!    ├── Netns "gvt-g-…" ── tap0 ── gvforwarder -preexisting      (namespace guest)
//!    ├── QEMU (TCG) ── virtio-net ── -netdev stream/socket/user   (VM guest, GuestImage)
//!    ├── UML `linux` ── vec0 (bess) ──────────────────────────────  (VM guest, same initrd)
//!    └── Netns "remote" ── Veth ── host or another Netns          ("remote host")
//! ```
//!
//! Every resource has a unique name (prefix + pid + counter) and cleans up on
//! `Drop`, also while unwinding from a failed assertion, so tests can run in
//! parallel threads of one `cargo test` process. Helpers panic loudly when
//! something the tests need is missing: a missing tool is a broken test bed,
//! never a reason to skip.

// This crate is test code: a failed unwrap/expect is a test failure with a
// location, which is exactly what a harness should report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod e2e;
mod guest;
mod netns;
mod process;
pub mod relay;
mod tmp;

pub use guest::{
    run_qemu, run_uml, Guest, GuestImage, GuestResult, QemuConfig, UmlConfig, MAX_SCRIPT_CMDLINE,
};
pub use netns::{Netns, Veth, VethEnd};
pub use process::{wait_for_path, wait_for_tcp_port, wait_for_unix_socket, ChildGuard};
pub use tmp::{tmp_dir, TempDir};

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// A number unique within this process (combine with the pid for names).
pub fn next_id() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The workspace root (the directory holding the workspace `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .expect("tests crate has a parent directory")
        .to_path_buf()
}

/// Panics unless running as root: the end-to-end tests create namespaces,
/// TAP devices and firewall-free veths, and must not silently skip.
pub fn require_root() {
    let euid = nix::unistd::geteuid();
    assert!(
        euid.is_root(),
        "end-to-end tests must run as root (euid is {euid}); run `cargo test` as root"
    );
}

/// Lets every group open ICMP echo (ping) sockets in the host's network
/// namespace, as gvproxy's ICMP forwarding needs. (`Netns::new` does the same
/// inside each namespace it creates.)
pub fn ensure_sysctl_ping_group() {
    write_ping_group_range("/proc/sys/net/ipv4/ping_group_range");
}

fn write_ping_group_range(path: &str) {
    let want = "0\t2147483647";
    if std::fs::read_to_string(path).is_ok_and(|cur| cur.trim() == want) {
        return;
    }
    std::fs::write(path, "0 2147483647\n")
        .unwrap_or_else(|e| panic!("cannot set {path} to \"0 2147483647\": {e}"));
}

/// Path of a workspace binary (`gvproxy`, `gvforwarder`, ...) built with the
/// same profile as the running test: `current_exe()/../../NAME`.
///
/// `cargo test --workspace` does not build the other packages' binaries, so
/// the first call in a process runs `cargo build --workspace --bins` with the
/// test's profile and target directory (a no-op when they are fresh); set
/// `GVTEST_NO_CARGO_BUILD=1` to skip that. Panics if the binary is missing.
pub fn bin_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test-exe>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .unwrap_or_else(|| panic!("unexpected test executable location {}", exe.display()))
        .to_path_buf();
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    if std::env::var_os("GVTEST_NO_CARGO_BUILD").is_none() {
        if let Err(e) = BUILT.get_or_init(|| cargo_build_bins(&profile_dir)) {
            panic!("building the workspace binaries failed (needed for {name}):\n{e}");
        }
    }
    let path = profile_dir.join(name);
    assert!(
        path.is_file(),
        "binary {} is missing: build it with `cargo build {}--workspace` \
         (the end-to-end tests drive the real binaries)",
        path.display(),
        if profile_dir.ends_with("release") {
            "--release "
        } else {
            ""
        }
    );
    path
}

fn cargo_build_bins(profile_dir: &Path) -> Result<(), String> {
    let target_dir = profile_dir.parent().ok_or("profile dir has no parent")?;
    let profile = profile_dir
        .file_name()
        .and_then(|s| s.to_str())
        .ok_or("profile dir has no name")?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--manifest-path")
        .arg(workspace_root().join("Cargo.toml"))
        .args(["--workspace", "--bins"])
        .env("CARGO_TARGET_DIR", target_dir);
    match profile {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    let out = cmd.output().map_err(|e| format!("cannot run cargo: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{:?} failed ({}):\n{}",
            cmd,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Runs a command to completion and returns its output (no status check).
pub fn run_cmd(args: &[&str]) -> Output {
    let (prog, rest) = args.split_first().expect("run_cmd: empty command");
    Command::new(prog)
        .args(rest)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e} (is the package installed?)"))
}

/// Runs a command, panics with its stderr unless it succeeds, returns stdout.
pub fn run_ok(args: &[&str]) -> String {
    let out = run_cmd(args);
    check_output(args, &out);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub(crate) fn check_output(args: &[&str], out: &Output) {
    assert!(
        out.status.success(),
        "command {:?} failed ({}):\nstdout: {}\nstderr: {}",
        args,
        out.status,
        String::from_utf8_lossy(&out.stdout).trim_end(),
        String::from_utf8_lossy(&out.stderr).trim_end()
    );
}
