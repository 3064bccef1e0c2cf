//! The disk reserve: free space cairn keeps for what must never fail for want of room.
//!
//! Requests that would grow the data (PUTs, uploads, copies, new trails, channels' audit
//! events: the mutating operations [`held`] names) are refused with a retryable 503
//! (`SlowDown` in S3, `ServiceUnavailable` elsewhere) once a watched filesystem's free space,
//! less the request's declared body, would fall below the reserve; streamed bodies are checked
//! again as they are written ([`DiskReserve::room`]). What is not held has the reserve:
//! reads, deletes, lifecycle expirations, delivery of journaled events, and the journal
//! records of every request (refused ones included).
//!
//! Free space is read with `statvfs` on every check (a syscall of a few microseconds).
//! Reaching the reserve and leaving it are each logged once.

use crate::protocol::{ApiError, Protocol};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// How large the reserve is, per watched filesystem.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reserve {
    /// The larger of 1% of the filesystem and 512 MiB (the default).
    Default,
    /// A fixed number of bytes (0 turns the reserve off).
    Bytes(u64),
    /// A share of the filesystem's size, in percent.
    Percent(f64),
}

impl Reserve {
    /// `"512MiB"`, `"2GiB"`, `"1048576"`, `"1%"`, or `"default"`.
    pub fn parse(s: &str) -> Result<Reserve, String> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("default") {
            return Ok(Reserve::Default);
        }
        if let Some(p) = t.strip_suffix('%') {
            let v: f64 = p
                .trim()
                .parse()
                .map_err(|_| format!("disk reserve {s:?}: not a percentage"))?;
            if !(0.0..=50.0).contains(&v) {
                return Err(format!("disk reserve {s:?}: between 0% and 50%"));
            }
            return Ok(Reserve::Percent(v));
        }
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (n, unit) = t.split_at(split);
        let n: u64 = n.parse().map_err(|_| {
            format!("disk reserve {s:?}: expected bytes like 512MiB or a percentage like 1%")
        })?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" | "K" | "KB" => 1 << 10,
            "MiB" | "M" | "MB" => 1 << 20,
            "GiB" | "G" | "GB" => 1 << 30,
            "TiB" | "T" | "TB" => 1 << 40,
            u => return Err(format!("disk reserve {s:?}: unknown unit {u:?}")),
        };
        n.checked_mul(mult)
            .map(Reserve::Bytes)
            .ok_or_else(|| format!("disk reserve {s:?}: too large"))
    }

    /// The reserve in bytes on a filesystem of `total` bytes.
    pub fn bytes(&self, total: u64) -> u64 {
        match *self {
            Reserve::Default => (total / 100).max(512 << 20),
            Reserve::Bytes(b) => b,
            Reserve::Percent(p) => (total as f64 * p / 100.0) as u64,
        }
    }
}

/// One filesystem's free space as last read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Bytes an unprivileged writer may still use.
    pub free: u64,
    pub reserve: u64,
}

/// The watched paths and what was last seen of them.
pub struct DiskReserve {
    paths: Vec<PathBuf>,
    reserve: std::sync::RwLock<Reserve>,
    below: AtomicBool,
    refused: AtomicU64,
}

/// How far above the reserve free space must come back before writes resume once it was
/// reached: a quarter of the reserve, at most 64 MiB.
pub fn margin(reserve: u64) -> u64 {
    (reserve / 4).min(64 << 20)
}

/// A request refused for want of space (the path and figures go to the log, not to clients).
#[derive(Debug, Clone, Copy)]
pub struct Shortfall;

impl Shortfall {
    /// The retryable answer: S3's `SlowDown`, elsewhere `ServiceUnavailable`; 503 either way.
    pub fn error(&self, protocol: Protocol) -> ApiError {
        let why =
            "cairn's data volume is at its free-space reserve; writes resume once space is freed";
        match protocol {
            Protocol::S3 => ApiError::new(
                "SlowDown",
                503,
                format!("Please reduce your request rate. {why}"),
            ),
            _ => ApiError::new("ServiceUnavailable", 503, why),
        }
    }
}

impl DiskReserve {
    pub fn new(paths: Vec<PathBuf>, reserve: Reserve) -> DiskReserve {
        // One path per filesystem: every check reads each once (the data directory, journal
        // and staging usually share one).
        let mut seen = std::collections::HashSet::new();
        let paths = paths
            .into_iter()
            .filter(|p| {
                use std::os::unix::fs::MetadataExt;
                std::fs::metadata(p).map_or(true, |m| seen.insert(m.dev()))
            })
            .collect();
        DiskReserve {
            paths,
            reserve: std::sync::RwLock::new(reserve),
            below: AtomicBool::new(false),
            refused: AtomicU64::new(0),
        }
    }

    /// Watches nothing (tests that do not exercise it).
    pub fn off() -> DiskReserve {
        DiskReserve::new(Vec::new(), Reserve::Bytes(0))
    }

    fn read(path: &Path, reserve: Reserve) -> Option<Sample> {
        let st = rustix::fs::statvfs(path).ok()?;
        let unit = st.f_frsize.max(1);
        let total = st.f_blocks.saturating_mul(unit);
        Some(Sample {
            free: st.f_bavail.saturating_mul(unit),
            reserve: reserve.bytes(total),
        })
    }

    /// Changes the reserve (tests arm and disarm it).
    pub fn set_reserve(&self, r: Reserve) {
        *self.reserve.write().unwrap_or_else(|p| p.into_inner()) = r;
    }

    /// Reads every watched filesystem; the tightest one (least room above its reserve).
    pub fn sample(&self) -> Option<(&Path, Sample)> {
        let reserve = *self.reserve.read().unwrap_or_else(|p| p.into_inner());
        if reserve == Reserve::Bytes(0) && !self.below.load(Ordering::Relaxed) {
            // Off: requests need not read anything.
            return None;
        }
        self.read_all(reserve)
    }

    fn read_all(&self, reserve: Reserve) -> Option<(&Path, Sample)> {
        let mut worst: Option<(&Path, Sample)> = None;
        for p in &self.paths {
            let Some(s) = Self::read(p, reserve) else {
                continue;
            };
            let room = s.free as i128 - s.reserve as i128;
            if worst
                .as_ref()
                .is_none_or(|(_, w)| room < w.free as i128 - w.reserve as i128)
            {
                worst = Some((p.as_path(), s));
            }
        }
        worst
    }

    /// Admits a request that would grow the data by about `incoming` bytes (as declared: a
    /// client's number, so it only ever decides that one request), or says why not.
    ///
    /// A refusal with the volume within [`margin`] of its reserve reaches the reserve: from
    /// then on every request that would grow the data is refused, whatever its size, until
    /// the free space is the margin above the reserve again (a client sees one clear state,
    /// not small writes slipping through between refused large ones). A large request
    /// refused on a volume with room to spare changes nothing for the others.
    pub fn admit(&self, incoming: u64) -> Result<(), Shortfall> {
        let Some((path, s)) = self.sample() else {
            return Ok(());
        };
        self.maybe_leave(path, s);
        if s.reserve == 0 {
            return Ok(());
        }
        let below = self.below.load(Ordering::Relaxed);
        if !below && s.free.saturating_sub(incoming) >= s.reserve {
            return Ok(());
        }
        self.refused.fetch_add(1, Ordering::Relaxed);
        if s.free < s.reserve.saturating_add(margin(s.reserve)) {
            self.enter(path, s);
        }
        Err(Shortfall)
    }

    /// For a write under way (a streamed body, a copy): whether the volume is still above its
    /// reserve. A body whose size was not declared, or was understated, or many admitted at
    /// once, stop here rather than eat the reserve.
    pub fn room(&self) -> Result<(), Shortfall> {
        let Some((path, s)) = self.sample() else {
            return Ok(());
        };
        if s.reserve == 0 || s.free >= s.reserve {
            return Ok(());
        }
        self.refused.fetch_add(1, Ordering::Relaxed);
        self.enter(path, s);
        Err(Shortfall)
    }

    fn enter(&self, path: &Path, s: Sample) {
        if !self.below.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                path = %path.display(),
                free_mib = s.free >> 20,
                reserve_mib = s.reserve >> 20,
                "disk reserve reached: requests that would grow the data are refused with 503 until space is freed"
            );
        }
    }

    /// Leaves the reserve once the free space is the margin above it.
    fn maybe_leave(&self, path: &Path, s: Sample) {
        if !self.below.load(Ordering::Relaxed) {
            return;
        }
        if (s.reserve == 0 || s.free >= s.reserve.saturating_add(margin(s.reserve)))
            && self.below.swap(false, Ordering::Relaxed)
        {
            // At the level of the warning it ends, so whoever saw one sees the other.
            tracing::warn!(
                path = %path.display(),
                free_mib = s.free >> 20,
                reserve_mib = s.reserve >> 20,
                "disk reserve left: writes are accepted again"
            );
        }
    }

    /// Reads the filesystems again (the metrics endpoint) and notes a reserve left.
    pub fn refresh(&self) -> Option<Sample> {
        let reserve = *self.reserve.read().unwrap_or_else(|p| p.into_inner());
        let (path, s) = self.read_all(reserve)?;
        self.maybe_leave(path, s);
        Some(s)
    }

    /// Whether the reserve was reached at the last reading.
    pub fn reached(&self) -> bool {
        self.below.load(Ordering::Relaxed)
    }

    /// Requests refused for want of space since start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

/// Whether a mutating operation of `service` (its signing name) is held to the reserve.
/// Not held: what frees space or holds it level (deletes, aborts, removals, stops — a delete
/// on a versioned bucket adds a marker of a few hundred bytes), what is needed to free it
/// (AssumeRole: role users need sessions to delete; lifecycle and retention rules; the
/// flush, which delivers), and DynamoDB, whose writes land in the upstream's storage (their
/// records grow the journal no more than reads do).
pub fn held(service: &str, name: &str) -> bool {
    const FREEING: &[&str] = &[
        "Delete",
        "Remove",
        "Untag",
        "Detach",
        "Abort",
        "Stop",
        "Disable",
        "Deactivate",
        "Cancel",
        "ScheduleKeyDeletion",
        "Revoke",
        "Retire",
    ];
    const NEEDED_TO_FREE: &[&str] = &[
        "AssumeRole",
        "CairnFlushTrail",
        "PutBucketLifecycle",
        "PutBucketLifecycleConfiguration",
        "PutRetentionPolicy",
    ];
    service != "dynamodb"
        && !FREEING.iter().any(|p| name.starts_with(p))
        && !NEEDED_TO_FREE.contains(&name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserves_parse_and_scale() {
        assert_eq!(Reserve::parse("512MiB").unwrap(), Reserve::Bytes(512 << 20));
        assert_eq!(Reserve::parse("0").unwrap(), Reserve::Bytes(0));
        assert_eq!(Reserve::parse(" 2 GiB").unwrap(), Reserve::Bytes(2 << 30));
        assert_eq!(Reserve::parse("1%").unwrap(), Reserve::Percent(1.0));
        assert_eq!(Reserve::parse("default").unwrap(), Reserve::Default);
        for bad in [
            "",
            "MiB",
            "12 parsecs",
            "-1",
            "80%",
            "x%",
            "99999999999999999999GiB",
        ] {
            assert!(Reserve::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Reserve::Default.bytes(10 << 30), 512 << 20);
        assert_eq!(Reserve::Default.bytes(1000 << 30), 10 << 30);
        assert_eq!(Reserve::Percent(2.0).bytes(100 << 20), 2 << 20);
    }

    #[test]
    fn a_request_that_would_cross_the_reserve_is_refused_with_a_503() {
        let dir = tempfile::tempdir().unwrap();
        let free = DiskReserve::new(vec![dir.path().into()], Reserve::Bytes(0))
            .refresh()
            .unwrap()
            .free;
        assert!(free > 1 << 30, "the test needs 1 GiB free");
        // One reading per filesystem.
        let twice = vec![dir.path().to_path_buf(), dir.path().join(".")];
        assert_eq!(DiskReserve::new(twice, Reserve::Default).paths.len(), 1);
        const MIB: u64 = 1 << 20;
        // 256 MiB above the reserve: small requests fit; a 1 GiB one is refused alone, and
        // the volume is not at its reserve (it has room for others).
        let d = DiskReserve::new(vec![dir.path().into()], Reserve::Bytes(free - 256 * MIB));
        assert!(d.admit(0).is_ok());
        let s = d.admit(1 << 30).unwrap_err();
        assert!(!d.reached());
        assert!(d.admit(MIB).is_ok());
        assert_eq!(s.error(Protocol::S3).code, "SlowDown");
        assert_eq!(s.error(Protocol::S3).status, 503);
        assert_eq!(s.error(Protocol::Json).code, "ServiceUnavailable");
        let m = s.error(Protocol::Json).message;
        assert!(m.contains("reserve") && !m.contains(&dir.path().display().to_string()));
        // Within the margin (64 MiB) of the reserve, a refusal reaches it: then every growing
        // request is refused, however small, until free space is the margin above it again.
        d.set_reserve(Reserve::Bytes(free - 16 * MIB));
        assert!(d.admit(32 * MIB).is_err());
        assert!(d.reached());
        assert!(d.admit(0).is_err());
        assert!(
            d.room().is_ok(),
            "writes under way go on while above the reserve"
        );
        d.set_reserve(Reserve::Bytes(free - 256 * MIB));
        assert!(d.admit(0).is_ok());
        assert!(!d.reached());
        // A huge declared size decides nothing beyond its own request.
        assert!(d.admit(u64::MAX).is_err());
        assert!(!d.reached() && d.admit(0).is_ok());
        // Below the reserve: everything that grows the data is refused, writes under way too.
        let full = DiskReserve::new(vec![dir.path().into()], Reserve::Bytes(u64::MAX / 2));
        assert!(full.admit(0).is_err());
        assert!(full.reached());
        assert!(full.room().is_err());
        assert_eq!(full.refused(), 2);
        // Nothing watched: nothing refused.
        assert!(DiskReserve::off().admit(u64::MAX).is_ok());
        assert_eq!(margin(512 * MIB), 64 * MIB);
        assert_eq!(margin(24 * MIB), 6 * MIB);
    }

    #[test]
    fn what_is_held_to_the_reserve() {
        for (svc, n) in [
            ("s3", "DeleteObject"),
            ("s3", "DeleteObjects"),
            ("s3", "AbortMultipartUpload"),
            ("s3", "PutBucketLifecycleConfiguration"),
            ("cloudtrail", "StopLogging"),
            ("cloudtrail", "CairnFlushTrail"),
            ("sts", "AssumeRole"),
            ("logs", "PutRetentionPolicy"),
            ("dynamodb", "PutItem"),
        ] {
            assert!(!held(svc, n), "{svc}:{n}");
        }
        for (svc, n) in [
            ("s3", "PutObject"),
            ("s3", "UploadPart"),
            ("s3", "CopyObject"),
            // It copies the parts into the object before they are deleted.
            ("s3", "CompleteMultipartUpload"),
            ("cloudtrail", "CreateTrail"),
            ("cloudtrail-data", "PutAuditEvents"),
            ("logs", "PutLogEvents"),
            ("iam", "CreateUser"),
        ] {
            assert!(held(svc, n), "{svc}:{n}");
        }
        assert!(cairn_store::no_space_text(
            "storage I/O error: No space left on device (os error 28)"
        ));
        assert!(!cairn_store::no_space_text(
            "storage I/O error: Permission denied (os error 13)"
        ));
    }
}
