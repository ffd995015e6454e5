//! Modbus TCP people-counter driver: the async shell around [`super::counter`].
//!
//! One task per counter, so a counter that hangs or refuses costs only itself. Every request
//! and every connect runs under the counter's own `timeout` (tokio-modbus waits forever for an
//! answer that never comes). A failed connect or a timed-out request drops the connection and
//! reconnects with capped exponential backoff; a Modbus exception keeps it. Online/offline is
//! reported on transitions only, with one log sentence each.

use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::mpsc;
use tokio::time::{MissedTickBehavior, timeout};
use tokio_modbus::client::{Context, Reader, tcp};
use tokio_modbus::slave::Slave;
use tokio_util::sync::CancellationToken;

use super::DeviceEvent;
use super::counter::{CounterTracker, Totals, decode_totals};
use crate::config::profile::FunctionCode;
use crate::config::{Counter, CounterTransport};

const MIN_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

pub struct ModbusTcpCounterDriver {
    index: usize,
    counter: Counter,
    tracker: CounterTracker,
    events: mpsc::Sender<DeviceEvent>,
    /// `None` until the first attempt tells.
    online: Option<bool>,
}

/// Why one poll failed, and whether the connection is still usable.
enum PollError {
    /// The transport is broken or in an unknown state: reconnect.
    Connection(String),
    /// The device answered, with an exception or nonsense: keep the connection.
    Answer(String),
}

impl ModbusTcpCounterDriver {
    pub fn new(
        index: usize,
        counter: Counter,
        baseline: Option<Totals>,
        events: mpsc::Sender<DeviceEvent>,
    ) -> Self {
        ModbusTcpCounterDriver {
            index,
            counter,
            tracker: CounterTracker::new(baseline),
            events,
            online: None,
        }
    }

    pub async fn run(mut self, shutdown: CancellationToken) {
        let CounterTransport::ModbusTcp { address, unit_id } = self.counter.transport;
        let mut backoff = MIN_BACKOFF;
        loop {
            let connect = timeout(
                self.counter.timeout,
                tcp::connect_slave(address, Slave(unit_id)),
            );
            let attempt = tokio::select! {
                _ = shutdown.cancelled() => return,
                attempt = connect => attempt,
            };
            let mut ctx = match attempt {
                Ok(Ok(ctx)) => ctx,
                Ok(Err(error)) => {
                    self.went_offline(format!("cannot connect to {address}: {error}"))
                        .await;
                    if sleep_or_shutdown(&shutdown, backoff).await {
                        return;
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
                Err(_) => {
                    self.went_offline(format!(
                        "connecting to {address} timed out after {} ms",
                        self.counter.timeout.as_millis()
                    ))
                    .await;
                    if sleep_or_shutdown(&shutdown, backoff).await {
                        return;
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            tracing::debug!(counter = %self.counter.id, %address, "connected to counter");

            let mut ticker = tokio::time::interval(self.counter.poll_interval);
            ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = ticker.tick() => {}
                }
                match self.poll(&mut ctx).await {
                    Ok(()) => backoff = MIN_BACKOFF,
                    Err(PollError::Answer(reason)) => self.went_offline(reason).await,
                    Err(PollError::Connection(reason)) => {
                        self.went_offline(reason).await;
                        break;
                    }
                }
            }
            if sleep_or_shutdown(&shutdown, backoff).await {
                return;
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn poll(&mut self, ctx: &mut Context) -> Result<(), PollError> {
        let profile = &self.counter.profile;
        let (start, count) = (profile.read_start, profile.read_count);
        let read = async {
            match profile.function {
                FunctionCode::HoldingRegisters => ctx.read_holding_registers(start, count).await,
                FunctionCode::InputRegisters => ctx.read_input_registers(start, count).await,
            }
        };
        let registers = match timeout(self.counter.timeout, read).await {
            Err(_) => {
                return Err(PollError::Connection(format!(
                    "no answer within {} ms",
                    self.counter.timeout.as_millis()
                )));
            }
            Ok(Err(error)) => return Err(PollError::Connection(format!("transport: {error}"))),
            Ok(Ok(Err(exception))) => {
                return Err(PollError::Answer(format!(
                    "device answered with exception {exception}"
                )));
            }
            Ok(Ok(Ok(registers))) => registers,
        };
        let totals = decode_totals(profile, &registers)
            .map_err(|error| PollError::Answer(format!("bad answer: {error}")))?;
        let at = Timestamp::now();
        self.went_online(at).await;
        let before = self.tracker.baseline();
        let step = self.tracker.update(&self.counter.profile, totals);
        if step.reset {
            tracing::warn!(
                counter = %self.counter.id,
                previous = ?before,
                now = ?totals,
                "counter totals went backwards: the device was reset; counting on from its new totals"
            );
        }
        if before != Some(totals) || step.inward > 0 || step.outward > 0 {
            self.send(DeviceEvent::CounterRead {
                counter: self.index,
                at,
                totals,
                step,
            })
            .await;
        }
        Ok(())
    }

    async fn went_online(&mut self, at: Timestamp) {
        if self.online == Some(true) {
            return;
        }
        if self.online == Some(false) {
            tracing::info!(counter = %self.counter.id, "counter is back online");
        }
        self.online = Some(true);
        self.send(DeviceEvent::DeviceOnline {
            counter: self.index,
            at,
        })
        .await;
    }

    async fn went_offline(&mut self, reason: String) {
        if self.online == Some(false) {
            tracing::debug!(counter = %self.counter.id, %reason, "counter still offline");
            return;
        }
        tracing::warn!(
            counter = %self.counter.id,
            %reason,
            "counter is offline; retrying in the background, other devices are unaffected"
        );
        self.online = Some(false);
        self.send(DeviceEvent::DeviceOffline {
            counter: self.index,
            at: Timestamp::now(),
            reason,
        })
        .await;
    }

    async fn send(&self, event: DeviceEvent) {
        // The receiver only goes away at shutdown, when losing the event is expected.
        let _ = self.events.send(event).await;
    }
}

/// Sleeps for `d`; true when shutdown came first.
async fn sleep_or_shutdown(shutdown: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => true,
        _ = tokio::time::sleep(d) => false,
    }
}
