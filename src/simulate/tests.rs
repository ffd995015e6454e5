//! The simulator end to end: real listeners, a real Modbus TCP client, the truth file.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::path::Path;
use std::time::Duration;

use tokio::time::timeout;
use tokio_modbus::client::tcp;
use tokio_modbus::client::{Context, Reader};
use tokio_modbus::{ExceptionCode, Slave};
use tokio_util::sync::CancellationToken;

use super::*;

/// Longest any single Modbus request may take; a request without an answer hangs for ever.
const CALL: Duration = Duration::from_secs(2);

fn config(text: &str) -> Config {
    crate::config::parse(text, Path::new("."), &Default::default()).expect("valid config")
}

/// A port nobody is listening on right now.
fn free_port() -> u16 {
    let listener = StdTcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

/// Three counters in the three shipped layouts: two units sharing one address and one on its
/// own, plus a door nobody counts.
fn hall(port_a: u16, port_b: u16) -> Config {
    config(&format!(
        r#"
        [hall]
        id = "sim-test"
        district = "test"
        [uplink]
        broker = "mqtt://127.0.0.1:1883"

        [[rooms]]
        id = "lobby"
        capacity = 40
        [[rooms]]
        id = "reading"
        capacity = 10
        [[rooms]]
        id = "lecture"
        capacity = 20

        [[doors]]
        id = "entrance"
        from = "outside"
        to = "lobby"
        [[doors]]
        id = "reading-door"
        from = "lobby"
        to = "reading"
        [[doors]]
        id = "lecture-door"
        from = "lobby"
        to = "lecture"
        [[doors]]
        id = "fire-exit"
        from = "lecture"
        to = "outside"

        [[counters]]
        id = "pc-entrance"
        door = "entrance"
        profile = "generic-u32"
        transport = "modbus_tcp"
        address = "127.0.0.1:{port_a}"
        unit_id = 1
        [[counters]]
        id = "pc-reading"
        door = "reading-door"
        profile = "generic-u16"
        transport = "modbus_tcp"
        address = "127.0.0.1:{port_a}"
        unit_id = 2
        [[counters]]
        id = "pc-lecture"
        door = "lecture-door"
        profile = "generic-u32-input"
        transport = "modbus_tcp"
        address = "127.0.0.1:{port_b}"
        unit_id = 7
        "#
    ))
}

/// How the test reads and decodes one counter, written out by hand from the profile files
/// rather than with the simulator's own encoder.
#[derive(Debug, Clone, Copy)]
enum Layout {
    /// generic-u32: holding 0..4, high word first.
    U32Holding,
    /// generic-u16: holding 0..2.
    U16Holding,
    /// generic-u32-input: input 0..4 (manual's 1..5), low word first.
    U32InputLowFirst,
}

impl Layout {
    fn modulus(self) -> u64 {
        match self {
            Layout::U16Holding => 1 << 16,
            Layout::U32Holding | Layout::U32InputLowFirst => 1 << 32,
        }
    }

    async fn read(self, ctx: &mut Context) -> (u64, u64) {
        let r = match self {
            Layout::U32Holding => ctx.read_holding_registers(0, 4),
            Layout::U16Holding => ctx.read_holding_registers(0, 2),
            Layout::U32InputLowFirst => ctx.read_input_registers(0, 4),
        };
        let r: Vec<u64> = timeout(CALL, r)
            .await
            .expect("the simulator answers in time")
            .expect("no transport error")
            .expect("no exception")
            .into_iter()
            .map(u64::from)
            .collect();
        match self {
            Layout::U32Holding => ((r[0] << 16) | r[1], (r[2] << 16) | r[3]),
            Layout::U16Holding => (r[0], r[1]),
            Layout::U32InputLowFirst => ((r[1] << 16) | r[0], (r[3] << 16) | r[2]),
        }
    }
}

async fn connect(address: SocketAddr, unit: u8) -> Context {
    timeout(CALL, tcp::connect_slave(address, Slave(unit)))
        .await
        .expect("connects in time")
        .expect("connects")
}

/// Connecting may race the simulator's bind by a moment; tries for a second.
async fn connect_once_listening(address: SocketAddr, unit: u8) -> Context {
    for _ in 0..50 {
        if let Ok(Ok(ctx)) = timeout(CALL, tcp::connect_slave(address, Slave(unit))).await {
            return ctx;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the simulator does not listen on {address}");
}

/// Seed 5's busy traffic (15 arrivals a second, short visits), with the truth written to
/// `truth`.
fn busy_options(truth: &Path) -> SimulateOptions {
    SimulateOptions {
        seed: 5,
        truth: Some(truth.to_path_buf()),
        arrivals_per_min: 900.0,
        mean_dwell: Duration::from_millis(400),
        ..quiet_options()
    }
}

/// Runs the simulator on `hall` in a task; cancel the token to stop it.
fn spawn_run(
    hall: &Config,
    options: SimulateOptions,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<Result<(), SimulateError>>,
) {
    let shutdown = CancellationToken::new();
    let task = tokio::spawn({
        let hall = hall.clone();
        let shutdown = shutdown.clone();
        async move { run(&hall, options, shutdown).await }
    });
    (shutdown, task)
}

/// The truth file's lines so far, if its final line has been written.
fn finished_truth(path: &Path) -> Option<Vec<serde_json::Value>> {
    let text = std::fs::read_to_string(path).ok()?;
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .ok()?;
    lines.last()?.get("final_occupancy")?;
    Some(lines)
}

#[tokio::test]
async fn counters_served_over_modbus_add_up_to_the_truth_file() {
    timeout(Duration::from_secs(60), async {
        let (port_a, port_b) = (free_port(), free_port());
        let hall = hall(port_a, port_b);
        let dir = tempfile::tempdir().expect("temp dir");
        let truth_path = dir.path().join("truth.jsonl");
        let options = SimulateOptions {
            duration: Some(Duration::from_millis(2500)),
            warmup: Duration::from_millis(1000),
            ..busy_options(&truth_path)
        };
        let (shutdown, simulator) = spawn_run(&hall, options);

        let a: SocketAddr = ([127, 0, 0, 1], port_a).into();
        let b: SocketAddr = ([127, 0, 0, 1], port_b).into();
        let entrance = connect_once_listening(a, 1).await;
        let mut clients = [
            ("pc-entrance", Layout::U32Holding, entrance),
            ("pc-reading", Layout::U16Holding, connect(a, 2).await),
            ("pc-lecture", Layout::U32InputLowFirst, connect(b, 7).await),
        ];

        // During the warm-up: the starting totals.
        let mut first = HashMap::new();
        let mut last = HashMap::new();
        for (id, layout, ctx) in &mut clients {
            let totals = layout.read(ctx).await;
            first.insert(*id, totals);
            last.insert(*id, totals);
        }

        // During the traffic: totals only ever grow (modulo the wrap), until the final line.
        let mut changed_while_running = false;
        let lines = loop {
            for (id, layout, ctx) in &mut clients {
                let now = layout.read(ctx).await;
                let before = last[id];
                let m = layout.modulus();
                let grew = ((now.0 + m - before.0) % m, (now.1 + m - before.1) % m);
                assert!(
                    grew.0 < 1000 && grew.1 < 1000,
                    "{id} went backwards: {before:?} -> {now:?}"
                );
                changed_while_running |= grew != (0, 0);
                last.insert(*id, now);
            }
            if let Some(lines) = finished_truth(&truth_path) {
                break lines;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(
            changed_while_running,
            "the counters moved during the traffic"
        );

        // After the traffic: the totals are frozen.
        tokio::time::sleep(Duration::from_millis(300)).await;
        for (id, layout, ctx) in &mut clients {
            let now = layout.read(ctx).await;
            assert_eq!(now, last[id], "{id} changed after the traffic stopped");
        }

        // The truth: every crossing line, then the totals.
        let (final_line, crossing_lines) = lines.split_last().expect("lines");
        assert!(
            crossing_lines.len() > 20,
            "busy enough: {}",
            crossing_lines.len()
        );
        assert_eq!(final_line["crossings"], crossing_lines.len() as u64);
        let mut counted: HashMap<(String, String), u64> = HashMap::new();
        for line in crossing_lines {
            if let Some(counter) = line["counter"].as_str() {
                let direction = line["direction"].as_str().expect("direction").to_string();
                *counted.entry((counter.to_string(), direction)).or_default() += 1;
            } else {
                assert_eq!(line["door"], "fire-exit", "only the fire exit is uncounted");
            }
        }
        for room in &hall.rooms {
            let id = room.id.as_str();
            let n = |key: &str| final_line[key][id].as_i64().expect("every room listed");
            assert_eq!(n("entries") - n("exits"), n("final_occupancy"), "{id}");
            assert!(n("final_occupancy") <= i64::from(room.capacity));
        }

        // The registers moved by exactly what the truth says each counter saw.
        for (id, layout, _) in &clients {
            let m = layout.modulus();
            let (start, end) = (first[id], last[id]);
            let moved = ((end.0 + m - start.0) % m, (end.1 + m - start.1) % m);
            let truth = |d: &str| {
                counted
                    .get(&(id.to_string(), d.to_string()))
                    .copied()
                    .unwrap_or(0)
            };
            assert_eq!(moved, (truth("in"), truth("out")), "{id}");
            assert_eq!(final_line["counters"][id]["in"], truth("in"), "{id}");
            assert_eq!(final_line["counters"][id]["out"], truth("out"), "{id}");
        }
        // This seed starts the 16-bit counter a few counts below its wrap and sends some twenty
        // people each way through its door: both totals wrap, the case a gateway must get right.
        let (start, end) = (first["pc-reading"], last["pc-reading"]);
        assert!(
            end.0 < start.0 && end.1 < start.1,
            "both wrap: {start:?} -> {end:?}"
        );

        // What a gateway with a wrong profile or unit id would be told.
        let (_, _, ctx) = &mut clients[0];
        let beyond = timeout(CALL, ctx.read_holding_registers(2, 4))
            .await
            .expect("in time")
            .expect("no transport error");
        assert_eq!(beyond, Err(ExceptionCode::IllegalDataAddress));
        let wrong_table = timeout(CALL, ctx.read_input_registers(0, 4))
            .await
            .expect("in time")
            .expect("no transport error");
        assert_eq!(wrong_table, Err(ExceptionCode::IllegalFunction));
        let mut stranger = connect(a, 9).await;
        let unknown_unit = timeout(CALL, stranger.read_holding_registers(0, 4))
            .await
            .expect("in time")
            .expect("no transport error");
        assert_eq!(unknown_unit, Err(ExceptionCode::GatewayTargetDevice));

        shutdown.cancel();
        let result = timeout(Duration::from_secs(5), simulator)
            .await
            .expect("the simulator stops on shutdown")
            .expect("the simulator task does not panic");
        assert!(result.is_ok(), "{result:?}");
    })
    .await
    .expect("the test finishes within a minute");
}

#[tokio::test]
async fn a_start_file_holds_the_traffic_until_it_exists() {
    timeout(Duration::from_secs(60), async {
        let (port_a, port_b) = (free_port(), free_port());
        let hall = hall(port_a, port_b);
        let dir = tempfile::tempdir().expect("temp dir");
        let truth_path = dir.path().join("truth.jsonl");
        let start_file = dir.path().join("go");
        let options = SimulateOptions {
            duration: Some(Duration::from_millis(1500)),
            // No warm-up: without the hold, this seed's first visitor would be through the
            // entrance well within the second and a half of looking below.
            warmup: Duration::ZERO,
            start_file: Some(start_file.clone()),
            ..busy_options(&truth_path)
        };
        let (shutdown, simulator) = spawn_run(&hall, options);
        let mut entrance = connect_once_listening(([127, 0, 0, 1], port_a).into(), 1).await;

        // Held: for a second and a half the totals do not move and no crossing is written.
        let before = Layout::U32Holding.read(&mut entrance).await;
        for _ in 0..15 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = Layout::U32Holding.read(&mut entrance).await;
            assert_eq!(
                now, before,
                "the entrance moved before the start file existed"
            );
        }
        assert!(finished_truth(&truth_path).is_none(), "no final line yet");

        // Released: the traffic plays out and the totals move by what the truth says.
        std::fs::write(&start_file, b"").expect("the start file can be made");
        let lines = loop {
            if let Some(lines) = finished_truth(&truth_path) {
                break lines;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let after = Layout::U32Holding.read(&mut entrance).await;
        let count = |direction: &str| {
            lines
                .iter()
                .filter(|l| l["counter"] == "pc-entrance" && l["direction"] == direction)
                .count() as u64
        };
        let m = Layout::U32Holding.modulus();
        let moved = ((after.0 + m - before.0) % m, (after.1 + m - before.1) % m);
        assert!(moved.0 > 0, "people came in once released: {moved:?}");
        assert_eq!(moved, (count("in"), count("out")));
        shutdown.cancel();
        simulator
            .await
            .expect("the simulator task ends")
            .expect("the simulator ran");
    })
    .await
    .expect("the test finishes within a minute");
}

#[tokio::test]
async fn an_address_in_use_is_reported_with_the_counter_and_address() {
    timeout(Duration::from_secs(10), async {
        let taken = StdTcpListener::bind("127.0.0.1:0").expect("bind");
        let port = taken.local_addr().expect("address").port();
        let hall = hall(free_port(), port);
        let options = SimulateOptions {
            seed: 1,
            truth: None,
            duration: Some(Duration::from_secs(1)),
            warmup: Duration::ZERO,
            arrivals_per_min: 30.0,
            mean_dwell: Duration::from_secs(1),
            serial_peers: Default::default(),
            serial_noise_bytes_per_sec: 0,
            start_file: None,
        };
        let error = run(&hall, options, CancellationToken::new())
            .await
            .expect_err("the port is taken");
        let text = error.to_string();
        assert!(
            text.starts_with(&format!(
                "cannot listen for counter pc-lecture on 127.0.0.1:{port}: "
            )),
            "{text}"
        );
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn port_zero_is_resolved_and_shutdown_in_the_warmup_still_writes_the_final_line() {
    timeout(Duration::from_secs(10), async {
        let mut hall = hall(0, 0);
        // Port 0 everywhere: each counter gets a listener on its own system-chosen port.
        for (i, c) in hall.counters.iter_mut().enumerate() {
            c.transport = CounterTransport::ModbusTcp {
                address: ([127, 0, 0, 1], 0).into(),
                unit_id: i as u8 + 1,
            };
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let truth_path = dir.path().join("truth.jsonl");
        let options = SimulateOptions {
            seed: 1,
            truth: Some(truth_path.clone()),
            duration: None,
            warmup: Duration::from_secs(3600),
            arrivals_per_min: 30.0,
            mean_dwell: Duration::from_secs(1),
            serial_peers: Default::default(),
            serial_noise_bytes_per_sec: 0,
            start_file: None,
        };
        let simulation = Simulation::bind(&hall, options).await.expect("binds");
        let addresses = simulation.counter_addresses();
        assert_eq!(addresses.len(), 3);
        let mut ports: Vec<u16> = addresses.iter().map(|(_, a)| a.port()).collect();
        assert!(ports.iter().all(|&p| p != 0), "{ports:?}");
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 3, "port 0 is never shared: {addresses:?}");

        let shutdown = CancellationToken::new();
        let task = tokio::spawn(simulation.run(shutdown.clone()));
        let mut ctx = connect(addresses[1].1, 2).await;
        let (i, o) = Layout::U16Holding.read(&mut ctx).await;
        assert!(
            i > 65_536 - 100 && o > 65_536 - 100,
            "16-bit counters start near the wrap"
        );
        shutdown.cancel();
        let result = timeout(Duration::from_secs(5), task)
            .await
            .expect("stops on shutdown")
            .expect("no panic");
        assert!(result.is_ok(), "{result:?}");
        let lines = finished_truth(&truth_path).expect("the final line is written");
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0]["crossings"], 0);
        assert_eq!(lines[0]["final_occupancy"]["lobby"], 0);
    })
    .await
    .expect("in time");
}

/// One room on an RS-485 bus whose port is `port`: its counter is unit 3.
fn bus_hall(port: &Path) -> Config {
    config(&format!(
        r#"
        [hall]
        id = "sim-rtu-test"
        district = "test"
        [uplink]
        broker = "mqtt://127.0.0.1:1883"

        [[rooms]]
        id = "reading"
        capacity = 10
        [[doors]]
        id = "reading-door"
        from = "outside"
        to = "reading"

        [[buses]]
        id = "rs485"
        port = "{}"
        baud = 19200

        [[counters]]
        id = "pc-reading"
        door = "reading-door"
        profile = "generic-u16"
        transport = "modbus_rtu"
        bus = "rs485"
        unit_id = 3
        "#,
        port.display()
    ))
}

fn quiet_options() -> SimulateOptions {
    SimulateOptions {
        seed: 1,
        truth: None,
        duration: None,
        warmup: Duration::from_secs(3600),
        arrivals_per_min: 30.0,
        mean_dwell: Duration::from_secs(1),
        serial_peers: Default::default(),
        serial_noise_bytes_per_sec: 0,
        start_file: None,
    }
}

#[tokio::test]
async fn rtu_slaves_answer_on_a_pair_made_with_socat_and_a_missing_unit_stays_silent() {
    use tokio_modbus::client::rtu;
    use tokio_modbus::slave::SlaveContext;
    use tokio_serial::SerialPortBuilderExt;

    timeout(Duration::from_secs(20), async {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = dir.path().join("ttyRS485");
        let hall = bus_hall(&port);
        let simulation = Simulation::bind(&hall, quiet_options())
            .await
            .expect("socat makes the pair (is socat installed?)");
        let device_side = dir.path().join("ttyRS485.device");
        assert_eq!(
            simulation.bus_device_sides(),
            vec![("rs485".to_string(), device_side.clone())]
        );
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(simulation.run(shutdown.clone()));

        let line = tokio_serial::new(port.to_string_lossy(), 19200)
            .open_native_async()
            .expect("the gateway side opens");
        let mut ctx = rtu::attach_slave(line, Slave(3));
        let (i, o) = Layout::U16Holding.read(&mut ctx).await;
        assert!(
            i > 65_536 - 100 && o > 65_536 - 100,
            "16-bit counters start near the wrap"
        );
        // A device refuses what it does not serve, with the exception a real one gives.
        let wrong_table = timeout(CALL, ctx.read_input_registers(0, 2))
            .await
            .expect("the slave answers in time")
            .expect("no transport error");
        assert_eq!(wrong_table, Err(ExceptionCode::IllegalFunction));
        // A unit nobody serves gets no answer at all, as a dead slave gives none.
        ctx.set_slave(Slave(4));
        let silent = timeout(Duration::from_millis(300), ctx.read_holding_registers(0, 2)).await;
        assert!(silent.is_err(), "unit 4 answered: {silent:?}");

        shutdown.cancel();
        let result = timeout(Duration::from_secs(5), task)
            .await
            .expect("stops on shutdown")
            .expect("no panic");
        assert!(result.is_ok(), "{result:?}");
        assert!(
            !port.exists() && !device_side.exists(),
            "socat is stopped and its links are gone"
        );
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn a_serial_peer_for_a_bus_the_config_lacks_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let hall = bus_hall(&dir.path().join("ttyRS485"));
    let mut options = quiet_options();
    options
        .serial_peers
        .insert("rs-458".into(), dir.path().join("elsewhere"));
    let error = Simulation::bind(&hall, options)
        .await
        .expect_err("the bus is unknown");
    assert_eq!(
        error.to_string(),
        "--serial-peer names \"rs-458\", which is neither a bus nor a serial_stream counter of the config"
    );
}

/// A Terabee Evo on the entrance and a text-line counter on the reading room, each streaming on
/// a pair the simulator makes with socat.
fn stream_hall(evo: &Path, txt: &Path) -> Config {
    config(&format!(
        r#"
        [hall]
        id = "sim-stream"
        district = "test"
        [uplink]
        broker = "mqtt://127.0.0.1:1883"

        [[rooms]]
        id = "lobby"
        capacity = 40
        [[rooms]]
        id = "reading"
        capacity = 10

        [[doors]]
        id = "entrance"
        from = "outside"
        to = "lobby"
        [[doors]]
        id = "reading-door"
        from = "lobby"
        to = "reading"

        [[counters]]
        id = "evo"
        door = "entrance"
        profile = "terabee-evo"
        transport = "serial_stream"
        port = "{}"
        baud = 115200
        [[counters]]
        id = "txt"
        door = "reading-door"
        profile = "ascii-in-out"
        transport = "serial_stream"
        port = "{}"
        "#,
        evo.display(),
        txt.display()
    ))
}

#[tokio::test]
async fn streaming_counters_print_the_truths_totals_on_their_lines() {
    use crate::devices::stream::StreamDecoder;
    use tokio::io::AsyncReadExt;
    use tokio_serial::SerialPortBuilderExt;

    timeout(Duration::from_secs(30), async {
        let dir = tempfile::tempdir().expect("temp dir");
        let (evo_port, txt_port) = (dir.path().join("ttyEvo"), dir.path().join("ttyTxt"));
        let hall = stream_hall(&evo_port, &txt_port);
        let truth_path = dir.path().join("truth.jsonl");
        let options = SimulateOptions {
            seed: 4,
            truth: Some(truth_path.clone()),
            duration: Some(Duration::from_secs(4)),
            // Long enough for the readers below to open their lines before anyone moves.
            warmup: Duration::from_secs(1),
            arrivals_per_min: 600.0,
            mean_dwell: Duration::from_millis(500),
            serial_peers: Default::default(),
            serial_noise_bytes_per_sec: 0,
            start_file: None,
        };
        let simulation = Simulation::bind(&hall, options)
            .await
            .expect("socat makes the pairs (is socat installed?)");
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(simulation.run(shutdown.clone()));

        // Read both lines as the gateway would, with the gateway's decoders.
        let mut readers = Vec::new();
        for (port, c) in [(&evo_port, 0), (&txt_port, 1)] {
            let mut line = tokio_serial::new(port.to_string_lossy(), 115_200)
                .open_native_async()
                .expect("the gateway side opens");
            let CounterTransport::SerialStream { format, .. } = &hall.counters[c].transport else {
                panic!("a streaming counter");
            };
            let mut decoder = StreamDecoder::new(&format.format);
            readers.push(tokio::spawn(async move {
                let (mut first, mut last) = (None, None);
                let mut buf = [0u8; 256];
                let deadline = tokio::time::Instant::now() + Duration::from_secs(9);
                while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, line.read(&mut buf)).await {
                    for r in decoder.push(&buf[..n]) {
                        first.get_or_insert((r.inward, r.outward));
                        last = Some((r.inward, r.outward));
                    }
                }
                (first, last, decoder.stats())
            }));
        }
        let mut seen = Vec::new();
        for r in readers {
            seen.push(r.await.expect("reader ran"));
        }
        let lines = finished_truth(&truth_path).expect("the truth is finished");
        let totals = &lines.last().expect("final line")["counters"];
        for ((first, last, stats), (id, modulus)) in seen
            .into_iter()
            .zip([("evo", 1u64 << 16), ("txt", 1u64 << 32)])
        {
            let (Some(first), Some(last)) = (first, last) else {
                panic!("{id}: nothing decoded ({stats:?})");
            };
            let delta = |a: u64, b: u64| (b + modulus - a) % modulus;
            let want_in = totals[id]["in"].as_u64().expect("in");
            let want_out = totals[id]["out"].as_u64().expect("out");
            assert!(want_in > 0, "{id}: the traffic went through its door");
            assert_eq!(
                (delta(first.0, last.0), delta(first.1, last.1)),
                (want_in, want_out),
                "{id}: totals printed on the line against the truth ({stats:?})"
            );
            assert_eq!(stats.crc_errors, 0, "{id}: {stats:?}");
        }
        shutdown.cancel();
        let result = timeout(Duration::from_secs(5), task)
            .await
            .expect("stops on shutdown")
            .expect("no panic");
        assert!(result.is_ok(), "{result:?}");
    })
    .await
    .expect("in time");
}
