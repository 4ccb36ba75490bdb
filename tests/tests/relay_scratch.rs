#![allow(clippy::unwrap_used)]
use std::time::Instant;
use tests::e2e::*;
use tests::relay::*;

#[test]
fn relay_ping_gateway() {
    let gv = Gvproxy::start("rscratch", &[]);
    let ns = guest("rscratch", GUEST_MAC, "192.168.127.2");
    let cfg = FaultConfig::new(seed_from_env(), 0.02, 0.05, 0.01);
    let relay = Relay::start(&gv.path("relay.sock"), &gv.api(), cfg);
    let url = format!("unix://{}", relay.path().display());
    let _fwd = forwarder(&ns, &["-url", &url]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let t = Instant::now();
    let out = ns.exec(&[
        "ping",
        "-q",
        "-i",
        "0.001",
        "-c",
        "5000",
        "-s",
        "1000",
        "-W",
        "1",
        "192.168.127.1",
    ]);
    println!("{:?} {}", t.elapsed(), String::from_utf8_lossy(&out.stdout));
    let st = relay.stats();
    println!("g2h {}\nh2g {}", st.guest_to_host, st.host_to_guest);
    let out = ns.exec(&["ping", "-c", "20", "-i", "0.01", "192.168.127.1"]);
    println!("{}", String::from_utf8_lossy(&out.stdout));
}
