//! `cairn bench logs`, small: every phase runs against a real server, the scans find exactly
//! the 1-in-100 AccessDenied records, the Insights query groups by the ten event names, and
//! every request of the latency phase reaches the trail's log group (the bench fails if one
//! is missing).

use std::process::Command;

#[test]
fn bench_logs_small_run_finds_what_it_loaded_and_delivers_every_event() {
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args([
            "bench",
            "logs",
            "--events",
            "5000",
            "--seconds",
            "1",
            "--connections",
            "2",
            "--rate",
            "200",
            "--latency-seconds",
            "2",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["filter_log_events"]["json_pattern"]["matched"], 50);
    assert_eq!(v["filter_log_events"]["term_pattern"]["matched"], 50);
    assert_eq!(
        v["insights_stats_count_by_eventName"]["records_scanned"],
        5000.0
    );
    assert_eq!(v["insights_stats_count_by_eventName"]["groups"], 10);
    assert!(v["trail_to_log_group"]["events"].as_u64().unwrap() >= 300);
    assert!(v["put_log_events"]["events_per_s"].as_f64().unwrap() > 0.0);
}
