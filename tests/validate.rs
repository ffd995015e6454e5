//! `hallgate validate`, run as a process: a bad hall config exits 78 (sysexits `EX_CONFIG`,
//! which stops systemd from restarting the gateway in a loop) and names every problem by its
//! key path and, where the file has one, its line and column, so an installer can fix the
//! file without reading code.
//!
//! Each bad config is the shipped example with one thing broken, so the tests stay in step
//! with the example hall and each failure has exactly one cause.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::hall::HallPlan;
use common::{Finished, run_to_completion};

/// sysexits.h `EX_CONFIG`.
const EXIT_BAD_CONFIG: i32 = 78;

fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("firmware-config/examples/hall.toml")
}

fn example() -> String {
    std::fs::read_to_string(example_path()).expect("the shipped example hall is readable")
}

/// `text` with the one occurrence of `from` replaced; panics if `from` is not there exactly
/// once, so an edit to the example cannot quietly turn a test into a no-op.
fn edit(text: &str, from: &str, to: &str) -> String {
    let found = text.matches(from).count();
    assert_eq!(
        found, 1,
        "the example hall should contain {from:?} exactly once, found {found} times"
    );
    text.replacen(from, to, 1)
}

/// 1-based line of the one occurrence of `needle` in `text`.
fn line_of(text: &str, needle: &str) -> usize {
    let at = text
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} is not in the config"));
    text[..at].matches('\n').count() + 1
}

fn validate(text: &str) -> Finished {
    let dir = tempfile::tempdir().expect("a temporary directory can be created");
    let path = dir.path().join("hall.toml");
    std::fs::write(&path, text).expect("the config can be written");
    validate_file(&path, dir.path())
}

fn validate_file(path: &Path, dir: &Path) -> Finished {
    let mut command = Command::new(common::HALLGATE);
    command.arg("validate").arg("--config").arg(path);
    run_to_completion(command, dir, "validate", Duration::from_secs(30))
        .expect("hallgate validate runs to completion")
}

/// Asserts the run was rejected as a bad config.
fn assert_rejected(out: &Finished) {
    assert_eq!(
        out.status.code(),
        Some(EXIT_BAD_CONFIG),
        "a bad config should exit {EXIT_BAD_CONFIG}; got {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        out.stdout,
        out.stderr
    );
}

/// Asserts stderr has a problem at key `path` whose text contains `words`, at `line` (with a
/// column) when given.
fn assert_problem(out: &Finished, path: &str, line: Option<usize>, words: &str) {
    let found = out.stderr.lines().find(|l| names_path(l, path));
    let Some(found) = found else {
        panic!(
            "stderr should name the key path `{path}`; it says:\n{}",
            out.stderr
        );
    };
    assert!(
        found.contains(words),
        "the problem at `{path}` should say {words:?}; it says:\n{found}"
    );
    if let Some(line) = line {
        let position = format!("(line {line}, column ");
        assert!(
            found.contains(&position),
            "the problem at `{path}` should give {position}…); it says:\n{found}"
        );
    }
}

/// Whether `line` names key path `path` as a whole (`hall` must not match `hall.id`).
fn names_path(line: &str, path: &str) -> bool {
    line.match_indices(path).any(|(at, _)| {
        let before = line[..at].chars().next_back();
        let after = line[at + path.len()..].chars().next();
        let boundary = |c: Option<char>| {
            c.is_none_or(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '[' | '_' | '-')))
        };
        boundary(before) && boundary(after)
    })
}

#[test]
fn the_shipped_example_hall_validates() {
    let dir = tempfile::tempdir().expect("a temporary directory can be created");
    let out = validate_file(&example_path(), dir.path());
    assert_eq!(
        out.status.code(),
        Some(0),
        "the example should validate; stdout:\n{}\nstderr:\n{}",
        out.stdout,
        out.stderr
    );
}

#[test]
fn the_halls_the_end_to_end_tests_generate_validate() {
    let dir = tempfile::tempdir().expect("a temporary directory can be created");
    let mut plan = HallPlan::lobby_with_function_rooms("t-generated", 5);
    plan.add_unsimulated_exit("pc-fire", "room-1", common::hall::loopback(1));
    for (name, text) in [
        ("gateway", plan.gateway_toml(1883, dir.path())),
        ("simulator", plan.simulator_toml(1883, dir.path())),
    ] {
        let out = validate(&text);
        assert_eq!(
            out.status.code(),
            Some(0),
            "the generated {name} config should validate:\n{text}\nstderr:\n{}",
            out.stderr
        );
    }
}

#[test]
fn an_unknown_key_is_named_with_its_key_path_and_line() {
    let text = edit(
        &example(),
        "capacity = 30\n",
        "capacity = 30\ncolour = \"red\"\n",
    );
    let out = validate(&text);
    assert_rejected(&out);
    assert_problem(
        &out,
        "rooms[1].colour",
        Some(line_of(&text, "colour")),
        "unknown field",
    );
}

#[test]
fn a_door_to_an_unknown_room_is_named_with_its_key_path_and_line() {
    let text = edit(&example(), "to = \"lecture\"", "to = \"lectrue\"");
    let out = validate(&text);
    assert_rejected(&out);
    assert_problem(
        &out,
        "doors[2].to",
        Some(line_of(&text, "to = \"lectrue\"")),
        "lectrue",
    );
}

#[test]
fn an_unknown_counter_profile_is_named_with_its_key_path_and_line() {
    let text = edit(
        &example(),
        "door = \"entrance\"\nprofile = \"generic-u32\"",
        "door = \"entrance\"\nprofile = \"acme-9000\"",
    );
    let out = validate(&text);
    assert_rejected(&out);
    assert_problem(
        &out,
        "counters[0].profile",
        Some(line_of(&text, "acme-9000")),
        "acme-9000",
    );
}

#[test]
fn a_duplicate_id_is_named_with_its_key_path_and_line() {
    let text = edit(&example(), "id = \"pc-reading\"", "id = \"pc-entrance\"");
    let second = text
        .match_indices("id = \"pc-entrance\"")
        .nth(1)
        .map(|(at, _)| text[..at].matches('\n').count() + 1)
        .expect("the duplicate is in the config");
    let out = validate(&text);
    assert_rejected(&out);
    assert_problem(&out, "counters[1].id", Some(second), "duplicate");
}

#[test]
fn a_door_whose_two_sides_are_the_same_room_is_named_with_its_key_path_and_line() {
    let text = edit(
        &example(),
        "from = \"lobby\"\nto = \"reading\"",
        "from = \"lobby\"\nto = \"lobby\"",
    );
    let line = line_of(&text, "from = \"lobby\"\nto = \"lobby\"") + 1;
    let out = validate(&text);
    assert_rejected(&out);
    assert_problem(&out, "doors[1].to", Some(line), "lobby");
}

#[test]
fn a_room_with_capacity_zero_is_named_with_its_key_path_and_line() {
    let text = edit(&example(), "capacity = 60", "capacity = 0");
    let out = validate(&text);
    assert_rejected(&out);
    assert_problem(
        &out,
        "rooms[2].capacity",
        Some(line_of(&text, "capacity = 0")),
        "capacity",
    );
}

#[test]
fn an_opening_time_that_is_not_a_time_of_day_is_named_with_its_key_path_and_line() {
    let text = edit(
        &example(),
        "opening_time = \"08:00\"",
        "opening_time = \"8am\"",
    );
    let out = validate(&text);
    assert_rejected(&out);
    assert_problem(
        &out,
        "hall.opening_time",
        Some(line_of(&text, "opening_time = \"8am\"")),
        "is not a time of day HH:MM",
    );
}

#[test]
fn an_opening_time_after_an_evening_closing_time_is_named_with_its_key_path_and_line() {
    let text = edit(
        &example(),
        "opening_time = \"08:00\"",
        "opening_time = \"21:30\"",
    );
    let out = validate(&text);
    assert_rejected(&out);
    assert_problem(
        &out,
        "hall.opening_time",
        Some(line_of(&text, "opening_time = \"21:30\"")),
        "must be before closing_time",
    );
}

#[test]
fn a_hall_open_across_midnight_validates() {
    let text = edit(
        &example(),
        "opening_time = \"08:00\"",
        "opening_time = \"18:00\"",
    );
    let text = edit(
        &text,
        "closing_time = \"21:00\"",
        "closing_time = \"02:00\"",
    );
    let out = validate(&text);
    assert_eq!(
        out.status.code(),
        Some(0),
        "18:00 to 02:00 is an evening hall; stderr:\n{}",
        out.stderr
    );
}

#[test]
fn an_unknown_service_visits_rule_is_named_with_its_key_path_and_line() {
    let text = edit(
        &example(),
        "service_visits = \"none\"",
        "service_visits = \"visitors\"",
    );
    let out = validate(&text);
    assert_rejected(&out);
    assert_problem(
        &out,
        "rooms[0].service_visits",
        Some(line_of(&text, "service_visits = \"visitors\"")),
        "is not one of \"entries\", \"passages\", \"none\"",
    );
}

#[test]
fn a_toml_syntax_error_is_reported_with_its_line_and_column() {
    let text = edit(&example(), "capacity = 12", "capacity = ");
    let line = line_of(&text, "capacity = \n");
    let out = validate(&text);
    assert_rejected(&out);
    let position = format!("(line {line}, column ");
    assert!(
        out.stderr.contains(&position),
        "a syntax error should be reported at {position}…); stderr:\n{}",
        out.stderr
    );
}

#[test]
fn a_config_without_a_hall_section_is_rejected_naming_hall() {
    let example = example();
    let start = example.find("[hall]").expect("the example has a [hall]");
    let end = example
        .find("[uplink]")
        .expect("the example has an [uplink]");
    let text = format!("{}{}", &example[..start], &example[end..]);
    let out = validate(&text);
    assert_rejected(&out);
    assert_problem(&out, "hall", None, "missing");
}

#[test]
fn every_problem_in_a_config_is_reported_at_once() {
    let mut text = example();
    text = edit(&text, "capacity = 12", "capacity = 0");
    text = edit(&text, "to = \"lecture\"", "to = \"lectrue\"");
    text = edit(
        &text,
        "door = \"entrance\"\nprofile = \"generic-u32\"",
        "door = \"entrance\"\nprofile = \"acme-9000\"",
    );
    text = edit(
        &text,
        "capacity = 30\n",
        "capacity = 30\ncolour = \"red\"\n",
    );
    let out = validate(&text);
    assert_rejected(&out);
    assert_problem(
        &out,
        "rooms[4].capacity",
        Some(line_of(&text, "capacity = 0")),
        "capacity",
    );
    assert_problem(
        &out,
        "doors[2].to",
        Some(line_of(&text, "lectrue")),
        "lectrue",
    );
    assert_problem(
        &out,
        "counters[0].profile",
        Some(line_of(&text, "acme-9000")),
        "acme-9000",
    );
    assert_problem(
        &out,
        "rooms[1].colour",
        Some(line_of(&text, "colour")),
        "unknown field",
    );
}

/// The example hall with terminals, copied into `dir` with `password(login)` in each of its
/// password files, written with `mode`.
fn example_terminal_hall(dir: &Path, password: impl Fn(&str) -> String, mode: u32) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let example =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("firmware-config/examples/hall-terminals.toml");
    let path = dir.join("hall-terminals.toml");
    std::fs::copy(&example, &path).expect("the example can be copied");
    std::fs::create_dir_all(dir.join("secrets")).expect("secrets dir");
    for login in ["t-entrance", "t-reading", "t-health"] {
        let file = dir.join(format!("secrets/{login}.pass"));
        std::fs::write(&file, format!("{}\n", password(login))).expect("password file");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
    path
}

#[test]
fn the_example_hall_with_terminals_validates_with_fresh_private_passwords() {
    let dir = tempfile::tempdir().expect("a temporary directory can be created");
    let path = example_terminal_hall(dir.path(), |l| format!("{l}-0f3c9a71d2b8e6"), 0o600);
    let out = validate_file(&path, dir.path());
    assert_eq!(
        out.status.code(),
        Some(0),
        "the example should validate; stdout:\n{}\nstderr:\n{}",
        out.stdout,
        out.stderr
    );
}

#[test]
fn the_shipped_example_passwords_are_refused_by_validate() {
    // The shipped passwords, in files only their owner can read.
    let dir = tempfile::tempdir().expect("a temporary directory can be created");
    let shipped = |login: &str| {
        let file = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("firmware-config/examples/secrets/{login}.pass"));
        std::fs::read_to_string(file)
            .expect("the shipped example password")
            .trim_end()
            .to_string()
    };
    let path = example_terminal_hall(dir.path(), shipped, 0o600);
    let out = validate_file(&path, dir.path());
    assert_rejected(&out);
    for i in 0..3 {
        assert_problem(
            &out,
            &format!("terminals[{i}].password_file"),
            None,
            "示例密码",
        );
    }
    assert!(!out.stdout.contains("example-only") && !out.stderr.contains("example-only"));
}

#[test]
fn weak_and_world_readable_terminal_passwords_are_refused_with_what_to_do() {
    let dir = tempfile::tempdir().expect("a temporary directory can be created");
    let path = example_terminal_hall(dir.path(), |_| "x".into(), 0o600);
    let out = validate_file(&path, dir.path());
    assert_rejected(&out);
    assert_problem(&out, "terminals[0].password_file", None, "at least 12");
    let dir = tempfile::tempdir().expect("a temporary directory can be created");
    let path = example_terminal_hall(dir.path(), |l| format!("{l}-0f3c9a71d2b8e6"), 0o644);
    let out = validate_file(&path, dir.path());
    assert_rejected(&out);
    assert_problem(&out, "terminals[2].password_file", None, "chmod 600");
}

#[test]
fn terminal_mistakes_are_named_with_their_key_paths_and_the_password_is_never_printed() {
    let dir = tempfile::tempdir().expect("a temporary directory can be created");
    common::write_secret(&dir.path().join("ok.pass"), "hunter2-secret\n").expect("password file");
    let text = format!(
        "{}\n[terminal_broker]\nlisten = \"127.0.0.1:1884\"\n\n\
         [[terminals]]\nid = \"T 1\"\nprofile = \"acme-face\"\nroom = \"attic\"\n\
         username = \"t1\"\npassword_file = \"missing.pass\"\n\n\
         [[terminals]]\nid = \"T2\"\nprofile = \"hikvision-acs\"\nroom = \"lobby\"\n\
         username = \"t2\"\npassword_file = \"ok.pass\"\n",
        example()
    );
    let path = dir.path().join("hall.toml");
    std::fs::write(&path, &text).expect("the config can be written");
    let out = validate_file(&path, dir.path());
    assert_rejected(&out);
    assert_problem(&out, "terminals[0].id", None, "not a terminal id");
    assert_problem(
        &out,
        "terminals[0].profile",
        None,
        "unknown terminal profile",
    );
    assert_problem(&out, "terminals[0].room", None, "unknown room");
    assert_problem(&out, "terminals[0].password_file", None, "cannot read");
    assert!(
        !out.stdout.contains("hunter2") && !out.stderr.contains("hunter2"),
        "a password must never be printed"
    );
}

#[test]
fn a_status_page_open_to_the_network_without_a_token_is_named_with_its_key_path_and_line() {
    let text = edit(
        &example(),
        "listen = \"127.0.0.1:8080\"",
        "listen = \"0.0.0.0:8080\"",
    );
    let out = validate(&text);
    assert_rejected(&out);
    assert_problem(
        &out,
        "status.listen",
        Some(line_of(&text, "listen = \"0.0.0.0:8080\"")),
        "the status page would be open to the hall's network; set status.token_file",
    );
}

#[test]
fn a_status_listen_that_is_not_ip_and_port_is_named_with_its_key_path_and_line() {
    let text = edit(
        &example(),
        "listen = \"127.0.0.1:8080\"",
        "listen = \"localhost:8080\"",
    );
    let out = validate(&text);
    assert_rejected(&out);
    assert_problem(
        &out,
        "status.listen",
        Some(line_of(&text, "listen = \"localhost:8080\"")),
        "is not IP:PORT",
    );
}

#[test]
fn an_unknown_status_key_is_named_with_its_key_path_and_line() {
    let text = edit(
        &example(),
        "listen = \"127.0.0.1:8080\"\n",
        "listen = \"127.0.0.1:8080\"\nport = 8080\n",
    );
    let out = validate(&text);
    assert_rejected(&out);
    assert_problem(
        &out,
        "status.port",
        Some(line_of(&text, "port = 8080")),
        "unknown field",
    );
}

#[test]
fn status_token_mistakes_are_named_and_the_token_is_never_printed() {
    let dir = tempfile::tempdir().expect("a temporary directory can be created");
    let check = |token_file: &str, words: &str| {
        let text = edit(
            &example(),
            "listen = \"127.0.0.1:8080\"",
            &format!("listen = \"192.168.50.2:8080\"\ntoken_file = \"{token_file}\""),
        );
        let path = dir.path().join("hall.toml");
        std::fs::write(&path, &text).expect("the config can be written");
        let out = validate_file(&path, dir.path());
        assert_rejected(&out);
        assert_problem(
            &out,
            "status.token_file",
            Some(line_of(&text, "token_file = ")),
            words,
        );
        out
    };
    check("missing.token", "cannot read");
    common::write_secret(&dir.path().join("short.token"), "hunter2\n").expect("token file");
    let out = check("short.token", "at least 16 characters");
    common::write_secret(
        &dir.path().join("spaces.token"),
        "hunter2 hunter2 hunter2\n",
    )
    .expect("token file");
    let out2 = check("spaces.token", "only letters, digits");
    for out in [out, out2] {
        assert!(
            !out.stdout.contains("hunter2") && !out.stderr.contains("hunter2"),
            "a token must never be printed:\n{}",
            out.stderr
        );
    }
}

#[test]
fn a_status_page_on_the_network_with_a_token_validates() {
    let dir = tempfile::tempdir().expect("a temporary directory can be created");
    common::write_secret(&dir.path().join("status.token"), "s3cret-status-token-42\n")
        .expect("token");
    let text = edit(
        &example(),
        "listen = \"127.0.0.1:8080\"",
        "listen = \"192.168.50.2:8080\"\ntoken_file = \"status.token\"",
    );
    let path = dir.path().join("hall.toml");
    std::fs::write(&path, &text).expect("the config can be written");
    let out = validate_file(&path, dir.path());
    assert_eq!(
        out.status.code(),
        Some(0),
        "a LAN status page with a token should validate; stderr:\n{}",
        out.stderr
    );
}

/// The example hall switched to `mqtts://` with every TLS key of its `[uplink]` uncommented
/// (the example's own lines, paths relative to the config), written to `dir`.
fn example_with_tls_keys(dir: &Path) -> PathBuf {
    let mut text = edit(
        &example(),
        "broker = \"mqtt://overview.city.example:1883\"",
        "broker = \"mqtts://overview.city.example\"",
    );
    for key in [
        "ca_file",
        "client_cert_file",
        "client_key_file",
        "username",
        "password_file",
    ] {
        text = edit(&text, &format!("# {key} = "), &format!("{key} = "));
    }
    let path = dir.join("hall.toml");
    std::fs::write(&path, text).expect("the config can be written");
    path
}

/// The files the example's TLS keys name, made with openssl in `dir`: a CA, a client
/// certificate signed by it and its key, and the password file.
fn make_example_tls_files(dir: &Path) {
    let tls = dir.join("tls");
    std::fs::create_dir_all(&tls).expect("tls dir");
    std::fs::create_dir_all(dir.join("secrets")).expect("secrets dir");
    let ca = common::pki::Ca::create(&tls, "city-ca").expect("openssl makes a CA");
    let client = ca
        .issue_client("hall-client", "xh-tianlin-01")
        .expect("openssl makes a client certificate");
    std::fs::rename(&client.cert, tls.join("xh-tianlin-01.crt")).expect("rename");
    std::fs::rename(&client.key, tls.join("xh-tianlin-01.key")).expect("rename");
    common::write_secret(&dir.join("secrets/uplink.pass"), "hunter2-uplink\n").expect("password");
}

#[test]
fn the_example_hall_over_tls_with_a_client_certificate_and_a_login_validates() {
    let dir = tempfile::tempdir().expect("a temporary directory can be created");
    make_example_tls_files(dir.path());
    let path = example_with_tls_keys(dir.path());
    let out = validate_file(&path, dir.path());
    assert_eq!(
        out.status.code(),
        Some(0),
        "the example over TLS should validate; stdout:\n{}\nstderr:\n{}",
        out.stdout,
        out.stderr
    );
    assert!(
        !out.stdout.contains("hunter2") && !out.stderr.contains("hunter2"),
        "a password must never be printed"
    );
}

#[test]
fn an_mqtts_broker_without_a_ca_file_is_named_on_uplink_ca_file() {
    let text = edit(
        &example(),
        "broker = \"mqtt://overview.city.example:1883\"",
        "broker = \"mqtts://overview.city.example:8883\"",
    );
    let out = validate(&text);
    assert_rejected(&out);
    assert_problem(&out, "uplink.ca_file", None, "mqtts:// needs `ca_file`");
}

#[test]
fn unreadable_and_damaged_tls_files_are_all_named_by_key_and_line_without_their_contents() {
    let dir = tempfile::tempdir().expect("a temporary directory can be created");
    make_example_tls_files(dir.path());
    let tls = dir.path().join("tls");
    // The CA bundle cut short, the client certificate gone, the key's base64 damaged.
    let ca = std::fs::read_to_string(tls.join("city-ca.pem")).expect("CA");
    std::fs::write(tls.join("city-ca.pem"), &ca[..ca.len() / 2]).expect("cut the CA");
    std::fs::remove_file(tls.join("xh-tianlin-01.crt")).expect("remove the certificate");
    std::fs::write(
        tls.join("xh-tianlin-01.key"),
        "-----BEGIN PRIVATE KEY-----\nSECRETKEYMATERIAL!!\n-----END PRIVATE KEY-----\n",
    )
    .expect("damage the key");
    let path = example_with_tls_keys(dir.path());
    let text = std::fs::read_to_string(&path).expect("config");
    let out = validate_file(&path, dir.path());
    assert_rejected(&out);
    assert_problem(
        &out,
        "uplink.ca_file",
        Some(line_of(&text, "ca_file = ")),
        "\"-----END\" line",
    );
    assert_problem(
        &out,
        "uplink.client_cert_file",
        Some(line_of(&text, "client_cert_file = ")),
        "cannot read",
    );
    assert_problem(
        &out,
        "uplink.client_key_file",
        Some(line_of(&text, "client_key_file = ")),
        "base64",
    );
    assert!(
        !out.stderr.contains("SECRETKEYMATERIAL") && !out.stderr.contains("BEGIN CERTIFICATE"),
        "file contents must never be printed:\n{}",
        out.stderr
    );
}

#[test]
fn a_client_key_that_is_not_the_certificates_own_is_named_on_client_key_file() {
    let dir = tempfile::tempdir().expect("a temporary directory can be created");
    make_example_tls_files(dir.path());
    let tls = dir.path().join("tls");
    let other = common::pki::Ca::create(&tls, "other-ca")
        .and_then(|ca| ca.issue_client("someone-else", "someone-else"))
        .expect("openssl makes another client certificate");
    std::fs::rename(&other.key, tls.join("xh-tianlin-01.key")).expect("swap the key");
    let path = example_with_tls_keys(dir.path());
    let out = validate_file(&path, dir.path());
    assert_rejected(&out);
    assert_problem(
        &out,
        "uplink.client_key_file",
        None,
        "is not the private key of the certificate",
    );
}

#[test]
fn tls_and_login_keys_that_go_in_pairs_are_named_when_one_is_missing() {
    let dir = tempfile::tempdir().expect("a temporary directory can be created");
    make_example_tls_files(dir.path());
    let path = example_with_tls_keys(dir.path());
    let text = std::fs::read_to_string(&path).expect("config");
    let text = edit(&text, "client_key_file = ", "# client_key_file = ");
    let text = edit(&text, "password_file = ", "# password_file = ");
    std::fs::write(&path, text).expect("the config can be written");
    let out = validate_file(&path, dir.path());
    assert_rejected(&out);
    assert_problem(
        &out,
        "uplink.client_key_file",
        None,
        "needs `client_key_file`",
    );
    assert_problem(&out, "uplink.password_file", None, "needs `password_file`");
}

#[test]
fn an_inline_uplink_password_is_rejected_as_unknown_and_never_printed() {
    let text = edit(
        &example(),
        "broker = \"mqtt://overview.city.example:1883\"",
        "broker = \"mqtt://overview.city.example:1883\"\nusername = \"hall\"\npassword = \"hunter2-inline\"",
    );
    let out = validate(&text);
    assert_rejected(&out);
    assert_problem(
        &out,
        "uplink.password",
        Some(line_of(&text, "password = ")),
        "unknown field",
    );
    assert!(
        !out.stdout.contains("hunter2") && !out.stderr.contains("hunter2"),
        "a password must never be printed:\n{}",
        out.stderr
    );
}

#[test]
fn a_held_share_above_one_is_named_with_its_key_path_and_line() {
    let text = edit(&example(), "held_share = 0.5", "held_share = 1.5");
    let out = validate(&text);
    assert_rejected(&out);
    assert_problem(
        &out,
        "situation.held_share",
        Some(line_of(&text, "held_share = 1.5")),
        "must be above 0 and at most 1",
    );
}

#[test]
fn an_unbooked_minimum_of_zero_minutes_is_named_with_its_key_path_and_line() {
    let text = edit(
        &example(),
        "unbooked_min_minutes = 15",
        "unbooked_min_minutes = 0",
    );
    let out = validate(&text);
    assert_rejected(&out);
    assert_problem(
        &out,
        "situation.unbooked_min_minutes",
        Some(line_of(&text, "unbooked_min_minutes = 0")),
        "between 1 and 1440",
    );
}

#[test]
fn a_bookings_topic_with_a_wildcard_is_named_with_its_key_path_and_line() {
    let text = edit(
        &example(),
        "bookings_topic = \"bookings\"",
        "bookings_topic = \"bookings/#\"",
    );
    let out = validate(&text);
    assert_rejected(&out);
    assert_problem(
        &out,
        "situation.bookings_topic",
        Some(line_of(&text, "bookings_topic = \"bookings/#\"")),
        "without wildcards",
    );
}

#[test]
fn an_unknown_situation_key_is_named_with_its_key_path_and_line() {
    let text = edit(
        &example(),
        "held_share = 0.5\n",
        "held_share = 0.5\nheld_ratio = 0.5\n",
    );
    let out = validate(&text);
    assert_rejected(&out);
    assert_problem(
        &out,
        "situation.held_ratio",
        Some(line_of(&text, "held_ratio = 0.5")),
        "unknown field",
    );
}

#[test]
fn an_event_commit_interval_below_a_tenth_of_a_second_is_named_with_its_line() {
    let text = edit(
        &example(),
        "event_commit_interval_ms = 10000",
        "event_commit_interval_ms = 50",
    );
    let out = validate(&text);
    assert_rejected(&out);
    assert_problem(
        &out,
        "storage.event_commit_interval_ms",
        Some(line_of(&text, "event_commit_interval_ms = 50")),
        "between 100 and 600000 ms",
    );
}
