//! A trail's configuration, its commands, and its persisted state.

use cairn_record::selector::{TrailScope, TrailSelectors};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrailConfig {
    pub name: String,
    pub account: String,
    pub home_region: String,
    pub s3_bucket: String,
    pub s3_key_prefix: Option<String>,
    pub multi_region: bool,
    pub include_global_service_events: bool,
    pub log_file_validation: bool,
    pub selectors: TrailSelectors,
    pub kms_key_id: Option<String>,
}

impl TrailConfig {
    pub fn new(name: &str, account: &str, home_region: &str, bucket: &str) -> TrailConfig {
        TrailConfig {
            name: name.into(),
            account: account.into(),
            home_region: home_region.into(),
            s3_bucket: bucket.into(),
            s3_key_prefix: None,
            multi_region: false,
            include_global_service_events: true,
            log_file_validation: false,
            selectors: TrailSelectors::default(),
            kms_key_id: None,
        }
    }

    /// `arn:aws:cloudtrail:<home region>:<account>:trail/<name>` ([`cairn_record::Arn::trail`]),
    /// written into one string: every request that names a trail asks for it.
    pub fn arn(&self) -> String {
        let parts = [
            "arn:",
            cairn_record::arn::PARTITION,
            ":cloudtrail:",
            &self.home_region,
            ":",
            &self.account,
            ":trail/",
            &self.name,
        ];
        let mut s = String::with_capacity(parts.iter().map(|p| p.len()).sum());
        for p in parts {
            s.push_str(p);
        }
        s
    }

    pub fn scope(&self) -> TrailScope {
        TrailScope {
            home_region: self.home_region.clone(),
            multi_region: self.multi_region,
            include_global_service_events: self.include_global_service_events,
        }
    }

    /// Whether an event's region (and global-service origin) belongs in this trail.
    pub fn admits_region(&self, ev: &cairn_record::selector::EventFacts) -> bool {
        cairn_record::selector::scope_admits(
            &self.home_region,
            self.multi_region,
            self.include_global_service_events,
            ev,
        )
    }

    pub fn prefix(&self) -> Option<&str> {
        self.s3_key_prefix.as_deref().filter(|p| !p.is_empty())
    }
}

/// CloudTrail's trail-name rules; the error text is AWS's.
pub fn validate_trail_name(name: &str) -> Result<(), String> {
    let n = name.len();
    if n < 3 {
        return Err(format!("Trail name too short. Minimum allowed length: 3 characters. Specified name length: {n} characters."));
    }
    if n > 128 {
        return Err(format!("Trail name too long. Maximum allowed length: 128 characters. Specified name length: {n} characters."));
    }
    let b = name.as_bytes();
    if !b[0].is_ascii_alphanumeric() {
        return Err("Trail name must starts with a letter or number.".into());
    }
    if !b[n - 1].is_ascii_alphanumeric() {
        return Err("Trail name must ends with a letter or number.".into());
    }
    if !b
        .iter()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
    {
        return Err("Trail name or ARN can only contain uppercase letters, lowercase letters, numbers, periods (.), hyphens (-), and underscores (_).".into());
    }
    if b.windows(2)
        .any(|w| !w[0].is_ascii_alphanumeric() && !w[1].is_ascii_alphanumeric())
    {
        return Err("Trail name cannot contain consecutive special characters.".into());
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return Err("Trail name cannot be formatted as an IP address.".into());
    }
    Ok(())
}

/// Changes to trails. They travel through the journal, so they take effect at an exact point
/// of the event stream, before the events after them and after the events before them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TrailCommand {
    /// Create or replace a trail's configuration.
    Put {
        config: TrailConfig,
        at: DateTime<Utc>,
    },
    StartLogging {
        name: String,
        at: DateTime<Utc>,
    },
    StopLogging {
        name: String,
        at: DateTime<Utc>,
    },
    Delete {
        name: String,
        at: DateTime<Utc>,
    },
}

/// The persisted state of a trail, and what GetTrailStatus reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrailState {
    pub config: TrailConfig,
    pub logging: bool,
    pub start_logging_time: Option<DateTime<Utc>>,
    pub stop_logging_time: Option<DateTime<Utc>>,
    pub latest_delivery_time: Option<DateTime<Utc>>,
    pub latest_delivery_attempt_time: Option<DateTime<Utc>>,
    pub latest_delivery_error: Option<String>,
    pub latest_digest_delivery_time: Option<DateTime<Utc>>,
    pub latest_digest_delivery_error: Option<String>,
}

impl TrailState {
    pub fn new(config: TrailConfig) -> TrailState {
        TrailState {
            config,
            logging: false,
            start_logging_time: None,
            stop_logging_time: None,
            latest_delivery_time: None,
            latest_delivery_attempt_time: None,
            latest_delivery_error: None,
            latest_digest_delivery_time: None,
            latest_digest_delivery_error: None,
        }
    }

    pub fn selectors(&self) -> &TrailSelectors {
        &self.config.selectors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trail_name_rules() {
        assert!(validate_trail_name("acme-audit-trail").is_ok());
        assert!(validate_trail_name("ab").unwrap_err().contains("too short"));
        assert!(validate_trail_name("my--namespace").is_err());
        assert!(validate_trail_name("my-_namespace").is_err());
        assert!(validate_trail_name("-abc").is_err());
        assert!(validate_trail_name("abc!").is_err());
        assert!(validate_trail_name("192.168.5.4").is_err());
        assert!(validate_trail_name(&"a".repeat(129)).is_err());
    }

    #[test]
    fn a_trails_arn_is_the_arn_of_its_name() {
        let c = TrailConfig::new("audit.trail_1", "123456789012", "eu-west-1", "b");
        assert_eq!(
            c.arn(),
            cairn_record::Arn::trail("eu-west-1", "123456789012", "audit.trail_1").to_string()
        );
        assert_eq!(
            c.arn(),
            "arn:aws:cloudtrail:eu-west-1:123456789012:trail/audit.trail_1"
        );
    }
}
