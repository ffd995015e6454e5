//! hallgate: the edge gateway of a community service hall.
//!
//! Module map, in data-flow order. `docs/architecture.md` has the data flow, what each module
//! may import and the contracts; `tests/architecture.rs` checks the import rules.
//!
//! - [`bookings`]: the centre's room bookings (downlink), validated and stored; held and
//!   unbooked-use reports per booking.
//! - [`clock`]: whether the system clock can be trusted (`clock_synced` in payloads).
//! - [`format`](mod@format): stamps, hall-local times, durations in words, rounding: one copy for every output.
//! - [`config`]: the hall's TOML file, parsed, validated, then trusted; counter profiles.
//! - [`devices`]: one async driver per device or bus, each over a pure decoder; they emit
//!   [`devices::DeviceEvent`]s.
//! - [`terminals`]: pure decoding of face/temperature terminal messages into passages; the
//!   vendors' HTTP formats (multipart pushes, streams, searched logs) in `terminals::wire`.
//! - [`vision`]: face counts from terminal snapshots, CenterFace in tract on its own thread.
//! - [`occupancy`]: the pure, synchronous engine: crossings to per-room occupancy, daily totals
//!   and per-minute aggregates; one way in, `Engine::apply(now, input)`.
//! - [`health`]: each device's condition (online, offline, stale, waiting), judged by rules.
//! - [`alerts`]: the alert rules over typed facts: raises and clears for the centre, today's
//!   list for the page.
//! - [`outbox`]: SQLite (WAL) owned by one thread; everything bound for the centre is written
//!   here first, in batches, together with the engine state and counter baselines.
//! - [`uplink`]: the one MQTT client of the central broker (TLS for `mqtts://`); a row leaves
//!   the outbox on PUBACK.
//! - [`supervisor`]: the sans-I/O core (`supervisor::core`: reorder, engine, health, alerts,
//!   commit pacing) and its shell: wiring, the one select loop, staged shutdown.
//! - [`status`]: the local status page, JSON API, `/metrics` and `/healthz`, from snapshots
//!   the core loop publishes; `hallgate status` reads the API.
//! - [`simulate`]: tools above the product — simulated counters and terminals with ground
//!   truth, a whole seeded hall day (`simulate::day`) replayed through the live core under a
//!   virtual clock (`simulate::replay`); no product module imports it.
//! - [`signals`]: the one signal handler (stop; for the daemon, reload on SIGHUP).
//! - [`demo`]: the one-command demo (embedded broker + simulator + gateway + live table).

pub mod alerts;
pub mod bookings;
pub mod clock;
pub mod config;
pub mod demo;
pub mod devices;
pub mod format;
pub mod health;
pub mod occupancy;
pub mod outbox;
pub mod signals;
pub mod simulate;
pub mod status;
pub mod supervisor;
pub mod terminals;
pub mod uplink;
pub mod vision;
