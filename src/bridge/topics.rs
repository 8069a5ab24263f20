//! A bridge's topic rules, Mosquitto's model: a rule's filter with the
//! local prefix is what the bridge subscribes to here (going out), with
//! the remote prefix what it subscribes to at the remote (coming in); a
//! forwarded topic has one prefix stripped and the other added.

use crate::config::TopicRule;
use crate::protocol::{filter_matches, QoS};

/// The rules of one bridge.
#[derive(Debug, Clone)]
pub struct Rules(Vec<TopicRule>);

fn qos(rule: &TopicRule) -> QoS {
    QoS::from_u8(rule.qos.min(2)).unwrap_or(QoS::AtMostOnce)
}

impl Rules {
    /// The configured rules.
    pub fn new(rules: Vec<TopicRule>) -> Rules {
        Rules(rules)
    }

    /// What the bridge subscribes to on this broker: one filter per
    /// outward rule, with its QoS.
    pub fn local_filters(&self) -> Vec<(String, QoS)> {
        self.0
            .iter()
            .filter(|rule| rule.direction.outward())
            .map(|rule| (format!("{}{}", rule.local_prefix, rule.filter), qos(rule)))
            .collect()
    }

    /// What the bridge subscribes to at the remote: one filter per inward
    /// rule, with its QoS.
    pub fn remote_filters(&self) -> Vec<(String, QoS)> {
        self.0
            .iter()
            .filter(|rule| rule.direction.inward())
            .map(|rule| (format!("{}{}", rule.remote_prefix, rule.filter), qos(rule)))
            .collect()
    }

    /// The remote topic and QoS of a local message going out: by the first
    /// outward rule that matches it.
    pub fn outgoing(&self, topic: &str) -> Option<(String, QoS)> {
        self.0.iter().find_map(|rule| {
            let filter = format!("{}{}", rule.local_prefix, rule.filter);
            if !rule.direction.outward() || !filter_matches(&filter, topic) {
                return None;
            }
            let rest = topic.strip_prefix(rule.local_prefix.as_str())?;
            Some((format!("{}{rest}", rule.remote_prefix), qos(rule)))
        })
    }

    /// The local topic of a remote message coming in: by the first inward
    /// rule that matches it.
    pub fn incoming(&self, topic: &str) -> Option<String> {
        self.0.iter().find_map(|rule| {
            let filter = format!("{}{}", rule.remote_prefix, rule.filter);
            if !rule.direction.inward() || !filter_matches(&filter, topic) {
                return None;
            }
            let rest = topic.strip_prefix(rule.remote_prefix.as_str())?;
            Some(format!("{}{rest}", rule.local_prefix))
        })
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
            rules.outgoing("site/sensors/kitchen/temp"),
            Some(("gw1/sensors/kitchen/temp".to_owned(), QoS::AtLeastOnce))
        );
        assert_eq!(rules.outgoing("sensors/kitchen"), None);
        assert_eq!(
            rules.outgoing("cmd/x"),
            None,
            "an inward rule does not send out"
        );
        assert_eq!(
            rules.incoming("gw1/cmd/reboot"),
            Some("cmd/reboot".to_owned())
        );
        assert_eq!(rules.incoming("gw2/cmd/reboot"), None);
        assert_eq!(rules.incoming("both/x"), Some("both/x".to_owned()));
        assert_eq!(
            rules.outgoing("both/x"),
            Some(("both/x".to_owned(), QoS::AtMostOnce))
        );
    }
}
