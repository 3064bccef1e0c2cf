//! A small element tree over quick-xml for the S3 request bodies cairn reads (DeleteObjects,
//! CreateBucketConfiguration, configuration documents). Namespaces are ignored (S3 accepts
//! bodies with or without its namespace); entity references are decoded; DTDs are refused.

use quick_xml::events::Event;
use quick_xml::Reader;

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Element {
    pub name: String,
    pub text: String,
    pub children: Vec<Element>,
}

impl Element {
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    pub fn child_text(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.as_str())
    }
}

/// Largest nesting accepted (S3 documents are shallow; this bounds recursion and memory).
const MAX_DEPTH: usize = 32;

/// Parses a document; `None` when it is not well-formed XML with one root element.
pub fn parse(bytes: &[u8]) -> Option<Element> {
    let mut r = Reader::from_reader(bytes);
    r.config_mut().trim_text(true);
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    loop {
        match r.read_event().ok()? {
            Event::Start(e) => {
                if root.is_some() || stack.len() >= MAX_DEPTH {
                    return None;
                }
                let name = String::from_utf8(e.local_name().as_ref().to_vec()).ok()?;
                stack.push(Element {
                    name,
                    ..Default::default()
                });
            }
            Event::Empty(e) => {
                let name = String::from_utf8(e.local_name().as_ref().to_vec()).ok()?;
                let el = Element {
                    name,
                    ..Default::default()
                };
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None if root.is_none() => root = Some(el),
                    None => return None,
                }
            }
            Event::End(_) => {
                let el = stack.pop()?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => root = Some(el),
                }
            }
            Event::Text(t) => {
                let s = t.decode().ok()?;
                stack.last_mut()?.text.push_str(&s);
            }
            // `&amp;`, `&#x41;`: the predefined entities and character references only (a
            // document declares no others: DTDs are refused).
            Event::GeneralRef(r) => {
                let c = match r.resolve_char_ref().ok()? {
                    Some(c) => c.to_string(),
                    None => {
                        quick_xml::escape::resolve_predefined_entity(&r.decode().ok()?)?.to_string()
                    }
                };
                stack.last_mut()?.text.push_str(&c);
            }
            Event::CData(t) => {
                let s = String::from_utf8(t.into_inner().to_vec()).ok()?;
                stack.last_mut()?.text.push_str(&s);
            }
            Event::DocType(_) => return None,
            Event::Eof => break,
            _ => {}
        }
    }
    if !stack.is_empty() {
        return None;
    }
    root
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Doc {
        key: String,
        size: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        version_id: Option<String>,
        owner: Members<String>,
    }

    #[test]
    fn answers_serialize_escaped_with_their_namespace() {
        let d = Doc {
            key: "a<b>&\"c'\u{1}".into(),
            size: 3,
            version_id: None,
            owner: Members::of(vec!["x".into()]),
        };
        assert_eq!(
            document_in("R", "urn:x", &d),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<R xmlns=\"urn:x\"><Key>a&lt;b&gt;&amp;&quot;c&apos;&#x1;</Key><Size>3</Size><Owner><member>x</member></Owner></R>"
        );
    }

    #[test]
    fn parses_s3_bodies_with_and_without_namespace() {
        let d = parse(br#"<?xml version="1.0"?><Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Object><Key>a&amp;b</Key></Object><Object><Key>c</Key><VersionId/></Object><Quiet>true</Quiet></Delete>"#).unwrap();
        assert_eq!(d.name, "Delete");
        let keys: Vec<&str> = d
            .children_named("Object")
            .filter_map(|o| o.child_text("Key"))
            .collect();
        assert_eq!(keys, vec!["a&b", "c"]);
        assert_eq!(d.child_text("Quiet"), Some("true"));
    }

    #[test]
    fn refuses_malformed_documents_and_dtds() {
        for bad in [
            &b"<a><b></a>"[..],
            b"<a>",
            b"",
            b"<a/><b/>",
            b"<!DOCTYPE x [<!ENTITY e \"boom\">]><a>&e;</a>",
            b"not xml",
        ] {
            assert_eq!(parse(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }
}

/// Serializes `value` as the element `root` (quick-xml's serde support): struct fields become
/// child elements in declaration order, fields renamed `@name` attributes, `Option::None` and
/// empty lists nothing; empty text is written `<a></a>`, as S3 writes it. Text is escaped in
/// full (quotes too), and control characters, which XML 1.0 cannot carry raw, as character
/// references.
pub fn to_xml<T: serde::Serialize + ?Sized>(root: &str, value: &T) -> String {
    let mut out = String::new();
    let written = quick_xml::se::Serializer::with_root(&mut out, Some(root)).and_then(|mut s| {
        s.expand_empty_elements(true);
        s.set_quote_level(quick_xml::se::QuoteLevel::Full);
        value.serialize(s)
    });
    if let Err(e) = written {
        super::unserializable(root, &e);
        out.clear();
    }
    if out
        .chars()
        .any(|c| (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r'))
    {
        out = out
            .chars()
            .map(|c| {
                if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') {
                    format!("&#x{:x};", c as u32)
                } else {
                    c.to_string()
                }
            })
            .collect();
    }
    out
}

/// An XML document: the declaration, then `value` as the element `root`.
pub fn document<T: serde::Serialize + ?Sized>(root: &str, value: &T) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{}",
        to_xml(root, value)
    )
}

/// An XML document whose root element carries the namespace `ns`.
/// Empty when `value` cannot be serialized (see [`to_xml`]).
pub fn document_in<T: serde::Serialize + ?Sized>(root: &str, ns: &str, value: &T) -> String {
    let body = to_xml(root, value);
    if body.is_empty() {
        return body;
    }
    let rest = body.get(1 + root.len()..).unwrap_or_default();
    format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<{root} xmlns=\"{ns}\"{rest}")
}

/// A list serialized as repeated `<member>` elements (the query protocol's lists).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Members<T> {
    pub member: Vec<T>,
}

impl<T> Members<T> {
    pub fn of(items: Vec<T>) -> Members<T> {
        Members { member: items }
    }
}
