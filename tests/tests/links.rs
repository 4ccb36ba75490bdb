//! Issue 2 end to end: a real Linux stack (a namespace behind a TAP device driven by
//! gvforwarder, or a QEMU / User Mode Linux guest) reaches the virtual gateway over
//! every kind of VM link gvproxy speaks; malformed input on one link leaves the others
//! serving; the command line and signals behave like upstream's.

use std::io::{Read, Write};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::process::Command;
use std::time::{Duration, Instant};

use tests::e2e::{
    forwarder, free_tcp_port, guest, json_u64, Gvproxy, GUEST2_MAC, GUEST_MAC, STARTUP,
};
use tests::{bin_path, require_root, run_qemu, run_uml, tmp_dir, wait_for_path, ChildGuard, Netns};

/// ping the gateway and the host alias; nobody answers ARP for an unused address.
fn assert_gateway_reachable(ns: &Netns) {
    // gvforwarder attaches in the background: wait until the link carries a first echo,
    // then every ping must be answered.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ns
        .exec(&["ping", "-c", "1", "-W", "1", "192.168.127.1"])
        .status
        .success()
    {
        assert!(
            Instant::now() < deadline,
            "the link of {} never came up",
            ns.name()
        );
    }
    for ip in ["192.168.127.1", "192.168.127.254"] {
        let out = ns.exec(&["ping", "-c", "3", "-i", "0.2", "-W", "3", ip]);
        assert!(
            out.status.success(),
            "ping {ip} failed in {}:\n{}{}",
            ns.name(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("3 received"), "{text}");
    }
    let out = ns.exec(&[
        "arping",
        "-c",
        "2",
        "-w",
        "3",
        "-I",
        "tap0",
        "192.168.127.77",
    ]);
    assert!(
        !out.status.success(),
        "something answered ARP for 192.168.127.77:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The kernel's own resolution fails too.
    let _ = ns.exec(&["ping", "-c", "1", "-W", "1", "192.168.127.77"]);
    let neigh = ns.ip(&["neigh", "show", "192.168.127.77"]);
    assert!(
        neigh.is_empty() || neigh.contains("FAILED") || neigh.contains("INCOMPLETE"),
        "unexpected neighbour entry: {neigh}"
    );
}

#[test]
fn connect_over_unix() {
    let gv = Gvproxy::start("connect", &[]);
    let ns = guest("connect", GUEST_MAC, "192.168.127.2");
    let api = format!("unix://{}", gv.api().display());
    let _fwd = forwarder(&ns, &["-url", &api]);
    assert_gateway_reachable(&ns);
    let stats = gv.stats();
    assert!(json_u64(&stats, "BytesReceived") > 0, "{stats}");
}

#[test]
fn qemu_framing_over_unix() {
    let gv = Gvproxy::start("qemuunix", &["-listen-qemu", "unix://{dir}/qemu.sock"]);
    let ns = guest("qemuunix", GUEST_MAC, "192.168.127.2");
    let url = format!("unix://{}", gv.path("qemu.sock").display());
    let _fwd = forwarder(&ns, &["-url", &url, "-protocol", "qemu"]);
    assert_gateway_reachable(&ns);
}

#[test]
fn qemu_framing_over_tcp() {
    let port = free_tcp_port();
    let listen = format!("tcp://127.0.0.1:{port}");
    let gv = Gvproxy::start("qemutcp", &["-listen-qemu", &listen]);
    // The namespace has a loopback of its own: bridge a unix socket to gvproxy's TCP port.
    let bridge = gv.path("bridge.sock");
    let mut socat = Command::new("socat");
    socat.args([
        format!("UNIX-LISTEN:{},fork", bridge.display()),
        format!("TCP:127.0.0.1:{port}"),
    ]);
    let _socat = ChildGuard::spawn("socat-qemutcp", socat);
    assert!(wait_for_path(&bridge, STARTUP), "socat did not start");
    let ns = guest("qemutcp", GUEST_MAC, "192.168.127.2");
    let url = format!("unix://{}", bridge.display());
    let _fwd = forwarder(&ns, &["-url", &url, "-protocol", "qemu"]);
    assert_gateway_reachable(&ns);
    assert!(
        gv.stats().contains("qemu tcp://127.0.0.1"),
        "{}",
        gv.stats()
    );
}

#[test]
fn bess_seqpacket() {
    let gv = Gvproxy::start("bess", &["-listen-bess", "unixpacket://{dir}/bess.sock"]);
    let ns = guest("bess", GUEST_MAC, "192.168.127.2");
    let url = format!("unixpacket://{}", gv.path("bess.sock").display());
    let _fwd = forwarder(&ns, &["-url", &url]);
    assert_gateway_reachable(&ns);
}

#[test]
fn vfkit_unixgram() {
    let gv = Gvproxy::start("vfkit", &["-listen-vfkit", "unixgram://{dir}/vfkit.sock"]);
    let ns = guest("vfkit", GUEST_MAC, "192.168.127.2");
    let url = format!("unixgram://{}", gv.path("vfkit.sock").display());
    let local = gv.path("fwd-vfkit.sock").display().to_string();
    let _fwd = forwarder(&ns, &["-url", &url, "-local", &local]);
    assert_gateway_reachable(&ns);
}

#[test]
fn vfkit_unixgram_without_greeting() {
    let gv = Gvproxy::start(
        "vfkitnog",
        &["-listen-vfkit", "unixgram://{dir}/vfkit.sock"],
    );
    let ns = guest("vfkitnog", GUEST_MAC, "192.168.127.2");
    let url = format!("unixgram://{}", gv.path("vfkit.sock").display());
    let local = gv.path("fwd-vfkit.sock").display().to_string();
    let _fwd = forwarder(&ns, &["-url", &url, "-local", &local, "-vfkt=false"]);
    assert_gateway_reachable(&ns);
}

#[test]
fn hyperkit_vpnkit() {
    let gv = Gvproxy::start("vpnkit", &["-listen-vpnkit", "unix://{dir}/vpnkit.sock"]);
    let ns = guest("vpnkit", GUEST_MAC, "192.168.127.2");
    let url = format!("unix://{}", gv.path("vpnkit.sock").display());
    let _fwd = forwarder(&ns, &["-url", &url, "-protocol", "hyperkit"]);
    assert_gateway_reachable(&ns);
}

#[test]
fn stdio_child_process() {
    require_root();
    // gvforwarder starts gvproxy itself and talks to it over the child's stdin/stdout.
    let ns = guest("stdio", GUEST_MAC, "192.168.127.2");
    let url = format!(
        "stdio:{}?listen-stdio=accept&debug=true&ssh-port=-1",
        bin_path("gvproxy").display()
    );
    let _fwd = forwarder(&ns, &["-url", &url]);
    assert_gateway_reachable(&ns);
}

#[test]
fn two_guests_switch_through_one_gvproxy() {
    let gv = Gvproxy::start("twovm", &[]);
    let api = format!("unix://{}", gv.api().display());
    let a = guest("twovma", GUEST_MAC, "192.168.127.2");
    let b = guest("twovmb", GUEST2_MAC, "192.168.127.3");
    let _fa = forwarder(&a, &["-url", &api]);
    let _fb = forwarder(&b, &["-url", &api, "-mac", GUEST2_MAC]);
    for (ns, peer) in [(&a, "192.168.127.3"), (&b, "192.168.127.2")] {
        let out = ns.exec(&["ping", "-c", "3", "-i", "0.2", "-W", "3", peer]);
        assert!(
            out.status.success(),
            "{} cannot ping {peer}:\n{}",
            ns.name(),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    // TCP both ways between the guests: both links carry virtio-net headers, so the
    // senders' frames come with partial checksums (and TSO) that gvproxy must finish
    // before it hands them to the other guest.
    let _server = b.spawn(&["iperf3", "-s", "-B", "192.168.127.3", "-p", "5301"]);
    std::thread::sleep(Duration::from_millis(500));
    for reverse in [false, true] {
        let mut args = vec![
            "timeout",
            "30",
            "iperf3",
            "-c",
            "192.168.127.3",
            "-p",
            "5301",
            "-n",
            "32M",
        ];
        if reverse {
            args.push("-R");
        }
        let out = a.exec(&args);
        assert!(
            out.status.success(),
            "guest-to-guest TCP (reverse: {reverse}) failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let cam = gv.stats();
    assert!(cam.contains(GUEST_MAC) && cam.contains(GUEST2_MAC), "{cam}");
    assert!(cam.contains("/connect-vnet"), "{cam}");
}

/// The guest script for QEMU and UML: static address, ping the gateway and the host alias.
const PING_SCRIPT: &str = "ip addr add 192.168.127.2/24 dev $IFACE && \
ip route add default via 192.168.127.1 && \
ping -c 3 -W 3 192.168.127.1 && ping -c 3 -W 3 192.168.127.254 && echo PINGS-OK";

#[test]
fn qemu_guest_over_unix_stream() {
    let gv = Gvproxy::start("vmqemuunix", &["-listen-qemu", "unix://{dir}/qemu.sock"]);
    let netdev = vec![
        "-netdev".to_string(),
        format!(
            "stream,id=n0,server=off,addr.type=unix,addr.path={}",
            gv.path("qemu.sock").display()
        ),
    ];
    let res = run_qemu(&netdev, GUEST_MAC, PING_SCRIPT, Duration::from_secs(120));
    res.assert_success();
    assert!(res.output().contains("PINGS-OK"), "{}", res.console);
}

#[test]
fn qemu_guest_over_tcp_stream() {
    let port = free_tcp_port();
    let listen = format!("tcp://127.0.0.1:{port}");
    let _gv = Gvproxy::start("vmqemutcp", &["-listen-qemu", &listen]);
    let netdev = vec![
        "-netdev".to_string(),
        format!("stream,id=n0,server=off,addr.type=inet,addr.host=127.0.0.1,addr.port={port}"),
    ];
    let res = run_qemu(&netdev, GUEST_MAC, PING_SCRIPT, Duration::from_secs(120));
    res.assert_success();
    assert!(res.output().contains("PINGS-OK"), "{}", res.console);
}

#[test]
fn uml_guest_over_bess() {
    let gv = Gvproxy::start("vmuml", &["-listen-bess", "unixpacket://{dir}/bess.sock"]);
    let vec = format!(
        "vec0:transport=bess,src={},dst={},mac={GUEST_MAC},mtu=1500",
        gv.path("uml.sock").display(),
        gv.path("bess.sock").display()
    );
    let res = run_uml(&vec, PING_SCRIPT, Duration::from_secs(60));
    res.assert_success();
    assert!(res.output().contains("PINGS-OK"), "{}", res.console);
}

/// A frame of `len` bytes (length-prefix framings carry whatever we give them).
fn junk(len: usize, seed: &mut u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            (*seed >> 24).to_le_bytes()[0]
        })
        .collect()
}

#[test]
fn malformed_input_leaves_other_links_serving() {
    let mut gv = Gvproxy::start(
        "malformed",
        &[
            "-listen-qemu",
            "unix://{dir}/qemu.sock",
            "-listen-bess",
            "unixpacket://{dir}/bess.sock",
            "-listen-vfkit",
            "unixgram://{dir}/vfkit.sock",
            "-listen-vpnkit",
            "unix://{dir}/vpnkit.sock",
        ],
    );
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;

    // qemu: a 3-byte frame (a runt), then a 1 MiB length prefix (disconnects).
    let mut q = UnixStream::connect(gv.path("qemu.sock")).unwrap();
    q.write_all(&[0, 0, 0, 3, 1, 2, 3]).unwrap();
    q.write_all(&(1u32 << 20).to_be_bytes()).unwrap();
    let mut buf = [0u8; 64];
    q.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(q.read(&mut buf).unwrap_or(0), 0, "qemu link not closed");
    // qemu: random bytes.
    let mut q2 = UnixStream::connect(gv.path("qemu.sock")).unwrap();
    let _ = q2.write_all(&junk(4096, &mut seed));

    // /connect: the request, a runt, then random bytes.
    let mut c = UnixStream::connect(gv.api()).unwrap();
    c.write_all(b"POST /connect HTTP/1.1\r\nHost: \r\nContent-Length: 0\r\n\r\n")
        .unwrap();
    c.write_all(&[3, 0, 9, 9, 9]).unwrap();
    let _ = c.write_all(&junk(4096, &mut seed));

    // bess: a 3-byte message and random messages.
    let b = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::SEQPACKET, None).unwrap();
    b.connect(&socket2::SockAddr::unix(gv.path("bess.sock")).unwrap())
        .unwrap();
    b.send(&[1, 2, 3]).unwrap();
    for n in [1usize, 13, 14, 60, 1514] {
        b.send(&junk(n, &mut seed)).unwrap();
    }

    // vfkit: a 3-byte datagram first (it is the peer's first frame), then random ones.
    let v = UnixDatagram::bind(gv.path("peer-vfkit.sock")).unwrap();
    v.connect(gv.path("vfkit.sock")).unwrap();
    v.send(&[1, 2, 3]).unwrap();
    for n in [0usize, 5, 14, 100, 1514] {
        let _ = v.send(&junk(n, &mut seed));
    }

    // vpnkit: a handshake of random bytes.
    let mut h = UnixStream::connect(gv.path("vpnkit.sock")).unwrap();
    let _ = h.write_all(&junk(200, &mut seed));

    // A well-behaved guest still gets through.
    let ns = guest("malformed", GUEST_MAC, "192.168.127.2");
    let api = format!("unix://{}", gv.api().display());
    let _fwd = forwarder(&ns, &["-url", &api]);
    assert_gateway_reachable(&ns);
    gv.assert_running();

    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stats = gv.stats();
        let ok = json_u64(&stats, "link_runts") >= 3 && json_u64(&stats, "links_oversize") >= 1;
        if ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "counters do not show it: {stats}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop((q, q2, c, b, v, h));
}

#[test]
fn bad_flags_stop_startup_with_one_line() {
    require_root();
    let dir = tmp_dir("badflags");
    let existing = dir.join("exists.sock");
    std::fs::write(&existing, b"").unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["-mtu".into(), "70000".into()], "-mtu"),
        (vec!["--listen".into(), "foo:///x".into()], "-listen"),
        (
            vec![
                "-listen-qemu".into(),
                format!("unix://{}", existing.display()),
            ],
            "-listen-qemu",
        ),
        (vec!["-listen-bess=unix:///tmp/x".into()], "-listen-bess"),
        (vec!["-subnet".into(), "10.0.0.0/30".into()], "-subnet"),
    ];
    for (args, flag) in cases {
        let out = Command::new(bin_path("gvproxy"))
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(flag), "{args:?}: {err}");
    }
    let out = Command::new(bin_path("gvproxy"))
        .arg("-version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("gvproxy version "));
}

#[test]
fn signals_shut_down_cleanly() {
    for sig in [
        nix::sys::signal::Signal::SIGTERM,
        nix::sys::signal::Signal::SIGINT,
    ] {
        let mut gv = Gvproxy::start(
            "signals",
            &[
                "-listen-qemu",
                "unix://{dir}/qemu.sock",
                "-listen-bess",
                "unixpacket://{dir}/bess.sock",
                "-listen-vfkit",
                "unixgram://{dir}/vfkit.sock",
                "-pid-file",
                "{dir}/gvproxy.pid",
            ],
        );
        let pid_file = gv.path("gvproxy.pid");
        assert!(wait_for_path(&pid_file, STARTUP));
        let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().parse().unwrap();
        assert_eq!(pid, gv.child.id() as i32);
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).unwrap();
        let status = gv
            .child
            .wait_timeout(Duration::from_secs(5))
            .expect("gvproxy did not exit");
        assert_eq!(status.code(), Some(0), "{sig}");
        for f in [
            "api.sock",
            "qemu.sock",
            "bess.sock",
            "vfkit.sock",
            "gvproxy.pid",
        ] {
            assert!(!gv.path(f).exists(), "{f} left behind after {sig}");
        }
    }
}

#[test]
fn connect_keeps_frames_sent_with_the_request() {
    // The upgrade carries frames from the byte after the request head: an ARP request
    // written in the same packet as the request must be answered.
    let gv = Gvproxy::start("connectrace", &[]);
    let mut s = UnixStream::connect(gv.api()).unwrap();
    let mac = [0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xee];
    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&mac);
    arp.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&mac);
    arp.extend_from_slice(&[192, 168, 127, 2, 0, 0, 0, 0, 0, 0, 192, 168, 127, 1]);
    let mut msg = transports::http::GO_CONNECT_REQUEST.to_vec();
    msg.extend_from_slice(&u16::try_from(arp.len()).unwrap().to_le_bytes());
    msg.extend_from_slice(&arp);
    s.write_all(&msg).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut len = [0u8; 2];
    s.read_exact(&mut len).expect("no reply frame");
    let mut reply = vec![0u8; usize::from(u16::from_le_bytes(len))];
    s.read_exact(&mut reply).unwrap();
    // An ARP reply (op 2) from the gateway's MAC for 192.168.127.1.
    assert_eq!(&reply[12..14], &[0x08, 0x06]);
    assert_eq!(&reply[20..22], &[0, 2]);
    assert_eq!(&reply[22..28], &[0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xdd]);
    assert_eq!(&reply[28..32], &[192, 168, 127, 1]);
}
