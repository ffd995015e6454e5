//! Simulated Hikvision people-counting cameras: the `http_push` counters of a config, each
//! POSTing its running totals as a `PeopleCounting` real-time notification to the gateway's
//! `[terminal_http]` listener, as the camera does over "HTTP listening".
//!
//! The totals are the counter's simulated register image (the same [`SimulatedCounter`] the
//! traffic moves), so the truth file is the same as for a polled counter. A camera posts when
//! its totals changed and otherwise every [`KEEPALIVE`]; a post that fails is retried at the
//! next beat with the then-current totals, which is all a camera that keeps running totals
//! needs to do.

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::{SharedCounter, lock};

/// How often a camera looks at its totals.
const BEAT: Duration = Duration::from_millis(500);
/// A camera with nothing new still posts this often (the gateway sees it alive).
const KEEPALIVE: Duration = Duration::from_secs(10);

/// One simulated camera.
#[derive(Debug)]
pub struct CountingCamera {
    pub id: String,
    pub counter: SharedCounter,
    pub target: SocketAddr,
    /// Its `username` and the password of its `password_file`, sent as HTTP Basic.
    pub login: Option<(String, String)>,
}

/// A real-time notification with these running totals (the camera's own XML, namespace
/// `urn:psialliance-org` as on DS-2CD6825 firmware).
pub fn realtime_xml(enter: u64, exit: u64, at: jiff::Timestamp) -> String {
    let at = at
        .to_zoned(jiff::tz::TimeZone::fixed(jiff::tz::offset(8)))
        .strftime("%Y-%m-%dT%H:%M:%S%:z");
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <EventNotificationAlert version=\"1.0\" xmlns=\"urn:psialliance-org\">\n\
         <ipAddress>127.0.0.1</ipAddress>\n<protocolType>HTTP</protocolType>\n\
         <channelID>1</channelID>\n<dateTime>{at}</dateTime>\n<activePostCount>1</activePostCount>\n\
         <eventType>PeopleCounting</eventType>\n<eventState>active</eventState>\n\
         <eventDescription>peopleCounting alarm</eventDescription>\n\
         <peopleCounting>\n<statisticalMethods>realTime</statisticalMethods>\n\
         <RealTime>\n<time>{at}</time>\n</RealTime>\n<enter>{enter}</enter>\n<exit>{exit}</exit>\n\
         </peopleCounting>\n</EventNotificationAlert>\n"
    )
}

impl CountingCamera {
    /// Posts until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        let mut last_sent: Option<(u64, u64)> = None;
        let mut last_post = tokio::time::Instant::now();
        let mut beat = tokio::time::interval(BEAT);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = beat.tick() => {}
            }
            let totals = lock(&self.counter).totals();
            if last_sent == Some(totals) && last_post.elapsed() < KEEPALIVE {
                continue;
            }
            last_post = tokio::time::Instant::now();
            match self.post(totals).await {
                Ok(()) => last_sent = Some(totals),
                Err(error) => {
                    tracing::debug!(camera = %self.id, %error, "a counting camera's post failed; posting again at the next beat");
                }
            }
        }
    }

    async fn post(&self, (enter, exit): (u64, u64)) -> Result<(), String> {
        let stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(self.target))
            .await
            .map_err(|_| "connect timed out".to_string())?
            .map_err(|e| e.to_string())?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        let body = realtime_xml(enter, exit, jiff::Timestamp::now());
        let mut request = hyper::Request::post(format!("/counters/{}", self.id))
            .header(hyper::header::HOST, self.target.to_string())
            .header(hyper::header::CONTENT_TYPE, "application/xml");
        if let Some((user, password)) = &self.login {
            let credential = BASE64.encode(format!("{user}:{password}"));
            request = request.header(hyper::header::AUTHORIZATION, format!("Basic {credential}"));
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let response = tokio::time::timeout(Duration::from_secs(5), sender.send_request(request))
            .await
            .map_err(|_| "no answer in time".to_string())?
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let _ = response.into_body().collect().await;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("answered {status}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::realtime_xml;
    use crate::terminals::wire::hikvision::{PeopleCount, people_counting};

    #[test]
    fn the_cameras_notification_reads_back_as_its_running_totals() {
        let xml = realtime_xml(42, 37, "2026-12-07T01:00:00Z".parse().expect("time"));
        match people_counting("application/xml", xml.as_bytes()) {
            Ok(PeopleCount::RealTime { enter, exit, .. }) => assert_eq!((enter, exit), (42, 37)),
            other => panic!("{other:?}"),
        }
    }
}
