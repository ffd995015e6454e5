//! Process signals, for the daemon, the tools and the demo alike: the first SIGINT or SIGTERM
//! cancels the shutdown token that `supervisor::run` (or a simulator, or the demo) stops its
//! stages on; a second one exits at once with 130, for when a clean shutdown hangs.
//!
//! The daemon also takes SIGHUP, which is what the systemd unit's `ExecReload=` sends:
//! [`ConfigReload`] validates the new config first, so a bad file is logged and ignored and the
//! gateway keeps running on the config it has; a good one cancels the token like a stop does,
//! and `main` then re-executes the binary. The tools install no SIGHUP handler, so for them the
//! signal keeps its default (it ends the process).
//!
//! SIGHUPs coalesce, in any number and rhythm: while one is checked, more merge into it; once
//! a reload is under way, more are moot (the new process reads the newest file). The one
//! moment a SIGHUP could kill the daemon — its default action, before the handler is
//! installed: between the `exec` of a reload and the new process's [`shutdown_token`] — is
//! closed by holding SIGHUP blocked across it ([`hold_hangups`]): the mask survives `exec`,
//! a SIGHUP that comes meanwhile waits, and one that came before the new config was read is
//! dropped ([`drop_held_hangup`]) since that file is what it asked for.
//!
//! This is the async shell only: one task that waits on the signals and calls back, and the
//! three audited libc calls that set the thread's signal mask.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::config::{self, Overrides};
use crate::supervisor::notify::Notifier;

/// A token cancelled by the first SIGINT or SIGTERM; a second one exits the process at once
/// with 130. With `reload`, a SIGHUP runs its check and cancels the token when the new config
/// is good (see [`ConfigReload`]). Must be called inside a tokio runtime: it spawns the task
/// that listens.
pub fn shutdown_token(reload: Option<ConfigReload>) -> CancellationToken {
    let token = CancellationToken::new();
    // Installed here, not in the task: the handlers must be in place before a held SIGHUP
    // is let through.
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        reload
            .as_ref()
            .map(|_| signal(SignalKind::hangup()))
            .transpose(),
    );
    let hup_handled = matches!(handlers, (Ok(_), Ok(_), Ok(Some(_))));
    tokio::spawn(listen(token.clone(), handlers, reload));
    if hup_handled {
        release_hangups();
    }
    token
}

/// Blocks SIGHUP on this thread (and the threads it starts) until [`release_hangups`]: one
/// that comes meanwhile waits instead of ending the process. Call it on the main thread
/// before anything else and before `exec`ing a reload (the mask survives `exec`).
pub fn hold_hangups() {
    set_hangup_mask(libc::SIG_BLOCK);
}

/// Drops a SIGHUP that came while held: called just before the config is read, which is
/// newer than that signal.
pub fn drop_held_hangup() {
    let set = hangup_set();
    let zero = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `set` is an initialised sigset_t and `zero` a valid timespec, both living across
    // the call; a null siginfo pointer is allowed. A zero timeout makes it a poll: it takes a
    // pending SIGHUP off or returns EAGAIN at once.
    #[allow(unsafe_code)]
    let taken = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &zero) };
    if taken == libc::SIGHUP {
        tracing::info!(
            signal = "SIGHUP",
            "a reload asked for while the gateway was starting is served by the config it is reading now"
        );
    }
}

fn release_hangups() {
    set_hangup_mask(libc::SIG_UNBLOCK);
}

fn hangup_set() -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set it is given; sigaddset adds a valid signal
    // number to that initialised set. Both only write to `set`.
    #[allow(unsafe_code)]
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGHUP);
        set
    }
}

fn set_hangup_mask(how: libc::c_int) {
    let set = hangup_set();
    // SAFETY: `set` is initialised and outlives the call; the old mask is not asked for
    // (null). pthread_sigmask only changes this thread's mask.
    #[allow(unsafe_code)]
    let failed = unsafe { libc::pthread_sigmask(how, &set, std::ptr::null_mut()) };
    if failed != 0 {
        tracing::warn!(
            error = %std::io::Error::from_raw_os_error(failed),
            "cannot change the SIGHUP mask; a reload requested at the wrong moment may stop the gateway"
        );
    }
}

/// The daemon's SIGHUP: validate the config at `path` again, then stop for a reload or log and
/// keep running. It tells systemd which (`RELOADING=1`, or a status line), and `STOPPING=1`
/// when a SIGINT or SIGTERM stops the gateway instead.
pub struct ConfigReload {
    path: PathBuf,
    overrides: Overrides,
    notifier: Notifier,
    requested: Arc<AtomicBool>,
}

impl ConfigReload {
    /// `path` and `overrides` as the daemon loaded its config with; `notifier` talks to systemd.
    pub fn new(path: PathBuf, overrides: Overrides, notifier: Notifier) -> Self {
        ConfigReload {
            path,
            overrides,
            notifier,
            requested: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Set once a SIGHUP brought a valid config: the token was cancelled for a reload, not a
    /// stop, and `main` re-executes the gateway when it has stopped.
    pub fn requested(&self) -> Arc<AtomicBool> {
        self.requested.clone()
    }

    /// A SIGHUP came: true when the new config is valid and the gateway should stop to reload.
    fn check(&self) -> bool {
        // Reading and checking a hall config is quick and pure; the core loop keeps running
        // meanwhile on its own task.
        match config::load(&self.path, &self.overrides) {
            Ok(_) => {
                tracing::info!(
                    config = %self.path.display(),
                    signal = "SIGHUP",
                    "the new config is valid; restarting the gateway with it"
                );
                self.notifier.reloading();
                self.requested.store(true, Ordering::SeqCst);
                true
            }
            Err(error) => {
                tracing::error!(
                    config = %self.path.display(),
                    signal = "SIGHUP",
                    problems = %error,
                    "the new config is rejected; still running on the old one — fix the file and reload again"
                );
                self.notifier.status(
                    "config reload rejected (still running on the old config); see the journal",
                );
                false
            }
        }
    }

    /// A SIGINT or SIGTERM stops the gateway (not called when a reload stops it).
    fn stopping(&self) {
        self.notifier.stopping();
    }
}

type Handlers = (
    std::io::Result<Signal>,
    std::io::Result<Signal>,
    std::io::Result<Option<Signal>>,
);

/// The task behind [`shutdown_token`].
async fn listen(token: CancellationToken, handlers: Handlers, reload: Option<ConfigReload>) {
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = handlers else {
        tracing::error!("cannot install signal handlers; stop the gateway with SIGKILL");
        return;
    };
    let mut reloading = false;
    loop {
        tokio::select! {
            _ = term.recv() => tracing::info!(signal = "SIGTERM", "shutting down"),
            _ = int.recv() => tracing::info!(signal = "SIGINT", "shutting down"),
            _ = hangup(&mut hup) => {
                reloading = reload.as_ref().is_some_and(ConfigReload::check);
                if !reloading {
                    continue;
                }
            }
        }
        break;
    }
    if !reloading && let Some(reload) = &reload {
        reload.stopping();
    }
    token.cancel();
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    tracing::warn!("second signal: exiting without waiting for a clean shutdown");
    std::process::exit(130);
}

/// The next SIGHUP; never, where no handler was installed.
async fn hangup(hup: &mut Option<Signal>) {
    match hup {
        Some(hup) => {
            hup.recv().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example_hall() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("firmware-config/examples/hall.toml")
    }

    #[test]
    fn a_valid_config_on_sighup_asks_for_a_reload() {
        let reload = ConfigReload::new(example_hall(), Overrides::default(), Notifier::disabled());
        assert!(reload.check());
        assert!(reload.requested().load(Ordering::SeqCst));
    }

    #[test]
    fn a_bad_config_on_sighup_is_ignored_and_asks_for_nothing() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("hall.toml");
        std::fs::write(&path, "[hall]\nid = \n").expect("the bad config is written");
        let reload = ConfigReload::new(path, Overrides::default(), Notifier::disabled());
        assert!(!reload.check());
        assert!(!reload.requested().load(Ordering::SeqCst));
    }

    #[test]
    fn a_config_that_is_gone_on_sighup_is_ignored() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let reload = ConfigReload::new(
            dir.path().join("missing.toml"),
            Overrides::default(),
            Notifier::disabled(),
        );
        assert!(!reload.check());
        assert!(!reload.requested().load(Ordering::SeqCst));
    }
}
