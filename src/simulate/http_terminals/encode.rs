//! What simulated HTTP terminals put on the wire: a device record ([`Entry`]) to the
//! vendor's request (push) or to the vendor's record / stream part (pull). Pure: no I/O, no
//! clock; the same entry gives the same bytes.
//!
//! ```text
//! Entry ─► HttpEncoder ─► PushRequest (Hikvision ISAPI multipart, Uniubi JSON / form, ZKTeco ATTLOG)
//!                     └─► Value / part (Hikvision AcsEvent record, alertStream part, Dahua part)
//! ```
//!
//! Names (from [`FAKE_NAMES`](crate::simulate::terminals::FAKE_NAMES)) go into the payloads
//! as the real firmware sends them; the gateway must never pass them on.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use jiff::Timestamp;
use jiff::tz::{Offset, TimeZone};
use serde_json::{Value, json};

use super::{Entry, HttpKind, HttpTerminal, Record};
use crate::simulate::terminals::{
    BadPayload, GBK_MARKER, GBK_NAME, Message, Passage, URL_SAFE_SNAPSHOT, fake_name, member_id,
    remove, set, splice, to_bytes,
};

/// Hikvision firmware that declares one boundary and writes another: the header says
/// `boundary=mime_boundary`, the body `--MIME_boundary`.
pub const HIK_QUIRK_HEADER_BOUNDARY: &str = "mime_boundary";
pub const HIK_QUIRK_BODY_BOUNDARY: &str = "MIME_boundary";
/// The boundary of well-behaved Hikvision firmware.
pub const HIK_BOUNDARY: &str = "---------------------------7e13971310878";
/// The alertStream's boundary (`multipart/mixed; boundary=boundary`).
pub const ALERT_STREAM_BOUNDARY: &str = "boundary";
/// Dahua's event stream boundary.
pub const DAHUA_BOUNDARY: &str = "myboundary";
/// Where an oversized body's bulk goes: a firmware stuffing something large into its record.
const PADDING_FIELD: &str = "padding";
/// Hikvision minor types: face verified / face verification failed.
pub const MINOR_FACE_PASS: u32 = 75;
pub const MINOR_FACE_FAIL: u32 = 76;
/// Hikvision major type "event".
pub const MAJOR_EVENT: u32 = 5;

/// One request a pushing terminal sends.
#[derive(Debug, Clone, PartialEq)]
pub struct PushRequest {
    pub method: &'static str,
    /// Path and query, e.g. `/terminals/T1/ISAPI/event` or `/iclock/cdata?SN=T1&table=ATTLOG`.
    pub target: String,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
    /// `Authorization` header value, when the vendor authenticates with HTTP Basic.
    pub authorization: Option<String>,
}

/// Turns entries into the vendors' bytes.
#[derive(Debug, Clone)]
pub struct HttpEncoder {
    snapshot: Option<(Vec<u8>, String)>,
    /// The gateway's `[terminal_http] max_body_bytes`: oversized bodies are one byte over.
    max_body_bytes: usize,
    /// The hall's time zone: ZKTeco writes naive local times.
    time_zone: TimeZone,
}

impl HttpEncoder {
    pub fn new(max_body_bytes: usize, jpeg: Option<Vec<u8>>, time_zone: TimeZone) -> Self {
        HttpEncoder {
            snapshot: jpeg.map(|j| {
                let text = BASE64.encode(&j);
                (j, text)
            }),
            max_body_bytes,
            time_zone,
        }
    }

    /// The attached JPEG, as it must come out of the gateway.
    pub fn snapshot(&self) -> Option<&[u8]> {
        self.snapshot.as_ref().map(|(j, _)| j.as_slice())
    }

    // -----------------------------------------------------------------------------------------
    // Hikvision.

    /// The ISAPI event JSON (`EventNotificationAlert`), as pushed and as streamed. `current`
    /// is false for events the device sends late (a replay, a retry after a failure).
    pub fn hikvision_event(&self, t: &HttpTerminal, e: &Entry, current: bool) -> Value {
        let outer = |event_type: &str, description: &str| {
            json!({
                "ipAddress": t.sim.ip,
                "portNo": 80,
                "protocol": "HTTP",
                "macAddress": "24:0f:9b:8c:41:aa",
                "channelID": 1,
                "dateTime": hikvision_time(e.event_ms(), t.offset),
                "activePostCount": 1,
                "eventType": event_type,
                "eventState": "active",
                "eventDescription": description,
            })
        };
        let (minor, p) = match &e.record {
            Record::Message(Message::Heartbeat { .. }) => return outer("heartBeat", "heartBeat"),
            Record::Message(Message::Passage(p) | Message::Resend(p) | Message::Bad(p, _)) => {
                (MINOR_FACE_PASS, Some(p))
            }
            Record::Fail { .. } => (MINOR_FACE_FAIL, None),
        };
        let mut doc = outer("AccessControllerEvent", "Access Controller Event");
        let (celsius, flagged, mask_off) = reading(p);
        let mut inner = json!({
            "deviceName": t.sim.id.as_str(),
            "majorEventType": MAJOR_EVENT,
            "subEventType": minor,
            "cardReaderNo": 1,
            "serialNo": e.serial(),
            "userType": "normal",
            "currentVerifyMode": "cardOrFaceOrPw",
            "currentEvent": current,
            "attendanceStatus": "undefined",
            "mask": if mask_off { "no" } else { "yes" },
            "helmet": "no",
            "thermometryUnit": "celsius",
            "currTemperature": celsius,
            "isAbnomalTemperature": flagged,
            "picturesNumber": 1,
        });
        if let Some(m) = p.and_then(|p| p.member) {
            set(&mut inner, &["employeeNoString"], member_id(m).into());
            set(&mut inner, &["name"], fake_name(m).into());
        }
        set(&mut doc, &["AccessControllerEvent"], inner);
        doc
    }

    /// A Hikvision ISAPI listening push: `multipart/form-data` with the event JSON and, for
    /// passages, the snapshot. Some records go to a device-appended suffix, some firmware
    /// declares one boundary and writes another.
    pub fn hikvision_push(&self, t: &HttpTerminal, e: &Entry, current: bool) -> PushRequest {
        // Passages take the even serials (a failed verification the odd one after its
        // passage): choose by the passage's number, or only failures would get the suffix and
        // the boundary quirk.
        let n = e.serial() / 2;
        let suffix = if n % 2 == 1 { "/ISAPI/event" } else { "" };
        let quirk = n % 4 == 1;
        let (declared, written) = if quirk {
            (HIK_QUIRK_HEADER_BOUNDARY, HIK_QUIRK_BODY_BOUNDARY)
        } else {
            (HIK_BOUNDARY, HIK_BOUNDARY)
        };
        let doc = self.hikvision_event(t, e, current);
        let build = |json: Vec<u8>| {
            let mut parts = vec![FormPart {
                name: "AccessControllerEvent",
                filename: None,
                content_type: "application/json",
                body: json,
            }];
            if let (Record::Message(Message::Passage(_) | Message::Resend(_)), Some((jpeg, _))) =
                (&e.record, &self.snapshot)
            {
                parts.push(FormPart {
                    name: "Picture",
                    filename: Some("Picture.jpg"),
                    content_type: "image/jpeg",
                    body: jpeg.clone(),
                });
            }
            multipart_form(written, &parts)
        };
        let body = match &e.record {
            Record::Message(Message::Bad(p, kind)) => {
                self.bad(doc, p, *kind, HIKVISION_FIELDS, build)
            }
            _ => build(to_bytes(&doc)),
        };
        PushRequest {
            method: "POST",
            target: format!("/terminals/{}{suffix}", t.sim.id),
            content_type: Some(format!("multipart/form-data; boundary={declared}")),
            body,
            authorization: basic(t),
        }
    }

    /// A flat record of an `AcsEvent` search result (`InfoList`); `None` for what is not in
    /// the device's event log (heartbeats, malformed messages, re-sends).
    pub fn hikvision_acs_record(&self, t: &HttpTerminal, e: &Entry) -> Option<Value> {
        let (minor, p) = match &e.record {
            Record::Message(Message::Passage(p)) => (MINOR_FACE_PASS, Some(p)),
            Record::Fail { .. } => (MINOR_FACE_FAIL, None),
            _ => return None,
        };
        let (celsius, flagged, mask_off) = reading(p);
        let mut record = json!({
            "major": MAJOR_EVENT,
            "minor": minor,
            "time": hikvision_time(e.event_ms(), t.offset),
            "cardReaderNo": 1,
            "doorNo": 1,
            "serialNo": e.serial(),
            "userType": "normal",
            "currentVerifyMode": "cardOrFace",
            "mask": if mask_off { "no" } else { "yes" },
            "currTemperature": celsius,
            "isAbnomalTemperature": flagged,
            "thermometryUnit": "celsius",
            "pictureURL": format!("http://{}/LOCALS/pic/acsLinkCap/{}.jpg", t.sim.ip, e.serial()),
        });
        if let Some(m) = p.and_then(|p| p.member) {
            set(&mut record, &["employeeNoString"], member_id(m).into());
            set(&mut record, &["name"], fake_name(m).into());
        }
        Some(record)
    }

    // -----------------------------------------------------------------------------------------
    // Uniubi.

    /// A Uniubi recognition (or heartbeat) callback, as JSON or — on odd serials — as a form.
    pub fn uniubi_push(&self, t: &HttpTerminal, e: &Entry) -> PushRequest {
        let token = t
            .password
            .as_deref()
            .map(|p| format!("?token={}", form_escape(p)));
        let token = token.unwrap_or_default();
        let (target, doc) = match &e.record {
            Record::Message(Message::Heartbeat { .. }) => (
                format!("/terminals/{}/heartbeat{token}", t.sim.id),
                json!({
                    "deviceKey": t.sim.id.as_str(),
                    "time": e.at_ms.to_string(),
                    "ip": t.sim.ip,
                    "personCount": "212",
                    "faceCount": "230",
                    "version": "GD-V5.1226",
                }),
            ),
            Record::Message(Message::Passage(p) | Message::Resend(p) | Message::Bad(p, _)) => (
                format!("/terminals/{}{token}", t.sim.id),
                self.uniubi_record(t, p),
            ),
            // A member recognised outside their pass time (`face_1`): not a visit.
            Record::Fail { serial, .. } => {
                let p = Passage {
                    terminal: t.index,
                    serial: *serial,
                    at_ms: e.at_ms,
                    member: Some(u32::try_from(*serial % 1000).unwrap_or(0)),
                    temperature_tenths: 365,
                    fever: false,
                    sensor_error: false,
                    mask_off: false,
                    broken_snapshot: false,
                };
                let mut doc = self.uniubi_record(t, &p);
                set(&mut doc, &["type"], "face_1".into());
                (format!("/terminals/{}{token}", t.sim.id), doc)
            }
        };
        if let Record::Message(Message::Bad(p, kind)) = &e.record {
            let body = self.bad(doc, p, *kind, UNIUBI_FIELDS, |json| json);
            return PushRequest {
                method: "POST",
                target,
                content_type: Some("application/json".into()),
                body,
                authorization: None,
            };
        }
        let form = e.serial() % 2 == 1;
        let (content_type, body) = if form {
            ("application/x-www-form-urlencoded", form_body(&doc))
        } else {
            ("application/json", to_bytes(&doc))
        };
        PushRequest {
            method: "POST",
            target,
            content_type: Some(content_type.into()),
            body,
            authorization: None,
        }
    }

    fn uniubi_record(&self, t: &HttpTerminal, p: &Passage) -> Value {
        let known = p.member.is_some();
        let (celsius, flagged, mask_off) = reading(Some(p));
        let mut doc = json!({
            "deviceKey": t.sim.id.as_str(),
            "personId": p.member.map(member_id).unwrap_or_else(|| "STRANGERBABY".into()),
            "recordId": p.serial.to_string(),
            "time": p.at_ms.to_string(),
            "type": if known { "face_0" } else { "face_2" },
            "ip": t.sim.ip,
            "path": format!("/data/record/IdentifyRecords/{}_rgb.jpg", p.at_ms),
            "searchScore": if known { "92.5" } else { "41.0" },
            "livenessScore": "97.1",
            "aliveType": "1",
            "identifyType": if known { "1" } else { "2" },
            "recType": "1",
            // 1 worn, 2 not worn, 3 not tested.
            "maskState": if mask_off { "2" } else { "1" },
            "temperature": format!("{celsius:.1}"),
            "temperatureState": if flagged { "2" } else { "1" },
            "temperatureUnit": "1",
        });
        if let Some((_, text)) = &self.snapshot {
            set(&mut doc, &["base64"], text.as_str().into());
        }
        if p.broken_snapshot {
            set(&mut doc, &["base64"], URL_SAFE_SNAPSHOT.into());
        }
        doc
    }

    // -----------------------------------------------------------------------------------------
    // ZKTeco ADMS.

    /// The handshake a ZKTeco device makes when it starts and after losing its server.
    pub fn zkteco_handshake(&self, t: &HttpTerminal) -> PushRequest {
        PushRequest {
            method: "GET",
            target: format!(
                "/iclock/cdata?SN={}&options=all&pushver=2.4.1&language=83{}",
                t.sim.id,
                zk_token(t)
            ),
            content_type: None,
            body: Vec::new(),
            authorization: None,
        }
    }

    /// The poll for commands, which is also its keep-alive.
    pub fn zkteco_poll(&self, t: &HttpTerminal) -> PushRequest {
        PushRequest {
            method: "GET",
            target: format!("/iclock/getrequest?SN={}{}", t.sim.id, zk_token(t)),
            content_type: None,
            body: Vec::new(),
            authorization: None,
        }
    }

    /// Attendance records, one tab-separated line each.
    pub fn zkteco_attlog(&self, t: &HttpTerminal, entries: &[&Entry]) -> PushRequest {
        let mut body = String::new();
        for e in entries {
            if let Some(line) = self.zkteco_line(e) {
                body.push_str(&line);
                body.push('\n');
            }
        }
        PushRequest {
            method: "POST",
            target: format!(
                "/iclock/cdata?SN={}&table=ATTLOG&Stamp=9999{}",
                t.sim.id,
                zk_token(t)
            ),
            content_type: Some("text/plain".into()),
            body: body.into_bytes(),
            authorization: None,
        }
    }

    /// `PIN \t local time \t status \t verify \t workcode \t reserved \t reserved \t mask \t
    /// temperature`: the attendance line of ZKTeco's thermal face terminals (verify 15 =
    /// face; mask 1 = worn). The time is the hall's wall clock, without a zone.
    pub fn zkteco_line(&self, e: &Entry) -> Option<String> {
        let p = match &e.record {
            Record::Message(Message::Passage(p) | Message::Resend(p)) => p,
            _ => return None,
        };
        let pin = p.member.map(member_id)?;
        let local = Timestamp::from_second(p.at_ms.div_euclid(1000))
            .unwrap_or(Timestamp::UNIX_EPOCH)
            .to_zoned(self.time_zone.clone())
            .datetime()
            .strftime("%Y-%m-%d %H:%M:%S")
            .to_string();
        Some(format!(
            "{pin}\t{local}\t0\t15\t0\t0\t0\t{}\t{:.1}",
            if p.mask_off { 0 } else { 1 },
            p.celsius()
        ))
    }

    // -----------------------------------------------------------------------------------------
    // Dahua.

    /// The `data` of a Dahua `AccessControl` event; `None` for what the device does not log.
    pub fn dahua_data(&self, e: &Entry) -> Option<Value> {
        let (p, status, error) = match &e.record {
            Record::Message(Message::Passage(p) | Message::Resend(p)) => (Some(p), 1, 0),
            // 0x10: the face is not in the device's list.
            Record::Fail { .. } => (None, 0, 16),
            _ => return None,
        };
        let (celsius, flagged, mask_off) = reading(p);
        let utc = e.event_ms().div_euclid(1000);
        let member = p.and_then(|p| p.member);
        Some(json!({
            "CardNo": "",
            "CardType": null,
            "CardName": member.map(fake_name).unwrap_or(""),
            "UserID": member.map(member_id).unwrap_or_default(),
            "Door": 0,
            "ErrorCode": error,
            "Method": 15,
            "Status": status,
            "Type": "Entry",
            "UTC": utc,
            "RealUTC": utc,
            "RecNo": e.serial(),
            "CurrentTemperature": celsius,
            "IsOverTemperature": flagged,
            "TemperatureUnit": 0,
            // 2 no mask, 3 mask worn.
            "Mask": if mask_off { 2 } else { 3 },
        }))
    }

    /// One part of the Dahua event stream for an entry.
    pub fn dahua_part(&self, e: &Entry) -> Option<Vec<u8>> {
        let data = self.dahua_data(e)?;
        let text = format!(
            "Code=AccessControl;action=Pulse;index=0;data={}\r\n",
            serde_json::to_string_pretty(&data).unwrap_or_default()
        );
        Some(stream_part(DAHUA_BOUNDARY, "text/plain", text.as_bytes()))
    }

    // -----------------------------------------------------------------------------------------
    // Malformed payloads.

    /// A malformed body of `kind`: `wrap` turns the JSON into the request body (a multipart
    /// form for Hikvision), so an oversized one comes out one byte over the body limit.
    fn bad(
        &self,
        mut doc: Value,
        p: &Passage,
        kind: BadPayload,
        fields: VendorFields,
        wrap: impl Fn(Vec<u8>) -> Vec<u8>,
    ) -> Vec<u8> {
        match kind {
            BadPayload::InvalidJson => {
                let text = doc.to_string();
                let mut cut = text.len() / 2;
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                wrap(text.as_bytes()[..cut].to_vec())
            }
            BadPayload::InvalidUtf8 => {
                set(&mut doc, fields.text, GBK_MARKER.into());
                wrap(splice(to_bytes(&doc), GBK_MARKER.as_bytes(), GBK_NAME))
            }
            BadPayload::MissingField => {
                remove(&mut doc, fields.time);
                wrap(to_bytes(&doc))
            }
            BadPayload::WrongType => {
                set(
                    &mut doc,
                    fields.temperature,
                    json!({ "value": p.celsius() }),
                );
                wrap(to_bytes(&doc))
            }
            BadPayload::Oversized => {
                // Exactly one byte over. The wrapper's own lengths (a part's Content-Length)
                // grow with the fill, so settle it in a few rounds.
                let target = self.max_body_bytes + 1;
                let mut fill = 0;
                let mut body = Vec::new();
                for _ in 0..4 {
                    set(&mut doc, &[PADDING_FIELD], "A".repeat(fill).into());
                    body = wrap(to_bytes(&doc));
                    if body.len() == target {
                        break;
                    }
                    fill = (fill + target).saturating_sub(body.len());
                }
                body
            }
        }
    }
}

/// Where a vendor keeps the fields a malformed payload breaks.
#[derive(Clone, Copy)]
struct VendorFields {
    time: &'static [&'static str],
    temperature: &'static [&'static str],
    text: &'static [&'static str],
}

const HIKVISION_FIELDS: VendorFields = VendorFields {
    time: &["dateTime"],
    temperature: &["AccessControllerEvent", "currTemperature"],
    text: &["AccessControllerEvent", "name"],
};

const UNIUBI_FIELDS: VendorFields = VendorFields {
    time: &["time"],
    temperature: &["temperature"],
    text: &["path"],
};

/// `(°C, the terminal's own alarm, mask off)`; a failed verification reads a normal 36.5.
fn reading(p: Option<&Passage>) -> (f64, bool, bool) {
    match p {
        // The terminal knows no plausible range, only its threshold: it flags a 48 °C sensor
        // fault as abnormal too (never a 25 °C one).
        Some(p) => (
            p.celsius(),
            p.fever || (p.sensor_error && p.celsius() > 37.0),
            p.mask_off,
        ),
        None => (36.5, false, false),
    }
}

/// `2024-03-05T09:12:33+08:00`: whole seconds with the terminal's offset.
pub fn hikvision_time(at_ms: i64, offset: Offset) -> String {
    Timestamp::from_second(at_ms.div_euclid(1000))
        .unwrap_or(Timestamp::UNIX_EPOCH)
        .display_with_offset(offset)
        .to_string()
}

/// The HTTP Basic credential of a pushing terminal (user = its username, `admin` when unset).
pub fn basic(t: &HttpTerminal) -> Option<String> {
    let password = t.password.as_deref()?;
    Some(format!(
        "Basic {}",
        BASE64.encode(format!("{}:{password}", t.username))
    ))
}

fn zk_token(t: &HttpTerminal) -> String {
    t.password
        .as_deref()
        .map(|p| format!("&token={}", form_escape(p)))
        .unwrap_or_default()
}

/// One part of a `multipart/form-data` body.
pub struct FormPart<'a> {
    pub name: &'a str,
    pub filename: Option<&'a str>,
    pub content_type: &'a str,
    pub body: Vec<u8>,
}

/// A `multipart/form-data` body with `boundary` written in it.
pub fn multipart_form(boundary: &str, parts: &[FormPart<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for part in parts {
        out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        let disposition = match part.filename {
            Some(file) => format!(
                "Content-Disposition: form-data; name=\"{}\"; filename=\"{file}\"\r\n",
                part.name
            ),
            None => format!("Content-Disposition: form-data; name=\"{}\"\r\n", part.name),
        };
        out.extend_from_slice(disposition.as_bytes());
        out.extend_from_slice(
            format!(
                "Content-Type: {}\r\nContent-Length: {}\r\n\r\n",
                part.content_type,
                part.body.len()
            )
            .as_bytes(),
        );
        out.extend_from_slice(&part.body);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    out
}

/// One part of a long-lived `multipart/mixed` (or `x-mixed-replace`) stream.
pub fn stream_part(boundary: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "--{boundary}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out.extend_from_slice(b"\r\n");
    out
}

/// An alertStream part for an event JSON.
pub fn alert_stream_part(doc: &Value) -> Vec<u8> {
    stream_part(
        ALERT_STREAM_BOUNDARY,
        "application/json; charset=\"UTF-8\"",
        &to_bytes(doc),
    )
}

/// Dahua's keep-alive part.
pub fn dahua_heartbeat_part() -> Vec<u8> {
    stream_part(DAHUA_BOUNDARY, "text/plain", b"Heartbeat\r\n")
}

/// `application/x-www-form-urlencoded` of an object's top-level values (strings as they are,
/// others as JSON).
pub fn form_body(doc: &Value) -> Vec<u8> {
    let mut pairs = Vec::new();
    if let Some(object) = doc.as_object() {
        for (key, value) in object {
            let text = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            pairs.push(format!("{}={}", form_escape(key), form_escape(&text)));
        }
    }
    pairs.join("&").into_bytes()
}

/// Percent-encoding of everything but the unreserved characters.
pub fn form_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

impl HttpKind {
    /// Whether the vendor's device keeps this record in its event log (pulls).
    pub fn logs(self, e: &Entry) -> bool {
        matches!(
            e.record,
            Record::Message(Message::Passage(_)) | Record::Fail { .. }
        )
    }
}
