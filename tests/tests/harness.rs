//! Checks of the test bed itself: the guests boot, namespaces and children
//! clean up. A missing tool fails these tests; nothing is skipped.

use std::process::Command;
use std::time::Duration;
use tests::*;

#[test]
fn qemu_guest_boots_and_pings_slirp_gateway() {
    // QEMU's own user-mode network: 10.0.2.2 is answered inside QEMU.
    let script = "ip addr add 10.0.2.15/24 dev $IFACE\nip addr\nping -c 2 -W 5 10.0.2.2\n";
    let netdev = ["-netdev".to_string(), "user,id=n0".to_string()];
    let r = run_qemu(
        &netdev,
        "5a:94:ef:e4:0c:ee",
        script,
        Duration::from_secs(180),
    );
    eprintln!("qemu boot + script: {:.1} s", r.elapsed.as_secs_f64());
    r.assert_success();
    let out = r.output();
    assert!(out.contains("5a:94:ef:e4:0c:ee"), "no NIC in:\n{out}");
    assert!(out.contains("2 packets received"), "ping failed:\n{out}");
}

#[test]
fn uml_guest_boots_same_initrd() {
    let r = run_uml("", "cat /proc/version\nip link\n", Duration::from_secs(60));
    eprintln!("uml boot + script: {:.1} s", r.elapsed.as_secs_f64());
    r.assert_success();
    let out = r.output();
    assert!(out.contains("Linux version"), "no /proc/version in:\n{out}");
    assert!(out.contains("lo:"), "no loopback in:\n{out}");
}

#[test]
fn guest_reports_script_failure_and_long_scripts() {
    // A long script goes gzip'd; its exit code comes back.
    let mut script = String::new();
    for i in 0..60 {
        script.push_str(&format!("echo line-{i} of a longer script\n"));
    }
    script.push_str("exit 7\n");
    let r = run_uml("", &script, Duration::from_secs(60));
    assert_eq!(r.exit_code, Some(7), "console:\n{}", r.console);
    assert!(r.output().contains("line-59 of a longer script"));
}

#[test]
fn netns_veth_tap_and_cleanup() {
    require_root();
    let a = Netns::new("ha");
    let b = Netns::new("hb");
    let veth = Veth::new(Some(&a), &b);
    veth.a.addr_add("10.213.0.1/30");
    veth.b.addr_add("10.213.0.2/30");
    a.exec_ok(&["ping", "-c", "1", "-W", "5", "10.213.0.2"]);
    // ping sockets (unprivileged ICMP) are open inside every Netns.
    let range = a.exec_ok(&["cat", "/proc/sys/net/ipv4/ping_group_range"]);
    assert_eq!(
        range.split_whitespace().collect::<Vec<_>>(),
        ["0", "2147483647"]
    );

    a.add_tap("tap0", "5a:94:ef:e4:0c:ee", 9000);
    a.addr_add("tap0", "192.168.127.2/24");
    a.route_add_default("192.168.127.1");
    let link = a.ip(&["link", "show", "tap0"]);
    assert!(
        link.contains("mtu 9000") && link.contains("5a:94:ef:e4:0c:ee"),
        "{link}"
    );

    // std sockets inside the namespace.
    let local = b.run(|| {
        let l = std::net::TcpListener::bind("10.213.0.2:0").unwrap();
        l.local_addr().unwrap()
    });
    assert_eq!(local.ip().to_string(), "10.213.0.2");

    // Drop kills what runs inside and deletes the namespace.
    let mut sleeper = a.spawn(&["sleep", "1000"]);
    let pid = sleeper.id();
    assert!(sleeper.is_running());
    assert!(a.pids().contains(&i32::try_from(pid).unwrap()));
    let name = a.name().to_string();
    drop(veth);
    drop(a);
    assert!(sleeper.wait_timeout(Duration::from_secs(5)).is_some());
    let list = run_ok(&["ip", "netns", "list"]);
    assert!(!list.contains(&name), "{name} still listed:\n{list}");
}

#[test]
fn veth_from_host() {
    require_root();
    let ns = Netns::new("hv");
    let veth = Veth::host_to(&ns);
    assert!(veth.a.ns.is_none());
    let name = veth.a.name.clone();
    run_ok(&["ip", "link", "show", &name]);
    drop(veth);
    assert!(!run_cmd(&["ip", "link", "show", &name]).status.success());
}

#[test]
fn child_guard_waits_and_kills() {
    let dir = tmp_dir("cg");
    let sock = dir.join("s.sock");
    let mut cmd = Command::new("socat");
    cmd.arg(format!("UNIX-LISTEN:{},fork", sock.display()))
        .arg("EXEC:cat");
    let mut child = ChildGuard::spawn("socat", cmd);
    child.wait_for_unix_socket(&sock, Duration::from_secs(10));

    let mut cmd = Command::new("sh");
    cmd.args(["-c", "echo hello-from-child; exec sleep 1000"]);
    let mut sh = ChildGuard::spawn("sh", cmd);
    sh.wait_for_log("hello-from-child", Duration::from_secs(10));
    let pid = sh.id();
    drop(sh);
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());

    let path = dir.path().to_path_buf();
    drop(child);
    drop(dir);
    assert!(!path.exists());
}

#[test]
fn ping_group_sysctl() {
    require_root();
    ensure_sysctl_ping_group();
    let v = std::fs::read_to_string("/proc/sys/net/ipv4/ping_group_range").unwrap();
    assert_eq!(
        v.split_whitespace().collect::<Vec<_>>(),
        ["0", "2147483647"]
    );
}

#[test]
fn workspace_binaries_are_found() {
    for name in ["gvproxy", "gvforwarder"] {
        let p = bin_path(name);
        assert!(p.is_file(), "{}", p.display());
    }
}

/// The guest's NIC against a kernel peer (no gvproxy): a TAP device in a
/// namespace, the VM started inside that namespace.
fn tap_peer(prefix: &str) -> Netns {
    let ns = Netns::new(prefix);
    ns.add_tap("tap0", "5a:94:ef:e4:0c:dd", 1500);
    ns.addr_add("tap0", "10.213.1.1/24");
    ns
}

const TAP_SCRIPT: &str =
    "ip addr add 10.213.1.2/24 dev $IFACE\nip link show $IFACE\nping -c 2 -W 5 10.213.1.1\n";

#[test]
fn uml_guest_nic_over_tap() {
    require_root();
    let ns = tap_peer("umltap");
    let mut cfg = UmlConfig::new(
        "vec0:transport=tap,ifname=tap0,mac=5a:94:ef:e4:0c:ee",
        TAP_SCRIPT,
    );
    cfg.netns = Some(ns.name().to_string());
    let r = Guest::start_uml(&cfg).wait(Duration::from_secs(60));
    eprintln!("uml over tap: {:.1} s", r.elapsed.as_secs_f64());
    r.assert_success();
    let out = r.output();
    assert!(
        r.console.contains("GVTEST-BEGIN iface=vec0"),
        "{}",
        r.console
    );
    assert!(out.contains("5a:94:ef:e4:0c:ee"), "{out}");
    assert!(out.contains("2 packets received"), "{out}");
}

#[test]
fn qemu_guest_nic_over_tap() {
    require_root();
    let ns = tap_peer("qemutap");
    let netdev = [
        "-netdev".to_string(),
        "tap,id=n0,ifname=tap0,script=no,downscript=no".to_string(),
    ];
    let mut cfg = QemuConfig::new(&netdev, "5a:94:ef:e4:0c:ee", TAP_SCRIPT);
    cfg.netns = Some(ns.name().to_string());
    let r = Guest::start_qemu(&cfg).wait(Duration::from_secs(180));
    eprintln!("qemu over tap: {:.1} s", r.elapsed.as_secs_f64());
    r.assert_success();
    assert!(
        r.console.contains("GVTEST-BEGIN iface=eth0"),
        "{}",
        r.console
    );
    assert!(r.output().contains("2 packets received"), "{}", r.output());
}

#[test]
fn everything_cleans_up_when_a_test_panics() {
    require_root();
    let mut names = (String::new(), 0u32, 0u32);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let ns = Netns::new("panic");
        let sleeper = ns.spawn(&["sleep", "1000"]);
        let mut cmd = Command::new("sleep");
        cmd.arg("1000");
        let host_child = ChildGuard::spawn("sleep", cmd);
        let mut guest = Guest::start_uml(&UmlConfig::new("", "echo up; sleep 1000"));
        assert!(
            guest.wait_for_console("up", Duration::from_secs(60)),
            "{}",
            guest.console()
        );
        names = (ns.name().to_string(), sleeper.id(), guest.pid());
        let _ = &host_child;
        panic!("deliberate failure");
    }));
    assert!(result.is_err());
    let (ns, sleeper, guest) = names;
    assert!(!ns.is_empty(), "the closure did not get far enough");
    assert!(!run_ok(&["ip", "netns", "list"]).contains(&ns));
    for pid in [sleeper, guest] {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "pid {pid} survived"
        );
    }
}
