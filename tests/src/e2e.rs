//! Fixtures shared by the end-to-end test files: a gvproxy process with its API
//! socket, a guest namespace behind a TAP, gvforwarder on that TAP, and small
//! helpers to read gvproxy's `/stats`.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{bin_path, require_root, tmp_dir, ChildGuard, Netns, TempDir};

pub const GUEST_MAC: &str = "5a:94:ef:e4:0c:ee";
pub const GUEST2_MAC: &str = "5a:94:ef:e4:0c:ef";
pub const STARTUP: Duration = Duration::from_secs(10);

/// A gvproxy process with its sockets in a private directory.
pub struct Gvproxy {
    pub child: ChildGuard,
    pub dir: TempDir,
}

impl Gvproxy {
    /// Starts gvproxy with an API socket (`api.sock`) plus `extra` flags; `{dir}` in a
    /// flag is replaced by the private directory. Waits for every socket path named.
    ///
    /// Unless `extra` names `-ssh-port`, `-ssh-port -1` is added: gvproxy's default
    /// forward of 127.0.0.1:2222 would collide between tests running in parallel.
    pub fn start(label: &str, extra: &[&str]) -> Gvproxy {
        Self::start_inner(label, extra, None)
    }

    /// [`Gvproxy::start`] with a private `/etc/resolv.conf` holding `resolv_conf`: gvproxy
    /// runs in a mount namespace of its own (`unshare -m --propagation private`) where
    /// a file of the test is bind-mounted over /etc/resolv.conf, so its DNS forwarder uses
    /// the test's resolvers and the host's file is never touched. The file is
    /// `resolv.conf` in the private directory ([`Gvproxy::path`]).
    pub fn start_with_resolv_conf(label: &str, resolv_conf: &str, extra: &[&str]) -> Gvproxy {
        Self::start_inner(label, extra, Some(resolv_conf))
    }

    fn start_inner(label: &str, extra: &[&str], resolv_conf: Option<&str>) -> Gvproxy {
        require_root();
        let dir = tmp_dir(label);
        let d = dir.path().display().to_string();
        let mut args: Vec<String> = vec!["-listen".into(), format!("unix://{d}/api.sock")];
        args.extend(extra.iter().map(|a| a.replace("{dir}", &d)));
        if !extra.iter().any(|a| names_flag(a, "ssh-port")) {
            args.extend(["-ssh-port".into(), "-1".into()]);
        }
        args.push("-debug".into());
        let gvproxy = bin_path("gvproxy");
        let cmd = match resolv_conf {
            None => {
                let mut cmd = Command::new(gvproxy);
                cmd.args(&args);
                cmd
            }
            Some(text) => {
                let file = dir.join("resolv.conf");
                std::fs::write(&file, text)
                    .unwrap_or_else(|e| panic!("cannot write {}: {e}", file.display()));
                let mut cmd = Command::new("unshare");
                // unshare and sh exec: the pid is gvproxy's.
                cmd.args(["-m", "--propagation", "private", "sh", "-c"])
                    .arg("mount --bind \"$0\" /etc/resolv.conf && exec \"$@\"")
                    .arg(&file)
                    .arg(gvproxy)
                    .args(&args);
                cmd
            }
        };
        let mut child = ChildGuard::spawn(&format!("gvproxy-{label}"), cmd);
        for a in &args {
            for scheme in ["unix://", "unixpacket://", "unixgram://"] {
                if let Some(p) = a.strip_prefix(scheme) {
                    child.wait_for_path(Path::new(p), STARTUP);
                }
            }
        }
        Gvproxy { child, dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn api(&self) -> PathBuf {
        self.path("api.sock")
    }

    /// `GET /stats` as JSON text.
    pub fn stats(&self) -> String {
        http_get(&self.api(), "/stats")
    }

    /// `GET /stats`, parsed; panics (with the text) if it is not JSON.
    pub fn stats_json(&self) -> serde_json::Value {
        let text = self.stats();
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("/stats is not JSON ({e}): {text:?}"))
    }

    pub fn assert_running(&mut self) {
        assert!(
            self.child.is_running(),
            "gvproxy exited; log:\n{}",
            self.child.log_tail(50)
        );
    }

    /// Peak resident set size so far (`VmHWM` in /proc/PID/status), in bytes.
    pub fn peak_rss_bytes(&self) -> u64 {
        proc_status_kib(self.child.id(), "VmHWM") * 1024
    }
}

/// A `kB` field of /proc/PID/status (`VmHWM`, `VmRSS`, ...), in KiB.
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let path = format!("/proc/{pid}/status");
    let status =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in {path}:\n{status}"));
    line.split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot parse {line:?}"))
}

/// A `GET` on an HTTP API socket; returns the body.
pub fn http_get(sock: &Path, path: &str) -> String {
    let mut s = UnixStream::connect(sock).expect("connect to the API socket");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    resp.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or(resp)
}

/// Whether a command-line argument sets flag `name` (`-name`, `--name`, `-name=V`).
fn names_flag(arg: &str, name: &str) -> bool {
    let body = arg
        .strip_prefix("--")
        .or_else(|| arg.strip_prefix('-'))
        .unwrap_or("");
    body == name || body.strip_prefix(name).is_some_and(|r| r.starts_with('='))
}

/// An HTTP response: status code, header lines, body.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl HttpResponse {
    /// The body parsed as JSON; panics (with the response) if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("response body is not JSON ({e}): {self:?}"))
    }
}

/// One request on an HTTP API unix socket (`Connection: close`, a `Content-Length`
/// body when `body` is given); waits at most 10 s for the whole answer.
pub fn http_request(sock: &Path, method: &str, path: &str, body: Option<&str>) -> HttpResponse {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    if let Some(b) = body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body.unwrap_or(""));
    http_raw(sock, req.as_bytes())
}

/// Writes `request` as is on an HTTP API unix socket and parses the answer.
pub fn http_raw(sock: &Path, request: &[u8]) -> HttpResponse {
    let mut s =
        UnixStream::connect(sock).unwrap_or_else(|e| panic!("connect to {}: {e}", sock.display()));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    let mut raw = Vec::new();
    if let Err(e) = s.read_to_end(&mut raw) {
        panic!(
            "reading the answer to {:?} failed after {:?}: {e}",
            String::from_utf8_lossy(request),
            String::from_utf8_lossy(&raw)
        );
    }
    parse_http_response(&String::from_utf8_lossy(&raw)).unwrap_or_else(|| {
        panic!(
            "not an HTTP response to {:?}: {raw:?}",
            String::from_utf8_lossy(request)
        )
    })
}

/// `HTTP/1.x CODE ...` head and body, split at the first blank line.
pub fn parse_http_response(text: &str) -> Option<HttpResponse> {
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head
        .strip_prefix("HTTP/1.")?
        .get(2..)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(HttpResponse {
        status,
        head: head.to_string(),
        body: body.to_string(),
    })
}

/// A namespace with TAP `tap0` (`mac`, MTU 1500, up) and no address: for DHCP.
pub fn bare_guest(label: &str, mac: &str) -> Netns {
    let ns = Netns::new(label);
    ns.add_tap("tap0", mac, 1500);
    ns
}

/// Waits until `dev` in `ns` has a carrier (a process such as gvforwarder attached
/// to the TAP); panics after `timeout`.
pub fn wait_carrier(ns: &Netns, dev: &str, timeout: Duration) {
    let deadline = std::time::Instant::now() + timeout;
    let path = format!("/sys/class/net/{dev}/carrier");
    loop {
        let out = ns.exec(&["cat", &path]);
        if String::from_utf8_lossy(&out.stdout).trim() == "1" {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{dev} in {} has no carrier after {timeout:?}",
            ns.name()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until the guest in `ns` gets an answer from the gateway to a ping (its link
/// through gvproxy is up); panics with `fwd`'s log after `timeout`.
pub fn wait_gateway(ns: &Netns, fwd: &mut ChildGuard, timeout: Duration) {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let out = ns.exec(&["ping", "-c", "1", "-W", "1", "192.168.127.1"]);
        if out.status.success() {
            return;
        }
        assert!(
            fwd.is_running(),
            "gvforwarder exited; log:\n{}",
            fwd.log_tail(30)
        );
        assert!(
            std::time::Instant::now() < deadline,
            "{} cannot ping the gateway after {timeout:?}:\n{}\ngvforwarder log:\n{}",
            ns.name(),
            String::from_utf8_lossy(&out.stdout),
            fwd.log_tail(30)
        );
    }
}

/// A number from a flat `"key":N` in JSON text.
pub fn json_u64(json: &str, key: &str) -> u64 {
    let needle = format!("\"{key}\":");
    let at = json
        .find(&needle)
        .unwrap_or_else(|| panic!("{key} not in {json}"));
    json[at + needle.len()..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap()
}

/// A guest namespace: TAP `tap0` with `mac`, static `ip`/24, default route via .1.
pub fn guest(label: &str, mac: &str, ip: &str) -> Netns {
    guest_with_mtu(label, mac, ip, 1500)
}

/// [`guest`] with the TAP's MTU set to `mtu`.
pub fn guest_with_mtu(label: &str, mac: &str, ip: &str, mtu: u32) -> Netns {
    let ns = Netns::new(label);
    ns.add_tap("tap0", mac, mtu);
    ns.addr_add("tap0", &format!("{ip}/24"));
    ns.route_add_default("192.168.127.1");
    ns
}

/// gvforwarder inside `ns`, on its existing `tap0`.
pub fn forwarder(ns: &Netns, args: &[&str]) -> ChildGuard {
    let bin = bin_path("gvforwarder");
    let mut full = vec![
        bin.to_str().unwrap(),
        "-preexisting",
        "-iface",
        "tap0",
        "-stop-if-exist=",
        "-debug",
    ];
    full.extend_from_slice(args);
    ns.spawn(&full)
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Raises this process's soft `RLIMIT_NOFILE` to at least `want` (up to the hard
/// limit, which root may raise too). Children spawned afterwards (gvproxy) inherit
/// it. Returns the soft limit in force.
pub fn raise_nofile_limit(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    assert_eq!(rc, 0, "getrlimit: {}", std::io::Error::last_os_error());
    if lim.rlim_cur >= want {
        return lim.rlim_cur;
    }
    let new = libc::rlimit {
        rlim_cur: want,
        rlim_max: lim.rlim_max.max(want),
    };
    // SAFETY: setrlimit reads one rlimit from a struct we own.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) };
    assert_eq!(
        rc,
        0,
        "setrlimit(RLIMIT_NOFILE, {want}): {}",
        std::io::Error::last_os_error()
    );
    want
}
