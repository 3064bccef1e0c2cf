//! `cairn serve` and `cairn init`: initialise a data directory, apply `cairn.toml`, run the
//! listener, the delivery pump and the history indexer; stop gracefully on SIGTERM.

use crate::config::{parse_duration, FileConfig};
use crate::install::{self, Installation};
use anyhow::{bail, Context, Result};
use cairn_api::{cloudtrail::history::History, meta::Meta, Api, ApiOptions, TlsFiles};
use cairn_iam::identity::{Directory, Sealer};
use cairn_record::{Clock, SystemClock};
use cairn_store::ObjectStore;
use cairn_trail::{RootKey, TrailCommand, TrailConfig};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Data directory (created and initialised on first start).
    #[arg(long, default_value = "./cairn-data")]
    pub data_dir: PathBuf,
    /// Configuration file (default: ./cairn.toml if it exists).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Listen address.
    #[arg(long)]
    pub listen: Option<String>,
    /// PEM certificate chain: serve HTTPS.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// 12-digit account id for a new data directory.
    #[arg(long)]
    pub account_id: Option<String>,
    /// Development mode: also accept the well-known `test`/`test` credentials as the root.
    #[arg(long)]
    pub dev: bool,
    /// Log file delivery interval (e.g. 5m, 30s, 500ms).
    #[arg(long)]
    pub delivery_interval: Option<String>,
    /// Digest window length (e.g. 1h, 10s).
    #[arg(long)]
    pub digest_interval: Option<String>,
    /// How often the S3 lifecycle worker runs (e.g. 1m, 10s).
    #[arg(long)]
    pub lifecycle_interval: Option<String>,
    /// The DynamoDB-compatible database DynamoDB calls are forwarded to (e.g.
    /// http://127.0.0.1:8000 for dynalite or DynamoDB Local); overrides `[dynamodb] upstream`.
    #[arg(long)]
    pub dynamodb_upstream: Option<String>,
    /// Free space kept on the data directory's filesystems ("512MiB", "2%", "0" = off;
    /// default: the larger of 1% and 512 MiB); overrides `disk_reserve`.
    #[arg(long)]
    pub disk_reserve: Option<String>,
    /// The memory budget split among caches and buffers ("512MiB", "2GiB"; default
    /// 512MiB); overrides `memory_limit`.
    #[arg(long)]
    pub memory_limit: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct InitArgs {
    #[arg(long, default_value = "./cairn-data")]
    pub data_dir: PathBuf,
    #[arg(long)]
    pub account_id: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Seals IAM secrets under the installation's root key.
struct RootSealer(RootKey);

impl Sealer for RootSealer {
    fn seal(&self, p: &[u8], ctx: &[u8]) -> std::result::Result<Vec<u8>, String> {
        self.0.seal(p, ctx).map_err(|e| e.to_string())
    }
    fn open(&self, s: &[u8], ctx: &[u8]) -> std::result::Result<Vec<u8>, String> {
        self.0.open(s, ctx).map_err(|e| e.to_string())
    }
}

fn open_directory(dir: &Path, account: &str) -> Result<Arc<Directory>> {
    let sealer = Arc::new(RootSealer(install::root_key(dir)?));
    Ok(Arc::new(
        Directory::open(&dir.join("iam.redb"), account, sealer)
            .context("opening the identity directory")?,
    ))
}

/// The root access key given by the environment, if any.
fn env_root_key() -> Result<Option<(String, String)>> {
    match (
        std::env::var("CAIRN_ROOT_ACCESS_KEY_ID").ok(),
        std::env::var("CAIRN_ROOT_SECRET_ACCESS_KEY").ok(),
    ) {
        (Some(id), Some(secret)) => Ok(Some((id, secret))),
        (None, None) => Ok(None),
        _ => {
            bail!("set both CAIRN_ROOT_ACCESS_KEY_ID and CAIRN_ROOT_SECRET_ACCESS_KEY, or neither")
        }
    }
}

/// Ensures the account has a root access key; returns it when created now (the only time its
/// secret is shown).
fn ensure_root_key(iam: &Directory) -> Result<Option<(String, String)>> {
    let now = SystemClock.now();
    if let Some((id, secret)) = env_root_key()? {
        let existed = iam.root_keys().iter().any(|k| k.id == id);
        iam.add_root_key(Some((&id, &secret)), now)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        return Ok((!existed).then_some((id, String::new())));
    }
    if !iam.root_keys().is_empty() {
        return Ok(None);
    }
    let k = iam
        .add_root_key(None, now)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Some((k.id, k.secret)))
}

pub fn init(a: InitArgs) -> Result<()> {
    let cfg = install::install_config(&a.data_dir, a.account_id.as_deref())?;
    let iam = open_directory(&a.data_dir, &cfg.account_id)?;
    let created = ensure_root_key(&iam)?;
    let existing = iam.root_keys().first().map(|k| k.id.clone());
    let (id, secret) = match &created {
        Some((id, s)) if !s.is_empty() => (id.clone(), Some(s.clone())),
        _ => (existing.unwrap_or_default(), None),
    };
    if a.json {
        let mut v = serde_json::json!({"AccountId": cfg.account_id, "AccessKeyId": id});
        if let Some(s) = &secret {
            v["SecretAccessKey"] = serde_json::json!(s);
        }
        println!("{v}");
    } else {
        println!("account:           {}", cfg.account_id);
        println!("root access key:   {id}");
        match &secret {
            Some(s) => println!("root secret key:   {s}\n(shown once; it is stored encrypted)"),
            None => println!("(already initialised; the secret is not shown again)"),
        }
    }
    Ok(())
}

fn apply_buckets(file: &FileConfig, store: &dyn ObjectStore, meta: &Meta) -> Result<()> {
    for b in &file.buckets {
        if b.proxy.is_some() {
            continue;
        }
        if !store.bucket_exists(&b.name)? {
            store.create_bucket(&b.name)?;
            tracing::info!(bucket = %b.name, "created bucket from cairn.toml");
        }
        if let Some(r) = &b.region {
            cairn_api::s3::bucket::set_region(meta, &b.name, r)
                .map_err(|e| anyhow::anyhow!("{}", e.message))?;
        }
    }
    Ok(())
}

/// Applies the trails declared in cairn.toml: creates or updates configuration and reaches
/// the declared logging state. Idempotent: an unchanged declaration issues no command.
fn apply_trails(file: &FileConfig, inst: &Installation, account: &str) -> Result<()> {
    let engine = &inst.engine;
    let now = SystemClock.now();
    for d in &file.trails {
        let home = d.home_region.clone().unwrap_or_else(|| "us-east-1".into());
        let mut c = TrailConfig::new(&d.name, account, &home, &d.bucket);
        c.s3_key_prefix = d.prefix.clone().filter(|p| !p.is_empty());
        c.multi_region = d.multi_region;
        c.include_global_service_events = d.include_global_service_events;
        c.log_file_validation = d.log_file_validation;
        c.kms_key_id = d.kms_key_id.clone();
        c.selectors = d.selectors()?;
        let current = engine.trail(&d.name);
        let mut last = None;
        if current.as_ref().map(|t| &t.config) != Some(&c) {
            last = Some(engine.command(TrailCommand::Put {
                config: c.clone(),
                at: now,
            })?);
        }
        let logging = current.as_ref().is_some_and(|t| t.logging);
        if d.logging != logging {
            let name = d.name.clone();
            last = Some(engine.command(if d.logging {
                TrailCommand::StartLogging { name, at: now }
            } else {
                TrailCommand::StopLogging { name, at: now }
            })?);
        }
        if let Some(seq) = last {
            engine.apply_through(seq)?;
            tracing::info!(trail = %d.name, "applied trail from cairn.toml");
        }
    }
    Ok(())
}

pub fn serve(a: ServeArgs) -> Result<()> {
    let config_path = a
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from("cairn.toml"));
    let file = FileConfig::load(&config_path, a.config.is_some())?;
    // The budget sizes every database cache and buffer opened below.
    let budget = match a.memory_limit.as_ref().or(file.memory_limit.as_ref()) {
        Some(s) => crate::memory::Budget::parse(s)?,
        None => crate::memory::current(),
    };
    crate::memory::set(budget);
    let account = a.account_id.clone().or(file.account_id.clone());
    let delivery = parse_duration(
        a.delivery_interval
            .as_deref()
            .or(file.delivery_interval.as_deref())
            .unwrap_or("5m"),
    )?;
    let digest = parse_duration(
        a.digest_interval
            .as_deref()
            .or(file.digest_interval.as_deref())
            .unwrap_or("1h"),
    )?;
    let gzip_level = log_gzip_level(&file)?;
    let lifecycle_every = parse_duration(
        a.lifecycle_interval
            .as_deref()
            .or(file.lifecycle_interval.as_deref())
            .unwrap_or("1m"),
    )?;
    let regions = file.regions.clone();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    std::fs::create_dir_all(a.data_dir.join("api"))?;
    let meta = Arc::new(
        Meta::open(&a.data_dir.join("api").join("meta.redb"))
            .map_err(|e| anyhow::anyhow!("opening control metadata: {e}"))?,
    );
    let account = install::install_config(&a.data_dir, account.as_deref())?.account_id;
    // Trails deliver as the CloudTrail service principal, through the buckets' policies.
    let guard = cairn_api::s3::delivery::guard(meta.clone(), account.clone());
    let inst = Installation::open_delivering(
        &a.data_dir,
        Some(&account),
        clock.clone(),
        |embedded| embedded.clone(),
        |o| {
            o.delivery_guard = Some(guard);
            o.bucket_kms = Some(cairn_api::s3::delivery::default_kms_key(meta.clone()));
            o.delivery_interval = delivery;
            o.digest_interval = digest;
            o.gzip_level = gzip_level;
            // An open epoch and the one being compressed share the delivery share.
            o.max_epoch_bytes = (budget.share("delivery") / 2) as usize;
            if let Some(r) = &regions {
                o.regions = r.clone();
            }
        },
    )?;
    let iam = open_directory(&a.data_dir, &account)?;
    if let Some((id, secret)) = ensure_root_key(&iam)? {
        if !secret.is_empty() {
            // Printed once, on the first start; stored sealed under the root key.
            eprintln!("cairn: created the root access key for account {account}:");
            eprintln!("  AWS_ACCESS_KEY_ID={id}");
            eprintln!("  AWS_SECRET_ACCESS_KEY={secret}");
            eprintln!("  (shown once; `cairn init` can create it non-interactively)");
        }
    }
    let kms = inst.kms.clone();
    let logs = Arc::new(
        cairn_logs::LogStore::open(
            &a.data_dir.join("api").join("logs.redb"),
            &crate::install::root_key_bytes(&a.data_dir)?,
        )
        .map_err(|e| anyhow::anyhow!("opening the log event store: {e}"))?,
    );
    let history = History::open_with(
        &a.data_dir.join("api").join("history.redb"),
        inst.journal.clone(),
        budget.share("history_batch") as usize,
    )
    .map_err(|e| anyhow::anyhow!("opening event history: {e}"))?;
    apply_buckets(&file, inst.store.as_ref(), &meta)?;
    apply_trails(&file, &inst, &account)?;

    let mut opts = ApiOptions::new(&account);
    if let Some(r) = &file.regions {
        opts.regions = r.clone();
    }
    if let Some(r) = &file.default_region {
        opts.default_region = r.clone();
    }
    opts.dev_credentials = a.dev || file.dev.unwrap_or(false);
    if let Some(d) = file.history_days {
        opts.history_days = d;
    }
    opts.lookup_extensions = file.lookup_extensions.unwrap_or(false);
    for b in &file.buckets {
        if let Some(p) = &b.proxy {
            cairn_store::check_bucket_name(&b.name)
                .map_err(|e| anyhow::anyhow!("bucket {}: {e}", b.name))?;
            opts.proxies.insert(b.name.clone(), p.target(&b.name)?);
            tracing::info!(bucket = %b.name, upstream = %p.endpoint, "bucket served by an upstream S3");
        }
    }
    if let Some(t) = crate::config::dynamodb_target(
        file.dynamodb.as_ref(),
        a.dynamodb_upstream.as_deref(),
        &opts.default_region,
    )? {
        if !opts.regions.contains(&t.region) {
            anyhow::bail!(
                "[dynamodb] region {} is not one of the regions cairn serves",
                t.region
            );
        }
        tracing::info!(upstream = %t.endpoint, region = %t.region, "DynamoDB calls are forwarded to an upstream");
        opts.dynamodb = Some(t);
    }
    opts.multipart_dir = a.data_dir.join("multipart");
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&opts.multipart_dir)?;
    }
    opts.part_cipher = Some(cairn_api::PartCipher(std::sync::Arc::new(
        crate::sse::SseS3::from_root(&crate::install::root_key_bytes(&a.data_dir)?),
    )));
    if let Some(r) = a.disk_reserve.as_ref().or(file.disk_reserve.as_ref()) {
        opts.disk_reserve = cairn_api::disk::Reserve::parse(r).map_err(anyhow::Error::msg)?;
    }
    opts.disk_paths = vec![
        a.data_dir.clone(),
        a.data_dir.join("journal"),
        opts.multipart_dir.clone(),
    ];
    if let Some(d) = file.multipart_expiry_days {
        if d < 1 {
            anyhow::bail!("multipart_expiry_days must be at least 1");
        }
        opts.multipart_expiry_days = d;
    }
    if let Some(m) = file.max_body_bytes {
        opts.max_body_bytes = m;
    }
    if let Some(m) = file.max_object_bytes {
        if m > 5 << 30 {
            anyhow::bail!("max_object_bytes may be at most 5 GiB (S3's single-PUT limit)");
        }
        opts.max_object_bytes = m;
    }
    if let Some(m) = file.max_api_body_bytes {
        opts.max_api_body_bytes = m;
    }
    opts.max_buffered_body_bytes = budget.share("request_bodies") as usize;
    if let Some(m) = file.max_buffered_body_bytes {
        opts.max_buffered_body_bytes = m;
    }
    if let Some(m) = file.max_buffered_body_bytes_per_client {
        opts.max_buffered_body_bytes_per_client = m;
    }
    // One request of the largest size must always fit.
    opts.max_buffered_body_bytes = opts.max_buffered_body_bytes.max(opts.max_body_bytes + 1);
    opts.max_buffered_body_bytes_per_client = opts
        .max_buffered_body_bytes_per_client
        .clamp(opts.max_body_bytes + 1, opts.max_buffered_body_bytes);
    opts.max_connections = opts
        .max_connections
        .min((budget.share("connections") / crate::memory::PER_CONNECTION) as usize)
        .max(64);
    if let Some(m) = file.max_connections {
        opts.max_connections = m.max(1);
    }
    // What /_cairn/metrics reports: the shares as applied (a setting of cairn.toml wins).
    opts.memory = budget.report_effective(&[
        ("request_bodies", opts.max_buffered_body_bytes as u64),
        (
            "connections",
            opts.max_connections as u64 * crate::memory::PER_CONNECTION,
        ),
    ]);
    let std_duration = |v: &Option<String>, default: std::time::Duration| -> Result<_> {
        Ok(match v {
            Some(v) => parse_duration(v)?
                .to_std()
                .map_err(|_| anyhow::anyhow!("a timeout must be positive: {v}"))?,
            None => default,
        })
    };
    opts.header_timeout = std_duration(&file.header_timeout, std::time::Duration::from_secs(20))?;
    opts.body_timeout = std_duration(&file.body_timeout, opts.body_timeout)?;
    opts.tls_handshake_timeout =
        std_duration(&file.tls_handshake_timeout, opts.tls_handshake_timeout)?;
    opts.metrics_public = file.metrics_public.unwrap_or(false);
    opts.metrics_token = std::env::var("CAIRN_METRICS_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    if opts.dev_credentials {
        tracing::warn!("DEVELOPMENT MODE: the well-known credentials test/test are accepted as the account root. Never use --dev with data you care about.");
        eprintln!("cairn: WARNING: development mode accepts AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test as the account root");
    }
    let tls = match (&a.tls_cert, &a.tls_key, &file.tls) {
        (Some(c), Some(k), _) => Some(TlsFiles {
            cert: c.clone(),
            key: k.clone(),
        }),
        (_, _, Some(t)) => Some(TlsFiles {
            cert: t.cert.clone(),
            key: t.key.clone(),
        }),
        _ => None,
    };
    let listen = a
        .listen
        .clone()
        .or(file.listen.clone())
        .unwrap_or_else(|| "127.0.0.1:4566".into());
    let store: Arc<dyn ObjectStore> = inst.store.clone();
    let api = Api::new(
        opts,
        inst.engine.clone(),
        store,
        inst.trail_store.clone(),
        iam,
        kms,
        logs,
        meta,
        history.clone(),
        clock,
    );

    // Requests a crash left between their pending record and its outcome are recorded, before
    // anything else is served, with the outcome their store write kept, or else as unknown.
    let orphans = api
        .resolve_orphans()
        .map_err(|e| anyhow::anyhow!("resolving pending requests: {}", e.message))?;
    if orphans > 0 {
        tracing::warn!(
            orphans,
            "requests pending at the last stop are recorded with an unknown outcome"
        );
    }

    // PutAuditEvents' idempotency index holds every id the journal holds before the first
    // request is answered.
    api.audit_ids
        .catch_up()
        .map_err(|e| anyhow::anyhow!("catching up the audit-id index: {e}"))?;

    let stop = Arc::new(AtomicBool::new(false));
    let indexer = history.spawn();
    // Trails with a CloudWatch Logs log group deliver there from the journal.
    let cwlogs = cairn_api::logs::deliver::CwDelivery::new(api.clone());
    let cwlogs_thread = cwlogs.spawn();
    let pump = {
        let engine = inst.engine.clone();
        let api = api.clone();
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("delivery".into())
            .spawn(move || {
                let mut checkpointed = std::time::Instant::now();
                while !stop.load(Ordering::Acquire) {
                    if checkpointed.elapsed() >= std::time::Duration::from_secs(1) {
                        checkpointed = std::time::Instant::now();
                        if let Err(e) = api.checkpoint_pending() {
                            tracing::warn!(error = %e.message, "checkpointing pending requests failed");
                        }
                    }
                    match engine.pump() {
                        Ok(r) if r.more => continue,
                        Ok(_) => std::thread::sleep(std::time::Duration::from_millis(100)),
                        Err(e) => {
                            tracing::error!(error = %e, "delivery failed; retrying");
                            std::thread::sleep(std::time::Duration::from_secs(1));
                        }
                    }
                }
            })?
    };
    let pruner = {
        let history = history.clone();
        let regions = api.opts.regions.clone();
        let days = api.opts.history_days;
        let stop = stop.clone();
        let (kms, engine, control) = (api.kms.clone(), api.engine.clone(), api.control.clone());
        // KMS's own work (deletions after the waiting period, automatic rotations): each is
        // recorded before it is done, under the control lock every key change holds (so a
        // DisableKey or CancelKeyDeletion cannot be overwritten by a stale snapshot).
        let kms_due = move || -> anyhow::Result<()> {
            let _serialized = control.blocking_lock();
            let now = SystemClock.now();
            for due in kms.due(now)? {
                engine.append_event(&cairn_api::kms::on_behalf::housekeeping_event(&due, now))?;
                kms.apply(&due)?;
            }
            Ok(())
        };
        let mut last_kms = std::time::Instant::now() - std::time::Duration::from_secs(60);
        std::thread::Builder::new()
            .name("history-retention".into())
            .spawn(move || {
                let mut last = std::time::Instant::now() - std::time::Duration::from_secs(3600);
                while !stop.load(Ordering::Acquire) {
                    if last_kms.elapsed() >= std::time::Duration::from_secs(60) {
                        last_kms = std::time::Instant::now();
                        if let Err(e) = kms_due() {
                            tracing::warn!(error = %e, "KMS housekeeping failed; will retry");
                        }
                    }
                    if last.elapsed() >= std::time::Duration::from_secs(3600) {
                        last = std::time::Instant::now();
                        let cut = SystemClock.now() - chrono::Duration::days(days);
                        if let Err(e) = history.prune(&regions, cut) {
                            tracing::warn!(error = %e, "pruning event history failed");
                        }
                    }
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
            })?
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("cairn-http")
        .max_blocking_threads(crate::memory::BLOCKING_THREADS)
        .build()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let metrics_listen = file.metrics_listen.clone();
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        let server = cairn_api::serve(api.clone(), listener, tls)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        println!(
            "cairn listening on {scheme}://{} (account {account})",
            server.local_addr
        );
        tracing::info!(addr = %server.local_addr, "listening");
        let metrics_server = match &metrics_listen {
            Some(addr) => {
                let l = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding metrics_listen {addr}"))?;
                tracing::info!(addr = %addr, "metrics listener");
                Some(
                    cairn_api::http::serve_metrics(api.clone(), l)
                        .await
                        .map_err(|e| anyhow::anyhow!("{e}"))?,
                )
            }
            None => None,
        };
        let lifecycle = cairn_api::s3::lifecycle::spawn(
            api.clone(),
            lifecycle_every
                .to_std()
                .unwrap_or(std::time::Duration::from_secs(60)),
        );
        let retention = cairn_api::logs::spawn_retention(
            api.clone(),
            lifecycle_every
                .to_std()
                .unwrap_or(std::time::Duration::from_secs(60)),
        );
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => {},
            _ = tokio::signal::ctrl_c() => {},
        }
        tracing::info!("shutting down: no new connections; finishing in-flight requests");
        server.shutdown(std::time::Duration::from_secs(30)).await;
        lifecycle.abort();
        retention.abort();
        if let Some(m) = metrics_server {
            m.abort();
        }
        anyhow::Ok(())
    })?;
    stop.store(true, Ordering::Release);
    let _ = pump.join();
    let _ = pruner.join();
    let flushed = inst.engine.flush()?;
    history.stop();
    let _ = indexer.join();
    cwlogs.stop();
    let _ = cwlogs_thread.join();
    inst.journal.close();
    eprintln!(
        "cairn: stopped ({} log files, {} digests delivered at shutdown)",
        flushed.files, flushed.digests
    );
    Ok(())
}

/// `log_gzip_level` from the configuration (gzip's levels, 1–9), or the default.
fn log_gzip_level(file: &FileConfig) -> Result<u32> {
    match file.log_gzip_level {
        None => Ok(cairn_trail::DEFAULT_GZIP_LEVEL),
        Some(l @ 1..=9) => Ok(l),
        Some(l) => bail!("log_gzip_level = {l}: a gzip level is 1 (fastest) to 9 (smallest)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_gzip_level_is_a_gzip_level_or_the_default() {
        let with = |l: Option<u32>| {
            log_gzip_level(&FileConfig {
                log_gzip_level: l,
                ..Default::default()
            })
        };
        assert_eq!(with(None).unwrap(), cairn_trail::DEFAULT_GZIP_LEVEL);
        assert_eq!(with(Some(1)).unwrap(), 1);
        assert_eq!(with(Some(9)).unwrap(), 9);
        for bad in [0, 10, 12] {
            let e = with(Some(bad)).unwrap_err().to_string();
            assert!(e.contains("log_gzip_level"), "{e}");
        }
    }
}
