//! How config validation reports what is wrong: one [`Problem`] per finding, by key path.
//!
//! Every check, in every section, does the same thing: `problems.report(key_path, message)`
//! into the one [`Problems`] list of the file being loaded, in the order it finds them.
//! Checks do not look at the document's text: once the whole file has been checked,
//! `parse` locates each key path in it (`Document::locate`) and adds the line and column.
//! The problems serde and the TOML parser find carry their position from the start.

use std::fmt;

/// One problem with a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Key path such as `counters[2].profile`; empty for the document as a whole.
    pub path: String,
    /// 1-based line and column, where the parser knows them.
    pub position: Option<(usize, usize)>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() {
            "(document)"
        } else {
            &self.path
        };
        match self.position {
            Some((line, col)) => write!(f, "{path} (line {line}, column {col}): {}", self.message),
            None => write!(f, "{path}: {}", self.message),
        }
    }
}

/// Every problem found in one config file, in the order found (which is the order `validate`
/// prints them in).
pub type Problems = Vec<Problem>;

/// Reporting a problem by its key path.
pub trait Report {
    /// Records `message` about the key at `path` (`counters[2].profile`); its line and column
    /// are found later, when the whole file has been checked.
    fn report(&mut self, path: impl Into<String>, message: impl Into<String>);
}

impl Report for Problems {
    fn report(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.push(Problem {
            path: path.into(),
            position: None,
            message: message.into(),
        });
    }
}

/// The problems of an invalid file, one per line, as [`super::ConfigError`] shows them.
pub(super) struct ProblemList<'a>(pub(super) &'a [Problem]);

impl fmt::Display for ProblemList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "  - {p}")?;
        }
        Ok(())
    }
}
