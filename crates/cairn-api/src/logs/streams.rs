//! Log streams: Create/Delete/DescribeLogStreams.

use super::groups::{existing, group_arn, page};
use super::invalid;
use crate::edge::Ctx;
use crate::protocol::ApiError;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogStream {
    pub name: String,
    pub created: i64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamRef {
    pub log_group_name: String,
    pub log_stream_name: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeStreamsInput {
    pub log_group_name: Option<String>,
    pub log_group_identifier: Option<String>,
    pub log_stream_name_prefix: Option<String>,
    pub order_by: Option<String>,
    #[serde(default)]
    pub descending: bool,
    pub next_token: Option<String>,
    pub limit: Option<i64>,
}

/// Where a group's streams are kept (NUL-separated: group names may hold `/`).
pub(super) fn stream_prefix(region: &str, group: &str) -> String {
    format!("logs/stream/{region}\u{0}{group}\u{0}")
}

fn check_stream_name(name: &str) -> Result<(), ApiError> {
    if name.is_empty() || name.len() > 512 || name.contains(':') || name.contains('*') {
        return Err(invalid(format!(
            "1 validation error detected: Value '{name}' at 'logStreamName' failed to satisfy constraint: Member must satisfy regular expression pattern: [^:*]*"
        )));
    }
    Ok(())
}

/// Where a stream is kept in the control metadata.
pub(super) fn stream_key(region: &str, group: &str, stream: &str) -> String {
    format!("{}{stream}", stream_prefix(region, group))
}

pub(super) fn stream_arn(ctx: &Ctx<'_>, group: &str, stream: &str) -> String {
    format!("{}:log-stream:{stream}", group_arn(ctx, group))
}

/// The stream a change names: checked, authorized, its group existing, under the control
/// lock (held until the change is made). Returns its metadata key.
async fn locked(
    ctx: &mut Ctx<'_>,
    action: &str,
    s: &StreamRef,
) -> Result<(String, tokio::sync::OwnedMutexGuard<()>), ApiError> {
    super::groups::check_name(&s.log_group_name)?;
    check_stream_name(&s.log_stream_name)?;
    ctx.authorize(
        action,
        &stream_arn(ctx, &s.log_group_name, &s.log_stream_name),
    )?;
    let guard = ctx.api.control.clone().lock_owned().await;
    existing(ctx, &s.log_group_name)?;
    Ok((
        stream_key(&ctx.region, &s.log_group_name, &s.log_stream_name),
        guard,
    ))
}

pub(super) async fn create(
    ctx: &mut Ctx<'_>,
    action: &str,
    s: StreamRef,
) -> Result<Value, ApiError> {
    let (key, guard) = locked(ctx, action, &s).await?;
    if ctx.api.meta.get::<LogStream>(&key)?.is_some() {
        return Err(ApiError::client(
            "ResourceAlreadyExistsException",
            "The specified log stream already exists",
        ));
    }
    let group = super::groups::store_key(&ctx.region, &s.log_group_name);
    let name = s.log_stream_name.clone();
    ctx.defer_meta_put(
        key,
        LogStream {
            name: s.log_stream_name,
            created: ctx.now.timestamp_millis(),
        },
    );
    super::defer_store(ctx, move |logs| logs.create_stream(&group, &name));
    ctx.hold_until_made(guard);
    Ok(json!({}))
}

pub(super) async fn delete(
    ctx: &mut Ctx<'_>,
    action: &str,
    s: StreamRef,
) -> Result<Value, ApiError> {
    let (key, guard) = locked(ctx, action, &s).await?;
    if ctx.api.meta.get::<LogStream>(&key)?.is_none() {
        return Err(ApiError::client(
            "ResourceNotFoundException",
            "The specified log stream does not exist.",
        ));
    }
    ctx.defer_meta_delete(key);
    let group = super::groups::store_key(&ctx.region, &s.log_group_name);
    super::defer_store(ctx, move |logs| {
        logs.delete_stream(&group, &s.log_stream_name)
    });
    ctx.hold_until_made(guard);
    Ok(json!({}))
}

pub(super) fn describe(
    ctx: &mut Ctx<'_>,
    action: &str,
    i: DescribeStreamsInput,
) -> Result<Value, ApiError> {
    let group = super::groups::named(ctx, &i.log_group_name, &i.log_group_identifier)?;
    ctx.authorize(action, &format!("{}:*", group_arn(ctx, &group)))?;
    let g = existing(ctx, &group)?;
    let stats = ctx
        .api
        .logs
        .all_stream_stats(&g.store_key())
        .map_err(super::events::store_error)?;
    let by_time = match i.order_by.as_deref() {
        None | Some("LogStreamName") => false,
        Some("LastEventTime") => true,
        Some(o) => return Err(invalid(format!("Invalid orderBy {o}"))),
    };
    if by_time && i.log_stream_name_prefix.is_some() {
        return Err(invalid(
            "Cannot order by LastEventTime with a logStreamNamePrefix.",
        ));
    }
    let prefix = format!(
        "{}{}",
        stream_prefix(&ctx.region, &group),
        i.log_stream_name_prefix.as_deref().unwrap_or_default()
    );
    let mut all: Vec<LogStream> = ctx
        .api
        .meta
        .scan::<LogStream>(&prefix)?
        .into_iter()
        .map(|(_, s)| s)
        .collect();
    // Without events, a stream's last event time is its creation time.
    if by_time {
        all.sort_by_key(|s| {
            stats
                .get(&s.name)
                .and_then(|st| st.last_event)
                .unwrap_or(s.created)
        });
    }
    if i.descending {
        all.reverse();
    }
    let views: Vec<Value> = all
        .iter()
        .map(|s| {
            let mut v = json!({
                "logStreamName": s.name,
                "creationTime": s.created,
                "arn": stream_arn(ctx, &group, &s.name),
                "storedBytes": 0,
            });
            if let Some(st) = stats.get(&s.name) {
                if let Some(t) = st.first_event {
                    v["firstEventTimestamp"] = json!(t);
                }
                if let Some(t) = st.last_event {
                    v["lastEventTimestamp"] = json!(t);
                }
                if let Some(t) = st.last_ingestion {
                    v["lastIngestionTime"] = json!(t);
                    v["uploadSequenceToken"] = json!(format!("{t:056}"));
                }
            }
            v
        })
        .collect();
    let (streams, next) = page(&views, i.limit, i.next_token.as_deref(), 50)?;
    let mut v = json!({ "logStreams": streams });
    if let Some(n) = next {
        v["nextToken"] = json!(n);
    }
    Ok(v)
}
