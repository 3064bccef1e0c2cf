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
                let s = t.unescape().ok()?;
                stack.last_mut()?.text.push_str(&s);
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
