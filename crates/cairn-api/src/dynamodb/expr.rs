//! Just enough of DynamoDB's expression language for authorization: the attributes an
//! expression names (`dynamodb:Attributes`) and the partition key's value in a key condition
//! (`dynamodb:LeadingKeys`). Values (`:v`) are never read here except the partition key's,
//! which a key condition compares by equality.

use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// An attribute name as written (`Year`) or a placeholder resolved (`#y` → `Year`);
    /// `head` when it starts a path (not after `.`).
    Attr { name: String, head: bool },
    /// `:v`
    Value(String),
    /// A function name (`begins_with`), a keyword (`AND`, `SET`), or punctuation.
    Other(String),
}

const KEYWORDS: &[&str] = &[
    "AND", "OR", "NOT", "BETWEEN", "IN", "SET", "REMOVE", "ADD", "DELETE",
];

fn tokens(expr: &str, names: Option<&Map<String, Value>>) -> Vec<Tok> {
    let b: Vec<char> = expr.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let mut after_dot = false;
    let word = |i: &mut usize| {
        let s = *i;
        while *i < b.len() && (b[*i].is_alphanumeric() || b[*i] == '_' || b[*i] == '-') {
            *i += 1;
        }
        b[s..*i].iter().collect::<String>()
    };
    while i < b.len() {
        let c = b[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        match c {
            '#' => {
                i += 1;
                let w = word(&mut i);
                let resolved = names
                    .and_then(|n| n.get(&format!("#{w}")))
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or(format!("#{w}"));
                out.push(Tok::Attr {
                    name: resolved,
                    head: !after_dot,
                });
                after_dot = false;
            }
            ':' => {
                i += 1;
                out.push(Tok::Value(format!(":{}", word(&mut i))));
                after_dot = false;
            }
            '.' => {
                i += 1;
                after_dot = true;
            }
            '[' => {
                while i < b.len() && b[i] != ']' {
                    i += 1;
                }
                i += 1;
            }
            c if c.is_alphabetic() || c == '_' => {
                let w = word(&mut i);
                let mut j = i;
                while j < b.len() && b[j].is_whitespace() {
                    j += 1;
                }
                let call = j < b.len() && b[j] == '(';
                if call || KEYWORDS.iter().any(|k| k.eq_ignore_ascii_case(&w)) {
                    out.push(Tok::Other(w.to_ascii_uppercase()));
                } else {
                    out.push(Tok::Attr {
                        name: w,
                        head: !after_dot,
                    });
                }
                after_dot = false;
            }
            '<' | '>' | '=' => {
                let mut op = c.to_string();
                if i + 1 < b.len() && matches!(b[i + 1], '=' | '>') {
                    op.push(b[i + 1]);
                    i += 1;
                }
                i += 1;
                out.push(Tok::Other(op));
                after_dot = false;
            }
            c => {
                i += 1;
                out.push(Tok::Other(c.to_string()));
                after_dot = false;
            }
        }
    }
    out
}

/// The top-level attributes `expr` names (the first element of each path), placeholders
/// resolved through `names`.
pub fn attributes(expr: &str, names: Option<&Map<String, Value>>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for t in tokens(expr, names) {
        if let Tok::Attr { name, head: true } = t {
            if !out.contains(&name) {
                out.push(name);
            }
        }
    }
    out
}

/// The values a key condition compares partition key `hash` to by equality (`hash = :v` or
/// `:v = hash`; all of them, should there be several). Empty when it has no such comparison
/// or a placeholder has no value (the caller then fails closed).
pub fn equality_values<'a>(
    expr: &str,
    names: Option<&Map<String, Value>>,
    values: Option<&'a Map<String, Value>>,
    hash: &str,
) -> Vec<&'a Value> {
    let t = tokens(expr, names);
    let mut out = Vec::new();
    for w in t.windows(3) {
        let placeholder = match w {
            [Tok::Attr { name, head: true }, Tok::Other(eq), Tok::Value(v)]
            | [Tok::Value(v), Tok::Other(eq), Tok::Attr { name, head: true }]
                if eq == "=" && name == hash =>
            {
                v
            }
            _ => continue,
        };
        match values.and_then(|v| v.get(placeholder)) {
            Some(v) => out.push(v),
            None => return Vec::new(),
        }
    }
    out
}

/// An attribute value as policies and records read it: a string, a number's text, binary as
/// its base64 text. Other types (sets, maps, lists) have no such form.
pub fn scalar(v: &Value) -> Option<String> {
    let m = v.as_object()?;
    if m.len() != 1 {
        return None;
    }
    let (t, x) = m.iter().next()?;
    match t.as_str() {
        "S" | "N" | "B" => x.as_str().map(str::to_string),
        "BOOL" => x.as_bool().map(|b| b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn attributes_are_path_heads_with_placeholders_resolved() {
        let names = map(json!({"#y": "Year", "#n": "nested"}));
        let a = attributes(
            "SET #y = :y, Album.Title = :t, Tracks[2] = :x REMOVE #n.inner ADD Plays :one",
            Some(&names),
        );
        assert_eq!(a, vec!["Year", "Album", "Tracks", "nested", "Plays"]);
        let c = attributes(
            "attribute_not_exists(Price) AND begins_with(#y, :p) OR size(Tags) > :n",
            Some(&names),
        );
        assert_eq!(c, vec!["Price", "Year", "Tags"]);
        assert_eq!(
            attributes("a, b.c, #missing", None),
            vec!["a", "b", "#missing"]
        );
    }

    #[test]
    fn the_partition_value_is_found_on_either_side() {
        let values = map(json!({":p": {"S": "alice"}, ":s": {"N": "3"}}));
        let names = map(json!({"#pk": "user"}));
        let v = equality_values("#pk = :p AND sk > :s", Some(&names), Some(&values), "user");
        assert_eq!(scalar(v[0]).as_deref(), Some("alice"));
        let v = equality_values(
            ":p=user and begins_with(sk, :s)",
            None,
            Some(&values),
            "user",
        );
        assert_eq!(scalar(v[0]).as_deref(), Some("alice"));
        let v = equality_values("user = :p AND user = :s", None, Some(&values), "user");
        assert_eq!(v.len(), 2);
        // Not an equality on the partition key, or a value that is not there.
        assert!(equality_values("user > :p", None, Some(&values), "user").is_empty());
        assert!(equality_values("other = :p", None, Some(&values), "user").is_empty());
        assert!(equality_values("x.user = :p", None, Some(&values), "user").is_empty());
        assert!(equality_values("user = :nope", None, Some(&values), "user").is_empty());
    }
}
