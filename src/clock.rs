//! Clock trust: is the system clock synchronised to a time source?
//!
//! Bins, days and `msg_id`s come from the wall clock, so a box that booted without a
//! real-time clock and has not reached NTP yet stamps its figures in 1970 (or wherever its
//! clock stopped). The gateway cannot fix that, but it can say so: every payload carries
//! `clock_synced`, and the centre can hold back figures from an untrusted clock.
//!
//! The test is systemd's (`timedatectl`'s "System clock synchronized"): the kernel's
//! `adjtimex` reports a maximum error below 16 s. The `STA_UNSYNC` flag is ignored as systemd
//! does, since some setups set it only to keep the kernel from writing the RTC.
//!
//! Durations and intervals never use the wall clock (tokio's and std's `Instant` are
//! monotonic), so a clock step breaks no timer; see the occupancy engine for how bins treat a
//! clock that steps backwards.

/// The kernel's "maximum error" at or above which the clock is unsynchronised, µs.
const MAX_ERROR_UNSYNCED_US: i64 = 16_000_000;

/// Whether the kernel says the system clock is synchronised; `false` when it cannot tell.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub fn synchronised() -> bool {
    // SAFETY: `timex` is plain data that the kernel fills in; all-zero is a valid value and
    // `modes = 0` makes `adjtimex` read only, never adjust, the clock.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    // SAFETY: `tx` is a valid, exclusively borrowed `timex` for the duration of the call.
    let state = unsafe { libc::adjtimex(&mut tx) };
    // `maxerror` is a C long: 64 bits here, 32 on armv7, hence the conversion.
    #[allow(clippy::useless_conversion)]
    let max_error = i64::from(tx.maxerror);
    state >= 0 && max_error < MAX_ERROR_UNSYNCED_US
}

/// Elsewhere there is no portable way to ask; report unsynchronised rather than guess.
#[cfg(not(target_os = "linux"))]
pub fn synchronised() -> bool {
    false
}
