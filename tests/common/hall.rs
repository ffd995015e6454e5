//! Hall configs for the tests: a lobby off the street and N function rooms off the lobby, one
//! counter per door on its own free loopback port, the three shipped counter profiles in turn.
//! Counters can be moved onto an RS-485 bus ([`BusPlan`]) as Modbus RTU slaves; the bus's port
//! is set once the test has made its pty pair.
//!
//! The closing time (the daily reset) is put about twelve hours from now in the hall's time
//! zone, so no test ever runs across it. A plan can also carry doors the simulator does not
//! know (fire exits whose counters are dead), so the gateway's config and the simulator's
//! config are written from the same plan.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::free_port;

/// The profiles shipped in `firmware-config/counters/`, used in turn.
pub const SHIPPED_PROFILES: [&str; 3] = ["generic-u32", "generic-u16", "generic-u32-input"];

pub const TIME_ZONE: &str = "Asia/Shanghai";
pub const DISTRICT: &str = "testdistrict";
pub const TOPIC_PREFIX: &str = "hallgate";

/// Every counter's `poll_interval_ms` and `timeout_ms`.
pub const POLL_INTERVAL_MS: u64 = 250;
pub const TIMEOUT_MS: u64 = 500;

#[derive(Debug, Clone)]
pub struct RoomPlan {
    pub id: String,
    pub capacity: u32,
}

#[derive(Debug, Clone)]
pub struct CounterPlan {
    pub id: String,
    pub door: String,
    /// The counter's OUT side: `outside` or a room id.
    pub from: String,
    /// The counter's IN side.
    pub to: String,
    pub profile: &'static str,
    pub address: SocketAddr,
    /// Whether the simulator serves this counter; the others are dead on purpose.
    pub simulated: bool,
}

/// An RS-485 bus and the counters on it (their `address` is then unused).
#[derive(Debug, Clone)]
pub struct BusPlan {
    pub id: String,
    /// The gateway side of the bus's pty pair; empty until the test has made the pair.
    pub port: PathBuf,
    pub baud: u32,
    pub degraded_after: u32,
    pub degraded_retry_ms: u64,
    /// Counter id and unit id of each slave.
    pub slaves: Vec<(String, u8)>,
}

#[derive(Debug, Clone)]
pub struct HallPlan {
    pub hall_id: String,
    pub closing_time: String,
    pub rooms: Vec<RoomPlan>,
    pub counters: Vec<CounterPlan>,
    pub buses: Vec<BusPlan>,
    /// Extra `key = value` lines for the gateway's `[uplink]` and `[storage]` sections.
    pub uplink_extra: String,
    pub storage_extra: String,
    /// Whole sections appended to the gateway's config (terminals, vision).
    pub extra_sections: String,
    /// Where the gateway's status page listens (a free loopback port: never the default
    /// 8080, which tests running side by side would share).
    pub status_port: u16,
    /// Extra `key = value` lines for the gateway's `[status]` section (`token_file`).
    pub status_extra: String,
}

impl HallPlan {
    /// `outside → lobby` through the entrance, and `lobby → room-k` for k in 1..=n.
    pub fn lobby_with_function_rooms(hall_id: &str, function_rooms: usize) -> Self {
        let mut rooms = vec![RoomPlan {
            id: "lobby".into(),
            capacity: 500,
        }];
        let mut counters = vec![CounterPlan {
            id: "pc-entrance".into(),
            door: "entrance".into(),
            from: "outside".into(),
            to: "lobby".into(),
            profile: SHIPPED_PROFILES[0],
            address: loopback(free_port()),
            simulated: true,
        }];
        for k in 1..=function_rooms {
            let room = format!("room-{k}");
            rooms.push(RoomPlan {
                id: room.clone(),
                capacity: 200,
            });
            counters.push(CounterPlan {
                id: format!("pc-{room}"),
                door: format!("{room}-door"),
                from: "lobby".into(),
                to: room,
                profile: SHIPPED_PROFILES[k % SHIPPED_PROFILES.len()],
                address: loopback(free_port()),
                simulated: true,
            });
        }
        HallPlan {
            hall_id: hall_id.to_string(),
            closing_time: closing_time_about_12_hours_from_now(),
            rooms,
            counters,
            buses: Vec::new(),
            uplink_extra: String::new(),
            storage_extra: String::new(),
            extra_sections: String::new(),
            status_port: free_port(),
            status_extra: String::new(),
        }
    }

    /// Adds an empty bus; its port is set when the test makes its pty pair.
    pub fn add_bus(&mut self, id: &str, baud: u32, degraded_retry_ms: u64) {
        self.buses.push(BusPlan {
            id: id.to_string(),
            port: PathBuf::new(),
            baud,
            degraded_after: 3,
            degraded_retry_ms,
            slaves: Vec::new(),
        });
    }

    /// Makes counter `counter_id` slave `unit_id` on bus `bus_id` (both already planned).
    pub fn put_on_bus(&mut self, bus_id: &str, counter_id: &str, unit_id: u8) {
        assert!(
            self.counters.iter().any(|c| c.id == counter_id),
            "no counter {counter_id} in the plan"
        );
        let bus = self
            .buses
            .iter_mut()
            .find(|b| b.id == bus_id)
            .unwrap_or_else(|| panic!("no bus {bus_id} in the plan"));
        bus.slaves.push((counter_id.to_string(), unit_id));
    }

    /// The bus and unit of a counter on a bus.
    pub fn bus_of(&self, counter_id: &str) -> Option<(&BusPlan, u8)> {
        self.buses.iter().find_map(|b| {
            b.slaves
                .iter()
                .find(|(id, _)| id == counter_id)
                .map(|&(_, unit)| (b, unit))
        })
    }

    /// Adds a door from `room` to the street whose counter at `address` the simulator does not
    /// serve: it is dead, and nobody crosses that door.
    pub fn add_unsimulated_exit(&mut self, counter_id: &str, room: &str, address: SocketAddr) {
        let profile = SHIPPED_PROFILES[self.counters.len() % SHIPPED_PROFILES.len()];
        self.counters.push(CounterPlan {
            id: counter_id.to_string(),
            door: format!("exit-{counter_id}"),
            from: room.to_string(),
            to: "outside".into(),
            profile,
            address,
            simulated: false,
        });
    }

    pub fn room_ids(&self) -> Vec<String> {
        self.rooms.iter().map(|r| r.id.clone()).collect()
    }

    pub fn simulated_counter_ids(&self) -> Vec<String> {
        self.counters
            .iter()
            .filter(|c| c.simulated)
            .map(|c| c.id.clone())
            .collect()
    }

    pub fn dead_counter_ids(&self) -> Vec<String> {
        self.counters
            .iter()
            .filter(|c| !c.simulated)
            .map(|c| c.id.clone())
            .collect()
    }

    /// The gateway's status page.
    pub fn status_address(&self) -> SocketAddr {
        loopback(self.status_port)
    }

    /// `{prefix}/{district}/{hall_id}`, under which the gateway publishes.
    pub fn topic_base(&self) -> String {
        format!("{TOPIC_PREFIX}/{DISTRICT}/{}", self.hall_id)
    }

    /// The gateway's config: every door and counter.
    pub fn gateway_toml(&self, broker_port: u16, data_dir: &Path) -> String {
        let mut text = self.toml(broker_port, data_dir, |_| true);
        text.push_str(&self.extra_sections);
        text.push_str(&format!(
            "\n[status]\nlisten = \"127.0.0.1:{}\"\n{}\n",
            self.status_port, self.status_extra
        ));
        text
    }

    /// The simulator's config: only the counters it serves.
    pub fn simulator_toml(&self, broker_port: u16, data_dir: &Path) -> String {
        self.toml(broker_port, data_dir, |c| c.simulated)
    }

    fn toml(
        &self,
        broker_port: u16,
        data_dir: &Path,
        include: impl Fn(&CounterPlan) -> bool,
    ) -> String {
        let mut text = format!(
            r#"# Written by the hallgate test harness (tests/common/hall.rs).

[hall]
id = {id}
name = "Test hall {id_plain}"
district = "{DISTRICT}"
time_zone = "{TIME_ZONE}"
# About twelve hours from when the test started, so no daily reset falls inside it.
closing_time = "{closing}"

[uplink]
broker = "mqtt://127.0.0.1:{broker_port}"
keep_alive_secs = 5
state_interval_ms = 500
max_reconnect_backoff_ms = 1000
{uplink_extra}

[storage]
data_dir = {data_dir}
commit_interval_ms = 200
{storage_extra}
"#,
            id = quote(&self.hall_id),
            id_plain = self.hall_id,
            closing = self.closing_time,
            data_dir = quote(&data_dir.display().to_string()),
            uplink_extra = self.uplink_extra,
            storage_extra = self.storage_extra,
        );
        for room in &self.rooms {
            text.push_str(&format!(
                "\n[[rooms]]\nid = {}\ncapacity = {}\n",
                quote(&room.id),
                room.capacity
            ));
        }
        let counters: Vec<&CounterPlan> = self.counters.iter().filter(|c| include(c)).collect();
        for c in &counters {
            text.push_str(&format!(
                "\n[[doors]]\nid = {}\nfrom = {}\nto = {}\n",
                quote(&c.door),
                quote(&c.from),
                quote(&c.to)
            ));
        }
        for b in &self.buses {
            text.push_str(&format!(
                "\n[[buses]]\nid = {}\nport = {}\nbaud = {}\ndegraded_after = {}\n\
                 degraded_retry_ms = {}\n",
                quote(&b.id),
                quote(&b.port.display().to_string()),
                b.baud,
                b.degraded_after,
                b.degraded_retry_ms
            ));
        }
        for c in &counters {
            let link = match self.bus_of(&c.id) {
                Some((bus, unit)) => format!(
                    "transport = \"modbus_rtu\"\nbus = {}\nunit_id = {unit}\n",
                    quote(&bus.id)
                ),
                None => format!(
                    "transport = \"modbus_tcp\"\naddress = \"{}\"\nunit_id = 1\n",
                    c.address
                ),
            };
            text.push_str(&format!(
                "\n[[counters]]\nid = {}\ndoor = {}\nprofile = {}\n{link}\
                 poll_interval_ms = {POLL_INTERVAL_MS}\ntimeout_ms = {TIMEOUT_MS}\n",
                quote(&c.id),
                quote(&c.door),
                quote(c.profile),
            ));
        }
        text
    }
}

pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// "HH:MM" about twelve hours from now in the hall's time zone.
pub fn closing_time_about_12_hours_from_now() -> String {
    let tz = jiff::tz::TimeZone::get(TIME_ZONE).expect("the bundled tz database knows the zone");
    let later = jiff::Timestamp::now()
        .to_zoned(tz)
        .checked_add(jiff::SignedDuration::from_hours(12))
        .expect("twelve hours from now is a representable time");
    format!("{:02}:{:02}", later.hour(), later.minute())
}

/// A TOML basic string.
fn quote(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
