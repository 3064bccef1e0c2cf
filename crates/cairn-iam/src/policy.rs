//! IAM policy documents and their evaluation (trust-and-testing §4.2). Pure: no I/O.
//!
//! Evaluation follows AWS's order for one account: an explicit `Deny` in any applicable
//! policy wins; otherwise an `Allow` in any of them (identity or resource policy) allows;
//! otherwise the request is implicitly denied.
//!
//! The condition language is AWS's: String*, Numeric*, Date*, Bool, BinaryEquals,
//! IpAddress/NotIpAddress, Arn*, Null, every operator's `…IfExists` form, the
//! `ForAnyValue:`/`ForAllValues:` set operators over multivalued keys, and policy variables
//! (`${aws:username}`, `${aws:PrincipalTag/team}`, `${key, 'default'}`, `${*}`, `${?}`,
//! `${$}`) in `Resource`/`NotResource` and condition values of 2012-10-17 documents.
//! A key the request does not carry is absent, as in AWS: a positive condition on it fails,
//! a negated one holds, `…IfExists` holds, `Null: true` holds.

use serde_json::Value;
use std::collections::HashMap;
use std::net::IpAddr;

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

/// The condition operators, in their positive form; `negated` turns StringEquals into
/// StringNotEquals and so on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    StringEquals,
    StringEqualsIgnoreCase,
    StringLike,
    NumericEquals,
    NumericLessThan,
    NumericLessThanEquals,
    NumericGreaterThan,
    NumericGreaterThanEquals,
    DateEquals,
    DateLessThan,
    DateLessThanEquals,
    DateGreaterThan,
    DateGreaterThanEquals,
    Bool,
    BinaryEquals,
    IpAddress,
    ArnLike,
    Null,
}

/// `ForAnyValue:` / `ForAllValues:` (multivalued keys), or neither.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SetOp {
    Single,
    AnyValue,
    AllValues,
}

#[derive(Debug, Clone, PartialEq)]
struct Condition {
    op: Op,
    negated: bool,
    set: SetOp,
    if_exists: bool,
    key: String,
    values: Vec<String>,
}

/// Parses a condition operator name: `(op, negated, set, if_exists)`.
fn parse_op(name: &str) -> Option<(Op, bool, SetOp, bool)> {
    let (set, rest) = if let Some(r) = name.strip_prefix("ForAnyValue:") {
        (SetOp::AnyValue, r)
    } else if let Some(r) = name.strip_prefix("ForAllValues:") {
        (SetOp::AllValues, r)
    } else {
        (SetOp::Single, name)
    };
    let (base, if_exists) = match rest.strip_suffix("IfExists") {
        Some(n) => (n, true),
        None => (rest, false),
    };
    let (op, negated) = match base {
        "StringEquals" => (Op::StringEquals, false),
        "StringNotEquals" => (Op::StringEquals, true),
        "StringEqualsIgnoreCase" => (Op::StringEqualsIgnoreCase, false),
        "StringNotEqualsIgnoreCase" => (Op::StringEqualsIgnoreCase, true),
        "StringLike" => (Op::StringLike, false),
        "StringNotLike" => (Op::StringLike, true),
        "NumericEquals" => (Op::NumericEquals, false),
        "NumericNotEquals" => (Op::NumericEquals, true),
        "NumericLessThan" => (Op::NumericLessThan, false),
        "NumericLessThanEquals" => (Op::NumericLessThanEquals, false),
        "NumericGreaterThan" => (Op::NumericGreaterThan, false),
        "NumericGreaterThanEquals" => (Op::NumericGreaterThanEquals, false),
        "DateEquals" => (Op::DateEquals, false),
        "DateNotEquals" => (Op::DateEquals, true),
        "DateLessThan" => (Op::DateLessThan, false),
        "DateLessThanEquals" => (Op::DateLessThanEquals, false),
        "DateGreaterThan" => (Op::DateGreaterThan, false),
        "DateGreaterThanEquals" => (Op::DateGreaterThanEquals, false),
        "Bool" => (Op::Bool, false),
        "BinaryEquals" => (Op::BinaryEquals, false),
        "IpAddress" => (Op::IpAddress, false),
        "NotIpAddress" => (Op::IpAddress, true),
        "ArnEquals" | "ArnLike" => (Op::ArnLike, false),
        "ArnNotEquals" | "ArnNotLike" => (Op::ArnLike, true),
        "Null" if !if_exists && set == SetOp::Single => (Op::Null, false),
        _ => return None,
    };
    Some((op, negated, set, if_exists))
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
    /// Policy variables are substituted (Version 2012-10-17); in older documents `${…}` is text.
    variables: bool,
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
                        for x in list {
                            if x == "*" {
                                p.everyone = true;
                            } else if x.contains('*') || x.contains('?') {
                                // AWS allows no wildcard in a principal but `*` itself.
                                return Err(bad("Invalid principal in policy"));
                            } else {
                                p.aws.push(x);
                            }
                        }
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

/// Checks a condition value the operator must be able to read (values holding a policy
/// variable are read at evaluation time).
fn check_value(op: Op, v: &str) -> Result<(), MalformedPolicy> {
    if v.contains("${") {
        return Ok(());
    }
    let ok = match op {
        Op::NumericEquals
        | Op::NumericLessThan
        | Op::NumericLessThanEquals
        | Op::NumericGreaterThan
        | Op::NumericGreaterThanEquals => v.trim().parse::<f64>().is_ok(),
        Op::DateEquals
        | Op::DateLessThan
        | Op::DateLessThanEquals
        | Op::DateGreaterThan
        | Op::DateGreaterThanEquals => parse_date(v).is_some(),
        Op::IpAddress => parse_cidr(v).is_some(),
        Op::Bool | Op::Null => v.eq_ignore_ascii_case("true") || v.eq_ignore_ascii_case("false"),
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(bad(format!("Invalid Condition value {v:?}")))
    }
}

/// Condition keys whose fixed values make an Allow to everyone non-public (S3, "The meaning
/// of public").
const RESTRICTING_KEYS: &[&str] = &[
    "aws:sourcearn",
    "aws:sourcevpc",
    "aws:sourcevpce",
    "aws:sourceaccount",
    "aws:sourceowner",
    "aws:userid",
    "aws:principalaccount",
    "aws:principalarn",
    "aws:principalorgid",
    "s3:dataaccesspointarn",
    "s3:dataaccesspointaccount",
    "aws:sourceip",
];

impl Condition {
    /// Whether this condition pins the request to fixed, non-wildcard values of a key that
    /// S3 counts as making a statement non-public.
    fn restricts_to_fixed_values(&self) -> bool {
        if self.negated || self.if_exists || self.set != SetOp::Single || self.values.is_empty() {
            return false;
        }
        let key = self.key.to_ascii_lowercase();
        if !RESTRICTING_KEYS.contains(&key.as_str()) {
            return false;
        }
        let fixed = |v: &String| !v.contains(['*', '?']) && !v.contains("${");
        match self.op {
            Op::IpAddress => {
                key == "aws:sourceip"
                    && self.values.iter().all(|v| match parse_cidr(v) {
                        // A range wider than /8 (IPv4) or /32 (IPv6) counts as public.
                        Some((IpAddr::V4(_), len)) => len >= 8,
                        Some((IpAddr::V6(_), len)) => len >= 32,
                        None => false,
                    })
            }
            Op::StringEquals | Op::StringEqualsIgnoreCase | Op::StringLike | Op::ArnLike => {
                key != "aws:sourceip" && self.values.iter().all(fixed)
            }
            _ => false,
        }
    }
}

impl Policy {
    /// Parses a policy document (JSON text).
    pub fn parse(text: &str) -> Result<Policy, MalformedPolicy> {
        let v: Value = serde_json::from_str(text).map_err(|_| bad("Syntax errors in policy."))?;
        let obj = v
            .as_object()
            .ok_or_else(|| bad("Syntax errors in policy."))?;
        let variables = match obj.get("Version") {
            None => false,
            Some(ver) => match ver.as_str() {
                Some("2012-10-17") => true,
                Some("2008-10-17") => false,
                _ => return Err(bad("The policy failed legacy parsing")),
            },
        };
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
            if s.contains_key("Principal") && s.contains_key("NotPrincipal") {
                return Err(bad("Principal and NotPrincipal cannot both be present"));
            }
            let mut conditions = Vec::new();
            if let Some(c) = s.get("Condition") {
                let c = c
                    .as_object()
                    .ok_or_else(|| bad("Condition must be an object"))?;
                for (op_name, body) in c {
                    let (op, negated, set, if_exists) = parse_op(op_name)
                        .ok_or_else(|| bad(format!("Invalid Condition type : {op_name}.")))?;
                    let body = body
                        .as_object()
                        .ok_or_else(|| bad("Condition block must be an object"))?;
                    for (key, vals) in body {
                        let values = condition_values(vals)?;
                        for v in &values {
                            check_value(op, v)?;
                        }
                        conditions.push(Condition {
                            op,
                            negated,
                            set,
                            if_exists,
                            key: key.clone(),
                            values,
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
        Ok(Policy {
            statements,
            variables,
        })
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
            variables: true,
        }
    }

    /// Whether the policy grants public access as S3 defines it ("The meaning of public",
    /// what BlockPublicPolicy refuses): some Allow statement names everyone (`*`, or any
    /// `NotPrincipal`, which allows everyone not listed) and no condition pins it to fixed
    /// values of a restricting key (`aws:SourceArn`, `aws:SourceAccount`, `aws:PrincipalArn`,
    /// a narrow `aws:SourceIp` range, …). A statement without a principal counts as public too
    /// (resource policies need one; a parser that let one through must not make it private).
    pub fn grants_public_allow(&self) -> bool {
        self.statements.iter().any(|s| {
            let everyone = match (&s.principal, &s.not_principal) {
                (Some(p), _) => p.everyone,
                (None, Some(_)) => true,
                (None, None) => true,
            };
            s.effect == Effect::Allow
                && everyone
                && !s
                    .conditions
                    .iter()
                    .any(Condition::restricts_to_fixed_values)
        })
    }

    /// Checks the rules a resource policy (an S3 bucket policy) adds to IAM's: every statement
    /// names a `Principal` (or `NotPrincipal`), every resource is accepted by `resource_ok`
    /// (the bucket and its objects), and every action by `action_ok`. The messages are S3's.
    pub fn check_resource_policy(
        &self,
        resource_ok: impl Fn(&str) -> bool,
        action_ok: impl Fn(&str) -> bool,
    ) -> Result<(), MalformedPolicy> {
        self.check_statements(Some(&resource_ok), action_ok)
    }

    /// The rules of a KMS key policy: every statement names a principal and only actions
    /// `action_ok` accepts; `Resource` may be left out (it can only mean the key itself).
    pub fn check_key_policy(
        &self,
        action_ok: impl Fn(&str) -> bool,
    ) -> Result<(), MalformedPolicy> {
        self.check_statements(None::<&fn(&str) -> bool>, action_ok)
    }

    fn check_statements(
        &self,
        resource_ok: Option<&impl Fn(&str) -> bool>,
        action_ok: impl Fn(&str) -> bool,
    ) -> Result<(), MalformedPolicy> {
        for s in &self.statements {
            if s.principal.is_none() && s.not_principal.is_none() {
                return Err(bad("Missing required field Principal"));
            }
            let actions = match &s.actions {
                Patterns::Any(a) | Patterns::Not(a) => a,
            };
            if !actions.iter().all(|a| action_ok(a)) {
                return Err(bad("Policy has invalid action"));
            }
            let Some(resource_ok) = resource_ok else {
                continue;
            };
            match &s.resources {
                None => return Err(bad("Missing required field Resource")),
                Some(Patterns::Any(r) | Patterns::Not(r)) => {
                    if !r.iter().all(|r| resource_ok(r)) {
                        return Err(bad("Policy has invalid resource"));
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether some condition reads a key whose name starts with `prefix` (case-insensitive),
    /// so a caller knows it must look up what that key needs (an object's tags).
    pub fn mentions_key(&self, prefix: &str) -> bool {
        let prefix = prefix.to_ascii_lowercase();
        self.statements.iter().any(|s| {
            s.conditions
                .iter()
                .any(|c| c.key.to_ascii_lowercase().starts_with(&prefix))
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
            if !s.applies(req, self.variables) {
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

/// The condition keys of one request: names are case-insensitive; a key has one value or,
/// for multivalued keys (`aws:TagKeys`, `s3:RequestObjectTagKeys`), several.
#[derive(Debug, Clone, Default)]
pub struct ConditionKeys(HashMap<String, Vec<String>>);

impl ConditionKeys {
    pub fn new() -> ConditionKeys {
        ConditionKeys::default()
    }

    /// Sets a single-valued key.
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        self.0.insert(name.to_ascii_lowercase(), vec![value.into()]);
    }

    /// Sets a multivalued key (an empty list is a present key with no values).
    pub fn set_many(&mut self, name: &str, values: Vec<String>) {
        self.0.insert(name.to_ascii_lowercase(), values);
    }

    pub fn remove(&mut self, name: &str) {
        self.0.remove(&name.to_ascii_lowercase());
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Removes every key whose name starts with `prefix`.
    pub fn remove_prefix(&mut self, prefix: &str) {
        let prefix = prefix.to_ascii_lowercase();
        self.0.retain(|k, _| !k.starts_with(&prefix));
    }

    pub fn get(&self, name: &str) -> Option<&[String]> {
        self.0.get(&name.to_ascii_lowercase()).map(Vec::as_slice)
    }

    /// The first value of a key.
    pub fn first(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| v.first()).map(String::as_str)
    }

    /// Adds every key of `other`, replacing keys of the same name.
    pub fn extend(&mut self, other: &ConditionKeys) {
        for (k, v) in &other.0 {
            self.0.insert(k.clone(), v.clone());
        }
    }
}

/// One request as policies see it.
#[derive(Debug, Clone)]
pub struct RequestContext<'a> {
    pub principal: &'a Principal,
    /// `service:Operation`, e.g. `cloudtrail:StopLogging`.
    pub action: &'a str,
    /// The resource ARN, or `*` when the action has none.
    pub resource: &'a str,
    /// Condition keys (`aws:SourceArn`, `aws:SecureTransport`, …).
    pub keys: &'a ConditionKeys,
}

impl RequestContext<'_> {
    /// A key's values; `aws:PrincipalArn` and `aws:PrincipalAccount` come from the principal
    /// when the request does not carry them.
    fn values(&self, name: &str) -> Option<Vec<&str>> {
        if let Some(v) = self.keys.get(name) {
            return Some(v.iter().map(String::as_str).collect());
        }
        if name.eq_ignore_ascii_case("aws:PrincipalArn") {
            return Some(vec![self
                .principal
                .role_arn
                .as_deref()
                .unwrap_or(&self.principal.arn)]);
        }
        if name.eq_ignore_ascii_case("aws:PrincipalAccount") {
            return Some(vec![&self.principal.account]);
        }
        None
    }

    /// A policy variable's value (its key's first value).
    fn variable(&self, name: &str) -> Option<String> {
        self.values(name)
            .and_then(|v| v.first().map(|s| s.to_string()))
    }
}

/// One element of a compiled wildcard pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    Lit(char),
    /// `*`: any run of characters.
    Star,
    /// `?`: exactly one character.
    One,
}

/// Compiles `pattern`, substituting policy variables when `vars` (their values are literal
/// text, never wildcards). `None` when a variable's key is absent and has no default: the
/// pattern then matches nothing.
fn compile(pattern: &str, vars: bool, req: &RequestContext) -> Option<Vec<Tok>> {
    let mut out = Vec::with_capacity(pattern.len());
    let mut rest = pattern;
    while let Some(c) = rest.chars().next() {
        if vars && rest.starts_with("${") {
            if let Some(end) = rest.find('}') {
                let inner = &rest[2..end];
                match inner {
                    "*" => out.push(Tok::Lit('*')),
                    "?" => out.push(Tok::Lit('?')),
                    "$" => out.push(Tok::Lit('$')),
                    _ => {
                        let (key, default) = match inner.split_once(',') {
                            Some((k, d)) => {
                                let d = d.trim();
                                let d = d
                                    .strip_prefix('\'')
                                    .and_then(|d| d.strip_suffix('\''))
                                    .unwrap_or(d);
                                (k.trim(), Some(d.to_string()))
                            }
                            None => (inner.trim(), None),
                        };
                        let value = req.variable(key).or(default)?;
                        out.extend(value.chars().map(Tok::Lit));
                    }
                }
                rest = &rest[end + 1..];
                continue;
            }
        }
        out.push(match c {
            '*' => Tok::Star,
            '?' => Tok::One,
            c => Tok::Lit(c),
        });
        rest = &rest[c.len_utf8()..];
    }
    Some(out)
}

/// The literal text a compiled pattern stands for (wildcards as their characters), for the
/// operators that compare exactly.
fn literal(toks: &[Tok]) -> String {
    toks.iter()
        .map(|t| match t {
            Tok::Lit(c) => *c,
            Tok::Star => '*',
            Tok::One => '?',
        })
        .collect()
}

fn chars_eq(a: char, b: char, ci: bool) -> bool {
    a == b || (ci && a.to_lowercase().eq(b.to_lowercase()))
}

/// Wildcard match of compiled `p` against `s` (`*` any run, `?` one character).
fn tok_match(p: &[Tok], s: &str, ci: bool) -> bool {
    let s: Vec<char> = s.chars().collect();
    let (mut pi, mut si) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while si < s.len() {
        match p.get(pi) {
            Some(Tok::One) => {
                pi += 1;
                si += 1;
            }
            Some(Tok::Lit(c)) if chars_eq(*c, s[si], ci) => {
                pi += 1;
                si += 1;
            }
            Some(Tok::Star) => {
                star = Some(pi);
                mark = si;
                pi += 1;
            }
            _ => match star {
                Some(st) => {
                    pi = st + 1;
                    mark += 1;
                    si = mark;
                }
                None => return false,
            },
        }
    }
    while p.get(pi) == Some(&Tok::Star) {
        pi += 1;
    }
    pi == p.len()
}

/// AWS's `*`/`?` wildcard match.
pub fn wildcard(pattern: &str, s: &str, case_insensitive: bool) -> bool {
    tok_match(&toks(pattern), s, case_insensitive)
}

/// A pattern's tokens: `*`, `?` and literal characters.
fn toks(pattern: &str) -> Vec<Tok> {
    pattern
        .chars()
        .map(|c| match c {
            '*' => Tok::Star,
            '?' => Tok::One,
            c => Tok::Lit(c),
        })
        .collect()
}

/// ArnLike/ArnEquals: the six colon-separated parts match part by part (the last may contain
/// colons).
fn arn_like_toks(p: &[Tok], arn: &str) -> bool {
    let mut parts: Vec<&[Tok]> = Vec::with_capacity(6);
    let mut start = 0;
    for (i, t) in p.iter().enumerate() {
        if parts.len() == 5 {
            break;
        }
        if *t == Tok::Lit(':') {
            parts.push(&p[start..i]);
            start = i + 1;
        }
    }
    parts.push(&p[start..]);
    let a: Vec<&str> = arn.splitn(6, ':').collect();
    if parts.len() != 6 || a.len() != 6 {
        return p == [Tok::Star] || tok_match(p, arn, false);
    }
    parts.iter().zip(&a).all(|(p, a)| tok_match(p, a, false))
}

#[cfg(test)]
fn arn_like(pattern: &str, arn: &str) -> bool {
    arn_like_toks(&toks(pattern), arn)
}

/// Dates in policies: ISO 8601 (with or without time) or epoch seconds.
fn parse_date(s: &str) -> Option<f64> {
    let s = s.trim();
    if let Ok(n) = s.parse::<f64>() {
        return Some(n);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp() as f64 + f64::from(t.timestamp_subsec_millis()) / 1000.0);
    }
    for f in [
        "%Y-%m-%dT%H:%M:%SZ",
        "%Y-%m-%dT%H:%M:%S%.fZ",
        "%Y-%m-%dT%H:%MZ",
    ] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, f) {
            return Some(t.and_utc().timestamp() as f64);
        }
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp() as f64)
}

/// `a.b.c.d/n`, `x::y/n`, or a single address (a /32 or /128).
fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let s = s.trim();
    let (ip, len) = match s.split_once('/') {
        Some((ip, len)) => (ip.parse::<IpAddr>().ok()?, len.parse::<u8>().ok()?),
        None => {
            let ip = s.parse::<IpAddr>().ok()?;
            (ip, if ip.is_ipv4() { 32 } else { 128 })
        }
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (len <= max).then_some((ip, len))
}

fn cidr_contains(cidr: &str, ip: &str) -> bool {
    let (Some((net, len)), Ok(ip)) = (parse_cidr(cidr), ip.trim().parse::<IpAddr>()) else {
        return false;
    };
    let (net, ip, bits) = match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => (u32::from(n) as u128, u32::from(i) as u128, 32u32),
        (IpAddr::V6(n), IpAddr::V6(i)) => (u128::from(n), u128::from(i), 128u32),
        (IpAddr::V4(n), IpAddr::V6(i)) => match i.to_ipv4_mapped() {
            Some(i) => (u32::from(n) as u128, u32::from(i) as u128, 32),
            None => return false,
        },
        (IpAddr::V6(_), IpAddr::V4(_)) => return false,
    };
    let len = u32::from(len);
    if len == 0 {
        return true;
    }
    let shift = bits - len;
    (net >> shift) == (ip >> shift)
}

impl Op {
    /// The positive form of the operator, for one policy value `p` (variables substituted)
    /// and one request value `r`.
    fn matches(self, p: &[Tok], r: &str) -> bool {
        let num = |f: fn(f64, f64) -> bool| match (
            r.trim().parse::<f64>(),
            literal(p).trim().parse::<f64>(),
        ) {
            (Ok(a), Ok(b)) => f(a, b),
            _ => false,
        };
        let date = |f: fn(f64, f64) -> bool| match (parse_date(r), parse_date(&literal(p))) {
            (Some(a), Some(b)) => f(a, b),
            _ => false,
        };
        match self {
            Op::StringEquals => literal(p) == r,
            Op::StringEqualsIgnoreCase => literal(p).to_lowercase() == r.to_lowercase(),
            Op::StringLike => tok_match(p, r, false),
            Op::NumericEquals => num(|a, b| a == b),
            Op::NumericLessThan => num(|a, b| a < b),
            Op::NumericLessThanEquals => num(|a, b| a <= b),
            Op::NumericGreaterThan => num(|a, b| a > b),
            Op::NumericGreaterThanEquals => num(|a, b| a >= b),
            Op::DateEquals => date(|a, b| a == b),
            Op::DateLessThan => date(|a, b| a < b),
            Op::DateLessThanEquals => date(|a, b| a <= b),
            Op::DateGreaterThan => date(|a, b| a > b),
            Op::DateGreaterThanEquals => date(|a, b| a >= b),
            Op::Bool => literal(p).eq_ignore_ascii_case(r.trim()),
            Op::BinaryEquals => literal(p) == r,
            Op::IpAddress => cidr_contains(&literal(p), r),
            Op::ArnLike => arn_like_toks(p, r),
            Op::Null => false,
        }
    }
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
    fn holds(&self, req: &RequestContext, vars: bool) -> bool {
        let got = req.values(&self.key).filter(|v| !v.is_empty());
        if self.op == Op::Null {
            let want_absent = self.values.iter().any(|v| v.eq_ignore_ascii_case("true"));
            return got.is_none() == want_absent;
        }
        let Some(got) = got else {
            // Absent key: IfExists holds; ForAllValues holds (nothing to disagree); a
            // negated single-valued operator holds; anything else fails.
            return self.if_exists
                || match self.set {
                    SetOp::AllValues => true,
                    SetOp::AnyValue => false,
                    SetOp::Single => self.negated,
                };
        };
        let patterns: Vec<Vec<Tok>> = self
            .values
            .iter()
            .filter_map(|v| compile(v, vars, req))
            .collect();
        let hit = |r: &str| patterns.iter().any(|p| self.op.matches(p, r));
        match (self.set, self.negated) {
            (SetOp::Single | SetOp::AnyValue, false) => got.iter().any(|r| hit(r)),
            (SetOp::Single, true) => !got.iter().any(|r| hit(r)),
            (SetOp::AnyValue, true) => got.iter().any(|r| !hit(r)),
            (SetOp::AllValues, false) => got.iter().all(|r| hit(r)),
            (SetOp::AllValues, true) => got.iter().all(|r| !hit(r)),
        }
    }
}

impl Statement {
    /// Action, resource and conditions match (the principal is checked by the caller).
    fn applies(&self, req: &RequestContext, vars: bool) -> bool {
        let action_hit = |ps: &[String]| ps.iter().any(|p| wildcard(p, req.action, true));
        let resource_hit = |ps: &[String]| {
            ps.iter()
                .any(|p| compile(p, vars, req).is_some_and(|t| tok_match(&t, req.resource, false)))
        };
        let action_ok = match &self.actions {
            Patterns::Any(ps) => action_hit(ps),
            Patterns::Not(ps) => !action_hit(ps),
        };
        let resource_ok = match &self.resources {
            None => true,
            Some(Patterns::Any(ps)) => resource_hit(ps),
            Some(Patterns::Not(ps)) => !resource_hit(ps),
        };
        action_ok && resource_ok && self.conditions.iter().all(|c| c.holds(req, vars))
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
    evaluate_sets(&[policies], req)
}

/// As [`evaluate`], over several lists of policies at once (identity policies and resource
/// policies, without copying them into one list).
pub fn evaluate_sets(sets: &[&[Policy]], req: &RequestContext) -> Decision {
    let mut allowed = false;
    for p in sets.iter().flat_map(|s| s.iter()) {
        for s in &p.statements {
            if !s.principal_ok(req) || !s.applies(req, p.variables) {
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
        keys: &'a ConditionKeys,
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
        let k = ConditionKeys::new();
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
        let k = ConditionKeys::new();
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
        let k = ConditionKeys::new();
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

    fn keys(kv: &[(&str, &str)]) -> ConditionKeys {
        let mut k = ConditionKeys::new();
        for (name, v) in kv {
            k.set(name, *v);
        }
        k
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
        wrong_acl.set("s3:x-amz-acl", "private");
        assert_eq!(
            p.evaluate(&ctx(&u, "s3:PutObject", "x", &wrong_acl)),
            Decision::ImplicitDeny
        );
        let mut other_trail = good.clone();
        other_trail.set(
            "aws:SourceArn",
            "arn:aws:cloudtrail:us-east-1:999999999999:trail/acme",
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
        let none = ConditionKeys::new();
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

    fn one(doc: &str) -> Policy {
        Policy::parse(doc).unwrap_or_else(|e| panic!("{doc}: {e}"))
    }

    #[test]
    fn a_deny_on_a_global_key_binds_once_the_key_is_filled() {
        // The reproduction of the issue: Deny s3:* when aws:username = u5.
        let deny = one(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"},
            {"Effect":"Deny","Action":"s3:*","Resource":"*","Condition":{"StringEquals":{"aws:username":"u5"}}}]}"#,
        );
        let u = user();
        let u5 = keys(&[("aws:username", "u5")]);
        let u6 = keys(&[("aws:username", "u6")]);
        assert_eq!(
            deny.evaluate(&ctx(&u, "s3:GetObject", "x", &u5)),
            Decision::ExplicitDeny
        );
        assert_eq!(
            deny.evaluate(&ctx(&u, "s3:GetObject", "x", &u6)),
            Decision::Allow
        );
    }

    #[test]
    fn ip_date_numeric_binary_and_bool_operators() {
        let p = one(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*","Condition":{
            "IpAddress":{"aws:SourceIp":["10.0.0.0/8","2001:db8::/32"]},
            "DateLessThan":{"aws:CurrentTime":"2030-01-01T00:00:00Z"},
            "NumericLessThanEquals":{"s3:max-keys":"100"}}}]}"#,
        );
        let u = user();
        let k = |ip: &str, t: &str, n: &str| {
            keys(&[
                ("aws:SourceIp", ip),
                ("aws:CurrentTime", t),
                ("s3:max-keys", n),
            ])
        };
        let ok = k("10.1.2.3", "2026-11-30T10:00:00Z", "100");
        assert_eq!(
            p.evaluate(&ctx(&u, "s3:ListBucket", "x", &ok)),
            Decision::Allow
        );
        let v6 = k("2001:db8::1", "2026-11-30T10:00:00Z", "7");
        assert_eq!(
            p.evaluate(&ctx(&u, "s3:ListBucket", "x", &v6)),
            Decision::Allow
        );
        for bad in [
            k("11.0.0.1", "2026-11-30T10:00:00Z", "1"),
            k("10.0.0.1", "2031-01-01T00:00:00Z", "1"),
            k("10.0.0.1", "2026-11-30T10:00:00Z", "1000"),
            k("10.0.0.1", "2026-11-30T10:00:00Z", "many"),
        ] {
            assert_eq!(
                p.evaluate(&ctx(&u, "s3:ListBucket", "x", &bad)),
                Decision::ImplicitDeny
            );
        }
        let not_ip = one(
            r#"{"Statement":[{"Effect":"Deny","Action":"*","Resource":"*","Condition":{"NotIpAddress":{"aws:SourceIp":"127.0.0.1"}}},
            {"Effect":"Allow","Action":"*","Resource":"*","Condition":{"DateGreaterThan":{"aws:EpochTime":1700000000},"Bool":{"aws:SecureTransport":true},"BinaryEquals":{"k:bin":"QUJD"}}}]}"#,
        );
        let good = keys(&[
            ("aws:SourceIp", "127.0.0.1"),
            ("aws:EpochTime", "1800000000"),
            ("aws:SecureTransport", "true"),
            ("k:bin", "QUJD"),
        ]);
        assert_eq!(
            not_ip.evaluate(&ctx(&u, "a:b", "x", &good)),
            Decision::Allow
        );
        let mut far = good.clone();
        far.set("aws:SourceIp", "192.168.1.1");
        assert_eq!(
            not_ip.evaluate(&ctx(&u, "a:b", "x", &far)),
            Decision::ExplicitDeny
        );
        for bad in [
            r#"{"Statement":{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"NumericEquals":{"k":"ten"}}}}"#,
            r#"{"Statement":{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"DateEquals":{"k":"yesterday"}}}}"#,
            r#"{"Statement":{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"IpAddress":{"k":"10.0.0.0/33"}}}}"#,
            r#"{"Statement":{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"NullIfExists":{"k":"true"}}}}"#,
            r#"{"Statement":{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"ForAnyValue:Null":{"k":"true"}}}}"#,
        ] {
            assert!(Policy::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn set_operators_over_multivalued_keys() {
        let any = one(
            r#"{"Statement":[{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"ForAnyValue:StringEquals":{"aws:TagKeys":["team","env"]}}}]}"#,
        );
        let all = one(
            r#"{"Statement":[{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"ForAllValues:StringLike":{"aws:TagKeys":["team","cost-*"]}}}]}"#,
        );
        let none_of = one(
            r#"{"Statement":[{"Effect":"Deny","Action":"*","Resource":"*","Condition":{"ForAnyValue:StringNotEquals":{"aws:TagKeys":["team"]}}},{"Effect":"Allow","Action":"*","Resource":"*"}]}"#,
        );
        let u = user();
        let mut k = ConditionKeys::new();
        k.set_many("aws:TagKeys", vec!["team".into(), "cost-center".into()]);
        assert_eq!(any.evaluate(&ctx(&u, "a:b", "x", &k)), Decision::Allow);
        assert_eq!(all.evaluate(&ctx(&u, "a:b", "x", &k)), Decision::Allow);
        assert_eq!(
            none_of.evaluate(&ctx(&u, "a:b", "x", &k)),
            Decision::ExplicitDeny
        );
        k.set_many("aws:TagKeys", vec!["team".into(), "owner".into()]);
        assert_eq!(
            all.evaluate(&ctx(&u, "a:b", "x", &k)),
            Decision::ImplicitDeny
        );
        k.set_many("aws:TagKeys", vec!["owner".into()]);
        assert_eq!(
            any.evaluate(&ctx(&u, "a:b", "x", &k)),
            Decision::ImplicitDeny
        );
        k.set_many("aws:TagKeys", vec!["team".into()]);
        assert_eq!(none_of.evaluate(&ctx(&u, "a:b", "x", &k)), Decision::Allow);
        // An absent key: ForAllValues holds vacuously, ForAnyValue does not.
        let empty = ConditionKeys::new();
        assert_eq!(all.evaluate(&ctx(&u, "a:b", "x", &empty)), Decision::Allow);
        assert_eq!(
            any.evaluate(&ctx(&u, "a:b", "x", &empty)),
            Decision::ImplicitDeny
        );
    }

    #[test]
    fn policy_variables_in_resources_and_conditions() {
        let p = one(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*",
            "Resource":"arn:aws:s3:::home/${aws:username}/*"},
            {"Effect":"Allow","Action":"s3:ListBucket","Resource":"arn:aws:s3:::home","Condition":{"StringLike":{"s3:prefix":"${aws:username}/*"}}},
            {"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::shared/${aws:PrincipalTag/team, 'none'}/*"}]}"#,
        );
        let u = user();
        let alice = keys(&[("aws:username", "alice")]);
        assert_eq!(
            p.evaluate(&ctx(
                &u,
                "s3:GetObject",
                "arn:aws:s3:::home/alice/a",
                &alice
            )),
            Decision::Allow
        );
        assert_eq!(
            p.evaluate(&ctx(&u, "s3:GetObject", "arn:aws:s3:::home/bob/a", &alice)),
            Decision::ImplicitDeny
        );
        let mut listing = alice.clone();
        listing.set("s3:prefix", "alice/docs");
        assert_eq!(
            p.evaluate(&ctx(&u, "s3:ListBucket", "arn:aws:s3:::home", &listing)),
            Decision::Allow
        );
        listing.set("s3:prefix", "bob/");
        assert_eq!(
            p.evaluate(&ctx(&u, "s3:ListBucket", "arn:aws:s3:::home", &listing)),
            Decision::ImplicitDeny
        );
        // A missing key without a default matches nothing; with one, the default is used.
        let nobody = ConditionKeys::new();
        assert_eq!(
            p.evaluate(&ctx(&u, "s3:GetObject", "arn:aws:s3:::home//a", &nobody)),
            Decision::ImplicitDeny
        );
        assert_eq!(
            p.evaluate(&ctx(
                &u,
                "s3:GetObject",
                "arn:aws:s3:::shared/none/a",
                &nobody
            )),
            Decision::Allow
        );
        // A variable's value is literal: a user named `*` gets no wildcard.
        let star = keys(&[("aws:username", "*")]);
        assert_eq!(
            p.evaluate(&ctx(&u, "s3:GetObject", "arn:aws:s3:::home/bob/a", &star)),
            Decision::ImplicitDeny
        );
        assert_eq!(
            p.evaluate(&ctx(&u, "s3:GetObject", "arn:aws:s3:::home/*/a", &star)),
            Decision::Allow
        );
        // In a 2008-10-17 document `${…}` is plain text.
        let old = one(
            r#"{"Version":"2008-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"arn:aws:s3:::home/${aws:username}/*"}]}"#,
        );
        assert_eq!(
            old.evaluate(&ctx(
                &u,
                "s3:GetObject",
                "arn:aws:s3:::home/alice/a",
                &alice
            )),
            Decision::ImplicitDeny
        );
        assert_eq!(
            old.evaluate(&ctx(
                &u,
                "s3:GetObject",
                "arn:aws:s3:::home/${aws:username}/a",
                &alice
            )),
            Decision::Allow
        );
    }

    #[test]
    fn public_means_what_s3_means() {
        let public = [
            r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*"}]}"#,
            r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":"*"},"Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*","Condition":{"StringLike":{"aws:SourceArn":"arn:aws:cloudtrail:*"}}}]}"#,
            r#"{"Statement":[{"Effect":"Allow","NotPrincipal":{"AWS":"arn:aws:iam::123456789012:user/x"},"Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*"}]}"#,
            r#"{"Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*"}]}"#,
            r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*","Condition":{"IpAddress":{"aws:SourceIp":"0.0.0.0/1"}}}]}"#,
            r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*","Condition":{"StringNotEquals":{"aws:SourceAccount":"123456789012"}}}]}"#,
            r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*","Condition":{"StringEquals":{"s3:x-amz-acl":"private"}}}]}"#,
        ];
        for p in public {
            assert!(one(p).grants_public_allow(), "{p}");
        }
        let private = [
            r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:root"},"Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*"}]}"#,
            r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:PutObject","Resource":"arn:aws:s3:::b/*","Condition":{"StringEquals":{"aws:SourceArn":"arn:aws:cloudtrail:us-east-1:123456789012:trail/t"}}}]}"#,
            r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*","Condition":{"IpAddress":{"aws:SourceIp":"10.0.0.0/8"}}}]}"#,
            r#"{"Statement":[{"Effect":"Deny","Principal":"*","Action":"s3:*","Resource":"arn:aws:s3:::b/*"}]}"#,
        ];
        for p in private {
            assert!(!one(p).grants_public_allow(), "{p}");
        }
    }

    #[test]
    fn resource_policy_rules() {
        let in_bucket = |r: &str| r == "arn:aws:s3:::b" || r.starts_with("arn:aws:s3:::b/");
        let s3 = |a: &str| a == "*" || a.to_ascii_lowercase().starts_with("s3:");
        let check = |doc: &str| one(doc).check_resource_policy(in_bucket, s3);
        assert!(check(r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":["arn:aws:s3:::b","arn:aws:s3:::b/*"]}]}"#).is_ok());
        assert_eq!(check(r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::*"}]}"#).unwrap_err().0, "Policy has invalid resource");
        assert_eq!(check(r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::bb/*"}]}"#).unwrap_err().0, "Policy has invalid resource");
        assert_eq!(check(r#"{"Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*"}]}"#).unwrap_err().0, "Missing required field Principal");
        assert_eq!(check(r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"iam:CreateUser","Resource":"arn:aws:s3:::b/*"}]}"#).unwrap_err().0, "Policy has invalid action");
        assert!(Policy::parse(r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::*:root"},"Action":"s3:*","Resource":"*"}]}"#).is_err());
    }
}
