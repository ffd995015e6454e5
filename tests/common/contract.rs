//! The uplink contract v1, checked from the outside: a [`Recorder`] subscribed to `#` on a
//! broker keeps every message it carries, [`Recorder::write_lines`] writes them as JSON lines
//! (`{"topic", "retain", "payload"}`, the payload parsed when it is JSON, else its text), and
//! [`validate`] runs `tests/peers/validate_payloads.py` on such a file: every payload against
//! `docs/schema/{kind}.schema.json`. Any black-box test can record its central broker and
//! validate what the gateway published (`tests/contract.rs` does it for every kind).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{Value, json};

use super::run_to_completion;

/// The validator, beside the other test peers.
pub const VALIDATOR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/peers/validate_payloads.py"
);

/// How long the validator may take (it reads a few thousand lines at most).
const VALIDATOR_LIMIT: Duration = Duration::from_secs(60);

/// One message as the broker delivered it.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub topic: String,
    pub retain: bool,
    /// The parsed payload, or its text (lossy UTF-8) when it is not JSON.
    pub payload: Value,
}

impl Record {
    /// A message as it came off the wire: the payload parsed when it is JSON.
    pub fn from_wire(topic: &str, retain: bool, payload: &[u8]) -> Self {
        let payload = serde_json::from_slice(payload)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(payload).into()));
        Record {
            topic: topic.to_string(),
            retain,
            payload,
        }
    }

    pub fn kind(&self) -> Option<&str> {
        self.payload.get("kind").and_then(Value::as_str)
    }

    /// A string field of the payload.
    pub fn field(&self, key: &str) -> Option<&str> {
        self.payload.get(key).and_then(Value::as_str)
    }

    pub fn line(&self) -> String {
        json!({"topic": self.topic, "retain": self.retain, "payload": self.payload}).to_string()
    }
}

#[derive(Debug, Default)]
struct Recorded {
    records: Vec<Record>,
    subscribed: bool,
    notes: Vec<String>,
}

/// An MQTT client (the centre's side) subscribed to `#`, keeping every message.
pub struct Recorder {
    recorded: Arc<Mutex<Recorded>>,
    task: tokio::task::JoinHandle<()>,
    pub port: u16,
}

impl Recorder {
    /// Connects to the broker on `port` and subscribes to `#`; returns once the broker has
    /// acknowledged the subscription, so nothing published after this is missed.
    pub async fn start(port: u16, client_id: &str) -> anyhow::Result<Self> {
        let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(5));
        options.set_clean_session(true);
        options.set_max_packet_size(1 << 20, 1 << 20);
        // The centre's side, not the gateway: only `src/uplink` may create the gateway's
        // MQTT clients.
        #[allow(clippy::disallowed_methods)]
        let (client, mut eventloop) = AsyncClient::new(options, 16);
        let recorded = Arc::new(Mutex::new(Recorded::default()));
        let task = {
            let recorded = Arc::clone(&recorded);
            tokio::spawn(async move {
                loop {
                    match eventloop.poll().await {
                        Ok(Event::Incoming(Packet::ConnAck(_))) => {
                            if let Err(error) = client.try_subscribe("#", QoS::AtLeastOnce) {
                                lock(&recorded)
                                    .notes
                                    .push(format!("cannot subscribe: {error}"));
                            }
                        }
                        Ok(Event::Incoming(Packet::SubAck(_))) => lock(&recorded).subscribed = true,
                        Ok(Event::Incoming(Packet::Publish(publish))) => {
                            let record =
                                Record::from_wire(&publish.topic, publish.retain, &publish.payload);
                            lock(&recorded).records.push(record);
                        }
                        Ok(_) => {}
                        Err(error) => {
                            {
                                let mut recorded = lock(&recorded);
                                recorded.subscribed = false;
                                if recorded.notes.len() < 100 {
                                    recorded.notes.push(format!("recorder connection: {error}"));
                                }
                            }
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
            })
        };
        let recorder = Recorder {
            recorded,
            task,
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !lock(&recorder.recorded).subscribed {
            if Instant::now() >= deadline {
                bail!(
                    "the recorder could not subscribe to # on port {port}: {:?}",
                    lock(&recorder.recorded).notes
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(recorder)
    }

    /// Every message so far, in arrival order.
    pub fn records(&self) -> Vec<Record> {
        lock(&self.recorded).records.clone()
    }

    /// Waits until `done` holds for the messages so far; fails after `limit`, naming `what`.
    pub async fn wait_for(
        &self,
        what: &str,
        limit: Duration,
        done: impl Fn(&[Record]) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            if done(&lock(&self.recorded).records) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("{what}: not seen within {limit:?}\n{}", self.report());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Writes every message so far to `path`, one JSON line each.
    pub fn write_lines(&self, path: &Path) -> anyhow::Result<()> {
        write_lines(path, &self.records())
    }

    /// Messages per topic, and the connection notes, for failure reports.
    pub fn report(&self) -> String {
        let recorded = lock(&self.recorded);
        let mut per_topic: BTreeMap<&str, usize> = BTreeMap::new();
        for r in &recorded.records {
            *per_topic.entry(&r.topic).or_default() += 1;
        }
        format!(
            "----- recorder on port {} (#) -----\nmessages per topic: {per_topic:?}\nnotes: {:?}\n",
            self.port, recorded.notes
        )
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(recorded: &Mutex<Recorded>) -> MutexGuard<'_, Recorded> {
    recorded
        .lock()
        .expect("the recorder's state is never poisoned: nothing panics while holding it")
}

/// Writes `records` to `path`, one JSON line each, as the validator reads them.
pub fn write_lines(path: &Path, records: &[Record]) -> anyhow::Result<()> {
    let mut text = String::new();
    for r in records {
        text.push_str(&r.line());
        text.push('\n');
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// What the validator said about a file of recorded messages.
#[derive(Debug, Clone)]
pub struct Validation {
    /// Exit status 0: every payload valid, every kind with a schema.
    pub passed: bool,
    pub code: Option<i32>,
    /// Its whole output: a line per failure, then the counts.
    pub output: String,
    /// Valid and invalid payloads per kind, from its summary lines.
    pub valid: BTreeMap<String, u64>,
    pub invalid: BTreeMap<String, u64>,
}

impl Validation {
    /// Fails with the validator's output unless it passed; `what` names the payloads.
    pub fn ensure_passed(&self, what: &str) -> anyhow::Result<()> {
        if !self.passed {
            bail!(
                "{what}: not every payload validates against docs/schema/ (exit {:?}):\n{}",
                self.code,
                self.output
            );
        }
        Ok(())
    }
}

/// Runs the validator on a JSON-lines file; `dir` takes its output files.
pub fn validate(lines: &Path, dir: &Path) -> anyhow::Result<Validation> {
    let mut command = Command::new("python3");
    command.arg(VALIDATOR).arg(lines);
    let name = format!(
        "validate-{}",
        lines
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("payloads")
    );
    let finished = run_to_completion(command, dir, &name, VALIDATOR_LIMIT)?;
    if finished.stderr.contains("No module named 'jsonschema'") {
        bail!(
            "python3-jsonschema is not installed: run `bash scripts/test.sh`, which installs it \
             (apt-get install python3-jsonschema)"
        );
    }
    let mut valid = BTreeMap::new();
    let mut invalid = BTreeMap::new();
    for line in finished.stdout.lines() {
        let Some(rest) = line.strip_prefix("kind=") else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let kind = words.next().unwrap_or_default().to_string();
        for word in words {
            if let Some(n) = word.strip_prefix("valid=") {
                valid.insert(kind.clone(), n.parse().unwrap_or(0));
            } else if let Some(n) = word.strip_prefix("invalid=") {
                invalid.insert(kind.clone(), n.parse().unwrap_or(0));
            }
        }
    }
    Ok(Validation {
        passed: finished.status.success(),
        code: finished.status.code(),
        output: format!("{}{}", finished.stdout, finished.stderr),
        valid,
        invalid,
    })
}

/// Writes `records` to `{dir}/{name}.jsonl` and validates them.
pub fn validate_records(dir: &Path, name: &str, records: &[Record]) -> anyhow::Result<Validation> {
    let path: PathBuf = dir.join(format!("{name}.jsonl"));
    write_lines(&path, records)?;
    validate(&path, dir)
}

/// Everything `watcher` has received (the centre's view of a test), written to
/// `{dir}/{name}.jsonl` and validated against the schemas.
pub fn validate_received(
    dir: &Path,
    name: &str,
    watcher: &super::watcher::Watcher,
) -> anyhow::Result<Validation> {
    let records: Vec<Record> = watcher
        .seen()
        .raw
        .iter()
        .map(|(topic, payload)| Record::from_wire(topic, false, payload))
        .collect();
    validate_records(dir, name, &records)
}
