//! Issue 5: `perf --quick` runs on this machine in CI time and prints the table, with
//! both of our engines (through gvforwarder, and gvproxy on the TAP directly) measured,
//! and the peers that are installed (`.ci/run` installs slirp4netns and pasta).

// Test code: a failed unwrap/expect is a test failure with a location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use tests::{bin_path, require_root, tmp_dir, ChildGuard};

/// `--quick` takes about 2.5 minutes here; beyond this something hangs.
const LIMIT: Duration = Duration::from_secs(420);

#[test]
fn perf_quick_prints_the_table() {
    require_root();
    let perf = bin_path("perf");
    let dir = tmp_dir("perfquick");
    let json = dir.path().join("quick.json");
    let svg = dir.path().join("quick.svg");
    let mut cmd = Command::new(&perf);
    cmd.arg("--quick")
        .arg("--json")
        .arg(&json)
        .arg("--svg")
        .arg(&svg)
        .arg("--gvproxy-bin")
        .arg(bin_path("gvproxy"))
        .arg("--gvforwarder-bin")
        .arg(bin_path("gvforwarder"));
    let start = Instant::now();
    let mut child = ChildGuard::spawn("perf", cmd);
    let status = child.wait_timeout(LIMIT).unwrap_or_else(|| {
        panic!(
            "perf --quick still running after {LIMIT:?}:\n{}",
            child.log_tail(40)
        )
    });
    let log = child.log();
    println!("{log}");
    println!("perf --quick took {:.0} s", start.elapsed().as_secs_f64());
    assert!(
        status.success(),
        "perf --quick failed ({status}):\n{}",
        child.log_tail(40)
    );
    assert!(
        log.contains("| workload | unit | MTU | direction |"),
        "no table printed"
    );
    assert!(
        log.contains("| engine | MTU |"),
        "no engine cost table printed"
    );
    // Every run of our two engines produced a figure.
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let runs = report["runs"].as_array().expect("runs in the JSON report");
    for engine in ["ours", "ours-tap"] {
        let mine: Vec<&Value> = runs.iter().filter(|r| r["engine"] == engine).collect();
        assert!(
            mine.len() >= 8,
            "{engine}: only {} runs in the report",
            mine.len()
        );
        for r in mine {
            assert_eq!(r["ok"], true, "{engine}: a run failed: {r}");
        }
    }
    assert!(
        std::fs::metadata(&svg).unwrap().len() > 1000,
        "no chart written"
    );
}
