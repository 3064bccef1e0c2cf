//! The event of each request: built from the handler's audit or, for a request no handler
//! saw, from what is known; stamped with the client's facts; every field a client fills
//! bounded.

use super::auth::unauthenticated_identity;
use super::{Ctx, HttpRequest};
use crate::protocol::{self, ApiError, Reply};
use crate::Api;
use cairn_record::builder;
use cairn_record::record::TlsDetails;
use cairn_record::EventRecord;
use chrono::{DateTime, Utc};
use serde_json::Value;

/// The event of a request refused before any handler: not routable, or not authenticated.
/// The identity is `Unknown`, with the access key id the request claimed.
#[allow(clippy::too_many_arguments)]
pub(super) fn refused_record(
    api: &Api,
    event_source: &str,
    event_name: &str,
    region: &str,
    now: DateTime<Utc>,
    claimed_key: Option<&str>,
    error: &ApiError,
    request_id: &str,
) -> EventRecord {
    let mut rec = builder::management(
        event_source,
        event_name,
        region,
        now,
        unauthenticated_identity(api, claimed_key),
        false,
    );
    rec.error_code = Some(error.code.clone());
    rec.error_message = Some(error.message.clone());
    rec.recipient_account_id = Some(api.opts.account.clone());
    rec.request_id = Some(request_id.to_string());
    rec
}

/// The event of a request a handler saw: the data event it built, or a management event from
/// its [`Audit`](super::Audit); the caller, the outcome, no authentication parameters. Takes
/// what it keeps out of the audit (the context is dropped next): the event, its parameters
/// and response are moved, not copied.
pub(super) fn build_record(
    ctx: &mut Ctx,
    event_source: &str,
    result: &Result<Reply, ApiError>,
) -> EventRecord {
    let a = &mut ctx.audit;
    let identity = ctx.caller.identity.clone();
    let mut rec = match a.data_event.take() {
        Some(mut d) => {
            d.user_identity = Some(identity);
            d
        }
        None => {
            let mut r = builder::management(
                event_source,
                &a.event_name,
                &ctx.region,
                ctx.now,
                identity,
                a.read_only,
            );
            r.request_parameters = a.request_parameters.take();
            r.resources = a.resources.take();
            r.api_version = a.api_version.map(str::to_string);
            r
        }
    };
    if let Some(Value::Object(m)) = rec.request_parameters.as_mut() {
        m.retain(|k, _| !protocol::is_auth_param(k));
    }
    rec.recipient_account_id = Some(ctx.api.opts.account.clone());
    rec.request_id = Some(ctx.request_id.clone());
    if let Some(d) = a.additional_event_data.take() {
        rec.additional_event_data = Some(d);
    }
    match (result, a.error.take()) {
        (Ok(_), Some((code, message))) => {
            rec.error_code = Some(code);
            rec.error_message = Some(message);
            rec.response_elements = None;
        }
        (Ok(_), None) => rec.response_elements = a.response_elements.take(),
        (Err(e), _) => {
            rec.error_code = Some(e.code.clone());
            rec.error_message = Some(e.message.clone());
            rec.response_elements = None;
        }
    }
    rec
}

/// The fields every record of a request carries, from the request itself; then every field
/// a client can fill is bounded (see [`bound_record`]).
pub(super) fn stamp(rec: &mut EventRecord, req: &HttpRequest, request_id: &str) {
    rec.request_id = Some(request_id.to_string());
    rec.source_ip_address = Some(req.peer.to_string());
    rec.user_agent = req.header("user-agent").map(str::to_string);
    if let Some(t) = &req.tls {
        rec.tls_details = Some(TlsDetails {
            tls_version: t.version.clone(),
            cipher_suite: t.cipher.clone(),
            client_provided_host_header: req.header("host").unwrap_or_default().to_string(),
        });
    }
    bound_record(rec);
}

/// CloudTrail's field limits (spec §2.1): `userAgent`, `errorCode`, `errorMessage` at most
/// 1 KB (truncated); `requestParameters` and `responseElements` at most 100 KB and
/// `additionalEventData` 28 KB (a larger one is dropped and the record says `omitted`). Names
/// and key ids a client chose are capped too. So no request, authenticated or not, can make
/// its record large.
pub fn bound_record(rec: &mut EventRecord) {
    fn cut(s: &mut String, max: usize) {
        if s.len() > max {
            let mut end = max;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s.truncate(end);
        }
    }
    for f in [
        &mut rec.user_agent,
        &mut rec.error_code,
        &mut rec.error_message,
    ]
    .into_iter()
    .flatten()
    {
        cut(f, 1024);
    }
    cut(&mut rec.event_name, 256);
    if let Some(id) = rec.user_identity.as_mut() {
        if let Some(k) = id.access_key_id.as_mut() {
            cut(k, 128);
        }
    }
    if let Some(t) = rec.tls_details.as_mut() {
        cut(&mut t.client_provided_host_header, 1024);
    }
    let mut omitted = false;
    for (field, max) in [
        (&mut rec.request_parameters, 100 * 1024),
        (&mut rec.response_elements, 100 * 1024),
        (&mut rec.additional_event_data, 28 * 1024),
    ] {
        if field.as_ref().is_some_and(|v| json_size(v) > max) {
            *field = None;
            omitted = true;
        }
    }
    if omitted {
        rec.extra.insert("omitted".into(), Value::Bool(true));
    }
}

/// About how many bytes `v` takes as JSON (escapes aside), without serializing it.
fn json_size(v: &Value) -> usize {
    match v {
        Value::Null | Value::Bool(_) => 5,
        Value::Number(_) => 24,
        Value::String(s) => s.len() + 2,
        Value::Array(a) => 2 + a.iter().map(|x| json_size(x) + 1).sum::<usize>(),
        Value::Object(m) => {
            2 + m
                .iter()
                .map(|(k, x)| k.len() + 4 + json_size(x))
                .sum::<usize>()
        }
    }
}
