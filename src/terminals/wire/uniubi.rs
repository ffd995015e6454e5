//! Uniubi (宇泛) Uface terminals over HTTP: the recognition callback ("识别回调") and the
//! heartbeat callback, posted as JSON or as `application/x-www-form-urlencoded`.
//!
//! Fields (Uniubi "Device LAN Version Interface Document" 2.13/2.15, and the callback
//! handlers of public integrations): `deviceKey`, `personId` (`STRANGERBABY` for a
//! stranger), `time` (milliseconds, as a string), `type` (`face_0` …), `maskState`
//! (1 worn, 2 not worn, 3 not tested), `temperature`, `temperatureState`, and `base64`, the
//! on-site photo when photo upload is on. Everything comes as strings; a form post becomes a
//! JSON object of strings, which the profile `uniubi-uface-http` reads as it reads the JSON.
//!
//! The photo never reaches the profile: it is decoded into [`VendorRecord::picture`] (or
//! dropped, with the reason) and removed from the document.

use serde_json::{Map, Value};

use super::{VendorRecord, WireError, base64_picture, media_type};

/// What the terminal must get back, or it posts the record again.
pub const SUCCESS_ANSWER: &str = r#"{"result":1,"success":true}"#;

/// Fields that carry the photo as base64 (firmware differs).
const PICTURE_FIELDS: &[&str] = &["base64", "imgBase64"];
/// Most form fields read; a callback has about fifteen.
const MAX_FORM_FIELDS: usize = 256;

/// One callback request.
pub fn callback(
    content_type: &str,
    body: &[u8],
    max_picture_bytes: usize,
) -> Result<VendorRecord, WireError> {
    let media = media_type(content_type);
    let trimmed = body.trim_ascii();
    let mut doc = if media == "application/x-www-form-urlencoded"
        || (!media.contains("json") && !trimmed.starts_with(b"{"))
    {
        form_fields(trimmed)?
    } else {
        match serde_json::from_slice::<Value>(trimmed) {
            Ok(Value::Object(map)) => map,
            _ => return Err(WireError::InvalidJson),
        }
    };
    let mut picture = None;
    let mut picture_dropped = None;
    for field in PICTURE_FIELDS {
        match doc.remove(*field) {
            Some(Value::String(text)) if picture.is_none() => {
                let (p, dropped) = base64_picture(&text, max_picture_bytes);
                picture = p;
                picture_dropped = picture_dropped.or(dropped);
            }
            _ => {}
        }
    }
    if picture.is_some() {
        picture_dropped = None;
    }
    Ok(VendorRecord {
        document: Value::Object(doc).to_string().into_bytes(),
        picture,
        picture_dropped,
        replayed: false,
    })
}

/// A form body as a JSON object of strings (the first of repeated keys wins).
fn form_fields(body: &[u8]) -> Result<Map<String, Value>, WireError> {
    if std::str::from_utf8(body).is_err() {
        return Err(WireError::InvalidUtf8);
    }
    let mut map = Map::new();
    for (n, (key, value)) in form_urlencoded::parse(body).enumerate() {
        if n >= MAX_FORM_FIELDS {
            return Err(WireError::BadValue {
                field: "form",
                why: "has too many fields",
            });
        }
        if key.is_empty() {
            continue;
        }
        map.entry(key.into_owned())
            .or_insert_with(|| Value::String(value.into_owned()));
    }
    if map.is_empty() {
        return Err(WireError::MissingField { field: "deviceKey" });
    }
    Ok(map)
}
