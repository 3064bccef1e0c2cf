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
use cairn_store::{
    DeleteOutcome, ListPage, Object, ObjectInfo, ObjectStore, PutItem, PutOptions, Result,
    StoreError, VersionEntry, Versioning,
};
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
    let resource = format!("arn:aws:s3:::{bucket}/{key}");
    let rc = RequestContext {
        principal: &principal,
        action: "s3:PutObject",
        resource: &resource,
        keys: &keys,
    };
    policy::evaluate(std::slice::from_ref(&p), &rc) == Decision::Allow
}

/// The trail store seen through bucket policies.
pub struct PolicyGuardedStore {
    pub inner: Arc<dyn ObjectStore>,
    pub meta: Arc<Meta>,
    pub account: String,
}

impl PolicyGuardedStore {
    fn check(&self, bucket: &str, key: &str, opts: &PutOptions) -> Result<()> {
        match &opts.source_arn {
            Some(arn) if !delivery_allowed(&self.meta, &self.account, bucket, key, arn) => Err(
                StoreError::AccessDenied(format!("{arn} may not write s3://{bucket}/{key}")),
            ),
            _ => Ok(()),
        }
    }
}

impl ObjectStore for PolicyGuardedStore {
    fn create_bucket(&self, bucket: &str) -> Result<()> {
        self.inner.create_bucket(bucket)
    }
    fn bucket_exists(&self, bucket: &str) -> Result<bool> {
        self.inner.bucket_exists(bucket)
    }
    fn list_buckets(&self) -> Result<Vec<(String, chrono::DateTime<chrono::Utc>)>> {
        self.inner.list_buckets()
    }
    fn delete_bucket(&self, bucket: &str) -> Result<()> {
        self.inner.delete_bucket(bucket)
    }
    fn put(&self, bucket: &str, key: &str, body: &[u8], opts: &PutOptions) -> Result<ObjectInfo> {
        self.check(bucket, key, opts)?;
        self.inner.put(bucket, key, body, opts)
    }
    fn put_many(&self, items: &[PutItem<'_>]) -> Result<Vec<ObjectInfo>> {
        for i in items {
            self.check(i.bucket, i.key, i.opts)?;
        }
        self.inner.put_many(items)
    }
    fn get(&self, bucket: &str, key: &str) -> Result<Object> {
        self.inner.get(bucket, key)
    }
    fn head(&self, bucket: &str, key: &str) -> Result<ObjectInfo> {
        self.inner.head(bucket, key)
    }
    fn delete(&self, bucket: &str, key: &str) -> Result<()> {
        self.inner.delete(bucket, key)
    }
    fn list(
        &self,
        bucket: &str,
        prefix: &str,
        marker: Option<&str>,
        max_keys: usize,
    ) -> Result<ListPage> {
        self.inner.list(bucket, prefix, marker, max_keys)
    }
    fn versioning(&self, bucket: &str) -> Result<Option<Versioning>> {
        self.inner.versioning(bucket)
    }
    fn set_versioning(&self, bucket: &str, state: Versioning) -> Result<()> {
        self.inner.set_versioning(bucket, state)
    }
    fn delete_object(&self, bucket: &str, key: &str) -> Result<DeleteOutcome> {
        self.inner.delete_object(bucket, key)
    }
    fn delete_version(&self, bucket: &str, key: &str, version_id: &str) -> Result<DeleteOutcome> {
        self.inner.delete_version(bucket, key, version_id)
    }
    fn get_version(&self, bucket: &str, key: &str, version_id: &str) -> Result<Object> {
        self.inner.get_version(bucket, key, version_id)
    }
    fn list_versions(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<(&str, Option<&str>)>,
        max: usize,
    ) -> Result<(Vec<VersionEntry>, bool)> {
        self.inner.list_versions(bucket, prefix, after, max)
    }
}
