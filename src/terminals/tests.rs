//! The shipped profiles against the vendor fixtures in `tests/fixtures/terminals/`: each
//! fixture decodes to the event listed here (a table), and no input — arbitrary bytes, fixtures
//! with fields deleted or retyped, fixtures with bytes flipped — makes a decoder panic or
//! break an invariant of [`PassageRecorded`].

use jiff::Timestamp;
use proptest::prelude::*;
use serde_json::Value;

use super::*;

/// 2024-03-05T20:00:00+08:00: after every fixture's event time.
const NOW_S: i64 = 1_709_640_000;

fn now() -> Timestamp {
    Timestamp::from_second(NOW_S).expect("in range")
}

const HIK_TOPIC: &str = "terminals/hikvision/DS-K1T671-E12345678/events";
const V2_TOPIC: &str = "terminals/httpv2/FC-8200H12345678/record";
const UNIUBI_TOPIC: &str = "terminals/uniubi/hall-1/callbacks";

/// The topic each shipped profile is tested with.
const TOPICS: &[(&str, &str)] = &[
    ("hikvision-acs", HIK_TOPIC),
    ("httpv2-record", V2_TOPIC),
    ("uniubi-uface", UNIUBI_TOPIC),
];

macro_rules! fixture {
    ($profile:literal, $file:literal) => {
        (
            $profile,
            $file,
            include_bytes!(concat!(
                "../../tests/fixtures/terminals/",
                $profile,
                "/",
                $file
            )) as &[u8],
        )
    };
}

const FIXTURES: &[(&str, &str, &[u8])] = &[
    fixture!("hikvision-acs", "member_pass.json"),
    fixture!("hikvision-acs", "fever.json"),
    fixture!("hikvision-acs", "mask_off.json"),
    fixture!("hikvision-acs", "face_failed.json"),
    fixture!("hikvision-acs", "sensor_fault.json"),
    fixture!("hikvision-acs", "door_unlocked.json"),
    fixture!("hikvision-acs", "heartbeat.json"),
    fixture!("httpv2-record", "member_pass.json"),
    fixture!("httpv2-record", "stranger.json"),
    fixture!("httpv2-record", "fever_refused.json"),
    fixture!("httpv2-record", "exit_out_of_hours.json"),
    fixture!("httpv2-record", "sensor_fault.json"),
    fixture!("httpv2-record", "menu_edit.json"),
    fixture!("httpv2-record", "heartbeat.json"),
    fixture!("uniubi-uface", "member_pass.json"),
    fixture!("uniubi-uface", "stranger.json"),
    fixture!("uniubi-uface", "fever.json"),
    fixture!("uniubi-uface", "mask_off.json"),
    fixture!("uniubi-uface", "outside_pass_time.json"),
    fixture!("uniubi-uface", "heartbeat.json"),
];

fn topic_of(profile: &str) -> &'static str {
    TOPICS
        .iter()
        .find(|(p, _)| *p == profile)
        .map(|(_, t)| *t)
        .unwrap_or("no/such/topic")
}

fn run(profile: &str, bytes: &[u8]) -> Result<Decoded, RejectReason> {
    let profiles = TerminalProfiles::builtin();
    let p = profiles.get(profile).expect("shipped profile");
    decode(
        p,
        topic_of(profile),
        bytes,
        now(),
        &DecodeOptions::default(),
    )
}

/// What a fixture must decode to.
#[derive(Debug)]
enum Want {
    Passage {
        terminal: &'static str,
        at: &'static str,
        member: Option<&'static str>,
        verdict: PassageVerdict,
        temperature_c: Option<f64>,
        fever: bool,
        sensor_error: bool,
        mask: MaskState,
        direction: Direction,
        event: &'static str,
        snapshot: bool,
    },
    Ignored(Option<&'static str>, IgnoreReason),
}

use Direction::{In, Out, Unknown as Nowhere};
use MaskState::{Off, On, Unknown};
use PassageVerdict::{Fail, Pass, RefusedFever, Stranger};

const HIK: &str = "DS-K1T671-E12345678";
const V2: &str = "FC-8200H12345678";
const UNI: &str = "84E0F4200CA602FA";

#[rustfmt::skip]
fn table() -> Vec<(&'static str, &'static str, Want)> {
    let p = |terminal, at, member, verdict, temperature_c, fever, sensor_error, mask, direction, event, snapshot| {
        Want::Passage { terminal, at, member, verdict, temperature_c, fever, sensor_error, mask, direction, event, snapshot }
    };
    vec![
        ("hikvision-acs", "member_pass.json",  p(HIK, "2024-03-05T01:12:33Z", Some("4366"), Pass, Some(36.6), false, false, On, Nowhere, "85793", false)),
        ("hikvision-acs", "fever.json",        p(HIK, "2024-03-05T01:14:02Z", Some("5054"), Pass, Some(38.2), true, false, On, Nowhere, "85794", false)),
        ("hikvision-acs", "mask_off.json",     p(HIK, "2024-03-05T01:20:45Z", Some("6120"), Pass, Some(36.4), false, false, Off, Nowhere, "85795", false)),
        ("hikvision-acs", "face_failed.json",  p(HIK, "2024-03-05T01:21:10Z", None, Fail, Some(36.8), false, false, Unknown, Nowhere, "85796", false)),
        ("hikvision-acs", "sensor_fault.json", p(HIK, "2024-03-05T05:02:51Z", Some("7001"), Pass, None, false, true, On, Nowhere, "85830", false)),
        ("hikvision-acs", "door_unlocked.json", Want::Ignored(Some(HIK), IgnoreReason::NotAPassage)),
        ("hikvision-acs", "heartbeat.json",     Want::Ignored(Some(HIK), IgnoreReason::Heartbeat)),
        ("httpv2-record", "member_pass.json",       p(V2, "2024-03-05T01:12:33Z", Some("1"), Pass, Some(36.5), false, false, Unknown, In, "120", true)),
        ("httpv2-record", "stranger.json",          p(V2, "2024-03-05T01:13:30Z", None, Stranger, Some(36.2), false, false, Unknown, In, "121", true)),
        ("httpv2-record", "fever_refused.json",     p(V2, "2024-03-05T01:15:00Z", Some("7"), RefusedFever, Some(38.1), true, false, Unknown, In, "122", false)),
        ("httpv2-record", "exit_out_of_hours.json", p(V2, "2024-03-05T11:00:00Z", Some("1"), Fail, None, false, false, Unknown, Out, "123", false)),
        ("httpv2-record", "sensor_fault.json",      p(V2, "2024-03-05T01:16:40Z", Some("9"), Pass, None, false, true, Unknown, In, "124", false)),
        ("httpv2-record", "menu_edit.json", Want::Ignored(Some(V2), IgnoreReason::NotAPassage)),
        ("httpv2-record", "heartbeat.json", Want::Ignored(Some(V2), IgnoreReason::Heartbeat)),
        ("uniubi-uface", "member_pass.json",       p(UNI, "2024-03-05T01:12:33.823Z", Some("p-1029"), Pass, Some(36.5), false, false, On, Nowhere, "50321", true)),
        ("uniubi-uface", "stranger.json",          p(UNI, "2024-03-05T01:13:21.456Z", None, Stranger, Some(36.3), false, false, On, Nowhere, "t1709601201456", true)),
        ("uniubi-uface", "fever.json",             p(UNI, "2024-03-05T01:15:00.010Z", Some("p-0077"), Pass, Some(38.6), true, false, On, Nowhere, "50330", false)),
        ("uniubi-uface", "mask_off.json",          p(UNI, "2024-03-05T01:26:40Z", Some("p-1029"), Pass, Some(36.6), false, false, Off, Nowhere, "50340", false)),
        ("uniubi-uface", "outside_pass_time.json", p(UNI, "2024-03-05T11:00:00Z", Some("p-2001"), Fail, None, false, false, Unknown, Nowhere, "50350", false)),
        ("uniubi-uface", "heartbeat.json", Want::Ignored(Some(UNI), IgnoreReason::Heartbeat)),
    ]
}

fn fixture_bytes(profile: &str, file: &str) -> &'static [u8] {
    FIXTURES
        .iter()
        .find(|(p, f, _)| *p == profile && *f == file)
        .map(|(_, _, b)| *b)
        .unwrap_or_else(|| panic!("no fixture {profile}/{file}"))
}

#[test]
fn every_fixture_decodes_to_the_event_its_vendor_document_describes() {
    let table = table();
    assert_eq!(table.len(), FIXTURES.len(), "every fixture has a row");
    for (profile, file, want) in table {
        let got = run(profile, fixture_bytes(profile, file));
        let what = format!("{profile}/{file}");
        match (want, got) {
            (
                Want::Passage {
                    terminal,
                    at,
                    member,
                    verdict,
                    temperature_c,
                    fever,
                    sensor_error,
                    mask,
                    direction,
                    event,
                    snapshot,
                },
                Ok(Decoded::Passage(p)),
            ) => {
                assert_eq!(p.terminal.as_str(), terminal, "{what}");
                assert_eq!(p.at, at.parse::<Timestamp>().expect("valid time"), "{what}");
                assert!(!p.device_clock_suspect, "{what}");
                let want_who = member.map_or(Who::Stranger, |m| Who::Member(MemberRef::new(m)));
                assert_eq!(p.who, want_who, "{what}");
                assert_eq!(p.verdict, verdict, "{what}");
                assert_eq!(p.temperature_c, temperature_c, "{what}");
                assert_eq!((p.fever, p.sensor_error), (fever, sensor_error), "{what}");
                assert_eq!((p.mask, p.direction), (mask, direction), "{what}");
                assert_eq!(p.dedup_key.terminal.as_str(), terminal, "{what}");
                assert_eq!(p.dedup_key.event, event, "{what}");
                assert_eq!(p.snapshot.is_some(), snapshot, "{what}");
                if let Some(s) = p.snapshot {
                    assert!(s.bytes().starts_with(&[0xff, 0xd8, 0xff]), "{what}: a JPEG");
                }
            }
            (Want::Ignored(terminal, reason), Ok(Decoded::Ignored(i))) => {
                assert_eq!(
                    i.terminal.as_ref().map(TerminalId::as_str),
                    terminal,
                    "{what}"
                );
                assert_eq!(i.reason, reason, "{what}");
            }
            (want, got) => panic!("{what}: wanted {want:?}, got {got:?}"),
        }
    }
}

#[test]
fn no_name_or_member_id_from_a_fixture_reaches_debug_output() {
    let secrets = [
        "Zhang San",
        "Li Si",
        "Wang Wu",
        "Zhao Liu",
        "王芳",
        "李强",
        "4366",
        "5054",
        "p-1029",
        "p-0077",
    ];
    for (profile, file, bytes) in FIXTURES {
        let shown = format!("{:?}", run(profile, bytes));
        for secret in secrets {
            assert!(
                !shown.contains(secret),
                "{profile}/{file} shows {secret:?}: {shown}"
            );
        }
    }
}

#[test]
fn a_resent_fixture_counts_once_and_its_member_hashes_stably() {
    let mut dedup = Dedup::default();
    let mut hasher = MemberHasher::new();
    let day = jiff::civil::date(2024, 3, 5);
    let mut tokens = Vec::new();
    for _ in 0..2 {
        let Ok(Decoded::Passage(p)) = run(
            "uniubi-uface",
            fixture_bytes("uniubi-uface", "member_pass.json"),
        ) else {
            panic!("passage");
        };
        tokens.push(dedup.first_seen(&p.dedup_key));
        let Who::Member(member) = &p.who else {
            panic!("member");
        };
        tokens.push(hasher.hash(day, member) == hasher.hash(day, member));
    }
    assert_eq!(tokens, [true, true, false, true]);
}

#[test]
fn a_fixture_on_another_profile_is_never_mistaken_for_a_passage_silently() {
    // Decoding a vendor's message with the wrong profile must not invent a passage: it is
    // rejected or ignored. (The driver picks the profile from the topic, so this is a guard
    // against a mis-configured subscription, not a normal path.)
    for (profile, file, bytes) in FIXTURES {
        for (other, _) in TOPICS.iter().filter(|(o, _)| o != profile) {
            let got = run(other, bytes);
            assert!(
                !matches!(got, Ok(Decoded::Passage(_))),
                "{profile}/{file} read as {other}: {got:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Property tests.

/// The invariants every decoded passage keeps, whatever came in.
fn check_invariants(outcome: &Result<Decoded, RejectReason>, options: &DecodeOptions) {
    if let Ok(Decoded::Passage(p)) = outcome {
        if let Some(t) = p.temperature_c {
            assert!(
                (options.plausible_min_c..=options.plausible_max_c).contains(&t),
                "{t}"
            );
            assert!(!p.sensor_error);
        }
        if p.sensor_error {
            assert!(!p.fever, "a faulty reading is never a fever");
            assert!(p.temperature_c.is_none());
        }
        let latest = now()
            .checked_add(jiff::SignedDuration::from_secs(
                options.max_clock_ahead_s as i64,
            ))
            .expect("in range");
        assert!(p.at <= latest && p.at >= Timestamp::from_second(1_577_836_800).expect("2020"));
        if p.verdict == PassageVerdict::Stranger {
            assert_eq!(p.who, Who::Stranger);
        }
        assert!(!p.dedup_key.event.is_empty() && p.dedup_key.event.len() <= 64);
    }
}

fn decode_everywhere(bytes: &[u8]) {
    let profiles = TerminalProfiles::builtin();
    let options = DecodeOptions::default();
    for (name, topic) in TOPICS {
        let profile = profiles.get(name).expect("shipped profile");
        let outcome = decode(profile, topic, bytes, now(), &options);
        check_invariants(&outcome, &options);
    }
}

/// Where a mutation lands: a member of an object or an element of an array.
#[derive(Debug, Clone)]
enum Slot {
    Key(String),
    Index(usize),
}

fn slots(value: &Value, here: &mut Vec<Slot>, all: &mut Vec<Vec<Slot>>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                here.push(Slot::Key(k.clone()));
                all.push(here.clone());
                slots(v, here, all);
                here.pop();
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                here.push(Slot::Index(i));
                all.push(here.clone());
                slots(v, here, all);
                here.pop();
            }
        }
        _ => {}
    }
}

/// Deletes or retypes the value at `path`.
fn mutate(root: &mut Value, path: &[Slot], op: u8) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut here = root;
    for slot in parents {
        here = match (slot, here) {
            (Slot::Key(k), Value::Object(m)) => match m.get_mut(k) {
                Some(v) => v,
                None => return,
            },
            (Slot::Index(i), Value::Array(a)) => match a.get_mut(*i) {
                Some(v) => v,
                None => return,
            },
            _ => return,
        };
    }
    let replacement = match op % 12 {
        0 => None,
        1 => Some(Value::Null),
        2 => Some(Value::Bool(true)),
        3 => Some(serde_json::json!(-1.0e300)),
        4 => Some(serde_json::json!(u64::MAX)),
        5 => Some(serde_json::json!(i64::MIN)),
        6 => Some(Value::String("x".into())),
        7 => Some(Value::String("99999999999999999999999".into())),
        8 => Some(Value::String("@@not base64@@".into())),
        9 => Some(serde_json::json!([])),
        10 => Some(serde_json::json!({})),
        _ => Some(Value::String("é\u{0}/+#".repeat(30))),
    };
    match (last, here, replacement) {
        (Slot::Key(k), Value::Object(m), None) => {
            m.remove(k);
        }
        (Slot::Key(k), Value::Object(m), Some(v)) => {
            m.insert(k.clone(), v);
        }
        (Slot::Index(i), Value::Array(a), None) if *i < a.len() => {
            a.remove(*i);
        }
        (Slot::Index(i), Value::Array(a), Some(v)) if *i < a.len() => a[*i] = v,
        _ => {}
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_any_decoder(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        decode_everywhere(&bytes);
    }

    #[test]
    fn arbitrary_json_shaped_text_never_panics_any_decoder(text in "[{}\\[\\]\":,0-9a-zA-Z.\\- ]{0,400}") {
        decode_everywhere(text.as_bytes());
    }

    #[test]
    fn fixtures_with_fields_deleted_or_retyped_never_panic(
        which in 0..FIXTURES.len(),
        mutations in prop::collection::vec((any::<u16>(), any::<u8>()), 1..8),
    ) {
        let (_, _, bytes) = FIXTURES[which];
        let mut doc: Value = serde_json::from_slice(bytes).expect("fixtures are JSON");
        for (selector, op) in mutations {
            let mut all = Vec::new();
            slots(&doc, &mut Vec::new(), &mut all);
            if all.is_empty() {
                break;
            }
            let path = all[usize::from(selector) % all.len()].clone();
            mutate(&mut doc, &path, op);
        }
        decode_everywhere(doc.to_string().as_bytes());
    }

    #[test]
    fn fixtures_with_bytes_flipped_never_panic(
        which in 0..FIXTURES.len(),
        flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..6),
    ) {
        let (_, _, bytes) = FIXTURES[which];
        let mut bytes = bytes.to_vec();
        for (at, value) in flips {
            let len = bytes.len();
            bytes[at % len] = value;
        }
        decode_everywhere(&bytes);
    }
}
