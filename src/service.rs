//! The service manager's view of the broker: systemd's notify protocol
//! (`sd_notify(3)`, through the `sd-notify` crate). `READY=1` once every
//! listener is bound and the store is loaded, `RELOADING=1` and `READY=1`
//! around a reload, `STOPPING=1` at shutdown, `STATUS=` with the number of
//! clients, and `WATCHDOG=1` at half the watchdog interval from a task on
//! the broker's runtime: a runtime that stops polling its tasks stops the
//! pings, and systemd restarts the service. Without `NOTIFY_SOCKET` in the
//! environment nothing is sent and no task runs.
//!
//! Also here, as a service starts: the open-file limit raised to what
//! `max_connections` needs.

use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;

use crate::metrics::Metrics;

/// What tells the service manager how the broker is doing.
#[derive(Debug, Clone)]
pub struct Notifier {
    enabled: bool,
}

impl Notifier {
    /// A notifier for the service manager that started this process, if
    /// one did (`NOTIFY_SOCKET` is set).
    pub fn from_env() -> Notifier {
        Notifier {
            enabled: std::env::var_os("NOTIFY_SOCKET").is_some(),
        }
    }

    fn send(&self, states: &[NotifyState]) {
        if !self.enabled {
            return;
        }
        if let Err(error) = sd_notify::notify(states) {
            tracing::warn!(%error, "cannot notify the service manager");
        }
    }

    /// The broker serves: listeners bound, store loaded.
    pub fn ready(&self, metrics: &Metrics) {
        let status = status(metrics);
        self.send(&[NotifyState::Ready, NotifyState::Status(&status)]);
    }

    /// A reload begins (`READY=1` follows with [`Notifier::ready`]).
    pub fn reloading(&self) {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[NotifyState::Reloading, now]),
            Err(_) => self.send(&[NotifyState::Reloading]),
        }
    }

    /// The broker is shutting down.
    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping, NotifyState::Status("shutting down")]);
    }

    /// Pings the watchdog at half the interval systemd asked for
    /// (`WATCHDOG_USEC`), with the client count as the status, from a task
    /// on the current runtime; none if no watchdog was asked for.
    pub fn spawn_watchdog(&self, metrics: Arc<Metrics>) -> Option<tokio::task::JoinHandle<()>> {
        if !self.enabled {
            return None;
        }
        let interval = sd_notify::watchdog_enabled()?.checked_div(2)?;
        let interval = interval.max(Duration::from_millis(10));
        let notifier = self.clone();
        Some(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let status = status(&metrics);
                notifier.send(&[NotifyState::Watchdog, NotifyState::Status(&status)]);
            }
        }))
    }
}

/// The status line: how many clients are connected.
fn status(metrics: &Metrics) -> String {
    let clients = metrics.clients_connected.get();
    format!("{clients} clients connected")
}

/// Descriptors the broker needs beside one per connection: listeners, the
/// store, the runtime's own.
pub const SPARE_DESCRIPTORS: u64 = 64;

/// Raises the open-file soft limit towards the hard limit (one descriptor
/// per connection), and warns, naming both limits, when `max_connections`
/// still cannot be reached. Returns the soft and hard limits in force.
pub fn raise_open_files(max_connections: usize) -> Option<(u64, u64)> {
    let wanted = (max_connections as u64).saturating_add(SPARE_DESCRIPTORS);
    let (soft, hard) = match rlimit::increase_nofile_limit(u64::MAX)
        .and_then(|_| rlimit::Resource::NOFILE.get())
    {
        Ok(limits) => limits,
        Err(error) => {
            tracing::warn!(%error, "cannot read or raise the open-file limit");
            return None;
        }
    };
    if soft < wanted {
        tracing::warn!(
            soft_limit = soft,
            hard_limit = hard,
            max_connections,
            "the open-file limit (soft {soft}, hard {hard}) is below what max_connections = \
             {max_connections} needs ({wanted}): connections past it are refused by the system; \
             raise the hard limit (LimitNOFILE= in the unit, ulimit -Hn)"
        );
    }
    Some((soft, hard))
}
