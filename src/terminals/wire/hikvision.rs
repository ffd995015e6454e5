//! Hikvision ISAPI over HTTP: the access-control terminals' pushed events ("HTTP listening"),
//! their `alertStream`, their searched event log (`AcsEvent`), and the people-counting
//! cameras' XML notifications.
//!
//! Every passage ends as the JSON the profile `hikvision-isapi` reads: pushed and streamed
//! events keep the device's own document (`eventType`, `dateTime`, and the
//! `AccessControllerEvent` object with `majorEventType`/`subEventType`), searched records are
//! the flat `InfoList` entries (`major`, `minor`, `time`, `serialNo`) — the profile lists both
//! names for each field. Pictures travel beside the document, never inside it.
//!
//! Sources: Hikvision "Intelligent Security API (Person-Based Access Control)" developer
//! guide (event listening, `/ISAPI/Event/notification/alertStream`,
//! `/ISAPI/AccessControl/AcsEvent?format=json` with `AcsEventCond` and the `AcsEvent` result),
//! and the people-counting `EventNotificationAlert` as public integrations capture it
//! (`tests/fixtures/terminals-http/README.md` lists each).

use jiff::{Timestamp, Zoned};
use serde_json::{Map, Value, json};

use super::multipart::{self, Part, PartStream};
use super::xml::{self, XmlDoc};
use super::{PICTURE_TOO_LARGE, VendorRecord, WireError, json_object, media_type};
use crate::terminals::decode::parse_offset_time;

/// Part names the event JSON arrives under (firmware differs).
const EVENT_PART_NAMES: &[&str] = &["AccessControllerEvent", "event_log"];
/// Part name of the snapshot.
const PICTURE_PART_NAME: &str = "Picture";
/// Most pictures one streamed event may announce and wait for.
const MAX_PICTURES_PER_EVENT: u64 = 4;
/// Largest page a device answers (`maxResults` above this is cut to it by the device).
pub const MAX_RESULTS_PER_PAGE: u32 = 30;
/// Longest event type kept in [`PeopleCount::Other`].
const MAX_EVENT_TYPE_CHARS: usize = 64;

// ---------------------------------------------------------------------------------------------
// Push ("HTTP listening").

/// One pushed request: `multipart/form-data` with the event JSON part
/// (`AccessControllerEvent` or `event_log`) and an optional `Picture` part, or a plain JSON
/// body, or an XML `EventNotificationAlert` (older firmware's keep-alives and alarms, read
/// into `{"eventType": …, "dateTime": …}` so the profile files them as "other").
///
/// A picture over `max_picture_bytes` is dropped (`picture_dropped = "picture_too_large"`);
/// the passage stands.
pub fn push(
    content_type: &str,
    body: &[u8],
    max_picture_bytes: usize,
) -> Result<VendorRecord, WireError> {
    let media = media_type(content_type);
    if media.starts_with("multipart/") || body.trim_ascii_start().starts_with(b"--") {
        let parts = multipart::parse(content_type, body)?;
        return from_parts(&parts, max_picture_bytes);
    }
    single_document(&media, body)
}

/// A body that is one document: JSON, or an XML notification.
fn single_document(media: &str, body: &[u8]) -> Result<VendorRecord, WireError> {
    let trimmed = body.trim_ascii();
    if media.contains("xml") || trimmed.starts_with(b"<") {
        return xml_notification(trimmed);
    }
    json_envelope(trimmed)
}

fn from_parts(parts: &[Part], max_picture_bytes: usize) -> Result<VendorRecord, WireError> {
    let event = parts
        .iter()
        .position(|p| EVENT_PART_NAMES.iter().any(|n| p.is_named(n)))
        .or_else(|| parts.iter().position(is_document_part))
        .ok_or(WireError::NoEventPart)?;
    let part = &parts[event];
    let mut envelope = single_document(&part.media_type(), &part.body)?;
    let picture = parts
        .iter()
        .enumerate()
        .find(|(i, p)| *i != event && is_picture_part(p))
        .map(|(_, p)| p);
    if let Some(p) = picture {
        attach_picture(&mut envelope, p, max_picture_bytes);
    }
    Ok(envelope)
}

fn is_document_part(part: &Part) -> bool {
    let media = part.media_type();
    media.contains("json")
        || media.contains("xml")
        || part.body.trim_ascii_start().starts_with(b"{")
}

fn is_picture_part(part: &Part) -> bool {
    part.is_named(PICTURE_PART_NAME) || part.media_type().starts_with("image/")
}

fn attach_picture(envelope: &mut VendorRecord, part: &Part, max_picture_bytes: usize) {
    if part.body.is_empty() {
        return;
    }
    if part.body.len() > max_picture_bytes {
        envelope.picture_dropped = Some(PICTURE_TOO_LARGE);
    } else {
        envelope.picture = Some(part.body.clone());
        envelope.picture_dropped = None;
    }
}

/// A JSON event document, checked to be an object; `replayed` from `currentEvent`.
fn json_envelope(bytes: &[u8]) -> Result<VendorRecord, WireError> {
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    let doc = json_object(bytes).ok_or(WireError::InvalidJson)?;
    Ok(VendorRecord {
        document: bytes.to_vec(),
        picture: None,
        picture_dropped: None,
        replayed: is_replayed(&doc),
    })
}

/// `"currentEvent": false` (at the top or inside `AccessControllerEvent`): the device is
/// replaying stored events.
fn is_replayed(doc: &Map<String, Value>) -> bool {
    let flag = doc.get("currentEvent").or_else(|| {
        doc.get("AccessControllerEvent")
            .and_then(|e| e.get("currentEvent"))
    });
    matches!(flag, Some(Value::Bool(false))) || flag.and_then(Value::as_str) == Some("false")
}

/// How many picture parts follow this streamed event (`picturesNumber`), bounded.
fn pictures_announced(document: &[u8]) -> u64 {
    let Some(doc) = json_object(document) else {
        return 0;
    };
    let n = doc.get("picturesNumber").or_else(|| {
        doc.get("AccessControllerEvent")
            .and_then(|e| e.get("picturesNumber"))
    });
    let n = match n {
        Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
        Some(Value::String(s)) => s.trim().parse().unwrap_or(0),
        _ => 0,
    };
    n.min(MAX_PICTURES_PER_EVENT)
}

/// An XML `EventNotificationAlert` as the JSON the same firmware would send: elements become
/// keys, nested elements objects, text strings (`<subEventType>75</subEventType>` is
/// `"subEventType": "75"`, which the profile reads as it reads 75); of repeated elements
/// the first is kept. Older firmware's keep-alives and alarms, and its access events.
fn xml_notification(bytes: &[u8]) -> Result<VendorRecord, WireError> {
    let doc = xml::parse(bytes)?;
    if doc.root != "EventNotificationAlert" {
        return Err(WireError::InvalidXml {
            why: "root is not EventNotificationAlert",
        });
    }
    let mut root = Map::new();
    for (path, text) in &doc.leaves {
        let mut steps = path.split('/').skip(1).peekable();
        let mut here = &mut root;
        while let Some(step) = steps.next() {
            if steps.peek().is_none() {
                here.entry(step)
                    .or_insert_with(|| Value::String(text.clone()));
                break;
            }
            let next = here
                .entry(step)
                .or_insert_with(|| Value::Object(Map::new()));
            match next {
                Value::Object(map) => here = map,
                // A leaf of the same name came first: keep it, drop this one.
                _ => break,
            }
        }
    }
    let replayed = is_replayed(&root);
    Ok(VendorRecord {
        document: Value::Object(root).to_string().into_bytes(),
        picture: None,
        picture_dropped: None,
        replayed,
    })
}

// ---------------------------------------------------------------------------------------------
// alertStream.

/// One `GET /ISAPI/Event/notification/alertStream` connection: a `multipart/mixed` response
/// that never ends, one part per event (JSON, or XML on older firmware), a picture event's
/// JPEG in the part(s) right after it.
///
/// An event that announces pictures (`picturesNumber` > 0) is held until they have come or
/// the next event part arrives; any other event is handed out at once. On a new connection
/// the device first replays stored events with `"currentEvent": false`:
/// [`VendorRecord::replayed`] says so.
#[derive(Debug)]
pub struct AlertStream {
    parts: PartStream,
    max_picture_bytes: usize,
    pending: Option<(VendorRecord, u64)>,
}

impl AlertStream {
    /// For the response's `Content-Type`; a part over `max_part_bytes` is an error.
    pub fn new(
        content_type: &str,
        max_part_bytes: usize,
        max_picture_bytes: usize,
    ) -> Result<Self, WireError> {
        Ok(AlertStream {
            parts: PartStream::from_content_type(content_type, max_part_bytes)?,
            max_picture_bytes,
            pending: None,
        })
    }

    /// Takes the next bytes read. The outer error is the stream's (a part over the bound:
    /// the splitter resynchronises, the held event is kept); each inner one is a part that
    /// is not a readable event (count it and carry on).
    pub fn push(
        &mut self,
        bytes: &[u8],
    ) -> Result<Vec<Result<VendorRecord, WireError>>, WireError> {
        let parts = self.parts.push(bytes)?;
        let mut out = Vec::new();
        for part in parts {
            self.take(part, &mut out);
        }
        Ok(out)
    }

    /// The event held for its pictures, handed out without them: for the caller to call
    /// when the stream has been quiet a while (a second or two), so a passage does not wait
    /// for the next event or keep-alive.
    pub fn take_held(&mut self) -> Option<VendorRecord> {
        self.pending.take().map(|(envelope, _)| envelope)
    }

    /// The connection closed: the held event, if any, without the pictures still missing.
    pub fn finish(&mut self) -> Vec<Result<VendorRecord, WireError>> {
        let mut out = Vec::new();
        if let Ok(Some(part)) = self.parts.finish() {
            self.take(part, &mut out);
        }
        if let Some((envelope, _)) = self.pending.take() {
            out.push(Ok(envelope));
        }
        out
    }

    fn take(&mut self, part: Part, out: &mut Vec<Result<VendorRecord, WireError>>) {
        if is_picture_part(&part) {
            if let Some((mut envelope, wanted)) = self.pending.take() {
                if envelope.picture.is_none() {
                    attach_picture(&mut envelope, &part, self.max_picture_bytes);
                }
                if wanted <= 1 {
                    out.push(Ok(envelope));
                } else {
                    self.pending = Some((envelope, wanted - 1));
                }
            }
            // A picture with no event waiting for it is dropped.
            return;
        }
        if !is_document_part(&part) {
            return;
        }
        if let Some((held, _)) = self.pending.take() {
            out.push(Ok(held));
        }
        match single_document(&part.media_type(), &part.body) {
            Ok(envelope) => {
                let wanted = pictures_announced(&envelope.document);
                if wanted > 0 {
                    self.pending = Some((envelope, wanted));
                } else {
                    out.push(Ok(envelope));
                }
            }
            Err(e) => out.push(Err(e)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Pull: the searched event log.

/// One page's search: `POST /ISAPI/AccessControl/AcsEvent?format=json`.
#[derive(Debug, Clone, PartialEq)]
pub struct AcsEventQuery {
    /// The same for every page of one search (the device keeps its result set by it).
    pub search_id: String,
    /// Index of the first record of this page in the result set.
    pub position: u32,
    /// Records per page, cut to `1..=30`.
    pub max_results: u32,
    /// Only records after this serial number (`beginSerialNo` = it + 1): resuming after the
    /// last record kept.
    pub after_serial: Option<u64>,
    /// Only records in this time window (`startTime`, `endTime`, written with the zone's
    /// offset as the device expects).
    pub window: Option<(Zoned, Zoned)>,
}

/// The request body for `query`: `major` 5 (events) and `minor` 0 (all of them).
pub fn acs_event_request(query: &AcsEventQuery) -> Vec<u8> {
    let mut cond = Map::new();
    cond.insert("searchID".into(), json!(query.search_id));
    cond.insert("searchResultPosition".into(), json!(query.position));
    cond.insert(
        "maxResults".into(),
        json!(query.max_results.clamp(1, MAX_RESULTS_PER_PAGE)),
    );
    cond.insert("major".into(), json!(5));
    cond.insert("minor".into(), json!(0));
    if let Some(serial) = query.after_serial {
        cond.insert("beginSerialNo".into(), json!(serial.saturating_add(1)));
    }
    if let Some((start, end)) = &query.window {
        cond.insert("startTime".into(), json!(isapi_time(start)));
        cond.insert("endTime".into(), json!(isapi_time(end)));
    }
    json!({ "AcsEventCond": cond }).to_string().into_bytes()
}

/// `2024-03-05T09:12:33+08:00`.
fn isapi_time(at: &Zoned) -> String {
    at.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
}

/// How a search answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchStatus {
    /// This page is the last.
    Ok,
    /// More records follow: ask for the next page.
    More,
    /// Nothing matched.
    NoMatch,
}

/// One page of a search.
#[derive(Clone, PartialEq, Eq)]
pub struct AcsEventPage {
    pub status: SearchStatus,
    /// `status == More`.
    pub more: bool,
    /// One JSON document per `InfoList` record, in the device's order.
    pub records: Vec<Vec<u8>>,
    /// `InfoList` entries that were not objects (skipped, so one odd entry cannot stall the
    /// pull; count them).
    pub skipped: usize,
    /// `numOfMatches`: records in this page, as the device says.
    pub num_of_matches: Option<u64>,
    /// `totalMatches`: records in the whole result set.
    pub total_matches: Option<u64>,
    /// The highest `serialNo` in this page: the next search's `after_serial`.
    pub max_serial: Option<u64>,
}

impl std::fmt::Debug for AcsEventPage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcsEventPage")
            .field("status", &self.status)
            .field("records", &self.records.len())
            .field("skipped", &self.skipped)
            .field("num_of_matches", &self.num_of_matches)
            .field("total_matches", &self.total_matches)
            .field("max_serial", &self.max_serial)
            .finish()
    }
}

/// Reads an `AcsEvent` search response.
pub fn acs_event_page(body: &[u8]) -> Result<AcsEventPage, WireError> {
    let root = json_object(body.trim_ascii()).ok_or(WireError::InvalidJson)?;
    let event = root
        .get("AcsEvent")
        .and_then(Value::as_object)
        .ok_or(WireError::MissingField { field: "AcsEvent" })?;
    let status_text = event
        .get("responseStatusStrg")
        .and_then(Value::as_str)
        .ok_or(WireError::MissingField {
            field: "AcsEvent.responseStatusStrg",
        })?;
    let status = match status_text.trim().to_ascii_uppercase().as_str() {
        "OK" => SearchStatus::Ok,
        "MORE" => SearchStatus::More,
        "NO MATCH" | "NO MATCHES" | "NO_MATCH" | "NOMATCH" => SearchStatus::NoMatch,
        _ => {
            return Err(WireError::BadValue {
                field: "AcsEvent.responseStatusStrg",
                why: "is not OK, MORE or NO MATCH",
            });
        }
    };
    let mut records = Vec::new();
    let mut skipped = 0;
    let mut max_serial: Option<u64> = None;
    if let Some(list) = event.get("InfoList") {
        let list = list.as_array().ok_or(WireError::BadValue {
            field: "AcsEvent.InfoList",
            why: "is not a list",
        })?;
        for item in list {
            if !item.is_object() {
                skipped += 1;
                continue;
            }
            if let Some(serial) = item.get("serialNo").and_then(as_u64) {
                max_serial = Some(max_serial.map_or(serial, |m| m.max(serial)));
            }
            records.push(item.to_string().into_bytes());
        }
    }
    Ok(AcsEventPage {
        status,
        more: status == SearchStatus::More,
        records,
        skipped,
        num_of_matches: event.get("numOfMatches").and_then(as_u64),
        total_matches: event.get("totalMatches").and_then(as_u64),
        max_serial,
    })
}

/// A count or serial as a JSON number or a numeric string.
fn as_u64(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// People-counting cameras.

/// What a people-counting camera's notification says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeopleCount {
    /// `statisticalMethods` `realTime`: running totals since the camera's counting reset
    /// (midnight or its configured reset), at `at`. Differences of successive totals are the
    /// crossings; a total that goes down is a reset.
    RealTime {
        at: Timestamp,
        enter: u64,
        exit: u64,
    },
    /// `statisticalMethods` `timeRange`: the crossings within one window.
    Window {
        start: Timestamp,
        end: Timestamp,
        enter: u64,
        exit: u64,
    },
    /// The camera's keep-alive (`videoloss` while inactive, or `heartBeat`).
    Heartbeat,
    /// Another notification (motion, tampering…), by its event type.
    Other { event_type: String },
}

/// Reads one notification from a people-counting camera (DS-2CD6825 class): an XML
/// `EventNotificationAlert` body, or a multipart body whose XML part carries it (pictures
/// beside it are ignored). Any of the namespaces the firmware uses is accepted: elements are
/// read by local name.
pub fn people_counting(content_type: &str, body: &[u8]) -> Result<PeopleCount, WireError> {
    let xml_bytes: Vec<u8> = if media_type(content_type).starts_with("multipart/") {
        multipart::parse(content_type, body)?
            .into_iter()
            .find(|p| p.media_type().contains("xml") || p.body.trim_ascii_start().starts_with(b"<"))
            .map(|p| p.body)
            .ok_or(WireError::NoEventPart)?
    } else {
        body.to_vec()
    };
    let doc = xml::parse(xml_bytes.trim_ascii())?;
    if doc.root != "EventNotificationAlert" {
        return Err(WireError::InvalidXml {
            why: "root is not EventNotificationAlert",
        });
    }
    read_people_count(&doc)
}

fn read_people_count(doc: &XmlDoc) -> Result<PeopleCount, WireError> {
    const ROOT: &str = "EventNotificationAlert";
    let get = |path: &str| doc.get(&format!("{ROOT}/{path}"));
    let event_type = get("eventType").ok_or(WireError::MissingField { field: "eventType" })?;
    let state = get("eventState").unwrap_or("");
    if event_type.eq_ignore_ascii_case("heartBeat")
        || (event_type.eq_ignore_ascii_case("videoloss") && state.eq_ignore_ascii_case("inactive"))
    {
        return Ok(PeopleCount::Heartbeat);
    }
    if !event_type.eq_ignore_ascii_case("PeopleCounting") {
        return Ok(PeopleCount::Other {
            event_type: event_type.chars().take(MAX_EVENT_TYPE_CHARS).collect(),
        });
    }
    let count = |field: &'static str, path: &str| -> Result<u64, WireError> {
        get(path)
            .ok_or(WireError::MissingField { field })?
            .parse::<u64>()
            .map_err(|_| WireError::BadValue {
                field,
                why: "is not a whole number",
            })
    };
    let time = |field: &'static str, text: Option<&str>| -> Result<Timestamp, WireError> {
        parse_offset_time(text.ok_or(WireError::MissingField { field })?).ok_or(
            WireError::BadValue {
                field,
                why: "is not a time with an offset",
            },
        )
    };
    let enter = count("peopleCounting.enter", "peopleCounting/enter")?;
    let exit = count("peopleCounting.exit", "peopleCounting/exit")?;
    let method = get("peopleCounting/statisticalMethods").ok_or(WireError::MissingField {
        field: "peopleCounting.statisticalMethods",
    })?;
    if method.eq_ignore_ascii_case("realTime") {
        let at = get("peopleCounting/RealTime/time").or_else(|| get("dateTime"));
        Ok(PeopleCount::RealTime {
            at: time("peopleCounting.RealTime.time", at)?,
            enter,
            exit,
        })
    } else if method.eq_ignore_ascii_case("timeRange") {
        Ok(PeopleCount::Window {
            start: time(
                "peopleCounting.TimeRange.startTime",
                get("peopleCounting/TimeRange/startTime"),
            )?,
            end: time(
                "peopleCounting.TimeRange.endTime",
                get("peopleCounting/TimeRange/endTime"),
            )?,
            enter,
            exit,
        })
    } else {
        Err(WireError::BadValue {
            field: "peopleCounting.statisticalMethods",
            why: "is neither realTime nor timeRange",
        })
    }
}
