//! Dahua access-control terminals over HTTP: the event attach stream
//! (`GET /cgi-bin/eventManager.cgi?action=attach&codes=[AccessControl]`), a
//! `multipart/x-mixed-replace` response (`--myboundary`) read with a
//! [`PartStream`](super::multipart::PartStream), one event per part:
//!
//! ```text
//! Code=AccessControl;action=Pulse;index=0;data={ "UserID": "1001", "Status": 1, … }
//! ```
//!
//! or the keep-alive `Heartbeat`. The `data` object is the passage; the profile
//! `dahua-access` reads it with `Code`, `action` and `index` added beside its fields.
//!
//! AccessControl `data` fields (Dahua HTTP API "Access Control" event, and public
//! integrations' captures): `UserID`, `CardNo`, `CardName` (never read), `Status` (1 passed,
//! 0 refused), `ErrorCode`, `Method` (15 face), `Type` (`Entry`/`Exit`), `UTC` and
//! `RealUTC` (seconds; many firmwares write the device's local wall time into `UTC`, so
//! `RealUTC` is preferred where sent), `RecNo` (the record number), `Door`, `ReaderID`,
//! `CurrentTemperature` (older thermal firmware: `Temperature`), `TemperatureUnit`
//! (0 °C, 1 °F, 2 K), `IsOverTemperature`, `Mask` (NetSDK `EM_MASK_STATE_TYPE`: 0 unknown,
//! 1 not identified, 2 no mask, 3 mask). The JSON may span several lines and carry trailing
//! bytes after its closing brace; both are tolerated.

use serde_json::{Map, Value};

use super::WireError;

/// What one attach-stream part is.
#[derive(Clone, PartialEq, Eq)]
pub enum AttachEvent {
    /// An `AccessControl` event: the JSON document for the profile.
    AccessControl(Vec<u8>),
    /// The stream's keep-alive.
    Heartbeat,
    /// Another event code (door status, alarms…): not a passage.
    NotAPassage,
}

impl std::fmt::Debug for AttachEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttachEvent::AccessControl(doc) => write!(f, "AccessControl({} bytes)", doc.len()),
            AttachEvent::Heartbeat => f.write_str("Heartbeat"),
            AttachEvent::NotAPassage => f.write_str("NotAPassage"),
        }
    }
}

/// Reads one part's body.
pub fn attach_part(body: &[u8]) -> Result<AttachEvent, WireError> {
    let text = std::str::from_utf8(body).map_err(|_| WireError::InvalidUtf8)?;
    let text = text.trim();
    if text.eq_ignore_ascii_case("Heartbeat") {
        return Ok(AttachEvent::Heartbeat);
    }
    let (head, data) = match text.find("data=") {
        Some(i) => (&text[..i], Some(&text[i + "data=".len()..])),
        None => (text, None),
    };
    let mut doc = Map::new();
    let mut code = None;
    for pair in head.split(';') {
        let Some((key, value)) = pair.split_once('=') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        if key.eq_ignore_ascii_case("Code") {
            code = Some(value);
        }
        if let Some(key) = ["Code", "action", "index"]
            .into_iter()
            .find(|k| k.eq_ignore_ascii_case(key))
        {
            doc.insert(key.to_string(), Value::String(value.to_string()));
        }
    }
    let code = code.ok_or(WireError::MissingField { field: "Code" })?;
    if !code.eq_ignore_ascii_case("AccessControl") {
        return Ok(AttachEvent::NotAPassage);
    }
    let data = data.ok_or(WireError::MissingField { field: "data" })?;
    // The first JSON value; whatever follows it is ignored.
    let mut values = serde_json::Deserializer::from_str(data).into_iter::<Value>();
    let Some(Ok(Value::Object(fields))) = values.next() else {
        return Err(WireError::InvalidJson);
    };
    for (key, value) in fields {
        // The envelope's own keys win over a `data` field of the same name.
        doc.entry(key).or_insert(value);
    }
    Ok(AttachEvent::AccessControl(
        Value::Object(doc).to_string().into_bytes(),
    ))
}
