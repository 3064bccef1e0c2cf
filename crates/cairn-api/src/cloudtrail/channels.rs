//! Channels (CloudTrail Lake integrations, CloudTrail JSON API): CreateChannel, GetChannel,
//! ListChannels, DeleteChannel; and how a channel reference is resolved and authorized (also
//! by CloudTrail Data's PutAuditEvents).

use super::tags::Tag;
use super::{empty, out, Answer};
use crate::edge::Ctx;
use crate::protocol::ApiError;
use cairn_record::Arn;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A channel's destination.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Destination {
    #[serde(rename = "Type")]
    pub kind: Option<String>,
    pub location: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateChannelInput {
    pub name: Option<String>,
    pub source: Option<String>,
    pub destinations: Option<Vec<Destination>>,
    pub tags: Option<Vec<Tag>>,
}

/// GetChannel's and DeleteChannel's input: a channel ARN or id.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ChannelRef {
    pub channel: Option<String>,
}

/// A channel as kept in the control metadata.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Channel {
    id: String,
    name: String,
    region: String,
    source: String,
    destinations: Vec<Destination>,
    created: chrono::DateTime<chrono::Utc>,
}

impl Channel {
    pub(crate) fn arn(&self, account: &str) -> String {
        channel_arn(&self.region, account, &self.id)
    }
}

fn channel_arn(region: &str, account: &str, id: &str) -> String {
    Arn::new("cloudtrail", region, account, &format!("channel/{id}")).to_string()
}

fn key(id: &str) -> String {
    format!("channel/{id}")
}

/// Which API a channel is named in: their error names differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Api {
    CloudTrail,
    Data,
}

/// The id a channel reference (ARN or id) names. An ARN must be cairn's exactly
/// (partition, service, a served region, this account, `channel/<id>`).
fn channel_id(ctx: &Ctx<'_>, given: &str, api: Api) -> Result<String, ApiError> {
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
    let a = given.parse::<Arn>().ok().filter(|a| {
        a.partition == cairn_record::arn::PARTITION
            && a.service == "cloudtrail"
            && ctx.api.opts.regions.contains(&a.region)
            && a.account == ctx.api.opts.account
            && a.resource.starts_with("channel/")
            && a.resource.len() > "channel/".len()
    });
    let code = match api {
        Api::Data => "InvalidChannelARN",
        Api::CloudTrail => "ChannelARNInvalidException",
    };
    match a {
        Some(a) => Ok(a.resource["channel/".len()..].to_string()),
        None => Err(ApiError::client(
            code,
            format!("Channel ARN {given} is invalid."),
        )),
    }
}

fn lookup(ctx: &Ctx<'_>, id: &str, given: &str, api: Api) -> Result<Channel, ApiError> {
    let ch: Option<Channel> = ctx.api.meta.get(&key(id))?;
    let code = match api {
        Api::Data => "ChannelNotFound",
        Api::CloudTrail => "ChannelNotFoundException",
    };
    ch.filter(|c| c.region == ctx.region)
        .ok_or_else(|| ApiError::client(code, format!("Channel {given} not found.")))
}

/// Resolves a channel and authorizes `action` on its real ARN (or on the ARN the reference
/// denotes when there is no such channel) before saying whether it exists.
pub(crate) fn authorized_channel(
    ctx: &mut Ctx<'_>,
    given: &str,
    action: &str,
    api: Api,
) -> Result<Channel, ApiError> {
    let id = match channel_id(ctx, given, api) {
        Ok(id) => id,
        Err(e) => {
            ctx.no_authorization_needed();
            return Err(e);
        }
    };
    let account = ctx.api.opts.account.clone();
    let found = lookup(ctx, &id, given, api);
    let arn = match &found {
        Ok(c) => c.arn(&account),
        Err(_) => channel_arn(&ctx.region, &account, &id),
    };
    ctx.authorize(action, &arn)?;
    found
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Created {
    channel_arn: String,
    name: String,
    source: String,
    destinations: Vec<Destination>,
    tags: Vec<Tag>,
}

pub(super) async fn create(ctx: &mut Ctx<'_>, action: &str, i: CreateChannelInput) -> Answer {
    ctx.authorize(action, "*")?;
    let name_ok = |n: &String| {
        (3..=128).contains(&n.len())
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    };
    let Some(name) = i.name.filter(name_ok) else {
        return Err(ApiError::client(
            "InvalidParameterException",
            "Channel name must be 3-128 characters of letters, digits, '.', '_' and '-'.",
        ));
    };
    let source = match i.source {
        Some(s) if s == "Custom" => s,
        other => {
            return Err(ApiError::client(
                "InvalidSourceException",
                format!(
                    "Source {} is not supported; use Custom.",
                    other.as_deref().unwrap_or("(none)")
                ),
            ))
        }
    };
    let destinations = i.destinations.unwrap_or_default();
    if destinations.is_empty() || destinations.len() > 200 {
        return Err(ApiError::client(
            "InvalidParameterException",
            "Destinations must hold 1 to 200 entries.",
        ));
    }
    for d in &destinations {
        let kind_ok = matches!(
            d.kind.as_deref(),
            Some("EVENT_DATA_STORE") | Some("AWS_SERVICE")
        );
        if !kind_ok || d.location.as_ref().is_none_or(|l| l.len() < 3) {
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
    let answer = out(&Created {
        channel_arn: c.arn(&ctx.api.opts.account),
        name: c.name.clone(),
        source: c.source.clone(),
        destinations: c.destinations.clone(),
        tags: i.tags.unwrap_or_default(),
    })?;
    // Made once this request's event is durable.
    ctx.defer_meta_put(key(&c.id), c);
    ctx.hold_until_made(guard);
    Ok(answer)
}

/// The channel a request names (missing: an invalid ARN, as CloudTrail answers it).
fn named(ctx: &mut Ctx<'_>, r: ChannelRef, action: &str) -> Result<Channel, ApiError> {
    let Some(given) = r.channel else {
        ctx.no_authorization_needed();
        return Err(ApiError::client(
            "ChannelARNInvalidException",
            "Channel must be specified.",
        ));
    };
    authorized_channel(ctx, &given, action, Api::CloudTrail)
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct SourceConfig {
    apply_to_all_regions: bool,
    advanced_event_selectors: Vec<Value>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ChannelView {
    channel_arn: String,
    name: String,
    source: String,
    source_config: SourceConfig,
    destinations: Vec<Destination>,
    ingestion_status: serde_json::Map<String, Value>,
}

pub(super) fn get(ctx: &mut Ctx<'_>, action: &str, r: ChannelRef) -> Answer {
    let c = named(ctx, r, action)?;
    out(&ChannelView {
        channel_arn: c.arn(&ctx.api.opts.account),
        name: c.name,
        source: c.source,
        source_config: SourceConfig {
            apply_to_all_regions: false,
            advanced_event_selectors: Vec::new(),
        },
        destinations: c.destinations,
        ingestion_status: Default::default(),
    })
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Summary {
    channel_arn: String,
    name: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Channels {
    channels: Vec<Summary>,
}

pub(super) fn list(ctx: &mut Ctx<'_>, action: &str) -> Answer {
    ctx.authorize(action, "*")?;
    let all: Vec<(String, Channel)> = ctx.api.meta.scan("channel/")?;
    let account = &ctx.api.opts.account;
    let channels = all
        .into_iter()
        .filter(|(_, c)| c.region == ctx.region)
        .map(|(_, c)| Summary {
            channel_arn: c.arn(account),
            name: c.name,
        })
        .collect();
    out(&Channels { channels })
}

pub(super) fn delete(ctx: &mut Ctx<'_>, action: &str, r: ChannelRef) -> Answer {
    let c = named(ctx, r, action)?;
    ctx.defer_meta_delete(key(&c.id));
    Ok(empty())
}
