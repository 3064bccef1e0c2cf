//! Realistic synthetic events for the load generator: a mix of management events (some from
//! global services), S3 object data events and DynamoDB data events, 1–2 KB each.

use cairn_record::{builder, EventRecord, UserIdentity};
use chrono::{DateTime, Utc};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

pub const REGIONS: &[&str] = &["us-east-1", "us-east-2", "us-west-2", "eu-west-1"];

pub struct Synth {
    rng: SmallRng,
    account: String,
    regions: usize,
}

impl Synth {
    /// Events spread over the first `regions` of [`REGIONS`].
    pub fn new(account: &str, seed: u64, regions: usize) -> Synth {
        Synth {
            rng: SmallRng::seed_from_u64(seed),
            account: account.into(),
            regions: regions.clamp(1, REGIONS.len()),
        }
    }

    fn identity(&mut self, t: DateTime<Utc>) -> UserIdentity {
        let a = self.account.clone();
        let n = self.rng.gen_range(0..50);
        if self.rng.gen_bool(0.5) {
            builder::iam_user_identity(
                &a,
                &format!("deploy-bot-{n}"),
                &format!("AIDA{:016X}", n * 7919),
                &format!("AKIA{:016X}", n * 104729),
            )
        } else {
            builder::assumed_role_identity(
                &a,
                "ci-runner",
                "AROAEXAMPLEROLEID0001",
                &format!("session-{n}"),
                &format!("ASIA{:016X}", n * 15485863),
                t - chrono::Duration::minutes(20),
            )
        }
    }

    fn decorate(&mut self, r: &mut EventRecord, s3: bool) {
        let ip = format!(
            "203.0.{}.{}",
            self.rng.gen_range(0..255),
            self.rng.gen_range(1..255)
        );
        r.source_ip_address = Some(ip);
        let ua = "aws-cli/1.46.3 md/Botocore#1.43.62 ua/2.1 os/linux#6.1.0 md/arch#x86_64 lang/python#3.11.7 md/pyimpl#CPython cfg/retry-mode#legacy botocore/1.43.62";
        r.user_agent = Some(if s3 {
            format!("[{ua}]")
        } else {
            ua.to_string()
        });
        r.tls_details = Some(cairn_record::record::TlsDetails {
            tls_version: "TLSv1.3".into(),
            cipher_suite: "TLS_AES_128_GCM_SHA256".into(),
            client_provided_host_header: format!(
                "{}.amazonaws.com",
                r.event_source.trim_end_matches(".amazonaws.com")
            ),
        });
    }

    /// One event at time `t`.
    pub fn event(&mut self, t: DateTime<Utc>) -> EventRecord {
        let region = REGIONS[self.rng.gen_range(0..self.regions)];
        let id = self.identity(t);
        let account = self.account.clone();
        let roll = self.rng.gen_range(0..100);
        let mut r = if roll < 40 {
            let (src, name, ro) = match self.rng.gen_range(0..8) {
                0 => ("ec2.amazonaws.com", "DescribeInstances", true),
                1 => ("ec2.amazonaws.com", "RunInstances", false),
                2 => ("iam.amazonaws.com", "GetUser", true),
                3 => ("sts.amazonaws.com", "AssumeRole", false),
                4 => ("kms.amazonaws.com", "Decrypt", true),
                5 => ("cloudtrail.amazonaws.com", "LookupEvents", true),
                6 => (
                    "lambda.amazonaws.com",
                    "UpdateFunctionCode20150331v2",
                    false,
                ),
                _ => ("s3.amazonaws.com", "PutBucketPolicy", false),
            };
            let mut r = builder::management(src, name, region, t, id, ro);
            r.request_parameters = Some(json!({
                "instancesSet": {"items": [{"instanceId": format!("i-{:017x}", self.rng.gen::<u64>() >> 4)}]},
                "filterSet": {"items": [{"name": "tag:team", "valueSet": {"items": [{"value": "platform"}]}}]},
                "maxResults": 1000
            }));
            if !ro {
                r.response_elements =
                    Some(json!({"requestId": uuid_like(&mut self.rng), "_return": true}));
            }
            self.decorate(&mut r, false);
            r
        } else if roll < 75 {
            let name = [
                "GetObject",
                "PutObject",
                "GetObject",
                "DeleteObject",
                "HeadObject",
            ][self.rng.gen_range(0..5)];
            let bucket =
                ["artifacts", "acme-artifacts-prod", "build-cache"][self.rng.gen_range(0..3)];
            let key = format!(
                "releases/v{}.{}.{}/acme-service-linux-amd64-{:08x}.tar.gz",
                self.rng.gen_range(1..9),
                self.rng.gen_range(0..40),
                self.rng.gen_range(0..200),
                self.rng.gen::<u32>()
            );
            let host = format!("{bucket}.s3.{region}.amazonaws.com");
            let mut r = builder::s3_object(name, region, t, id, &account, bucket, &key, &host);
            let out = if name == "GetObject" {
                self.rng.gen_range(1000..50_000_000)
            } else {
                0
            };
            let inn = if name == "PutObject" {
                self.rng.gen_range(1000..50_000_000)
            } else {
                0
            };
            r.additional_event_data = Some(json!({
                "SignatureVersion": "SigV4", "CipherSuite": "TLS_AES_128_GCM_SHA256",
                "bytesTransferredIn": inn, "AuthenticationMethod": "AuthHeader",
                "x-amz-id-2": format!("{:032x}{:032x}", self.rng.gen::<u128>(), self.rng.gen::<u128>()),
                "bytesTransferredOut": out
            }));
            if name == "PutObject" {
                r.response_elements = Some(
                    json!({"x-amz-server-side-encryption": "AES256", "x-amz-version-id": uuid_like(&mut self.rng)}),
                );
            }
            self.decorate(&mut r, true);
            r
        } else {
            let (name, params) = match self.rng.gen_range(0..4) {
                0 => (
                    "PutItem",
                    json!({"tableName": "orders", "key": {"pk": format!("order#{}", self.rng.gen::<u32>()), "sk": "v0"}, "item": ["pk", "sk", "status", "total", "customer", "lines"], "conditionExpression": "attribute_not_exists(pk)", "returnConsumedCapacity": "TOTAL"}),
                ),
                1 => (
                    "GetItem",
                    json!({"tableName": "orders", "key": {"pk": format!("order#{}", self.rng.gen::<u32>()), "sk": "v0"}, "consistentRead": true, "projectionExpression": "#s, total", "expressionAttributeNames": {"#s": "status"}}),
                ),
                2 => (
                    "Query",
                    json!({"tableName": "sessions", "indexName": "by-user", "keyConditionExpression": "userId = :u", "limit": 25, "scanIndexForward": false, "select": "ALL_ATTRIBUTES"}),
                ),
                _ => (
                    "DeleteItem",
                    json!({"tableName": "sessions", "key": {"sessionId": uuid_like(&mut self.rng)}, "returnValues": "NONE"}),
                ),
            };
            let table = params["tableName"].as_str().unwrap_or("orders").to_string();
            let mut r = builder::dynamodb(name, region, t, id, &account, &table, params);
            self.decorate(&mut r, false);
            r
        };
        r.request_id = Some(uuid_like(&mut self.rng));
        // As cairn mints them: the event's time, then random bits (from the seeded generator).
        r.event_id = uuid::Builder::from_unix_timestamp_millis(
            r.event_time.timestamp().max(0) as u64 * 1000,
            &self.rng.gen(),
        )
        .into_uuid()
        .to_string();
        r
    }
}

fn uuid_like(rng: &mut SmallRng) -> String {
    let v: u128 = rng.gen();
    let h = format!("{v:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}
