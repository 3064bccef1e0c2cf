//! Builders for the record shapes cairn produces: management events, S3 and DynamoDB data
//! events, and events sent by applications through PutAuditEvents.

use crate::arn::Arn;
use crate::record::{category, EventRecord, Resource, UserIdentity, EVENT_VERSION};
use crate::time::whole_seconds;
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

/// Services whose events are recorded in us-east-1 ("global service events").
pub const GLOBAL_SERVICE_SOURCES: &[&str] = &[
    "iam.amazonaws.com",
    "sts.amazonaws.com",
    "cloudfront.amazonaws.com",
    "route53.amazonaws.com",
];

/// True when `event_source` is a global service (recorded in us-east-1).
pub fn is_global_service(event_source: &str) -> bool {
    GLOBAL_SERVICE_SOURCES.contains(&event_source)
}

/// A random (version 4) UUID from the thread's userspace CSPRNG: no system call per id.
pub fn fast_uuid() -> String {
    uuid::Builder::from_random_bytes(rand::random())
        .into_uuid()
        .to_string()
}

/// An event's ID: a UUID with 74 random bits that carries `time`'s whole second in its first
/// 48 (RFC 9562 version 7). The LookupEvents index files an ID under its second, so IDs
/// minted as events happen go at the end of the index instead of at random places in it.
/// The second is the record's own `eventTime`, so the ID reveals nothing the record does not.
pub fn event_uuid(time: DateTime<Utc>) -> String {
    let ms = time.timestamp().max(0) as u64 * 1000;
    uuid::Builder::from_unix_timestamp_millis(ms, &rand::random())
        .into_uuid()
        .to_string()
}

/// The second an event ID minted by [`event_uuid`] carries (`None` for other IDs).
pub fn event_uuid_second(id: &str) -> Option<i64> {
    let u = uuid::Uuid::try_parse(id).ok()?;
    if u.get_version_num() != 7 {
        return None;
    }
    let b = u.as_bytes();
    let ms = u64::from_be_bytes([0, 0, b[0], b[1], b[2], b[3], b[4], b[5]]);
    Some((ms / 1000) as i64)
}

/// A new record with every required field set and the rest empty.
pub fn base(
    event_source: &str,
    event_name: &str,
    region: &str,
    time: DateTime<Utc>,
    category_name: &str,
) -> EventRecord {
    let region = if is_global_service(event_source) {
        "us-east-1"
    } else {
        region
    };
    EventRecord {
        event_version: EVENT_VERSION.into(),
        user_identity: None,
        event_time: whole_seconds(time),
        event_source: event_source.into(),
        event_name: event_name.into(),
        aws_region: region.into(),
        source_ip_address: None,
        user_agent: None,
        error_code: None,
        error_message: None,
        request_parameters: None,
        response_elements: None,
        additional_event_data: None,
        request_id: Some(fast_uuid()),
        event_id: event_uuid(time),
        read_only: None,
        resources: None,
        event_type: "AwsApiCall".into(),
        api_version: None,
        management_event: None,
        recipient_account_id: None,
        service_event_details: None,
        shared_event_id: None,
        vpc_endpoint_id: None,
        event_category: category_name.into(),
        addendum: None,
        edge_device_details: None,
        tls_details: None,
        session_credential_from_console: None,
        insight_details: None,
        extra: Map::new(),
    }
}

/// A management event (`AwsApiCall`, `managementEvent: true`).
pub fn management(
    event_source: &str,
    event_name: &str,
    region: &str,
    time: DateTime<Utc>,
    identity: UserIdentity,
    read_only: bool,
) -> EventRecord {
    let mut r = base(event_source, event_name, region, time, category::MANAGEMENT);
    r.recipient_account_id = identity.account_id.clone();
    r.user_identity = Some(identity);
    r.read_only = Some(read_only);
    r.management_event = Some(true);
    r
}

/// Whether an S3 object-level call reads or writes.
pub fn s3_read_only(event_name: &str) -> bool {
    matches!(
        event_name,
        "GetObject"
            | "HeadObject"
            | "GetObjectAcl"
            | "GetObjectTagging"
            | "GetObjectAttributes"
            | "ListObjects"
            | "ListObjectVersions"
            | "ListParts"
            | "HeadBucket"
            | "GetObjectRetention"
            | "GetObjectLegalHold"
    )
}

/// An S3 data event for an object-level call (`GetObject`, `PutObject`, `DeleteObject`, …).
/// `key` is `None` for bucket-scoped data events (`ListObjects` uses [`s3_list`]).
#[allow(clippy::too_many_arguments)]
pub fn s3_object(
    event_name: &str,
    region: &str,
    time: DateTime<Utc>,
    identity: UserIdentity,
    bucket_owner: &str,
    bucket: &str,
    key: &str,
    host: &str,
) -> EventRecord {
    let mut r = base("s3.amazonaws.com", event_name, region, time, category::DATA);
    r.recipient_account_id = Some(bucket_owner.to_string());
    r.user_identity = Some(identity);
    r.read_only = Some(s3_read_only(event_name));
    r.management_event = Some(false);
    r.request_parameters = Some(json!({"bucketName": bucket, "Host": host, "key": key}));
    r.resources = Some(vec![
        Resource {
            account_id: None,
            resource_type: "AWS::S3::Object".into(),
            arn: Some(Arn::s3_object(bucket, key).to_string()),
            arn_prefix: None,
        },
        Resource {
            account_id: Some(bucket_owner.into()),
            resource_type: "AWS::S3::Bucket".into(),
            arn: Some(Arn::s3_bucket(bucket).to_string()),
            arn_prefix: None,
        },
    ]);
    r
}

/// A `ListObjects` data event (V2 calls are logged with `"list-type": "2"`).
#[allow(clippy::too_many_arguments)]
pub fn s3_list(
    region: &str,
    time: DateTime<Utc>,
    identity: UserIdentity,
    bucket_owner: &str,
    bucket: &str,
    prefix: &str,
    v2: bool,
    host: &str,
) -> EventRecord {
    let mut r = base(
        "s3.amazonaws.com",
        "ListObjects",
        region,
        time,
        category::DATA,
    );
    r.recipient_account_id = Some(bucket_owner.to_string());
    r.user_identity = Some(identity);
    r.read_only = Some(true);
    r.management_event = Some(false);
    let mut params = Map::new();
    if v2 {
        params.insert("list-type".into(), json!("2"));
    }
    params.insert("bucketName".into(), json!(bucket));
    params.insert("prefix".into(), json!(prefix));
    params.insert("Host".into(), json!(host));
    r.request_parameters = Some(Value::Object(params));
    r.resources = Some(vec![
        Resource {
            account_id: None,
            resource_type: "AWS::S3::Object".into(),
            arn: None,
            arn_prefix: Some(format!("{}/{prefix}", Arn::s3_bucket(bucket))),
        },
        Resource {
            account_id: Some(bucket_owner.into()),
            resource_type: "AWS::S3::Bucket".into(),
            arn: Some(Arn::s3_bucket(bucket).to_string()),
            arn_prefix: None,
        },
    ]);
    r
}

/// Whether a DynamoDB data-plane call reads.
pub fn dynamodb_read_only(event_name: &str) -> bool {
    matches!(
        event_name,
        "GetItem"
            | "BatchGetItem"
            | "Query"
            | "Scan"
            | "TransactGetItems"
            | "GetRecords"
            | "GetShardIterator"
    )
}

/// A DynamoDB data event. `request_parameters` must already be redacted (key values and
/// attribute *names* only, never item values — spec §2.5).
pub fn dynamodb(
    event_name: &str,
    region: &str,
    time: DateTime<Utc>,
    identity: UserIdentity,
    account: &str,
    table: &str,
    request_parameters: Value,
) -> EventRecord {
    let mut r = base(
        "dynamodb.amazonaws.com",
        event_name,
        region,
        time,
        category::DATA,
    );
    r.recipient_account_id = Some(account.into());
    r.user_identity = Some(identity);
    r.read_only = Some(dynamodb_read_only(event_name));
    r.management_event = Some(false);
    r.api_version = Some("2012-08-10".into());
    r.request_parameters = Some(request_parameters);
    r.resources = Some(vec![Resource {
        account_id: Some(account.into()),
        resource_type: "AWS::DynamoDB::Table".into(),
        arn: Some(Arn::dynamodb_table(region, account, table).to_string()),
        arn_prefix: None,
    }]);
    r
}

/// The stored form of one PutAuditEvents entry (CloudTrail Lake integration schema): the
/// caller's `eventData` kept whole under `eventData`, wrapped with `eventCategory:
/// ActivityAuditLog`, `eventType: ActivityLog` and `metadata {ingestionTime, channelARN}`.
///
/// Everything at the top level is written by cairn, not taken from the event: `userIdentity`
/// is the verified caller of PutAuditEvents, `eventTime` the ingestion time, the source IP
/// and user agent those of the request; there is no top-level `eventSource` or `eventName`.
/// So an application's event claiming `eventSource: iam.amazonaws.com` can never be read
/// as an AWS event, and a reader always sees who injected it and through which channel.
#[allow(clippy::too_many_arguments)]
pub fn audit_event(
    event_data: &Value,
    region: &str,
    account: &str,
    channel_arn: &str,
    ingestion_time: DateTime<Utc>,
    caller: UserIdentity,
    source_ip: Option<String>,
    user_agent: Option<String>,
) -> Option<EventRecord> {
    let obj = event_data.as_object()?;
    for required in ["eventSource", "eventName", "userIdentity"] {
        obj.get(required)?;
    }
    let mut r = base("", "", region, ingestion_time, category::ACTIVITY_AUDIT_LOG);
    r.event_type = "ActivityLog".into();
    r.aws_region = region.into();
    r.recipient_account_id = Some(account.into());
    r.user_identity = Some(caller);
    r.source_ip_address = source_ip;
    r.user_agent = user_agent;
    r.extra.insert("eventData".into(), event_data.clone());
    r.extra.insert(
        "metadata".into(),
        json!({"ingestionTime": crate::time::iso(ingestion_time), "channelARN": channel_arn}),
    );
    Some(r)
}

/// `Root` identity of an account.
pub fn root_identity(account: &str, access_key_id: Option<&str>) -> UserIdentity {
    UserIdentity {
        identity_type: "Root".into(),
        principal_id: Some(account.into()),
        arn: Some(format!("arn:aws:iam::{account}:root")),
        account_id: Some(account.into()),
        access_key_id: access_key_id.map(Into::into),
        ..Default::default()
    }
}

/// `IAMUser` identity.
pub fn iam_user_identity(
    account: &str,
    user: &str,
    principal_id: &str,
    access_key_id: &str,
) -> UserIdentity {
    UserIdentity {
        identity_type: "IAMUser".into(),
        principal_id: Some(principal_id.into()),
        arn: Some(format!("arn:aws:iam::{account}:user/{user}")),
        account_id: Some(account.into()),
        access_key_id: Some(access_key_id.into()),
        user_name: Some(user.into()),
        ..Default::default()
    }
}

/// `AssumedRole` identity with its `sessionContext`.
pub fn assumed_role_identity(
    account: &str,
    role: &str,
    role_id: &str,
    session: &str,
    access_key_id: &str,
    created: DateTime<Utc>,
) -> UserIdentity {
    UserIdentity {
        identity_type: "AssumedRole".into(),
        principal_id: Some(format!("{role_id}:{session}")),
        arn: Some(format!(
            "arn:aws:sts::{account}:assumed-role/{role}/{session}"
        )),
        account_id: Some(account.into()),
        access_key_id: Some(access_key_id.into()),
        session_context: Some(crate::record::SessionContext {
            session_issuer: Some(json!({
                "type": "Role", "principalId": role_id,
                "arn": format!("arn:aws:iam::{account}:role/{role}"),
                "accountId": account, "userName": role
            })),
            web_id_federation_data: Some(json!({})),
            attributes: Some(json!({
                "creationDate": crate::time::iso(created),
                "mfaAuthenticated": "false"
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn event_ids_carry_their_second_and_differ() {
        let t = Utc.timestamp_millis_opt(1_764_633_600_123).unwrap();
        let a = event_uuid(t);
        let b = event_uuid(t);
        assert_ne!(a, b);
        let u = uuid::Uuid::try_parse(&a).unwrap();
        assert_eq!(u.get_version_num(), 7);
        assert_eq!(u.get_variant(), uuid::Variant::RFC4122);
        assert_eq!(event_uuid_second(&a), Some(1_764_633_600));
        // Only the second, as the record has it: the milliseconds are not in the ID.
        assert_eq!(
            &u.as_bytes()[..6],
            &(1_764_633_600_000u64.to_be_bytes()[2..])
        );
        // Other IDs carry no second.
        assert_eq!(event_uuid_second(&fast_uuid()), None);
        assert_eq!(event_uuid_second("not-a-uuid"), None);
        // Times before 1970 are filed at 0, never a panic.
        let old = Utc.timestamp_opt(-5, 0).unwrap();
        assert_eq!(event_uuid_second(&event_uuid(old)), Some(0));
    }
}
