//! Issue 4 end to end: the gateway's services and the control API, with real clients.
//!
//! ```text
//!  host (this process)                          gvproxy                     guest netns
//!  ───────────────────                          ───────                     ───────────
//!  curl --unix-socket api.sock ──HTTP API──▶ /leases /services/... ◀── curl http://192.168.127.1/
//!  curl 127.0.0.1:PORT ─────────forward──────▶ tcp/udp/unix ──────────▶ busybox httpd :8080
//!  dnsmasq 127.53.x.y:53 ◀──DNS forwarder──── gateway :53 udp/tcp ◀──── dig @192.168.127.1
//!  (private resolv.conf: unshare -m)          DHCP :67 ◀─────────────── busybox udhcpc
//!  notify.sock listener ◀── -notification     -pcap FILE ──▶ tcpdump -r
//! ```
//!
//! Safety: guests only target the gateway 192.168.127.1 (and 127.0.0.1 of the host through
//! the forwards the tests open); every DNS upstream is a dnsmasq of the test's own on a
//! unique 127.53.x.y handed to gvproxy through a private /etc/resolv.conf (bind-mounted in a
//! mount namespace of gvproxy's own), so no query leaves the machine; host-side servers
//! bind 127.0.0.1 only. Every process is killed by pid (ChildGuard, Netns) on drop.

// Test code: a failed unwrap/expect is a test failure with a location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tests::e2e::{
    bare_guest, forwarder, free_tcp_port, guest, http_raw, http_request, parse_http_response,
    wait_carrier, wait_gateway, Gvproxy, HttpResponse, GUEST2_MAC, GUEST_MAC,
};
use tests::{bin_path, next_id, run_cmd, tmp_dir, ChildGuard, Netns, TempDir};

const GATEWAY: &str = "192.168.127.1";
const GUEST_IP: &str = "192.168.127.2";
const GATEWAY_MAC: &str = "5a:94:ef:e4:0c:dd";
const LINK_TIMEOUT: Duration = Duration::from_secs(20);
const WAIT: Duration = Duration::from_secs(10);

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn show(out: &Output) -> String {
    format!(
        "exit {}\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout).trim_end(),
        text(&out.stderr).trim_end()
    )
}

fn api_url(gv: &Gvproxy) -> String {
    format!("unix://{}", gv.api().display())
}

// ---------------------------------------------------------------------------------
// Fixtures.

/// gvproxy, a guest namespace at 192.168.127.2 (static) and gvforwarder on its TAP, the
/// link up. Fields drop in order: the forwarder, the namespace, then gvproxy.
struct Setup {
    fwd: ChildGuard,
    ns: Netns,
    gv: Gvproxy,
}

impl Setup {
    fn start(label: &str, extra: &[&str]) -> Setup {
        Setup::with(Gvproxy::start(label, extra), label)
    }

    fn with(gv: Gvproxy, label: &str) -> Setup {
        let ns = guest(label, GUEST_MAC, GUEST_IP);
        let mut fwd = forwarder(&ns, &["-url", &api_url(&gv)]);
        wait_gateway(&ns, &mut fwd, LINK_TIMEOUT);
        Setup { fwd, ns, gv }
    }

    fn api(&self) -> PathBuf {
        self.gv.api()
    }

    fn assert_running(&mut self) {
        self.gv.assert_running();
        assert!(
            self.fwd.is_running(),
            "gvforwarder exited; log:\n{}",
            self.fwd.log_tail(30)
        );
    }
}

/// busybox httpd on 192.168.127.2:8080 in the guest, serving a page with a unique token.
struct GuestHttp {
    _server: ChildGuard,
    _root: TempDir,
    token: String,
}

fn guest_http(ns: &Netns) -> GuestHttp {
    let root = tmp_dir("www");
    let token = format!("gvtest-page-{}-{}", std::process::id(), next_id());
    std::fs::write(root.join("index.html"), format!("{token}\n")).unwrap();
    let root_s = root.path().display().to_string();
    let mut server = ns.spawn(&[
        "busybox",
        "httpd",
        "-f",
        "-p",
        "192.168.127.2:8080",
        "-h",
        &root_s,
    ]);
    let addr: SocketAddr = "192.168.127.2:8080".parse().unwrap();
    let deadline = Instant::now() + WAIT;
    while !ns.run(|| TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()) {
        assert!(
            server.is_running(),
            "busybox httpd exited: {}",
            server.log_tail(20)
        );
        assert!(Instant::now() < deadline, "busybox httpd never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
    GuestHttp {
        _server: server,
        _root: root,
        token,
    }
}

/// `curl` with a 10 s limit and no proxy, on the host.
fn curl(args: &[&str]) -> Output {
    let mut full = vec!["curl", "-sS", "-m", "10", "--noproxy", "*"];
    full.extend_from_slice(args);
    run_cmd(&full)
}

/// `curl` in the guest namespace.
fn curl_in(ns: &Netns, args: &[&str]) -> Output {
    let mut full = vec!["curl", "-sS", "-m", "10", "--noproxy", "*"];
    full.extend_from_slice(args);
    ns.exec(&full)
}

/// Splits curl's output made with `-w '\n%{http_code}'` into (status, body).
fn curl_status(out: &Output) -> (u16, String) {
    assert!(out.status.success(), "curl failed: {}", show(out));
    let all = text(&out.stdout);
    let (body, code) = all.rsplit_once('\n').unwrap_or(("", &all));
    let code = code
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("no status code in curl's output: {}", show(out)));
    (code, body.to_string())
}

/// The upstream README's form: `curl --unix-socket API http:/unix/PATH [-X POST -d BODY]`.
fn curl_api(api: &Path, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let sock = api.display().to_string();
    let url = format!("http:/unix{path}");
    let mut args = vec!["--unix-socket", &sock, "-X", method, "-w", "\n%{http_code}"];
    if let Some(b) = body {
        args.extend_from_slice(&["-d", b]);
    }
    args.push(&url);
    curl_status(&curl(&args))
}

fn expose(api: &Path, body: &str) {
    let (code, resp) = curl_api(api, "POST", "/services/forwarder/expose", Some(body));
    assert_eq!(code, 200, "expose {body} answered {code}: {resp}");
}

fn unexpose(api: &Path, body: &str) {
    let (code, resp) = curl_api(api, "POST", "/services/forwarder/unexpose", Some(body));
    assert_eq!(code, 200, "unexpose {body} answered {code}: {resp}");
}

fn forwards(api: &Path) -> Value {
    let r = http_request(api, "GET", "/services/forwarder/all", None);
    assert_eq!(r.status, 200, "{r:?}");
    r.json()
}

/// GET http://127.0.0.1:PORT/ on the host must return the guest's page.
fn assert_page(port: u16, token: &str) {
    let out = curl(&[&format!("http://127.0.0.1:{port}/")]);
    assert!(
        out.status.success() && text(&out.stdout).contains(token),
        "the guest's page through 127.0.0.1:{port}: {}",
        show(&out)
    );
}

/// The host port must refuse connections (curl exit 7).
fn assert_refused(port: u16) {
    let out = curl(&[&format!("http://127.0.0.1:{port}/")]);
    assert_eq!(
        out.status.code(),
        Some(7),
        "127.0.0.1:{port} should refuse connections after unexpose: {}",
        show(&out)
    );
}

/// A free UDP port on 127.0.0.1.
fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

// ---- DNS fixtures ----

/// A unique resolver address on the host's loopback for this test.
fn unique_loopback() -> String {
    format!(
        "127.53.{}.{}",
        std::process::id() % 250,
        2 + next_id() % 250
    )
}

const TXT_A: usize = 200;
const TXT_B: usize = 180;
const MANY: usize = 40;

/// The test zone gvt.test served by dnsmasq: A+AAAA, MX, TXT over 255 bytes in three
/// strings, SRV, MANY A records for one name; other names in gvt.test are NXDOMAIN.
fn zone_records() -> Vec<String> {
    let mut r = vec![
        "--local=/gvt.test/".to_string(),
        "--host-record=a.gvt.test,10.1.2.3,fd00::1234".to_string(),
        "--mx-host=gvt.test,mail.gvt.test,10".to_string(),
        format!(
            "--txt-record=txt.gvt.test,{},{},tail",
            "a".repeat(TXT_A),
            "b".repeat(TXT_B)
        ),
        "--srv-host=_sip._tcp.gvt.test,sip.gvt.test,5060,1,2".to_string(),
        "--host-record=udp.gvt.test,10.7.7.7".to_string(),
    ];
    r.extend((1..=MANY).map(|i| format!("--host-record=many.gvt.test,10.9.0.{i}")));
    r
}

/// dnsmasq on `addr`:53 (in `ns`, or on the host), serving [`zone_records`]; waits until it
/// answers.
fn dnsmasq(ns: Option<&Netns>, addr: &str) -> ChildGuard {
    let listen = format!("--listen-address={addr}");
    let mut args: Vec<String> = [
        "dnsmasq",
        "-k",
        "-C",
        "/dev/null",
        "--no-hosts",
        "--no-resolv",
        "--pid-file",
        "--user=root",
        "--port=53",
        "--bind-interfaces",
        "--log-facility=-",
        "--log-queries",
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    args.push(listen);
    args.extend(zone_records());
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut child = match ns {
        Some(ns) => ns.spawn(&argv),
        None => {
            let mut cmd = Command::new(argv[0]);
            cmd.args(&argv[1..]);
            ChildGuard::spawn(&format!("dnsmasq-{addr}"), cmd)
        }
    };
    let server = format!("@{addr}");
    let probe = [
        "dig",
        &server,
        "+short",
        "+tries=1",
        "+time=1",
        "a.gvt.test",
    ];
    let deadline = Instant::now() + WAIT;
    loop {
        let out = match ns {
            Some(ns) => ns.exec(&probe),
            None => run_cmd(&probe),
        };
        if text(&out.stdout).trim() == "10.1.2.3" {
            return child;
        }
        assert!(
            child.is_running(),
            "dnsmasq on {addr} exited: {}",
            child.log_tail(20)
        );
        assert!(
            Instant::now() < deadline,
            "dnsmasq on {addr} does not answer: {}\n{}",
            show(&out),
            child.log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A resolver of the test's own on the host's loopback, gvproxy started with a private
/// resolv.conf naming it, a static guest. Drops the guest, then gvproxy, then dnsmasq.
struct DnsSetup {
    s: Setup,
    resolver: String,
    _dnsmasq: ChildGuard,
}

impl DnsSetup {
    fn start(label: &str) -> DnsSetup {
        let resolver = unique_loopback();
        let dnsmasq = dnsmasq(None, &resolver);
        let gv = Gvproxy::start_with_resolv_conf(
            label,
            &format!("# private to this test\nnameserver {resolver}\n"),
            &[],
        );
        DnsSetup {
            s: Setup::with(gv, label),
            resolver,
            _dnsmasq: dnsmasq,
        }
    }
}

/// What `dig +noall +comments +answer` says: status, the flags/counts line, the answer
/// section (whitespace-normalized, sorted).
#[derive(Debug, PartialEq, Eq)]
struct Dig {
    status: String,
    flags: String,
    answer: Vec<String>,
}

fn parse_dig(out: &Output) -> Dig {
    let t = text(&out.stdout);
    let status = t
        .split_once("status: ")
        .and_then(|(_, r)| r.split(',').next())
        .unwrap_or_else(|| panic!("no status in dig's output: {}", show(out)))
        .to_string();
    let flags = t
        .lines()
        .find_map(|l| l.strip_prefix(";; flags: "))
        .unwrap_or_else(|| panic!("no flags in dig's output: {}", show(out)))
        .to_string();
    let mut answer = Vec::new();
    let mut in_answer = false;
    for line in t.lines() {
        if line.starts_with(";; ANSWER SECTION:") {
            in_answer = true;
        } else if in_answer && line.trim().is_empty() {
            in_answer = false;
        } else if in_answer && !line.starts_with(';') {
            answer.push(line.split_whitespace().collect::<Vec<_>>().join(" "));
        }
    }
    answer.sort();
    Dig {
        status,
        flags,
        answer,
    }
}

/// `dig @192.168.127.1 +short NAME` in the guest, answer lines.
fn dig_short_in(ns: &Netns, qtype: &str, name: &str) -> Vec<String> {
    let out = ns.exec(&[
        "dig",
        "@192.168.127.1",
        "+short",
        "+tries=1",
        "+time=5",
        qtype,
        name,
    ]);
    assert!(out.status.success(), "dig {qtype} {name}: {}", show(&out));
    text(&out.stdout).lines().map(str::to_string).collect()
}

// ---- DHCP fixtures ----

/// A udhcpc event script that records the lease to `out` (key=value lines) and applies
/// it to the interface.
fn udhcpc_script(dir: &TempDir, out: &Path) -> PathBuf {
    let path = dir.join("udhcpc.sh");
    let body = format!(
        r#"#!/bin/sh
out='{out}'
case "$1" in
deconfig)
	ip link set dev "$interface" up
	ip -4 addr flush dev "$interface"
	;;
bound|renew)
	{{
		echo "event=$1"
		echo "ip=$ip"
		echo "subnet=$subnet"
		echo "mask=$mask"
		echo "router=$router"
		echo "dns=$dns"
		echo "mtu=$mtu"
		echo "lease=$lease"
		echo "serverid=$serverid"
	}} > "$out.tmp" && mv "$out.tmp" "$out"
	ip -4 addr flush dev "$interface"
	ip -4 addr add "$ip/${{mask:-$subnet}}" dev "$interface" || exit 1
	[ -n "$mtu" ] && ip link set dev "$interface" mtu "$mtu"
	[ -n "$router" ] && ip -4 route replace default via "${{router%% *}}" dev "$interface"
	;;
esac
exit 0
"#,
        out = out.display()
    );
    std::fs::write(&path, body).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Runs `busybox udhcpc -f -q -n -i tap0 -s SCRIPT` in `ns` (its TAP attached) and returns
/// the lease the script recorded.
fn udhcpc(ns: &Netns) -> HashMap<String, String> {
    let dir = tmp_dir("udhcpc");
    let out = dir.join("lease.env");
    let script = udhcpc_script(&dir, &out);
    let script_s = script.display().to_string();
    wait_carrier(ns, "tap0", WAIT);
    let started = Instant::now();
    let run = ns.exec(&[
        "busybox", "udhcpc", "-f", "-q", "-n", "-i", "tap0", "-s", &script_s, "-t", "5", "-T", "2",
    ]);
    assert!(
        run.status.success(),
        "udhcpc got no lease in {} after {:?}: {}",
        ns.name(),
        started.elapsed(),
        show(&run)
    );
    let recorded = std::fs::read_to_string(&out)
        .unwrap_or_else(|e| panic!("the udhcpc script recorded nothing ({e}): {}", show(&run)));
    recorded
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

fn assert_lease(lease: &HashMap<String, String>, ip: &str) {
    let get = |k: &str| lease.get(k).map(String::as_str).unwrap_or("");
    assert_eq!(get("ip"), ip, "{lease:?}");
    assert_eq!(get("subnet"), "255.255.255.0", "{lease:?}");
    assert_eq!(get("router"), GATEWAY, "{lease:?}");
    assert_eq!(get("dns"), GATEWAY, "{lease:?}");
    assert_eq!(get("mtu"), "1500", "{lease:?}");
    assert_eq!(get("serverid"), GATEWAY, "{lease:?}");
    assert!(
        get("lease").parse::<u64>().is_ok_and(|s| s > 0),
        "no lease time: {lease:?}"
    );
}

fn assert_addr(ns: &Netns, cidr: &str) {
    let addrs = ns.ip(&["-4", "addr", "show", "dev", "tap0"]);
    assert!(
        addrs.contains(&format!("inet {cidr} ")),
        "{} has not {cidr}:\n{addrs}",
        ns.name()
    );
}

// ---------------------------------------------------------------------------------
// DHCP.

#[test]
fn dhcp_udhcpc_two_guests_and_leases() {
    let gv = Gvproxy::start("dhcp", &[]);
    let a = bare_guest("dhcpa", GUEST_MAC);
    let b = bare_guest("dhcpb", GUEST2_MAC);
    let _fa = forwarder(&a, &["-url", &api_url(&gv)]);
    let _fb = forwarder(&b, &["-url", &api_url(&gv), "-mac", GUEST2_MAC]);

    let la = udhcpc(&a);
    assert_lease(&la, "192.168.127.2");
    assert_addr(&a, "192.168.127.2/24");
    let lb = udhcpc(&b);
    assert_lease(&lb, "192.168.127.3");
    assert_addr(&b, "192.168.127.3/24");
    let route = b.ip(&["-4", "route", "show", "default"]);
    assert!(route.contains("via 192.168.127.1"), "{route}");

    // The leases work: each guest reaches the gateway and the other guest.
    for (ns, peer) in [(&a, "192.168.127.3"), (&b, "192.168.127.2")] {
        for ip in [GATEWAY, peer] {
            let out = ns.exec(&["ping", "-c", "1", "-W", "3", ip]);
            assert!(out.status.success(), "{} → {ip}: {}", ns.name(), show(&out));
        }
    }

    let want = json!({
        "192.168.127.1": GATEWAY_MAC,
        "192.168.127.2": GUEST_MAC,
        "192.168.127.3": GUEST2_MAC,
    });
    for path in ["/leases", "/services/dhcp/leases"] {
        let r = http_request(&gv.api(), "GET", path, None);
        assert_eq!(r.status, 200, "{path}: {r:?}");
        assert_eq!(r.json(), want, "{path}");
    }
}

#[test]
fn gvforwarder_runs_the_dhcp_client_itself() {
    let gv = Gvproxy::start("fwddhcp", &[]);
    let host_resolv = std::fs::read("/etc/resolv.conf").ok();
    let ns = Netns::new("fwddhcp");
    let dir = tmp_dir("fwddhcp");
    let resolv = dir.join("resolv.conf");
    std::fs::write(&resolv, "# private to this test\n").unwrap();
    // No TAP yet: gvforwarder creates tap0, sets the MAC, brings it up and runs udhcpc.
    // Its udhcpc script writes resolv.conf: RESOLV_CONF points it at the test's file, and
    // a private mount namespace has that file over /etc/resolv.conf besides.
    let fwd_bin = bin_path("gvforwarder");
    let api = api_url(&gv);
    let mut cmd = ns.command(&[
        "unshare",
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        "mount --bind \"$0\" /etc/resolv.conf && exec \"$@\"",
        resolv.to_str().unwrap(),
        fwd_bin.to_str().unwrap(),
        "-iface",
        "tap0",
        "-stop-if-exist=",
        "-debug",
        "-url",
        &api,
    ]);
    cmd.env("RESOLV_CONF", &resolv);
    let mut fwd = ChildGuard::spawn("gvforwarder-dhcp", cmd);

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let addr = run_cmd(&["ip", "-n", ns.name(), "-4", "addr", "show", "dev", "tap0"]);
        let route = run_cmd(&["ip", "-n", ns.name(), "-4", "route", "show", "default"]);
        let (addr, route) = (text(&addr.stdout), text(&route.stdout));
        if addr.contains("inet 192.168.127.2/24 ") && route.contains("default via 192.168.127.1") {
            break;
        }
        assert!(
            fwd.is_running(),
            "gvforwarder exited; log:\n{}",
            fwd.log_tail(40)
        );
        assert!(
            Instant::now() < deadline,
            "no DHCP lease applied in {} after 30 s: addr {addr:?}, route {route:?}\n\
             gvforwarder log:\n{}\ngvproxy log:\n{}",
            ns.name(),
            fwd.log_tail(40),
            gv.child.log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let link = ns.ip(&["link", "show", "dev", "tap0"]);
    assert!(
        link.contains(GUEST_MAC) && link.contains("mtu 1500"),
        "tap0 should have MAC {GUEST_MAC} and the leased MTU 1500:\n{link}"
    );
    wait_gateway(&ns, &mut fwd, WAIT);
    let written = std::fs::read_to_string(&resolv).unwrap();
    assert!(
        written.contains("nameserver 192.168.127.1"),
        "the DNS server of the lease was not applied: {written:?}"
    );
    let leases = http_request(&gv.api(), "GET", "/leases", None).json();
    assert_eq!(leases["192.168.127.2"], json!(GUEST_MAC), "{leases}");
    drop(fwd);
    assert_eq!(
        std::fs::read("/etc/resolv.conf").ok(),
        host_resolv,
        "the host's /etc/resolv.conf changed"
    );
}

#[test]
fn pcap_shows_the_dhcp_exchange() {
    let gv = Gvproxy::start("pcap", &["-pcap", "{dir}/cap.pcap"]);
    let cap = gv.path("cap.pcap");
    let ns = bare_guest("pcap", GUEST_MAC);
    let _fwd = forwarder(&ns, &["-url", &api_url(&gv)]);
    let lease = udhcpc(&ns);
    assert_lease(&lease, "192.168.127.2");
    // The capture is written by a thread of its own: poll until the exchange is there.
    let deadline = Instant::now() + WAIT;
    let cap_s = cap.display().to_string();
    loop {
        let out = run_cmd(&["tcpdump", "-r", &cap_s, "-nn"]);
        let t = text(&out.stdout);
        let request = t
            .lines()
            .any(|l| l.contains(".68 > ") && l.contains(".67: BOOTP/DHCP, Request"));
        let reply = t
            .lines()
            .any(|l| l.contains("192.168.127.1.67 > ") && l.contains(".68: BOOTP/DHCP, Reply"));
        if request && reply {
            assert!(
                text(&out.stderr).contains("link-type EN10MB (Ethernet)"),
                "{}",
                show(&out)
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "tcpdump -r {cap_s} does not show a DHCP request and reply (67/68): {}",
            show(&out)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let bytes = std::fs::read(&cap).unwrap();
    assert!(bytes.len() > 24, "pcap too short");
    let magic = u32::from_le_bytes(bytes[0..4].try_into().unwrap());
    assert!(
        magic == 0xa1b2_c3d4 || magic == 0xa1b2_3c4d,
        "not a little-endian pcap: magic {magic:#x}"
    );
    let linktype = u32::from_le_bytes(bytes[20..24].try_into().unwrap());
    assert_eq!(linktype, 1, "link type should be Ethernet");
}

// ---------------------------------------------------------------------------------
// DNS.

#[test]
fn dns_local_names_and_a_zone_added_through_the_api() {
    let d = DnsSetup::start("dnslocal");
    let ns = &d.s.ns;
    let api = d.s.api();
    assert_eq!(
        dig_short_in(ns, "A", "gateway.containers.internal"),
        [GATEWAY]
    );
    assert_eq!(
        dig_short_in(ns, "A", "host.docker.internal"),
        ["192.168.127.254"]
    );
    assert_eq!(
        dig_short_in(ns, "A", "host.containers.internal"),
        ["192.168.127.254"]
    );

    let zone = r#"{"Name":"dynamic.internal.","Records":[{"Name":"test","IP":"192.168.127.77"}]}"#;
    let (code, body) = curl_api(&api, "POST", "/services/dns/add", Some(zone));
    assert_eq!(code, 200, "/services/dns/add: {body}");
    assert_eq!(
        dig_short_in(ns, "A", "test.dynamic.internal"),
        ["192.168.127.77"],
        "the added zone does not resolve at once"
    );
    let r = http_request(&api, "GET", "/services/dns/all", None);
    assert_eq!(r.status, 200, "{r:?}");
    let zones = r.json();
    let list = zones
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {zones}"));
    let dynamic = list
        .iter()
        .find(|z| z["Name"] == "dynamic.internal.")
        .unwrap_or_else(|| panic!("/services/dns/all lacks dynamic.internal.: {zones}"));
    assert_eq!(dynamic["Records"][0]["Name"], "test", "{zones}");
    assert_eq!(dynamic["Records"][0]["IP"], "192.168.127.77", "{zones}");
    for name in ["containers.internal.", "docker.internal."] {
        assert!(
            list.iter().any(|z| z["Name"] == name),
            "/services/dns/all lacks the default zone {name}: {zones}"
        );
    }
}

#[test]
fn dns_forwarded_answers_match_the_resolver() {
    let d = DnsSetup::start("dnsfwd");
    let direct_server = format!("@{}", d.resolver);
    let cases = [
        ("A", "a.gvt.test"),
        ("AAAA", "a.gvt.test"),
        ("MX", "gvt.test"),
        ("TXT", "txt.gvt.test"),
        ("SRV", "_sip._tcp.gvt.test"),
        ("A", "nope.gvt.test"),
    ];
    let mut mismatches = Vec::new();
    for (qtype, name) in cases {
        let args = |server: &str| {
            vec![
                "dig".to_string(),
                server.to_string(),
                "+noall".into(),
                "+comments".into(),
                "+answer".into(),
                "+tries=1".into(),
                "+time=5".into(),
                qtype.into(),
                name.into(),
            ]
        };
        let direct_args = args(&direct_server);
        let direct_out = run_cmd(&direct_args.iter().map(String::as_str).collect::<Vec<_>>());
        let direct = parse_dig(&direct_out);
        // What the test resolver must say, so that the comparison means something.
        let joined = direct.answer.join("\n");
        let expect_ok = |needle: &str| {
            assert!(
                direct.status == "NOERROR" && joined.contains(needle),
                "the test resolver's own answer to {qtype} {name} lacks {needle:?}: {direct:?}"
            );
        };
        match (qtype, name) {
            ("A", "a.gvt.test") => expect_ok("A 10.1.2.3"),
            ("AAAA", _) => expect_ok("AAAA fd00::1234"),
            ("MX", _) => expect_ok("MX 10 mail.gvt.test."),
            ("TXT", _) => {
                expect_ok(&format!(
                    "\"{}\" \"{}\" \"tail\"",
                    "a".repeat(TXT_A),
                    "b".repeat(TXT_B)
                ));
            }
            ("SRV", _) => expect_ok("SRV 1 2 5060 sip.gvt.test."),
            _ => assert_eq!(direct.status, "NXDOMAIN", "{direct:?}"),
        }
        let via_args = args("@192.168.127.1");
        let via_out =
            d.s.ns
                .exec(&via_args.iter().map(String::as_str).collect::<Vec<_>>());
        let via = parse_dig(&via_out);
        if via != direct {
            mismatches.push(format!(
                "{qtype} {name}:\n  resolver: {direct:?}\n  gvproxy:  {via:?}"
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "answers through gvproxy differ from the resolver's:\n{}",
        mismatches.join("\n")
    );
}

#[test]
fn dns_truncated_udp_answer_is_retried_over_tcp() {
    let d = DnsSetup::start("dnstc");
    // Without EDNS the UDP limit is 512 bytes: 40 A records do not fit.
    let out = d.s.ns.exec(&[
        "dig",
        "@192.168.127.1",
        "+noedns",
        "+tries=1",
        "+time=5",
        "A",
        "many.gvt.test",
    ]);
    let t = text(&out.stdout);
    assert!(
        t.contains("Truncated, retrying in TCP mode"),
        "dig did not get a truncated UDP answer through gvproxy: {}",
        show(&out)
    );
    let got = parse_dig(&out);
    assert_eq!(got.status, "NOERROR", "{}", show(&out));
    assert!(
        got.flags.contains(&format!("ANSWER: {MANY},")),
        "{}",
        show(&out)
    );
    let mut want: Vec<String> = (1..=MANY).map(|i| format!("10.9.0.{i}")).collect();
    want.sort();
    let mut addrs: Vec<String> = got
        .answer
        .iter()
        .filter_map(|l| l.rsplit(' ').next().map(str::to_string))
        .collect();
    addrs.sort();
    assert_eq!(addrs, want, "{}", show(&out));
    // The same as the resolver's own TCP answer.
    let direct = run_cmd(&[
        "dig",
        &format!("@{}", d.resolver),
        "+tcp",
        "+noall",
        "+comments",
        "+answer",
        "A",
        "many.gvt.test",
    ]);
    assert_eq!(parse_dig(&direct).answer, got.answer);
    let stats = d.s.gv.stats_json();
    assert!(
        stats["dns"]["tcp_queries"].as_u64().is_some_and(|n| n >= 1),
        "gvproxy's /stats counts no DNS query over TCP: {}",
        stats["dns"]
    );
}

// ---------------------------------------------------------------------------------
// Port forwarding.

#[test]
fn forward_tcp_expose_all_unexpose() {
    let mut s = Setup::start("fwdtcp", &[]);
    let www = guest_http(&s.ns);
    let api = s.api();
    // Gvproxy::start disables the default SSH forward: nothing is exposed yet.
    assert_eq!(forwards(&api), json!([]));
    let port = free_tcp_port();
    let local = format!("127.0.0.1:{port}");
    expose(
        &api,
        &format!(r#"{{"local":"{local}","remote":"192.168.127.2:8080"}}"#),
    );
    assert_page(port, &www.token);
    // Several connections, one after the other and at once.
    std::thread::scope(|sc| {
        for _ in 0..4 {
            sc.spawn(|| assert_page(port, &www.token));
        }
    });
    assert_eq!(
        forwards(&api),
        json!([{"local": local, "remote": "192.168.127.2:8080", "protocol": "tcp"}])
    );
    unexpose(&api, &format!(r#"{{"local":"{local}"}}"#));
    assert_refused(port);
    assert_eq!(forwards(&api), json!([]));
    s.assert_running();
}

#[test]
fn forward_udp_dns_query_to_the_guest() {
    let mut s = Setup::start("fwdudp", &[]);
    let _dns = dnsmasq(Some(&s.ns), GUEST_IP);
    let api = s.api();
    let port = free_udp_port();
    let local = format!("127.0.0.1:{port}");
    expose(
        &api,
        &format!(r#"{{"local":"{local}","remote":"192.168.127.2:53","protocol":"udp"}}"#),
    );
    let port_s = port.to_string();
    let query = [
        "dig",
        "@127.0.0.1",
        "-p",
        &port_s,
        "+short",
        "+tries=2",
        "+time=3",
        "udp.gvt.test",
    ];
    let out = run_cmd(&query);
    assert_eq!(
        text(&out.stdout).trim(),
        "10.7.7.7",
        "DNS query through the UDP forward: {}",
        show(&out)
    );
    assert_eq!(
        forwards(&api),
        json!([{"local": local, "remote": "192.168.127.2:53", "protocol": "udp"}])
    );
    unexpose(&api, &format!(r#"{{"local":"{local}","protocol":"udp"}}"#));
    assert_eq!(forwards(&api), json!([]));
    // The host socket is closed: the port can be bound again, and a query gets nothing.
    let rebind = UdpSocket::bind(("127.0.0.1", port));
    assert!(
        rebind.is_ok(),
        "127.0.0.1:{port}/udp is still bound after unexpose: {rebind:?}"
    );
    drop(rebind);
    let out = run_cmd(&[
        "dig",
        "@127.0.0.1",
        "-p",
        &port_s,
        "+short",
        "+tries=1",
        "+time=1",
        "udp.gvt.test",
    ]);
    assert!(
        !text(&out.stdout).contains("10.7.7.7"),
        "a query still went through after unexpose: {}",
        show(&out)
    );
    s.assert_running();
}

#[test]
fn forward_unix_socket_to_guest_tcp() {
    let mut s = Setup::start("fwdunix", &[]);
    let www = guest_http(&s.ns);
    let api = s.api();
    let sock = s.gv.path("fwd.sock");
    let sock_s = sock.display().to_string();
    expose(
        &api,
        &format!(r#"{{"protocol":"unix","local":"{sock_s}","remote":"tcp://192.168.127.2:8080"}}"#),
    );
    let out = curl(&["--unix-socket", &sock_s, "http://guest/"]);
    assert!(
        out.status.success() && text(&out.stdout).contains(&www.token),
        "curl --unix-socket {sock_s}: {}",
        show(&out)
    );
    assert_eq!(
        forwards(&api),
        json!([{"local": sock_s, "remote": "tcp://192.168.127.2:8080", "protocol": "unix"}])
    );
    unexpose(
        &api,
        &format!(r#"{{"protocol":"unix","local":"{sock_s}"}}"#),
    );
    assert!(!sock.exists(), "{sock_s} remains after unexpose");
    assert!(UnixStream::connect(&sock).is_err());
    assert_eq!(forwards(&api), json!([]));
    s.assert_running();
}

#[test]
fn guest_exposes_its_own_port_through_the_gateway() {
    let mut s = Setup::start("fwdvm", &[]);
    let www = guest_http(&s.ns);
    let port = free_tcp_port();
    let local = format!("127.0.0.1:{port}");
    let body = format!(r#"{{"local":"{local}","remote":":8080"}}"#);
    let out = curl_in(
        &s.ns,
        &[
            "-w",
            "\n%{http_code}",
            "http://192.168.127.1/services/forwarder/expose",
            "-d",
            &body,
        ],
    );
    let (code, resp) = curl_status(&out);
    assert_eq!(code, 200, "in-VM expose answered {code}: {resp}");
    assert_page(port, &www.token);
    // An empty host in remote is the calling guest.
    assert_eq!(
        forwards(&s.api()),
        json!([{"local": local, "remote": "192.168.127.2:8080", "protocol": "tcp"}])
    );
    // The in-VM API lists and unexposes too.
    let out = curl_in(&s.ns, &["http://192.168.127.1/services/forwarder/all"]);
    assert!(
        out.status.success() && text(&out.stdout).contains(&local),
        "{}",
        show(&out)
    );
    let out = curl_in(
        &s.ns,
        &[
            "-w",
            "\n%{http_code}",
            "http://192.168.127.1/services/forwarder/unexpose",
            "-d",
            &format!(r#"{{"local":"{local}"}}"#),
        ],
    );
    assert_eq!(curl_status(&out).0, 200, "{}", show(&out));
    assert_refused(port);
    s.assert_running();
}

#[test]
fn ssh_port_forwards_to_guest_port_22() {
    let port = free_tcp_port();
    let port_s = port.to_string();
    let mut s = Setup::start("ssh", &["-ssh-port", &port_s]);
    let listener =
        s.ns.run(|| TcpListener::bind("192.168.127.2:22"))
            .expect("bind 192.168.127.2:22 in the guest");
    let banner = format!("SSH-2.0-gvtest_{}\r\n", next_id());
    let server = {
        let banner = banner.clone();
        std::thread::spawn(move || -> std::io::Result<String> {
            listener.set_nonblocking(true)?;
            let deadline = Instant::now() + Duration::from_secs(20);
            let (mut c, peer) = loop {
                match listener.accept() {
                    Ok(x) => break x,
                    Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(e) => return Err(e),
                }
            };
            c.set_nonblocking(false)?;
            c.set_read_timeout(Some(WAIT))?;
            c.write_all(banner.as_bytes())?;
            let mut line = [0u8; 64];
            let n = c.read(&mut line)?;
            c.write_all(&line[..n])?;
            Ok(peer.ip().to_string())
        })
    };
    assert_eq!(
        forwards(&s.api()),
        json!([{"local": format!("127.0.0.1:{port}"), "remote": "192.168.127.2:22", "protocol": "tcp"}])
    );
    let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connect to the SSH forward");
    c.set_read_timeout(Some(WAIT)).unwrap();
    let mut got = vec![0u8; banner.len()];
    c.read_exact(&mut got).unwrap_or_else(|e| {
        panic!("no banner from the guest's port 22 through 127.0.0.1:{port} within {WAIT:?}: {e}")
    });
    assert_eq!(text(&got), banner);
    c.write_all(b"SSH-2.0-client\r\n").unwrap();
    let mut echo = vec![0u8; 16];
    c.read_exact(&mut echo)
        .unwrap_or_else(|e| panic!("no echo from the guest's port 22: {e}"));
    assert_eq!(&echo, b"SSH-2.0-client\r\n");
    let peer = server.join().unwrap().expect("the guest's server");
    assert_eq!(peer, GATEWAY, "forwarded connections come from the gateway");
    s.assert_running();
}

// ---------------------------------------------------------------------------------
// /tunnel.

/// POST /tunnel?ip=…&port=8080 on `sock`: exactly `OK`, then HTTP to the guest's server.
fn tunnel_get(sock: &Path, token: &str, eager: bool) {
    let mut c = UnixStream::connect(sock).unwrap();
    c.set_read_timeout(Some(WAIT)).unwrap();
    let get = b"GET / HTTP/1.0\r\nHost: guest\r\n\r\n";
    let mut req = b"POST /tunnel?ip=192.168.127.2&port=8080 HTTP/1.1\r\n\r\n".to_vec();
    if eager {
        // A client that writes before reading OK: those bytes must reach the guest.
        req.extend_from_slice(get);
    }
    c.write_all(&req).unwrap();
    let mut ok = [0u8; 2];
    c.read_exact(&mut ok)
        .unwrap_or_else(|e| panic!("/tunnel on {}: no OK: {e}", sock.display()));
    assert_eq!(&ok, b"OK", "/tunnel must answer exactly OK first");
    if !eager {
        c.write_all(get).unwrap();
    }
    let mut rest = Vec::new();
    c.read_to_end(&mut rest)
        .unwrap_or_else(|e| panic!("/tunnel stream: {e} after {:?}", text(&rest)));
    let rest = text(&rest);
    let resp = parse_http_response(&rest)
        .unwrap_or_else(|| panic!("not an HTTP answer right after OK: {rest:?}"));
    assert_eq!(resp.status, 200, "{rest}");
    assert!(resp.body.contains(token), "{rest}");
}

#[test]
fn tunnel_reaches_a_guest_server() {
    let mut s = Setup::start("tunnel", &["-services", "unix://{dir}/services.sock"]);
    let www = guest_http(&s.ns);
    let services = s.gv.path("services.sock");
    tunnel_get(&s.api(), &www.token, false);
    tunnel_get(&services, &www.token, false);
    tunnel_get(&s.api(), &www.token, true);
    // /connect is for -listen only.
    let r = http_request(&services, "POST", "/connect", None);
    assert_eq!(r.status, 404, "/connect on -services: {r:?}");
    s.assert_running();
}

// ---------------------------------------------------------------------------------
// Bad input.

fn assert_api_error(r: &HttpResponse, what: &str, status: Option<u16>, needle: Option<&str>) {
    assert!(
        (400..500).contains(&r.status),
        "{what}: want a 4xx, got {r:?}"
    );
    if let Some(st) = status {
        assert_eq!(r.status, st, "{what}: {r:?}");
    }
    let v: Value = serde_json::from_str(&r.body)
        .unwrap_or_else(|e| panic!("{what}: the error body is not JSON ({e}): {r:?}"));
    let msg = v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no \"error\" string in {r:?}"));
    assert!(!msg.is_empty(), "{what}: empty error: {r:?}");
    if let Some(n) = needle {
        assert!(msg.contains(n), "{what}: error {msg:?} lacks {n:?}");
    }
}

#[test]
fn bad_input_gets_4xx_json_and_the_daemon_keeps_serving() {
    let mut s = Setup::start("badinput", &["-services", "unix://{dir}/services.sock"]);
    let www = guest_http(&s.ns);
    let api = s.api();
    let services = s.gv.path("services.sock");
    let port = free_tcp_port();
    let local = format!("127.0.0.1:{port}");
    let good = format!(r#"{{"local":"{local}","remote":"192.168.127.2:8080"}}"#);
    expose(&api, &good);

    type Req = (String, String, Option<String>);
    let post = |path: &str, body: &str| -> Req { ("POST".into(), path.into(), Some(body.into())) };
    let get = |path: &str| -> Req { ("GET".into(), path.into(), None) };
    let ex = "/services/forwarder/expose";
    let unex = "/services/forwarder/unexpose";
    #[rustfmt::skip]
    let cases: Vec<(Req, Option<u16>, Option<String>)> = vec![
        (post(ex, "{nope"), Some(400), None),
        (post(ex, "[1,2]"), Some(400), None),
        (post(ex, ""), Some(400), None),
        (get(ex), None, None),
        (post(ex, r#"{"local":"127.0.0.1:1","remote":"192.168.127.2:5","protocol":"sctp"}"#), Some(400), None),
        (post(ex, r#"{"local":"127.0.0.1:1","remote":"nohost:5"}"#), Some(400), None),
        (post(ex, r#"{"local":"127.0.0.1:1","remote":"192.168.127.2:99999"}"#), Some(400), None),
        (post(ex, r#"{"local":"127.0.0.1:1","remote":"192.168.127.2"}"#), Some(400), None),
        (post(ex, r#"{"local":"127.0.0.1:1","remote":":8080"}"#), Some(400), None),
        (post(ex, r#"{"local":"127.0.0.1:99999","remote":"192.168.127.2:8080"}"#), Some(400), None),
        (post(ex, r#"{"local":"127.0.0.1","remote":"192.168.127.2:8080"}"#), Some(400), None),
        (post(ex, r#"{"remote":"192.168.127.2:8080"}"#), Some(400), None),
        (post(ex, r#"{"protocol":"unix","local":"/tmp/gvtest-x.sock","remote":"192.168.127.2:8080"}"#), Some(400), None),
        (post(ex, &good), None, Some(format!("proxy already running for tcp on {local}"))),
        (post(unex, "{nope"), Some(400), None),
        (get(unex), None, None),
        (post(unex, r#"{"local":"127.0.0.1:1"}"#), None, None),
        (post(unex, r#"{"local":"127.0.0.1:1","protocol":"sctp"}"#), Some(400), None),
        (post("/services/dns/add", "{nope"), Some(400), None),
        (post("/services/dns/add", "[]"), Some(400), None),
        (post("/services/dns/add", r#"{"Name":"x.","Records":[{"Name":"a","IP":"not-an-ip"}]}"#), Some(400), None),
        (get("/services/dns/add"), None, None),
        (post("/tunnel?port=8080", ""), Some(400), None),
        (post("/tunnel?ip=192.168.127.2", ""), Some(400), None),
        (post("/tunnel?ip=192.168.127.2&port=0", ""), Some(400), None),
        (post("/tunnel?ip=192.168.127.2&port=99999", ""), Some(400), None),
        (post("/tunnel?ip=192.168.127.2&port=http", ""), Some(400), None),
        (post("/tunnel?ip=1.2.3&port=8080", ""), Some(400), None),
        (get("/nope"), Some(404), None),
        (get("/services/forwarder/nope"), Some(404), None),
        (get("/services"), Some(404), None),
    ];
    for sock in [&api, &services] {
        for ((method, path, body), status, needle) in &cases {
            let r = http_request(sock, method, path, body.as_deref());
            let what = format!(
                "{method} {path} {} on {}",
                body.as_deref().unwrap_or(""),
                sock.display()
            );
            assert_api_error(&r, &what, *status, needle.as_deref());
        }
        let garbage = http_raw(sock, b"GARBAGE\r\n\r\n");
        assert_api_error(&garbage, "a garbage request line", Some(400), None);
        s.gv.assert_running();
    }
    // The in-VM endpoint: bad JSON, and nothing but the forwarder paths.
    let out = curl_in(
        &s.ns,
        &[
            "-w",
            "\n%{http_code}",
            "http://192.168.127.1/services/forwarder/expose",
            "-d",
            "{nope",
        ],
    );
    let (code, body) = curl_status(&out);
    let r = HttpResponse {
        status: code,
        head: String::new(),
        body,
    };
    assert_api_error(&r, "in-VM expose with bad JSON", Some(400), None);
    for path in ["/stats", "/leases", "/services/dns/all", "/connect"] {
        let out = curl_in(
            &s.ns,
            &[
                "-w",
                "\n%{http_code}",
                &format!("http://192.168.127.1{path}"),
            ],
        );
        let (code, body) = curl_status(&out);
        assert_eq!(code, 404, "in-VM {path} must be 404: {body}");
    }

    // Still serving: the forward works, the lists and stats answer.
    s.assert_running();
    assert_page(port, &www.token);
    for sock in [&api, &services] {
        assert_eq!(
            forwards(sock),
            json!([{"local": local, "remote": "192.168.127.2:8080", "protocol": "tcp"}])
        );
        let r = http_request(sock, "GET", "/stats", None);
        assert_eq!(r.status, 200, "{r:?}");
        assert!(r.json()["BytesReceived"].as_u64().is_some(), "{r:?}");
    }
    unexpose(&api, &format!(r#"{{"local":"{local}"}}"#));
    assert_refused(port);
}

// ---------------------------------------------------------------------------------
// Notifications.

/// A unix listener of the test's own for `-notification`: each connection carries JSON
/// lines; each message comes with whether `watch` existed when it arrived.
struct NotifyListener {
    rx: Receiver<(Value, bool)>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl NotifyListener {
    fn start(path: &Path, watch: PathBuf) -> NotifyListener {
        let listener = UnixListener::bind(path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let (tx, rx) = channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut c, _)) => {
                        let existed = watch.exists();
                        c.set_nonblocking(false).unwrap();
                        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                        let mut buf = String::new();
                        let _ = c.read_to_string(&mut buf);
                        for line in buf.lines().filter(|l| !l.trim().is_empty()) {
                            let v = serde_json::from_str(line).unwrap_or_else(
                                |e| json!({"unparsable": line, "error": e.to_string()}),
                            );
                            let _ = tx.send((v, existed));
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) => panic!("notification listener: {e}"),
                }
            }
        });
        NotifyListener {
            rx,
            stop,
            thread: Some(thread),
        }
    }

    /// The next message, within `WAIT`.
    fn next(&self, waiting_for: &str, seen: &[Value]) -> (Value, bool) {
        self.rx.recv_timeout(WAIT).unwrap_or_else(|_| {
            panic!("no notification while waiting for {waiting_for}; got {seen:?}")
        })
    }
}

impl Drop for NotifyListener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn notifications_ready_established_closed() {
    let dir = tmp_dir("notify");
    let notify = dir.join("notify.sock");
    let qemu = dir.join("qemu.sock");
    let listener = NotifyListener::start(&notify, qemu.clone());
    let gv = Gvproxy::start(
        "notify",
        &[
            "-listen-qemu",
            &format!("unix://{}", qemu.display()),
            "-notification",
            &format!("unix://{}", notify.display()),
        ],
    );
    let mut seen = Vec::new();
    let (ready, qemu_existed) = listener.next("ready", &seen);
    seen.push(ready.clone());
    assert_eq!(ready, json!({"notification_type": "ready"}));
    assert!(
        qemu_existed,
        "ready arrived before the -listen-qemu socket {} existed",
        qemu.display()
    );

    let ns = guest("notify", GUEST_MAC, GUEST_IP);
    let mut fwd = forwarder(&ns, &["-url", &api_url(&gv)]);
    wait_gateway(&ns, &mut fwd, LINK_TIMEOUT);
    let established = loop {
        let (m, _) = listener.next("connection_established", &seen);
        seen.push(m.clone());
        if m["notification_type"] == "connection_established" {
            break m;
        }
    };
    assert_eq!(
        established,
        json!({"notification_type": "connection_established", "mac_address": GUEST_MAC}),
        "{seen:?}"
    );

    fwd.kill();
    let closed = loop {
        let (m, _) = listener.next("connection_closed", &seen);
        seen.push(m.clone());
        if m["notification_type"] == "connection_closed" {
            break m;
        }
    };
    assert_eq!(
        closed,
        json!({"notification_type": "connection_closed", "mac_address": GUEST_MAC}),
        "{seen:?}"
    );
    // Anything else that arrived: never a second ready, nothing unparsable.
    std::thread::sleep(Duration::from_millis(200));
    seen.extend(listener.rx.try_iter().map(|(m, _)| m));
    assert_eq!(
        seen.iter()
            .filter(|m| m["notification_type"] == "ready")
            .count(),
        1,
        "{seen:?}"
    );
    assert!(
        seen.iter().all(|m| m.get("unparsable").is_none()),
        "{seen:?}"
    );
    drop(gv);
}
