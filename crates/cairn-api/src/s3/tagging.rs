//! Object tags: Get/Put/DeleteObjectTagging, the `x-amz-tagging` header of a write, and the
//! way every object sub-resource reads or changes one version's system attributes.

use super::{document, store_error, with_store, S3Error, S3Request};
use crate::edge::{Committed, Ctx};
use crate::protocol::xml::Element;
use crate::protocol::{ApiError, Reply};
use cairn_store::{ObjectInfo, StoreError};
use serde::Serialize;

/// An object's tags, checked (at most 10, keys 1–128 and values up to 256 characters, no key
/// twice), in the order given.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TagSet(pub Vec<(String, String)>);

impl TagSet {
    fn checked(tags: Vec<(String, String)>) -> Result<TagSet, ApiError> {
        if tags.len() > 10 {
            return Err(S3Error::BadRequest("Object tags cannot be greater than 10".into()).into());
        }
        let mut seen = std::collections::HashSet::new();
        for (k, v) in &tags {
            if k.is_empty() || k.chars().count() > 128 || v.chars().count() > 256 {
                return Err(S3Error::InvalidTag("The TagKey you have provided is invalid").into());
            }
            if !seen.insert(k) {
                return Err(
                    S3Error::InvalidTag("Cannot provide multiple Tags with the same key").into(),
                );
            }
        }
        Ok(TagSet(tags))
    }

    /// Tags in a query string (`x-amz-tagging: k=v&k2=v2`).
    pub fn of_query(q: &str) -> Result<TagSet, ApiError> {
        TagSet::checked(
            form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The tags as the object keeps them (a query string).
    pub fn to_query(&self) -> String {
        let mut s = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &self.0 {
            s.append_pair(k, v);
        }
        s.finish()
    }
}

/// The tags of a PutObjectTagging body: `<Tagging><TagSet><Tag><Key/><Value/></Tag>…`. A tag
/// without a key is malformed.
pub(super) fn body_tags(doc: &Element) -> Result<TagSet, ApiError> {
    let set = doc.child("TagSet").ok_or(S3Error::MalformedXml)?;
    let mut tags = Vec::new();
    for t in set.children_named("Tag") {
        let key = t.child_text("Key").ok_or(S3Error::MalformedXml)?;
        tags.push((
            key.to_string(),
            t.child_text("Value").unwrap_or("").to_string(),
        ));
    }
    TagSet::checked(tags)
}

/// Looks at the version a request names (the current one without a version id).
pub(super) async fn head_version(ctx: &Ctx<'_>, req: &S3Request) -> Result<ObjectInfo, ApiError> {
    let (b, k, v) = (
        req.bucket.clone(),
        req.object_key().to_string(),
        req.version_id.clone(),
    );
    with_store(ctx, move |s| {
        s.head_version(&b, &k, v.as_deref())
            .map_err(|e| store_error(e, &b, Some(&k)))
    })
    .await
}

/// Applies `change` to the system attributes of the version a request names: checked now
/// against the version as it is (a refusal is the request's error), made once the request's
/// event is durable. Returns the attributes as they will be.
pub(super) async fn change_version(
    ctx: &mut Ctx<'_>,
    req: &S3Request,
    change: impl FnMut(&mut ObjectInfo) -> Result<(), ApiError> + Send + Sync + 'static,
) -> Result<ObjectInfo, ApiError> {
    let mut change = change;
    let mut info = head_version(ctx, req).await?;
    change(&mut info)?;
    let store = ctx.api.store.clone();
    let (b, k, v) = (
        req.bucket.clone(),
        req.object_key().to_string(),
        req.version_id.clone(),
    );
    ctx.defer(
        Box::new(move || {
            let refusal = std::sync::Mutex::new(None);
            let done = store.update_system(&b, &k, v.as_deref(), &mut |i| {
                change(i).map_err(|e| {
                    *refusal.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                    StoreError::AccessDenied("refused".into())
                })
            });
            if let Some(e) = refusal.lock().unwrap_or_else(|p| p.into_inner()).take() {
                return Err(e);
            }
            done.map_err(|e| store_error(e, &b, Some(&k)))?;
            Ok(Committed::default())
        }),
        None,
    );
    Ok(info)
}

/// Adds the version an answer is about.
pub(super) fn with_version(mut r: Reply, info: &ObjectInfo) -> Reply {
    if let Some(v) = &info.version_id {
        r = r.header("x-amz-version-id", v.clone());
    }
    r
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Tagging {
    tag_set: Tags,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Tags {
    tag: Vec<Tag>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Tag {
    key: String,
    value: String,
}

pub(super) async fn get(ctx: &mut Ctx<'_>, req: &S3Request) -> Result<Reply, ApiError> {
    let info = head_version(ctx, req).await?;
    let tags = info
        .system
        .get("tagging")
        .map(|t| {
            form_urlencoded::parse(t.as_bytes())
                .map(|(key, value)| Tag {
                    key: key.into_owned(),
                    value: value.into_owned(),
                })
                .collect()
        })
        .unwrap_or_default();
    let answer = Tagging {
        tag_set: Tags { tag: tags },
    };
    Ok(with_version(document("Tagging", &answer), &info))
}

pub(super) async fn put(
    ctx: &mut Ctx<'_>,
    req: &S3Request,
    tags: TagSet,
) -> Result<Reply, ApiError> {
    set(ctx, req, tags, 200).await
}

pub(super) async fn delete(ctx: &mut Ctx<'_>, req: &S3Request) -> Result<Reply, ApiError> {
    set(ctx, req, TagSet::default(), 204).await
}

async fn set(
    ctx: &mut Ctx<'_>,
    req: &S3Request,
    tags: TagSet,
    status: u16,
) -> Result<Reply, ApiError> {
    let value = tags.to_query();
    let info = change_version(ctx, req, move |i| {
        if value.is_empty() {
            i.system.remove("tagging");
        } else {
            i.system.insert("tagging".into(), value.clone());
        }
        Ok(())
    })
    .await?;
    Ok(with_version(Reply::s3_xml(status, String::new()), &info))
}
