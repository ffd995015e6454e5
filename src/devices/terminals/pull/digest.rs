//! HTTP Digest authentication, the client half (RFC 7616; RFC 2617's `qop=auth` and RFC
//! 2069's legacy form), as the pull clients answer a Hikvision or Dahua terminal's challenge.
//! Pure: the caller supplies the client nonce.
//!
//! ```text
//! 401 + WWW-Authenticate ─► parse_challenge ─► DigestSession ─► authorization(method, uri)
//!                                                  (nonce re-used, nc counted up)
//! ```
//!
//! The session re-uses the device's nonce for every request (counting `nc` up), so a poll is
//! one round trip; the client tells a fresh challenge from a `stale=true` one, which is what
//! the lock-out rule in [`super::http`] needs.

use md5::Md5;
use sha2::{Digest as _, Sha256};

/// The hash of a challenge, as RFC 7616 names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Md5,
    Md5Sess,
    Sha256,
    Sha256Sess,
}

impl Algorithm {
    fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_uppercase().as_str() {
            "" | "MD5" => Some(Algorithm::Md5),
            "MD5-SESS" => Some(Algorithm::Md5Sess),
            "SHA-256" => Some(Algorithm::Sha256),
            "SHA-256-SESS" => Some(Algorithm::Sha256Sess),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Md5Sess => "MD5-sess",
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Sha256Sess => "SHA-256-sess",
        }
    }

    fn hash(self, text: &str) -> String {
        match self {
            Algorithm::Md5 | Algorithm::Md5Sess => hex(&Md5::digest(text.as_bytes())),
            Algorithm::Sha256 | Algorithm::Sha256Sess => hex(&Sha256::digest(text.as_bytes())),
        }
    }

    fn session(self) -> bool {
        matches!(self, Algorithm::Md5Sess | Algorithm::Sha256Sess)
    }

    /// Preference when a device offers several: the stronger hash first (RFC 7616 §3.7).
    fn rank(self) -> u8 {
        match self {
            Algorithm::Sha256 | Algorithm::Sha256Sess => 2,
            Algorithm::Md5 | Algorithm::Md5Sess => 1,
        }
    }
}

/// One `WWW-Authenticate: Digest …` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub opaque: Option<String>,
    pub algorithm: Algorithm,
    /// The device offers `qop=auth` (else the RFC 2069 form is used).
    pub qop_auth: bool,
    /// `stale=true`: the credentials were right, only the nonce had expired.
    pub stale: bool,
}

/// The best Digest challenge among a response's `WWW-Authenticate` values; `None` when
/// none is a Digest challenge this client can answer (only `qop=auth-int`, an unknown
/// algorithm, no nonce).
pub fn parse_challenge<'a>(values: impl IntoIterator<Item = &'a str>) -> Option<Challenge> {
    values
        .into_iter()
        .filter_map(parse_one)
        .max_by_key(|c| c.algorithm.rank())
}

fn parse_one(value: &str) -> Option<Challenge> {
    let value = value.trim_start();
    let (scheme, rest) = value.split_at(value.find(' ').unwrap_or(value.len()));
    if !scheme.eq_ignore_ascii_case("digest") {
        return None;
    }
    let params = parameters(rest);
    let get = |key: &str| {
        params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    };
    let qop = get("qop");
    let qop_auth = qop.is_some_and(|q| q.split(',').any(|o| o.trim().eq_ignore_ascii_case("auth")));
    if qop.is_some() && !qop_auth {
        return None;
    }
    Some(Challenge {
        realm: get("realm")?.to_string(),
        nonce: get("nonce").filter(|n| !n.is_empty())?.to_string(),
        opaque: get("opaque").map(str::to_string),
        algorithm: Algorithm::parse(get("algorithm").unwrap_or(""))?,
        qop_auth,
        stale: get("stale").is_some_and(|s| s.eq_ignore_ascii_case("true")),
    })
}

/// `key=value, key="quoted, value"` pairs; a malformed tail ends the list.
fn parameters(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| *c == ',' || c.is_whitespace()).is_some() {}
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && *c != ',') {
            key.push(c);
        }
        if key.is_empty() || out.len() >= 32 {
            return out;
        }
        let mut value = String::new();
        if chars.next_if_eq(&'=').is_some() {
            if chars.next_if_eq(&'"').is_some() {
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => value.extend(chars.next()),
                        '"' => break,
                        c => value.push(c),
                    }
                }
            } else {
                while let Some(c) = chars.next_if(|c| *c != ',') {
                    value.push(c);
                }
            }
        }
        out.push((key.trim().to_string(), value.trim().to_string()));
    }
}

/// A challenge being answered: its nonce is re-used for each request, `nc` counting up.
#[derive(Debug, Clone)]
pub struct DigestSession {
    challenge: Challenge,
    nc: u32,
}

impl DigestSession {
    pub fn new(challenge: Challenge) -> Self {
        DigestSession { challenge, nc: 0 }
    }

    /// Requests answered with this challenge so far.
    pub fn uses(&self) -> u32 {
        self.nc
    }

    /// The `Authorization` value for the next request.
    pub fn authorization(
        &mut self,
        username: &str,
        password: &str,
        method: &str,
        uri: &str,
        cnonce: &str,
    ) -> String {
        self.nc = self.nc.wrapping_add(1);
        let c = &self.challenge;
        let nc = format!("{:08x}", self.nc);
        let answer = response(
            c.algorithm,
            Credentials {
                username,
                password,
                realm: &c.realm,
            },
            &c.nonce,
            c.qop_auth.then_some((nc.as_str(), cnonce)),
            method,
            uri,
        );
        let mut header = format!(
            "Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{}\", algorithm={}, response=\"{answer}\"",
            quote(username),
            quote(&c.realm),
            quote(&c.nonce),
            quote(uri),
            c.algorithm.name(),
        );
        if c.qop_auth {
            header.push_str(&format!(
                ", qop=auth, nc={nc}, cnonce=\"{}\"",
                quote(cnonce)
            ));
        }
        if let Some(opaque) = &c.opaque {
            header.push_str(&format!(", opaque=\"{}\"", quote(opaque)));
        }
        header
    }
}

/// Who answers a challenge.
#[derive(Clone, Copy)]
pub struct Credentials<'a> {
    pub username: &'a str,
    pub password: &'a str,
    pub realm: &'a str,
}

/// The `response` value (RFC 7616 §3.4.1): with `qop_nc_cnonce` for `qop=auth`, without it
/// the RFC 2069 form `H(HA1:nonce:HA2)`.
pub fn response(
    algorithm: Algorithm,
    who: Credentials<'_>,
    nonce: &str,
    qop_nc_cnonce: Option<(&str, &str)>,
    method: &str,
    uri: &str,
) -> String {
    let mut ha1 = algorithm.hash(&format!("{}:{}:{}", who.username, who.realm, who.password));
    if algorithm.session() {
        let cnonce = qop_nc_cnonce.map_or("", |(_, c)| c);
        ha1 = algorithm.hash(&format!("{ha1}:{nonce}:{cnonce}"));
    }
    let ha2 = algorithm.hash(&format!("{method}:{uri}"));
    match qop_nc_cnonce {
        Some((nc, cnonce)) => algorithm.hash(&format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")),
        None => algorithm.hash(&format!("{ha1}:{nonce}:{ha2}")),
    }
}

/// A quoted-string's content: `"` and `\` escaped.
fn quote(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MUFASA_7616: Credentials<'static> = Credentials {
        username: "Mufasa",
        password: "Circle of Life",
        realm: "http-auth@example.org",
    };
    const NONCE_7616: &str = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
    const CNONCE_7616: &str = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";

    #[test]
    fn the_rfc_7616_md5_example_gives_its_published_response() {
        let answer = response(
            Algorithm::Md5,
            MUFASA_7616,
            NONCE_7616,
            Some(("00000001", CNONCE_7616)),
            "GET",
            "/dir/index.html",
        );
        assert_eq!(answer, "8ca523f5e9506fed4657c9700eebdbec");
    }

    #[test]
    fn the_rfc_7616_sha_256_example_gives_its_published_response() {
        let answer = response(
            Algorithm::Sha256,
            MUFASA_7616,
            NONCE_7616,
            Some(("00000001", CNONCE_7616)),
            "GET",
            "/dir/index.html",
        );
        assert_eq!(
            answer,
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
    }

    #[test]
    fn the_rfc_2617_example_gives_its_published_response_through_the_session() {
        let challenge = parse_challenge([
            r#"Digest realm="testrealm@host.com", qop="auth,auth-int", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41""#,
        ])
        .expect("a digest challenge");
        let mut session = DigestSession::new(challenge);
        let header = session.authorization(
            "Mufasa",
            "Circle Of Life",
            "GET",
            "/dir/index.html",
            "0a4f113b",
        );
        assert!(
            header.contains("response=\"6629fae49393a05397450978507c4ef1\""),
            "{header}"
        );
        assert!(header.contains("nc=00000001"), "{header}");
        assert!(header.contains("opaque=\"5ccc069c403ebaf9f0171e9517f40e41\""));
        let second = session.authorization("Mufasa", "Circle Of Life", "GET", "/", "x");
        assert!(second.contains("nc=00000002"), "{second}");
        assert_eq!(session.uses(), 2);
    }

    #[test]
    fn the_simulated_device_accepts_what_the_session_writes() {
        use crate::simulate::http_terminals::digest::{DigestGuard, Verdict};
        let now = std::time::Instant::now();
        let mut guard = DigestGuard::new(
            "DS-K1T671",
            "admin",
            "pa\"ss",
            3,
            std::time::Duration::from_secs(60),
        );
        let Verdict::Challenge(c) = guard.check("POST", "/ISAPI/x?format=json", None, now) else {
            panic!("challenged");
        };
        let mut session = DigestSession::new(parse_challenge([c.as_str()]).expect("digest"));
        for _ in 0..3 {
            let header =
                session.authorization("admin", "pa\"ss", "POST", "/ISAPI/x?format=json", "c1");
            assert_eq!(
                guard.check("POST", "/ISAPI/x?format=json", Some(&header), now),
                Verdict::Allowed
            );
        }
    }

    #[test]
    fn a_stale_challenge_is_told_from_a_fresh_one_and_sha_256_is_preferred() {
        let c = parse_challenge([
            r#"Digest realm="r", nonce="n1", qop="auth", algorithm=MD5, stale="FALSE""#,
            r#"Digest realm="r", nonce="n2", qop="auth", algorithm=SHA-256, stale=TRUE"#,
            r#"Basic realm="r""#,
        ])
        .expect("digest");
        assert_eq!(c.algorithm, Algorithm::Sha256);
        assert_eq!(c.nonce, "n2");
        assert!(c.stale);
        assert!(parse_challenge([r#"Basic realm="r""#]).is_none());
        assert!(parse_challenge([r#"Digest realm="r", nonce="n", qop="auth-int""#]).is_none());
        assert!(
            parse_challenge([r#"Digest realm="r", nonce="n", algorithm=SHA-512-256"#]).is_none()
        );
    }

    #[test]
    fn a_device_without_qop_gets_the_rfc_2069_answer() {
        let mut s = DigestSession::new(
            parse_challenge([r#"Digest realm="r", nonce="n""#]).expect("digest"),
        );
        let header = s.authorization("u", "p", "GET", "/", "c");
        assert!(!header.contains("qop="), "{header}");
        let expected = response(
            Algorithm::Md5,
            Credentials {
                username: "u",
                password: "p",
                realm: "r",
            },
            "n",
            None,
            "GET",
            "/",
        );
        assert!(header.contains(&expected));
    }

    proptest! {
        #[test]
        fn any_header_value_is_read_without_panicking(value in ".{0,300}") {
            let _ = parse_challenge([value.as_str()]);
            let _ = parse_challenge([format!("Digest {value}").as_str()]);
        }
    }
}
