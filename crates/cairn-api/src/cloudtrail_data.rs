//! CloudTrail Lake integrations: channels (CloudTrail JSON API) and `cloudtrail-data`
//! PutAuditEvents (rest-json, spec §5.5). Accepted audit events are journaled like every
//! other event, in their own category (`ActivityAuditLog`, with the application's event under
//! `eventData` and the real caller and channel written by cairn around it): only trails whose
//! advanced selectors name that category deliver them, never as management events.

use crate::cloudtrail::Args;
use crate::edge::{Ctx, HttpRequest};
use crate::wire::{ApiError, Reply};
use base64::Engine;
use cairn_record::record::category;
use cairn_record::{builder, Resource};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Channel {
    id: String,
    name: String,
    region: String,
    source: String,
    destinations: Vec<Value>,
    created: chrono::DateTime<chrono::Utc>,
}

impl Channel {
    fn arn(&self, account: &str) -> String {
        format!(
            "arn:aws:cloudtrail:{}:{account}:channel/{}",
            self.region, self.id
        )
    }
}

pub fn operation(req: &HttpRequest) -> String {
    if req.path == "/PutAuditEvents" && req.method == "POST" {
        "PutAuditEvents".into()
    } else {
        "UnknownOperation".into()
    }
}

fn channel_not_found(id: &str) -> ApiError {
    ApiError::client(
        "ChannelNotFoundException",
        format!("Channel {id} not found."),
    )
}

/// The id a channel reference (ARN or id) names. `data_api` selects the cloudtrail-data
/// error names. An ARN must be cairn's exactly (partition, service, a served region, this
/// account, `channel/<id>`).
fn channel_id(ctx: &Ctx<'_>, given: &str, data_api: bool) -> Result<String, ApiError> {
    if !given.starts_with("arn:") {
        let ok = !given.is_empty()
            && given.len() <= 256
            && given
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if ok {
            return Ok(given.to_string());
        }
    }
    let a = given.parse::<cairn_record::Arn>().ok().filter(|a| {
        a.partition == cairn_record::arn::PARTITION
            && a.service == "cloudtrail"
            && ctx.api.opts.regions.contains(&a.region)
            && a.account == ctx.api.opts.account
            && a.resource.starts_with("channel/")
            && a.resource.len() > "channel/".len()
    });
    match a {
        Some(a) => Ok(a.resource["channel/".len()..].to_string()),
        None if data_api => Err(ApiError::client(
            "InvalidChannelARN",
            format!("Channel ARN {given} is invalid."),
        )),
        None => Err(ApiError::client(
            "ChannelARNInvalidException",
            format!("Channel ARN {given} is invalid."),
        )),
    }
}

fn lookup_channel(
    ctx: &Ctx<'_>,
    id: &str,
    given: &str,
    data_api: bool,
) -> Result<Channel, ApiError> {
    let ch: Option<Channel> = ctx.api.meta.get(&format!("channel/{id}"))?;
    ch.filter(|c| c.region == ctx.region).ok_or_else(|| {
        if data_api {
            ApiError::client("ChannelNotFound", format!("Channel {given} not found."))
        } else {
            channel_not_found(given)
        }
    })
}

/// Resolves a channel and authorizes `action` on its real ARN (or on the ARN the reference
/// denotes when there is no such channel) before saying whether it exists.
fn authorized_channel(
    ctx: &mut Ctx<'_>,
    given: &str,
    action: &str,
    data_api: bool,
) -> Result<Channel, ApiError> {
    let id = match channel_id(ctx, given, data_api) {
        Ok(id) => id,
        Err(e) => {
            ctx.no_authorization_needed();
            return Err(e);
        }
    };
    let account = ctx.api.opts.account.clone();
    let found = lookup_channel(ctx, &id, given, data_api);
    let arn = match &found {
        Ok(c) => c.arn(&account),
        Err(_) => format!("arn:aws:cloudtrail:{}:{account}:channel/{id}", ctx.region),
    };
    ctx.authorize(action, &arn)?;
    found
}

fn channel_summary(c: &Channel, account: &str) -> Value {
    json!({"ChannelArn": c.arn(account), "Name": c.name})
}

/// CreateChannel, GetChannel, ListChannels, DeleteChannel (CloudTrail JSON API).
pub async fn channel_op(ctx: &mut Ctx<'_>, op: &str, args: &Args) -> Result<Value, ApiError> {
    let account = ctx.api.opts.account.clone();
    match op {
        "CreateChannel" => {
            ctx.authorize("cloudtrail:CreateChannel", "*")?;
            let name = args.str("Name")?.unwrap_or_default();
            let name_ok = (3..=128).contains(&name.len())
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
            if !name_ok {
                return Err(ApiError::client(
                    "InvalidParameterException",
                    "Channel name must be 3-128 characters of letters, digits, '.', '_' and '-'.",
                ));
            }
            let source = args.str("Source")?.unwrap_or_default();
            if source != "Custom" {
                return Err(ApiError::client(
                    "InvalidSourceException",
                    format!("Source {source} is not supported; use Custom."),
                ));
            }
            let destinations = args.list("Destinations")?.unwrap_or_default();
            if destinations.is_empty() || destinations.len() > 200 {
                return Err(ApiError::client(
                    "InvalidParameterException",
                    "Destinations must hold 1 to 200 entries.",
                ));
            }
            for d in &destinations {
                let ty = d.get("Type").and_then(Value::as_str).unwrap_or("");
                let loc = d.get("Location").and_then(Value::as_str).unwrap_or("");
                if !matches!(ty, "EVENT_DATA_STORE" | "AWS_SERVICE") || loc.len() < 3 {
                    return Err(ApiError::client(
                        "InvalidParameterException",
                        "Each destination needs a Type (EVENT_DATA_STORE or AWS_SERVICE) and a Location.",
                    ));
                }
            }
            let guard = ctx.api.control.clone().lock_owned().await;
            let existing: Vec<(String, Channel)> = ctx.api.meta.scan("channel/")?;
            if existing.iter().any(|(_, c)| c.name == name) {
                return Err(ApiError::client(
                    "ChannelAlreadyExistsException",
                    format!("Channel {name} already exists."),
                ));
            }
            let c = Channel {
                id: uuid::Uuid::new_v4().to_string(),
                name,
                region: ctx.region.clone(),
                source,
                destinations,
                created: ctx.now,
            };
            let answer = json!({
                "ChannelArn": c.arn(&account), "Name": c.name, "Source": c.source,
                "Destinations": c.destinations, "Tags": args.list("Tags")?.unwrap_or_default()
            });
            // Made once this request's event is durable.
            ctx.defer_meta_put(format!("channel/{}", c.id), c);
            ctx.hold_until_made(guard);
            Ok(answer)
        }
        "GetChannel" => {
            let given = args.str("Channel")?.unwrap_or_default();
            let c = authorized_channel(ctx, &given, "cloudtrail:GetChannel", false)?;
            Ok(json!({
                "ChannelArn": c.arn(&account), "Name": c.name, "Source": c.source,
                "SourceConfig": {"ApplyToAllRegions": false, "AdvancedEventSelectors": []},
                "Destinations": c.destinations, "IngestionStatus": {}
            }))
        }
        "ListChannels" => {
            ctx.authorize("cloudtrail:ListChannels", "*")?;
            let all: Vec<(String, Channel)> = ctx.api.meta.scan("channel/")?;
            let list: Vec<Value> = all
                .iter()
                .filter(|(_, c)| c.region == ctx.region)
                .map(|(_, c)| channel_summary(c, &account))
                .collect();
            Ok(json!({"Channels": list}))
        }
        "DeleteChannel" => {
            let given = args.str("Channel")?.unwrap_or_default();
            let c = authorized_channel(ctx, &given, "cloudtrail:DeleteChannel", false)?;
            ctx.defer_meta_delete(format!("channel/{}", c.id));
            Ok(json!({}))
        }
        _ => unreachable!("dispatched by name"),
    }
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
fn check_event(entry: &Value, account: &str) -> Result<(String, Value), (&'static str, String)> {
    let data = entry
        .get("eventData")
        .and_then(Value::as_str)
        .ok_or(("FieldNotFound", "eventData is required.".to_string()))?;
    if let Some(sum) = entry.get("eventDataChecksum").and_then(Value::as_str) {
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
    Ok((data.to_string(), v))
}

/// `cloudtrail-data` requests.
pub async fn handle(ctx: &mut Ctx<'_>, op: &str) -> Result<Reply, ApiError> {
    if op != "PutAuditEvents" {
        ctx.no_authorization_needed();
        return Err(ApiError::client(
            "UnsupportedOperationException",
            "Unknown cloudtrail-data operation.",
        ));
    }
    let account = ctx.api.opts.account.clone();
    let given = ctx.req.query_param("channelArn").unwrap_or_default();
    // The request itself is a data event on the channel, as in AWS.
    let mut rec = builder::base(
        "cloudtrail-data.amazonaws.com",
        "PutAuditEvents",
        &ctx.region,
        ctx.now,
        category::DATA,
    );
    rec.management_event = Some(false);
    rec.read_only = Some(false);
    rec.request_parameters = Some(json!({"channelArn": given}));
    rec.resources = Some(vec![Resource {
        account_id: Some(account.clone()),
        resource_type: "AWS::CloudTrail::Channel".into(),
        arn: Some(given.clone()),
        arn_prefix: None,
    }]);
    ctx.audit.data_event = Some(rec);
    if given.is_empty() {
        ctx.no_authorization_needed();
        return Err(ApiError::client(
            "InvalidChannelARN",
            "channelArn is required.",
        ));
    }
    let channel = authorized_channel(ctx, &given, "cloudtrail-data:PutAuditEvents", true)?;
    let channel_arn = channel.arn(&account);
    if let Some(r) = ctx.audit.data_event.as_mut() {
        for res in r.resources.iter_mut().flatten() {
            res.arn = Some(channel_arn.clone());
        }
    }
    if let Some(ext) = ctx.req.query_param("externalId") {
        let ok = (2..=1224).contains(&ext.len())
            && ext
                .chars()
                .all(|c| c.is_alphanumeric() || c == '_' || "+=,.@:/-".contains(c));
        if !ok {
            return Err(ApiError::client(
                "ValidationException",
                "externalId must be 2-1224 characters matching [\\w+=,.@:/-]*.",
            ));
        }
    }
    let body: Value = serde_json::from_slice(&ctx.req.body).map_err(|_| {
        ApiError::client("ValidationException", "The request body is not valid JSON.")
    })?;
    let entries = body
        .get("auditEvents")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if entries.is_empty() || entries.len() > 100 {
        return Err(ApiError::client(
            "ValidationException",
            "auditEvents must hold 1 to 100 events.",
        ));
    }
    let mut ids = std::collections::HashSet::new();
    for e in &entries {
        let id = e.get("id").and_then(Value::as_str).unwrap_or("");
        if !ids.insert(id.to_string()) {
            return Err(ApiError::client(
                "DuplicatedAuditEventId",
                format!("Audit event id {id} appears more than once in the request."),
            ));
        }
    }
    let mut successful = Vec::new();
    let mut failed = Vec::new();
    let mut records = Vec::new();
    for e in &entries {
        let id = e
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let id_ok = (1..=128).contains(&id.len())
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !id_ok {
            failed.push(json!({"id": id, "errorCode": "InvalidData", "errorMessage": "id must be 1-128 characters of [-_A-Za-z0-9]."}));
            continue;
        }
        match check_event(e, &account) {
            Err((code, msg)) => {
                failed.push(json!({"id": id, "errorCode": code, "errorMessage": msg}))
            }
            Ok((_, data)) => {
                match builder::audit_event(
                    &data,
                    &ctx.region,
                    &account,
                    &channel_arn,
                    ctx.now,
                    ctx.caller.identity.clone(),
                    Some(ctx.req.peer.to_string()),
                    ctx.req.header("user-agent").map(str::to_string),
                ) {
                    Some(r) => {
                        successful.push(json!({"id": id, "eventID": r.event_id}));
                        records.push(r);
                    }
                    None => failed.push(json!({"id": id, "errorCode": "InvalidData", "errorMessage": "eventData is missing required fields."})),
                }
            }
        }
    }
    // Every accepted event is durable before the answer names it successful.
    ctx.api.record_many(&records).await?;
    ctx.audit.additional_event_data = Some(json!({
        "successful": successful.len(), "failed": failed.len()
    }));
    Ok(Reply::rest_json(
        &json!({"successful": successful, "failed": failed}),
    ))
}
