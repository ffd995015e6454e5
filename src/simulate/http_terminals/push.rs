//! One pushing terminal: a task that sends its records, oldest first, to the gateway's
//! `[terminal_http]` listener over one HTTP/1.1 connection, and keeps every record until the
//! gateway answered success — as the real devices do, so a gateway that was down (or killed
//! between committing and answering) gets them again.
//!
//! ```text
//! player ─► PushQueue (front: next to send) ─► run ─► POST ─► success? ─► pop, Ledger::taken
//!                                                          └► no: attempts+1, wait, again
//! ```
//!
//! Heartbeats are sent once (a lost one is not kept, as on the devices); a malformed record
//! is taken by any HTTP answer (the gateway refuses it; the terminal does not retry what its
//! server answered). ZKTeco terminals handshake first (`options=all`) and again after a
//! failure, send up to [`ZK_BATCH`] attendance lines per request, and count as taken the
//! first N lines of `OK: N`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use jiff::Timestamp;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tokio_util::sync::CancellationToken;

use super::encode::{HttpEncoder, PushRequest};
use super::{Entry, HttpKind, HttpTerminal, Record, SharedLedger, lock};
use crate::simulate::terminals::Message;

/// Attendance lines per ZKTeco upload.
pub const ZK_BATCH: usize = 10;
/// A record older than this when it goes out is sent as a late one (`currentEvent: false`).
const LATE_AFTER_MS: i64 = 10_000;
/// The answers the terminals read are short.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
const FINISH_WITHIN: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy)]
pub(super) struct PushSettings {
    pub request_timeout: Duration,
    pub retry: Duration,
}

#[derive(Debug, Default)]
struct PushQueue {
    /// Records not yet taken, oldest first, with the requests each has cost so far.
    pending: VecDeque<(Entry, u32)>,
    /// Hold everything until then (a backlog builds up).
    hold_until: Option<Instant>,
}

/// The player's end of a pushing terminal.
pub(super) struct PushHandle {
    queue: Arc<Mutex<PushQueue>>,
    notify: Arc<Notify>,
    task: JoinHandle<()>,
}

impl PushHandle {
    pub fn push(&self, entry: Entry) {
        lock(&self.queue).pending.push_back((entry, 0));
        self.notify.notify_one();
    }

    pub fn hold(&self, until: Instant) {
        lock(&self.queue).hold_until = Some(until);
        self.notify.notify_one();
    }

    pub fn idle(&self) -> bool {
        lock(&self.queue).pending.is_empty()
    }

    /// Waits for the task to stop (its token is cancelled by then); what is still kept.
    pub async fn finish(mut self) -> Vec<(Entry, u32)> {
        if timeout(FINISH_WITHIN, &mut self.task).await.is_err() {
            self.task.abort();
        }
        lock(&self.queue).pending.drain(..).collect()
    }
}

pub(super) fn spawn(
    terminal: HttpTerminal,
    target: SocketAddr,
    encoder: Arc<HttpEncoder>,
    ledger: SharedLedger,
    settings: PushSettings,
    stop: CancellationToken,
) -> PushHandle {
    let queue = Arc::new(Mutex::new(PushQueue::default()));
    let notify = Arc::new(Notify::new());
    let device = Pusher {
        t: terminal,
        target,
        encoder,
        ledger,
        settings,
        queue: queue.clone(),
        notify: notify.clone(),
        conn: None,
        late_through_ms: i64::MIN,
    };
    let task = tokio::spawn(device.run(stop));
    PushHandle {
        queue,
        notify,
        task,
    }
}

/// One open connection to the gateway.
struct Conn {
    sender: SendRequest<Full<Bytes>>,
    driver: JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// What came of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Answered(StatusCode, Bytes),
    /// No answer: connection refused or lost, or the timeout.
    NoAnswer(String),
}

struct Pusher {
    t: HttpTerminal,
    target: SocketAddr,
    encoder: Arc<HttpEncoder>,
    ledger: SharedLedger,
    settings: PushSettings,
    queue: Arc<Mutex<PushQueue>>,
    notify: Arc<Notify>,
    conn: Option<Conn>,
    /// Records up to this time (Unix ms) were held in a backlog: they go out as late ones.
    late_through_ms: i64,
}

/// What the task does next.
enum Next {
    WaitUntil(Instant),
    WaitForRecords,
    Send(Vec<(Entry, u32)>),
}

impl Pusher {
    async fn run(mut self, stop: CancellationToken) {
        let mut handshaken = self.t.kind != HttpKind::ZktecoPush;
        loop {
            if stop.is_cancelled() {
                return;
            }
            if !handshaken {
                let request = self.encoder.zkteco_handshake(&self.t);
                let outcome = self.send(&request, &stop).await;
                self.count_request(&outcome, None);
                if matches!(outcome, Outcome::Answered(StatusCode::OK, _)) {
                    handshaken = true;
                } else if !self.pause(&stop).await {
                    return;
                }
                continue;
            }
            match self.next() {
                Next::WaitUntil(until) => {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = sleep_until(until) => {}
                    }
                }
                Next::WaitForRecords => {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = self.notify.notified() => {}
                    }
                }
                Next::Send(batch) => {
                    let ok = self.deliver(batch, &stop).await;
                    if !ok {
                        handshaken = self.t.kind != HttpKind::ZktecoPush;
                        if !self.pause(&stop).await {
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Waits the retry pause; false when stopped.
    async fn pause(&self, stop: &CancellationToken) -> bool {
        tokio::select! {
            _ = stop.cancelled() => false,
            _ = sleep(self.settings.retry) => true,
        }
    }

    fn next(&mut self) -> Next {
        let mut q = lock(&self.queue);
        if let Some(until) = q.hold_until {
            if Instant::now() < until {
                return Next::WaitUntil(until);
            }
            q.hold_until = None;
            self.late_through_ms = Timestamp::now().as_millisecond();
        }
        let Some((front, _)) = q.pending.front() else {
            return Next::WaitForRecords;
        };
        let zk_line = |e: &Entry| {
            matches!(
                e.record,
                Record::Message(Message::Passage(_) | Message::Resend(_))
            )
        };
        if self.t.kind == HttpKind::ZktecoPush && zk_line(front) {
            let batch = q
                .pending
                .iter()
                .take_while(|(e, _)| zk_line(e))
                .take(ZK_BATCH)
                .cloned()
                .collect();
            return Next::Send(batch);
        }
        Next::Send(vec![q.pending[0].clone()])
    }

    /// Sends the front record(s); false when the gateway did not take them.
    async fn deliver(&mut self, batch: Vec<(Entry, u32)>, stop: &CancellationToken) -> bool {
        let Some((first, attempts)) = batch.first().cloned() else {
            return true;
        };
        let now_ms = Timestamp::now().as_millisecond();
        let current = attempts == 0
            && first.at_ms > self.late_through_ms
            && now_ms - first.at_ms < LATE_AFTER_MS;
        let request = match (self.t.kind, &first.record) {
            (HttpKind::ZktecoPush, Record::Message(Message::Heartbeat { .. })) => {
                self.encoder.zkteco_poll(&self.t)
            }
            (HttpKind::ZktecoPush, _) => {
                let entries: Vec<&Entry> = batch.iter().map(|(e, _)| e).collect();
                self.encoder.zkteco_attlog(&self.t, &entries)
            }
            (HttpKind::UniubiPush, _) => self.encoder.uniubi_push(&self.t, &first),
            _ => self.encoder.hikvision_push(&self.t, &first, current),
        };
        let outcome = self.send(&request, stop).await;
        self.count_request(&outcome, Some(&batch));
        let heartbeat = matches!(first.record, Record::Message(Message::Heartbeat { .. }));
        let bad = matches!(first.record, Record::Message(Message::Bad(..)));
        let taken = match &outcome {
            Outcome::NoAnswer(_) => 0,
            Outcome::Answered(..) if bad => 1,
            Outcome::Answered(status, body) => self.taken_by(*status, body, batch.len()),
        };
        // Heartbeats are not kept: one that did not get through is gone.
        let consumed = if heartbeat { 1 } else { taken };
        {
            let mut q = lock(&self.queue);
            for _ in 0..consumed {
                q.pending.pop_front();
            }
            // The rest of the batch stays at the front, one request dearer.
            for (_, a) in q.pending.iter_mut().take(batch.len() - consumed) {
                *a += 1;
            }
        }
        let mut ledger = lock(&self.ledger);
        for (entry, attempts) in batch.iter().take(taken) {
            ledger.taken(entry, attempts + 1);
        }
        if let Outcome::NoAnswer(why) = &outcome {
            tracing::debug!(terminal = %self.t.sim.id, error = %why, "push got no answer; the terminal keeps the record");
        }
        taken == batch.len()
    }

    /// How many of the `sent` records the gateway's answer takes.
    fn taken_by(&self, status: StatusCode, body: &Bytes, sent: usize) -> usize {
        if status != StatusCode::OK {
            return 0;
        }
        match self.t.kind {
            HttpKind::UniubiPush => {
                let ok = serde_json::from_slice::<Value>(body).is_ok_and(|v| {
                    v.get("success") == Some(&Value::Bool(true))
                        || v.get("result").and_then(Value::as_i64) == Some(1)
                });
                usize::from(ok)
            }
            HttpKind::ZktecoPush => zk_taken(body, sent),
            _ => sent,
        }
    }

    fn count_request(&self, outcome: &Outcome, batch: Option<&[(Entry, u32)]>) {
        let i = self.t.index;
        let mut ledger = lock(&self.ledger);
        let Some(r) = ledger.reports.get_mut(i) else {
            return;
        };
        r.requests += 1;
        let failed = match outcome {
            Outcome::NoAnswer(_) => true,
            Outcome::Answered(status, _) => *status != StatusCode::OK,
        };
        r.failed_requests += u64::from(failed);
        let again = batch.map_or(0, |b| {
            b.iter()
                .filter(|(e, a)| {
                    *a > 0 && !matches!(e.record, Record::Message(Message::Heartbeat { .. }))
                })
                .count() as u64
        });
        r.retries += again;
        ledger.redelivered += again;
    }

    /// One request on the terminal's connection (opened when there is none), within the
    /// request timeout; a connection that failed or timed out is dropped.
    async fn send(&mut self, request: &PushRequest, stop: &CancellationToken) -> Outcome {
        let limit = self.settings.request_timeout;
        let result = tokio::select! {
            _ = stop.cancelled() => Err("stopped".to_string()),
            r = timeout(limit, self.exchange(request)) => match r {
                Ok(r) => r,
                Err(_) => Err(format!("no answer within {} ms", limit.as_millis())),
            },
        };
        match result {
            Ok((status, body)) => Outcome::Answered(status, body),
            Err(why) => {
                self.conn = None;
                Outcome::NoAnswer(why)
            }
        }
    }

    async fn exchange(&mut self, request: &PushRequest) -> Result<(StatusCode, Bytes), String> {
        if self.conn.as_ref().is_none_or(|c| c.sender.is_closed()) {
            self.conn = None;
            let stream = TcpStream::connect(self.target)
                .await
                .map_err(|e| format!("cannot connect: {e}"))?;
            let _ = stream.set_nodelay(true);
            let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
            let driver = tokio::spawn(async move {
                let _ = connection.await;
            });
            self.conn = Some(Conn { sender, driver });
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err("no connection".into());
        };
        conn.sender.ready().await.map_err(|e| e.to_string())?;
        let mut builder = Request::builder()
            .method(request.method)
            .uri(request.target.as_str())
            .header(header::HOST, self.target.to_string())
            .header(header::USER_AGENT, user_agent(self.t.kind));
        if let Some(ct) = &request.content_type {
            builder = builder.header(header::CONTENT_TYPE, ct.as_str());
        }
        if let Some(auth) = &request.authorization {
            builder = builder.header(header::AUTHORIZATION, auth.as_str());
        }
        let http = builder
            .body(Full::new(Bytes::from(request.body.clone())))
            .map_err(|e| e.to_string())?;
        let response = conn
            .sender
            .send_request(http)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, body))
    }
}

fn user_agent(kind: HttpKind) -> &'static str {
    match kind {
        HttpKind::ZktecoPush => "iClock Proxy/1.09",
        HttpKind::UniubiPush => "okhttp/3.12.0",
        _ => "ISAPI/1.0",
    }
}

/// Lines of a ZKTeco upload the answer takes: `OK: N` the first N, a bare `OK` all of them.
pub fn zk_taken(body: &[u8], sent: usize) -> usize {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let Some(rest) = text.strip_prefix("OK") else {
        return 0;
    };
    let rest = rest.trim_start_matches(':').trim();
    if rest.is_empty() {
        return sent;
    }
    rest.parse::<usize>().map_or(0, |n| n.min(sent))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zkteco_answer_takes_the_lines_it_counts() {
        assert_eq!(zk_taken(b"OK: 3", 5), 3);
        assert_eq!(zk_taken(b"OK:7", 5), 5);
        assert_eq!(zk_taken(b"OK", 4), 4);
        assert_eq!(zk_taken(b"OK\n", 4), 4);
        assert_eq!(zk_taken(b"ERROR", 4), 0);
        assert_eq!(zk_taken(b"OK: many", 4), 0);
        assert_eq!(zk_taken(b"", 4), 0);
    }
}
