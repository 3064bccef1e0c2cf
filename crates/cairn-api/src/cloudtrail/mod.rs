//! CloudTrail, JSON 1.1 (spec §5). The router ([`route`]) reads the `X-Amz-Target` and the
//! body once into a [`CloudTrailOp`] carrying its typed input; the families are `trails`
//! (create, update, delete, describe), `logging` (status, start/stop, public keys, flush),
//! `selectors` (event and insight selectors), `tags`, `lookup` (LookupEvents over
//! [`history`]) and `channels`. CloudTrail Data's PutAuditEvents is its own service
//! ([`data`]).
//!
//! Trail changes go through the engine as journal commands, made only once the request's
//! event is durable; a handler waits until its command is applied, so the caller reads its
//! own write.

pub mod audit_ids;
pub mod channels;
pub mod data;
pub mod history;
mod logging;
mod lookup;
mod selectors;
mod tags;
mod trails;
pub use trails::cloud_watch_target;

use crate::edge::{Committed, Ctx, HttpRequest};
use crate::protocol::json;
use crate::protocol::{ApiError, Protocol, Reply, X_AMZ_TARGET};
use crate::service::{BoxFuture, Service};
use cairn_trail::TrailCommand;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

/// The prefix of CloudTrail's `X-Amz-Target`.
pub const TARGET_PREFIX: &str = "com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.";
/// The short form the AWS SDK for Go v2 (and so Terraform) sends.
pub const TARGET_SHORT_PREFIX: &str = "CloudTrail_20131101.";

/// Both target prefixes CloudTrail accepts.
const TARGETS: &[&str] = &[TARGET_PREFIX, TARGET_SHORT_PREFIX];

/// The CloudTrail service (signing name `cloudtrail`).
pub struct CloudTrail;

crate::operations! {
    /// A CloudTrail operation with its typed input, as the router read it.
    pub enum CloudTrailOp {
        CreateTrail(trails::TrailFields),
        UpdateTrail(trails::TrailFields),
        DeleteTrail(TrailId),
        GetTrail(TrailId),
        DescribeTrails(trails::DescribeTrailsInput),
        ListTrails,
        GetTrailStatus(TrailId),
        StartLogging(TrailId),
        StopLogging(TrailId),
        PutEventSelectors(selectors::PutEventSelectorsInput),
        GetEventSelectors(TrailId),
        PutInsightSelectors(selectors::PutInsightSelectorsInput),
        GetInsightSelectors(TrailId),
        AddTags(tags::TagsInput),
        RemoveTags(tags::TagsInput),
        ListTags(tags::ListTagsInput),
        ListPublicKeys(logging::TimeRange),
        LookupEvents(lookup::LookupEventsInput),
        CreateChannel(channels::CreateChannelInput),
        GetChannel(channels::ChannelRef),
        ListChannels,
        DeleteChannel(channels::ChannelRef),
        /// cairn's extension: deliver what is pending and close open digest windows now.
        CairnFlushTrail(TrailId),
    }
}

impl CloudTrailOp {
    /// Reads change nothing.
    pub fn read_only(&self) -> bool {
        !CloudTrailOp::mutates(self.name())
    }

    /// Whether operation `name` changes state.
    pub fn mutates(name: &str) -> bool {
        !["Get", "Describe", "List", "Lookup"]
            .iter()
            .any(|p| name.starts_with(p))
    }

    /// The IAM action that authorizes it.
    pub fn action(&self) -> String {
        format!("cloudtrail:{}", self.name())
    }
}

/// A trail named by a request (a name or an ARN; never empty).
#[derive(Debug, Clone)]
pub struct TrailId(pub String);

/// Operations of the model that cairn does not implement (answered with
/// UnsupportedOperationException rather than "unknown").
pub const UNSUPPORTED: &[&str] = &[
    "CancelQuery",
    "CreateDashboard",
    "CreateEventDataStore",
    "DeleteDashboard",
    "DeleteEventDataStore",
    "DeleteResourcePolicy",
    "DeregisterOrganizationDelegatedAdmin",
    "DescribeQuery",
    "DisableFederation",
    "EnableFederation",
    "GenerateQuery",
    "GetDashboard",
    "GetEventConfiguration",
    "GetEventDataStore",
    "GetImport",
    "GetQueryResults",
    "GetResourcePolicy",
    "ListDashboards",
    "ListEventDataStores",
    "ListImportFailures",
    "ListImports",
    "ListInsightsData",
    "ListInsightsMetricData",
    "ListQueries",
    "PutEventConfiguration",
    "PutResourcePolicy",
    "RegisterOrganizationDelegatedAdmin",
    "RestoreEventDataStore",
    "SearchSampleQueries",
    "StartDashboardRefresh",
    "StartEventDataStoreIngestion",
    "StartImport",
    "StartQuery",
    "StopEventDataStoreIngestion",
    "StopImport",
    "UpdateChannel",
    "UpdateDashboard",
    "UpdateEventDataStore",
];

/// A routed CloudTrail request: the operation and its parameters as CloudTrail logs them.
pub struct CloudTrailCall {
    pub op: CloudTrailOp,
    pub logged: Option<Value>,
}

/// Reads a request into its operation: the target names it, the body holds its input.
pub fn route(req: &HttpRequest) -> Result<CloudTrailCall, ApiError> {
    json::check_content_type(req)?;
    let name = json::target_op(req, TARGETS).unwrap_or_default();
    let body = json::object(&req.body)?;
    let id = |field: &str| trail_id(&body, field);
    use CloudTrailOp as Op;
    let op = match name {
        "CreateTrail" => Op::CreateTrail(json::input(&body)?),
        "UpdateTrail" => Op::UpdateTrail(json::input(&body)?),
        "DeleteTrail" => Op::DeleteTrail(id("Name")?),
        "GetTrail" => Op::GetTrail(id("Name")?),
        "DescribeTrails" => Op::DescribeTrails(json::input(&body)?),
        "ListTrails" => Op::ListTrails,
        "GetTrailStatus" => Op::GetTrailStatus(id("Name")?),
        "StartLogging" => Op::StartLogging(id("Name")?),
        "StopLogging" => Op::StopLogging(id("Name")?),
        "PutEventSelectors" => Op::PutEventSelectors(selectors::put_event_selectors_input(&body)?),
        "GetEventSelectors" => Op::GetEventSelectors(id("TrailName")?),
        "PutInsightSelectors" => {
            Op::PutInsightSelectors(selectors::put_insight_selectors_input(&body)?)
        }
        "GetInsightSelectors" => Op::GetInsightSelectors(id("TrailName")?),
        "AddTags" => Op::AddTags(json::input(&body)?),
        "RemoveTags" => Op::RemoveTags(json::input(&body)?),
        "ListTags" => Op::ListTags(json::input(&body)?),
        "ListPublicKeys" => Op::ListPublicKeys(json::input(&body)?),
        "LookupEvents" => Op::LookupEvents(lookup::input(&body)?),
        "CreateChannel" => Op::CreateChannel(json::input(&body)?),
        "GetChannel" => Op::GetChannel(json::input(&body)?),
        "ListChannels" => Op::ListChannels,
        "DeleteChannel" => Op::DeleteChannel(json::input(&body)?),
        "CairnFlushTrail" => Op::CairnFlushTrail(id("Name")?),
        op if UNSUPPORTED.contains(&op) => {
            return Err(ApiError::client(
                "UnsupportedOperationException",
                format!("cairn does not support {op}."),
            ))
        }
        op => {
            return Err(ApiError::client(
                "UnknownOperationException",
                format!("Unknown operation {op}"),
            ))
        }
    };
    Ok(CloudTrailCall {
        op,
        logged: json::logged(&body),
    })
}

/// The trail a request names in `field`: a non-empty string.
fn trail_id(body: &Map<String, Value>, field: &str) -> Result<TrailId, ApiError> {
    match body.get(field) {
        Some(Value::String(s)) if !s.is_empty() => Ok(TrailId(s.clone())),
        None | Some(Value::Null) | Some(Value::String(_)) => Err(ApiError::client(
            "InvalidTrailNameException",
            "Trail name or ARN can only contain uppercase letters, lowercase letters, numbers, periods (.), hyphens (-), and underscores (_).",
        )),
        Some(_) => Err(ApiError::serialization(format!("Expected a string for {field}"))),
    }
}

impl Service for CloudTrail {
    type Op = CloudTrailCall;

    fn signing_name(&self) -> &'static str {
        "cloudtrail"
    }
    fn event_source(&self) -> &'static str {
        "cloudtrail.amazonaws.com"
    }
    fn protocol(&self) -> Protocol {
        Protocol::Json
    }
    fn claims(&self, req: &HttpRequest) -> bool {
        json::target_op(req, TARGETS).is_some()
    }
    fn claims_unsigned(&self, req: &HttpRequest) -> bool {
        req.header(X_AMZ_TARGET).is_some()
    }
    fn operation_name(&self, req: &HttpRequest) -> Result<String, ApiError> {
        json::target_name(req, TARGETS)
    }
    fn operations(&self) -> &'static [&'static str] {
        CloudTrailOp::NAMES
    }
    fn mutates(&self, name: &str) -> bool {
        CloudTrailOp::mutates(name)
    }
    fn route(&self, _api: &crate::Api, req: &HttpRequest) -> Result<CloudTrailCall, ApiError> {
        route(req)
    }
    fn audit_unrouted(&self, ctx: &mut Ctx<'_>, req: &HttpRequest, _name: &str) {
        // A body that parses is logged even when its inputs do not route.
        ctx.audit.request_parameters = json::logged_body(req);
    }
    fn handle<'a>(
        &'a self,
        ctx: &'a mut Ctx<'_>,
        call: CloudTrailCall,
    ) -> BoxFuture<'a, Result<Reply, ApiError>> {
        Box::pin(handle(ctx, call))
    }
}

async fn handle(ctx: &mut Ctx<'_>, call: CloudTrailCall) -> Result<Reply, ApiError> {
    ctx.audit.read_only = call.op.read_only();
    ctx.audit.request_parameters = call.logged;
    let action = call.op.action();
    let action = action.as_str();
    use CloudTrailOp as Op;
    let out = match call.op {
        Op::CreateTrail(i) => trails::create(ctx, action, i).await?,
        Op::UpdateTrail(i) => trails::update(ctx, action, i).await?,
        Op::DeleteTrail(t) => trails::delete(ctx, action, t).await?,
        Op::GetTrail(t) => trails::get(ctx, action, t)?,
        Op::DescribeTrails(i) => trails::describe(ctx, action, i)?,
        Op::ListTrails => trails::list(ctx, action)?,
        Op::GetTrailStatus(t) => logging::status(ctx, action, t)?,
        Op::StartLogging(t) => logging::start(ctx, action, t)?,
        Op::StopLogging(t) => logging::stop(ctx, action, t)?,
        Op::ListPublicKeys(r) => logging::public_keys(ctx, action, r)?,
        Op::CairnFlushTrail(t) => logging::flush(ctx, action, t)?,
        Op::PutEventSelectors(i) => selectors::put_event(ctx, action, i).await?,
        Op::GetEventSelectors(t) => selectors::get_event(ctx, action, t)?,
        Op::PutInsightSelectors(i) => selectors::put_insight(ctx, action, i)?,
        Op::GetInsightSelectors(t) => selectors::get_insight(ctx, action, t)?,
        Op::AddTags(i) => tags::change(ctx, action, i, true)?,
        Op::RemoveTags(i) => tags::change(ctx, action, i, false)?,
        Op::ListTags(i) => tags::list(ctx, action, i)?,
        Op::LookupEvents(i) => lookup::lookup_events(ctx, action, i).await?,
        Op::CreateChannel(i) => channels::create(ctx, action, i).await?,
        Op::GetChannel(c) => channels::get(ctx, action, c)?,
        Op::ListChannels => channels::list(ctx, action)?,
        Op::DeleteChannel(c) => channels::delete(ctx, action, c)?,
    };
    // CloudTrail logs responseElements for writes with a body; null otherwise. Only a write
    // reads its answer back as a `Value`.
    if !ctx.audit.read_only {
        let v: Value = serde_json::from_slice(&out.0).map_err(ApiError::internal)?;
        if v.as_object().is_some_and(|m| !m.is_empty()) {
            ctx.audit.response_elements = Some(json::logged_answer(&v));
        }
    }
    Ok(out.into_reply())
}

/// A CloudTrail handler's output as JSON, serialized once from its typed shape: a read's
/// answer never passes through a `serde_json::Value` (building one and serializing it was
/// ~3% of a server's CPU under `bench api`, whose GetTrailStatus is what monitoring polls).
pub(crate) struct Json(Vec<u8>);

impl Json {
    pub(crate) fn into_reply(self) -> Reply {
        json::reply_serialized(self.0)
    }
}

/// What a CloudTrail handler answers: the JSON of its output, or an error.
pub(crate) type Answer = Result<Json, ApiError>;

/// An answer serialized from its typed shape.
pub(crate) fn out<T: Serialize>(v: &T) -> Answer {
    serde_json::to_vec(v).map(Json).map_err(ApiError::internal)
}

/// The empty answer `{}`.
pub(crate) fn empty() -> Json {
    Json(b"{}".to_vec())
}

/// A member read from an already-parsed body with its own error code for a bad shape.
pub(crate) fn member<T: DeserializeOwned>(
    body: &Map<String, Value>,
    field: &str,
    bad: impl FnOnce(String) -> ApiError,
) -> Result<Option<T>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => T::deserialize(v).map(Some).map_err(|e| bad(e.to_string())),
    }
}

pub(crate) fn map_trail_error(e: cairn_trail::TrailError) -> ApiError {
    match e {
        cairn_trail::TrailError::Invalid(m) => ApiError::client("InvalidParameterException", m),
        cairn_trail::TrailError::Journal(j) => ApiError::unavailable(j),
        e => ApiError::internal(e),
    }
}

/// Journals a trail command in one batch with the request's own event, after it: the event
/// precedes the change (a StopLogging or DeleteTrail is delivered by the trail it ends), and
/// neither is durable without the other (an event never says a change succeeded that was
/// not recorded). The commit waits until the engine applied it (callers read their own
/// writes); a command that is durable but not yet applied is applied at the next start.
pub(crate) fn defer_command(ctx: &mut Ctx<'_>, cmd: TrailCommand) -> Result<(), ApiError> {
    cairn_trail::TrailEngine::validate_command(&cmd).map_err(map_trail_error)?;
    let engine = ctx.api.engine.clone();
    let at = std::sync::Arc::new(std::sync::OnceLock::new());
    let seq = at.clone();
    ctx.defer_journaled_command(
        cmd,
        at,
        Box::new(move || {
            let seq = *seq
                .get()
                .ok_or_else(|| ApiError::internal("a trail command was not journaled"))?;
            engine.apply_through(seq).map_err(ApiError::internal)?;
            Ok(Committed::default())
        }),
    );
    Ok(())
}
