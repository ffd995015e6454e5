//! ZKTeco terminals over ADMS ("PUSH" protocol, `/iclock/…`): attendance records in, the
//! answers the device waits for out.
//!
//! The device posts `POST /iclock/cdata?SN=<serial>&table=ATTLOG` with one record per line,
//! tab-separated:
//!
//! ```text
//! PIN \t YYYY-MM-DD HH:MM:SS \t status \t verify \t workcode \t reserved \t reserved [\t mask \t temperature]
//! ```
//!
//! `status` is the attendance state key pressed (0 check-in, 1 check-out, …), `verify` how
//! the person was verified (1 fingerprint, 15 face, …), the time naive device-local (the
//! profile reads it with `format = "local"` in the hall's zone). Thermal models (SpeedFace /
//! ProFace "TD" firmware) append a mask flag (1 worn, 0 not) and the temperature in °C; the
//! column order is the one given in hallgate issue 15 and in ZKTeco's "PUSH SDK" attendance
//! protocol descriptions (the thermal columns are not verified against a device capture:
//! check one before trusting the mask). Other tables (`OPERLOG` operator and user
//! changes, `ATTPHOTO`, `BIODATA`, `options`…) carry no passages: the caller answers them
//! `OK` and keeps nothing.
//!
//! The device deletes what it has sent only on a 200: anything else, and it sends again.

use serde_json::{Map, Value};

/// What `GET /iclock/getrequest?SN=…` (the device asking for commands) gets: none.
pub const GETREQUEST_ANSWER: &str = "OK";

/// Longest line read; a record is under 100 bytes.
const MAX_LINE_BYTES: usize = 1024;
/// Longest PIN accepted.
const MAX_PIN_BYTES: usize = 64;
/// Names of the columns, in order; columns past these are ignored.
const COLUMNS: &[&str] = &[
    "PIN",
    "time",
    "status",
    "verify",
    "workcode",
    "reserved1",
    "reserved2",
    "mask",
    "temperature",
];

/// What a `cdata` table carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// `ATTLOG`: attendance records, i.e. passages.
    AttLog,
    /// Anything else (`OPERLOG`, `ATTPHOTO`, `BIODATA`, `options`…): answer `OK`, keep nothing.
    NotPassages,
}

/// Which kind of table `name` (the `table` query parameter) is.
pub fn table(name: &str) -> Table {
    if name.trim().eq_ignore_ascii_case("ATTLOG") {
        Table::AttLog
    } else {
        Table::NotPassages
    }
}

/// A line that is not a record, by its 1-based number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    pub line: usize,
    /// A fixed reason (a metric label): `too_long`, `too_few_columns`, `bad_pin`,
    /// `bad_time`, `not_utf8`.
    pub why: &'static str,
}

/// The records of one `ATTLOG` post.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct AttLog {
    /// One JSON object per record: the named columns as strings, plus `SN`.
    pub records: Vec<Vec<u8>>,
    /// Lines that are not records (the caller counts them); blank lines are neither.
    pub bad_lines: Vec<BadLine>,
}

impl std::fmt::Debug for AttLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttLog")
            .field("records", &self.records.len())
            .field("bad_lines", &self.bad_lines)
            .finish()
    }
}

/// Reads an `ATTLOG` body posted by the device with serial `sn`.
pub fn attlog(sn: &str, body: &[u8]) -> AttLog {
    let mut out = AttLog::default();
    for (i, raw) in body.split(|&b| b == b'\n').enumerate() {
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        if line.trim_ascii().is_empty() {
            continue;
        }
        match record(sn, line) {
            Ok(doc) => out.records.push(doc),
            Err(why) => out.bad_lines.push(BadLine { line: i + 1, why }),
        }
    }
    out
}

fn record(sn: &str, line: &[u8]) -> Result<Vec<u8>, &'static str> {
    if line.len() > MAX_LINE_BYTES {
        return Err("too_long");
    }
    let text = std::str::from_utf8(line).map_err(|_| "not_utf8")?;
    let columns: Vec<&str> = text.split('\t').map(str::trim).collect();
    // PIN, time and status at least: every firmware writes the status column.
    if columns.len() < 3 {
        return Err("too_few_columns");
    }
    let pin = columns[0];
    if pin.is_empty() || pin.len() > MAX_PIN_BYTES || !pin.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("bad_pin");
    }
    if !is_device_time(columns[1]) {
        return Err("bad_time");
    }
    let mut doc = Map::new();
    doc.insert("SN".into(), Value::String(sn.to_string()));
    // ATTLOG has no record number. One person passes one terminal at most once a second, so
    // the person and the second name a record: a re-sent line has the same key, two people
    // in the same second do not (the time alone would drop the second one as a re-send).
    doc.insert(
        "record_key".into(),
        Value::String(format!("{pin}@{}", columns[1].replace(' ', "T"))),
    );
    for (name, value) in COLUMNS.iter().zip(&columns) {
        if !value.is_empty() {
            doc.insert((*name).into(), Value::String((*value).to_string()));
        }
    }
    Ok(Value::Object(doc).to_string().into_bytes())
}

/// `YYYY-MM-DD HH:MM:SS`, a valid civil time.
fn is_device_time(text: &str) -> bool {
    text.len() == 19 && text.as_bytes()[10] == b' ' && text.parse::<jiff::civil::DateTime>().is_ok()
}

/// The answer to an `ATTLOG` post: `OK: N`, `N` the records taken.
pub fn records_taken_answer(n: usize) -> String {
    format!("OK: {n}")
}

/// The answer to the handshake `GET /iclock/cdata?SN=…&options=all`: send everything not yet
/// sent (`ATTLOGStamp=None`), attendance only (`TransFlag`; operator-log history is marked
/// as had, `OPERLOGStamp=9999`), each record as it happens (`Realtime=1`), retry after 30 s
/// on errors, ask for commands every 10 s. No `TimeZone`: the device keeps the zone its
/// installer set, which is the hall's.
pub fn options_answer(sn: &str) -> String {
    // The serial is echoed into a line-based answer: nothing but printable ASCII.
    let sn: String = sn.chars().filter(|c| c.is_ascii_graphic()).collect();
    format!(
        "GET OPTION FROM: {sn}\n\
         ATTLOGStamp=None\n\
         OPERLOGStamp=9999\n\
         ErrorDelay=30\n\
         Delay=10\n\
         TransTimes=00:00;14:05\n\
         TransInterval=1\n\
         TransFlag=TransData AttLog\n\
         Realtime=1\n\
         Encrypt=None\n"
    )
}
