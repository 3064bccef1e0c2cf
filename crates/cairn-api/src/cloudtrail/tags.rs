//! Trail tags: AddTags, RemoveTags, ListTags; and the `aws:RequestTag/*` and `aws:TagKeys`
//! condition keys a request's tags give.

use super::trails::{authorized_trail, trail_resource};
use super::{empty, out, Answer};
use crate::edge::Ctx;
use crate::protocol::ApiError;
use cairn_trail::TrailState;
use serde::{Deserialize, Serialize};

/// A tag as requests carry it and answers give it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Tag {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// A resource's tags, in the order they were added: key → value.
pub(super) type Tags = Vec<(String, Option<String>)>;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TagsInput {
    pub resource_id: Option<String>,
    pub tags_list: Option<Vec<Tag>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListTagsInput {
    pub resource_id_list: Option<Vec<String>>,
    pub next_token: Option<String>,
}

/// Most tags a resource may have.
const MAX_TAGS: usize = 50;

/// Where a trail's tags are kept in the control metadata.
pub(super) fn key(arn: &str) -> String {
    format!("tags/{arn}")
}

/// The tags of the trail `arn`.
pub(super) fn of(ctx: &Ctx<'_>, arn: &str) -> Result<Tags, ApiError> {
    Ok(ctx.api.meta.get(&key(arn))?.unwrap_or_default())
}

/// Checks tags as CloudTrail does.
pub(super) fn validate(list: &[Tag]) -> Result<Tags, ApiError> {
    let bad = |m: &str| ApiError::client("InvalidTagParameterException", m.to_string());
    let mut out = Vec::new();
    for t in list {
        let key = t
            .key
            .as_deref()
            .ok_or_else(|| bad("Tag key must be specified."))?;
        if key.is_empty() || key.len() > 128 {
            return Err(bad("Tag key must be between 1 and 128 characters."));
        }
        if key.starts_with("aws:") {
            return Err(bad("Tag keys starting with 'aws:' are reserved."));
        }
        if t.value.as_ref().is_some_and(|v| v.len() > 256) {
            return Err(bad("Tag value must be at most 256 characters."));
        }
        out.push((key.to_string(), t.value.clone()));
    }
    Ok(out)
}

pub(super) fn check_limit(tags: &Tags) -> Result<(), ApiError> {
    if tags.len() > MAX_TAGS {
        return Err(ApiError::client(
            "TagsLimitExceededException",
            format!("A resource can have at most {MAX_TAGS} tags."),
        ));
    }
    Ok(())
}

/// `aws:RequestTag/*` and `aws:TagKeys` from a request's tags (none when they are invalid:
/// the request then fails on them).
pub(super) fn request_tag_keys(ctx: &mut Ctx<'_>, list: &[Tag]) {
    let Ok(tags) = validate(list) else {
        return;
    };
    for (k, v) in &tags {
        ctx.keys.set(
            &format!("aws:RequestTag/{k}"),
            v.clone().unwrap_or_default(),
        );
    }
    ctx.keys
        .set_many("aws:TagKeys", tags.into_iter().map(|(k, _)| k).collect());
}

/// Resolves a tag resource (a trail ARN), authorized for `action`.
fn resource(ctx: &mut Ctx<'_>, id: &str, action: &str) -> Result<TrailState, ApiError> {
    if !id.starts_with("arn:") {
        ctx.no_authorization_needed();
        return Err(ApiError::client(
            "CloudTrailARNInvalidException",
            format!("ARN {id} is invalid."),
        ));
    }
    authorized_trail(ctx, id, action).map_err(|e| {
        if e.code == "TrailNotFoundException" {
            ApiError::client(
                "ResourceNotFoundException",
                format!("Resource {id} not found."),
            )
        } else {
            e
        }
    })
}

/// AddTags (`add`) or RemoveTags.
pub(super) fn change(ctx: &mut Ctx<'_>, action: &str, i: TagsInput, add: bool) -> Answer {
    let Some(id) = i.resource_id else {
        ctx.no_authorization_needed();
        return Err(ApiError::client(
            "ResourceNotFoundException",
            "ResourceId must be specified.",
        ));
    };
    let given = i.tags_list.unwrap_or_default();
    request_tag_keys(ctx, &given);
    let t = resource(ctx, &id, action)?;
    trail_resource(ctx, &t.config.arn());
    let given = validate(&given)?;
    let mut tags = of(ctx, &t.config.arn())?;
    for (k, v) in given {
        if add {
            match tags.iter_mut().find(|(x, _)| *x == k) {
                Some(e) => e.1 = v,
                None => tags.push((k, v)),
            }
        } else {
            tags.retain(|(x, _)| *x != k);
        }
    }
    check_limit(&tags)?;
    ctx.defer_meta_put(key(&t.config.arn()), tags);
    Ok(empty())
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ResourceTag {
    resource_id: String,
    tags_list: Vec<Tag>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ResourceTagList {
    resource_tag_list: Vec<ResourceTag>,
}

pub(super) fn list(ctx: &mut Ctx<'_>, action: &str, i: ListTagsInput) -> Answer {
    let ids = i.resource_id_list.unwrap_or_default();
    if ids.is_empty() {
        ctx.authorize(action, "*")?;
    }
    if ids.len() > 20 {
        return Err(ApiError::client(
            "InvalidParameterException",
            "ResourceIdList can hold at most 20 ARNs.",
        ));
    }
    let mut list = Vec::new();
    for id in ids {
        let t = resource(ctx, &id, action)?;
        let tags = of(ctx, &t.config.arn())?
            .into_iter()
            .map(|(k, v)| Tag {
                key: Some(k),
                value: v,
            })
            .collect();
        list.push(ResourceTag {
            resource_id: id,
            tags_list: tags,
        });
    }
    out(&ResourceTagList {
        resource_tag_list: list,
    })
}
