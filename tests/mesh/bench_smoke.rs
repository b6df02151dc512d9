//! The benchmarks cannot rot: each runs here for a moment on a tiny input.
//! (Nothing here asserts a time; the figures live in docs/benchmarks.md.)

use std::process::Command;

use e2e::bin;

#[test]
fn control_plane_benchmark_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("cp.json");
    let out = Command::new(bin("bench-control-plane"))
        .args(["--services", "20", "--endpoints-per-service", "3", "--proxies", "5", "--changes", "2", "--json"])
        .arg(&json)
        .output()
        .expect("run the benchmark");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("first full push to every proxy"), "{table}");
    let results: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(json).expect("json")).expect("valid json");
    assert_eq!(results["endpoints"], 60);
    assert!(results["rss_peak_mib"].as_f64().unwrap_or(0.0) > 0.0);
}
