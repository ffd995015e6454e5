//! Device drivers: one async task per device or bus, each over a pure decoder.
//!
//! Drivers own their sockets, timeouts, retries and reconnects, stamp what they observe with the
//! wall clock, and hand [`DeviceEvent`]s to the supervisor's core loop over one bounded channel.
//! When that channel is full a driver waits (back-pressure): counters keep cumulative totals,
//! so a late read loses nothing. The kinds of device are a closed list: a new kind is a new
//! module and a `match` arm in [`spawn_all`].

pub mod backoff;
pub mod counter;
pub mod modbus_rtu;
pub mod modbus_tcp;
pub mod reporter;
pub mod serial_stream;
pub mod stream;
pub mod terminals;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use jiff::Timestamp;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, CounterTransport};
use counter::{Baseline, Counted, Totals};

/// What a driver observed, as a past-tense fact.
#[derive(Debug, Clone, PartialEq)]
pub enum DeviceEvent {
    /// A counter was read and its totals changed (or gave the first baseline).
    CounterRead {
        /// Index into `Config::counters`.
        counter: usize,
        at: Timestamp,
        totals: Totals,
        step: Counted,
    },
    /// The device answered again after being offline (or for the first time).
    DeviceOnline { counter: usize, at: Timestamp },
    /// The device stopped answering, or answered nonsense.
    DeviceOffline {
        counter: usize,
        at: Timestamp,
        reason: String,
    },
    /// A face-recognition terminal recorded someone passing (a re-send is not a new one).
    Passage {
        /// Index into `Config::terminals`.
        terminal: usize,
        at: Timestamp,
        facts: crate::occupancy::PassageFacts,
        /// The event's identity at its terminal: the core counts each key once, and keeps
        /// the keys with the counts, so a re-send — even after a restart — counts once.
        key: crate::terminals::DedupKey,
        /// Settled by the core once the passage is journaled on disk, for the transport that waits
        /// to tell the device it was received; `None` when nobody waits.
        receipt: Option<terminals::Receipt>,
    },
    /// A room camera's snapshot was counted.
    HeadCount {
        /// Index into `Config::cameras`.
        camera: usize,
        at: Timestamp,
        room: usize,
        heads: u64,
    },
}

/// Capacity of the drivers → core channel. A few seconds of reads of a large hall.
pub const EVENT_CHANNEL_CAPACITY: usize = 1024;

/// What went wrong talking to a device (or a bus), counted since start. Read by the status
/// views; written only by the device's driver.
#[derive(Debug, Default)]
pub struct PollStats {
    pub polls: AtomicU64,
    pub timeouts: AtomicU64,
    /// CRC, framing and mismatched answers: noise on the line.
    pub crc_errors: AtomicU64,
    pub exceptions: AtomicU64,
    /// Answers that decoded to nonsense for the profile.
    pub bad_answers: AtomicU64,
    /// Connects that failed, ports that vanished or would not open.
    pub link_errors: AtomicU64,
    /// Readings whose totals jumped beyond what the door can pass: nothing counted from them.
    pub implausible_steps: AtomicU64,
    /// Readings whose totals fell and were taken as a device reset, not a wrap.
    pub resets: AtomicU64,
}

/// A snapshot of [`PollStats`], as published.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    pub polls: u64,
    pub timeouts: u64,
    pub crc_errors: u64,
    pub exceptions: u64,
    pub bad_answers: u64,
    pub link_errors: u64,
    pub implausible_steps: u64,
    pub resets: u64,
}

impl PollStats {
    pub fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            polls: get(&self.polls),
            timeouts: get(&self.timeouts),
            crc_errors: get(&self.crc_errors),
            exceptions: get(&self.exceptions),
            bad_answers: get(&self.bad_answers),
            link_errors: get(&self.link_errors),
            implausible_steps: get(&self.implausible_steps),
            resets: get(&self.resets),
        }
    }
}

/// Statistics of every counter and every bus, indexed like `Config::counters`/`buses`.
#[derive(Debug)]
pub struct DeviceStats {
    pub counters: Vec<PollStats>,
    pub buses: Vec<PollStats>,
}

impl DeviceStats {
    pub fn new(config: &Config) -> Arc<Self> {
        Arc::new(DeviceStats {
            counters: config
                .counters
                .iter()
                .map(|_| PollStats::default())
                .collect(),
            buses: config.buses.iter().map(|_| PollStats::default()).collect(),
        })
    }
}

/// Starts every device driver: a task per Modbus TCP counter, a task per RS-485 bus. Each
/// counter resumes from its last persisted totals in `baselines`.
pub fn spawn_all(
    config: &Config,
    baselines: &BTreeMap<String, Baseline>,
    stats: &Arc<DeviceStats>,
    events: &mpsc::Sender<DeviceEvent>,
    shutdown: &CancellationToken,
) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    for (index, counter) in config.counters.iter().enumerate() {
        let baseline = baselines.get(&counter.id).copied();
        match counter.transport {
            CounterTransport::ModbusTcp { address, unit_id } => {
                let driver = modbus_tcp::ModbusTcpCounterDriver::new(
                    index,
                    counter.clone(),
                    (address, unit_id),
                    baseline,
                    stats.clone(),
                    events.clone(),
                );
                tasks.push(tokio::spawn(driver.run(shutdown.clone())));
            }
            CounterTransport::SerialStream {
                ref serial,
                ref format,
            } => {
                let driver = serial_stream::SerialStreamCounterDriver::new(
                    index,
                    counter,
                    (serial.clone(), format.clone()),
                    baseline,
                    stats.clone(),
                    events.clone(),
                );
                tasks.push(tokio::spawn(driver.run(shutdown.clone())));
            }
            // Started per bus, below.
            CounterTransport::ModbusRtu { .. } => {}
            // Served by the terminal HTTP listener (`terminals::http`), which they POST to.
            CounterTransport::HttpPush { .. } => {}
        }
    }
    for (bus_index, bus) in config.buses.iter().enumerate() {
        let slaves: Vec<modbus_rtu::Slave> = config
            .counters
            .iter()
            .enumerate()
            .filter_map(|(index, c)| match c.transport {
                CounterTransport::ModbusRtu { bus, unit_id } if bus == bus_index => {
                    Some(modbus_rtu::Slave::new(
                        index,
                        c.clone(),
                        unit_id,
                        baselines.get(&c.id).copied(),
                    ))
                }
                _ => None,
            })
            .collect();
        if slaves.is_empty() {
            tracing::warn!(bus = %bus.id, "bus has no counters on it; not opening its port");
            continue;
        }
        let driver = modbus_rtu::ModbusRtuBusDriver::new(
            bus_index,
            bus.clone(),
            slaves,
            stats.clone(),
            events.clone(),
        );
        tasks.push(tokio::spawn(driver.run(shutdown.clone())));
    }
    tasks
}
