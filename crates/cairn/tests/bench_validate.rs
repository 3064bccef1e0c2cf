//! The judged scenario: `cairn bench ingest --events 200000 --hours 30`, then
//! `cairn validate-logs` with the printed ARN and start time exits 0 with every digest (≥ 30,
//! empty hours and a stop/start gap included) and every log file valid.

use std::process::Command;

#[test]
fn bench_ingest_200k_over_30_hours_then_validate_logs_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args([
            "bench",
            "ingest",
            "--events",
            "200000",
            "--hours",
            "30",
            "--json",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let arn = v["trail_arn"].as_str().unwrap();
    let start = v["start_time"].as_str().unwrap();
    assert!(
        v["events_while_stopped"].as_u64().unwrap() > 0,
        "the run must include a stop/start gap"
    );
    let val = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args([
            "validate-logs",
            "--trail-arn",
            arn,
            "--start-time",
            start,
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&val.stdout);
    let stderr = String::from_utf8_lossy(&val.stderr);
    assert_eq!(val.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("No log files were delivered by CloudTrail between"),
        "the stop/start gap is reported: {stderr}"
    );
    let digests = stdout
        .lines()
        .find(|l| l.contains("digest files valid"))
        .unwrap();
    let (valid, total) = digests.split_once(' ').unwrap().0.split_once('/').unwrap();
    assert_eq!(valid, total, "{digests}");
    assert!(valid.parse::<u32>().unwrap() >= 30, "{digests}");
    assert!(!stdout.contains("INVALID") && !stderr.contains("INVALID"));
    let logs = stdout
        .lines()
        .find(|l| l.contains("log files valid"))
        .unwrap();
    let (lv, lt) = logs.split_once(' ').unwrap().0.split_once('/').unwrap();
    assert_eq!(lv, lt);
    // Strict mode agrees: nothing unreferenced, every link intact, the gap explained.
    let state = dir.path().join("state.json");
    let strict = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args([
            "validate-logs",
            "--strict",
            "--trail-arn",
            arn,
            "--start-time",
            start,
            "--data-dir",
        ])
        .arg(dir.path())
        .arg("--state-file")
        .arg(&state)
        .output()
        .unwrap();
    assert_eq!(
        strict.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&strict.stderr)
    );
}
