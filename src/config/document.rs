//! The config file's TOML document: the first step of `parse`, and the map back from key
//! paths to lines.
//!
//! The text is parsed once into a spanned table. Each section is then deserialized on its own
//! ([`Document::section`], [`Document::array`]) so that one typo does not hide the next; what
//! serde objects to is reported at the key it names, with the position the parser saw. When
//! validation is done, [`Document::locate`] gives every other problem the line and column of
//! its key path.

use std::ops::Range;

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::problems::{Problem, Problems};

/// A config file's text, parsed but not yet read into its sections.
pub(super) struct Document<'t> {
    text: &'t str,
    root: Spanned<DeTable<'t>>,
}

impl<'t> Document<'t> {
    /// Parses the TOML; a syntax error is the file's only problem.
    pub(super) fn parse(text: &'t str) -> Result<Self, Problem> {
        match DeTable::parse(text) {
            Ok(root) => Ok(Document { text, root }),
            Err(error) => Err(Problem {
                path: String::new(),
                position: error.span().map(|s| line_col(text, s.start)),
                message: error.message().trim().to_string(),
            }),
        }
    }

    fn root(&self) -> &DeTable<'t> {
        self.root.get_ref()
    }

    /// Reports every top-level key that is not one of `known`.
    pub(super) fn unknown_sections(&self, known: &[&str], problems: &mut Problems) {
        for (key, value) in self.root().iter() {
            let key: &str = key.get_ref();
            if !known.contains(&key) {
                problems.push(self.at_span(
                    key,
                    value.span(),
                    format!("unknown section; expected one of {}", known.join(", ")),
                ));
            }
        }
    }

    /// The table `[key]`, deserialized; `None` when absent (a problem if `required`) or
    /// unreadable (its problems reported).
    pub(super) fn section<T: DeserializeOwned>(
        &self,
        key: &str,
        required: bool,
        problems: &mut Problems,
    ) -> Option<T> {
        match self.root().iter().find(|(k, _)| k.get_ref() == key) {
            Some((_, value)) => {
                if value.get_ref().as_table().is_none() {
                    problems.push(self.at_span(
                        key,
                        value.span(),
                        format!("`{key}` must be a table, [{key}]"),
                    ));
                    return None;
                }
                self.deserialize(key, value, problems)
            }
            None => {
                if required {
                    problems.push(Problem {
                        path: key.to_string(),
                        position: None,
                        message: format!("missing section [{key}]"),
                    });
                }
                None
            }
        }
    }

    /// The array of tables `[[key]]`, each entry deserialized on its own (`None` where one is
    /// unreadable, so the others keep their index in key paths).
    pub(super) fn array<T: DeserializeOwned>(
        &self,
        key: &str,
        problems: &mut Problems,
    ) -> Vec<Option<T>> {
        let Some((_, value)) = self.root().iter().find(|(k, _)| k.get_ref() == key) else {
            return Vec::new();
        };
        let Some(items) = value.get_ref().as_array() else {
            problems.push(self.at_span(
                key,
                value.span(),
                format!("`{key}` must be an array of tables, [[{key}]]"),
            ));
            return Vec::new();
        };
        items
            .iter()
            .enumerate()
            .map(|(i, item)| self.deserialize(&format!("{key}[{i}]"), item, problems))
            .collect()
    }

    fn deserialize<T: DeserializeOwned>(
        &self,
        path: &str,
        value: &Spanned<DeValue<'_>>,
        problems: &mut Problems,
    ) -> Option<T> {
        match T::deserialize(toml::de::ValueDeserializer::from(value.clone())) {
            Ok(t) => Some(t),
            Err(error) => {
                let span = error.span().unwrap_or(value.span());
                let message = error.message().trim().to_string();
                // serde names the offending field inside the message; also point at it.
                let sub = field_in_message(&message)
                    .filter(|f| {
                        value
                            .get_ref()
                            .as_table()
                            .is_some_and(|t| t.iter().any(|(k, _)| k.get_ref() == f))
                    })
                    .map(|f| format!("{path}.{f}"));
                problems.push(self.at_span(sub.as_deref().unwrap_or(path), span, message));
                None
            }
        }
    }

    fn at_span(&self, path: &str, span: Range<usize>, message: impl Into<String>) -> Problem {
        Problem {
            path: path.to_string(),
            position: Some(line_col(self.text, span.start)),
            message: message.into(),
        }
    }

    /// Gives each problem reported by key path the line and column of that key, where the
    /// document has it.
    pub(super) fn locate(&self, problems: &mut Problems) {
        for problem in problems.iter_mut().filter(|p| p.position.is_none()) {
            problem.position =
                lookup_span(self.root(), &problem.path).map(|s| line_col(self.text, s.start));
        }
    }
}

/// 1-based (line, column) of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..text.floor_char_boundary(offset)];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// serde's messages quote the field they are about: "unknown field `foo`, expected …",
/// "missing field `bar`". Pull that name out so the key path can point at it.
fn field_in_message(message: &str) -> Option<&str> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(&message[start..start + len])
}

/// Finds the span of key path `a.b[2].c` in the parsed document.
fn lookup_span(root: &DeTable<'_>, path: &str) -> Option<Range<usize>> {
    let mut table = root;
    let mut span = None;
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        let (key, index) = match part.split_once('[') {
            Some((k, rest)) => (k, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        let (_, mut value) = table.iter().find(|(k, _)| k.get_ref() == key)?;
        if let Some(i) = index {
            value = value.get_ref().as_array()?.get(i)?;
        }
        span = Some(value.span());
        if parts.peek().is_some() {
            table = value.get_ref().as_table()?;
        }
    }
    span
}
