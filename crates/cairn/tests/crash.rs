//! The crash harness, short form (CI): 200 SIGKILLs of a worker under load, then the ledger
//! check (no acknowledged event lost, none duplicated) and both validators.
//! The long run is one command: `cairn crash-test --kills 2000`.

use std::process::Command;

#[test]
fn two_hundred_sigkills_lose_and_duplicate_nothing_and_the_chain_validates() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args([
            "crash-test",
            "--kills",
            "200",
            "--seed",
            "7",
            "--min-ms",
            "30",
            "--max-ms",
            "300",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}\n{stderr}");
    assert!(
        out.status.success(),
        "crash test failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("lost (acked, absent)  0"));
    assert!(stdout.contains("duplicated            0"));
    assert!(stdout.contains("PASS"));
    let acked: u64 = stdout
        .lines()
        .find(|l| l.starts_with("acknowledged events"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(acked > 1000, "too little load to mean anything: {acked}");
    // Kills must land inside deliveries (after an intent was committed, before it completed),
    // so that restarts really rebuild and rewrite files.
    let recovered: u64 = stdout
        .lines()
        .find(|l| l.starts_with("interrupted deliveries"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        recovered >= 10,
        "only {recovered} crashes interrupted a delivery"
    );
}

/// `cairn serve` itself SIGKILLed under PutAuditEvents with client retries (the same ids
/// resent until answered): nothing acknowledged lost, nothing stored twice, every id
/// delivered under the eventID its answer named. The long run:
/// `cairn crash-test --serve --kills 1000 --min-ms 150 --max-ms 1200`.
#[test]
fn sigkilled_servers_store_each_retried_audit_event_once() {
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args([
            "crash-test",
            "--serve",
            "--kills",
            "40",
            "--seed",
            "11",
            "--min-ms",
            "150",
            "--max-ms",
            "900",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "crash test failed:\n{stdout}\n{stderr}"
    );
    for line in [
        "lost (acked, absent)  0",
        "duplicated            0",
        "delivered under another eventID than acknowledged  0",
        "PASS",
    ] {
        assert!(stdout.contains(line), "missing {line:?}:\n{stdout}");
    }
    let number = |prefix: &str| -> u64 {
        stdout
            .lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    assert!(
        number("acknowledged events") > 1000,
        "too little load:\n{stdout}"
    );
    // Kills must cut requests in flight, or the retries prove nothing.
    assert!(number("client retries") >= 20, "too few retries:\n{stdout}");
}
