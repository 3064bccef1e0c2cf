//! IAM policy documents and their evaluation (trust-and-testing §4.2). Pure: no I/O.
//!
//! Evaluation follows AWS's order for one account: an explicit `Deny` in any applicable
//! policy wins; otherwise an `Allow` in any of them (identity or resource policy) allows;
//! otherwise the request is implicitly denied.

use serde_json::Value;
use std::collections::HashMap;

/// What a policy says about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    ExplicitDeny,
    ImplicitDeny,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
}

/// A pattern list that matches (`Action`, `Resource`, `Principal`) or matches everything
/// except (`NotAction`, …).
#[derive(Debug, Clone, PartialEq)]
enum Patterns {
    Any(Vec<String>),
    Not(Vec<String>),
}

/// `Principal` of a resource or trust policy.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PrincipalSpec {
    /// `"*"` or `{"AWS": "*"}`.
    pub everyone: bool,
    /// ARNs or 12-digit account ids.
    pub aws: Vec<String>,
    /// e.g. `cloudtrail.amazonaws.com`.
    pub service: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    StringEquals,
    StringNotEquals,
    StringEqualsIgnoreCase,
    StringNotEqualsIgnoreCase,
    StringLike,
    StringNotLike,
    ArnEquals,
    ArnNotEquals,
    ArnLike,
    ArnNotLike,
    Bool,
    Null,
}

impl Op {
    fn parse(s: &str) -> Option<(Op, bool)> {
        let (name, if_exists) = match s.strip_suffix("IfExists") {
            Some(n) => (n, true),
            None => (s, false),
        };
        let op = match name {
            "StringEquals" => Op::StringEquals,
            "StringNotEquals" => Op::StringNotEquals,
            "StringEqualsIgnoreCase" => Op::StringEqualsIgnoreCase,
            "StringNotEqualsIgnoreCase" => Op::StringNotEqualsIgnoreCase,
            "StringLike" => Op::StringLike,
            "StringNotLike" => Op::StringNotLike,
            "ArnEquals" => Op::ArnEquals,
            "ArnNotEquals" => Op::ArnNotEquals,
            "ArnLike" => Op::ArnLike,
            "ArnNotLike" => Op::ArnNotLike,
            "Bool" => Op::Bool,
            "Null" if !if_exists => Op::Null,
            _ => return None,
        };
        Some((op, if_exists))
    }

    fn negated(self) -> bool {
        matches!(
            self,
            Op::StringNotEquals
                | Op::StringNotEqualsIgnoreCase
                | Op::StringNotLike
                | Op::ArnNotEquals
                | Op::ArnNotLike
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Condition {
    op: Op,
    if_exists: bool,
    key: String,
    values: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
struct Statement {
    effect: Effect,
    principal: Option<PrincipalSpec>,
    not_principal: Option<PrincipalSpec>,
    actions: Patterns,
    resources: Option<Patterns>,
    conditions: Vec<Condition>,
}

/// A parsed policy document.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    statements: Vec<Statement>,
}

/// Why a document is not a policy; the text becomes `MalformedPolicyDocument`'s message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MalformedPolicy(pub String);

fn bad(m: impl Into<String>) -> MalformedPolicy {
    MalformedPolicy(m.into())
}

fn string_list(v: &Value, what: &str) -> Result<Vec<String>, MalformedPolicy> {
    match v {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(a) if !a.is_empty() => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| bad(format!("{what} must be a string or a list of strings")))
            })
            .collect(),
        _ => Err(bad(format!(
            "{what} must be a string or a non-empty list of strings"
        ))),
    }
}

fn condition_values(v: &Value) -> Result<Vec<String>, MalformedPolicy> {
    let one = |x: &Value| match x {
        Value::String(s) => Ok(s.clone()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Number(n) => Ok(n.to_string()),
        _ => Err(bad("Condition values must be strings, booleans or numbers")),
    };
    match v {
        Value::Array(a) => a.iter().map(one).collect(),
        x => Ok(vec![one(x)?]),
    }
}

fn principal(v: &Value) -> Result<PrincipalSpec, MalformedPolicy> {
    let mut p = PrincipalSpec::default();
    match v {
        Value::String(s) if s == "*" => p.everyone = true,
        Value::Object(m) => {
            for (k, v) in m {
                let list = string_list(v, "Principal")?;
                match k.as_str() {
                    "AWS" => {
                        if list.iter().any(|x| x == "*") {
                            p.everyone = true;
                        }
                        p.aws.extend(list.into_iter().filter(|x| x != "*"));
                    }
                    "Service" => p.service.extend(list),
                    "Federated" | "CanonicalUser" => {}
                    other => return Err(bad(format!("Invalid principal type {other}"))),
                }
            }
        }
        _ => return Err(bad("Invalid principal in policy")),
    }
    Ok(p)
}

impl Policy {
    /// Parses a policy document (JSON text).
    pub fn parse(text: &str) -> Result<Policy, MalformedPolicy> {
        let v: Value = serde_json::from_str(text).map_err(|_| bad("Syntax errors in policy."))?;
        let obj = v
            .as_object()
            .ok_or_else(|| bad("Syntax errors in policy."))?;
        if let Some(ver) = obj.get("Version") {
            if !matches!(ver.as_str(), Some("2012-10-17" | "2008-10-17")) {
                return Err(bad("The policy failed legacy parsing"));
            }
        }
        let stmts = match obj.get("Statement") {
            Some(Value::Array(a)) if !a.is_empty() => a.clone(),
            Some(o @ Value::Object(_)) => vec![o.clone()],
            _ => return Err(bad("Missing required field Statement")),
        };
        let mut statements = Vec::new();
        for s in &stmts {
            let s = s
                .as_object()
                .ok_or_else(|| bad("Statement must be an object"))?;
            let effect = match s.get("Effect").and_then(Value::as_str) {
                Some("Allow") => Effect::Allow,
                Some("Deny") => Effect::Deny,
                _ => return Err(bad("Missing required field Effect")),
            };
            let actions = match (s.get("Action"), s.get("NotAction")) {
                (Some(a), None) => Patterns::Any(string_list(a, "Action")?),
                (None, Some(a)) => Patterns::Not(string_list(a, "NotAction")?),
                _ => return Err(bad("Missing required field Action")),
            };
            let resources = match (s.get("Resource"), s.get("NotResource")) {
                (Some(a), None) => Some(Patterns::Any(string_list(a, "Resource")?)),
                (None, Some(a)) => Some(Patterns::Not(string_list(a, "NotResource")?)),
                (None, None) => None,
                _ => return Err(bad("Resource and NotResource cannot both be present")),
            };
            let mut conditions = Vec::new();
            if let Some(c) = s.get("Condition") {
                let c = c
                    .as_object()
                    .ok_or_else(|| bad("Condition must be an object"))?;
                for (op_name, body) in c {
                    let (op, if_exists) = Op::parse(op_name)
                        .ok_or_else(|| bad(format!("Invalid Condition type : {op_name}.")))?;
                    let body = body
                        .as_object()
                        .ok_or_else(|| bad("Condition block must be an object"))?;
                    for (key, vals) in body {
                        conditions.push(Condition {
                            op,
                            if_exists,
                            key: key.clone(),
                            values: condition_values(vals)?,
                        });
                    }
                }
            }
            statements.push(Statement {
                effect,
                principal: s.get("Principal").map(principal).transpose()?,
                not_principal: s.get("NotPrincipal").map(principal).transpose()?,
                actions,
                resources,
                conditions,
            });
        }
        Ok(Policy { statements })
    }

    /// An identity policy that allows everything (used for nothing but tests and docs).
    pub fn allow_all() -> Policy {
        Policy {
            statements: vec![Statement {
                effect: Effect::Allow,
                principal: None,
                not_principal: None,
                actions: Patterns::Any(vec!["*".into()]),
                resources: Some(Patterns::Any(vec!["*".into()])),
                conditions: vec![],
            }],
        }
    }

    /// Whether some Allow statement is open to everyone without conditions (what S3's
    /// BlockPublicPolicy refuses).
    pub fn grants_public_allow(&self) -> bool {
        self.statements.iter().any(|s| {
            s.effect == Effect::Allow
                && s.principal.as_ref().is_some_and(|p| p.everyone)
                && s.conditions.is_empty()
        })
    }

    /// Evaluates this policy alone.
    pub fn evaluate(&self, req: &RequestContext) -> Decision {
        evaluate(std::slice::from_ref(self), req)
    }

    /// Whether this (trust or resource) policy names the caller as principal for the request,
    /// and how: `Some(true)` when the caller itself (or a service) is named, `Some(false)`
    /// when only its account is (AWS then also requires the account's own identity policies
    /// to allow), `None` when no Allow statement applies or a Deny does.
    pub fn principal_allows(&self, req: &RequestContext) -> Option<bool> {
        let mut best: Option<bool> = None;
        for s in &self.statements {
            if !s.applies(req) {
                continue;
            }
            let named = match &s.principal {
                Some(p) => principal_match(p, req.principal),
                None => s
                    .not_principal
                    .as_ref()
                    .map(|np| principal_match(np, req.principal).is_none().then_some(true))
                    .unwrap_or(None),
            };
            match (s.effect, named) {
                (Effect::Deny, Some(_)) => return None,
                (Effect::Allow, Some(direct)) => best = Some(best.unwrap_or(false) || direct),
                _ => {}
            }
        }
        best
    }
}

/// Who is asking.
#[derive(Debug, Clone)]
pub struct Principal {
    /// `arn:aws:iam::ACCOUNT:root`, `…:user/NAME`, `arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION`.
    pub arn: String,
    pub account: String,
    /// For assumed roles, the role's ARN (trust and resource policies may name it).
    pub role_arn: Option<String>,
    /// Set when an AWS service calls as itself (e.g. `cloudtrail.amazonaws.com`).
    pub service: Option<String>,
}

/// One request as policies see it.
#[derive(Debug, Clone)]
pub struct RequestContext<'a> {
    pub principal: &'a Principal,
    /// `service:Operation`, e.g. `cloudtrail:StopLogging`.
    pub action: &'a str,
    /// The resource ARN, or `*` when the action has none.
    pub resource: &'a str,
    /// Condition keys (`aws:SourceArn`, `aws:SecureTransport`, …), case-insensitive names.
    pub keys: &'a HashMap<String, String>,
}

impl RequestContext<'_> {
    fn key(&self, name: &str) -> Option<&str> {
        let lower = name.to_ascii_lowercase();
        if lower == "aws:principalarn" {
            return Some(
                self.principal
                    .role_arn
                    .as_deref()
                    .unwrap_or(&self.principal.arn),
            );
        }
        if lower == "aws:principalaccount" {
            return Some(&self.principal.account);
        }
        self.keys
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// AWS's `*`/`?` wildcard match.
pub fn wildcard(pattern: &str, s: &str, case_insensitive: bool) -> bool {
    let (p, s): (Vec<char>, Vec<char>) = if case_insensitive {
        (
            pattern.to_lowercase().chars().collect(),
            s.to_lowercase().chars().collect(),
        )
    } else {
        (pattern.chars().collect(), s.chars().collect())
    };
    let (mut pi, mut si) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while si < s.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = si;
            pi += 1;
        } else if let Some(st) = star {
            pi = st + 1;
            mark += 1;
            si = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// ArnLike: the six colon-separated parts match part by part (the last may contain colons).
fn arn_like(pattern: &str, arn: &str) -> bool {
    let p: Vec<&str> = pattern.splitn(6, ':').collect();
    let a: Vec<&str> = arn.splitn(6, ':').collect();
    if p.len() != 6 || a.len() != 6 {
        return pattern == "*" || wildcard(pattern, arn, false);
    }
    p.iter().zip(&a).all(|(p, a)| wildcard(p, a, false))
}

fn principal_match(p: &PrincipalSpec, who: &Principal) -> Option<bool> {
    if let Some(svc) = &who.service {
        return p.service.iter().any(|s| s == svc).then_some(true);
    }
    if p.everyone {
        return Some(true);
    }
    let root = format!("arn:aws:iam::{}:root", who.account);
    let mut account_level = false;
    for a in &p.aws {
        if a == &who.arn || Some(a) == who.role_arn.as_ref() {
            return Some(true);
        }
        if a == &who.account || a == &root {
            if who.arn == root {
                return Some(true);
            }
            account_level = true;
        }
    }
    account_level.then_some(false)
}

impl Condition {
    fn holds(&self, req: &RequestContext) -> bool {
        let value = req.key(&self.key);
        if self.op == Op::Null {
            let want_absent = self.values.iter().any(|v| v.eq_ignore_ascii_case("true"));
            return value.is_none() == want_absent;
        }
        let Some(v) = value else {
            // A missing key fails a positive condition and satisfies a negated one; IfExists
            // makes any condition on a missing key hold.
            return self.if_exists || self.op.negated();
        };
        let any = |f: &dyn Fn(&str) -> bool| self.values.iter().any(|p| f(p));
        match self.op {
            Op::StringEquals => any(&|p| p == v),
            Op::StringNotEquals => !any(&|p| p == v),
            Op::StringEqualsIgnoreCase => any(&|p| p.eq_ignore_ascii_case(v)),
            Op::StringNotEqualsIgnoreCase => !any(&|p| p.eq_ignore_ascii_case(v)),
            Op::StringLike => any(&|p| wildcard(p, v, false)),
            Op::StringNotLike => !any(&|p| wildcard(p, v, false)),
            Op::ArnEquals | Op::ArnLike => any(&|p| arn_like(p, v)),
            Op::ArnNotEquals | Op::ArnNotLike => !any(&|p| arn_like(p, v)),
            Op::Bool => any(&|p| p.eq_ignore_ascii_case(v)),
            Op::Null => unreachable!("handled above"),
        }
    }
}

impl Statement {
    /// Action, resource and conditions match (the principal is checked by the caller).
    fn applies(&self, req: &RequestContext) -> bool {
        let action_hit = |ps: &[String]| ps.iter().any(|p| wildcard(p, req.action, true));
        let resource_hit = |ps: &[String]| ps.iter().any(|p| wildcard(p, req.resource, false));
        let action_ok = match &self.actions {
            Patterns::Any(ps) => action_hit(ps),
            Patterns::Not(ps) => !action_hit(ps),
        };
        let resource_ok = match &self.resources {
            None => true,
            Some(Patterns::Any(ps)) => resource_hit(ps),
            Some(Patterns::Not(ps)) => !resource_hit(ps),
        };
        action_ok && resource_ok && self.conditions.iter().all(|c| c.holds(req))
    }

    /// Whether the statement's principal covers the caller. Naming only the caller's account
    /// grants nothing by itself (the account's identity policies decide), but still denies.
    fn principal_ok(&self, req: &RequestContext) -> bool {
        match (&self.principal, &self.not_principal) {
            (None, None) => true,
            (Some(p), _) => match principal_match(p, req.principal) {
                Some(direct) => direct || self.effect == Effect::Deny,
                None => false,
            },
            (None, Some(np)) => principal_match(np, req.principal).is_none(),
        }
    }
}

/// Evaluates identity and resource policies together: explicit deny > allow > implicit deny.
/// Statements with a `Principal` apply only when it names the caller.
pub fn evaluate(policies: &[Policy], req: &RequestContext) -> Decision {
    let mut allowed = false;
    for p in policies {
        for s in &p.statements {
            if !s.principal_ok(req) || !s.applies(req) {
                continue;
            }
            match s.effect {
                Effect::Deny => return Decision::ExplicitDeny,
                Effect::Allow => allowed = true,
            }
        }
    }
    if allowed {
        Decision::Allow
    } else {
        Decision::ImplicitDeny
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> Principal {
        Principal {
            arn: "arn:aws:iam::123456789012:user/alice".into(),
            account: "123456789012".into(),
            role_arn: None,
            service: None,
        }
    }

    fn ctx<'a>(
        p: &'a Principal,
        action: &'a str,
        resource: &'a str,
        keys: &'a HashMap<String, String>,
    ) -> RequestContext<'a> {
        RequestContext {
            principal: p,
            action,
            resource,
            keys,
        }
    }

    const TRAIL: &str = "arn:aws:cloudtrail:us-east-1:123456789012:trail/acme";

    #[test]
    fn deny_beats_allow_and_nothing_is_implicit_deny() {
        let allow = Policy::parse(r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"cloudtrail:*","Resource":"*"}}"#).unwrap();
        let deny = Policy::parse(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":"cloudtrail:StopLogging","Resource":"arn:aws:cloudtrail:*:*:trail/*"}]}"#).unwrap();
        let k = HashMap::new();
        let u = user();
        let stop = ctx(&u, "cloudtrail:StopLogging", TRAIL, &k);
        let get = ctx(&u, "cloudtrail:GetTrailStatus", TRAIL, &k);
        assert_eq!(
            evaluate(std::slice::from_ref(&allow), &stop),
            Decision::Allow
        );
        assert_eq!(
            evaluate(&[allow.clone(), deny.clone()], &stop),
            Decision::ExplicitDeny
        );
        assert_eq!(evaluate(&[allow, deny.clone()], &get), Decision::Allow);
        assert_eq!(evaluate(&[deny], &get), Decision::ImplicitDeny);
        assert_eq!(evaluate(&[], &get), Decision::ImplicitDeny);
    }

    #[test]
    fn actions_match_case_insensitively_with_wildcards_resources_case_sensitively() {
        let p = Policy::parse(r#"{"Statement":{"Effect":"Allow","Action":["CloudTrail:Get*","s3:?etObject"],"Resource":"arn:aws:s3:::logs/*"}}"#).unwrap();
        let k = HashMap::new();
        let u = user();
        assert_eq!(
            p.evaluate(&ctx(&u, "cloudtrail:GetTrail", "arn:aws:s3:::logs/a", &k)),
            Decision::Allow
        );
        assert_eq!(
            p.evaluate(&ctx(&u, "s3:GetObject", "arn:aws:s3:::logs/x/y", &k)),
            Decision::Allow
        );
        assert_eq!(
            p.evaluate(&ctx(&u, "s3:GetObject", "arn:aws:s3:::LOGS/x", &k)),
            Decision::ImplicitDeny
        );
        assert_eq!(
            p.evaluate(&ctx(&u, "s3:DeleteObject", "arn:aws:s3:::logs/x", &k)),
            Decision::ImplicitDeny
        );
    }

    #[test]
    fn not_action_and_not_resource() {
        let p = Policy::parse(r#"{"Statement":[{"Effect":"Allow","NotAction":"iam:*","NotResource":"arn:aws:s3:::secret/*"}]}"#).unwrap();
        let k = HashMap::new();
        let u = user();
        assert_eq!(
            p.evaluate(&ctx(&u, "s3:GetObject", "arn:aws:s3:::public/a", &k)),
            Decision::Allow
        );
        assert_eq!(
            p.evaluate(&ctx(&u, "s3:GetObject", "arn:aws:s3:::secret/a", &k)),
            Decision::ImplicitDeny
        );
        assert_eq!(
            p.evaluate(&ctx(&u, "iam:CreateUser", "*", &k)),
            Decision::ImplicitDeny
        );
    }

    fn keys(kv: &[(&str, &str)]) -> HashMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn conditions_and_their_if_exists_forms() {
        let p = Policy::parse(r#"{"Statement":[{"Effect":"Allow","Action":"s3:PutObject","Resource":"*",
            "Condition":{"StringEquals":{"s3:x-amz-acl":"bucket-owner-full-control","aws:SourceAccount":"123456789012"},
                         "ArnLike":{"aws:SourceArn":"arn:aws:cloudtrail:*:123456789012:trail/*"}}}]}"#).unwrap();
        let u = user();
        let good = keys(&[
            ("s3:x-amz-acl", "bucket-owner-full-control"),
            ("aws:SourceAccount", "123456789012"),
            ("aws:SourceArn", TRAIL),
        ]);
        assert_eq!(
            p.evaluate(&ctx(&u, "s3:PutObject", "x", &good)),
            Decision::Allow
        );
        let mut wrong_acl = good.clone();
        wrong_acl.insert("s3:x-amz-acl".into(), "private".into());
        assert_eq!(
            p.evaluate(&ctx(&u, "s3:PutObject", "x", &wrong_acl)),
            Decision::ImplicitDeny
        );
        let mut other_trail = good.clone();
        other_trail.insert(
            "aws:SourceArn".into(),
            "arn:aws:cloudtrail:us-east-1:999999999999:trail/acme".into(),
        );
        assert_eq!(
            p.evaluate(&ctx(&u, "s3:PutObject", "x", &other_trail)),
            Decision::ImplicitDeny
        );
        let mut missing = good.clone();
        missing.remove("aws:SourceArn");
        assert_eq!(
            p.evaluate(&ctx(&u, "s3:PutObject", "x", &missing)),
            Decision::ImplicitDeny,
            "a missing key fails a positive condition"
        );
        let ie = Policy::parse(r#"{"Statement":[{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"ArnLikeIfExists":{"aws:SourceArn":"arn:aws:cloudtrail:*:123456789012:trail/*"}}}]}"#).unwrap();
        assert_eq!(
            ie.evaluate(&ctx(&u, "s3:PutObject", "x", &missing)),
            Decision::Allow
        );
        assert_eq!(
            ie.evaluate(&ctx(&u, "s3:PutObject", "x", &other_trail)),
            Decision::ImplicitDeny
        );
    }

    #[test]
    fn bool_null_string_like_and_principal_arn() {
        let deny_insecure = Policy::parse(r#"{"Statement":[{"Effect":"Deny","Action":"*","Resource":"*","Condition":{"Bool":{"aws:SecureTransport":"false"}}},
            {"Effect":"Allow","Action":"*","Resource":"*","Condition":{"StringLike":{"aws:PrincipalArn":"arn:aws:iam::*:user/al*"},"Null":{"aws:SourceArn":"true"}}}]}"#).unwrap();
        let u = user();
        let tls = keys(&[("aws:SecureTransport", "true")]);
        let plain = keys(&[("aws:SecureTransport", "false")]);
        assert_eq!(
            deny_insecure.evaluate(&ctx(&u, "s3:GetObject", "x", &tls)),
            Decision::Allow
        );
        assert_eq!(
            deny_insecure.evaluate(&ctx(&u, "s3:GetObject", "x", &plain)),
            Decision::ExplicitDeny
        );
        let with_src = keys(&[("aws:SecureTransport", "true"), ("aws:SourceArn", TRAIL)]);
        assert_eq!(
            deny_insecure.evaluate(&ctx(&u, "s3:GetObject", "x", &with_src)),
            Decision::ImplicitDeny
        );
        let bob = Principal {
            arn: "arn:aws:iam::123456789012:user/bob".into(),
            ..user()
        };
        assert_eq!(
            deny_insecure.evaluate(&ctx(&bob, "s3:GetObject", "x", &tls)),
            Decision::ImplicitDeny
        );
    }

    #[test]
    fn service_principals_and_trust_policies() {
        let bucket = Policy::parse(r#"{"Version":"2012-10-17","Statement":[{"Sid":"AWSCloudTrailWrite20150319","Effect":"Allow",
            "Principal":{"Service":"cloudtrail.amazonaws.com"},"Action":"s3:PutObject","Resource":"arn:aws:s3:::logs/AWSLogs/123456789012/*",
            "Condition":{"StringEquals":{"s3:x-amz-acl":"bucket-owner-full-control","aws:SourceArn":"arn:aws:cloudtrail:us-east-1:123456789012:trail/acme"}}}]}"#).unwrap();
        let ct = Principal {
            arn: "cloudtrail.amazonaws.com".into(),
            account: "123456789012".into(),
            role_arn: None,
            service: Some("cloudtrail.amazonaws.com".into()),
        };
        let k = keys(&[
            ("s3:x-amz-acl", "bucket-owner-full-control"),
            ("aws:SourceArn", TRAIL),
        ]);
        let key = "arn:aws:s3:::logs/AWSLogs/123456789012/CloudTrail/x.json.gz";
        assert_eq!(
            bucket.evaluate(&ctx(&ct, "s3:PutObject", key, &k)),
            Decision::Allow
        );
        let u = user();
        assert_eq!(
            bucket.evaluate(&ctx(&u, "s3:PutObject", key, &k)),
            Decision::ImplicitDeny,
            "a user is not the service principal"
        );

        let trust = Policy::parse(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:root"},"Action":"sts:AssumeRole"}]}"#).unwrap();
        let none = HashMap::new();
        let role = "arn:aws:iam::123456789012:role/auditor";
        assert_eq!(
            trust.principal_allows(&ctx(&u, "sts:AssumeRole", role, &none)),
            Some(false),
            "trusting the account delegates to the caller's own policies"
        );
        let direct = Policy::parse(r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":["arn:aws:iam::123456789012:user/alice"]},"Action":"sts:AssumeRole"}]}"#).unwrap();
        assert_eq!(
            direct.principal_allows(&ctx(&u, "sts:AssumeRole", role, &none)),
            Some(true)
        );
        let bob = Principal {
            arn: "arn:aws:iam::123456789012:user/bob".into(),
            ..user()
        };
        assert_eq!(
            direct.principal_allows(&ctx(&bob, "sts:AssumeRole", role, &none)),
            None
        );
    }

    #[test]
    fn malformed_documents_are_refused_with_a_reason() {
        for bad in [
            "",
            "[]",
            r#"{"Statement":[]}"#,
            r#"{"Statement":{"Action":"*","Resource":"*"}}"#,
            r#"{"Statement":{"Effect":"Maybe","Action":"*"}}"#,
            r#"{"Statement":{"Effect":"Allow","Resource":"*"}}"#,
            r#"{"Statement":{"Effect":"Allow","Action":"*","Condition":{"Frobnicate":{"a":"b"}}}}"#,
            r#"{"Version":"2020-01-01","Statement":{"Effect":"Allow","Action":"*"}}"#,
        ] {
            assert!(Policy::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn wildcard_edge_cases() {
        assert!(wildcard("*", "", false));
        assert!(wildcard("a*b*c", "aXXbYYc", false));
        assert!(!wildcard("a*b*c", "aXXbYY", false));
        assert!(wildcard("a?c", "abc", false));
        assert!(!wildcard("a?c", "ac", false));
        assert!(arn_like(
            "arn:aws:cloudtrail:*:123456789012:trail/*",
            "arn:aws:cloudtrail:eu-west-1:123456789012:trail/x"
        ));
        assert!(!arn_like(
            "arn:aws:cloudtrail:*:123456789012:trail/*",
            "arn:aws:cloudtrail:eu-west-1:123456789013:trail/x"
        ));
    }
}
