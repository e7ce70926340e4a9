//! Telling systemd where the process stands (sd_notify(3)), for units of `Type=notify` or
//! `Type=notify-reload` (config/systemd/sessiongate.service).
//!
//! Without it systemd can only guess: under `Type=exec` a unit is "started" as soon as the
//! binary runs, before a listener is bound, so units ordered after it start too early and a
//! `systemctl reload` right after a start could reach the process before it handles SIGHUP.
//! With it:
//! - `READY=1` once every listener is bound and serving;
//! - `RELOADING=1` (with the `MONOTONIC_USEC` that `Type=notify-reload` matches against its
//!   signal) when a SIGHUP starts a reload, then `READY=1` when the reload is done, applied or
//!   refused (the running configuration serves either way; `STATUS` says which);
//! - `STOPPING=1` when the drain begins;
//! - `WATCHDOG=1` every half `WatchdogSec`, from the runtime that serves the traffic, so a
//!   runtime that stops making progress stops the pings and systemd restarts the process.
//!
//! Outside systemd (`NOTIFY_SOCKET` unset: Kubernetes, a terminal, the tests) every call does
//! nothing. A notification that cannot be sent is logged once and never fails the proxy.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sd_notify::NotifyState;

/// The service manager the process reports to, if any.
pub struct ServiceManager {
    notifying: bool,
    watchdog: Option<Duration>,
    /// A failed send is worth one warning, not one per watchdog ping.
    warned: AtomicBool,
}

impl ServiceManager {
    /// What systemd asked for through the environment: notifications when `NOTIFY_SOCKET` is
    /// set, watchdog pings when `WATCHDOG_USEC` is (and `WATCHDOG_PID`, if set, is this
    /// process).
    pub fn from_env() -> ServiceManager {
        ServiceManager {
            notifying: std::env::var_os("NOTIFY_SOCKET").is_some(),
            watchdog: sd_notify::watchdog_enabled(),
            warned: AtomicBool::new(false),
        }
    }

    /// Every listener is bound: the unit is started (or a reload is over).
    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(&one_line(status))]);
    }

    /// A reload begins; `ready` must follow when it is over.
    pub fn reloading(&self) {
        let mut states = vec![NotifyState::Reloading, NotifyState::Status("reloading")];
        // `Type=notify-reload` ignores a RELOADING=1 it cannot place after its own signal.
        match NotifyState::monotonic_usec_now() {
            Ok(now) => states.push(now),
            Err(e) => tracing::warn!(error = %e, "no monotonic clock for systemd's reload"),
        }
        self.send(&states);
    }

    /// The drain begins.
    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping, NotifyState::Status("draining")]);
    }

    /// Pings systemd's watchdog every half `WatchdogSec`, for as long as the runtime runs it.
    /// Without a watchdog it returns at once.
    pub async fn feed_watchdog(&self) {
        let Some(timeout) = self.watchdog else {
            return;
        };
        // Half the timeout, as sd_watchdog_enabled(3) advises: one late ping is not a restart.
        let mut every = tokio::time::interval(timeout / 2);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            self.send(&[NotifyState::Watchdog]);
        }
    }

    fn send(&self, states: &[NotifyState]) {
        if !self.notifying {
            return;
        }
        if let Err(e) = sd_notify::notify(states) {
            if !self.warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(error = %e, "cannot notify systemd (NOTIFY_SOCKET)");
            }
        }
    }
}

/// A notification is lines of `KEY=value`: a status (an error message, say) must not break
/// into more of them.
fn one_line(status: &str) -> String {
    let lines: Vec<&str> = status
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_stays_on_one_line() {
        assert_eq!(
            one_line("invalid config a.toml: 1 problem\n  a.toml: listener[0].listen: bad\n"),
            "invalid config a.toml: 1 problem; a.toml: listener[0].listen: bad"
        );
        assert_eq!(one_line("serving"), "serving");
    }
}
