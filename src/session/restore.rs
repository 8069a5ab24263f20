//! Start-up with a store: retained messages and persistent sessions read
//! from it are put back as if the broker had never stopped. Each session
//! is parked, subscribed, with its queue and in-flight messages, until its
//! client reconnects or it expires; a will waiting for its delay keeps
//! the time it had left. A bridge's session is put back like any other;
//! the bridges sweep those they no longer have ([`crate::bridge::sweep`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::manager::Parked;
use super::state::{Inflight, Phase, SessionState};
use crate::context::Core;
use crate::router::inbox::{Inbox, InboxLimits};
use crate::router::Subscriber;
use crate::store::{Loaded, StoredSession};

/// Puts back what the store held.
pub fn restore(core: &Core, loaded: Loaded) {
    let retained = loaded.retained.len();
    for message in loaded.retained {
        if !core.router.restore_retained(message) {
            core.metrics.retained_dropped.increment();
        }
    }
    let sessions = loaded.sessions.len();
    for stored in loaded.sessions {
        restore_session(core, stored);
    }
    if retained > 0 || sessions > 0 {
        tracing::info!(retained, sessions, "state restored from the store");
    }
}

/// The bounds of a session's inbox.
pub fn inbox_limits(config: &crate::config::Config) -> InboxLimits {
    InboxLimits {
        max_messages: config.max_queued_messages,
        max_bytes: config.max_queued_bytes,
        queue_qos0: config.queue_qos0,
    }
}

fn restore_session(core: &Core, stored: StoredSession) {
    let StoredSession {
        client_id,
        expiry_interval,
        disconnected_for,
        subscriptions,
        mut entries,
        awaiting_pubrel,
        will,
    } = stored;
    let (inbox, receiver) = Inbox::new(Arc::clone(&client_id), inbox_limits(&core.config()));
    inbox.set_online(false);
    inbox.set_durable(true);
    let mut state = SessionState::default();
    for (filter, options, identifier) in subscriptions {
        core.router.subscribe(
            filter.as_str(),
            Subscriber {
                inbox: Arc::clone(&inbox),
                options,
                identifier,
                shared: None,
            },
        );
        state.subscriptions.insert(filter, options, identifier);
    }
    // Message ids grow in the order messages were received.
    entries.sort_by_key(|entry| entry.delivery.message.id);
    for entry in entries {
        match entry.packet_id {
            Some(packet_id) if state.inflight_mut(packet_id).is_none() => {
                state.next_packet_id = state.next_packet_id.max(packet_id.get());
                state.track(Inflight {
                    packet_id,
                    delivery: entry.delivery,
                    phase: if entry.released {
                        Phase::Released
                    } else {
                        Phase::Published
                    },
                    unsent: false,
                });
            }
            _ => state.pending_mut().push_back(entry.delivery),
        }
    }
    *state.awaiting_pubrel_mut() = awaiting_pubrel.into_iter().collect();
    state.compact();
    let now = Instant::now();
    let expires_at = (expiry_interval != u32::MAX).then(|| {
        let expiry = Duration::from_secs(u64::from(expiry_interval));
        now + expiry.saturating_sub(disconnected_for)
    });
    let (will, will_at) = match will {
        Some((will, left)) => (Some(Box::new(will)), Some(now + left)),
        None => (None, None),
    };
    core.metrics.clients_disconnected.increment();
    core.sessions.restore(
        client_id,
        Parked {
            state,
            inbox,
            receiver,
            expires_at,
            will,
            will_at,
        },
    );
}
