//! Modbus RTU bus driver: one task per RS-485 bus, its slaves polled in turn.
//!
//! The async shell around [`super::counter`] for counters on a serial line. What the field
//! does to a bus, and what this driver does about it:
//!
//! - **A dead slave.** Every request has the slave's own timeout. After `degraded_after`
//!   failures in a row the slave is *degraded*: polled only every `degraded_retry`, so it costs
//!   the live slaves at most one timeout per retry period instead of one per cycle.
//! - **Noise.** CRC and framing errors, and answers that do not match the request, are counted
//!   per slave and per bus; the slave's poll failed. Whatever is unread on the line is dropped
//!   before each request, so a late answer is never taken for the next one; after a frame too
//!   corrupt to decode the port is reopened quietly (tokio-modbus's framing stops after one).
//!   A slave is reported offline only after `degraded_after` failures in a row, not for one
//!   garbled poll.
//! - **An unplugged adapter.** An I/O error from the port itself (EIO from a vanished USB
//!   adapter or pty), or a full cycle in which every slave timed out while the port's path has
//!   gone, closes the port — dropping the stream closes the descriptor — and the open is
//!   retried with capped backoff at the same path (configure `/dev/serial/by-id/…` names, which
//!   stay stable across replugs). Polling resumes by itself; cumulative totals give back the
//!   crossings counted meanwhile.
//!
//! Between two transactions the bus is kept silent for `inter_frame_delay` (3.5 characters).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tokio_modbus::client::{Context, Reader, rtu};
use tokio_modbus::slave::{Slave as UnitId, SlaveContext};
use tokio_serial::{SerialPort, SerialPortBuilderExt};
use tokio_util::sync::CancellationToken;

use super::backoff::Backoff;
use super::counter::{Baseline, Totals, decode_totals};
use super::reporter::CounterReporter;
use super::{DeviceEvent, DeviceStats, PollStats};
use crate::config::profile::FunctionCode;
use crate::config::{Bus, Counter, ParityConfig, SerialSettings};

/// Waits between attempts to open a serial port (this bus's, or a streaming counter's): a
/// quarter second, doubling to ten seconds, exactly. A port lost after it was open is tried
/// again after the first wait.
pub(super) const SERIAL_REOPEN: Backoff =
    Backoff::exact(Duration::from_millis(250), Duration::from_secs(10));

/// One counter on the bus and its polling schedule.
#[derive(Debug)]
pub struct Slave {
    index: usize,
    counter: Counter,
    unit_id: u8,
    baseline: Option<Baseline>,
    failures: u32,
    degraded: bool,
    next_due: Instant,
}

impl Slave {
    pub fn new(index: usize, counter: Counter, unit_id: u8, baseline: Option<Baseline>) -> Self {
        Slave {
            index,
            counter,
            unit_id,
            baseline,
            failures: 0,
            degraded: false,
            next_due: Instant::now(),
        }
    }
}

/// How one transaction went.
enum Outcome {
    Answered(Totals),
    /// The slave failed this poll; the bus is fine.
    Failed(String),
    /// A frame was too corrupt to decode. tokio-modbus's framing is finished after that (the
    /// next call fails with "broken pipe"), so the port is reopened — quietly: the bus is fine.
    Corrupt(String),
    /// The port itself failed: close it and reopen.
    PortLost(String),
}

/// Why polling stopped.
enum Stopped {
    Shutdown,
    /// Reopen the port without reporting anything (after a corrupt frame).
    Resync,
    Lost(String),
}

/// The serial stream, discarding whatever is unread in the OS's input queue before each new
/// request. tokio-modbus only clears its own buffer, so a late answer to a timed-out request,
/// or noise, would otherwise be read as the answer to the next one — and every slave after it
/// would fail one answer behind.
struct FreshLine {
    port: tokio_serial::SerialStream,
    /// Bytes may have been left unread since the last write.
    read_since_write: bool,
}

impl tokio::io::AsyncRead for FreshLine {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.read_since_write = true;
        Pin::new(&mut self.port).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for FreshLine {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.read_since_write {
            // A failed clear leaves stale bytes, which the CRC and header checks still catch.
            let _ = self.port.clear(tokio_serial::ClearBuffer::Input);
            self.read_since_write = false;
        }
        Pin::new(&mut self.port).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.port).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.port).poll_shutdown(cx)
    }
}

pub struct ModbusRtuBusDriver {
    bus_index: usize,
    bus: Bus,
    slaves: Vec<Slave>,
    reporters: Vec<CounterReporter>,
    stats: Arc<DeviceStats>,
}

impl ModbusRtuBusDriver {
    pub fn new(
        bus_index: usize,
        bus: Bus,
        slaves: Vec<Slave>,
        stats: Arc<DeviceStats>,
        events: mpsc::Sender<DeviceEvent>,
    ) -> Self {
        let reporters = slaves
            .iter()
            .map(|s| CounterReporter::new(s.index, &s.counter, s.baseline, events.clone()))
            .collect();
        ModbusRtuBusDriver {
            bus_index,
            bus,
            slaves,
            reporters,
            stats,
        }
    }

    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut backoff = SERIAL_REOPEN;
        let mut warned = false;
        let mut resyncing = false;
        loop {
            let port = match open(&self.bus.serial) {
                Ok(port) => port,
                Err(error) => {
                    PollStats::count(&self.stats.buses[self.bus_index].link_errors);
                    let reason = format!(
                        "cannot open serial port {} of bus {}: {error}",
                        self.bus.serial.port.display(),
                        self.bus.id
                    );
                    if !warned {
                        tracing::warn!(bus = %self.bus.id, %reason, "serial port unavailable; retrying with backoff");
                        warned = true;
                    }
                    self.all_offline(&reason).await;
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = sleep(backoff.next_wait()) => {}
                    }
                    continue;
                }
            };
            if !resyncing {
                tracing::info!(
                    bus = %self.bus.id,
                    port = %self.bus.serial.port.display(),
                    slaves = self.slaves.len(),
                    "serial bus open"
                );
            }
            warned = false;
            backoff.reset();
            let mut ctx = rtu::attach(FreshLine {
                port,
                read_since_write: true,
            });
            let stopped = self.poll_until_stopped(&mut ctx, &shutdown).await;
            // Dropping the context drops the stream and closes the descriptor: a vanished
            // adapter leaves nothing open behind it.
            drop(ctx);
            let reason = match stopped {
                Stopped::Shutdown => return,
                Stopped::Resync => {
                    resyncing = true;
                    continue;
                }
                Stopped::Lost(reason) => reason,
            };
            resyncing = false;
            PollStats::count(&self.stats.buses[self.bus_index].link_errors);
            tracing::warn!(bus = %self.bus.id, %reason, "serial port lost; closed it and will reopen it when it is back");
            self.all_offline(&reason).await;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = sleep(backoff.first()) => {}
            }
        }
    }

    /// The bus's port failed or would not open: the gateway's side, not the devices'.
    async fn all_offline(&mut self, reason: &str) {
        for r in &mut self.reporters {
            r.port_lost(reason.to_string()).await;
        }
    }

    /// Polls until the port fails, needs a resync, or shutdown.
    async fn poll_until_stopped(
        &mut self,
        ctx: &mut Context,
        shutdown: &CancellationToken,
    ) -> Stopped {
        let now = Instant::now();
        for s in &mut self.slaves {
            s.next_due = s.next_due.max(now);
        }
        // Timeouts in a row across the whole bus: if every slave stays silent and the port's
        // path is gone, the adapter was pulled without an I/O error to say so.
        let mut silent_in_a_row = 0usize;
        loop {
            let Some((i, due)) = self
                .slaves
                .iter()
                .enumerate()
                .map(|(i, s)| (i, s.next_due))
                .min_by_key(|&(_, due)| due)
            else {
                return Stopped::Shutdown;
            };
            tokio::select! {
                _ = shutdown.cancelled() => return Stopped::Shutdown,
                _ = sleep_until(due) => {}
            }
            let outcome = self.transact(ctx, i).await;
            // Keep the line silent before the next frame, whatever happened.
            sleep(self.bus.inter_frame_delay).await;
            let slave = &mut self.slaves[i];
            let interval = slave.counter.poll_interval;
            let corrupt = matches!(outcome, Outcome::Corrupt(_));
            match outcome {
                Outcome::Answered(totals) => {
                    silent_in_a_row = 0;
                    if slave.degraded {
                        tracing::info!(counter = %slave.counter.id, bus = %self.bus.id, "degraded slave answers again; back to its normal schedule");
                    }
                    slave.failures = 0;
                    slave.degraded = false;
                    // Keep the cadence; after a stall, start again from now.
                    slave.next_due = (due + interval).max(Instant::now());
                    self.reporters[i].reading(totals, Timestamp::now()).await;
                }
                Outcome::Failed(reason) | Outcome::Corrupt(reason) => {
                    slave.failures += 1;
                    let silent = reason.starts_with("no answer");
                    silent_in_a_row = if silent { silent_in_a_row + 1 } else { 0 };
                    if slave.failures >= self.bus.degraded_after {
                        if !slave.degraded {
                            tracing::warn!(
                                counter = %slave.counter.id,
                                bus = %self.bus.id,
                                failures = slave.failures,
                                retry_secs = self.bus.degraded_retry.as_secs_f64(),
                                "slave keeps failing; marked degraded and polled less often so the rest of the bus is not held up"
                            );
                        }
                        slave.degraded = true;
                        slave.next_due = Instant::now() + self.bus.degraded_retry;
                        // One garbled poll on a noisy line is not an outage; this many in a
                        // row is.
                        self.reporters[i].went_offline(reason.clone()).await;
                    } else {
                        slave.next_due = (due + interval).max(Instant::now());
                    }
                    if corrupt {
                        return Stopped::Resync;
                    }
                    if silent_in_a_row >= self.slaves.len() && !self.bus.serial.port.exists() {
                        return Stopped::Lost(format!(
                            "{} has disappeared",
                            self.bus.serial.port.display()
                        ));
                    }
                }
                Outcome::PortLost(reason) => return Stopped::Lost(reason),
            }
        }
    }

    /// One request to slave `i`, under its timeout, with the outcome counted.
    async fn transact(&mut self, ctx: &mut Context, i: usize) -> Outcome {
        let slave = &self.slaves[i];
        let profile = &slave.counter.profile;
        let (per_slave, per_bus) = (
            &self.stats.counters[slave.index],
            &self.stats.buses[self.bus_index],
        );
        PollStats::count(&per_slave.polls);
        PollStats::count(&per_bus.polls);
        let count = |c: fn(&PollStats) -> &std::sync::atomic::AtomicU64| {
            PollStats::count(c(per_slave));
            PollStats::count(c(per_bus));
        };
        ctx.set_slave(UnitId(slave.unit_id));
        let (start, n) = (profile.read_start, profile.read_count);
        let read = async {
            match profile.function {
                FunctionCode::HoldingRegisters => ctx.read_holding_registers(start, n).await,
                FunctionCode::InputRegisters => ctx.read_input_registers(start, n).await,
            }
        };
        match timeout(slave.counter.timeout, read).await {
            Err(_) => {
                count(|s| &s.timeouts);
                Outcome::Failed(format!(
                    "no answer from unit {} within {} ms",
                    slave.unit_id,
                    slave.counter.timeout.as_millis()
                ))
            }
            Ok(Err(tokio_modbus::Error::Protocol(error))) => {
                count(|s| &s.crc_errors);
                Outcome::Failed(format!(
                    "garbled answer from unit {}: {error}",
                    slave.unit_id
                ))
            }
            Ok(Err(tokio_modbus::Error::Transport(error))) if is_line_noise(&error) => {
                count(|s| &s.crc_errors);
                Outcome::Corrupt(format!(
                    "corrupt frame from unit {}: {error}",
                    slave.unit_id
                ))
            }
            Ok(Err(tokio_modbus::Error::Transport(error))) => Outcome::PortLost(format!(
                "serial port {} failed: {error}",
                self.bus.serial.port.display()
            )),
            Ok(Ok(Err(exception))) => {
                count(|s| &s.exceptions);
                Outcome::Failed(format!(
                    "unit {} answered with exception {exception}",
                    slave.unit_id
                ))
            }
            Ok(Ok(Ok(registers))) => match decode_totals(profile, &registers) {
                Ok(totals) => Outcome::Answered(totals),
                Err(error) => {
                    count(|s| &s.bad_answers);
                    Outcome::Failed(format!("bad answer from unit {}: {error}", slave.unit_id))
                }
            },
        }
    }
}

/// A CRC or framing problem in the bytes received, as opposed to the port failing.
fn is_line_noise(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput
    )
}

/// Opens the serial port of `serial`.
pub(crate) fn open(
    serial: &SerialSettings,
) -> Result<tokio_serial::SerialStream, tokio_serial::Error> {
    open_serial(serial, &serial.port)
}

/// Opens `path` with `serial`'s line settings (the simulator opens the other end of a pair
/// with the same settings).
pub fn open_serial(
    serial: &SerialSettings,
    path: &std::path::Path,
) -> Result<tokio_serial::SerialStream, tokio_serial::Error> {
    let parity = match serial.parity {
        ParityConfig::None => tokio_serial::Parity::None,
        ParityConfig::Even => tokio_serial::Parity::Even,
        ParityConfig::Odd => tokio_serial::Parity::Odd,
    };
    let data_bits = if serial.data_bits == 7 {
        tokio_serial::DataBits::Seven
    } else {
        tokio_serial::DataBits::Eight
    };
    let stop_bits = if serial.stop_bits == 2 {
        tokio_serial::StopBits::Two
    } else {
        tokio_serial::StopBits::One
    };
    tokio_serial::new(path.to_string_lossy(), serial.baud)
        .parity(parity)
        .data_bits(data_bits)
        .stop_bits(stop_bits)
        .open_native_async()
}

#[cfg(test)]
mod backoff_tests {
    use super::*;

    /// The waits between attempts to open the port, in ms, for `n` failures in a row.
    fn waits(n: usize) -> Vec<u128> {
        let mut backoff = SERIAL_REOPEN;
        (0..n).map(|_| backoff.next_wait().as_millis()).collect()
    }

    #[test]
    fn reopen_waits_double_from_a_quarter_second_to_ten_seconds_exactly() {
        assert_eq!(
            waits(9),
            [250, 500, 1000, 2000, 4000, 8000, 10000, 10000, 10000]
        );
        // A port lost after it was open is reopened after the first wait.
        assert_eq!(SERIAL_REOPEN.first(), Duration::from_millis(250));
    }
}
