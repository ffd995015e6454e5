//! The simulator's ground truth, and the comparison of the gateway's `state` against it.
//!
//! The truth file is JSON lines: one per crossing, then a final line with the totals, written
//! as soon as the traffic stops. The comparison is exact: a gateway that is off by one person
//! in one room fails, and the failure shows a table of expected against got for every room.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::Value;

use super::process::Simulator;

/// The final line of the truth file.
#[derive(Debug, Clone, Deserialize)]
pub struct TruthTotals {
    pub final_occupancy: BTreeMap<String, i64>,
    pub entries: BTreeMap<String, i64>,
    pub exits: BTreeMap<String, i64>,
    pub crossings: u64,
}

#[derive(Debug, Clone)]
pub struct Truth {
    pub totals: TruthTotals,
    /// The crossing lines before the totals.
    pub crossing_lines: Vec<Value>,
}

impl Truth {
    pub fn occupancy(&self, room: &str) -> i64 {
        self.totals.final_occupancy.get(room).copied().unwrap_or(0)
    }
    pub fn entries(&self, room: &str) -> i64 {
        self.totals.entries.get(room).copied().unwrap_or(0)
    }
    pub fn exits(&self, room: &str) -> i64 {
        self.totals.exits.get(room).copied().unwrap_or(0)
    }
}

/// Waits until the truth file has its final line; fails if the simulator exits first or the
/// deadline passes.
pub async fn wait_for_truth(sim: &mut Simulator, deadline: Instant) -> anyhow::Result<Truth> {
    let path = sim.truth.clone();
    loop {
        if let Some(truth) = read_truth(&path)? {
            return Ok(truth);
        }
        sim.process
            .ensure_running()
            .context("the simulator stopped before writing the final truth line")?;
        if Instant::now() >= deadline {
            bail!(
                "the simulator wrote no final line to {} by the time its traffic should have \
                 ended (plus a margin)",
                path.display()
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// The truth, if the file is complete.
pub fn read_truth(path: &Path) -> anyhow::Result<Option<Truth>> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(None);
    };
    let mut crossing_lines = Vec::new();
    // Only whole lines count: the file may be caught half-written.
    let complete = match text.rfind('\n') {
        Some(end) => &text[..end],
        None => return Ok(None),
    };
    for (n, line) in complete.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(line)
            .with_context(|| format!("truth line {} is not JSON: {line}", n + 1))?;
        if value.get("final_occupancy").is_some() {
            let totals: TruthTotals = serde_json::from_value(value)
                .with_context(|| format!("truth line {} has malformed totals: {line}", n + 1))?;
            if totals.crossings != crossing_lines.len() as u64 {
                bail!(
                    "the truth file is inconsistent: its totals say {} crossings but it lists {}",
                    totals.crossings,
                    crossing_lines.len()
                );
            }
            return Ok(Some(Truth {
                totals,
                crossing_lines,
            }));
        }
        crossing_lines.push(value);
    }
    Ok(None)
}

/// One room's figures as the gateway's `state` gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomFigures {
    pub occupancy: i64,
    pub entries_today: i64,
    pub exits_today: i64,
}

/// The rooms of a `state` payload, by id.
pub fn state_rooms(state: &Value) -> anyhow::Result<BTreeMap<String, RoomFigures>> {
    let rooms = state
        .get("rooms")
        .and_then(Value::as_array)
        .context("state has no `rooms` array")?;
    let mut out = BTreeMap::new();
    for room in rooms {
        let id = room
            .get("id")
            .and_then(Value::as_str)
            .with_context(|| format!("a room in the state has no id: {room}"))?;
        let int = |key: &str| {
            room.get(key)
                .and_then(Value::as_i64)
                .with_context(|| format!("room {id} in the state has no integer `{key}`: {room}"))
        };
        out.insert(
            id.to_string(),
            RoomFigures {
                occupancy: int("occupancy")?,
                entries_today: int("entries_today")?,
                exits_today: int("exits_today")?,
            },
        );
    }
    Ok(out)
}

/// Compares a `state` payload with the truth for `rooms`: `Ok(())` when every figure is exact,
/// otherwise a table of expected against got.
pub fn compare_state(state: &Value, truth: &Truth, rooms: &[String]) -> Result<(), String> {
    let got = match state_rooms(state) {
        Ok(got) => got,
        Err(error) => return Err(format!("{error:#}")),
    };
    let mut exact = true;
    let mut table = format!(
        "{:<12} {:>22} {:>22} {:>22}\n",
        "room", "occupancy want/got", "entries_today want/got", "exits_today want/got"
    );
    for room in rooms {
        let want = RoomFigures {
            occupancy: truth.occupancy(room),
            entries_today: truth.entries(room),
            exits_today: truth.exits(room),
        };
        let cell = |w: i64, g: Option<i64>| {
            let g = g.map_or("missing".to_string(), |g| g.to_string());
            format!("{w} / {g}")
        };
        let g = got.get(room);
        let row_exact = g == Some(&want);
        exact &= row_exact;
        table.push_str(&format!(
            "{:<12} {:>22} {:>22} {:>22}{}\n",
            room,
            cell(want.occupancy, g.map(|g| g.occupancy)),
            cell(want.entries_today, g.map(|g| g.entries_today)),
            cell(want.exits_today, g.map(|g| g.exits_today)),
            if row_exact { "" } else { "   <-- differs" }
        ));
    }
    let want_hall: i64 = rooms.iter().map(|r| truth.occupancy(r)).sum();
    let got_hall = state
        .get("hall")
        .and_then(|h| h.get("occupancy"))
        .and_then(Value::as_i64);
    let hall_exact = got_hall == Some(want_hall);
    exact &= hall_exact;
    table.push_str(&format!(
        "{:<12} {:>22}{}\n",
        "(hall)",
        format!(
            "{want_hall} / {}",
            got_hall.map_or("missing".to_string(), |g| g.to_string())
        ),
        if hall_exact { "" } else { "   <-- differs" }
    ));
    if exact { Ok(()) } else { Err(table) }
}

/// Whether each device in a `state` payload is online, by id.
pub fn state_devices_online(state: &Value) -> BTreeMap<String, Option<bool>> {
    state
        .get("devices")
        .and_then(Value::as_array)
        .map(|devices| {
            devices
                .iter()
                .filter_map(|d| {
                    let id = d.get("id")?.as_str()?.to_string();
                    Some((id, d.get("online").and_then(Value::as_bool)))
                })
                .collect()
        })
        .unwrap_or_default()
}
