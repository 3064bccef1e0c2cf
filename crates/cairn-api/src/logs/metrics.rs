//! Metric filters: Put/Describe/DeleteMetricFilter, TestMetricFilter, and the data points
//! they make of matching events (kept in the log store for alarms, per minute).

use super::groups::{authorize_group, check_name, existing, group_arn, lock_existing, LogGroup};
use super::invalid;
use crate::edge::Ctx;
use crate::protocol::ApiError;
use crate::Api;
use cairn_logs::pattern::Field;
use cairn_logs::{FilterPattern, NewEvent};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The most metric filters a log group may have.
pub const MAX_FILTERS_PER_GROUP: usize = 100;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Transformation {
    pub metric_name: String,
    pub metric_namespace: String,
    pub metric_value: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_value: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

/// A stored metric filter.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MetricFilter {
    pub name: String,
    pub group: String,
    pub pattern: String,
    pub transformations: Vec<Transformation>,
    pub created: i64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PutInput {
    pub log_group_name: String,
    pub filter_name: String,
    pub filter_pattern: String,
    pub metric_transformations: Vec<Transformation>,
    pub apply_on_transformed_logs: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeInput {
    pub log_group_name: Option<String>,
    pub filter_name_prefix: Option<String>,
    pub metric_name: Option<String>,
    pub metric_namespace: Option<String>,
    pub next_token: Option<String>,
    pub limit: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteInput {
    pub log_group_name: String,
    pub filter_name: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TestInput {
    pub filter_pattern: String,
    pub log_event_messages: Vec<String>,
}

pub(super) fn filter_prefix(region: &str, group: &str) -> String {
    format!("logs/mf/{region}\u{0}{group}\u{0}")
}

/// A group's metric filters.
pub(super) fn of_group(api: &Api, g: &LogGroup) -> Result<Vec<MetricFilter>, ApiError> {
    Ok(api
        .meta
        .scan::<MetricFilter>(&filter_prefix(&g.region, &g.name))?
        .into_iter()
        .map(|(_, f)| f)
        .collect())
}

fn check_metric_name(what: &str, v: &str) -> Result<(), ApiError> {
    if v.is_empty() || v.len() > 255 || v.contains([':', '*', '$']) {
        return Err(invalid(format!(
            "1 validation error detected: Value '{v}' at '{what}' failed to satisfy constraint: Member must satisfy regular expression pattern: [^:*$]*"
        )));
    }
    Ok(())
}

fn check_selector(what: &str, v: &str) -> Result<(), ApiError> {
    let ok = v.parse::<f64>().is_ok()
        || (v.starts_with('$')
            && v.len() > 1
            && v.len() <= 255
            && !v.contains(char::is_whitespace));
    if !ok {
        return Err(invalid(format!(
            "Invalid {what} '{v}': a number, or a field of the pattern ($.field or $name)."
        )));
    }
    Ok(())
}

fn check_transformations(t: &[Transformation]) -> Result<(), ApiError> {
    if t.len() != 1 {
        return Err(invalid(
            "1 validation error detected: Value at 'metricTransformations' failed to satisfy constraint: Member must have length less than or equal to 1",
        ));
    }
    for x in t {
        check_metric_name("metricTransformations.1.member.metricName", &x.metric_name)?;
        check_metric_name(
            "metricTransformations.1.member.metricNamespace",
            &x.metric_namespace,
        )?;
        check_selector("metricValue", &x.metric_value)?;
        if let Some(d) = &x.dimensions {
            if d.len() > 3 {
                return Err(invalid("A metric filter may have at most 3 dimensions."));
            }
            if x.default_value.is_some() && !d.is_empty() {
                return Err(invalid(
                    "Metric filters with dimensions cannot have a default value.",
                ));
            }
            for (k, v) in d {
                if k.is_empty() || k.len() > 255 {
                    return Err(invalid(format!("Invalid dimension name '{k}'.")));
                }
                if !v.starts_with('$') {
                    return Err(invalid(format!(
                        "Invalid dimension value '{v}': dimensions take a field of the pattern."
                    )));
                }
            }
        }
        if let Some(u) = &x.unit {
            const UNITS: &[&str] = &[
                "Seconds",
                "Microseconds",
                "Milliseconds",
                "Bytes",
                "Kilobytes",
                "Megabytes",
                "Gigabytes",
                "Terabytes",
                "Bits",
                "Kilobits",
                "Megabits",
                "Gigabits",
                "Terabits",
                "Percent",
                "Count",
                "Bytes/Second",
                "Kilobytes/Second",
                "Megabytes/Second",
                "Gigabytes/Second",
                "Terabytes/Second",
                "Bits/Second",
                "Kilobits/Second",
                "Megabits/Second",
                "Gigabits/Second",
                "Terabits/Second",
                "Count/Second",
                "None",
            ];
            if !UNITS.contains(&u.as_str()) {
                return Err(invalid(format!("Invalid unit '{u}'.")));
            }
        }
    }
    Ok(())
}

fn parse_pattern(p: &str) -> Result<FilterPattern, ApiError> {
    FilterPattern::parse(p).map_err(|e| invalid(format!("Invalid metric filter pattern: {e}")))
}

pub(super) async fn put(ctx: &mut Ctx<'_>, action: &str, i: PutInput) -> Result<Value, ApiError> {
    authorize_group(ctx, action, &i.log_group_name)?;
    if i.filter_name.is_empty() || i.filter_name.len() > 512 || i.filter_name.contains([':', '*']) {
        return Err(invalid(format!(
            "1 validation error detected: Value '{}' at 'filterName' failed to satisfy constraint: Member must satisfy regular expression pattern: [^:*]*",
            i.filter_name
        )));
    }
    parse_pattern(&i.filter_pattern)?;
    check_transformations(&i.metric_transformations)?;
    let (g, guard) = lock_existing(ctx, &i.log_group_name).await?;
    let key = format!("{}{}", filter_prefix(&g.region, &g.name), i.filter_name);
    let others = of_group(ctx.api, &g)?;
    if !others.iter().any(|f| f.name == i.filter_name) && others.len() >= MAX_FILTERS_PER_GROUP {
        return Err(ApiError::client(
            "LimitExceededException",
            "Resource limit exceeded: a log group may have at most 100 metric filters.",
        ));
    }
    let created = others
        .iter()
        .find(|f| f.name == i.filter_name)
        .map_or(ctx.now.timestamp_millis(), |f| f.created);
    ctx.defer_meta_put(
        key,
        MetricFilter {
            name: i.filter_name,
            group: g.name,
            pattern: i.filter_pattern,
            transformations: i.metric_transformations,
            created,
        },
    );
    ctx.hold_until_made(guard);
    Ok(json!({}))
}

pub(super) async fn delete(
    ctx: &mut Ctx<'_>,
    action: &str,
    i: DeleteInput,
) -> Result<Value, ApiError> {
    authorize_group(ctx, action, &i.log_group_name)?;
    let (g, guard) = lock_existing(ctx, &i.log_group_name).await?;
    let key = format!("{}{}", filter_prefix(&g.region, &g.name), i.filter_name);
    if ctx.api.meta.get::<MetricFilter>(&key)?.is_none() {
        return Err(ApiError::client(
            "ResourceNotFoundException",
            "The specified metric filter does not exist.",
        ));
    }
    ctx.defer_meta_delete(key);
    ctx.hold_until_made(guard);
    Ok(json!({}))
}

fn view(f: &MetricFilter, arn: &str) -> Value {
    json!({
        "filterName": f.name,
        "filterPattern": f.pattern,
        "metricTransformations": f.transformations,
        "creationTime": f.created,
        "logGroupName": f.group,
        "applyOnTransformedLogs": false,
        "logGroupArn": arn,
    })
}

pub(super) fn describe(
    ctx: &mut Ctx<'_>,
    action: &str,
    i: DescribeInput,
) -> Result<Value, ApiError> {
    if i.metric_name.is_some() != i.metric_namespace.is_some() {
        return Err(invalid(
            "metricName and metricNamespace must be specified together.",
        ));
    }
    if i.filter_name_prefix.is_some() && i.log_group_name.is_none() {
        return Err(invalid(
            "filterNamePrefix can be specified only with logGroupName.",
        ));
    }
    let prefix = match &i.log_group_name {
        Some(n) => {
            check_name(n)?;
            ctx.authorize(action, &format!("{}:*", group_arn(ctx, n)))?;
            let g = existing(ctx, n)?;
            format!(
                "{}{}",
                filter_prefix(&g.region, &g.name),
                i.filter_name_prefix.as_deref().unwrap_or_default()
            )
        }
        None => {
            ctx.authorize(
                action,
                &format!(
                    "arn:aws:logs:{}:{}:log-group:*",
                    ctx.region, ctx.api.opts.account
                ),
            )?;
            format!("logs/mf/{}\u{0}", ctx.region)
        }
    };
    let all: Vec<Value> = ctx
        .api
        .meta
        .scan::<MetricFilter>(&prefix)?
        .into_iter()
        .map(|(_, f)| f)
        .filter(|f| {
            i.metric_name.as_ref().is_none_or(|m| {
                f.transformations.iter().any(|t| {
                    &t.metric_name == m && Some(&t.metric_namespace) == i.metric_namespace.as_ref()
                })
            })
        })
        .map(|f| view(&f, &group_arn(ctx, &f.group)))
        .collect();
    let (page, next) = super::groups::page(&all, i.limit, i.next_token.as_deref(), 50)?;
    let mut v = json!({ "metricFilters": page });
    if let Some(n) = next {
        v["nextToken"] = json!(n);
    }
    Ok(v)
}

/// The values a pattern extracts from a message (TestMetricFilter's `extractedValues`):
/// the named fields of a space-delimited pattern, as `$name`.
fn extracted(p: &FilterPattern, message: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let FilterPattern::Delimited(fields) = p {
        for f in fields {
            if let Field::Named(n, _) = f {
                if let Some(v) = p.value_of(n, message) {
                    out.insert(format!("${n}"), v);
                }
            }
        }
    }
    out
}

pub(super) fn test(ctx: &mut Ctx<'_>, action: &str, i: TestInput) -> Result<Value, ApiError> {
    ctx.authorize(action, "*")?;
    if i.log_event_messages.is_empty() || i.log_event_messages.len() > 50 {
        return Err(invalid(
            "1 validation error detected: Value at 'logEventMessages' failed to satisfy constraint: Member must have length between 1 and 50",
        ));
    }
    let p = parse_pattern(&i.filter_pattern)?;
    let matches: Vec<Value> = i
        .log_event_messages
        .iter()
        .enumerate()
        .filter(|(_, m)| p.matches(m))
        .map(|(n, m)| {
            json!({
                "eventNumber": n + 1,
                "eventMessage": m,
                "extractedValues": extracted(&p, m),
            })
        })
        .collect();
    Ok(json!({ "matches": matches }))
}

/// A metric series' name in the log store: region, namespace, metric, dimensions.
pub fn series(
    region: &str,
    namespace: &str,
    metric: &str,
    dims: &BTreeMap<String, String>,
) -> String {
    format!(
        "{region}\u{0}{namespace}\u{0}{metric}\u{0}{}",
        serde_json::to_string(dims).unwrap_or_default()
    )
}

/// The data points `events` make for the group's metric filters: (series, minute, value).
pub fn points(
    api: &Api,
    g: &LogGroup,
    events: &[NewEvent],
) -> Result<Vec<(String, i64, f64)>, ApiError> {
    let mut out = Vec::new();
    for f in of_group(api, g)? {
        let Ok(p) = FilterPattern::parse(&f.pattern) else {
            continue;
        };
        for t in &f.transformations {
            let mut matched = false;
            for e in events {
                if !p.matches(&e.message) {
                    continue;
                }
                matched = true;
                let value = match t.metric_value.parse::<f64>() {
                    Ok(v) => Some(v),
                    Err(_) => p
                        .value_of(&t.metric_value, &e.message)
                        .and_then(|v| v.parse::<f64>().ok()),
                };
                let Some(value) = value else { continue };
                let mut dims = BTreeMap::new();
                for (k, sel) in t.dimensions.iter().flatten() {
                    if let Some(v) = p.value_of(sel, &e.message) {
                        dims.insert(k.clone(), v);
                    }
                }
                out.push((
                    series(&g.region, &t.metric_namespace, &t.metric_name, &dims),
                    e.timestamp.div_euclid(60_000),
                    value,
                ));
            }
            if let (false, Some(d), Some(e)) = (matched, t.default_value, events.last()) {
                out.push((
                    series(
                        &g.region,
                        &t.metric_namespace,
                        &t.metric_name,
                        &BTreeMap::new(),
                    ),
                    e.timestamp.div_euclid(60_000),
                    d,
                ));
            }
        }
    }
    Ok(out)
}
