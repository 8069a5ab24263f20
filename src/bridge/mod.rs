//! Bridges: Petrel as a client of another broker, forwarding messages by
//! topic rules ([`topics`]) out to it, in from it, or both.
//!
//! A bridge is a session of this broker like any client's, under the
//! reserved client id `$bridge/<name>`: its inbox is subscribed to the
//! outward rules (with No Local, so what came in over the bridge does not
//! go back out), and what it has not yet delivered to the remote waits in
//! it, bounded by the bridge's `max_queued_messages` and
//! `max_queued_bytes` (newer messages are dropped at the bound, and
//! counted). With persistence on, the session is durable: its queue and
//! in-flight messages survive a restart of this broker, and a message
//! leaves the store only once the remote acknowledged it. The other end
//! of the session is not a socket accepted here but the connection the
//! bridge makes ([`link`]), reconnected with exponential back-off and
//! jitter while the remote is unreachable, its state published retained
//! on `$SYS/broker/connection/<name>/state` (1 up, 0 down).

pub mod link;
pub mod topics;

use std::sync::Arc;
use std::time::Duration;

use crate::config::BridgeConfig;
use crate::protocol::{
    PublishProperties, QoS, RetainHandling, SubscriptionOptions, TopicFilter, TopicName,
};
use crate::router::inbox::{Inbox, InboxLimits, InboxReceiver};
use crate::router::message::Message;
use crate::router::Subscriber;
use crate::session::manager::{Lease, Parked};
use crate::session::state::SessionState;
use crate::session::Shared;
use topics::Rules;

/// Client ids starting with this are the bridges' local sessions; clients
/// may not use them.
pub const LOCAL_ID_PREFIX: &str = "$bridge/";

/// A bridge's session on this broker.
#[derive(Debug)]
pub struct Local {
    /// `$bridge/<name>`.
    pub client_id: Arc<str>,
    /// Subscriptions, in-flight messages to the remote, QoS 2 ids from it.
    pub state: SessionState,
    /// Where outgoing messages wait.
    pub inbox: Arc<Inbox>,
    /// Its receiving end.
    pub receiver: InboxReceiver,
    /// The topic rules.
    pub rules: Rules,
}

impl Local {
    /// Opens the bridge's session: the one kept from before (its queue and
    /// in-flight messages), or a new one; subscribed to the outward rules
    /// as they are configured now.
    fn open(
        shared: &Shared,
        config: &BridgeConfig,
        client_id: Arc<str>,
        parked: Option<Parked>,
    ) -> Local {
        let limits = InboxLimits {
            max_messages: config.max_queued_messages,
            max_bytes: config.max_queued_bytes,
            queue_qos0: config.queue_qos0,
        };
        let (inbox, receiver) = Inbox::new(Arc::clone(&client_id), limits);
        let mut state = SessionState::default();
        let store = shared.store.as_ref();
        if let Some(mut old) = parked {
            // Kept: what it held, in order; its old inbox (made with the
            // broker's bounds at start-up) gives way to one with the
            // bridge's.
            for filter in old.state.subscriptions.keys() {
                shared.router.unsubscribe_inbox(filter.as_str(), &old.inbox);
                if let Some(store) = store {
                    store.unsubscribed(&client_id, filter);
                }
            }
            old.receiver.drain_into(&mut old.state.pending, usize::MAX);
            state = old.state;
            state.subscriptions = Default::default();
            state.rebuild_index();
            shared.metrics.clients_disconnected.decrement();
        }
        inbox.set_online(false);
        if let Some(store) = store {
            inbox.set_durable(true);
            store.session_opened(&client_id, u32::MAX);
        }
        let rules = Rules::new(config.topics.clone());
        for (filter, qos) in rules.local_filters() {
            let Ok(filter) = TopicFilter::new(&filter) else {
                continue;
            };
            let options = SubscriptionOptions {
                qos,
                // What the bridge itself publishes here came from the
                // remote: it does not go back.
                no_local: true,
                retain_as_published: true,
                retain_handling: RetainHandling::DoNotSend,
            };
            shared.router.subscribe(
                filter.as_str(),
                Subscriber {
                    inbox: Arc::clone(&inbox),
                    options,
                    identifier: None,
                    shared: None,
                },
            );
            if let Some(store) = store {
                store.subscribed(&client_id, &filter, options, None);
            }
            state.subscriptions.insert(filter, options, None);
        }
        Local {
            client_id,
            state,
            inbox,
            receiver,
            rules,
        }
    }

    /// Parks the session as the broker stops: kept for the next start when
    /// the store keeps it.
    fn park(self, shared: &Shared, lease: Lease) {
        if let Some(store) = &shared.store {
            for delivery in &self.state.pending {
                if delivery.qos != QoS::AtMostOnce {
                    store.kept(&self.client_id, delivery);
                }
            }
            for inflight in &self.state.inflight {
                store.sent(
                    &self.client_id,
                    &inflight.delivery,
                    inflight.packet_id,
                    inflight.phase == crate::session::state::Phase::Released,
                );
            }
            store.session_closed(&self.client_id, u32::MAX, None);
        }
        shared.metrics.clients_disconnected.increment();
        let client_id = Arc::clone(&self.client_id);
        shared.sessions.release(
            &client_id,
            lease,
            Some(Parked {
                state: self.state,
                inbox: self.inbox,
                receiver: self.receiver,
                expires_at: None,
                will: None,
                will_at: None,
            }),
        );
    }
}

/// Publishes the bridge's state, retained, where Mosquitto does.
fn publish_state(shared: &Shared, name: &str, up: bool) {
    let Ok(topic) = TopicName::new(format!("$SYS/broker/connection/{name}/state")) else {
        return;
    };
    shared.router.publish(Arc::new(Message::new(
        topic,
        bytes::Bytes::from_static(if up { b"1" } else { b"0" }),
        QoS::AtMostOnce,
        true,
        PublishProperties::default(),
        None,
    )));
}

/// A random fraction in [0, 1), for the back-off's jitter.
fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0);
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// The wait before reconnection attempt `attempt` (0 first): doubled each
/// time from `reconnect_min_ms` up to `reconnect_max_ms`, then taken at
/// random between half of it and all of it, so that gateways that lost
/// the same remote do not all come back at the same instant.
pub fn backoff(config: &BridgeConfig, attempt: u32) -> Duration {
    let base = config
        .reconnect_min_ms
        .saturating_mul(1u64 << attempt.min(20))
        .min(config.reconnect_max_ms);
    Duration::from_millis(base / 2 + (base as f64 / 2.0 * jitter()) as u64)
}

/// Runs one bridge until the broker shuts down.
pub async fn run(shared: Arc<Shared>, config: BridgeConfig) {
    let token = shared.tasks.token().clone();
    let client_id: Arc<str> = Arc::from(format!("{LOCAL_ID_PREFIX}{}", config.name));
    let claim = tokio::select! {
        _ = token.cancelled() => return,
        claim = shared.sessions.acquire(&client_id) => claim,
    };
    let (lease, parked) = claim;
    let mut local = Local::open(&shared, &config, client_id, parked);
    shared.sessions.attach(&lease, &local.inbox, &token);
    let connector = match link::Connector::new(&config) {
        Ok(connector) => connector,
        Err(error) => {
            tracing::error!(bridge = %config.name, %error, "bridge TLS cannot be set up; the bridge stays down");
            token.cancelled().await;
            local.park(&shared, lease);
            return;
        }
    };
    publish_state(&shared, &config.name, false);
    let mut attempt = 0u32;
    'bridge: loop {
        for address in &config.addresses {
            if token.is_cancelled() {
                break 'bridge;
            }
            let connected = tokio::select! {
                _ = token.cancelled() => break 'bridge,
                connected = connector.connect(&shared, &config, address) => connected,
            };
            let connection = match connected {
                Ok(connection) => connection,
                Err(error) => {
                    shared.metrics.bridge_failures.increment();
                    tracing::warn!(bridge = %config.name, address, %error, "bridge: cannot connect");
                    continue;
                }
            };
            attempt = 0;
            shared.metrics.bridge_connections.increment();
            tracing::info!(bridge = %config.name, address, "bridge connected");
            publish_state(&shared, &config.name, true);
            local.inbox.set_online(true);
            let end = link::serve(&shared, &config, &mut local, connection).await;
            local.inbox.set_online(false);
            publish_state(&shared, &config.name, false);
            match end {
                link::End::Shutdown => break 'bridge,
                end => {
                    shared.metrics.bridge_failures.increment();
                    tracing::warn!(bridge = %config.name, address, reason = %end, "bridge disconnected");
                }
            }
        }
        let wait = backoff(&config, attempt);
        attempt = attempt.saturating_add(1);
        tokio::select! {
            _ = token.cancelled() => break 'bridge,
            _ = tokio::time::sleep(wait) => {}
        }
    }
    local.park(&shared, lease);
}

#[cfg(test)]
mod tests {
    use super::*;

    // The wait doubles from reconnect_min_ms to reconnect_max_ms, and is
    // taken between half of it and all of it.
    #[test]
    fn backoff_doubles_within_its_bounds_with_jitter() {
        let text = "[[bridge]]\nname = \"b\"\naddresses = [\"127.0.0.1:1\"]\n\
                    reconnect_min_ms = 100\nreconnect_max_ms = 1000\n\
                    [[bridge.topic]]\nfilter = \"#\"\ndirection = \"out\"\n";
        let config = crate::Config::from_toml(text).expect("config");
        let bridge = &config.bridges[0];
        for (attempt, base) in [
            (0, 100u64),
            (1, 200),
            (2, 400),
            (3, 800),
            (4, 1000),
            (30, 1000),
        ] {
            for _ in 0..50 {
                let wait = backoff(bridge, attempt).as_millis() as u64;
                assert!(
                    wait >= base / 2 && wait <= base,
                    "attempt {attempt}: {wait} ms"
                );
            }
        }
    }
}
