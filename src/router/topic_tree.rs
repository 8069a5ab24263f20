//! The subscription trie (section 4.7): one node per topic level, `+` and
//! `#` as ordinary children, each node holding the subscribers whose filter
//! ends there, and the shared subscription groups (`$share/{group}/...`,
//! section 4.8.2) whose filter ends there. Matching walks the levels of a
//! topic once.

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

/// A subscriber as the trie holds it: it knows its client, so the trie
/// keeps no second copy of the id beside it (every subscription pays for
/// what an entry holds).
pub trait Member {
    /// The client the subscription is of.
    fn client_id(&self) -> &str;
}

/// A client id and a value: a member for trees that hold plain values.
impl<T> Member for (Arc<str>, T) {
    fn client_id(&self) -> &str {
        &self.0
    }
}

/// A trie of topic filters to subscribers of type `S`, keyed by client id.
#[derive(Debug)]
pub struct TopicTree<S> {
    root: Node<S>,
    subscriptions: usize,
    /// Shared groups held (a group on two filters counts twice).
    groups: usize,
}

/// One level. Subscribers are a plain vector: most nodes hold one or a
/// few, and a vector of one costs far less than a hash map of one.
#[derive(Debug)]
struct Node<S> {
    /// Boxed and absent in leaves: a node is an entry in its parent's
    /// table, and most nodes have no children, so the box keeps every
    /// entry 40 bytes smaller (measured with the connections benchmark).
    #[allow(clippy::box_collection)]
    children: Option<Box<HashMap<Box<str>, Node<S>>>>,
    subscribers: Vec<S>,
    /// Shared subscription groups whose filter ends here; boxed and absent
    /// in almost every node.
    #[allow(clippy::box_collection)]
    groups: Option<Box<Vec<Group<S>>>>,
}

/// A shared subscription group on one filter: each message goes to one
/// member.
#[derive(Debug)]
pub struct Group<S> {
    /// The group's name (`{group}` in `$share/{group}/{filter}`).
    pub name: Box<str>,
    /// The members (one per client id).
    pub members: Vec<S>,
    /// Where the choice of member continues (round robin) or stays
    /// (sticky).
    pub cursor: AtomicUsize,
}

/// One match of a topic: a subscriber, or a shared group to pick from.
#[derive(Debug)]
pub enum Match<'a, S> {
    /// A subscriber whose filter matches.
    One(&'a S),
    /// A shared group whose filter matches.
    Group(&'a Group<S>),
}

impl<S> Default for Node<S> {
    fn default() -> Self {
        Node {
            children: None,
            subscribers: Vec::new(),
            groups: None,
        }
    }
}

impl<S: Member> Node<S> {
    fn child(&self, level: &str) -> Option<&Node<S>> {
        self.children.as_ref()?.get(level)
    }

    /// Removes `client` from this node's subscribers or from `group`.
    fn remove_here(
        &mut self,
        group: Option<&str>,
        client: &str,
        which: &dyn Fn(&S) -> bool,
    ) -> bool {
        let Some(name) = group else {
            return remove_member(&mut self.subscribers, client, which);
        };
        let Some(groups) = self.groups.as_mut() else {
            return false;
        };
        let Some(index) = groups.iter().position(|g| &*g.name == name) else {
            return false;
        };
        let removed = remove_member(&mut groups[index].members, client, which);
        if groups[index].members.is_empty() {
            groups.swap_remove(index);
            if groups.is_empty() {
                self.groups = None;
            }
        }
        removed
    }

    fn visit_all<'a>(&'a self, visit: &mut impl FnMut(Match<'a, S>)) {
        for subscriber in &self.subscribers {
            visit(Match::One(subscriber));
        }
        for group in self.groups.iter().flat_map(|groups| groups.iter()) {
            visit(Match::Group(group));
        }
    }
}

fn remove_member<S: Member>(
    members: &mut Vec<S>,
    client: &str,
    which: &dyn Fn(&S) -> bool,
) -> bool {
    let Some(index) = members
        .iter()
        .position(|subscriber| subscriber.client_id() == client && which(subscriber))
    else {
        return false;
    };
    // Order is kept: a shared group's round robin walks it.
    members.remove(index);
    if members.is_empty() {
        *members = Vec::new();
    }
    true
}

impl<S> Default for TopicTree<S> {
    fn default() -> Self {
        TopicTree {
            root: Node::default(),
            subscriptions: 0,
            groups: 0,
        }
    }
}

impl<S: Member> TopicTree<S> {
    /// An empty tree.
    pub fn new() -> Self {
        TopicTree::default()
    }

    /// The number of (filter, client) subscriptions held.
    pub fn len(&self) -> usize {
        self.subscriptions
    }

    /// True when nothing is subscribed.
    pub fn is_empty(&self) -> bool {
        self.subscriptions == 0
    }

    /// Adds or replaces its client's subscription to `filter`, as a member
    /// of shared group `group` if one is given. Returns the subscriber it
    /// replaced, if any.
    pub fn insert(&mut self, group: Option<&str>, filter: &str, subscriber: S) -> Option<S> {
        let mut node = &mut self.root;
        for level in filter.split('/') {
            node = node
                .children
                .get_or_insert_with(Default::default)
                .entry(level.into())
                .or_default();
        }
        let members = match group {
            None => &mut node.subscribers,
            Some(name) => {
                let groups = node.groups.get_or_insert_with(Default::default);
                let index = match groups.iter().position(|g| &*g.name == name) {
                    Some(index) => index,
                    None => {
                        self.groups += 1;
                        groups.push(Group {
                            name: name.into(),
                            members: Vec::new(),
                            cursor: AtomicUsize::new(0),
                        });
                        groups.len() - 1
                    }
                };
                &mut groups[index].members
            }
        };
        let client = subscriber.client_id();
        if let Some(slot) = members.iter_mut().find(|s| s.client_id() == client) {
            return Some(std::mem::replace(slot, subscriber));
        }
        // Grow one at a time: most nodes keep a single subscriber.
        members.reserve_exact(1);
        members.push(subscriber);
        self.subscriptions += 1;
        None
    }

    /// Removes `client`'s subscription to `filter` (in shared group
    /// `group`, if given); true if it existed.
    pub fn remove(&mut self, group: Option<&str>, filter: &str, client: &str) -> bool {
        self.remove_if(group, filter, client, |_| true)
    }

    /// [`TopicTree::remove`], only if `which` says the subscriber found is
    /// the one meant.
    pub fn remove_if(
        &mut self,
        group: Option<&str>,
        filter: &str,
        client: &str,
        which: impl Fn(&S) -> bool,
    ) -> bool {
        let levels: Vec<&str> = filter.split('/').collect();
        let removed = Self::remove_at(&mut self.root, &levels, group, client, &which);
        if removed {
            self.subscriptions -= 1;
            if group.is_some_and(|name| self.group(name, filter).is_none()) {
                self.groups -= 1;
            }
        }
        removed
    }

    /// The number of shared groups held (one per group and filter).
    pub fn group_count(&self) -> usize {
        self.groups
    }

    /// Removes the subscriber and prunes nodes left empty.
    fn remove_at(
        node: &mut Node<S>,
        levels: &[&str],
        group: Option<&str>,
        client: &str,
        which: &dyn Fn(&S) -> bool,
    ) -> bool {
        let Some((first, rest)) = levels.split_first() else {
            return node.remove_here(group, client, which);
        };
        let Some(children) = node.children.as_mut() else {
            return false;
        };
        let Some(child) = children.get_mut(*first) else {
            return false;
        };
        let removed = Self::remove_at(child, rest, group, client, which);
        if child.children.is_none() && child.subscribers.is_empty() && child.groups.is_none() {
            children.remove(*first);
            if children.is_empty() {
                node.children = None;
            }
        }
        removed
    }

    /// The shared group `name` on exactly `filter`.
    pub fn group(&self, name: &str, filter: &str) -> Option<&Group<S>> {
        let mut node = &self.root;
        for level in filter.split('/') {
            node = node.child(level)?;
        }
        node.groups.as_ref()?.iter().find(|g| &*g.name == name)
    }

    /// Calls `visit` for every subscription and shared group whose filter
    /// matches `topic` (a client with several matching filters is visited
    /// once per filter).
    pub fn for_each_match<'a>(&'a self, topic: &str, mut visit: impl FnMut(Match<'a, S>)) {
        let levels: Vec<&str> = topic.split('/').collect();
        // [MQTT-4.7.2-1]: a filter starting with a wildcard does not match a
        // topic starting with '$'.
        let system = topic.starts_with('$');
        Self::match_at(&self.root, &levels, system, &mut visit);
    }

    /// Calls `visit` with every subscription and shared group, and its
    /// filter, in filter order, until it returns false (the admin API's
    /// view, a page at a time; not for the message path).
    pub fn for_each<'a>(&'a self, mut visit: impl FnMut(&str, Match<'a, S>) -> bool) {
        let mut filter = String::new();
        Self::walk(&self.root, 0, &mut filter, &mut visit);
    }

    /// False once `visit` said stop.
    fn walk<'a>(
        node: &'a Node<S>,
        depth: usize,
        filter: &mut String,
        visit: &mut impl FnMut(&str, Match<'a, S>) -> bool,
    ) -> bool {
        if depth > 0 {
            for subscriber in &node.subscribers {
                if !visit(filter, Match::One(subscriber)) {
                    return false;
                }
            }
            for group in node.groups.iter().flat_map(|groups| groups.iter()) {
                if !visit(filter, Match::Group(group)) {
                    return false;
                }
            }
        }
        let Some(children) = node.children.as_ref() else {
            return true;
        };
        let mut levels: Vec<(&Box<str>, &Node<S>)> = children.iter().collect();
        levels.sort_by(|a, b| a.0.cmp(b.0));
        for (level, child) in levels {
            let len = filter.len();
            if depth > 0 {
                filter.push('/');
            }
            filter.push_str(level);
            let more = Self::walk(child, depth + 1, filter, visit);
            filter.truncate(len);
            if !more {
                return false;
            }
        }
        true
    }

    fn match_at<'a>(
        node: &'a Node<S>,
        levels: &[&str],
        skip_wildcards: bool,
        visit: &mut impl FnMut(Match<'a, S>),
    ) {
        if !skip_wildcards {
            // '#' matches the parent level and everything below it
            // ("sport/#" matches "sport") [MQTT-4.7.1-1].
            if let Some(multi) = node.child("#") {
                multi.visit_all(visit);
            }
        }
        let Some((first, rest)) = levels.split_first() else {
            node.visit_all(visit);
            return;
        };
        if let Some(child) = node.child(first) {
            Self::match_at(child, rest, false, visit);
        }
        if !skip_wildcards {
            if let Some(single) = node.child("+") {
                Self::match_at(single, rest, false, visit);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::filter_matches;
    use std::sync::Arc;

    fn matches(tree: &TopicTree<(Arc<str>, u32)>, topic: &str) -> Vec<u32> {
        let mut found = Vec::new();
        tree.for_each_match(topic, |found_match| match found_match {
            Match::One((_, value)) => found.push(*value),
            Match::Group(group) => found.extend(group.members.iter().map(|(_, v)| *v)),
        });
        found.sort();
        found
    }

    // Section 4.7's examples, and [MQTT-4.7.2-1] (v3.1.1).
    const CASES: &[(&str, &str, bool)] = &[
        ("sport/tennis/player1/#", "sport/tennis/player1", true),
        (
            "sport/tennis/player1/#",
            "sport/tennis/player1/ranking",
            true,
        ),
        (
            "sport/tennis/player1/#",
            "sport/tennis/player1/score/wimbledon",
            true,
        ),
        ("sport/#", "sport", true),
        ("#", "sport/tennis", true),
        ("sport/tennis/+", "sport/tennis/player1", true),
        ("sport/tennis/+", "sport/tennis/player1/ranking", false),
        ("sport/+", "sport", false),
        ("sport/+", "sport/", true),
        ("+/+", "/finance", true),
        ("/+", "/finance", true),
        ("+", "/finance", false),
        ("#", "$SYS/broker/uptime", false),
        ("+/monitor/Clients", "$SYS/monitor/Clients", false),
        ("$SYS/#", "$SYS/monitor/Clients", true),
        ("$SYS/monitor/+", "$SYS/monitor/Clients", true),
        ("a/b", "a/b", true),
        ("a/b", "a/c", false),
        ("a//b", "a//b", true),
        ("+/+/+", "a/b", false),
    ];

    #[test]
    fn matching_follows_section_4_7() {
        // The $SYS cases check [MQTT-4.7.2-1] (v3.1.1).
        assert!(!CASES.is_empty());
        for (filter, topic, expected) in CASES {
            let mut tree = TopicTree::new();
            tree.insert(None, filter, (Arc::from("c"), 1u32));
            assert_eq!(
                !matches(&tree, topic).is_empty(),
                *expected,
                "{filter} vs {topic}"
            );
            assert_eq!(
                filter_matches(filter, topic),
                *expected,
                "{filter} vs {topic}"
            );
        }
    }

    #[test]
    fn insert_replace_remove_and_prune() {
        let mut tree = TopicTree::new();
        assert_eq!(tree.insert(None, "a/+", (Arc::from("c1"), 1)), None);
        assert_eq!(tree.insert(None, "a/#", (Arc::from("c1"), 2)), None);
        assert_eq!(tree.insert(None, "a/b", (Arc::from("c2"), 3)), None);
        assert_eq!(
            tree.insert(None, "a/b", (Arc::from("c2"), 4)),
            Some((Arc::from("c2"), 3))
        );
        assert_eq!(tree.len(), 3);
        assert_eq!(matches(&tree, "a/b"), vec![1, 2, 4]);
        assert!(tree.remove(None, "a/+", "c1"));
        assert!(!tree.remove(None, "a/+", "c1"));
        assert!(!tree.remove(None, "x/y", "c1"));
        assert_eq!(matches(&tree, "a/b"), vec![2, 4]);
        assert!(tree.remove(None, "a/#", "c1"));
        assert!(tree.remove(None, "a/b", "c2"));
        assert!(tree.is_empty());
        assert!(tree.root.children.is_none(), "empty nodes are pruned");
    }

    // Shared groups sit beside plain subscribers on the same filter, keep
    // their members in order, and are pruned with their last member.
    #[test]
    fn shared_groups_are_matched_and_pruned() {
        let mut tree = TopicTree::new();
        tree.insert(Some("g"), "a/+", (Arc::from("c1"), 1u32));
        tree.insert(Some("g"), "a/+", (Arc::from("c2"), 2));
        tree.insert(Some("h"), "a/+", (Arc::from("c1"), 3));
        tree.insert(None, "a/+", (Arc::from("c1"), 4));
        assert_eq!(tree.len(), 4);
        let mut groups = Vec::new();
        let mut plain = Vec::new();
        tree.for_each_match("a/b", |found| match found {
            Match::One((_, value)) => plain.push(*value),
            Match::Group(group) => groups.push((
                group.name.to_string(),
                group.members.iter().map(|(_, v)| *v).collect::<Vec<_>>(),
            )),
        });
        assert_eq!(plain, vec![4]);
        assert_eq!(
            groups,
            vec![("g".to_owned(), vec![1, 2]), ("h".to_owned(), vec![3])]
        );
        assert!(!tree.remove(Some("g"), "a/+", "c3"));
        assert!(tree.remove(Some("g"), "a/+", "c1"));
        assert!(tree.remove(Some("g"), "a/+", "c2"));
        assert!(tree.remove(Some("h"), "a/+", "c1"));
        assert!(tree.remove(None, "a/+", "c1"));
        assert!(tree.is_empty());
        assert!(tree.root.children.is_none(), "empty nodes are pruned");
    }
}
