//! A pulled device's own event log, and the Hikvision `AcsEvent` search over it. Pure.
//!
//! Pull terminals keep every passage (and failed verification) in their log whether anyone
//! is listening or not; the gateway reads it — by paged searches or from an event stream
//! that replays it — so a gateway that was down must re-read the gap. The log is therefore
//! the truth: [`DeviceLog::mark_delivered`] says when a record first went out, which is when
//! the simulator writes its truth line.
//!
//! ```text
//! player ─► DeviceLog::push ─► records ─► search(AcsEventCond) ─► Page (≤ 30, MORE/OK/NO MATCH)
//!                           └─► live   ─► alertStream / Dahua stream parts
//! ```

use jiff::Timestamp;
use serde_json::{Value, json};

use super::encode::{MAJOR_EVENT, MINOR_FACE_FAIL, MINOR_FACE_PASS};
use super::{Entry, Record};
use crate::simulate::terminals::Message;

/// The most records one search answer carries, as on Hikvision terminals.
pub const MAX_RESULTS: usize = 30;

/// What an event stream sends after its replay, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveItem {
    /// A record as it happens (`currentEvent: true`).
    New(usize),
    /// An earlier record sent again.
    Resend(usize),
}

/// One device's log.
#[derive(Debug, Default)]
pub struct DeviceLog {
    records: Vec<Entry>,
    delivered: Vec<bool>,
    live: Vec<LiveItem>,
}

impl DeviceLog {
    /// Logs a record (a passage or a failed verification); returns its index.
    pub fn push(&mut self, entry: Entry) -> usize {
        self.records.push(entry);
        self.delivered.push(false);
        let index = self.records.len() - 1;
        self.live.push(LiveItem::New(index));
        index
    }

    /// The record with `serial` goes out again on the streams; false when it is not logged.
    pub fn resend(&mut self, serial: u64) -> bool {
        match self.records.iter().rposition(|e| e.serial() == serial) {
            Some(index) => {
                self.live.push(LiveItem::Resend(index));
                true
            }
            None => false,
        }
    }

    pub fn records(&self) -> &[Entry] {
        &self.records
    }

    pub fn live(&self) -> &[LiveItem] {
        &self.live
    }

    pub fn get(&self, index: usize) -> Option<&Entry> {
        self.records.get(index)
    }

    /// Notes that record `index` went out; true the first time.
    pub fn mark_delivered(&mut self, index: usize) -> bool {
        match self.delivered.get_mut(index) {
            Some(d) if !*d => {
                *d = true;
                true
            }
            _ => false,
        }
    }

    /// Records that never went out.
    pub fn undelivered(&self) -> impl Iterator<Item = &Entry> {
        self.records
            .iter()
            .zip(&self.delivered)
            .filter(|(_, d)| !**d)
            .map(|(e, _)| e)
    }

    /// The records matching `cond`, from its position, at most [`MAX_RESULTS`].
    pub fn search(&self, cond: &AcsEventCond) -> Page {
        let matching: Vec<usize> = (0..self.records.len())
            .filter(|&i| cond.matches(&self.records[i]))
            .collect();
        let total = matching.len();
        let limit = cond.max_results.clamp(1, MAX_RESULTS);
        let indices: Vec<usize> = matching
            .into_iter()
            .skip(cond.position)
            .take(limit)
            .collect();
        let status = if total == 0 || (indices.is_empty() && cond.position >= total) {
            "NO MATCH"
        } else if cond.position + indices.len() < total {
            "MORE"
        } else {
            "OK"
        };
        Page {
            indices,
            total,
            status,
        }
    }
}

/// An `AcsEventCond` as the device reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct AcsEventCond {
    pub search_id: String,
    pub position: usize,
    pub max_results: usize,
    /// 0: any.
    pub major: u64,
    /// 0: any.
    pub minor: u64,
    pub start: Option<Timestamp>,
    pub end: Option<Timestamp>,
    pub begin_serial: Option<u64>,
    pub end_serial: Option<u64>,
}

impl AcsEventCond {
    fn matches(&self, e: &Entry) -> bool {
        let minor = match e.record {
            Record::Message(Message::Passage(_)) => MINOR_FACE_PASS,
            Record::Fail { .. } => MINOR_FACE_FAIL,
            _ => return false,
        };
        let second = e.event_ms().div_euclid(1000);
        (self.major == 0 || self.major == u64::from(MAJOR_EVENT))
            && (self.minor == 0 || self.minor == u64::from(minor))
            && self.start.is_none_or(|s| second >= s.as_second())
            && self.end.is_none_or(|s| second <= s.as_second())
            && self.begin_serial.is_none_or(|b| e.serial() >= b)
            && self.end_serial.is_none_or(|b| e.serial() <= b)
    }
}

/// Reads the body of `POST /ISAPI/AccessControl/AcsEvent?format=json`.
pub fn parse_cond(body: &[u8]) -> Result<AcsEventCond, String> {
    let doc: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let cond = doc.get("AcsEventCond").ok_or("no AcsEventCond object")?;
    let number = |key: &str| -> Result<Option<u64>, String> {
        match cond.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_u64()
                .map(Some)
                .ok_or_else(|| format!("{key} is not a whole number")),
            // Some clients send numbers as strings.
            Some(Value::String(s)) => s
                .parse()
                .map(Some)
                .map_err(|_| format!("{key} is not a whole number")),
            Some(_) => Err(format!("{key} is not a number")),
        }
    };
    let time = |key: &str| -> Result<Option<Timestamp>, String> {
        match cond.get(key).and_then(Value::as_str) {
            None => Ok(None),
            Some(text) => text
                .parse::<Timestamp>()
                .map(Some)
                .map_err(|e| format!("{key} {text:?} is not a time with an offset: {e}")),
        }
    };
    let search_id = cond
        .get("searchID")
        .and_then(Value::as_str)
        .ok_or("no searchID")?
        .to_string();
    let usize_of = |v: Option<u64>, default: usize| {
        v.map_or(default, |n| usize::try_from(n).unwrap_or(usize::MAX))
    };
    Ok(AcsEventCond {
        search_id,
        position: usize_of(number("searchResultPosition")?, 0),
        max_results: usize_of(number("maxResults")?, MAX_RESULTS),
        major: number("major")?.unwrap_or(0),
        minor: number("minor")?.unwrap_or(0),
        start: time("startTime")?,
        end: time("endTime")?,
        begin_serial: number("beginSerialNo")?,
        end_serial: number("endSerialNo")?,
    })
}

/// One search answer: which records, of how many matching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub indices: Vec<usize>,
    pub total: usize,
    /// `MORE`, `OK` or `NO MATCH`.
    pub status: &'static str,
}

impl Page {
    /// The answer's JSON, with the records' `InfoList` entries.
    pub fn to_json(&self, search_id: &str, info: Vec<Value>) -> Value {
        let mut body = json!({
            "searchID": search_id,
            "responseStatusStrg": self.status,
            "numOfMatches": info.len(),
            "totalMatches": self.total,
        });
        if !info.is_empty()
            && let Some(object) = body.as_object_mut()
        {
            object.insert("InfoList".into(), Value::Array(info));
        }
        json!({ "AcsEvent": body })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulate::terminals::Passage;
    use proptest::prelude::*;

    fn passage(serial: u64, at_ms: i64) -> Entry {
        Entry {
            offset_ms: 0,
            at_ms,
            record: Record::Message(Message::Passage(Passage {
                terminal: 0,
                serial,
                at_ms,
                member: Some(1),
                temperature_tenths: 365,
                fever: false,
                sensor_error: false,
                mask_off: false,
                broken_snapshot: false,
            })),
        }
    }

    fn log(n: u64) -> DeviceLog {
        let mut log = DeviceLog::default();
        for i in 0..n {
            log.push(passage(1000 + 2 * i, 1_709_601_153_000 + 1000 * i as i64));
        }
        log.push(Entry {
            offset_ms: 0,
            at_ms: 1_709_601_153_000,
            record: Record::Fail {
                terminal: 0,
                serial: 5001,
            },
        });
        log
    }

    fn cond(body: &str) -> AcsEventCond {
        parse_cond(body.as_bytes()).expect("valid")
    }

    #[test]
    fn pages_hold_at_most_thirty_and_say_more_until_the_last() {
        let log = log(70);
        let mut position = 0;
        let mut seen = Vec::new();
        let mut statuses = Vec::new();
        loop {
            let page = log.search(&cond(&format!(
                r#"{{"AcsEventCond":{{"searchID":"s","searchResultPosition":{position},"maxResults":100,"major":5,"minor":75}}}}"#
            )));
            assert!(page.indices.len() <= MAX_RESULTS);
            assert_eq!(page.total, 70);
            statuses.push(page.status);
            position += page.indices.len();
            seen.extend(page.indices);
            if page.status != "MORE" {
                break;
            }
        }
        assert_eq!(statuses, ["MORE", "MORE", "OK"]);
        assert_eq!(seen, (0..70).collect::<Vec<_>>());
    }

    #[test]
    fn begin_serial_no_starts_the_search_at_that_record() {
        let log = log(10);
        let page = log.search(&cond(
            r#"{"AcsEventCond":{"searchID":"s","searchResultPosition":0,"maxResults":30,"major":5,"minor":75,"beginSerialNo":1010}}"#,
        ));
        assert_eq!(page.indices, vec![5, 6, 7, 8, 9]);
        assert_eq!(page.status, "OK");
        let none = log.search(&cond(
            r#"{"AcsEventCond":{"searchID":"s","searchResultPosition":0,"maxResults":30,"major":5,"minor":75,"beginSerialNo":99999}}"#,
        ));
        assert_eq!((none.status, none.total), ("NO MATCH", 0));
    }

    #[test]
    fn any_minor_includes_failed_verifications_and_times_bound_the_search() {
        let log = log(10);
        let all = log.search(&cond(
            r#"{"AcsEventCond":{"searchID":"s","searchResultPosition":0,"maxResults":30,"major":5,"minor":0}}"#,
        ));
        assert_eq!(all.total, 11);
        // 09:12:35 to 09:12:37 China time: records 2, 3 and 4 (the fail is at 09:12:33).
        let window = log.search(&cond(
            r#"{"AcsEventCond":{"searchID":"s","searchResultPosition":0,"maxResults":30,"major":0,"minor":0,"startTime":"2024-03-05T09:12:35+08:00","endTime":"2024-03-05T09:12:37+08:00"}}"#,
        ));
        assert_eq!(window.indices, vec![2, 3, 4]);
    }

    #[test]
    fn an_answer_names_its_search_and_counts() {
        let page = Page {
            indices: vec![0],
            total: 40,
            status: "MORE",
        };
        let v = page.to_json("abc", vec![json!({"serialNo": 1})]);
        assert_eq!(v["AcsEvent"]["searchID"], "abc");
        assert_eq!(v["AcsEvent"]["numOfMatches"], 1);
        assert_eq!(v["AcsEvent"]["totalMatches"], 40);
        assert_eq!(v["AcsEvent"]["InfoList"][0]["serialNo"], 1);
        let empty = Page {
            indices: vec![],
            total: 0,
            status: "NO MATCH",
        };
        assert!(
            empty.to_json("x", vec![])["AcsEvent"]
                .get("InfoList")
                .is_none()
        );
    }

    #[test]
    fn a_record_is_delivered_once_and_resends_go_live() {
        let mut log = log(3);
        assert!(log.mark_delivered(1));
        assert!(!log.mark_delivered(1));
        assert_eq!(log.undelivered().count(), 3);
        assert!(log.resend(1002));
        assert!(!log.resend(7));
        assert_eq!(log.live().last(), Some(&LiveItem::Resend(1)));
    }

    #[test]
    fn conditions_that_are_not_what_the_device_reads_are_refused() {
        for bad in [
            "",
            "{}",
            r#"{"AcsEventCond":{}}"#,
            r#"{"AcsEventCond":{"searchID":"s","maxResults":-1}}"#,
            r#"{"AcsEventCond":{"searchID":"s","startTime":"yesterday"}}"#,
        ] {
            assert!(parse_cond(bad.as_bytes()).is_err(), "{bad}");
        }
        let c = cond(r#"{"AcsEventCond":{"searchID":"s","beginSerialNo":"12"}}"#);
        assert_eq!(
            (c.begin_serial, c.max_results, c.position),
            (Some(12), 30, 0)
        );
    }

    proptest! {
        #[test]
        fn any_body_is_parsed_or_refused_without_panicking(body in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(c) = parse_cond(&body) {
                let _ = log(5).search(&c);
            }
        }
    }
}
