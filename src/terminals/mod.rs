//! Face-recognition + body-temperature terminals (人脸识别测温一体机): the pure side.
//!
//! Terminals publish one JSON message per passage (and heartbeats) over MQTT; every vendor
//! names and encodes the fields differently. This module turns one message into one
//! normalised [`PassageRecorded`], with no I/O and no clock (`now` is passed in), so every case
//! is a unit or property test. The MQTT driver around it (subscriptions, the embedded broker,
//! handing passages to the occupancy engine) lives elsewhere and stays thin.
//!
//! Data flow inside the module:
//!
//! ```text
//! topic + payload ──► profile.matches(topic)      which vendor mapping, which terminal
//!                 ──► decode(profile, …, now)     Passage | Ignored (heartbeat, other) | RejectReason
//!                 ──► Dedup::first_seen(key)      re-sent events count once
//!                 ──► MemberHasher::hash(day, m)  member id → daily-salted MemberHash
//! ```
//!
//! - [`profile`]: vendor payload mappings as data, from `firmware-config/terminals/*.toml`
//!   (compiled in, extendable from a directory). A new vendor is a new file, not new code.
//! - [`decode`]: one message to a [`Decoded`] or a closed [`RejectReason`]; never panics.
//! - [`facts`]: the words a passage is told in (verdict, mask, direction), shared by
//!   [`profile`] and [`decode`] so neither imports the other for them.
//! - [`dedup`]: a bounded, serialisable per-terminal set of recent event keys.
//! - [`member`]: member ids, redacted in logs, reduced to a daily-salted HMAC for counting
//!   unique visitors. Names are never read at all.
//! - [`wire`]: terminals that deliver over HTTP (Hikvision ISAPI push, stream and search;
//!   Uniubi callbacks; ZKTeco ADMS; Dahua attach streams): their vendor formats down to the
//!   one JSON document per passage that [`decode`] reads, with the picture beside it.
//!
//! Privacy: nothing here is `Serialize` that could carry a face, a name or a raw member id;
//! snapshots are decoded bytes handed to the caller, never stored.

pub mod decode;
pub mod dedup;
pub mod facts;
pub mod member;
pub mod path;
pub mod profile;
pub mod wire;

#[cfg(test)]
mod tests;

pub use decode::{
    DecodeOptions, DecodeStats, Decoded, IgnoreReason, Ignored, PassageRecorded, Picture,
    RejectReason, Who, decode,
};
pub use dedup::{Dedup, DedupKey};
pub use facts::{Direction, MaskState, PassageVerdict};
pub use member::{LocalSaltState, MemberHash, MemberHasher, MemberRef};
pub use path::JsonPath;
pub use profile::{TerminalProfile, TerminalProfileConfig, TerminalProfiles, TopicMatch};

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest terminal id accepted; device serials are 16–20 characters.
const MAX_TERMINAL_ID_BYTES: usize = 64;

/// A terminal's id as the terminal itself gives it (serial number, `deviceKey`, topic level).
///
/// Validated on the way in: 1 to 64 bytes of printable ASCII without spaces or the MQTT
/// wildcard and separator characters, so an id can always be put back into a topic, a log
/// line or a metric label.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TerminalId(String);

impl TerminalId {
    /// Checks `raw` and wraps it, or returns `None` when it is not a usable id.
    pub fn new(raw: &str) -> Option<Self> {
        let ok = !raw.is_empty()
            && raw.len() <= MAX_TERMINAL_ID_BYTES
            && raw
                .bytes()
                .all(|b| b.is_ascii_graphic() && !matches!(b, b'/' | b'+' | b'#'));
        ok.then(|| TerminalId(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TerminalId {
    type Error = String;
    fn try_from(raw: String) -> Result<Self, String> {
        TerminalId::new(&raw).ok_or_else(|| format!("{raw:?} is not a valid terminal id"))
    }
}

impl From<TerminalId> for String {
    fn from(id: TerminalId) -> String {
        id.0
    }
}

impl fmt::Display for TerminalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TerminalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TerminalId({:?})", self.0)
    }
}

#[cfg(test)]
mod terminal_id_tests {
    use super::TerminalId;

    #[test]
    fn terminal_ids_are_printable_and_topic_safe() {
        assert!(TerminalId::new("84E0F4200CA602FA").is_some());
        assert!(TerminalId::new("FC-8200H12345678").is_some());
        assert!(TerminalId::new("172.6.64.7").is_some());
        for bad in ["", "a b", "a/b", "a+b", "a#", "é", "\u{0}"] {
            assert!(TerminalId::new(bad).is_none(), "{bad:?}");
        }
        assert!(TerminalId::new(&"x".repeat(65)).is_none());
    }
}
