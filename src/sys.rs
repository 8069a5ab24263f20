//! `$SYS`: every `sys_interval` seconds the broker publishes its counters as
//! retained messages under the topic names Mosquitto uses, so existing
//! dashboards keep working. Subscribers see them with `$SYS/#` (a filter
//! starting with a wildcard never matches them [MQTT-4.7.2-1]).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::context::Core;
use crate::protocol::{PublishProperties, QoS, TopicName};
use crate::router::message::Message;

/// The topics and values published each interval: every counter, and
/// what is computed from the broker's state.
pub fn snapshot(core: &Core, uptime: Duration) -> Vec<(&'static str, String)> {
    let metrics = &core.metrics;
    let connected = metrics.clients_connected.get();
    let disconnected = metrics.clients_disconnected.get();
    let mut topics = vec![
        (
            "$SYS/broker/version",
            format!("petrel {}", env!("CARGO_PKG_VERSION")),
        ),
        (
            "$SYS/broker/uptime",
            format!("{} seconds", uptime.as_secs()),
        ),
        (
            "$SYS/broker/clients/total",
            (connected + disconnected).to_string(),
        ),
        (
            "$SYS/broker/subscriptions/count",
            core.router.subscription_count().to_string(),
        ),
        (
            "$SYS/broker/retained messages/count",
            core.router.retained_count().to_string(),
        ),
    ];
    topics.extend(
        metrics
            .sys_counters()
            .into_iter()
            .map(|(topic, value)| (topic, value.to_string())),
    );
    topics
}

/// Publishes every `$SYS` topic once (called by the housekeeping task).
pub fn publish_all(core: &Core, uptime: Duration) {
    for (topic, value) in snapshot(core, uptime) {
        let Ok(topic) = TopicName::new(topic) else {
            continue;
        };
        core.router.publish(Arc::new(Message::new(
            topic,
            Bytes::from(value),
            QoS::AtMostOnce,
            true,
            PublishProperties::default(),
            None,
        )));
    }
}
