//! `cairn bench kms`: KMS calls through the API — GenerateDataKey, Encrypt and Decrypt of
//! 4 KiB — against authenticated, journaled GetTrailStatus on the same server, phase after
//! phase, so the ratios hold on a noisy machine.

use crate::bench_api::{bench_server, drive, Phase, BENCH_CONFIG};
use anyhow::{Context, Result};
use base64::Engine;
use clap::Args;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Args, Debug)]
pub struct KmsBenchArgs {
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Seconds per phase.
    #[arg(long, default_value_t = 8.0)]
    pub seconds: f64,
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    #[arg(long, default_value_t = 1)]
    pub client_threads: usize,
    #[arg(long)]
    pub json: bool,
}

type Request = Arc<dyn Fn() -> Vec<u8> + Send + Sync>;

fn kms_request(addr: &str, creds: (&str, &str), op: &str, body: Value) -> Request {
    kms_request_with(addr, creds, op, body, true)
}

fn kms_request_with(
    addr: &str,
    creds: (&str, &str),
    op: &str,
    body: Value,
    keep_alive: bool,
) -> Request {
    let (addr, key, secret) = (addr.to_string(), creds.0.to_string(), creds.1.to_string());
    let body = body.to_string();
    let target = format!("TrentService.{op}");
    Arc::new(move || {
        crate::client::signed_json_request(
            &addr,
            (&key, &secret, None),
            "us-east-1",
            ("kms", &target),
            body.as_bytes(),
            keep_alive,
        )
    })
}

/// One call on its own connection (closed after the answer); its JSON answer.
fn call(addr: &str, raw: Vec<u8>) -> Result<Value> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.write_all(&raw)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let start = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no answer")?;
    anyhow::ensure!(
        out.starts_with(b"HTTP/1.1 200"),
        "setup call failed: {}",
        String::from_utf8_lossy(&out)
    );
    Ok(serde_json::from_slice(&out[start + 4..])?)
}

pub fn kms(a: KmsBenchArgs) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (mut server, addr, key, secret) =
        bench_server(tmp.path(), a.data_dir.clone(), BENCH_CONFIG)?;
    let creds = (key.as_str(), secret.as_str());
    let result = (|| -> Result<Vec<(&'static str, Phase)>> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(a.client_threads)
            .enable_all()
            .build()?;
        let created = call(
            &addr,
            kms_request_with(&addr, creds, "CreateKey", json!({}), false)(),
        )?;
        let key_id = created["KeyMetadata"]["KeyId"]
            .as_str()
            .context("CreateKey gave no key")?
            .to_string();
        let plain = base64::engine::general_purpose::STANDARD.encode(vec![7u8; 4096]);
        let ctx = json!({"bench": "kms"});
        let enc = kms_request(
            &addr,
            creds,
            "Encrypt",
            json!({"KeyId": key_id, "Plaintext": plain, "EncryptionContext": ctx}),
        );
        let enc_once = kms_request_with(
            &addr,
            creds,
            "Encrypt",
            json!({"KeyId": key_id, "Plaintext": plain, "EncryptionContext": ctx}),
            false,
        );
        let blob = call(&addr, enc_once())?["CiphertextBlob"]
            .as_str()
            .context("Encrypt gave no blob")?
            .to_string();
        let host = addr.clone();
        let (k2, s2) = (key.clone(), secret.clone());
        let status: Request = Arc::new(move || {
            crate::client::signed_cloudtrail_request(
                &host,
                (&k2, &s2, None),
                "us-east-1",
                "GetTrailStatus",
                br#"{"Name":"bench-trail"}"#,
                true,
            )
        });
        let phases: Vec<(&'static str, Request)> = vec![
            ("GetTrailStatus (baseline)", status.clone()),
            (
                "GenerateDataKey AES_256",
                kms_request(
                    &addr,
                    creds,
                    "GenerateDataKey",
                    json!({"KeyId": key_id, "KeySpec": "AES_256", "EncryptionContext": ctx}),
                ),
            ),
            ("Encrypt 4 KiB", enc),
            (
                "Decrypt 4 KiB",
                kms_request(
                    &addr,
                    creds,
                    "Decrypt",
                    json!({"CiphertextBlob": blob, "EncryptionContext": ctx}),
                ),
            ),
            ("GetTrailStatus (again)", status),
        ];
        rt.block_on(drive(addr.clone(), a.connections, 1.0, phases[0].1.clone()))?;
        let bar = indicatif::ProgressBar::new(phases.len() as u64);
        let mut out = Vec::new();
        for (name, req) in phases {
            bar.set_message(name);
            out.push((
                name,
                rt.block_on(drive(addr.clone(), a.connections, a.seconds, req))?,
            ));
            bar.inc(1);
        }
        bar.finish_and_clear();
        Ok(out)
    })();
    unsafe {
        libc::kill(server.id() as i32, libc::SIGTERM);
    }
    let _ = server.wait();
    let phases = result?;
    let base = (phases[0].1.rps() + phases[4].1.rps()) / 2.0;
    let rows: Vec<Value> = phases
        .iter()
        .map(|(n, p)| {
            json!({"phase": n, "requests": p.requests, "errors": p.errors, "req_per_s": p.rps(),
                   "p50_ms": p.pct(0.5), "p99_ms": p.pct(0.99), "ratio_to_GetTrailStatus": p.rps() / base})
        })
        .collect();
    if a.json {
        println!(
            "{}",
            json!({"connections": a.connections, "seconds_per_phase": a.seconds, "phases": rows})
        );
    } else {
        for (n, p) in &phases {
            println!(
                "{n:<28} {:>9.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  ratio {:.2}  ({} errors)",
                p.rps(),
                p.pct(0.5),
                p.pct(0.99),
                p.rps() / base,
                p.errors
            );
        }
    }
    let errors: usize = phases.iter().map(|(_, p)| p.errors).sum();
    anyhow::ensure!(errors == 0, "{errors} requests failed");
    Ok(())
}
