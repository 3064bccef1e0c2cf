//! Key tags: TagResource, UntagResource, ListResourceTags (at most 50 per key; keys 1–128
//! characters, values up to 256; `aws:` keys are AWS's).

use super::keys::for_change;
use super::{authorize_key, commit_key, kms_error, resolve, KeyArg, KeyName, Page};
use crate::edge::Ctx;
use crate::protocol::ApiError;
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Tag {
    pub tag_key: String,
    pub tag_value: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TagInput {
    pub key_id: KeyName,
    pub tags: Vec<Tag>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UntagInput {
    pub key_id: KeyName,
    pub tag_keys: Vec<String>,
}

fn tag_error(m: impl Into<String>) -> ApiError {
    ApiError::client("TagException", m)
}

/// `existing` with `new` applied (a key given again replaces its value), checked.
pub(super) fn checked(
    new: Vec<Tag>,
    existing: &[(String, String)],
) -> Result<Vec<(String, String)>, ApiError> {
    let mut out = existing.to_vec();
    for t in new {
        if t.tag_key.is_empty() || t.tag_key.chars().count() > 128 {
            return Err(tag_error("Tag keys must be 1 to 128 characters."));
        }
        if t.tag_value.chars().count() > 256 {
            return Err(tag_error("Tag values must be at most 256 characters."));
        }
        if t.tag_key.to_ascii_lowercase().starts_with("aws:") {
            return Err(tag_error("Tag keys beginning with aws: are reserved."));
        }
        match out.iter_mut().find(|(k, _)| *k == t.tag_key) {
            Some(e) => e.1 = t.tag_value,
            None => out.push((t.tag_key, t.tag_value)),
        }
    }
    if out.len() > 50 {
        return Err(ApiError::client(
            "LimitExceededException",
            "A key can have at most 50 tags.",
        ));
    }
    Ok(out)
}

pub(super) async fn tag(ctx: &mut Ctx<'_>, action: &str, i: TagInput) -> Result<Value, ApiError> {
    let (mut key, guard) = for_change(ctx, action, &i.key_id).await?;
    key.changeable().map_err(kms_error)?;
    key.tags = checked(i.tags, &key.tags)?;
    commit_key(ctx, key, guard);
    Ok(json!({}))
}

pub(super) async fn untag(
    ctx: &mut Ctx<'_>,
    action: &str,
    i: UntagInput,
) -> Result<Value, ApiError> {
    let (mut key, guard) = for_change(ctx, action, &i.key_id).await?;
    key.changeable().map_err(kms_error)?;
    key.tags.retain(|(k, _)| !i.tag_keys.contains(k));
    commit_key(ctx, key, guard);
    Ok(json!({}))
}

pub(super) fn list(ctx: &mut Ctx<'_>, action: &str, k: KeyArg) -> Result<Value, ApiError> {
    let key = resolve(ctx, &k.key_id)?;
    authorize_key(ctx, &key, action, &Default::default())?;
    let tags: Vec<Value> = key
        .tags
        .iter()
        .map(|(k, v)| json!({"TagKey": k, "TagValue": v}))
        .collect();
    Page::answer("Tags", &tags, k.limit, k.marker.as_deref())
}
