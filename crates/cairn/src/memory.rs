//! One memory budget (`memory_limit`, default 512 MiB) split by fixed shares among every cache
//! and buffer whose size cairn chooses. Each share is applied where that memory lives:
//!
//! | share            | %  | holds                                                        |
//! |------------------|----|--------------------------------------------------------------|
//! | `request_bodies` | 20 | request bodies buffered at once, all connections             |
//! | `delivery`       | 24 | trail delivery: the open epoch's records (half the share) and the one being compressed (the other half); finished files' buffers are kept for the next epochs only within the share |
//! | `journal_queue`  |  8 | journal appends queued and not yet durable (back-pressure)   |
//! | `history_cache`  | 10 | page cache of the LookupEvents index (`api/history.redb`)    |
//! | `history_batch`  |  4 | records one indexing step takes (its write transaction)      |
//! | `store_cache`    |  8 | page cache of the object store's metadata (`store/meta.redb`) |
//! | `logs_cache`     |  4 | page cache of CloudWatch Logs (`api/logs.redb`)              |
//! | `iam_cache`      |  2 | page cache of the identity directory (`iam.redb`)            |
//! | `trail_cache`    |  2 | page cache of the trail engine's state (`trail/trail.redb`)  |
//! | `meta_cache`     |  1 | page cache of control metadata (`api/meta.redb`)             |
//! | `kms_cache`      |  1 | page cache of KMS keys (`kms.redb`)                          |
//! | `connections`    | 16 | connection buffers: `max_connections` is the share / 64 KiB  |
//!
//! Outside the budget ([`FIXED_OVERHEAD`], 128 MiB; ~80 MiB measured idle):
//! the binary and its thread stacks (at most [`BLOCKING_THREADS`] blocking threads), the
//! tokio runtime, allocator slack (freed pages go back at once: `main` sets mimalloc's
//! purge delay to 0), and what grows with configuration rather than load (the identity
//! directory, KMS keys, trail configurations are held in memory whole).

use anyhow::{bail, Result};
use cairn_api::MemoryReport;

pub const DEFAULT_LIMIT: u64 = 512 << 20;
/// What the process holds outside the budget (code, thread stacks, the runtime, allocator
/// slack): RSS stays under the limit plus this. Measured: ~80 MiB idle.
pub const FIXED_OVERHEAD: u64 = 128 << 20;
/// Threads for blocking work (store reads and writes, their syncs, index queries). Each one
/// keeps a stack and its own allocator pages, so their number is part of the fixed overhead:
/// tokio's default (512) let a soak hold ~90 of them.
pub const BLOCKING_THREADS: usize = 64;
/// Below this the shares are too small for one request of the largest size.
pub const MIN_LIMIT: u64 = 128 << 20;
/// Buffer memory one connection is counted for: hyper's read buffer is capped at 64 KiB
/// (`MAX_HEADER_BYTES`); bodies and answers are held by the other shares.
pub const PER_CONNECTION: u64 = 64 << 10;

pub const SHARES: &[(&str, u64)] = &[
    ("request_bodies", 20),
    ("delivery", 24),
    ("journal_queue", 8),
    ("history_cache", 10),
    ("history_batch", 4),
    ("store_cache", 8),
    ("logs_cache", 4),
    ("iam_cache", 2),
    ("trail_cache", 2),
    ("meta_cache", 1),
    ("kms_cache", 1),
    ("connections", 16),
];

/// The redb file each cache share sizes.
const CACHES: &[(&str, &str)] = &[
    ("history_cache", "history.redb"),
    ("store_cache", "store/meta.redb"),
    ("meta_cache", "api/meta.redb"),
    ("logs_cache", "logs.redb"),
    ("iam_cache", "iam.redb"),
    ("trail_cache", "trail.redb"),
    ("kms_cache", "kms.redb"),
];

#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub limit: u64,
}

impl Budget {
    /// `"512MiB"`, `"1GiB"`, a number of bytes; at least [`MIN_LIMIT`].
    pub fn parse(s: &str) -> Result<Budget> {
        let limit = match cairn_api::disk::Reserve::parse(s) {
            Ok(cairn_api::disk::Reserve::Bytes(b)) => b,
            _ => bail!("memory_limit {s:?}: expected a size like 512MiB or 2GiB"),
        };
        if limit < MIN_LIMIT {
            bail!("memory_limit {s:?}: at least 128MiB");
        }
        Ok(Budget { limit })
    }

    pub fn share(&self, name: &str) -> u64 {
        let pct = SHARES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, p)| *p)
            .unwrap_or(0);
        self.limit / 100 * pct
    }

    /// Sets the page cache of every database the server opens from now on.
    pub fn apply_caches(&self) {
        for (share, file) in CACHES {
            cairn_db::set_cache_size(file, self.share(share) as usize);
        }
    }

    /// The split as `/_cairn/metrics` reports it, with the shares a setting overrode
    /// (`applied`: name → bytes).
    pub fn report_effective(&self, applied: &[(&str, u64)]) -> MemoryReport {
        MemoryReport {
            limit: self.limit,
            shares: SHARES
                .iter()
                .map(|(n, _)| {
                    // A page cache is reported as `cairn_db` will apply it.
                    let cache = CACHES
                        .iter()
                        .find(|(c, _)| c == n)
                        .map(|(_, file)| cairn_db::cache_size(std::path::Path::new(file)) as u64);
                    let v = applied
                        .iter()
                        .find(|(a, _)| a == n)
                        .map(|(_, v)| *v)
                        .or(cache)
                        .unwrap_or_else(|| self.share(n));
                    (n.to_string(), v)
                })
                .collect(),
        }
    }
}

static CURRENT: std::sync::OnceLock<Budget> = std::sync::OnceLock::new();

/// Makes `b` the process's budget (the server sets it once, before opening anything).
pub fn set(b: Budget) {
    let _ = CURRENT.set(b);
    b.apply_caches();
}

/// The process's budget: the one [`set`], or the default.
pub fn current() -> Budget {
    CURRENT.get().copied().unwrap_or(Budget {
        limit: DEFAULT_LIMIT,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_and_parse() {
        assert_eq!(SHARES.iter().map(|(_, p)| p).sum::<u64>(), 100);
        let b = Budget::parse("512MiB").unwrap();
        assert_eq!(b.limit, 512 << 20);
        assert!(b.share("delivery") > 100 << 20);
        assert!(Budget::parse("64MiB").is_err());
        assert!(Budget::parse("10%").is_err());
        assert!(Budget::parse("lots").is_err());
        let r = b.report_effective(&[("connections", 7)]);
        assert!(r.shares.contains(&("connections".to_string(), 7)));
        assert_eq!(r.shares.len(), SHARES.len());
        assert!(r.shares.iter().map(|(_, v)| v).sum::<u64>() <= b.limit);
    }
}
