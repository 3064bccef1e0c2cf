//! Requests signed by botocore's own SigV4 signers (tests/gen_sigv4_vectors.py) verify, and
//! each kind of tampering is refused with the right AWS error for its protocol.

use cairn_iam::sigv4::{parse, verify, AuthError, Protocol, Request};
use chrono::{DateTime, Duration, NaiveDateTime, TimeZone, Utc};
use sha2::{Digest, Sha256};

#[derive(Clone)]
struct Case {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    s3: bool,
    presigned: bool,
}

fn cases() -> (String, Vec<Case>) {
    let v: serde_json::Value = serde_json::from_str(include_str!("sigv4_vectors.json")).unwrap();
    let secret = v["secret"].as_str().unwrap().to_string();
    let cases = v["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let url = r["url"].as_str().unwrap();
            let rest = url.split_once("://").unwrap().1;
            let (host, path_q) = rest.split_at(rest.find('/').unwrap());
            let (path, query) = path_q.split_once('?').unwrap_or((path_q, ""));
            let mut headers: Vec<(String, String)> = r["headers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| {
                    (
                        h[0].as_str().unwrap().to_string(),
                        h[1].as_str().unwrap().to_string(),
                    )
                })
                .collect();
            headers.push(("Host".into(), host.into()));
            Case {
                method: r["method"].as_str().unwrap().into(),
                path: path.into(),
                query: query.into(),
                headers,
                body: r["body"].as_str().unwrap().as_bytes().to_vec(),
                s3: r["service"] == "s3",
                presigned: r["kind"] == "presigned",
            }
        })
        .collect();
    (secret, cases)
}

fn run(c: &Case, secret: &str, now_shift: Duration) -> Result<(), AuthError> {
    let sha = hex::encode(Sha256::digest(&c.body));
    let req = Request {
        method: &c.method,
        path: &c.path,
        query: &c.query,
        headers: &c.headers,
        body_sha256: &sha,
        s3: c.s3,
    };
    let auth = parse(&req)?;
    let t = NaiveDateTime::parse_from_str(&auth.amz_date, "%Y%m%dT%H%M%SZ").unwrap();
    let now: DateTime<Utc> = Utc.from_utc_datetime(&t) + now_shift;
    verify(&req, &auth, secret, now)
}

#[test]
fn every_botocore_signed_request_verifies() {
    let (secret, cases) = cases();
    assert_eq!(cases.len(), 7);
    for c in &cases {
        run(c, &secret, Duration::seconds(3))
            .unwrap_or_else(|e| panic!("{} {}?{}: {e}", c.method, c.path, c.query));
    }
}

#[test]
fn a_wrong_secret_or_any_changed_byte_is_a_signature_mismatch() {
    let (secret, cases) = cases();
    for c in &cases {
        assert_eq!(
            run(c, "wrong-secret", Duration::zero()),
            Err(AuthError::SignatureMismatch)
        );
        let mut m = Case {
            path: format!("{}x", c.path),
            ..c.clone()
        };
        assert_eq!(
            run(&m, &secret, Duration::zero()),
            Err(AuthError::SignatureMismatch),
            "path changed"
        );
        m.path = c.path.clone();
        m.method = if c.method == "GET" {
            "DELETE".into()
        } else {
            "GET".into()
        };
        assert_eq!(
            run(&m, &secret, Duration::zero()),
            Err(AuthError::SignatureMismatch),
            "method changed"
        );
    }
}

#[test]
fn a_changed_body_is_refused() {
    let (secret, cases) = cases();
    for c in cases.iter().filter(|c| !c.presigned) {
        let mut m = Case {
            body: b"tampered".to_vec(),
            ..c.clone()
        };
        let want = if c.s3 {
            AuthError::ContentSha256Mismatch
        } else {
            AuthError::SignatureMismatch
        };
        assert_eq!(run(&m, &secret, Duration::zero()), Err(want.clone()));
        m.body = c.body.clone();
        assert!(run(&m, &secret, Duration::zero()).is_ok());
        if c.s3 {
            assert_eq!(want.code(Protocol::S3), ("XAmzContentSHA256Mismatch", 400));
        }
    }
}

#[test]
fn clock_skew_beyond_15_minutes_is_refused_and_presigned_urls_expire() {
    let (secret, cases) = cases();
    for c in &cases {
        if c.presigned {
            assert!(run(c, &secret, Duration::minutes(59)).is_ok());
            assert_eq!(
                run(c, &secret, Duration::minutes(61)),
                Err(AuthError::PresignExpired)
            );
            assert_eq!(
                run(c, &secret, Duration::minutes(-16)),
                Err(AuthError::PresignNotYetValid)
            );
        } else {
            assert!(run(c, &secret, Duration::minutes(14)).is_ok());
            let e = run(c, &secret, Duration::minutes(16)).unwrap_err();
            assert!(matches!(e, AuthError::Skewed { .. }));
            assert_eq!(e.code(Protocol::S3), ("RequestTimeTooSkewed", 403));
            assert_eq!(e.code(Protocol::Json), ("InvalidSignatureException", 400));
            assert!(matches!(
                run(c, &secret, Duration::minutes(-16)),
                Err(AuthError::Skewed { .. })
            ));
        }
    }
}

#[test]
fn missing_or_malformed_authorization_and_unsigned_amz_headers() {
    let (secret, cases) = cases();
    let c = cases.iter().find(|c| !c.presigned && c.s3).unwrap();
    // No authorization at all.
    let mut none = Case {
        headers: c
            .headers
            .iter()
            .filter(|(k, _)| k != "Authorization")
            .cloned()
            .collect(),
        ..c.clone()
    };
    let e = run(&none, &secret, Duration::zero()).unwrap_err();
    assert_eq!(e, AuthError::Missing);
    assert_eq!(e.code(Protocol::S3), ("AccessDenied", 403));
    assert_eq!(e.code(Protocol::Json), ("MissingAuthenticationToken", 403));
    // Garbage authorization.
    none.headers.push((
        "Authorization".into(),
        "AWS4-HMAC-SHA256 Credential=AKID/20250101/us-east-1/s3".into(),
    ));
    let e = run(&none, &secret, Duration::zero()).unwrap_err();
    assert!(matches!(e, AuthError::Malformed(_)));
    assert_eq!(e.code(Protocol::S3), ("AuthorizationHeaderMalformed", 400));
    assert_eq!(e.code(Protocol::Json), ("IncompleteSignature", 400));
    // An x-amz-* header the client did not sign (B7).
    let mut extra = c.clone();
    extra
        .headers
        .push(("x-amz-copy-source".into(), "other-bucket/secret".into()));
    let e = run(&extra, &secret, Duration::zero()).unwrap_err();
    assert_eq!(e, AuthError::UnsignedHeader("x-amz-copy-source".into()));
    assert_eq!(e.code(Protocol::S3), ("AccessDenied", 403));
    // S3 without x-amz-content-sha256 (B9).
    let mut no_sha = Case {
        headers: c
            .headers
            .iter()
            .filter(|(k, _)| !k.eq_ignore_ascii_case("x-amz-content-sha256"))
            .cloned()
            .collect(),
        ..c.clone()
    };
    let e = run(&no_sha, &secret, Duration::zero()).unwrap_err();
    assert_eq!(e, AuthError::MissingContentSha256);
    assert_eq!(e.code(Protocol::S3), ("InvalidRequest", 400));
    no_sha.headers.retain(|(k, _)| k != "Authorization");
    assert_eq!(
        run(&no_sha, &secret, Duration::zero()).unwrap_err(),
        AuthError::Missing
    );
}

#[test]
fn presigned_expiry_limits_are_enforced() {
    let (secret, cases) = cases();
    let c = cases.iter().find(|c| c.presigned && c.s3).unwrap();
    for (bad, _) in [("604801", ()), ("0", ()), ("-5", ()), ("soon", ())] {
        let q = c
            .query
            .replace("X-Amz-Expires=3600", &format!("X-Amz-Expires={bad}"));
        assert_ne!(q, c.query);
        let m = Case {
            query: q,
            ..c.clone()
        };
        let e = run(&m, &secret, Duration::zero()).unwrap_err();
        assert_eq!(e, AuthError::BadExpires);
        assert_eq!(
            e.code(Protocol::S3),
            ("AuthorizationQueryParametersError", 400)
        );
    }
    let dup = Case {
        query: format!("{}&X-Amz-Expires=60", c.query),
        ..c.clone()
    };
    assert!(matches!(
        run(&dup, &secret, Duration::zero()),
        Err(AuthError::Malformed(_))
    ));
}
