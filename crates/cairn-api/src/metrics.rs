//! Prometheus metrics, served at `/_cairn/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShareLabels {
    pub share: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub operation: String,
    pub status: u16,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Histogram,
    pub events_recorded: Counter,
    pub events_refused: Counter,
    pub journal_next_seq: Gauge<i64, std::sync::atomic::AtomicI64>,
    pub delivery_position: Gauge<i64, std::sync::atomic::AtomicI64>,
    pub history_position: Gauge<i64, std::sync::atomic::AtomicI64>,
    pub disk_free: Gauge<i64, std::sync::atomic::AtomicI64>,
    pub disk_reserve: Gauge<i64, std::sync::atomic::AtomicI64>,
    pub disk_reserve_reached: Gauge<i64, std::sync::atomic::AtomicI64>,
    pub disk_refused: Gauge<i64, std::sync::atomic::AtomicI64>,
    pub memory_limit: Gauge<i64, std::sync::atomic::AtomicI64>,
    pub memory_share: Family<ShareLabels, Gauge<i64, std::sync::atomic::AtomicI64>>,
    pub memory_used: Family<ShareLabels, Gauge<i64, std::sync::atomic::AtomicI64>>,
    pub resident: Gauge<i64, std::sync::atomic::AtomicI64>,
    pub open_fds: Gauge<i64, std::sync::atomic::AtomicI64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("cairn");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests handled, by operation and HTTP status",
            requests.clone(),
        );
        let latency = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        registry.register(
            "request_duration_seconds",
            "Time from request parsed to response ready, including the durable journal append",
            latency.clone(),
        );
        let events_recorded = Counter::default();
        registry.register(
            "events_recorded",
            "Request events made durable in the journal",
            events_recorded.clone(),
        );
        let events_refused = Counter::default();
        registry.register(
            "events_refused",
            "Request events the journal refused (the request failed closed)",
            events_refused.clone(),
        );
        let journal_next_seq = Gauge::default();
        registry.register(
            "journal_next_sequence",
            "Sequence number the next journal record gets",
            journal_next_seq.clone(),
        );
        let delivery_position = Gauge::default();
        registry.register(
            "delivery_position",
            "Journal position trail delivery has consumed",
            delivery_position.clone(),
        );
        let history_position = Gauge::default();
        registry.register(
            "history_position",
            "Journal position the LookupEvents index has consumed",
            history_position.clone(),
        );
        let disk_free = Gauge::default();
        registry.register(
            "disk_free_bytes",
            "Free bytes on the tightest watched filesystem (data directory, journal, multipart staging)",
            disk_free.clone(),
        );
        let disk_reserve = Gauge::default();
        registry.register(
            "disk_reserve_bytes",
            "Free space kept back on that filesystem; below it, requests that would grow the data get 503",
            disk_reserve.clone(),
        );
        let disk_reserve_reached = Gauge::default();
        registry.register(
            "disk_reserve_reached",
            "1 while free space is below the reserve",
            disk_reserve_reached.clone(),
        );
        let disk_refused = Gauge::default();
        registry.register(
            "disk_refused_requests",
            "Requests refused with 503 for want of disk space since start",
            disk_refused.clone(),
        );
        let memory_limit = Gauge::default();
        registry.register(
            "memory_limit_bytes",
            "The memory budget (memory_limit) the server splits among its caches and buffers",
            memory_limit.clone(),
        );
        let memory_share =
            Family::<ShareLabels, Gauge<i64, std::sync::atomic::AtomicI64>>::default();
        registry.register(
            "memory_share_bytes",
            "Bytes of the memory budget given to each share",
            memory_share.clone(),
        );
        let memory_used =
            Family::<ShareLabels, Gauge<i64, std::sync::atomic::AtomicI64>>::default();
        registry.register(
            "memory_used_bytes",
            "Bytes a share holds now, for the shares cairn counts itself (redb page caches are bounded by their share but not counted)",
            memory_used.clone(),
        );
        let resident = Gauge::default();
        registry.register(
            "process_resident_memory_bytes",
            "Resident set size of the server process",
            resident.clone(),
        );
        let open_fds = Gauge::default();
        registry.register(
            "process_open_fds",
            "File descriptors the server process holds open",
            open_fds.clone(),
        );
        Metrics {
            memory_limit,
            memory_share,
            memory_used,
            resident,
            open_fds,
            disk_free,
            disk_reserve,
            disk_reserve_reached,
            disk_refused,
            registry,
            requests,
            latency,
            events_recorded,
            events_refused,
            journal_next_seq,
            delivery_position,
            history_position,
        }
    }

    pub fn observe(&self, operation: &str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                operation: operation.to_string(),
                status,
            })
            .inc();
        self.latency.observe(seconds);
    }

    /// Sets a share's current use.
    pub fn set_used(&self, share: &str, bytes: usize) {
        self.memory_used
            .get_or_create(&ShareLabels {
                share: share.to_string(),
            })
            .set(bytes.min(i64::MAX as usize) as i64);
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut s, &self.registry);
        s
    }
}

/// The process's resident bytes and open file descriptors (Linux `/proc`; zeros elsewhere).
pub fn process_usage() -> (u64, usize) {
    let (rss, fds) = process_usage_of("self");
    // Less the descriptor of the listing itself.
    (rss, fds.saturating_sub(1))
}

/// Resident bytes and open file descriptors of `/proc/<proc>` (`self` or a pid).
pub fn process_usage_of(proc: &str) -> (u64, usize) {
    let page = rustix::param::page_size() as u64;
    let rss = std::fs::read_to_string(format!("/proc/{proc}/statm"))
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map(|pages| pages * page)
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{proc}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    (rss, fds)
}
