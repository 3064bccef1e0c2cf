//! Key schemas of upstream tables, which records and condition keys need: a PutItem's `key`
//! is the item's primary-key attributes, `dynamodb:LeadingKeys` the partition key's values.
//! Read with DescribeTable (signed by cairn, not a caller's call, not recorded), cached for a
//! minute; a table deleted or created through cairn is forgotten at once.

use super::upstream::{self, Target};
use super::State;
use crate::protocol::ApiError;
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a table's schema is trusted.
const TTL: Duration = Duration::from_secs(60);
/// How long "no such table" is (so one call naming many missing tables, or many calls,
/// cost the upstream one DescribeTable each per table and period).
const MISSING_TTL: Duration = Duration::from_secs(2);

/// A table's key attributes, and its indexes'.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct KeySchema {
    pub hash: String,
    pub range: Option<String>,
    /// Index name → (partition key, sort key).
    pub indexes: HashMap<String, (String, Option<String>)>,
}

impl KeySchema {
    /// Whether `name` is one of the table's primary-key attributes.
    pub fn is_key(&self, name: &str) -> bool {
        self.hash == name || self.range.as_deref() == Some(name)
    }

    /// The partition key of the table, or of index `index`.
    pub fn partition_key(&self, index: Option<&str>) -> Option<&str> {
        match index {
            None => Some(&self.hash),
            Some(i) => self.indexes.get(i).map(|(h, _)| h.as_str()),
        }
    }

    fn from_description(v: &Value) -> Option<KeySchema> {
        let t = v.get("Table")?;
        let keys = |ks: &Value| -> Option<(String, Option<String>)> {
            let mut hash = None;
            let mut range = None;
            for k in ks.as_array()? {
                let name = k.get("AttributeName")?.as_str()?.to_string();
                match k.get("KeyType")?.as_str()? {
                    "HASH" => hash = Some(name),
                    "RANGE" => range = Some(name),
                    _ => {}
                }
            }
            Some((hash?, range))
        };
        let (hash, range) = keys(t.get("KeySchema")?)?;
        let mut indexes = HashMap::new();
        for list in ["GlobalSecondaryIndexes", "LocalSecondaryIndexes"] {
            for i in t.get(list).and_then(Value::as_array).into_iter().flatten() {
                if let (Some(n), Some(k)) = (
                    i.get("IndexName").and_then(Value::as_str),
                    i.get("KeySchema").and_then(keys),
                ) {
                    indexes.insert(n.to_string(), k);
                }
            }
        }
        Some(KeySchema {
            hash,
            range,
            indexes,
        })
    }
}

/// What is known of a table's schema.
#[derive(Debug, Clone)]
pub enum Known {
    Schema(Arc<KeySchema>),
    /// The upstream says there is no such table.
    NoTable,
}

impl Known {
    /// The schema, if the table exists.
    pub fn schema(self) -> Option<Arc<KeySchema>> {
        match self {
            Known::Schema(s) => Some(s),
            Known::NoTable => None,
        }
    }
}

impl State {
    /// Forgets `table`'s schema (it was deleted or created through cairn).
    pub fn forget_schema(&self, table: &str) {
        self.schemas
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(table);
    }
}

/// The key schema of `table` if the cache holds a fresh answer (no upstream call).
pub fn cached(state: &State, table: &str) -> Option<Known> {
    let cache = state.schemas.lock().unwrap_or_else(|p| p.into_inner());
    match cache.get(table) {
        Some((at, Some(k))) if at.elapsed() < TTL => Some(Known::Schema(k.clone())),
        Some((at, None)) if at.elapsed() < MISSING_TTL => Some(Known::NoTable),
        _ => None,
    }
}

/// The key schema of `table`, from the cache or the upstream. `Err`: the upstream could not
/// say (unreachable, or an answer cairn cannot read).
pub async fn of(state: &Arc<State>, target: &Target, table: &str) -> Result<Known, ApiError> {
    if let Some(k) = cached(state, table) {
        return Ok(k);
    }
    let body = Bytes::from(serde_json::json!({ "TableName": table }).to_string());
    let req = upstream::request(target, "DescribeTable", body)?;
    let client = upstream::client(state, target)?;
    let resp = tokio::time::timeout(target.timeout, client.request(req))
        .await
        .map_err(|_| upstream::unavailable("DescribeTable timed out"))?
        .map_err(upstream::unavailable)?;
    let status = resp.status().as_u16();
    let body = tokio::time::timeout(
        target.timeout,
        Limited::new(resp.into_body(), 4 << 20).collect(),
    )
    .await
    .map_err(|_| upstream::unavailable("DescribeTable timed out"))?
    .map_err(upstream::unavailable)?
    .to_bytes();
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if status == 400
        && v.get("__type")
            .and_then(Value::as_str)
            .is_some_and(|t| t.ends_with("ResourceNotFoundException"))
    {
        state
            .schemas
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(table.to_string(), (Instant::now(), None));
        return Ok(Known::NoTable);
    }
    if status != 200 {
        return Err(upstream::unavailable(format!(
            "DescribeTable answered {status}"
        )));
    }
    let schema = Arc::new(
        KeySchema::from_description(&v)
            .ok_or_else(|| upstream::unavailable("DescribeTable gave no key schema"))?,
    );
    if let Some(arn) = v.pointer("/Table/TableArn").and_then(Value::as_str) {
        if state.upstream_arn_prefix().is_none() {
            if let Some((p, _)) = arn.split_once(":table/") {
                state.set_upstream_arn_prefix(format!("{p}:"));
            }
        }
    }
    state
        .schemas
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(table.to_string(), (Instant::now(), Some(schema.clone())));
    Ok(Known::Schema(schema))
}

/// The key schema of the DynamoDB documentation's `Music` table (for tests).
#[cfg(test)]
pub(crate) fn music() -> KeySchema {
    KeySchema {
        hash: "Artist".into(),
        range: Some("SongTitle".into()),
        indexes: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_come_from_table_descriptions() {
        let v = serde_json::json!({"Table": {
            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
            "GlobalSecondaryIndexes": [{"IndexName": "byEmail", "KeySchema": [{"AttributeName": "email", "KeyType": "HASH"}]}]
        }});
        let s = KeySchema::from_description(&v).unwrap();
        assert_eq!(s.hash, "pk");
        assert_eq!(s.range.as_deref(), Some("sk"));
        assert!(s.is_key("sk") && !s.is_key("email"));
        assert_eq!(s.partition_key(Some("byEmail")), Some("email"));
        assert_eq!(s.partition_key(Some("nope")), None);
        assert!(KeySchema::from_description(&serde_json::json!({"Table": {}})).is_none());
    }
}
