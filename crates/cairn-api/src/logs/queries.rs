//! Logs Insights: StartQuery (run on a blocking thread over the groups' events in the time
//! range), GetQueryResults, StopQuery, DescribeQueries. Queries are kept in memory (the last
//! [`KEPT`]); the language is [`cairn_logs::insights`].

use super::groups::{existing, group_arn, named, LogGroup};
use super::invalid;
use crate::edge::Ctx;
use crate::protocol::ApiError;
use cairn_logs::insights::{Input, Query, Run};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Queries remembered (older finished ones are forgotten first).
pub const KEPT: usize = 1000;
/// Queries running at once (LimitExceededException beyond, as AWS's 30).
pub const CONCURRENT: usize = 30;

#[derive(Debug, Clone, Default)]
struct State {
    status: &'static str,
    results: Vec<Vec<(String, String)>>,
    matched: u64,
    scanned: u64,
    bytes: u64,
    created: i64,
    query: String,
    group: String,
    /// The ARNs (`…:log-group:NAME:*`) of the groups the query reads: whoever reads its
    /// results or stops it must be allowed on each.
    arns: Vec<String>,
    error: Option<String>,
}

struct Entry {
    state: Mutex<State>,
    stop: AtomicBool,
}

/// The queries of this server.
#[derive(Default)]
pub struct Queries {
    all: Mutex<HashMap<String, Arc<Entry>>>,
}

impl Queries {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Entry>>> {
        self.all.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn lock(e: &Entry) -> std::sync::MutexGuard<'_, State> {
    e.state.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartInput {
    pub log_group_name: Option<String>,
    pub log_group_names: Option<Vec<String>>,
    pub log_group_identifiers: Option<Vec<String>>,
    pub start_time: i64,
    pub end_time: i64,
    pub query_string: String,
    pub limit: Option<i64>,
    pub query_language: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueryId {
    pub query_id: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeInput {
    pub log_group_name: Option<String>,
    pub status: Option<String>,
    pub max_results: Option<i64>,
    pub next_token: Option<String>,
    pub query_language: Option<String>,
}

pub(super) fn start(ctx: &mut Ctx<'_>, action: &str, i: StartInput) -> Result<Value, ApiError> {
    let mut names: Vec<String> = Vec::new();
    let given = [
        i.log_group_name.is_some(),
        i.log_group_names.is_some(),
        i.log_group_identifiers.is_some(),
    ];
    if given.iter().filter(|g| **g).count() != 1 {
        return Err(invalid(
            "Exactly one of logGroupName, logGroupNames and logGroupIdentifiers is required.",
        ));
    }
    if let Some(n) = &i.log_group_name {
        names.push(named(ctx, &Some(n.clone()), &None)?);
    }
    for n in i.log_group_names.iter().flatten() {
        names.push(named(ctx, &Some(n.clone()), &None)?);
    }
    for n in i.log_group_identifiers.iter().flatten() {
        names.push(named(ctx, &None, &Some(n.clone()))?);
    }
    if names.is_empty() || names.len() > 50 {
        return Err(invalid("A query names from 1 to 50 log groups."));
    }
    if i.query_language.as_deref().is_some_and(|l| l != "CWLI") {
        return Err(invalid("cairn runs Logs Insights (CWLI) queries only."));
    }
    for n in &names {
        let arn = format!("{}:*", group_arn(ctx, n));
        ctx.authorize(action, &arn)?;
    }
    if i.end_time < i.start_time {
        return Err(invalid("End time must not be before start time."));
    }
    let limit = match i.limit {
        None => 1000,
        Some(l) if (1..=10_000).contains(&l) => l as usize,
        Some(l) => {
            return Err(invalid(format!(
                "1 validation error detected: Value '{l}' at 'limit' failed to satisfy constraint: Member must have value between 1 and 10000"
            )))
        }
    };
    let q = Query::parse(&i.query_string).map_err(|e| {
        ApiError::client(
            "MalformedQueryException",
            format!("Query is malformed: {e}"),
        )
    })?;
    let groups: Vec<LogGroup> = names
        .iter()
        .map(|n| existing(ctx, n))
        .collect::<Result<_, _>>()?;
    let rings: Vec<_> = groups
        .iter()
        .map(|g| super::events::ring(ctx.api, g))
        .collect();
    let id = uuid::Uuid::new_v4().to_string();
    let entry = Arc::new(Entry {
        state: Mutex::new(State {
            status: "Scheduled",
            created: ctx.now.timestamp_millis(),
            query: i.query_string.clone(),
            group: names[0].clone(),
            arns: names
                .iter()
                .map(|n| format!("{}:*", group_arn(ctx, n)))
                .collect(),
            ..Default::default()
        }),
        stop: AtomicBool::new(false),
    });
    {
        let mut all = ctx.api.queries.map();
        let running = all
            .values()
            .filter(|e| matches!(lock(e).status, "Scheduled" | "Running"))
            .count();
        if running >= CONCURRENT {
            return Err(ApiError::client(
                "LimitExceededException",
                format!("Account maximum query concurrency limit of [{CONCURRENT}] reached."),
            ));
        }
        if all.len() >= KEPT {
            let oldest = all
                .iter()
                .filter(|(_, e)| !matches!(lock(e).status, "Scheduled" | "Running"))
                .min_by_key(|(_, e)| lock(e).created)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                all.remove(&k);
            }
        }
        all.insert(id.clone(), entry.clone());
    }
    let logs = ctx.api.logs.clone();
    let account = ctx.api.opts.account.clone();
    let (from, to) = (
        i.start_time.saturating_mul(1000),
        i.end_time.saturating_add(1).saturating_mul(1000),
    );
    tokio::task::spawn_blocking(move || {
        let guard_entry = entry.clone();
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            run_query(entry, q, limit, groups, rings, logs, account, (from, to))
        }));
        if ran.is_err() {
            let mut s = lock(&guard_entry);
            s.status = "Failed";
            s.error = Some("the query failed".into());
        }
    });
    Ok(json!({ "queryId": id }))
}

/// How long a query may run (AWS: 60 minutes; cairn stops sooner).
pub const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15 * 60);

#[allow(clippy::too_many_arguments)]
fn run_query(
    entry: Arc<Entry>,
    q: Query,
    limit: usize,
    groups: Vec<LogGroup>,
    rings: Vec<cairn_logs::KeyRing>,
    logs: Arc<cairn_logs::LogStore>,
    account: String,
    (from, to): (i64, i64),
) {
    {
        let started = std::time::Instant::now();
        let mut timed_out = false;
        let mut ticks = 0u32;
        lock(&entry).status = "Running";
        let mut run = Run::new(q, limit);
        let (mut scanned, mut bytes) = (0u64, 0u64);
        let mut failed = None;
        for (g, ring) in groups.iter().zip(&rings) {
            let log = format!("{account}:{}", g.name);
            let r = logs.scan(&g.store_key(), Some(from), Some(to), None, ring, |e| {
                run.feed(&Input {
                    timestamp: e.timestamp,
                    ingestion: e.ingestion,
                    stream: e.stream,
                    group: &log,
                    message: e.message,
                });
                ticks = ticks.wrapping_add(1);
                if ticks.is_multiple_of(4096) && started.elapsed() > TIMEOUT {
                    timed_out = true;
                }
                !run.full && !timed_out && !entry.stop.load(Ordering::Relaxed)
            });
            match r {
                Ok((n, b)) => {
                    scanned += n;
                    bytes += b;
                }
                Err(e) => {
                    failed = Some(e.to_string());
                    break;
                }
            }
            if run.full || timed_out || entry.stop.load(Ordering::Relaxed) {
                break;
            }
        }
        let matched = run.matched;
        let run_failed = run.failure();
        let results = run.finish();
        let mut s = lock(&entry);
        s.matched = matched;
        s.scanned = scanned;
        s.bytes = bytes;
        s.results = results;
        s.status = if failed.is_some() || run_failed.is_some() {
            "Failed"
        } else if timed_out {
            "Timeout"
        } else if entry.stop.load(Ordering::Relaxed) {
            "Cancelled"
        } else {
            "Complete"
        };
        s.error = failed.or(run_failed);
    }
}

/// The query `id`, once the caller is authorized for `action` on every group it reads (an
/// unknown id is authorized on `*`, then not found).
fn found(ctx: &mut Ctx<'_>, action: &str, id: &str) -> Result<Arc<Entry>, ApiError> {
    let e = ctx.api.queries.map().get(id).cloned();
    let Some(e) = e else {
        ctx.authorize(action, "*")?;
        return Err(ApiError::client(
            "ResourceNotFoundException",
            format!("Query {id} does not exist."),
        ));
    };
    let arns = lock(&e).arns.clone();
    for a in &arns {
        ctx.authorize(action, a)?;
    }
    Ok(e)
}

pub(super) fn results(ctx: &mut Ctx<'_>, action: &str, i: QueryId) -> Result<Value, ApiError> {
    let e = found(ctx, action, &i.query_id)?;
    let s = lock(&e).clone();
    let rows: Vec<Value> = s
        .results
        .iter()
        .map(|r| {
            Value::Array(
                r.iter()
                    .map(|(f, v)| json!({ "field": f, "value": v }))
                    .collect(),
            )
        })
        .collect();
    Ok(json!({
        "queryLanguage": "CWLI",
        "results": rows,
        "statistics": {
            "recordsMatched": s.matched as f64,
            "recordsScanned": s.scanned as f64,
            "bytesScanned": s.bytes as f64,
        },
        "status": s.status,
    }))
}

pub(super) fn stop(ctx: &mut Ctx<'_>, action: &str, i: QueryId) -> Result<Value, ApiError> {
    let e = found(ctx, action, &i.query_id)?;
    let running = matches!(lock(&e).status, "Scheduled" | "Running");
    if running {
        // Stopped once the request's event is durable.
        ctx.defer(
            Box::new(move || {
                e.stop.store(true, Ordering::Relaxed);
                Ok(crate::edge::Committed::default())
            }),
            None,
        );
    }
    Ok(json!({ "success": running }))
}

pub(super) fn describe(
    ctx: &mut Ctx<'_>,
    action: &str,
    i: DescribeInput,
) -> Result<Value, ApiError> {
    ctx.authorize(action, "*")?;
    const STATUSES: &[&str] = &[
        "Scheduled",
        "Running",
        "Complete",
        "Failed",
        "Cancelled",
        "Timeout",
        "Unknown",
    ];
    if let Some(s) = &i.status {
        if !STATUSES.contains(&s.as_str()) {
            return Err(invalid(format!("Invalid status {s}")));
        }
    }
    let listed: Vec<(String, State)> = ctx
        .api
        .queries
        .map()
        .iter()
        .map(|(k, e)| (k.clone(), lock(e).clone()))
        .filter(|(_, s)| i.status.as_deref().is_none_or(|x| x == s.status))
        .filter(|(_, s)| i.log_group_name.as_ref().is_none_or(|g| g == &s.group))
        .collect();
    // Only queries of groups the caller may read are listed.
    let mut all = Vec::new();
    for (id, s) in listed {
        if s.arns
            .iter()
            .all(|a| ctx.authorize_with("logs:GetQueryResults", a, &[]).is_ok())
        {
            all.push((id, s));
        }
    }
    all.sort_by_key(|(_, s)| std::cmp::Reverse(s.created));
    let views: Vec<Value> = all
        .iter()
        .map(|(id, s)| {
            json!({
                "queryLanguage": "CWLI",
                "queryId": id,
                "queryString": s.query,
                "status": s.status,
                "createTime": s.created,
                "logGroupName": s.group,
            })
        })
        .collect();
    let (page, next) = super::groups::page(&views, i.max_results, i.next_token.as_deref(), 1000)?;
    let mut v = json!({ "queries": page });
    if let Some(n) = next {
        v["nextToken"] = json!(n);
    }
    Ok(v)
}
