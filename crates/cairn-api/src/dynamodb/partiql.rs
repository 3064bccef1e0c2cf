//! PartiQL statements (ExecuteStatement, BatchExecuteStatement, ExecuteTransaction), read as
//! far as authorization and the record need: the verb (`dynamodb:PartiQLSelect`, …), the one
//! table (and index) it names, and the statement as the record shows it — every literal
//! `***(Redacted)` but a primary-key attribute compared by equality in its `WHERE`, as
//! DynamoDB logs it. A statement cairn cannot read that far is refused, never forwarded.

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
    Comment,
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
            c if c.is_ascii_whitespace() => {
                i += 1;
                continue;
            }
            b'\'' | b'"' | b'`' => {
                i += 1;
                let mut text = Vec::new();
                loop {
                    if i >= b.len() {
                        return Err("an unterminated quoted text".into());
                    }
                    if b[i] == c {
                        if c != b'`' && i + 1 < b.len() && b[i + 1] == c {
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
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                Kind::Comment
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    i += 1;
                }
                if i + 1 >= b.len() {
                    return Err("an unterminated comment".into());
                }
                i += 2;
                Kind::Comment
            }
            c if c.is_ascii_digit() => {
                while i < b.len()
                    && (b[i].is_ascii_alphanumeric() || matches!(b[i], b'.' | b'+' | b'-'))
                {
                    // `1e-5`, `1.5`: a sign only right after an exponent mark.
                    if matches!(b[i], b'+' | b'-') && !matches!(b[i - 1], b'e' | b'E') {
                        break;
                    }
                    i += 1;
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
    let code: Vec<&Token> = tokens.iter().filter(|t| t.kind != Kind::Comment).collect();
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
    })
}

impl Statement {
    /// The statement as the record shows it: literals and comments `***(Redacted)`, except
    /// a literal a primary-key attribute is compared to by equality after `WHERE` (when the
    /// table's key schema is known).
    pub fn redacted(&self, text: &str, schema: Option<&KeySchema>) -> String {
        const R: &str = "***(Redacted)";
        let mut out = String::with_capacity(text.len());
        let mut last = 0;
        let mut in_where = false;
        let code: Vec<&Token> = self
            .tokens
            .iter()
            .filter(|t| t.kind != Kind::Comment)
            .collect();
        let mut ci = 0;
        for t in &self.tokens {
            if t.kind == Kind::Comment {
                out.push_str(&text[last..t.span.0]);
                out.push_str(R);
                last = t.span.1;
                continue;
            }
            if is_word(t, "WHERE") {
                in_where = true;
            }
            if t.kind == Kind::Literal {
                // A tuple's attribute name (`{'Artist': …}`) is a name, not a value.
                let name = code.get(ci + 1).is_some_and(|n| n.kind == Kind::Punct(':'))
                    && text[t.span.0..].starts_with('\'');
                let keep = name
                    || in_where
                        && ci >= 2
                        && code[ci - 1].kind == Kind::Punct('=')
                        && ident(Some(code[ci - 2]))
                            .is_some_and(|n| schema.is_some_and(|s| s.is_key(&n)));
                if !keep {
                    out.push_str(&text[last..t.span.0]);
                    out.push_str(R);
                    last = t.span.1;
                }
            }
            ci += 1;
        }
        out.push_str(&text[last..]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> KeySchema {
        KeySchema {
            hash: "Artist".into(),
            range: Some("SongTitle".into()),
            indexes: Default::default(),
        }
    }

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
        // A FROM inside a comment or a literal is not the statement's.
        let s = parse("SELECT * FROM real -- FROM other\n WHERE x = 'FROM fake'").unwrap();
        assert_eq!(s.table, "real");
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
        let text = "UPDATE Music SET Album = `{a: 1}` WHERE Artist = 'x' /* SECRET */";
        let r = parse(text).unwrap().redacted(text, Some(&schema()));
        assert_eq!(
            r,
            "UPDATE Music SET Album = ***(Redacted) WHERE Artist = 'x' ***(Redacted)"
        );
    }
}
