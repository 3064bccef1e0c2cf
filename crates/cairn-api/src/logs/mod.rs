//! CloudWatch Logs, JSON 1.1 (`Logs_20140328.*`) — issue 12, in progress. So far the control
//! plane: log groups (`groups`: create with tags and a KMS key, delete, describe with prefix,
//! pattern and paging; retention), log streams (`streams`), tags (`tags`, and the legacy
//! TagLogGroup family). Log events (PutLogEvents, GetLogEvents, FilterLogEvents with
//! `cairn_logs::pattern`), metric filters, Insights queries and trail delivery are the rest
//! of the issue. Groups and streams are control metadata (`meta`, `logs/…` keys), written
//! only once the request's event is durable.

pub mod deliver;
mod events;
mod groups;
mod metrics;
pub mod queries;
mod streams;
mod tags;

pub use groups::LogGroup;
pub use metrics::series;

use crate::edge::{Ctx, HttpRequest};
use crate::protocol::json;
use crate::protocol::{ApiError, Protocol, Reply};
use crate::service::{BoxFuture, Service};
use serde_json::Value;

/// The prefix of CloudWatch Logs' `X-Amz-Target`.
pub const TARGET_PREFIX: &str = "Logs_20140328.";

/// The CloudWatch Logs service (signing name `logs`).
pub struct Logs;

crate::operations! {
    /// A CloudWatch Logs operation with its typed input.
    pub enum LogsOp {
        CreateLogGroup(groups::CreateGroupInput),
        DeleteLogGroup(groups::GroupName),
        DescribeLogGroups(groups::DescribeGroupsInput),
        PutRetentionPolicy(groups::RetentionInput),
        DeleteRetentionPolicy(groups::GroupName),
        CreateLogStream(streams::StreamRef),
        DeleteLogStream(streams::StreamRef),
        DescribeLogStreams(streams::DescribeStreamsInput),
        TagResource(tags::TagResourceInput),
        UntagResource(tags::UntagResourceInput),
        ListTagsForResource(tags::ResourceArn),
        TagLogGroup(tags::TagGroupInput),
        UntagLogGroup(tags::UntagGroupInput),
        ListTagsLogGroup(groups::GroupName),
        AssociateKmsKey(groups::AssociateInput),
        DisassociateKmsKey(groups::DisassociateInput),
        PutLogEvents(events::PutInput),
        GetLogEvents(events::GetInput),
        FilterLogEvents(events::FilterInput),
        PutMetricFilter(metrics::PutInput),
        DeleteMetricFilter(metrics::DeleteInput),
        DescribeMetricFilters(metrics::DescribeInput),
        TestMetricFilter(metrics::TestInput),
        StartQuery(queries::StartInput),
        StopQuery(queries::QueryId),
        GetQueryResults(queries::QueryId),
        DescribeQueries(queries::DescribeInput),
    }
}

impl LogsOp {
    pub fn mutates(name: &str) -> bool {
        !["Describe", "List", "Get", "Filter", "Test", "StartQuery"]
            .iter()
            .any(|p| name.starts_with(p))
    }
}

/// Defers a change of the log event store until the request's event is durable.
fn defer_store(
    ctx: &mut Ctx<'_>,
    change: impl FnOnce(&cairn_logs::LogStore) -> Result<(), cairn_logs::StoreError>
        + Send
        + Sync
        + 'static,
) {
    let logs = ctx.api.logs.clone();
    ctx.defer(
        Box::new(move || {
            change(&logs).map_err(events::store_error)?;
            Ok(crate::edge::Committed::default())
        }),
        None,
    );
}

/// Reads a request into its operation.
pub fn route(req: &HttpRequest) -> Result<(LogsOp, Option<Value>), ApiError> {
    json::check_content_type(req)?;
    let name = json::target_op(req, &[TARGET_PREFIX]).unwrap_or_default();
    let body = json::object(&req.body)?;
    macro_rules! i {
        () => {
            json::input(&body).map_err(invalid_input)?
        };
    }
    use LogsOp as Op;
    let op = match name {
        "CreateLogGroup" => Op::CreateLogGroup(i!()),
        "DeleteLogGroup" => Op::DeleteLogGroup(i!()),
        "DescribeLogGroups" => Op::DescribeLogGroups(i!()),
        "PutRetentionPolicy" => Op::PutRetentionPolicy(i!()),
        "DeleteRetentionPolicy" => Op::DeleteRetentionPolicy(i!()),
        "CreateLogStream" => Op::CreateLogStream(i!()),
        "DeleteLogStream" => Op::DeleteLogStream(i!()),
        "DescribeLogStreams" => Op::DescribeLogStreams(i!()),
        "TagResource" => Op::TagResource(i!()),
        "UntagResource" => Op::UntagResource(i!()),
        "ListTagsForResource" => Op::ListTagsForResource(i!()),
        "TagLogGroup" => Op::TagLogGroup(i!()),
        "UntagLogGroup" => Op::UntagLogGroup(i!()),
        "ListTagsLogGroup" => Op::ListTagsLogGroup(i!()),
        "AssociateKmsKey" => Op::AssociateKmsKey(i!()),
        "DisassociateKmsKey" => Op::DisassociateKmsKey(i!()),
        "PutLogEvents" => Op::PutLogEvents(i!()),
        "GetLogEvents" => Op::GetLogEvents(i!()),
        "FilterLogEvents" => Op::FilterLogEvents(i!()),
        "PutMetricFilter" => Op::PutMetricFilter(i!()),
        "DeleteMetricFilter" => Op::DeleteMetricFilter(i!()),
        "DescribeMetricFilters" => Op::DescribeMetricFilters(i!()),
        "TestMetricFilter" => Op::TestMetricFilter(i!()),
        "StartQuery" => Op::StartQuery(i!()),
        "StopQuery" => Op::StopQuery(i!()),
        "GetQueryResults" => Op::GetQueryResults(i!()),
        "DescribeQueries" => Op::DescribeQueries(i!()),
        op => {
            return Err(ApiError::client(
                "UnknownOperationException",
                format!("cairn does not support the CloudWatch Logs operation {op} yet"),
            ))
        }
    };
    Ok((op, logged_params(name, &body)))
}

/// What the record keeps of a request: log event messages are the caller's data, so
/// PutLogEvents is recorded by its group, stream and event count, not its content; test
/// messages likewise.
fn logged_params(name: &str, body: &serde_json::Map<String, Value>) -> Option<Value> {
    match name {
        "PutLogEvents" => Some(serde_json::json!({
            "logGroupName": body.get("logGroupName"),
            "logStreamName": body.get("logStreamName"),
            "logEventCount": body.get("logEvents").and_then(|e| e.as_array()).map(|a| a.len()),
        })),
        "TestMetricFilter" => Some(serde_json::json!({
            "filterPattern": body.get("filterPattern"),
        })),
        _ => json::logged(body),
    }
}

/// A member of the wrong type or a missing required member (Logs answers
/// InvalidParameterException for both).
fn invalid_input(e: ApiError) -> ApiError {
    invalid(
        e.message
            .trim_start_matches("Invalid request: ")
            .to_string(),
    )
}

pub(crate) fn invalid(m: impl Into<String>) -> ApiError {
    ApiError::client("InvalidParameterException", m)
}

impl Service for Logs {
    type Op = (LogsOp, Option<Value>);

    fn signing_name(&self) -> &'static str {
        "logs"
    }
    fn event_source(&self) -> &'static str {
        "logs.amazonaws.com"
    }
    fn protocol(&self) -> Protocol {
        Protocol::Json
    }
    fn claims(&self, req: &HttpRequest) -> bool {
        json::target_op(req, &[TARGET_PREFIX]).is_some()
    }
    fn operation_name(&self, req: &HttpRequest) -> Result<String, ApiError> {
        json::target_name(req, &[TARGET_PREFIX])
    }
    fn operations(&self) -> &'static [&'static str] {
        LogsOp::NAMES
    }
    fn mutates(&self, name: &str) -> bool {
        LogsOp::mutates(name)
    }
    fn route(&self, _api: &crate::Api, req: &HttpRequest) -> Result<Self::Op, ApiError> {
        route(req)
    }
    fn audit_unrouted(&self, ctx: &mut Ctx<'_>, req: &HttpRequest, name: &str) {
        // Even a request that does not parse keeps its messages out of the record.
        ctx.audit.request_parameters = match name {
            "PutLogEvents" | "TestMetricFilter" => serde_json::from_slice::<Value>(&req.body)
                .ok()
                .and_then(|v| v.as_object().cloned())
                .and_then(|m| logged_params(name, &m))
                .or(Some(serde_json::json!({}))),
            _ => json::logged_body(req),
        };
    }
    fn handle<'a>(
        &'a self,
        ctx: &'a mut Ctx<'_>,
        (op, logged): Self::Op,
    ) -> BoxFuture<'a, Result<Reply, ApiError>> {
        Box::pin(async move {
            let name = op.name();
            ctx.audit.read_only = !LogsOp::mutates(name);
            ctx.audit.request_parameters = logged;
            let action = format!("logs:{name}");
            let action = action.as_str();
            use LogsOp as Op;
            let out = match op {
                Op::CreateLogGroup(i) => groups::create(ctx, action, i).await?,
                Op::DeleteLogGroup(g) => groups::delete(ctx, action, g).await?,
                Op::DescribeLogGroups(i) => groups::describe(ctx, action, i)?,
                Op::PutRetentionPolicy(i) => groups::put_retention(ctx, action, i).await?,
                Op::DeleteRetentionPolicy(g) => groups::delete_retention(ctx, action, g).await?,
                Op::CreateLogStream(s) => streams::create(ctx, action, s).await?,
                Op::DeleteLogStream(s) => streams::delete(ctx, action, s).await?,
                Op::DescribeLogStreams(i) => streams::describe(ctx, action, i)?,
                Op::TagResource(i) => tags::tag_resource(ctx, action, i).await?,
                Op::UntagResource(i) => tags::untag_resource(ctx, action, i).await?,
                Op::ListTagsForResource(r) => tags::list_for_resource(ctx, action, r)?,
                Op::TagLogGroup(i) => tags::tag_group(ctx, action, i).await?,
                Op::UntagLogGroup(i) => tags::untag_group(ctx, action, i).await?,
                Op::ListTagsLogGroup(g) => tags::list_group(ctx, action, g)?,
                Op::AssociateKmsKey(i) => groups::associate_key(ctx, action, i).await?,
                Op::DisassociateKmsKey(i) => groups::disassociate_key(ctx, action, i).await?,
                Op::PutLogEvents(i) => events::put(ctx, action, i).await?,
                Op::GetLogEvents(i) => scanning(|| events::get(ctx, action, i))?,
                Op::FilterLogEvents(i) => scanning(|| events::filter(ctx, action, i))?,
                Op::PutMetricFilter(i) => metrics::put(ctx, action, i).await?,
                Op::DeleteMetricFilter(i) => metrics::delete(ctx, action, i).await?,
                Op::DescribeMetricFilters(i) => metrics::describe(ctx, action, i)?,
                Op::TestMetricFilter(i) => metrics::test(ctx, action, i)?,
                Op::StartQuery(i) => queries::start(ctx, action, i)?,
                Op::StopQuery(i) => queries::stop(ctx, action, i)?,
                Op::GetQueryResults(i) => queries::results(ctx, action, i)?,
                Op::DescribeQueries(i) => queries::describe(ctx, action, i)?,
            };
            Ok(json::reply(&out))
        })
    }
}

/// Runs a scan of stored events (up to seconds of work) without holding up the other
/// requests of this runtime thread: on a multi-threaded runtime, the thread hands its other
/// tasks on first.
fn scanning<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Retention: deletes every group's events older than its retention period (at the API's
/// clock, so tests can move time). Returns how many events went.
pub fn expire_retained(api: &crate::Api) -> Result<u64, ApiError> {
    let now = api.clock.now().timestamp_millis();
    let mut gone = 0;
    for (_, g) in api.meta.scan::<LogGroup>("logs/group/")? {
        if let Some(days) = g.retention_days {
            gone += api
                .logs
                .expire(&g.store_key(), now - days as i64 * 86_400_000)
                .map_err(events::store_error)?;
        }
    }
    Ok(gone)
}

/// Runs [`expire_retained`] every `every` on the runtime's blocking pool.
pub fn spawn_retention(
    api: std::sync::Arc<crate::Api>,
    every: std::time::Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let a = api.clone();
            match tokio::task::spawn_blocking(move || expire_retained(&a)).await {
                Ok(Ok(0)) => {}
                Ok(Ok(n)) => tracing::info!(events = n, "log retention removed expired events"),
                Ok(Err(e)) => tracing::warn!(error = %e.message, "log retention failed"),
                Err(e) => tracing::warn!(error = %e, "log retention task panicked"),
            }
        }
    })
}
