//! Password and token files: read at load time, checked, and held in a [`Secret`].
//!
//! Every credential in a hall config is a file beside it (`password_file`, `token_file`),
//! never inline. Reading the file at load makes a missing, empty, world-readable or shipped
//! example file a config problem with its key path, not a surprise at the first login; the
//! [`SecretRules`] say how strict to be (a login the gateway checks must also be long). The
//! uplink, the status page, terminals, cameras and counting cameras all read theirs here.

use std::fmt;
use std::path::Path;

use super::problems::{Problems, Report};

/// A password read from a file: never printed, never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `given` is this secret, in time that depends on neither: their digests are
    /// compared byte for byte without an early exit, so neither content nor length leaks to
    /// someone guessing over the network.
    pub fn matches(&self, given: &str) -> bool {
        use sha2::{Digest, Sha256};
        let (a, b) = (
            Sha256::digest(given.as_bytes()),
            Sha256::digest(self.0.as_bytes()),
        );
        let difference = a
            .iter()
            .zip(b.iter())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y));
        std::hint::black_box(difference) == 0
    }

    /// A fresh random password (32 hex digits): what the demo gives its simulated terminals.
    pub fn random() -> Self {
        use rand::Rng as _;
        let mut rng = rand::rng();
        Secret(
            (0..32)
                .map(|_| format!("{:x}", rng.random_range(0..16u8)))
                .collect(),
        )
    }
}

#[cfg(test)]
impl Secret {
    pub fn for_tests(secret: &str) -> Self {
        Secret(secret.to_string())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The shortest password accepted for a login the gateway itself checks.
pub const MIN_LOGIN_CHARS: usize = 12;

/// The passwords shipped in `firmware-config/examples/secrets/`: public, so never a login.
const EXAMPLE_SECRETS: [&str; 3] = [
    include_str!("../../firmware-config/examples/secrets/t-entrance.pass"),
    include_str!("../../firmware-config/examples/secrets/t-reading.pass"),
    include_str!("../../firmware-config/examples/secrets/t-health.pass"),
];

/// What a password file must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecretRules {
    /// At least this many characters (0: whatever the other side set, e.g. a device's own
    /// login or the central broker's).
    pub min_chars: usize,
    /// `hallgate demo` only: the shipped example files (world-readable in a checkout, their
    /// passwords public) are accepted, because the demo replaces every login with a fresh
    /// random one before anything listens.
    pub allow_examples: bool,
}

impl SecretRules {
    /// A credential the gateway presents to someone else: the file's mode and the shipped
    /// examples are checked, not the length.
    pub const PRESENTED: SecretRules = SecretRules {
        min_chars: 0,
        allow_examples: false,
    };

    /// A login the gateway checks (terminals, cameras): long enough too.
    pub fn guarding(allow_examples: bool) -> Self {
        SecretRules {
            min_chars: MIN_LOGIN_CHARS,
            allow_examples,
        }
    }

    /// The same file rules, for a credential presented to someone else.
    pub fn presented(self) -> Self {
        SecretRules {
            min_chars: 0,
            ..self
        }
    }
}

/// Whether `secret` is one of the shipped example passwords (or made like them).
pub fn is_example_secret(secret: &str) -> bool {
    secret.starts_with("example-only")
        || EXAMPLE_SECRETS
            .iter()
            .any(|e| e.trim_end_matches(['\r', '\n']) == secret)
}

/// The problems of a password read from `path`, Chinese first (staff read `validate`).
fn secret_problems(
    path: &Path,
    secret: &str,
    mode: Option<u32>,
    rules: SecretRules,
) -> Vec<String> {
    let mut out = Vec::new();
    let shown = path.display();
    if !rules.allow_examples {
        if let Some(mode) = mode
            && mode & 0o077 != 0
        {
            out.push(format!(
                "密码文件可被他人读取 (password file readable by group or others): {shown} has \
                 mode {:04o}; run `chmod 600 {shown}` (owner: the user hallgate runs as)",
                mode & 0o7777
            ));
        }
        if is_example_secret(secret) {
            out.push(format!(
                "示例密码不可使用 (the shipped example password): {shown} holds a password \
                 published with hallgate; write a new random one (e.g. `openssl rand -hex 16 > \
                 {shown}`) and set the same on the device"
            ));
        }
    }
    let chars = secret.chars().count();
    if chars < rules.min_chars {
        out.push(format!(
            "密码太短 (password too short): {shown} holds {chars} characters, at least {} are \
             needed",
            rules.min_chars
        ));
    }
    out
}

/// The permission bits of a file, where the platform has them.
fn file_mode(path: &Path) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).ok().map(|m| m.permissions().mode())
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// Reads a password (or token) file for a credential the gateway presents elsewhere.
pub(super) fn read_secret(
    base_dir: &Path,
    file: &Path,
    key: &str,
    problems: &mut Problems,
) -> Option<Secret> {
    read_secret_with(base_dir, file, key, SecretRules::PRESENTED, problems)
}

/// Reads a password file and checks it against `rules`.
pub(super) fn read_secret_with(
    base_dir: &Path,
    file: &Path,
    key: &str,
    rules: SecretRules,
    problems: &mut Problems,
) -> Option<Secret> {
    let path = base_dir.join(file);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let secret = text.trim_end_matches(['\r', '\n']).to_string();
            if secret.is_empty() {
                problems.report(key, format!("{} is empty", path.display()));
                return None;
            }
            let found = secret_problems(&path, &secret, file_mode(&path), rules);
            if found.is_empty() {
                Some(Secret(secret))
            } else {
                for message in found {
                    problems.report(key, message);
                }
                None
            }
        }
        Err(error) => {
            problems.report(key, format!("cannot read {}: {error}", path.display()));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_equal_only_when_identical() {
        let secret = Secret::for_tests("abc");
        assert!(secret.matches("abc"));
        assert!(!secret.matches("abd"));
        assert!(!secret.matches("abcd"));
        assert!(!secret.matches(""));
    }

    const FILE: &str = "/etc/hallgate/secrets/t1.pass";

    fn problems(secret: &str, mode: u32, rules: SecretRules) -> Vec<String> {
        secret_problems(Path::new(FILE), secret, Some(mode), rules)
    }

    #[test]
    fn a_login_password_of_twelve_characters_in_a_private_file_is_accepted() {
        assert!(problems("0123456789ab", 0o100600, SecretRules::guarding(false)).is_empty());
        assert!(problems("0123456789ab", 0o100400, SecretRules::guarding(false)).is_empty());
    }

    #[test]
    fn a_short_login_password_is_refused_but_a_presented_one_is_whatever_the_other_side_set() {
        let p = problems("s3cret", 0o600, SecretRules::guarding(false));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with("密码太短") && p[0].contains("at least 12"),
            "{p:?}"
        );
        assert!(problems("a", 0o600, SecretRules::guarding(false)).len() == 1);
        assert!(problems("admin12", 0o600, SecretRules::PRESENTED).is_empty());
    }

    #[test]
    fn a_file_readable_by_group_or_others_is_refused_with_the_chmod_that_fixes_it() {
        for mode in [0o640, 0o604, 0o644, 0o660, 0o100644] {
            let p = problems("a-long-enough-password", mode, SecretRules::PRESENTED);
            assert_eq!(p.len(), 1, "mode {mode:o}: {p:?}");
            assert!(p[0].contains(&format!("chmod 600 {FILE}")), "{p:?}");
        }
    }

    #[test]
    fn the_shipped_example_passwords_are_refused_outside_the_demo() {
        for example in EXAMPLE_SECRETS {
            let secret = example.trim_end_matches(['\r', '\n']);
            assert!(is_example_secret(secret), "{secret}");
            let p = problems(secret, 0o600, SecretRules::guarding(false));
            assert!(p.iter().any(|m| m.starts_with("示例密码")), "{p:?}");
            // The demo: its logins are replaced by random ones before anything listens.
            assert!(problems(secret, 0o644, SecretRules::guarding(true)).is_empty());
        }
        assert!(is_example_secret("example-only-lobby-2"));
        assert!(!is_example_secret("a-real-random-password"));
    }

    #[test]
    fn a_random_secret_is_long_enough_and_fresh() {
        let (a, b) = (Secret::random(), Secret::random());
        assert_ne!(a, b);
        assert!(problems(a.expose(), 0o600, SecretRules::guarding(false)).is_empty());
    }
}
