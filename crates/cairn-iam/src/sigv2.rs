//! S3's Signature Version 2 in its presigned form (`?AWSAccessKeyId=…&Expires=…&Signature=…`),
//! which `aws s3 presign` (awscli v1) and botocore's `s3` signer still produce. Only the
//! query-string form is accepted; SigV2 `Authorization` headers are refused.
//!
//! String to sign: `VERB \n Content-MD5 \n Content-Type \n Expires \n x-amz-headers resource`,
//! where the resource is `/bucket/key` plus the sub-resources and response overrides that
//! S3 signs, sorted; the signature is base64 HMAC-SHA1 under the secret key.

use base64::Engine;
use chrono::{DateTime, TimeZone, Utc};

/// A presigned SigV2 request's credentials.
#[derive(Debug, Clone, PartialEq)]
pub struct Presigned {
    pub access_key_id: String,
    pub expires: i64,
    pub signature: String,
}

/// Why a SigV2 presigned request was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum V2Error {
    Expired,
    /// `Expires` lies more than [`MAX_LIFETIME_SECONDS`] ahead.
    TooLong,
    Mismatch,
    /// A query parameter SigV2 does not sign and that could change what the request does
    /// (`?retention` added to a presigned PUT).
    Unsigned(String),
    Malformed(String),
}

/// The longest a presigned URL may stay valid (S3's seven days, as for SigV4).
pub const MAX_LIFETIME_SECONDS: i64 = 604_800;

/// Query parameters S3 includes in the SigV2 resource (botocore's list, which is what the
/// signer on the other side uses).
const SIGNED_PARAMS: &[&str] = &[
    "accelerate",
    "acl",
    "analytics",
    "cors",
    "defaultObjectAcl",
    "delete",
    "inventory",
    "lifecycle",
    "location",
    "logging",
    "metrics",
    "notification",
    "object-lock",
    "partNumber",
    "policy",
    "replication",
    "requestPayment",
    "response-cache-control",
    "response-content-disposition",
    "response-content-encoding",
    "response-content-language",
    "response-content-type",
    "response-expires",
    "restore",
    "select",
    "select-type",
    "storageClass",
    "tagging",
    "torrent",
    "uploadId",
    "uploads",
    "versionId",
    "versioning",
    "versions",
    "website",
];

/// Parameters that only page or filter a listing: not sub-resources, so SigV2 leaves them
/// unsigned (S3 accepts them so).
pub const LISTING_PARAMS: &[&str] = &[
    "prefix",
    "marker",
    "max-keys",
    "delimiter",
    "encoding-type",
    "list-type",
    "continuation-token",
    "start-after",
    "fetch-owner",
    "key-marker",
    "version-id-marker",
    "upload-id-marker",
    "part-number-marker",
    "max-parts",
    "max-uploads",
    "x-id",
];

/// SigV2's own query parameters (its credentials and signature).
pub const AUTH_PARAMS: &[&str] = &[
    "AWSAccessKeyId",
    "Expires",
    "Signature",
    "x-amz-security-token",
];

/// Whether SigV2 leaves query parameter `name` unsigned.
fn unsigned_ok(name: &str) -> bool {
    LISTING_PARAMS.contains(&name) || AUTH_PARAMS.contains(&name)
}

/// The presigned SigV2 credentials of a query, if it carries them.
pub fn presigned(query: &[(String, String)]) -> Option<Result<Presigned, V2Error>> {
    let get = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let akid = get("AWSAccessKeyId")?;
    let (Some(sig), Some(exp)) = (get("Signature"), get("Expires")) else {
        return Some(Err(V2Error::Malformed(
            "Query-string authentication requires the Signature, Expires and AWSAccessKeyId parameters".into(),
        )));
    };
    let Ok(expires) = exp.parse::<i64>() else {
        return Some(Err(V2Error::Malformed(
            "Invalid date (should be seconds since epoch)".into(),
        )));
    };
    Some(Ok(Presigned {
        access_key_id: akid,
        expires,
        signature: sig,
    }))
}

/// Verifies a SigV2 presigned request. `resource_path` is `/bucket/key` (still
/// percent-encoded as sent); `headers` lower-cased.
pub fn verify(
    p: &Presigned,
    method: &str,
    resource_path: &str,
    query: &[(String, String)],
    headers: &[(String, String)],
    secret: &str,
    now: DateTime<Utc>,
) -> Result<(), V2Error> {
    let expires = Utc
        .timestamp_opt(p.expires, 0)
        .single()
        .ok_or_else(|| V2Error::Malformed("Invalid date (should be seconds since epoch)".into()))?;
    if now > expires {
        return Err(V2Error::Expired);
    }
    if p.expires - now.timestamp() > MAX_LIFETIME_SECONDS {
        return Err(V2Error::TooLong);
    }
    if let Some((k, _)) = query
        .iter()
        .find(|(k, _)| !SIGNED_PARAMS.contains(&k.as_str()) && !unsigned_ok(k.as_str()))
    {
        return Err(V2Error::Unsigned(k.clone()));
    }
    let header = |k: &str| {
        headers
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default()
    };
    let mut amz: Vec<(String, String)> = headers
        .iter()
        .filter(|(k, _)| k.starts_with("x-amz-"))
        .map(|(k, v)| (k.clone(), v.trim().to_string()))
        .collect();
    amz.sort();
    let mut amz_text = String::new();
    for (k, v) in &amz {
        amz_text.push_str(&format!("{k}:{v}\n"));
    }
    let mut subs: Vec<(String, String)> = query
        .iter()
        .filter(|(k, _)| SIGNED_PARAMS.contains(&k.as_str()))
        .cloned()
        .collect();
    subs.sort();
    let mut resource = resource_path.to_string();
    for (i, (k, v)) in subs.iter().enumerate() {
        resource.push(if i == 0 { '?' } else { '&' });
        resource.push_str(k);
        if !v.is_empty() {
            resource.push('=');
            resource.push_str(v);
        }
    }
    let sts = format!(
        "{method}\n{}\n{}\n{}\n{amz_text}{resource}",
        header("content-md5"),
        header("content-type"),
        p.expires
    );
    let key = aws_lc_rs::hmac::Key::new(
        aws_lc_rs::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        secret.as_bytes(),
    );
    let expected = base64::engine::general_purpose::STANDARD
        .encode(aws_lc_rs::hmac::sign(&key, sts.as_bytes()).as_ref());
    aws_lc_rs::constant_time::verify_slices_are_equal(expected.as_bytes(), p.signature.as_bytes())
        .map_err(|_| V2Error::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn aws_documented_example_verifies() {
        // The query-string authentication example of AWS's "Signing and authenticating REST
        // requests" (SigV2) page.
        let query = q(&[
            ("AWSAccessKeyId", "AKIAIOSFODNN7EXAMPLE"),
            ("Expires", "1175139620"),
            ("Signature", "NpgCjnDzrM+WFzoENXmpNDUsSn8="),
        ]);
        let p = presigned(&query).unwrap().unwrap();
        let now = Utc.timestamp_opt(1175139000, 0).unwrap();
        verify(
            &p,
            "GET",
            "/johnsmith/photos/puppy.jpg",
            &query,
            &[],
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            now,
        )
        .unwrap();
        assert_eq!(
            verify(
                &p,
                "GET",
                "/johnsmith/photos/kitten.jpg",
                &query,
                &[],
                "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                now
            ),
            Err(V2Error::Mismatch)
        );
        // A sub-resource the signature does not cover cannot be added (`?retention` would
        // turn a presigned PUT into PutObjectRetention).
        let mut extra = query.clone();
        extra.push(("retention".into(), String::new()));
        assert_eq!(
            verify(
                &p,
                "GET",
                "/johnsmith/photos/puppy.jpg",
                &extra,
                &[],
                "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                now
            ),
            Err(V2Error::Unsigned("retention".into()))
        );
        // Valid for more than seven days from now: refused.
        let long_ago = Utc.timestamp_opt(1175139620 - 604_801, 0).unwrap();
        assert_eq!(
            verify(
                &p,
                "GET",
                "/johnsmith/photos/puppy.jpg",
                &query,
                &[],
                "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                long_ago
            ),
            Err(V2Error::TooLong)
        );
        let later = Utc.timestamp_opt(1175139621, 0).unwrap();
        assert_eq!(
            verify(
                &p,
                "GET",
                "/johnsmith/photos/puppy.jpg",
                &query,
                &[],
                "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                later
            ),
            Err(V2Error::Expired)
        );
    }
}
