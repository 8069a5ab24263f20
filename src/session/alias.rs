//! MQTT 5 topic aliases (3.3.2.3.4), both ways on one connection: the
//! client's aliases for the topics it publishes to (up to the Topic Alias
//! Maximum the broker announced), and the broker's aliases for the topics
//! it sends (up to the client's).

use std::collections::HashMap;
use std::num::NonZeroU16;

use crate::protocol::{ReasonCode, TopicName};

/// Why a client's PUBLISH cannot be resolved to a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AliasError {
    /// The reason code to close with.
    pub reason_code: ReasonCode,
    /// The rule it breaks.
    pub rule: &'static str,
}

/// One connection's topic aliases. They live and die with the connection
/// [MQTT-3.3.2-10] [MQTT-3.3.2-11] (v5.0).
#[derive(Debug, Default)]
pub struct TopicAliases {
    /// The client's: alias `n` is at index `n - 1`.
    inbound: Vec<Option<TopicName>>,
    /// The broker's, by topic.
    outbound: HashMap<TopicName, NonZeroU16>,
}

/// What to send for a topic: the alias, and whether the topic must go
/// along (the first time the alias is used).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outgoing {
    /// The alias to send.
    pub alias: NonZeroU16,
    /// False when the alias alone stands for the topic.
    pub with_topic: bool,
}

impl TopicAliases {
    /// Resolves a client PUBLISH's topic: records a new mapping when it
    /// has both a topic and an alias, looks the alias up when the topic is
    /// empty. `maximum` is what the broker announced.
    pub fn resolve(
        &mut self,
        topic: TopicName,
        alias: Option<NonZeroU16>,
        maximum: u16,
    ) -> Result<TopicName, AliasError> {
        let Some(alias) = alias else {
            return Ok(topic);
        };
        if alias.get() > maximum {
            return Err(AliasError {
                reason_code: ReasonCode::TopicAliasInvalid,
                rule: "[MQTT-3.3.2-9] topic alias above the broker's Topic Alias Maximum",
            });
        }
        let index = usize::from(alias.get() - 1);
        if topic.is_empty() {
            return self
                .inbound
                .get(index)
                .and_then(Option::clone)
                .ok_or(AliasError {
                    reason_code: ReasonCode::ProtocolError,
                    rule: "3.3.2.3.4: empty topic with an alias that names no topic",
                });
        }
        if self.inbound.len() <= index {
            self.inbound.resize(index + 1, None);
        }
        self.inbound[index] = Some(topic.clone());
        Ok(topic)
    }

    /// The alias to send `topic` with, given the client's Topic Alias
    /// Maximum: an existing one, or a new one while aliases are left
    /// [MQTT-3.1.2-26] (v5.0). None when they have run out.
    pub fn outgoing(&mut self, topic: &TopicName, maximum: u16) -> Option<Outgoing> {
        if let Some(&alias) = self.outbound.get(topic) {
            return Some(Outgoing {
                alias,
                with_topic: false,
            });
        }
        let next = u16::try_from(self.outbound.len() + 1).ok()?;
        if next > maximum {
            return None;
        }
        let alias = NonZeroU16::new(next)?;
        self.outbound.insert(topic.clone(), alias);
        Some(Outgoing {
            alias,
            with_topic: true,
        })
    }
}

impl TopicAliases {
    /// Takes back the alias just given to `topic`, when the PUBLISH that
    /// was to introduce it was not sent. Only the newest alias can be
    /// taken back, so numbering stays dense.
    pub fn forget(&mut self, topic: &TopicName) {
        let newest = u16::try_from(self.outbound.len()).ok();
        if self.outbound.get(topic).map(|alias| alias.get()) == newest {
            self.outbound.remove(topic);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str) -> TopicName {
        TopicName::new(name).unwrap()
    }

    fn alias(value: u16) -> Option<NonZeroU16> {
        NonZeroU16::new(value)
    }

    #[test]
    fn client_aliases_are_set_then_used() {
        let mut aliases = TopicAliases::default();
        assert_eq!(aliases.resolve(topic("a/b"), None, 4), Ok(topic("a/b")));
        assert_eq!(aliases.resolve(topic("a/b"), alias(2), 4), Ok(topic("a/b")));
        assert_eq!(
            aliases.resolve(TopicName::alias_only(), alias(2), 4),
            Ok(topic("a/b"))
        );
        // A new topic for the same alias replaces the mapping.
        assert_eq!(aliases.resolve(topic("c"), alias(2), 4), Ok(topic("c")));
        assert_eq!(
            aliases.resolve(TopicName::alias_only(), alias(2), 4),
            Ok(topic("c"))
        );
        let unknown = aliases.resolve(TopicName::alias_only(), alias(1), 4);
        assert_eq!(unknown.unwrap_err().reason_code, ReasonCode::ProtocolError);
        let over = aliases.resolve(topic("d"), alias(5), 4);
        assert_eq!(over.unwrap_err().reason_code, ReasonCode::TopicAliasInvalid);
    }

    #[test]
    fn broker_aliases_stop_at_the_clients_maximum() {
        let mut aliases = TopicAliases::default();
        let first = aliases.outgoing(&topic("a"), 2).unwrap();
        assert_eq!((first.alias.get(), first.with_topic), (1, true));
        let again = aliases.outgoing(&topic("a"), 2).unwrap();
        assert_eq!((again.alias.get(), again.with_topic), (1, false));
        assert_eq!(aliases.outgoing(&topic("b"), 2).unwrap().alias.get(), 2);
        assert_eq!(aliases.outgoing(&topic("c"), 2), None);
        // [MQTT-3.1.2-27] (v5.0): a client that announced none gets none.
        assert_eq!(TopicAliases::default().outgoing(&topic("x"), 0), None);
    }
}
