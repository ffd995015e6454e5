//! TLS to the central broker (`mqtts://`): the PEM files named in `[uplink]` turned into one
//! rustls client configuration, and failed handshakes put into words.
//!
//! Place in the data flow: config validation calls [`UplinkTls::load`] when the hall file is
//! loaded, so `hallgate validate` names an unreadable or damaged certificate file by its key
//! path and the running gateway never meets one; the uplink driver hands the same
//! `ClientConfig` to rumqttc for every connection, so nothing is read or parsed per reconnect.
//! When a handshake fails, [`TlsFailure::of`] tells the driver whether the gateway distrusts
//! the broker, the broker refused the gateway, or something else went wrong, so the log can
//! say what to fix.
//!
//! The crypto is rustls with the *ring* provider, chosen here explicitly rather than taken
//! from a process-wide default: aws-lc (rustls' default) is a large C and assembly build that
//! cross-compiles poorly for the ARM boxes. Only the CAs in `ca_file` are trusted: the boxes
//! have no CA store that is known to be present and kept up to date, and the central broker's
//! CA is usually the city's own.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rumqttc::ConnectionError;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

/// Which `[uplink]` key a TLS problem belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFile {
    Ca,
    ClientCert,
    ClientKey,
}

impl TlsFile {
    /// The config key that names the file.
    pub fn key(self) -> &'static str {
        match self {
            TlsFile::Ca => "ca_file",
            TlsFile::ClientCert => "client_cert_file",
            TlsFile::ClientKey => "client_key_file",
        }
    }
}

/// Why the TLS files cannot be used. Messages name the file and what is wrong with it, never
/// its contents (a key file's bytes are secret).
#[derive(Debug, thiserror::Error)]
pub enum TlsLoadError {
    #[error("cannot read {}: {error}", path.display())]
    Read {
        file: TlsFile,
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{} is not usable PEM: {reason}", path.display())]
    Pem {
        file: TlsFile,
        path: PathBuf,
        reason: &'static str,
    },
    #[error("{} holds no {wanted} (a PEM file with \"-----BEGIN {wanted}-----\" lines; \
             a binary DER file must be converted with openssl first)", path.display())]
    Missing {
        file: TlsFile,
        path: PathBuf,
        wanted: &'static str,
    },
    #[error("certificate {index} in {} cannot be trusted as a CA: {error}", path.display())]
    BadCa {
        path: PathBuf,
        /// 1-based position in the bundle.
        index: usize,
        error: rustls::Error,
    },
    #[error("{} is not the private key of the certificate in {}", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("the client certificate and key cannot be used together: {error}")]
    ClientAuth { error: rustls::Error },
    #[error("the ring provider cannot be set up for TLS 1.2 and 1.3: {error}")]
    Provider { error: rustls::Error },
}

impl TlsLoadError {
    /// The file, hence the config key, the problem is about.
    pub fn file(&self) -> TlsFile {
        match self {
            TlsLoadError::Read { file, .. }
            | TlsLoadError::Pem { file, .. }
            | TlsLoadError::Missing { file, .. } => *file,
            TlsLoadError::BadCa { .. } | TlsLoadError::Provider { .. } => TlsFile::Ca,
            TlsLoadError::ClientAuth { .. } | TlsLoadError::KeyMismatch { .. } => {
                TlsFile::ClientKey
            }
        }
    }
}

/// The TLS side of the uplink, ready for every connection.
#[derive(Clone)]
pub struct UplinkTls {
    client_config: Arc<ClientConfig>,
    /// How many CA certificates are trusted, for the start-up log.
    pub trusted_cas: usize,
    /// Whether the gateway presents a certificate of its own.
    pub client_certificate: bool,
}

/// Hand-written so that nothing about keys can reach a log through `{:?}` of the config.
impl fmt::Debug for UplinkTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UplinkTls")
            .field("trusted_cas", &self.trusted_cas)
            .field("client_certificate", &self.client_certificate)
            .finish_non_exhaustive()
    }
}

impl UplinkTls {
    /// Reads the CA bundle at `ca` and, when given, the client certificate chain and key, and
    /// builds the client configuration. The broker's certificate is checked against these CAs
    /// and against the host name in the broker URL (rustls does both on every handshake).
    /// Every file is read even when another is bad, so all their problems come out at once.
    pub fn load(ca: &Path, client: Option<(&Path, &Path)>) -> Result<Self, Vec<TlsLoadError>> {
        let mut errors = Vec::new();
        let roots = read_certificates(TlsFile::Ca, ca)
            .and_then(|cas| trust_anchors(ca, cas))
            .map_err(|error| errors.push(error))
            .ok();
        let identity = client.and_then(|(cert, key)| {
            let chain = read_certificates(TlsFile::ClientCert, cert).map_err(|e| errors.push(e));
            let key = read_private_key(key).map_err(|e| errors.push(e));
            Some((chain.ok()?, key.ok()?))
        });
        let (Some((roots, trusted_cas)), true) = (roots, errors.is_empty()) else {
            return Err(errors);
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|error| vec![TlsLoadError::Provider { error }])?
            .with_root_certificates(roots);
        let client_config = match identity {
            None => builder.with_no_client_auth(),
            Some((chain, key)) => builder.with_client_auth_cert(chain, key).map_err(|error| {
                vec![match (error, client) {
                    (
                        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch),
                        Some((cert, key)),
                    ) => TlsLoadError::KeyMismatch {
                        cert: cert.to_path_buf(),
                        key: key.to_path_buf(),
                    },
                    (error, _) => TlsLoadError::ClientAuth { error },
                }]
            })?,
        };
        Ok(UplinkTls {
            client_config: Arc::new(client_config),
            trusted_cas,
            client_certificate: client.is_some(),
        })
    }

    /// The configuration rumqttc connects with; cheap to clone (shared).
    pub fn client_config(&self) -> Arc<ClientConfig> {
        Arc::clone(&self.client_config)
    }
}

/// The CA certificates as a root store, and how many there are.
fn trust_anchors(
    path: &Path,
    cas: Vec<CertificateDer<'static>>,
) -> Result<(RootCertStore, usize), TlsLoadError> {
    let mut roots = RootCertStore::empty();
    let count = cas.len();
    for (i, cert) in cas.into_iter().enumerate() {
        roots.add(cert).map_err(|error| TlsLoadError::BadCa {
            path: path.to_path_buf(),
            index: i + 1,
            error,
        })?;
    }
    Ok((roots, count))
}

fn read_file(file: TlsFile, path: &Path) -> Result<Vec<u8>, TlsLoadError> {
    std::fs::read(path).map_err(|error| TlsLoadError::Read {
        file,
        path: path.to_path_buf(),
        error,
    })
}

/// What is wrong with a PEM file, in words that quote none of its contents.
fn pem_problem(error: &pem::Error) -> &'static str {
    match error {
        pem::Error::MissingSectionEnd { .. } => "a section has no matching \"-----END\" line",
        pem::Error::IllegalSectionStart { .. } => "a \"-----BEGIN\" line is malformed",
        pem::Error::Base64Decode(_) => "a section's base64 text is damaged",
        pem::Error::SectionTooLarge => "a section is impossibly large",
        _ => "it cannot be parsed",
    }
}

fn read_certificates(
    file: TlsFile,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsLoadError> {
    let bytes = read_file(file, path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TlsLoadError::Pem {
            file,
            path: path.to_path_buf(),
            reason: pem_problem(&error),
        })?;
    if certs.is_empty() {
        return Err(TlsLoadError::Missing {
            file,
            path: path.to_path_buf(),
            wanted: "CERTIFICATE",
        });
    }
    Ok(certs)
}

fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsLoadError> {
    let file = TlsFile::ClientKey;
    let bytes = read_file(file, path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|error| match error {
        pem::Error::NoItemsFound => TlsLoadError::Missing {
            file,
            path: path.to_path_buf(),
            wanted: "PRIVATE KEY",
        },
        error => TlsLoadError::Pem {
            file,
            path: path.to_path_buf(),
            reason: pem_problem(&error),
        },
    })
}

/// A failed TLS handshake with the central broker, sorted by who has to act.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsFailure {
    /// The gateway does not trust the broker's certificate: wrong or missing CA in
    /// `ca_file`, a certificate for another host name, or one outside its validity.
    Untrusted { reason: String },
    /// The broker broke off the handshake with an alert: typically it wants a client
    /// certificate the gateway does not have, or does not accept the one it has.
    RefusedByBroker { alert: String },
    /// Any other TLS failure (no common protocol version, a peer that does not speak TLS).
    Handshake { error: String },
}

impl TlsFailure {
    /// The TLS failure behind a connection error, if it was one. rumqttc wraps it in
    /// different ways depending on when it surfaces (during the handshake, or — TLS 1.3 —
    /// at the first read after it, as a refused client certificate does), so the whole
    /// chain of sources is searched, looking inside I/O errors too.
    pub fn of(error: &ConnectionError) -> Option<Self> {
        let Some(rustls_error) = find_rustls_error(error) else {
            // The TCP connection stood, and the TLS layer failed without a TLS error: the
            // peer hung up mid-handshake, as a plain MQTT listener does on a ClientHello.
            return match error {
                ConnectionError::Tls(error) => Some(TlsFailure::Handshake {
                    error: format!("{error} (is the port a TLS listener?)"),
                }),
                _ => None,
            };
        };
        Some(match rustls_error {
            rustls::Error::InvalidCertificate(cert) => TlsFailure::Untrusted {
                reason: certificate_problem(cert),
            },
            rustls::Error::AlertReceived(alert) => TlsFailure::RefusedByBroker {
                alert: format!("{alert:?}"),
            },
            other => TlsFailure::Handshake {
                error: other.to_string(),
            },
        })
    }
}

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsFailure::Untrusted { reason } => {
                write!(f, "the broker's certificate is not trusted: {reason}")
            }
            TlsFailure::RefusedByBroker { alert } => write!(
                f,
                "the broker refused the TLS handshake (alert {alert}); it may want a client \
                 certificate (uplink.client_cert_file) or not accept the one given"
            ),
            TlsFailure::Handshake { error } => write!(f, "TLS handshake failed: {error}"),
        }
    }
}

fn find_rustls_error<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a rustls::Error> {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(found) = error.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        // An I/O error's `source` skips the error it wraps; look at that one itself.
        if let Some(found) = error
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(found);
        }
        next = error.source();
    }
    None
}

fn certificate_problem(error: &rustls::CertificateError) -> String {
    use rustls::CertificateError as E;
    match error {
        E::UnknownIssuer => {
            "it is signed by a CA that uplink.ca_file does not hold (or the broker does not \
             send its intermediate certificates)"
                .into()
        }
        E::NotValidForName | E::NotValidForNameContext { .. } => {
            "it is not issued for the host name in uplink.broker".into()
        }
        E::Expired | E::ExpiredContext { .. } => {
            "it has expired (or the box's clock is wrong)".into()
        }
        E::NotValidYet | E::NotValidYetContext { .. } => {
            "it is not valid yet (is the box's clock right?)".into()
        }
        E::Revoked => "it has been revoked".into(),
        E::BadSignature => "its signature does not verify".into(),
        other => format!("{other:?}"),
    }
}

/// A self-signed CA made once with `openssl req -x509 -newkey ec -pkeyopt
/// ec_paramgen_curve:P-256 -nodes -days 36500 -subj /CN=hallgate-unit-test-ca`, for unit tests
/// here and in `config`.
#[cfg(test)]
pub(crate) const TEST_CA_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBmDCCAT2gAwIBAgIUDQOmie1HO7AlJDykvPf4YNj4C0MwCgYIKoZIzj0EAwIw
IDEeMBwGA1UEAwwVaGFsbGdhdGUtdW5pdC10ZXN0LWNhMCAXDTI2MTIwMTA4MDg0
MVoYDzIxMjYxMTA3MDgwODQxWjAgMR4wHAYDVQQDDBVoYWxsZ2F0ZS11bml0LXRl
c3QtY2EwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAARAbKX+8j14rPzfXeIxZJKt
dh/xv6hA3iGgtyE05qBhgHO6vnnbd5sbWY/rXMZBQiJCGEG9fUBID4T/dd4apO2M
o1MwUTAdBgNVHQ4EFgQUXHCGVsH8TnjYUis5eHNSfb7+rycwHwYDVR0jBBgwFoAU
XHCGVsH8TnjYUis5eHNSfb7+rycwDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQD
AgNJADBGAiEA2V/dByzLZ6m3Uo0REdQXZUQDWGrwxKRTwZlhlll6IfgCIQCfvvcS
C2/E1G73R3DkhQGy2MDSYx67F07WBv5FPSHHdA==
-----END CERTIFICATE-----
";

#[cfg(test)]
mod tests {
    use super::*;

    const CA_PEM: &str = TEST_CA_PEM;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("the temp dir is writable");
        path
    }

    fn load_err(ca: &Path, client: Option<(&Path, &Path)>) -> TlsLoadError {
        let mut errors = UplinkTls::load(ca, client).expect_err("the files should be refused");
        assert_eq!(errors.len(), 1, "{errors:?}");
        errors.remove(0)
    }

    #[test]
    fn a_ca_bundle_loads_into_a_client_config() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = write(dir.path(), "ca.pem", &format!("{CA_PEM}\n{CA_PEM}"));
        let tls = UplinkTls::load(&ca, None).expect("a good CA bundle loads");
        assert_eq!(tls.trusted_cas, 2);
        assert!(!tls.client_certificate);
        assert!(!format!("{tls:?}").contains("MII"), "{tls:?}");
    }

    #[test]
    fn a_missing_ca_file_is_a_read_error_on_ca_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let error = load_err(&dir.path().join("nope.pem"), None);
        assert!(matches!(error, TlsLoadError::Read { .. }), "{error}");
        assert_eq!(error.file().key(), "ca_file");
    }

    #[test]
    fn a_file_without_certificates_says_what_it_lacks() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = write(dir.path(), "ca.pem", "just some text, no PEM sections\n");
        let error = load_err(&ca, None);
        assert!(matches!(error, TlsLoadError::Missing { .. }), "{error}");
        assert!(
            error.to_string().contains("holds no CERTIFICATE"),
            "{error}"
        );
    }

    #[test]
    fn a_truncated_pem_section_is_named_as_such() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cut = &CA_PEM[..CA_PEM.len() - 30];
        let ca = write(dir.path(), "ca.pem", cut);
        let error = load_err(&ca, None);
        assert!(matches!(error, TlsLoadError::Pem { .. }), "{error}");
        assert!(error.to_string().contains("-----END"), "{error}");
    }

    #[test]
    fn damaged_base64_is_reported_without_quoting_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let damaged = CA_PEM.replacen("MIIB", "M!!B", 1);
        let ca = write(dir.path(), "ca.pem", &damaged);
        let error = load_err(&ca, None).to_string();
        assert!(error.contains("base64"), "{error}");
        assert!(!error.contains("M!!B"), "{error}");
    }

    #[test]
    fn a_certificate_that_is_not_der_cannot_be_a_ca() {
        let dir = tempfile::tempdir().expect("temp dir");
        // Valid base64, but not a certificate inside.
        let ca = write(
            dir.path(),
            "ca.pem",
            "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n",
        );
        let error = load_err(&ca, None);
        assert!(
            matches!(error, TlsLoadError::BadCa { index: 1, .. }),
            "{error}"
        );
    }

    #[test]
    fn every_bad_file_is_reported_at_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = write(dir.path(), "ca.pem", "no certificates here\n");
        let key = write(dir.path(), "client.key", "no key either\n");
        let errors = UplinkTls::load(&ca, Some((&dir.path().join("absent.pem"), &key)))
            .expect_err("the files should be refused");
        let files: Vec<TlsFile> = errors.iter().map(TlsLoadError::file).collect();
        assert_eq!(
            files,
            [TlsFile::Ca, TlsFile::ClientCert, TlsFile::ClientKey],
            "{errors:?}"
        );
    }

    #[test]
    fn a_key_file_without_a_key_is_reported_on_client_key_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = write(dir.path(), "ca.pem", CA_PEM);
        let cert = write(dir.path(), "client.pem", CA_PEM);
        let key = write(dir.path(), "client.key", CA_PEM);
        let error = load_err(&ca, Some((&cert, &key)));
        assert_eq!(error.file(), TlsFile::ClientKey, "{error}");
        assert!(
            error.to_string().contains("holds no PRIVATE KEY"),
            "{error}"
        );
    }

    #[test]
    fn a_key_that_does_not_parse_is_reported_without_its_bytes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = write(dir.path(), "ca.pem", CA_PEM);
        let cert = write(dir.path(), "client.pem", CA_PEM);
        let key = write(
            dir.path(),
            "client.key",
            "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWJ5dGVz\n-----END PRIVATE KEY-----\n",
        );
        let error = load_err(&ca, Some((&cert, &key)));
        assert_eq!(error.file(), TlsFile::ClientKey, "{error}");
        let text = error.to_string();
        assert!(!text.contains("c2VjcmV0"), "{text}");
        assert!(!text.contains("secret-bytes"), "{text}");
    }

    fn io_wrapping(error: rustls::Error) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidData, error)
    }

    #[test]
    fn an_unknown_issuer_in_the_handshake_is_an_untrusted_broker() {
        let error = ConnectionError::Tls(rumqttc::TlsError::Io(io_wrapping(
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        )));
        let failure = TlsFailure::of(&error).expect("a TLS failure");
        assert!(matches!(failure, TlsFailure::Untrusted { .. }), "{failure}");
        assert!(failure.to_string().contains("uplink.ca_file"), "{failure}");
    }

    #[test]
    fn an_alert_after_the_handshake_is_found_deep_in_the_mqtt_error() {
        // TLS 1.3: a broker that wants a client certificate says so at the first read.
        let error = ConnectionError::MqttState(rumqttc::StateError::Deserialization(
            rumqttc::mqttbytes::Error::Io(io_wrapping(rustls::Error::AlertReceived(
                rustls::AlertDescription::CertificateRequired,
            ))),
        ));
        let failure = TlsFailure::of(&error).expect("a TLS failure");
        assert_eq!(
            failure,
            TlsFailure::RefusedByBroker {
                alert: "CertificateRequired".into()
            }
        );
    }

    #[test]
    fn a_peer_hanging_up_mid_handshake_is_a_handshake_failure() {
        let error = ConnectionError::Tls(rumqttc::TlsError::Io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "tls handshake eof",
        )));
        let failure = TlsFailure::of(&error).expect("a TLS failure");
        assert!(matches!(failure, TlsFailure::Handshake { .. }), "{failure}");
    }

    #[test]
    fn a_refused_tcp_connection_is_not_a_tls_failure() {
        let error =
            ConnectionError::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(TlsFailure::of(&error), None);
    }
}
