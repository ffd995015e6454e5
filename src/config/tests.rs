//! Unit tests of `parse`: whole hall configs, good and bad, and broker URLs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

const GOOD: &str = r#"
[hall]
id = "hall-1"
district = "xuhui"
closing_time = "21:30"

[uplink]
broker = "mqtt://127.0.0.1:1883"

[[rooms]]
id = "lobby"
capacity = 50

[[rooms]]
id = "reading"
capacity = 20

[[doors]]
id = "entrance"
from = "outside"
to = "lobby"

[[doors]]
id = "reading-door"
from = "lobby"
to = "reading"

[[counters]]
id = "c1"
door = "entrance"
profile = "generic-u16"
transport = "modbus_tcp"
address = "127.0.0.1:1502"

[[counters]]
id = "c2"
door = "reading-door"
profile = "generic-u32"
transport = "modbus_tcp"
address = "127.0.0.1:1503"
"#;

fn problems(text: &str) -> Vec<Problem> {
    parse(text, Path::new("."), &Overrides::default()).expect_err("config should be rejected")
}

/// GOOD with `extra` appended, parsed against a directory holding `t.pass` (0600, long
/// enough).
fn parse_with_secret(extra: &str) -> Result<Config, Vec<Problem>> {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("t.pass");
    std::fs::write(&file, "a-long-enough-secret\n").expect("writes");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    parse(
        &format!("{GOOD}\n{extra}"),
        dir.path(),
        &Overrides::default(),
    )
}

fn paths(result: Result<Config, Vec<Problem>>) -> Vec<String> {
    result
        .expect_err("config should be rejected")
        .into_iter()
        .map(|p| p.path)
        .collect()
}

#[test]
fn http_terminals_and_a_counting_camera_validate_with_their_transports() {
    let cfg = parse_with_secret(
        r#"
[terminal_http]
listen = "127.0.0.1:8090"

[[terminals]]
id = "T1"
profile = "hikvision-isapi"
room = "lobby"
transport = "http_push"
password_file = "t.pass"

[[terminals]]
id = "ZK1"
profile = "zkteco-adms"
room = "reading"
transport = "http_push"
address = "127.0.0.1"

[[terminals]]
id = "T3"
profile = "hikvision-isapi"
room = "reading"
transport = "hikvision_pull"
address = "127.0.0.1:8081"
username = "hallgate"
password_file = "t.pass"
poll_interval_ms = 5000
"#,
    )
    .expect("valid");
    assert_eq!(cfg.terminal_http.map(|h| h.listen.port()), Some(8090));
    assert_eq!(
        cfg.terminals[1].transport,
        terminals::TerminalTransport::HttpPush {
            address: Some("127.0.0.1".parse().expect("ip"))
        }
    );
    assert_eq!(
        cfg.terminals[2].transport,
        terminals::TerminalTransport::HikvisionPull {
            address: "127.0.0.1:8081".into(),
            interval: Duration::from_secs(5)
        }
    );
}

#[test]
fn http_transports_name_what_is_missing_by_key_path() {
    // A push terminal without [terminal_http], a ZKTeco one without the address it is
    // known by, a pull without the device's address, a poll interval on a push.
    let found = paths(parse_with_secret(
        r#"
[[terminals]]
id = "T1"
profile = "hikvision-isapi"
room = "lobby"
transport = "http_push"
password_file = "t.pass"
poll_interval_ms = 1000

[[terminals]]
id = "ZK1"
profile = "zkteco-adms"
room = "reading"
transport = "http_push"
password_file = "t.pass"

[[terminals]]
id = "D1"
profile = "dahua-access"
room = "reading"
transport = "dahua_stream"
username = "hallgate"
password_file = "t.pass"
"#,
    ));
    for expected in [
        "terminals[0].transport",
        "terminals[0].poll_interval_ms",
        "terminals[1].address",
        "terminals[2].address",
    ] {
        assert!(found.iter().any(|p| p == expected), "{expected}: {found:?}");
    }
}

#[test]
fn a_counting_camera_needs_the_http_listener_and_a_way_to_know_it() {
    let counter = r#"
[[doors]]
id = "side"
from = "outside"
to = "reading"

[[counters]]
id = "cam"
door = "side"
profile = "hikvision-people-counting"
transport = "http_push"
"#;
    let found = paths(parse_with_secret(counter));
    assert!(
        found.iter().any(|p| p == "counters[2].transport"),
        "{found:?}"
    );
    assert!(found.iter().any(|p| p == "counters[2]"), "{found:?}");
    let cfg = parse_with_secret(&format!(
        "{counter}address = \"127.0.0.1\"\n\n[terminal_http]\nlisten = \"127.0.0.1:0\"\n"
    ))
    .expect("valid with an address and the listener");
    assert!(matches!(
        cfg.counters[2].transport,
        CounterTransport::HttpPush {
            address: Some(_),
            login: None
        }
    ));
}

#[test]
fn a_good_config_validates_into_resolved_indices() {
    let cfg = parse(GOOD, Path::new("."), &Overrides::default()).expect("valid");
    assert_eq!(cfg.rooms.len(), 2);
    assert_eq!(cfg.doors[1].from, Zone::Room(0));
    assert_eq!(cfg.doors[1].to, Zone::Room(1));
    assert_eq!(cfg.counters[1].door, 1);
    assert_eq!(cfg.uplink.client_id, "hallgate-hall-1");
    assert_eq!(cfg.hall.closing_time, jiff::civil::time(21, 30, 0, 0));
}

#[test]
fn overrides_replace_broker_and_data_dir() {
    let o = Overrides {
        uplink: Some("mqtt://10.1.2.3:1884".into()),
        data_dir: Some("/tmp/x".into()),
        ..Overrides::default()
    };
    let cfg = parse(GOOD, Path::new("."), &o).expect("valid");
    assert_eq!(
        (cfg.uplink.host.as_str(), cfg.uplink.port),
        ("10.1.2.3", 1884)
    );
    assert_eq!(cfg.storage.data_dir, PathBuf::from("/tmp/x"));
}

#[test]
fn every_problem_is_reported_at_once_with_its_path_and_line() {
    let bad = GOOD
        .replace("capacity = 20", "capacity = 0")
        .replace("profile = \"generic-u32\"", "profile = \"nope\"")
        .replace("to = \"reading\"", "to = \"lobby\"")
        .replace("id = \"c2\"", "id = \"c2\"\ncolour = \"red\"");
    let p = problems(&bad);
    let paths: Vec<&str> = p.iter().map(|p| p.path.as_str()).collect();
    assert!(paths.contains(&"rooms[1].capacity"), "{p:#?}");
    assert!(paths.contains(&"doors[1].to"), "{p:#?}");
    assert!(paths.contains(&"counters[1].colour"), "{p:#?}");
    assert!(p.iter().all(|p| p.position.is_some()), "{p:#?}");
    let cap = p
        .iter()
        .find(|p| p.path == "rooms[1].capacity")
        .expect("capacity");
    assert_eq!(cap.position.map(|(l, _)| l), Some(16));
}

#[test]
fn unknown_rooms_profiles_and_duplicate_ids_are_named() {
    let bad = GOOD
        .replace("id = \"reading\"", "id = \"lobby\"")
        .replace("profile = \"generic-u32\"", "profile = \"acme\"");
    let text = problems(&bad)
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(text.contains("rooms[1].id"), "{text}");
    assert!(text.contains("duplicate id \"lobby\""), "{text}");
    assert!(text.contains("counters[1].profile"), "{text}");
    assert!(text.contains("unknown counter profile \"acme\""), "{text}");
}

const BUS: &str = r#"
[[buses]]
id = "rs485"
port = "/dev/serial/by-id/usb-adapter"
baud = 19200

[[counters]]
id = "c3"
door = "reading-door"
profile = "generic-u16"
transport = "modbus_rtu"
bus = "rs485"
unit_id = 3
"#;

#[test]
fn rtu_counters_hang_on_a_bus_with_modbus_silence_by_default() {
    // The second door's TCP counter moves to the bus.
    let text = GOOD.replace(
        "id = \"c2\"\ndoor = \"reading-door\"",
        "id = \"c2\"\ndoor = \"entrance-2\"",
    ) + "[[doors]]\nid = \"entrance-2\"\nfrom = \"outside\"\nto = \"reading\"\n"
        + BUS;
    let cfg = parse(&text, Path::new("."), &Overrides::default()).expect("valid");
    assert_eq!(cfg.buses.len(), 1);
    assert_eq!(cfg.buses[0].serial.baud, 19200);
    // 3.5 characters of 11 bits at 19200 baud is about 2 ms.
    assert_eq!(cfg.buses[0].inter_frame_delay.as_micros(), 2006);
    let c3 = cfg.counters.iter().find(|c| c.id == "c3").expect("c3");
    assert_eq!(
        c3.transport,
        CounterTransport::ModbusRtu { bus: 0, unit_id: 3 }
    );
}

#[test]
fn rtu_mistakes_are_named() {
    let text = GOOD.to_string()
        + &BUS
            .replace(
                "bus = \"rs485\"",
                "bus = \"rs458\"\naddress = \"1.2.3.4:502\"",
            )
            .replace("door = \"reading-door\"", "door = \"entrance\"")
            .replace("unit_id = 3", "unit_id = 0");
    let text = problems(&text)
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(text.contains("counters[2].bus"), "{text}");
    assert!(text.contains("unknown bus \"rs458\""), "{text}");
    assert!(text.contains("counters[2].address"), "{text}");
    assert!(text.contains("already counted by counter \"c1\""), "{text}");
}

#[test]
fn syntax_errors_give_line_and_column() {
    let p = problems("[hall]\nid = \"x\"\ndistrict = \n");
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].position.map(|(l, _)| l), Some(3), "{p:?}");
}

fn url(tls: bool, host: &str, port: u16) -> Result<BrokerUrl, String> {
    Ok(BrokerUrl {
        tls,
        host: host.into(),
        port,
    })
}

#[test]
fn broker_urls_parse() {
    assert_eq!(
        parse_broker_url("mqtt://broker.city:8883"),
        url(false, "broker.city", 8883)
    );
    assert_eq!(parse_broker_url("mqtt://h"), url(false, "h", 1883));
    assert_eq!(parse_broker_url("tcp://h:1884/"), url(false, "h", 1884));
    assert!(parse_broker_url("http://h:1").is_err());
    assert!(parse_broker_url("mqtt://h:99999").is_err());
    assert!(parse_broker_url("mqtt://user:pw@h:1883").is_err());
}

#[test]
fn mqtts_urls_select_tls_with_port_8883_by_default() {
    assert_eq!(
        parse_broker_url("mqtts://overview.city.example"),
        url(true, "overview.city.example", 8883)
    );
    assert_eq!(
        parse_broker_url("mqtts://overview.city.example:18883"),
        url(true, "overview.city.example", 18883)
    );
    assert_eq!(parse_broker_url("mqtts://[::1]"), url(true, "::1", 8883));
    assert_eq!(
        parse_broker_url("mqtts://10.0.0.5:8884"),
        url(true, "10.0.0.5", 8884)
    );
    assert!(parse_broker_url("mqtts://").is_err());
    assert!(parse_broker_url("mqtts://:8883").is_err());
    assert!(parse_broker_url("ssl://h:8883").is_err());
}

#[test]
fn an_mqtts_host_no_certificate_can_name_is_a_problem_on_the_broker_key() {
    let o = Overrides {
        uplink: Some("mqtts://bad_host!:8883".into()),
        ..Overrides::default()
    };
    let p = parse(GOOD, Path::new("."), &o).expect_err("refused");
    assert!(
        p.iter()
            .any(|p| p.path == "--uplink" && p.message.contains("TLS certificate")),
        "{p:#?}"
    );
}

#[test]
fn mqtts_without_a_ca_file_is_a_problem_on_ca_file() {
    let text = GOOD.replace("mqtt://127.0.0.1:1883", "mqtts://broker.city");
    let p = problems(&text);
    assert!(
        p.iter()
            .any(|p| p.path == "uplink.ca_file" && p.message.contains("needs `ca_file`")),
        "{p:#?}"
    );
}

#[test]
fn client_certificate_and_key_go_together() {
    let text = GOOD.replace(
        "broker = \"mqtt://127.0.0.1:1883\"",
        "broker = \"mqtts://broker.city\"\nca_file = \"ca.pem\"\nclient_cert_file = \"c.pem\"",
    );
    let p = problems(&text);
    assert!(
        p.iter().any(|p| p.path == "uplink.client_key_file"),
        "{p:#?}"
    );
}

#[test]
fn an_inline_uplink_password_is_an_unknown_key_and_is_not_echoed() {
    let text = GOOD.replace(
        "broker = \"mqtt://127.0.0.1:1883\"",
        "broker = \"mqtt://127.0.0.1:1883\"\nusername = \"hall\"\npassword = \"hunter2-inline\"",
    );
    let p = problems(&text);
    assert!(p.iter().any(|p| p.path == "uplink.password"), "{p:#?}");
    assert!(
        p.iter().all(|p| !p.to_string().contains("hunter2-inline")),
        "{p:#?}"
    );
}

#[test]
fn the_tls_keys_are_used_over_mqtts_and_checked_but_unused_over_plain_mqtt() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("ca.pem"), crate::uplink::tls::TEST_CA_PEM).expect("CA file");
    let text = GOOD.replace(
        "broker = \"mqtt://127.0.0.1:1883\"",
        "broker = \"mqtts://broker.city\"\nca_file = \"ca.pem\"",
    );
    let cfg = parse(&text, dir.path(), &Overrides::default()).expect("valid");
    assert_eq!(cfg.uplink.port, 8883);
    assert_eq!(cfg.uplink.tls.as_ref().map(|t| t.trusted_cas), Some(1));
    assert!(!cfg.uplink.tls_files_unused);

    let plain = Overrides {
        uplink: Some("mqtt://127.0.0.1:1883".into()),
        ..Overrides::default()
    };
    let cfg = parse(&text, dir.path(), &plain).expect("valid");
    assert!(cfg.uplink.tls.is_none());
    assert!(cfg.uplink.tls_files_unused);

    // Checked even when unused: a damaged CA file is a problem either way.
    std::fs::write(dir.path().join("ca.pem"), "garbage").expect("CA file");
    let p = parse(&text, dir.path(), &plain).expect_err("a damaged CA file is refused");
    assert!(p.iter().any(|p| p.path == "uplink.ca_file"), "{p:#?}");
}

#[test]
fn a_username_needs_a_password_file() {
    let text = GOOD.replace(
        "broker = \"mqtt://127.0.0.1:1883\"",
        "broker = \"mqtt://127.0.0.1:1883\"\nusername = \"hall\"",
    );
    let p = problems(&text);
    assert!(p.iter().any(|p| p.path == "uplink.password_file"), "{p:#?}");
}

#[test]
fn a_counter_may_set_its_doors_max_crossings_per_second_over_the_profiles() {
    let wide = GOOD.replace(
        "address = \"127.0.0.1:1502\"",
        "address = \"127.0.0.1:1502\"\nmax_crossings_per_second = 25",
    );
    let cfg = parse(&wide, Path::new("."), &Overrides::default()).expect("valid");
    assert_eq!(
        cfg.counters[0].profile.counting().max_crossings_per_second,
        25
    );
    assert_eq!(
        cfg.counters[1].profile.counting().max_crossings_per_second,
        profile::DEFAULT_MAX_CROSSINGS_PER_SECOND
    );
    assert_eq!(cfg.counters[1].profile.counting().max_step, None);
    let zero = GOOD.replace(
        "address = \"127.0.0.1:1503\"",
        "address = \"127.0.0.1:1503\"\nmax_crossings_per_second = 0",
    );
    let text = problems(&zero)
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        text.contains("counters[1].max_crossings_per_second"),
        "{text}"
    );
}
