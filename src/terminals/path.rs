//! Dotted JSON field paths, as terminal profiles name the fields of a vendor's payload.
//!
//! `AccessControllerEvent.subEventType` walks two objects; `Records[0].RecordID` also indexes an
//! array; `[0].id` indexes a payload that is a top-level array. A path is parsed once, when its
//! profile is loaded, so a typo is a profile error, not a decode failure on every message.
//! Keys cannot contain `.`, `[` or `]`; no vendor we map needs them.
//!
//! A [`FieldPath`] is one or more such paths tried in order: one vendor names a field
//! differently depending on how the record arrived (Hikvision's pushed events say
//! `AccessControllerEvent.subEventType`, its searched log says `minor`), and a profile lists
//! both as `field = ["AccessControllerEvent.subEventType", "minor"]`.

use std::fmt;

use serde_json::Value;

/// Deepest path a profile may name; real payloads nest three or four levels.
const MAX_STEPS: usize = 16;
/// Largest array index a profile may name; a larger one is a typo.
const MAX_INDEX: usize = 1024;

/// A parsed field path.
#[derive(Clone, PartialEq, Eq)]
pub struct JsonPath {
    text: String,
    steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

impl JsonPath {
    /// Parses `a.b[2].c`, or says what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("path is empty".to_string());
        }
        let mut steps = Vec::new();
        for (n, segment) in text.split('.').enumerate() {
            let (key, mut rest) = match segment.find('[') {
                Some(open) => segment.split_at(open),
                None => (segment, ""),
            };
            if key.contains(']') {
                return Err(format!("path {text:?} has a ']' without its '['"));
            }
            if key.is_empty() {
                // Only the very first segment may start with an index: `[0].id`.
                if n > 0 || rest.is_empty() {
                    return Err(format!("path {text:?} has an empty segment"));
                }
            } else {
                steps.push(Step::Key(key.to_string()));
            }
            while !rest.is_empty() {
                let Some(inner) = rest.strip_prefix('[') else {
                    return Err(format!("path {text:?} has text after an index"));
                };
                let Some(close) = inner.find(']') else {
                    return Err(format!("path {text:?} has a '[' without its ']'"));
                };
                let digits = &inner[..close];
                let index = match digits.parse::<usize>() {
                    Ok(i) if !digits.starts_with('+') => i,
                    _ => {
                        return Err(format!(
                            "path {text:?} has an index {digits:?} that is not a whole number"
                        ));
                    }
                };
                if index > MAX_INDEX {
                    return Err(format!(
                        "path {text:?} has index {index}, larger than {MAX_INDEX}"
                    ));
                }
                steps.push(Step::Index(index));
                rest = &inner[close + 1..];
            }
        }
        if steps.len() > MAX_STEPS {
            return Err(format!(
                "path {text:?} is {} steps deep, more than {MAX_STEPS}",
                steps.len()
            ));
        }
        Ok(JsonPath {
            text: text.to_string(),
            steps,
        })
    }

    /// The value at this path, or `None` when any step is missing. A JSON `null` counts as
    /// missing: vendors send `null` for "no value" as often as they leave the key out.
    pub fn lookup<'v>(&self, root: &'v Value) -> Option<&'v Value> {
        let mut here = root;
        for step in &self.steps {
            here = match (step, here) {
                (Step::Key(key), Value::Object(map)) => map.get(key)?,
                (Step::Index(i), Value::Array(items)) => items.get(*i)?,
                _ => return None,
            };
        }
        (!here.is_null()).then_some(here)
    }

    /// The path as written in the profile, for error messages.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JsonPath({:?})", self.text)
    }
}

/// Most alternatives a profile may list for one field.
const MAX_ALTERNATIVES: usize = 8;

/// One field of a vendor's payload, under one name or several alternatives (the first one
/// present wins). Parsed once, when its profile is loaded.
#[derive(Clone, PartialEq, Eq)]
pub struct FieldPath {
    /// Never empty.
    alternatives: Vec<JsonPath>,
}

impl FieldPath {
    /// Parses each alternative; says what is wrong with the first bad one.
    pub fn parse<S: AsRef<str>>(texts: &[S]) -> Result<Self, String> {
        if texts.is_empty() {
            return Err("the list of alternative paths is empty".to_string());
        }
        if texts.len() > MAX_ALTERNATIVES {
            return Err(format!(
                "{} alternative paths, more than {MAX_ALTERNATIVES}",
                texts.len()
            ));
        }
        let alternatives = texts
            .iter()
            .map(|t| JsonPath::parse(t.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(FieldPath { alternatives })
    }

    /// The alternatives in the order they are tried.
    pub fn alternatives(&self) -> &[JsonPath] {
        &self.alternatives
    }

    /// The first alternative's value that is present (not missing, not `null`), with the
    /// path it was found at.
    pub fn lookup<'v>(&self, root: &'v Value) -> Option<(&JsonPath, &'v Value)> {
        self.alternatives
            .iter()
            .find_map(|p| p.lookup(root).map(|v| (p, v)))
    }
}

impl From<JsonPath> for FieldPath {
    fn from(path: JsonPath) -> Self {
        FieldPath {
            alternatives: vec![path],
        }
    }
}

impl fmt::Display for FieldPath {
    /// `a.b`, or `a.b|c` for alternatives.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.alternatives.iter().enumerate() {
            if i > 0 {
                f.write_str("|")?;
            }
            f.write_str(p.as_str())?;
        }
        Ok(())
    }
}

impl fmt::Debug for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FieldPath({:?})", self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn field_paths_take_the_first_alternative_present() {
        let pushed = json!({"AccessControllerEvent": {"subEventType": 75}, "minor": null});
        let searched = json!({"minor": 76});
        let field = FieldPath::parse(&["AccessControllerEvent.subEventType", "minor"])
            .expect("valid alternatives");
        let found = |doc| field.lookup(doc).map(|(p, v)| (p.to_string(), v.clone()));
        assert_eq!(
            found(&pushed),
            Some(("AccessControllerEvent.subEventType".into(), json!(75)))
        );
        assert_eq!(found(&searched), Some(("minor".into(), json!(76))));
        assert_eq!(found(&json!({})), None);
        assert_eq!(
            field.to_string(),
            "AccessControllerEvent.subEventType|minor"
        );
        assert!(FieldPath::parse::<&str>(&[]).is_err());
        assert!(
            FieldPath::parse(&["a", "b..c"])
                .expect_err("bad")
                .contains("b..c")
        );
        assert!(FieldPath::parse(&["a"; 9]).is_err());
    }

    #[test]
    fn dotted_paths_walk_objects_and_arrays() {
        let doc = json!({"a": {"b": [10, {"c": "x"}]}, "n": null});
        let at = |p: &str| {
            JsonPath::parse(p)
                .expect("valid path")
                .lookup(&doc)
                .cloned()
        };
        assert_eq!(at("a.b[0]"), Some(json!(10)));
        assert_eq!(at("a.b[1].c"), Some(json!("x")));
        assert_eq!(at("a.b[2]"), None);
        assert_eq!(at("a.x"), None);
        assert_eq!(at("n"), None, "null reads as missing");
        assert_eq!(at("a.b.c"), None, "a key step on an array finds nothing");
        let top = json!([{"id": 3}]);
        let path = JsonPath::parse("[0].id").expect("top-level index");
        assert_eq!(path.lookup(&top), Some(&json!(3)));
    }

    #[test]
    fn malformed_paths_are_refused_with_the_path_in_the_message() {
        for bad in [
            "", "a..b", ".a", "a.", "a[", "a[x]", "a[-1]", "a[+1]", "a]", "a[0]b", "a.[0]",
            "a[99999]",
        ] {
            let message = JsonPath::parse(bad).expect_err(bad);
            assert!(
                bad.is_empty() || message.contains(&format!("{bad:?}")),
                "{bad}: {message}"
            );
        }
    }
}
