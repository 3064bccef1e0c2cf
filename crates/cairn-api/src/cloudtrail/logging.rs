//! Logging and delivery: GetTrailStatus, StartLogging, StopLogging, ListPublicKeys (the
//! digest-signing keys) and cairn's CairnFlushTrail.

use super::trails::{require_home, trail_arg};
use super::{defer_command, empty, map_trail_error, out, Answer, TrailId};
use crate::edge::{Committed, Ctx, EffectOutcome};
use crate::protocol::json;
use crate::protocol::ApiError;
use base64::Engine;
use cairn_trail::{TrailCommand, TrailState};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize, Serializer};

/// ListPublicKeys' input.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TimeRange {
    #[serde(default, deserialize_with = "json::timestamp")]
    pub start_time: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "json::timestamp")]
    pub end_time: Option<DateTime<Utc>>,
    pub next_token: Option<String>,
}

fn epoch_opt<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => json::epoch(t, s),
        None => s.serialize_none(),
    }
}

/// GetTrailStatus' answer, including the deprecated string fields AWS still fills.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct TrailStatus {
    is_logging: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    latest_delivery_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "epoch_opt")]
    latest_delivery_time: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "epoch_opt")]
    start_logging_time: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "epoch_opt")]
    stop_logging_time: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "epoch_opt")]
    latest_digest_delivery_time: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    latest_digest_delivery_error: Option<String>,
    latest_delivery_attempt_time: String,
    latest_notification_attempt_time: String,
    latest_notification_attempt_succeeded: String,
    latest_delivery_attempt_succeeded: String,
    time_logging_started: String,
    time_logging_stopped: String,
    #[serde(
        rename = "LatestCloudWatchLogsDeliveryTime",
        skip_serializing_if = "Option::is_none",
        serialize_with = "epoch_opt"
    )]
    latest_cloud_watch_logs_delivery_time: Option<DateTime<Utc>>,
    #[serde(
        rename = "LatestCloudWatchLogsDeliveryError",
        skip_serializing_if = "Option::is_none"
    )]
    latest_cloud_watch_logs_delivery_error: Option<String>,
}

fn iso(x: Option<DateTime<Utc>>) -> String {
    x.map(cairn_record::time::iso).unwrap_or_default()
}

impl TrailStatus {
    fn of(t: &TrailState) -> TrailStatus {
        TrailStatus {
            is_logging: t.logging,
            latest_delivery_error: t.latest_delivery_error.clone(),
            latest_delivery_time: t.latest_delivery_time,
            start_logging_time: t.start_logging_time,
            stop_logging_time: t.stop_logging_time,
            latest_digest_delivery_time: t.latest_digest_delivery_time,
            latest_digest_delivery_error: t.latest_digest_delivery_error.clone(),
            latest_delivery_attempt_time: iso(t.latest_delivery_attempt_time),
            latest_notification_attempt_time: String::new(),
            latest_notification_attempt_succeeded: String::new(),
            latest_delivery_attempt_succeeded: if t.latest_delivery_error.is_none() {
                iso(t.latest_delivery_time)
            } else {
                String::new()
            },
            time_logging_started: iso(t.start_logging_time),
            time_logging_stopped: iso(t.stop_logging_time),
            latest_cloud_watch_logs_delivery_time: None,
            latest_cloud_watch_logs_delivery_error: None,
        }
    }
}

pub(super) fn status(ctx: &mut Ctx<'_>, action: &str, id: TrailId) -> Answer {
    let t = trail_arg(ctx, &id, action)?;
    let mut st = TrailStatus::of(&t);
    if super::cloud_watch_target(&ctx.api.meta, &t.config.name).is_some() {
        let cw = crate::logs::deliver::status(ctx.api, &t.config.name);
        st.latest_cloud_watch_logs_delivery_time = cw
            .latest_delivery
            .and_then(chrono::DateTime::from_timestamp_millis);
        st.latest_cloud_watch_logs_delivery_error = cw.latest_error;
    }
    out(&st)
}

pub(super) fn start(ctx: &mut Ctx<'_>, action: &str, id: TrailId) -> Answer {
    let t = trail_arg(ctx, &id, action)?;
    require_home(ctx, &t)?;
    let (name, at) = (t.config.name.clone(), ctx.now);
    // Logging starts only once this request's event is durable (as pending), and the event's
    // final record is journaled after the start: the trail delivers its own start, as AWS's
    // does, and a refused event starts nothing.
    let engine = ctx.api.engine.clone();
    ctx.defer_effect(Box::new(move || {
        Box::pin(async move {
            let started = tokio::task::spawn_blocking(move || {
                let seq = engine
                    .command(TrailCommand::StartLogging { name, at })
                    .map_err(map_trail_error)?;
                engine.apply_through(seq).map_err(ApiError::internal)
            })
            .await
            .unwrap_or_else(|e| Err(ApiError::internal(e)));
            EffectOutcome {
                reply: started.map(|_| empty().into_reply()),
                ..Default::default()
            }
        })
    }));
    Ok(empty())
}

pub(super) fn stop(ctx: &mut Ctx<'_>, action: &str, id: TrailId) -> Answer {
    let t = trail_arg(ctx, &id, action)?;
    require_home(ctx, &t)?;
    // Stopping waits for the event: the trail it stops delivers it.
    let (name, at) = (t.config.name.clone(), ctx.now);
    defer_command(ctx, TrailCommand::StopLogging { name, at })?;
    Ok(empty())
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct PublicKey {
    value: String,
    #[serde(serialize_with = "json::epoch")]
    validity_start_time: DateTime<Utc>,
    #[serde(serialize_with = "json::epoch")]
    validity_end_time: DateTime<Utc>,
    fingerprint: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct PublicKeyList {
    public_key_list: Vec<PublicKey>,
}

pub(super) fn public_keys(ctx: &mut Ctx<'_>, action: &str, r: TimeRange) -> Answer {
    ctx.authorize(action, "*")?;
    let end = r.end_time.unwrap_or(ctx.now);
    let start = r.start_time.unwrap_or(end);
    if start > end {
        return Err(ApiError::client(
            "InvalidTimeRangeException",
            "Start time must be before end time.",
        ));
    }
    let keys = ctx
        .api
        .engine
        .public_keys(&cairn_trail::KeyWindow {
            region: &ctx.region,
            start,
            end,
        })
        .map_err(ApiError::internal)?;
    let list = keys
        .iter()
        .map(|k| PublicKey {
            value: base64::engine::general_purpose::STANDARD.encode(&k.value),
            validity_start_time: k.validity_start,
            validity_end_time: k.validity_end,
            fingerprint: k.fingerprint.clone(),
        })
        .collect();
    out(&PublicKeyList {
        public_key_list: list,
    })
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Flushed {
    #[serde(rename = "TrailARN")]
    trail_arn: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    log_files: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    digest_files: Option<u64>,
}

/// cairn's extension: deliver what is pending and close open digest windows now — once this
/// request's event is durable (so the flush delivers it too).
pub(super) fn flush(ctx: &mut Ctx<'_>, action: &str, id: TrailId) -> Answer {
    let t = trail_arg(ctx, &id, action)?;
    // Delivery is shared: a flush delivers every trail's pending files, so it needs the
    // permission on all of them.
    ctx.authorize(action, "*")?;
    let engine = ctx.api.engine.clone();
    let trail_arn = t.config.arn();
    let answer = out(&Flushed {
        trail_arn: trail_arn.clone(),
        log_files: None,
        digest_files: None,
    })?;
    // The flush delivers its own call, as before it.
    ctx.defer_event_first(
        Box::new(move || {
            let rep = engine.flush().map_err(ApiError::internal)?;
            let done = Flushed {
                trail_arn,
                log_files: Some(rep.files),
                digest_files: Some(rep.digests),
            };
            Ok(Committed {
                headers: Vec::new(),
                body: Some(json::reply(&done).body),
            })
        }),
        None,
    );
    Ok(answer)
}
