//! The hall configuration: one TOML file per hall, parsed, then validated, then trusted.
//!
//! Parsing is done section by section (each room, door and counter on its own) so that one
//! typo does not hide the next: `load` reports *every* problem at once, each with its key
//! path (`counters[2].profile`) and the line and column the TOML parser saw it at. Unknown
//! keys are rejected. What comes out, [`Config`], is typed and cross-checked (ids resolved to
//! indices, addresses parsed, the time zone loaded), so the rest of the gateway trusts it.
//!
//! The module follows the steps of [`parse`], one file each:
//! - `document`: the TOML text; each section read on its own, key paths mapped to lines;
//! - `file`: the serde mirror of the file as written, `ConfigFile`;
//! - `validate`, `uplink` and `counters` (methods on the file structs), and the section
//!   modules [`terminals`], [`terminal_http`], [`status`], [`situation`]: the checks, into
//! - `model`: the validated [`Config`] the gateway trusts.
//!
//! Every check reports into one list by key path ([`Problems`], [`Report`]); password and
//! token files are read by [`secrets`], counter register maps loaded by [`profile`].

pub mod profile;
pub mod secrets;
pub mod situation;
pub mod status;
pub mod terminal_http;
pub mod terminals;

mod claims;
mod counters;
mod document;
mod file;
mod model;
mod problems;
mod uplink;
mod validate;

use std::path::{Path, PathBuf};

pub use file::{
    BusConfig, CounterConfig, CounterTransportKind, DoorConfig, HallSectionConfig, ParityConfig,
    ProfilesConfig, RoomConfig, StorageConfig, UplinkConfig,
};
pub use model::{
    Bus, Config, Counter, CounterTransport, Door, Hall, OUTSIDE, Room, SerialSettings,
    ServiceVisits, Storage, Uplink, Zone,
};
pub use problems::{Problem, Problems, Report};
pub use profile::{CounterProfile, ProfileSet};
pub use uplink::{BrokerUrl, parse_broker_url};

use document::Document;
use file::ConfigFile;
use problems::ProblemList;

/// Exit status for a bad configuration (sysexits `EX_CONFIG`); the systemd unit's
/// `RestartPreventExitStatus=78` stops a restart loop on it.
pub const EXIT_BAD_CONFIG: i32 = 78;

/// Command-line overrides applied before validation, so the same file runs on the box, in
/// tests and on a laptop.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub uplink: Option<String>,
    pub data_dir: Option<PathBuf>,
    /// `hallgate demo` (and tests of the shipped example hall) only: accept the shipped
    /// example password files, which the demo replaces with fresh random logins before
    /// anything listens ([`terminals::SecretRules::allow_examples`]).
    pub allow_example_secrets: bool,
}

/// Reads, parses and validates the config at `path`.
pub fn load(path: &Path, overrides: &Overrides) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    let base_dir = path.parent().unwrap_or(Path::new("."));
    parse(&text, base_dir, overrides).map_err(|problems| ConfigError::Invalid {
        path: path.to_path_buf(),
        problems,
    })
}

/// Parses and validates config text; relative profile directories resolve against `base_dir`.
pub fn parse(text: &str, base_dir: &Path, overrides: &Overrides) -> Result<Config, Vec<Problem>> {
    let doc = Document::parse(text).map_err(|problem| vec![problem])?;
    let mut problems = Problems::new();
    let file = ConfigFile::read(&doc, overrides.uplink.is_none(), &mut problems);
    let config = file.validate(base_dir, overrides, &mut problems);
    doc.locate(&mut problems);
    match config {
        Some(config) if problems.is_empty() => Ok(config),
        _ => {
            if problems.is_empty() {
                // A section failed without saying why; cannot happen, but never accept it.
                problems.push(Problem {
                    path: String::new(),
                    position: None,
                    message: "config is incomplete".into(),
                });
            }
            Err(problems)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("config file {path} has {} problem(s):\n{}", problems.len(), ProblemList(problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

#[cfg(test)]
mod tests;
