//! The query protocol (IAM, STS): parameters come from the form body and the query string;
//! answers are `<{Op}Response xmlns=…><{Op}Result>…</{Op}Result><ResponseMetadata>…`,
//! serialized from the operation's result struct.

use super::xml::to_xml;
use super::{lower_first, ApiError, Reply};
use crate::edge::HttpRequest;
use serde::ser::SerializeMap;
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// The parameters of a query-protocol request: the form body merged with the query string.
#[derive(Debug, Clone, Default)]
pub struct Params(BTreeMap<String, String>);

impl Params {
    pub fn of(req: &HttpRequest) -> Params {
        let mut m = BTreeMap::new();
        for (k, v) in req.query_params() {
            m.insert(k, v);
        }
        for (k, v) in form_urlencoded::parse(&req.body) {
            m.insert(k.into_owned(), v.into_owned());
        }
        Params(m)
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }

    /// A required parameter; missing → ValidationError as IAM and STS word it.
    pub fn need(&self, k: &str) -> Result<&str, ApiError> {
        self.get(k).ok_or_else(|| {
            ApiError::client(
                "ValidationError",
                format!(
                    "1 validation error detected: Value null at '{}' failed to satisfy constraint: Member must not be null",
                    lower_first(k)
                ),
            )
        })
    }

    /// An optional integer parameter; not an integer → ValidationError.
    pub fn int(&self, k: &str) -> Result<Option<i64>, ApiError> {
        self.get(k)
            .map(|v| {
                v.parse::<i64>().map_err(|_| {
                    ApiError::client("ValidationError", format!("{k} must be an integer"))
                })
            })
            .transpose()
    }

    /// requestParameters as CloudTrail logs query APIs: lowerCamelCase keys, without the
    /// protocol's own fields and never a credential.
    pub fn logged(&self) -> Option<Value> {
        let m: Map<String, Value> = self
            .0
            .iter()
            .filter(|(k, _)| {
                k.as_str() != "Action" && k.as_str() != "Version" && !super::is_auth_param(k)
            })
            .map(|(k, v)| (lower_first(k), Value::String(v.clone())))
            .collect();
        (!m.is_empty()).then_some(Value::Object(m))
    }
}

/// The answer of query operation `op`: its result (none for operations that return
/// nothing), in namespace `xmlns`.
pub fn reply<T: Serialize>(op: &str, xmlns: &str, result: Option<&T>, request_id: &str) -> Reply {
    let answer = Answer {
        op,
        xmlns,
        result,
        request_id,
    };
    match to_xml(&format!("{op}Response"), &answer) {
        body if body.is_empty() => super::unserialized(super::Protocol::Query),
        body => Reply::xml(200, body),
    }
}

struct Answer<'a, T> {
    op: &'a str,
    xmlns: &'a str,
    result: Option<&'a T>,
    request_id: &'a str,
}

#[derive(Serialize)]
struct Metadata<'a> {
    #[serde(rename = "RequestId")]
    request_id: &'a str,
}

impl<T: Serialize> Serialize for Answer<'_, T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("@xmlns", self.xmlns)?;
        if let Some(r) = self.result {
            m.serialize_entry(&format!("{}Result", self.op), r)?;
        }
        m.serialize_entry(
            "ResponseMetadata",
            &Metadata {
                request_id: self.request_id,
            },
        )?;
        m.end()
    }
}
