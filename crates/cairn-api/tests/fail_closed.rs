//! Fail closed, for every operation that changes anything: with the journal failing, each
//! mutating operation of every registered service gets 503 and leaves every piece of state
//! as it was (objects and their versions and attributes, bucket and account metadata, the
//! identity directory, trails, multipart part files); once the journal recovers, the same
//! requests succeed. The cases are checked against the services' operation lists: a new
//! mutating operation without a case here fails the test.

mod common;
mod wire;

use cairn_api::service::SERVICES;
use cairn_api::Api;
use cairn_iam::identity::Holder;
use cairn_journal::FaultInjector;
use cairn_record::SystemClock;
use cairn_store::{ObjectStore, PutOptions, Versioning};
use chrono::Utc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use wire::Signer;

/// Fails every fdatasync while armed.
struct Switch(Arc<AtomicBool>);
impl FaultInjector for Switch {
    fn before_sync(&self) -> std::io::Result<()> {
        if self.0.load(Ordering::SeqCst) {
            return Err(std::io::Error::other("injected EIO"));
        }
        Ok(())
    }
}

/// One request: the service it is signed for, and who signs it.
struct Case {
    service: &'static str,
    op: &'static str,
    method: &'static str,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: String,
    /// Signed by alice (an IAM user) rather than the account root.
    as_alice: bool,
}

fn case(service: &'static str, op: &'static str, method: &'static str, path: &str) -> Case {
    Case {
        service,
        op,
        method,
        path: path.into(),
        query: String::new(),
        headers: Vec::new(),
        body: String::new(),
        as_alice: false,
    }
}

impl Case {
    fn query(mut self, q: &str) -> Case {
        self.query = q.into();
        self
    }
    fn header(mut self, k: &str, v: &str) -> Case {
        self.headers.push((k.into(), v.into()));
        self
    }
    fn body(mut self, b: impl Into<String>) -> Case {
        self.body = b.into();
        self
    }
    fn alice(mut self) -> Case {
        self.as_alice = true;
        self
    }
}

fn trail(op: &'static str, body: impl Into<String>) -> Case {
    case("cloudtrail", op, "POST", "/")
        .header(
            "x-amz-target",
            &format!("com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.{op}"),
        )
        .header("content-type", "application/x-amz-json-1.1")
        .body(body)
}

fn iam(op: &'static str, params: &str) -> Case {
    case("iam", op, "POST", "/")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("Action={op}&Version=2010-05-08&{params}"))
}

fn kms(op: &'static str, body: impl Into<String>) -> Case {
    case("kms", op, "POST", "/")
        .header("x-amz-target", &format!("TrentService.{op}"))
        .header("content-type", "application/x-amz-json-1.1")
        .body(body)
}

fn logs(op: &'static str, body: impl Into<String>) -> Case {
    case("logs", op, "POST", "/")
        .header("x-amz-target", &format!("Logs_20140328.{op}"))
        .header("content-type", "application/x-amz-json-1.1")
        .body(body)
}

fn ddb(op: &'static str, body: impl Into<String>) -> Case {
    case("dynamodb", op, "POST", "/")
        .header("x-amz-target", &format!("DynamoDB_20120810.{op}"))
        .header("content-type", "application/x-amz-json-1.0")
        .body(body)
}

fn s3(op: &'static str, method: &'static str, path: &str, query: &str) -> Case {
    case("s3", op, method, path).query(query)
}

type Calls = common::UpstreamCalls;

/// Everything a request could change, as text.
fn state(api: &Api, multipart: &std::path::Path, upstream: &Calls) -> String {
    let mut out = Vec::new();
    // What the DynamoDB upstream was asked to do (its schema reads aside).
    for (op, body) in upstream.lock().unwrap().iter() {
        if op != "DescribeTable" {
            out.push(format!("dynamodb upstream {op} {body}"));
        }
    }
    let store = &api.store;
    for (b, _) in store.list_buckets().unwrap() {
        out.push(format!("bucket {b} {:?}", store.versioning(&b).unwrap()));
        let (versions, _) = store.list_versions(&b, "", None, 10_000).unwrap();
        for v in versions {
            let i = &v.info;
            out.push(format!(
                "  {} {:?} latest={} marker={} {} {} {:?} {:?}",
                i.key,
                i.version_id,
                v.is_latest,
                v.delete_marker,
                i.etag,
                i.size,
                i.system,
                i.metadata
            ));
        }
    }
    for (k, v) in api.meta.scan::<serde_json::Value>("").unwrap() {
        out.push(format!("meta {k} = {v}"));
    }
    for u in api.iam.list_users() {
        let keys: Vec<String> = api
            .iam
            .list_access_keys(&u.name)
            .unwrap()
            .iter()
            .map(|k| format!("{}:{}", k.id, k.status.as_str()))
            .collect();
        let policies = api.iam.list_policies(Holder::User, &u.name).unwrap();
        out.push(format!(
            "user {} {} {keys:?} {policies:?}",
            u.name, u.user_id
        ));
    }
    for r in api.iam.list_roles() {
        let policies = api.iam.list_policies(Holder::Role, &r.name).unwrap();
        out.push(format!("role {} {} {policies:?}", r.name, r.role_id));
    }
    for t in api.engine.trails() {
        out.push(format!("trail {t:?}"));
    }
    for k in api.kms.keys().unwrap() {
        out.push(format!("kms key {k:?}"));
        for g in api.kms.grants(&k.key_id).unwrap().iter() {
            out.push(format!("kms grant {g:?}"));
        }
    }
    for a in api.kms.aliases("us-east-1").unwrap() {
        out.push(format!("kms alias {a:?}"));
    }
    for (k, g) in api
        .meta
        .scan::<cairn_api::logs::LogGroup>("logs/group/")
        .unwrap()
    {
        let ring = cairn_logs::KeyRing::default_only();
        api.logs
            .scan(&g.store_key(), None, None, None, &ring, |e| {
                out.push(format!(
                    "log event {k} {} {} {}",
                    e.stream, e.timestamp, e.message
                ));
                true
            })
            .unwrap();
    }
    let mut files = Vec::new();
    for e in walkdir(multipart) {
        files.push(e);
    }
    files.sort();
    out.push(format!("parts {files:?}"));
    out.join("\n")
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn walkdir(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            out.push(p.display().to_string());
            if p.is_dir() {
                out.extend(walkdir(&p));
            }
        }
    }
    out
}

/// `…<Tag>value</Tag>…` of an XML answer.
fn xml_field(body: &str, tag: &str) -> String {
    body.split(&format!("<{tag}>"))
        .nth(1)
        .and_then(|x| x.split(&format!("</{tag}>")).next())
        .unwrap_or_else(|| panic!("no <{tag}> in {body}"))
        .to_string()
}

#[test]
fn every_mutating_operation_of_every_service_fails_closed() {
    let fail = Arc::new(AtomicBool::new(false));
    let (ddb_endpoint, upstream) = common::fake_dynamodb();
    let bed = common::testbed(
        Arc::new(SystemClock),
        Some(Arc::new(Switch(fail.clone()))),
        |o| {
            o.dynamodb = Some(common::dynamodb_target(&ddb_endpoint));
            // Watched, with no reserve until the reserve phase arms one.
            o.disk_paths = vec![o.multipart_dir.clone()];
            o.disk_reserve = cairn_api::disk::Reserve::Bytes(0);
        },
    );
    let api = bed.api.clone();
    let multipart = api.opts.multipart_dir.clone();
    let (rt, server, addr) = common::serve(&api);
    let root = Signer {
        key: &bed.key,
        secret: &bed.secret,
    };
    let ok = |r: (u16, String)| {
        assert!((200..300).contains(&r.0), "{}: {}", r.0, r.1);
        r.1
    };
    let now = Utc::now();

    // --- The world every case is valid against. ---
    let store = bed.store.clone();
    for b in ["logs", "data", "plain", "lockb", "empty"] {
        store.create_bucket(b).unwrap();
    }
    store.set_versioning("data", Versioning::Enabled).unwrap();
    store.set_versioning("lockb", Versioning::Enabled).unwrap();
    let put = |b: &str, k: &str, body: &[u8], system: &[(&str, &str)]| {
        let mut o = PutOptions::default();
        for (a, v) in system {
            o.system.insert(a.to_string(), v.to_string());
        }
        store.put(b, k, body, &o).unwrap();
    };
    put("data", "kept", b"original", &[]);
    put("data", "src", b"source", &[]);
    put("data", "tagged", b"t", &[("tagging", "a=b")]);
    put("data", "archived", b"cold", &[("storage-class", "GLACIER")]);
    put("lockb", "locked-obj", b"l", &[]);
    let meta = &api.meta;
    let doc = |s: &str| s.to_string();
    meta.put(
        "bucket-config/object-lock/lockb",
        &doc("<ObjectLockConfiguration><ObjectLockEnabled>Enabled</ObjectLockEnabled></ObjectLockConfiguration>"),
    )
    .unwrap();
    meta.put(
        "bucket-policy/data",
        &doc(&format!(r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{}:root"}},"Action":"s3:GetObject","Resource":"arn:aws:s3:::data/*"}}]}}"#, common::ACCOUNT)),
    )
    .unwrap();
    for (param, text) in [
        ("publicAccessBlock", "<PublicAccessBlockConfiguration><IgnorePublicAcls>true</IgnorePublicAcls></PublicAccessBlockConfiguration>"),
        ("tagging", "<Tagging><TagSet><Tag><Key>x</Key><Value>y</Value></Tag></TagSet></Tagging>"),
        ("lifecycle", "<LifecycleConfiguration><Rule><ID>r</ID><Status>Enabled</Status><Expiration><Days>3</Days></Expiration></Rule></LifecycleConfiguration>"),
        ("encryption", "<ServerSideEncryptionConfiguration><Rule><ApplyServerSideEncryptionByDefault><SSEAlgorithm>AES256</SSEAlgorithm></ApplyServerSideEncryptionByDefault></Rule></ServerSideEncryptionConfiguration>"),
    ] {
        meta.put(&format!("bucket-config/{param}/plain"), &doc(text)).unwrap();
    }
    meta.put(
        "account-config/publicAccessBlock",
        &doc("<PublicAccessBlockConfiguration><IgnorePublicAcls>true</IgnorePublicAcls></PublicAccessBlockConfiguration>"),
    )
    .unwrap();
    let dir = &api.iam;
    for u in ["alice", "bob", "carol", "eve", "frank"] {
        dir.create_user(u, None, now).unwrap();
    }
    let alice_key = dir.create_access_key("alice", now).unwrap();
    let carol_key = dir.create_access_key("carol", now).unwrap();
    let allow_all =
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#;
    dir.put_policy(Holder::User, "alice", "all", allow_all)
        .unwrap();
    dir.put_policy(Holder::User, "carol", "p", allow_all)
        .unwrap();
    let trust = format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{}:root"}},"Action":"sts:AssumeRole"}}]}}"#,
        common::ACCOUNT
    );
    dir.create_role("r1", None, &trust, None, None, now)
        .unwrap();
    dir.create_role("r2", None, &trust, None, None, now)
        .unwrap();
    dir.put_policy(Holder::Role, "r1", "rp", allow_all).unwrap();
    let alice = Signer {
        key: &alice_key.id,
        secret: &alice_key.secret,
    };
    // Trails, a channel, uploads: through the API (their records and files are its own).
    let json = |op: &str, body: &str| ok(wire::call(&addr, &root, op, body));
    json("CreateTrail", r#"{"Name":"tr1","S3BucketName":"logs"}"#);
    json("StartLogging", r#"{"Name":"tr1"}"#);
    json("CreateTrail", r#"{"Name":"tr3","S3BucketName":"logs"}"#);
    let tr1 = format!("arn:aws:cloudtrail:us-east-1:{}:trail/tr1", common::ACCOUNT);
    json(
        "AddTags",
        &format!(r#"{{"ResourceId":"{tr1}","TagsList":[{{"Key":"k0","Value":"v0"}}]}}"#),
    );
    let ch = json(
        "CreateChannel",
        r#"{"Name":"chan-one","Source":"Custom","Destinations":[{"Type":"EVENT_DATA_STORE","Location":"x-y-z"}]}"#,
    );
    let channel: serde_json::Value = serde_json::from_str(&ch).unwrap();
    let channel = channel["ChannelArn"].as_str().unwrap().to_string();
    let s3ok = |m: &str, p: &str, q: &str, b: &str| ok(wire::s3_call(&addr, &root, m, p, q, b));
    let big = xml_field(&s3ok("POST", "/data/big", "uploads", ""), "UploadId");
    s3ok(
        "PUT",
        "/data/big",
        &format!("partNumber=1&uploadId={big}"),
        "first",
    );
    let abort = xml_field(&s3ok("POST", "/data/abortme", "uploads", ""), "UploadId");
    let first = hex::encode(<md5::Md5 as md5::Digest>::digest(b"first"));

    // KMS: three keys, an alias, two grants.
    let kms_call = |op: &str, body: &str| -> serde_json::Value {
        let target = format!("TrentService.{op}");
        let answer = ok(wire::signed(
            &addr,
            &root,
            "POST",
            "/",
            "",
            "kms",
            &[
                ("x-amz-target", target.as_str()),
                ("content-type", "application/x-amz-json-1.1"),
            ],
            body,
        ));
        serde_json::from_str(&answer).unwrap_or_default()
    };
    let key_id = |v: serde_json::Value| v["KeyMetadata"]["KeyId"].as_str().unwrap().to_string();
    let k1 = key_id(kms_call("CreateKey", "{}"));
    let k2 = key_id(kms_call("CreateKey", "{}"));
    let k3 = key_id(kms_call("CreateKey", "{}"));
    kms_call(
        "CreateAlias",
        &format!(r#"{{"AliasName":"alias/one","TargetKeyId":"{k1}"}}"#),
    );
    let bob_arn = format!("arn:aws:iam::{}:user/bob", common::ACCOUNT);
    let grant = |k: &str| {
        kms_call(
            "CreateGrant",
            &format!(
                r#"{{"KeyId":"{k}","GranteePrincipal":"{bob_arn}","Operations":["Decrypt"]}}"#
            ),
        )["GrantId"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (g1, g2) = (grant(&k1), grant(&k1));

    // CloudWatch Logs: two groups, one with a stream.
    let logs_call = |op: &str, body: &str| ok(wire::logs_call(&addr, &root, op, body));
    logs_call(
        "CreateLogGroup",
        r#"{"logGroupName":"/g/one","tags":{"t":"v"}}"#,
    );
    logs_call("CreateLogGroup", r#"{"logGroupName":"/g/two"}"#);
    logs_call(
        "CreateLogStream",
        r#"{"logGroupName":"/g/one","logStreamName":"s1"}"#,
    );
    logs_call(
        "PutLogEvents",
        &format!(
            r#"{{"logGroupName":"/g/one","logStreamName":"s1","logEvents":[{{"timestamp":{},"message":"first"}}]}}"#,
            now_ms()
        ),
    );
    logs_call(
        "PutMetricFilter",
        r#"{"logGroupName":"/g/one","filterName":"f1","filterPattern":"ERROR","metricTransformations":[{"metricName":"m","metricNamespace":"n","metricValue":"1"}]}"#,
    );
    let query_id = serde_json::from_str::<serde_json::Value>(&logs_call(
        "StartQuery",
        r#"{"logGroupName":"/g/one","startTime":0,"endTime":4000000000,"queryString":"fields @message"}"#,
    ))
    .unwrap()["queryId"]
        .as_str()
        .unwrap()
        .to_string();
    let logs_key = key_id(kms_call(
        "CreateKey",
        &serde_json::json!({"Policy": serde_json::json!({
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Principal": {"AWS": format!("arn:aws:iam::{}:root", common::ACCOUNT)}, "Action": "kms:*", "Resource": "*"},
                {"Effect": "Allow", "Principal": {"Service": "logs.us-east-1.amazonaws.com"}, "Action": ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"], "Resource": "*"}
            ]
        }).to_string()})
        .to_string(),
    ));
    logs_call(
        "CreateLogGroup",
        &format!(r#"{{"logGroupName":"/g/sealed","kmsKeyId":"{logs_key}"}}"#),
    );
    let g1_arn = format!(
        "arn:aws:logs:us-east-1:{}:log-group:/g/one",
        common::ACCOUNT
    );

    // --- Every mutating operation. ---
    let event_data = serde_json::json!({
        "version": "1.0", "userIdentity": {"type": "app", "principalId": "p"},
        "eventSource": "app.example", "eventName": "Did", "eventTime": "2026-01-01T00:00:00Z",
        "UID": "u-1", "recipientAccountId": common::ACCOUNT
    })
    .to_string();
    let cases = vec![
        // CloudTrail
        trail("CreateTrail", r#"{"Name":"tr2","S3BucketName":"logs"}"#),
        trail("UpdateTrail", r#"{"Name":"tr1","EnableLogFileValidation":true}"#),
        trail(
            "PutEventSelectors",
            r#"{"TrailName":"tr1","EventSelectors":[{"ReadWriteType":"ReadOnly","IncludeManagementEvents":true}]}"#,
        ),
        trail(
            "PutInsightSelectors",
            r#"{"TrailName":"tr1","InsightSelectors":[{"InsightType":"ApiCallRateInsight"}]}"#,
        ),
        trail(
            "AddTags",
            format!(r#"{{"ResourceId":"{tr1}","TagsList":[{{"Key":"k","Value":"v"}}]}}"#),
        ),
        trail(
            "RemoveTags",
            format!(r#"{{"ResourceId":"{tr1}","TagsList":[{{"Key":"k0"}}]}}"#),
        ),
        trail(
            "CreateChannel",
            r#"{"Name":"chan-two","Source":"Custom","Destinations":[{"Type":"EVENT_DATA_STORE","Location":"x-y-z"}]}"#,
        ),
        case("cloudtrail-data", "PutAuditEvents", "POST", "/PutAuditEvents")
            .query(&format!(
                "channelArn={}",
                percent_encoding::utf8_percent_encode(&channel, percent_encoding::NON_ALPHANUMERIC)
            ))
            .header("content-type", "application/json")
            .body(serde_json::json!({"auditEvents": [{"id": "e1", "eventData": event_data}]}).to_string()),
        trail("DeleteChannel", format!(r#"{{"Channel":"{channel}"}}"#)),
        trail("CairnFlushTrail", r#"{"Name":"tr1"}"#),
        trail("StartLogging", r#"{"Name":"tr3"}"#),
        trail("StopLogging", r#"{"Name":"tr1"}"#),
        trail("DeleteTrail", r#"{"Name":"tr1"}"#),
        // KMS
        kms("CreateKey", r#"{"Description":"new"}"#),
        kms("CreateAlias", format!(r#"{{"AliasName":"alias/two","TargetKeyId":"{k1}"}}"#)),
        kms("UpdateAlias", format!(r#"{{"AliasName":"alias/one","TargetKeyId":"{k2}"}}"#)),
        kms("DeleteAlias", r#"{"AliasName":"alias/two"}"#),
        kms("UpdateKeyDescription", format!(r#"{{"KeyId":"{k1}","Description":"d"}}"#)),
        kms(
            "PutKeyPolicy",
            format!(
                r#"{{"KeyId":"{k1}","PolicyName":"default","Policy":{}}}"#,
                serde_json::Value::String(cairn_kms::default_policy(common::ACCOUNT))
            ),
        ),
        kms("EnableKeyRotation", format!(r#"{{"KeyId":"{k1}"}}"#)),
        kms("DisableKeyRotation", format!(r#"{{"KeyId":"{k1}"}}"#)),
        kms("RotateKeyOnDemand", format!(r#"{{"KeyId":"{k1}"}}"#)),
        kms("TagResource", format!(r#"{{"KeyId":"{k1}","Tags":[{{"TagKey":"a","TagValue":"b"}}]}}"#)),
        kms("UntagResource", format!(r#"{{"KeyId":"{k1}","TagKeys":["a"]}}"#)),
        kms(
            "CreateGrant",
            format!(r#"{{"KeyId":"{k1}","GranteePrincipal":"{bob_arn}","Operations":["Encrypt"]}}"#),
        ),
        kms("RetireGrant", format!(r#"{{"KeyId":"{k1}","GrantId":"{g1}"}}"#)),
        kms("RevokeGrant", format!(r#"{{"KeyId":"{k1}","GrantId":"{g2}"}}"#)),
        kms("DisableKey", format!(r#"{{"KeyId":"{k2}"}}"#)),
        kms("EnableKey", format!(r#"{{"KeyId":"{k2}"}}"#)),
        kms("ScheduleKeyDeletion", format!(r#"{{"KeyId":"{k3}","PendingWindowInDays":7}}"#)),
        kms("CancelKeyDeletion", format!(r#"{{"KeyId":"{k3}"}}"#)),
        // CloudWatch Logs
        logs("CreateLogGroup", r#"{"logGroupName":"/g/three"}"#),
        logs("PutRetentionPolicy", r#"{"logGroupName":"/g/one","retentionInDays":90}"#),
        logs("DeleteRetentionPolicy", r#"{"logGroupName":"/g/one"}"#),
        logs("CreateLogStream", r#"{"logGroupName":"/g/one","logStreamName":"s2"}"#),
        logs("DeleteLogStream", r#"{"logGroupName":"/g/one","logStreamName":"s1"}"#),
        logs("TagResource", format!(r#"{{"resourceArn":"{g1_arn}","tags":{{"a":"b"}}}}"#)),
        logs("UntagResource", format!(r#"{{"resourceArn":"{g1_arn}","tagKeys":["a"]}}"#)),
        logs("TagLogGroup", r#"{"logGroupName":"/g/one","tags":{"c":"d"}}"#),
        logs("UntagLogGroup", r#"{"logGroupName":"/g/one","tags":["c"]}"#),
        logs("DeleteLogGroup", r#"{"logGroupName":"/g/two"}"#),
        logs(
            "PutLogEvents",
            format!(
                r#"{{"logGroupName":"/g/one","logStreamName":"s2","logEvents":[{{"timestamp":{},"message":"second"}}]}}"#,
                now_ms()
            ),
        ),
        logs(
            "PutMetricFilter",
            r#"{"logGroupName":"/g/one","filterName":"f2","filterPattern":"{ $.a = 1 }","metricTransformations":[{"metricName":"m","metricNamespace":"n","metricValue":"$.a"}]}"#,
        ),
        logs("DeleteMetricFilter", r#"{"logGroupName":"/g/one","filterName":"f1"}"#),
        logs(
            "AssociateKmsKey",
            format!(r#"{{"logGroupName":"/g/one","kmsKeyId":"{logs_key}"}}"#),
        ),
        logs("DisassociateKmsKey", r#"{"logGroupName":"/g/sealed"}"#),
        logs("StopQuery", format!(r#"{{"queryId":"{query_id}"}}"#)),
        // IAM and STS
        iam("CreateUser", "UserName=dave"),
        iam("CreateAccessKey", "UserName=carol"),
        iam(
            "UpdateAccessKey",
            &format!("UserName=carol&AccessKeyId={}&Status=Inactive", carol_key.id),
        ),
        iam(
            "DeleteAccessKey",
            &format!("UserName=carol&AccessKeyId={}", carol_key.id),
        ),
        iam(
            "PutUserPolicy",
            &format!(
                "UserName=carol&PolicyName=p2&PolicyDocument={}",
                percent_encoding::utf8_percent_encode(allow_all, percent_encoding::NON_ALPHANUMERIC)
            ),
        ),
        iam("DeleteUserPolicy", "UserName=carol&PolicyName=p"),
        iam("DeleteUser", "UserName=bob"),
        iam(
            "CreateRole",
            &format!(
                "RoleName=r3&AssumeRolePolicyDocument={}",
                percent_encoding::utf8_percent_encode(&trust, percent_encoding::NON_ALPHANUMERIC)
            ),
        ),
        iam(
            "PutRolePolicy",
            &format!(
                "RoleName=r1&PolicyName=rp2&PolicyDocument={}",
                percent_encoding::utf8_percent_encode(allow_all, percent_encoding::NON_ALPHANUMERIC)
            ),
        ),
        iam("DeleteRolePolicy", "RoleName=r1&PolicyName=rp"),
        iam("DeleteRole", "RoleName=r2"),
        case("sts", "AssumeRole", "POST", "/")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!(
                "Action=AssumeRole&Version=2011-06-15&RoleSessionName=s1&RoleArn=arn%3Aaws%3Aiam%3A%3A{}%3Arole%2Fr1",
                common::ACCOUNT
            ))
            .alice(),
        // S3: objects
        s3("PutObject", "PUT", "/data/new", "").body("fresh"),
        s3("CopyObject", "PUT", "/data/copy", "").header("x-amz-copy-source", "/data/src"),
        s3("PutObjectTagging", "PUT", "/data/kept", "tagging")
            .body("<Tagging><TagSet><Tag><Key>k</Key><Value>v</Value></Tag></TagSet></Tagging>"),
        s3("DeleteObjectTagging", "DELETE", "/data/tagged", "tagging"),
        s3("PutObjectAcl", "PUT", "/data/kept", "acl").header("x-amz-acl", "authenticated-read"),
        s3("RestoreObject", "POST", "/data/archived", "restore")
            .body("<RestoreRequest><Days>2</Days></RestoreRequest>"),
        s3("CreateMultipartUpload", "POST", "/data/mp2", "uploads"),
        s3("UploadPart", "PUT", "/data/big", &format!("partNumber=2&uploadId={big}")).body("second"),
        s3("UploadPartCopy", "PUT", "/data/big", &format!("partNumber=3&uploadId={big}"))
            .header("x-amz-copy-source", "/data/src"),
        s3("CompleteMultipartUpload", "POST", "/data/big", &format!("uploadId={big}")).body(format!(
            "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>\"{first}\"</ETag></Part></CompleteMultipartUpload>"
        )),
        s3("AbortMultipartUpload", "DELETE", "/data/abortme", &format!("uploadId={abort}")),
        s3("DeleteObjects", "POST", "/data", "delete")
            .body("<Delete><Object><Key>src</Key></Object></Delete>"),
        s3("DeleteObject", "DELETE", "/data/kept", ""),
        s3("PutObjectRetention", "PUT", "/lockb/locked-obj", "retention").body(format!(
            "<Retention><Mode>GOVERNANCE</Mode><RetainUntilDate>{}</RetainUntilDate></Retention>",
            (now + chrono::Duration::days(2)).format("%Y-%m-%dT%H:%M:%SZ")
        )),
        s3("PutObjectLegalHold", "PUT", "/lockb/locked-obj", "legal-hold")
            .body("<LegalHold><Status>ON</Status></LegalHold>"),
        // DynamoDB: every write reaches the upstream only once its event is durable.
        ddb("CreateTable", r#"{"TableName":"ddb-t","AttributeDefinitions":[{"AttributeName":"pk","AttributeType":"S"}],"KeySchema":[{"AttributeName":"pk","KeyType":"HASH"}],"BillingMode":"PAY_PER_REQUEST"}"#),
        ddb("UpdateTable", r#"{"TableName":"ddb-t","BillingMode":"PAY_PER_REQUEST"}"#),
        ddb("UpdateTimeToLive", r#"{"TableName":"ddb-t","TimeToLiveSpecification":{"Enabled":true,"AttributeName":"exp"}}"#),
        ddb("UpdateContinuousBackups", r#"{"TableName":"ddb-t","PointInTimeRecoverySpecification":{"PointInTimeRecoveryEnabled":true}}"#),
        ddb("UpdateContributorInsights", r#"{"TableName":"ddb-t","ContributorInsightsAction":"ENABLE"}"#),
        ddb("EnableKinesisStreamingDestination", r#"{"TableName":"ddb-t","StreamArn":"arn:aws:kinesis:us-east-1:123456789012:stream/s"}"#),
        ddb("UpdateKinesisStreamingDestination", r#"{"TableName":"ddb-t","StreamArn":"arn:aws:kinesis:us-east-1:123456789012:stream/s"}"#),
        ddb("DisableKinesisStreamingDestination", r#"{"TableName":"ddb-t","StreamArn":"arn:aws:kinesis:us-east-1:123456789012:stream/s"}"#),
        ddb("UpdateTableReplicaAutoScaling", r#"{"TableName":"ddb-t"}"#),
        ddb("TagResource", r#"{"ResourceArn":"arn:aws:dynamodb:us-east-1:123456789012:table/ddb-t","Tags":[{"Key":"k","Value":"v"}]}"#),
        ddb("UntagResource", r#"{"ResourceArn":"arn:aws:dynamodb:us-east-1:123456789012:table/ddb-t","TagKeys":["k"]}"#),
        ddb("PutResourcePolicy", r#"{"ResourceArn":"arn:aws:dynamodb:us-east-1:123456789012:table/ddb-t","Policy":"{}"}"#),
        ddb("DeleteResourcePolicy", r#"{"ResourceArn":"arn:aws:dynamodb:us-east-1:123456789012:table/ddb-t"}"#),
        ddb("CreateBackup", r#"{"TableName":"ddb-t","BackupName":"b1"}"#),
        ddb("DeleteBackup", r#"{"BackupArn":"arn:aws:dynamodb:us-east-1:123456789012:table/ddb-t/backup/01"}"#),
        ddb("RestoreTableFromBackup", r#"{"TargetTableName":"ddb-r","BackupArn":"arn:aws:dynamodb:us-east-1:123456789012:table/ddb-t/backup/01"}"#),
        ddb("RestoreTableToPointInTime", r#"{"SourceTableName":"ddb-t","TargetTableName":"ddb-p"}"#),
        ddb("ExportTableToPointInTime", r#"{"TableArn":"arn:aws:dynamodb:us-east-1:123456789012:table/ddb-t","S3Bucket":"data"}"#),
        ddb("ImportTable", r#"{"S3BucketSource":{"S3Bucket":"data"},"InputFormat":"CSV","TableCreationParameters":{"TableName":"ddb-i","AttributeDefinitions":[{"AttributeName":"pk","AttributeType":"S"}],"KeySchema":[{"AttributeName":"pk","KeyType":"HASH"}],"BillingMode":"PAY_PER_REQUEST"}}"#),
        ddb("StartBulkPutItems", r#"{"TableName":"ddb-t","InputS3Configuration":{},"OutputS3Configuration":{}}"#),
        ddb("CancelBulkOperation", r#"{"BulkOperationArn":"arn:aws:dynamodb:us-east-1:123456789012:table/ddb-t/bulk-operation/01"}"#),
        ddb("CreateGlobalTable", r#"{"GlobalTableName":"ddb-t","ReplicationGroup":[{"RegionName":"us-east-1"}]}"#),
        ddb("UpdateGlobalTable", r#"{"GlobalTableName":"ddb-t","ReplicaUpdates":[]}"#),
        ddb("UpdateGlobalTableSettings", r#"{"GlobalTableName":"ddb-t"}"#),
        ddb("PutItem", r#"{"TableName":"ddb-t","Item":{"pk":{"S":"a"},"v":{"S":"x"}}}"#),
        ddb("UpdateItem", r#"{"TableName":"ddb-t","Key":{"pk":{"S":"a"}},"UpdateExpression":"SET v = :v","ExpressionAttributeValues":{":v":{"S":"y"}}}"#),
        ddb("DeleteItem", r#"{"TableName":"ddb-t","Key":{"pk":{"S":"a"}}}"#),
        ddb("BatchWriteItem", r#"{"RequestItems":{"ddb-t":[{"PutRequest":{"Item":{"pk":{"S":"b"}}}},{"DeleteRequest":{"Key":{"pk":{"S":"c"}}}}]}}"#),
        ddb("TransactWriteItems", r#"{"TransactItems":[{"Put":{"TableName":"ddb-t","Item":{"pk":{"S":"d"}}}},{"Delete":{"TableName":"ddb-u","Key":{"pk":{"S":"e"}}}}]}"#),
        ddb("ExecuteStatement", r#"{"Statement":"UPDATE \"ddb-t\" SET v = ? WHERE pk = 'a'","Parameters":[{"S":"z"}]}"#),
        ddb("BatchExecuteStatement", r#"{"Statements":[{"Statement":"INSERT INTO \"ddb-t\" VALUE {'pk': ?}","Parameters":[{"S":"f"}]}]}"#),
        ddb("ExecuteTransaction", r#"{"TransactStatements":[{"Statement":"DELETE FROM \"ddb-t\" WHERE pk = 'g'"}]}"#),
        ddb("DeleteTable", r#"{"TableName":"ddb-t"}"#),
        // S3: buckets
        s3("CreateBucket", "PUT", "/newbucket", ""),
        s3("PutBucketVersioning", "PUT", "/plain", "versioning")
            .body("<VersioningConfiguration><Status>Enabled</Status></VersioningConfiguration>"),
        s3("PutBucketPolicy", "PUT", "/plain", "policy").body(format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{}:root"}},"Action":"s3:GetObject","Resource":"arn:aws:s3:::plain/*"}}]}}"#,
            common::ACCOUNT
        )),
        s3("DeleteBucketPolicy", "DELETE", "/data", "policy"),
        s3("PutBucketPublicAccessBlock", "PUT", "/data", "publicAccessBlock").body(
            "<PublicAccessBlockConfiguration><RestrictPublicBuckets>true</RestrictPublicBuckets></PublicAccessBlockConfiguration>",
        ),
        s3("DeleteBucketPublicAccessBlock", "DELETE", "/plain", "publicAccessBlock"),
        s3("PutBucketTagging", "PUT", "/data", "tagging")
            .body("<Tagging><TagSet><Tag><Key>a</Key><Value>b</Value></Tag></TagSet></Tagging>"),
        s3("DeleteBucketTagging", "DELETE", "/plain", "tagging"),
        s3("PutBucketLifecycle", "PUT", "/data", "lifecycle").body(
            "<LifecycleConfiguration><Rule><ID>r</ID><Status>Enabled</Status><Expiration><Days>9</Days></Expiration></Rule></LifecycleConfiguration>",
        ),
        s3("DeleteBucketLifecycle", "DELETE", "/plain", "lifecycle"),
        s3("PutBucketEncryption", "PUT", "/data", "encryption").body(
            "<ServerSideEncryptionConfiguration><Rule><ApplyServerSideEncryptionByDefault><SSEAlgorithm>AES256</SSEAlgorithm></ApplyServerSideEncryptionByDefault></Rule></ServerSideEncryptionConfiguration>",
        ),
        s3("DeleteBucketEncryption", "DELETE", "/plain", "encryption"),
        s3("PutBucketAcl", "PUT", "/plain", "acl").header("x-amz-acl", "authenticated-read"),
        s3("PutObjectLockConfiguration", "PUT", "/lockb", "object-lock").body(
            "<ObjectLockConfiguration><ObjectLockEnabled>Enabled</ObjectLockEnabled><Rule><DefaultRetention><Mode>GOVERNANCE</Mode><Days>1</Days></DefaultRetention></Rule></ObjectLockConfiguration>",
        ),
        s3("PutPublicAccessBlock", "PUT", "/v20180820/configuration/publicAccessBlock", "")
            .header("x-amz-account-id", common::ACCOUNT)
            .body("<PublicAccessBlockConfiguration><RestrictPublicBuckets>true</RestrictPublicBuckets></PublicAccessBlockConfiguration>"),
        s3("DeletePublicAccessBlock", "DELETE", "/v20180820/configuration/publicAccessBlock", "")
            .header("x-amz-account-id", common::ACCOUNT),
        s3("DeleteBucket", "DELETE", "/empty", ""),
    ];

    // Every mutating operation of every service has its case (and every case names one).
    let covered: std::collections::BTreeSet<(&str, &str)> =
        cases.iter().map(|c| (c.service, c.op)).collect();
    for svc in SERVICES {
        for name in svc.operations() {
            if svc.mutates(name) {
                assert!(
                    covered.contains(&(svc.signing_name(), *name)),
                    "{}:{name} changes state but has no fail-closed case",
                    svc.signing_name()
                );
            }
        }
    }
    for (svc, op) in &covered {
        let s = SERVICES.iter().find(|s| s.signing_name() == *svc).unwrap();
        assert!(s.mutates(op), "{svc}:{op} is not a mutating operation");
    }

    let send = |c: &Case| {
        let signer = if c.as_alice { &alice } else { &root };
        let headers: Vec<(&str, &str)> = c
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        wire::signed(
            &addr, signer, c.method, &c.path, &c.query, c.service, &headers, &c.body,
        )
    };

    // With the journal failing: 503, and nothing changed.
    fail.store(true, Ordering::SeqCst);
    let before = state(&api, &multipart, &upstream);
    for c in &cases {
        let (st, body) = send(c);
        assert_eq!(st, 503, "{}:{} answered {st}: {body}", c.service, c.op);
        let after = state(&api, &multipart, &upstream);
        if after != before {
            let gone: Vec<&str> = before.lines().filter(|l| !after.contains(l)).collect();
            let new: Vec<&str> = after.lines().filter(|l| !before.contains(l)).collect();
            panic!(
                "{}:{} changed state without a durable event:\n- {}\n+ {}",
                c.service,
                c.op,
                gone.join("\n- "),
                new.join("\n+ ")
            );
        }
    }
    fail.store(false, Ordering::SeqCst);

    // With the disk at its reserve (issue 16): every case that would grow the data gets a
    // retryable 503 naming the reserve, and nothing changed; a caller without permission
    // gets its refusal, not a word about the disk.
    api.disk
        .set_reserve(cairn_api::disk::Reserve::Bytes(u64::MAX / 4));
    let eve_key = dir.create_access_key("eve", now).unwrap();
    let eve = Signer {
        key: &eve_key.id,
        secret: &eve_key.secret,
    };
    let (st, body) = wire::s3_call(&addr, &eve, "PUT", "/data/eve", "", "x");
    assert_eq!(st, 403, "{body}");
    assert!(
        body.contains("AccessDenied") && !body.contains("reserve"),
        "{body}"
    );
    // Nor does one allowed PutObject but not the tagging its request asks for: the refusal
    // it has earned comes first, never a retryable 503 that would hide it.
    let frank_key = dir.create_access_key("frank", now).unwrap();
    dir.put_policy(
        Holder::User,
        "frank",
        "put-only",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:PutObject","Resource":"*"}]}"#,
    )
    .unwrap();
    let frank = Signer {
        key: &frank_key.id,
        secret: &frank_key.secret,
    };
    let (st, body) = wire::signed(
        &addr,
        &frank,
        "PUT",
        "/data/frank",
        "",
        "s3",
        &[("x-amz-tagging", "a=b")],
        "x",
    );
    assert_eq!(st, 403, "{body}");
    assert!(!body.contains("reserve"), "{body}");
    // What is not held to the reserve, named here so a change of classification shows.
    let exempt: std::collections::BTreeSet<String> = cases
        .iter()
        .filter(|c| !cairn_api::disk::held(c.service, c.op))
        .map(|c| format!("{}:{}", c.service, c.op))
        .collect();
    let expected_exempt: std::collections::BTreeSet<String> = [
        "cloudtrail:StopLogging",
        "cloudtrail:DeleteTrail",
        "cloudtrail:RemoveTags",
        "cloudtrail:DeleteChannel",
        "cloudtrail:CairnFlushTrail",
        "sts:AssumeRole",
        "iam:DeleteUser",
        "iam:DeleteAccessKey",
        "iam:DeleteUserPolicy",
        "iam:DeleteRolePolicy",
        "iam:DeleteRole",
        "s3:DeleteObjectTagging",
        "s3:AbortMultipartUpload",
        "s3:DeleteObjects",
        "s3:DeleteObject",
        "s3:DeleteBucketPolicy",
        "s3:DeleteBucketPublicAccessBlock",
        "s3:DeleteBucketTagging",
        "s3:PutBucketLifecycle",
        "s3:DeleteBucketLifecycle",
        "s3:DeleteBucketEncryption",
        "s3:DeletePublicAccessBlock",
        "s3:DeleteBucket",
        "kms:DeleteAlias",
        "kms:CancelKeyDeletion",
        "kms:DisableKey",
        "kms:DisableKeyRotation",
        "kms:RetireGrant",
        "kms:RevokeGrant",
        "kms:ScheduleKeyDeletion",
        "kms:UntagResource",
        "logs:DeleteLogGroup",
        "logs:DeleteLogStream",
        "logs:DeleteMetricFilter",
        "logs:DeleteRetentionPolicy",
        "logs:PutRetentionPolicy",
        "logs:StopQuery",
        "logs:UntagLogGroup",
        "logs:UntagResource",
    ]
    .into_iter()
    .map(String::from)
    .chain(
        cases
            .iter()
            .filter(|c| c.service == "dynamodb")
            .map(|c| format!("dynamodb:{}", c.op)),
    )
    .collect();
    let unexpected: Vec<_> = exempt.symmetric_difference(&expected_exempt).collect();
    assert!(
        unexpected.is_empty(),
        "held/exempt classification changed: {unexpected:?}"
    );
    let before = state(&api, &multipart, &upstream);
    let mut held = 0;
    let mut dependent: Vec<String> = Vec::new();
    for c in cases
        .iter()
        .filter(|c| cairn_api::disk::held(c.service, c.op))
    {
        let (st, body) = send(c);
        assert_eq!(
            state(&api, &multipart, &upstream),
            before,
            "{}:{} changed state at the disk reserve",
            c.service,
            c.op
        );
        if st != 503 {
            // The client's own mistake comes first: a case that needs what an earlier
            // (refused) case would have made fails as it would on any disk.
            assert!(
                (400..500).contains(&st),
                "{}:{} answered {st}: {body}",
                c.service,
                c.op
            );
            dependent.push(format!("{}:{}", c.service, c.op));
            continue;
        }
        let code = if c.service == "s3" {
            "SlowDown"
        } else {
            "ServiceUnavailable"
        };
        assert!(
            body.contains(code) && body.contains("reserve"),
            "{}:{}: {body}",
            c.service,
            c.op
        );
        held += 1;
    }
    assert!(held > 40, "only {held} cases grow the data");
    // PutLogEvents writes to the stream the (refused) CreateLogStream case would have made.
    assert_eq!(
        dependent,
        ["logs:PutLogEvents"],
        "refused for another reason"
    );
    assert!(api.disk.reached());

    // Recovered: every case succeeds, in order; those not held to the reserve with the
    // reserve armed (deletes, aborts, stops… work on a full disk).
    for c in &cases {
        let reserve = if cairn_api::disk::held(c.service, c.op) {
            0
        } else {
            u64::MAX / 4
        };
        api.disk
            .set_reserve(cairn_api::disk::Reserve::Bytes(reserve));
        let (st, body) = send(c);
        assert!(
            (200..300).contains(&st),
            "{}:{} answered {st} once the journal recovered: {body}",
            c.service,
            c.op
        );
    }
    // Each DynamoDB write reached the upstream once, with ARNs in the upstream's own form.
    let calls = upstream.lock().unwrap().clone();
    for c in cases.iter().filter(|c| c.service == "dynamodb") {
        let n = calls.iter().filter(|(op, _)| op == c.op).count();
        assert_eq!(n, 1, "dynamodb:{} reached the upstream {n} times", c.op);
    }
    let tag = calls.iter().find(|(op, _)| op == "TagResource").unwrap();
    assert!(
        tag.1
            .contains("arn:aws:dynamodb:us-east-1:000000000000:table/ddb-t"),
        "{}",
        tag.1
    );
    assert!(api.engine.trail("tr2").is_some() && api.engine.trail("tr1").is_none());
    assert!(api.iam.get_user("dave").is_ok() && api.iam.get_user("bob").is_err());
    assert!(store.bucket_exists("newbucket").unwrap() && !store.bucket_exists("empty").unwrap());
    rt.block_on(server.shutdown(std::time::Duration::from_secs(5)));
}
