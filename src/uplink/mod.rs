//! The uplink: the gateway's one MQTT client of the central broker.
//!
//! Leases undelivered messages from the outbox and publishes them at QoS 1, with at most
//! `max_inflight` awaiting PUBACK and at most `max_replay_msgs_per_sec` a second. A row is deleted from the outbox only when the
//! broker's PUBACK for its packet id arrives (rumqttc hands out packet ids as it writes the
//! packets, in request order, so `Outgoing::Publish(pkid)` events are matched to rows in
//! order). On any connection error the client is dropped whole and rebuilt after a capped,
//! jittered backoff; because every connection is a clean session, whatever was in flight is
//! simply read from the outbox again and re-sent — same bytes, same `msg_id`.
//!
//! The retained `status` topic says `online` after each connect; the last will (and a clean
//! shutdown) say `offline`.
//!
//! **Downlink**: the one topic the gateway reads from the centre is the retained bookings
//! topic (`situation.bookings_topic`). It is subscribed at QoS 1 after *every* CONNACK (a
//! clean session forgets subscriptions), and each message on it is handed to the core loop
//! through a bounded channel ([`DOWNLINK_CAPACITY`]); one over
//! [`crate::bookings::MAX_MESSAGE_BYTES`] is dropped with a WARN before anything parses it.
//!
//! **Replay after an outage**: alerts first (the outbox hands them out before anything else),
//! then the current `state` (retained, so the overview is right at once), then the backlog
//! **oldest first**, paced. Oldest first because the live picture is already in `state`, so
//! nothing urgent waits behind the backlog; because each aggregate topic then arrives in time
//! order, which keeps the centre's time series and "last bin seen" watermarks simple; and
//! because roll-ups merge from the oldest end, so the rows being merged are the next to go
//! rather than rows in flight.
//!
//! **Reconnecting**: capped exponential backoff with full jitter, and the first attempt after
//! losing an established connection also waits a random part of [`FIRST_RETRY_SPREAD`]: a
//! city of gateways that lose the same broker at the same instant must not all knock again in
//! the same instant.
//!
//! **Security**: `mqtts://` brokers are reached over TLS ([`tls`]: rustls, ring, only the CAs
//! of `uplink.ca_file` trusted, the certificate checked against the broker's host name), with
//! an optional client certificate and an optional username and password (read from a file at
//! load; never logged). A failure that a person has to fix — a broker certificate the gateway
//! does not trust, a broker that refuses the gateway's certificate or login — is logged at
//! ERROR, once per outage and kind, and counted in [`UplinkStatus`]; the gateway keeps retrying
//! with backoff meanwhile, and messages wait in the outbox.

pub mod bookings;
pub mod payload;
pub mod situation;
pub mod tls;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use jiff::Timestamp;
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, LastWill, MqttOptions,
    Outgoing, Packet, QoS, TlsConfiguration, Transport,
};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::devices::backoff::Backoff;
use crate::outbox::{OutMessage, Outbox};

/// Longest first wait before reconnecting (jittered); it doubles up to
/// `uplink.max_reconnect_backoff`.
const MIN_BACKOFF: Duration = Duration::from_millis(250);
/// The first retry after losing an established connection waits up to this (jittered).
pub const FIRST_RETRY_SPREAD: Duration = Duration::from_secs(5);
/// Downlink messages waiting for the core loop. Each bookings message replaces the last, and
/// the core takes them at once; when full, the newest is dropped with a WARN (the retained
/// message comes again with the next connection).
pub const DOWNLINK_CAPACITY: usize = 8;

/// What the rest of the gateway may read about the link.
#[derive(Debug, Default)]
pub struct UplinkStatus {
    pub connected: AtomicBool,
    pub delivered: AtomicU64,
    /// Messages that could never be sent (over the packet size limit).
    pub dropped: AtomicU64,
    pub last_ack_ms: AtomicU64,
    /// Connection attempts made (each a TCP connect and MQTT CONNECT).
    pub connect_attempts: AtomicU64,
    /// Connection attempts that failed in the TLS handshake (an untrusted broker
    /// certificate, a refused client certificate, …): a person has to act.
    pub tls_failures: AtomicU64,
    /// Connection attempts the broker refused for the login (bad username or password, not
    /// authorised): a person has to act.
    pub login_refusals: AtomicU64,
}

pub struct UplinkDriver {
    config: Config,
    outbox: Outbox,
    /// The latest retained `state`. It is not queued in the outbox: only the newest matters,
    /// it is rebuilt from the persisted engine state after a restart, and keeping it out of
    /// SQLite spares the flash a write per update.
    state: watch::Receiver<Option<OutMessage>>,
    status: Arc<UplinkStatus>,
    started: Timestamp,
    /// Where bookings from the centre go; `None`: the downlink is not read.
    downlink: Option<mpsc::Sender<Vec<u8>>>,
}

/// Publishes handed to rumqttc and not yet acknowledged. Entries are outbox row ids; `None`
/// is a status or state message, which has no row.
#[derive(Debug, Default)]
struct InFlight {
    /// Handed over, packet id not yet known: rumqttc numbers packets as it writes them, in
    /// the order they were handed over.
    unnumbered: VecDeque<Option<i64>>,
    numbered: HashMap<u16, Option<i64>>,
}

impl InFlight {
    fn queued(&mut self, row: Option<i64>) {
        self.unnumbered.push_back(row);
    }

    /// rumqttc wrote the oldest handed-over publish as packet `pkid`.
    fn written(&mut self, pkid: u16) {
        if let Some(row) = self.unnumbered.pop_front() {
            self.numbered.insert(pkid, row);
        }
    }

    /// The broker acknowledged packet `pkid`; the outbox row it carried, if any.
    fn acked(&mut self, pkid: u16) -> Option<i64> {
        self.numbered.remove(&pkid).flatten()
    }

    fn len(&self) -> usize {
        self.unnumbered.len() + self.numbered.len()
    }
}

/// Why a connection ended.
enum Ended {
    Shutdown,
    Failed { was_connected: bool },
}

/// Why a connection attempt failed, sorted by what the log should say.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Trouble {
    /// Network, DNS, a broker that is down: the usual outage, recovered by retrying.
    Unreachable,
    /// The TLS handshake failed; someone has to fix a certificate or the configuration.
    Tls(tls::TlsFailure),
    /// The broker answered CONNECT with this refusal.
    Refused(ConnectReturnCode),
}

impl Trouble {
    fn of(error: &ConnectionError) -> Self {
        if let Some(failure) = tls::TlsFailure::of(error) {
            return Trouble::Tls(failure);
        }
        match error {
            ConnectionError::ConnectionRefused(code) => Trouble::Refused(*code),
            _ => Trouble::Unreachable,
        }
    }

    /// The login was refused: only a person can fix that.
    fn is_login(&self) -> bool {
        matches!(
            self,
            Trouble::Refused(
                ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized
            )
        )
    }
}

/// Paces outbox publishes: a token bucket of `rate` a second holding at most one second's
/// worth, so a replay runs at `rate` and a burst never exceeds it.
#[derive(Debug)]
struct Pacer {
    rate: f64,
    tokens: f64,
    at: tokio::time::Instant,
}

impl Pacer {
    fn new(rate: u32) -> Self {
        let rate = f64::from(rate.max(1));
        Pacer {
            rate,
            tokens: rate,
            at: tokio::time::Instant::now(),
        }
    }

    fn refill(&mut self) {
        let now = tokio::time::Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate).min(self.rate);
        self.at = now;
    }

    /// How many publishes may go now.
    fn available(&mut self) -> usize {
        self.refill();
        self.tokens.floor().max(0.0) as usize
    }

    fn take(&mut self, n: usize) {
        self.tokens -= n as f64;
    }

    /// How long until one more may go.
    fn wait(&mut self) -> Duration {
        self.refill();
        if self.tokens >= 1.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - self.tokens) / self.rate)
        }
    }
}

impl UplinkDriver {
    pub fn new(
        config: Config,
        outbox: Outbox,
        state: watch::Receiver<Option<OutMessage>>,
        status: Arc<UplinkStatus>,
    ) -> Self {
        UplinkDriver {
            config,
            outbox,
            state,
            status,
            started: Timestamp::now(),
            downlink: None,
        }
    }

    /// Reads the bookings topic and hands each message to `tx`.
    pub fn with_downlink(mut self, tx: mpsc::Sender<Vec<u8>>) -> Self {
        self.downlink = Some(tx);
        self
    }

    /// The full bookings topic.
    pub fn bookings_topic(&self) -> String {
        self.topic(&self.config.situation.bookings_topic)
    }

    /// A publish arrived: bookings go to the core, oversize ones are dropped first.
    fn downlink_publish(&self, publish: &rumqttc::Publish) {
        let Some(tx) = &self.downlink else { return };
        if publish.topic != self.bookings_topic() {
            return;
        }
        let bytes = publish.payload.len();
        if bytes > crate::bookings::MAX_MESSAGE_BYTES {
            tracing::warn!(
                topic = %publish.topic,
                bytes,
                max_bytes = crate::bookings::MAX_MESSAGE_BYTES,
                "dropped a bookings message from the centre that is over the size limit, unread; the stored bookings stay"
            );
            return;
        }
        if tx.try_send(publish.payload.to_vec()).is_err() {
            tracing::warn!(
                topic = %publish.topic,
                "dropped a bookings message from the centre: the core loop is behind; the stored bookings stay and the retained message comes again on the next connection"
            );
        }
    }

    /// Runs until `shutdown`; then spends at most `drain` delivering what is in flight and
    /// saying `offline`, and returns.
    pub async fn run(self, shutdown: CancellationToken, drain: Duration) {
        self.log_link_security();
        let mut backoff = Backoff::jittered(MIN_BACKOFF, self.config.uplink.max_reconnect_backoff);
        // What the current outage has already logged, so each kind is said once.
        let mut logged: Vec<Trouble> = Vec::new();
        loop {
            self.status.connect_attempts.fetch_add(1, Ordering::Relaxed);
            let was_connected = match self
                .connection(&shutdown, drain, &mut backoff, &mut logged)
                .await
            {
                Ended::Shutdown => return,
                Ended::Failed { was_connected } => was_connected,
            };
            self.status.connected.store(false, Ordering::Relaxed);
            if was_connected {
                backoff.raise_to(FIRST_RETRY_SPREAD);
            }
            // Full jitter: a city of gateways that lost the same broker must not come back
            // in step.
            let wait = backoff.next_wait();
            tracing::debug!(
                wait_ms = wait.as_millis() as u64,
                "reconnecting to the central broker after a pause"
            );
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Says once, at start, how the link is secured, and warns when it is less safe than the
    /// configuration may suggest.
    fn log_link_security(&self) {
        let up = &self.config.uplink;
        let broker = format!("mqtt://{}:{}", up.host, up.port);
        if up.tls.is_none() && up.login.is_some() {
            tracing::warn!(
                %broker,
                "the uplink password goes over plain TCP, readable by anyone on the path; use an mqtts:// broker URL"
            );
        }
        if up.tls_files_unused {
            tracing::warn!(
                %broker,
                "uplink.ca_file and the client certificate are set but the broker URL is plain mqtt://, so they are not used and the link is not encrypted"
            );
        }
        if let Some(tls) = &up.tls {
            tracing::info!(
                broker = %format!("mqtts://{}:{}", up.host, up.port),
                trusted_cas = tls.trusted_cas,
                client_certificate = tls.client_certificate,
                login = up.login.is_some(),
                "the uplink uses TLS; the broker's certificate must be signed by a CA in uplink.ca_file and issued for its host name"
            );
        }
    }

    fn options(&self) -> MqttOptions {
        let up = &self.config.uplink;
        let mut options = MqttOptions::new(up.client_id.clone(), up.host.clone(), up.port);
        if let Some(tls) = &up.tls {
            // The ClientConfig was built once when the config was loaded; every connection
            // shares it. rumqttc checks the certificate against `up.host`.
            options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                tls.client_config(),
            )));
        }
        if let Some((username, password)) = &up.login {
            options.set_credentials(username.clone(), password.expose());
        }
        options.set_keep_alive(up.keep_alive);
        // Delivery is tracked in the outbox, not in a broker session: every connection starts
        // clean and re-sends what the outbox still holds.
        options.set_clean_session(true);
        options.set_inflight(up.max_inflight);
        // rumqttc's default limit (10 KiB) is below a large hall's `state`; a packet over the
        // limit breaks the connection, so the limit is the config's and `fill` enforces it.
        // Incoming: at least a full bookings message with its topic and header, whatever the
        // outgoing limit, or a retained one would break every connection as it arrived.
        let incoming = up
            .max_packet_bytes
            .max(crate::bookings::MAX_MESSAGE_BYTES + 1024);
        options.set_max_packet_size(incoming, up.max_packet_bytes);
        options.set_last_will(LastWill::new(
            self.topic(payload::TOPIC_STATUS),
            payload::status_payload(&self.config, false, self.started, Timestamp::now()),
            QoS::AtLeastOnce,
            true,
        ));
        options
    }

    fn topic(&self, sub: &str) -> String {
        format!("{}/{sub}", payload::base_topic(&self.config))
    }

    // This is the one place allowed to create an MQTT client (clippy.toml).
    #[allow(clippy::disallowed_methods)]
    async fn connection(
        &self,
        shutdown: &CancellationToken,
        drain: Duration,
        backoff: &mut Backoff,
        logged: &mut Vec<Trouble>,
    ) -> Ended {
        let window = usize::from(self.config.uplink.max_inflight);
        // Room above the window for the status and state messages, which are not windowed.
        let (client, mut eventloop) = AsyncClient::new(self.options(), window + 16);
        let mut state = self.state.clone();
        // A state that could not be queued yet (request queue full); retried on the next ack.
        let mut state_unsent = false;
        let mut state_open = true;
        let mut connected = false;
        let mut inflight = InFlight::default();
        let mut pacer = Pacer::new(self.config.uplink.max_replay_msgs_per_sec);
        // Set when the window had room but the pacer did not: try again when it has.
        let mut paced = false;
        loop {
            let in_flight = inflight.len();
            let pace_wait = pacer.wait();
            tokio::select! {
                _ = shutdown.cancelled() => {
                    if connected {
                        if state.has_changed().unwrap_or(false) || state_unsent {
                            self.publish_state(&client, &mut state, &mut inflight);
                        }
                        self.drain(&client, &mut eventloop, &mut inflight, drain).await;
                    }
                    self.outbox.release().await;
                    return Ended::Shutdown;
                }
                event = eventloop.poll() => match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        connected = true;
                        backoff.reset();
                        logged.clear();
                        self.status.connected.store(true, Ordering::Relaxed);
                        // What the last connection leased and never saw acked goes again.
                        self.outbox.release().await;
                        let pending = self.outbox.pending();
                        tracing::info!(
                            broker = %format!("{}:{}", self.config.uplink.host, self.config.uplink.port),
                            pending,
                            "connected to the central broker"
                        );
                        let online = payload::status_payload(&self.config, true, self.started, Timestamp::now());
                        if client.try_publish(self.topic(payload::TOPIC_STATUS), QoS::AtLeastOnce, true, online).is_ok() {
                            inflight.queued(None);
                        }
                        // A clean session forgets subscriptions: ask again on every connection.
                        if self.downlink.is_some()
                            && let Err(error) = client.try_subscribe(self.bookings_topic(), QoS::AtLeastOnce)
                        {
                            tracing::warn!(%error, "cannot subscribe to the bookings topic on this connection; bookings wait for the next");
                        }
                        // Current state first: the broker may have restarted and forgotten it.
                        state_unsent = !self.publish_state(&client, &mut state, &mut inflight);
                        paced = self.fill(&client, &mut inflight, &mut pacer).await;
                    }
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => inflight.written(pkid),
                    Ok(Event::Incoming(Packet::Publish(publish))) => self.downlink_publish(&publish),
                    Ok(Event::Incoming(Packet::PubAck(ack))) => {
                        self.delivered(inflight.acked(ack.pkid)).await;
                        if state_unsent {
                            state_unsent = !self.publish_state(&client, &mut state, &mut inflight);
                        }
                        paced = self.fill(&client, &mut inflight, &mut pacer).await;
                    }
                    Ok(_) => {}
                    Err(error) => {
                        if connected {
                            tracing::warn!(%error, in_flight, "lost the central broker; undelivered messages stay in the outbox and are re-sent after reconnecting");
                            // That says the outage has begun; a first failed retry adds nothing.
                            logged.push(Trouble::Unreachable);
                        } else {
                            self.failed_to_connect(&error, logged);
                        }
                        self.outbox.release().await;
                        return Ended::Failed { was_connected: connected };
                    }
                },
                changed = state.changed(), if connected && state_open => {
                    if changed.is_ok() {
                        state_unsent = !self.publish_state(&client, &mut state, &mut inflight);
                    } else {
                        // The core has stopped; keep delivering the outbox until shutdown.
                        state_open = false;
                    }
                }
                _ = self.outbox.new_messages(), if connected && in_flight < window => {
                    paced = self.fill(&client, &mut inflight, &mut pacer).await;
                }
                _ = tokio::time::sleep(pace_wait), if connected && paced && in_flight < window => {
                    paced = self.fill(&client, &mut inflight, &mut pacer).await;
                }
            }
        }
    }

    /// A connection attempt failed: counted, and logged as a sentence once per outage and
    /// kind of failure (later repeats at debug), at ERROR when a person has to act.
    fn failed_to_connect(&self, error: &ConnectionError, logged: &mut Vec<Trouble>) {
        let trouble = Trouble::of(error);
        match &trouble {
            Trouble::Tls(_) => {
                self.status.tls_failures.fetch_add(1, Ordering::Relaxed);
            }
            t if t.is_login() => {
                self.status.login_refusals.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
        if logged.contains(&trouble) {
            tracing::debug!(%error, "central broker still not connected");
            return;
        }
        let up = &self.config.uplink;
        let broker = format!("{}:{}", up.host, up.port);
        match &trouble {
            Trouble::Tls(failure @ tls::TlsFailure::Untrusted { .. }) => tracing::error!(
                %broker,
                problem = %failure,
                %error,
                "action needed: the gateway does not trust the central broker's TLS certificate and will not send to it; fix uplink.ca_file or the broker's certificate. Retrying with backoff, messages wait in the outbox"
            ),
            Trouble::Tls(failure) => tracing::error!(
                %broker,
                problem = %failure,
                %error,
                "action needed: the TLS handshake with the central broker failed; check the broker's TLS listener and uplink.client_cert_file. Retrying with backoff, messages wait in the outbox"
            ),
            Trouble::Refused(code) if trouble.is_login() => tracing::error!(
                %broker,
                username = up.login.as_ref().map_or("(none)", |(user, _)| user.as_str()),
                reason = ?code,
                "action needed: the central broker refused the gateway's login; check uplink.username and the password in uplink.password_file. Retrying with backoff, messages wait in the outbox"
            ),
            Trouble::Refused(code) => tracing::warn!(
                %broker,
                reason = ?code,
                "the central broker refused the connection; retrying with backoff, messages wait in the outbox"
            ),
            Trouble::Unreachable => tracing::warn!(
                %broker,
                %error,
                "cannot reach the central broker; retrying with backoff, messages wait in the outbox"
            ),
        }
        logged.push(trouble);
    }

    /// The broker acknowledged a publish: its outbox row, if it had one, can go.
    async fn delivered(&self, row: Option<i64>) {
        let Some(id) = row else { return };
        self.outbox.acked(vec![id]).await;
        self.status.delivered.fetch_add(1, Ordering::Relaxed);
        self.status.last_ack_ms.store(
            Timestamp::now().as_millisecond().max(0) as u64,
            Ordering::Relaxed,
        );
    }

    /// Queues the latest state, retained; false if the request queue had no room.
    fn publish_state(
        &self,
        client: &AsyncClient,
        state: &mut watch::Receiver<Option<OutMessage>>,
        inflight: &mut InFlight,
    ) -> bool {
        let Some(message) = state.borrow_and_update().clone() else {
            return true;
        };
        if message.payload.len() + 256 > self.config.uplink.max_packet_bytes {
            tracing::error!(
                bytes = message.payload.len(),
                max_packet_bytes = self.config.uplink.max_packet_bytes,
                "the state message is larger than uplink.max_packet_bytes; raise it"
            );
            return true;
        }
        match client.try_publish(
            self.topic(&message.topic),
            QoS::AtLeastOnce,
            true,
            message.payload,
        ) {
            Ok(()) => {
                inflight.queued(None);
                true
            }
            Err(_) => false,
        }
    }

    /// Publishes leased outbox rows until the in-flight window is full, the pacer says wait,
    /// or the outbox is empty. True if it stopped for the pacer (and rows may be waiting).
    async fn fill(&self, client: &AsyncClient, inflight: &mut InFlight, pacer: &mut Pacer) -> bool {
        let window = usize::from(self.config.uplink.max_inflight);
        loop {
            let free = window.saturating_sub(inflight.len());
            if free == 0 {
                return false;
            }
            let allowed = pacer.available();
            if allowed == 0 {
                return true;
            }
            let rows = self.outbox.fetch(free.min(allowed)).await;
            if rows.is_empty() {
                return false;
            }
            for row in rows {
                let m = &row.message;
                // Topic, header and payload must fit; a message that never can would block
                // the outbox forever, so it is dropped with an ERROR instead.
                if m.payload.len() + m.topic.len() + 128 > self.config.uplink.max_packet_bytes {
                    tracing::error!(
                        msg_id = %m.msg_id,
                        bytes = m.payload.len(),
                        max_packet_bytes = self.config.uplink.max_packet_bytes,
                        "message is larger than uplink.max_packet_bytes and can never be sent; dropping it"
                    );
                    self.status.dropped.fetch_add(1, Ordering::Relaxed);
                    self.outbox.acked(vec![row.id]).await;
                    continue;
                }
                match client.try_publish(
                    self.topic(&m.topic),
                    QoS::AtLeastOnce,
                    m.retain,
                    m.payload.clone(),
                ) {
                    Ok(()) => {
                        inflight.queued(Some(row.id));
                        pacer.take(1);
                    }
                    // The request queue is sized above the window, so this means the event
                    // loop is gone; the lease is released with the connection and the row
                    // goes again on the next.
                    Err(_) => return false,
                }
            }
        }
    }

    /// At shutdown: say `offline`, wait (bounded) for the PUBACKs of what is in flight, leave
    /// the rest in the outbox, disconnect.
    async fn drain(
        &self,
        client: &AsyncClient,
        eventloop: &mut EventLoop,
        inflight: &mut InFlight,
        deadline: Duration,
    ) {
        let offline = payload::status_payload(&self.config, false, self.started, Timestamp::now());
        if client
            .try_publish(
                self.topic(payload::TOPIC_STATUS),
                QoS::AtLeastOnce,
                true,
                offline,
            )
            .is_ok()
        {
            inflight.queued(None);
        }
        let wait = async {
            while inflight.len() > 0 {
                match eventloop.poll().await {
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => inflight.written(pkid),
                    Ok(Event::Incoming(Packet::PubAck(ack))) => {
                        self.delivered(inflight.acked(ack.pkid)).await;
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        };
        if tokio::time::timeout(deadline, wait).await.is_err() {
            tracing::info!(
                left = inflight.len(),
                "shutdown deadline reached with messages unacknowledged; they stay in the outbox"
            );
        }
        let _ = client.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await;
    }
}

#[cfg(test)]
mod backoff_tests {
    use super::*;

    /// The ceilings of the waits before each reconnect (ms), for connections that each
    /// failed (`false`) or were established and then lost (`true`), with the reconnect cap
    /// `cap`. Every wait is a random part of its ceiling.
    fn ceilings(cap: Duration, script: &[bool]) -> Vec<u128> {
        let mut backoff = Backoff::jittered(MIN_BACKOFF, cap);
        let mut out = Vec::new();
        for &was_connected in script {
            if was_connected {
                // What the ConnAck and then the loss do.
                backoff.reset();
                backoff.raise_to(FIRST_RETRY_SPREAD);
            }
            let ceiling = backoff.ceiling();
            assert!(backoff.next_wait() <= ceiling);
            out.push(ceiling.as_millis());
        }
        out
    }

    #[test]
    fn reconnect_ceilings_double_to_the_cap_and_a_lost_connection_spreads_its_first_retry() {
        let script = [false, false, false, true, false, false, false, true, false];
        assert_eq!(
            ceilings(Duration::from_secs(30), &script),
            [250, 500, 1000, 5000, 10000, 20000, 30000, 5000, 10000]
        );
        assert_eq!(
            ceilings(Duration::from_secs(3), &script),
            [250, 500, 1000, 3000, 3000, 3000, 3000, 3000, 3000]
        );
        // A cap below the first wait: the first wait keeps its quarter second.
        assert_eq!(
            ceilings(Duration::from_millis(100), &[false, false, true, false]),
            [250, 100, 100, 100]
        );
    }
}
