//! CloudWatch Logs filter patterns, as AWS defines them ("Filter pattern syntax for metric
//! filters, subscription filters, filter log events"):
//!
//! - **Terms** (unstructured text): every term must occur in the message (case-sensitive);
//!   `"a phrase"` is one term; `?term` terms match if any of them occurs; `-term` excludes.
//!   The empty pattern matches every event.
//! - **JSON**: `{ $.eventName = "ConsoleLogin" && $.errorCode = "*UnauthorizedOperation" }`:
//!   selectors with fields and array indexes (`$.resources[0].ARN`); `=` and `!=` on strings
//!   (with `*` wildcards, quoted or bare values, `%regex%`) and numbers; `<`, `>`, `<=`,
//!   `>=` on numbers; `IS NULL`, `NOT EXISTS`, `IS TRUE`, `IS FALSE`; `&&`, `||`, parentheses.
//!   A comparison on a property the event does not have does not match (only `NOT EXISTS`
//!   does); a message that is not JSON matches no JSON pattern.
//! - **Space-delimited**: `[ip, user, ..., status = 4*, bytes > 1000]`: the message split on
//!   spaces (a `"quoted"` or `[bracketed]` field is one), each named field optionally
//!   compared, `...` standing for any number of fields.
//!
//! Written by hand: no crate implements this language; it is small and its edge cases are
//! AWS's, which the tests pin.

use regex::Regex;
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Invalid filter pattern: {0}")]
pub struct PatternError(pub String);

fn err(m: impl Into<String>) -> PatternError {
    PatternError(m.into())
}

/// A parsed filter pattern.
#[derive(Debug, Clone)]
pub enum FilterPattern {
    /// The empty pattern: every event.
    All,
    Terms(Terms),
    /// A JSON pattern, and text one of which any matching event's message must contain
    /// (see [`required_text`]), to skip most non-matching events without parsing them.
    Json(Expr, Option<Vec<String>>),
    Delimited(Vec<Field>),
}

#[derive(Debug, Clone, Default)]
pub struct Terms {
    all: Vec<String>,
    any: Vec<String>,
    none: Vec<String>,
}

#[derive(Debug, Clone)]
pub enum Expr {
    Or(Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Test(Selector, Test),
}

/// A path into a JSON document: fields and array indexes.
#[derive(Debug, Clone, PartialEq)]
pub struct Selector(Vec<Step>);

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Field(String),
    Index(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Gt,
    Le,
    Ge,
}

#[derive(Debug, Clone)]
pub enum Operand {
    Number(f64),
    /// A string with `*` wildcards (quoted or bare).
    Text(String),
    Regex(Regex),
}

#[derive(Debug, Clone)]
pub enum Test {
    Compare(Op, Operand),
    IsNull,
    NotExists,
    IsBool(bool),
}

/// One field of a space-delimited pattern.
#[derive(Debug, Clone)]
pub enum Field {
    Ellipsis,
    Named(String, Option<(Op, Operand)>),
}

impl FilterPattern {
    /// Parses a pattern (at most 1024 characters, as AWS allows).
    pub fn parse(text: &str) -> Result<FilterPattern, PatternError> {
        if text.chars().count() > 1024 {
            return Err(err("the pattern is longer than 1024 characters"));
        }
        let t = text.trim();
        if t.is_empty() || t == "\"\"" {
            return Ok(FilterPattern::All);
        }
        if t.starts_with('{') {
            let inner = t
                .strip_prefix('{')
                .and_then(|x| x.strip_suffix('}'))
                .ok_or_else(|| err("a JSON pattern ends with '}'"))?;
            let toks = lex(inner)?;
            let mut p = Parser { toks, at: 0 };
            let e = p.or()?;
            if p.at != p.toks.len() {
                return Err(err(format!("unexpected {:?}", p.toks[p.at])));
            }
            let required = required_text(&e);
            return Ok(FilterPattern::Json(e, required));
        }
        if t.starts_with('[') {
            let inner = t
                .strip_prefix('[')
                .and_then(|x| x.strip_suffix(']'))
                .ok_or_else(|| err("a space-delimited pattern ends with ']'"))?;
            return delimited(inner).map(FilterPattern::Delimited);
        }
        terms(t).map(FilterPattern::Terms)
    }

    /// Whether a log event's message matches.
    pub fn matches(&self, message: &str) -> bool {
        match self {
            FilterPattern::All => true,
            FilterPattern::Terms(t) => {
                t.all.iter().all(|x| message.contains(x.as_str()))
                    && (t.any.is_empty() || t.any.iter().any(|x| message.contains(x.as_str())))
                    && !t.none.iter().any(|x| message.contains(x.as_str()))
            }
            FilterPattern::Json(e, required) => {
                // Without a backslash the message holds no escape, so a string value that
                // matches appears in it verbatim.
                if let Some(r) = required {
                    if !message.contains('\\') && !r.iter().any(|t| message.contains(t.as_str())) {
                        return false;
                    }
                }
                match serde_json::from_str::<Value>(message) {
                    Ok(v) => eval(e, &v),
                    Err(_) => false,
                }
            }
            FilterPattern::Delimited(fields) => {
                let toks = split_fields(message);
                match_fields(fields, &toks)
            }
        }
    }

    /// The value a metric filter takes from a matching event for `$.selector` or a named
    /// delimited field (`None` when the event has no such value).
    pub fn value_of(&self, selector: &str, message: &str) -> Option<String> {
        match self {
            FilterPattern::Json(..) => {
                let sel = parse_selector(selector).ok()?;
                let v: Value = serde_json::from_str(message).ok()?;
                match sel.get(&v)? {
                    Value::String(s) => Some(s.clone()),
                    Value::Null => None,
                    other => Some(other.to_string()),
                }
            }
            FilterPattern::Delimited(fields) => {
                let toks = split_fields(message);
                let name = selector.trim_start_matches('$');
                // Only patterns without an ellipsis fix a field's position.
                if fields.iter().any(|f| matches!(f, Field::Ellipsis)) {
                    return None;
                }
                fields.iter().zip(&toks).find_map(|(f, t)| match f {
                    Field::Named(n, _) if n == name => Some(t.clone()),
                    _ => None,
                })
            }
            _ => None,
        }
    }
}

// ---- terms ----

fn terms(t: &str) -> Result<Terms, PatternError> {
    let mut out = Terms::default();
    let mut chars = t.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let Some(&first) = chars.peek() else { break };
        let kind = match first {
            '?' | '-' => {
                chars.next();
                Some(first)
            }
            _ => None,
        };
        let mut term = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => term.extend(chars.next()),
                    Some(c) => term.push(c),
                    None => return Err(err("an unclosed quote")),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                term.push(c);
                chars.next();
            }
        }
        if term.is_empty() {
            return Err(err("an empty term"));
        }
        match kind {
            Some('?') => out.any.push(term),
            Some('-') => out.none.push(term),
            _ => out.all.push(term),
        }
    }
    Ok(out)
}

// ---- JSON ----

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    LParen,
    RParen,
    And,
    Or,
    Op(Op),
    Selector(String),
    Quoted(String),
    Word(String),
}

fn lex(s: &str) -> Result<Vec<Tok>, PatternError> {
    let cs: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    while i < cs.len() {
        let c = cs[i];
        let next = cs.get(i + 1).copied();
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push(Tok::LParen);
                i += 1
            }
            ')' => {
                out.push(Tok::RParen);
                i += 1
            }
            '&' if next == Some('&') => {
                out.push(Tok::And);
                i += 2
            }
            '|' if next == Some('|') => {
                out.push(Tok::Or);
                i += 2
            }
            '!' if next == Some('=') => {
                out.push(Tok::Op(Op::Ne));
                i += 2
            }
            '<' | '>' => {
                let eq = next == Some('=');
                out.push(Tok::Op(match (c, eq) {
                    ('<', true) => Op::Le,
                    ('<', false) => Op::Lt,
                    ('>', true) => Op::Ge,
                    _ => Op::Gt,
                }));
                i += if eq { 2 } else { 1 };
            }
            '=' => {
                out.push(Tok::Op(Op::Eq));
                i += if next == Some('=') { 2 } else { 1 };
            }
            '"' => {
                let mut v = String::new();
                i += 1;
                loop {
                    match cs.get(i) {
                        Some('"') => {
                            i += 1;
                            break;
                        }
                        Some('\\') => {
                            if let Some(n) = cs.get(i + 1) {
                                v.push(*n);
                            }
                            i += 2;
                        }
                        Some(ch) => {
                            v.push(*ch);
                            i += 1;
                        }
                        None => return Err(err("an unclosed quote")),
                    }
                }
                out.push(Tok::Quoted(v));
            }
            '%' => {
                let end = cs[i + 1..]
                    .iter()
                    .position(|&ch| ch == '%')
                    .ok_or_else(|| err("an unclosed %regex%"))?;
                let body: String = cs[i + 1..i + 1 + end].iter().collect();
                out.push(Tok::Word(format!("%{body}%")));
                i += end + 2;
            }
            _ => {
                let start = i;
                while i < cs.len() {
                    let ch = cs[i];
                    let nx = cs.get(i + 1).copied();
                    let stop = ch.is_whitespace()
                        || matches!(ch, '(' | ')' | '=' | '<' | '>' | '"')
                        || (ch == '!' && nx == Some('='))
                        || (ch == '&' && nx == Some('&'))
                        || (ch == '|' && nx == Some('|'));
                    if stop {
                        break;
                    }
                    i += 1;
                }
                let w: String = cs[start..i].iter().collect();
                if w.starts_with('$') {
                    out.push(Tok::Selector(w));
                } else {
                    out.push(Tok::Word(w));
                }
            }
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.at)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.at).cloned();
        self.at += 1;
        t
    }

    fn or(&mut self) -> Result<Expr, PatternError> {
        let mut e = self.and()?;
        while self.peek() == Some(&Tok::Or) {
            self.at += 1;
            e = Expr::Or(Box::new(e), Box::new(self.and()?));
        }
        Ok(e)
    }

    fn and(&mut self) -> Result<Expr, PatternError> {
        let mut e = self.unary()?;
        while self.peek() == Some(&Tok::And) {
            self.at += 1;
            e = Expr::And(Box::new(e), Box::new(self.unary()?));
        }
        Ok(e)
    }

    fn unary(&mut self) -> Result<Expr, PatternError> {
        match self.next() {
            Some(Tok::LParen) => {
                let e = self.or()?;
                match self.next() {
                    Some(Tok::RParen) => Ok(e),
                    _ => Err(err("a '(' without its ')'")),
                }
            }
            Some(Tok::Selector(s)) => {
                let sel = parse_selector(&s)?;
                let test = self.test()?;
                Ok(Expr::Test(sel, test))
            }
            other => Err(err(format!("expected a selector, found {other:?}"))),
        }
    }

    fn word(&mut self) -> Option<String> {
        match self.peek() {
            Some(Tok::Word(w)) => {
                let w = w.clone();
                self.at += 1;
                Some(w)
            }
            _ => None,
        }
    }

    fn test(&mut self) -> Result<Test, PatternError> {
        match self.next() {
            Some(Tok::Op(op)) => {
                let operand = match self.next() {
                    Some(Tok::Quoted(q)) => Operand::Text(q),
                    Some(Tok::Word(w)) => word_operand(&w)?,
                    other => return Err(err(format!("expected a value, found {other:?}"))),
                };
                if matches!(op, Op::Lt | Op::Gt | Op::Le | Op::Ge)
                    && !matches!(operand, Operand::Number(_))
                {
                    return Err(err("<, >, <= and >= compare numbers"));
                }
                if matches!(operand, Operand::Regex(_)) && !matches!(op, Op::Eq | Op::Ne) {
                    return Err(err("a regular expression is compared with = or !="));
                }
                Ok(Test::Compare(op, operand))
            }
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("IS") => {
                match self.word().map(|w| w.to_ascii_uppercase()).as_deref() {
                    Some("NULL") => Ok(Test::IsNull),
                    Some("TRUE") => Ok(Test::IsBool(true)),
                    Some("FALSE") => Ok(Test::IsBool(false)),
                    other => Err(err(format!("IS {other:?}"))),
                }
            }
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("NOT") => {
                match self.word().map(|w| w.to_ascii_uppercase()).as_deref() {
                    Some("EXISTS") => Ok(Test::NotExists),
                    other => Err(err(format!("NOT {other:?}"))),
                }
            }
            other => Err(err(format!("expected a comparison, found {other:?}"))),
        }
    }
}

fn word_operand(w: &str) -> Result<Operand, PatternError> {
    if let Some(body) = w.strip_prefix('%').and_then(|x| x.strip_suffix('%')) {
        return Regex::new(body)
            .map(Operand::Regex)
            .map_err(|e| err(format!("a bad regular expression: {e}")));
    }
    match w.parse::<f64>() {
        Ok(n) if n.is_finite() => Ok(Operand::Number(n)),
        _ => Ok(Operand::Text(w.to_string())),
    }
}

fn parse_selector(s: &str) -> Result<Selector, PatternError> {
    let rest = s
        .strip_prefix('$')
        .ok_or_else(|| err("a selector starts with $"))?;
    let mut steps = Vec::new();
    let cs: Vec<char> = rest.chars().collect();
    let mut i = 0;
    while i < cs.len() {
        match cs[i] {
            '.' => {
                let start = i + 1;
                i = start;
                while i < cs.len() && cs[i] != '.' && cs[i] != '[' {
                    i += 1;
                }
                let name: String = cs[start..i].iter().collect();
                if name.is_empty() {
                    return Err(err(format!("an empty field in {s}")));
                }
                steps.push(Step::Field(name));
            }
            '[' => {
                let end = cs[i..]
                    .iter()
                    .position(|&c| c == ']')
                    .ok_or_else(|| err(format!("an unclosed [ in {s}")))?;
                let n: String = cs[i + 1..i + end].iter().collect();
                steps.push(Step::Index(
                    n.trim()
                        .parse()
                        .map_err(|_| err(format!("a bad array index in {s}")))?,
                ));
                i += end + 1;
            }
            _ => return Err(err(format!("a bad selector {s}"))),
        }
    }
    Ok(Selector(steps))
}

impl Selector {
    fn get<'a>(&self, v: &'a Value) -> Option<&'a Value> {
        let mut cur = v;
        for s in &self.0 {
            cur = match (s, cur) {
                (Step::Field(f), Value::Object(m)) => m.get(f)?,
                (Step::Index(n), Value::Array(a)) => a.get(*n)?,
                _ => return None,
            };
        }
        Some(cur)
    }
}

/// AWS's `*` wildcard over a whole value.
fn wildcard(pattern: &str, s: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == s;
    }
    let mut rest = s;
    for (i, p) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(p) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(p);
        } else if let Some(at) = rest.find(p) {
            rest = &rest[at + p.len()..];
        } else {
            return false;
        }
    }
    true
}

fn compare(op: Op, operand: &Operand, v: &Value) -> bool {
    match operand {
        Operand::Number(n) => {
            let got = match v {
                Value::Number(x) => x.as_f64(),
                Value::String(s) => s.parse::<f64>().ok(),
                _ => None,
            };
            let Some(g) = got else {
                // A numeric value against text: compare as text (`= 200` on "200").
                return match (op, v) {
                    (Op::Eq, Value::String(s)) => s == &n.to_string(),
                    (Op::Ne, Value::String(s)) => s != &n.to_string(),
                    _ => false,
                };
            };
            match op {
                Op::Eq => g == *n,
                Op::Ne => g != *n,
                Op::Lt => g < *n,
                Op::Gt => g > *n,
                Op::Le => g <= *n,
                Op::Ge => g >= *n,
            }
        }
        Operand::Text(t) => {
            let s = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => return false,
            };
            let hit = wildcard(t, &s);
            match op {
                Op::Eq => hit,
                Op::Ne => !hit,
                _ => false,
            }
        }
        Operand::Regex(r) => {
            let Value::String(s) = v else { return false };
            let hit = r.is_match(s);
            match op {
                Op::Eq => hit,
                Op::Ne => !hit,
                _ => false,
            }
        }
    }
}

/// Text one of which every message matching `e` contains (when it has no escapes): for `$.x = "text*"`, the
/// longest piece of the value between wildcards; for `a && b`, what either side requires; for
/// `a || b`, what both sides do, together. `None` when nothing is required (comparisons with
/// numbers, `!=`, regexes, tests of absence).
pub fn required_text(e: &Expr) -> Option<Vec<String>> {
    match e {
        Expr::Test(_, Test::Compare(Op::Eq, Operand::Text(t))) => t
            .split('*')
            .max_by_key(|p| p.len())
            // (A piece a number could render differently, `2e2` for "200", is no help.)
            .filter(|p| p.len() >= 3 && p.chars().any(|c| !"0123456789.eE+-".contains(c)))
            .map(|p| vec![p.to_string()]),
        Expr::Test(..) => None,
        Expr::And(a, b) => required_text(a).or_else(|| required_text(b)),
        Expr::Or(a, b) => {
            let (mut x, y) = (required_text(a)?, required_text(b)?);
            x.extend(y);
            Some(x)
        }
    }
}

fn eval(e: &Expr, doc: &Value) -> bool {
    match e {
        Expr::Or(a, b) => eval(a, doc) || eval(b, doc),
        Expr::And(a, b) => eval(a, doc) && eval(b, doc),
        Expr::Test(sel, t) => {
            let got = sel.get(doc);
            match t {
                Test::NotExists => got.is_none(),
                Test::IsNull => matches!(got, Some(Value::Null)),
                Test::IsBool(b) => got == Some(&Value::Bool(*b)),
                Test::Compare(op, operand) => match got {
                    None | Some(Value::Null) => false,
                    Some(v) => compare(*op, operand, v),
                },
            }
        }
    }
}

// ---- space-delimited ----

fn delimited(inner: &str) -> Result<Vec<Field>, PatternError> {
    let mut out = Vec::new();
    for raw in inner.split(',') {
        let f = raw.trim();
        if f.is_empty() {
            return Err(err("an empty field in a space-delimited pattern"));
        }
        if f == "..." {
            out.push(Field::Ellipsis);
            continue;
        }
        let toks = lex(f)?;
        let name = match toks.first() {
            Some(Tok::Word(w)) => w.clone(),
            other => return Err(err(format!("a field name, not {other:?}"))),
        };
        let cond = match &toks[1..] {
            [] => None,
            [Tok::Op(op), Tok::Quoted(q)] => Some((*op, Operand::Text(q.clone()))),
            [Tok::Op(op), Tok::Word(w)] => Some((*op, word_operand(w)?)),
            other => return Err(err(format!("a bad condition on {name}: {other:?}"))),
        };
        out.push(Field::Named(name, cond));
    }
    Ok(out)
}

/// A message's space-delimited fields: a `"quoted"` or `[bracketed]` run is one field.
fn split_fields(message: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cs = message.chars().peekable();
    loop {
        while cs.peek().is_some_and(|c| *c == ' ') {
            cs.next();
        }
        let Some(&c) = cs.peek() else { break };
        let mut f = String::new();
        let close = match c {
            '"' => Some('"'),
            '[' => Some(']'),
            _ => None,
        };
        if let Some(close) = close {
            cs.next();
            for ch in cs.by_ref() {
                if ch == close {
                    break;
                }
                f.push(ch);
            }
        } else {
            while let Some(&ch) = cs.peek() {
                if ch == ' ' {
                    break;
                }
                f.push(ch);
                cs.next();
            }
        }
        out.push(f);
    }
    out
}

fn field_ok(cond: &Option<(Op, Operand)>, tok: &str) -> bool {
    match cond {
        None => true,
        Some((op, operand)) => compare(*op, operand, &Value::String(tok.to_string())),
    }
}

fn match_fields(fields: &[Field], toks: &[String]) -> bool {
    match fields.split_first() {
        None => toks.is_empty(),
        Some((Field::Ellipsis, rest)) => (0..=toks.len()).any(|k| match_fields(rest, &toks[k..])),
        Some((Field::Named(_, cond), rest)) => match toks.split_first() {
            Some((t, more)) => field_ok(cond, t) && match_fields(rest, more),
            None => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn m(p: &str, msg: &str) -> bool {
        FilterPattern::parse(p).unwrap().matches(msg)
    }

    #[test]
    fn terms_phrases_any_and_exclusions() {
        assert!(m("", "anything"));
        assert!(m("ERROR", "[ERROR] disk full"));
        assert!(!m("ERROR", "error: disk full"), "case-sensitive");
        assert!(m("ERROR disk", "ERROR: the disk is full"));
        assert!(!m("ERROR disk", "ERROR: the tape is full"));
        assert!(m(
            "\"Failed login\"",
            "User bob: Failed login from 10.0.0.1"
        ));
        assert!(!m("\"Failed login\"", "Failed to login"));
        assert!(m("?ERROR ?WARN", "WARN: slow"));
        assert!(!m("?ERROR ?WARN", "INFO: fine"));
        assert!(m("ERROR -Exiting", "ERROR: retrying"));
        assert!(!m("ERROR -Exiting", "ERROR: Exiting now"));
        assert!(FilterPattern::parse("\"unclosed").is_err());
    }

    fn ct(v: Value) -> String {
        v.to_string()
    }

    #[test]
    fn json_comparisons() {
        let rec = ct(json!({
            "eventName": "ConsoleLogin", "errorCode": "Client.UnauthorizedOperation",
            "latency": 750, "flag": true, "gone": null,
            "resources": [{"ARN": "arn:aws:s3:::logs/a", "type": "AWS::S3::Object"}],
            "additionalEventData": {"MFAUsed": "No"}
        }));
        assert!(m(r#"{ $.eventName = "ConsoleLogin" }"#, &rec));
        assert!(m(r#"{ $.eventName = ConsoleLogin }"#, &rec));
        assert!(!m(r#"{ $.eventName = "consolelogin" }"#, &rec));
        assert!(m(r#"{ $.errorCode = "*UnauthorizedOperation" }"#, &rec));
        assert!(m(
            r#"{ $.errorCode = "Client.*" && $.eventName != "GetObject" }"#,
            &rec
        ));
        assert!(m(r#"{ $.latency > 500 && $.latency <= 750 }"#, &rec));
        assert!(!m(r#"{ $.latency < 500 }"#, &rec));
        assert!(m(r#"{ $.latency = 750 }"#, &rec));
        assert!(m(r#"{ $.flag IS TRUE }"#, &rec));
        assert!(!m(r#"{ $.flag IS FALSE }"#, &rec));
        assert!(m(r#"{ $.gone IS NULL }"#, &rec));
        assert!(!m(r#"{ $.eventName IS NULL }"#, &rec));
        assert!(m(r#"{ $.nothing NOT EXISTS }"#, &rec));
        assert!(!m(r#"{ $.eventName NOT EXISTS }"#, &rec));
        assert!(
            !m(r#"{ $.nothing != "x" }"#, &rec),
            "a missing property matches no comparison"
        );
        assert!(m(r#"{ $.resources[0].ARN = "arn:aws:s3:::logs/*" }"#, &rec));
        assert!(!m(r#"{ $.resources[1].ARN = "*" }"#, &rec));
        assert!(m(
            r#"{ ($.eventName = "GetObject") || ($.additionalEventData.MFAUsed != "Yes") }"#,
            &rec
        ));
        assert!(m(r#"{ $.eventName = %Console.*n% }"#, &rec));
        assert!(!m(r#"{ $.eventName = %^Get% }"#, &rec));
        assert!(!m(r#"{ $.eventName = "ConsoleLogin" }"#, "not json"));
        for bad in [
            "{ $.a = }",
            "{ $.a > \"x\" }",
            "{ ($.a = 1 }",
            "{ a = 1 }",
            "{ $.a = 1",
            "{ $.a[x] = 1 }",
        ] {
            assert!(FilterPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn space_delimited() {
        let p = "[ip, user, username, timestamp, request, status_code = 4*, bytes > 1000]";
        let line = r#"127.0.0.1 - frank [10/Oct/2000:13:25:15 -0700] "GET /apache_pb.gif HTTP/1.0" 404 1534"#;
        assert!(m(p, line));
        assert!(!m(p, &line.replace(" 404 ", " 200 ")));
        assert!(!m(p, &line.replace("1534", "15")));
        assert!(m("[..., status = 404, bytes]", line));
        assert!(m("[ip = 127.0.0.*, ...]", line));
        assert!(!m("[ip = 10.*, ...]", line));
        let f = FilterPattern::parse(p).unwrap();
        assert_eq!(f.value_of("$bytes", line).as_deref(), Some("1534"));
        assert_eq!(
            f.value_of("$request", line).as_deref(),
            Some("GET /apache_pb.gif HTTP/1.0")
        );
    }

    /// A CloudTrail record with the fields the CIS patterns read.
    fn rec(fields: Value) -> String {
        let mut base = json!({
            "eventVersion": "1.11", "eventSource": "iam.amazonaws.com", "eventName": "GetUser",
            "eventType": "AwsApiCall", "awsRegion": "us-east-1",
            "userIdentity": {"type": "IAMUser", "arn": "arn:aws:iam::123456789012:user/alice"}
        });
        for (k, v) in fields.as_object().unwrap() {
            base[k] = v.clone();
        }
        base.to_string()
    }

    /// The CIS AWS Foundations Benchmark (v1.4–3.0, section 4 / 3 "Monitoring") metric filter
    /// patterns, each with a record that must match and one that must not.
    #[test]
    fn cis_foundations_patterns_match_cloudtrail_records() {
        let cases: Vec<(&str, &str, Value, Value)> = vec![
            ("unauthorized API calls",
             r#"{ ($.errorCode = "*UnauthorizedOperation") || ($.errorCode = "AccessDenied*") && ($.sourceIPAddress != "delivery.logs.amazonaws.com") && ($.eventName != "HeadBucket") }"#,
             json!({"errorCode": "AccessDenied", "sourceIPAddress": "10.0.0.1", "eventName": "GetObject"}),
             json!({"eventName": "GetObject"})),
            ("console sign-in without MFA",
             r#"{ ($.eventName = "ConsoleLogin") && ($.additionalEventData.MFAUsed != "Yes") && ($.userIdentity.type = "IAMUser") && ($.responseElements.ConsoleLogin = "Success") }"#,
             json!({"eventName": "ConsoleLogin", "additionalEventData": {"MFAUsed": "No"}, "responseElements": {"ConsoleLogin": "Success"}}),
             json!({"eventName": "ConsoleLogin", "additionalEventData": {"MFAUsed": "Yes"}, "responseElements": {"ConsoleLogin": "Success"}})),
            ("root account usage",
             r#"{ $.userIdentity.type = "Root" && $.userIdentity.invokedBy NOT EXISTS && $.eventType != "AwsServiceEvent" }"#,
             json!({"userIdentity": {"type": "Root"}}),
             json!({"userIdentity": {"type": "Root", "invokedBy": "s3.amazonaws.com"}})),
            ("IAM policy changes",
             "{($.eventName=DeleteGroupPolicy)||($.eventName=DeleteRolePolicy)||($.eventName=DeleteUserPolicy)||($.eventName=PutGroupPolicy)||($.eventName=PutRolePolicy)||($.eventName=PutUserPolicy)||($.eventName=CreatePolicy)||($.eventName=DeletePolicy)||($.eventName=CreatePolicyVersion)||($.eventName=DeletePolicyVersion)||($.eventName=SetDefaultPolicyVersion)||($.eventName=AttachRolePolicy)||($.eventName=DetachRolePolicy)||($.eventName=AttachUserPolicy)||($.eventName=DetachUserPolicy)||($.eventName=AttachGroupPolicy)||($.eventName=DetachGroupPolicy)}",
             json!({"eventName": "PutUserPolicy"}),
             json!({"eventName": "GetUserPolicy"})),
            ("CloudTrail configuration changes",
             "{ ($.eventName = CreateTrail) || ($.eventName = UpdateTrail) || ($.eventName = DeleteTrail) || ($.eventName = StartLogging) || ($.eventName = StopLogging) }",
             json!({"eventName": "StopLogging", "eventSource": "cloudtrail.amazonaws.com"}),
             json!({"eventName": "GetTrailStatus", "eventSource": "cloudtrail.amazonaws.com"})),
            ("console authentication failures",
             r#"{ ($.eventName = ConsoleLogin) && ($.errorMessage = "Failed authentication") }"#,
             json!({"eventName": "ConsoleLogin", "errorMessage": "Failed authentication"}),
             json!({"eventName": "ConsoleLogin"})),
            ("disabling or scheduled deletion of customer managed keys",
             "{($.eventSource = kms.amazonaws.com) && (($.eventName=DisableKey)||($.eventName=ScheduleKeyDeletion)) }",
             json!({"eventSource": "kms.amazonaws.com", "eventName": "ScheduleKeyDeletion"}),
             json!({"eventSource": "kms.amazonaws.com", "eventName": "Decrypt"})),
            ("S3 bucket policy changes",
             "{ ($.eventSource = s3.amazonaws.com) && (($.eventName = PutBucketAcl) || ($.eventName = PutBucketPolicy) || ($.eventName = PutBucketCors) || ($.eventName = PutBucketLifecycle) || ($.eventName = PutBucketReplication) || ($.eventName = DeleteBucketPolicy) || ($.eventName = DeleteBucketCors) || ($.eventName = DeleteBucketLifecycle) || ($.eventName = DeleteBucketReplication)) }",
             json!({"eventSource": "s3.amazonaws.com", "eventName": "PutBucketPolicy"}),
             json!({"eventSource": "s3.amazonaws.com", "eventName": "GetBucketPolicy"})),
            ("AWS Config configuration changes",
             "{ ($.eventSource = config.amazonaws.com) && (($.eventName=StopConfigurationRecorder)||($.eventName=DeleteDeliveryChannel) ||($.eventName=PutDeliveryChannel)||($.eventName=PutConfigurationRecorder)) }",
             json!({"eventSource": "config.amazonaws.com", "eventName": "StopConfigurationRecorder"}),
             json!({"eventSource": "s3.amazonaws.com", "eventName": "StopConfigurationRecorder"})),
            ("security group changes",
             "{ ($.eventName = AuthorizeSecurityGroupIngress) || ($.eventName = AuthorizeSecurityGroupEgress) || ($.eventName = RevokeSecurityGroupIngress) || ($.eventName = RevokeSecurityGroupEgress) || ($.eventName = CreateSecurityGroup) || ($.eventName = DeleteSecurityGroup) }",
             json!({"eventName": "AuthorizeSecurityGroupIngress"}),
             json!({"eventName": "DescribeSecurityGroups"})),
            ("NACL changes",
             "{ ($.eventName = CreateNetworkAcl) || ($.eventName = CreateNetworkAclEntry) || ($.eventName = DeleteNetworkAcl) || ($.eventName = DeleteNetworkAclEntry) || ($.eventName = ReplaceNetworkAclEntry) || ($.eventName = ReplaceNetworkAclAssociation) }",
             json!({"eventName": "DeleteNetworkAclEntry"}),
             json!({"eventName": "DescribeNetworkAcls"})),
            ("network gateway changes",
             "{ ($.eventName = CreateCustomerGateway) || ($.eventName = DeleteCustomerGateway) || ($.eventName = AttachInternetGateway) || ($.eventName = CreateInternetGateway) || ($.eventName = DeleteInternetGateway) || ($.eventName = DetachInternetGateway) }",
             json!({"eventName": "AttachInternetGateway"}),
             json!({"eventName": "DescribeInternetGateways"})),
            ("route table changes",
             "{ ($.eventSource = ec2.amazonaws.com) && (($.eventName = CreateRoute) || ($.eventName = CreateRouteTable) || ($.eventName = ReplaceRoute) || ($.eventName = ReplaceRouteTableAssociation) || ($.eventName = DeleteRouteTable) || ($.eventName = DeleteRoute) || ($.eventName = DisassociateRouteTable)) }",
             json!({"eventSource": "ec2.amazonaws.com", "eventName": "CreateRoute"}),
             json!({"eventSource": "ec2.amazonaws.com", "eventName": "DescribeRouteTables"})),
            ("VPC changes",
             "{ ($.eventName = CreateVpc) || ($.eventName = DeleteVpc) || ($.eventName = ModifyVpcAttribute) || ($.eventName = AcceptVpcPeeringConnection) || ($.eventName = CreateVpcPeeringConnection) || ($.eventName = DeleteVpcPeeringConnection) || ($.eventName = RejectVpcPeeringConnection) || ($.eventName = AttachClassicLinkVpc) || ($.eventName = DetachClassicLinkVpc) || ($.eventName = DisableVpcClassicLink) || ($.eventName = EnableVpcClassicLink) }",
             json!({"eventName": "DeleteVpc"}),
             json!({"eventName": "DescribeVpcs"})),
            ("AWS Organizations changes",
             "{ ($.eventSource = organizations.amazonaws.com) && (($.eventName = \"AcceptHandshake\") || ($.eventName = \"AttachPolicy\") || ($.eventName = \"CreateAccount\") || ($.eventName = \"CreateOrganizationalUnit\") || ($.eventName = \"CreatePolicy\") || ($.eventName = \"DeclineHandshake\") || ($.eventName = \"DeleteOrganization\") || ($.eventName = \"DeleteOrganizationalUnit\") || ($.eventName = \"DeletePolicy\") || ($.eventName = \"DetachPolicy\") || ($.eventName = \"DisablePolicyType\") || ($.eventName = \"EnablePolicyType\") || ($.eventName = \"InviteAccountToOrganization\") || ($.eventName = \"LeaveOrganization\") || ($.eventName = \"MoveAccount\") || ($.eventName = \"RemoveAccountFromOrganization\") || ($.eventName = \"UpdatePolicy\") || ($.eventName = \"UpdateOrganizationalUnit\")) }",
             json!({"eventSource": "organizations.amazonaws.com", "eventName": "LeaveOrganization"}),
             json!({"eventSource": "organizations.amazonaws.com", "eventName": "ListAccounts"})),
        ];
        for (what, pattern, yes, no) in cases {
            let p = FilterPattern::parse(pattern).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert!(p.matches(&rec(yes.clone())), "{what} should match {yes}");
            assert!(!p.matches(&rec(no.clone())), "{what} should not match {no}");
        }
    }
}

#[cfg(test)]
mod prefilter_tests {
    use super::*;

    #[test]
    fn required_text_never_hides_a_match() {
        let p = FilterPattern::parse(
            r#"{ ($.errorCode = "*UnauthorizedOperation") || ($.errorCode = "AccessDenied*") }"#,
        )
        .unwrap();
        let FilterPattern::Json(_, Some(r)) = &p else {
            panic!("a required text was expected")
        };
        assert_eq!(
            r,
            &vec![
                "UnauthorizedOperation".to_string(),
                "AccessDenied".to_string()
            ]
        );
        assert!(p.matches(r#"{"errorCode":"Client.UnauthorizedOperation"}"#));
        // An escaped value still matches: messages with a backslash are parsed.
        assert!(p.matches(r#"{"errorCode":"\u0041ccessDenied"}"#));
        assert!(!p.matches(r#"{"errorCode":"Throttling"}"#));
        // Nothing required where a value could be absent or rendered otherwise.
        for q in [
            r#"{ $.x != "abc" }"#,
            r#"{ $.x = 200 }"#,
            r#"{ $.x = "200" }"#,
            r#"{ $.x NOT EXISTS }"#,
            r#"{ $.a = "abc" || $.b > 3 }"#,
        ] {
            assert!(
                matches!(
                    FilterPattern::parse(q).unwrap(),
                    FilterPattern::Json(_, None)
                ),
                "{q}"
            );
        }
        assert!(FilterPattern::parse(r#"{ $.x = "200" }"#)
            .unwrap()
            .matches(r#"{"x":200}"#));
    }
}
