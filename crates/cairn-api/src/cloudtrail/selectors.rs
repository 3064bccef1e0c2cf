//! Selectors: PutEventSelectors, GetEventSelectors (basic or advanced), PutInsightSelectors,
//! GetInsightSelectors.

use super::trails::{insights_key, locked_home_trail, require_home, trail_arg};
use super::{defer_command, member, out, Answer, TrailId};
use crate::edge::Ctx;
use crate::protocol::ApiError;
use cairn_record::selector::{AdvancedEventSelector, EventSelector, TrailSelectors};
use cairn_trail::TrailCommand;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, Clone)]
pub struct PutEventSelectorsInput {
    pub trail: TrailId,
    pub basic: Option<Vec<EventSelector>>,
    pub advanced: Option<Vec<AdvancedEventSelector>>,
}

fn invalid_selectors(m: String) -> ApiError {
    ApiError::client("InvalidEventSelectorsException", m)
}

/// Reads PutEventSelectors' input; selectors of the wrong shape are
/// InvalidEventSelectorsException.
pub(super) fn put_event_selectors_input(
    body: &Map<String, Value>,
) -> Result<PutEventSelectorsInput, ApiError> {
    Ok(PutEventSelectorsInput {
        trail: super::trail_id(body, "TrailName")?,
        basic: member(body, "EventSelectors", |e| {
            invalid_selectors(format!("Invalid EventSelectors: {e}"))
        })?,
        advanced: member(body, "AdvancedEventSelectors", |e| {
            invalid_selectors(format!("Invalid AdvancedEventSelectors: {e}"))
        })?,
    })
}

/// The selectors as GetEventSelectors and PutEventSelectors answer them.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct EventSelectors<'a> {
    #[serde(rename = "TrailARN")]
    trail_arn: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    event_selectors: Option<&'a Vec<EventSelector>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    advanced_event_selectors: Option<&'a Vec<AdvancedEventSelector>>,
}

fn answer(arn: String, s: &TrailSelectors) -> Answer {
    let (basic, advanced) = match s {
        TrailSelectors::Basic(b) => (Some(b), None),
        TrailSelectors::Advanced(a) => (None, Some(a)),
    };
    out(&EventSelectors {
        trail_arn: arn,
        event_selectors: basic,
        advanced_event_selectors: advanced,
    })
}

pub(super) async fn put_event(
    ctx: &mut Ctx<'_>,
    action: &str,
    i: PutEventSelectorsInput,
) -> Answer {
    let (t, guard) = locked_home_trail(ctx, &i.trail, action).await?;
    let selectors =
        match (i.basic, i.advanced) {
            (Some(_), Some(_)) => return Err(ApiError::client(
                "InvalidParameterCombinationException",
                "You cannot specify both EventSelectors and AdvancedEventSelectors in a request.",
            )),
            (None, None) => {
                return Err(invalid_selectors(
                    "You must specify either EventSelectors or AdvancedEventSelectors.".into(),
                ))
            }
            (Some(b), None) => TrailSelectors::Basic(b),
            (None, Some(a)) => TrailSelectors::Advanced(a),
        };
    selectors
        .validate()
        .map_err(|e| invalid_selectors(e.message))?;
    let mut c = t.config;
    c.selectors = selectors;
    let answer = answer(c.arn(), &c.selectors)?;
    let at = ctx.now;
    defer_command(ctx, TrailCommand::Put { config: c, at })?;
    ctx.hold_until_made(guard);
    Ok(answer)
}

pub(super) fn get_event(ctx: &mut Ctx<'_>, action: &str, id: TrailId) -> Answer {
    let t = trail_arg(ctx, &id, action)?;
    answer(t.config.arn(), &t.config.selectors)
}

/// An insight selector as requests carry it and answers give it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct InsightSelector {
    pub insight_type: Option<String>,
}

#[derive(Debug, Clone)]
pub struct PutInsightSelectorsInput {
    pub trail: TrailId,
    pub selectors: Option<Vec<InsightSelector>>,
}

/// Reads PutInsightSelectors' input; selectors of the wrong shape are
/// InvalidInsightSelectorsException.
pub(super) fn put_insight_selectors_input(
    body: &Map<String, Value>,
) -> Result<PutInsightSelectorsInput, ApiError> {
    Ok(PutInsightSelectorsInput {
        trail: super::trail_id(body, "TrailName")?,
        selectors: member(body, "InsightSelectors", |e| {
            ApiError::client(
                "InvalidInsightSelectorsException",
                format!("Invalid InsightSelectors: {e}"),
            )
        })?,
    })
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct InsightSelectors {
    #[serde(rename = "TrailARN")]
    trail_arn: String,
    insight_selectors: Vec<InsightSelector>,
}

pub(super) fn put_insight(ctx: &mut Ctx<'_>, action: &str, i: PutInsightSelectorsInput) -> Answer {
    let t = trail_arg(ctx, &i.trail, action)?;
    require_home(ctx, &t)?;
    let invalid = |m: String| ApiError::client("InvalidInsightSelectorsException", m);
    let given = i
        .selectors
        .ok_or_else(|| invalid("InsightSelectors must be specified.".into()))?;
    let mut kept: Vec<InsightSelector> = Vec::new();
    for s in given {
        let ty = s.insight_type.as_deref().unwrap_or("");
        if !matches!(ty, "ApiCallRateInsight" | "ApiErrorRateInsight") {
            return Err(invalid(format!(
                "Insight type {ty:?} is not valid; use ApiCallRateInsight or ApiErrorRateInsight."
            )));
        }
        if kept.contains(&s) {
            return Err(invalid(format!(
                "Insight type {ty} is specified more than once."
            )));
        }
        kept.push(s);
    }
    ctx.defer_meta_put(insights_key(&t.config.name), kept.clone());
    out(&InsightSelectors {
        trail_arn: t.config.arn(),
        insight_selectors: kept,
    })
}

pub(super) fn get_insight(ctx: &mut Ctx<'_>, action: &str, id: TrailId) -> Answer {
    let t = trail_arg(ctx, &id, action)?;
    let sel: Option<Vec<InsightSelector>> = ctx.api.meta.get(&insights_key(&t.config.name))?;
    match sel {
        Some(s) if !s.is_empty() => out(&InsightSelectors {
            trail_arn: t.config.arn(),
            insight_selectors: s,
        }),
        _ => Err(ApiError::client(
            "InsightNotEnabledException",
            format!("Trail {} does not have Insights enabled.", t.config.arn()),
        )),
    }
}
