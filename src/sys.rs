//! `$SYS`: every `sys_interval` seconds the broker publishes its counters as
//! retained messages under the topic names Mosquitto uses, so existing
//! dashboards keep working. Subscribers see them with `$SYS/#` (a filter
//! starting with a wildcard never matches them [MQTT-4.7.2-1]).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::protocol::{PublishProperties, QoS, TopicName};
use crate::router::message::Message;
use crate::session::Shared;

/// The topics and values published each interval.
pub fn snapshot(shared: &Shared, uptime: Duration) -> Vec<(&'static str, String)> {
    let metrics = &shared.metrics;
    let connected = metrics.clients_connected.get();
    let disconnected = metrics.clients_disconnected.get();
    vec![
        (
            "$SYS/broker/version",
            format!("petrel {}", env!("CARGO_PKG_VERSION")),
        ),
        (
            "$SYS/broker/uptime",
            format!("{} seconds", uptime.as_secs()),
        ),
        ("$SYS/broker/clients/connected", connected.to_string()),
        ("$SYS/broker/clients/disconnected", disconnected.to_string()),
        (
            "$SYS/broker/clients/total",
            (connected + disconnected).to_string(),
        ),
        (
            "$SYS/broker/messages/received",
            metrics.messages_received.get().to_string(),
        ),
        (
            "$SYS/broker/messages/sent",
            metrics.messages_sent.get().to_string(),
        ),
        (
            "$SYS/broker/publish/messages/dropped",
            metrics.messages_dropped.get().to_string(),
        ),
        (
            "$SYS/broker/subscriptions/count",
            shared.router.subscription_count().to_string(),
        ),
        (
            "$SYS/broker/retained messages/count",
            shared.router.retained_count().to_string(),
        ),
        (
            "$SYS/broker/store/commits",
            metrics.store_commits.get().to_string(),
        ),
        (
            "$SYS/broker/store/failures",
            metrics.store_failures.get().to_string(),
        ),
        (
            "$SYS/broker/bridges/connections",
            metrics.bridge_connections.get().to_string(),
        ),
        (
            "$SYS/broker/bridges/failures",
            metrics.bridge_failures.get().to_string(),
        ),
        (
            "$SYS/broker/load/bytes/received",
            metrics.bytes_received.get().to_string(),
        ),
        (
            "$SYS/broker/load/bytes/sent",
            metrics.bytes_sent.get().to_string(),
        ),
    ]
}

/// Publishes every `$SYS` topic once (called by the housekeeping task).
pub fn publish_all(shared: &Shared, uptime: Duration) {
    for (topic, value) in snapshot(shared, uptime) {
        let Ok(topic) = TopicName::new(topic) else {
            continue;
        };
        shared.router.publish(Arc::new(Message::new(
            topic,
            Bytes::from(value),
            QoS::AtMostOnce,
            true,
            PublishProperties::default(),
            None,
        )));
    }
}
