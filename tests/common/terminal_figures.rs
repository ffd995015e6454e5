//! Face-recognition terminals' figures: `hallgate simulate-terminals`' truth file (JSON lines,
//! then a final line with `totals`) against the retained `state`'s `passages_today`, and the
//! needles a privacy scan looks for. Shared by the MQTT terminals' tests (`terminals.rs`) and
//! the HTTP ones (`terminals_http.rs`, `terminals_pull.rs`).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use base64::Engine as _;
use serde_json::Value;

use super::HALLGATE;
use super::rig::Rig;

/// The figures the simulator's truth and the state both give per room.
pub const FIGURES: [&str; 6] = [
    "passages",
    "members",
    "strangers",
    "fevers",
    "mask_off",
    "sensor_errors",
];

/// Runs the terminal simulator to completion (within `limit`); returns its truth lines.
pub fn simulate_terminals(
    config: &Path,
    truth: &Path,
    args: &[&str],
    limit: Duration,
) -> anyhow::Result<Vec<Value>> {
    let mut command = Command::new(HALLGATE);
    command
        .args(["simulate-terminals", "--config"])
        .arg(config)
        .arg("--truth")
        .arg(truth)
        .args(args);
    let dir = truth.parent().context("the truth file has a directory")?;
    let name = truth
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("simulate-terminals");
    let out = super::run_to_completion(command, dir, name, limit)?;
    ensure!(
        out.status.success(),
        "simulate-terminals failed: {}\n{}",
        out.status,
        super::tail(&out.stderr, 40)
    );
    read_truth(truth)
}

/// Every line of a truth file.
pub fn read_truth(truth: &Path) -> anyhow::Result<Vec<Value>> {
    let text = std::fs::read_to_string(truth)
        .with_context(|| format!("cannot read {}", truth.display()))?;
    text.lines()
        .map(|l| serde_json::from_str(l).with_context(|| format!("bad truth line {l}")))
        .collect()
}

/// The final line.
pub fn final_line(lines: &[Value]) -> anyhow::Result<&Value> {
    lines
        .iter()
        .rev()
        .find(|l| l.get("final") == Some(&Value::Bool(true)))
        .context("the simulator wrote no final line")
}

pub fn final_totals(lines: &[Value]) -> anyhow::Result<&Value> {
    final_line(lines)?
        .get("totals")
        .context("the final line has no totals")
}

pub fn num(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// Expected against got, per room and for the hall; `Ok` when all equal.
pub fn compare(state: &Value, totals: &Value) -> Result<(), String> {
    let mut table = String::new();
    let mut exact = true;
    let rooms = state
        .get("rooms")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for room in &rooms {
        let id = room.get("id").and_then(Value::as_str).unwrap_or("?");
        let want = &totals["rooms"][id];
        let got = room.get("passages_today").cloned().unwrap_or(Value::Null);
        for f in FIGURES {
            let (w, g) = (num(want, f), num(&got, f));
            if w != g {
                exact = false;
                table.push_str(&format!("{id:<8} {f:<14} want {w:>4} got {g:>4}\n"));
            }
        }
    }
    let hall = &state["hall"];
    let (w, g) = (
        num(&totals["hall"], "unique_members"),
        num(hall, "unique_members_today"),
    );
    if w != g {
        exact = false;
        table.push_str(&format!("hall unique_members want {w} got {g}\n"));
    }
    let (w, g) = (
        num(&totals["hall"], "passages"),
        num(&hall["passages_today"], "passages"),
    );
    if w != g {
        exact = false;
        table.push_str(&format!("hall passages want {w} got {g}\n"));
    }
    if exact { Ok(()) } else { Err(table) }
}

/// Sum of one stats field over the state's terminals.
pub fn terminal_stat(state: &Value, key: &str) -> u64 {
    state
        .get("terminals")
        .and_then(Value::as_array)
        .map(|ts| ts.iter().map(|t| num(&t["stats"], key)).sum())
        .unwrap_or(0)
}

/// The state's entry for terminal `id`.
pub fn terminal<'a>(state: &'a Value, id: &str) -> Option<&'a Value> {
    state
        .get("terminals")
        .and_then(Value::as_array)?
        .iter()
        .find(|t| t.get("id").and_then(Value::as_str) == Some(id))
}

/// Refusals in one `stats` object, all reasons.
pub fn rejected_in(stats: &Value) -> u64 {
    stats
        .get("rejected")
        .and_then(Value::as_object)
        .map(|m| m.values().filter_map(Value::as_u64).sum())
        .unwrap_or(0)
}

/// Refusals for one reason in one `stats` object.
pub fn rejected_for(stats: &Value, reason: &str) -> u64 {
    num(&stats["rejected"], reason)
}

/// Every refusal in the state: the terminals' and the unattributed ones.
pub fn rejected(state: &Value) -> u64 {
    let terminals: u64 = state
        .get("terminals")
        .and_then(Value::as_array)
        .map(|ts| ts.iter().map(|t| rejected_in(&t["stats"])).sum())
        .unwrap_or(0);
    terminals + rejected_in(&state["terminals_unattributed"])
}

/// Waits until the retained state's terminal figures equal `totals`; returns that state.
pub async fn wait_for_figures(
    rig: &mut Rig,
    totals: &Value,
    limit: Duration,
) -> anyhow::Result<Value> {
    let deadline = Instant::now() + limit;
    loop {
        rig.ensure_alive()?;
        let state = rig.watcher()?.state();
        let verdict = match &state {
            Some(s) => compare(s, totals),
            None => Err("no state yet".into()),
        };
        match (verdict, state) {
            (Ok(()), Some(state)) => return Ok(state),
            (Err(table), _) if Instant::now() >= deadline => {
                bail!("the terminal figures in the state do not match the ground truth:\n{table}")
            }
            _ => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    }
}

/// Needles that must appear nowhere: every member id the simulator used (from its truth) and
/// every name its terminals put in their payloads.
pub fn secrets(lines: &[Value]) -> Vec<String> {
    let mut out: Vec<String> = hallgate::simulate::terminals::FAKE_NAMES
        .iter()
        .map(|n| n.to_string())
        .collect();
    for l in lines {
        if let Some(id) = l.get("member").and_then(Value::as_str)
            && !out.iter().any(|o| o == id)
        {
            out.push(id.to_string());
        }
    }
    out
}

/// Runs of a JPEG as they would travel: 64 raw bytes from its middle, and the base64 text of
/// 48 bytes (aligned, so it is a substring of the whole file's base64, as a Uniubi `base64`
/// field or an MQTT snapshot field carries it).
pub fn jpeg_needles(jpeg: &[u8]) -> Vec<Vec<u8>> {
    let middle = jpeg.len() / 2;
    let raw = jpeg[middle..middle + 64].to_vec();
    let aligned = middle / 3 * 3;
    let b64 = base64::engine::general_purpose::STANDARD
        .encode(&jpeg[aligned..aligned + 48])
        .into_bytes();
    vec![raw, b64]
}

/// Which of `needles` occur in `haystack`.
pub fn find_all(haystack: &[u8], needles: &[Vec<u8>]) -> Vec<String> {
    needles
        .iter()
        .filter(|n| !n.is_empty() && haystack.windows(n.len()).any(|w| w == n.as_slice()))
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect()
}

/// Every byte of the SQLite files (database, WAL, journal) in `data_dir`.
pub fn database_bytes(data_dir: &Path) -> anyhow::Result<Vec<u8>> {
    let mut db = Vec::new();
    for entry in std::fs::read_dir(data_dir)? {
        let path = entry?.path();
        if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("hallgate.db"))
        {
            db.extend(std::fs::read(&path)?);
        }
    }
    Ok(db)
}
