//! CloudTrail Data (`cloudtrail-data`, restJson, spec §5.5): PutAuditEvents. Accepted audit
//! events are journaled like every other event, in their own category (`ActivityAuditLog`,
//! with the application's event under `eventData` and the real caller and channel written by
//! cairn around it): only trails whose advanced selectors name that category deliver them,
//! never as management events. The request itself is a data event on its channel.

use super::channels::{authorized_channel, Api};
use crate::edge::{Ctx, HttpRequest};
use crate::protocol::json;
use crate::protocol::{ApiError, Protocol, Reply};
use crate::service::{BoxFuture, Service};
use base64::Engine;
use cairn_record::record::category;
use cairn_record::{builder, Resource};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// The CloudTrail Data service (signing name `cloudtrail-data`).
pub struct CloudTrailData;

crate::operations! {
    /// A CloudTrail Data operation with its typed input.
    pub enum DataOp {
        PutAuditEvents(PutAuditEventsInput),
    }
}

/// PutAuditEvents' input: the channel and external id from the query, the events from the
/// body.
#[derive(Debug, Clone)]
pub struct PutAuditEventsInput {
    pub channel_arn: String,
    pub external_id: Option<String>,
    pub audit_events: Vec<AuditEvent>,
}

/// One audit event as the application sends it; its content is checked per event (a bad
/// event fails alone).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    pub id: Option<String>,
    pub event_data: Option<String>,
    pub event_data_checksum: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Body {
    audit_events: Option<Vec<AuditEvent>>,
}

fn validation(m: &str) -> ApiError {
    ApiError::client("ValidationException", m.to_string())
}

/// Reads PutAuditEvents' input, as the service validates it.
pub fn route(req: &HttpRequest) -> Result<DataOp, ApiError> {
    if req.method != "POST" || req.path != "/PutAuditEvents" {
        return Err(ApiError::client(
            "UnsupportedOperationException",
            "Unknown cloudtrail-data operation.",
        ));
    }
    let channel_arn = req
        .query_param("channelArn")
        .filter(|c| !c.is_empty())
        .ok_or_else(|| ApiError::client("InvalidChannelARN", "channelArn is required."))?;
    let external_id = req.query_param("externalId");
    if let Some(ext) = &external_id {
        let ok = (2..=1224).contains(&ext.len())
            && ext
                .chars()
                .all(|c| c.is_alphanumeric() || c == '_' || "+=,.@:/-".contains(c));
        if !ok {
            return Err(validation(
                "externalId must be 2-1224 characters matching [\\w+=,.@:/-]*.",
            ));
        }
    }
    let body: Body = serde_json::from_slice(&req.body)
        .map_err(|_| validation("The request body is not valid JSON."))?;
    let audit_events = body.audit_events.unwrap_or_default();
    if audit_events.is_empty() || audit_events.len() > 100 {
        return Err(validation("auditEvents must hold 1 to 100 events."));
    }
    let mut ids = std::collections::HashSet::new();
    for e in &audit_events {
        let id = e.id.as_deref().unwrap_or("");
        if !ids.insert(id) {
            return Err(ApiError::client(
                "DuplicatedAuditEventId",
                format!("Audit event id {id} appears more than once in the request."),
            ));
        }
    }
    Ok(DataOp::PutAuditEvents(PutAuditEventsInput {
        channel_arn,
        external_id,
        audit_events,
    }))
}

impl DataOp {
    /// Whether operation `name` changes state.
    pub fn mutates(name: &str) -> bool {
        name == "PutAuditEvents"
    }
}

impl Service for CloudTrailData {
    type Op = DataOp;

    fn signing_name(&self) -> &'static str {
        "cloudtrail-data"
    }
    fn event_source(&self) -> &'static str {
        "cloudtrail-data.amazonaws.com"
    }
    fn protocol(&self) -> Protocol {
        Protocol::RestJson
    }
    fn claims(&self, req: &HttpRequest) -> bool {
        req.path == "/PutAuditEvents"
    }
    fn claims_unsigned(&self, req: &HttpRequest) -> bool {
        req.path.starts_with("/PutAuditEvents") || req.path.starts_with("/channels")
    }
    fn operation_name(&self, req: &HttpRequest) -> Result<String, ApiError> {
        Ok(if req.path == "/PutAuditEvents" && req.method == "POST" {
            "PutAuditEvents".into()
        } else {
            "UnknownOperation".into()
        })
    }
    fn operations(&self) -> &'static [&'static str] {
        DataOp::NAMES
    }
    fn mutates(&self, name: &str) -> bool {
        DataOp::mutates(name)
    }
    fn route(&self, _api: &crate::Api, req: &HttpRequest) -> Result<DataOp, ApiError> {
        route(req)
    }
    fn audit_unrouted(&self, ctx: &mut Ctx<'_>, req: &HttpRequest, name: &str) {
        if name == "PutAuditEvents" {
            let given = req.query_param("channelArn").unwrap_or_default();
            data_event(ctx, &given);
        }
    }
    fn handle<'a>(
        &'a self,
        ctx: &'a mut Ctx<'_>,
        op: DataOp,
    ) -> BoxFuture<'a, Result<Reply, ApiError>> {
        match op {
            DataOp::PutAuditEvents(i) => Box::pin(put_audit_events(ctx, i)),
        }
    }
}

/// Records the request as a data event on the channel `arn`, as AWS does.
fn data_event(ctx: &mut Ctx<'_>, arn: &str) {
    let mut rec = builder::base(
        "cloudtrail-data.amazonaws.com",
        "PutAuditEvents",
        &ctx.region,
        ctx.now,
        category::DATA,
    );
    rec.management_event = Some(false);
    rec.read_only = Some(false);
    rec.request_parameters = Some(json!({"channelArn": arn}));
    rec.resources = Some(vec![Resource {
        account_id: Some(ctx.api.opts.account.clone()),
        resource_type: "AWS::CloudTrail::Channel".into(),
        arn: Some(arn.to_string()),
        arn_prefix: None,
    }]);
    ctx.audit.data_event = Some(rec);
}

const REQUIRED: [&str; 7] = [
    "version",
    "userIdentity",
    "eventSource",
    "eventName",
    "eventTime",
    "UID",
    "recipientAccountId",
];

/// Checks one audit event; `Err((code, message))` is a per-event failure.
fn check_event(entry: &AuditEvent, account: &str) -> Result<Value, (&'static str, String)> {
    let data = entry
        .event_data
        .as_deref()
        .ok_or(("FieldNotFound", "eventData is required.".to_string()))?;
    if let Some(sum) = &entry.event_data_checksum {
        let want =
            base64::engine::general_purpose::STANDARD.encode(Sha256::digest(data.as_bytes()));
        if aws_lc_rs::constant_time::verify_slices_are_equal(sum.as_bytes(), want.as_bytes())
            .is_err()
        {
            return Err((
                "InvalidChecksum",
                "eventDataChecksum does not match the SHA-256 of eventData.".into(),
            ));
        }
    }
    let v: Value = serde_json::from_str(data)
        .map_err(|_| ("InvalidData", "eventData is not a JSON object.".to_string()))?;
    let obj = v
        .as_object()
        .ok_or(("InvalidData", "eventData is not a JSON object.".to_string()))?;
    for f in REQUIRED {
        if !obj.contains_key(f) {
            return Err(("FieldNotFound", format!("Required field {f} is missing.")));
        }
    }
    let ui = obj["userIdentity"]
        .as_object()
        .ok_or(("InvalidData", "userIdentity must be an object.".to_string()))?;
    for f in ["type", "principalId"] {
        if !ui.get(f).is_some_and(Value::is_string) {
            return Err((
                "FieldNotFound",
                format!("Required field userIdentity.{f} is missing."),
            ));
        }
    }
    let limits: [(&str, usize); 9] = [
        ("version", 256),
        ("userAgent", 1024),
        ("eventSource", 1024),
        ("eventName", 1024),
        ("UID", 1024),
        ("errorCode", 256),
        ("errorMessage", 256),
        ("requestParameters", 100 * 1024),
        ("responseElements", 100 * 1024),
    ];
    for (f, max) in limits {
        if let Some(x) = obj.get(f) {
            let len = match x {
                Value::String(s) => s.len(),
                other => other.to_string().len(),
            };
            if len > max {
                return Err(("FieldTooLong", format!("Field {f} is longer than {max}.")));
            }
        }
    }
    if obj
        .get("additionalEventData")
        .is_some_and(|x| x.to_string().len() > 28 * 1024)
    {
        return Err((
            "FieldTooLong",
            "Field additionalEventData is longer than 28 KB.".into(),
        ));
    }
    for f in ["eventSource", "eventName", "eventTime", "UID", "version"] {
        if !obj[f].is_string() {
            return Err(("InvalidData", format!("Field {f} must be a string.")));
        }
    }
    let time_ok = obj["eventTime"].as_str().is_some_and(|t| {
        chrono::NaiveDateTime::parse_from_str(t.trim_end_matches('Z'), "%Y-%m-%dT%H:%M:%S").is_ok()
    });
    if !time_ok {
        return Err((
            "InvalidData",
            "eventTime must be yyyy-MM-DDTHH:mm:ss (UTC).".into(),
        ));
    }
    if obj["recipientAccountId"].as_str() != Some(account) {
        return Err((
            "InvalidRecipient",
            "recipientAccountId must be the channel owner's account.".into(),
        ));
    }
    Ok(v)
}

#[derive(Serialize)]
struct Accepted {
    id: String,
    #[serde(rename = "eventID")]
    event_id: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Refused {
    id: String,
    error_code: &'static str,
    error_message: String,
}

#[derive(Serialize)]
struct Outcome {
    successful: Vec<Accepted>,
    failed: Vec<Refused>,
}

use super::audit_ids::{self, CarriedIds, Claim};

async fn put_audit_events(ctx: &mut Ctx<'_>, i: PutAuditEventsInput) -> Result<Reply, ApiError> {
    let account = ctx.api.opts.account.clone();
    data_event(ctx, &i.channel_arn);
    let channel = authorized_channel(
        ctx,
        &i.channel_arn,
        "cloudtrail-data:PutAuditEvents",
        Api::Data,
    )?;
    let channel_arn = channel.arn(&account);
    if let Some(r) = ctx.audit.data_event.as_mut() {
        for res in r.resources.iter_mut().flatten() {
            res.arn = Some(channel_arn.clone());
        }
    }
    let mut successful = Vec::new();
    let mut failed = Vec::new();
    let mut records = Vec::new();
    // Idempotent on (channel, id): an id already stored is answered with its eventID and
    // not stored again; one being stored by another request is waited for.
    let ids = ctx.api.audit_ids.clone();
    let mut guard = ids.guard();
    let mut mark = cairn_trail::entry::AuditIds {
        channel: channel_arn.clone(),
        time: ctx.now.timestamp(),
        ids: vec![],
    };
    // Check every event first; then claim the ids of the good ones in one global order (by
    // key), so two requests holding some of each other's ids cannot wait on each other.
    let mut checked = Vec::with_capacity(i.audit_events.len());
    for e in &i.audit_events {
        let id = e.id.clone().unwrap_or_default();
        let id_ok = (1..=128).contains(&id.len())
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        let outcome = if id_ok {
            check_event(e, &account)
        } else {
            Err((
                "InvalidData",
                "id must be 1-128 characters of [-_A-Za-z0-9].".to_string(),
            ))
        };
        checked.push((id, outcome));
    }
    let mut order: Vec<(audit_ids::Key, &str)> = checked
        .iter()
        .filter(|(_, o)| o.is_ok())
        .map(|(id, _)| (audit_ids::key(&channel_arn, id), id.as_str()))
        .collect();
    order.sort();
    let mut claims = std::collections::HashMap::new();
    for (_, id) in order {
        let c = ids
            .claim(&mut guard, &channel_arn, id)
            .await
            .map_err(ApiError::unavailable)?;
        claims.insert(id.to_string(), c);
    }
    for (id, outcome) in checked {
        let refuse = |code, msg: &str| Refused {
            id: id.clone(),
            error_code: code,
            error_message: msg.to_string(),
        };
        let data = match outcome {
            Err((code, msg)) => {
                failed.push(refuse(code, &msg));
                continue;
            }
            Ok(data) => data,
        };
        if let Some(Claim::Stored(event_id)) = claims.remove(&id) {
            successful.push(Accepted { id, event_id });
            continue;
        }
        match builder::audit_event(
            &data,
            &ctx.region,
            &account,
            &channel_arn,
            ctx.now,
            ctx.caller.identity.clone(),
            Some(ctx.client.peer.to_string()),
            ctx.client.user_agent.clone(),
        ) {
            Some(r) => {
                guard.push(audit_ids::key(&channel_arn, &id), r.event_id.clone());
                mark.ids.push((id.clone(), r.event_id.clone()));
                successful.push(Accepted {
                    id,
                    event_id: r.event_id.clone(),
                });
                records.push(r);
            }
            None => failed.push(refuse(
                "InvalidData",
                "eventData is missing required fields.",
            )),
        }
    }
    // The accepted events are journaled with this request's own event, in one batch: every
    // one is durable before the answer names it successful, and none is without the record
    // of the request that brought it.
    ctx.audit.carried = records;
    if !mark.ids.is_empty() {
        ctx.audit.carried_ids = Some(CarriedIds { mark, guard });
    }
    ctx.audit.additional_event_data = Some(json!({
        "successful": successful.len(), "failed": failed.len()
    }));
    Ok(json::rest_reply(&Outcome { successful, failed }))
}
