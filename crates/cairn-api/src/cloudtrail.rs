//! CloudTrail, JSON 1.1 (spec §5): trails, status, selectors, tags, public keys,
//! LookupEvents. Trail changes go through the engine as journal commands; a handler waits
//! until its command is applied, so the caller reads its own write.

use crate::edge::Ctx;
use crate::history::{Query, ATTRIBUTE_KEYS};
use crate::wire::{ApiError, Reply};
use base64::Engine;
use cairn_record::selector::{AdvancedEventSelector, EventSelector, TrailSelectors};
use cairn_record::Resource;
use cairn_trail::{TrailCommand, TrailConfig, TrailState};
use chrono::{DateTime, Duration, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// Operations of the model that cairn does not implement (answered with
/// UnsupportedOperationException rather than "unknown").
/// The CloudTrail operations cairn implements.
pub const OPERATIONS: &[&str] = &[
    "CreateTrail",
    "UpdateTrail",
    "DeleteTrail",
    "GetTrail",
    "DescribeTrails",
    "ListTrails",
    "GetTrailStatus",
    "StartLogging",
    "StopLogging",
    "PutEventSelectors",
    "GetEventSelectors",
    "PutInsightSelectors",
    "GetInsightSelectors",
    "AddTags",
    "RemoveTags",
    "ListTags",
    "ListPublicKeys",
    "LookupEvents",
    "CreateChannel",
    "GetChannel",
    "ListChannels",
    "DeleteChannel",
    "CairnFlushTrail",
];

pub const UNSUPPORTED: &[&str] = &[
    "CancelQuery",
    "CreateDashboard",
    "CreateEventDataStore",
    "DeleteDashboard",
    "DeleteEventDataStore",
    "DeleteResourcePolicy",
    "DeregisterOrganizationDelegatedAdmin",
    "DescribeQuery",
    "DisableFederation",
    "EnableFederation",
    "GenerateQuery",
    "GetDashboard",
    "GetEventConfiguration",
    "GetEventDataStore",
    "GetImport",
    "GetQueryResults",
    "GetResourcePolicy",
    "ListDashboards",
    "ListEventDataStores",
    "ListImportFailures",
    "ListImports",
    "ListInsightsData",
    "ListInsightsMetricData",
    "ListQueries",
    "PutEventConfiguration",
    "PutResourcePolicy",
    "RegisterOrganizationDelegatedAdmin",
    "RestoreEventDataStore",
    "SearchSampleQueries",
    "StartDashboardRefresh",
    "StartEventDataStoreIngestion",
    "StartImport",
    "StartQuery",
    "StopEventDataStoreIngestion",
    "StopImport",
    "UpdateChannel",
    "UpdateDashboard",
    "UpdateEventDataStore",
];

/// A request body: a JSON object with typed accessors that fail like AWS's deserializer.
pub struct Args(pub Map<String, Value>);

impl Args {
    pub fn parse(body: &[u8]) -> Result<Args, ApiError> {
        if body.is_empty() {
            return Ok(Args(Map::new()));
        }
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(m)) => Ok(Args(m)),
            Ok(_) => Err(ApiError::serialization(
                "Start of structure or map expected at the top level of the request body",
            )),
            Err(e) => Err(ApiError::serialization(format!(
                "The request body is not valid JSON: {e}"
            ))),
        }
    }

    pub fn str(&self, k: &str) -> Result<Option<String>, ApiError> {
        match self.0.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ApiError::serialization(format!(
                "Expected a string for {k}"
            ))),
        }
    }

    pub fn bool(&self, k: &str) -> Result<Option<bool>, ApiError> {
        match self.0.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(ApiError::serialization(format!(
                "Expected a boolean for {k}"
            ))),
        }
    }

    pub fn int(&self, k: &str) -> Result<Option<i64>, ApiError> {
        match self.0.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) if n.as_i64().is_some() => Ok(n.as_i64()),
            Some(_) => Err(ApiError::serialization(format!(
                "Expected an integer for {k}"
            ))),
        }
    }

    /// A timestamp: epoch seconds (integer or fractional), as botocore sends them.
    pub fn time(&self, k: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
        match self.0.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => {
                let f = n.as_f64().unwrap_or(f64::NAN);
                if !f.is_finite() || f.abs() > 1e11 {
                    return Err(ApiError::serialization(format!(
                        "Invalid timestamp for {k}"
                    )));
                }
                let ms = (f * 1000.0).round() as i64;
                Ok(Utc.timestamp_millis_opt(ms).single())
            }
            Some(Value::String(s)) => cairn_record::time::parse_cli_time(s)
                .map(Some)
                .ok_or_else(|| ApiError::serialization(format!("Invalid timestamp for {k}"))),
            Some(_) => Err(ApiError::serialization(format!(
                "Expected a timestamp for {k}"
            ))),
        }
    }

    pub fn list(&self, k: &str) -> Result<Option<Vec<Value>>, ApiError> {
        match self.0.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a.clone())),
            Some(_) => Err(ApiError::serialization(format!("Expected a list for {k}"))),
        }
    }

    pub fn required(&self, k: &str, missing: ApiError) -> Result<String, ApiError> {
        self.str(k)?.ok_or(missing)
    }
}

fn secs(t: DateTime<Utc>) -> Value {
    let ms = t.timestamp_millis();
    if ms % 1000 == 0 {
        json!(ms / 1000)
    } else {
        json!(ms as f64 / 1000.0)
    }
}

fn lower_first(k: &str) -> String {
    let mut c = k.chars();
    match c.next() {
        Some(f) => f.to_lowercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

/// requestParameters as CloudTrail logs its own API calls: the request with lowerCamelCase
/// top-level keys.
fn logged_params(args: &Args) -> Option<Value> {
    if args.0.is_empty() {
        return None;
    }
    Some(Value::Object(
        args.0
            .iter()
            .map(|(k, v)| (lower_first(k), v.clone()))
            .collect(),
    ))
}

fn logged_response(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            Value::Object(m.iter().map(|(k, v)| (lower_first(k), v.clone())).collect())
        }
        v => v.clone(),
    }
}

fn not_found(name: &str, account: &str) -> ApiError {
    ApiError::client(
        "TrailNotFoundException",
        format!("Unknown trail: {name} for the user: {account}"),
    )
}

/// Extra trail attributes kept beside the engine's configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct TrailExtra {
    sns_topic_name: Option<String>,
    cloud_watch_logs_log_group_arn: Option<String>,
    cloud_watch_logs_role_arn: Option<String>,
}

type Tags = Vec<(String, Option<String>)>;

/// A trail named in a request, after validation.
struct TrailRef {
    /// The ARN's region (a plain name names the trail wherever it is visible).
    region: Option<String>,
    account: String,
    name: String,
}

fn tags_key(arn: &str) -> String {
    format!("tags/{arn}")
}

impl Ctx<'_> {
    fn account(&self) -> String {
        self.api.opts.account.clone()
    }

    /// Reads a trail reference (name or ARN). An ARN must be cairn's: partition `aws`,
    /// service `cloudtrail`, a 12-digit account, `trail/<valid name>`; anything else is
    /// CloudTrailARNInvalidException, so no spelling of a trail escapes a policy written for
    /// its real ARN.
    fn trail_ref(&self, given: &str) -> Result<TrailRef, ApiError> {
        if !given.starts_with("arn:") {
            cairn_trail::validate_trail_name(given)
                .map_err(|m| ApiError::client("InvalidTrailNameException", m))?;
            return Ok(TrailRef {
                region: None,
                account: self.account(),
                name: given.to_string(),
            });
        }
        let invalid = || {
            ApiError::client(
                "CloudTrailARNInvalidException",
                format!("ARN {given} is invalid."),
            )
        };
        let a: cairn_record::Arn = given.parse().map_err(|_| invalid())?;
        let name = a.resource.strip_prefix("trail/").ok_or_else(invalid)?;
        if a.partition != cairn_record::arn::PARTITION
            || a.service != "cloudtrail"
            || !cairn_record::arn::is_account_id(&a.account)
            || a.region.is_empty()
            || cairn_trail::validate_trail_name(name).is_err()
        {
            return Err(invalid());
        }
        Ok(TrailRef {
            region: Some(a.region.clone()),
            account: a.account.clone(),
            name: name.to_string(),
        })
    }

    /// Finds a trail by reference as visible from this region: an ARN must name the trail's
    /// home region and this account.
    fn find_trail_ref(&self, r: &TrailRef, given: &str) -> Result<TrailState, ApiError> {
        let account = self.account();
        match self.api.engine.trail(&r.name) {
            Some(t)
                if r.account == account
                    && r.region.as_ref().is_none_or(|x| *x == t.config.home_region)
                    && (t.config.home_region == self.region || t.config.multi_region) =>
            {
                Ok(t)
            }
            _ => Err(not_found(given, &account)),
        }
    }

    /// Finds a trail by name or ARN as visible from this region.
    fn find_trail(&self, name: &str) -> Result<TrailState, ApiError> {
        let r = self.trail_ref(name)?;
        self.find_trail_ref(&r, name)
    }

    /// Resolves `given` and authorizes `action` on the trail's real ARN (or, when no such
    /// trail is visible, on the ARN the reference denotes) before saying whether it exists.
    fn authorized_trail(&mut self, given: &str, action: &str) -> Result<TrailState, ApiError> {
        let r = match self.trail_ref(given) {
            Ok(r) => r,
            Err(e) => {
                self.no_authorization_needed();
                return Err(e);
            }
        };
        let found = self.find_trail_ref(&r, given);
        let arn = match &found {
            Ok(t) => t.config.arn(),
            Err(_) => cairn_record::Arn::trail(
                r.region.as_deref().unwrap_or(&self.region),
                &r.account,
                &r.name,
            )
            .to_string(),
        };
        // Policies may condition on the trail's tags (looked up only when one does).
        let wanted = self
            .caller
            .policies
            .iter()
            .any(|p| p.mentions_key("aws:ResourceTag/"));
        if let (Ok(t), true) = (&found, wanted) {
            let tags: Tags = self
                .api
                .meta
                .get(&tags_key(&t.config.arn()))?
                .unwrap_or_default();
            for (k, v) in tags {
                self.keys
                    .set(&format!("aws:ResourceTag/{k}"), v.unwrap_or_default());
            }
        }
        self.authorize(action, &arn)?;
        found
    }

    /// `aws:RequestTag/*` and `aws:TagKeys` from a request's `TagsList`.
    fn request_tag_keys(&mut self, args: &Args) {
        let list = args.list("TagsList").ok().flatten().unwrap_or_default();
        let Ok(tags) = validate_tags(&list) else {
            return;
        };
        for (k, v) in &tags {
            self.keys.set(
                &format!("aws:RequestTag/{k}"),
                v.clone().unwrap_or_default(),
            );
        }
        self.keys
            .set_many("aws:TagKeys", tags.into_iter().map(|(k, _)| k).collect());
    }

    fn require_home(&self, t: &TrailState) -> Result<(), ApiError> {
        if t.config.home_region != self.region {
            return Err(ApiError::client(
                "InvalidHomeRegionException",
                format!(
                    "The trail {} must be modified in its home region, {}.",
                    t.config.arn(),
                    t.config.home_region
                ),
            ));
        }
        Ok(())
    }

    fn trail_resource(&mut self, arn: &str) {
        self.audit.resources = Some(vec![Resource {
            account_id: Some(self.account()),
            resource_type: "AWS::CloudTrail::Trail".into(),
            arn: Some(arn.to_string()),
            arn_prefix: None,
        }]);
    }

    fn trail_json(&self, t: &TrailState) -> Result<Value, ApiError> {
        let extra: TrailExtra = self
            .api
            .meta
            .get(&format!("extra/{}", t.config.name))?
            .unwrap_or_default();
        self.trail_json_with(t, &extra)
    }

    fn trail_json_with(&self, t: &TrailState, extra: &TrailExtra) -> Result<Value, ApiError> {
        let c = &t.config;
        let insights: Option<Vec<Value>> = self.api.meta.get(&format!("insights/{}", c.name))?;
        let mut m = Map::new();
        m.insert("Name".into(), json!(c.name));
        m.insert("S3BucketName".into(), json!(c.s3_bucket));
        if let Some(p) = c.prefix() {
            m.insert("S3KeyPrefix".into(), json!(p));
        }
        if let Some(s) = &extra.sns_topic_name {
            m.insert("SnsTopicName".into(), json!(s));
            m.insert(
                "SnsTopicARN".into(),
                json!(format!("arn:aws:sns:{}:{}:{s}", c.home_region, c.account)),
            );
        }
        m.insert(
            "IncludeGlobalServiceEvents".into(),
            json!(c.include_global_service_events),
        );
        m.insert("IsMultiRegionTrail".into(), json!(c.multi_region));
        m.insert("HomeRegion".into(), json!(c.home_region));
        m.insert("TrailARN".into(), json!(c.arn()));
        m.insert(
            "LogFileValidationEnabled".into(),
            json!(c.log_file_validation),
        );
        if let Some(g) = &extra.cloud_watch_logs_log_group_arn {
            m.insert("CloudWatchLogsLogGroupArn".into(), json!(g));
        }
        if let Some(r) = &extra.cloud_watch_logs_role_arn {
            m.insert("CloudWatchLogsRoleArn".into(), json!(r));
        }
        if let Some(k) = &c.kms_key_id {
            m.insert("KmsKeyId".into(), json!(k));
        }
        m.insert(
            "HasCustomEventSelectors".into(),
            json!(c.selectors != TrailSelectors::default()),
        );
        m.insert(
            "HasInsightSelectors".into(),
            json!(insights.is_some_and(|i| !i.is_empty())),
        );
        m.insert("IsOrganizationTrail".into(), json!(false));
        Ok(Value::Object(m))
    }

    /// What CreateTrail and UpdateTrail answer: the Trail shape without the read-only
    /// fields (home region, selector flags).
    fn trail_write_response(&self, t: &TrailState, extra: &TrailExtra) -> Result<Value, ApiError> {
        let mut out = self.trail_json_with(t, extra)?;
        if let Value::Object(m) = &mut out {
            for k in [
                "HomeRegion",
                "HasCustomEventSelectors",
                "HasInsightSelectors",
            ] {
                m.remove(k);
            }
        }
        Ok(out)
    }

    fn visible_trails(&self) -> Vec<TrailState> {
        self.api
            .engine
            .trails()
            .into_iter()
            .filter(|t| t.config.home_region == self.region || t.config.multi_region)
            .collect()
    }
}

pub(crate) fn map_trail_error(e: cairn_trail::TrailError) -> ApiError {
    match e {
        cairn_trail::TrailError::Invalid(m) => ApiError::client("InvalidParameterException", m),
        cairn_trail::TrailError::Journal(j) => ApiError::unavailable(j),
        e => ApiError::internal(e),
    }
}

fn validate_tags(list: &[Value]) -> Result<Tags, ApiError> {
    let bad = |m: &str| ApiError::client("InvalidTagParameterException", m.to_string());
    let mut out = Vec::new();
    for t in list {
        let key = t
            .get("Key")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("Tag key must be specified."))?;
        if key.is_empty() || key.len() > 128 {
            return Err(bad("Tag key must be between 1 and 128 characters."));
        }
        if key.starts_with("aws:") {
            return Err(bad("Tag keys starting with 'aws:' are reserved."));
        }
        let value = t.get("Value").and_then(Value::as_str).map(str::to_string);
        if value.as_ref().is_some_and(|v| v.len() > 256) {
            return Err(bad("Tag value must be at most 256 characters."));
        }
        out.push((key.to_string(), value));
    }
    Ok(out)
}

fn tags_json(tags: &Tags) -> Value {
    Value::Array(
        tags.iter()
            .map(|(k, v)| match v {
                Some(v) => json!({"Key": k, "Value": v}),
                None => json!({"Key": k}),
            })
            .collect(),
    )
}

/// Checks an ARN a request names: cairn's partition, `service`, this account, a served
/// region (or none for a global service, `regional` false), a resource starting with one of
/// `prefixes`.
fn check_arn(
    ctx: &Ctx,
    arn: &str,
    service: &str,
    regional: bool,
    prefixes: &[&str],
) -> Result<cairn_record::Arn, ()> {
    let a: cairn_record::Arn = arn.parse().map_err(|_| ())?;
    let region_ok = if regional {
        ctx.api.opts.regions.contains(&a.region)
    } else {
        a.region.is_empty()
    };
    let ok = a.partition == cairn_record::arn::PARTITION
        && a.service == service
        && region_ok
        && a.account == ctx.api.opts.account
        && prefixes.iter().any(|p| a.resource.starts_with(p));
    if ok {
        Ok(a)
    } else {
        Err(())
    }
}

/// The fields CreateTrail and UpdateTrail share, applied onto `c`.
fn apply_trail_fields(
    ctx: &Ctx,
    args: &Args,
    c: &mut TrailConfig,
    extra: &mut TrailExtra,
) -> Result<(), ApiError> {
    if let Some(b) = args.str("S3BucketName")? {
        if cairn_store::check_bucket_name(&b).is_err() {
            return Err(ApiError::client(
                "InvalidS3BucketNameException",
                format!("Bucket name is not valid: {b}"),
            ));
        }
        let exists = ctx
            .api
            .trail_store
            .bucket_exists(&b)
            .map_err(ApiError::internal)?;
        if !exists {
            return Err(ApiError::client(
                "S3BucketDoesNotExistException",
                format!("S3 bucket does not exist: {b}"),
            ));
        }
        c.s3_bucket = b;
    }
    if let Some(p) = args.str("S3KeyPrefix")? {
        if p.len() > 200 {
            return Err(ApiError::client(
                "InvalidS3PrefixException",
                "S3 key prefix must be at most 200 characters.",
            ));
        }
        c.s3_key_prefix = (!p.is_empty()).then_some(p);
    }
    if let Some(g) = args.bool("IncludeGlobalServiceEvents")? {
        c.include_global_service_events = g;
    }
    if let Some(m) = args.bool("IsMultiRegionTrail")? {
        c.multi_region = m;
    }
    if let Some(v) = args.bool("EnableLogFileValidation")? {
        c.log_file_validation = v;
    }
    if let Some(k) = args.str("KmsKeyId")? {
        if k.starts_with("arn:") {
            check_arn(ctx, &k, "kms", true, &["key/", "alias/"]).map_err(|_| {
                ApiError::client("InvalidKmsKeyIdException", format!("Invalid KmsKeyId {k}"))
            })?;
        }
        c.kms_key_id = (!k.is_empty()).then_some(k);
    }
    if args.bool("IsOrganizationTrail")? == Some(true) {
        return Err(ApiError::client(
            "OrganizationsNotInUseException",
            "This account is not a member of an organization.",
        ));
    }
    if let Some(s) = args.str("SnsTopicName")? {
        if s.starts_with("arn:") {
            check_arn(ctx, &s, "sns", true, &[""]).map_err(|_| {
                ApiError::client(
                    "InvalidSnsTopicNameException",
                    format!("Topic ARN {s} is invalid."),
                )
            })?;
        }
        extra.sns_topic_name = (!s.is_empty()).then_some(s);
    }
    if let Some(g) = args.str("CloudWatchLogsLogGroupArn")? {
        if !g.is_empty() {
            check_arn(ctx, &g, "logs", true, &["log-group:"]).map_err(|_| {
                ApiError::client(
                    "InvalidCloudWatchLogsLogGroupArnException",
                    format!("Log group ARN {g} is invalid."),
                )
            })?;
        }
        extra.cloud_watch_logs_log_group_arn = (!g.is_empty()).then_some(g);
    }
    if let Some(r) = args.str("CloudWatchLogsRoleArn")? {
        if !r.is_empty() {
            check_arn(ctx, &r, "iam", false, &["role/"]).map_err(|_| {
                ApiError::client(
                    "InvalidCloudWatchLogsRoleArnException",
                    format!("Role ARN {r} is invalid."),
                )
            })?;
        }
        extra.cloud_watch_logs_role_arn = (!r.is_empty()).then_some(r);
    }
    if extra.cloud_watch_logs_log_group_arn.is_some() != extra.cloud_watch_logs_role_arn.is_some() {
        return Err(ApiError::client(
            "InvalidCloudWatchLogsLogGroupArnException",
            "You must specify both a log group ARN and a role ARN.",
        ));
    }
    // CloudTrail checks the bucket policy up front: a policy must let this trail write under
    // its prefix (a bucket without one accepts its own account's trails).
    let probe = match c.prefix() {
        Some(p) => format!("{p}/AWSLogs/{}/CloudTrail/probe", c.account),
        None => format!("AWSLogs/{}/CloudTrail/probe", c.account),
    };
    if !c.s3_bucket.is_empty()
        && !crate::delivery::delivery_allowed(
            &ctx.api.meta,
            &c.account,
            &c.s3_bucket,
            &probe,
            &c.arn(),
        )
    {
        return Err(ApiError::client(
            "InsufficientS3BucketPolicyException",
            format!(
                "Incorrect S3 bucket policy is detected for bucket: {}",
                c.s3_bucket
            ),
        ));
    }
    if c.multi_region && !c.include_global_service_events {
        return Err(ApiError::client(
            "InvalidParameterCombinationException",
            "Multi-Region trail must include global service events.",
        ));
    }
    Ok(())
}

pub async fn handle(ctx: &mut Ctx<'_>, op: &str) -> Result<Reply, ApiError> {
    // awsJson 1.1 bodies only (SDKs send application/x-amz-json-1.1).
    if let Some(ct) = ctx.req.header("content-type") {
        let ct = ct.to_ascii_lowercase();
        if !(ct.starts_with("application/x-amz-json") || ct.starts_with("application/json")) {
            ctx.no_authorization_needed();
            return Err(ApiError::serialization(format!(
                "Unsupported content type {ct}; expected application/x-amz-json-1.1"
            )));
        }
    }
    let args = Args::parse(&ctx.req.body)?;
    ctx.audit.read_only = op.starts_with("Get")
        || op.starts_with("Describe")
        || op.starts_with("List")
        || op == "LookupEvents";
    ctx.audit.request_parameters = logged_params(&args);
    let out = match op {
        "CreateTrail" => create_trail(ctx, &args).await?,
        "UpdateTrail" => update_trail(ctx, &args).await?,
        "DeleteTrail" => delete_trail(ctx, &args).await?,
        "GetTrail" => {
            let t = trail_arg(ctx, &args, "Name", "cloudtrail:GetTrail")?;
            json!({"Trail": ctx.trail_json(&t)?})
        }
        "DescribeTrails" => describe_trails(ctx, &args)?,
        "ListTrails" => {
            ctx.authorize("cloudtrail:ListTrails", "*")?;
            let trails: Vec<Value> = ctx
                .visible_trails()
                .iter()
                .map(|t| json!({"TrailARN": t.config.arn(), "Name": t.config.name, "HomeRegion": t.config.home_region}))
                .collect();
            json!({"Trails": trails})
        }
        "GetTrailStatus" => {
            let t = trail_arg(ctx, &args, "Name", "cloudtrail:GetTrailStatus")?;
            trail_status(&t)
        }
        "StartLogging" | "StopLogging" => {
            let t = trail_arg(ctx, &args, "Name", &format!("cloudtrail:{op}"))?;
            ctx.require_home(&t)?;
            let name = t.config.name.clone();
            let at = ctx.now;
            if op == "StartLogging" {
                // Logging starts before this request's event is journaled, so the trail
                // delivers its own start (as AWS's does). Should the event then be refused,
                // the trail logs more, never less: the safe direction.
                let engine = ctx.api.engine.clone();
                ctx.api
                    .blocking(move || {
                        let seq = engine
                            .command(TrailCommand::StartLogging { name, at })
                            .map_err(map_trail_error)?;
                        engine.apply_through(seq).map_err(ApiError::internal)
                    })
                    .await?;
            } else {
                // Stopping waits for the event: the trail it stops delivers it.
                ctx.defer_trail_command(TrailCommand::StopLogging { name, at });
            }
            json!({})
        }
        "PutEventSelectors" => put_event_selectors(ctx, &args).await?,
        "GetEventSelectors" => {
            let t = trail_arg(ctx, &args, "TrailName", "cloudtrail:GetEventSelectors")?;
            match &t.config.selectors {
                TrailSelectors::Basic(b) => {
                    json!({"TrailARN": t.config.arn(), "EventSelectors": b})
                }
                TrailSelectors::Advanced(a) => {
                    json!({"TrailARN": t.config.arn(), "AdvancedEventSelectors": a})
                }
            }
        }
        "PutInsightSelectors" => put_insight_selectors(ctx, &args)?,
        "GetInsightSelectors" => {
            let t = trail_arg(ctx, &args, "TrailName", "cloudtrail:GetInsightSelectors")?;
            let sel: Option<Vec<Value>> =
                ctx.api.meta.get(&format!("insights/{}", t.config.name))?;
            match sel {
                Some(s) if !s.is_empty() => {
                    json!({"TrailARN": t.config.arn(), "InsightSelectors": s})
                }
                _ => {
                    return Err(ApiError::client(
                        "InsightNotEnabledException",
                        format!("Trail {} does not have Insights enabled.", t.config.arn()),
                    ))
                }
            }
        }
        "AddTags" | "RemoveTags" => change_tags(ctx, &args, op == "AddTags")?,
        "ListTags" => list_tags(ctx, &args)?,
        "ListPublicKeys" => list_public_keys(ctx, &args)?,
        "LookupEvents" => lookup_events(ctx, &args).await?,
        // cairn extension: deliver what is pending and close open digest windows now.
        "CairnFlushTrail" => {
            let t = trail_arg(ctx, &args, "Name", "cloudtrail:CairnFlushTrail")?;
            // Delivery is shared: a flush delivers every trail's pending files, so it needs the
            // permission on all of them.
            ctx.authorize("cloudtrail:CairnFlushTrail", "*")?;
            let engine = ctx.api.engine.clone();
            let rep = ctx
                .api
                .blocking(move || engine.flush().map_err(ApiError::internal))
                .await?;
            json!({"TrailARN": t.config.arn(), "LogFiles": rep.files, "DigestFiles": rep.digests})
        }
        "CreateChannel" | "GetChannel" | "ListChannels" | "DeleteChannel" => {
            crate::cloudtrail_data::channel_op(ctx, op, &args).await?
        }
        op if UNSUPPORTED.contains(&op) => {
            ctx.no_authorization_needed();
            return Err(ApiError::client(
                "UnsupportedOperationException",
                format!("cairn does not support {op}."),
            ));
        }
        op => {
            ctx.no_authorization_needed();
            return Err(ApiError::client(
                "UnknownOperationException",
                format!("Unknown operation {op}"),
            ));
        }
    };
    // CloudTrail logs responseElements for writes with a body; null otherwise.
    if !ctx.audit.read_only && out.as_object().is_some_and(|m| !m.is_empty()) {
        ctx.audit.response_elements = Some(logged_response(&out));
    }
    Ok(Reply::json(&out))
}

/// Resolves the trail named by `field` (name or ARN), authorizing `action` on it.
fn trail_arg(
    ctx: &mut Ctx<'_>,
    args: &Args,
    field: &str,
    action: &str,
) -> Result<TrailState, ApiError> {
    let name = args.str(field)?.unwrap_or_default();
    if name.is_empty() {
        ctx.no_authorization_needed();
        return Err(ApiError::client(
            "InvalidTrailNameException",
            "Trail name or ARN can only contain uppercase letters, lowercase letters, numbers, periods (.), hyphens (-), and underscores (_).",
        ));
    }
    let t = ctx.authorized_trail(&name, action)?;
    ctx.trail_resource(&t.config.arn());
    Ok(t)
}

async fn create_trail(ctx: &mut Ctx<'_>, args: &Args) -> Result<Value, ApiError> {
    let name = args.str("Name")?.unwrap_or_default();
    let account = ctx.account();
    let arn = cairn_record::Arn::trail(&ctx.region, &account, &name).to_string();
    ctx.request_tag_keys(args);
    ctx.authorize("cloudtrail:CreateTrail", &arn)?;
    if name.is_empty() {
        return Err(ApiError::client(
            "TrailNotProvidedException",
            "Trail name must be specified.",
        ));
    }
    cairn_trail::validate_trail_name(&name)
        .map_err(|m| ApiError::client("InvalidTrailNameException", m))?;
    if args.str("S3BucketName")?.unwrap_or_default().is_empty() {
        return Err(ApiError::client(
            "InvalidS3BucketNameException",
            "S3 bucket name must be specified.",
        ));
    }
    let tags = validate_tags(&args.list("TagsList")?.unwrap_or_default())?;
    if tags.len() > 50 {
        return Err(ApiError::client(
            "TagsLimitExceededException",
            "A resource can have at most 50 tags.",
        ));
    }
    let guard = ctx.api.control.clone().lock_owned().await;
    if ctx.api.engine.trail(&name).is_some() {
        return Err(ApiError::client(
            "TrailAlreadyExistsException",
            format!("Trail {name} already exists for customer: {account}"),
        ));
    }
    let in_region = ctx
        .api
        .engine
        .trails()
        .iter()
        .filter(|t| t.config.home_region == ctx.region)
        .count();
    if in_region >= 5 {
        return Err(ApiError::client(
            "MaximumNumberOfTrailsExceededException",
            format!("User: {account} already has 5 trails in {}.", ctx.region),
        ));
    }
    let mut c = TrailConfig::new(&name, &account, &ctx.region, "");
    let mut extra = TrailExtra::default();
    apply_trail_fields(ctx, args, &mut c, &mut extra)?;
    ctx.trail_resource(&c.arn());
    let answer = ctx.trail_write_response(&TrailState::new(c.clone()), &extra)?;
    // Made once this request's event is durable.
    ctx.defer_meta_put(format!("extra/{name}"), extra);
    ctx.defer_meta_put(tags_key(&c.arn()), tags);
    ctx.defer_trail_command(TrailCommand::Put {
        config: c,
        at: ctx.now,
    });
    ctx.hold_until_made(guard);
    Ok(answer)
}

async fn update_trail(ctx: &mut Ctx<'_>, args: &Args) -> Result<Value, ApiError> {
    let t = trail_arg(ctx, args, "Name", "cloudtrail:UpdateTrail")?;
    ctx.require_home(&t)?;
    let guard = ctx.api.control.clone().lock_owned().await;
    let t = ctx.find_trail(&t.config.name)?;
    let mut c = t.config.clone();
    let mut extra: TrailExtra = ctx
        .api
        .meta
        .get(&format!("extra/{}", c.name))?
        .unwrap_or_default();
    apply_trail_fields(ctx, args, &mut c, &mut extra)?;
    let answer = ctx.trail_write_response(
        &TrailState {
            config: c.clone(),
            ..t.clone()
        },
        &extra,
    )?;
    ctx.defer_meta_put(format!("extra/{}", c.name), extra);
    if c != t.config {
        ctx.defer_trail_command(TrailCommand::Put {
            config: c,
            at: ctx.now,
        });
    }
    ctx.hold_until_made(guard);
    Ok(answer)
}

async fn delete_trail(ctx: &mut Ctx<'_>, args: &Args) -> Result<Value, ApiError> {
    let t = trail_arg(ctx, args, "Name", "cloudtrail:DeleteTrail")?;
    ctx.require_home(&t)?;
    let guard = ctx.api.control.clone().lock_owned().await;
    let name = t.config.name.clone();
    ctx.defer_trail_command(TrailCommand::Delete {
        name: name.clone(),
        at: ctx.now,
    });
    for k in [
        format!("extra/{name}"),
        format!("insights/{name}"),
        tags_key(&t.config.arn()),
    ] {
        ctx.defer_meta_delete(k);
    }
    ctx.hold_until_made(guard);
    Ok(json!({}))
}

fn describe_trails(ctx: &mut Ctx<'_>, args: &Args) -> Result<Value, ApiError> {
    ctx.authorize("cloudtrail:DescribeTrails", "*")?;
    let shadows = args.bool("includeShadowTrails")?.unwrap_or(true);
    let names = args.list("trailNameList")?.unwrap_or_default();
    let mut out = Vec::new();
    if names.is_empty() {
        for t in ctx.visible_trails() {
            if t.config.home_region == ctx.region || shadows {
                out.push(ctx.trail_json(&t)?);
            }
        }
    } else {
        for n in names {
            let n = n
                .as_str()
                .ok_or_else(|| ApiError::serialization("trailNameList must hold strings"))?;
            match ctx.find_trail(n) {
                Ok(t) if t.config.home_region == ctx.region || shadows => {
                    out.push(ctx.trail_json(&t)?)
                }
                Ok(_) => {}
                Err(e) if e.code == "TrailNotFoundException" => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(json!({"trailList": out}))
}

fn trail_status(t: &TrailState) -> Value {
    let mut m = Map::new();
    m.insert("IsLogging".into(), json!(t.logging));
    let iso = |x: Option<DateTime<Utc>>| x.map(cairn_record::time::iso).unwrap_or_default();
    if let Some(e) = &t.latest_delivery_error {
        m.insert("LatestDeliveryError".into(), json!(e));
    }
    if let Some(x) = t.latest_delivery_time {
        m.insert("LatestDeliveryTime".into(), secs(x));
    }
    if let Some(x) = t.start_logging_time {
        m.insert("StartLoggingTime".into(), secs(x));
    }
    if let Some(x) = t.stop_logging_time {
        m.insert("StopLoggingTime".into(), secs(x));
    }
    if let Some(x) = t.latest_digest_delivery_time {
        m.insert("LatestDigestDeliveryTime".into(), secs(x));
    }
    if let Some(e) = &t.latest_digest_delivery_error {
        m.insert("LatestDigestDeliveryError".into(), json!(e));
    }
    // Deprecated string fields AWS still fills.
    m.insert(
        "LatestDeliveryAttemptTime".into(),
        json!(iso(t.latest_delivery_attempt_time)),
    );
    m.insert("LatestNotificationAttemptTime".into(), json!(""));
    m.insert("LatestNotificationAttemptSucceeded".into(), json!(""));
    m.insert(
        "LatestDeliveryAttemptSucceeded".into(),
        json!(if t.latest_delivery_error.is_none() {
            iso(t.latest_delivery_time)
        } else {
            String::new()
        }),
    );
    m.insert(
        "TimeLoggingStarted".into(),
        json!(iso(t.start_logging_time)),
    );
    m.insert("TimeLoggingStopped".into(), json!(iso(t.stop_logging_time)));
    Value::Object(m)
}

async fn put_event_selectors(ctx: &mut Ctx<'_>, args: &Args) -> Result<Value, ApiError> {
    let t = trail_arg(ctx, args, "TrailName", "cloudtrail:PutEventSelectors")?;
    ctx.require_home(&t)?;
    let invalid = |m: String| ApiError::client("InvalidEventSelectorsException", m);
    let basic = args.0.get("EventSelectors").filter(|v| !v.is_null());
    let advanced = args
        .0
        .get("AdvancedEventSelectors")
        .filter(|v| !v.is_null());
    let selectors =
        match (basic, advanced) {
            (Some(_), Some(_)) => return Err(ApiError::client(
                "InvalidParameterCombinationException",
                "You cannot specify both EventSelectors and AdvancedEventSelectors in a request.",
            )),
            (None, None) => {
                return Err(invalid(
                    "You must specify either EventSelectors or AdvancedEventSelectors.".into(),
                ))
            }
            (Some(b), None) => TrailSelectors::Basic(
                serde_json::from_value::<Vec<EventSelector>>(b.clone())
                    .map_err(|e| invalid(format!("Invalid EventSelectors: {e}")))?,
            ),
            (None, Some(a)) => TrailSelectors::Advanced(
                serde_json::from_value::<Vec<AdvancedEventSelector>>(a.clone())
                    .map_err(|e| invalid(format!("Invalid AdvancedEventSelectors: {e}")))?,
            ),
        };
    selectors.validate().map_err(|e| invalid(e.message))?;
    let guard = ctx.api.control.clone().lock_owned().await;
    let mut c = ctx.find_trail(&t.config.name)?.config;
    c.selectors = selectors;
    ctx.defer_trail_command(TrailCommand::Put {
        config: c.clone(),
        at: ctx.now,
    });
    ctx.hold_until_made(guard);
    Ok(match &c.selectors {
        TrailSelectors::Basic(b) => json!({"TrailARN": c.arn(), "EventSelectors": b}),
        TrailSelectors::Advanced(a) => json!({"TrailARN": c.arn(), "AdvancedEventSelectors": a}),
    })
}

fn put_insight_selectors(ctx: &mut Ctx<'_>, args: &Args) -> Result<Value, ApiError> {
    let t = trail_arg(ctx, args, "TrailName", "cloudtrail:PutInsightSelectors")?;
    ctx.require_home(&t)?;
    let sel = args.list("InsightSelectors")?.ok_or_else(|| {
        ApiError::client(
            "InvalidInsightSelectorsException",
            "InsightSelectors must be specified.",
        )
    })?;
    let mut out = Vec::new();
    for s in &sel {
        let ty = s.get("InsightType").and_then(Value::as_str).unwrap_or("");
        if !matches!(ty, "ApiCallRateInsight" | "ApiErrorRateInsight") {
            return Err(ApiError::client(
                "InvalidInsightSelectorsException",
                format!("Insight type {ty:?} is not valid; use ApiCallRateInsight or ApiErrorRateInsight."),
            ));
        }
        if out.iter().any(|x: &Value| x["InsightType"] == ty) {
            return Err(ApiError::client(
                "InvalidInsightSelectorsException",
                format!("Insight type {ty} is specified more than once."),
            ));
        }
        out.push(json!({"InsightType": ty}));
    }
    ctx.defer_meta_put(format!("insights/{}", t.config.name), out.clone());
    Ok(json!({"TrailARN": t.config.arn(), "InsightSelectors": out}))
}

/// Resolves a tag resource (a trail ARN) for AddTags/RemoveTags/ListTags.
fn tag_resource(ctx: &mut Ctx<'_>, id: &str, action: &str) -> Result<TrailState, ApiError> {
    if !id.starts_with("arn:") {
        ctx.no_authorization_needed();
        return Err(ApiError::client(
            "CloudTrailARNInvalidException",
            format!("ARN {id} is invalid."),
        ));
    }
    ctx.authorized_trail(id, action).map_err(|e| {
        if e.code == "TrailNotFoundException" {
            ApiError::client(
                "ResourceNotFoundException",
                format!("Resource {id} not found."),
            )
        } else {
            e
        }
    })
}

fn change_tags(ctx: &mut Ctx<'_>, args: &Args, add: bool) -> Result<Value, ApiError> {
    let id = args.str("ResourceId")?.unwrap_or_default();
    let action = if add {
        "cloudtrail:AddTags"
    } else {
        "cloudtrail:RemoveTags"
    };
    ctx.request_tag_keys(args);
    let t = tag_resource(ctx, &id, action)?;
    ctx.trail_resource(&t.config.arn());
    let given = validate_tags(&args.list("TagsList")?.unwrap_or_default())?;
    let key = tags_key(&t.config.arn());
    let mut tags: Tags = ctx.api.meta.get(&key)?.unwrap_or_default();
    for (k, v) in given {
        if add {
            match tags.iter_mut().find(|(x, _)| *x == k) {
                Some(e) => e.1 = v,
                None => tags.push((k, v)),
            }
        } else {
            tags.retain(|(x, _)| *x != k);
        }
    }
    if tags.len() > 50 {
        return Err(ApiError::client(
            "TagsLimitExceededException",
            "A resource can have at most 50 tags.",
        ));
    }
    ctx.defer_meta_put(key, tags);
    Ok(json!({}))
}

fn list_tags(ctx: &mut Ctx<'_>, args: &Args) -> Result<Value, ApiError> {
    let ids = args.list("ResourceIdList")?.unwrap_or_default();
    if ids.is_empty() {
        ctx.authorize("cloudtrail:ListTags", "*")?;
    }
    if ids.len() > 20 {
        return Err(ApiError::client(
            "InvalidParameterException",
            "ResourceIdList can hold at most 20 ARNs.",
        ));
    }
    let mut out = Vec::new();
    for id in ids {
        let id = id
            .as_str()
            .ok_or_else(|| ApiError::serialization("ResourceIdList must hold strings"))?;
        let t = tag_resource(ctx, id, "cloudtrail:ListTags")?;
        let tags: Tags = ctx
            .api
            .meta
            .get(&tags_key(&t.config.arn()))?
            .unwrap_or_default();
        out.push(json!({"ResourceId": id, "TagsList": tags_json(&tags)}));
    }
    Ok(json!({"ResourceTagList": out}))
}

fn list_public_keys(ctx: &mut Ctx<'_>, args: &Args) -> Result<Value, ApiError> {
    ctx.authorize("cloudtrail:ListPublicKeys", "*")?;
    let end = args.time("EndTime")?.unwrap_or(ctx.now);
    let start = args.time("StartTime")?.unwrap_or(end);
    if start > end {
        return Err(ApiError::client(
            "InvalidTimeRangeException",
            "Start time must be before end time.",
        ));
    }
    let keys = ctx
        .api
        .engine
        .public_keys(&ctx.region, start, end)
        .map_err(ApiError::internal)?;
    let list: Vec<Value> = keys
        .iter()
        .map(|k| {
            json!({
                "Value": base64::engine::general_purpose::STANDARD.encode(&k.value),
                "ValidityStartTime": secs(k.validity_start),
                "ValidityEndTime": secs(k.validity_end),
                "Fingerprint": k.fingerprint,
            })
        })
        .collect();
    Ok(json!({"PublicKeyList": list}))
}

#[derive(Serialize, Deserialize)]
struct PageToken {
    /// Fingerprint of the query.
    q: String,
    t: u64,
    s: u64,
}

async fn lookup_events(ctx: &mut Ctx<'_>, args: &Args) -> Result<Value, ApiError> {
    ctx.authorize("cloudtrail:LookupEvents", "*")?;
    let ext = ctx.api.opts.lookup_extensions;
    let attrs = args.list("LookupAttributes")?.unwrap_or_default();
    let invalid_attr =
        |m: &str| ApiError::client("InvalidLookupAttributesException", m.to_string());
    if attrs.len() > 1 && !ext {
        return Err(invalid_attr(
            "You cannot specify more than one lookup attribute.",
        ));
    }
    let mut attributes = Vec::new();
    for a in &attrs {
        let key = a.get("AttributeKey").and_then(Value::as_str).unwrap_or("");
        let value = a
            .get("AttributeValue")
            .and_then(Value::as_str)
            .unwrap_or("");
        let code = ATTRIBUTE_KEYS
            .iter()
            .position(|k| *k == key)
            .ok_or_else(|| invalid_attr(&format!("Lookup attribute key {key:?} is not valid.")))?;
        if value.is_empty() || value.len() > 2000 {
            return Err(invalid_attr(
                "Lookup attribute value must be between 1 and 2000 characters.",
            ));
        }
        attributes.push((code as u8, value.to_string()));
    }
    let category = args.str("EventCategory")?;
    let data_events = match category.as_deref() {
        None => false,
        Some("data") | Some("Data") if ext => true,
        Some("insight") => {
            // No Insights events are generated (yet): an empty page.
            return Ok(json!({"Events": []}));
        }
        Some(c) => {
            return Err(ApiError::client(
                "InvalidEventCategoryException",
                format!("Event category {c} is not valid."),
            ))
        }
    };
    let max = match args.int("MaxResults")? {
        None => 50,
        Some(n) if (1..=50).contains(&n) => n as usize,
        Some(_) => {
            return Err(ApiError::client(
                "InvalidMaxResultsException",
                "MaxResults must be between 1 and 50.",
            ))
        }
    };
    let horizon = ctx.now - Duration::days(ctx.api.opts.history_days);
    let end = args.time("EndTime")?.unwrap_or(ctx.now);
    let start = args.time("StartTime")?.unwrap_or(horizon);
    if start > end {
        return Err(ApiError::client(
            "InvalidTimeRangeException",
            "Start time must be before end time.",
        ));
    }
    let raw = |k: &str| args.0.get(k).map(|v| v.to_string()).unwrap_or_default();
    let mut q = Query {
        region: ctx.region.clone(),
        attributes,
        start: start.max(horizon),
        end,
        max_results: max,
        data_events,
        after: None,
    };
    let fp = q.fingerprint(&raw("StartTime"), &raw("EndTime"));
    if let Some(tok) = args.str("NextToken")? {
        let bad = || ApiError::client("InvalidNextTokenException", "Invalid NextToken.");
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(tok.as_bytes())
            .map_err(|_| bad())?;
        let pt: PageToken = serde_json::from_slice(&bytes).map_err(|_| bad())?;
        if pt.q != fp {
            return Err(bad());
        }
        q.after = Some((pt.t, pt.s));
    }
    // Read-your-writes: wait (briefly) until the index holds every event recorded so far.
    let target = ctx.api.engine.journal().next_seq();
    ctx.api
        .history
        .caught_up(target, std::time::Duration::from_secs(5))
        .await;
    let history = ctx.api.history.clone();
    let (events, next) = ctx.api.blocking(move || history.lookup(&q)).await?;
    let mut out = json!({"Events": events});
    if let Some((t, s)) = next {
        let tok = serde_json::to_vec(&PageToken { q: fp, t, s }).unwrap_or_default();
        out["NextToken"] = json!(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tok));
    }
    Ok(out)
}
