//! The guest's DHCP client, started on the TAP once the link to gvproxy is up (unless
//! `-preexisting`), as upstream does: busybox `udhcpc -f -q -i IFACE -v` if there is one, else
//! ISC `dhclient -4 -d -v IFACE`.
//!
//! udhcpc only talks DHCP; a script applies the lease. If the system has busybox's default one
//! at [`BUSYBOX_DEFAULT_SCRIPT`] it is used; otherwise we write [`UDHCPC_SCRIPT`] to a private
//! file and pass it with `-s`. `udhcpc -q` exits 0 once the lease is applied; dhclient stays in
//! the foreground and renews. A client that exits non-zero ends the session (the caller
//! redials), as upstream; one still running when the session ends is stopped.

use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use log::{info, warn};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Where busybox looks for its udhcpc script when built with the default configuration.
pub const BUSYBOX_DEFAULT_SCRIPT: &str = "/usr/share/udhcpc/default.script";

/// Places searched after `$PATH` (a non-root `$PATH` often lacks the sbin directories).
const EXTRA_DIRS: [&str; 4] = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"];

/// How long a client may take to exit on SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// The udhcpc event script: `$1` is the event; the lease is in the environment (`ip`, `mask`
/// as a prefix length, `subnet`, `broadcast`, `router`, `dns`, `domain`, `search`, `mtu`).
/// Without a broadcast address in the lease (gvproxy sends none) `ip` computes it.
/// Needs `ip` (iproute2 or busybox). `RESOLV_CONF` in the environment redirects the resolver
/// file (tests run it in a network namespace that shares the host's /etc).
pub const UDHCPC_SCRIPT: &str = r#"#!/bin/sh
# udhcpc event script written by gvforwarder: applies the lease to $interface.
RESOLV_CONF="${RESOLV_CONF:-/etc/resolv.conf}"
[ -n "$interface" ] || exit 1

case "$1" in
deconfig)
	ip link set dev "$interface" up
	ip -4 addr flush dev "$interface"
	;;
bound|renew)
	prefix="${mask:-$subnet}"
	# A renewal of the same address keeps it (and the sockets using it) in place.
	if ! ip -4 addr show dev "$interface" | grep -qF "inet $ip/$prefix "; then
		ip -4 addr flush dev "$interface"
		ip -4 addr add "$ip/$prefix" broadcast "${broadcast:-+}" dev "$interface"
	fi
	[ -n "$mtu" ] && ip link set dev "$interface" mtu "$mtu"
	if [ -n "$router" ]; then
		while ip -4 route del default dev "$interface" 2>/dev/null; do :; done
		metric=0
		for r in $router; do
			ip -4 route add default via "$r" dev "$interface" metric "$metric"
			metric=$((metric + 1))
		done
	fi
	if [ -n "$dns" ]; then
		{
			if [ -n "$search" ]; then
				echo "search $search"
			elif [ -n "$domain" ]; then
				echo "search $domain"
			fi
			for s in $dns; do
				echo "nameserver $s"
			done
		} > "$RESOLV_CONF"
	fi
	echo "udhcpc: $interface: $ip/$prefix router ${router:-none} dns ${dns:-none} mtu ${mtu:-default}"
	;;
leasefail|nak)
	echo "udhcpc: $interface: $1 ${message:-}" >&2
	;;
esac
exit 0
"#;

/// Which client, found where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Program {
    Udhcpc(PathBuf),
    Dhclient(PathBuf),
}

/// udhcpc if present, else dhclient (upstream's order).
pub fn find() -> Option<Program> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    find_in(&path).map(|(name, p)| match name {
        "udhcpc" => Program::Udhcpc(p),
        _ => Program::Dhclient(p),
    })
}

fn find_in(path: &OsString) -> Option<(&'static str, PathBuf)> {
    let dirs: Vec<PathBuf> = std::env::split_paths(path)
        .filter(|d| d.is_absolute())
        .chain(EXTRA_DIRS.iter().map(PathBuf::from))
        .collect();
    ["udhcpc", "dhclient"].into_iter().find_map(|name| {
        dirs.iter()
            .map(|d| d.join(name))
            .find(|p| is_executable(p))
            .map(|p| (name, p))
    })
}

fn is_executable(p: &Path) -> bool {
    fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Our udhcpc script in a private file, removed when dropped.
pub struct Script {
    path: PathBuf,
}

impl Script {
    /// Writes [`UDHCPC_SCRIPT`] to a new file (never an existing one: no symlink games in a
    /// shared /tmp), in /run if we may write there (exec is commonly allowed there, unlike a
    /// `noexec` /tmp), else in the temporary directory.
    pub fn write() -> io::Result<Script> {
        let mut last = io::Error::other("no directory for the udhcpc script");
        for dir in [PathBuf::from("/run"), std::env::temp_dir()] {
            for attempt in 0..16 {
                let path = dir.join(format!(
                    "gvforwarder-udhcpc-{}-{attempt}.sh",
                    std::process::id()
                ));
                let file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o700)
                    .open(&path);
                match file {
                    Ok(mut f) => {
                        let script = Script { path };
                        f.write_all(UDHCPC_SCRIPT.as_bytes())?;
                        return Ok(script);
                    }
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                    Err(e) => {
                        last = io::Error::new(e.kind(), format!("{}: {e}", path.display()));
                        break;
                    }
                }
            }
        }
        Err(last)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// The command line for `program` on `iface`; `script` is udhcpc's `-s`.
pub fn command(program: &Program, iface: &str, script: Option<&Path>) -> Command {
    match program {
        Program::Udhcpc(p) => {
            let mut c = Command::new(p);
            c.args(["-f", "-q", "-i", iface, "-v"]);
            if let Some(s) = script {
                c.arg("-s").arg(s);
            }
            c
        }
        Program::Dhclient(p) => {
            let mut c = Command::new(p);
            c.args(["-4", "-d", "-v", iface]);
            c
        }
    }
}

/// A running DHCP client; stopped (SIGTERM, then SIGKILL) and reaped when dropped.
pub struct Client {
    child: Child,
    name: String,
    done: bool,
}

impl Client {
    pub fn spawn(mut cmd: Command) -> io::Result<Client> {
        let name = cmd.get_program().to_string_lossy().into_owned();
        info!(
            "starting DHCP client: {} {}",
            cmd.get_program().to_string_lossy(),
            cmd.get_args()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        );
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .spawn()?;
        Ok(Client {
            child,
            name,
            done: false,
        })
    }

    /// Once, when the client has exited: `Ok` for status 0, `Err` with a message otherwise.
    pub fn poll(&mut self) -> Option<Result<(), String>> {
        if self.done {
            return None;
        }
        let status = match self.child.try_wait() {
            Ok(Some(status)) => status,
            Ok(None) => return None,
            Err(e) => {
                self.done = true;
                return Some(Err(format!("DHCP client {}: cannot wait: {e}", self.name)));
            }
        };
        self.done = true;
        if status.success() {
            info!("DHCP client {} finished", self.name);
            Some(Ok(()))
        } else {
            Some(Err(format!("DHCP client {} failed: {status}", self.name)))
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if self.done || matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + STOP_GRACE;
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => break,
            }
        }
        warn!(
            "DHCP client {} did not stop on SIGTERM: killing it",
            self.name
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_as_upstream() {
        let c = command(&Program::Udhcpc("/sbin/udhcpc".into()), "tap0", None);
        assert_eq!(c.get_program(), "/sbin/udhcpc");
        let args: Vec<_> = c.get_args().collect();
        assert_eq!(args, ["-f", "-q", "-i", "tap0", "-v"]);
        let c = command(
            &Program::Udhcpc("udhcpc".into()),
            "tap0",
            Some(Path::new("/run/x.sh")),
        );
        let args: Vec<_> = c.get_args().collect();
        assert_eq!(args, ["-f", "-q", "-i", "tap0", "-v", "-s", "/run/x.sh"]);
        let c = command(&Program::Dhclient("/sbin/dhclient".into()), "eth1", None);
        let args: Vec<_> = c.get_args().collect();
        assert_eq!(args, ["-4", "-d", "-v", "eth1"]);
    }

    #[test]
    fn finds_programs_in_path_order() {
        let dir = std::env::temp_dir().join(format!("gvfwd-dhcp-find-{}", std::process::id()));
        let a = dir.join("a");
        let b = dir.join("b");
        fs::create_dir_all(&a).unwrap();
        fs::create_dir_all(&b).unwrap();
        let make = |p: &Path, mode| {
            fs::write(p, "#!/bin/sh\n").unwrap();
            fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
        };
        make(&a.join("dhclient"), 0o755);
        make(&b.join("udhcpc"), 0o644); // not executable: skipped
        let path = std::env::join_paths([&a, &b]).unwrap();
        let found = find_in(&path).unwrap();
        // udhcpc may exist in the extra directories of this machine; dhclient in `a` is
        // found only when it does not.
        assert!(
            found == ("dhclient", a.join("dhclient")) || found.0 == "udhcpc",
            "{found:?}"
        );
        assert_ne!(found.1, b.join("udhcpc"));
        make(&b.join("udhcpc"), 0o755);
        assert_eq!(find_in(&path).unwrap(), ("udhcpc", b.join("udhcpc")));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn script_file_is_private_and_removed() {
        let s = Script::write().unwrap();
        let path = s.path().to_path_buf();
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o700);
        assert_eq!(fs::read_to_string(&path).unwrap(), UDHCPC_SCRIPT);
        let s2 = Script::write().unwrap();
        assert_ne!(s2.path(), path);
        drop(s);
        assert!(!path.exists());
    }

    #[test]
    fn exit_status_is_reported_once() {
        let mut ok = Client::spawn(Command::new("true")).unwrap();
        let mut bad = Client::spawn(Command::new("false")).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let (mut r_ok, mut r_bad) = (None, None);
        while (r_ok.is_none() || r_bad.is_none()) && Instant::now() < deadline {
            r_ok = r_ok.or_else(|| ok.poll());
            r_bad = r_bad.or_else(|| bad.poll());
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(r_ok, Some(Ok(())));
        assert!(
            matches!(r_bad, Some(Err(ref m)) if m.contains("failed")),
            "{r_bad:?}"
        );
        assert_eq!(ok.poll(), None);
        assert_eq!(bad.poll(), None);
    }

    #[test]
    fn a_running_client_is_stopped_on_drop() {
        let c = Client::spawn({
            let mut c = Command::new("sleep");
            c.arg("30");
            c
        })
        .unwrap();
        let pid = Pid::from_raw(i32::try_from(c.child.id()).unwrap());
        let started = Instant::now();
        drop(c);
        assert!(started.elapsed() < Duration::from_secs(5));
        // Reaped: the pid is gone (or reused by an unrelated process, which is unlikely).
        assert!(kill(pid, None).is_err());
    }

    /// The script against a fake `ip` that logs its arguments: what udhcpc's events do.
    #[test]
    fn script_applies_the_lease() {
        let dir = std::env::temp_dir().join(format!("gvfwd-dhcp-script-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let log = dir.join("ip.log");
        let ip = dir.join("ip");
        fs::write(
            &ip,
            format!(
                "#!/bin/sh\necho \"$*\" >> {}\n[ \"$3\" = del ] && exit 1\nexit 0\n",
                log.display()
            ),
        )
        .unwrap();
        fs::set_permissions(&ip, fs::Permissions::from_mode(0o755)).unwrap();
        let script = dir.join("script.sh");
        fs::write(&script, UDHCPC_SCRIPT).unwrap();
        let resolv = dir.join("resolv.conf");
        let path = format!(
            "{}:{}",
            dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let run = |event: &str| {
            let out = Command::new("/bin/sh")
                .arg(&script)
                .arg(event)
                .env("PATH", &path)
                .env("RESOLV_CONF", &resolv)
                .env("interface", "tap0")
                .env("ip", "192.168.127.2")
                .env("mask", "24")
                .env("subnet", "255.255.255.0")
                .env("router", "192.168.127.1")
                .env("dns", "192.168.127.1")
                .env("search", "example.com corp.example.org")
                .env("mtu", "1500")
                .output()
                .unwrap();
            assert!(out.status.success(), "{event}: {out:?}");
        };
        run("deconfig");
        run("bound");
        let calls = fs::read_to_string(&log).unwrap();
        let want = "link set dev tap0 up\n\
                    -4 addr flush dev tap0\n\
                    -4 addr show dev tap0\n\
                    -4 addr flush dev tap0\n\
                    -4 addr add 192.168.127.2/24 broadcast + dev tap0\n\
                    link set dev tap0 mtu 1500\n\
                    -4 route del default dev tap0\n\
                    -4 route add default via 192.168.127.1 dev tap0 metric 0\n";
        assert_eq!(calls, want);
        assert_eq!(
            fs::read_to_string(&resolv).unwrap(),
            "search example.com corp.example.org\nnameserver 192.168.127.1\n"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
