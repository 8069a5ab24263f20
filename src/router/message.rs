//! The application message as the router carries it: decoded once, shared
//! by every subscriber through an `Arc`, payload a shared `Bytes`.

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::protocol::{PublishProperties, QoS, TopicName};

/// A message on its way from one publisher to its subscribers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The topic it was published to.
    pub topic: TopicName,
    /// The payload, shared with the publisher's read buffer.
    pub payload: Bytes,
    /// The QoS it was published with.
    pub qos: QoS,
    /// The RETAIN flag it was published with.
    pub retain: bool,
    /// MQTT 5 properties, forwarded unchanged.
    pub properties: PublishProperties,
    /// The client that published it (none for wills of expired sessions or
    /// `$SYS` messages).
    pub publisher: Option<Arc<str>>,
}

/// One message for one subscriber, as queued in its inbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// The shared message.
    pub message: Arc<Message>,
    /// min(published QoS, granted QoS).
    pub qos: QoS,
    /// The RETAIN flag to deliver with: set for retained messages sent on
    /// subscribe, clear in ordinary fan-out [MQTT-3.3.1-9] (v3.1.1).
    pub retain: bool,
}
