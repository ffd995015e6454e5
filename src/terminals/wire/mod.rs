//! Terminals that speak HTTP: their vendors' wire formats down to one JSON document per
//! passage, the pure side.
//!
//! Face-recognition terminals that halls buy deliver over HTTP, each vendor in its own way:
//! multipart pushes with a JSON part and a JPEG part (Hikvision), form posts with a base64
//! photo (Uniubi), tab-separated attendance lines (ZKTeco ADMS), long-lived multipart streams
//! (Hikvision `alertStream`, Dahua `eventManager.cgi?action=attach`), searched event logs
//! (Hikvision `AcsEvent`). This module turns each of them into the one thing the profile
//! decoder reads — a JSON document per passage — plus the picture, if any, beside it. No I/O,
//! no clock: bytes (and the headers that say how to read them) in, documents out; whatever the
//! bytes, nothing panics and nothing grows without a bound (property-tested).
//!
//! ```text
//! HTTP listener / pull client (async, elsewhere)
//!   │ Content-Type + body, or stream chunks, or a search response
//!   ▼
//! wire::{hikvision, uniubi, zkteco, dahua}   vendor format ─► VendorRecord { document, picture }
//!   │        (multipart: the shared part parser and stream splitter)
//!   ▼
//! decode(profile, …, document, now)          the profile's mapping, as for MQTT
//! ```
//!
//! Usage, per transport (the terminal is already authenticated by the caller):
//!
//! - Hikvision push: `hikvision::push(content_type, body, max_picture_bytes)` →
//!   [`VendorRecord`]; answer 200 once the passage is committed.
//! - Hikvision `alertStream`: a [`hikvision::AlertStream`] per connection, fed every chunk
//!   read (`push`), yielding envelopes; `replayed` marks the log the device replays first.
//! - Hikvision pull: `hikvision::acs_event_request(&query)` is the POST body,
//!   `hikvision::acs_event_page(response)` the page (documents, `more`, highest serial).
//! - Hikvision people-counting cameras: `hikvision::people_counting(content_type, body)`.
//! - Uniubi: `uniubi::callback(content_type, body, max_picture_bytes)`; answer
//!   [`uniubi::SUCCESS_ANSWER`].
//! - ZKTeco ADMS: `zkteco::table(name)` then `zkteco::attlog(sn, body)`; answer
//!   `zkteco::records_taken_answer(n)`, `zkteco::options_answer(sn)`, or
//!   [`zkteco::GETREQUEST_ANSWER`].
//! - Dahua attach stream: a [`multipart::PartStream`] per connection, each part's body to
//!   `dahua::attach_part`.
//!
//! Each document then goes to [`decode`](fn@super::decode) with its terminal's profile, on the
//! topic `profile.topic_for(&terminal)` (the topic filter is only the profile's name over
//! HTTP). A profile that reads the terminal id from the payload (`uniubi-uface-http`,
//! `deviceKey`) yields that id: compare it with the authenticated terminal.
//!
//! A [`WireError`] means the request as a whole is unusable (answer it with a failure, count
//! it by [`WireError::as_str`]); a bad line or a dropped picture is reported beside what was
//! kept, never instead of it.

pub mod dahua;
pub mod hikvision;
pub mod multipart;
pub mod uniubi;
mod xml;
pub mod zkteco;

#[cfg(test)]
mod tests;

use std::fmt;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// One message for the profile decoder, as a vendor's HTTP format delivered it.
#[derive(Clone, PartialEq, Eq)]
pub struct VendorRecord {
    /// One JSON document (an object) for [`decode`](fn@super::decode).
    pub document: Vec<u8>,
    /// A JPEG that came beside the document (a multipart part, a decoded base64 field).
    pub picture: Option<Vec<u8>>,
    /// Why a picture that came was not kept (a metric label): `picture_too_large` (over the
    /// caller's `max_picture_bytes`), `picture_unreadable` (not base64). The passage stands.
    pub picture_dropped: Option<&'static str>,
    /// The device is replaying its stored log, not reporting a live event (Hikvision
    /// `"currentEvent": false`, sent first on a new `alertStream` connection): still a
    /// passage to keep (dedup catches copies), but late, so not a sign of who is here now.
    pub replayed: bool,
}

impl fmt::Debug for VendorRecord {
    // The document carries member ids and the picture a face: sizes only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VendorRecord")
            .field("document_bytes", &self.document.len())
            .field("picture_bytes", &self.picture.as_ref().map(Vec::len))
            .field("picture_dropped", &self.picture_dropped)
            .field("replayed", &self.replayed)
            .finish()
    }
}

/// Why a request, a stream chunk or a response could not be read. A closed list;
/// [`as_str`](WireError::as_str) is the metric label. Texts never quote payload values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("content type is not one this format accepts")]
    UnexpectedContentType,
    #[error("multipart content type has no usable boundary parameter")]
    NoBoundary,
    #[error("multipart body has no part")]
    NoParts,
    #[error("multipart body has more than {limit} parts")]
    TooManyParts { limit: usize },
    #[error("a multipart part's headers are over {limit} bytes")]
    HeadersTooLarge { limit: usize },
    #[error("a multipart part is over the {limit}-byte bound")]
    PartTooLarge { limit: usize },
    #[error("no part carries the event document")]
    NoEventPart,
    #[error("the document is not UTF-8")]
    InvalidUtf8,
    #[error("the document is not a JSON object")]
    InvalidJson,
    #[error("the document is not well-formed XML ({why})")]
    InvalidXml { why: &'static str },
    #[error("field {field} is missing")]
    MissingField { field: &'static str },
    #[error("field {field} {why}")]
    BadValue {
        field: &'static str,
        why: &'static str,
    },
}

impl WireError {
    /// A fixed label per variant, for metrics and log fields.
    pub fn as_str(&self) -> &'static str {
        match self {
            WireError::UnexpectedContentType => "unexpected_content_type",
            WireError::NoBoundary => "no_boundary",
            WireError::NoParts => "no_parts",
            WireError::TooManyParts { .. } => "too_many_parts",
            WireError::HeadersTooLarge { .. } => "headers_too_large",
            WireError::PartTooLarge { .. } => "part_too_large",
            WireError::NoEventPart => "no_event_part",
            WireError::InvalidUtf8 => "invalid_utf8",
            WireError::InvalidJson => "invalid_json",
            WireError::InvalidXml { .. } => "invalid_xml",
            WireError::MissingField { .. } => "missing_field",
            WireError::BadValue { .. } => "bad_value",
        }
    }
}

/// Metric label: a picture over `max_picture_bytes`.
pub const PICTURE_TOO_LARGE: &str = "picture_too_large";
/// Metric label: a picture field that is not base64.
pub const PICTURE_UNREADABLE: &str = "picture_unreadable";

/// The media type of a `Content-Type` header value, lowercased, without parameters.
pub(crate) fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// A body that is a JSON object, checked; `None` when it is not.
pub(crate) fn json_object(bytes: &[u8]) -> Option<serde_json::Map<String, serde_json::Value>> {
    match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(serde_json::Value::Object(map)) => Some(map),
        _ => None,
    }
}

/// Pictures come as standard base64; vendors differ on padding and trailing bits, and on
/// line breaks, none of which makes the image less valid.
const PICTURE_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Decodes a base64 picture (optionally a `data:` URI) under `max_bytes`: the picture, or
/// the reason it was dropped. The size is judged from the text before anything is decoded,
/// so an oversized picture costs no allocation. An empty text is no picture at all.
pub(crate) fn base64_picture(
    text: &str,
    max_bytes: usize,
) -> (Option<Vec<u8>>, Option<&'static str>) {
    let text = text.trim();
    let body = match text.strip_prefix("data:") {
        Some(rest) => match rest.split_once(',') {
            Some((_, b)) => b,
            None => return (None, Some(PICTURE_UNREADABLE)),
        },
        None => text,
    };
    // Form posts turn an unescaped '+' into a space; base64 has no spaces otherwise.
    let cleaned: String = body
        .chars()
        .filter(|c| !matches!(c, '\r' | '\n' | '\t'))
        .map(|c| if c == ' ' { '+' } else { c })
        .collect();
    if cleaned.is_empty() {
        return (None, None);
    }
    if cleaned.len() / 4 * 3 > max_bytes.saturating_add(3) {
        return (None, Some(PICTURE_TOO_LARGE));
    }
    match PICTURE_BASE64.decode(cleaned.as_bytes()) {
        Ok(bytes) if bytes.len() > max_bytes => (None, Some(PICTURE_TOO_LARGE)),
        Ok(bytes) if bytes.is_empty() => (None, None),
        Ok(bytes) => (Some(bytes), None),
        Err(_) => (None, Some(PICTURE_UNREADABLE)),
    }
}
