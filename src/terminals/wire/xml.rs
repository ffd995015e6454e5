//! A small, bounded XML reader for the ISAPI notifications devices push
//! (`EventNotificationAlert`): enough XML to read element text by path, nothing more.
//!
//! Devices write flat documents of a few dozen elements. This reads elements, text, CDATA,
//! the five named entities and character references; it skips the declaration, comments,
//! processing instructions and a DOCTYPE (without an internal subset: nothing is ever
//! expanded), ignores attributes, and drops namespace prefixes (`urn:psialliance-org`, the
//! hikvision and isapi.org `ver20` namespaces all name the same elements). Depth and element
//! count are bounded; malformed input is an error, never a panic.

use super::WireError;

/// Deepest nesting read; notifications nest three or four levels.
const MAX_DEPTH: usize = 32;
/// Most elements read.
const MAX_ELEMENTS: usize = 4096;

/// An XML document as a list of the text-bearing elements, by path from the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct XmlDoc {
    /// The root element's local name.
    pub root: String,
    /// `(path, text)` for every element without child elements, in document order; the path
    /// is local names joined by `/`, starting with the root (`EventNotificationAlert/eventType`).
    pub leaves: Vec<(String, String)>,
}

impl XmlDoc {
    /// The trimmed text of the first element at `path`.
    pub fn get(&self, path: &str) -> Option<&str> {
        self.leaves
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, t)| t.as_str())
    }
}

struct Open {
    name: String,
    text: String,
    has_children: bool,
}

fn bad(why: &'static str) -> WireError {
    WireError::InvalidXml { why }
}

/// Reads a document.
pub(crate) fn parse(bytes: &[u8]) -> Result<XmlDoc, WireError> {
    let text = std::str::from_utf8(bytes).map_err(|_| WireError::InvalidUtf8)?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut stack: Vec<Open> = Vec::new();
    let mut root: Option<String> = None;
    let mut leaves = Vec::new();
    let mut elements = 0usize;
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("<?") {
            rest = skip_past(after, "?>")?;
        } else if let Some(after) = rest.strip_prefix("<!--") {
            rest = skip_past(after, "-->")?;
        } else if let Some(after) = rest.strip_prefix("<![CDATA[") {
            let end = after.find("]]>").ok_or(bad("unterminated CDATA"))?;
            let open = stack
                .last_mut()
                .ok_or(bad("text outside the root element"))?;
            open.text.push_str(&after[..end]);
            rest = &after[end + 3..];
        } else if let Some(after) = rest.strip_prefix("<!") {
            if after.contains('[') && after.find('[') < after.find('>') {
                return Err(bad("DOCTYPE with an internal subset"));
            }
            rest = skip_past(after, ">")?;
        } else if let Some(after) = rest.strip_prefix("</") {
            let end = after.find('>').ok_or(bad("unterminated end tag"))?;
            let name = after[..end].trim();
            let open = stack.pop().ok_or(bad("end tag without a start tag"))?;
            if local(name) != open.name {
                return Err(bad("end tag does not match its start tag"));
            }
            if !open.has_children {
                let mut path: Vec<&str> = stack.iter().map(|o| o.name.as_str()).collect();
                path.push(&open.name);
                leaves.push((path.join("/"), decode_entities(open.text.trim())));
            }
            rest = &after[end + 1..];
        } else if let Some(after) = rest.strip_prefix('<') {
            let end = tag_end(after).ok_or(bad("unterminated start tag"))?;
            let tag = &after[..end];
            let self_closing = tag.ends_with('/');
            let tag = tag.strip_suffix('/').unwrap_or(tag);
            let name_end = tag.find(|c: char| c.is_whitespace()).unwrap_or(tag.len());
            let name = local(&tag[..name_end]);
            if name.is_empty() {
                return Err(bad("element without a name"));
            }
            elements += 1;
            if elements > MAX_ELEMENTS {
                return Err(bad("too many elements"));
            }
            match stack.last_mut() {
                Some(parent) => parent.has_children = true,
                None if root.is_some() => return Err(bad("more than one root element")),
                None => root = Some(name.to_string()),
            }
            if self_closing {
                let mut path: Vec<&str> = stack.iter().map(|o| o.name.as_str()).collect();
                path.push(name);
                leaves.push((path.join("/"), String::new()));
            } else {
                if stack.len() >= MAX_DEPTH {
                    return Err(bad("nested too deep"));
                }
                stack.push(Open {
                    name: name.to_string(),
                    text: String::new(),
                    has_children: false,
                });
            }
            rest = &after[end + 1..];
        } else {
            let end = rest.find('<').unwrap_or(rest.len());
            let chunk = &rest[..end];
            match stack.last_mut() {
                Some(open) => open.text.push_str(chunk),
                None if chunk.trim().is_empty() => {}
                None => return Err(bad("text outside the root element")),
            }
            rest = &rest[end..];
        }
    }
    if !stack.is_empty() {
        return Err(bad("unclosed element"));
    }
    let root = root.ok_or(bad("no root element"))?;
    Ok(XmlDoc { root, leaves })
}

fn skip_past<'a>(text: &'a str, end: &str) -> Result<&'a str, WireError> {
    text.find(end)
        .map(|i| &text[i + end.len()..])
        .ok_or(bad("unterminated markup"))
}

/// The `>` that ends a start tag, skipping quoted attribute values.
fn tag_end(text: &str) -> Option<usize> {
    let mut quote: Option<char> = None;
    for (i, c) in text.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '>') => return Some(i),
            (None, '<') => return None,
            _ => {}
        }
    }
    None
}

/// A name without its namespace prefix.
fn local(name: &str) -> &str {
    name.rsplit(':').next().unwrap_or(name)
}

fn decode_entities(text: &str) -> String {
    if !text.contains('&') {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let decoded = after.find(';').filter(|&e| e <= 10).and_then(|e| {
            let c = match &after[..e] {
                "lt" => Some('<'),
                "gt" => Some('>'),
                "amp" => Some('&'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                r => r
                    .strip_prefix("#x")
                    .or_else(|| r.strip_prefix("#X"))
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .or_else(|| r.strip_prefix('#').and_then(|d| d.parse::<u32>().ok()))
                    .and_then(char::from_u32),
            }?;
            Some((c, e))
        });
        match decoded {
            Some((c, e)) => {
                out.push(c);
                rest = &after[e + 1..];
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn elements_are_read_by_local_path_with_entities_and_cdata() {
        let doc = parse(
            br#"<?xml version="1.0" encoding="UTF-8"?>
            <!-- a comment -->
            <ns:Alert xmlns:ns="urn:psialliance-org" version="2.0">
              <ns:name a="x>y">A &amp; B &#x4e2d;&#25991;</ns:name>
              <empty/>
              <inner><v><![CDATA[<raw>]]></v></inner>
            </ns:Alert>"#,
        )
        .expect("valid");
        assert_eq!(doc.root, "Alert");
        assert_eq!(doc.get("Alert/name"), Some("A & B 中文"));
        assert_eq!(doc.get("Alert/empty"), Some(""));
        assert_eq!(doc.get("Alert/inner/v"), Some("<raw>"));
        assert_eq!(doc.get("Alert/inner"), None, "only leaves have text");
    }

    #[test]
    fn malformed_documents_are_errors() {
        for bad in [
            &b"<a><b></a>"[..],
            b"<a>",
            b"</a>",
            b"<a></a><b></b>",
            b"text",
            b"<a",
            b"<!DOCTYPE a [<!ENTITY x 'y'>]><a/>",
            b"<a>\xff</a>",
            b"",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let deep = "<a>".repeat(MAX_DEPTH + 1) + &"</a>".repeat(MAX_DEPTH + 1);
        assert!(parse(deep.as_bytes()).is_err());
    }

    proptest! {
        #[test]
        fn the_reader_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn the_reader_never_panics_on_tag_soup(
            text in "[<>/?!a-c&#x;\\[\\]\"' =:-]{0,200}"
        ) {
            let _ = parse(text.as_bytes());
        }
    }
}
