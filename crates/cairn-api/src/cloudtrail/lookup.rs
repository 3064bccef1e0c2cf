//! LookupEvents: management events of the last `history_days`, from [`super::history`].

use super::history::{Query, ATTRIBUTE_KEYS};
use super::out;
use super::Answer;
use crate::edge::Ctx;
use crate::protocol::{json, ApiError};
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LookupAttribute {
    pub attribute_key: Option<String>,
    pub attribute_value: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LookupEventsInput {
    pub lookup_attributes: Option<Vec<LookupAttribute>>,
    #[serde(default, deserialize_with = "json::timestamp")]
    pub start_time: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "json::timestamp")]
    pub end_time: Option<DateTime<Utc>>,
    pub event_category: Option<String>,
    pub max_results: Option<i64>,
    pub next_token: Option<String>,
    /// The time bounds as sent (a page token is valid only for the same query).
    #[serde(skip)]
    pub raw_start: String,
    #[serde(skip)]
    pub raw_end: String,
}

/// Reads LookupEvents' input, keeping the time bounds' text for the page token.
pub(super) fn input(body: &Map<String, Value>) -> Result<LookupEventsInput, ApiError> {
    let mut i: LookupEventsInput = json::input(body)?;
    let raw = |k: &str| body.get(k).map(Value::to_string).unwrap_or_default();
    i.raw_start = raw("StartTime");
    i.raw_end = raw("EndTime");
    Ok(i)
}

/// The version of [`PageToken`] this build writes. Version 1 (no `v`) ran through the
/// events of one second in the other direction: continuing one would skip some and repeat
/// others, so it is refused.
const TOKEN_VERSION: u32 = 2;

#[derive(Serialize, Deserialize)]
struct PageToken {
    /// Fingerprint of the query.
    q: String,
    t: u64,
    s: u64,
    #[serde(default = "first_version")]
    v: u32,
    /// The journal position the first page waited for: a later page needs the index only
    /// that far (it reads older events than the first page did), not up to whatever was
    /// recorded since. Tokens without it wait for the journal's end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    w: Option<u64>,
}

fn first_version() -> u32 {
    1
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Events {
    events: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_token: Option<String>,
}

pub(super) async fn lookup_events(ctx: &mut Ctx<'_>, action: &str, i: LookupEventsInput) -> Answer {
    ctx.authorize(action, "*")?;
    let ext = ctx.api.opts.lookup_extensions;
    let attrs = i.lookup_attributes.unwrap_or_default();
    let invalid_attr =
        |m: &str| ApiError::client("InvalidLookupAttributesException", m.to_string());
    if attrs.len() > 1 && !ext {
        return Err(invalid_attr(
            "You cannot specify more than one lookup attribute.",
        ));
    }
    let mut attributes = Vec::new();
    for a in &attrs {
        let key = a.attribute_key.as_deref().unwrap_or("");
        let code = ATTRIBUTE_KEYS
            .iter()
            .position(|k| *k == key)
            .ok_or_else(|| invalid_attr(&format!("Lookup attribute key {key:?} is not valid.")))?;
        let value = a
            .attribute_value
            .as_deref()
            .filter(|v| (1..=2000).contains(&v.len()))
            .ok_or_else(|| {
                invalid_attr("Lookup attribute value must be between 1 and 2000 characters.")
            })?;
        attributes.push((code as u8, value.to_string()));
    }
    let data_events = match i.event_category.as_deref() {
        None => false,
        Some("data") | Some("Data") if ext => true,
        Some("insight") => {
            // No Insights events are generated (yet): an empty page.
            return out(&Events {
                events: Vec::new(),
                next_token: None,
            });
        }
        Some(c) => {
            return Err(ApiError::client(
                "InvalidEventCategoryException",
                format!("Event category {c} is not valid."),
            ))
        }
    };
    let max = match i.max_results {
        None => 50,
        Some(n) if (1..=50).contains(&n) => n as usize,
        Some(_) => {
            return Err(ApiError::client(
                "InvalidMaxResultsException",
                "MaxResults must be between 1 and 50.",
            ))
        }
    };
    let horizon = ctx.now - Duration::days(ctx.api.opts.history_days);
    let end = i.end_time.unwrap_or(ctx.now);
    let start = i.start_time.unwrap_or(horizon);
    if start > end {
        return Err(ApiError::client(
            "InvalidTimeRangeException",
            "Start time must be before end time.",
        ));
    }
    let mut q = Query {
        region: ctx.region.clone(),
        attributes,
        start: start.max(horizon),
        end,
        max_results: max,
        data_events,
        after: None,
    };
    let fp = q.fingerprint(&i.raw_start, &i.raw_end);
    let mut waited = None;
    if let Some(tok) = &i.next_token {
        let bad = || ApiError::client("InvalidNextTokenException", "Invalid NextToken.");
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(tok.as_bytes())
            .map_err(|_| bad())?;
        let pt: PageToken = serde_json::from_slice(&bytes).map_err(|_| bad())?;
        // Positions are newest-first seconds (u32): a token from before the history kept
        // blocks (milliseconds) is refused, not read as the end of the results.
        if pt.q != fp || pt.t > u32::MAX as u64 || pt.v != TOKEN_VERSION {
            return Err(bad());
        }
        q.after = Some((pt.t, pt.s));
        waited = pt.w;
    }
    // Read-your-writes: wait (briefly) until the index holds every event recorded so far,
    // including those queued and not yet durable (an outcome journaled after its answer,
    // `Api::resolve_kept`). A later page waits for what its first page waited for (after a
    // restart the index may be behind it again), never for more than is recorded.
    let end = ctx.api.engine.journal().queued_end();
    let target = waited.map_or(end, |w| w.min(end));
    ctx.api
        .history
        .caught_up(target, std::time::Duration::from_secs(5))
        .await;
    let history = ctx.api.history.clone();
    let (events, next) = ctx.api.blocking(move || history.lookup(&q)).await?;
    let next_token = match next {
        Some((t, s)) => {
            let tok = serde_json::to_vec(&PageToken {
                q: fp,
                t,
                s,
                v: TOKEN_VERSION,
                w: Some(target),
            })
            .map_err(ApiError::internal)?;
            Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tok))
        }
        None => None,
    };
    out(&Events { events, next_token })
}
