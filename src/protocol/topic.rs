//! Topic names and topic filters (section 4.7), validated once when they are
//! decoded or built, so the rest of the broker can trust them.

use std::fmt;

use super::DecodeError;

/// A topic name, as carried by PUBLISH and the will: no wildcards
/// [MQTT-3.3.2-2], at least one character [MQTT-4.7.3-1], no U+0000.
///
/// The one exception is an MQTT 5 PUBLISH that names its topic by Topic Alias
/// alone: its topic name is empty until the session resolves the alias.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicName(String);

impl TopicName {
    /// Validates a topic name.
    pub fn new(name: impl Into<String>) -> Result<Self, DecodeError> {
        let name = name.into();
        if name.is_empty() {
            return Err(DecodeError::EmptyTopicName);
        }
        if name.contains(['+', '#']) {
            return Err(DecodeError::WildcardInTopicName);
        }
        if name.contains('\0') {
            return Err(DecodeError::NullCharacter);
        }
        Ok(TopicName(name))
    }

    /// The empty topic name of a PUBLISH that uses only a Topic Alias
    /// (MQTT 5, 3.3.2.3.4).
    pub fn alias_only() -> Self {
        TopicName(String::new())
    }

    /// True for the empty name of [`TopicName::alias_only`].
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The levels between `/` separators (an empty level is a level).
    pub fn levels(&self) -> std::str::Split<'_, char> {
        self.0.split('/')
    }

    /// Topics starting with `$` are the server's; wildcards at the first
    /// level never match them [MQTT-4.7.2-1].
    pub fn is_system(&self) -> bool {
        self.0.starts_with('$')
    }
}

impl TryFrom<String> for TopicName {
    type Error = DecodeError;
    fn try_from(name: String) -> Result<Self, DecodeError> {
        if name.is_empty() {
            // The alias-only form round-trips through storage.
            return Ok(TopicName::alias_only());
        }
        TopicName::new(name)
    }
}

impl From<TopicName> for String {
    fn from(name: TopicName) -> String {
        name.0
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for TopicName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A topic filter, as carried by SUBSCRIBE and UNSUBSCRIBE: at least one
/// character [MQTT-4.7.3-1]; `#` only alone in the last level
/// [MQTT-4.7.1-1]; `+` only alone in its level [MQTT-4.7.1-2].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicFilter(String);

impl TopicFilter {
    /// Validates a topic filter.
    pub fn new(filter: impl Into<String>) -> Result<Self, DecodeError> {
        let filter = filter.into();
        if filter.is_empty() {
            return Err(DecodeError::EmptyTopicFilter);
        }
        if filter.contains('\0') {
            return Err(DecodeError::NullCharacter);
        }
        let mut levels = filter.split('/').peekable();
        while let Some(level) = levels.next() {
            let is_last = levels.peek().is_none();
            if level.contains('#') && (level != "#" || !is_last) {
                return Err(DecodeError::InvalidMultiLevelWildcard);
            }
            if level.contains('+') && level != "+" {
                return Err(DecodeError::InvalidSingleLevelWildcard);
            }
        }
        Ok(TopicFilter(filter))
    }

    /// The filter as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The levels between `/` separators.
    pub fn levels(&self) -> std::str::Split<'_, char> {
        self.0.split('/')
    }

    /// True if the filter contains `+` or `#`.
    pub fn has_wildcard(&self) -> bool {
        self.0.contains(['+', '#'])
    }
}

impl TryFrom<String> for TopicFilter {
    type Error = DecodeError;
    fn try_from(filter: String) -> Result<Self, DecodeError> {
        TopicFilter::new(filter)
    }
}

impl From<TopicFilter> for String {
    fn from(filter: TopicFilter) -> String {
        filter.0
    }
}

impl fmt::Display for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for TopicFilter {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// The broker's own `$SYS` tree, which clients may not publish to (a
/// PUBLISH there is acknowledged and dropped, a will there is not sent).
pub fn is_broker_topic(topic: &str) -> bool {
    topic == "$SYS" || topic.starts_with("$SYS/")
}

/// Checks a topic name or filter against the broker's bounds on its
/// length in bytes and its number of levels; the error names the bound.
pub fn check_bounds(topic: &str, max_length: usize, max_levels: usize) -> Result<(), &'static str> {
    if topic.len() > max_length {
        return Err("topic longer than max_topic_length");
    }
    if topic.split('/').count() > max_levels {
        return Err("topic has more levels than max_topic_levels");
    }
    Ok(())
}

/// Whether `filter` matches `topic` (section 4.7), one pair at a time (the
/// router's trie matches many filters at once): for retained messages and
/// access rules.
pub fn filter_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut filter_levels = filter.split('/');
    let mut topic_levels = topic.split('/');
    loop {
        match (filter_levels.next(), topic_levels.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(f), Some(t)) if f == t => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // [MQTT-3.3.2-2] (v5.0) [MQTT-3.3.2-2] (v3.1.1) and [MQTT-4.7.3-1].
    #[test]
    fn topic_names() {
        let valid = [
            "a",
            "/",
            "a/b",
            "sport/tennis/player1",
            "$SYS/broker",
            " ",
            "a//b",
        ];
        assert!(!valid.is_empty());
        for name in valid {
            assert_eq!(TopicName::new(name).unwrap().as_str(), name);
        }
        let invalid = [
            ("", DecodeError::EmptyTopicName),
            ("a/+", DecodeError::WildcardInTopicName),
            ("#", DecodeError::WildcardInTopicName),
            ("a/b#", DecodeError::WildcardInTopicName),
            ("a\0", DecodeError::NullCharacter),
        ];
        for (name, error) in invalid {
            assert_eq!(TopicName::new(name), Err(error), "{name:?}");
        }
        assert!(TopicName::new("$SYS/x").unwrap().is_system());
        assert!(TopicName::alias_only().is_empty());
    }

    // Examples of section 4.7.1: [MQTT-4.7.1-1], [MQTT-4.7.1-2], [MQTT-4.7.3-1].
    #[test]
    fn topic_filters() {
        let valid = [
            "sport/tennis/player1/#",
            "sport/#",
            "#",
            "+",
            "+/tennis/#",
            "sport/+/player1",
            "/+",
            "+/+",
            "$SYS/#",
            "$share/group/a/+",
        ];
        for filter in valid {
            assert_eq!(TopicFilter::new(filter).unwrap().as_str(), filter);
        }
        let invalid = [
            ("", DecodeError::EmptyTopicFilter),
            ("sport/tennis#", DecodeError::InvalidMultiLevelWildcard),
            (
                "sport/tennis/#/ranking",
                DecodeError::InvalidMultiLevelWildcard,
            ),
            ("#/", DecodeError::InvalidMultiLevelWildcard),
            ("sport+", DecodeError::InvalidSingleLevelWildcard),
            ("sport/+x/a", DecodeError::InvalidSingleLevelWildcard),
            ("a\0", DecodeError::NullCharacter),
        ];
        for (filter, error) in invalid {
            assert_eq!(TopicFilter::new(filter), Err(error), "{filter:?}");
        }
        assert!(TopicFilter::new("a/+").unwrap().has_wildcard());
        assert!(!TopicFilter::new("a/b").unwrap().has_wildcard());
    }
}
