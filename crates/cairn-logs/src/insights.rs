//! The CloudWatch Logs Insights subset cairn runs (StartQuery): commands joined by `|`:
//!
//! - `fields f1, f2 [as alias]` — the fields each row shows;
//! - `filter EXPR` — comparisons (`=`, `!=`, `<`, `>`, `<=`, `>=`), `like "text"` /
//!   `like /regex/` / `=~ /regex/`, `[not] in [..]`, `ispresent(f)`, `and`/`or`/`not`, `( )`;
//! - `stats count(*)|count(f)|count_distinct(f)|sum(f)|avg(f)|min(f)|max(f) [as alias], …
//!   [by f|bin(5m) [as alias], …]`;
//! - `sort f [asc|desc], …`, `limit N`, `display f1, f2`;
//! - `parse FIELD "glob with * captures" as a, b` and `parse FIELD /(?<name>re)/`.
//!
//! Fields: `@timestamp`, `@message`, `@logStream`, `@log`, `@ingestionTime`, and every field
//! of a JSON message, flattened with dots (`userIdentity.arn`, `resources.0.ARN`), as AWS
//! discovers them in CloudTrail records.

use regex::Regex;
use serde_json::value::RawValue;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};

/// A query that does not parse (MalformedQueryException).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct QueryError(pub String);

fn err(m: impl Into<String>) -> QueryError {
    QueryError(m.into())
}

/// A value of a field.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Str(String),
    Num(f64),
}

impl Val {
    fn num(&self) -> Option<f64> {
        match self {
            Val::Num(n) => Some(*n),
            Val::Str(s) => s.trim().parse().ok(),
        }
    }
    pub fn render(&self) -> String {
        match self {
            Val::Str(s) => s.clone(),
            Val::Num(n) if n.fract() == 0.0 && n.abs() < 1e15 => format!("{}", *n as i64),
            Val::Num(n) => n.to_string(),
        }
    }
}

#[derive(Debug, Clone)]
enum Lit {
    Str(String),
    Num(f64),
    Re(Regex),
}

#[derive(Debug, Clone)]
enum Cmp {
    Eq,
    Ne,
    Lt,
    Gt,
    Le,
    Ge,
}

#[derive(Debug, Clone)]
enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Cmp(String, Cmp, Lit),
    Like(String, Lit),
    In(String, Vec<Lit>, bool),
    Present(String),
}

#[derive(Debug, Clone)]
enum Agg {
    Count(Option<String>),
    CountDistinct(String),
    Sum(String),
    Avg(String),
    Min(String),
    Max(String),
}

#[derive(Debug, Clone)]
enum Group {
    Field(String),
    Bin(i64),
}

#[derive(Debug, Clone)]
enum Command {
    Fields(Vec<(String, String)>),
    Display(Vec<String>),
    Filter(Expr),
    Stats(Vec<(Agg, String)>, Vec<(Group, String)>),
    Sort(Vec<(String, bool)>),
    Limit(usize),
    Parse(String, Parser),
}

#[derive(Debug, Clone)]
enum Parser {
    Glob(Regex, Vec<String>),
    Re(Regex),
}

/// A parsed query.
#[derive(Debug, Clone)]
pub struct Query {
    commands: Vec<Command>,
}

/// One log event as a query sees it.
pub struct Input<'a> {
    pub timestamp: i64,
    pub ingestion: i64,
    pub stream: &'a str,
    pub group: &'a str,
    pub message: &'a str,
}

/// A result row: (field, value) in display order.
pub type Row = Vec<(String, String)>;

// ---- lexing ----

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(f64),
    Re(String),
    Sym(&'static str),
}

fn lex(s: &str) -> Result<Vec<Tok>, QueryError> {
    let c: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    while i < c.len() {
        let ch = c[i];
        if ch.is_whitespace() {
            i += 1;
        } else if ch == '"' || ch == '\'' || ch == '`' {
            let q = ch;
            let mut t = String::new();
            i += 1;
            loop {
                match c.get(i) {
                    None => return Err(err("an unclosed string")),
                    Some('\\') if c.get(i + 1).is_some() => {
                        t.push(c[i + 1]);
                        i += 2;
                    }
                    Some(&x) if x == q => {
                        i += 1;
                        break;
                    }
                    Some(&x) => {
                        t.push(x);
                        i += 1;
                    }
                }
            }
            out.push(if q == '`' { Tok::Ident(t) } else { Tok::Str(t) });
        } else if ch == '/' {
            let mut t = String::new();
            i += 1;
            loop {
                match c.get(i) {
                    None => return Err(err("an unclosed /regex/")),
                    Some('\\') if c.get(i + 1) == Some(&'/') => {
                        t.push('/');
                        i += 2;
                    }
                    Some('/') => {
                        i += 1;
                        break;
                    }
                    Some(&x) => {
                        t.push(x);
                        i += 1;
                    }
                }
            }
            out.push(Tok::Re(t));
        } else if ch.is_ascii_digit()
            || (ch == '-' && c.get(i + 1).is_some_and(|d| d.is_ascii_digit()))
        {
            let st = i;
            i += 1;
            while i < c.len() && (c[i].is_ascii_digit() || c[i] == '.') {
                i += 1;
            }
            let text: String = c[st..i].iter().collect();
            // A duration in bin(): 5m, 1h, 30s.
            if i < c.len() && c[i].is_ascii_alphabetic() {
                let st2 = i;
                while i < c.len() && c[i].is_ascii_alphabetic() {
                    i += 1;
                }
                let unit: String = c[st2..i].iter().collect();
                out.push(Tok::Ident(format!("{text}{unit}")));
            } else {
                out.push(Tok::Num(text.parse().map_err(|_| err("a bad number"))?));
            }
        } else if ch.is_alphanumeric() || ch == '@' || ch == '_' || ch == '$' {
            let st = i;
            while i < c.len() && (c[i].is_alphanumeric() || "@_.$-".contains(c[i])) {
                // A '-' ends an identifier unless a letter/digit follows it in a name.
                if c[i] == '-' && !c.get(i + 1).is_some_and(|d| d.is_alphanumeric()) {
                    break;
                }
                i += 1;
            }
            out.push(Tok::Ident(c[st..i].iter().collect()));
        } else {
            let two: String = c[i..(i + 2).min(c.len())].iter().collect();
            let sym = match two.as_str() {
                "!=" => Some("!="),
                "<=" => Some("<="),
                ">=" => Some(">="),
                "=~" => Some("=~"),
                "==" => Some("="),
                _ => None,
            };
            if let Some(s) = sym {
                out.push(Tok::Sym(s));
                i += 2;
                continue;
            }
            let s = match ch {
                '=' => "=",
                '<' => "<",
                '>' => ">",
                '(' => "(",
                ')' => ")",
                '[' => "[",
                ']' => "]",
                ',' => ",",
                '|' => "|",
                '*' => "*",
                _ => return Err(err(format!("unexpected character '{ch}'"))),
            };
            out.push(Tok::Sym(s));
            i += 1;
        }
    }
    Ok(out)
}

struct P {
    t: Vec<Tok>,
    at: usize,
}

impl P {
    fn peek(&self) -> Option<&Tok> {
        self.t.get(self.at)
    }
    fn next(&mut self) -> Option<Tok> {
        let t = self.t.get(self.at).cloned();
        self.at += 1;
        t
    }
    fn eat_sym(&mut self, s: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Sym(x)) if *x == s) {
            self.at += 1;
            true
        } else {
            false
        }
    }
    fn eat_word(&mut self, w: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Ident(x)) if x.eq_ignore_ascii_case(w)) {
            self.at += 1;
            true
        } else {
            false
        }
    }
    fn ident(&mut self) -> Result<String, QueryError> {
        match self.next() {
            Some(Tok::Ident(s)) => Ok(s),
            other => Err(err(format!("expected a field name, found {other:?}"))),
        }
    }
    fn done(&self) -> bool {
        self.at >= self.t.len()
    }
    fn lit(&mut self) -> Result<Lit, QueryError> {
        match self.next() {
            Some(Tok::Str(s)) => Ok(Lit::Str(s)),
            Some(Tok::Num(n)) => Ok(Lit::Num(n)),
            Some(Tok::Re(r)) => Ok(Lit::Re(
                Regex::new(&r).map_err(|e| err(format!("a bad regex: {e}")))?,
            )),
            Some(Tok::Ident(s)) if s == "true" || s == "false" => Ok(Lit::Str(s)),
            other => Err(err(format!("expected a value, found {other:?}"))),
        }
    }
    fn or(&mut self) -> Result<Expr, QueryError> {
        let mut l = self.and()?;
        while self.eat_word("or") {
            l = Expr::Or(Box::new(l), Box::new(self.and()?));
        }
        Ok(l)
    }
    fn and(&mut self) -> Result<Expr, QueryError> {
        let mut l = self.unary()?;
        while self.eat_word("and") {
            l = Expr::And(Box::new(l), Box::new(self.unary()?));
        }
        Ok(l)
    }
    fn unary(&mut self) -> Result<Expr, QueryError> {
        if self.eat_word("not") {
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        if self.eat_sym("(") {
            let e = self.or()?;
            if !self.eat_sym(")") {
                return Err(err("expected ')'"));
            }
            return Ok(e);
        }
        let f = self.ident()?;
        if f.eq_ignore_ascii_case("ispresent") {
            if !self.eat_sym("(") {
                return Err(err("expected '(' after ispresent"));
            }
            let x = self.ident()?;
            if !self.eat_sym(")") {
                return Err(err("expected ')'"));
            }
            return Ok(Expr::Present(x));
        }
        if self.eat_word("like") || self.eat_sym("=~") {
            return Ok(Expr::Like(f, self.lit()?));
        }
        let negated = self.eat_word("not");
        if self.eat_word("in") {
            if !self.eat_sym("[") {
                return Err(err("expected '[' after in"));
            }
            let mut vals = Vec::new();
            loop {
                vals.push(self.lit()?);
                if self.eat_sym("]") {
                    break;
                }
                if !self.eat_sym(",") {
                    return Err(err("expected ',' or ']'"));
                }
            }
            return Ok(Expr::In(f, vals, negated));
        }
        if negated {
            if self.eat_word("like") {
                return Ok(Expr::Not(Box::new(Expr::Like(f, self.lit()?))));
            }
            return Err(err("expected 'in' or 'like' after 'not'"));
        }
        let op = match self.next() {
            Some(Tok::Sym("=")) => Cmp::Eq,
            Some(Tok::Sym("!=")) => Cmp::Ne,
            Some(Tok::Sym("<")) => Cmp::Lt,
            Some(Tok::Sym(">")) => Cmp::Gt,
            Some(Tok::Sym("<=")) => Cmp::Le,
            Some(Tok::Sym(">=")) => Cmp::Ge,
            other => return Err(err(format!("expected a comparison, found {other:?}"))),
        };
        Ok(Expr::Cmp(f, op, self.lit()?))
    }
    fn alias(&mut self, default: String) -> Result<String, QueryError> {
        if self.eat_word("as") {
            self.ident()
        } else {
            Ok(default)
        }
    }
}

fn duration(s: &str) -> Result<i64, QueryError> {
    let split = s
        .find(|c: char| c.is_ascii_alphabetic())
        .ok_or_else(|| err("bin() needs a period such as 5m"))?;
    let n: i64 = s[..split].parse().map_err(|_| err("a bad period"))?;
    let unit = match &s[split..] {
        "ms" => 1,
        "s" | "sec" | "second" | "seconds" => 1000,
        "m" | "min" | "minute" | "minutes" => 60_000,
        "h" | "hr" | "hour" | "hours" => 3_600_000,
        "d" | "day" | "days" => 86_400_000,
        "w" | "week" | "weeks" => 7 * 86_400_000,
        u => return Err(err(format!("an unknown period unit '{u}'"))),
    };
    if n <= 0 {
        return Err(err("a period must be positive"));
    }
    n.checked_mul(unit)
        .ok_or_else(|| err("the period is too long"))
}

fn split_commands(q: &str) -> Vec<String> {
    // `|` outside strings and regexes separates commands.
    let mut out = vec![String::new()];
    let mut quote: Option<char> = None;
    let mut prev_sig = ' ';
    for ch in q.chars() {
        match quote {
            Some(x) if ch == x => {
                quote = None;
                out.last_mut().unwrap_or(&mut String::new()).push(ch);
                continue;
            }
            Some(_) => {
                if let Some(l) = out.last_mut() {
                    l.push(ch);
                }
                continue;
            }
            None => {}
        }
        if ch == '"' || ch == '\'' || ch == '`' {
            quote = Some(ch);
        } else if ch == '/' && "(=~,[ e".contains(prev_sig) {
            quote = Some('/');
        } else if ch == '|' {
            out.push(String::new());
            prev_sig = ' ';
            continue;
        }
        if !ch.is_whitespace() {
            prev_sig = ch;
        } else {
            prev_sig = ' ';
        }
        if let Some(l) = out.last_mut() {
            l.push(ch);
        }
    }
    out.into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn glob_parser(glob: &str, names: Vec<String>) -> Result<Parser, QueryError> {
    let mut re = String::new();
    let mut n = 0;
    for (i, part) in glob.split('*').enumerate() {
        if i > 0 {
            re.push_str("(.*?)");
            n += 1;
        }
        re.push_str(&regex::escape(part));
    }
    if n != names.len() {
        return Err(err(format!(
            "the parse pattern has {n} '*' but {} names follow 'as'",
            names.len()
        )));
    }
    if !glob.ends_with('*') {
        re.push('$');
    } else {
        re = re.trim_end_matches("(.*?)").to_string() + "(.*)";
    }
    let r = Regex::new(&re).map_err(|e| err(e.to_string()))?;
    Ok(Parser::Glob(r, names))
}

impl Query {
    /// Parses a query string (at most 10,000 characters).
    pub fn parse(q: &str) -> Result<Query, QueryError> {
        if q.chars().count() > 10_000 {
            return Err(err("the query is longer than 10000 characters"));
        }
        let mut commands = Vec::new();
        for part in split_commands(q) {
            let mut p = P {
                t: lex(&part)?,
                at: 0,
            };
            let cmd = p.ident()?.to_ascii_lowercase();
            let c = match cmd.as_str() {
                "fields" | "display" => {
                    let mut fs = Vec::new();
                    loop {
                        let f = p.ident()?;
                        let a = p.alias(f.clone())?;
                        fs.push((f, a));
                        if !p.eat_sym(",") {
                            break;
                        }
                    }
                    if cmd == "fields" {
                        Command::Fields(fs)
                    } else {
                        Command::Display(fs.into_iter().map(|(_, a)| a).collect())
                    }
                }
                "filter" => Command::Filter(p.or()?),
                "stats" => {
                    let mut aggs = Vec::new();
                    loop {
                        let f = p.ident()?.to_ascii_lowercase();
                        if !p.eat_sym("(") {
                            return Err(err(format!("expected '(' after {f}")));
                        }
                        let arg = if p.eat_sym("*") {
                            None
                        } else {
                            Some(p.ident()?)
                        };
                        if !p.eat_sym(")") {
                            return Err(err("expected ')'"));
                        }
                        let text = format!("{f}({})", arg.as_deref().unwrap_or("*"));
                        let need = |a: Option<String>| {
                            a.ok_or_else(|| err(format!("{f}() needs a field")))
                        };
                        let agg = match f.as_str() {
                            "count" => Agg::Count(arg),
                            "count_distinct" => Agg::CountDistinct(need(arg)?),
                            "sum" => Agg::Sum(need(arg)?),
                            "avg" => Agg::Avg(need(arg)?),
                            "min" => Agg::Min(need(arg)?),
                            "max" => Agg::Max(need(arg)?),
                            other => return Err(err(format!("an unsupported function {other}()"))),
                        };
                        aggs.push((agg, p.alias(text)?));
                        if !p.eat_sym(",") {
                            break;
                        }
                    }
                    let mut by = Vec::new();
                    if p.eat_word("by") {
                        loop {
                            let f = p.ident()?;
                            if f.eq_ignore_ascii_case("bin") {
                                if !p.eat_sym("(") {
                                    return Err(err("expected '(' after bin"));
                                }
                                let period = p.ident()?;
                                if !p.eat_sym(")") {
                                    return Err(err("expected ')'"));
                                }
                                let ms = duration(&period)?;
                                by.push((Group::Bin(ms), p.alias(format!("bin({period})"))?));
                            } else {
                                let a = p.alias(f.clone())?;
                                by.push((Group::Field(f), a));
                            }
                            if !p.eat_sym(",") {
                                break;
                            }
                        }
                    }
                    Command::Stats(aggs, by)
                }
                "sort" => {
                    let mut keys = Vec::new();
                    loop {
                        let f = p.ident()?;
                        let desc = if p.eat_word("desc") {
                            true
                        } else {
                            p.eat_word("asc");
                            false
                        };
                        keys.push((f, desc));
                        if !p.eat_sym(",") {
                            break;
                        }
                    }
                    Command::Sort(keys)
                }
                "limit" => match p.next() {
                    Some(Tok::Num(n)) if (1.0..=10_000.0).contains(&n) && n.fract() == 0.0 => {
                        Command::Limit(n as usize)
                    }
                    _ => return Err(err("limit takes a number from 1 to 10000")),
                },
                "parse" => {
                    let field = p.ident()?;
                    match p.next() {
                        Some(Tok::Str(glob)) => {
                            if !p.eat_word("as") {
                                return Err(err("a parse pattern is followed by 'as'"));
                            }
                            let mut names = vec![p.ident()?];
                            while p.eat_sym(",") {
                                names.push(p.ident()?);
                            }
                            Command::Parse(field, glob_parser(&glob, names)?)
                        }
                        Some(Tok::Re(r)) => Command::Parse(
                            field,
                            Parser::Re(Regex::new(&r).map_err(|e| err(e.to_string()))?),
                        ),
                        _ => return Err(err("parse takes a \"glob\" or a /regex/")),
                    }
                }
                other => return Err(err(format!("an unsupported command '{other}'"))),
            };
            if !p.done() {
                return Err(err(format!("unexpected {:?} in '{part}'", p.peek())));
            }
            commands.push(c);
        }
        if commands.is_empty() {
            return Err(err("the query is empty"));
        }
        Ok(Query { commands })
    }

    /// Every prefix (`a`, `a.b`, `a.b.c`) of every field the query names.
    fn field_prefixes(&self) -> HashSet<String> {
        fn expr(e: &Expr, out: &mut Vec<String>) {
            match e {
                Expr::And(a, b) | Expr::Or(a, b) => {
                    expr(a, out);
                    expr(b, out);
                }
                Expr::Not(a) => expr(a, out),
                Expr::Cmp(f, ..) | Expr::Like(f, _) | Expr::In(f, ..) | Expr::Present(f) => {
                    out.push(f.clone())
                }
            }
        }
        let mut names = Vec::new();
        for c in &self.commands {
            match c {
                Command::Fields(fs) => names.extend(fs.iter().map(|(f, _)| f.clone())),
                Command::Display(fs) => names.extend(fs.iter().cloned()),
                Command::Filter(e) => expr(e, &mut names),
                Command::Stats(aggs, by) => {
                    for (a, _) in aggs {
                        match a {
                            Agg::Count(Some(f))
                            | Agg::CountDistinct(f)
                            | Agg::Sum(f)
                            | Agg::Avg(f)
                            | Agg::Min(f)
                            | Agg::Max(f) => names.push(f.clone()),
                            Agg::Count(None) => {}
                        }
                    }
                    for (g, _) in by {
                        if let Group::Field(f) = g {
                            names.push(f.clone());
                        }
                    }
                }
                Command::Sort(k) => names.extend(k.iter().map(|(f, _)| f.clone())),
                Command::Parse(f, _) => names.push(f.clone()),
                Command::Limit(_) => {}
            }
        }
        let mut out = HashSet::new();
        for n in names {
            let mut at = 0;
            while let Some(d) = n[at..].find('.') {
                out.insert(n[..at + d].to_string());
                at += d + 1;
            }
            out.insert(n);
        }
        out
    }
}

/// A record being evaluated. A JSON message's top-level members are found on first use
/// without copying (nested members are reached by parsing only the member on the way);
/// a message whose keys need unescaping is flattened whole instead.
struct Rec<'a> {
    input: &'a Input<'a>,
    /// The top-level names the query may ask for (`None`: any).
    wanted: Option<&'a HashSet<String>>,
    top: Option<Option<Vec<(&'a str, &'a RawValue)>>>,
    flat: Option<HashMap<String, Val>>,
    extra: HashMap<String, Val>,
}

/// Reads a JSON object's members whose names `keep` accepts, lent from the text; the others
/// are skipped without being copied.
struct Pick<F>(F);

impl<'de, F: Fn(&str) -> bool> serde::de::DeserializeSeed<'de> for Pick<F> {
    type Value = Vec<(&'de str, &'de RawValue)>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, F: Fn(&str) -> bool> serde::de::Visitor<'de> for Pick<F> {
    type Value = Vec<(&'de str, &'de RawValue)>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(k) = m.next_key::<&'de str>()? {
            if (self.0)(k) {
                out.push((k, m.next_value::<&'de RawValue>()?));
            } else {
                m.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(out)
    }
}

/// The members of the object `text` that `keep` accepts (`None`: not an object, or names
/// that need unescaping).
fn pick(text: &str, keep: impl Fn(&str) -> bool) -> Option<Vec<(&str, &RawValue)>> {
    use serde::de::DeserializeSeed;
    let mut de = serde_json::Deserializer::from_str(text);
    let v = Pick(keep).deserialize(&mut de).ok()?;
    de.end().ok()?;
    Some(v)
}

fn leaf(raw: &RawValue) -> Option<Val> {
    match serde_json::from_str::<Value>(raw.get()).ok()? {
        Value::String(s) => Some(Val::Str(s)),
        Value::Number(n) => Some(Val::Num(n.as_f64().unwrap_or(0.0))),
        Value::Bool(b) => Some(Val::Str(b.to_string())),
        _ => None,
    }
}

/// The member `path` (dot-separated, array indexes as numbers) below `raw`.
fn member<'a>(raw: &'a RawValue, path: &str) -> Option<Option<Val>> {
    let (head, rest) = match path.split_once('.') {
        Some((h, r)) => (h, Some(r)),
        None => (path, None),
    };
    let text = raw.get();
    let next: &'a RawValue = if text.starts_with('{') {
        let m = pick(text, |k| k == head)?;
        match m.first() {
            Some((_, v)) => v,
            None => return Some(None),
        }
    } else if text.starts_with('[') {
        let a: Vec<&'a RawValue> = serde_json::from_str(text).ok()?;
        match head.parse::<usize>().ok().and_then(|i| a.get(i)) {
            Some(v) => v,
            None => return Some(None),
        }
    } else {
        return Some(None);
    };
    match rest {
        None => Some(leaf(next)),
        Some(r) => member(next, r),
    }
}

fn flatten(prefix: &str, v: &Value, out: &mut HashMap<String, Val>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let name = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&name, x, out);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                flatten(&format!("{prefix}.{i}"), x, out);
            }
        }
        Value::String(s) => {
            out.insert(prefix.to_string(), Val::Str(s.clone()));
        }
        Value::Number(n) => {
            out.insert(prefix.to_string(), Val::Num(n.as_f64().unwrap_or(0.0)));
        }
        Value::Bool(b) => {
            out.insert(prefix.to_string(), Val::Str(b.to_string()));
        }
        Value::Null => {}
    }
}

/// `@timestamp` as Insights shows it.
pub fn show_time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let milli = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{milli:03}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
fn civil(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

impl<'a> Rec<'a> {
    fn get(&mut self, name: &str) -> Option<Val> {
        if let Some(v) = self.extra.get(name) {
            return Some(v.clone());
        }
        match name {
            "@timestamp" => return Some(Val::Num(self.input.timestamp as f64)),
            "@ingestionTime" => return Some(Val::Num(self.input.ingestion as f64)),
            "@message" => return Some(Val::Str(self.input.message.to_string())),
            "@logStream" => return Some(Val::Str(self.input.stream.to_string())),
            "@log" => return Some(Val::Str(self.input.group.to_string())),
            _ => {}
        }
        let m = self.input.message;
        if self.top.is_none() {
            let wanted = self.wanted;
            self.top = Some(if m.trim_start().starts_with('{') {
                pick(m, |k| wanted.is_none_or(|w| w.contains(k)))
            } else {
                None
            });
            if matches!(self.top, Some(None)) && m.trim_start().starts_with('{') {
                self.flat = serde_json::from_str::<Value>(m).ok().map(|v| {
                    let mut out = HashMap::new();
                    flatten("", &v, &mut out);
                    out
                });
            }
        }
        if let Some(f) = &self.flat {
            return f.get(name).cloned();
        }
        let top = self.top.as_ref()?.as_ref()?;
        let get = |k: &str| top.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
        // A top-level key that is the name, or starts it (keys may hold dots).
        if let Some(v) = get(name) {
            return leaf(v);
        }
        let mut at = 0;
        while let Some(dot) = name[at..].find('.') {
            let (head, rest) = (&name[..at + dot], &name[at + dot + 1..]);
            if let Some(v) = get(head) {
                if let Some(found) = member(v, rest) {
                    return found;
                }
            }
            at += dot + 1;
        }
        None
    }

    fn shown(&mut self, name: &str) -> Option<String> {
        let v = self.get(name)?;
        Some(match (name, &v) {
            ("@timestamp" | "@ingestionTime", Val::Num(n)) => show_time(*n as i64),
            _ => v.render(),
        })
    }
}

fn lit_matches(v: &Val, l: &Lit) -> bool {
    match l {
        Lit::Str(s) => match v {
            Val::Str(x) => x == s,
            Val::Num(n) => s.parse::<f64>().ok() == Some(*n),
        },
        Lit::Num(n) => v.num() == Some(*n),
        Lit::Re(r) => r.is_match(&v.render()),
    }
}

fn eval(e: &Expr, r: &mut Rec<'_>) -> bool {
    match e {
        Expr::And(a, b) => eval(a, r) && eval(b, r),
        Expr::Or(a, b) => eval(a, r) || eval(b, r),
        Expr::Not(a) => !eval(a, r),
        Expr::Present(f) => r.get(f).is_some(),
        Expr::Like(f, l) => match r.get(f) {
            None => false,
            Some(v) => match l {
                Lit::Re(re) => re.is_match(&v.render()),
                Lit::Str(s) => v.render().contains(s.as_str()),
                Lit::Num(n) => v.render().contains(&n.to_string()),
            },
        },
        Expr::In(f, vals, negated) => {
            let hit = r
                .get(f)
                .is_some_and(|v| vals.iter().any(|l| lit_matches(&v, l)));
            hit != *negated
        }
        Expr::Cmp(f, op, l) => {
            let Some(v) = r.get(f) else {
                return matches!(op, Cmp::Ne);
            };
            match op {
                Cmp::Eq => lit_matches(&v, l),
                Cmp::Ne => !lit_matches(&v, l),
                _ => {
                    let ord = match (l, v.num()) {
                        (Lit::Num(n), Some(x)) => x.partial_cmp(n),
                        (Lit::Str(s), _) => match (s.parse::<f64>().ok(), v.num()) {
                            (Some(n), Some(x)) => x.partial_cmp(&n),
                            _ => Some(v.render().as_str().cmp(s.as_str())),
                        },
                        _ => None,
                    };
                    let Some(o) = ord else { return false };
                    match op {
                        Cmp::Lt => o.is_lt(),
                        Cmp::Gt => o.is_gt(),
                        Cmp::Le => o.is_le(),
                        Cmp::Ge => o.is_ge(),
                        _ => false,
                    }
                }
            }
        }
    }
}

#[derive(Default, Clone)]
struct Acc {
    count: u64,
    sum: f64,
    min: Option<f64>,
    max: Option<f64>,
    distinct: HashSet<String>,
    n: u64,
}

/// A running query: feed it events, then take its rows.
pub struct Run {
    q: Query,
    /// The (non-stats) rows kept so far, with their sort keys.
    rows: Vec<(Vec<Option<Val>>, Row)>,
    groups: BTreeMap<Vec<String>, Vec<Acc>>,
    pub matched: u64,
    limit: usize,
    /// Rows (non-stats, unsorted) are enough: stop scanning.
    pub full: bool,
    sort: Vec<(String, bool)>,
    /// Every prefix of every field name the query uses (JSON members to read).
    wanted: Option<HashSet<String>>,
    /// Why the run cannot give a right answer (too many groups).
    failed: Option<String>,
}

/// The most groups a `stats` query may make, and distinct values `count_distinct` counts
/// exactly, before the query fails (rather than answer wrong or hold unbounded memory).
pub const MAX_GROUPS: usize = 100_000;

impl Run {
    /// Why the run failed, if it did.
    pub fn failure(&self) -> Option<String> {
        self.failed.clone()
    }

    /// A run of `q` returning at most `limit` rows (the request's limit; a `limit` command
    /// lowers it).
    pub fn new(q: Query, limit: usize) -> Run {
        let limit = q
            .commands
            .iter()
            .filter_map(|c| match c {
                Command::Limit(n) => Some(*n),
                _ => None,
            })
            .min()
            .map_or(limit, |n| n.min(limit));
        let sort = q
            .commands
            .iter()
            .filter_map(|c| match c {
                Command::Sort(k) => Some(k.clone()),
                _ => None,
            })
            .next_back()
            .unwrap_or_default();
        let wanted = Some(q.field_prefixes());
        Run {
            q,
            rows: Vec::new(),
            groups: BTreeMap::new(),
            matched: 0,
            limit,
            full: false,
            sort,
            wanted,
            failed: None,
        }
    }

    /// Evaluates one event.
    pub fn feed(&mut self, input: &Input<'_>) {
        let mut r = Rec {
            input,
            wanted: self.wanted.as_ref(),
            top: None,
            flat: None,
            extra: HashMap::new(),
        };
        let mut shown: Option<Vec<(String, String)>> = None;
        for c in &self.q.commands {
            match c {
                Command::Filter(e) => {
                    if !eval(e, &mut r) {
                        return;
                    }
                }
                Command::Parse(field, p) => {
                    let Some(text) = r.get(field).map(|v| v.render()) else {
                        continue;
                    };
                    match p {
                        Parser::Glob(re, names) => {
                            if let Some(caps) = re.captures(&text) {
                                for (i, n) in names.iter().enumerate() {
                                    if let Some(m) = caps.get(i + 1) {
                                        r.extra.insert(n.clone(), Val::Str(m.as_str().into()));
                                    }
                                }
                            }
                        }
                        Parser::Re(re) => {
                            if let Some(caps) = re.captures(&text) {
                                for n in re.capture_names().flatten() {
                                    if let Some(m) = caps.name(n) {
                                        r.extra.insert(n.into(), Val::Str(m.as_str().into()));
                                    }
                                }
                            }
                        }
                    }
                }
                Command::Fields(fs) => {
                    let mut row = shown.take().unwrap_or_default();
                    for (f, a) in fs {
                        if let Some(v) = r.get(f) {
                            if a != f {
                                r.extra.insert(a.clone(), v);
                            }
                        }
                        row.retain(|(n, _)| n != a);
                        if let Some(v) = r.shown(a) {
                            row.push((a.clone(), v));
                        }
                    }
                    shown = Some(row);
                }
                Command::Stats(aggs, by) => {
                    self.matched += 1;
                    let key: Vec<String> = by
                        .iter()
                        .map(|(g, _)| match g {
                            Group::Field(f) => r.get(f).map(|v| v.render()).unwrap_or_default(),
                            Group::Bin(ms) => show_time(input.timestamp.div_euclid(*ms) * ms),
                        })
                        .collect();
                    if self.failed.is_some() {
                        return;
                    }
                    if !self.groups.contains_key(&key) && self.groups.len() >= MAX_GROUPS {
                        self.failed =
                            Some(format!("the query makes more than {MAX_GROUPS} groups"));
                        self.full = true;
                        return;
                    }
                    let accs = self
                        .groups
                        .entry(key)
                        .or_insert_with(|| vec![Acc::default(); aggs.len()]);
                    for ((agg, _), acc) in aggs.iter().zip(accs.iter_mut()) {
                        match agg {
                            Agg::Count(None) => acc.count += 1,
                            Agg::Count(Some(f)) => {
                                if r.get(f).is_some() {
                                    acc.count += 1
                                }
                            }
                            Agg::CountDistinct(f) => {
                                if let Some(v) = r.get(f) {
                                    if acc.distinct.len() < MAX_GROUPS {
                                        acc.distinct.insert(v.render());
                                    } else if !acc.distinct.contains(&v.render()) {
                                        self.failed = Some(format!(
                                            "count_distinct counts at most {MAX_GROUPS} values"
                                        ));
                                    }
                                }
                            }
                            Agg::Sum(f) | Agg::Avg(f) | Agg::Min(f) | Agg::Max(f) => {
                                if let Some(x) = r.get(f).and_then(|v| v.num()) {
                                    acc.sum += x;
                                    acc.n += 1;
                                    acc.min = Some(acc.min.map_or(x, |m| m.min(x)));
                                    acc.max = Some(acc.max.map_or(x, |m| m.max(x)));
                                }
                            }
                        }
                    }
                    return;
                }
                Command::Sort(_) | Command::Limit(_) | Command::Display(_) => {}
            }
        }
        self.matched += 1;
        let mut row = match shown {
            Some(r) => r,
            None => {
                let mut row = Vec::new();
                for f in ["@timestamp", "@message"] {
                    if let Some(v) = r.shown(f) {
                        row.push((f.to_string(), v));
                    }
                }
                row
            }
        };
        if let Some(Command::Display(d)) = self
            .q
            .commands
            .iter()
            .rfind(|c| matches!(c, Command::Display(_)))
        {
            let mut out = Vec::new();
            for f in d {
                if let Some(x) = row.iter().find(|(n, _)| n == f).cloned() {
                    out.push(x);
                } else if let Some(v) = r.shown(f) {
                    out.push((f.clone(), v));
                }
            }
            row = out;
        }
        let sk: Vec<Option<Val>> = self.sort.iter().map(|(f, _)| r.get(f)).collect();
        let unsorted = self.sort.is_empty();
        self.rows.push((sk, row));
        if unsorted && self.rows.len() >= self.limit {
            self.full = true;
        }
        // Sorted: keep only the best `limit` (bounded memory; sorted in batches).
        if !unsorted && self.rows.len() >= 2 * self.limit.max(1) {
            let rows = std::mem::take(&mut self.rows);
            self.rows = sort_rows(rows, &self.sort, self.limit);
        }
    }

    /// The result rows.
    pub fn finish(self) -> Vec<Row> {
        let keys = self.sort.clone();
        if let Some(Command::Stats(aggs, by)) = self
            .q
            .commands
            .iter()
            .find(|c| matches!(c, Command::Stats(..)))
            .cloned()
        {
            let mut rows: Vec<(Vec<Option<Val>>, Row)> = Vec::new();
            for (key, accs) in self.groups {
                let mut row: Row = Vec::new();
                let mut vals: HashMap<String, Val> = HashMap::new();
                for ((_, name), k) in by.iter().zip(key) {
                    vals.insert(name.clone(), Val::Str(k.clone()));
                    row.push((name.clone(), k));
                }
                for ((agg, name), acc) in aggs.iter().zip(accs) {
                    let v = match agg {
                        Agg::Count(_) => Some(Val::Num(acc.count as f64)),
                        Agg::CountDistinct(_) => Some(Val::Num(acc.distinct.len() as f64)),
                        Agg::Sum(_) => (acc.n > 0).then_some(Val::Num(acc.sum)),
                        Agg::Avg(_) => (acc.n > 0).then(|| Val::Num(acc.sum / acc.n as f64)),
                        Agg::Min(_) => acc.min.map(Val::Num),
                        Agg::Max(_) => acc.max.map(Val::Num),
                    };
                    if let Some(v) = v {
                        row.push((name.clone(), v.render()));
                        vals.insert(name.clone(), v);
                    }
                }
                let sk = keys.iter().map(|(f, _)| vals.get(f).cloned()).collect();
                rows.push((sk, row));
            }
            return sorted(rows, &keys, self.limit);
        }
        sorted(self.rows, &keys, self.limit)
    }
}

fn cmp_val(a: &Option<Val>, b: &Option<Val>) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, _) => Ordering::Greater,
        (_, None) => Ordering::Less,
        (Some(x), Some(y)) => match (x.num(), y.num()) {
            (Some(p), Some(q)) => p.partial_cmp(&q).unwrap_or(Ordering::Equal),
            _ => x.render().cmp(&y.render()),
        },
    }
}

/// The first `limit` rows in `keys` order (a stable sort).
fn sort_rows(
    mut rows: Vec<(Vec<Option<Val>>, Row)>,
    keys: &[(String, bool)],
    limit: usize,
) -> Vec<(Vec<Option<Val>>, Row)> {
    if !keys.is_empty() {
        rows.sort_by(|(a, _), (b, _)| {
            for (i, (_, desc)) in keys.iter().enumerate() {
                let o = cmp_val(&a[i], &b[i]);
                let o = if *desc { o.reverse() } else { o };
                if o.is_ne() {
                    return o;
                }
            }
            std::cmp::Ordering::Equal
        });
    }
    rows.truncate(limit);
    rows
}

fn sorted(rows: Vec<(Vec<Option<Val>>, Row)>, keys: &[(String, bool)], limit: usize) -> Vec<Row> {
    sort_rows(rows, keys, limit)
        .into_iter()
        .map(|(_, r)| r)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(q: &str, msgs: &[&str]) -> Vec<Row> {
        let mut r = Run::new(Query::parse(q).unwrap(), 1000);
        for (i, m) in msgs.iter().enumerate() {
            r.feed(&Input {
                timestamp: 1_700_000_000_000 + i as i64 * 60_000,
                ingestion: 0,
                stream: "s",
                group: "g",
                message: m,
            });
        }
        r.finish()
    }

    const A: &str = r#"{"eventName":"ConsoleLogin","errorCode":"AccessDenied","userIdentity":{"arn":"arn:aws:iam::1:user/a"},"resources":[{"ARN":"x"}],"n":3}"#;
    const B: &str =
        r#"{"eventName":"GetObject","userIdentity":{"arn":"arn:aws:iam::1:user/b"},"n":5}"#;

    #[test]
    fn stats_count_by_field_sorted() {
        let rows = run("stats count(*) as c by eventName | sort c desc", &[A, B, B]);
        assert_eq!(
            rows[0],
            vec![
                ("eventName".into(), "GetObject".into()),
                ("c".into(), "2".into())
            ]
        );
        assert_eq!(rows[1][1].1, "1");
    }

    #[test]
    fn filters_and_fields() {
        let rows = run(
            "fields eventName, userIdentity.arn | filter errorCode like /Denied/",
            &[A, B],
        );
        assert_eq!(rows.len(), 1);
        assert_eq!(
            rows[0][1],
            ("userIdentity.arn".into(), "arn:aws:iam::1:user/a".into())
        );
        assert_eq!(
            run(
                "filter eventName in [\"GetObject\", \"X\"] and n >= 5",
                &[A, B]
            )
            .len(),
            1
        );
        assert_eq!(run("filter not ispresent(errorCode)", &[A, B, B]).len(), 2);
        assert_eq!(
            run("filter resources.0.ARN = \"x\" or n < 4", &[A, B]).len(),
            1
        );
        assert_eq!(
            run("filter eventName != 'GetObject' | limit 5", &[A, B]).len(),
            1
        );
    }

    #[test]
    fn aggregates_and_bins() {
        let rows = run(
            "stats sum(n) as s, avg(n), min(n), max(n), count_distinct(eventName)",
            &[A, B, B],
        );
        assert_eq!(
            rows[0],
            vec![
                ("s".into(), "13".into()),
                ("avg(n)".into(), "4.333333333333333".into()),
                ("min(n)".into(), "3".into()),
                ("max(n)".into(), "5".into()),
                ("count_distinct(eventName)".into(), "2".into())
            ]
        );
        let rows = run("stats count(*) by bin(5m)", &[A, B, B, A, A, A, A]);
        assert_eq!(
            rows.iter()
                .map(|r| r[1].1.parse::<u32>().unwrap())
                .sum::<u32>(),
            7
        );
        assert!(rows[0][0].1.ends_with(":00.000"));
    }

    #[test]
    fn parse_and_display() {
        let rows = run(
            "parse @message 'user=* action=*' as user, action | filter action = 'put' | display user",
            &["user=ann action=put", "user=bob action=get"],
        );
        assert_eq!(rows, vec![vec![("user".to_string(), "ann".to_string())]]);
        let rows = run(
            "parse @message /user=(?<u>\\w+)/ | stats count(*) by u",
            &["user=ann x", "user=ann y"],
        );
        assert_eq!(
            rows[0],
            vec![("u".into(), "ann".into()), ("count(*)".into(), "2".into())]
        );
    }

    #[test]
    fn malformed_queries_are_refused() {
        for q in [
            "",
            "frobnicate x",
            "stats nope(x)",
            "filter (a = 1",
            "limit 0",
            "parse @message 'a*b*' as x",
            "filter a like /(/",
        ] {
            assert!(Query::parse(q).is_err(), "{q}");
        }
        assert!(Query::parse("stats count(*) by bin(2305843009213693952s)").is_err());
        assert_eq!(show_time(0), "1970-01-01 00:00:00.000");
        assert_eq!(show_time(1_700_000_000_123), "2023-11-14 22:13:20.123");
    }
}
