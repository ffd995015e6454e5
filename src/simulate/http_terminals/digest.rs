//! HTTP Digest authentication (RFC 7616, MD5, `qop=auth`) as a Hikvision or Dahua device
//! checks it, and the device's lock-out after repeated failed logins. Pure: nonces come
//! from the caller's counter, time is passed in.
//!
//! The simulated pull devices ([`super::serve`]) answer every request through
//! [`DigestGuard::check`]; the client half ([`authorization`]) is here for the tests and for
//! anyone scripting a device by hand.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use md5::{Digest as _, Md5};

/// Failed logins in a row that lock a device, as Hikvision and Dahua firmware do by default.
pub const LOCK_AFTER_FAILURES: u32 = 5;
/// Nonces a device remembers; an older one is answered `stale=true`.
const NONCES_KEPT: usize = 64;

/// What the device makes of a request's `Authorization`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Let it through.
    Allowed,
    /// No (or an expired) credential: answer 401 with this `WWW-Authenticate`; not a failed
    /// login.
    Challenge(String),
    /// A wrong user or password: answer 401 with this challenge; counted.
    Failed(String),
    /// Locked after too many failures: refused whatever the credential.
    Locked,
}

/// Per-device login state: the realm, the nonces handed out, the failure count and lock.
#[derive(Debug)]
pub struct DigestGuard {
    realm: String,
    username: String,
    password: String,
    nonces: VecDeque<String>,
    next_nonce: u64,
    seed: u64,
    lock_for: Duration,
    consecutive_failures: u32,
    locked_until: Option<Instant>,
    /// Failed logins seen (wrong user or password), in all.
    pub failed_logins: u64,
    /// Times the device locked itself.
    pub lockouts: u64,
    /// Requests refused because the device was locked.
    pub refused_while_locked: u64,
}

impl DigestGuard {
    pub fn new(realm: &str, username: &str, password: &str, seed: u64, lock_for: Duration) -> Self {
        DigestGuard {
            realm: realm.to_string(),
            username: username.to_string(),
            password: password.to_string(),
            nonces: VecDeque::with_capacity(NONCES_KEPT),
            next_nonce: 0,
            seed,
            lock_for,
            consecutive_failures: 0,
            locked_until: None,
            failed_logins: 0,
            lockouts: 0,
            refused_while_locked: 0,
        }
    }

    /// A fresh `WWW-Authenticate` value.
    pub fn challenge(&mut self, stale: bool) -> String {
        self.next_nonce += 1;
        let nonce = hex(&Md5::digest(
            format!("{}:{}:{}", self.seed, self.realm, self.next_nonce).as_bytes(),
        ));
        if self.nonces.len() == NONCES_KEPT {
            self.nonces.pop_front();
        }
        self.nonces.push_back(nonce.clone());
        format!(
            "Digest realm=\"{}\", qop=\"auth\", nonce=\"{nonce}\", opaque=\"\", algorithm=\"MD5\", stale=\"{}\"",
            self.realm,
            if stale { "TRUE" } else { "FALSE" }
        )
    }

    /// Checks a request (`method`, its request target as sent, its `Authorization`).
    pub fn check(
        &mut self,
        method: &str,
        target: &str,
        header: Option<&str>,
        now: Instant,
    ) -> Verdict {
        if let Some(until) = self.locked_until {
            if now < until {
                if header.is_some() {
                    self.refused_while_locked += 1;
                }
                return Verdict::Locked;
            }
            self.locked_until = None;
            self.consecutive_failures = 0;
        }
        let Some(params) = header.and_then(parse_digest) else {
            return Verdict::Challenge(self.challenge(false));
        };
        let get = |k: &str| params.get(k).map(String::as_str).unwrap_or("");
        if !self.nonces.iter().any(|n| n == get("nonce")) {
            // A nonce from before a restart or long ago: the client must simply retry.
            return Verdict::Challenge(self.challenge(true));
        }
        let expected = response(
            &self.username,
            &self.password,
            &self.realm,
            get("nonce"),
            method,
            get("uri"),
            get("nc"),
            get("cnonce"),
        );
        let user_ok = get("username") == self.username;
        let algorithm_ok = matches!(get("algorithm"), "" | "MD5" | "md5");
        let qop_ok = get("qop") == "auth";
        let uri_ok = get("uri") == target;
        if user_ok && algorithm_ok && qop_ok && uri_ok && get("response") == expected {
            self.consecutive_failures = 0;
            return Verdict::Allowed;
        }
        self.failed_logins += 1;
        self.consecutive_failures += 1;
        if self.consecutive_failures >= LOCK_AFTER_FAILURES {
            self.lockouts += 1;
            self.locked_until = Some(now + self.lock_for);
        }
        Verdict::Failed(self.challenge(false))
    }

    pub fn locked(&self, now: Instant) -> bool {
        self.locked_until.is_some_and(|until| now < until)
    }
}

/// The `response` of RFC 7616 for MD5 with `qop=auth`.
#[allow(clippy::too_many_arguments)]
pub fn response(
    username: &str,
    password: &str,
    realm: &str,
    nonce: &str,
    method: &str,
    uri: &str,
    nc: &str,
    cnonce: &str,
) -> String {
    let ha1 = hex(&Md5::digest(
        format!("{username}:{realm}:{password}").as_bytes(),
    ));
    let ha2 = hex(&Md5::digest(format!("{method}:{uri}").as_bytes()));
    hex(&Md5::digest(
        format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}").as_bytes(),
    ))
}

/// The client's `Authorization` value answering `challenge` (a `WWW-Authenticate` value).
pub fn authorization(
    challenge: &str,
    username: &str,
    password: &str,
    method: &str,
    uri: &str,
    nc: u32,
    cnonce: &str,
) -> Option<String> {
    let params = parse_digest(challenge)?;
    let realm = params.get("realm")?;
    let nonce = params.get("nonce")?;
    let nc = format!("{nc:08x}");
    let answer = response(username, password, realm, nonce, method, uri, &nc, cnonce);
    Some(format!(
        "Digest username=\"{username}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", algorithm=MD5, response=\"{answer}\", qop=auth, nc={nc}, cnonce=\"{cnonce}\""
    ))
}

/// The parameters of a `Digest …` header, keys lower-cased; `None` when it is not Digest.
pub fn parse_digest(header: &str) -> Option<HashMap<String, String>> {
    let rest = header.trim_start();
    let (scheme, rest) = rest.split_at(rest.find(' ').unwrap_or(rest.len()));
    if !scheme.eq_ignore_ascii_case("digest") {
        return None;
    }
    let mut params = HashMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let mut key = String::new();
        while let Some(c) = chars.peek().copied() {
            if c == '=' || c == ',' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'=') {
            chars.next();
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some(next) = chars.next() {
                                value.push(next);
                            }
                        }
                        '"' => break,
                        c => value.push(c),
                    }
                }
            } else {
                while let Some(c) = chars.peek().copied() {
                    if c == ',' {
                        break;
                    }
                    value.push(c);
                    chars.next();
                }
            }
        }
        params.insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    Some(params)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_rfc_2617_example_gives_its_published_response() {
        // RFC 2617 section 3.5 (MD5, qop=auth), the example every implementation checks.
        let answer = response(
            "Mufasa",
            "Circle Of Life",
            "testrealm@host.com",
            "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            "GET",
            "/dir/index.html",
            "00000001",
            "0a4f113b",
        );
        assert_eq!(answer, "6629fae49393a05397450978507c4ef1");
    }

    fn guard() -> DigestGuard {
        DigestGuard::new("DS-K1T671", "admin", "s3cret", 7, Duration::from_secs(60))
    }

    fn answer(g: &mut DigestGuard, password: &str, now: Instant) -> Verdict {
        let Verdict::Challenge(challenge) = g.check("POST", "/ISAPI/x", None, now) else {
            panic!("a request without credentials is challenged");
        };
        let auth = authorization(&challenge, "admin", password, "POST", "/ISAPI/x", 1, "ab12")
            .expect("a digest challenge");
        g.check("POST", "/ISAPI/x", Some(&auth), now)
    }

    #[test]
    fn the_right_password_passes_and_a_wrong_one_is_counted() {
        let now = Instant::now();
        let mut g = guard();
        assert_eq!(answer(&mut g, "s3cret", now), Verdict::Allowed);
        assert!(matches!(answer(&mut g, "wrong", now), Verdict::Failed(_)));
        assert_eq!(g.failed_logins, 1);
        assert_eq!(answer(&mut g, "s3cret", now), Verdict::Allowed);
    }

    #[test]
    fn five_failures_in_a_row_lock_the_device_until_the_lock_runs_out() {
        let now = Instant::now();
        let mut g = guard();
        for _ in 0..4 {
            assert!(matches!(answer(&mut g, "wrong", now), Verdict::Failed(_)));
        }
        assert!(!g.locked(now));
        assert!(matches!(answer(&mut g, "wrong", now), Verdict::Failed(_)));
        assert!(g.locked(now));
        assert_eq!(g.lockouts, 1);
        // Even the right password is refused while locked.
        let later = now + Duration::from_secs(30);
        assert_eq!(
            g.check("POST", "/ISAPI/x", Some("Digest x=1"), later),
            Verdict::Locked
        );
        assert_eq!(g.refused_while_locked, 1);
        let after = now + Duration::from_secs(61);
        assert_eq!(answer(&mut g, "s3cret", after), Verdict::Allowed);
        assert_eq!(g.failed_logins, 5);
    }

    #[test]
    fn an_unknown_nonce_is_a_stale_challenge_not_a_failed_login() {
        let now = Instant::now();
        let mut g = guard();
        let challenge = "Digest realm=\"DS-K1T671\", qop=\"auth\", nonce=\"forged\"";
        let auth = authorization(challenge, "admin", "s3cret", "POST", "/ISAPI/x", 1, "c")
            .expect("digest");
        match g.check("POST", "/ISAPI/x", Some(&auth), now) {
            Verdict::Challenge(c) => assert!(c.contains("stale=\"TRUE\""), "{c}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(g.failed_logins, 0);
    }

    #[test]
    fn a_response_for_another_uri_fails() {
        let now = Instant::now();
        let mut g = guard();
        let Verdict::Challenge(challenge) = g.check("GET", "/a", None, now) else {
            panic!("challenge");
        };
        let auth =
            authorization(&challenge, "admin", "s3cret", "GET", "/b", 1, "c").expect("digest");
        assert!(matches!(
            g.check("GET", "/a", Some(&auth), now),
            Verdict::Failed(_)
        ));
    }

    #[test]
    fn header_parameters_are_read_quoted_or_not() {
        let p = parse_digest(
            r#"Digest username="ad\"min", realm="r", nc=00000001, qop=auth, uri="/x?a=1,2""#,
        )
        .expect("digest");
        assert_eq!(p["username"], "ad\"min");
        assert_eq!(p["nc"], "00000001");
        assert_eq!(p["qop"], "auth");
        assert_eq!(p["uri"], "/x?a=1,2");
        assert!(parse_digest("Basic YWRtaW46eA==").is_none());
    }

    proptest! {
        #[test]
        fn any_authorization_header_is_judged_without_panicking(header in ".{0,200}") {
            let mut g = guard();
            let _ = g.check("GET", "/", Some(&header), Instant::now());
        }
    }
}
