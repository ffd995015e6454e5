//! hallgate: the edge gateway of a community service hall.
//!
//! Module map, in data-flow order (see `../shared/ARCHITECTURE.md`):
//!
//! - [`bookings`]: the centre's room bookings (downlink), validated and stored; held and
//!   unbooked-use reports per booking.
//! - [`clock`]: whether the system clock can be trusted (`clock_synced` in payloads).
//! - [`format`]: stamps, hall-local times, durations in words, rounding: one copy for every output.
//! - [`config`]: the hall's TOML file, parsed, validated, then trusted; counter profiles.
//! - [`devices`]: one async driver per device or bus, each over a pure decoder; they emit
//!   [`devices::DeviceEvent`]s.
//! - [`terminals`]: pure decoding of face/temperature terminal messages into passages; the
//!   vendors' HTTP formats (multipart pushes, streams, searched logs) in `terminals::wire`.
//! - [`vision`]: face counts from terminal snapshots, CenterFace in tract on its own thread.
//! - [`occupancy`]: the pure, synchronous engine: crossings to per-room occupancy, daily totals
//!   and per-minute aggregates; `now` is always passed in.
//! - [`outbox`]: SQLite (WAL) owned by one thread; everything bound for the centre is written
//!   here first, in batches, together with the engine state and counter baselines.
//! - [`uplink`]: the one MQTT client of the central broker (TLS for `mqtts://`); a row leaves
//!   the outbox on PUBACK.
//! - [`supervisor`]: wires the stages, owns shutdown; puts device events back in time order
//!   before the engine; replays a day through the same core under a virtual clock.
//! - [`status`]: the local status page, JSON API, `/metrics` and `/healthz`, from snapshots
//!   the core loop publishes; `hallgate status` reads the API.
//! - [`simulate`]: simulated counters with ground truth, for the demo and the tests; a whole
//!   seeded hall day with its truth (`simulate::day`) for the venue-day replay.
//! - [`demo`]: the one-command demo (embedded broker + simulator + gateway + live table).

pub mod bookings;
pub mod clock;
pub mod config;
pub mod demo;
pub mod devices;
pub mod format;
pub mod occupancy;
pub mod outbox;
pub mod signals;
pub mod simulate;
pub mod status;
pub mod supervisor;
pub mod terminals;
pub mod uplink;
pub mod vision;
