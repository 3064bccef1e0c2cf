//! `cairn bench s3`: PutObject and GetObject throughput and latency with N concurrent
//! keep-alive clients on loopback, all in one run:
//!
//! * cairn's embedded store with the bucket's data events selected by a trail ("on") and not
//!   selected ("off"; every request is still journaled durably before its answer — cairn
//!   records every request — so "off" only skips the trail's delivery of the data events);
//! * SSE-KMS objects (per-object data keys, and with an S3 Bucket Key) against SSE-S3;
//! * a proxied bucket (cairn in front of `moto_server`) against `moto_server` directly;
//! * the embedded store against `moto_server` and `s3rver` (npm) as peers.
//!
//! Requests are SigV4-signed with `UNSIGNED-PAYLOAD` (the client does not hash bodies), each
//! client reuses its signed request for its own key.

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::json;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Instant;
use tokio::io::AsyncWriteExt;

#[derive(Args, Debug)]
pub struct S3BenchArgs {
    /// Concurrent keep-alive clients.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Seconds per phase.
    #[arg(long, default_value_t = 8.0)]
    pub seconds: f64,
    /// Object sizes in bytes.
    #[arg(long, value_delimiter = ',', default_value = "4096,1048576")]
    pub sizes: Vec<usize>,
    /// `moto_server` executable (default: from PATH; skipped when absent).
    #[arg(long)]
    pub moto: Option<PathBuf>,
    /// `s3rver` executable (npm; default: from PATH or /var/tmp/cairn-npm; skipped when absent).
    #[arg(long)]
    pub s3rver: Option<PathBuf>,
    /// Load-generator threads.
    #[arg(long, default_value_t = 1)]
    pub client_threads: usize,
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone)]
struct Target {
    name: &'static str,
    addr: String,
    bucket: String,
    key: String,
    secret: String,
    /// Headers every PUT carries (signed): SSE-KMS's.
    put_headers: Vec<(String, String)>,
}

#[derive(Default, Clone)]
struct Phase {
    requests: usize,
    errors: usize,
    seconds: f64,
    bytes: u64,
    latencies_us: Vec<u32>,
}

impl Phase {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.seconds
    }
    fn mbps(&self) -> f64 {
        self.bytes as f64 / self.seconds / 1e6
    }
    fn p99_ms(&self) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let i = ((self.latencies_us.len() as f64 - 1.0) * 0.99).round() as usize;
        self.latencies_us[i] as f64 / 1000.0
    }
    fn json(&self) -> serde_json::Value {
        json!({"requests": self.requests, "errors": self.errors, "req_per_s": self.rps(),
               "MB_per_s": self.mbps(), "p99_ms": self.p99_ms()})
    }
}

/// A signed request (SigV4, UNSIGNED-PAYLOAD) for `method` on `key` with `body`.
fn request(t: &Target, method: &str, key: &str, body: &[u8]) -> Vec<u8> {
    let path = format!("/{}/{key}", t.bucket);
    let mut headers = vec![("host".to_string(), t.addr.clone())];
    if method == "PUT" {
        headers.extend(t.put_headers.iter().cloned());
    }
    let sreq = cairn_iam::sigv4::Request {
        method,
        path: &path,
        query: "",
        headers: &headers,
        body_sha256: "UNSIGNED-PAYLOAD",
        s3: true,
    };
    let added = cairn_iam::sigv4::sign(
        &sreq,
        &t.key,
        &t.secret,
        "us-east-1",
        "s3",
        chrono::Utc::now(),
    );
    let mut m = format!("{method} {path} HTTP/1.1\r\n");
    for (k, v) in headers.iter().chain(added.iter()) {
        m.push_str(&format!("{k}: {v}\r\n"));
    }
    m.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
    let mut out = m.into_bytes();
    out.extend_from_slice(body);
    out
}

async fn drive(
    t: Target,
    clients: usize,
    seconds: f64,
    method: &'static str,
    size: usize,
) -> Result<Phase> {
    let body: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
    let reqs = (0..clients)
        .map(|c| {
            let key = format!("bench-{size}-{c}");
            if method == "PUT" {
                request(&t, "PUT", &key, &body)
            } else {
                request(&t, "GET", &key, &[])
            }
        })
        .collect();
    let l = closed_loop(&t.addr, reqs, seconds).await?;
    let ok = (l.latencies_us.len() - l.errors) as u64;
    Ok(Phase {
        requests: l.latencies_us.len(),
        errors: l.errors,
        seconds: l.seconds,
        bytes: if method == "PUT" {
            ok * size as u64
        } else {
            l.bytes_out
        },
        latencies_us: l.latencies_us,
    })
}

/// What a closed-loop run measured: every request's latency (sorted), how many were not
/// 200, the body bytes of the 200 answers, and the run's length.
pub(crate) struct Load {
    pub latencies_us: Vec<u32>,
    pub errors: usize,
    pub bytes_out: u64,
    pub seconds: f64,
}

/// One keep-alive client per request in `reqs`, each sending its request again as soon as
/// the answer is read, for `seconds`.
pub(crate) async fn closed_loop(addr: &str, reqs: Vec<Vec<u8>>, seconds: f64) -> Result<Load> {
    let deadline = Instant::now() + std::time::Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for req in reqs {
        let addr = addr.to_string();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let (mut errors, mut bytes) = (0usize, 0u64);
            let mut conn: Option<tokio::net::TcpStream> = None;
            let mut buf = Vec::new();
            while Instant::now() < deadline {
                let s = match &mut conn {
                    Some(s) => s,
                    None => {
                        let s = tokio::net::TcpStream::connect(&addr).await?;
                        s.set_nodelay(true)?;
                        buf.clear();
                        conn.insert(s)
                    }
                };
                let at = Instant::now();
                s.write_all(&req).await?;
                let (status, got, close) = crate::bench_api::read_response(s, &mut buf).await?;
                lat.push(at.elapsed().as_micros().min(u32::MAX as u128) as u32);
                if status == 200 {
                    bytes += got;
                } else {
                    errors += 1;
                }
                if close {
                    conn = None;
                }
            }
            anyhow::Ok((lat, errors, bytes))
        }));
    }
    let mut l = Load {
        latencies_us: Vec::new(),
        errors: 0,
        bytes_out: 0,
        seconds: 0.0,
    };
    for task in tasks {
        let (lat, e, b) = task.await??;
        l.latencies_us.extend(lat);
        l.errors += e;
        l.bytes_out += b;
    }
    l.seconds = started.elapsed().as_secs_f64();
    l.latencies_us.sort_unstable();
    Ok(l)
}

/// One request on a fresh connection; returns the status.
fn once(addr: &str, raw: &[u8]) -> Result<u16> {
    once_body(addr, raw).map(|(s, _)| s)
}

/// One request on a fresh connection; returns the status and the body.
pub(crate) fn once_body(addr: &str, raw: &[u8]) -> Result<(u16, Vec<u8>)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.write_all(raw)?;
    s.shutdown(std::net::Shutdown::Write).ok();
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let text = String::from_utf8_lossy(&out);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|x| x.parse().ok())
        .context("no status")?;
    let body = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| out[i + 4..].to_vec())
        .unwrap_or_default();
    Ok((status, body))
}

pub(crate) fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub(crate) fn wait_port(addr: &str, child: &mut Child) -> Result<()> {
    let t0 = Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        if let Some(st) = child.try_wait()? {
            bail!("{addr}: the server exited ({st})");
        }
        anyhow::ensure!(t0.elapsed().as_secs() < 60, "{addr} did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Ok(())
}

pub(crate) fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|f| f.is_file())
    })
}

pub(crate) struct Procs(pub(crate) Vec<Child>);
impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let _ = c.wait();
        }
    }
}

impl Procs {
    /// Starts a peer server (`command` given a free port), waits for it to listen, and keeps
    /// it to stop at the end; returns its address.
    pub(crate) fn start(
        &mut self,
        name: &str,
        bar: &indicatif::ProgressBar,
        command: impl FnOnce(u16) -> Command,
    ) -> Result<String> {
        bar.set_message(format!("starting {name}"));
        let port = free_port()?;
        let addr = format!("127.0.0.1:{port}");
        let mut c = command(port)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        wait_port(&addr, &mut c)?;
        self.0.push(c);
        Ok(addr)
    }
}

pub fn s3(a: S3BenchArgs) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let exe = std::env::current_exe()?;
    let mut procs = Procs(Vec::new());
    let bar = indicatif::ProgressBar::new_spinner();
    bar.enable_steady_tick(std::time::Duration::from_millis(200));

    // Peers first: the proxied bucket needs moto's address.
    let moto = a.moto.clone().or_else(|| which("moto_server"));
    let moto_addr = match &moto {
        Some(m) => Some(procs.start("moto_server", &bar, |port| {
            let mut c = Command::new(m);
            c.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
            c
        })?),
        None => None,
    };
    let s3rver = a.s3rver.clone().or_else(|| which("s3rver")).or_else(|| {
        let p = PathBuf::from("/var/tmp/cairn-npm/node_modules/.bin/s3rver");
        p.is_file().then_some(p)
    });
    let s3rver_dir = tmp.path().join("s3rver");
    let s3rver_addr = match &s3rver {
        Some(s) => {
            std::fs::create_dir_all(&s3rver_dir)?;
            Some(procs.start("s3rver", &bar, |port| {
                let mut c = Command::new(s);
                c.arg("-d").arg(&s3rver_dir).args([
                    "-a",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                    "--silent",
                    "--configure-bucket",
                    "bench",
                ]);
                c
            })?)
        }
        None => None,
    };

    // cairn, with an embedded bucket, a proxied one (when moto runs) and a trail.
    bar.set_message("starting cairn serve");
    let dir = tmp.path().join("cairn");
    let (key, secret) = crate::bench_api::init_data_dir(&exe, &dir)?;
    let port = free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let mut config = String::from(
        "[[bucket]]\nname = \"bench\"\n[[bucket]]\nname = \"bench-kms\"\n[[bucket]]\nname = \"bench-logs\"\n[[trail]]\nname = \"bench-trail\"\nbucket = \"bench-logs\"\n",
    );
    if let Some(m) = &moto_addr {
        config.push_str(&format!(
            "[[bucket]]\nname = \"bench-proxy\"\n[bucket.proxy]\nendpoint = \"http://{m}\"\nbucket = \"bench-upstream\"\naccess_key_id = \"bench\"\nsecret_access_key_env = \"CAIRN_BENCH_UPSTREAM_SECRET\"\n"
        ));
    }
    std::fs::write(tmp.path().join("cairn.toml"), &config)?;
    let mut server = Command::new(&exe)
        .args([
            "serve",
            "--listen",
            &addr,
            "--delivery-interval",
            "5s",
            "--config",
        ])
        .arg(tmp.path().join("cairn.toml"))
        .arg("--data-dir")
        .arg(&dir)
        .env("CAIRN_BENCH_UPSTREAM_SECRET", "bench-secret")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    wait_port(&addr, &mut server)?;
    procs.0.push(server);

    let cairn = Target {
        name: "cairn",
        addr: addr.clone(),
        bucket: "bench".into(),
        key: key.clone(),
        secret: secret.clone(),
        put_headers: Vec::new(),
    };
    // SSE-KMS: a key, and PUTs that name it (the same bucket setup otherwise).
    let created = crate::client::signed_json_request(
        &addr,
        (&key, &secret, None),
        "us-east-1",
        ("kms", "TrentService.CreateKey"),
        b"{}",
        false,
    );
    let (st, body) = once_body(&addr, &created)?;
    anyhow::ensure!(
        st == 200,
        "CreateKey failed: {}",
        String::from_utf8_lossy(&body)
    );
    let kms_key = serde_json::from_slice::<serde_json::Value>(&body)?["KeyMetadata"]["Arn"]
        .as_str()
        .context("CreateKey gave no key")?
        .to_string();
    let cairn_kms = Target {
        bucket: "bench-kms".into(),
        put_headers: vec![
            ("x-amz-server-side-encryption".into(), "aws:kms".into()),
            (
                "x-amz-server-side-encryption-aws-kms-key-id".into(),
                kms_key,
            ),
        ],
        ..cairn.clone()
    };
    let mut cairn_bucket_key = cairn_kms.clone();
    cairn_bucket_key.put_headers.push((
        "x-amz-server-side-encryption-bucket-key-enabled".into(),
        "true".into(),
    ));
    let selectors = |data: bool| {
        let body = if data {
            r#"{"TrailName":"bench-trail","EventSelectors":[{"ReadWriteType":"All","IncludeManagementEvents":true,"DataResources":[{"Type":"AWS::S3::Object","Values":["arn:aws:s3:::bench/","arn:aws:s3:::bench-kms/","arn:aws:s3:::bench-proxy/"]}]}]}"#
        } else {
            r#"{"TrailName":"bench-trail","EventSelectors":[{"ReadWriteType":"All","IncludeManagementEvents":true,"DataResources":[]}]}"#
        };
        let raw = crate::client::signed_cloudtrail_request(
            &addr,
            (&key, &secret, None),
            "us-east-1",
            "PutEventSelectors",
            body.as_bytes(),
            false,
        );
        once(&addr, &raw)
    };
    let mut targets: Vec<(String, Target)> = Vec::new();
    if let Some(m) = &moto_addr {
        let direct = Target {
            name: "moto",
            addr: m.clone(),
            bucket: "bench-direct".into(),
            key: "bench".into(),
            secret: "bench-secret".into(),
            put_headers: Vec::new(),
        };
        for b in ["bench-direct", "bench-upstream"] {
            let t = Target {
                bucket: b.into(),
                ..direct.clone()
            };
            let raw = request(&t, "PUT", "", &[]);
            // PUT /bucket/ creates the bucket.
            let raw = String::from_utf8_lossy(&raw).replacen(
                &format!("PUT /{b}/ "),
                &format!("PUT /{b} "),
                1,
            );
            let _ = once(m, raw.as_bytes());
        }
        targets.push(("moto direct".into(), direct));
        targets.push((
            "cairn proxy → moto (data events on)".into(),
            Target {
                bucket: "bench-proxy".into(),
                ..cairn.clone()
            },
        ));
    }
    if let Some(s) = &s3rver_addr {
        targets.push((
            "s3rver".into(),
            Target {
                name: "s3rver",
                addr: s.clone(),
                bucket: "bench".into(),
                key: "S3RVER".into(),
                secret: "S3RVER".into(),
                put_headers: Vec::new(),
            },
        ));
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(a.client_threads)
        .enable_all()
        .build()?;
    let mut results: Vec<(String, String, usize, Phase)> = Vec::new();
    let run = |label: &str,
               t: &Target,
               results: &mut Vec<(String, String, usize, Phase)>|
     -> Result<()> {
        for &size in &a.sizes {
            for method in ["PUT", "GET"] {
                bar.set_message(format!("{label}: {method} {size} B"));
                let p = rt.block_on(drive(t.clone(), a.clients, a.seconds, method, size))?;
                results.push((label.to_string(), method.to_string(), size, p));
            }
        }
        Ok(())
    };
    // Warm-up, then data events on and off back to back on the embedded store.
    anyhow::ensure!(selectors(true)? == 200, "PutEventSelectors failed");
    rt.block_on(drive(cairn.clone(), a.clients, 1.0, "PUT", 4096))?;
    run("cairn embedded, data events on", &cairn, &mut results)?;
    run(
        "cairn embedded SSE-KMS, data events on",
        &cairn_kms,
        &mut results,
    )?;
    run(
        "cairn embedded SSE-KMS bucket key, data events on",
        &cairn_bucket_key,
        &mut results,
    )?;
    anyhow::ensure!(selectors(false)? == 200, "PutEventSelectors failed");
    run("cairn embedded, data events off", &cairn, &mut results)?;
    anyhow::ensure!(selectors(true)? == 200, "PutEventSelectors failed");
    for (label, t) in &targets {
        let _ = t.name;
        run(label, t, &mut results)?;
    }
    bar.finish_and_clear();
    drop(procs);

    let find = |label: &str, m: &str, size: usize| {
        results
            .iter()
            .find(|(l, mm, s, _)| l == label && mm == m && *s == size)
            .map(|(_, _, _, p)| p.clone())
    };
    let mut ratios = Vec::new();
    for &size in &a.sizes {
        for m in ["PUT", "GET"] {
            let on = find("cairn embedded, data events on", m, size);
            let off = find("cairn embedded, data events off", m, size);
            if let (Some(on), Some(off)) = (&on, &off) {
                ratios.push((
                    format!("data events on/off {m} {size} B"),
                    on.rps() / off.rps(),
                ));
            }
            if let (Some(k), Some(on)) =
                (find("cairn embedded SSE-KMS, data events on", m, size), &on)
            {
                ratios.push((format!("SSE-KMS/SSE-S3 {m} {size} B"), k.rps() / on.rps()));
            }
            if let (Some(k), Some(on)) = (
                find("cairn embedded SSE-KMS bucket key, data events on", m, size),
                &on,
            ) {
                ratios.push((
                    format!("SSE-KMS bucket key/SSE-S3 {m} {size} B"),
                    k.rps() / on.rps(),
                ));
            }
            if let (Some(p), Some(d)) = (
                find("cairn proxy → moto (data events on)", m, size),
                find("moto direct", m, size),
            ) {
                ratios.push((format!("proxy/direct moto {m} {size} B"), p.rps() / d.rps()));
            }
            if let (Some(e), Some(d)) = (&on, find("moto direct", m, size)) {
                ratios.push((format!("embedded/moto {m} {size} B"), e.rps() / d.rps()));
            }
            if let (Some(e), Some(d)) = (&on, find("s3rver", m, size)) {
                ratios.push((format!("embedded/s3rver {m} {size} B"), e.rps() / d.rps()));
            }
        }
    }
    if a.json {
        let rows: Vec<_> = results
            .iter()
            .map(|(l, m, s, p)| json!({"target": l, "op": m, "size": s, "result": p.json()}))
            .collect();
        let r: serde_json::Map<_, _> = ratios.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        println!(
            "{}",
            json!({"clients": a.clients, "seconds_per_phase": a.seconds, "phases": rows, "ratios": r})
        );
    } else {
        println!(
            "{:<40} {:>4} {:>8} {:>10} {:>9} {:>9} {:>6}",
            "target", "op", "size", "req/s", "MB/s", "p99 ms", "errors"
        );
        for (l, m, s, p) in &results {
            println!(
                "{:<40} {:>4} {:>8} {:>10.0} {:>9.1} {:>9.2} {:>6}",
                l,
                m,
                s,
                p.rps(),
                p.mbps(),
                p.p99_ms(),
                p.errors
            );
        }
        for (k, v) in &ratios {
            println!("{k}: {v:.2}");
        }
        if moto_addr.is_none() {
            println!("(moto_server not found: proxy and moto rows skipped)");
        }
        if s3rver_addr.is_none() {
            println!("(s3rver not found: s3rver rows skipped)");
        }
    }
    let errors: usize = results
        .iter()
        .filter(|(l, ..)| l.starts_with("cairn"))
        .map(|(_, _, _, p)| p.errors)
        .sum();
    anyhow::ensure!(errors == 0, "{errors} cairn requests failed");
    Ok(())
}
