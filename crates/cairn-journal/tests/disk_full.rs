//! Disk full on a real filesystem: a size-limited tmpfs. Appends fail with the I/O error,
//! nothing acknowledged is lost, and appends succeed again once space returns.
//! Needs root to mount; skipped otherwise unless `CAIRN_REQUIRE_MOUNT=1`.

use cairn_journal::{Journal, JournalError, JournalOptions};
use std::path::{Path, PathBuf};
use std::process::Command;

struct Mount(PathBuf);
impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn mount_tmpfs(dir: &Path, size: &str) -> Option<Mount> {
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        assert!(
            std::env::var("CAIRN_REQUIRE_MOUNT").is_err(),
            "cannot mount a tmpfs but CAIRN_REQUIRE_MOUNT is set"
        );
        eprintln!("cannot mount tmpfs (not root?); skipping");
        return None;
    }
    Some(Mount(dir.to_path_buf()))
}

#[test]
fn disk_full_fails_appends_keeps_acknowledged_records_and_recovers() {
    let d = tempfile::tempdir().unwrap();
    let mnt = d.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let Some(_m) = mount_tmpfs(&mnt, "4m") else {
        return;
    };
    // Space to give back later.
    let filler = mnt.join("filler");
    std::fs::write(&filler, vec![0u8; 1 << 20]).unwrap();
    let jdir = mnt.join("journal");
    let payload = |i: u32| {
        let mut p = i.to_le_bytes().to_vec();
        p.resize(16 << 10, (i % 251) as u8);
        p
    };
    let mut acked = 0u32;
    {
        let j = Journal::open(
            &jdir,
            JournalOptions {
                segment_bytes: 1 << 20,
                ..Default::default()
            },
        )
        .unwrap();
        let err = loop {
            match j.append(&payload(acked)) {
                Ok(seq) => {
                    assert_eq!(seq, acked as u64);
                    acked += 1;
                }
                Err(e) => break e,
            }
            assert!(acked < 10_000, "the disk never filled");
        };
        match &err {
            JournalError::Io(e) => assert_eq!(e.raw_os_error(), Some(libc_enospc()), "{e}"),
            other => panic!("expected an I/O error, got {other}"),
        }
        assert!(acked > 10);
        // Still full: still refused, never silently accepted.
        assert!(j.append(&payload(acked)).is_err());
        // Space returns: the journal works again without a restart.
        std::fs::remove_file(&filler).unwrap();
        assert_eq!(j.append(&payload(acked)).unwrap(), acked as u64);
        acked += 1;
    }
    let j = Journal::open(&jdir, JournalOptions::default()).unwrap();
    let mut r = j.reader(0).unwrap();
    let mut n = 0u32;
    while let Some((seq, p)) = r.next_record().unwrap() {
        assert_eq!(seq, n as u64);
        assert_eq!(p, payload(n), "record {n} changed");
        n += 1;
    }
    assert_eq!(
        n, acked,
        "every acknowledged record, and only those, survive"
    );
}

fn libc_enospc() -> i32 {
    28
}
