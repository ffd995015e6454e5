//! Tests of the HTTP terminals: the encoders against the shipped profiles and the vendors'
//! formats, and loopback runs of a pulled terminal (hand-written Digest requests) and of
//! pushing terminals against a stand-in gateway that refuses some requests.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use md5::{Digest as _, Md5};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use super::encode::{FormPart, HttpEncoder, multipart_form};
use super::*;
use crate::simulate::terminals::{
    BadPayload, FAKE_NAMES, Passage, check_decoded, member_id, sample_messages,
};
use crate::terminals::{DecodeOptions, TerminalProfiles, decode};

const START_MS: i64 = 1_709_601_153_000; // 2024-03-05T01:12:33Z, 09:12:33 in Shanghai
const JPEG: &[u8] = &[
    0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0x00,
];
const LIMIT: Duration = Duration::from_secs(60);

fn shanghai() -> TimeZone {
    TimeZone::get("Asia/Shanghai").expect("bundled tzdb")
}

fn terminal(kind: HttpKind, index: usize) -> HttpTerminal {
    let id = TerminalId::new(&format!("T{index}-84E0F420")).expect("id");
    HttpTerminal::new(
        id,
        kind,
        0,
        index,
        Some("admin".into()),
        Some("pa ss+1".into()),
        None,
    )
}

fn passage(serial: u64, member: Option<u32>, tenths: i32, mask_off: bool) -> Passage {
    let (fever, sensor_error) = match tenths {
        t if !(300..=450).contains(&t) => (false, true),
        t => (t >= 373, false),
    };
    Passage {
        terminal: 0,
        serial,
        at_ms: START_MS,
        member,
        temperature_tenths: tenths,
        fever,
        sensor_error,
        mask_off,
        broken_snapshot: false,
    }
}

fn entry(message: Message) -> Entry {
    Entry {
        offset_ms: 0,
        at_ms: START_MS,
        record: Record::Message(message),
    }
}

/// The body of a multipart part named `name`, found by its headers' end and the next
/// delimiter `--boundary`.
fn part<'a>(body: &'a [u8], boundary: &str, name: &str) -> Option<&'a [u8]> {
    let marker = format!("name=\"{name}\"");
    let at = find(body, marker.as_bytes())?;
    let start = at + find(&body[at..], b"\r\n\r\n")? + 4;
    let end = start + find(&body[start..], format!("\r\n--{boundary}").as_bytes())?;
    Some(&body[start..end])
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

// ---------------------------------------------------------------------------------------------
// Encoders.

#[test]
fn hikvision_pushes_decode_with_the_shipped_profile_to_what_the_truth_says() {
    let profiles = TerminalProfiles::builtin();
    let profile = profiles.get("hikvision-acs").expect("shipped");
    let options = DecodeOptions::default();
    let t = terminal(HttpKind::HikvisionPush, 1);
    let sim = SimTerminal::new(
        t.sim.id.clone(),
        Vendor::HikvisionAcs,
        0,
        &profile.topic_filter,
        1,
    );
    let encoder = HttpEncoder::new(4096, Some(JPEG.to_vec()), shanghai());
    let mut checked = 0;
    for message in sample_messages(Vendor::HikvisionAcs, &options, START_MS) {
        let request = encoder.hikvision_push(&t, &entry(message.clone()), true);
        let content_type = request.content_type.clone().expect("multipart");
        let declared = content_type.split("boundary=").nth(1).expect("a boundary");
        // The quirky firmware writes another case than it declares.
        let written = if declared == encode::HIK_QUIRK_HEADER_BOUNDARY {
            encode::HIK_QUIRK_BODY_BOUNDARY
        } else {
            declared
        };
        let Some(json) = part(&request.body, written, "AccessControllerEvent") else {
            // An oversized body: one byte over the limit, never decoded.
            assert!(matches!(message, Message::Bad(_, BadPayload::Oversized)));
            assert_eq!(request.body.len(), 4097);
            continue;
        };
        if let Message::Bad(_, BadPayload::Oversized) = message {
            assert_eq!(request.body.len(), 4097, "one byte over max_body_bytes");
            continue;
        }
        let result = check_decoded(profile, &sim, &message, json, &options, None);
        assert_eq!(result, Ok(()), "{message:?}");
        checked += 1;
    }
    assert!(checked >= 8, "{checked}");
}

#[test]
fn a_failed_verification_is_minor_76_and_decodes_as_a_failure() {
    let profiles = TerminalProfiles::builtin();
    let profile = profiles.get("hikvision-acs").expect("shipped");
    let t = terminal(HttpKind::HikvisionPush, 0);
    let encoder = HttpEncoder::new(1 << 20, None, shanghai());
    let fail = Entry {
        offset_ms: 0,
        at_ms: START_MS,
        record: Record::Fail {
            terminal: 0,
            serial: 77,
        },
    };
    let doc = encoder.hikvision_event(&t, &fail, true);
    assert_eq!(doc["AccessControllerEvent"]["subEventType"], 76);
    assert_eq!(doc["AccessControllerEvent"]["serialNo"], 77);
    let topic = format!("terminals/hikvision/{}/events", t.sim.id);
    let decoded = decode(
        profile,
        &topic,
        &serde_json::to_vec(&doc).expect("json"),
        crate::simulate::terminals::timestamp(START_MS + 1000),
        &DecodeOptions::default(),
    );
    match decoded {
        Ok(crate::terminals::Decoded::Passage(p)) => {
            assert_eq!(p.verdict, crate::terminals::PassageVerdict::Fail)
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn hikvision_firmware_quirks_suffixes_offsets_and_pictures_are_all_played() {
    let encoder = HttpEncoder::new(1 << 20, Some(JPEG.to_vec()), shanghai());
    let t0 = terminal(HttpKind::HikvisionPush, 0);
    let t1 = terminal(HttpKind::HikvisionPush, 1);
    let mut quirky = 0;
    let mut suffixed = 0;
    for serial in 100..108 {
        let e = entry(Message::Passage(passage(serial, Some(3), 365, true)));
        let r = encoder.hikvision_push(&t1, &e, false);
        let ct = r.content_type.as_deref().expect("content type");
        if ct.ends_with("boundary=mime_boundary") {
            quirky += 1;
            assert!(find(&r.body, b"--MIME_boundary\r\n").is_some());
            assert!(find(&r.body, b"--mime_boundary").is_none());
        }
        if r.target.ends_with("/ISAPI/event") {
            suffixed += 1;
        }
        assert!(r.target.starts_with(&format!("/terminals/{}", t1.sim.id)));
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("admin:pa ss+1")
        );
        assert_eq!(r.authorization.as_deref(), Some(expected.as_str()));
        let boundary = if ct.ends_with("mime_boundary") {
            "MIME_boundary"
        } else {
            encode::HIK_BOUNDARY
        };
        assert_eq!(part(&r.body, boundary, "Picture"), Some(JPEG));
        let json: Value =
            serde_json::from_slice(part(&r.body, boundary, "AccessControllerEvent").expect("json"))
                .expect("valid");
        assert_eq!(json["AccessControllerEvent"]["currentEvent"], false);
        assert_eq!(json["AccessControllerEvent"]["mask"], "no");
        assert_eq!(json["AccessControllerEvent"]["majorEventType"], 5);
        assert_eq!(json["AccessControllerEvent"]["subEventType"], 75);
        assert_eq!(json["dateTime"], "2024-03-05T09:42:33+08:30");
    }
    assert_eq!((quirky, suffixed), (2, 4));
    let heartbeat = encoder.hikvision_push(
        &t0,
        &entry(Message::Heartbeat {
            terminal: 0,
            at_ms: START_MS,
        }),
        true,
    );
    assert!(find(&heartbeat.body, b"\"eventType\":\"heartBeat\"").is_some());
    assert!(find(&heartbeat.body, b"Picture").is_none());
    assert!(find(&heartbeat.body, b"2024-03-05T09:12:33+08:00").is_some());
}

#[test]
fn uniubi_callbacks_alternate_json_and_forms_with_the_token_in_the_url() {
    let encoder = HttpEncoder::new(1 << 20, Some(JPEG.to_vec()), shanghai());
    let t = terminal(HttpKind::UniubiPush, 2);
    let json_req = encoder.uniubi_push(&t, &entry(Message::Passage(passage(10, None, 381, true))));
    assert_eq!(
        json_req.target,
        format!("/terminals/{}?token=pa%20ss%2B1", t.sim.id)
    );
    assert_eq!(json_req.content_type.as_deref(), Some("application/json"));
    assert_eq!(json_req.authorization, None);
    let doc: Value = serde_json::from_slice(&json_req.body).expect("json");
    assert_eq!(doc["personId"], "STRANGERBABY");
    assert_eq!(doc["type"], "face_2");
    assert_eq!(doc["time"], START_MS.to_string());
    assert_eq!(doc["maskState"], "2");
    assert_eq!(doc["temperature"], "38.1");
    assert_eq!(doc["temperatureState"], "2");
    assert_eq!(
        doc["base64"],
        base64::engine::general_purpose::STANDARD.encode(JPEG)
    );
    let form_req = encoder.uniubi_push(
        &t,
        &entry(Message::Passage(passage(11, Some(4), 365, false))),
    );
    assert_eq!(
        form_req.content_type.as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    let form: HashMap<String, String> = String::from_utf8(form_req.body)
        .expect("ascii")
        .split('&')
        .map(|pair| {
            let (k, v) = pair.split_once('=').expect("pair");
            (k.to_string(), percent_decode(v))
        })
        .collect();
    assert_eq!(form["personId"], crate::simulate::terminals::member_id(4));
    assert_eq!(form["type"], "face_0");
    assert_eq!(form["maskState"], "1");
    assert_eq!(form["recordId"], "11");
    assert_eq!(
        form["base64"],
        base64::engine::general_purpose::STANDARD.encode(JPEG)
    );
    let fail = encoder.uniubi_push(
        &t,
        &Entry {
            offset_ms: 0,
            at_ms: START_MS,
            record: Record::Fail {
                terminal: 2,
                serial: 1002,
            },
        },
    );
    let doc: Value = serde_json::from_slice(&fail.body).expect("json");
    assert_eq!(doc["type"], "face_1");
    assert_eq!(doc["recordId"], "1002");
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() + 1 {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("ascii");
            out.push(u8::from_str_radix(hex, 16).expect("hex"));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).expect("utf-8")
}

#[test]
fn zkteco_lines_are_tab_separated_with_the_halls_naive_local_time() {
    let encoder = HttpEncoder::new(1 << 20, None, shanghai());
    let t = terminal(HttpKind::ZktecoPush, 0);
    let a = entry(Message::Passage(passage(1, Some(2), 366, true)));
    let b = entry(Message::Passage(passage(2, Some(5), 372, false)));
    let line = encoder.zkteco_line(&a).expect("a line");
    assert_eq!(
        line,
        format!(
            "{}\t2024-03-05 09:12:33\t0\t15\t0\t0\t0\t0\t36.6",
            crate::simulate::terminals::member_id(2)
        )
    );
    let upload = encoder.zkteco_attlog(&t, &[&a, &b]);
    assert_eq!(upload.method, "POST");
    assert_eq!(
        upload.target,
        format!(
            "/iclock/cdata?SN={}&table=ATTLOG&Stamp=9999&token=pa%20ss%2B1",
            t.sim.id
        )
    );
    assert_eq!(
        String::from_utf8(upload.body)
            .expect("text")
            .lines()
            .count(),
        2
    );
    let handshake = encoder.zkteco_handshake(&t);
    assert_eq!(handshake.method, "GET");
    assert!(
        handshake
            .target
            .starts_with(&format!("/iclock/cdata?SN={}&options=all", t.sim.id))
    );
    assert!(
        encoder
            .zkteco_poll(&t)
            .target
            .starts_with("/iclock/getrequest?SN=")
    );
    // A stranger is not in a ZKTeco attendance log.
    assert_eq!(
        encoder.zkteco_line(&entry(Message::Passage(passage(3, None, 366, false)))),
        None
    );
}

#[test]
fn dahua_parts_carry_access_control_pulses_with_json_data() {
    let encoder = HttpEncoder::new(1 << 20, None, shanghai());
    let bytes = encoder
        .dahua_part(&entry(Message::Passage(passage(42, Some(1), 381, false))))
        .expect("a part");
    let text = String::from_utf8(bytes).expect("utf-8");
    assert!(text.starts_with("--myboundary\r\nContent-Type: text/plain\r\nContent-Length: "));
    let data = text
        .split("Code=AccessControl;action=Pulse;index=0;data=")
        .nth(1)
        .expect("a pulse");
    let json: Value = serde_json::from_str(data.trim_end()).expect("json");
    assert_eq!(json["RecNo"], 42);
    assert_eq!(json["UTC"], START_MS / 1000);
    assert_eq!(json["Status"], 1);
    assert_eq!(json["CurrentTemperature"], 38.1);
    assert_eq!(json["IsOverTemperature"], true);
    assert_eq!(json["UserID"], crate::simulate::terminals::member_id(1));
    let heartbeat = String::from_utf8(encode::dahua_heartbeat_part()).expect("text");
    assert_eq!(
        heartbeat,
        "--myboundary\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\nHeartbeat\r\n\r\n"
    );
}

#[test]
fn a_multipart_form_names_its_parts_and_closes_with_the_boundary() {
    let body = multipart_form(
        "xyz",
        &[FormPart {
            name: "a",
            filename: None,
            content_type: "application/json",
            body: b"{}".to_vec(),
        }],
    );
    assert_eq!(
        String::from_utf8(body).expect("text"),
        "--xyz\r\nContent-Disposition: form-data; name=\"a\"\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}\r\n--xyz--\r\n"
    );
}

// ---------------------------------------------------------------------------------------------
// Loopback: a pulled terminal.

fn ledger(terminals: Vec<HttpTerminal>) -> SharedLedger {
    let reports = terminals
        .iter()
        .map(|_| TerminalReport::default())
        .collect();
    Arc::new(Mutex::new(Ledger {
        terminals,
        rooms: vec!["lobby".into()],
        tally: TerminalTally::new(1),
        reports,
        redelivered: 0,
        truth: None,
        error: None,
        closed: false,
    }))
}

/// Reads one HTTP/1.1 response with a `Content-Length`: status, headers (lower-case), body.
async fn read_response(
    reader: &mut BufReader<TcpStream>,
) -> (u16, BTreeMap<String, String>, Vec<u8>) {
    let mut status_line = String::new();
    reader
        .read_line(&mut status_line)
        .await
        .expect("status line");
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    let mut headers = BTreeMap::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).await.expect("header");
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (k, v) = line.split_once(':').expect("header line");
        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    let length: usize = headers
        .get("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).await.expect("body");
    (status, headers, body)
}

fn md5_hex(text: &str) -> String {
    Md5::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A Digest `Authorization` for `challenge`, computed here from RFC 7616 (not with the
/// module's own helper).
fn hand_digest(challenge: &str, password: &str, method: &str, uri: &str, nc: u32) -> String {
    let field = |name: &str| {
        let start = challenge.find(&format!("{name}=\"")).expect(name) + name.len() + 2;
        let end = start + challenge[start..].find('"').expect("closing quote");
        challenge[start..end].to_string()
    };
    let (realm, nonce) = (field("realm"), field("nonce"));
    let ha1 = md5_hex(&format!("admin:{realm}:{password}"));
    let ha2 = md5_hex(&format!("{method}:{uri}"));
    let nc = format!("{nc:08x}");
    let response = md5_hex(&format!("{ha1}:{nonce}:{nc}:0a4f113b:auth:{ha2}"));
    format!(
        "Digest username=\"admin\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", algorithm=MD5, qop=auth, nc={nc}, cnonce=\"0a4f113b\", response=\"{response}\""
    )
}

const ACS: &str = "/ISAPI/AccessControl/AcsEvent?format=json";

async fn post(writer: &mut BufReader<TcpStream>, uri: &str, auth: Option<&str>, body: &str) {
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "POST {uri} HTTP/1.1\r\nHost: device\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    writer
        .get_mut()
        .write_all(request.as_bytes())
        .await
        .expect("write");
}

fn search_body(position: usize) -> String {
    format!(
        r#"{{"AcsEventCond":{{"searchID":"gw-1","searchResultPosition":{position},"maxResults":30,"major":5,"minor":0,"beginSerialNo":1000}}}}"#
    )
}

async fn spawn_pull(kind: HttpKind) -> (serve::PullHandle, SharedLedger, CancellationToken) {
    let mut t = terminal(kind, 0);
    t.password = Some("s3cret".into());
    let ledger = ledger(vec![t.clone()]);
    let stop = CancellationToken::new();
    let encoder = Arc::new(HttpEncoder::new(1 << 20, None, shanghai()));
    let handle = serve::spawn(
        t,
        "127.0.0.1:0".parse().expect("address"),
        encoder,
        ledger.clone(),
        1,
        Duration::from_secs(600),
        stop.clone(),
    )
    .await
    .expect("bind");
    for i in 0..35u64 {
        handle.log(Entry {
            offset_ms: i * 100,
            at_ms: START_MS + 100 * i as i64,
            record: Record::Message(Message::Passage(passage(
                1000 + 2 * i,
                Some(i as u32),
                365,
                false,
            ))),
        });
    }
    (handle, ledger, stop)
}

#[tokio::test]
async fn a_pulled_hikvision_terminal_answers_a_hand_written_digest_search_page_by_page() {
    timeout(LIMIT, async {
        let (handle, ledger, stop) = spawn_pull(HttpKind::HikvisionPull).await;
        let stream = TcpStream::connect(handle.local_addr)
            .await
            .expect("connect");
        let mut conn = BufReader::new(stream);

        post(&mut conn, ACS, None, &search_body(0)).await;
        let (status, headers, _) = read_response(&mut conn).await;
        assert_eq!(status, 401);
        let challenge = headers["www-authenticate"].clone();
        assert!(
            challenge.starts_with("Digest ") && challenge.contains("qop=\"auth\""),
            "{challenge}"
        );

        let auth = hand_digest(&challenge, "s3cret", "POST", ACS, 1);
        post(&mut conn, ACS, Some(&auth), &search_body(0)).await;
        let (status, _, body) = read_response(&mut conn).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let page: Value = serde_json::from_slice(&body).expect("json");
        let acs = &page["AcsEvent"];
        assert_eq!(acs["searchID"], "gw-1");
        assert_eq!(acs["responseStatusStrg"], "MORE");
        assert_eq!(acs["numOfMatches"], 30);
        assert_eq!(acs["totalMatches"], 35);
        let first = &acs["InfoList"][0];
        assert_eq!(first["serialNo"], 1000);
        assert_eq!(
            (first["major"].clone(), first["minor"].clone()),
            (5.into(), 75.into())
        );
        assert_eq!(first["time"], "2024-03-05T09:12:33+08:00");

        // The same nonce with the next nc, as clients do.
        let auth = hand_digest(&challenge, "s3cret", "POST", ACS, 2);
        post(&mut conn, ACS, Some(&auth), &search_body(30)).await;
        let (status, _, body) = read_response(&mut conn).await;
        assert_eq!(status, 200);
        let page: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(page["AcsEvent"]["responseStatusStrg"], "OK");
        assert_eq!(page["AcsEvent"]["numOfMatches"], 5);
        assert!(handle.idle(), "every record went out");
        assert_eq!(lock(&ledger).tally.hall().passages, 35);

        // Five wrong passwords lock the device; then even the right one is refused.
        let mut challenge = challenge;
        for _ in 0..5 {
            let auth = hand_digest(&challenge, "wrong", "POST", ACS, 1);
            post(&mut conn, ACS, Some(&auth), &search_body(0)).await;
            let (status, headers, _) = read_response(&mut conn).await;
            assert_eq!(status, 401);
            challenge = headers["www-authenticate"].clone();
        }
        let auth = hand_digest(&challenge, "s3cret", "POST", ACS, 1);
        post(&mut conn, ACS, Some(&auth), &search_body(0)).await;
        let (status, _, body) = read_response(&mut conn).await;
        assert_eq!(status, 401);
        assert!(find(&body, b"userLocked").is_some());

        stop.cancel();
        let (left, stats) = handle.snapshot();
        handle.finish().await;
        assert!(left.is_empty());
        assert_eq!(stats.failed_logins, 5);
        assert_eq!(stats.lockouts, 1);
        assert_eq!(stats.refused_while_locked, 1);
        assert_eq!((stats.connections, stats.max_connections), (1, 1));
        assert_eq!(stats.requests, 9);
    })
    .await
    .expect("within the time limit");
}

/// Sends a Digest-authenticated GET on a fresh connection and returns the connection after
/// the response head (the body streams on).
async fn open_stream(
    addr: SocketAddr,
    uri: &str,
) -> (BufReader<TcpStream>, BTreeMap<String, String>) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let mut conn = BufReader::new(stream);
    let get = |auth: Option<String>| {
        let auth = auth
            .map(|a| format!("Authorization: {a}\r\n"))
            .unwrap_or_default();
        format!("GET {uri} HTTP/1.1\r\nHost: device\r\n{auth}\r\n")
    };
    conn.get_mut()
        .write_all(get(None).as_bytes())
        .await
        .expect("write");
    let (status, headers, _) = read_response(&mut conn).await;
    assert_eq!(status, 401);
    let auth = hand_digest(&headers["www-authenticate"], "s3cret", "GET", uri, 1);
    conn.get_mut()
        .write_all(get(Some(auth)).as_bytes())
        .await
        .expect("write");
    let mut status_line = String::new();
    conn.read_line(&mut status_line).await.expect("status");
    assert!(status_line.starts_with("HTTP/1.1 200"), "{status_line}");
    let mut headers = BTreeMap::new();
    loop {
        let mut line = String::new();
        conn.read_line(&mut line).await.expect("header");
        let line = line.trim_end().to_string();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    (conn, headers)
}

/// Reads the stream until `needle` has been seen `times` times.
async fn read_until(conn: &mut BufReader<TcpStream>, needle: &[u8], times: usize) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while count(&seen, needle) < times {
        let n = conn.read(&mut buf).await.expect("read");
        assert!(n > 0, "the stream ended");
        seen.extend_from_slice(&buf[..n]);
    }
    seen
}

#[tokio::test]
async fn an_alert_stream_replays_the_log_then_sends_live_events() {
    timeout(LIMIT, async {
        let (handle, ledger, stop) = spawn_pull(HttpKind::HikvisionStream).await;
        let (mut conn, headers) =
            open_stream(handle.local_addr, "/ISAPI/Event/notification/alertStream").await;
        assert_eq!(
            headers["content-type"],
            "multipart/mixed; boundary=boundary"
        );
        let replay = read_until(&mut conn, b"\"currentEvent\":false", 35).await;
        assert!(count(&replay, b"--boundary\r\n") >= 35);
        handle.log(Entry {
            offset_ms: 0,
            at_ms: START_MS + 10_000,
            record: Record::Message(Message::Passage(passage(5000, Some(1), 366, false))),
        });
        read_until(&mut conn, b"\"currentEvent\":true", 1).await;
        assert_eq!(lock(&ledger).tally.hall().passages, 36);
        stop.cancel();
        let (left, stats) = handle.snapshot();
        handle.finish().await;
        assert!(left.is_empty());
        assert_eq!(stats.max_connections, 1);
    })
    .await
    .expect("within the time limit");
}

#[tokio::test]
async fn a_dahua_stream_sends_pulses_and_heartbeats() {
    timeout(LIMIT, async {
        let (handle, ledger, stop) = spawn_pull(HttpKind::DahuaStream).await;
        let (mut conn, headers) = open_stream(
            handle.local_addr,
            "/cgi-bin/eventManager.cgi?action=attach&codes=[All]&heartbeat=1",
        )
        .await;
        assert_eq!(
            headers["content-type"],
            "multipart/x-mixed-replace; boundary=myboundary"
        );
        read_until(
            &mut conn,
            b"Code=AccessControl;action=Pulse;index=0;data=",
            35,
        )
        .await;
        read_until(&mut conn, b"Heartbeat", 1).await;
        assert_eq!(lock(&ledger).tally.hall().passages, 35);
        stop.cancel();
        handle.finish().await;
    })
    .await
    .expect("within the time limit");
}

// ---------------------------------------------------------------------------------------------
// Loopback: pushing terminals against a stand-in gateway.

fn push_plan(terminals: Vec<HttpTerminal>, target: SocketAddr) -> HttpPlan {
    HttpPlan {
        terminals,
        rooms: vec!["lobby".into()],
        decode: DecodeOptions::default(),
        push_target: Some(target),
        max_body_bytes: 1 << 20,
        time_zone: shanghai(),
    }
}

fn push_options(seed: u64, passages: u64, truth: PathBuf) -> HttpOptions {
    HttpOptions {
        script: ScriptOptions {
            seed,
            passages,
            rate_per_sec: 300.0,
            resend_share: 0.1,
            bad_share: 0.1,
            member_pool: 2000,
            stranger_share: 0.2,
            fever_share: 0.05,
            mask_off_share: 0.1,
        },
        truth: Some(truth),
        snapshot: None,
        backlog_secs: 0.2,
        drain_secs: 30,
        request_timeout_ms: 5000,
        retry_ms: 10,
        lockout_secs: 60,
        linger_secs: 0,
    }
}

fn truth_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .expect("truth")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

/// A request the stand-in got: target, `Authorization`, body.
type Seen = (String, Option<String>, Vec<u8>);

/// A gateway that refuses every third request with 503 and records what it was sent.
struct StandIn {
    addr: SocketAddr,
    requests: Arc<AtomicU64>,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: CancellationToken,
}

async fn stand_in() -> StandIn {
    stand_in_at("127.0.0.1:0".parse().expect("address")).await
}

async fn stand_in_at(address: SocketAddr) -> StandIn {
    stand_in_on(TcpListener::bind(address).await.expect("bind"))
}

/// The stand-in gateway on a listener already bound.
fn stand_in_on(listener: TcpListener) -> StandIn {
    let addr = listener.local_addr().expect("addr");
    let requests = Arc::new(AtomicU64::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let stop = CancellationToken::new();
    let (r, s, st) = (requests.clone(), seen.clone(), stop.clone());
    tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                _ = st.cancelled() => return,
                a = listener.accept() => a.expect("accept"),
            };
            let (r, s) = (r.clone(), s.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let (r, s) = (r.clone(), s.clone());
                    async move {
                        let n = r.fetch_add(1, Ordering::SeqCst) + 1;
                        let target = req.uri().to_string();
                        let auth = req
                            .headers()
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string);
                        let body = req.into_body().collect().await.expect("body").to_bytes();
                        lock(&s).push((target.clone(), auth, body.to_vec()));
                        let (status, answer) = if n % 3 == 0 {
                            (StatusCode::SERVICE_UNAVAILABLE, String::new())
                        } else if target.contains("table=ATTLOG") {
                            let lines = body
                                .split(|b| *b == b'\n')
                                .filter(|l| !l.is_empty())
                                .count();
                            (StatusCode::OK, format!("OK: {lines}"))
                        } else if target.contains("token=") {
                            (StatusCode::OK, r#"{"result":1,"success":true}"#.to_string())
                        } else {
                            (StatusCode::OK, String::new())
                        };
                        let mut response = Response::new(Full::new(Bytes::from(answer)));
                        *response.status_mut() = status;
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    StandIn {
        addr,
        requests,
        seen,
        stop,
    }
}

#[tokio::test]
async fn pushing_terminals_resend_refused_records_and_the_truth_lists_each_acknowledged_passage_once()
 {
    timeout(LIMIT, async {
        let gateway = stand_in().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let truth_path = dir.path().join("truth.jsonl");
        let terminals = vec![
            terminal(HttpKind::HikvisionPush, 0),
            terminal(HttpKind::UniubiPush, 1),
            terminal(HttpKind::ZktecoPush, 2),
        ];
        let plan = push_plan(terminals, gateway.addr);
        let options = push_options(4, 60, truth_path.clone());
        run(plan, options, CancellationToken::new())
            .await
            .expect("the run completes");
        gateway.stop.cancel();

        let text = std::fs::read_to_string(&truth_path).expect("truth");
        for name in FAKE_NAMES {
            assert!(!text.contains(name), "{name} in the truth");
        }
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect();
        let last = lines.last().expect("a final line");
        assert_eq!(last["final"], true);
        assert_eq!(last["complete"], true);
        assert_eq!(last["unacknowledged"], 0);
        let passages: Vec<&Value> = lines.iter().filter(|l| l["kind"] == "passage").collect();
        let mut events: Vec<&str> = passages
            .iter()
            .map(|l| l["event"].as_str().expect("event"))
            .collect();
        events.sort_unstable();
        events.dedup();
        assert_eq!(events.len(), passages.len(), "each passage once");
        assert_eq!(
            last["totals"]["hall"]["passages"].as_u64(),
            Some(passages.len() as u64)
        );
        // A member pool this large makes ZKTeco duplicate punches unlikely: all 60 are played.
        assert_eq!(passages.len(), 60);
        assert!(
            passages.iter().any(|l| l["attempts"].as_u64() > Some(1)),
            "some were refused first and sent again"
        );
        let reports = last["terminals"].as_object().expect("per terminal");
        let failed: u64 = reports
            .values()
            .map(|r| r["failed_requests"].as_u64().expect("count"))
            .sum();
        assert!(failed > 0 && last["redelivered"].as_u64() > Some(0));
        assert_eq!(
            gateway.requests.load(Ordering::SeqCst),
            reports
                .values()
                .map(|r| r["requests"].as_u64().expect("count"))
                .sum::<u64>()
        );

        // What reached the stand-in: the credentials the contract names.
        let seen = lock(&gateway.seen);
        let hik = seen
            .iter()
            .find(|(t, _, _)| t.starts_with("/terminals/T0-84E0F420"))
            .expect("hikvision pushed");
        assert!(hik.1.as_deref().is_some_and(|a| a.starts_with("Basic ")));
        // Records sent again (or from a backlog) are marked as not current, as Hikvision does.
        let hik_bodies = || {
            seen.iter()
                .filter(|(t, _, _)| t.starts_with("/terminals/T0-84E0F420"))
        };
        assert!(hik_bodies().any(|(_, _, b)| find(b, b"\"currentEvent\":false").is_some()));
        assert!(hik_bodies().any(|(_, _, b)| find(b, b"\"currentEvent\":true").is_some()));
        assert!(
            seen.iter()
                .any(|(t, _, _)| t.starts_with("/terminals/T1-84E0F420?token="))
        );
        assert!(
            seen.iter()
                .any(|(t, _, _)| t.starts_with("/iclock/cdata?SN=T2-84E0F420&options=all"))
        );
        assert!(
            seen.iter()
                .any(|(t, _, _)| t.starts_with("/iclock/cdata?SN=T2-84E0F420&table=ATTLOG"))
        );
    })
    .await
    .expect("within the time limit");
}

#[tokio::test]
async fn records_pushed_while_the_gateway_is_down_are_kept_and_taken_once_it_is_back() {
    timeout(LIMIT, async {
        // A gateway that is down: it takes each connection and closes it unanswered. The
        // port stays ours throughout (a port merely left free could be taken by another
        // test's listener, which would answer), and "down" lasts a number of failed requests,
        // not a time, so a slow machine changes nothing.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("addr");
        let dir = tempfile::tempdir().expect("tempdir");
        let truth_path = dir.path().join("truth.jsonl");
        let plan = push_plan(
            vec![
                terminal(HttpKind::HikvisionPush, 0),
                terminal(HttpKind::UniubiPush, 1),
            ],
            address,
        );
        let run = tokio::spawn(run(
            plan,
            push_options(9, 30, truth_path.clone()),
            CancellationToken::new(),
        ));
        for _ in 0..40 {
            let (stream, _) = listener.accept().await.expect("accept");
            drop(stream);
        }
        let gateway = stand_in_on(listener);
        run.await.expect("joins").expect("the run completes");
        gateway.stop.cancel();
        let lines = truth_lines(&truth_path);
        let last = lines.last().expect("final line");
        assert_eq!(last["complete"], true);
        let passages: Vec<&Value> = lines.iter().filter(|l| l["kind"] == "passage").collect();
        assert_eq!(passages.len(), 30);
        // The first passages were tried many times while nothing answered.
        assert!(passages.iter().any(|l| l["attempts"].as_u64() > Some(3)));
    })
    .await
    .expect("within the time limit");
}

#[tokio::test]
async fn records_never_taken_are_listed_as_unacknowledged() {
    timeout(LIMIT, async {
        let address = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind")
            .local_addr()
            .expect("addr");
        let dir = tempfile::tempdir().expect("tempdir");
        let truth_path = dir.path().join("truth.jsonl");
        let plan = push_plan(vec![terminal(HttpKind::HikvisionPush, 0)], address);
        let options = HttpOptions {
            drain_secs: 1,
            ..push_options(2, 10, truth_path.clone())
        };
        run(plan, options, CancellationToken::new())
            .await
            .expect("the run completes");
        let lines = truth_lines(&truth_path);
        let last = lines.last().expect("final line");
        assert_eq!(last["complete"], false);
        assert_eq!(last["unacknowledged"], 10);
        assert_eq!(last["totals"]["hall"]["passages"], 0);
        let kept: Vec<&Value> = lines
            .iter()
            .filter(|l| l["kind"] == "unacknowledged" && l["of"] == "passage")
            .collect();
        assert_eq!(kept.len(), 10);
        // The oldest was tried (again and again); the rest waited behind it, in order.
        assert!(kept[0]["attempts"].as_u64() >= Some(1));
        let events: Vec<&str> = kept
            .iter()
            .map(|l| l["event"].as_str().expect("event"))
            .collect();
        let mut sorted = events.clone();
        sorted.sort_unstable();
        assert_eq!(events, sorted);
        assert!(lines.iter().all(|l| l["kind"] != "passage"));
    })
    .await
    .expect("within the time limit");
}

// ---------------------------------------------------------------------------------------------
// Against the gateway's own readers: wire format → document → shipped profile.

fn profile_for(kind: HttpKind) -> &'static str {
    match kind {
        HttpKind::HikvisionPush | HttpKind::HikvisionPull | HttpKind::HikvisionStream => {
            "hikvision-isapi"
        }
        HttpKind::UniubiPush => "uniubi-uface-http",
        HttpKind::ZktecoPush => "zkteco-adms",
        HttpKind::DahuaStream => "dahua-access",
    }
}

/// A document for the profile decoder, and the picture beside it.
type ReadBack = (Vec<u8>, Option<Vec<u8>>);

/// What the gateway's wire layer makes of `entry` at `t`: (document, picture) per record.
fn read_back(encoder: &HttpEncoder, t: &HttpTerminal, e: &Entry) -> Result<Vec<ReadBack>, String> {
    use crate::terminals::wire::{dahua, hikvision, multipart, uniubi, zkteco};
    let max = 1 << 20;
    let envelope =
        |r: Result<crate::terminals::wire::VendorRecord, crate::terminals::wire::WireError>| {
            r.map(|e| vec![(e.document, e.picture)])
                .map_err(|e| e.as_str().to_string())
        };
    match t.kind {
        HttpKind::HikvisionPush => {
            let r = encoder.hikvision_push(t, e, true);
            envelope(hikvision::push(
                r.content_type.as_deref().unwrap_or(""),
                &r.body,
                max,
            ))
        }
        HttpKind::UniubiPush => {
            let r = encoder.uniubi_push(t, e);
            envelope(uniubi::callback(
                r.content_type.as_deref().unwrap_or(""),
                &r.body,
                max,
            ))
        }
        HttpKind::ZktecoPush => {
            let r = encoder.zkteco_attlog(t, &[e]);
            let log = zkteco::attlog(t.sim.id.as_str(), &r.body);
            if !log.bad_lines.is_empty() {
                return Err(format!("{:?}", log.bad_lines));
            }
            Ok(log.records.into_iter().map(|d| (d, None)).collect())
        }
        HttpKind::HikvisionPull => {
            let Some(record) = encoder.hikvision_acs_record(t, e) else {
                return Ok(Vec::new());
            };
            let page = device_log::Page {
                indices: vec![0],
                total: 1,
                status: "OK",
            }
            .to_json("s", vec![record]);
            let page = hikvision::acs_event_page(&serde_json::to_vec(&page).expect("json"))
                .map_err(|e| e.as_str().to_string())?;
            Ok(page.records.into_iter().map(|d| (d, None)).collect())
        }
        HttpKind::HikvisionStream => {
            let bytes = encode::alert_stream_part(&encoder.hikvision_event(t, e, true));
            let mut stream =
                hikvision::AlertStream::new("multipart/mixed; boundary=boundary", max, max)
                    .map_err(|e| e.as_str().to_string())?;
            let mut out = stream.push(&bytes).map_err(|e| e.as_str().to_string())?;
            out.extend(stream.finish());
            out.into_iter()
                .map(|r| {
                    r.map(|e| (e.document, e.picture))
                        .map_err(|e| e.as_str().to_string())
                })
                .collect()
        }
        HttpKind::DahuaStream => {
            let Some(bytes) = encoder.dahua_part(e) else {
                return Ok(Vec::new());
            };
            let mut parts = multipart::PartStream::from_content_type(
                "multipart/x-mixed-replace; boundary=myboundary",
                max,
            )
            .map_err(|e| e.as_str().to_string())?;
            let mut all = parts.push(&bytes).map_err(|e| e.as_str().to_string())?;
            all.extend(parts.finish().map_err(|e| e.as_str().to_string())?);
            let mut out = Vec::new();
            for part in all {
                match dahua::attach_part(&part.body).map_err(|e| e.as_str().to_string())? {
                    dahua::AttachEvent::AccessControl(doc) => out.push((doc, None)),
                    other => return Err(format!("{other:?}")),
                }
            }
            Ok(out)
        }
    }
}

#[test]
fn every_vendors_bytes_read_by_the_gateways_wire_parsers_decode_to_what_the_truth_says() {
    use crate::simulate::terminals::topic_for;
    use crate::terminals::{Decoded, IgnoreReason, MaskState, MemberRef, PassageVerdict, Who};
    let kinds = [
        HttpKind::HikvisionPush,
        HttpKind::UniubiPush,
        HttpKind::ZktecoPush,
        HttpKind::HikvisionPull,
        HttpKind::HikvisionStream,
        HttpKind::DahuaStream,
    ];
    let terminals: Vec<HttpTerminal> = kinds
        .iter()
        .enumerate()
        .map(|(i, k)| terminal(*k, i))
        .collect();
    let profiles = TerminalProfiles::builtin();
    let options = DecodeOptions {
        time_zone: shanghai(),
        ..DecodeOptions::default()
    };
    let encoder = HttpEncoder::new(1 << 20, Some(JPEG.to_vec()), shanghai());
    let script_options = ScriptOptions {
        seed: 12,
        passages: 1200,
        rate_per_sec: 7.0,
        resend_share: 0.2,
        bad_share: 0.2,
        member_pool: 50,
        stranger_share: 0.3,
        fever_share: 0.2,
        mask_off_share: 0.3,
    };
    let vendors = terminals.iter().map(|t| t.sim.vendor).collect();
    let script = Script::new(vendors, &script_options, &options, START_MS, 5_000).expect("valid");
    let mut checked: HashMap<HttpKind, usize> = HashMap::new();
    let mut fails = 0;
    for step in script {
        for message in step.messages {
            let t = &terminals[message.terminal()];
            let profile = profiles.get(profile_for(t.kind)).expect("shipped profile");
            let topic = topic_for(&profile.topic_filter, &t.sim.id);
            let now = crate::simulate::terminals::timestamp(step.at_ms + 1000);
            let e = Entry {
                offset_ms: 0,
                at_ms: step.at_ms,
                record: Record::Message(message.clone()),
            };
            let context = format!("{} {message:?}", t.kind.name());
            match &message {
                Message::Passage(p) | Message::Resend(p) => {
                    // ZKTeco logs members only; pulled logs hold no re-sends.
                    if (t.kind == HttpKind::ZktecoPush && p.member.is_none())
                        || (matches!(message, Message::Resend(_)) && !t.kind.is_push())
                    {
                        continue;
                    }
                    let docs = read_back(&encoder, t, &e).expect(&context);
                    assert_eq!(docs.len(), 1, "{context}");
                    let (doc, picture) = &docs[0];
                    let Ok(Decoded::Passage(d)) = decode(profile, &topic, doc, now, &options)
                    else {
                        panic!("{context}: not a passage");
                    };
                    assert_eq!(d.terminal, t.sim.id, "{context}");
                    assert!(
                        !d.device_clock_suspect && (d.at.as_millisecond() - p.at_ms).abs() < 1000,
                        "{context}: time {}",
                        d.at
                    );
                    let who = p
                        .member
                        .map_or(Who::Stranger, |m| Who::Member(MemberRef::new(member_id(m))));
                    assert_eq!(d.who, who, "{context}");
                    let verdict = if p.member.is_some() {
                        PassageVerdict::Pass
                    } else {
                        PassageVerdict::Stranger
                    };
                    assert_eq!(d.verdict, verdict, "{context}");
                    if p.sensor_error {
                        assert!(d.sensor_error && d.temperature_c.is_none(), "{context}");
                    } else {
                        let c = d.temperature_c.expect("a reading");
                        assert!((c - p.celsius()).abs() < 0.05, "{context}: {c}");
                    }
                    assert_eq!(d.fever, p.fever, "{context}");
                    let mask = if p.mask_off {
                        MaskState::Off
                    } else {
                        MaskState::On
                    };
                    assert_eq!(d.mask, mask, "{context}");
                    if t.kind != HttpKind::ZktecoPush {
                        assert_eq!(d.dedup_key.event, p.serial.to_string(), "{context}");
                    }
                    let expected_picture = match t.kind {
                        HttpKind::HikvisionPush => Some(JPEG.to_vec()),
                        HttpKind::UniubiPush if !p.broken_snapshot => Some(JPEG.to_vec()),
                        _ => None,
                    };
                    let got = picture.clone().or(d.snapshot.map(|s| s.into_bytes()));
                    assert_eq!(got, expected_picture, "{context}");
                    *checked.entry(t.kind).or_default() += 1;
                    // A failed verification after it, as the player adds them.
                    if t.kind.logs_failures() && p.serial % 7 == 0 {
                        let fail = Entry {
                            offset_ms: 0,
                            at_ms: step.at_ms,
                            record: Record::Fail {
                                terminal: message.terminal(),
                                serial: p.serial + 1,
                            },
                        };
                        let docs = read_back(&encoder, t, &fail).expect(&context);
                        assert_eq!(docs.len(), 1, "{context}");
                        match decode(profile, &topic, &docs[0].0, now, &options) {
                            Ok(Decoded::Passage(d)) => {
                                assert_eq!(d.verdict, PassageVerdict::Fail, "{context}")
                            }
                            other => panic!("{context}: a failure came out {other:?}"),
                        }
                        fails += 1;
                    }
                }
                Message::Heartbeat { .. } if t.kind.is_push() && t.kind != HttpKind::ZktecoPush => {
                    let docs = read_back(&encoder, t, &e).expect(&context);
                    for (doc, _) in docs {
                        match decode(profile, &topic, &doc, now, &options) {
                            Ok(Decoded::Ignored(i)) => {
                                assert_eq!(i.reason, IgnoreReason::Heartbeat, "{context}")
                            }
                            other => panic!("{context}: a heartbeat came out {other:?}"),
                        }
                    }
                }
                Message::Bad(_, kind) if t.kind.sends_bad() && *kind != BadPayload::Oversized => {
                    // Refused by the wire layer or by the decoder: never a passage.
                    if let Ok(docs) = read_back(&encoder, t, &e) {
                        for (doc, _) in docs {
                            let result = decode(profile, &topic, &doc, now, &options);
                            assert!(
                                !matches!(result, Ok(Decoded::Passage(_))),
                                "{context}: a malformed record came out a passage"
                            );
                        }
                    }
                }
                _ => {}
            }
        }
    }
    for kind in kinds {
        assert!(checked.get(&kind).copied().unwrap_or(0) > 50, "{checked:?}");
    }
    assert!(fails > 20, "{fails}");
}
