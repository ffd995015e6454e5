//! Device drivers: one async task per device or bus, each over a pure decoder.
//!
//! Drivers own their sockets, timeouts, retries and reconnects, stamp what they observe with the
//! wall clock, and hand [`DeviceEvent`]s to the supervisor's core loop over one bounded channel.
//! When that channel is full a driver waits (back-pressure): counters keep cumulative totals,
//! so a late read loses nothing. The kinds of device are a closed list: a new kind is a new
//! module and a `match` arm in [`spawn_counter`].

pub mod counter;
pub mod modbus_tcp;

use jiff::Timestamp;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{Counter, CounterTransport};
use counter::{Step, Totals};

/// What a driver observed, as a past-tense fact.
#[derive(Debug, Clone, PartialEq)]
pub enum DeviceEvent {
    /// A counter was read and its totals changed (or gave the first baseline).
    CounterRead {
        /// Index into `Config::counters`.
        counter: usize,
        at: Timestamp,
        totals: Totals,
        step: Step,
    },
    /// The device answered again after being offline (or for the first time).
    DeviceOnline { counter: usize, at: Timestamp },
    /// The device stopped answering, or answered nonsense.
    DeviceOffline {
        counter: usize,
        at: Timestamp,
        reason: String,
    },
}

/// Capacity of the drivers → core channel. A few seconds of reads of a large hall.
pub const EVENT_CHANNEL_CAPACITY: usize = 1024;

/// Starts the driver for counter `index`, resuming from `baseline` (its last persisted totals).
pub fn spawn_counter(
    index: usize,
    counter: Counter,
    baseline: Option<Totals>,
    events: mpsc::Sender<DeviceEvent>,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    match counter.transport {
        CounterTransport::ModbusTcp { .. } => {
            let driver = modbus_tcp::ModbusTcpCounterDriver::new(index, counter, baseline, events);
            tokio::spawn(driver.run(shutdown))
        }
    }
}
