//! Log events: PutLogEvents (AWS's limits and `rejectedLogEventsInfo`), GetLogEvents
//! (forward/backward tokens, startFromHead), FilterLogEvents (filter patterns across streams,
//! time range, paging). Events live in [`cairn_logs::LogStore`], sealed under the group's
//! key ring; a put is stored only once its request's event is durable.

use super::groups::{existing, group_arn, named, LogGroup};
use super::invalid;
use super::streams::{stream_arn, stream_key, LogStream};
use crate::edge::{Committed, Ctx};
use crate::protocol::ApiError;
use crate::Api;
use cairn_logs::{FilterPattern, KeyRing, NewEvent};
use serde::Deserialize;
use serde_json::{json, Value};

/// The most events one PutLogEvents may carry.
pub const MAX_BATCH_EVENTS: usize = 10_000;
/// The most bytes one PutLogEvents may carry (messages' UTF-8 bytes + 26 per event).
pub const MAX_BATCH_BYTES: usize = 1_048_576;
/// Bytes AWS counts for each event on top of its message.
pub const EVENT_OVERHEAD: usize = 26;
/// The largest event (message + overhead).
pub const MAX_EVENT_BYTES: usize = 262_144;
const DAY_MS: i64 = 86_400_000;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InputEvent {
    pub timestamp: i64,
    pub message: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PutInput {
    pub log_group_name: String,
    pub log_stream_name: String,
    pub log_events: Vec<InputEvent>,
    pub sequence_token: Option<String>,
    pub entity: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetInput {
    pub log_group_name: Option<String>,
    pub log_group_identifier: Option<String>,
    pub log_stream_name: String,
    pub start_time: Option<i64>,
    pub end_time: Option<i64>,
    pub next_token: Option<String>,
    pub limit: Option<i64>,
    pub start_from_head: Option<bool>,
    pub unmask: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FilterInput {
    pub log_group_name: Option<String>,
    pub log_group_identifier: Option<String>,
    pub log_stream_names: Option<Vec<String>>,
    pub log_stream_name_prefix: Option<String>,
    pub start_time: Option<i64>,
    pub end_time: Option<i64>,
    pub filter_pattern: Option<String>,
    pub next_token: Option<String>,
    pub limit: Option<i64>,
    pub interleaved: Option<bool>,
    pub unmask: Option<bool>,
}

/// The group's key ring: every slot's data key opened through KMS (a slot whose key is
/// disabled or gone holds why).
pub(super) fn ring(api: &Api, g: &LogGroup) -> KeyRing {
    let mut ring = KeyRing {
        current: g.current_slot,
        ..KeyRing::default()
    };
    for (slot, arn, env) in &g.key_slots {
        ring = match api.kms.open_envelope(env) {
            Ok(k) => match ring.clone().with_key(*slot, &k) {
                Ok(r) => r,
                Err(e) => ring.without_key(*slot, e.to_string()),
            },
            Err(e) => ring.without_key(
                *slot,
                format!("The KMS key {arn} of this log group cannot be used: {e}"),
            ),
        };
    }
    ring
}

/// A store failure as the Logs answer: an unusable key is the caller's to fix.
pub(super) fn store_error(e: cairn_logs::StoreError) -> ApiError {
    match e {
        cairn_logs::StoreError::Key(m) => invalid(m),
        cairn_logs::StoreError::Gone(m) => ApiError::client("ResourceNotFoundException", m),
        e => ApiError::internal(e),
    }
}

fn ring_for_write(api: &Api, g: &LogGroup) -> Result<KeyRing, ApiError> {
    let r = ring(api, g);
    if let Some(Err(why)) = r.slots.get(&r.current) {
        return Err(invalid(why.clone()));
    }
    Ok(r)
}

/// What a batch came to: the events to store and what was rejected.
struct Checked {
    events: Vec<NewEvent>,
    rejected: Option<Value>,
}

fn check_batch(
    events: &[InputEvent],
    now: i64,
    retention_days: Option<u32>,
) -> Result<Checked, ApiError> {
    if events.is_empty() || events.len() > MAX_BATCH_EVENTS {
        return Err(invalid(format!(
            "1 validation error detected: Value at 'logEvents' failed to satisfy constraint: Member must have length between 1 and {MAX_BATCH_EVENTS}"
        )));
    }
    let mut bytes = 0usize;
    for e in events {
        if e.message.is_empty() {
            return Err(invalid(
                "1 validation error detected: Value at 'logEvents.member.message' failed to satisfy constraint: Member must have length greater than or equal to 1",
            ));
        }
        let size = e.message.len() + EVENT_OVERHEAD;
        if size > MAX_EVENT_BYTES {
            return Err(invalid(format!(
                "Log event too large: {size} bytes exceeds limit of {MAX_EVENT_BYTES}"
            )));
        }
        bytes += size;
    }
    if bytes > MAX_BATCH_BYTES {
        return Err(invalid(format!(
            "Upload too large: {bytes} bytes exceeds limit of {MAX_BATCH_BYTES}"
        )));
    }
    if events.windows(2).any(|w| w[1].timestamp < w[0].timestamp) {
        return Err(invalid(
            "Log events in a single PutLogEvents request must be in chronological order.",
        ));
    }
    let (first, last) = (events[0].timestamp, events[events.len() - 1].timestamp);
    if last.checked_sub(first).is_none_or(|span| span > DAY_MS) {
        return Err(invalid(
            "The batch of log events in a single PutLogEvents request cannot span more than 24 hours.",
        ));
    }
    // Rejected ranges: too old (14 days) and expired (retention) at the start, too new (2 h
    // ahead) at the end. End indexes are exclusive: events before them were rejected.
    let oldest = now - 14 * DAY_MS;
    let expired_before = retention_days.map(|d| now - d as i64 * DAY_MS);
    let newest = now + 2 * 3_600_000;
    let too_old_end = events.iter().take_while(|e| e.timestamp < oldest).count();
    let expired_end = expired_before
        .map(|b| events.iter().take_while(|e| e.timestamp < b).count())
        .unwrap_or(0);
    let too_new_start = events
        .iter()
        .position(|e| e.timestamp > newest)
        .unwrap_or(events.len());
    let start = too_old_end.max(expired_end).min(too_new_start);
    let mut info = serde_json::Map::new();
    if too_old_end > 0 {
        info.insert("tooOldLogEventEndIndex".into(), json!(too_old_end));
    }
    if expired_end > 0 {
        info.insert("expiredLogEventEndIndex".into(), json!(expired_end));
    }
    if too_new_start < events.len() {
        info.insert("tooNewLogEventStartIndex".into(), json!(too_new_start));
    }
    Ok(Checked {
        events: events[start..too_new_start]
            .iter()
            .map(|e| NewEvent {
                timestamp: e.timestamp,
                message: e.message.clone(),
            })
            .collect(),
        rejected: (!info.is_empty()).then_some(Value::Object(info)),
    })
}

pub(super) async fn put(ctx: &mut Ctx<'_>, action: &str, i: PutInput) -> Result<Value, ApiError> {
    super::groups::check_name(&i.log_group_name)?;
    ctx.authorize(
        action,
        &stream_arn(ctx, &i.log_group_name, &i.log_stream_name),
    )?;
    // The request is not logged whole: messages are the caller's data. (AWS does not record
    // PutLogEvents in CloudTrail at all; cairn records the call, not its content.)
    ctx.audit.request_parameters = Some(json!({
        "logGroupName": i.log_group_name,
        "logStreamName": i.log_stream_name,
        "logEventCount": i.log_events.len(),
    }));
    let g = existing(ctx, &i.log_group_name)?;
    let checked = check_batch(&i.log_events, ctx.now.timestamp_millis(), g.retention_days)?;
    if ctx
        .api
        .meta
        .get::<LogStream>(&stream_key(&ctx.region, &g.name, &i.log_stream_name))?
        .is_none()
    {
        return Err(ApiError::client(
            "ResourceNotFoundException",
            "The specified log stream does not exist.",
        ));
    }
    let ring = ring_for_write(ctx.api, &g)?;
    let points = super::metrics::points(ctx.api, &g, &checked.events)?;
    let mut out = json!({ "nextSequenceToken": format!("{:056}", ctx.now.timestamp_millis()) });
    if let Some(r) = checked.rejected {
        out["rejectedLogEventsInfo"] = r;
    }
    let logs = ctx.api.logs.clone();
    let (key, stream, now, generation) = (
        g.store_key(),
        i.log_stream_name,
        ctx.now.timestamp_millis(),
        g.created,
    );
    let events = checked.events;
    ctx.defer(
        Box::new(move || {
            if !events.is_empty() {
                logs.put_grouped(cairn_logs::Batch {
                    group: key,
                    stream,
                    events,
                    ingestion: now,
                    ring,
                    points,
                    generation: Some(generation),
                })
                .map_err(store_error)?;
            }
            Ok(Committed::default())
        }),
        None,
    );
    Ok(out)
}

/// A position token: `f/` or `b/` then timestamp and sequence.
fn token(dir: char, (ts, seq): (i64, u64)) -> String {
    format!("{dir}/{ts:020}-{seq:020}")
}

fn parse_token(t: &str) -> Result<(char, (i64, u64)), ApiError> {
    let bad = || invalid("The specified nextToken is invalid.");
    let (dir, rest) = t.split_once('/').ok_or_else(bad)?;
    let dir = match dir {
        "f" => 'f',
        "b" => 'b',
        _ => return Err(bad()),
    };
    let (ts, seq) = rest.rsplit_once('-').ok_or_else(bad)?;
    Ok((
        dir,
        (
            ts.parse().map_err(|_| bad())?,
            seq.parse().map_err(|_| bad())?,
        ),
    ))
}

fn limit_of(l: Option<i64>, max: i64) -> Result<usize, ApiError> {
    match l {
        None => Ok(max as usize),
        Some(n) if (1..=max).contains(&n) => Ok(n as usize),
        Some(n) => Err(invalid(format!(
            "1 validation error detected: Value '{n}' at 'limit' failed to satisfy constraint: Member must have value between 1 and {max}"
        ))),
    }
}

pub(super) fn get(ctx: &mut Ctx<'_>, action: &str, i: GetInput) -> Result<Value, ApiError> {
    let group = named(ctx, &i.log_group_name, &i.log_group_identifier)?;
    ctx.authorize(action, &stream_arn(ctx, &group, &i.log_stream_name))?;
    let g = existing(ctx, &group)?;
    if ctx
        .api
        .meta
        .get::<LogStream>(&stream_key(&ctx.region, &g.name, &i.log_stream_name))?
        .is_none()
    {
        return Err(ApiError::client(
            "ResourceNotFoundException",
            "The specified log stream does not exist.",
        ));
    }
    let limit = limit_of(i.limit, 10_000)?;
    let from_head = i.start_from_head.unwrap_or(false);
    let (backward, cursor) = match i.next_token.as_deref() {
        Some(t) => {
            let (d, pos) = parse_token(t)?;
            (d == 'b', Some(pos))
        }
        None => (!from_head, None),
    };
    let ring = ring(ctx.api, &g);
    let mut events = ctx
        .api
        .logs
        .stream_events(
            &g.store_key(),
            &i.log_stream_name,
            i.start_time,
            i.end_time,
            cursor,
            backward,
            limit,
            MAX_BATCH_BYTES,
            &ring,
        )
        .map_err(store_error)?;
    // At most 1 MB of events in one answer, as AWS.
    let mut size = 0usize;
    let keep = events
        .iter()
        .take_while(|e| {
            size += e.message.len() + EVENT_OVERHEAD;
            size <= MAX_BATCH_BYTES
        })
        .count()
        .max(1)
        .min(events.len());
    if backward {
        let drop = events.len() - keep;
        events.drain(..drop);
    } else {
        events.truncate(keep);
    }
    // With nothing more, a token comes back unchanged (clients stop when it repeats).
    let (fwd, bwd) = match (events.first(), events.last()) {
        (Some(f), Some(l)) => (token('f', l.position()), token('b', f.position())),
        _ => {
            let here = cursor.unwrap_or(if backward {
                (i64::MIN, 0)
            } else {
                (i64::MAX, u64::MAX)
            });
            let t = i.next_token.clone();
            (
                t.clone().unwrap_or_else(|| token('f', here)),
                t.unwrap_or_else(|| token('b', here)),
            )
        }
    };
    Ok(json!({
        "events": events.iter().map(|e| json!({
            "timestamp": e.timestamp,
            "message": e.message,
            "ingestionTime": e.ingestion,
        })).collect::<Vec<_>>(),
        "nextForwardToken": fwd,
        "nextBackwardToken": bwd,
    }))
}

/// The most events FilterLogEvents examines in one call before it answers with a token.
const SCAN_BUDGET: u64 = 2_000_000;

pub(super) fn filter(ctx: &mut Ctx<'_>, action: &str, i: FilterInput) -> Result<Value, ApiError> {
    let group = named(ctx, &i.log_group_name, &i.log_group_identifier)?;
    ctx.authorize(action, &format!("{}:*", group_arn(ctx, &group)))?;
    if i.log_stream_names.is_some() && i.log_stream_name_prefix.is_some() {
        return Err(invalid(
            "logStreamNames and logStreamNamePrefix are mutually exclusive parameters.",
        ));
    }
    if i.log_stream_names
        .as_ref()
        .is_some_and(|n| n.is_empty() || n.len() > 100)
    {
        return Err(invalid(
            "1 validation error detected: Value at 'logStreamNames' failed to satisfy constraint: Member must have length between 1 and 100",
        ));
    }
    let g = existing(ctx, &group)?;
    let limit = limit_of(i.limit, 10_000)?;
    let pattern = FilterPattern::parse(i.filter_pattern.as_deref().unwrap_or(""))
        .map_err(|e| invalid(format!("Invalid filter pattern: {e}")))?;
    let cursor = match i.next_token.as_deref() {
        Some(t) => match parse_token(t)? {
            ('f', pos) => Some(pos),
            _ => return Err(invalid("The specified nextToken is invalid.")),
        },
        None => None,
    };
    let names: Option<std::collections::HashSet<String>> =
        i.log_stream_names.clone().map(|v| v.into_iter().collect());
    let prefix = i.log_stream_name_prefix.clone();
    let ring = ring(ctx.api, &g);
    let mut out = Vec::new();
    let mut last: Option<(i64, u64)> = None;
    let mut examined = 0u64;
    let mut bytes = 0usize;
    let mut exhausted = true;
    ctx.api
        .logs
        .scan(
            &g.store_key(),
            i.start_time,
            i.end_time,
            cursor,
            &ring,
            |e| {
                examined += 1;
                last = Some(e.position());
                let wanted = names.as_ref().is_none_or(|n| n.contains(e.stream))
                    && prefix
                        .as_ref()
                        .is_none_or(|p| e.stream.starts_with(p.as_str()));
                if wanted && pattern.matches(e.message) {
                    bytes += e.message.len() + EVENT_OVERHEAD;
                    out.push(json!({
                        "logStreamName": e.stream,
                        "timestamp": e.timestamp,
                        "message": e.message,
                        "ingestionTime": e.ingestion,
                        "eventId": format!("{:056}", e.seq),
                    }));
                }
                // At most `limit` events, 1 MB of them, or the scan budget per answer.
                if out.len() >= limit || bytes >= MAX_BATCH_BYTES || examined >= SCAN_BUDGET {
                    exhausted = false;
                    return false;
                }
                true
            },
        )
        .map_err(store_error)?;
    let mut v = json!({ "events": out, "searchedLogStreams": [] });
    if !exhausted {
        if let Some(p) = last {
            v["nextToken"] = json!(token('f', p));
        }
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(ts: i64) -> InputEvent {
        InputEvent {
            timestamp: ts,
            message: "m".into(),
        }
    }

    #[test]
    fn batches_are_checked_as_aws_checks_them() {
        let now = 100 * DAY_MS;
        assert!(check_batch(&[], now, None).is_err());
        assert!(
            check_batch(&[ev(now), ev(now - 1)], now, None).is_err(),
            "not chronological"
        );
        assert!(
            check_batch(&[ev(now - DAY_MS - 1), ev(now)], now, None).is_err(),
            "> 24 h"
        );
        let big = InputEvent {
            timestamp: now,
            message: "x".repeat(MAX_EVENT_BYTES - EVENT_OVERHEAD),
        };
        assert!(check_batch(std::slice::from_ref(&big), now, None).is_ok());
        let many = vec![big; 5];
        assert!(
            check_batch(&many, now, None).is_err(),
            "over 1 MiB with 26 B per event"
        );
        let exact: Vec<InputEvent> = (0..MAX_BATCH_EVENTS).map(|_| ev(now)).collect();
        assert!(check_batch(&exact, now, None).is_ok());
        let c = check_batch(
            &[
                ev(now - 15 * DAY_MS),
                ev(now - 14 * DAY_MS + 1000),
                ev(now),
                ev(now + 3 * 3_600_000),
            ],
            now,
            None,
        );
        assert!(c.is_err(), "spans more than 24 hours");
        let c = check_batch(
            &[ev(now - DAY_MS - 3_600_000), ev(now - 3_600_000)],
            now,
            Some(1),
        )
        .unwrap();
        assert_eq!(c.events.len(), 1);
        assert_eq!(c.rejected.unwrap(), json!({"expiredLogEventEndIndex": 1}));
        let c = check_batch(&[ev(now), ev(now + 3 * 3_600_000)], now, None).unwrap();
        assert_eq!(c.events.len(), 1);
        assert_eq!(c.rejected.unwrap(), json!({"tooNewLogEventStartIndex": 1}));
    }

    #[test]
    fn tokens_round_trip_and_bad_ones_are_refused() {
        let t = token('f', (-5, 7));
        assert_eq!(parse_token(&t).unwrap(), ('f', (-5, 7)));
        for bad in ["", "x/1-2", "f/abc", "f/1", "b/1-x"] {
            assert!(parse_token(bad).is_err(), "{bad}");
        }
    }
}
