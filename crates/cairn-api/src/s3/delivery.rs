//! Trail delivery as AWS does it: CloudTrail writes into the log bucket as the service
//! principal `cloudtrail.amazonaws.com`, subject to the bucket's policy with `aws:SourceArn`
//! (the trail), `aws:SourceAccount` and `s3:x-amz-acl: bucket-owner-full-control`. A refused
//! write fails the delivery, which the trail reports as `LatestDeliveryError: AccessDenied`
//! and retries.
//!
//! A bucket without a policy accepts its own account's trail deliveries (cairn's buckets are
//! the account's; requiring a policy on every bucket would break the embedded default).

use crate::meta::Meta;
use cairn_iam::policy::{self, ConditionKeys, Decision, Policy, Principal, RequestContext};
use std::sync::Arc;

pub const CLOUDTRAIL_PRINCIPAL: &str = "cloudtrail.amazonaws.com";

/// Whether the bucket's policy lets `source_arn` (a trail of `account`) put `key`.
pub fn delivery_allowed(
    meta: &Meta,
    account: &str,
    bucket: &str,
    key: &str,
    source_arn: &str,
) -> bool {
    let text = match meta.get::<String>(&format!("bucket-policy/{bucket}")) {
        Ok(Some(t)) => t,
        Ok(None) => return true,
        Err(_) => return false,
    };
    let Ok(p) = Policy::parse(&text) else {
        return false;
    };
    let principal = Principal {
        arn: CLOUDTRAIL_PRINCIPAL.into(),
        account: account.into(),
        role_arn: None,
        service: Some(CLOUDTRAIL_PRINCIPAL.into()),
    };
    let mut keys = ConditionKeys::new();
    keys.set("aws:SourceArn", source_arn);
    keys.set("aws:SourceAccount", account);
    keys.set("s3:x-amz-acl", "bucket-owner-full-control");
    keys.set("aws:SecureTransport", "true");
    keys.set("aws:PrincipalIsAWSService", "true");
    keys.set("aws:PrincipalServiceName", CLOUDTRAIL_PRINCIPAL);
    let resource = cairn_record::Arn::s3_object(bucket, key).to_string();
    let rc = RequestContext {
        principal: &principal,
        action: "s3:PutObject",
        resource: &resource,
        keys: &keys,
    };
    policy::evaluate(std::slice::from_ref(&p), &rc) == Decision::Allow
}

/// The engine's delivery guard over this metadata: deliveries subject to the buckets'
/// policies.
pub fn guard(meta: Arc<Meta>, account: String) -> cairn_trail::DeliveryGuard {
    cairn_trail::DeliveryGuard(Arc::new(move |bucket, key, source_arn| {
        delivery_allowed(&meta, &account, bucket, key, source_arn)
    }))
}

/// The KMS key a bucket's default encryption names (`aws:kms` with a `KMSMasterKeyID`), for
/// the trail engine: a trail without a key of its own delivers into such a bucket SSE-KMS
/// under it, as S3 applies its default to CloudTrail's writes.
pub fn default_kms_key(meta: Arc<Meta>) -> cairn_trail::BucketKmsHook {
    cairn_trail::BucketKmsHook(Arc::new(move |bucket: &str| {
        super::sse::bucket_default(&meta, bucket)
            .ok()
            .flatten()
            .and_then(|d| d.key_id)
    }))
}
