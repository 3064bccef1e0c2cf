//! ACLs, canned only: Get/PutBucketAcl and Get/PutObjectAcl. A bucket's ACL lives in the
//! metadata store, an object's in its system attributes. An ACL document is read for the
//! canned ACL it expresses; grants no canned ACL expresses are refused, never dropped.

use super::{access, bucket_config, document, tagging, S3Error, S3Request};
use crate::edge::Ctx;
use crate::protocol::xml;
use crate::protocol::{ApiError, Reply};
use serde::Serialize;

/// The canned ACLs S3 knows.
pub const CANNED_ACLS: &[&str] = &[
    "private",
    "public-read",
    "public-read-write",
    "authenticated-read",
    "aws-exec-read",
    "bucket-owner-read",
    "bucket-owner-full-control",
    "log-delivery-write",
];

/// A canned ACL, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CannedAcl(pub String);

impl CannedAcl {
    /// `x-amz-acl`'s value, checked.
    pub fn of_header(v: &str) -> Result<CannedAcl, ApiError> {
        if !CANNED_ACLS.contains(&v) {
            return Err(S3Error::invalid_argument("", "x-amz-acl", None));
        }
        Ok(CannedAcl(v.to_string()))
    }
}

/// Where a bucket's canned ACL is kept.
pub fn bucket_key(bucket: &str) -> String {
    format!("bucket-acl/{bucket}")
}

const ALL_USERS: &str = "http://acs.amazonaws.com/groups/global/AllUsers";
const AUTHENTICATED: &str = "http://acs.amazonaws.com/groups/global/AuthenticatedUsers";
const LOG_DELIVERY: &str = "http://acs.amazonaws.com/groups/s3/LogDelivery";

/// The canned ACL a Put*Acl request asks for: its `x-amz-acl`, or the one its
/// AccessControlPolicy document expresses.
pub(super) fn requested(req: &S3Request) -> Result<CannedAcl, ApiError> {
    if req
        .headers
        .iter()
        .any(|(k, _)| k.starts_with("x-amz-grant-"))
    {
        return Err(S3Error::NotImplemented(
            "cairn supports canned ACLs only; x-amz-grant-* headers are not implemented.".into(),
        )
        .into());
    }
    if let Some(acl) = req.header("x-amz-acl") {
        return CannedAcl::of_header(acl);
    }
    if req.body.is_empty() {
        return Err(S3Error::MissingSecurityHeader("x-amz-acl").into());
    }
    let doc = xml::parse(&req.body)
        .filter(|d| d.name == "AccessControlPolicy")
        .ok_or(S3Error::MalformedXml)?;
    let list = doc
        .child("AccessControlList")
        .ok_or(S3Error::MalformedXml)?;
    let mut groups: Vec<(String, String)> = Vec::new();
    for grant in list.children_named("Grant") {
        let grantee = grant.child("Grantee").ok_or(S3Error::MalformedXml)?;
        let permission = grant
            .child_text("Permission")
            .map(str::trim)
            .ok_or(S3Error::MalformedXml)?;
        match (grantee.child_text("URI"), grantee.child_text("ID")) {
            (Some(uri), _) => groups.push((uri.trim().to_string(), permission.to_string())),
            // Grants to the owner are what every canned ACL starts from.
            (None, Some(_)) if permission == "FULL_CONTROL" => {}
            _ => {
                return Err(S3Error::NotImplemented(
                    "cairn supports canned ACLs only; this grant expresses none.".into(),
                )
                .into())
            }
        }
    }
    let has = |uri: &str, p: &str| groups.iter().any(|(u, q)| u == uri && q == p);
    let canned = if has(ALL_USERS, "WRITE") {
        "public-read-write"
    } else if has(ALL_USERS, "READ") {
        "public-read"
    } else if has(AUTHENTICATED, "READ") {
        "authenticated-read"
    } else if has(LOG_DELIVERY, "WRITE") {
        "log-delivery-write"
    } else if groups.is_empty() {
        "private"
    } else {
        return Err(S3Error::NotImplemented(
            "cairn supports canned ACLs only; these grants express none.".into(),
        )
        .into());
    };
    Ok(CannedAcl(canned.into()))
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Policy {
    owner: super::Owner,
    access_control_list: Grants,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Grants {
    grant: Vec<Grant>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Grant {
    grantee: Grantee,
    permission: &'static str,
}

#[derive(Serialize)]
struct Grantee {
    #[serde(rename = "@xmlns:xsi")]
    xsi: &'static str,
    #[serde(rename = "@xsi:type")]
    kind: &'static str,
    #[serde(rename = "ID", skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(rename = "DisplayName", skip_serializing_if = "Option::is_none")]
    display_name: Option<String>,
    #[serde(rename = "URI", skip_serializing_if = "Option::is_none")]
    uri: Option<&'static str>,
}

fn group(uri: &'static str, permission: &'static str) -> Grant {
    Grant {
        grantee: Grantee {
            xsi: "http://www.w3.org/2001/XMLSchema-instance",
            kind: "Group",
            id: None,
            display_name: None,
            uri: Some(uri),
        },
        permission,
    }
}

/// The AccessControlPolicy document of canned ACL `canned`.
fn acl_document(ctx: &Ctx<'_>, canned: &str) -> Reply {
    let owner = ctx.api.opts.account.clone();
    let mut grants = vec![Grant {
        grantee: Grantee {
            xsi: "http://www.w3.org/2001/XMLSchema-instance",
            kind: "CanonicalUser",
            id: Some(owner.clone()),
            display_name: Some(owner),
            uri: None,
        },
        permission: "FULL_CONTROL",
    }];
    match canned {
        "public-read" => grants.push(group(ALL_USERS, "READ")),
        "public-read-write" => {
            grants.push(group(ALL_USERS, "READ"));
            grants.push(group(ALL_USERS, "WRITE"));
        }
        "authenticated-read" => grants.push(group(AUTHENTICATED, "READ")),
        "log-delivery-write" => {
            grants.push(group(LOG_DELIVERY, "WRITE"));
            grants.push(group(LOG_DELIVERY, "READ_ACP"));
        }
        _ => {}
    }
    document(
        "AccessControlPolicy",
        &Policy {
            owner: super::Owner::of(ctx),
            access_control_list: Grants { grant: grants },
        },
    )
}

/// A public canned ACL is refused under BlockPublicAcls (the bucket's or the account's).
fn refuse_public(ctx: &Ctx<'_>, req: &S3Request, acl: &CannedAcl) -> Result<(), ApiError> {
    if access::is_public_canned_acl(&acl.0)
        && bucket_config::public_access_setting(ctx, &req.bucket, "BlockPublicAcls")?
    {
        return Err(S3Error::AccessDenied.into());
    }
    Ok(())
}

pub(super) fn get_bucket(ctx: &mut Ctx<'_>, req: &S3Request) -> Result<Reply, ApiError> {
    let canned = ctx
        .api
        .meta
        .get::<String>(&bucket_key(&req.bucket))?
        .unwrap_or_else(|| "private".into());
    Ok(acl_document(ctx, &canned))
}

pub(super) fn put_bucket(
    ctx: &mut Ctx<'_>,
    req: &S3Request,
    acl: CannedAcl,
) -> Result<Reply, ApiError> {
    refuse_public(ctx, req, &acl)?;
    ctx.defer_meta_put(bucket_key(&req.bucket), acl.0);
    Ok(Reply::s3_xml(200, String::new()))
}

pub(super) async fn get_object(ctx: &mut Ctx<'_>, req: &S3Request) -> Result<Reply, ApiError> {
    let info = tagging::head_version(ctx, req).await?;
    let canned = info
        .system
        .get("acl")
        .cloned()
        .unwrap_or_else(|| "private".into());
    Ok(tagging::with_version(acl_document(ctx, &canned), &info))
}

pub(super) async fn put_object(
    ctx: &mut Ctx<'_>,
    req: &S3Request,
    acl: CannedAcl,
) -> Result<Reply, ApiError> {
    refuse_public(ctx, req, &acl)?;
    let info = tagging::change_version(ctx, req, move |i| {
        i.system.insert("acl".into(), acl.0.clone());
        Ok(())
    })
    .await?;
    Ok(tagging::with_version(
        Reply::s3_xml(200, String::new()),
        &info,
    ))
}
