//! The wire parsers against the vendor fixtures in `tests/fixtures/terminals-http/` (origins
//! in its README), each all the way through the shipped HTTP profile to the passage it must
//! be; and every parser against arbitrary and mutated bytes, which must never panic and
//! never yield a document that is not a JSON object.

use jiff::Timestamp;
use jiff::tz::TimeZone;
use proptest::prelude::*;

use super::multipart::PartStream;
use super::*;
use crate::terminals::{
    DecodeOptions, Decoded, Direction, IgnoreReason, MaskState, PassageRecorded, PassageVerdict,
    RejectReason, TerminalId, TerminalProfiles, Who, decode,
};

/// 2024-03-05T20:00:00+08:00: after every fixture's event time.
const NOW_S: i64 = 1_709_640_000;

fn now() -> Timestamp {
    Timestamp::from_second(NOW_S).expect("in range")
}

fn utc(text: &str) -> Timestamp {
    text.parse().expect("fixture time")
}

macro_rules! fixture {
    ($path:literal) => {
        include_bytes!(concat!("../../../tests/fixtures/terminals-http/", $path)) as &[u8]
    };
}

const HIK_PUSH_CT: &str = "multipart/form-data; boundary=mime_boundary";
const HIK_STREAM_CT: &str = "multipart/mixed; boundary=MIME_boundary";
const DAHUA_CT: &str = "multipart/x-mixed-replace; boundary=myboundary";
const FORM_CT: &str = "application/x-www-form-urlencoded";

fn decode_as(
    profile: &str,
    terminal: &str,
    document: &[u8],
    options: &DecodeOptions,
) -> Result<Decoded, RejectReason> {
    let profiles = TerminalProfiles::builtin();
    let p = profiles.get(profile).expect("shipped profile");
    let id = TerminalId::new(terminal).expect("valid id");
    decode(p, &p.topic_for(&id), document, now(), options)
}

fn passage_as(profile: &str, terminal: &str, document: &[u8]) -> PassageRecorded {
    passage_with(profile, terminal, document, &DecodeOptions::default())
}

fn passage_with(
    profile: &str,
    terminal: &str,
    document: &[u8],
    options: &DecodeOptions,
) -> PassageRecorded {
    match decode_as(profile, terminal, document, options) {
        Ok(Decoded::Passage(p)) => p,
        other => panic!(
            "{profile}: a passage, not {other:?} from {}",
            String::from_utf8_lossy(document)
        ),
    }
}

fn ignored_as(profile: &str, terminal: &str, document: &[u8]) -> IgnoreReason {
    match decode_as(profile, terminal, document, &DecodeOptions::default()) {
        Ok(Decoded::Ignored(i)) => i.reason,
        other => panic!("{profile}: ignored, not {other:?}"),
    }
}

fn member(id: &str) -> Who {
    Who::Member(crate::terminals::MemberRef::new(id))
}

fn is_jpeg(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0xff, 0xd8]) && bytes.ends_with(&[0xff, 0xd9])
}

const HIK: &str = "hikvision-isapi";
const HIK_ID: &str = "DS-K1T671-E12345678";

// ---------------------------------------------------------------------------------------------
// Hikvision push.

#[test]
fn a_hikvision_push_whose_body_boundary_case_differs_keeps_its_event_and_picture() {
    let envelope = hikvision::push(HIK_PUSH_CT, fixture!("hikvision/push_multipart.bin"), 4096)
        .expect("envelope");
    let picture = envelope.picture.as_deref().expect("picture");
    assert!(
        is_jpeg(picture),
        "the picture part whole, boundary look-alike inside"
    );
    assert_eq!(picture.len(), 64);
    assert_eq!(envelope.picture_dropped, None);
    assert!(!envelope.replayed);
    let p = passage_as(HIK, HIK_ID, &envelope.document);
    assert_eq!(p.verdict, PassageVerdict::Pass);
    assert_eq!(p.who, member("4366"));
    assert_eq!(p.at, utc("2024-03-05T01:12:33Z"));
    assert_eq!(p.temperature_c, Some(36.6));
    assert_eq!(p.mask, MaskState::On);
    assert_eq!(p.dedup_key.event, "85793");
}

#[test]
fn a_hikvision_picture_over_the_bound_is_dropped_and_the_passage_kept() {
    let envelope = hikvision::push(HIK_PUSH_CT, fixture!("hikvision/push_multipart.bin"), 63)
        .expect("envelope");
    assert_eq!(envelope.picture, None);
    assert_eq!(envelope.picture_dropped, Some("picture_too_large"));
    assert_eq!(
        passage_as(HIK, HIK_ID, &envelope.document).verdict,
        PassageVerdict::Pass
    );
}

#[test]
fn an_event_log_part_with_bare_line_feeds_no_picture_and_no_closing_line_reads() {
    let envelope = hikvision::push(
        HIK_PUSH_CT,
        fixture!("hikvision/push_event_log_lf.bin"),
        4096,
    )
    .expect("envelope");
    assert_eq!(
        (envelope.picture.as_ref(), envelope.picture_dropped),
        (None, None)
    );
    let p = passage_as(HIK, HIK_ID, &envelope.document);
    assert_eq!((p.verdict, p.who), (PassageVerdict::Fail, Who::Stranger));
    // `-5:00`: a one-digit offset hour.
    assert_eq!(p.at, utc("2024-03-05T01:12:40Z"));
    assert!(!p.device_clock_suspect);
}

#[test]
fn a_plain_json_push_reads_with_a_half_hour_offset() {
    let envelope = hikvision::push(
        "application/json; charset=UTF-8",
        fixture!("hikvision/push_plain_fever.json"),
        4096,
    )
    .expect("envelope");
    let p = passage_as(HIK, HIK_ID, &envelope.document);
    assert_eq!(p.at, utc("2024-03-05T01:12:50Z"));
    assert!(p.fever);
    assert_eq!(p.mask, MaskState::Unknown);
}

#[test]
fn hikvision_keepalives_json_or_xml_are_not_passages() {
    let json = hikvision::push("application/json", fixture!("hikvision/heartbeat.json"), 1)
        .expect("envelope");
    assert_eq!(
        ignored_as(HIK, HIK_ID, &json.document),
        IgnoreReason::Heartbeat
    );
    let xml = hikvision::push(
        "application/xml",
        fixture!("hikvision/camera_heartbeat.xml"),
        1,
    )
    .expect("envelope");
    assert_eq!(
        ignored_as(HIK, HIK_ID, &xml.document),
        IgnoreReason::OtherMessage
    );
}

#[test]
fn an_xml_access_event_from_older_firmware_reads_like_its_json() {
    let xml = br#"<?xml version="1.0" encoding="UTF-8"?>
<EventNotificationAlert version="2.0" xmlns="http://www.isapi.org/ver20/XMLSchema">
<ipAddress>192.168.50.31</ipAddress>
<dateTime>2024-03-05T09:12:33+08:00</dateTime>
<eventType>AccessControllerEvent</eventType>
<eventState>active</eventState>
<AccessControllerEvent>
<majorEventType>5</majorEventType>
<subEventType>75</subEventType>
<employeeNoString>4366</employeeNoString>
<serialNo>85799</serialNo>
<currTemperature>36.8</currTemperature>
<isAbnomalTemperature>false</isAbnomalTemperature>
<mask>no</mask>
</AccessControllerEvent>
</EventNotificationAlert>"#;
    let envelope = hikvision::push("application/xml", xml, 1).expect("envelope");
    let p = passage_as(HIK, HIK_ID, &envelope.document);
    assert_eq!(
        (p.verdict, p.who.clone()),
        (PassageVerdict::Pass, member("4366"))
    );
    assert_eq!((p.temperature_c, p.mask), (Some(36.8), MaskState::Off));
    assert_eq!(p.dedup_key.event, "85799");
    assert_eq!(p.at, utc("2024-03-05T01:12:33Z"));
}

#[test]
fn a_multipart_push_without_an_event_part_is_refused() {
    let body = b"--b\r\nContent-Disposition: form-data; name=\"Picture\"\r\n\
        Content-Type: image/jpeg\r\n\r\n\xff\xd8\xff\xd9\r\n--b--\r\n";
    assert_eq!(
        hikvision::push("multipart/form-data; boundary=b", body, 100),
        Err(WireError::NoEventPart)
    );
    assert_eq!(
        hikvision::push("application/json", b"[1]", 100).map(|e| e.document),
        Err(WireError::InvalidJson)
    );
}

// ---------------------------------------------------------------------------------------------
// Hikvision alertStream.

fn stream_envelopes(chunk: usize) -> Vec<VendorRecord> {
    let mut stream = hikvision::AlertStream::new(HIK_STREAM_CT, 64 * 1024, 4096).expect("stream");
    let mut out = Vec::new();
    for piece in fixture!("hikvision/alert_stream.bin").chunks(chunk) {
        for item in stream.push(piece).expect("no stream error") {
            out.push(item.expect("every part is an event"));
        }
    }
    out.extend(stream.finish().into_iter().map(|i| i.expect("event")));
    out
}

#[test]
fn the_alert_stream_marks_the_replayed_log_and_pairs_a_picture_with_its_event() {
    let envelopes = stream_envelopes(usize::MAX);
    assert_eq!(envelopes.len(), 4, "{envelopes:?}");
    assert!(envelopes[0].replayed && envelopes[0].picture.is_none());
    let replayed = passage_as(HIK, HIK_ID, &envelopes[0].document);
    assert_eq!(replayed.at, utc("2024-03-05T00:01:02Z"));
    assert!(!envelopes[1].replayed);
    assert!(envelopes[1].picture.as_deref().is_some_and(is_jpeg));
    assert_eq!(
        passage_as(HIK, HIK_ID, &envelopes[1].document)
            .dedup_key
            .event,
        "85796"
    );
    assert_eq!(
        ignored_as(HIK, HIK_ID, &envelopes[2].document),
        IgnoreReason::OtherMessage
    );
    assert_eq!(
        ignored_as(HIK, HIK_ID, &envelopes[3].document),
        IgnoreReason::NotAPassage
    );
    for chunk in [1, 5, 64, 333] {
        assert_eq!(stream_envelopes(chunk), envelopes, "chunks of {chunk}");
    }
}

#[test]
fn a_streamed_event_waiting_for_its_picture_is_handed_out_when_the_next_event_comes() {
    let json = br#"{"eventType":"AccessControllerEvent","dateTime":"2024-03-05T09:00:00+08:00","AccessControllerEvent":{"subEventType":75,"serialNo":1,"picturesNumber":1}}"#;
    let part = |body: &[u8]| {
        [
            b"--MIME_boundary\r\nContent-Type: application/json\r\n\r\n".as_slice(),
            body,
            b"\r\n",
        ]
        .concat()
    };
    let mut stream = hikvision::AlertStream::new(HIK_STREAM_CT, 4096, 4096).expect("stream");
    // Without a Content-Length a part ends when the next boundary arrives: the first event
    // is complete after the second push, and then waits for its picture.
    assert!(stream.push(&part(json)).expect("ok").is_empty());
    assert!(stream.push(&part(json)).expect("ok").is_empty());
    // The second event's arrival hands the first one out, without a picture.
    let next = stream.push(&part(json)).expect("ok");
    assert_eq!(next.len(), 1);
    assert!(next[0].as_ref().is_ok_and(|e| e.picture.is_none()));
    assert_eq!(
        stream.finish().len(),
        2,
        "the open part and the held one at the end"
    );
    // A quiet stream: the caller takes the held event out itself.
    let mut stream = hikvision::AlertStream::new(HIK_STREAM_CT, 4096, 4096).expect("stream");
    let head = format!(
        "--MIME_boundary\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        json.len()
    );
    let with_length = [head.as_bytes(), json.as_slice()].concat();
    assert!(stream.push(&with_length).expect("ok").is_empty());
    assert!(stream.take_held().is_some());
    assert!(stream.take_held().is_none());
}

// ---------------------------------------------------------------------------------------------
// Hikvision search.

#[test]
fn the_search_request_resumes_after_the_last_serial_within_a_window() {
    let tz = TimeZone::get("Asia/Shanghai").expect("tzdb");
    let start = utc("2024-03-04T16:00:00Z").to_zoned(tz.clone());
    let end = utc("2024-03-05T15:59:59Z").to_zoned(tz);
    let body = hikvision::acs_event_request(&hikvision::AcsEventQuery {
        search_id: "hallgate-1".into(),
        position: 30,
        max_results: 100,
        after_serial: Some(85800),
        window: Some((start, end)),
    });
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    let cond = &v["AcsEventCond"];
    assert_eq!(cond["searchID"], "hallgate-1");
    assert_eq!(cond["searchResultPosition"], 30);
    assert_eq!(cond["maxResults"], 30, "cut to the device's page size");
    assert_eq!(
        (cond["major"].clone(), cond["minor"].clone()),
        (5.into(), 0.into())
    );
    assert_eq!(cond["beginSerialNo"], 85801);
    assert_eq!(cond["startTime"], "2024-03-05T00:00:00+08:00");
    assert_eq!(cond["endTime"], "2024-03-05T23:59:59+08:00");
    let bare = hikvision::acs_event_request(&hikvision::AcsEventQuery {
        search_id: "s".into(),
        position: 0,
        max_results: 0,
        after_serial: None,
        window: None,
    });
    let v: serde_json::Value = serde_json::from_slice(&bare).expect("json");
    assert_eq!(v["AcsEventCond"]["maxResults"], 1);
    assert!(v["AcsEventCond"].get("beginSerialNo").is_none());
}

#[test]
fn search_pages_give_flat_records_the_profile_reads_and_the_highest_serial() {
    let page =
        hikvision::acs_event_page(fixture!("hikvision/acs_event_page_more.json")).expect("page");
    assert_eq!(page.status, hikvision::SearchStatus::More);
    assert!(page.more);
    assert_eq!(
        (page.num_of_matches, page.total_matches, page.max_serial),
        (Some(3), Some(5), Some(85803))
    );
    assert_eq!(page.records.len(), 3);
    let pass = passage_as(HIK, HIK_ID, &page.records[0]);
    assert_eq!(pass.who, member("4366"));
    assert_eq!(pass.at, utc("2024-03-05T02:00:01Z"));
    assert_eq!((pass.temperature_c, pass.mask), (Some(36.5), MaskState::On));
    assert_eq!(pass.dedup_key.event, "85801");
    let fail = passage_as(HIK, HIK_ID, &page.records[1]);
    assert_eq!(
        (fail.verdict, fail.who),
        (PassageVerdict::Fail, Who::Stranger)
    );
    assert_eq!(
        ignored_as(HIK, HIK_ID, &page.records[2]),
        IgnoreReason::NotAPassage
    );

    let last =
        hikvision::acs_event_page(fixture!("hikvision/acs_event_page_ok.json")).expect("page");
    assert!(!last.more);
    assert!(passage_as(HIK, HIK_ID, &last.records[0]).fever);

    let none = hikvision::acs_event_page(fixture!("hikvision/acs_event_page_no_match.json"))
        .expect("page");
    assert_eq!(none.status, hikvision::SearchStatus::NoMatch);
    assert!(none.records.is_empty() && !none.more && none.max_serial.is_none());
}

#[test]
fn a_search_page_with_an_unknown_status_or_odd_entries_says_so() {
    let odd = br#"{"AcsEvent":{"responseStatusStrg":"OK","InfoList":[1,{"serialNo":"7"}]}}"#;
    let page = hikvision::acs_event_page(odd).expect("page");
    assert_eq!(
        (page.records.len(), page.skipped, page.max_serial),
        (1, 1, Some(7))
    );
    let unknown = br#"{"AcsEvent":{"responseStatusStrg":"FAILED"}}"#;
    assert!(matches!(
        hikvision::acs_event_page(unknown),
        Err(WireError::BadValue { .. })
    ));
    assert_eq!(
        hikvision::acs_event_page(br#"{"x":1}"#),
        Err(WireError::MissingField { field: "AcsEvent" })
    );
}

// ---------------------------------------------------------------------------------------------
// Hikvision people counting.

#[test]
fn people_counting_tells_running_totals_from_windows_in_either_namespace() {
    use hikvision::PeopleCount;
    assert_eq!(
        hikvision::people_counting(
            "application/xml",
            fixture!("hikvision/people_counting_realtime.xml")
        ),
        Ok(PeopleCount::RealTime {
            at: utc("2024-03-05T01:29:58Z"),
            enter: 42,
            exit: 37
        }),
        "the adults' counts, not childCounting's"
    );
    assert_eq!(
        hikvision::people_counting(
            "text/xml",
            fixture!("hikvision/people_counting_timerange.xml")
        ),
        Ok(PeopleCount::Window {
            start: utc("2024-03-05T01:00:00Z"),
            end: utc("2024-03-05T01:15:00Z"),
            enter: 6,
            exit: 4
        })
    );
    assert_eq!(
        hikvision::people_counting(
            "application/xml",
            fixture!("hikvision/camera_heartbeat.xml")
        ),
        Ok(PeopleCount::Heartbeat)
    );
    let motion = b"<EventNotificationAlert><eventType>VMD</eventType></EventNotificationAlert>";
    assert_eq!(
        hikvision::people_counting("application/xml", motion),
        Ok(PeopleCount::Other {
            event_type: "VMD".into()
        })
    );
    // Inside a multipart body, beside a picture.
    let xml = fixture!("hikvision/people_counting_realtime.xml");
    let body = [
        b"--b\r\nContent-Type: application/xml\r\n\r\n".as_slice(),
        xml,
        b"\r\n--b\r\nContent-Type: image/jpeg\r\n\r\n\xff\xd8\xff\xd9\r\n--b--\r\n",
    ]
    .concat();
    assert!(matches!(
        hikvision::people_counting("multipart/mixed; boundary=b", &body),
        Ok(PeopleCount::RealTime { enter: 42, .. })
    ));
    let missing = b"<EventNotificationAlert><eventType>PeopleCounting</eventType>\
        <peopleCounting><statisticalMethods>realTime</statisticalMethods><enter>1</enter>\
        </peopleCounting></EventNotificationAlert>";
    assert!(matches!(
        hikvision::people_counting("application/xml", missing),
        Err(WireError::MissingField { .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// Uniubi.

const UNIUBI: &str = "uniubi-uface-http";
const UNIUBI_ID: &str = "84E0F4200CA602FA";

#[test]
fn a_uniubi_form_callback_gives_strings_and_its_photo_beside_them() {
    let envelope =
        uniubi::callback(FORM_CT, fixture!("uniubi/callback_form.txt"), 4096).expect("envelope");
    let picture = envelope.picture.as_deref().expect("picture");
    assert!(
        is_jpeg(picture) && picture.len() == 64,
        "raw '+' survived the form"
    );
    let doc: serde_json::Value = serde_json::from_slice(&envelope.document).expect("json");
    assert!(
        doc.get("base64").is_none(),
        "the photo is not in the document"
    );
    assert_eq!(doc["maskState"], "2");
    let p = passage_as(UNIUBI, UNIUBI_ID, &envelope.document);
    assert_eq!(p.terminal.as_str(), UNIUBI_ID);
    assert_eq!((p.verdict, p.who), (PassageVerdict::Pass, member("4366")));
    assert_eq!(p.mask, MaskState::Off);
    assert_eq!(p.temperature_c, Some(36.6));
    assert_eq!(p.at, utc("2024-03-05T01:12:33Z"));
}

#[test]
fn a_uniubi_json_callback_takes_a_data_uri_photo_and_a_stranger_with_fever() {
    let envelope = uniubi::callback(
        "application/json",
        fixture!("uniubi/callback_json.json"),
        4096,
    )
    .expect("envelope");
    assert!(envelope.picture.as_deref().is_some_and(is_jpeg));
    let p = passage_as(UNIUBI, UNIUBI_ID, &envelope.document);
    assert_eq!(
        (p.verdict, p.who),
        (PassageVerdict::Stranger, Who::Stranger)
    );
    assert!(p.fever);
    assert_eq!(p.mask, MaskState::On);
    let small = uniubi::callback(
        "application/json",
        fixture!("uniubi/callback_json.json"),
        10,
    )
    .expect("envelope");
    assert_eq!(
        (small.picture, small.picture_dropped),
        (None, Some("picture_too_large"))
    );
    let broken =
        uniubi::callback(FORM_CT, b"deviceKey=K&personId=1&base64=%%%%", 4096).expect("envelope");
    assert_eq!(broken.picture_dropped, Some("picture_unreadable"));
    assert_eq!(uniubi::SUCCESS_ANSWER, r#"{"result":1,"success":true}"#);
}

#[test]
fn a_uniubi_heartbeat_is_not_a_passage() {
    let envelope =
        uniubi::callback(FORM_CT, fixture!("uniubi/heartbeat_form.txt"), 1).expect("envelope");
    assert_eq!(
        ignored_as(UNIUBI, UNIUBI_ID, &envelope.document),
        IgnoreReason::Heartbeat
    );
    assert!(uniubi::callback(FORM_CT, b"", 1).is_err());
    assert!(uniubi::callback("application/json", b"{", 1).is_err());
}

// ---------------------------------------------------------------------------------------------
// ZKTeco.

const ZK: &str = "zkteco-adms";
const ZK_SN: &str = "CN6K204560123";

#[test]
fn zkteco_attlog_lines_read_in_the_halls_zone_with_bad_lines_reported() {
    assert_eq!(zkteco::table("ATTLOG"), zkteco::Table::AttLog);
    let log = zkteco::attlog(ZK_SN, fixture!("zkteco/attlog_thermal.txt"));
    assert_eq!(log.records.len(), 3);
    assert_eq!(
        log.bad_lines,
        [zkteco::BadLine {
            line: 4,
            why: "bad_time"
        }]
    );
    let shanghai = DecodeOptions {
        time_zone: TimeZone::get("Asia/Shanghai").expect("tzdb"),
        ..DecodeOptions::default()
    };
    let first = passage_with(ZK, ZK_SN, &log.records[0], &shanghai);
    assert_eq!(
        first.at,
        utc("2024-03-05T01:12:33Z"),
        "naive time in Asia/Shanghai"
    );
    assert_eq!(
        (first.verdict, first.who.clone()),
        (PassageVerdict::Pass, member("1001"))
    );
    assert_eq!(
        (first.mask, first.temperature_c),
        (MaskState::On, Some(36.5))
    );
    assert_eq!(first.direction, Direction::Unknown);
    let second = passage_with(ZK, ZK_SN, &log.records[1], &shanghai);
    assert!(second.fever);
    assert_eq!(second.mask, MaskState::Off);
    let fourth = passage_with(ZK, ZK_SN, &log.records[2], &shanghai);
    assert_eq!(
        (fourth.mask, fourth.temperature_c),
        (MaskState::Unknown, None)
    );
    assert!(!fourth.sensor_error, "0 is 'not measured'");
    // The same line in UTC is eight hours later: the zone is what makes it right.
    let in_utc = passage_with(ZK, ZK_SN, &log.records[0], &DecodeOptions::default());
    assert_eq!(in_utc.at, utc("2024-03-05T09:12:33Z"));
}

#[test]
fn zkteco_plain_lines_other_tables_and_answers() {
    let log = zkteco::attlog(ZK_SN, fixture!("zkteco/attlog_plain.txt"));
    assert_eq!((log.records.len(), log.bad_lines.len()), (2, 0));
    let doc: serde_json::Value = serde_json::from_slice(&log.records[1]).expect("json");
    assert_eq!(doc["SN"], ZK_SN);
    assert_eq!(doc["status"], "1");
    assert!(doc.get("mask").is_none());
    assert_eq!(zkteco::table("OPERLOG"), zkteco::Table::NotPassages);
    assert_eq!(zkteco::table("ATTPHOTO"), zkteco::Table::NotPassages);
    let operlog = zkteco::attlog(ZK_SN, fixture!("zkteco/operlog.txt"));
    assert!(
        operlog.records.is_empty(),
        "an OPERLOG body read as ATTLOG yields nothing"
    );
    assert_eq!(zkteco::records_taken_answer(3), "OK: 3");
    let options = zkteco::options_answer(ZK_SN);
    assert!(options.starts_with(&format!("GET OPTION FROM: {ZK_SN}\n")));
    assert!(options.contains("\nATTLOGStamp=None\n") && options.contains("\nRealtime=1\n"));
    assert!(!zkteco::options_answer("A\nB=1").contains("\nB=1"));
    assert_eq!(zkteco::GETREQUEST_ANSWER, "OK");
    let short = zkteco::attlog(
        ZK_SN,
        b"1001\t2024-03-05 09:12:33\n\t2024-03-05 09:12:33\t0\n",
    );
    let reasons: Vec<&str> = short.bad_lines.iter().map(|b| b.why).collect();
    assert_eq!(reasons, ["too_few_columns", "bad_pin"]);
}

// ---------------------------------------------------------------------------------------------
// Dahua.

const DAHUA: &str = "dahua-access";
const DAHUA_ID: &str = "7H0C1A2PAJ12345";

#[test]
fn the_dahua_attach_stream_yields_access_events_heartbeats_and_other_codes() {
    let mut stream = PartStream::from_content_type(DAHUA_CT, 64 * 1024).expect("stream");
    let parts = stream
        .push(fixture!("dahua/attach_stream.bin"))
        .expect("parts");
    let events: Vec<dahua::AttachEvent> = parts
        .iter()
        .map(|p| dahua::attach_part(&p.body).expect("event"))
        .collect();
    assert_eq!(events.len(), 4);
    assert_eq!(events[1], dahua::AttachEvent::Heartbeat);
    assert_eq!(events[3], dahua::AttachEvent::NotAPassage);
    let dahua::AttachEvent::AccessControl(first) = &events[0] else {
        panic!("access control");
    };
    let p = passage_as(DAHUA, DAHUA_ID, first);
    assert_eq!(
        (p.verdict, p.who.clone()),
        (PassageVerdict::Pass, member("1001"))
    );
    assert_eq!(
        p.at,
        utc("2024-03-05T01:12:33Z"),
        "RealUTC, not the local-time UTC"
    );
    assert_eq!((p.mask, p.direction), (MaskState::On, Direction::In));
    assert_eq!(
        (p.temperature_c, p.dedup_key.event.as_str()),
        (Some(36.5), "2301")
    );
    let dahua::AttachEvent::AccessControl(second) = &events[2] else {
        panic!("access control");
    };
    let p = passage_as(DAHUA, DAHUA_ID, second);
    assert_eq!((p.verdict, p.who), (PassageVerdict::Fail, Who::Stranger));
    assert!(p.fever);
    assert_eq!(p.mask, MaskState::Off);
    assert_eq!(p.at, utc("2024-03-05T01:12:50Z"));
}

#[test]
fn a_dahua_part_with_bytes_after_its_json_still_reads() {
    let event = dahua::attach_part(
        b"code=AccessControl;Action=Pulse;index=0;data={\"Status\":1,\"UserID\":\"7\",\"RecNo\":3,\"UTC\":1709601153}\r\nGARBAGE}",
    )
    .expect("event");
    let dahua::AttachEvent::AccessControl(doc) = event else {
        panic!("access control");
    };
    let v: serde_json::Value = serde_json::from_slice(&doc).expect("json");
    assert_eq!(
        (v["Code"].clone(), v["action"].clone()),
        ("AccessControl".into(), "Pulse".into())
    );
    assert_eq!(v["UserID"], "7");
    assert!(dahua::attach_part(b"Code=AccessControl;action=Pulse;index=0").is_err());
    assert!(dahua::attach_part(b"Code=AccessControl;data={").is_err());
    assert!(dahua::attach_part(b"nonsense").is_err());
}

// ---------------------------------------------------------------------------------------------
// Property tests: every parser, arbitrary and mutated bytes.

fn assert_object(document: &[u8]) {
    assert!(
        matches!(
            serde_json::from_slice::<serde_json::Value>(document),
            Ok(serde_json::Value::Object(_))
        ),
        "a document is always a JSON object"
    );
}

fn run_every_parser(bytes: &[u8], content_type: &str) {
    if let Ok(e) = hikvision::push(content_type, bytes, 64) {
        assert_object(&e.document);
        assert!(e.picture.as_ref().is_none_or(|p| p.len() <= 64));
    }
    if let Ok(mut stream) = hikvision::AlertStream::new(content_type, 512, 64) {
        for piece in bytes.chunks(37) {
            if let Ok(items) = stream.push(piece) {
                for e in items.into_iter().flatten() {
                    assert_object(&e.document);
                }
            }
        }
        for e in stream.finish().into_iter().flatten() {
            assert_object(&e.document);
        }
    }
    if let Ok(page) = hikvision::acs_event_page(bytes) {
        page.records.iter().for_each(|r| assert_object(r));
    }
    let _ = hikvision::people_counting(content_type, bytes);
    if let Ok(e) = uniubi::callback(content_type, bytes, 64) {
        assert_object(&e.document);
        assert!(e.picture.as_ref().is_none_or(|p| p.len() <= 64));
    }
    let log = zkteco::attlog("SN1", bytes);
    log.records.iter().for_each(|r| assert_object(r));
    if let Ok(dahua::AttachEvent::AccessControl(doc)) = dahua::attach_part(bytes) {
        assert_object(&doc);
    }
    // And whatever comes out goes through the profiles without a panic.
    for (profile, id) in [
        (HIK, HIK_ID),
        (UNIUBI, UNIUBI_ID),
        (ZK, ZK_SN),
        (DAHUA, DAHUA_ID),
    ] {
        let _ = decode_as(profile, id, bytes, &DecodeOptions::default());
    }
}

const FIXTURES: &[(&str, &[u8])] = &[
    (HIK_PUSH_CT, fixture!("hikvision/push_multipart.bin")),
    (HIK_PUSH_CT, fixture!("hikvision/push_event_log_lf.bin")),
    (
        "application/json",
        fixture!("hikvision/push_plain_fever.json"),
    ),
    (HIK_STREAM_CT, fixture!("hikvision/alert_stream.bin")),
    (
        "application/json",
        fixture!("hikvision/acs_event_page_more.json"),
    ),
    (
        "application/xml",
        fixture!("hikvision/people_counting_realtime.xml"),
    ),
    (
        "application/xml",
        fixture!("hikvision/people_counting_timerange.xml"),
    ),
    (FORM_CT, fixture!("uniubi/callback_form.txt")),
    ("application/json", fixture!("uniubi/callback_json.json")),
    ("text/plain", fixture!("zkteco/attlog_thermal.txt")),
    (DAHUA_CT, fixture!("dahua/attach_stream.bin")),
];

fn content_types() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(HIK_PUSH_CT.to_string()),
        Just(HIK_STREAM_CT.to_string()),
        Just(DAHUA_CT.to_string()),
        Just(FORM_CT.to_string()),
        Just("application/json".to_string()),
        Just("application/xml".to_string()),
        Just(String::new()),
        ".{0,40}",
    ]
}

proptest! {
    #[test]
    fn no_parser_panics_on_arbitrary_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 0..1024),
        content_type in content_types(),
    ) {
        run_every_parser(&bytes, &content_type);
    }

    #[test]
    fn no_parser_panics_on_mutated_fixtures(
        which in 0..FIXTURES.len(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let (content_type, original) = FIXTURES[which];
        let mut bytes = original.to_vec();
        for (at, byte) in &flips {
            let i = at.index(bytes.len());
            bytes[i] = *byte;
        }
        run_every_parser(&bytes, content_type);
        let end = cut.index(bytes.len() + 1);
        run_every_parser(&bytes[..end], content_type);
    }
}
