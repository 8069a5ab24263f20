//! Bridges: Petrel as a client of another broker, forwarding messages by
//! topic rules ([`topics`]) out to it, in from it, or both.
//!
//! A bridge is a session of this broker like any client's, under the
//! reserved client id `$bridge/<name>`, and its protocol is the same
//! session endpoint a client's is, seen from the client's side
//! ([`crate::session::endpoint`]): its inbox is subscribed to the outward
//! rules (with No Local, so what came in over the bridge does not go back
//! out), and what it has not yet delivered to the remote waits in it,
//! bounded by the bridge's `max_queued_messages` and `max_queued_bytes`
//! (newer messages are dropped at the bound, and counted). With
//! persistence on, the session is durable: its queue and in-flight
//! messages survive a restart of this broker, and a message leaves the
//! store only once the remote acknowledged it. What is the bridge's own
//! is here and in [`link`]: the topic rules, its CONNECT and SUBSCRIBE
//! with the remote, reconnection with exponential back-off and jitter
//! while the remote is unreachable, and its state, published retained on
//! `$SYS/broker/connection/<name>/state` (1 up, 0 down).

pub mod link;
pub mod topics;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use crate::config::BridgeConfig;
use crate::connection::Outbox;
use crate::context::{Context, Core};
use crate::metrics::BridgeStats;
use crate::protocol::{
    Packet, ProtocolVersion, PublishProperties, QoS, RetainHandling, SubscriptionOptions,
    TopicFilter, TopicName,
};
use crate::router::inbox::{Inbox, InboxLimits};
use crate::router::message::Message;
use crate::router::Subscriber;
use crate::session::endpoint::{ClientSide, Endpoint, Role};
use crate::session::exit::Exit;
use crate::session::handshake::decide::BRIDGE_ID_PREFIX;
use crate::session::manager::Parked;
use crate::session::state::SessionState;
use tokio_util::sync::CancellationToken;
use topics::Rules;

/// Drops the stored sessions of bridges no longer configured, and with
/// them their queues, with a line each; at start-up, before any bridge
/// runs.
pub fn sweep(core: &Core) {
    let configured: HashSet<String> = core
        .config()
        .bridges
        .iter()
        .map(|bridge| format!("{BRIDGE_ID_PREFIX}{}", bridge.name))
        .collect();
    let gone = core
        .sessions
        .take_parked(|id| id.starts_with(BRIDGE_ID_PREFIX) && !configured.contains(id));
    for (client_id, parked) in gone {
        tracing::info!(
            bridge = client_id.strip_prefix(BRIDGE_ID_PREFIX),
            dropped = parked.state.pending().len()
                + parked.state.inflight().len()
                + parked.receiver.len(),
            "a bridge no longer configured: its queue is dropped"
        );
        parked.discard(core, &client_id);
    }
}

/// Opens the bridge's session: the one kept from before (its queue and
/// in-flight messages), or a new one; subscribed to the outward rules as
/// they are configured now.
fn open(
    core: &Core,
    (config, stats): (&BridgeConfig, &Arc<BridgeStats>),
    client_id: Arc<str>,
    parked: Option<Parked>,
) -> Endpoint {
    let limits = InboxLimits {
        max_messages: config.max_queued_messages,
        max_bytes: config.max_queued_bytes,
        queue_qos0: config.queue_qos0,
    };
    let (inbox, receiver) = Inbox::new(Arc::clone(&client_id), limits);
    let mut state = SessionState::default();
    let store = core.store.as_ref();
    if let Some(mut old) = parked {
        // Kept: what it held, in order; its old inbox (made with the
        // broker's bounds at start-up) gives way to one with the bridge's.
        for filter in old.state.subscriptions.keys() {
            core.router.unsubscribe_inbox(filter.as_str(), &old.inbox);
            if let Some(store) = store {
                store.unsubscribed(&client_id, filter);
            }
        }
        old.receiver.drain_into(old.state.pending_mut(), usize::MAX);
        state = old.state;
        state.subscriptions = Default::default();
        state.rebuild_index();
        core.metrics.clients_disconnected.decrement();
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
        let subscriber = Subscriber {
            inbox: Arc::clone(&inbox),
            options,
            identifier: None,
            shared: None,
        };
        core.router.subscribe(filter.as_str(), subscriber);
        if let Some(store) = store {
            store.subscribed(&client_id, &filter, options, None);
        }
        state.subscriptions.insert(filter, options, None);
    }
    let role = Role::Client(Box::new(ClientSide::new(
        Arc::new(rules),
        Arc::clone(stats),
    )));
    let outbox = Outbox::new(ProtocolVersion::V3_1_1);
    let mut endpoint = Endpoint::new(outbox, state, (inbox, receiver), role);
    endpoint.session_expiry = u32::MAX;
    endpoint.keep_alive = config.keep_alive;
    endpoint
}

/// Publishes the bridge's state, retained, where Mosquitto does.
fn publish_state(core: &Core, name: &str, up: bool) {
    let Ok(topic) = TopicName::new(format!("$SYS/broker/connection/{name}/state")) else {
        return;
    };
    core.router.publish(Arc::new(Message::new(
        topic,
        bytes::Bytes::from_static(if up { b"1" } else { b"0" }),
        QoS::AtMostOnce,
        true,
        PublishProperties::default(),
        None,
    )));
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
    Duration::from_millis(base / 2 + fastrand::u64(0..=base / 2))
}

/// Runs one bridge until `token` is cancelled (the broker shuts down, or
/// a reload removed or changed the bridge).
pub async fn run(context: Arc<Context>, config: BridgeConfig, token: CancellationToken) {
    let core = &context.core;
    let client_id: Arc<str> = Arc::from(format!("{BRIDGE_ID_PREFIX}{}", config.name));
    let claim = tokio::select! {
        _ = token.cancelled() => return,
        claim = core.sessions.acquire(&client_id) => claim,
    };
    let (lease, parked) = claim;
    let stats = Arc::new(BridgeStats::new(&config.name));
    core.metrics.bridges.register(Arc::clone(&stats));
    let mut endpoint = open(core, (&config, &stats), client_id, parked);
    core.sessions.attach(&lease, &endpoint.inbox, &token, None);
    match link::Connector::new(&config) {
        Ok(connector) => {
            let link = Link {
                config: &config,
                connector: &connector,
                stats: &stats,
                token: &token,
            };
            serve(&context, &link, &mut endpoint).await;
        }
        Err(error) => {
            tracing::error!(bridge = %config.name, %error, "bridge TLS cannot be set up; the bridge stays down");
            stats.failed(format!("TLS: {error}"));
            token.cancelled().await;
        }
    }
    core.metrics.bridges.unregister(&stats);
    crate::session::close::park(core, endpoint, lease, None);
}

/// What one bridge's connection attempts work with.
struct Link<'a> {
    config: &'a BridgeConfig,
    connector: &'a link::Connector,
    stats: &'a Arc<BridgeStats>,
    token: &'a CancellationToken,
}

/// Connects to the remote's addresses in turn, backing off between
/// rounds, and serves each connection until the broker stops.
async fn serve(context: &Context, link: &Link<'_>, endpoint: &mut Endpoint) {
    let core = &context.core;
    let Link {
        config,
        connector,
        stats,
        token,
    } = *link;
    publish_state(core, &config.name, false);
    let mut attempt = 0u32;
    'rounds: loop {
        for address in &config.addresses {
            if token.is_cancelled() {
                return;
            }
            stats.set_address(address);
            let connected = tokio::select! {
                _ = token.cancelled() => return,
                connected = connector.connect(core, config, address) => connected,
            };
            let established = match connected {
                Ok(established) => established,
                Err(error) => {
                    core.metrics.bridge_failures.increment();
                    stats.failed(format!("{address}: {error}"));
                    tracing::warn!(bridge = %config.name, address, %error, "bridge: cannot connect");
                    continue;
                }
            };
            attempt = 0;
            core.metrics.bridge_connections.increment();
            stats.connects.increment();
            tracing::info!(bridge = %config.name, address, "bridge connected");
            publish_state(core, &config.name, true);
            stats.up.store(true, std::sync::atomic::Ordering::Relaxed);
            endpoint.inbox.set_online(true);
            let exit = serve_link(context, endpoint, established).await;
            endpoint.inbox.set_online(false);
            stats.up.store(false, std::sync::atomic::Ordering::Relaxed);
            publish_state(core, &config.name, false);
            match exit {
                Exit::Shutdown | Exit::TakenOver => return,
                Exit::Kicked { .. } => {
                    // An administrator asked for a reconnection: at once.
                    tracing::info!(bridge = %config.name, address, "bridge reconnecting, as asked");
                    endpoint.inbox.clear_interrupt();
                    continue 'rounds;
                }
                _ => {}
            }
            core.metrics.bridge_failures.increment();
            stats.failed(format!("{address}: {exit}"));
            tracing::warn!(bridge = %config.name, address, reason = %exit, "bridge disconnected");
        }
        let wait = backoff(config, attempt);
        attempt = attempt.saturating_add(1);
        tokio::select! {
            _ = token.cancelled() => return,
            _ = stats.reconnect.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Serves one connection to the remote: the endpoint takes it over (what
/// it had not acknowledged goes first), handles what came before the
/// SUBACK, and is driven like a client's until the link ends; the remote
/// is told why when it should be, and the connection closed gracefully.
async fn serve_link(
    context: &Context,
    endpoint: &mut Endpoint,
    established: link::Established,
) -> Exit {
    let link::Established {
        mut connection,
        outbox,
        limits,
        session_present,
        early,
    } = established;
    if !session_present {
        endpoint.remote_session_lost(&context.core);
    }
    endpoint.reconnected(outbox, limits, context);
    let now = tokio::time::Instant::now();
    let mut exit = None;
    for packet in early {
        if let Err(end) = endpoint.handle(context, packet, now) {
            exit = Some(end);
            break;
        }
    }
    let exit = match exit {
        Some(exit) => exit,
        None => crate::session::driver::drive(context, &mut connection, endpoint).await,
    };
    let v5 = endpoint.outbox.version().is_v5();
    if let Some(disconnect) = exit.client_disconnect(v5) {
        endpoint.outbox.send_or_log(Packet::Disconnect(disconnect));
    }
    connection
        .close(&mut endpoint.outbox, exit.peer_closed())
        .await;
    exit
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
