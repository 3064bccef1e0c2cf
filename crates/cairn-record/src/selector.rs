//! Event selectors: which events a trail records.
//!
//! Basic selectors (`EventSelectors`) and advanced selectors (`AdvancedEventSelectors`) with the
//! API shapes of botocore's CloudTrail model, AWS's validation limits (errors are
//! `InvalidEventSelectorsException`), and [`TrailScope`] for the region rules (multi-region,
//! global service events). Matching works on [`EventFacts`], the few fields a selector can see,
//! so delivery never has to parse whole records.

use crate::builder::is_global_service;
use crate::record::{category, EventRecord};
use serde::{Deserialize, Serialize};

/// Max basic selectors per trail.
pub const MAX_EVENT_SELECTORS: usize = 5;
/// Max data-resource values across all basic selectors of a trail.
pub const MAX_DATA_RESOURCE_VALUES: usize = 250;
/// Max values across all conditions of all advanced selectors of a trail.
pub const MAX_ADVANCED_VALUES: usize = 500;

/// The fields of an event that selectors and region rules look at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct EventFacts {
    pub category: String,
    pub source: String,
    pub name: String,
    pub region: String,
    pub read_only: Option<bool>,
    pub event_type: String,
    pub user_arn: Option<String>,
    pub console: Option<String>,
    /// `(resource type, ARN or ARN prefix, is_prefix)`.
    pub resources: Vec<(String, String, bool)>,
}

impl From<&EventRecord> for EventFacts {
    fn from(r: &EventRecord) -> Self {
        EventFacts {
            category: r.event_category.clone(),
            source: r.event_source.clone(),
            name: r.event_name.clone(),
            region: r.aws_region.clone(),
            read_only: r.read_only,
            event_type: r.event_type.clone(),
            user_arn: r.user_identity.as_ref().and_then(|u| u.arn.clone()),
            console: r.session_credential_from_console.clone(),
            resources: r
                .resources
                .iter()
                .flatten()
                .filter_map(|res| match (&res.arn, &res.arn_prefix) {
                    (Some(a), _) => Some((res.resource_type.clone(), a.clone(), false)),
                    (None, Some(p)) => Some((res.resource_type.clone(), p.clone(), true)),
                    _ => None,
                })
                .collect(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum ReadWriteType {
    ReadOnly,
    WriteOnly,
    #[default]
    All,
}

impl ReadWriteType {
    fn admits(self, read_only: Option<bool>) -> bool {
        match self {
            ReadWriteType::All => true,
            ReadWriteType::ReadOnly => read_only == Some(true),
            ReadWriteType::WriteOnly => read_only == Some(false),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DataResource {
    #[serde(rename = "Type")]
    pub resource_type: String,
    #[serde(default)]
    pub values: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EventSelector {
    #[serde(default)]
    pub read_write_type: ReadWriteType,
    #[serde(default = "yes")]
    pub include_management_events: bool,
    #[serde(default)]
    pub data_resources: Vec<DataResource>,
    #[serde(default)]
    pub exclude_management_event_sources: Vec<String>,
}

fn yes() -> bool {
    true
}

impl Default for EventSelector {
    /// What a trail without selectors records: all management events, no data events.
    fn default() -> Self {
        EventSelector {
            read_write_type: ReadWriteType::All,
            include_management_events: true,
            data_resources: vec![],
            exclude_management_event_sources: vec![],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct AdvancedFieldSelector {
    pub field: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub equals: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub starts_with: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ends_with: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub not_equals: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub not_starts_with: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub not_ends_with: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct AdvancedEventSelector {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub name: Option<String>,
    pub field_selectors: Vec<AdvancedFieldSelector>,
}

/// A trail's selectors: basic or advanced, never both (setting one clears the other).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TrailSelectors {
    Basic(Vec<EventSelector>),
    Advanced(Vec<AdvancedEventSelector>),
}

impl Default for TrailSelectors {
    fn default() -> Self {
        TrailSelectors::Basic(vec![EventSelector::default()])
    }
}

/// `InvalidEventSelectorsException` with AWS-style wording.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidEventSelectors {
    pub message: String,
}

impl InvalidEventSelectors {
    /// The AWS error code.
    pub const CODE: &'static str = "InvalidEventSelectorsException";
    fn new(message: impl Into<String>) -> Self {
        InvalidEventSelectors {
            message: message.into(),
        }
    }
}

const DATA_TYPES: &[&str] = &[
    "AWS::S3::Object",
    "AWS::Lambda::Function",
    "AWS::DynamoDB::Table",
];
const EXCLUDABLE_SOURCES: &[&str] = &["kms.amazonaws.com", "rdsdata.amazonaws.com"];
const ADVANCED_FIELDS: &[&str] = &[
    "eventCategory",
    "eventSource",
    "eventName",
    "readOnly",
    "resources.type",
    "resources.ARN",
    "userIdentity.arn",
    "eventType",
    "sessionCredentialFromConsole",
];
const CATEGORIES: &[&str] = &[
    category::MANAGEMENT,
    category::DATA,
    category::NETWORK_ACTIVITY,
    category::ACTIVITY_AUDIT_LOG,
    "ConfigurationItem",
    "Evidence",
    "Insight",
];

/// Checks basic selectors against AWS's limits.
pub fn validate_basic(selectors: &[EventSelector]) -> Result<(), InvalidEventSelectors> {
    if selectors.is_empty() {
        return Err(InvalidEventSelectors::new(
            "Event selectors must contain at least one selector.",
        ));
    }
    if selectors.len() > MAX_EVENT_SELECTORS {
        return Err(InvalidEventSelectors::new(format!(
            "Too many event selectors: {}. A trail can have at most {MAX_EVENT_SELECTORS} event selectors.",
            selectors.len()
        )));
    }
    let total: usize = selectors
        .iter()
        .flat_map(|s| &s.data_resources)
        .map(|d| d.values.len())
        .sum();
    if total > MAX_DATA_RESOURCE_VALUES {
        return Err(InvalidEventSelectors::new(format!(
            "Too many data resource values: {total}. A trail can have at most {MAX_DATA_RESOURCE_VALUES} data resources across all event selectors."
        )));
    }
    for s in selectors {
        for src in &s.exclude_management_event_sources {
            if !EXCLUDABLE_SOURCES.contains(&src.as_str()) {
                return Err(InvalidEventSelectors::new(format!(
                    "Value {src} for ExcludeManagementEventSources is invalid. Valid values are {}.",
                    EXCLUDABLE_SOURCES.join(", ")
                )));
            }
        }
        for d in &s.data_resources {
            if !DATA_TYPES.contains(&d.resource_type.as_str()) {
                return Err(InvalidEventSelectors::new(format!(
                    "Invalid data resource type {}. Valid types are {}.",
                    d.resource_type,
                    DATA_TYPES.join(", ")
                )));
            }
            if d.values.is_empty() {
                return Err(InvalidEventSelectors::new(format!(
                    "Data resource of type {} must have at least one value.",
                    d.resource_type
                )));
            }
            for v in &d.values {
                if !data_value_valid(&d.resource_type, v) {
                    return Err(InvalidEventSelectors::new(format!(
                        "Value {v} for DataResources.Values is invalid for type {}.",
                        d.resource_type
                    )));
                }
            }
        }
    }
    Ok(())
}

fn data_value_valid(resource_type: &str, v: &str) -> bool {
    match resource_type {
        "AWS::S3::Object" => {
            v == "arn:aws:s3"
                || v == "arn:aws:s3:::"
                || v.strip_prefix("arn:aws:s3:::")
                    .is_some_and(|rest| rest.contains('/') && !rest.starts_with('/'))
        }
        "AWS::DynamoDB::Table" => {
            v == "arn:aws:dynamodb"
                || v.parse::<crate::Arn>().is_ok_and(|a| {
                    a.partition == crate::arn::PARTITION
                        && a.service == "dynamodb"
                        && crate::arn::is_account_id(&a.account)
                        && a.resource.starts_with("table/")
                })
        }
        "AWS::Lambda::Function" => {
            v == "arn:aws:lambda"
                || v.parse::<crate::Arn>().is_ok_and(|a| {
                    a.partition == crate::arn::PARTITION
                        && a.service == "lambda"
                        && crate::arn::is_account_id(&a.account)
                        && a.resource.starts_with("function:")
                })
        }
        _ => false,
    }
}

/// Checks advanced selectors against AWS's limits.
pub fn validate_advanced(selectors: &[AdvancedEventSelector]) -> Result<(), InvalidEventSelectors> {
    if selectors.is_empty() {
        return Err(InvalidEventSelectors::new(
            "Advanced event selectors must contain at least one selector.",
        ));
    }
    let mut total = 0usize;
    for s in selectors {
        if s.name.as_ref().is_some_and(|n| n.len() > 1000) {
            return Err(InvalidEventSelectors::new(
                "Advanced event selector name exceeds 1000 characters.",
            ));
        }
        if s.field_selectors.is_empty() {
            return Err(InvalidEventSelectors::new(
                "Each advanced event selector must contain at least one field selector.",
            ));
        }
        let mut seen: Vec<&str> = vec![];
        for f in &s.field_selectors {
            let field = f.field.as_str();
            if field.is_empty()
                || field.len() > 1000
                || !field
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '_' || c == '.' || c == '|')
            {
                return Err(InvalidEventSelectors::new(format!(
                    "Field {field:?} is not valid."
                )));
            }
            if !ADVANCED_FIELDS.contains(&field) {
                return Err(InvalidEventSelectors::new(format!(
                    "Field {field} is not supported. Supported fields are {}.",
                    ADVANCED_FIELDS.join(", ")
                )));
            }
            if seen.contains(&field) {
                return Err(InvalidEventSelectors::new(format!(
                    "Field {field} appears more than once in an advanced event selector."
                )));
            }
            seen.push(field);
            let ops = f.operators();
            if ops.iter().all(|(_, v)| v.is_none()) {
                return Err(InvalidEventSelectors::new(format!(
                    "Field selector for {field} must specify at least one operator."
                )));
            }
            for (op, values) in ops {
                let Some(values) = values else { continue };
                if values.is_empty() {
                    return Err(InvalidEventSelectors::new(format!(
                        "Operator {op} for field {field} must have at least one value."
                    )));
                }
                for v in values {
                    if v.is_empty() || v.len() > 2048 {
                        return Err(InvalidEventSelectors::new(format!(
                            "Value for operator {op} of field {field} must be 1 to 2048 characters."
                        )));
                    }
                    if field == "readOnly" && v != "true" && v != "false" {
                        return Err(InvalidEventSelectors::new(format!(
                            "Value {v} for readOnly is invalid. Valid values are true, false."
                        )));
                    }
                    if field == "eventCategory" && !CATEGORIES.contains(&v.as_str()) {
                        return Err(InvalidEventSelectors::new(format!(
                            "Value {v} for eventCategory is invalid."
                        )));
                    }
                }
                total += values.len();
            }
            if field == "eventCategory"
                && (f.equals.is_none()
                    || f.starts_with.is_some()
                    || f.ends_with.is_some()
                    || f.not_starts_with.is_some()
                    || f.not_ends_with.is_some())
            {
                return Err(InvalidEventSelectors::new(
                    "eventCategory supports only the Equals operator.",
                ));
            }
        }
        let cat = s
            .field_selectors
            .iter()
            .find(|f| f.field == "eventCategory");
        let Some(cat) = cat else {
            return Err(InvalidEventSelectors::new(
                "Each advanced event selector must include an eventCategory field selector.",
            ));
        };
        let data = cat
            .equals
            .as_ref()
            .is_some_and(|v| v.iter().any(|c| c == category::DATA));
        if data
            && !s
                .field_selectors
                .iter()
                .any(|f| f.field == "resources.type")
        {
            return Err(InvalidEventSelectors::new(
                "Advanced event selectors for data events must include a resources.type field selector.",
            ));
        }
    }
    if total > MAX_ADVANCED_VALUES {
        return Err(InvalidEventSelectors::new(format!(
            "Too many values in advanced event selectors: {total}. The maximum is {MAX_ADVANCED_VALUES}."
        )));
    }
    Ok(())
}

impl TrailSelectors {
    pub fn validate(&self) -> Result<(), InvalidEventSelectors> {
        match self {
            TrailSelectors::Basic(b) => validate_basic(b),
            TrailSelectors::Advanced(a) => validate_advanced(a),
        }
    }

    /// True when the trail's selectors admit the event (region rules are separate).
    pub fn matches(&self, ev: &EventFacts) -> bool {
        match self {
            TrailSelectors::Basic(b) => b.iter().any(|s| s.matches(ev)),
            TrailSelectors::Advanced(a) => a.iter().any(|s| s.matches(ev)),
        }
    }
}

impl EventSelector {
    pub fn matches(&self, ev: &EventFacts) -> bool {
        if !self.read_write_type.admits(ev.read_only) {
            return false;
        }
        match ev.category.as_str() {
            // Lake integration events are never management events: an application could
            // otherwise write an event that reads like an AWS API call into every trail.
            category::MANAGEMENT => {
                self.include_management_events
                    && !self.exclude_management_event_sources.contains(&ev.source)
            }
            category::DATA => self.data_resources.iter().any(|d| d.matches(ev)),
            _ => false,
        }
    }
}

impl DataResource {
    pub fn matches(&self, ev: &EventFacts) -> bool {
        match self.resource_type.as_str() {
            "AWS::S3::Object" => self.values.iter().any(|v| s3_value_matches(v, ev)),
            "AWS::DynamoDB::Table" => self.values.iter().any(|v| {
                ev.resources.iter().any(|(t, a, p)| {
                    t == "AWS::DynamoDB::Table" && !p && (v == "arn:aws:dynamodb" || v == a)
                })
            }),
            "AWS::Lambda::Function" => self.values.iter().any(|v| {
                ev.resources.iter().any(|(t, a, p)| {
                    t == "AWS::Lambda::Function" && !p && (v == "arn:aws:lambda" || v == a)
                })
            }),
            _ => false,
        }
    }
}

/// S3 data-resource values: `arn:aws:s3` (every bucket), `arn:aws:s3:::bucket/` (every object
/// of a bucket), `arn:aws:s3:::bucket/prefix` (objects under a prefix). A trailing `*`, as
/// Terraform users write (`bucket/*`), means the same as the prefix without it.
fn s3_value_matches(value: &str, ev: &EventFacts) -> bool {
    if value == "arn:aws:s3" || value == "arn:aws:s3:::" {
        return ev
            .resources
            .iter()
            .any(|(t, _, _)| t == "AWS::S3::Object" || t == "AWS::S3::Bucket");
    }
    let v = value.strip_suffix('*').unwrap_or(value);
    let objects: Vec<_> = ev
        .resources
        .iter()
        .filter(|(t, _, _)| t == "AWS::S3::Object")
        .collect();
    if objects.is_empty() {
        // Bucket-scoped data events (HeadBucket) need the whole bucket selected.
        return ev
            .resources
            .iter()
            .any(|(t, a, _)| t == "AWS::S3::Bucket" && (v == format!("{a}/") || v == a.as_str()));
    }
    objects.iter().any(|(_, a, is_prefix)| {
        if *is_prefix {
            a.starts_with(v) || v.starts_with(a.as_str())
        } else {
            a.starts_with(v)
        }
    })
}

impl AdvancedFieldSelector {
    fn operators(&self) -> [(&'static str, &Option<Vec<String>>); 6] {
        [
            ("Equals", &self.equals),
            ("StartsWith", &self.starts_with),
            ("EndsWith", &self.ends_with),
            ("NotEquals", &self.not_equals),
            ("NotStartsWith", &self.not_starts_with),
            ("NotEndsWith", &self.not_ends_with),
        ]
    }

    /// Every operator present must hold: positive ones need some value to match, negative
    /// ones need no value to match.
    pub fn admits(&self, value: &str) -> bool {
        let any = |o: &Option<Vec<String>>, f: &dyn Fn(&str) -> bool| {
            o.as_ref().is_none_or(|vs| vs.iter().any(|x| f(x)))
        };
        let none = |o: &Option<Vec<String>>, f: &dyn Fn(&str) -> bool| {
            o.as_ref().is_none_or(|vs| !vs.iter().any(|x| f(x)))
        };
        any(&self.equals, &|x| value == x)
            && any(&self.starts_with, &|x| value.starts_with(x))
            && any(&self.ends_with, &|x| value.ends_with(x))
            && none(&self.not_equals, &|x| value == x)
            && none(&self.not_starts_with, &|x| value.starts_with(x))
            && none(&self.not_ends_with, &|x| value.ends_with(x))
    }
}

impl AdvancedEventSelector {
    pub fn matches(&self, ev: &EventFacts) -> bool {
        let type_sel = self
            .field_selectors
            .iter()
            .find(|f| f.field == "resources.type");
        self.field_selectors.iter().all(|f| {
            let scalar = |v: Option<&str>| v.is_some_and(|v| f.admits(v));
            match f.field.as_str() {
                "eventCategory" => scalar(Some(&ev.category)),
                "eventSource" => scalar(Some(&ev.source)),
                "eventName" => scalar(Some(&ev.name)),
                "eventType" => scalar(Some(&ev.event_type)),
                "readOnly" => scalar(ev.read_only.map(|b| if b { "true" } else { "false" })),
                "userIdentity.arn" => scalar(ev.user_arn.as_deref()),
                "sessionCredentialFromConsole" => {
                    scalar(Some(ev.console.as_deref().unwrap_or("false")))
                }
                "resources.type" => ev.resources.iter().any(|(t, _, _)| f.admits(t)),
                // resources.ARN applies to the resources of the selected type.
                "resources.ARN" => ev
                    .resources
                    .iter()
                    .any(|(t, a, _)| type_sel.is_none_or(|ts| ts.admits(t)) && f.admits(a)),
                _ => false,
            }
        })
    }
}

/// The advanced selectors equivalent to one basic selector (what AWS shows after converting).
pub fn basic_to_advanced(sel: &EventSelector) -> Vec<AdvancedEventSelector> {
    let rw = |s: &mut Vec<AdvancedFieldSelector>| match sel.read_write_type {
        ReadWriteType::All => {}
        ReadWriteType::ReadOnly => s.push(eq("readOnly", &["true"])),
        ReadWriteType::WriteOnly => s.push(eq("readOnly", &["false"])),
    };
    let mut out = vec![];
    if sel.include_management_events {
        {
            let cat = category::MANAGEMENT;
            let mut fs = vec![eq("eventCategory", &[cat])];
            rw(&mut fs);
            if !sel.exclude_management_event_sources.is_empty() {
                fs.push(AdvancedFieldSelector {
                    field: "eventSource".into(),
                    not_equals: Some(sel.exclude_management_event_sources.clone()),
                    ..Default::default()
                });
            }
            out.push(AdvancedEventSelector {
                name: Some(format!("{cat} events")),
                field_selectors: fs,
            });
        }
    }
    for d in &sel.data_resources {
        for v in &d.values {
            let mut fs = vec![eq("eventCategory", &[category::DATA])];
            fs.push(eq("resources.type", &[&d.resource_type]));
            rw(&mut fs);
            let all = matches!(
                v.as_str(),
                "arn:aws:s3" | "arn:aws:dynamodb" | "arn:aws:lambda"
            );
            if !all && d.resource_type != "AWS::S3::Object" {
                fs.push(eq("resources.ARN", &[v]));
            } else if !all && v != "arn:aws:s3:::" {
                fs.push(AdvancedFieldSelector {
                    field: "resources.ARN".into(),
                    starts_with: Some(vec![v.strip_suffix('*').unwrap_or(v).to_string()]),
                    ..Default::default()
                });
            }
            out.push(AdvancedEventSelector {
                name: None,
                field_selectors: fs,
            });
        }
    }
    out
}

fn eq(field: &str, values: &[&str]) -> AdvancedFieldSelector {
    AdvancedFieldSelector {
        field: field.into(),
        equals: Some(values.iter().map(|s| s.to_string()).collect()),
        ..Default::default()
    }
}

/// The region rules of a trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrailScope {
    pub home_region: String,
    pub multi_region: bool,
    pub include_global_service_events: bool,
}

impl TrailScope {
    /// True when an event that happened in `ev.region` belongs in this trail.
    /// Global service events (IAM, STS, …, recorded in us-east-1) reach a trail only when it
    /// includes them and either covers all regions or lives in us-east-1.
    pub fn admits(&self, ev: &EventFacts) -> bool {
        scope_admits(
            &self.home_region,
            self.multi_region,
            self.include_global_service_events,
            ev,
        )
    }
}

/// [`TrailScope::admits`] without building a `TrailScope`.
pub fn scope_admits(
    home_region: &str,
    multi_region: bool,
    include_global: bool,
    ev: &EventFacts,
) -> bool {
    if is_global_service(&ev.source) {
        return include_global && (multi_region || home_region == "us-east-1");
    }
    multi_region || ev.region == home_region
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3_get(bucket: &str, key: &str) -> EventFacts {
        EventFacts {
            category: "Data".into(),
            source: "s3.amazonaws.com".into(),
            name: "GetObject".into(),
            region: "us-east-1".into(),
            read_only: Some(true),
            event_type: "AwsApiCall".into(),
            resources: vec![
                (
                    "AWS::S3::Object".into(),
                    format!("arn:aws:s3:::{bucket}/{key}"),
                    false,
                ),
                (
                    "AWS::S3::Bucket".into(),
                    format!("arn:aws:s3:::{bucket}"),
                    false,
                ),
            ],
            ..Default::default()
        }
    }

    fn mgmt(source: &str, read_only: bool) -> EventFacts {
        EventFacts {
            category: "Management".into(),
            source: source.into(),
            name: "CreateTrail".into(),
            region: "us-west-2".into(),
            read_only: Some(read_only),
            event_type: "AwsApiCall".into(),
            ..Default::default()
        }
    }

    #[test]
    fn lake_integration_events_are_delivered_only_where_their_category_is_selected() {
        let forged = EventFacts {
            category: category::ACTIVITY_AUDIT_LOG.into(),
            source: String::new(),
            name: String::new(),
            region: "us-east-1".into(),
            event_type: "ActivityLog".into(),
            ..Default::default()
        };
        let basic = TrailSelectors::Basic(vec![EventSelector {
            read_write_type: ReadWriteType::All,
            include_management_events: true,
            ..Default::default()
        }]);
        assert!(!basic.matches(&forged), "never as a management event");
        let lake = TrailSelectors::Advanced(vec![AdvancedEventSelector {
            name: None,
            field_selectors: vec![eq("eventCategory", &[category::ACTIVITY_AUDIT_LOG])],
        }]);
        assert!(lake.matches(&forged));
        assert!(!lake.matches(&mgmt("cloudtrail.amazonaws.com", false)));
    }

    #[test]
    fn default_selector_takes_management_events_only() {
        let s = TrailSelectors::default();
        assert!(s.matches(&mgmt("cloudtrail.amazonaws.com", false)));
        assert!(!s.matches(&s3_get("b", "k")));
    }

    #[test]
    fn seed_s3_selector_with_star_selects_only_the_artifacts_bucket() {
        let s = TrailSelectors::Basic(vec![EventSelector {
            data_resources: vec![DataResource {
                resource_type: "AWS::S3::Object".into(),
                values: vec!["arn:aws:s3:::artifacts/*".into()],
            }],
            ..Default::default()
        }]);
        s.validate().unwrap();
        assert!(s.matches(&s3_get("artifacts", "pkg/a.tgz")));
        assert!(!s.matches(&s3_get("artifacts-other", "pkg/a.tgz")));
        assert!(!s.matches(&s3_get("logs", "x")));
    }

    #[test]
    fn all_buckets_value_and_prefix_value() {
        let all = DataResource {
            resource_type: "AWS::S3::Object".into(),
            values: vec!["arn:aws:s3".into()],
        };
        assert!(all.matches(&s3_get("any", "k")));
        let pre = DataResource {
            resource_type: "AWS::S3::Object".into(),
            values: vec!["arn:aws:s3:::b/logs/".into()],
        };
        assert!(pre.matches(&s3_get("b", "logs/1")));
        assert!(!pre.matches(&s3_get("b", "other/1")));
    }

    #[test]
    fn exclude_management_event_sources_drops_kms() {
        let s = EventSelector {
            exclude_management_event_sources: vec!["kms.amazonaws.com".into()],
            ..Default::default()
        };
        assert!(!s.matches(&mgmt("kms.amazonaws.com", true)));
        assert!(s.matches(&mgmt("s3.amazonaws.com", true)));
    }

    #[test]
    fn validation_limits_and_error_code() {
        let too_many = vec![EventSelector::default(); 6];
        let e = validate_basic(&too_many).unwrap_err();
        assert!(e.message.contains("at most 5"));
        assert_eq!(
            InvalidEventSelectors::CODE,
            "InvalidEventSelectorsException"
        );
        let bad_type = vec![EventSelector {
            data_resources: vec![DataResource {
                resource_type: "AWS::EC2::Instance".into(),
                values: vec!["arn:aws:ec2".into()],
            }],
            ..Default::default()
        }];
        assert!(validate_basic(&bad_type).is_err());
        let many_values = vec![EventSelector {
            data_resources: vec![DataResource {
                resource_type: "AWS::S3::Object".into(),
                values: (0..251).map(|i| format!("arn:aws:s3:::b{i}/")).collect(),
            }],
            ..Default::default()
        }];
        assert!(validate_basic(&many_values).is_err());
        let bad_exclude = vec![EventSelector {
            exclude_management_event_sources: vec!["s3.amazonaws.com".into()],
            ..Default::default()
        }];
        assert!(validate_basic(&bad_exclude).is_err());
    }

    #[test]
    fn advanced_requires_event_category_and_resources_type_for_data() {
        let no_cat = vec![AdvancedEventSelector {
            name: None,
            field_selectors: vec![eq("eventName", &["GetObject"])],
        }];
        assert!(validate_advanced(&no_cat).is_err());
        let data_no_type = vec![AdvancedEventSelector {
            name: None,
            field_selectors: vec![eq("eventCategory", &["Data"])],
        }];
        assert!(validate_advanced(&data_no_type).is_err());
        let unknown_field = vec![AdvancedEventSelector {
            name: None,
            field_selectors: vec![eq("eventCategory", &["Management"]), eq("bogus", &["x"])],
        }];
        assert!(validate_advanced(&unknown_field).is_err());
        let empty_op = vec![AdvancedEventSelector {
            name: None,
            field_selectors: vec![AdvancedFieldSelector {
                field: "eventCategory".into(),
                equals: Some(vec![]),
                ..Default::default()
            }],
        }];
        assert!(validate_advanced(&empty_op).is_err());
    }

    #[test]
    fn advanced_operators_combine_with_and() {
        let f = AdvancedFieldSelector {
            field: "eventName".into(),
            starts_with: Some(vec!["Get".into()]),
            not_ends_with: Some(vec!["Acl".into()]),
            ..Default::default()
        };
        assert!(f.admits("GetObject"));
        assert!(!f.admits("GetObjectAcl"));
        assert!(!f.admits("PutObject"));
    }

    #[test]
    fn advanced_resources_arn_scoped_to_selected_type() {
        let s = AdvancedEventSelector {
            name: None,
            field_selectors: vec![
                eq("eventCategory", &["Data"]),
                eq("resources.type", &["AWS::S3::Object"]),
                AdvancedFieldSelector {
                    field: "resources.ARN".into(),
                    starts_with: Some(vec!["arn:aws:s3:::artifacts/".into()]),
                    ..Default::default()
                },
            ],
        };
        assert!(s.matches(&s3_get("artifacts", "x")));
        assert!(!s.matches(&s3_get("other", "x")));
    }

    #[test]
    fn global_service_events_need_include_and_multi_region_or_us_east_1() {
        let iam = EventFacts {
            source: "iam.amazonaws.com".into(),
            region: "us-east-1".into(),
            ..mgmt("iam.amazonaws.com", false)
        };
        let scope = |multi, global, home: &str| TrailScope {
            home_region: home.into(),
            multi_region: multi,
            include_global_service_events: global,
        };
        assert!(scope(true, true, "eu-west-1").admits(&iam));
        assert!(!scope(true, false, "eu-west-1").admits(&iam));
        assert!(!scope(false, true, "eu-west-1").admits(&iam));
        assert!(scope(false, true, "us-east-1").admits(&iam));
        let west = mgmt("cloudtrail.amazonaws.com", true);
        assert!(scope(true, false, "us-east-1").admits(&west));
        assert!(!scope(false, false, "us-east-1").admits(&west));
        assert!(scope(false, false, "us-west-2").admits(&west));
    }
}
