//! `[[counters]]`: each people counter checked against the doors, buses and profiles it names,
//! into a [`Counter`] the device drivers trust.
//!
//! A counter is checked key by key, always in the same order (id, door, profile, intervals,
//! transport, then keys that do not apply to its transport), which is the order its problems
//! are listed in. What the counters before it took (a door, a Modbus address and unit, a bus
//! unit, a serial port) is a problem for the later one.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::Overrides;
use super::claims::Claims;
use super::file::{
    BusConfig, CounterConfig, CounterTransportKind, DoorConfig, default_baud, default_data_bits,
    default_stop_bits,
};
use super::model::{Counter, CounterTransport, SerialSettings};
use super::problems::{Problems, Report};
use super::profile::{self, CounterProfile, ProfileSet};
use super::secrets::{SecretRules, read_secret_with};
use crate::devices::stream::SerialProfile;

/// What the counters are checked against.
pub(super) struct CounterContext<'a> {
    /// The doors as written (a door that failed its own checks is not "unknown" here too).
    pub doors_written: &'a [Option<DoorConfig>],
    /// Valid doors by id, to their index in `Config::doors`.
    pub door_index: &'a HashMap<&'a str, usize>,
    /// The buses as written, and the valid ones by id.
    pub buses_written: &'a [Option<BusConfig>],
    pub bus_index: &'a HashMap<&'a str, usize>,
    /// Modbus register maps, and the formats of streaming counters.
    pub profiles: &'a ProfileSet,
    pub serial_profiles: &'a BTreeMap<String, SerialProfile>,
    pub base_dir: &'a Path,
    pub overrides: &'a Overrides,
}

/// Validates `[[counters]]`; entries with problems are left out (and reported).
pub(super) fn validate_counters(
    counters: &[Option<CounterConfig>],
    cx: &CounterContext<'_>,
    claims: &mut Claims,
    problems: &mut Problems,
) -> Vec<Counter> {
    let mut out = Vec::new();
    for (i, counter) in counters.iter().enumerate() {
        let Some(c) = counter else { continue };
        if let Some(counter) = c.validate(&format!("counters[{i}]"), cx, claims, problems) {
            out.push(counter);
        }
    }
    out
}

impl CounterConfig {
    /// Checks the counter at key path `path`.
    fn validate(
        &self,
        path: &str,
        cx: &CounterContext<'_>,
        claims: &mut Claims,
        problems: &mut Problems,
    ) -> Option<Counter> {
        claims.id(&format!("{path}.id"), &self.id, problems);
        let door = self.door(path, cx, claims, problems);
        let serial_format = self.serial_format(path, cx, problems);
        let profile = self.profile(path, serial_format.as_ref(), cx, problems);
        self.check_timing(path, problems);
        let transport = match self.transport {
            CounterTransportKind::ModbusTcp => self.modbus_tcp(path, claims, problems),
            CounterTransportKind::SerialStream => {
                self.serial_stream(path, serial_format, claims, problems)
            }
            CounterTransportKind::HttpPush => self.http_push(path, cx, problems),
            CounterTransportKind::ModbusRtu => self.modbus_rtu(path, cx, claims, problems),
        };
        if let Some(key) = self.stray_key() {
            problems.report(
                format!("{path}.{key}"),
                format!("`{key}` does not apply to a {:?} counter", self.transport),
            );
        }
        let mut profile = profile?;
        if let Some(n) = self.max_crossings_per_second {
            // The door's own physics, over the counter model's default.
            profile.max_crossings_per_second = n;
        }
        Some(Counter {
            id: self.id.clone(),
            door: door?,
            profile,
            transport: transport?,
            poll_interval: Duration::from_millis(self.poll_interval_ms),
            timeout: Duration::from_millis(self.timeout_ms),
        })
    }

    /// The door's index; one counter per door.
    fn door(
        &self,
        path: &str,
        cx: &CounterContext<'_>,
        claims: &mut Claims,
        problems: &mut Problems,
    ) -> Option<usize> {
        match cx.door_index.get(self.door.as_str()) {
            Some(&d) => {
                if let Some(other) = claims.counted_doors.insert(d, self.id.clone()) {
                    problems.report(
                        format!("{path}.door"),
                        format!(
                            "door \"{}\" is already counted by counter \"{other}\"; two counters on one door count every crossing twice",
                            self.door
                        ),
                    );
                }
                Some(d)
            }
            None => {
                if !cx.doors_written.iter().flatten().any(|d| d.id == self.door) {
                    problems.report(
                        format!("{path}.door"),
                        format!("unknown door \"{}\"", self.door),
                    );
                }
                None
            }
        }
    }

    /// A `serial_stream` counter's frame or line format, named by `profile`.
    fn serial_format(
        &self,
        path: &str,
        cx: &CounterContext<'_>,
        problems: &mut Problems,
    ) -> Option<SerialProfile> {
        if self.transport != CounterTransportKind::SerialStream {
            return None;
        }
        match cx.serial_profiles.get(&self.profile) {
            Some(p) => Some(p.clone()),
            None => {
                let known: Vec<&str> = cx.serial_profiles.keys().map(String::as_str).collect();
                problems.report(
                    format!("{path}.profile"),
                    format!(
                        "unknown serial counter profile \"{}\"; known: {}",
                        self.profile,
                        known.join(", ")
                    ),
                );
                None
            }
        }
    }

    /// The register map: the named Modbus profile, or a streaming counter's register image.
    fn profile(
        &self,
        path: &str,
        serial_format: Option<&SerialProfile>,
        cx: &CounterContext<'_>,
        problems: &mut Problems,
    ) -> Option<CounterProfile> {
        match (serial_format, cx.profiles.get(&self.profile)) {
            (Some(format), _) => Some(register_image(format)),
            (None, Some(p)) if self.transport != CounterTransportKind::SerialStream => {
                Some(p.clone())
            }
            (None, _) if self.transport == CounterTransportKind::SerialStream => None,
            (None, _) => {
                let known: Vec<&str> = cx.profiles.profiles.keys().map(String::as_str).collect();
                problems.report(
                    format!("{path}.profile"),
                    format!(
                        "unknown counter profile \"{}\"; known: {}",
                        self.profile,
                        known.join(", ")
                    ),
                );
                None
            }
        }
    }

    /// `poll_interval_ms` and `timeout_ms`.
    fn check_timing(&self, path: &str, problems: &mut Problems) {
        if !(100..=3_600_000).contains(&self.poll_interval_ms) {
            problems.report(
                format!("{path}.poll_interval_ms"),
                format!(
                    "must be between 100 and 3600000 ms, not {}",
                    self.poll_interval_ms
                ),
            );
        }
        if let Some(problem) = self
            .max_crossings_per_second
            .and_then(profile::check_max_crossings_per_second)
        {
            problems.report(format!("{path}.max_crossings_per_second"), problem);
        }
        if self.timeout_ms < 10 || self.timeout_ms > 60_000 {
            problems.report(
                format!("{path}.timeout_ms"),
                format!("must be between 10 and 60000 ms, not {}", self.timeout_ms),
            );
        }
    }

    /// A `modbus_tcp` counter's address; one counter per address and unit.
    fn modbus_tcp(
        &self,
        path: &str,
        claims: &mut Claims,
        problems: &mut Problems,
    ) -> Option<CounterTransport> {
        let Some(a) = self.address.as_deref() else {
            problems.report(path, "a modbus_tcp counter needs `address = \"HOST:PORT\"`");
            return None;
        };
        match resolve_socket_addr(a) {
            Ok(address) => {
                if let Some(other) = claims
                    .addresses
                    .insert((address, self.unit_id), self.id.clone())
                {
                    problems.report(
                        format!("{path}.address"),
                        format!(
                            "{address} unit {} is already counter \"{other}\"",
                            self.unit_id
                        ),
                    );
                }
                Some(CounterTransport::ModbusTcp {
                    address,
                    unit_id: self.unit_id,
                })
            }
            Err(message) => {
                problems.report(format!("{path}.address"), message);
                None
            }
        }
    }

    /// A `serial_stream` counter's own port and line settings.
    fn serial_stream(
        &self,
        path: &str,
        serial_format: Option<SerialProfile>,
        claims: &mut Claims,
        problems: &mut Problems,
    ) -> Option<CounterTransport> {
        match (&self.port, serial_format) {
            (None, _) => {
                problems.report(
                    path,
                    "a serial_stream counter needs `port = \"/dev/serial/by-id/…\"`",
                );
                None
            }
            (Some(port), Some(format)) => {
                let serial = SerialSettings {
                    port: port.clone(),
                    baud: self.baud.unwrap_or_else(default_baud),
                    parity: self.parity.unwrap_or_default(),
                    data_bits: self.data_bits.unwrap_or_else(default_data_bits),
                    stop_bits: self.stop_bits.unwrap_or_else(default_stop_bits),
                }
                .checked(path, problems);
                if let Some(other) = claims.ports.insert(port.clone(), self.id.clone()) {
                    problems.report(
                        format!("{path}.port"),
                        format!("{} is already used by \"{other}\"", port.display()),
                    );
                }
                serial.map(|serial| CounterTransport::SerialStream { serial, format })
            }
            (Some(_), None) => None,
        }
    }

    /// A `modbus_rtu` counter's bus and slave address; one counter per bus and unit.
    fn modbus_rtu(
        &self,
        path: &str,
        cx: &CounterContext<'_>,
        claims: &mut Claims,
        problems: &mut Problems,
    ) -> Option<CounterTransport> {
        let Some(name) = self.bus.as_deref() else {
            problems.report(
                path,
                "a modbus_rtu counter needs `bus = \"BUS_ID\"` naming one of [[buses]]",
            );
            return None;
        };
        let Some(&bus) = cx.bus_index.get(name) else {
            if !cx.buses_written.iter().flatten().any(|b| b.id == name) {
                problems.report(format!("{path}.bus"), format!("unknown bus \"{name}\""));
            }
            return None;
        };
        if !(1..=247).contains(&self.unit_id) {
            problems.report(
                format!("{path}.unit_id"),
                format!(
                    "a Modbus RTU slave address is 1 to 247, not {}",
                    self.unit_id
                ),
            );
        }
        if let Some(other) = claims
            .rtu_units
            .insert((bus, self.unit_id), self.id.clone())
        {
            problems.report(
                format!("{path}.unit_id"),
                format!(
                    "bus \"{name}\" unit {} is already counter \"{other}\"",
                    self.unit_id
                ),
            );
        }
        Some(CounterTransport::ModbusRtu {
            bus,
            unit_id: self.unit_id,
        })
    }

    /// An `http_push` counter's source address and login (a people-counting camera).
    fn http_push(
        &self,
        path: &str,
        cx: &CounterContext<'_>,
        problems: &mut Problems,
    ) -> Option<CounterTransport> {
        let address = match self.address.as_deref().map(str::parse::<std::net::IpAddr>) {
            None => Some(None),
            Some(Ok(ip)) => Some(Some(ip)),
            Some(Err(_)) => {
                problems.report(
                    format!("{path}.address"),
                    "an http_push counter's `address` is the camera's IP (only it may \
                     push as this counter), such as 192.168.50.41",
                );
                None
            }
        };
        let login = match (&self.username, &self.password_file) {
            (user, Some(file)) => {
                // A login the gateway checks, like a push terminal's.
                let secret = read_secret_with(
                    cx.base_dir,
                    file,
                    &format!("{path}.password_file"),
                    SecretRules::guarding(cx.overrides.allow_example_secrets),
                    problems,
                );
                secret.map(|s| Some((user.clone().unwrap_or_default(), s)))
            }
            (None, None) => Some(None),
            (Some(_), None) => {
                problems.report(
                    format!("{path}.password_file"),
                    "`username` needs `password_file`",
                );
                None
            }
        };
        if matches!((&address, &login), (Some(None), Some(None))) {
            problems.report(
                path,
                "an http_push counter needs `address` or `password_file`, so no one else \
                 can push counts as it",
            );
        }
        match (address, login) {
            (Some(address), Some(login)) => Some(CounterTransport::HttpPush { address, login }),
            _ => None,
        }
    }

    /// The first key set that does not apply to this counter's transport.
    fn stray_key(&self) -> Option<&'static str> {
        let serial_keys = [
            self.port.as_ref().map(|_| "port"),
            self.baud.map(|_| "baud"),
            self.parity.map(|_| "parity"),
            self.data_bits.map(|_| "data_bits"),
            self.stop_bits.map(|_| "stop_bits"),
        ];
        let stray = match self.transport {
            CounterTransportKind::ModbusTcp => self
                .bus
                .as_ref()
                .map(|_| "bus")
                .or(serial_keys.into_iter().flatten().next()),
            CounterTransportKind::ModbusRtu => self
                .address
                .as_ref()
                .map(|_| "address")
                .or(serial_keys.into_iter().flatten().next()),
            CounterTransportKind::SerialStream => self
                .address
                .as_ref()
                .map(|_| "address")
                .or(self.bus.as_ref().map(|_| "bus")),
            CounterTransportKind::HttpPush => self
                .bus
                .as_ref()
                .map(|_| "bus")
                .or(serial_keys.into_iter().flatten().next()),
        };
        stray.or(match self.transport {
            CounterTransportKind::HttpPush => None,
            _ => self
                .username
                .as_ref()
                .map(|_| "username")
                .or(self.password_file.as_ref().map(|_| "password_file")),
        })
    }
}

/// The register image equivalent to a streaming counter's totals: cumulative, with the
/// format's width and wrap. Only its counting fields are ever used.
fn register_image(format: &SerialProfile) -> CounterProfile {
    use profile::{CountMode, FunctionCode, ValueType, WordOrder};
    let value_type = if format.wrap_modulus <= 1 << 16 {
        ValueType::U16
    } else {
        ValueType::U32
    };
    let width = value_type.registers();
    CounterProfile {
        name: format.name.clone(),
        function: FunctionCode::HoldingRegisters,
        value_type,
        word_order: WordOrder::HighFirst,
        mode: CountMode::Cumulative,
        wrap_modulus: format.wrap_modulus,
        max_step: None,
        on_decrease: profile::OnDecrease::Reset,
        max_crossings_per_second: profile::DEFAULT_MAX_CROSSINGS_PER_SECOND,
        read_start: 0,
        read_count: 2 * width,
        in_offset: 0,
        out_offset: width,
    }
}

/// `HOST:PORT` to a socket address; names are resolved once, at load.
fn resolve_socket_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    use std::net::ToSocketAddrs;
    match text.to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| format!("\"{text}\" resolves to no address")),
        Err(error) => Err(format!(
            "\"{text}\" is not HOST:PORT or cannot be resolved: {error}"
        )),
    }
}
