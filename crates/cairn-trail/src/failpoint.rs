//! Named crash points for crash tests (trust-and-testing §3.4 C2).
//!
//! `CAIRN_FAILPOINTS="after-intent=0.05,after-log-put=0.05"` makes the process abort (no
//! cleanup, like SIGKILL) at a named point with the given probability. Unset, a point costs
//! one relaxed load.

use std::sync::OnceLock;

fn points() -> &'static Vec<(String, f64)> {
    static P: OnceLock<Vec<(String, f64)>> = OnceLock::new();
    P.get_or_init(|| {
        std::env::var("CAIRN_FAILPOINTS")
            .unwrap_or_default()
            .split(',')
            .filter_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                Some((k.trim().to_string(), v.trim().parse().ok()?))
            })
            .collect()
    })
}

/// Aborts the process at `name` with the configured probability.
pub fn crash_point(name: &str) {
    let p = points();
    if p.is_empty() {
        return;
    }
    if let Some((_, prob)) = p.iter().find(|(k, _)| k == name) {
        if rand::random::<f64>() < *prob {
            eprintln!("failpoint {name}: aborting");
            std::process::abort();
        }
    }
}
