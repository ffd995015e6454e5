//! Validation: the file as written ([`ConfigFile`]) becomes the trusted [`Config`].
//!
//! [`ConfigFile::validate`] is the order of the checks, section by section; each section's
//! own checks are methods on its file struct (here: the hall, storage, profiles, rooms,
//! doors and buses; `[uplink]` in `uplink.rs`, `[[counters]]` in `counters.rs`, the terminal,
//! status and situation sections in their own modules). Every check reports into the one
//! [`Problems`] list by key path, and goes on: a hall with problems yields no `Config`, but
//! every problem it has. Ids are resolved to indices on the way ([`Claims`] holds what the
//! entries so far have taken).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::claims::{Claims, check_topic_safe_id};
use super::counters::{CounterContext, validate_counters};
use super::file::{
    BusConfig, ConfigFile, CounterConfig, CounterTransportKind, DoorConfig, HallSectionConfig,
    ProfilesConfig, RoomConfig, StorageConfig, UplinkConfig,
};
use super::model::{
    Bus, Config, Door, Hall, OUTSIDE, Room, SerialSettings, ServiceVisits, Storage, Zone,
};
use super::problems::{Problems, Report};
use super::profile::ProfileSet;
use super::{Overrides, situation, status, terminals};
use crate::devices::stream::{SerialProfile, builtin_serial_profiles};

impl ConfigFile {
    /// Checks every section, in the order `validate` lists their problems. `None` when the
    /// hall, uplink or situation could not be made; a `Config` is only good when `problems`
    /// stayed empty, which `parse` checks.
    pub(super) fn validate(
        self,
        base_dir: &Path,
        overrides: &Overrides,
        problems: &mut Problems,
    ) -> Option<Config> {
        let hall = self.hall.and_then(|h| h.validate(problems));
        let uplink = self.uplink.unwrap_or_else(UplinkConfig::absent).validate(
            overrides,
            hall.as_ref(),
            base_dir,
            problems,
        );
        let storage = self.storage.validate(overrides, problems);
        let (profiles, serial_profiles) = self.profiles.load(base_dir, problems);
        let mut claims = Claims::default();
        let (rooms, room_index) = validate_rooms(&self.rooms, &mut claims, problems);
        let (doors, door_index) = validate_doors(&self.doors, &room_index, &mut claims, problems);
        let (buses, bus_index) = validate_buses(&self.buses, &mut claims, problems);
        let counter_context = CounterContext {
            doors_written: &self.doors,
            door_index: &door_index,
            buses_written: &self.buses,
            bus_index: &bus_index,
            profiles: &profiles,
            serial_profiles: &serial_profiles,
            base_dir,
            overrides,
        };
        let counters = validate_counters(&self.counters, &counter_context, &mut claims, problems);

        // The terminal sections get a list of their own: `terminals::validate` looks back
        // at what it reported, and its problems are listed after the counters' need for a
        // listener, as they always were.
        let mut terminal_problems = Problems::new();
        let mut sections = terminals::validate(
            self.terminal_broker.as_ref(),
            self.terminal_http.as_ref(),
            &self.terminals,
            &room_index,
            base_dir,
            overrides.allow_example_secrets,
            &mut terminal_problems,
        );
        // Terminals that write naive local times (ZKTeco) write the hall's.
        if let Some(hall) = hall.as_ref() {
            sections.rules.decode.time_zone = hall.time_zone.clone();
            if let Some(broker) = sections.broker.as_mut() {
                broker.decode.time_zone = hall.time_zone.clone();
            }
        }
        if sections.http.is_none() {
            check_push_counters_have_a_listener(&self.counters, problems);
        }
        problems.append(&mut terminal_problems);

        let vision = self
            .vision
            .as_ref()
            .and_then(|c| terminals::validate_vision(c, base_dir, problems));
        let cameras = terminals::validate_cameras(
            &self.cameras,
            &room_index,
            base_dir,
            vision.is_some(),
            sections.broker.as_ref(),
            overrides.allow_example_secrets,
            problems,
        );
        let status = status::validate_status(&self.status, base_dir, problems);
        let situation = situation::validate_situation(&self.situation, problems);
        Some(Config {
            hall: hall?,
            uplink: uplink?,
            storage,
            rooms,
            doors,
            buses,
            counters,
            terminal_broker: sections.broker,
            terminal_http: sections.http,
            terminal_rules: sections.rules,
            terminals: sections.terminals,
            vision,
            cameras,
            status,
            situation: situation?,
        })
    }
}

impl HallSectionConfig {
    fn validate(self, problems: &mut Problems) -> Option<Hall> {
        let mut ok = true;
        for (key, value) in [("hall.id", &self.id), ("hall.district", &self.district)] {
            if let Err(message) = check_topic_safe_id(value) {
                problems.report(key, message);
                ok = false;
            }
        }
        let time_zone = match jiff::tz::TimeZone::get(&self.time_zone) {
            Ok(tz) => Some(tz),
            Err(error) => {
                problems.report(
                    "hall.time_zone",
                    format!("unknown time zone \"{}\": {error}", self.time_zone),
                );
                None
            }
        };
        let closing_time = match parse_hh_mm(&self.closing_time) {
            Some(t) => Some(t),
            None => {
                problems.report(
                    "hall.closing_time",
                    format!("\"{}\" is not a time of day HH:MM", self.closing_time),
                );
                None
            }
        };
        let opening_time = match parse_hh_mm(&self.opening_time) {
            Some(t) => Some(t),
            None => {
                problems.report(
                    "hall.opening_time",
                    format!("\"{}\" is not a time of day HH:MM", self.opening_time),
                );
                None
            }
        };
        if let (Some(open), Some(close)) = (opening_time, closing_time)
            && !opening_fits(open, close)
        {
            problems.report(
                "hall.opening_time",
                format!(
                    "\"{}\" must be before closing_time \"{}\" (a closing time before noon is taken as after midnight, and may follow an opening the evening before)",
                    self.opening_time, self.closing_time
                ),
            );
            ok = false;
        }
        let (Some(time_zone), Some(closing_time), Some(opening_time), true) =
            (time_zone, closing_time, opening_time, ok)
        else {
            return None;
        };
        Some(Hall {
            name: if self.name.is_empty() {
                self.id.clone()
            } else {
                self.name.clone()
            },
            id: self.id,
            district: self.district,
            time_zone_name: self.time_zone,
            time_zone,
            closing_time,
            opening_time,
        })
    }
}

impl StorageConfig {
    /// The storage settings, the command line's `--data-dir` winning over the file's.
    fn validate(&self, overrides: &Overrides, problems: &mut Problems) -> Storage {
        if self.commit_interval_ms < 100 || self.commit_interval_ms > 600_000 {
            problems.report(
                "storage.commit_interval_ms",
                format!(
                    "must be between 100 and 600000 ms, not {}",
                    self.commit_interval_ms
                ),
            );
        }
        if self.event_commit_interval_ms < 100 || self.event_commit_interval_ms > 600_000 {
            problems.report(
                "storage.event_commit_interval_ms",
                format!(
                    "must be between 100 and 600000 ms, not {}",
                    self.event_commit_interval_ms
                ),
            );
        }
        if self.max_outbox_bytes < 256 * 1024 {
            problems.report(
                "storage.max_outbox_bytes",
                format!(
                    "must be at least 262144 (256 KiB), not {}",
                    self.max_outbox_bytes
                ),
            );
        }
        if !(1..=1000).contains(&self.max_fsyncs_per_sec) {
            problems.report(
                "storage.max_fsyncs_per_sec",
                format!(
                    "must be between 1 and 1000, not {}",
                    self.max_fsyncs_per_sec
                ),
            );
        }
        Storage {
            data_dir: overrides.data_dir.clone().unwrap_or(self.data_dir.clone()),
            commit_interval: Duration::from_millis(self.commit_interval_ms),
            // Never later than everything else is committed anyway.
            event_commit_interval: Duration::from_millis(
                self.event_commit_interval_ms.min(self.commit_interval_ms),
            ),
            max_outbox_bytes: self.max_outbox_bytes,
            min_commit_gap: Duration::from_secs(1) / self.max_fsyncs_per_sec.max(1),
        }
    }
}

impl ProfilesConfig {
    /// The counter profiles (shipped, and those in `dirs`) and the streaming counters'
    /// formats; a profile file with problems is left out.
    fn load(
        &self,
        base_dir: &Path,
        problems: &mut Problems,
    ) -> (ProfileSet, BTreeMap<String, SerialProfile>) {
        let dirs: Vec<PathBuf> = self.dirs.iter().map(|d| base_dir.join(d)).collect();
        let dir_refs: Vec<&Path> = dirs.iter().map(PathBuf::as_path).collect();
        let (profile_set, profile_problems) = ProfileSet::load(&dir_refs);
        for (origin, message) in profile_problems {
            problems.report("profiles.dirs", format!("{origin}: {message}"));
        }
        let (serial_profiles, serial_problems) = builtin_serial_profiles();
        for (origin, message) in serial_problems {
            problems.report("profiles", format!("{origin}: {message}"));
        }
        (profile_set, serial_profiles)
    }
}

/// Validates `[[rooms]]`; also returns each room's index by id (the first, for a duplicate).
fn validate_rooms<'a>(
    rooms: &'a [Option<RoomConfig>],
    claims: &mut Claims,
    problems: &mut Problems,
) -> (Vec<Room>, HashMap<&'a str, usize>) {
    let mut room_index: HashMap<&str, usize> = HashMap::new();
    let mut out = Vec::new();
    for (i, room) in rooms.iter().enumerate() {
        let Some(room) = room else { continue };
        room_index.entry(room.id.as_str()).or_insert(out.len());
        out.push(room.validate(&format!("rooms[{i}]"), claims, problems));
    }
    if rooms.is_empty() {
        problems.report("rooms", "a hall needs at least one [[rooms]] entry");
    }
    (out, room_index)
}

impl RoomConfig {
    fn validate(&self, path: &str, claims: &mut Claims, problems: &mut Problems) -> Room {
        claims.id(&format!("{path}.id"), &self.id, problems);
        if self.id == OUTSIDE {
            problems.report(
                format!("{path}.id"),
                "\"outside\" is the street, reserved for doors' `from`/`to`; pick another room id",
            );
        }
        if self.capacity == 0 {
            problems.report(format!("{path}.capacity"), "capacity must be at least 1");
        }
        let service_visits = ServiceVisits::parse(&self.service_visits).unwrap_or_else(|| {
            problems.report(
                format!("{path}.service_visits"),
                format!(
                    "\"{}\" is not one of \"entries\", \"passages\", \"none\"",
                    self.service_visits
                ),
            );
            ServiceVisits::default()
        });
        Room {
            service_visits,
            id: self.id.clone(),
            name: if self.name.is_empty() {
                self.id.clone()
            } else {
                self.name.clone()
            },
            capacity: self.capacity,
            bookable: self.bookable,
        }
    }
}

/// Validates `[[doors]]` against the rooms; also returns each valid door's index by id.
fn validate_doors<'a>(
    doors: &'a [Option<DoorConfig>],
    room_index: &HashMap<&str, usize>,
    claims: &mut Claims,
    problems: &mut Problems,
) -> (Vec<Door>, HashMap<&'a str, usize>) {
    let mut door_index: HashMap<&str, usize> = HashMap::new();
    let mut out = Vec::new();
    for (i, door) in doors.iter().enumerate() {
        let Some(door) = door else { continue };
        let path = format!("doors[{i}]");
        if let Some(valid) = door.validate(&path, room_index, claims, problems) {
            door_index.entry(door.id.as_str()).or_insert(out.len());
            out.push(valid);
        }
    }
    (out, door_index)
}

impl DoorConfig {
    fn validate(
        &self,
        path: &str,
        room_index: &HashMap<&str, usize>,
        claims: &mut Claims,
        problems: &mut Problems,
    ) -> Option<Door> {
        claims.id(&format!("{path}.id"), &self.id, problems);
        let zone = |name: &str, key: &str, problems: &mut Problems| -> Option<Zone> {
            if name == OUTSIDE {
                Some(Zone::Outside)
            } else if let Some(&r) = room_index.get(name) {
                Some(Zone::Room(r))
            } else {
                problems.report(
                    format!("{path}.{key}"),
                    format!("unknown room \"{name}\"; use a room id or \"outside\""),
                );
                None
            }
        };
        let from = zone(&self.from, "from", problems);
        let to = zone(&self.to, "to", problems);
        if self.from == self.to {
            problems.report(
                format!("{path}.to"),
                format!(
                    "a door must join two different zones; both sides are \"{}\"",
                    self.to
                ),
            );
        }
        Some(Door {
            id: self.id.clone(),
            from: from?,
            to: to?,
        })
    }
}

/// Validates `[[buses]]`; also returns each valid bus's index by id.
fn validate_buses<'a>(
    buses: &'a [Option<BusConfig>],
    claims: &mut Claims,
    problems: &mut Problems,
) -> (Vec<Bus>, HashMap<&'a str, usize>) {
    let mut bus_index: HashMap<&str, usize> = HashMap::new();
    let mut out = Vec::new();
    for (i, bus) in buses.iter().enumerate() {
        let Some(b) = bus else { continue };
        if let Some(valid) = b.validate(&format!("buses[{i}]"), claims, problems) {
            bus_index.entry(b.id.as_str()).or_insert(out.len());
            out.push(valid);
        }
    }
    (out, bus_index)
}

impl BusConfig {
    fn validate(&self, path: &str, claims: &mut Claims, problems: &mut Problems) -> Option<Bus> {
        claims.id(&format!("{path}.id"), &self.id, problems);
        let serial = SerialSettings {
            port: self.port.clone(),
            baud: self.baud,
            parity: self.parity,
            data_bits: self.data_bits,
            stop_bits: self.stop_bits,
        }
        .checked(path, problems)?;
        if let Some(other) = claims.ports.insert(self.port.clone(), self.id.clone()) {
            problems.report(
                format!("{path}.port"),
                format!("{} is already bus \"{other}\"", self.port.display()),
            );
        }
        if self.degraded_after == 0 {
            problems.report(format!("{path}.degraded_after"), "must be at least 1");
        }
        if !(100..=3_600_000).contains(&self.degraded_retry_ms) {
            problems.report(
                format!("{path}.degraded_retry_ms"),
                "must be between 100 and 3600000",
            );
        }
        let inter_frame_delay = match self.inter_frame_delay_ms {
            Some(ms) if ms > 1000 => {
                problems.report(
                    format!("{path}.inter_frame_delay_ms"),
                    "must be at most 1000",
                );
                Duration::ZERO
            }
            Some(ms) => Duration::from_millis(ms),
            None => modbus_silence(&serial),
        };
        Some(Bus {
            id: self.id.clone(),
            serial,
            inter_frame_delay,
            degraded_after: self.degraded_after,
            degraded_retry: Duration::from_millis(self.degraded_retry_ms),
        })
    }
}

impl SerialSettings {
    /// These settings, if the entry at `path` (a bus or a serial counter) has a port and
    /// line settings a serial adapter can have.
    pub(super) fn checked(self, path: &str, problems: &mut Problems) -> Option<Self> {
        let mut ok = true;
        if self.port.as_os_str().is_empty() {
            problems.report(format!("{path}.port"), "must name a serial device");
            ok = false;
        }
        if !(300..=4_000_000).contains(&self.baud) {
            problems.report(
                format!("{path}.baud"),
                format!("must be between 300 and 4000000, not {}", self.baud),
            );
            ok = false;
        }
        if !(7..=8).contains(&self.data_bits) {
            problems.report(format!("{path}.data_bits"), "must be 7 or 8");
            ok = false;
        }
        if !(1..=2).contains(&self.stop_bits) {
            problems.report(format!("{path}.stop_bits"), "must be 1 or 2");
            ok = false;
        }
        ok.then_some(self)
    }
}

/// An `http_push` counter delivers to `[terminal_http]`: each one is a problem without it.
fn check_push_counters_have_a_listener(
    counters: &[Option<CounterConfig>],
    problems: &mut Problems,
) {
    for (i, c) in counters.iter().enumerate() {
        if let Some(c) = c
            && c.transport == CounterTransportKind::HttpPush
        {
            problems.report(
                format!("counters[{i}].transport"),
                "an http_push counter delivers to [terminal_http]: add that section with `listen`",
            );
        }
    }
}

/// Modbus RTU's required silence between frames: 3.5 character times of 11 bits, fixed at
/// 1.75 ms above 19200 baud (Modbus over Serial Line, V1.02, section 2.5.1.1).
fn modbus_silence(serial: &SerialSettings) -> Duration {
    if serial.baud > 19_200 {
        Duration::from_micros(1750)
    } else {
        Duration::from_micros(3_500_000 * 11 / u64::from(serial.baud.max(1)) + 1)
    }
}

/// Whether a hall opening at `open` and closing at `close` has a sensible open time. Like the
/// day's label (`HallModel::day_of_close`), a closing time before noon is "after midnight":
/// the hall may then open the evening before (22:00..02:00) or the same morning. A closing
/// time from noon on must follow the opening on the same day. The same time for both is a
/// hall open round the clock (its open time is the whole day).
fn opening_fits(open: jiff::civil::Time, close: jiff::civil::Time) -> bool {
    close.hour() < 12 || open <= close
}

fn parse_hh_mm(text: &str) -> Option<jiff::civil::Time> {
    let (h, m) = text.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m) = (h.parse::<i8>().ok()?, m.parse::<i8>().ok()?);
    jiff::civil::Time::new(h, m, 0, 0).ok()
}
