//! Trails: CreateTrail, UpdateTrail, DeleteTrail, GetTrail, DescribeTrails, ListTrails, and
//! how every operation names a trail (a name or an exact ARN) and is authorized on it.

use super::tags::{self, Tag};
use super::{defer_command, empty, out, Answer, TrailId};
use crate::edge::Ctx;
use crate::protocol::ApiError;
use cairn_record::selector::TrailSelectors;
use cairn_record::{Arn, Resource};
use cairn_trail::{TrailCommand, TrailConfig, TrailState};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// CreateTrail's and UpdateTrail's input (UpdateTrail changes only what it names).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TrailFields {
    pub name: Option<String>,
    pub s3_bucket_name: Option<String>,
    pub s3_key_prefix: Option<String>,
    pub sns_topic_name: Option<String>,
    pub include_global_service_events: Option<bool>,
    pub is_multi_region_trail: Option<bool>,
    pub enable_log_file_validation: Option<bool>,
    pub cloud_watch_logs_log_group_arn: Option<String>,
    pub cloud_watch_logs_role_arn: Option<String>,
    pub kms_key_id: Option<String>,
    pub is_organization_trail: Option<bool>,
    /// CreateTrail only.
    pub tags_list: Option<Vec<Tag>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeTrailsInput {
    pub trail_name_list: Option<Vec<String>>,
    pub include_shadow_trails: Option<bool>,
}

/// Extra trail attributes kept beside the engine's configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct TrailExtra {
    sns_topic_name: Option<String>,
    cloud_watch_logs_log_group_arn: Option<String>,
    cloud_watch_logs_role_arn: Option<String>,
}

fn extra_key(name: &str) -> String {
    format!("extra/{name}")
}

/// With a log group configured, delivery to it starts once the change is durable (deferred
/// after the trail's settings, so the delivery worker never sees a position without them).
fn start_cloud_watch(ctx: &mut Ctx<'_>, name: &str, cloud_watch: bool) {
    if cloud_watch {
        let (api, name) = (ctx.api.clone(), name.to_string());
        ctx.defer(
            Box::new(move || {
                crate::logs::deliver::start_at_end(&api, &name)?;
                Ok(crate::edge::Committed::default())
            }),
            None,
        );
    }
}

/// A trail's CloudWatch Logs log group and role ARNs, when it has them.
pub fn cloud_watch_target(meta: &crate::meta::Meta, trail: &str) -> Option<(String, String)> {
    let e: TrailExtra = meta.get(&extra_key(trail)).ok().flatten()?;
    Some((
        e.cloud_watch_logs_log_group_arn?,
        e.cloud_watch_logs_role_arn?,
    ))
}

pub(super) fn insights_key(name: &str) -> String {
    format!("insights/{name}")
}

/// A trail as CloudTrail answers it (the `Trail` shape).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct TrailView {
    name: String,
    s3_bucket_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    s3_key_prefix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sns_topic_name: Option<String>,
    #[serde(rename = "SnsTopicARN", skip_serializing_if = "Option::is_none")]
    sns_topic_arn: Option<String>,
    include_global_service_events: bool,
    is_multi_region_trail: bool,
    /// Absent from CreateTrail's and UpdateTrail's answers (read-only fields).
    #[serde(skip_serializing_if = "Option::is_none")]
    home_region: Option<String>,
    #[serde(rename = "TrailARN")]
    trail_arn: String,
    log_file_validation_enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    cloud_watch_logs_log_group_arn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cloud_watch_logs_role_arn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kms_key_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    has_custom_event_selectors: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    has_insight_selectors: Option<bool>,
    is_organization_trail: bool,
}

/// A trail named in a request, after validation.
pub(super) struct TrailRef {
    /// The ARN's region (a plain name names the trail wherever it is visible).
    region: Option<String>,
    account: String,
    name: String,
}

pub(super) fn not_found(name: &str, account: &str) -> ApiError {
    ApiError::client(
        "TrailNotFoundException",
        format!("Unknown trail: {name} for the user: {account}"),
    )
}

/// Reads a trail reference (name or ARN). An ARN must be cairn's: partition `aws`, service
/// `cloudtrail`, a 12-digit account, `trail/<valid name>`; anything else is
/// CloudTrailARNInvalidException, so no spelling of a trail escapes a policy written for its
/// real ARN.
pub(super) fn trail_ref(ctx: &Ctx<'_>, given: &str) -> Result<TrailRef, ApiError> {
    if !given.starts_with("arn:") {
        cairn_trail::validate_trail_name(given)
            .map_err(|m| ApiError::client("InvalidTrailNameException", m))?;
        return Ok(TrailRef {
            region: None,
            account: ctx.api.opts.account.clone(),
            name: given.to_string(),
        });
    }
    let invalid = || {
        ApiError::client(
            "CloudTrailARNInvalidException",
            format!("ARN {given} is invalid."),
        )
    };
    let a: Arn = given.parse().map_err(|_| invalid())?;
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

/// Finds a trail by reference as visible from this region: an ARN must name the trail's home
/// region and this account.
fn find_trail_ref(ctx: &Ctx<'_>, r: &TrailRef, given: &str) -> Result<TrailState, ApiError> {
    let account = &ctx.api.opts.account;
    match ctx.api.engine.trail(&r.name) {
        Some(t)
            if r.account == *account
                && r.region.as_ref().is_none_or(|x| *x == t.config.home_region)
                && (t.config.home_region == ctx.region || t.config.multi_region) =>
        {
            Ok(t)
        }
        _ => Err(not_found(given, account)),
    }
}

/// Finds a trail by name or ARN as visible from this region.
pub(super) fn find_trail(ctx: &Ctx<'_>, name: &str) -> Result<TrailState, ApiError> {
    let r = trail_ref(ctx, name)?;
    find_trail_ref(ctx, &r, name)
}

/// Resolves `given` and authorizes `action` on the trail's real ARN (or, when no such trail
/// is visible, on the ARN the reference denotes) before saying whether it exists.
pub(super) fn authorized_trail(
    ctx: &mut Ctx<'_>,
    given: &str,
    action: &str,
) -> Result<TrailState, ApiError> {
    let r = match trail_ref(ctx, given) {
        Ok(r) => r,
        Err(e) => {
            ctx.no_authorization_needed();
            return Err(e);
        }
    };
    let found = find_trail_ref(ctx, &r, given);
    let arn = match &found {
        Ok(t) => t.config.arn(),
        Err(_) => Arn::trail(
            r.region.as_deref().unwrap_or(&ctx.region),
            &r.account,
            &r.name,
        )
        .to_string(),
    };
    // Policies may condition on the trail's tags (looked up only when one does).
    let wanted = ctx
        .caller
        .policies
        .iter()
        .any(|p| p.mentions_key("aws:ResourceTag/"));
    if let (Ok(t), true) = (&found, wanted) {
        for (k, v) in tags::of(ctx, &t.config.arn())? {
            ctx.keys
                .set(&format!("aws:ResourceTag/{k}"), v.unwrap_or_default());
        }
    }
    ctx.authorize(action, &arn)?;
    found
}

/// The trail a request names, authorized for `action` and recorded as the event's resource.
pub(super) fn trail_arg(
    ctx: &mut Ctx<'_>,
    id: &TrailId,
    action: &str,
) -> Result<TrailState, ApiError> {
    let t = authorized_trail(ctx, &id.0, action)?;
    trail_resource(ctx, &t.config.arn());
    Ok(t)
}

/// The trail a change names: authorized, in its home region, read again under the control
/// lock (held until the change is made or forgotten).
pub(super) async fn locked_home_trail(
    ctx: &mut Ctx<'_>,
    id: &TrailId,
    action: &str,
) -> Result<(TrailState, tokio::sync::OwnedMutexGuard<()>), ApiError> {
    let t = trail_arg(ctx, id, action)?;
    require_home(ctx, &t)?;
    let guard = ctx.api.control.clone().lock_owned().await;
    Ok((find_trail(ctx, &t.config.name)?, guard))
}

/// Changes to a trail are made in its home region.
pub(super) fn require_home(ctx: &Ctx<'_>, t: &TrailState) -> Result<(), ApiError> {
    if t.config.home_region != ctx.region {
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

pub(super) fn trail_resource(ctx: &mut Ctx<'_>, arn: &str) {
    ctx.audit.resources = Some(vec![Resource {
        account_id: Some(ctx.api.opts.account.clone()),
        resource_type: "AWS::CloudTrail::Trail".into(),
        arn: Some(arn.to_string()),
        arn_prefix: None,
    }]);
}

fn extra_of(ctx: &Ctx<'_>, name: &str) -> Result<TrailExtra, ApiError> {
    Ok(ctx.api.meta.get(&extra_key(name))?.unwrap_or_default())
}

fn view(ctx: &Ctx<'_>, t: &TrailState, extra: &TrailExtra) -> Result<TrailView, ApiError> {
    let c = &t.config;
    let insights: Option<Vec<Value>> = ctx.api.meta.get(&insights_key(&c.name))?;
    Ok(TrailView {
        name: c.name.clone(),
        s3_bucket_name: c.s3_bucket.clone(),
        s3_key_prefix: c.prefix().map(str::to_string),
        sns_topic_name: extra.sns_topic_name.clone(),
        sns_topic_arn: extra
            .sns_topic_name
            .as_ref()
            .map(|s| Arn::new("sns", &c.home_region, &c.account, s).to_string()),
        include_global_service_events: c.include_global_service_events,
        is_multi_region_trail: c.multi_region,
        home_region: Some(c.home_region.clone()),
        trail_arn: c.arn(),
        log_file_validation_enabled: c.log_file_validation,
        cloud_watch_logs_log_group_arn: extra.cloud_watch_logs_log_group_arn.clone(),
        cloud_watch_logs_role_arn: extra.cloud_watch_logs_role_arn.clone(),
        kms_key_id: c.kms_key_id.clone(),
        has_custom_event_selectors: Some(c.selectors != TrailSelectors::default()),
        has_insight_selectors: Some(insights.is_some_and(|i| !i.is_empty())),
        is_organization_trail: false,
    })
}

/// A trail as GetTrail and DescribeTrails answer it.
fn trail_view(ctx: &Ctx<'_>, t: &TrailState) -> Result<TrailView, ApiError> {
    view(ctx, t, &extra_of(ctx, &t.config.name)?)
}

/// What CreateTrail and UpdateTrail answer: the Trail shape without the read-only fields
/// (home region, selector flags).
fn write_answer(ctx: &Ctx<'_>, t: &TrailState, extra: &TrailExtra) -> Answer {
    let mut v = view(ctx, t, extra)?;
    v.home_region = None;
    v.has_custom_event_selectors = None;
    v.has_insight_selectors = None;
    out(&v)
}

fn visible_trails(ctx: &Ctx<'_>) -> Vec<TrailState> {
    ctx.api
        .engine
        .trails()
        .into_iter()
        .filter(|t| t.config.home_region == ctx.region || t.config.multi_region)
        .collect()
}

/// Checks an ARN a request names: cairn's partition, `service`, this account, a served region
/// (or none for a global service, `regional` false), a resource starting with one of
/// `prefixes`.
fn check_arn(ctx: &Ctx, arn: &str, service: &str, regional: bool, prefixes: &[&str]) -> bool {
    let Ok(a) = arn.parse::<Arn>() else {
        return false;
    };
    let region_ok = if regional {
        ctx.api.opts.regions.contains(&a.region)
    } else {
        a.region.is_empty()
    };
    a.partition == cairn_record::arn::PARTITION
        && a.service == service
        && region_ok
        && a.account == ctx.api.opts.account
        && prefixes.iter().any(|p| a.resource.starts_with(p))
}

/// What an ARN-valued trail field may name, and the error for anything else.
struct ArnRule {
    service: &'static str,
    regional: bool,
    prefixes: &'static [&'static str],
    /// A plain name (not `arn:…`) is accepted as is.
    names: bool,
    code: &'static str,
    what: &'static str,
}

const KMS_KEY: ArnRule = ArnRule {
    service: "kms",
    regional: true,
    prefixes: &["key/", "alias/"],
    names: true,
    code: "InvalidKmsKeyIdException",
    what: "KMS key",
};
const SNS_TOPIC: ArnRule = ArnRule {
    service: "sns",
    regional: true,
    prefixes: &[""],
    names: true,
    code: "InvalidSnsTopicNameException",
    what: "Topic ARN",
};
const LOG_GROUP: ArnRule = ArnRule {
    service: "logs",
    regional: true,
    prefixes: &["log-group:"],
    names: false,
    code: "InvalidCloudWatchLogsLogGroupArnException",
    what: "Log group ARN",
};
const LOGS_ROLE: ArnRule = ArnRule {
    service: "iam",
    regional: false,
    prefixes: &["role/"],
    names: false,
    code: "InvalidCloudWatchLogsRoleArnException",
    what: "Role ARN",
};

/// An ARN-valued field as given: empty clears it; an ARN must be one of ours.
fn arn_field(ctx: &Ctx, v: &str, rule: &ArnRule) -> Result<Option<String>, ApiError> {
    let named = rule.names && !v.starts_with("arn:");
    let ok = v.is_empty() || named || check_arn(ctx, v, rule.service, rule.regional, rule.prefixes);
    if !ok {
        return Err(ApiError::client(
            rule.code,
            format!("{} {v} is invalid.", rule.what),
        ));
    }
    Ok((!v.is_empty()).then(|| v.to_string()))
}

/// The fields CreateTrail and UpdateTrail share, applied onto `c`.
fn apply_fields(
    ctx: &mut Ctx,
    f: &TrailFields,
    c: &mut TrailConfig,
    extra: &mut TrailExtra,
) -> Result<(), ApiError> {
    if let Some(b) = &f.s3_bucket_name {
        if cairn_store::check_bucket_name(b).is_err() {
            return Err(ApiError::client(
                "InvalidS3BucketNameException",
                format!("Bucket name is not valid: {b}"),
            ));
        }
        let exists = ctx
            .api
            .trail_store
            .bucket_exists(b)
            .map_err(ApiError::internal)?;
        if !exists {
            return Err(ApiError::client(
                "S3BucketDoesNotExistException",
                format!("S3 bucket does not exist: {b}"),
            ));
        }
        c.s3_bucket = b.clone();
    }
    if let Some(p) = &f.s3_key_prefix {
        if p.len() > 200 {
            return Err(ApiError::client(
                "InvalidS3PrefixException",
                "S3 key prefix must be at most 200 characters.",
            ));
        }
        c.s3_key_prefix = (!p.is_empty()).then(|| p.clone());
    }
    if let Some(g) = f.include_global_service_events {
        c.include_global_service_events = g;
    }
    if let Some(m) = f.is_multi_region_trail {
        c.multi_region = m;
    }
    if let Some(v) = f.enable_log_file_validation {
        c.log_file_validation = v;
    }
    if f.is_organization_trail == Some(true) {
        return Err(ApiError::client(
            "OrganizationsNotInUseException",
            "This account is not a member of an organization.",
        ));
    }
    let set = |v: &Option<String>, rule: &ArnRule, slot: &mut Option<String>| {
        if let Some(v) = v {
            *slot = arn_field(ctx, v, rule)?;
        }
        Ok::<_, ApiError>(())
    };
    set(&f.kms_key_id, &KMS_KEY, &mut c.kms_key_id)?;
    if let (Some(_), Some(k)) = (&f.kms_key_id, c.kms_key_id.clone()) {
        // The key must exist here, be enabled and let CloudTrail use it for this trail; the
        // trail keeps its ARN.
        c.kms_key_id = Some(crate::kms::on_behalf::check_trail_key(
            &ctx.api.kms,
            &c.home_region,
            &k,
            &c.arn(),
            ctx.now,
        )?);
    }
    set(&f.sns_topic_name, &SNS_TOPIC, &mut extra.sns_topic_name)?;
    set(
        &f.cloud_watch_logs_log_group_arn,
        &LOG_GROUP,
        &mut extra.cloud_watch_logs_log_group_arn,
    )?;
    set(
        &f.cloud_watch_logs_role_arn,
        &LOGS_ROLE,
        &mut extra.cloud_watch_logs_role_arn,
    )?;
    if extra.cloud_watch_logs_log_group_arn.is_some() != extra.cloud_watch_logs_role_arn.is_some() {
        return Err(ApiError::client(
            "InvalidCloudWatchLogsLogGroupArnException",
            "You must specify both a log group ARN and a role ARN.",
        ));
    }
    // As CloudTrail: the group must exist, and the role must trust CloudTrail and allow it
    // to create the trail's stream and put events there.
    if f.cloud_watch_logs_log_group_arn.is_some() || f.cloud_watch_logs_role_arn.is_some() {
        if let (Some(g), Some(r)) = (
            &extra.cloud_watch_logs_log_group_arn,
            &extra.cloud_watch_logs_role_arn,
        ) {
            crate::logs::deliver::check(ctx.api, &c.arn(), g, r)
                .map_err(|(code, m)| ApiError::client(code, m))?;
            // Handing CloudTrail a role is passing it, as on AWS: the caller needs
            // iam:PassRole on it (else anyone who may update a trail could route every
            // principal's events through any role that trusts CloudTrail).
            if f.cloud_watch_logs_role_arn.is_some() {
                ctx.authorize("iam:PassRole", r)?;
            }
        }
    }
    // CloudTrail checks the bucket policy up front: a policy must let this trail write under
    // its prefix (a bucket without one accepts its own account's trails).
    let probe = match c.prefix() {
        Some(p) => format!("{p}/AWSLogs/{}/CloudTrail/probe", c.account),
        None => format!("AWSLogs/{}/CloudTrail/probe", c.account),
    };
    if !c.s3_bucket.is_empty()
        && !crate::s3::delivery::delivery_allowed(
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

pub(super) async fn create(ctx: &mut Ctx<'_>, action: &str, f: TrailFields) -> Answer {
    let Some(name) = f.name.clone().filter(|n| !n.is_empty()) else {
        ctx.no_authorization_needed();
        return Err(ApiError::client(
            "TrailNotProvidedException",
            "Trail name must be specified.",
        ));
    };
    let account = ctx.api.opts.account.clone();
    let arn = Arn::trail(&ctx.region, &account, &name).to_string();
    let given_tags = f.tags_list.clone().unwrap_or_default();
    tags::request_tag_keys(ctx, &given_tags);
    ctx.authorize(action, &arn)?;
    cairn_trail::validate_trail_name(&name)
        .map_err(|m| ApiError::client("InvalidTrailNameException", m))?;
    if f.s3_bucket_name.as_deref().is_none_or(str::is_empty) {
        return Err(ApiError::client(
            "InvalidS3BucketNameException",
            "S3 bucket name must be specified.",
        ));
    }
    let tags = tags::validate(&given_tags)?;
    tags::check_limit(&tags)?;
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
    apply_fields(ctx, &f, &mut c, &mut extra)?;
    trail_resource(ctx, &c.arn());
    let answer = write_answer(ctx, &TrailState::new(c.clone()), &extra)?;
    // Made once this request's event is durable.
    let cw = extra.cloud_watch_logs_log_group_arn.is_some();
    ctx.defer_meta_put(extra_key(&name), extra);
    start_cloud_watch(ctx, &name, cw);
    ctx.defer_meta_put(tags::key(&c.arn()), tags);
    let at = ctx.now;
    defer_command(ctx, TrailCommand::Put { config: c, at })?;
    ctx.hold_until_made(guard);
    Ok(answer)
}

pub(super) async fn update(ctx: &mut Ctx<'_>, action: &str, f: TrailFields) -> Answer {
    let Some(name) = f.name.clone().filter(|n| !n.is_empty()) else {
        ctx.no_authorization_needed();
        return Err(ApiError::client(
            "InvalidTrailNameException",
            "Trail name or ARN can only contain uppercase letters, lowercase letters, numbers, periods (.), hyphens (-), and underscores (_).",
        ));
    };
    let (t, guard) = locked_home_trail(ctx, &TrailId(name), action).await?;
    let mut c = t.config.clone();
    let mut extra = extra_of(ctx, &c.name)?;
    apply_fields(ctx, &f, &mut c, &mut extra)?;
    let answer = write_answer(
        ctx,
        &TrailState {
            config: c.clone(),
            ..t.clone()
        },
        &extra,
    )?;
    let cw = extra.cloud_watch_logs_log_group_arn.is_some();
    ctx.defer_meta_put(extra_key(&c.name), extra);
    start_cloud_watch(ctx, &c.name, cw);
    if c != t.config {
        let at = ctx.now;
        defer_command(ctx, TrailCommand::Put { config: c, at })?;
    }
    ctx.hold_until_made(guard);
    Ok(answer)
}

pub(super) async fn delete(ctx: &mut Ctx<'_>, action: &str, id: TrailId) -> Answer {
    let (t, guard) = locked_home_trail(ctx, &id, action).await?;
    let name = t.config.name.clone();
    let at = ctx.now;
    defer_command(
        ctx,
        TrailCommand::Delete {
            name: name.clone(),
            at,
        },
    )?;
    for k in [
        extra_key(&name),
        insights_key(&name),
        tags::key(&t.config.arn()),
    ] {
        ctx.defer_meta_delete(k);
    }
    ctx.hold_until_made(guard);
    Ok(empty())
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct OneTrail {
    trail: TrailView,
}

pub(super) fn get(ctx: &mut Ctx<'_>, action: &str, id: TrailId) -> Answer {
    let t = trail_arg(ctx, &id, action)?;
    out(&OneTrail {
        trail: trail_view(ctx, &t)?,
    })
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TrailList {
    trail_list: Vec<TrailView>,
}

pub(super) fn describe(ctx: &mut Ctx<'_>, action: &str, i: DescribeTrailsInput) -> Answer {
    ctx.authorize(action, "*")?;
    let shadows = i.include_shadow_trails.unwrap_or(true);
    let names = i.trail_name_list.unwrap_or_default();
    let mut list = Vec::new();
    if names.is_empty() {
        for t in visible_trails(ctx) {
            if t.config.home_region == ctx.region || shadows {
                list.push(trail_view(ctx, &t)?);
            }
        }
    } else {
        for n in names {
            match find_trail(ctx, &n) {
                Ok(t) if t.config.home_region == ctx.region || shadows => {
                    list.push(trail_view(ctx, &t)?)
                }
                Ok(_) => {}
                Err(e) if e.code == "TrailNotFoundException" => {}
                Err(e) => return Err(e),
            }
        }
    }
    out(&TrailList { trail_list: list })
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct TrailInfo {
    #[serde(rename = "TrailARN")]
    trail_arn: String,
    name: String,
    home_region: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Trails {
    trails: Vec<TrailInfo>,
}

pub(super) fn list(ctx: &mut Ctx<'_>, action: &str) -> Answer {
    ctx.authorize(action, "*")?;
    let trails = visible_trails(ctx)
        .into_iter()
        .map(|t| TrailInfo {
            trail_arn: t.config.arn(),
            name: t.config.name,
            home_region: t.config.home_region,
        })
        .collect();
    out(&Trails { trails })
}
