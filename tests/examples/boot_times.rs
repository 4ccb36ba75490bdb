//! Measures guest boot times (spawn to power-off, median of N):
//! `cargo run --release -p tests --example boot_times -- [N]`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;
use tests::{Guest, QemuConfig, UmlConfig};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("N"))
        .unwrap_or(5);
    let netdev = ["-netdev".to_string(), "user,id=n0".to_string()];
    let script = "ip addr add 10.0.2.15/24 dev $IFACE; ping -c 1 -W 5 10.0.2.2";
    for smp in [1, 2] {
        let times = (0..n)
            .map(|_| {
                let mut cfg = QemuConfig::new(&netdev, "5a:94:ef:e4:0c:ee", script);
                cfg.smp = smp;
                let r = Guest::start_qemu(&cfg).wait(Duration::from_secs(120));
                r.assert_success();
                r.elapsed.as_secs_f64()
            })
            .collect();
        println!(
            "qemu -smp {smp}: median {:.2} s over {n} boots",
            median(times)
        );
    }
    let times = (0..n)
        .map(|_| {
            let r = Guest::start_uml(&UmlConfig::new("", "cat /proc/version"))
                .wait(Duration::from_secs(60));
            r.assert_success();
            r.elapsed.as_secs_f64()
        })
        .collect();
    println!("uml: median {:.2} s over {n} boots", median(times));
}
