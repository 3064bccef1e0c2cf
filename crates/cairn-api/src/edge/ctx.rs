//! What a handler sees of one authenticated request: the [`Caller`], the client, the time,
//! what to record ([`Audit`]), and the means to authorize and to defer changes until the
//! request's event is durable.

use super::{Caller, ClientInfo};
use crate::protocol::{ApiError, Reply};
use crate::Api;
use bytes::Bytes;
use cairn_iam::identity::KeyOwner;
use cairn_iam::policy::{self, ConditionKeys, Decision, Policy, RequestContext};
use cairn_record::{EventRecord, Resource};
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::sync::Arc;

/// What a handler tells the edge about the event to record.
#[derive(Debug, Default)]
pub struct Audit {
    pub event_name: String,
    pub read_only: bool,
    pub request_parameters: Option<Value>,
    pub response_elements: Option<Value>,
    pub resources: Option<Vec<Resource>>,
    pub additional_event_data: Option<Value>,
    /// `apiVersion` of the record (DynamoDB's `2012-08-10`).
    pub api_version: Option<&'static str>,
    /// A data event built by the handler (S3 object calls); replaces the management event.
    pub data_event: Option<EventRecord>,
    /// The error of an answer passed through unchanged (a proxied upstream's error):
    /// `(errorCode, errorMessage)` for the record.
    pub error: Option<(String, String)>,
    /// Events the request carries (PutAuditEvents' audit events), journaled in one batch
    /// with the request's own event.
    pub carried: Vec<EventRecord>,
    /// The ids of the carried audit events, journaled in the same batch (idempotency).
    pub carried_ids: Option<crate::cloudtrail::audit_ids::CarriedIds>,
    /// Calls the request made to another service on the caller's behalf (S3's calls to
    /// KMS), recorded in the same batch as the request's event whatever its outcome.
    pub calls: Vec<EventRecord>,
}

/// What a deferred change adds to the answer once made (headers; a body replacing the
/// prepared one).
#[derive(Default)]
pub struct Committed {
    pub headers: Vec<(String, String)>,
    pub body: Option<Bytes>,
}

/// Makes a prepared change visible (on the blocking pool: it may do I/O).
pub type CommitFn = Box<dyn FnOnce() -> Result<Committed, ApiError> + Send + Sync>;
/// Makes a prepared change visible, as a future that waits without a thread (a write queued
/// for the store's group commit).
pub type AsyncCommitFn = Box<
    dyn FnOnce() -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<Committed, ApiError>> + Send>,
        > + Send
        + Sync,
>;

/// How a deferred change is made.
pub enum Commit {
    Blocking(CommitFn),
    Async(AsyncCommitFn),
}
/// Forgets a prepared change.
pub type AbortFn = Box<dyn FnOnce() + Send + Sync>;

/// What an effect outside cairn (a write forwarded to an upstream) came to: the answer for the
/// client, and what the record must say about it.
pub struct EffectOutcome {
    pub reply: Result<Reply, ApiError>,
    /// The error of an answer passed through (an upstream's error): `(code, message)`.
    pub error: Option<(String, String)>,
    pub additional_event_data: Option<Value>,
    /// The record's `responseElements` when the effect succeeded (a created table).
    pub response_elements: Option<Value>,
}

impl Default for EffectOutcome {
    fn default() -> Self {
        EffectOutcome {
            // Not `ApiError::internal`, which logs: a default is normally replaced.
            reply: Err(ApiError::new(
                "InternalFailure",
                500,
                "the effect gave no answer",
            )),
            error: None,
            additional_event_data: None,
            response_elements: None,
        }
    }
}

/// An effect run after the request's record is durable as pending; its outcome completes
/// the record (see `cairn_trail::entry::Entry::Pending`).
pub type EffectFn = Box<
    dyn FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = EffectOutcome> + Send>>
        + Send,
>;

/// A change a handler prepared but did not make visible: the edge makes it only after the
/// request's event is durable, and forgets it when the journal refuses the event (the
/// client then gets 503 and nothing changed — fail closed).
pub struct Deferred {
    pub commit: Commit,
    pub abort: Option<AbortFn>,
    /// The request's final record is journaled before this change, not an intent before and
    /// the outcome after it: for trail commands, whose trail must deliver the event that
    /// changes it (a StopLogging is delivered by the trail it stops).
    pub event_first: bool,
    /// A trail command journaled in the same batch as the request's event (after it): both
    /// are durable or neither, so the event of a change that was never recorded cannot be
    /// delivered as a success. The edge sets the cell to the command's journal position
    /// before `commit` runs (which then waits for the engine to apply it).
    pub command: Option<(
        cairn_trail::TrailCommand,
        std::sync::Arc<std::sync::OnceLock<u64>>,
    )>,
    /// The change is a store write that can keep the request's outcome record with it (see
    /// [`cairn_store::ObjectStore::keeps_outbox`]). When it is the request's only change and
    /// the request carries no other events (a PutObject, CopyObject or DeleteObject of the
    /// current object; not an SSE-KMS PUT, whose KMS calls are recorded with it, nor
    /// CompleteMultipartUpload, which has two changes), the edge puts the journal position
    /// of the request's pending entry and the encoded outcome here before `commit` runs: the
    /// outcome is then durable with the change, and the answer does not wait for the
    /// journal to sync it. Left empty, the change is made the usual way.
    pub outbox: Option<Outbox>,
}

/// Where the edge leaves a request's outcome record for a store write to keep (see
/// [`Deferred::outbox`]): its pending entry's position and the encoded outcome.
pub type Outbox = std::sync::Arc<std::sync::Mutex<Option<(u64, Vec<u8>)>>>;

/// A handler's view of one authenticated request.
pub struct Ctx<'a> {
    pub api: &'a Arc<Api>,
    pub caller: &'a Caller,
    pub region: String,
    /// The client behind the request (never the request itself: handlers get typed inputs).
    pub client: &'a ClientInfo,
    pub now: DateTime<Utc>,
    pub request_id: String,
    pub audit: Audit,
    /// Resource policies that apply to this request (an S3 bucket policy), evaluated with the
    /// caller's own by every [`Ctx::authorize`].
    pub resource_policies: Vec<Policy>,
    /// Service condition keys of this request (`s3:prefix`, `sts:ExternalId`, …), set by the
    /// handler before it authorizes.
    pub keys: ConditionKeys,
    pub(super) authorized: bool,
    /// Changes to make once the event is durable, in order.
    pub deferred: Vec<Deferred>,
    /// An effect outside cairn, run once the record is durable as pending; its outcome
    /// becomes the answer and completes the record. (In a mutex only so `Ctx` stays `Sync`.)
    pub(super) effect: Option<std::sync::Mutex<EffectFn>>,
    /// A request that would grow the data: its declared size and protocol, checked against
    /// the disk reserve ([`crate::disk`]) once by [`Ctx::check_reserve`] (S3 before its
    /// dispatch, the edge after any other handler).
    pub(super) reserve: Option<(u64, crate::protocol::Protocol)>,
}

impl<'a> Ctx<'a> {
    /// A handler's context for an authenticated `caller`.
    pub fn new(
        api: &'a Arc<Api>,
        caller: &'a Caller,
        client: &'a ClientInfo,
        region: String,
        now: DateTime<Utc>,
        request_id: String,
        event_name: &str,
    ) -> Ctx<'a> {
        Ctx {
            api,
            caller,
            region,
            client,
            now,
            request_id,
            audit: Audit {
                event_name: event_name.to_string(),
                ..Default::default()
            },
            resource_policies: Vec::new(),
            keys: ConditionKeys::new(),
            authorized: false,
            deferred: Vec::new(),
            effect: None,
            reserve: None,
        }
    }

    /// Defers a change until the request's event is durable (see [`Deferred`]).
    pub fn defer(&mut self, commit: CommitFn, abort: Option<AbortFn>) {
        self.deferred.push(Deferred {
            commit: Commit::Blocking(commit),
            abort,
            event_first: false,
            command: None,
            outbox: None,
        });
    }

    /// As [`Ctx::defer`], for a change made by a future (see [`AsyncCommitFn`]), and, with
    /// `cell`, a store write that keeps the request's outcome record with it (see
    /// [`Deferred::outbox`]).
    pub fn defer_async(
        &mut self,
        commit: AsyncCommitFn,
        abort: Option<AbortFn>,
        cell: Option<Outbox>,
    ) {
        self.deferred.push(Deferred {
            commit: Commit::Async(commit),
            abort,
            event_first: false,
            command: None,
            outbox: cell,
        });
    }

    /// As [`Ctx::defer`], with the request's final record journaled before the change (see
    /// [`Deferred::event_first`]).
    pub fn defer_event_first(&mut self, commit: CommitFn, abort: Option<AbortFn>) {
        self.deferred.push(Deferred {
            commit: Commit::Blocking(commit),
            abort,
            event_first: true,
            command: None,
            outbox: None,
        });
    }

    /// Journals `cmd` with the request's event, in one batch after it; `commit` runs once
    /// both are durable, with the command's position in `at` (see [`Deferred::command`]).
    pub fn defer_journaled_command(
        &mut self,
        cmd: cairn_trail::TrailCommand,
        at: std::sync::Arc<std::sync::OnceLock<u64>>,
        commit: CommitFn,
    ) {
        self.deferred.push(Deferred {
            commit: Commit::Blocking(commit),
            abort: None,
            event_first: true,
            command: Some((cmd, at)),
            outbox: None,
        });
    }

    /// Registers an effect outside cairn (a write to an upstream): the request's record is
    /// journaled as pending first, then the effect runs, then the record is completed with its
    /// outcome. Nothing reaches the upstream unless its record is durable, and the trail never
    /// says it succeeded unless it did.
    pub fn defer_effect(&mut self, effect: EffectFn) {
        self.effect = Some(std::sync::Mutex::new(effect));
    }

    /// Keeps `guard` (the control-plane lock) until the changes deferred so far are made or
    /// forgotten, so a check and the change it allows stay one step.
    pub fn hold_until_made(&mut self, guard: tokio::sync::OwnedMutexGuard<()>) {
        self.defer(
            Box::new(move || {
                drop(guard);
                Ok(Committed::default())
            }),
            None,
        );
    }

    /// Defers a write of the control metadata.
    pub fn defer_meta_put<T: serde::Serialize + Send + Sync + 'static>(
        &mut self,
        key: String,
        value: T,
    ) {
        let meta = self.api.meta.clone();
        self.defer(
            Box::new(move || {
                meta.put(&key, &value)?;
                Ok(Committed::default())
            }),
            None,
        );
    }

    /// Defers a removal from the control metadata.
    pub fn defer_meta_delete(&mut self, key: String) {
        let meta = self.api.meta.clone();
        self.defer(
            Box::new(move || {
                meta.delete(&key)?;
                Ok(Committed::default())
            }),
            None,
        );
    }

    /// The global condition keys of this request (AWS's `aws:*` keys cairn can know), plus the
    /// service keys the handler set in [`Ctx::keys`]. Keys cairn cannot know (VPC endpoints,
    /// organizations, MFA for long-term keys) are absent, as AWS leaves them.
    pub fn condition_keys(&self) -> ConditionKeys {
        let mut k = ConditionKeys::new();
        k.set("aws:SecureTransport", self.client.tls.is_some().to_string());
        k.set("aws:SourceIp", self.client.peer.to_string());
        if let Some(ua) = &self.client.user_agent {
            k.set("aws:UserAgent", ua.clone());
        }
        k.set("aws:CurrentTime", cairn_record::time::iso(self.now));
        k.set("aws:EpochTime", self.now.timestamp().to_string());
        k.set("aws:RequestedRegion", self.region.clone());
        k.set("aws:PrincipalIsAWSService", "false");
        k.set("aws:ViaAWSService", "false");
        let account = &self.api.opts.account;
        match &self.caller.owner {
            KeyOwner::Root => {
                k.set("aws:PrincipalType", "Account");
                k.set("aws:userid", account.clone());
            }
            KeyOwner::User(u) => {
                k.set("aws:PrincipalType", "User");
                k.set("aws:username", u.clone());
                if let Some(id) = &self.caller.identity.principal_id {
                    k.set("aws:userid", id.clone());
                }
            }
            KeyOwner::Session(s) => {
                k.set("aws:PrincipalType", "AssumedRole");
                k.set("aws:userid", format!("{}:{}", s.role_id, s.session_name));
                k.set("aws:TokenIssueTime", cairn_record::time::iso(s.created));
                // Temporary credentials say whether MFA was used; cairn issues none with it.
                k.set("aws:MultiFactorAuthPresent", "false");
            }
        }
        k.extend(&self.keys);
        k
    }

    /// Authorizes `action` on `resource` for the caller: the account root may do everything;
    /// anyone else needs an Allow from their identity policies and no Deny (plus `extra`
    /// resource policies, e.g. a bucket policy).
    pub fn authorize_with(
        &mut self,
        action: &str,
        resource: &str,
        resource_policies: &[Policy],
    ) -> Result<(), ApiError> {
        self.authorized = true;
        self.decide(action, resource, resource_policies)
    }

    /// Holds a request that would grow the data to the disk reserve ([`crate::disk`]), once:
    /// call it after every authorization check and before writing anything.
    pub fn check_reserve(&mut self) -> Result<(), ApiError> {
        match self.reserve.take() {
            Some((incoming, protocol)) => {
                self.api.disk.admit(incoming).map_err(|s| s.error(protocol))
            }
            None => Ok(()),
        }
    }

    /// Holds `bytes` more that this request will write (a copy's source, a completed
    /// upload's parts) to the disk reserve.
    pub fn check_reserve_for(&self, bytes: u64) -> Result<(), ApiError> {
        self.api
            .disk
            .admit(bytes)
            .map_err(|s| s.error(crate::protocol::Protocol::S3))
    }

    /// The request writes somewhere other than cairn's disk (a proxied bucket): only its
    /// record stays here, as a read's does.
    pub fn writes_elsewhere(&mut self) {
        self.reserve = None;
    }

    fn decide(
        &mut self,
        action: &str,
        resource: &str,
        resource_policies: &[Policy],
    ) -> Result<(), ApiError> {
        if self.caller.is_root() && resource_policies.is_empty() {
            return Ok(());
        }
        let keys = self.condition_keys();
        let rc = RequestContext {
            principal: &self.caller.principal,
            action,
            resource,
            keys: &keys,
        };
        let decision = if self.caller.is_root() {
            // Root is subject only to explicit denies in resource policies.
            match policy::evaluate(resource_policies, &rc) {
                Decision::ExplicitDeny => Decision::ExplicitDeny,
                _ => Decision::Allow,
            }
        } else {
            policy::evaluate_sets(&[self.caller.policies.as_slice(), resource_policies], &rc)
        };
        match decision {
            Decision::Allow => Ok(()),
            d => Err(access_denied(
                &self.caller.principal.arn,
                action,
                resource,
                d,
            )),
        }
    }

    pub fn authorize(&mut self, action: &str, resource: &str) -> Result<(), ApiError> {
        let policies = std::mem::take(&mut self.resource_policies);
        let r = self.authorize_with(action, resource, &policies);
        self.resource_policies = policies;
        r
    }

    /// Marks a request that needs no authorization (e.g. GetCallerIdentity, which AWS allows
    /// to everyone).
    pub fn no_authorization_needed(&mut self) {
        self.authorized = true;
    }
}

/// An authorization refusal, in the JSON protocol's shape; [`fix_denied_protocol`] gives it
/// the shape of the request's protocol.
pub fn access_denied(who: &str, action: &str, resource: &str, d: Decision) -> ApiError {
    let why = match d {
        Decision::ExplicitDeny => "with an explicit deny in an identity-based policy".to_string(),
        _ => format!("because no identity-based policy allows the {action} action"),
    };
    ApiError::client(
        "AccessDeniedException",
        format!("User: {who} is not authorized to perform: {action} on resource: {resource} {why}"),
    )
}
