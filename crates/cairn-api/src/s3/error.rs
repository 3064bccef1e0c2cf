//! S3's errors, each mapped to its code, HTTP status, message and extra elements in one
//! place ([`S3Error::into_api`]); the store's errors map onto them ([`store_error`]).

use crate::protocol::ApiError;
use cairn_store::StoreError;

/// An S3 error as the service answers it.
#[derive(Debug, Clone, PartialEq)]
pub enum S3Error {
    AccessDenied,
    /// Object lock protects the version.
    ObjectLocked,
    BadDigest,
    BadRequest(String),
    BucketAlreadyOwnedByYou(String),
    BucketNotEmpty(String),
    EntityTooLarge,
    EntityTooSmall {
        part: u16,
    },
    IllegalLocationConstraint(String),
    InvalidArgument(String),
    InvalidBucketName(String),
    InvalidBucketState(String),
    InvalidDigest,
    InvalidObjectState {
        message: &'static str,
        storage_class: Option<String>,
    },
    InvalidPart {
        part: u16,
        etag: String,
    },
    InvalidPartOrder,
    InvalidRange {
        requested: String,
        size: u64,
    },
    InvalidRequest(String),
    InvalidStorageClass(String),
    InvalidTag(&'static str),
    InvalidUri,
    KeyTooLong,
    MalformedPolicy(String),
    MalformedXml,
    MethodNotAllowed {
        method: &'static str,
        resource_type: &'static str,
    },
    MissingContentLength,
    MissingSecurityHeader(&'static str),
    NoSuchBucket(String),
    NoSuchBucketPolicy(String),
    NoSuchKey(String),
    NoSuchObjectLockConfiguration,
    NoSuchUpload(String),
    NoSuchVersion {
        key: String,
        version: String,
    },
    /// A configuration the bucket does not have: (code, message) for bucket `.2`.
    NoSuchConfiguration(&'static str, &'static str, String),
    NoSuchAccountPublicAccessBlock(String),
    NotImplemented(String),
    PreconditionFailed(String),
    RestoreAlreadyInProgress,
}

impl S3Error {
    /// `InvalidArgument` naming the argument (and its value) it is about.
    pub fn invalid_argument(
        message: impl Into<String>,
        name: &str,
        value: Option<&str>,
    ) -> ApiError {
        let mut e = S3Error::InvalidArgument(message.into())
            .into_api()
            .with("ArgumentName", name);
        if let Some(v) = value {
            e = e.with("ArgumentValue", v);
        }
        e
    }

    /// The error as the protocol renders it.
    pub fn into_api(self) -> ApiError {
        use S3Error::*;
        match self {
            AccessDenied => ApiError::new("AccessDenied", 403, "Access Denied"),
            ObjectLocked => ApiError::new(
                "AccessDenied",
                403,
                "Access Denied because object protected by object lock.",
            ),
            BadDigest => ApiError::client(
                "BadDigest",
                "The Content-MD5 you specified did not match what we received.",
            ),
            BadRequest(m) => ApiError::client("BadRequest", m),
            BucketAlreadyOwnedByYou(b) => ApiError::new(
                "BucketAlreadyOwnedByYou",
                409,
                "Your previous request to create the named bucket succeeded and you already own it.",
            )
            .with("BucketName", b),
            BucketNotEmpty(b) => ApiError::new(
                "BucketNotEmpty",
                409,
                "The bucket you tried to delete is not empty",
            )
            .with("BucketName", b),
            EntityTooLarge => ApiError::client(
                "EntityTooLarge",
                "Your proposed upload exceeds the maximum allowed object size.",
            ),
            EntityTooSmall { part } => ApiError::client(
                "EntityTooSmall",
                "Your proposed upload is smaller than the minimum allowed object size.",
            )
            .with("PartNumber", part.to_string()),
            IllegalLocationConstraint(m) => {
                ApiError::client("IllegalLocationConstraintException", m)
            }
            InvalidArgument(m) => ApiError::client("InvalidArgument", m),
            InvalidBucketName(b) => {
                ApiError::client("InvalidBucketName", "The specified bucket is not valid.")
                    .with("BucketName", b)
            }
            InvalidBucketState(m) => ApiError::new("InvalidBucketState", 409, m),
            InvalidDigest => ApiError::client(
                "InvalidDigest",
                "The Content-MD5 you specified was invalid.",
            ),
            InvalidObjectState {
                message,
                storage_class,
            } => {
                let e = ApiError::new("InvalidObjectState", 403, message);
                match storage_class {
                    Some(c) => e.with("StorageClass", c),
                    None => e,
                }
            }
            InvalidPart { part, etag } => ApiError::client(
                "InvalidPart",
                "One or more of the specified parts could not be found. The part may not have been uploaded, or the specified entity tag may not match the part's entity tag.",
            )
            .with("PartNumber", part.to_string())
            .with("ETag", etag),
            InvalidPartOrder => ApiError::client(
                "InvalidPartOrder",
                "The list of parts was not in ascending order. The parts list must be specified in order by part number.",
            ),
            InvalidRange { requested, size } => ApiError::new(
                "InvalidRange",
                416,
                "The requested range is not satisfiable",
            )
            .with("RangeRequested", requested)
            .with("ActualObjectSize", size.to_string()),
            InvalidRequest(m) => ApiError::client("InvalidRequest", m),
            InvalidStorageClass(c) => ApiError::client(
                "InvalidStorageClass",
                "The storage class you specified is not valid",
            )
            .with("StorageClassRequested", c),
            InvalidTag(m) => ApiError::client("InvalidTag", m),
            InvalidUri => ApiError::client("InvalidURI", "Couldn't parse the specified URI."),
            KeyTooLong => ApiError::client("KeyTooLongError", "Your key is too long"),
            MalformedPolicy(m) => ApiError::client("MalformedPolicy", m),
            MalformedXml => ApiError::client(
                "MalformedXML",
                "The XML you provided was not well-formed or did not validate against our published schema.",
            ),
            MethodNotAllowed {
                method,
                resource_type,
            } => ApiError::new(
                "MethodNotAllowed",
                405,
                "The specified method is not allowed against this resource.",
            )
            .with("Method", method)
            .with("ResourceType", resource_type),
            MissingContentLength => ApiError::new(
                "MissingContentLength",
                411,
                "You must provide the Content-Length HTTP header.",
            ),
            MissingSecurityHeader(h) => ApiError::client(
                "MissingSecurityHeader",
                "Your request was missing a required header",
            )
            .with("MissingHeaderName", h),
            NoSuchBucket(b) => {
                ApiError::new("NoSuchBucket", 404, "The specified bucket does not exist")
                    .with("BucketName", b)
            }
            NoSuchBucketPolicy(b) => ApiError::new(
                "NoSuchBucketPolicy",
                404,
                "The bucket policy does not exist",
            )
            .with("BucketName", b),
            NoSuchKey(k) => ApiError::new("NoSuchKey", 404, "The specified key does not exist.")
                .with("Key", k),
            NoSuchObjectLockConfiguration => ApiError::new(
                "NoSuchObjectLockConfiguration",
                404,
                "The specified object does not have a ObjectLock configuration",
            ),
            NoSuchUpload(id) => ApiError::new(
                "NoSuchUpload",
                404,
                "The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.",
            )
            .with("UploadId", id),
            NoSuchVersion { key, version } => ApiError::new(
                "NoSuchVersion",
                404,
                "The specified version does not exist.",
            )
            .with("Key", key)
            .with("VersionId", version),
            NoSuchConfiguration(code, message, bucket) => {
                ApiError::new(code, 404, message).with("BucketName", bucket)
            }
            NoSuchAccountPublicAccessBlock(account) => ApiError::new(
                "NoSuchPublicAccessBlockConfiguration",
                404,
                "The public access block configuration was not found",
            )
            .with("AccountId", account),
            NotImplemented(m) => ApiError::new("NotImplemented", 501, m),
            PreconditionFailed(condition) => ApiError::new(
                "PreconditionFailed",
                412,
                "At least one of the pre-conditions you specified did not hold",
            )
            .with("Condition", condition),
            RestoreAlreadyInProgress => ApiError::new(
                "RestoreAlreadyInProgress",
                409,
                "Object restore is already in progress",
            ),
        }
    }
}

impl From<S3Error> for ApiError {
    fn from(e: S3Error) -> ApiError {
        e.into_api()
    }
}

/// A store error as S3 answers it, for `bucket` (and `key`, when the request names one).
pub fn store_error(e: StoreError, bucket: &str, key: Option<&str>) -> ApiError {
    let key = || key.map(str::to_string).unwrap_or_default();
    match e {
        StoreError::NoSuchBucket(_) => S3Error::NoSuchBucket(bucket.into()).into(),
        StoreError::NoSuchKey { .. } => S3Error::NoSuchKey(key()).into(),
        StoreError::NoSuchVersion(v) => S3Error::NoSuchVersion {
            key: key(),
            version: v,
        }
        .into(),
        StoreError::DeleteMarker(_) => S3Error::MethodNotAllowed {
            method: "GET",
            resource_type: "DeleteMarker",
        }
        .into(),
        StoreError::BucketNotEmpty(_) => S3Error::BucketNotEmpty(bucket.into()).into(),
        StoreError::InvalidKey(_) => S3Error::KeyTooLong.into(),
        StoreError::InvalidBucketName(_) => S3Error::InvalidBucketName(bucket.into()).into(),
        // The body's KMS key cannot be used (disabled, pending deletion, deleted): S3 passes
        // KMS's refusal on.
        StoreError::KeyUnavailable(m) => ApiError::new("KMS.DisabledException", 400, m),
        e if e.is_no_space() => {
            tracing::error!(error = %e, "a store write failed for want of disk space");
            ApiError::new(
                "SlowDown",
                503,
                "Please reduce your request rate. cairn's data volume is full; nothing was done. Retry once space is freed.",
            )
        }
        e => ApiError::internal(e),
    }
}
