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

use std::net::SocketAddr;
use std::sync::Arc;

use super::backoff::Backoff;
use super::counter::{Baseline, decode_totals};
use super::reporter::CounterReporter;
use super::{DeviceEvent, DeviceStats, PollStats};
use crate::config::Counter;
use crate::config::profile::FunctionCode;

/// Waits between reconnects: a quarter second, doubling to half a minute, exactly.
const RECONNECT: Backoff = Backoff::exact(Duration::from_millis(250), Duration::from_secs(30));

pub struct ModbusTcpCounterDriver {
    index: usize,
    counter: Counter,
    address: SocketAddr,
    unit_id: u8,
    stats: Arc<DeviceStats>,
    reporter: CounterReporter,
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
        (address, unit_id): (SocketAddr, u8),
        baseline: Option<Baseline>,
        stats: Arc<DeviceStats>,
        events: mpsc::Sender<DeviceEvent>,
    ) -> Self {
        let reporter = CounterReporter::new(index, &counter, baseline, events);
        ModbusTcpCounterDriver {
            index,
            counter,
            address,
            unit_id,
            stats,
            reporter,
        }
    }

    pub async fn run(mut self, shutdown: CancellationToken) {
        let (address, unit_id) = (self.address, self.unit_id);
        let mut backoff = RECONNECT;
        loop {
            let connect = timeout(
                self.counter.timeout,
                tcp::connect_slave(address, Slave(unit_id)),
            );
            let attempt = tokio::select! {
                _ = shutdown.cancelled() => return,
                attempt = connect => attempt,
            };
            // Refused and timed out alike: counted, reported, waited out.
            let connected = match attempt {
                Ok(Ok(ctx)) => Ok(ctx),
                Ok(Err(error)) => Err(format!("cannot connect to {address}: {error}")),
                Err(_) => Err(format!(
                    "connecting to {address} timed out after {} ms",
                    self.counter.timeout.as_millis()
                )),
            };
            let mut ctx = match connected {
                Ok(ctx) => ctx,
                Err(reason) => {
                    PollStats::count(&self.stats().link_errors);
                    self.reporter.went_offline(reason).await;
                    if sleep_or_shutdown(&shutdown, backoff.next_wait()).await {
                        return;
                    }
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
                    Ok(()) => backoff.reset(),
                    Err(PollError::Answer(reason)) => self.reporter.went_offline(reason).await,
                    Err(PollError::Connection(reason)) => {
                        self.reporter.went_offline(reason).await;
                        break;
                    }
                }
            }
            if sleep_or_shutdown(&shutdown, backoff.next_wait()).await {
                return;
            }
        }
    }

    fn stats(&self) -> &PollStats {
        &self.stats.counters[self.index]
    }

    async fn poll(&mut self, ctx: &mut Context) -> Result<(), PollError> {
        PollStats::count(&self.stats().polls);
        let profile = &self.counter.profile;
        let (start, count) = (profile.read_start, profile.read_count);
        let read = async {
            match profile.function {
                FunctionCode::HoldingRegisters => ctx.read_holding_registers(start, count).await,
                FunctionCode::InputRegisters => ctx.read_input_registers(start, count).await,
            }
        };
        let stats = &self.stats.counters[self.index];
        let registers = match timeout(self.counter.timeout, read).await {
            Err(_) => {
                PollStats::count(&stats.timeouts);
                return Err(PollError::Connection(format!(
                    "no answer within {} ms",
                    self.counter.timeout.as_millis()
                )));
            }
            Ok(Err(error)) => {
                PollStats::count(&stats.link_errors);
                return Err(PollError::Connection(format!("transport: {error}")));
            }
            Ok(Ok(Err(exception))) => {
                PollStats::count(&stats.exceptions);
                return Err(PollError::Answer(format!(
                    "device answered with exception {exception}"
                )));
            }
            Ok(Ok(Ok(registers))) => registers,
        };
        let totals = decode_totals(profile, &registers).map_err(|error| {
            PollStats::count(&stats.bad_answers);
            PollError::Answer(format!("bad answer: {error}"))
        })?;
        self.reporter.reading(totals, Timestamp::now()).await;
        Ok(())
    }
}

/// Sleeps for `d`; true when shutdown came first.
async fn sleep_or_shutdown(shutdown: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => true,
        _ = tokio::time::sleep(d) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The waits between reconnects, in ms, for `n` failures in a row.
    fn waits(n: usize) -> Vec<u128> {
        let mut backoff = RECONNECT;
        (0..n).map(|_| backoff.next_wait().as_millis()).collect()
    }

    #[test]
    fn reconnect_waits_double_from_a_quarter_second_to_half_a_minute_exactly() {
        assert_eq!(
            waits(10),
            [250, 500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
    }
}
