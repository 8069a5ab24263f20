//! Shared subscriptions (section 4.8.2): `$share/{group}/{filter}` makes the
//! client a member of a group, and each message matching the filter goes to
//! one member, chosen by the configured strategy. Members that are
//! connected and have room are preferred.

use std::sync::atomic::Ordering;

use super::topic_tree::Group;
use super::Subscriber;
use crate::config::SharedStrategy;

const PREFIX: &str = "$share/";

/// Splits a shared subscription's filter into its group name and the
/// filter proper. `Ok(None)` for an ordinary filter; an error names the
/// rule a malformed one breaks.
pub fn parse(filter: &str) -> Result<Option<(&str, &str)>, &'static str> {
    let Some(rest) = filter.strip_prefix(PREFIX) else {
        return Ok(None);
    };
    let Some((group, inner)) = rest.split_once('/') else {
        return Err(
            "[MQTT-4.8.2-2] a shared subscription needs `/` and a filter after the share name",
        );
    };
    if group.is_empty() || group.contains(['+', '#']) {
        return Err("[MQTT-4.8.2-1] a share name is at least one character, without `+` or `#`");
    }
    if inner.is_empty() {
        return Err("[MQTT-4.8.2-2] a shared subscription's filter is empty");
    }
    Ok(Some((group, inner)))
}

/// Picks the member of `group` to give a message to, never `exclude`: the
/// first, from where `strategy` starts, that is connected and has room in
/// its queue; failing that, the one where it starts (whose queue takes the
/// message if it can).
pub fn choose<'a>(
    group: &'a Group<Subscriber>,
    strategy: SharedStrategy,
    exclude: Option<&str>,
) -> Option<&'a Subscriber> {
    let members = &group.members;
    let count = members.len();
    if count == 0 {
        return None;
    }
    let start = match strategy {
        SharedStrategy::RoundRobin => group.cursor.fetch_add(1, Ordering::Relaxed),
        SharedStrategy::Sticky => group.cursor.load(Ordering::Relaxed),
        // fastrand's generator is per thread: fair, and no shared state.
        SharedStrategy::Random => fastrand::usize(..),
    } % count;
    let candidates = (0..count)
        .map(|step| (start + step) % count)
        .filter(|&index| exclude != Some(members[index].inbox.client_id()));
    let mut fallback = None;
    for index in candidates {
        let subscriber = &members[index];
        fallback.get_or_insert(index);
        if subscriber.inbox.is_online() && subscriber.inbox.has_room() {
            if strategy == SharedStrategy::Sticky && index != start {
                group.cursor.store(index, Ordering::Relaxed);
            }
            return Some(subscriber);
        }
    }
    fallback.map(|index| &members[index])
}

#[cfg(test)]
mod tests {
    use super::*;

    // [MQTT-4.8.2-1] [MQTT-4.8.2-2] (v5.0).
    #[test]
    fn share_names_and_filters_are_checked() {
        assert_eq!(parse("a/b"), Ok(None));
        assert_eq!(parse("$share/g/a/#"), Ok(Some(("g", "a/#"))));
        assert_eq!(parse("$share/g//"), Ok(Some(("g", "/"))));
        for bad in [
            "$share/g",
            "$share//a",
            "$share/g/",
            "$share/+/a",
            "$share/#",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
