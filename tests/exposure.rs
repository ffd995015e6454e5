//! The gateway opens no door it was not told to: every TCP port the running daemon listens on
//! is one its config names, on the interface it names.
//!
//! The box sits on the hall's network with the terminals, and often on a public one too. The
//! embedded terminal broker listens only on `terminal_broker.listen` and the status page only
//! on `status.listen`; nothing else of the gateway listens at all (device drivers and the
//! uplink are clients). Read from `/proc` as `ss -ltnp` would, for the real `hallgate run`.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::ensure;

use common::hall::HallPlan;
use common::rig::Rig;
use common::sockets::{listening, parse_address};

#[test]
fn kernel_socket_addresses_are_read_as_the_kernel_prints_them() {
    assert_eq!(
        parse_address("0100007F:1F90").expect("v4"),
        "127.0.0.1:8080".parse::<SocketAddr>().expect("addr")
    );
    assert_eq!(
        parse_address("00000000000000000000000001000000:0050").expect("v6"),
        "[::1]:80".parse::<SocketAddr>().expect("addr")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_listens_only_on_the_addresses_its_config_names() {
    let mut plan = HallPlan::lobby_with_function_rooms("t-exposure", 1);
    let secrets = tempfile::tempdir().expect("tempdir");
    let terminal_port = common::free_port();
    let password = secrets.path().join("t0.pass");
    common::write_secret(&password, "pw-exposure-of-t0\n").expect("password file");
    plan.extra_sections = format!(
        "\n[terminal_broker]\nlisten = \"127.0.0.1:{terminal_port}\"\n\
         \n[[terminals]]\nid = \"FC8200H12345678\"\nprofile = \"hikvision-acs\"\nroom = \"lobby\"\n\
         username = \"t0\"\npassword_file = \"{}\"\n",
        password.display()
    );
    let expected: BTreeSet<SocketAddr> = [
        format!("127.0.0.1:{terminal_port}"),
        plan.status_address().to_string(),
    ]
    .iter()
    .map(|a| a.parse().expect("address"))
    .collect();
    Rig::new("exposure", plan)
        .expect("test directory")
        .run(Duration::from_secs(60), async |rig| {
            rig.start_broker().await?;
            rig.start_gateway()?;
            rig.wait_for_status("online", Duration::from_secs(20))
                .await?;
            // The listeners come up on their own threads: wait until every one is there,
            // then demand that nothing else is.
            let pid = rig.gateway()?.pid().expect("the gateway runs");
            let deadline = std::time::Instant::now() + Duration::from_secs(15);
            let open = loop {
                let open: BTreeSet<SocketAddr> = listening(pid)?.into_iter().collect();
                if open.is_superset(&expected) || std::time::Instant::now() >= deadline {
                    break open;
                }
                rig.ensure_alive()?;
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            ensure!(
                open == expected,
                "the gateway listens on {open:?}; its config names only {expected:?}"
            );
            Ok(())
        })
        .await;
}
