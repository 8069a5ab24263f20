//! What happens to a parked session with time: its delayed will is
//! published when the Will Delay Interval passes [MQTT-3.1.2-8] (v5.0),
//! and the session is removed when its Session Expiry Interval passes
//! (3.1.2.11.2), with the will if it is still waiting. Run by the
//! broker's housekeeping task.

use tokio::time::Instant;

use super::close::publish_will;
use crate::context::Core;

/// Publishes, at shutdown, the wills still waiting for their delay: the
/// sessions end with the broker process. With a store they do not: their
/// wills wait, stored, for their delay to pass after the restart.
pub fn publish_delayed_wills(core: &Core) {
    if core.store.is_some() {
        return;
    }
    for (client_id, will) in core.sessions.take_delayed_wills() {
        tracing::info!(%client_id, "shutting down: publishing a will still in its delay");
        publish_will(core, *will, &client_id);
    }
}

/// Publishes the wills and removes the sessions that are due at `now`.
pub fn run_due(core: &Core, now: Instant) {
    for due in core.sessions.take_due(now) {
        if let Some(will) = due.will {
            tracing::info!(client_id = %due.client_id, "will delay passed: publishing the will");
            publish_will(core, *will, &due.client_id);
            if let Some(store) = &core.store {
                store.will_published(&due.client_id);
            }
        }
        if let Some(parked) = due.expired {
            parked.discard(core, &due.client_id);
            core.metrics.sessions_expired.increment();
            tracing::info!(client_id = %due.client_id, "session expired: removed");
        }
    }
}
