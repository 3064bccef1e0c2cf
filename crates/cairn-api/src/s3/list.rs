//! Listings: ListObjects (V1 and V2) and ListObjectVersions, sharing one input (prefix,
//! delimiter, encoding, page size, where to start) and one way of writing keys.

use super::{document, s3_time, store_error, with_store, Owner, S3Error, S3Request};
use crate::edge::Ctx;
use crate::protocol::{ApiError, Reply};
use base64::Engine;
use cairn_store::ObjectInfo;
use serde::Serialize;

/// A listing's input, as the router read it.
#[derive(Debug, Clone, Default)]
pub struct ListInput {
    pub prefix: String,
    pub delimiter: Option<String>,
    /// `encoding-type=url`: keys in the answer are URL-encoded.
    pub url: bool,
    pub max_keys: usize,
    /// ListObjectsV2.
    pub v2: bool,
    /// V1: list after this key.
    pub marker: Option<String>,
    /// V2: the continuation token as sent, and the key it continues after.
    pub continuation: Option<(String, String)>,
    pub start_after: Option<String>,
    pub fetch_owner: bool,
    /// Versions: list after this key (and version).
    pub key_marker: Option<String>,
    pub version_id_marker: Option<String>,
}

impl ListInput {
    fn common(req: &S3Request) -> Result<ListInput, ApiError> {
        let url = match req.param("encoding-type") {
            None => false,
            Some("url") => true,
            Some(_) => {
                return Err(S3Error::InvalidArgument(
                    "Invalid Encoding Method specified in Request".into(),
                )
                .into())
            }
        };
        let max_keys = max_param(req, "max-keys")?;
        Ok(ListInput {
            prefix: req.param("prefix").unwrap_or_default().to_string(),
            delimiter: req
                .param("delimiter")
                .filter(|d| !d.is_empty())
                .map(str::to_string),
            url,
            max_keys,
            ..Default::default()
        })
    }

    /// ListObjects (`v2`: ListObjectsV2).
    pub(super) fn objects(req: &S3Request, v2: bool) -> Result<ListInput, ApiError> {
        let mut i = ListInput::common(req)?;
        i.v2 = v2;
        if v2 {
            if let Some(t) = req.param("continuation-token") {
                let key = base64::engine::general_purpose::STANDARD
                    .decode(t)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| {
                        S3Error::InvalidArgument(
                            "The continuation token provided is incorrect".into(),
                        )
                    })?;
                i.continuation = Some((t.to_string(), key));
            }
            i.start_after = req.param("start-after").map(str::to_string);
            i.fetch_owner = req.param("fetch-owner") == Some("true");
        } else {
            i.marker = req.param("marker").map(str::to_string);
            i.fetch_owner = true;
        }
        Ok(i)
    }

    /// ListObjectVersions: `key-marker` and `version-id-marker`.
    pub(super) fn versions(req: &S3Request) -> Result<ListInput, ApiError> {
        ListInput::after(req, "version-id-marker")
    }

    /// ListMultipartUploads: `key-marker`, `upload-id-marker` (kept as the version marker)
    /// and `max-uploads` (at most 1000).
    pub(super) fn uploads(req: &S3Request) -> Result<ListInput, ApiError> {
        let mut i = ListInput::after(req, "upload-id-marker")?;
        i.max_keys = max_param(req, "max-uploads")?;
        Ok(i)
    }

    /// The common parameters, `key-marker` and the marker `id_param` names.
    fn after(req: &S3Request, id_param: &str) -> Result<ListInput, ApiError> {
        let mut i = ListInput::common(req)?;
        let nonempty = |p: &str| req.param(p).filter(|m| !m.is_empty()).map(str::to_string);
        i.key_marker = nonempty("key-marker");
        i.version_id_marker = nonempty(id_param);
        Ok(i)
    }

    /// A key (or prefix) as the answer writes it.
    pub(super) fn enc(&self, s: &str) -> String {
        if self.url {
            url_enc(s)
        } else {
            s.to_string()
        }
    }

    pub(super) fn encoding_type(&self) -> Option<&'static str> {
        self.url.then_some("url")
    }
}

/// A page-size parameter (`max-keys`, `max-uploads`): 1000 when absent, at most 1000.
fn max_param(req: &S3Request, name: &str) -> Result<usize, ApiError> {
    match req.param(name) {
        None => Ok(1000),
        Some(s) => match s.parse::<i64>() {
            Ok(n) if n >= 0 => Ok(n.min(1000) as usize),
            _ => Err(S3Error::InvalidArgument(format!(
                "Provided {name} not an integer or within integer range"
            ))
            .into()),
        },
    }
}

fn url_enc(s: &str) -> String {
    // What S3 applies with encoding-type=url: everything but unreserved characters and '/'.
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~')
        .remove(b'/');
    percent_encoding::utf8_percent_encode(s, SET).to_string()
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ListBucketResult {
    name: String,
    prefix: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    continuation_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    start_after: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_count: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_continuation_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    marker: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_marker: Option<String>,
    max_keys: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    delimiter: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    encoding_type: Option<&'static str>,
    is_truncated: bool,
    contents: Vec<Contents>,
    common_prefixes: Vec<CommonPrefix>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Contents {
    key: String,
    last_modified: String,
    #[serde(rename = "ETag")]
    etag: String,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    owner: Option<Owner>,
    storage_class: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct CommonPrefix {
    pub(super) prefix: String,
}

/// One page of a listing: objects and common prefixes (together at most `max_keys`).
struct Page {
    contents: Vec<ObjectInfo>,
    prefixes: Vec<String>,
    truncated: bool,
    /// The last key or prefix listed.
    last: Option<String>,
}

/// Walks the bucket from `after`, rolling keys up to common prefixes at the delimiter.
fn walk(
    store: &dyn cairn_store::ObjectStore,
    bucket: &str,
    i: &ListInput,
    after: Option<String>,
) -> Result<Page, ApiError> {
    let (prefix, max) = (&i.prefix, i.max_keys);
    let mut page = Page {
        contents: Vec::new(),
        prefixes: Vec::new(),
        truncated: false,
        last: None,
    };
    let mut cursor = after;
    loop {
        let batch = store
            .list(bucket, prefix, cursor.as_deref(), 1000)
            .map_err(|e| store_error(e, bucket, None))?;
        let n = batch.objects.len();
        for o in batch.objects {
            cursor = Some(o.key.clone());
            let rolled = i.delimiter.as_ref().and_then(|d| {
                o.key[prefix.len()..]
                    .find(d.as_str())
                    .map(|at| o.key[..prefix.len() + at + d.len()].to_string())
            });
            if rolled.is_some() && page.prefixes.last() == rolled.as_ref() {
                continue;
            }
            if page.contents.len() + page.prefixes.len() == max {
                page.truncated = true;
                return Ok(page);
            }
            match rolled {
                Some(cp) => {
                    page.last = Some(cp.clone());
                    page.prefixes.push(cp);
                }
                None => {
                    page.last = Some(o.key.clone());
                    page.contents.push(o);
                }
            }
        }
        if !batch.is_truncated || n == 0 {
            return Ok(page);
        }
    }
}

/// ListObjects and ListObjectsV2 (the router set `continuation` or `marker`).
pub(super) async fn objects(
    ctx: &mut Ctx<'_>,
    req: &S3Request,
    i: ListInput,
) -> Result<Reply, ApiError> {
    let v2 = i.v2;
    let after = if v2 {
        i.continuation
            .as_ref()
            .map(|(_, k)| k.clone())
            .or_else(|| i.start_after.clone())
    } else {
        i.marker.clone()
    };
    let (b, i2) = (req.bucket.clone(), i.clone());
    let page = with_store(ctx, move |s| walk(s, &b, &i2, after)).await?;
    let owner = |ctx: &Ctx<'_>| i.fetch_owner.then(|| Owner::of(ctx));
    let answer = ListBucketResult {
        name: req.bucket.clone(),
        prefix: i.enc(&i.prefix),
        continuation_token: v2
            .then(|| i.continuation.as_ref().map(|(t, _)| t.clone()))
            .flatten(),
        start_after: v2
            .then(|| i.start_after.as_ref().map(|s| i.enc(s)))
            .flatten(),
        key_count: v2.then_some(page.contents.len() + page.prefixes.len()),
        next_continuation_token: (v2 && page.truncated)
            .then(|| {
                page.last
                    .as_ref()
                    .map(|l| base64::engine::general_purpose::STANDARD.encode(l.as_bytes()))
            })
            .flatten(),
        marker: (!v2).then(|| i.enc(i.marker.as_deref().unwrap_or(""))),
        next_marker: (!v2 && page.truncated && i.delimiter.is_some())
            .then(|| page.last.as_ref().map(|l| i.enc(l)))
            .flatten(),
        max_keys: i.max_keys,
        delimiter: i.delimiter.as_ref().map(|d| i.enc(d)),
        encoding_type: i.encoding_type(),
        is_truncated: page.truncated,
        contents: page
            .contents
            .iter()
            .map(|o| Contents {
                key: i.enc(&o.key),
                last_modified: s3_time(o.last_modified),
                etag: o.etag.clone(),
                size: o.size,
                owner: owner(ctx),
                storage_class: "STANDARD",
            })
            .collect(),
        common_prefixes: page
            .prefixes
            .iter()
            .map(|p| CommonPrefix { prefix: i.enc(p) })
            .collect(),
    };
    Ok(document("ListBucketResult", &answer))
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ListVersionsResult {
    name: String,
    prefix: String,
    key_marker: String,
    version_id_marker: String,
    max_keys: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    encoding_type: Option<&'static str>,
    is_truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_key_marker: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_version_id_marker: Option<String>,
    #[serde(rename = "$value")]
    entries: Vec<VersionEntry>,
}

/// A version or a delete marker, in key order then newest first.
#[derive(Serialize)]
enum VersionEntry {
    Version(VersionXml),
    DeleteMarker(MarkerXml),
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct VersionXml {
    key: String,
    version_id: String,
    is_latest: bool,
    last_modified: String,
    #[serde(rename = "ETag")]
    etag: String,
    size: u64,
    owner: Owner,
    storage_class: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct MarkerXml {
    key: String,
    version_id: String,
    is_latest: bool,
    last_modified: String,
    owner: Owner,
}

/// ListObjectVersions: versions and delete markers, by key then newest first.
pub(super) async fn versions(
    ctx: &mut Ctx<'_>,
    req: &S3Request,
    i: ListInput,
) -> Result<Reply, ApiError> {
    let (b, p, km, vm, max) = (
        req.bucket.clone(),
        i.prefix.clone(),
        i.key_marker.clone(),
        i.version_id_marker.clone(),
        i.max_keys,
    );
    let (entries, truncated) = with_store(ctx, move |store| {
        let after = km.as_deref().map(|k| (k, vm.as_deref()));
        store
            .list_versions(&b, &p, after, max)
            .map_err(|e| store_error(e, &b, None))
    })
    .await?;
    let version_id = |info: &ObjectInfo| info.version_id.clone().unwrap_or_else(|| "null".into());
    let next = entries.last().filter(|_| truncated);
    let answer = ListVersionsResult {
        name: req.bucket.clone(),
        prefix: i.enc(&i.prefix),
        key_marker: i.enc(i.key_marker.as_deref().unwrap_or("")),
        version_id_marker: i.version_id_marker.clone().unwrap_or_default(),
        max_keys: max,
        encoding_type: i.encoding_type(),
        is_truncated: truncated,
        next_key_marker: next.map(|e| i.enc(&e.info.key)),
        next_version_id_marker: next.map(|e| version_id(&e.info)),
        entries: entries
            .iter()
            .map(|e| {
                let (key, vid) = (i.enc(&e.info.key), version_id(&e.info));
                let last_modified = s3_time(e.info.last_modified);
                if e.delete_marker {
                    VersionEntry::DeleteMarker(MarkerXml {
                        key,
                        version_id: vid,
                        is_latest: e.is_latest,
                        last_modified,
                        owner: Owner::of(ctx),
                    })
                } else {
                    VersionEntry::Version(VersionXml {
                        key,
                        version_id: vid,
                        is_latest: e.is_latest,
                        last_modified,
                        etag: e.info.etag.clone(),
                        size: e.info.size,
                        owner: Owner::of(ctx),
                        storage_class: "STANDARD",
                    })
                }
            })
            .collect(),
    };
    Ok(document("ListVersionsResult", &answer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_encoding_keeps_slashes_and_unreserved() {
        assert_eq!(url_enc("AWSLogs/1 2+3~é"), "AWSLogs/1%202%2B3~%C3%A9");
    }
}
