//! The edge: every request passes here. Find the service ([`crate::service::SERVICES`]) →
//! name the operation → authenticate (SigV4 against the directory) → the service's router
//! turns the request into its typed operation → the handler authorizes through
//! [`Ctx::authorize`] and acts → record the request as an event, durably → answer.
//!
//! Handlers receive a [`Ctx`], which only exists for an authenticated [`Caller`], and their
//! typed operation; never the request. An unauthenticated request is answered (and recorded)
//! here without reaching any service. The edge imports no service: it knows them through the
//! registry.

mod auth;
mod ctx;
mod record;
mod request;

pub use auth::{body_limit, preauthenticate, presented, Caller, Preauth};
pub use ctx::{
    access_denied, AbortFn, AsyncCommitFn, Audit, Commit, CommitFn, Committed, Ctx, Deferred,
    EffectFn, EffectOutcome, Outbox,
};
pub use record::bound_record;
pub use request::{BodyProblem, BodyStream, ChunkSigning, ClientInfo, HttpRequest, TlsInfo};

use crate::protocol::{self, ApiError, Protocol, Reply};
use crate::service::{service_for, Registered};
use crate::Api;
use bytes::Bytes;
use cairn_iam::sigv4::AuthError;
use cairn_record::builder;
use cairn_record::EventRecord;
use std::sync::Arc;

use auth::{authenticate, region_of};
use record::{build_record, refused_record, stamp};

/// Handles one request end to end. Never panics on client input; errors are AWS-shaped.
pub async fn handle(api: &Arc<Api>, mut req: HttpRequest) -> Reply {
    let started = std::time::Instant::now();
    let now = api.clock.now();
    let request_id = builder::fast_uuid();
    // Read by the listener already (the headers have not changed since), or read here.
    let presented = req.presented.take().unwrap_or_else(|| presented(&req));
    let region = region_of(presented.as_ref().ok(), api);
    let claimed = presented.as_ref().ok().map(|a| a.access_key_id.clone());
    let admitted = admit(api, &mut req, presented, now);
    let Admitted {
        service,
        name,
        label,
        caller,
    } = match admitted {
        Ok(a) => a,
        Err(r) => {
            // Refused requests are recorded too (unroutable ones as CloudTrail-sourced).
            let rec = refused_record(
                api,
                r.event_source,
                &r.name,
                &region,
                now,
                claimed.as_deref(),
                &r.error,
                &request_id,
            );
            let (protocol, label) = (r.protocol, r.label);
            return finish(
                api,
                &req,
                rec,
                Err(r.error),
                protocol,
                &request_id,
                started,
                &label,
                After::default(),
            )
            .await;
        }
    };
    let protocol = service.protocol();
    let client = ClientInfo::of(&req);
    let mut ctx = Ctx::new(
        api,
        &caller,
        &client,
        region,
        now,
        request_id.clone(),
        &name,
    );
    if service.mutates(&name) && crate::disk::held(service.signing_name(), &name) {
        // Held to the disk reserve once fully authorized (an unauthorized caller learns
        // nothing of the disk), before anything is written: S3 checks before its dispatch
        // (bodies are written while the handler runs), everything else after its handler
        // (their changes wait for the event).
        ctx.reserve = Some((incoming_bytes(&req), protocol));
    }
    let result = run(service, &mut ctx, &req, &name).await;
    let result = result.map_err(|e| fix_denied_protocol(e, protocol));
    let rec = build_record(&mut ctx, service.event_source(), &result);
    let after = After {
        deferred: std::mem::take(&mut ctx.deferred),
        carried: std::mem::take(&mut ctx.audit.carried),
        carried_ids: ctx.audit.carried_ids.take(),
        calls: std::mem::take(&mut ctx.audit.calls),
    };
    let effect = ctx
        .effect
        .take()
        .map(|m| m.into_inner().unwrap_or_else(|p| p.into_inner()));
    drop(ctx);
    if let (Some(effect), Ok(_)) = (effect, &result) {
        // An effect's request carries nothing else: a handler that also prepared changes is
        // a programming error, and its changes are forgotten, never made unrecorded.
        if !after.deferred.is_empty() || !after.carried.is_empty() || !after.calls.is_empty() {
            tracing::error!(op = %name, "a request with an effect also prepared changes; they are forgotten");
            for d in after.deferred {
                if let Some(a) = d.abort {
                    a();
                }
            }
        }
        return finish_effect(
            api,
            &req,
            rec,
            effect,
            protocol,
            &request_id,
            started,
            &label,
        )
        .await;
    }
    finish(
        api,
        &req,
        rec,
        result,
        protocol,
        &request_id,
        started,
        &label,
        after,
    )
    .await
}

/// What a request leaves for after its event is durable: the changes it prepared, and the
/// events it carries (journaled with its own).
#[derive(Default)]
struct After {
    deferred: Vec<Deferred>,
    carried: Vec<EventRecord>,
    carried_ids: Option<crate::cloudtrail::audit_ids::CarriedIds>,
    calls: Vec<EventRecord>,
}

/// A request the edge lets through to its service: the service, the operation's name, the
/// metric label, the verified caller.
struct Admitted {
    service: &'static dyn Registered,
    name: String,
    label: String,
    caller: Caller,
}

/// Why a request goes no further, and how it is recorded and answered.
struct Refusal {
    event_source: &'static str,
    name: String,
    protocol: Protocol,
    label: String,
    error: ApiError,
}

/// Finds the request's service and operation, checks what can be checked before reading it,
/// authenticates it and lets its service prepare the body.
fn admit(
    api: &Api,
    req: &mut HttpRequest,
    presented: Result<cairn_iam::sigv4::Authorization, AuthError>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Admitted, Box<Refusal>> {
    let scope = presented.as_ref().ok().map(|a| a.service.clone());
    let unroutable = |protocol, error| {
        Box::new(Refusal {
            event_source: "cloudtrail.amazonaws.com",
            name: "UnknownOperation".into(),
            protocol,
            label: "unknown".into(),
            error,
        })
    };
    let service = service_for(req, scope.as_deref()).map_err(|(p, e)| unroutable(p, e))?;
    let protocol = service.protocol();
    let name = service
        .operation_name(req)
        .map_err(|e| unroutable(protocol, e))?;
    // Client-chosen names never become metric labels.
    let label = if service.knows(&name) {
        name.clone()
    } else {
        "unknown".to_string()
    };
    let presented = match presented {
        Ok(a) if a.service != service.signing_name() => Err(AuthError::BadScope(format!(
            "Credential should be scoped to correct service: '{}'.",
            service.signing_name()
        ))),
        Ok(a) if !api.opts.regions.contains(&a.region) => Err(AuthError::BadRegion(a.region)),
        other => other,
    };
    let caller = precheck(api, req, protocol)
        .and_then(|_| authenticate(api, req, service, &presented, now))
        .and_then(|(caller, secret)| {
            let signed = crate::service::Signed {
                auth: presented.as_ref().ok(),
                secret: &secret,
            };
            service.prepare(req, signed)?;
            Ok(caller)
        });
    match caller {
        Ok(caller) => Ok(Admitted {
            service,
            name,
            label,
            caller,
        }),
        Err(error) => Err(Box::new(Refusal {
            event_source: service.event_source(),
            name,
            protocol,
            label,
            error,
        })),
    }
}

/// The bytes a request would add to the data: its declared body (decoded length for
/// `aws-chunked`), or the body read.
fn incoming_bytes(req: &HttpRequest) -> u64 {
    let declared = |h: &str| req.header(h).and_then(|v| v.trim().parse::<u64>().ok());
    declared("x-amz-decoded-content-length")
        .or_else(|| declared("content-length"))
        .unwrap_or(0)
        .max(req.body.len() as u64)
}

/// Routes an authenticated request to its typed operation and runs it. A handler that
/// returns without authorizing is an internal error; a request whose inputs do not parse
/// never reaches a handler.
async fn run(
    service: &dyn Registered,
    ctx: &mut Ctx<'_>,
    req: &HttpRequest,
    name: &str,
) -> Result<Reply, ApiError> {
    let op = match service.route(ctx.api, req) {
        Ok(op) => op,
        Err(e) => {
            ctx.no_authorization_needed();
            service.audit_unrouted(ctx, req, name);
            return Err(e);
        }
    };
    let result = service.handle(ctx, op).await;
    // Held to the reserve here, after the handler authorized and prepared its changes and
    // before any is made (S3 checked before its dispatch).
    let result = match result {
        Ok(r) => ctx.check_reserve().map(|_| r),
        e => e,
    };
    match result {
        Ok(_) if !ctx.authorized => Err(ApiError::internal(format!(
            "handler for {name} returned without authorizing"
        ))),
        r => r,
    }
}

/// Checks the request is acceptable before anything else reads it (B22, B17).
fn precheck(api: &Api, req: &HttpRequest, protocol: Protocol) -> Result<(), ApiError> {
    if let Some(h) = &req.bad_header {
        let code = match protocol {
            Protocol::S3 => "InvalidArgument",
            Protocol::Query => "InvalidParameterValue",
            _ => "SerializationException",
        };
        return Err(ApiError::client(code, h.clone()));
    }
    match &req.body_problem {
        None => {}
        Some(BodyProblem::Incomplete(b)) => {
            return Err(match protocol {
                Protocol::S3 => ApiError::client(
                    "IncompleteBody",
                    "You did not provide the number of bytes specified by the Content-Length HTTP header.",
                ),
                Protocol::Query => ApiError::client("MalformedInput", b.clone()),
                _ => ApiError::serialization(b.clone()),
            })
        }
        Some(BodyProblem::TooLarge { limit }) => {
            return Err(match protocol {
                Protocol::S3 => ApiError::client(
                    "EntityTooLarge",
                    "Your proposed upload exceeds the maximum allowed object size.",
                )
                .with("MaxSizeAllowed", limit.to_string()),
                _ => ApiError::new(
                    "RequestEntityTooLargeException",
                    413,
                    format!("Request body exceeds the limit of {limit} bytes"),
                ),
            })
        }
        Some(BodyProblem::TimedOut) => {
            return Err(match protocol {
                Protocol::S3 => ApiError::client(
                    "RequestTimeout",
                    "Your socket connection to the server was not read from or written to within the timeout period. Idle connections will be closed.",
                ),
                _ => ApiError::new(
                    "RequestTimeoutException",
                    408,
                    "The request body was not received within the timeout period.",
                ),
            })
        }
        Some(BodyProblem::Busy) => {
            return Err(match protocol {
                Protocol::S3 => ApiError::new("SlowDown", 503, "Please reduce your request rate."),
                _ => ApiError::new(
                    "ServiceUnavailable",
                    503,
                    "The server is busy receiving other request bodies; retry.",
                ),
            })
        }
    }
    // Bodies handed in whole (not through the listener) are held to the same limit.
    let limit = auth::protocol_body_limit(api, Some(protocol));
    if req.body.len() > limit {
        let mut r = req.clone();
        r.body = Bytes::new();
        r.body_problem = Some(BodyProblem::TooLarge { limit });
        return precheck(api, &r, protocol);
    }
    Ok(())
}

/// Finishes a request whose effect happens outside cairn: the record is made durable as
/// pending, the effect runs, and its outcome completes the record (durably) before the answer.
#[allow(clippy::too_many_arguments)]
async fn finish_effect(
    api: &Arc<Api>,
    req: &HttpRequest,
    mut rec: EventRecord,
    effect: EffectFn,
    protocol: Protocol,
    request_id: &str,
    started: std::time::Instant,
    label: &str,
) -> Reply {
    stamp(&mut rec, req, request_id);
    let head = req.method == "HEAD";
    let reply = match api.record_pending(&rec).await {
        Err(e) => protocol::error_reply(protocol, &e, request_id, head),
        Ok(pending) => {
            let out = effect().await;
            if let Some((code, message)) = out.error.clone() {
                rec.error_code = Some(code);
                rec.error_message = Some(message);
                rec.response_elements = None;
            }
            if let Err(e) = &out.reply {
                rec.error_code = Some(e.code.clone());
                rec.error_message = Some(e.message.clone());
                rec.response_elements = None;
            }
            if out.additional_event_data.is_some() {
                rec.additional_event_data = out.additional_event_data;
            }
            if rec.error_code.is_none() && out.response_elements.is_some() {
                rec.response_elements = out.response_elements;
            }
            // The outcome came from outside (an upstream's message): bounded like the rest.
            bound_record(&mut rec);
            match (api.record_resolved(pending, &rec).await, out.reply) {
                (Ok(()), Ok(r)) => r,
                (Ok(()), Err(e)) => protocol::error_reply(protocol, &e, request_id, head),
                // The outcome could not be journaled: the pending record stays unresolved and
                // is resolved as "outcome unknown" when cairn next starts.
                (Err(e), _) => protocol::error_reply(protocol, &e, request_id, head),
            }
        }
    };
    answer(api, reply, protocol, request_id, started, label)
}

/// The request id headers and the metrics of an answer.
fn answer(
    api: &Arc<Api>,
    reply: Reply,
    protocol: Protocol,
    request_id: &str,
    started: std::time::Instant,
    label: &str,
) -> Reply {
    let reply = match protocol {
        Protocol::S3 => reply
            .header("x-amz-request-id", request_id)
            .header("x-amz-id-2", request_id),
        _ => reply.header("x-amzn-requestid", request_id),
    };
    api.metrics
        .observe(label, reply.status, started.elapsed().as_secs_f64());
    reply
}

/// Makes the deferred changes of a request whose event is durable; on the first failure the
/// rest are forgotten and the request fails (its event already says it succeeded: logged).
async fn commit_deferred(
    deferred: Vec<Deferred>,
    result: Result<Reply, ApiError>,
    op: &str,
) -> Result<Reply, ApiError> {
    let mut result = result;
    let mut pending = deferred.into_iter();
    while let Some(d) = pending.next() {
        let outcome = match d.commit {
            Commit::Blocking(f) => tokio::task::spawn_blocking(f)
                .await
                .unwrap_or_else(|e| Err(ApiError::internal(format!("commit task failed: {e}")))),
            Commit::Async(f) => f().await,
        };
        match (outcome, &mut result) {
            (Ok(c), Ok(reply)) => {
                reply.headers.extend(c.headers);
                if let Some(b) = c.body {
                    reply.body = b;
                }
            }
            (Ok(_), Err(_)) => {}
            (Err(e), _) => {
                tracing::error!(op, error = %e.message, "a change whose event is recorded could not be made");
                for rest in pending.by_ref() {
                    if let Some(a) = rest.abort {
                        a();
                    }
                }
                result = Err(e);
            }
        }
    }
    result
}

/// Fuzzing only (feature `fuzzing`, never in the server): runs a request through precheck,
/// the service's body preparation, router and handler as the account root, without a
/// signature and without recording it, and builds the event record the edge would write (so
/// record construction is exercised too). Returns the reply and the record's JSON.
#[cfg(feature = "fuzzing")]
pub async fn fuzz_as_root(api: &Arc<Api>, mut req: HttpRequest) -> (Reply, Vec<u8>) {
    let now = api.clock.now();
    // A request refused before its handler is recorded as `handle` records it.
    let refused = |protocol, source: &str, name: &str, e: ApiError| {
        let rec = refused_record(
            api,
            source,
            name,
            &api.opts.default_region,
            now,
            Some("AKIAFUZZ"),
            &e,
            "fuzz",
        );
        (
            protocol::error_reply(protocol, &e, "fuzz", false),
            rec.to_json(),
        )
    };
    let service = match service_for(&req, None) {
        Ok(s) => s,
        Err((p, e)) => return refused(p, "cloudtrail.amazonaws.com", "UnknownOperation", e),
    };
    let protocol = service.protocol();
    let name = match service.operation_name(&req) {
        Ok(n) => n,
        Err(e) => return refused(protocol, "cloudtrail.amazonaws.com", "UnknownOperation", e),
    };
    if let Err(e) = precheck(api, &req, protocol) {
        return refused(protocol, service.event_source(), &name, e);
    }
    let unsigned = crate::service::Signed {
        auth: None,
        secret: "",
    };
    if let Err(e) = service.prepare(&mut req, unsigned) {
        return refused(protocol, service.event_source(), &name, e);
    }
    let caller = auth::root_caller(api, "AKIAFUZZ");
    let client = ClientInfo::of(&req);
    let mut ctx = Ctx::new(
        api,
        &caller,
        &client,
        api.opts.default_region.clone(),
        now,
        "fuzz".into(),
        &name,
    );
    let result = run(service, &mut ctx, &req, &name).await;
    let rec = build_record(&mut ctx, service.event_source(), &result).to_json();
    let deferred = std::mem::take(&mut ctx.deferred);
    drop(ctx);
    // Nothing is recorded here, but trail commands are journaled as the edge would.
    for d in &deferred {
        if let (Some((cmd, at)), Ok(_)) = (&d.command, &result) {
            if let Ok(seq) = api.engine.command(cmd.clone()) {
                let _ = at.set(seq);
            }
        }
    }
    let result = match result {
        Ok(r) => commit_deferred(commands_first(deferred), Ok(r), &name).await,
        Err(e) => Err(e),
    };
    let reply = match result {
        Ok(r) => r,
        Err(e) => protocol::error_reply(protocol, &e, "fuzz", req.method == "HEAD"),
    };
    (reply, rec)
}

/// Access-denied errors are built before the protocol is known to the helper; give them the
/// right shape here.
pub(crate) fn fix_denied_protocol(mut e: ApiError, protocol: Protocol) -> ApiError {
    if e.code == "AccessDeniedException" {
        match protocol {
            Protocol::Query => {
                e.code = "AccessDenied".into();
                e.status = 403;
            }
            Protocol::S3 => {
                e.code = "AccessDenied".into();
                e.status = 403;
                e.message = "Access Denied".into();
            }
            _ => {}
        }
    }
    e
}

#[allow(clippy::too_many_arguments)]
async fn finish(
    api: &Arc<Api>,
    req: &HttpRequest,
    mut rec: EventRecord,
    result: Result<Reply, ApiError>,
    protocol: Protocol,
    request_id: &str,
    started: std::time::Instant,
    label: &str,
    after: After,
) -> Reply {
    stamp(&mut rec, req, request_id);
    let head = req.method == "HEAD";
    // Carried events count only when the request succeeds; calls made for it, always.
    let mut with: Vec<EventRecord> = after.calls;
    if result.is_ok() {
        with.extend(after.carried);
    }
    // Changes made after the event is durable: the event is journaled as an intent first and
    // its outcome after the changes, so a crash or a failed commit in between never leaves a
    // success on record for a change that was not made (a crash is resolved as "outcome
    // unknown" at the next start). The crash test of `cairn serve` found PutObject events
    // recorded as successes for objects a kill kept from being committed.
    if result.is_ok()
        && !after.deferred.is_empty()
        && !after.deferred.iter().any(|d| d.event_first)
        && with.is_empty()
        && after.carried_ids.is_none()
    {
        let reply = match api.record_pending(&rec).await {
            Err(e) => {
                for d in after.deferred {
                    if let Some(a) = d.abort {
                        a();
                    }
                }
                protocol::error_reply(protocol, &e, request_id, head)
            }
            Ok(pending) => {
                // A store write that keeps the outcome with it: the outcome is durable when
                // the change is; the answer waits only for it to be queued (`Api::resolve_kept`).
                let kept = match after.deferred.as_slice() {
                    [d] => d.outbox.clone().map(|cell| {
                        let entry = cairn_trail::entry::encode_resolved(pending, &rec);
                        *cell.lock().unwrap_or_else(|p| p.into_inner()) =
                            Some((pending, entry.clone()));
                        entry
                    }),
                    _ => None,
                };
                let result = commit_deferred(after.deferred, result, label).await;
                if let Some(entry) = kept {
                    // Made when it says so, or when its record is there (a commit that
                    // failed after making the change): its outcome is then the kept one.
                    let made =
                        result.is_ok() || matches!(api.store.outbox_record(pending), Ok(Some(_)));
                    if made {
                        api.resolve_kept(pending, entry).await;
                        let reply = match result {
                            Ok(r) => r,
                            Err(e) => protocol::error_reply(protocol, &e, request_id, head),
                        };
                        return answer(api, reply, protocol, request_id, started, label);
                    }
                }
                if let Err(e) = &result {
                    rec.error_code = Some(e.code.clone());
                    rec.error_message = Some(e.message.clone());
                    rec.response_elements = None;
                }
                match (api.record_resolved(pending, &rec).await, result) {
                    (Ok(()), Ok(r)) => r,
                    (Ok(()), Err(e)) | (Err(e), _) => {
                        protocol::error_reply(protocol, &e, request_id, head)
                    }
                }
            }
        };
        return answer(api, reply, protocol, request_id, started, label);
    }
    // Trail commands go into the journal with the event, after it (see `Deferred::command`).
    let commands: Vec<&cairn_trail::TrailCommand> = if result.is_ok() {
        after
            .deferred
            .iter()
            .filter_map(|d| d.command.as_ref().map(|(c, _)| c))
            .collect()
    } else {
        Vec::new()
    };
    if !commands.is_empty() {
        // No request both carries audit ids (PutAuditEvents) and changes trails.
        debug_assert!(after.carried_ids.is_none());
        let recorded = api.record_with_commands(&rec, &with, &commands).await;
        let mut next = recorded
            .as_ref()
            .map_or(0, |start| start + 1 + with.len() as u64);
        if recorded.is_ok() {
            for d in &after.deferred {
                if let Some((_, at)) = &d.command {
                    let _ = at.set(next);
                    next += 1;
                }
            }
        }
        return finish_recorded(
            api,
            recorded.map(|_| ()),
            result,
            commands_first(after.deferred),
            protocol,
            request_id,
            started,
            label,
            head,
        )
        .await;
    }
    let recorded = match after.carried_ids {
        // Audit events with their id mark: journaled in a task of its own, so a client that
        // goes away cannot leave the batch's outcome unknown to the idempotency index.
        Some(ids) if result.is_ok() => {
            let (api2, rec2) = (api.clone(), rec.clone());
            tokio::spawn(async move {
                let r = api2.record_marked(&rec2, &with, &ids.mark).await;
                match &r {
                    Ok(end) => ids.guard.stored(*end),
                    Err(_) => drop(ids.guard),
                }
                r.map(|_| ())
            })
            .await
            .unwrap_or_else(|e| Err(ApiError::internal(e)))
        }
        _ => api.record_with(&rec, &with).await,
    };
    finish_recorded(
        api,
        recorded,
        result,
        after.deferred,
        protocol,
        request_id,
        started,
        label,
        head,
    )
    .await
}

/// The deferred changes with the journaled trail commands' first: a command is durable with
/// the event, so it is applied before anything that could fail after it (metadata writes),
/// and before the control lock (a later deferred) is released — a failure then can neither
/// skip a durable command's application nor let a concurrent request check against a state
/// the command is about to change.
fn commands_first(deferred: Vec<Deferred>) -> Vec<Deferred> {
    let (mut commands, rest): (Vec<_>, Vec<_>) =
        deferred.into_iter().partition(|d| d.command.is_some());
    commands.extend(rest);
    commands
}

/// Makes the deferred changes of a request whose event was journaled (or forgets them when
/// it was not, or the handler failed), and answers.
#[allow(clippy::too_many_arguments)]
async fn finish_recorded(
    api: &Arc<Api>,
    recorded: Result<(), ApiError>,
    result: Result<Reply, ApiError>,
    deferred: Vec<Deferred>,
    protocol: Protocol,
    request_id: &str,
    started: std::time::Instant,
    label: &str,
    head: bool,
) -> Reply {
    let result = match (&recorded, result) {
        (Ok(()), Ok(r)) => commit_deferred(deferred, Ok(r), label).await,
        (_, r) => {
            // Nothing prepared becomes visible: the event is not durable (or the handler failed).
            for d in deferred {
                if let Some(a) = d.abort {
                    a();
                }
            }
            r
        }
    };
    let reply = match (recorded, result) {
        (Ok(()), Ok(r)) => r,
        (Ok(()), Err(e)) => protocol::error_reply(protocol, &e, request_id, head),
        (Err(e), _) => protocol::error_reply(protocol, &e, request_id, head),
    };
    answer(api, reply, protocol, request_id, started, label)
}
