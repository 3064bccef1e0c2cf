//! PartiQL statements (ExecuteStatement, BatchExecuteStatement, ExecuteTransaction), read as
//! far as authorization and the record need: the verb (`dynamodb:PartiQLSelect`, …), the one
//! table (and index) it names, and the statement as the record shows it — every literal
//! `***(Redacted)` but a primary-key attribute compared by equality in its `WHERE`, as
//! DynamoDB logs it. A statement cairn cannot read that far is refused, never forwarded;
//! so is anything where cairn's reading and the upstream's could part (comments, whose end
//! PartiQL grammars disagree on; Ion literals in backticks; `$` in names; a carriage
//! return; a number run into a word).

use super::schema::KeySchema;
use crate::protocol::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Select,
    Insert,
    Update,
    Delete,
    /// `EXISTS(SELECT …)`: a transaction's condition check.
    Exists,
}

impl Verb {
    /// The IAM action the statement needs.
    pub fn action(self) -> &'static str {
        match self {
            Verb::Select | Verb::Exists => "dynamodb:PartiQLSelect",
            Verb::Insert => "dynamodb:PartiQLInsert",
            Verb::Update => "dynamodb:PartiQLUpdate",
            Verb::Delete => "dynamodb:PartiQLDelete",
        }
    }

    pub fn reads(self) -> bool {
        matches!(self, Verb::Select | Verb::Exists)
    }
}

/// A statement as cairn reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    pub verb: Verb,
    pub table: String,
    pub index: Option<String>,
    tokens: Vec<Token>,
    /// The tokens naming the table (and index).
    source: std::ops::Range<usize>,
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Word(String),
    /// `"name"` (unquoted)
    Quoted(String),
    /// A string, number or Ion literal.
    Literal,
    /// `?`
    Param,
    Punct(char),
}

#[derive(Debug, Clone, PartialEq)]
struct Token {
    kind: Kind,
    span: (usize, usize),
}

fn lex(s: &str) -> Result<Vec<Token>, String> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let start = i;
        let kind = match c {
            b'\r' => return Err("a carriage return outside quotes".into()),
            c if c.is_ascii_whitespace() => {
                i += 1;
                continue;
            }
            b'`' => return Err("an Ion literal (backticks)".into()),
            b'$' => return Err("a `$` outside quotes".into()),
            b'-' if b.get(i + 1) == Some(&b'-') => return Err("a comment".into()),
            b'/' if b.get(i + 1) == Some(&b'*') => return Err("a comment".into()),
            b'\'' | b'"' => {
                i += 1;
                let mut text = Vec::new();
                loop {
                    if i >= b.len() {
                        return Err("an unterminated quoted text".into());
                    }
                    if b[i] == c {
                        if i + 1 < b.len() && b[i + 1] == c {
                            text.push(c);
                            i += 2;
                            continue;
                        }
                        i += 1;
                        break;
                    }
                    text.push(b[i]);
                    i += 1;
                }
                if c == b'"' {
                    Kind::Quoted(String::from_utf8_lossy(&text).into_owned())
                } else {
                    Kind::Literal
                }
            }
            c if c.is_ascii_digit()
                || (c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit)) =>
            {
                let digits = |i: &mut usize| {
                    while *i < b.len() && b[*i].is_ascii_digit() {
                        *i += 1;
                    }
                };
                digits(&mut i);
                if i < b.len() && b[i] == b'.' {
                    i += 1;
                    digits(&mut i);
                }
                if i < b.len() && matches!(b[i], b'e' | b'E') {
                    i += 1;
                    if i < b.len() && matches!(b[i], b'+' | b'-') {
                        i += 1;
                    }
                    digits(&mut i);
                }
                if i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    return Err("a number run into a word".into());
                }
                Kind::Literal
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                Kind::Word(s[start..i].to_string())
            }
            b'?' => {
                i += 1;
                Kind::Param
            }
            c if c.is_ascii() => {
                i += 1;
                Kind::Punct(c as char)
            }
            _ => return Err("a character PartiQL does not use".into()),
        };
        out.push(Token {
            kind,
            span: (start, i),
        });
    }
    Ok(out)
}

fn is_word(t: &Token, w: &str) -> bool {
    matches!(&t.kind, Kind::Word(x) if x.eq_ignore_ascii_case(w))
}

/// An identifier: a bare word or a quoted name.
fn ident(t: Option<&Token>) -> Option<String> {
    match &t?.kind {
        Kind::Word(w) => Some(w.clone()),
        Kind::Quoted(q) => Some(q.clone()),
        _ => None,
    }
}

fn refuse(why: impl std::fmt::Display) -> ApiError {
    ApiError::client(
        "ValidationException",
        format!("cairn could not read the statement's table and verb ({why}); it was not run"),
    )
}

/// Reads a statement's verb and table.
pub fn parse(text: &str) -> Result<Statement, ApiError> {
    let tokens = lex(text).map_err(refuse)?;
    let code: Vec<&Token> = tokens.iter().collect();
    let first = code.first().ok_or_else(|| refuse("it is empty"))?;
    let (verb, at) = if is_word(first, "SELECT") {
        (Verb::Select, None)
    } else if is_word(first, "INSERT") && code.get(1).is_some_and(|t| is_word(t, "INTO")) {
        (Verb::Insert, Some(2))
    } else if is_word(first, "UPDATE") {
        (Verb::Update, Some(1))
    } else if is_word(first, "DELETE") && code.get(1).is_some_and(|t| is_word(t, "FROM")) {
        (Verb::Delete, Some(2))
    } else if is_word(first, "EXISTS") {
        (Verb::Exists, None)
    } else {
        return Err(refuse(
            "it does not start with SELECT, INSERT INTO, UPDATE, DELETE FROM or EXISTS",
        ));
    };
    // SELECT and EXISTS name their table after the one FROM.
    let at = match at {
        Some(a) => a,
        None => {
            let froms: Vec<usize> = code
                .iter()
                .enumerate()
                .filter(|(_, t)| is_word(t, "FROM"))
                .map(|(i, _)| i)
                .collect();
            match froms.as_slice() {
                [one] => one + 1,
                [] => return Err(refuse("it has no FROM")),
                _ => return Err(refuse("it has more than one FROM")),
            }
        }
    };
    let table = ident(code.get(at).copied()).ok_or_else(|| refuse("no table name"))?;
    let mut index = None;
    let mut next = at + 1;
    if code.get(next).is_some_and(|t| t.kind == Kind::Punct('.')) {
        index = Some(ident(code.get(next + 1).copied()).ok_or_else(|| refuse("no index name"))?);
        next += 2;
    }
    // A second source (`FROM a, b`) or a join is nothing DynamoDB runs; refuse it rather
    // than authorize only the first.
    if code.get(next).is_some_and(|t| {
        t.kind == Kind::Punct(',')
            || is_word(t, "JOIN")
            || is_word(t, "CROSS")
            || is_word(t, "INNER")
            || is_word(t, "LEFT")
    }) {
        return Err(refuse("it names more than one source"));
    }
    Ok(Statement {
        verb,
        table,
        index,
        tokens,
        source: at..next,
    })
}

impl Statement {
    /// Whether the literal at token `i` is a tuple's attribute name (`{'Artist': …}`).
    fn is_tuple_name(&self, text: &str, i: usize) -> bool {
        self.tokens
            .get(i + 1)
            .is_some_and(|n| n.kind == Kind::Punct(':'))
            && text[self.tokens[i].span.0..].starts_with('\'')
    }

    /// The statement as the record shows it: literals `***(Redacted)`, except a tuple's
    /// attribute names and a literal a primary-key attribute is compared to by equality
    /// after `WHERE` (a whole name, not the end of a path like `info.Key`; when the table's
    /// key schema is known).
    pub fn redacted(&self, text: &str, schema: Option<&KeySchema>) -> String {
        const R: &str = "***(Redacted)";
        let code = &self.tokens;
        let mut out = String::with_capacity(text.len());
        let mut last = 0;
        let mut in_where = false;
        for (i, t) in code.iter().enumerate() {
            if is_word(t, "WHERE") {
                in_where = true;
            }
            if t.kind != Kind::Literal {
                continue;
            }
            let key_value = in_where
                && i >= 2
                && code[i - 1].kind == Kind::Punct('=')
                && (i < 3 || code[i - 3].kind != Kind::Punct('.'))
                && ident(Some(&code[i - 2])).is_some_and(|n| schema.is_some_and(|s| s.is_key(&n)));
            if !(key_value || self.is_tuple_name(text, i)) {
                out.push_str(&text[last..t.span.0]);
                out.push_str(R);
                last = t.span.1;
            }
        }
        out.push_str(&text[last..]);
        out
    }

    /// The attributes the statement names (the heads of paths, bare or quoted, and a
    /// tuple's attribute names; not functions, keywords or the table), for
    /// `dynamodb:Attributes`. `None`: it reads every attribute (`SELECT *`).
    pub fn attributes(&self, text: &str) -> Option<Vec<String>> {
        // Reserved words only: anything else bare counts as an attribute (a word taken for
        // an attribute can only make a restriction refuse more).
        const KEYWORDS: &[&str] = &[
            "SELECT", "FROM", "WHERE", "AND", "OR", "NOT", "INSERT", "INTO", "VALUE", "UPDATE",
            "SET", "REMOVE", "DELETE", "EXISTS", "BETWEEN", "IN", "IS", "MISSING", "NULL", "TRUE",
            "FALSE",
        ];
        let t = &self.tokens;
        let mut out: Vec<String> = Vec::new();
        for (i, tok) in t.iter().enumerate() {
            if self.source.contains(&i) {
                continue;
            }
            let name = match &tok.kind {
                Kind::Punct('*') if i > 0 && is_word(&t[i - 1], "SELECT") => return None,
                Kind::Word(w) if !KEYWORDS.iter().any(|k| k.eq_ignore_ascii_case(w)) => w.clone(),
                Kind::Quoted(q) => q.clone(),
                Kind::Literal if self.is_tuple_name(text, i) => {
                    let raw = &text[tok.span.0..tok.span.1];
                    raw[1..raw.len() - 1].replace("''", "'")
                }
                _ => continue,
            };
            let nested = i > 0 && t[i - 1].kind == Kind::Punct('.');
            let call = t.get(i + 1).is_some_and(|n| n.kind == Kind::Punct('('));
            if !(nested || call || out.contains(&name)) {
                out.push(name);
            }
        }
        Some(out)
    }

    /// Every value the statement writes out (string and number literals, unquoted; a
    /// tuple's attribute names aside): a superset of its partition key values.
    pub fn literals(&self, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        for (i, t) in self.tokens.iter().enumerate() {
            if t.kind != Kind::Literal || self.is_tuple_name(text, i) {
                continue;
            }
            let raw = &text[t.span.0..t.span.1];
            out.push(
                match raw.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
                    Some(inner) => inner.replace("''", "'"),
                    None => raw.to_string(),
                },
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::dynamodb::schema::music as schema;

    #[test]
    fn verbs_and_tables() {
        let s = parse(r#"SELECT * FROM "Music"."byAlbum" WHERE Artist = ?"#).unwrap();
        assert_eq!(
            (s.verb, s.table.as_str(), s.index.as_deref()),
            (Verb::Select, "Music", Some("byAlbum"))
        );
        let s = parse("insert into Music value {'Artist': 'a', 'SongTitle': 'b'}").unwrap();
        assert_eq!((s.verb, s.table.as_str()), (Verb::Insert, "Music"));
        let s = parse("UPDATE \"Mu\"\"sic\" SET x = 1 WHERE Artist = 'a'").unwrap();
        assert_eq!((s.verb, s.table.as_str()), (Verb::Update, "Mu\"sic"));
        let s = parse("DELETE FROM Music WHERE Artist = 'a' AND SongTitle = 'b'").unwrap();
        assert_eq!(s.verb, Verb::Delete);
        let s = parse("EXISTS(SELECT * FROM Music WHERE Artist = 'a')").unwrap();
        assert_eq!((s.verb, s.table.as_str()), (Verb::Exists, "Music"));
        assert!(s.verb.reads() && !Verb::Insert.reads());
    }

    #[test]
    fn unreadable_statements_are_refused() {
        for bad in [
            "",
            "DROP TABLE Music",
            "SELECT * FROM a, b",
            "SELECT * FROM a WHERE x IN (SELECT * FROM b)",
            "SELECT 'unterminated FROM t",
            "SELECT * /* FROM hidden",
            "SELECT 1",
            "-- FROM t",
        ] {
            assert_eq!(parse(bad).unwrap_err().code, "ValidationException", "{bad}");
        }
        // Where readings could part: refused.
        for bad in [
            "SELECT * --\rFROM Secret WHERE a = '\nFROM Allowed --'",
            "SELECT * FROM t -- FROM other\n",
            "SELECT * FROM t /* x */",
            "SELECT * FROM t WHERE a = `{b: 1}`",
            "SELECT * FROM $t",
            "SELECT 1FROM t",
            "SELECT * FROM t\r",
        ] {
            assert_eq!(
                parse(bad).unwrap_err().code,
                "ValidationException",
                "{bad:?}"
            );
        }
        // A FROM inside a literal is not the statement's.
        let s = parse("SELECT * FROM real WHERE x = 'FROM fake' AND n = 1.5e-3").unwrap();
        assert_eq!(s.table, "real");
        assert_eq!(
            s.literals("SELECT * FROM real WHERE x = 'FROM fake' AND n = 1.5e-3"),
            vec!["FROM fake", "1.5e-3"]
        );
        assert_eq!(
            s.attributes("SELECT * FROM real WHERE x = 'FROM fake' AND n = 1.5e-3"),
            None
        );
    }

    #[test]
    fn attributes_are_the_names_a_statement_uses() {
        let text =
            r#"SELECT a, "b c", d.e FROM "Music"."idx" WHERE begins_with(f, 'x') AND g[0] = 1"#;
        assert_eq!(
            parse(text).unwrap().attributes(text).unwrap(),
            vec!["a", "b c", "d", "f", "g"]
        );
        let text = "INSERT INTO Music VALUE {'Artist': 'x', 'it''s': 1}";
        assert_eq!(
            parse(text).unwrap().attributes(text).unwrap(),
            vec!["Artist", "it's"]
        );
        let text = "UPDATE Music SET Plays = Plays + 1 REMOVE Old WHERE Artist = ?";
        assert_eq!(
            parse(text).unwrap().attributes(text).unwrap(),
            vec!["Plays", "Old", "Artist"]
        );
    }

    #[test]
    fn only_key_equalities_keep_their_literals() {
        let text = "SELECT * FROM Music WHERE Artist = 'No One' AND SongTitle = 'Today' AND nonKey = 'SECRET' AND Year > 1999";
        let s = parse(text).unwrap();
        assert_eq!(
            s.redacted(text, Some(&schema())),
            "SELECT * FROM Music WHERE Artist = 'No One' AND SongTitle = 'Today' AND nonKey = ***(Redacted) AND Year > ***(Redacted)"
        );
        // Without the schema nothing is kept.
        assert!(!s.redacted(text, None).contains("No One"));
        let text = "INSERT INTO Music VALUE {'Artist': 'SECRET1', 'SongTitle': 'SECRET2', 'n': 12}";
        let r = parse(text).unwrap().redacted(text, Some(&schema()));
        assert_eq!(
            r,
            "INSERT INTO Music VALUE {'Artist': ***(Redacted), 'SongTitle': ***(Redacted), 'n': ***(Redacted)}"
        );
        let text = "UPDATE Music SET Album = 'S1' WHERE Artist = 'x' AND info.Artist = 'S2'";
        let r = parse(text).unwrap().redacted(text, Some(&schema()));
        assert_eq!(
            r,
            "UPDATE Music SET Album = ***(Redacted) WHERE Artist = 'x' AND info.Artist = ***(Redacted)"
        );
    }
}
