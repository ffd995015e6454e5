//! What the config's entries claim as their own — ids, serial ports, doors, Modbus
//! addresses and units — and the id alphabet: shared by the section checks
//! (`validate`, `counters`, `uplink`), so a second claim anywhere is one problem with the key
//! path of the first.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use super::problems::{Problems, Report};

/// What the entries checked so far have taken; a second claim is a problem.
#[derive(Debug, Default)]
pub(super) struct Claims {
    /// Room, door, bus and counter ids (one namespace), to the key path that first used each.
    ids: HashMap<String, String>,
    /// Serial ports, to the bus or counter on each.
    pub ports: HashMap<PathBuf, String>,
    /// Doors (by index) to the counter counting each.
    pub counted_doors: HashMap<usize, String>,
    /// Modbus TCP addresses and units to their counter.
    pub addresses: HashMap<(SocketAddr, u8), String>,
    /// Buses (by index) and units to their counter.
    pub rtu_units: HashMap<(usize, u8), String>,
}

impl Claims {
    /// Checks the id at key path `path`: a safe alphabet, and not used before.
    pub(super) fn id(&mut self, path: &str, id: &str, problems: &mut Problems) {
        if let Err(message) = check_topic_safe_id(id) {
            problems.report(path, message);
        }
        if let Some(first) = self.ids.insert(id.to_string(), path.to_string()) {
            problems.report(
                path,
                format!("duplicate id \"{id}\", already used at {first}"),
            );
            self.ids.insert(id.to_string(), first);
        }
    }
}

/// Ids end up in MQTT topics and message ids: keep them to a safe alphabet.
pub(super) fn check_topic_safe_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("must not be empty".into());
    }
    if id.len() > 64 {
        return Err(format!("\"{id}\" is longer than 64 characters"));
    }
    if let Some(bad) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "\"{id}\" contains {bad:?}; ids may use letters, digits, '-', '_' and '.'"
        ));
    }
    Ok(())
}
