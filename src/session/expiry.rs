//! What happens to a parked session with time: its delayed will is
//! published when the Will Delay Interval passes [MQTT-3.1.2-8] (v5.0),
//! and the session is removed when its Session Expiry Interval passes
//! (3.1.2.11.2), with the will if it is still waiting. Run by the
//! broker's housekeeping task.

use tokio::time::Instant;

use super::close::publish_will;
use super::Shared;

/// Publishes, at shutdown, the wills still waiting for their delay: the
/// sessions end with the broker process. With a store they do not: their
/// wills wait, stored, for their delay to pass after the restart.
pub fn publish_delayed_wills(shared: &Shared) {
    if shared.store.is_some() {
        return;
    }
    for (client_id, will) in shared.sessions.take_delayed_wills() {
        tracing::info!(%client_id, "shutting down: publishing a will still in its delay");
        publish_will(shared, *will, &client_id);
    }
}

/// Publishes the wills and removes the sessions that are due at `now`.
pub fn run_due(shared: &Shared, now: Instant) {
    for due in shared.sessions.take_due(now) {
        if let Some(will) = due.will {
            tracing::info!(client_id = %due.client_id, "will delay passed: publishing the will");
            publish_will(shared, *will, &due.client_id);
            if let Some(store) = &shared.store {
                store.will_published(&due.client_id);
            }
        }
        if let Some(parked) = due.expired {
            // Only this session's: a new connection for the client id
            // may have subscribed since the slot was let go.
            for filter in parked.state.subscriptions.keys() {
                shared
                    .router
                    .unsubscribe_inbox(filter.as_str(), &parked.inbox);
            }
            let durable = parked.inbox.is_durable();
            // Closes the inbox first: nothing is queued (and journaled)
            // for the session after the store forgets it.
            drop(parked);
            if let Some(store) = shared.store.as_ref().filter(|_| durable) {
                store.session_removed(&due.client_id);
            }
            shared.metrics.sessions_expired.increment();
            shared.metrics.clients_disconnected.decrement();
            tracing::info!(client_id = %due.client_id, "session expired: removed");
        }
    }
}
