//! The registry of services. Each service registers itself once, in [`SERVICES`]: its signing
//! name, protocol and event source, how a request's shape claims it, how a request becomes its
//! typed operation (parsed once, by its router), and its handler. The edge dispatches through
//! this list and imports no service module.
//!
//! Adding a service is one folder (`src/<service>/`, implementing [`Service`]) and one line in
//! [`SERVICES`].

use crate::edge::{Ctx, HttpRequest};
use crate::protocol::{ApiError, Protocol, Reply};
use crate::Api;
use cairn_iam::sigv4::Authorization;
use std::any::Any;
use std::future::Future;
use std::pin::Pin;

/// The verified signature of a request, for what a service does with its body (S3 checks
/// an aws-chunked body's chunk signatures with it).
#[derive(Clone, Copy)]
pub struct Signed<'a> {
    pub auth: Option<&'a Authorization>,
    pub secret: &'a str,
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A service the listener speaks, with its typed operation `Op`.
pub trait Service: Send + Sync + 'static {
    type Op: Send + 'static;

    /// The SigV4 signing name (`s3`, `cloudtrail`, …): a signature scoped to it is for us.
    fn signing_name(&self) -> &'static str;
    /// `eventSource` of its events (`s3.amazonaws.com`).
    fn event_source(&self) -> &'static str;
    fn protocol(&self) -> Protocol;
    /// Whether the request's shape (a target header, a path) names this service, whatever
    /// its signature's scope says (which must then agree).
    fn claims(&self, _req: &HttpRequest) -> bool {
        false
    }
    /// With no signature to name a service: whether this one takes the request (services
    /// are asked in [`SERVICES`] order; S3, last, takes anything).
    fn claims_unsigned(&self, _req: &HttpRequest) -> bool {
        false
    }
    /// For a request presigned with Signature Version 2 (S3 only): the canonical resource
    /// its signature covers. `None`: SigV2 does not apply.
    fn sigv2_resource(&self, _req: &HttpRequest) -> Option<String> {
        None
    }
    /// The region of the resource a request names, when it has one (an S3 bucket's), for a
    /// signature scoped to the wrong region.
    fn resource_region(&self, _api: &Api, _req: &HttpRequest) -> Option<String> {
        None
    }
    /// The operation's name (the `eventName`) from the request as it arrived, before it is
    /// authenticated — what a refused request is recorded as. `Err`: it names no operation of
    /// this service (answered and recorded as an unknown operation).
    fn operation_name(&self, req: &HttpRequest) -> Result<String, ApiError>;
    /// Every operation's name (its `eventName`; metric labels are only these).
    fn operations(&self) -> &'static [&'static str];
    /// Whether operation `name` changes state (its changes must wait for its durable event).
    fn mutates(&self, name: &str) -> bool;
    /// Whether the listener should leave this request's body unread for the service to
    /// stream (S3: a PUT to a proxied bucket).
    fn streams_body(&self, _api: &Api, _req: &HttpRequest) -> bool {
        false
    }
    /// After authentication, before routing: what the service does to the request's body
    /// with the caller's verified signature (S3 decodes `aws-chunked`).
    fn prepare(&self, _req: &mut HttpRequest, _signed: Signed<'_>) -> Result<(), ApiError> {
        Ok(())
    }
    /// The typed operation, parsed once from an authenticated request. An error is answered
    /// as is (it is the client's mistake in the request's inputs).
    fn route(&self, api: &Api, req: &HttpRequest) -> Result<Self::Op, ApiError>;
    /// How a request whose inputs do not route is recorded, beyond its name (S3 records its
    /// object calls as data events even then).
    fn audit_unrouted(&self, _ctx: &mut Ctx<'_>, _req: &HttpRequest, _name: &str) {}
    /// Runs the operation. Handlers see the typed operation and the [`Ctx`], never the request.
    fn handle<'a>(
        &'a self,
        ctx: &'a mut Ctx<'_>,
        op: Self::Op,
    ) -> BoxFuture<'a, Result<Reply, ApiError>>;
}

/// A [`Service`] with its operation type erased, as the edge holds it.
pub trait Registered: Send + Sync {
    fn signing_name(&self) -> &'static str;
    fn event_source(&self) -> &'static str;
    fn protocol(&self) -> Protocol;
    fn claims(&self, req: &HttpRequest) -> bool;
    fn claims_unsigned(&self, req: &HttpRequest) -> bool;
    fn sigv2_resource(&self, req: &HttpRequest) -> Option<String>;
    fn resource_region(&self, api: &Api, req: &HttpRequest) -> Option<String>;
    fn operation_name(&self, req: &HttpRequest) -> Result<String, ApiError>;
    fn operations(&self) -> &'static [&'static str];
    fn mutates(&self, name: &str) -> bool;
    fn streams_body(&self, api: &Api, req: &HttpRequest) -> bool;
    /// Whether `name` is one of this service's operations.
    fn knows(&self, name: &str) -> bool {
        self.operations().contains(&name)
    }
    fn prepare(&self, req: &mut HttpRequest, signed: Signed<'_>) -> Result<(), ApiError>;
    fn route(&self, api: &Api, req: &HttpRequest) -> Result<Box<dyn Any + Send>, ApiError>;
    fn audit_unrouted(&self, ctx: &mut Ctx<'_>, req: &HttpRequest, name: &str);
    fn handle<'a>(
        &'a self,
        ctx: &'a mut Ctx<'_>,
        op: Box<dyn Any + Send>,
    ) -> BoxFuture<'a, Result<Reply, ApiError>>;
}

impl<S: Service> Registered for S {
    fn signing_name(&self) -> &'static str {
        Service::signing_name(self)
    }
    fn event_source(&self) -> &'static str {
        Service::event_source(self)
    }
    fn protocol(&self) -> Protocol {
        Service::protocol(self)
    }
    fn claims(&self, req: &HttpRequest) -> bool {
        Service::claims(self, req)
    }
    fn claims_unsigned(&self, req: &HttpRequest) -> bool {
        Service::claims_unsigned(self, req)
    }
    fn sigv2_resource(&self, req: &HttpRequest) -> Option<String> {
        Service::sigv2_resource(self, req)
    }
    fn resource_region(&self, api: &Api, req: &HttpRequest) -> Option<String> {
        Service::resource_region(self, api, req)
    }
    fn operation_name(&self, req: &HttpRequest) -> Result<String, ApiError> {
        Service::operation_name(self, req)
    }
    fn operations(&self) -> &'static [&'static str] {
        Service::operations(self)
    }
    fn mutates(&self, name: &str) -> bool {
        Service::mutates(self, name)
    }
    fn streams_body(&self, api: &Api, req: &HttpRequest) -> bool {
        Service::streams_body(self, api, req)
    }
    fn prepare(&self, req: &mut HttpRequest, signed: Signed<'_>) -> Result<(), ApiError> {
        Service::prepare(self, req, signed)
    }
    fn route(&self, api: &Api, req: &HttpRequest) -> Result<Box<dyn Any + Send>, ApiError> {
        Service::route(self, api, req).map(|op| Box::new(op) as Box<dyn Any + Send>)
    }
    fn audit_unrouted(&self, ctx: &mut Ctx<'_>, req: &HttpRequest, name: &str) {
        Service::audit_unrouted(self, ctx, req, name)
    }
    fn handle<'a>(
        &'a self,
        ctx: &'a mut Ctx<'_>,
        op: Box<dyn Any + Send>,
    ) -> BoxFuture<'a, Result<Reply, ApiError>> {
        match op.downcast::<S::Op>() {
            Ok(op) => Service::handle(self, ctx, *op),
            Err(_) => {
                Box::pin(async { Err(ApiError::internal("an operation reached another service")) })
            }
        }
    }
}

/// Every service, in the order they are asked to take a request no signature names.
pub static SERVICES: &[&dyn Registered] = &[
    &crate::kms::Kms,
    &crate::logs::Logs,
    &crate::dynamodb::DynamoDb,
    &crate::cloudtrail::CloudTrail,
    &crate::cloudtrail::data::CloudTrailData,
    &crate::iam::sts::Sts,
    &crate::iam::Iam,
    &crate::s3::S3,
];

/// The service a request is for: the one its shape names, else the one its signature's
/// scope names, else the first that takes an unsigned request of its shape. `Err` carries the
/// protocol to answer in and the error (a scope naming a service cairn does not serve).
pub fn service_for(
    req: &HttpRequest,
    scope_service: Option<&str>,
) -> Result<&'static dyn Registered, (Protocol, ApiError)> {
    if let Some(s) = SERVICES.iter().find(|s| s.claims(req)) {
        return Ok(*s);
    }
    if let Some(name) = scope_service {
        return SERVICES
            .iter()
            .find(|s| s.signing_name() == name)
            .copied()
            .ok_or_else(|| {
                let protocol = if req.header(crate::protocol::X_AMZ_TARGET).is_some() {
                    Protocol::Json
                } else {
                    Protocol::Query
                };
                (
                    protocol,
                    ApiError::client(
                        "UnknownOperationException",
                        format!("cairn does not serve the '{name}' service"),
                    ),
                )
            });
    }
    SERVICES
        .iter()
        .find(|s| s.claims_unsigned(req))
        .copied()
        .ok_or_else(|| {
            (
                Protocol::S3,
                ApiError::internal("no service takes the request"),
            )
        })
}

/// Whether some service wants this request's body left unread, to stream it.
pub fn streams_body(api: &Api, req: &HttpRequest) -> bool {
    SERVICES.iter().any(|s| s.streams_body(api, req))
}

/// Declares an operation enum whose variants are named for the AWS operations, with
/// `NAMES` (every operation, for metric labels and tests) and `name()` (the `eventName`).
#[macro_export]
macro_rules! operations {
    ($(#[$m:meta])* $vis:vis enum $name:ident { $($(#[$vm:meta])* $variant:ident $(($input:ty))?),* $(,)? }) => {
        $(#[$m])*
        $vis enum $name { $($(#[$vm])* $variant $(($input))?),* }
        impl $name {
            /// Every operation's name.
            pub const NAMES: &'static [&'static str] = &[$(stringify!($variant)),*];
            /// The operation's name (its CloudTrail `eventName`).
            pub fn name(&self) -> &'static str {
                match self { $(Self::$variant { .. } => stringify!($variant)),* }
            }
        }
    };
}
