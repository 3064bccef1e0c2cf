//! The CloudTrail event record, field for field as spec §2.
//!
//! Keys serialize in the order AWS emits them; optional fields are omitted when absent, while
//! `requestParameters` and `responseElements` are always present (possibly `null`). Fields this
//! model does not name are kept in [`EventRecord::extra`] so a record read from a file
//! round-trips without loss.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The record version cairn emits.
pub const EVENT_VERSION: &str = "1.11";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    #[serde(rename = "eventVersion")]
    pub event_version: String,
    #[serde(
        rename = "userIdentity",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub user_identity: Option<UserIdentity>,
    #[serde(rename = "eventTime", with = "crate::time::iso_seconds")]
    pub event_time: DateTime<Utc>,
    /// Empty (and then omitted) only for Lake integration events, whose source and name are
    /// the application's claims inside `eventData`.
    #[serde(
        rename = "eventSource",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub event_source: String,
    #[serde(
        rename = "eventName",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub event_name: String,
    #[serde(rename = "awsRegion")]
    pub aws_region: String,
    #[serde(
        rename = "sourceIPAddress",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub source_ip_address: Option<String>,
    #[serde(rename = "userAgent", skip_serializing_if = "Option::is_none", default)]
    pub user_agent: Option<String>,
    #[serde(rename = "errorCode", skip_serializing_if = "Option::is_none", default)]
    pub error_code: Option<String>,
    #[serde(
        rename = "errorMessage",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub error_message: Option<String>,
    #[serde(rename = "requestParameters", default)]
    pub request_parameters: Option<Value>,
    #[serde(rename = "responseElements", default)]
    pub response_elements: Option<Value>,
    #[serde(
        rename = "additionalEventData",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub additional_event_data: Option<Value>,
    #[serde(rename = "requestID", skip_serializing_if = "Option::is_none", default)]
    pub request_id: Option<String>,
    #[serde(rename = "eventID")]
    pub event_id: String,
    #[serde(rename = "readOnly", skip_serializing_if = "Option::is_none", default)]
    pub read_only: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub resources: Option<Vec<Resource>>,
    #[serde(rename = "eventType")]
    pub event_type: String,
    #[serde(
        rename = "apiVersion",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub api_version: Option<String>,
    #[serde(
        rename = "managementEvent",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub management_event: Option<bool>,
    #[serde(
        rename = "recipientAccountId",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub recipient_account_id: Option<String>,
    #[serde(
        rename = "serviceEventDetails",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub service_event_details: Option<Value>,
    #[serde(
        rename = "sharedEventID",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub shared_event_id: Option<String>,
    #[serde(
        rename = "vpcEndpointId",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub vpc_endpoint_id: Option<String>,
    #[serde(rename = "eventCategory")]
    pub event_category: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub addendum: Option<Value>,
    #[serde(
        rename = "edgeDeviceDetails",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub edge_device_details: Option<Value>,
    #[serde(
        rename = "tlsDetails",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub tls_details: Option<TlsDetails>,
    #[serde(
        rename = "sessionCredentialFromConsole",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub session_credential_from_console: Option<String>,
    #[serde(
        rename = "insightDetails",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub insight_details: Option<Value>,
    /// Fields newer than this model (`eventContext`, `inScopeOf`, `omitted`, …) and the
    /// `metadata` of PutAuditEvents records.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Who made the call (spec §2.2). Every key is optional because each `type` uses a subset.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct UserIdentity {
    #[serde(rename = "type")]
    pub identity_type: String,
    #[serde(
        rename = "principalId",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub principal_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub arn: Option<String>,
    #[serde(rename = "accountId", skip_serializing_if = "Option::is_none", default)]
    pub account_id: Option<String>,
    #[serde(
        rename = "accessKeyId",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub access_key_id: Option<String>,
    #[serde(rename = "userName", skip_serializing_if = "Option::is_none", default)]
    pub user_name: Option<String>,
    #[serde(
        rename = "sessionContext",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub session_context: Option<SessionContext>,
    #[serde(rename = "invokedBy", skip_serializing_if = "Option::is_none", default)]
    pub invoked_by: Option<String>,
    #[serde(
        rename = "identityProvider",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub identity_provider: Option<String>,
    #[serde(
        rename = "credentialId",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub credential_id: Option<String>,
    #[serde(
        rename = "onBehalfOf",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub on_behalf_of: Option<Value>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SessionContext {
    #[serde(
        rename = "sessionIssuer",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub session_issuer: Option<Value>,
    #[serde(
        rename = "webIdFederationData",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub web_id_federation_data: Option<Value>,
    /// `creationDate` (ISO time) and `mfaAuthenticated` (the *string* "true"/"false").
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub attributes: Option<Value>,
    #[serde(
        rename = "sourceIdentity",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub source_identity: Option<String>,
    #[serde(
        rename = "ec2RoleDelivery",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub ec2_role_delivery: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One entry of `resources`. Note the capitalised `ARN` / `ARNPrefix`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resource {
    #[serde(rename = "accountId", skip_serializing_if = "Option::is_none", default)]
    pub account_id: Option<String>,
    #[serde(rename = "type")]
    pub resource_type: String,
    #[serde(rename = "ARN", skip_serializing_if = "Option::is_none", default)]
    pub arn: Option<String>,
    #[serde(rename = "ARNPrefix", skip_serializing_if = "Option::is_none", default)]
    pub arn_prefix: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsDetails {
    #[serde(rename = "tlsVersion")]
    pub tls_version: String,
    #[serde(rename = "cipherSuite")]
    pub cipher_suite: String,
    #[serde(rename = "clientProvidedHostHeader")]
    pub client_provided_host_header: String,
}

/// `eventCategory` values.
pub mod category {
    pub const MANAGEMENT: &str = "Management";
    pub const DATA: &str = "Data";
    pub const INSIGHT: &str = "Insight";
    pub const NETWORK_ACTIVITY: &str = "NetworkActivity";
    pub const ACTIVITY_AUDIT_LOG: &str = "ActivityAuditLog";
}

impl EventRecord {
    /// True for management events (`eventCategory` Management).
    pub fn is_management(&self) -> bool {
        self.event_category == category::MANAGEMENT
    }

    /// Compact JSON, as written into log files.
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing a value built from owned Strings and Values cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}
