//! A real `fdatasync` failing with EIO (libfiu's LD_PRELOAD wrappers, `fiu-run`): the journal's
//! appends fail with the I/O error instead of being acknowledged, nothing that failed ever
//! appears, and appends succeed again afterwards. Skipped when fiu-run is not installed,
//! unless `CAIRN_REQUIRE_FIU=1` (the test command installs fiu-utils when it can).

use std::process::Command;

fn probe(dir: &std::path::Path, args: &[&str], fiu: Option<&str>) -> String {
    let bin = env!("CARGO_BIN_EXE_cairn");
    let mut cmd = match fiu {
        Some(spec) => {
            let mut c = Command::new("fiu-run");
            c.args(["-x", "-c", spec, bin]);
            c
        }
        None => Command::new(bin),
    };
    let out = cmd
        .arg("journal-probe")
        .arg("--dir")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn fdatasync_eio_fails_appends_and_acknowledges_nothing_that_failed() {
    if Command::new("fiu-run").arg("-h").output().is_err() {
        assert!(
            std::env::var("CAIRN_REQUIRE_FIU").is_err(),
            "fiu-run is required but not installed"
        );
        eprintln!("fiu-run not installed; skipping");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let j = d.path().join("journal");
    assert_eq!(
        probe(&j, &["--count", "3", "--label", "before"], None),
        "ok 0\nok 1\nok 2\n"
    );
    // Every fdatasync fails with EIO (errno 5).
    let failed = probe(
        &j,
        &["--count", "3", "--label", "lost"],
        Some("enable name=posix/io/sync/fdatasync,failinfo=5"),
    );
    let lines: Vec<&str> = failed.lines().collect();
    assert_eq!(lines.len(), 3, "{failed}");
    for l in &lines {
        assert!(
            l.starts_with("err ") && l.contains("Input/output error"),
            "an append was acknowledged despite EIO: {l}"
        );
    }
    assert_eq!(
        probe(&j, &["--count", "2", "--label", "after"], None),
        "ok 3\nok 4\n"
    );
    let all = probe(&j, &["--read"], None);
    assert_eq!(
        all, "0 before-0\n1 before-1\n2 before-2\n3 after-0\n4 after-1\n",
        "failed appends must never appear"
    );
}
