//! The centre's view: an MQTT client (rumqttc) subscribed to everything a hall publishes.
//!
//! A background task keeps the latest `state` and `status` and every `agg/1m` payload by
//! `msg_id`. A re-send of a bin under the same `msg_id` must carry the same content; a re-send
//! that differs is recorded as a conflict for the test to report. The watcher subscribes again
//! after every reconnect (its session is clean, and a restarted broker has forgotten it).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::bail;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;

/// Everything the watcher has seen.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    pub state: Option<Value>,
    pub states_received: usize,
    pub status: Option<Value>,
    /// Every status value in arrival order ("online", "offline").
    pub status_history: Vec<String>,
    /// Distinct minute aggregates by `msg_id`.
    pub aggregates: BTreeMap<String, Value>,
    pub aggregate_messages: usize,
    /// Distinct roll-ups (`agg/15m`, `agg/1h`) by `msg_id`.
    pub rollups: BTreeMap<String, Value>,
    /// Every aggregate message (re-sends included) as it arrived: when, and its `msg_id`.
    pub arrivals: Vec<(Instant, String)>,
    /// Same `msg_id`, different content.
    pub conflicts: Vec<String>,
    /// Every payload received, raw, for tests that search them (privacy).
    pub raw: Vec<(String, Vec<u8>)>,
    /// Payloads that were not what the contract says, and connection trouble.
    pub notes: Vec<String>,
    pub subscribed: bool,
}

pub struct Watcher {
    seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
    pub topic_base: String,
    pub port: u16,
}

impl Watcher {
    /// Connects to the broker on `port` and subscribes to `{topic_base}/#`; returns once the
    /// broker has acknowledged the subscription.
    pub async fn connect(port: u16, topic_base: &str, client_id: &str) -> anyhow::Result<Self> {
        let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(5));
        options.set_clean_session(true);
        options.set_max_packet_size(1 << 20, 1 << 20);
        // The watcher is the centre's side, not the gateway: the rule that only `src/uplink`
        // creates MQTT clients is about the gateway's own code.
        #[allow(clippy::disallowed_methods)]
        let (client, mut eventloop) = AsyncClient::new(options, 16);
        let seen = Arc::new(Mutex::new(Seen::default()));
        let filter = format!("{topic_base}/#");
        let task = {
            let seen = Arc::clone(&seen);
            let topic_base = topic_base.to_string();
            tokio::spawn(async move {
                loop {
                    match eventloop.poll().await {
                        Ok(Event::Incoming(Packet::ConnAck(_))) => {
                            if let Err(error) =
                                client.try_subscribe(filter.clone(), QoS::AtLeastOnce)
                            {
                                lock(&seen).notes.push(format!("cannot subscribe: {error}"));
                            }
                        }
                        Ok(Event::Incoming(Packet::SubAck(_))) => lock(&seen).subscribed = true,
                        Ok(Event::Incoming(Packet::Publish(publish))) => {
                            record(&seen, &topic_base, &publish.topic, &publish.payload);
                        }
                        Ok(_) => {}
                        Err(error) => {
                            {
                                let mut seen = lock(&seen);
                                seen.subscribed = false;
                                if seen.notes.len() < 200 {
                                    seen.notes.push(format!("watcher connection: {error}"));
                                }
                            }
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
            })
        };
        let watcher = Watcher {
            seen,
            task,
            topic_base: topic_base.to_string(),
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !watcher.seen().subscribed {
            if Instant::now() >= deadline {
                bail!(
                    "the watcher could not subscribe to {topic_base}/# on port {port}: {:?}",
                    watcher.seen().notes
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(watcher)
    }

    /// A copy of everything seen so far.
    pub fn seen(&self) -> Seen {
        lock(&self.seen).clone()
    }

    pub fn state(&self) -> Option<Value> {
        lock(&self.seen).state.clone()
    }

    /// The `status` field of the latest status message.
    pub fn status(&self) -> Option<String> {
        lock(&self.seen)
            .status
            .as_ref()
            .and_then(|s| s.get("status"))
            .and_then(Value::as_str)
            .map(str::to_string)
    }

    pub fn aggregates(&self) -> BTreeMap<String, Value> {
        lock(&self.seen).aggregates.clone()
    }

    /// A summary for failure reports: the latest state and status, counts, notes.
    pub fn report(&self) -> String {
        let seen = self.seen();
        let pretty = |v: &Option<Value>| {
            v.as_ref().map_or("(none)".to_string(), |v| {
                serde_json::to_string_pretty(v).unwrap_or_default()
            })
        };
        let notes: Vec<&String> = seen.notes.iter().rev().take(10).collect();
        format!(
            "----- watcher on port {} ({}/#) -----\n\
             states received: {}, agg/1m messages: {} ({} distinct msg_ids), status history: {:?}\n\
             conflicting re-sends: {:?}\n\
             last notes: {:?}\n\
             latest status: {}\n\
             latest state: {}\n",
            self.port,
            self.topic_base,
            seen.states_received,
            seen.aggregate_messages,
            seen.aggregates.len(),
            seen.status_history,
            seen.conflicts,
            notes,
            pretty(&seen.status),
            pretty(&seen.state),
        )
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(seen: &Mutex<Seen>) -> MutexGuard<'_, Seen> {
    seen.lock()
        .expect("the watcher's state is never poisoned: nothing panics while holding it")
}

fn record(seen: &Mutex<Seen>, topic_base: &str, topic: &str, payload: &[u8]) {
    let mut seen = lock(seen);
    seen.raw.push((topic.to_string(), payload.to_vec()));
    let Some(kind) = topic
        .strip_prefix(topic_base)
        .and_then(|rest| rest.strip_prefix('/'))
    else {
        seen.notes
            .push(format!("message on unexpected topic {topic}"));
        return;
    };
    let value: Value = match serde_json::from_slice(payload) {
        Ok(value) => value,
        Err(error) => {
            let text = String::from_utf8_lossy(payload);
            seen.notes
                .push(format!("{topic}: payload is not JSON ({error}): {text}"));
            return;
        }
    };
    match kind {
        "state" => {
            seen.state = Some(value);
            seen.states_received += 1;
        }
        "status" => {
            let status = value
                .get("status")
                .and_then(Value::as_str)
                .unwrap_or("(no status field)")
                .to_string();
            seen.status_history.push(status);
            seen.status = Some(value);
        }
        "agg/1m" | "agg/15m" | "agg/1h" => {
            let Some(msg_id) = value.get("msg_id").and_then(Value::as_str) else {
                seen.notes.push(format!("{topic}: no msg_id in {value}"));
                return;
            };
            let msg_id = msg_id.to_string();
            seen.arrivals.push((Instant::now(), msg_id.clone()));
            let map = if kind == "agg/1m" {
                seen.aggregate_messages += 1;
                &mut seen.aggregates
            } else {
                &mut seen.rollups
            };
            match map.get(&msg_id) {
                Some(first) if *first != value => {
                    let conflict =
                        format!("msg_id {msg_id} was sent as {first} and again as {value}");
                    seen.conflicts.push(conflict);
                }
                Some(_) => {}
                None => {
                    map.insert(msg_id, value);
                }
            }
        }
        _ => {}
    }
}
