//! Prometheus metrics, served at `/_cairn/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

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
        Metrics {
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

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut s, &self.registry);
        s
    }
}
