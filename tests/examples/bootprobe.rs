use std::time::{Duration, Instant};
use tests::*;
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: usize = std::env::var("N").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    let kind = args[0].clone();
    if kind == "uml" {
        for _ in 0..n {
            let t = Instant::now();
            let mut g = Guest::start_uml(&UmlConfig::new("", "cat /proc/version; ip link"));
            g.wait_for_console("GVTEST-BEGIN", Duration::from_secs(60));
            let b = t.elapsed();
            let r = g.wait(Duration::from_secs(60));
            println!("uml begin {:.2}s total {:.2}s exit {:?}", b.as_secs_f64(), r.elapsed.as_secs_f64(), r.exit_code);
        }
        return;
    }
    let smp: u32 = args[1].parse().unwrap();
    let mut kargs: Vec<String> = Vec::new();
    let mut extra: Vec<String> = Vec::new();
    for a in &args[2..] { if let Some(q) = a.strip_prefix("Q") { extra.extend(q.split(' ').map(String::from)); } else { kargs.push(a.clone()); } }
    let mut times = Vec::new();
    for _ in 0..n {
        let mut cfg = QemuConfig::new(&["-netdev".into(), "user,id=n0".into()], "5a:94:ef:e4:0c:ee", "ip addr add 10.0.2.15/24 dev $IFACE; ping -c 1 -W 5 10.0.2.2");
        cfg.smp = smp;
        cfg.kernel_args = kargs.clone();
        cfg.extra_args = extra.clone();
        let t = Instant::now();
        let mut g = Guest::start_qemu(&cfg);
        g.wait_for_console("\n", Duration::from_secs(60));
        let first = t.elapsed();
        g.wait_for_console("GVTEST-BEGIN", Duration::from_secs(60));
        let b = t.elapsed();
        let r = g.wait(Duration::from_secs(120));
        times.push(r.elapsed.as_secs_f64());
        println!("qemu smp={smp} {kargs:?} {extra:?}: first-line {:.2} begin {:.2}s total {:.2}s exit {:?}", first.as_secs_f64(), b.as_secs_f64(), r.elapsed.as_secs_f64(), r.exit_code);
        if std::env::var("SHOW").is_ok() { println!("{}", r.console); }
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!("median {:.2}", times[times.len()/2]);
}
