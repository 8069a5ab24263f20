//! The application message as the router carries it: decoded once, shared
//! by every subscriber through an `Arc`, payload a shared `Bytes`.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::protocol::{PublishProperties, QoS, TopicName};

/// The next message id (see [`Message::id`]).
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The id the next message will have: every message made before this
/// call has a smaller one.
pub fn next_id() -> u64 {
    NEXT_ID.load(Ordering::Relaxed)
}

/// Makes every message id from now on larger than `id`: the store calls it
/// with the largest id it holds, so ids stay unique across restarts.
pub fn reserve_ids_through(id: u64) {
    NEXT_ID.fetch_max(id.saturating_add(1), Ordering::Relaxed);
}

/// A message on its way from one publisher to its subscribers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Unique in this broker (across restarts, with a store): what a
    /// session's stored queue entry refers to. Ids grow in the order
    /// messages are received.
    pub id: u64,
    /// The topic it was published to.
    pub topic: TopicName,
    /// The payload, shared with the publisher's read buffer.
    pub payload: Bytes,
    /// The QoS it was published with.
    pub qos: QoS,
    /// The RETAIN flag it was published with.
    pub retain: bool,
    /// MQTT 5 properties, forwarded unchanged (but for the expiry, which
    /// is sent as what remains of it).
    pub properties: PublishProperties,
    /// The client that published it (none for wills of expired sessions or
    /// `$SYS` messages).
    pub publisher: Option<Arc<str>>,
    /// When the broker received it: the Message Expiry Interval counts
    /// from here.
    pub received_at: Instant,
}

/// The message's Message Expiry Interval has passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expired;

impl Message {
    /// A message received now.
    pub fn new(
        topic: TopicName,
        payload: Bytes,
        qos: QoS,
        retain: bool,
        properties: PublishProperties,
        publisher: Option<Arc<str>>,
    ) -> Message {
        Message {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            topic,
            payload,
            qos,
            retain,
            properties,
            publisher,
            received_at: Instant::now(),
        }
    }

    /// The Message Expiry Interval to send at `now`: what is left of the
    /// one it was published with [MQTT-3.3.2-6] (v5.0), none if it had
    /// none, or `Expired` once it has run out [MQTT-3.3.2-5] (v5.0).
    pub fn remaining_expiry(&self, now: Instant) -> Result<Option<u32>, Expired> {
        let Some(interval) = self.properties.message_expiry_interval else {
            return Ok(None);
        };
        let elapsed = now.saturating_duration_since(self.received_at).as_secs();
        match u64::from(interval).checked_sub(elapsed) {
            Some(remaining) if remaining > 0 => Ok(Some(remaining as u32)),
            _ => Err(Expired),
        }
    }

    /// Whether the message has expired by `now`.
    pub fn is_expired(&self, now: Instant) -> bool {
        self.remaining_expiry(now).is_err()
    }
}

/// One message for one subscriber, as queued in its inbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The shared message.
    pub message: Arc<Message>,
    /// min(published QoS, granted QoS).
    pub qos: QoS,
    /// The RETAIN flag to deliver with: set for retained messages sent on
    /// subscribe, clear in ordinary fan-out [MQTT-3.3.1-9] (v3.1.1) unless
    /// a matching subscription asked for Retain As Published.
    pub retain: bool,
    /// What only some deliveries have, boxed so that the others stay small
    /// (every queued and in-flight message is a `Delivery`).
    pub extras: Option<Box<DeliveryExtras>>,
}

/// The rarer parts of a delivery.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryExtras {
    /// The identifiers of the client's subscriptions that matched
    /// [MQTT-3.3.4-3] (v5.0).
    pub subscription_identifiers: Vec<NonZeroU32>,
    /// The shared subscription (`$share/{group}/{filter}`) it was given to
    /// this client through, so it can go to another member if this one
    /// leaves without acknowledging it.
    pub shared: Option<Arc<str>>,
}

impl Delivery {
    /// A delivery of `message` at `qos`, with no subscription specifics.
    pub fn new(message: Arc<Message>, qos: QoS, retain: bool) -> Delivery {
        Delivery {
            message,
            qos,
            retain,
            extras: None,
        }
    }

    /// The matching subscriptions' identifiers.
    pub fn subscription_identifiers(&self) -> &[NonZeroU32] {
        self.extras
            .as_deref()
            .map_or(&[], |extras| &extras.subscription_identifiers)
    }

    /// The shared subscription it came through, if any.
    pub fn shared(&self) -> Option<&Arc<str>> {
        self.extras.as_deref()?.shared.as_ref()
    }
}

impl DeliveryExtras {
    /// Boxed extras, or none when there is nothing to say.
    pub fn boxed(
        subscription_identifiers: Vec<NonZeroU32>,
        shared: Option<Arc<str>>,
    ) -> Option<Box<DeliveryExtras>> {
        (!subscription_identifiers.is_empty() || shared.is_some()).then(|| {
            Box::new(DeliveryExtras {
                subscription_identifiers,
                shared,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn expiry_counts_down_from_reception() {
        let properties = PublishProperties {
            message_expiry_interval: Some(10),
            ..PublishProperties::default()
        };
        let message = Message::new(
            TopicName::new("a").unwrap(),
            Bytes::new(),
            QoS::AtMostOnce,
            false,
            properties,
            None,
        );
        let start = message.received_at;
        assert_eq!(message.remaining_expiry(start), Ok(Some(10)));
        assert_eq!(
            message.remaining_expiry(start + Duration::from_millis(3500)),
            Ok(Some(7))
        );
        assert_eq!(
            message.remaining_expiry(start + Duration::from_secs(10)),
            Err(Expired)
        );
        let plain = Message::new(
            TopicName::new("a").unwrap(),
            Bytes::new(),
            QoS::AtMostOnce,
            false,
            PublishProperties::default(),
            None,
        );
        assert_eq!(
            plain.remaining_expiry(start + Duration::from_secs(1 << 40)),
            Ok(None)
        );
    }
}
