//! Minute bins as the centre receives them: sums against the ground truth, contiguity, and a
//! readable listing for failure reports.

use std::collections::BTreeMap;

use anyhow::{Context, bail, ensure};
use serde_json::Value;

use super::truth::Truth;

/// Per-room entries and exits summed over distinct bins against the truth: `Ok(Ok(()))` when
/// exact, `Ok(Err(table))` when not (yet), `Err` when a bin is malformed.
pub fn compare_bin_sums(
    bins: &BTreeMap<String, Value>,
    truth: &Truth,
    rooms: &[String],
) -> anyhow::Result<Result<(), String>> {
    let mut got: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    for (msg_id, bin) in bins {
        let bin_rooms = bin
            .get("rooms")
            .and_then(Value::as_array)
            .with_context(|| format!("agg/1m {msg_id} has no rooms array: {bin}"))?;
        for room in bin_rooms {
            let id = room
                .get("id")
                .and_then(Value::as_str)
                .with_context(|| format!("a room in agg/1m {msg_id} has no id: {room}"))?;
            let count = |key: &str| {
                room.get(key).and_then(Value::as_i64).with_context(|| {
                    format!("room {id} in agg/1m {msg_id} has no integer `{key}`: {room}")
                })
            };
            let (entries, exits) = (count("entries")?, count("exits")?);
            let Some(name) = rooms.iter().find(|r| *r == id) else {
                bail!("agg/1m {msg_id} names unknown room {id:?}");
            };
            let sum = got.entry(name.as_str()).or_default();
            sum.0 += entries;
            sum.1 += exits;
        }
    }
    let mut exact = true;
    let mut table = format!(
        "{:<12} {:>20} {:>20}\n",
        "room", "entries want/got", "exits want/got"
    );
    for room in rooms {
        let want = (truth.entries(room), truth.exits(room));
        let have = got.get(room.as_str()).copied().unwrap_or_default();
        exact &= want == have;
        table.push_str(&format!(
            "{:<12} {:>20} {:>20}{}\n",
            room,
            format!("{} / {}", want.0, have.0),
            format!("{} / {}", want.1, have.1),
            if want == have { "" } else { "   <-- differs" }
        ));
    }
    Ok(if exact { Ok(()) } else { Err(table) })
}

/// `bin_start` and `bin_end` of a bin.
pub fn bin_times(bin: &Value) -> anyhow::Result<(jiff::Timestamp, jiff::Timestamp)> {
    let time = |key: &str| -> anyhow::Result<jiff::Timestamp> {
        let text = bin
            .get(key)
            .and_then(Value::as_str)
            .with_context(|| format!("agg/1m has no `{key}`: {bin}"))?;
        text.parse::<jiff::Timestamp>()
            .or_else(|_| text.parse::<jiff::Zoned>().map(|z| z.timestamp()))
            .with_context(|| format!("`{key}` of agg/1m is not a timestamp: {text:?}"))
    };
    Ok((time("bin_start")?, time("bin_end")?))
}

/// Each bin one minute long, each starting where the previous one ended, none twice.
pub fn check_bins_are_contiguous(bins: &BTreeMap<String, Value>) -> anyhow::Result<()> {
    let mut spans = Vec::new();
    for (msg_id, bin) in bins {
        let (start, end) = bin_times(bin)?;
        ensure!(
            end.duration_since(start) == jiff::SignedDuration::from_secs(60),
            "agg/1m {msg_id} is not one minute long: {start} to {end}"
        );
        spans.push((start, end, msg_id));
    }
    spans.sort();
    for pair in spans.windows(2) {
        let ((_, end, id_a), (start, _, id_b)) = (&pair[0], &pair[1]);
        ensure!(
            end == start,
            "minute bins are not contiguous: {id_a} ends at {end}, the next one ({id_b}) starts \
             at {start}\nbins received:\n{}",
            describe_bins(bins)
        );
    }
    Ok(())
}

pub fn describe_bins(bins: &BTreeMap<String, Value>) -> String {
    let mut lines: Vec<String> = bins
        .iter()
        .map(|(msg_id, bin)| {
            let rooms: Vec<String> = bin
                .get("rooms")
                .and_then(Value::as_array)
                .map(|rooms| {
                    rooms
                        .iter()
                        .map(|r| {
                            format!(
                                "{}:+{}/-{}",
                                r.get("id").and_then(Value::as_str).unwrap_or("?"),
                                r.get("entries").unwrap_or(&Value::Null),
                                r.get("exits").unwrap_or(&Value::Null)
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            format!(
                "  {} .. {}  {msg_id}  {}",
                bin.get("bin_start").and_then(Value::as_str).unwrap_or("?"),
                bin.get("bin_end").and_then(Value::as_str).unwrap_or("?"),
                rooms.join(" ")
            )
        })
        .collect();
    lines.sort();
    if lines.is_empty() {
        "  (none)".to_string()
    } else {
        lines.join("\n")
    }
}
