//! Deleting objects: DeleteObject (a version, or the current object: a delete marker when
//! versioned) and DeleteObjects (up to 1000 keys, each authorized on its own). Object lock is
//! checked now; the deletions happen once the request's event is durable.

use super::{document, empty, lock, store_error, with_store, S3Error, S3Request};
use crate::edge::{Committed, Ctx};
use crate::protocol::xml;
use crate::protocol::{ApiError, Reply};
use cairn_record::Arn;
use cairn_store::StoreError;
use serde::Serialize;
use serde_json::json;

/// DeleteObjects' input: `(key, version id)` pairs, and whether only errors are reported.
#[derive(Debug, Clone)]
pub struct DeleteObjectsInput {
    pub objects: Vec<(String, Option<String>)>,
    pub quiet: bool,
}

/// Reads a `<Delete>` body (its Content-MD5 checked when sent): 1 to 1000 objects, each with
/// exactly one key.
pub(super) fn objects_input(req: &S3Request) -> Result<DeleteObjectsInput, ApiError> {
    if req.header("content-md5").is_some() {
        use md5::Digest as _;
        super::put::content_md5_matches(req.header("content-md5"), &md5::Md5::digest(&req.body))?;
    }
    let doc = xml::parse(&req.body)
        .filter(|d| d.name == "Delete")
        .ok_or(S3Error::MalformedXml)?;
    let mut objects = Vec::new();
    for o in doc.children_named("Object") {
        if o.children_named("Key").count() != 1 || o.children_named("VersionId").count() > 1 {
            return Err(S3Error::MalformedXml.into());
        }
        let key = o
            .child_text("Key")
            .ok_or(S3Error::MalformedXml)?
            .to_string();
        let version = o
            .child_text("VersionId")
            .filter(|v| !v.is_empty())
            .map(str::to_string);
        objects.push((key, version));
    }
    if objects.is_empty() || objects.len() > 1000 {
        return Err(S3Error::MalformedXml.into());
    }
    Ok(DeleteObjectsInput {
        objects,
        quiet: doc.child_text("Quiet").map(str::trim) == Some("true"),
    })
}

/// Deletes a version (or the current object), treating a missing one as deleted.
fn remove(
    store: &dyn cairn_store::ObjectStore,
    bucket: &str,
    key: &str,
    version: Option<&str>,
) -> Result<cairn_store::DeleteOutcome, ApiError> {
    let outcome = match version {
        Some(v) => store.delete_version(bucket, key, v),
        None => store.delete_object(bucket, key),
    };
    missing_is_deleted(outcome, bucket, key)
}

/// A deletion's outcome as answered: a missing key counts as deleted (S3 answers 204).
fn missing_is_deleted(
    outcome: Result<cairn_store::DeleteOutcome, StoreError>,
    bucket: &str,
    key: &str,
) -> Result<cairn_store::DeleteOutcome, ApiError> {
    outcome
        .or_else(|e| match e {
            StoreError::NoSuchKey { .. } => Ok(Default::default()),
            e => Err(e),
        })
        .map_err(|e| store_error(e, bucket, Some(key)))
}

pub(super) async fn delete(ctx: &mut Ctx<'_>, req: &S3Request) -> Result<Reply, ApiError> {
    let (bucket, key) = (req.bucket.clone(), req.object_key().to_string());
    let vid = req.version_id.clone();
    // A version id is checked now (object lock may protect it); the delete itself happens
    // once the event is durable.
    if let Some(v) = &vid {
        let (b, k, v) = (bucket.clone(), key.clone(), v.clone());
        let probe = with_store(ctx, move |s| Ok(s.head_version(&b, &k, Some(&v)))).await?;
        match probe {
            Ok(info) => {
                if lock::enabled(ctx, &bucket)? {
                    lock::check_removable(ctx, req, &info)?;
                }
            }
            Err(StoreError::DeleteMarker(_)) | Err(StoreError::NoSuchKey { .. }) => {}
            Err(e) => return Err(store_error(e, &bucket, Some(&key))),
        }
    }
    let store = ctx.api.store.clone();
    let Some(v) = vid else {
        // The current object: queued for the store's group commit with the PUTs, keeping
        // the request's outcome with the deletion (see `Deferred::outbox`), so the answer
        // waits for one commit and no thread waits for it.
        let outbox: crate::edge::Outbox = Default::default();
        let cell = store.keeps_outbox().then(|| outbox.clone());
        let commit: crate::edge::AsyncCommitFn = Box::new(move || {
            Box::pin(async move {
                let kept = outbox.lock().unwrap_or_else(|p| p.into_inner()).take();
                let outcome = store
                    .delete_object_async(bucket.clone(), key.clone(), kept)
                    .await;
                Ok(deleted(missing_is_deleted(outcome, &bucket, &key)?))
            })
        });
        ctx.defer_async(commit, None, cell);
        return Ok(empty(204));
    };
    ctx.defer(
        Box::new(move || {
            let outcome = remove(store.as_ref(), &bucket, &key, Some(&v))?;
            Ok(deleted(outcome))
        }),
        None,
    );
    Ok(empty(204))
}

/// A DeleteObject's answer headers: the version it created or removed, and whether that is
/// a delete marker.
fn deleted(outcome: cairn_store::DeleteOutcome) -> Committed {
    let mut headers = vec![];
    if let Some(v) = outcome.version_id {
        headers.push(("x-amz-version-id".to_string(), v));
    }
    if outcome.delete_marker {
        headers.push(("x-amz-delete-marker".to_string(), "true".to_string()));
    }
    Committed {
        headers,
        body: None,
    }
}

#[derive(Serialize, Default)]
#[serde(rename_all = "PascalCase")]
struct DeleteResult {
    deleted: Vec<Deleted>,
    error: Vec<Failure>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Deleted {
    key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    version_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delete_marker: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delete_marker_version_id: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct Failure {
    pub key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    pub code: String,
    pub message: String,
}

/// DeleteObjects (POST /bucket?delete): each key is authorized as s3:DeleteObject[Version]
/// and checked against object lock now; per-key failures are reported in the answer, as S3
/// does. One data event for the call.
pub(super) async fn delete_objects(
    ctx: &mut Ctx<'_>,
    req: &S3Request,
    i: DeleteObjectsInput,
) -> Result<Reply, ApiError> {
    let bucket = req.bucket.clone();
    let lock = lock::enabled(ctx, &bucket)?;
    let mut todo = Vec::new();
    let mut refused = Vec::new();
    for (key, vid) in i.objects {
        let action = super::router::action("DeleteObject", vid.is_some());
        let refuse = |key: String, vid: Option<String>, e: ApiError| Failure {
            key,
            version_id: vid,
            code: e.code,
            message: e.message,
        };
        if let Err(e) = ctx.authorize(&action, &Arn::s3_object(&bucket, &key).to_string()) {
            let e = crate::edge::fix_denied_protocol(e, crate::protocol::Protocol::S3);
            refused.push(refuse(key, vid, e));
            continue;
        }
        if let (true, Some(v)) = (lock, &vid) {
            let (b, k, v) = (bucket.clone(), key.clone(), v.clone());
            let probe = with_store(ctx, move |s| Ok(s.head_version(&b, &k, Some(&v)))).await?;
            if let Ok(info) = probe {
                if let Err(e) = lock::check_removable(ctx, req, &info) {
                    refused.push(refuse(key, vid, e));
                    continue;
                }
            }
        }
        todo.push((key, vid));
    }
    ctx.audit.additional_event_data = Some(json!({
        "deleted": todo.len(), "errors": refused.len(),
        "SignatureVersion": req.signature_version(), "AuthenticationMethod": req.authentication_method()
    }));
    let store = ctx.api.store.clone();
    let quiet = i.quiet;
    ctx.defer(
        Box::new(move || {
            let mut result = DeleteResult {
                error: refused,
                ..Default::default()
            };
            for (key, vid) in todo {
                match remove(store.as_ref(), &bucket, &key, vid.as_deref()) {
                    Ok(o) if !quiet => result.deleted.push(Deleted {
                        delete_marker: o.delete_marker.then_some(true),
                        delete_marker_version_id: match (&vid, o.delete_marker) {
                            (None, true) => o.version_id,
                            _ => None,
                        },
                        key,
                        version_id: vid,
                    }),
                    Ok(_) => {}
                    Err(e) => result.error.push(Failure {
                        key,
                        version_id: vid,
                        code: e.code,
                        message: e.message,
                    }),
                }
            }
            Ok(Committed {
                headers: vec![],
                body: Some(document("DeleteResult", &result).body),
            })
        }),
        None,
    );
    Ok(document("DeleteResult", &DeleteResult::default()))
}
