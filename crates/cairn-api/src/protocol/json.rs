//! The JSON protocols (awsJson 1.1 for CloudTrail, restJson for CloudTrail Data): a body is
//! one JSON object, read once into the operation's typed input; answers are serialized from
//! the operation's output struct; timestamps are epoch seconds.

use super::{lower_first, ApiError, Reply, AMZ_JSON_1_1};
use crate::edge::HttpRequest;
use bytes::Bytes;
use chrono::{DateTime, TimeZone, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// A request's JSON body: an object (an empty body is an empty object).
pub fn object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if body.is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::serialization(
            "Start of structure or map expected at the top level of the request body",
        )),
        Err(e) => Err(ApiError::serialization(format!(
            "The request body is not valid JSON: {e}"
        ))),
    }
}

/// The typed input of an operation from its body's object; a member of the wrong type is a
/// SerializationException, as AWS's deserializer answers it.
pub fn input<T: DeserializeOwned>(body: &Map<String, Value>) -> Result<T, ApiError> {
    T::deserialize(body).map_err(|e| ApiError::serialization(format!("Invalid request: {e}")))
}

/// The operation an awsJson request's `X-Amz-Target` names after one of `prefixes` (a
/// service's target prefixes); `None` when it names none, or names no operation.
pub fn target_op<'a>(req: &'a HttpRequest, prefixes: &[&str]) -> Option<&'a str> {
    let t = req.header(super::X_AMZ_TARGET)?;
    prefixes
        .iter()
        .find_map(|p| t.strip_prefix(p))
        .filter(|op| !op.is_empty())
}

/// [`target_op`] for `Service::operation_name`: UnknownOperationException when it names none.
pub fn target_name(req: &HttpRequest, prefixes: &[&str]) -> Result<String, ApiError> {
    target_op(req, prefixes).map(str::to_string).ok_or_else(|| {
        ApiError::client(
            "UnknownOperationException",
            format!(
                "Unknown operation: {}",
                req.header(super::X_AMZ_TARGET).unwrap_or_default()
            ),
        )
    })
}

/// `requestParameters` of a request whose inputs did not route: its body, when it parses.
pub fn logged_body(req: &HttpRequest) -> Option<Value> {
    object(&req.body).ok().and_then(|b| logged(&b))
}

/// Refuses a body that says it is not JSON (SDKs send `application/x-amz-json-1.1`).
pub fn check_content_type(req: &HttpRequest) -> Result<(), ApiError> {
    if let Some(ct) = req.header("content-type") {
        let ct = ct.to_ascii_lowercase();
        if !(ct.starts_with("application/x-amz-json") || ct.starts_with("application/json")) {
            return Err(ApiError::serialization(format!(
                "Unsupported content type {ct}; expected application/x-amz-json-1.1"
            )));
        }
    }
    Ok(())
}

/// `requestParameters` as AWS logs a JSON API call: the request with lowerCamelCase
/// top-level keys (`None` for an empty request).
pub fn logged(body: &Map<String, Value>) -> Option<Value> {
    if body.is_empty() {
        return None;
    }
    Some(Value::Object(
        body.iter()
            .map(|(k, v)| (lower_first(k), v.clone()))
            .collect(),
    ))
}

/// `responseElements` of an answer: its top-level keys in lowerCamelCase.
pub fn logged_answer(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            Value::Object(m.iter().map(|(k, v)| (lower_first(k), v.clone())).collect())
        }
        v => v.clone(),
    }
}

/// An awsJson 1.1 answer serialized from `v`.
pub fn reply<T: Serialize + ?Sized>(v: &T) -> Reply {
    with_type(v, AMZ_JSON_1_1)
}

/// A restJson answer serialized from `v`.
pub fn rest_reply<T: Serialize + ?Sized>(v: &T) -> Reply {
    with_type(v, "application/json")
}

/// An awsJson 1.1 answer of JSON serialized already.
pub fn reply_serialized(body: Vec<u8>) -> Reply {
    serialized(body, AMZ_JSON_1_1)
}

fn serialized(body: Vec<u8>, content_type: &str) -> Reply {
    Reply {
        status: 200,
        headers: vec![("content-type".into(), content_type.into())],
        body: Bytes::from(body),
        stream: None,
    }
}

fn with_type<T: Serialize + ?Sized>(v: &T, content_type: &str) -> Reply {
    match serde_json::to_vec(v) {
        Ok(body) => serialized(body, content_type),
        Err(e) => {
            super::unserializable("JSON", &e);
            super::unserialized(super::Protocol::Json)
        }
    }
}

/// The JSON error body of both JSON protocols.
pub fn error_body(e: &ApiError) -> Bytes {
    #[derive(Serialize)]
    struct Body<'a> {
        #[serde(rename = "__type")]
        code: &'a str,
        message: &'a str,
    }
    Bytes::from(
        serde_json::to_vec(&Body {
            code: &e.code,
            message: &e.message,
        })
        .unwrap_or_default(),
    )
}

/// An awsJson 1.0 error as DynamoDB writes it: `__type` names the error's namespace (the
/// request-level errors are Coral's, the rest the service's), and the body's CRC32 is in
/// `x-amz-crc32`, which the SDKs check.
pub fn json10_error(e: &ApiError) -> Reply {
    let namespace = match e.code.as_str() {
        "ValidationException" => "com.amazon.coral.validate#",
        "UnrecognizedClientException"
        | "InvalidSignatureException"
        | "MissingAuthenticationTokenException"
        | "MissingAuthenticationToken"
        | "IncompleteSignatureException"
        | "IncompleteSignature"
        | "AccessDeniedException"
        | "SerializationException"
        | "UnknownOperationException"
        | "ExpiredTokenException"
        | "RequestEntityTooLargeException"
        | "ServiceUnavailable"
        | "ServiceUnavailableException"
        | "InternalFailure"
        | "NotImplemented" => "com.amazon.coral.service#",
        _ => "com.amazonaws.dynamodb.v20120810#",
    };
    #[derive(Serialize)]
    struct Body<'a> {
        #[serde(rename = "__type")]
        code: &'a str,
        message: &'a str,
    }
    let code = format!("{namespace}{}", e.code);
    let body = Bytes::from(
        serde_json::to_vec(&Body {
            code: &code,
            message: &e.message,
        })
        .unwrap_or_default(),
    );
    Reply {
        status: e.status,
        headers: vec![
            ("content-type".into(), super::AMZ_JSON_1_0.into()),
            ("x-amz-crc32".into(), crc32fast::hash(&body).to_string()),
        ],
        body,
        stream: None,
    }
}

/// An epoch-seconds timestamp: integral seconds as an integer, else fractional.
pub fn secs(t: DateTime<Utc>) -> Value {
    let ms = t.timestamp_millis();
    if ms % 1000 == 0 {
        Value::from(ms / 1000)
    } else {
        Value::from(ms as f64 / 1000.0)
    }
}

/// Serializes a timestamp as [`secs`] (`#[serde(serialize_with = "json::epoch")]`).
pub fn epoch<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    secs(*t).serialize(s)
}

/// Reads an optional timestamp: epoch seconds (integer or fractional), as botocore sends
/// them, or a date string as the CLI accepts (`#[serde(default, deserialize_with = …)]`).
pub fn timestamp<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    use serde::de::Error;
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            if !f.is_finite() || f.abs() > 1e11 {
                return Err(D::Error::custom("invalid timestamp"));
            }
            let ms = (f * 1000.0).round() as i64;
            Ok(Utc.timestamp_millis_opt(ms).single())
        }
        Some(Value::String(s)) => cairn_record::time::parse_cli_time(&s)
            .map(Some)
            .ok_or_else(|| D::Error::custom("invalid timestamp")),
        Some(_) => Err(D::Error::custom("expected a timestamp")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct In {
        name: Option<String>,
        #[serde(default, deserialize_with = "timestamp")]
        start_time: Option<DateTime<Utc>>,
    }

    #[test]
    fn typed_inputs_refuse_wrong_types_as_serialization_errors() {
        let ok: In = input(&object(br#"{"Name":"t","StartTime":1.5}"#).unwrap()).unwrap();
        assert_eq!(ok.name.as_deref(), Some("t"));
        assert_eq!(ok.start_time.unwrap().timestamp_millis(), 1500);
        for bad in [
            &br#"{"Name":5}"#[..],
            br#"{"StartTime":true}"#,
            br#"{"StartTime":1e300}"#,
        ] {
            let e = input::<In>(&object(bad).unwrap()).err().unwrap();
            assert_eq!(e.code, "SerializationException");
        }
        assert_eq!(object(b"[1]").unwrap_err().code, "SerializationException");
        assert!(object(b"").unwrap().is_empty());
    }
}
