//! What is stored about keys, aliases and grants.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A key's state (KMS's `KeyState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyState {
    Enabled,
    Disabled,
    PendingDeletion,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Enabled => "Enabled",
            KeyState::Disabled => "Disabled",
            KeyState::PendingDeletion => "PendingDeletion",
        }
    }
}

/// One version of a key's material, sealed under the root-derived wrapping key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Material {
    pub version: u32,
    pub created: DateTime<Utc>,
    #[serde(with = "b64")]
    pub sealed: Vec<u8>,
}

mod b64 {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(serde::de::Error::custom)
    }
}

/// A customer managed symmetric key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyRecord {
    pub key_id: String,
    pub arn: String,
    pub account: String,
    pub region: String,
    pub created: DateTime<Utc>,
    pub description: String,
    pub state: KeyState,
    pub deletion_date: Option<DateTime<Utc>>,
    pub pending_window_days: Option<u32>,
    /// The key policy document, as given.
    pub policy: String,
    pub rotation_enabled: bool,
    pub rotation_period_days: Option<u32>,
    pub next_rotation: Option<DateTime<Utc>>,
    pub on_demand_rotation: Option<DateTime<Utc>>,
    pub current_version: u32,
    pub materials: Vec<Material>,
    /// `(TagKey, TagValue)`, in insertion order.
    pub tags: Vec<(String, String)>,
    /// An AWS managed key (`aws/s3`): made by the service that uses it, its policy AWS's.
    #[serde(default)]
    pub aws_managed: bool,
}

impl KeyRecord {
    /// Whether the key can be used for cryptography; the error otherwise, in KMS's words.
    pub fn usable(&self) -> Result<(), crate::KmsError> {
        match self.state {
            KeyState::Enabled => Ok(()),
            KeyState::Disabled => Err(crate::KmsError::Disabled(format!(
                "{} is disabled.",
                self.arn
            ))),
            KeyState::PendingDeletion => Err(crate::KmsError::InvalidState(format!(
                "{} is pending deletion.",
                self.arn
            ))),
        }
    }

    /// Whether the key can be changed (anything but pending deletion).
    pub fn changeable(&self) -> Result<(), crate::KmsError> {
        match self.state {
            KeyState::PendingDeletion => Err(crate::KmsError::InvalidState(format!(
                "{} is pending deletion.",
                self.arn
            ))),
            _ => Ok(()),
        }
    }
}

/// What CreateKey asks for.
pub struct NewKey {
    pub description: String,
    pub policy: String,
    pub tags: Vec<(String, String)>,
}

/// AWS's default key policy: the account (and so its IAM policies) may do everything.
pub fn default_policy(account: &str) -> String {
    serde_json::json!({
        "Version": "2012-10-17",
        "Id": "key-default-1",
        "Statement": [{
            "Sid": "Enable IAM User Permissions",
            "Effect": "Allow",
            "Principal": {"AWS": format!("arn:aws:iam::{account}:root")},
            "Action": "kms:*",
            "Resource": "*"
        }]
    })
    .to_string()
}

/// The policy of the AWS managed key of `service` (`s3`): every principal of the account may
/// use it through that service; the account may read its metadata directly.
pub fn managed_policy(account: &str, region: &str, service: &str) -> String {
    serde_json::json!({
        "Version": "2012-10-17",
        "Id": format!("auto-{service}-2"),
        "Statement": [
            {
                "Sid": format!("Allow access through {} for all principals in the account that are authorized to use {}", service.to_uppercase(), service.to_uppercase()),
                "Effect": "Allow",
                "Principal": {"AWS": "*"},
                "Action": ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey"],
                "Resource": "*",
                "Condition": {"StringEquals": {
                    "kms:CallerAccount": account,
                    "kms:ViaService": format!("{service}.{region}.amazonaws.com")
                }}
            },
            {
                "Sid": "Allow direct access to key metadata to the account",
                "Effect": "Allow",
                "Principal": {"AWS": format!("arn:aws:iam::{account}:root")},
                "Action": ["kms:Describe*", "kms:Get*", "kms:List*"],
                "Resource": "*"
            }
        ]
    })
    .to_string()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Alias {
    /// `alias/…`.
    pub name: String,
    pub region: String,
    pub target_key_id: String,
    pub created: DateTime<Utc>,
    pub updated: DateTime<Utc>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct GrantConstraints {
    #[serde(default)]
    pub encryption_context_subset: Option<crate::Context>,
    #[serde(default)]
    pub encryption_context_equals: Option<crate::Context>,
}

impl GrantConstraints {
    /// Whether a request's encryption context satisfies the constraints.
    pub fn admits(&self, context: &crate::Context) -> bool {
        if let Some(eq) = &self.encryption_context_equals {
            if eq != context {
                return false;
            }
        }
        if let Some(sub) = &self.encryption_context_subset {
            if !sub.iter().all(|(k, v)| context.get(k) == Some(v)) {
                return false;
            }
        }
        true
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Grant {
    pub grant_id: String,
    pub key_id: String,
    pub name: Option<String>,
    pub created: DateTime<Utc>,
    pub grantee: String,
    pub retiring: Option<String>,
    pub issuing_account: String,
    pub operations: Vec<String>,
    pub constraints: Option<GrantConstraints>,
    /// The grant token (a random secret) whose holder may retire the grant.
    pub token: String,
}
