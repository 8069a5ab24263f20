//! The broker's one housekeeping task: delayed wills and session expiry
//! when they come due, expired retained messages, and `$SYS` every
//! `sys_interval`. It sleeps until the next of these.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::context::Context;

/// How often expired retained messages are swept.
const RETAINED_SWEEP: Duration = Duration::from_secs(1);

/// Runs until shutdown.
pub async fn run(context: Arc<Context>) {
    let core = &context.core;
    let started = Instant::now();
    let token = core.tasks.token().clone();
    let mut next_sys: Option<Instant> = None;
    let mut next_sweep = started + RETAINED_SWEEP;
    loop {
        let now = Instant::now();
        // Read each round (at least once a second): a reload may change it.
        let seconds = core.config().sys_interval;
        let sys_interval = (seconds > 0).then(|| Duration::from_secs(seconds));
        match sys_interval {
            None => next_sys = None,
            Some(interval) => {
                let at = next_sys.get_or_insert(now);
                *at = (*at).min(now + interval);
            }
        }
        crate::session::expiry::run_due(core, now);
        if now >= next_sweep {
            // Failed logins are remembered for a minute.
            context.auth.login_failures.retain(|_, (_, last)| {
                now.duration_since(*last) <= crate::session::handshake::LOGIN_FAILURE_MEMORY
            });
            let removed = core.router.remove_expired_retained(now.into_std());
            if removed > 0 {
                core.metrics.messages_expired.add(removed as u64);
            }
            next_sweep = now + RETAINED_SWEEP;
        }
        if let (Some(at), Some(interval)) = (next_sys, sys_interval) {
            if now >= at {
                crate::sys::publish_all(core, started.elapsed());
                next_sys = Some(now + interval);
            }
        }
        let mut wake = next_sweep;
        for at in [next_sys, core.sessions.next_deadline()]
            .into_iter()
            .flatten()
        {
            wake = wake.min(at);
        }
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep_until(wake) => {}
            _ = core.sessions.deadline_added() => {}
        }
    }
}
