//! Test certificates, made by each test with the `openssl` command line: CAs, server
//! certificates for `localhost` and 127.0.0.1 signed by them, client certificates.
//!
//! Everything is ECDSA P-256 and valid for two days from now, written as PEM into the test's
//! directory. The extensions are spelled out in a config file of our own rather than taken
//! from the system's openssl.cnf, so the certificates are the same on every machine: a CA
//! that says it is one, a server certificate with the SAN a TLS client checks, a client
//! certificate for client authentication.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, ensure};

use super::run_to_completion;

/// How long one openssl command may take.
const OPENSSL_LIMIT: Duration = Duration::from_secs(30);

const OPENSSL_CONFIG: &str = "\
# Written by the hallgate test harness (tests/common/pki.rs).
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
authorityKeyIdentifier = keyid
";

/// A certificate and its private key, as PEM files.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A test CA.
#[derive(Debug, Clone)]
pub struct Ca {
    pub name: String,
    /// The CA's own certificate: what a client puts in its `ca_file`.
    pub cert: PathBuf,
    key: PathBuf,
    dir: PathBuf,
    config: PathBuf,
}

impl Ca {
    /// Makes a self-signed CA named `name` in `dir`.
    pub fn create(dir: &Path, name: &str) -> anyhow::Result<Self> {
        let config = dir.join("openssl-test.cnf");
        if !config.exists() {
            std::fs::write(&config, OPENSSL_CONFIG).context("cannot write the openssl config")?;
        }
        let ca = Ca {
            name: name.to_string(),
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
            dir: dir.to_path_buf(),
            config,
        };
        ca.openssl(
            &format!("{name}-create"),
            &[
                "req",
                "-x509",
                "-config",
                path_str(&ca.config)?,
                "-extensions",
                "ca_ext",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN={name}"),
                "-keyout",
                path_str(&ca.key)?,
                "-out",
                path_str(&ca.cert)?,
            ],
        )?;
        Ok(ca)
    }

    /// A server certificate for `localhost` and 127.0.0.1, signed by this CA.
    pub fn issue_server(&self, name: &str) -> anyhow::Result<Issued> {
        self.issue(name, "localhost", "server_ext")
    }

    /// A client certificate with common name `common_name`, signed by this CA.
    pub fn issue_client(&self, name: &str, common_name: &str) -> anyhow::Result<Issued> {
        self.issue(name, common_name, "client_ext")
    }

    fn issue(&self, name: &str, common_name: &str, extensions: &str) -> anyhow::Result<Issued> {
        let issued = Issued {
            cert: self.dir.join(format!("{name}.pem")),
            key: self.dir.join(format!("{name}.key")),
        };
        let csr = self.dir.join(format!("{name}.csr"));
        self.openssl(
            &format!("{name}-request"),
            &[
                "req",
                "-new",
                "-config",
                path_str(&self.config)?,
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-subj",
                &format!("/CN={common_name}"),
                "-keyout",
                path_str(&issued.key)?,
                "-out",
                path_str(&csr)?,
            ],
        )?;
        // A random serial: two certificates of one CA must never share one.
        let serial = format!("0x{:016x}", rand::random::<u64>());
        self.openssl(
            &format!("{name}-sign"),
            &[
                "x509",
                "-req",
                "-in",
                path_str(&csr)?,
                "-CA",
                path_str(&self.cert)?,
                "-CAkey",
                path_str(&self.key)?,
                "-set_serial",
                &serial,
                "-days",
                "2",
                "-extfile",
                path_str(&self.config)?,
                "-extensions",
                extensions,
                "-out",
                path_str(&issued.cert)?,
            ],
        )?;
        Ok(issued)
    }

    fn openssl(&self, step: &str, args: &[&str]) -> anyhow::Result<()> {
        let mut command = Command::new("openssl");
        command.args(args).current_dir(&self.dir);
        let out = run_to_completion(
            command,
            &self.dir,
            &format!("openssl-{step}"),
            OPENSSL_LIMIT,
        )
        .context(
            "cannot run openssl (the TLS tests make their certificates with it: \
                 apt-get install openssl)",
        )?;
        ensure!(
            out.status.success(),
            "openssl {} failed ({}):\n{}{}",
            args.join(" "),
            out.status,
            out.stdout,
            out.stderr
        );
        Ok(())
    }
}

fn path_str(path: &Path) -> anyhow::Result<&str> {
    path.to_str()
        .with_context(|| format!("{} is not UTF-8", path.display()))
}
