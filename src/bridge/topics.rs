//! A bridge's topic rules, Mosquitto's model: a rule's filter with the
//! local prefix is what the bridge subscribes to here (going out), with
//! the remote prefix what it subscribes to at the remote (coming in); a
//! forwarded topic has one prefix stripped and the other added.

use crate::config::TopicRule;
use crate::protocol::{filter_matches, QoS, TopicName};
use crate::session::endpoint::TopicMap;

/// The rules of one bridge, with their filters as subscribed on each side
/// made once (every forwarded message is matched against them).
#[derive(Debug, Clone)]
pub struct Rules(Vec<Rule>);

#[derive(Debug, Clone)]
struct Rule {
    config: TopicRule,
    qos: QoS,
    /// `local_prefix + filter`.
    local_filter: String,
    /// `remote_prefix + filter`.
    remote_filter: String,
}

impl Rules {
    /// The configured rules.
    pub fn new(rules: Vec<TopicRule>) -> Rules {
        Rules(
            rules
                .into_iter()
                .map(|config| Rule {
                    qos: QoS::from_u8(config.qos.min(2)).unwrap_or(QoS::AtMostOnce),
                    local_filter: format!("{}{}", config.local_prefix, config.filter),
                    remote_filter: format!("{}{}", config.remote_prefix, config.filter),
                    config,
                })
                .collect(),
        )
    }

    /// What the bridge subscribes to on this broker: one filter per
    /// outward rule, with its QoS.
    pub fn local_filters(&self) -> Vec<(String, QoS)> {
        self.0
            .iter()
            .filter(|rule| rule.config.direction.outward())
            .map(|rule| (rule.local_filter.clone(), rule.qos))
            .collect()
    }

    /// What the bridge subscribes to at the remote: one filter per inward
    /// rule, with its QoS.
    pub fn remote_filters(&self) -> Vec<(String, QoS)> {
        self.0
            .iter()
            .filter(|rule| rule.config.direction.inward())
            .map(|rule| (rule.remote_filter.clone(), rule.qos))
            .collect()
    }

    /// The remote topic and QoS of a local message going out: by the first
    /// outward rule that matches it.
    pub fn remote_topic(&self, topic: &str) -> Option<(String, QoS)> {
        self.0.iter().find_map(|rule| {
            if !rule.config.direction.outward() || !filter_matches(&rule.local_filter, topic) {
                return None;
            }
            let rest = topic.strip_prefix(rule.config.local_prefix.as_str())?;
            Some((format!("{}{rest}", rule.config.remote_prefix), rule.qos))
        })
    }

    /// The local topic of a remote message coming in: by the first inward
    /// rule that matches it.
    pub fn local_topic(&self, topic: &str) -> Option<String> {
        self.0.iter().find_map(|rule| {
            if !rule.config.direction.inward() || !filter_matches(&rule.remote_filter, topic) {
                return None;
            }
            let rest = topic.strip_prefix(rule.config.remote_prefix.as_str())?;
            Some(format!("{}{rest}", rule.config.local_prefix))
        })
    }
}

/// The bridge's endpoint sends and takes messages by these rules.
impl TopicMap for Rules {
    fn outgoing(&self, local: &str) -> Option<TopicName> {
        let (topic, _) = self.remote_topic(local)?;
        TopicName::new(topic).ok()
    }

    fn incoming(&self, remote: &str) -> Option<TopicName> {
        TopicName::new(self.local_topic(remote)?).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Direction;

    fn rule(filter: &str, direction: Direction, qos: u8, local: &str, remote: &str) -> TopicRule {
        TopicRule {
            filter: filter.to_owned(),
            direction,
            qos,
            local_prefix: local.to_owned(),
            remote_prefix: remote.to_owned(),
        }
    }

    // Mosquitto's `topic sensors/# out 1 site/ gw1/` and `topic cmd/# in 2
    // "" gw1/`, translated one for one.
    #[test]
    fn prefixes_are_stripped_and_added() {
        let rules = Rules::new(vec![
            rule("sensors/#", Direction::Out, 1, "site/", "gw1/"),
            rule("cmd/#", Direction::In, 2, "", "gw1/"),
            rule("both/+", Direction::Both, 0, "", ""),
        ]);
        assert_eq!(
            rules.local_filters(),
            vec![
                ("site/sensors/#".to_owned(), QoS::AtLeastOnce),
                ("both/+".to_owned(), QoS::AtMostOnce)
            ]
        );
        assert_eq!(
            rules.remote_filters(),
            vec![
                ("gw1/cmd/#".to_owned(), QoS::ExactlyOnce),
                ("both/+".to_owned(), QoS::AtMostOnce)
            ]
        );
        assert_eq!(
            rules.remote_topic("site/sensors/kitchen/temp"),
            Some(("gw1/sensors/kitchen/temp".to_owned(), QoS::AtLeastOnce))
        );
        assert_eq!(rules.remote_topic("sensors/kitchen"), None);
        assert_eq!(
            rules.remote_topic("cmd/x"),
            None,
            "an inward rule does not send out"
        );
        assert_eq!(
            rules.local_topic("gw1/cmd/reboot"),
            Some("cmd/reboot".to_owned())
        );
        assert_eq!(rules.local_topic("gw2/cmd/reboot"), None);
        assert_eq!(rules.local_topic("both/x"), Some("both/x".to_owned()));
        assert_eq!(
            rules.remote_topic("both/x"),
            Some(("both/x".to_owned(), QoS::AtMostOnce))
        );
    }
}
