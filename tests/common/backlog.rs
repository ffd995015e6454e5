//! `hallgate seed-backlog`: fills a stopped gateway's outbox with a long outage's minute bins,
//! for the tests that need a backlog to replay (store and forward, TLS).

use std::path::Path;
use std::process::Command;

use anyhow::{Context, ensure};

use super::HALLGATE;

/// What `hallgate seed-backlog` reported on its `key=value` line.
#[derive(Debug, Clone)]
pub struct Seeded {
    pub messages: u64,
    /// Start of the first and of the last seeded bin, Unix seconds.
    pub first_bin: i64,
    pub last_bin: i64,
    /// Entries in all the seeded bins.
    pub entries: u64,
}

/// Seeds `minutes` minute bins, the last one ending before `end_unix`, into the data dir of
/// `config` (the gateway must not be running: the outbox is its alone).
pub fn seed_backlog(
    config: &Path,
    minutes: u32,
    end_unix: i64,
    seed: u64,
) -> anyhow::Result<Seeded> {
    let out = Command::new(HALLGATE)
        .args(["seed-backlog", "--config"])
        .arg(config)
        .args(["--minutes", &minutes.to_string()])
        .args([
            "--end",
            &jiff::Timestamp::from_second(end_unix)?.to_string(),
        ])
        .args(["--seed", &seed.to_string()])
        .output()
        .context("cannot run hallgate seed-backlog")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "seed-backlog failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |key: &str| -> anyhow::Result<&str> {
        stdout
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
            .with_context(|| format!("no {key}= in seed-backlog's output: {stdout}"))
    };
    let time = |key: &str| -> anyhow::Result<i64> {
        Ok(field(key)?.parse::<jiff::Timestamp>()?.as_second())
    };
    Ok(Seeded {
        messages: field("messages")?.parse()?,
        first_bin: time("first_bin")?,
        last_bin: time("last_bin")?,
        entries: field("entries")?.parse()?,
    })
}
