//! The example records of spec §2.4–2.6 parse into the model and serialize back to the same
//! JSON, keys in the same order.

use cairn_record::EventRecord;
use serde_json::Value;

const GET_OBJECT: &str = r#"{
  "eventVersion": "1.11",
  "userIdentity": {"type": "IAMUser", "principalId": "AIDAEXAMPLEEXAMPLE01", "arn": "arn:aws:iam::111122223333:user/alice",
                   "accountId": "111122223333", "accessKeyId": "AKIAIOSFODNN7EXAMPLE", "userName": "alice"},
  "eventTime": "2025-03-04T10:15:30Z",
  "eventSource": "s3.amazonaws.com",
  "eventName": "GetObject",
  "awsRegion": "us-east-1",
  "sourceIPAddress": "203.0.113.10",
  "userAgent": "[aws-cli/2.18.5 md/arch#x86_64 command/s3.cp]",
  "requestParameters": {"bucketName": "example-bucket", "Host": "example-bucket.s3.us-east-1.amazonaws.com", "key": "reports/q1.csv"},
  "responseElements": null,
  "additionalEventData": {"SignatureVersion": "SigV4", "CipherSuite": "TLS_AES_128_GCM_SHA256", "bytesTransferredIn": 0,
                          "AuthenticationMethod": "AuthHeader", "x-amz-id-2": "aG9zdA==", "bytesTransferredOut": 28441},
  "requestID": "07D681123BD12AED",
  "eventID": "f2b287f3-0df1-4961-a2f4-c4bdfed47657",
  "readOnly": true,
  "resources": [
    {"type": "AWS::S3::Object", "ARN": "arn:aws:s3:::example-bucket/reports/q1.csv"},
    {"accountId": "111122223333", "type": "AWS::S3::Bucket", "ARN": "arn:aws:s3:::example-bucket"}
  ],
  "eventType": "AwsApiCall",
  "managementEvent": false,
  "recipientAccountId": "111122223333",
  "eventCategory": "Data",
  "tlsDetails": {"tlsVersion": "TLSv1.3", "cipherSuite": "TLS_AES_128_GCM_SHA256",
                 "clientProvidedHostHeader": "example-bucket.s3.us-east-1.amazonaws.com"}
}"#;

const PUT_ITEM: &str = r#"{
  "eventVersion": "1.11",
  "userIdentity": {"type": "AssumedRole", "principalId": "AROAEXAMPLEID:bob",
                   "arn": "arn:aws:sts::111122223333:assumed-role/users/bob", "accountId": "111122223333",
                   "accessKeyId": "ASIAEXAMPLEKEY", "sessionContext": {"sessionIssuer": {"type": "Role",
                   "principalId": "AROAEXAMPLEID", "arn": "arn:aws:iam::111122223333:role/users", "accountId": "111122223333",
                   "userName": "users"}, "attributes": {"creationDate": "2025-03-04T09:00:00Z", "mfaAuthenticated": "false"}}},
  "eventTime": "2025-03-04T10:15:30Z",
  "eventSource": "dynamodb.amazonaws.com",
  "eventName": "PutItem",
  "awsRegion": "us-west-2",
  "sourceIPAddress": "192.0.2.0",
  "userAgent": "aws-cli/1.46.3 Python/3.11.7 Linux/6.1 botocore/1.43.62",
  "requestParameters": {"tableName": "Music", "key": {"Artist": "No One You Know", "SongTitle": "Scared of My Shadow"},
                        "item": ["Artist", "SongTitle", "AlbumTitle"], "returnConsumedCapacity": "TOTAL"},
  "responseElements": null,
  "requestID": "4KBNVRGD25RG1KEO9UT4V3FQDJVV4KQNSO5AEMVJF66Q9ASUAAJG",
  "eventID": "a954451c-c2fc-4561-8aea-7a30ba1fdf52",
  "readOnly": false,
  "resources": [{"accountId": "111122223333", "type": "AWS::DynamoDB::Table", "ARN": "arn:aws:dynamodb:us-west-2:111122223333:table/Music"}],
  "eventType": "AwsApiCall",
  "apiVersion": "2012-08-10",
  "managementEvent": false,
  "recipientAccountId": "111122223333",
  "eventCategory": "Data"
}"#;

const STOP_LOGGING: &str = r#"{
  "eventVersion": "1.11",
  "userIdentity": {"type": "IAMUser", "principalId": "AIDAJDPLRKLG7UEXAMPLE", "arn": "arn:aws:iam::123456789012:user/Mary_Major",
                   "accountId": "123456789012", "accessKeyId": "AKIAIOSFODNN7EXAMPLE", "userName": "Mary_Major"},
  "eventTime": "2025-03-04T10:15:30Z",
  "eventSource": "cloudtrail.amazonaws.com",
  "eventName": "StopLogging",
  "awsRegion": "us-east-2",
  "sourceIPAddress": "203.0.113.64",
  "userAgent": "aws-cli/1.46.3 Python/3.11.7 Linux/6.1 botocore/1.43.62",
  "requestParameters": {"name": "arn:aws:cloudtrail:us-east-2:123456789012:trail/My-First-Trail"},
  "responseElements": null,
  "requestID": "ddf5140f-EXAMPLE",
  "eventID": "7116c6a1-EXAMPLE",
  "readOnly": false,
  "eventType": "AwsApiCall",
  "managementEvent": true,
  "recipientAccountId": "123456789012",
  "eventCategory": "Management"
}"#;

const UPDATE_TRAIL_ERROR: &str = r#"{"eventVersion":"1.11","userIdentity":{"type":"Root","principalId":"123456789012","arn":"arn:aws:iam::123456789012:root","accountId":"123456789012"},"eventTime":"2025-03-04T10:15:30Z","eventSource":"cloudtrail.amazonaws.com","eventName":"UpdateTrail","awsRegion":"us-east-1","sourceIPAddress":"127.0.0.1","errorCode":"TrailNotFoundException","errorMessage":"Unknown trail: myTrail2 for the user: 123456789012","requestParameters":{"name":"myTrail2"},"responseElements":null,"requestID":"r","eventID":"e","readOnly":false,"eventType":"AwsApiCall","managementEvent":true,"recipientAccountId":"123456789012","eventCategory":"Management","eventContext":{"x":1},"omitted":true}"#;

fn keys_in_order(v: &Value) -> Vec<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

fn round_trip(src: &str) -> EventRecord {
    let original: Value = serde_json::from_str(src).unwrap();
    let rec: EventRecord = serde_json::from_str(src).unwrap();
    let back: Value = serde_json::from_slice(&rec.to_json()).unwrap();
    assert_eq!(back, original, "content differs after round trip");
    assert_eq!(
        keys_in_order(&back),
        keys_in_order(&original),
        "key order differs"
    );
    rec
}

#[test]
fn s3_get_object_example_round_trips() {
    let r = round_trip(GET_OBJECT);
    assert_eq!(r.event_version, "1.11");
    assert_eq!(r.read_only, Some(true));
    assert_eq!(
        r.resources.as_ref().unwrap()[0].arn.as_deref(),
        Some("arn:aws:s3:::example-bucket/reports/q1.csv")
    );
    assert_eq!(r.tls_details.as_ref().unwrap().tls_version, "TLSv1.3");
}

#[test]
fn dynamodb_put_item_example_round_trips() {
    let r = round_trip(PUT_ITEM);
    let sc = r.user_identity.unwrap().session_context.unwrap();
    // mfaAuthenticated is a string in CloudTrail, not a boolean.
    assert_eq!(
        sc.attributes.unwrap()["mfaAuthenticated"],
        Value::String("false".into())
    );
    assert_eq!(r.api_version.as_deref(), Some("2012-08-10"));
}

#[test]
fn management_event_example_round_trips() {
    let r = round_trip(STOP_LOGGING);
    assert!(r.is_management());
    assert!(r.response_elements.is_none());
    // responseElements is emitted as null, not omitted.
    assert!(String::from_utf8(r.to_json())
        .unwrap()
        .contains("\"responseElements\":null"));
}

#[test]
fn error_fields_and_unknown_newer_fields_survive() {
    let r = round_trip(UPDATE_TRAIL_ERROR);
    assert_eq!(r.error_code.as_deref(), Some("TrailNotFoundException"));
    assert!(r.extra.contains_key("eventContext"));
}

#[test]
fn builders_emit_spec_shapes() {
    use cairn_record::builder;
    use chrono::TimeZone;
    let t = chrono::Utc
        .with_ymd_and_hms(2025, 3, 4, 10, 15, 30)
        .unwrap();
    let id = builder::iam_user_identity("111122223333", "alice", "AIDAEXAMPLE", "AKIAEXAMPLE");
    let r = builder::s3_object(
        "PutObject",
        "us-east-1",
        t,
        id.clone(),
        "111122223333",
        "b",
        "k",
        "b.s3.amazonaws.com",
    );
    let v: Value = serde_json::from_slice(&r.to_json()).unwrap();
    assert_eq!(v["eventTime"], "2025-03-04T10:15:30Z");
    assert_eq!(v["readOnly"], false);
    assert_eq!(v["managementEvent"], false);
    assert_eq!(v["eventCategory"], "Data");
    assert_eq!(v["resources"][0]["ARN"], "arn:aws:s3:::b/k");
    let l = builder::s3_list(
        "us-east-1",
        t,
        id.clone(),
        "111122223333",
        "b",
        "",
        true,
        "h",
    );
    let v: Value = serde_json::from_slice(&l.to_json()).unwrap();
    assert_eq!(v["eventName"], "ListObjects");
    assert_eq!(v["requestParameters"]["list-type"], "2");
    assert_eq!(v["resources"][0]["ARNPrefix"], "arn:aws:s3:::b/");
    // Global service events are recorded in us-east-1 whatever region was called.
    let g = builder::management(
        "iam.amazonaws.com",
        "CreateUser",
        "eu-west-1",
        t,
        id.clone(),
        false,
    );
    assert_eq!(g.aws_region, "us-east-1");
    let ingested = t + chrono::Duration::hours(1);
    let audit = builder::audit_event(
        &serde_json::json!({"version":"1","userIdentity":{"type":"App","principalId":"p"},"eventSource":"iam.amazonaws.com","eventName":"CreateUser","eventTime":"2025-03-04T10:15:30","UID":"u1","recipientAccountId":"111122223333"}),
        "us-east-1", "111122223333", "arn:aws:cloudtrail:us-east-1:111122223333:channel/c", ingested,
        id.clone(), Some("10.0.0.1".into()), None).unwrap();
    assert_eq!(audit.event_category, "ActivityAuditLog");
    assert_eq!(audit.event_type, "ActivityLog");
    assert_eq!(
        audit.event_time, ingested,
        "cairn's ingestion time, not the caller's claim"
    );
    let v: Value = serde_json::from_slice(&audit.to_json()).unwrap();
    // The application's claims stay inside eventData; the top level is cairn's.
    assert!(v.get("eventSource").is_none() && v.get("eventName").is_none());
    assert_eq!(v["eventData"]["eventSource"], "iam.amazonaws.com");
    assert_eq!(v["userIdentity"]["userName"], "alice");
    assert_eq!(
        v["metadata"]["channelARN"],
        "arn:aws:cloudtrail:us-east-1:111122223333:channel/c"
    );
    let back: cairn_record::EventRecord = serde_json::from_value(v).unwrap();
    assert_eq!(back, audit, "round trip");
}
