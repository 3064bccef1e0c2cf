//! `cairn bench dynamodb`: GetItem and PutItem of 1 KiB items with N concurrent keep-alive
//! clients, through cairn (authenticated, authorized, recorded as data events a trail
//! selects, forwarded) and against the same upstream directly, interleaved in one run
//! (dynalite from npm, or `--dynalite PATH`); `--no-data-events` measures the same calls
//! with no trail selecting them. Reports each phase's rate and
//! p99, the throughput ratio cairn/direct and the p99 cairn adds.
//!
//! A third target in the same rounds is a plain TCP relay in a process of its own
//! (`cairn bench relay`: bytes copied both ways, no HTTP, no authentication, no journal) in
//! front of the same upstream: what one more hop costs on this machine, the ceiling of any
//! proxy's ratio here.

use crate::bench_s3::{free_port, wait_port, which, Procs};
use anyhow::{Context, Result};
use clap::Args;
use serde_json::json;
use std::path::PathBuf;
use std::process::{Command, Stdio};

#[derive(Args, Debug)]
pub struct DdbBenchArgs {
    /// Concurrent keep-alive clients.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Seconds per phase.
    #[arg(long, default_value_t = 8.0)]
    pub seconds: f64,
    /// Rounds of interleaved phases (direct, cairn, …); each phase's best round is reported.
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
    /// Item size in bytes.
    #[arg(long, default_value_t = 1024)]
    pub item_bytes: usize,
    /// `dynalite` executable (default: from PATH or /var/tmp/cairn-npm).
    #[arg(long)]
    pub dynalite: Option<PathBuf>,
    /// Load-generator threads.
    #[arg(long, default_value_t = 1)]
    pub client_threads: usize,
    /// The trail selects no DynamoDB data events (management events only): the item calls
    /// are still authenticated, authorized and journaled, but no trail delivers them.
    #[arg(long)]
    pub no_data_events: bool,
    #[arg(long)]
    pub json: bool,
}

struct Phase {
    requests: usize,
    errors: usize,
    seconds: f64,
    latencies_us: Vec<u32>,
    /// CPU µs per answered request of cairn, the upstream, the load generator and the relay.
    cpu_us: [f64; 4],
}

impl Phase {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.seconds
    }
    fn pct_ms(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let i = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        self.latencies_us[i] as f64 / 1000.0
    }
}

#[derive(Clone)]
struct Target {
    addr: String,
    key: String,
    secret: String,
}

fn call(t: &Target, op: &str, body: &serde_json::Value, keep_alive: bool) -> Vec<u8> {
    crate::client::signed_post(
        &t.addr,
        (&t.key, &t.secret, None),
        "us-east-1",
        "dynamodb",
        &[
            ("x-amz-target", &format!("DynamoDB_20120810.{op}")),
            ("content-type", "application/x-amz-json-1.0"),
        ],
        body.to_string().as_bytes(),
        keep_alive,
    )
}

/// One call on a fresh connection, the connection kept open until the answer is read
/// (Node's server does not answer a half-closed connection); returns the status and body.
fn once_body(addr: &str, raw: &[u8]) -> Result<(u16, Vec<u8>)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.write_all(raw)?;
    let mut out = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = s.read(&mut chunk)?;
        anyhow::ensure!(n > 0, "connection closed before the answer");
        out.extend_from_slice(&chunk[..n]);
        if let Some(end) = out.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&out[..end]).to_string();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.split_once(':')
                        .filter(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                        .and_then(|(_, v)| v.trim().parse().ok())
                })
                .unwrap_or(0);
            if out.len() >= end + 4 + len {
                let status = head
                    .split_whitespace()
                    .nth(1)
                    .and_then(|x| x.parse().ok())
                    .context("no status")?;
                return Ok((status, out[end + 4..end + 4 + len].to_vec()));
            }
        }
    }
}

fn item(c: usize, size: usize) -> serde_json::Value {
    json!({"pk": {"S": format!("bench-{c}")}, "data": {"S": "x".repeat(size.saturating_sub(20))}})
}

async fn drive(
    t: Target,
    clients: usize,
    seconds: f64,
    op: &'static str,
    size: usize,
) -> Result<Phase> {
    let reqs = (0..clients)
        .map(|c| {
            let body = if op == "PutItem" {
                json!({"TableName": "bench", "Item": item(c, size)})
            } else {
                json!({"TableName": "bench", "Key": {"pk": {"S": format!("bench-{c}")}}})
            };
            call(&t, op, &body, true)
        })
        .collect();
    let l = crate::bench_s3::closed_loop(&t.addr, reqs, seconds).await?;
    Ok(Phase {
        requests: l.latencies_us.len(),
        errors: l.errors,
        seconds: l.seconds,
        latencies_us: l.latencies_us,
        cpu_us: [0.0; 4],
    })
}

pub fn dynamodb(a: DdbBenchArgs) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let exe = std::env::current_exe()?;
    let mut procs = Procs(Vec::new());
    let bar = indicatif::ProgressBar::new_spinner();
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    let dynalite = a
        .dynalite
        .clone()
        .or_else(|| which("dynalite"))
        .or_else(|| {
            let p = PathBuf::from("/var/tmp/cairn-npm/node_modules/.bin/dynalite");
            p.is_file().then_some(p)
        })
        .context("dynalite not found (npm install dynalite, or --dynalite PATH)")?;
    let up = procs.start("dynalite", &bar, |port| {
        let mut c = Command::new(&dynalite);
        c.args([
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--createTableMs",
            "0",
        ]);
        c
    })?;

    let relay_addr = procs.start("relay", &bar, |port| {
        let mut c = Command::new(&exe);
        c.args(["bench", "relay", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["--to", &up]);
        c
    })?;
    let relay_pid = procs
        .0
        .last()
        .map(|c| c.id().to_string())
        .unwrap_or_default();

    bar.set_message("starting cairn serve");
    let dir = tmp.path().join("cairn");
    let (key, secret) = crate::bench_api::init_data_dir(&exe, &dir)?;
    let addr = format!("127.0.0.1:{}", free_port()?);
    let resources = if a.no_data_events {
        ""
    } else {
        r#","DataResources":[{"Type":"AWS::DynamoDB::Table","Values":["arn:aws:dynamodb"]}]"#
    };
    let config = format!(
        "[[bucket]]\nname = \"bench-logs\"\n[[trail]]\nname = \"bench-trail\"\nbucket = \"bench-logs\"\nevent_selectors = '[{{\"ReadWriteType\":\"All\",\"IncludeManagementEvents\":true{resources}}}]'\n"
    );
    std::fs::write(tmp.path().join("cairn.toml"), config)?;
    let mut server = Command::new(&exe)
        .args(["serve", "--listen", &addr, "--delivery-interval", "5s"])
        .arg("--config")
        .arg(tmp.path().join("cairn.toml"))
        .arg("--data-dir")
        .arg(&dir)
        .args(["--dynamodb-upstream", &format!("http://{up}")])
        .env("CAIRN_DYNAMODB_ACCESS_KEY_ID", "bench")
        .env("CAIRN_DYNAMODB_SECRET_ACCESS_KEY", "bench-secret")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    wait_port(&addr, &mut server)?;
    // CPU seconds so far of cairn, the upstream (node runs the dynalite script itself), this
    // process and the relay, to charge each phase its CPU per answered request.
    let pids = [
        server.id().to_string(),
        procs.0[0].id().to_string(),
        "self".to_string(),
        relay_pid,
    ];
    let cpu_now = || pids.each_ref().map(|p| crate::bench_soak::cpu_seconds(p));
    procs.0.push(server);

    let direct = Target {
        addr: up.clone(),
        key: "bench".into(),
        secret: "bench-secret".into(),
    };
    let cairn = Target {
        addr: addr.clone(),
        key,
        secret,
    };
    // Signed for the upstream: the relay passes the bytes on unread.
    let relay = Target {
        addr: relay_addr,
        ..direct.clone()
    };
    // The table and every client's item, made directly.
    let create = json!({"TableName": "bench", "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}]});
    let (st, body) = once_body(&up, &call(&direct, "CreateTable", &create, true))?;
    anyhow::ensure!(st == 200, "CreateTable: {}", String::from_utf8_lossy(&body));
    std::thread::sleep(std::time::Duration::from_millis(200));
    for c in 0..a.clients {
        let put = json!({"TableName": "bench", "Item": item(c, a.item_bytes)});
        let (st, body) = once_body(&up, &call(&direct, "PutItem", &put, true))?;
        anyhow::ensure!(st == 200, "PutItem: {}", String::from_utf8_lossy(&body));
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(a.client_threads)
        .enable_all()
        .build()?;
    // Warm-up through cairn (connections, the key schema).
    rt.block_on(drive(
        cairn.clone(),
        a.clients,
        1.0,
        "GetItem",
        a.item_bytes,
    ))?;
    let mut best: std::collections::BTreeMap<(&str, &str), Phase> = Default::default();
    for round in 0..a.rounds.max(1) {
        for op in ["PutItem", "GetItem"] {
            for (label, t) in [("direct", &direct), ("relay", &relay), ("cairn", &cairn)] {
                bar.set_message(format!("round {}: {label} {op}", round + 1));
                let before = cpu_now();
                let mut p =
                    rt.block_on(drive(t.clone(), a.clients, a.seconds, op, a.item_bytes))?;
                let after = cpu_now();
                let n = p.requests.max(1) as f64;
                p.cpu_us = std::array::from_fn(|i| (after[i] - before[i]) * 1e6 / n);
                let better = best.get(&(label, op)).is_none_or(|b| p.rps() > b.rps());
                if better {
                    best.insert((label, op), p);
                }
            }
        }
    }
    bar.finish_and_clear();
    drop(procs);

    let mut rows = Vec::new();
    for op in ["PutItem", "GetItem"] {
        let (d, c) = (&best[&("direct", op)], &best[&("cairn", op)]);
        let r = &best[&("relay", op)];
        rows.push(json!({
            "op": op,
            "direct": {"req_per_s": d.rps(), "p50_ms": d.pct_ms(0.5), "p99_ms": d.pct_ms(0.99), "errors": d.errors,
                "cpu_us_per_request": {"upstream": d.cpu_us[1], "generator": d.cpu_us[2]}},
            "relay": {"req_per_s": r.rps(), "p50_ms": r.pct_ms(0.5), "p99_ms": r.pct_ms(0.99), "errors": r.errors,
                "cpu_us_per_request": {"relay": r.cpu_us[3], "upstream": r.cpu_us[1], "generator": r.cpu_us[2]},
                "ratio": r.rps() / d.rps(), "added_p99_ms": r.pct_ms(0.99) - d.pct_ms(0.99)},
            "cairn": {"req_per_s": c.rps(), "p50_ms": c.pct_ms(0.5), "p99_ms": c.pct_ms(0.99), "errors": c.errors,
                "cpu_us_per_request": {"cairn": c.cpu_us[0], "upstream": c.cpu_us[1], "generator": c.cpu_us[2]}},
            "ratio": c.rps() / d.rps(),
            "added_p99_ms": c.pct_ms(0.99) - d.pct_ms(0.99),
        }));
    }
    if a.json {
        println!(
            "{}",
            json!({"clients": a.clients, "seconds_per_phase": a.seconds, "item_bytes": a.item_bytes,
                   "upstream": "dynalite", "results": rows})
        );
    } else {
        println!(
            "{:<8} {:>12} {:>10} {:>12} {:>10} {:>7} {:>10} {:>7}",
            "op", "direct r/s", "p99 ms", "cairn r/s", "p99 ms", "ratio", "+p99 ms", "errors"
        );
        for r in &rows {
            println!(
                "{:<8} {:>12.0} {:>10.2} {:>12.0} {:>10.2} {:>7.2} {:>10.2} {:>7}",
                r["op"].as_str().unwrap_or_default(),
                r["direct"]["req_per_s"].as_f64().unwrap_or_default(),
                r["direct"]["p99_ms"].as_f64().unwrap_or_default(),
                r["cairn"]["req_per_s"].as_f64().unwrap_or_default(),
                r["cairn"]["p99_ms"].as_f64().unwrap_or_default(),
                r["ratio"].as_f64().unwrap_or_default(),
                r["added_p99_ms"].as_f64().unwrap_or_default(),
                r["direct"]["errors"].as_u64().unwrap_or_default()
                    + r["cairn"]["errors"].as_u64().unwrap_or_default(),
            );
        }
        println!("a plain TCP relay in front of the same upstream (the ceiling of any proxy here)");
        for r in &rows {
            let x = &r["relay"];
            println!(
                "{:<8} {:>12} {:>10} {:>12.0} {:>10.2} {:>7.2} {:>10.2} {:>7}",
                r["op"].as_str().unwrap_or_default(),
                "",
                "",
                x["req_per_s"].as_f64().unwrap_or_default(),
                x["p99_ms"].as_f64().unwrap_or_default(),
                x["ratio"].as_f64().unwrap_or_default(),
                x["added_p99_ms"].as_f64().unwrap_or_default(),
                x["errors"].as_u64().unwrap_or_default(),
            );
        }
        println!(
            "CPU µs per request (direct: upstream, generator; relay: relay, upstream, generator; cairn: cairn, upstream, generator)"
        );
        for r in &rows {
            let (d, c) = (
                &r["direct"]["cpu_us_per_request"],
                &r["cairn"]["cpu_us_per_request"],
            );
            let f = |v: &serde_json::Value| v.as_f64().unwrap_or_default();
            let x = &r["relay"]["cpu_us_per_request"];
            println!(
                "{:<8} direct {:>6.1} {:>6.1}   relay {:>6.1} {:>6.1} {:>6.1}   cairn {:>6.1} {:>6.1} {:>6.1}",
                r["op"].as_str().unwrap_or_default(),
                f(&d["upstream"]),
                f(&d["generator"]),
                f(&x["relay"]),
                f(&x["upstream"]),
                f(&x["generator"]),
                f(&c["cairn"]),
                f(&c["upstream"]),
                f(&c["generator"]),
            );
        }
    }
    Ok(())
}

/// `cairn bench relay`: accepts connections on `listen` and copies bytes both ways to a new
/// connection to `to` each, until either side closes. No parsing, no buffering beyond the
/// copy's: the cheapest hop a proxy can be, for `cairn bench dynamodb`'s ceiling. Runs until
/// killed. It authenticates nobody, so it listens on a loopback address only.
pub fn relay(listen: &str, to: &str) -> Result<()> {
    let at = loopback(listen)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let l = tokio::net::TcpListener::bind(at)
            .await
            .with_context(|| format!("binding {listen}"))?;
        serve_relay(l, to.to_string()).await
    })
}

/// `listen` as a socket address, if it is a loopback one.
fn loopback(listen: &str) -> Result<std::net::SocketAddr> {
    let at: std::net::SocketAddr = listen
        .parse()
        .with_context(|| format!("--listen {listen}: not an IP address and port"))?;
    anyhow::ensure!(
        at.ip().is_loopback(),
        "--listen {listen}: the relay authenticates nobody; it listens on a loopback address only"
    );
    Ok(at)
}

async fn serve_relay(l: tokio::net::TcpListener, to: String) -> Result<()> {
    loop {
        let (mut inbound, _) = l.accept().await?;
        let to = to.clone();
        tokio::spawn(async move {
            let Ok(mut outbound) = tokio::net::TcpStream::connect(&to).await else {
                return;
            };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The relay refuses every address but a loopback one (it authenticates nobody).
    #[test]
    fn the_relay_listens_on_loopback_only() {
        for listen in ["0.0.0.0:0", "[::]:0", "192.0.2.1:0", "localhost:0"] {
            assert!(loopback(listen).is_err(), "{listen}");
        }
        for listen in ["127.0.0.1:0", "[::1]:0"] {
            assert!(loopback(listen).is_ok(), "{listen}");
        }
    }

    /// What goes into the relay comes out of the upstream and back, on every connection, and
    /// a close from the upstream reaches the client.
    #[tokio::test]
    async fn the_relay_copies_both_ways_on_each_connection() {
        let up = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up_addr = up.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = up.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    let n = s.read(&mut buf).await.unwrap();
                    let mut answer = b"up:".to_vec();
                    answer.extend_from_slice(&buf[..n]);
                    s.write_all(&answer).await.unwrap();
                    // Closes: the client must see the end.
                });
            }
        });
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let relay_addr = l.local_addr().unwrap();
        tokio::spawn(serve_relay(l, up_addr));
        for word in ["one", "two"] {
            let mut c = tokio::net::TcpStream::connect(relay_addr).await.unwrap();
            c.write_all(word.as_bytes()).await.unwrap();
            let mut got = Vec::new();
            tokio::time::timeout(std::time::Duration::from_secs(5), c.read_to_end(&mut got))
                .await
                .expect("the upstream's close reaches the client")
                .unwrap();
            assert_eq!(got, format!("up:{word}").into_bytes());
        }
    }
}
