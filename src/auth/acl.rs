//! The ACL file, in Mosquitto's syntax, so existing Mosquitto users can
//! bring theirs:
//!
//! ```text
//! # lines before the first `user` apply to anonymous clients
//! topic read $SYS/#
//! user alice
//! # access: read, write, readwrite (the default) or deny
//! topic readwrite home/#
//! topic deny home/secret
//! # every client; %c is its client id, %u its user name
//! pattern write devices/%c/status
//! ```
//!
//! Evaluation: a `deny` rule that matches wins; otherwise the access is
//! allowed if an allowing rule of the client's (its user's block, or the
//! anonymous block, and every `pattern`) matches; otherwise it is denied.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

use crate::protocol::filter_matches;

/// What a client wants to do with a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Receive messages (subscribe, delivery).
    Read,
    /// Publish (messages and wills).
    Write,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    Write,
    ReadWrite,
    Deny,
}

impl Access {
    fn allows(self, action: Action) -> bool {
        matches!(
            (self, action),
            (Access::ReadWrite, _) | (Access::Read, Action::Read) | (Access::Write, Action::Write)
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    access: Access,
    filter: String,
}

/// The rules of an ACL file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acl {
    anonymous: Vec<Rule>,
    users: HashMap<String, Vec<Rule>>,
    patterns: Vec<Rule>,
}

/// Who is asking.
#[derive(Debug, Clone, Copy)]
pub struct Client<'a> {
    /// Its user name, if it gave (or its certificate gave) one.
    pub username: Option<&'a str>,
    /// Its client id.
    pub client_id: &'a str,
}

impl Acl {
    /// Reads and checks an ACL file; an error names the line.
    pub fn load(path: &Path) -> Result<Acl, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
        Acl::parse(&text).map_err(|error| format!("{}: {error}", path.display()))
    }

    /// Parses the text of an ACL file.
    pub fn parse(text: &str) -> Result<Acl, String> {
        let mut acl = Acl::default();
        let mut user: Option<String> = None;
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (keyword, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            let rest = rest.trim();
            match keyword {
                "user" => {
                    if rest.is_empty() {
                        return Err(format!("line {number}: `user` needs a user name"));
                    }
                    user = Some(rest.to_owned());
                    acl.users.entry(rest.to_owned()).or_default();
                }
                "topic" | "pattern" => {
                    let rule =
                        parse_rule(rest).map_err(|error| format!("line {number}: {error}"))?;
                    if keyword == "pattern" {
                        acl.patterns.push(rule);
                    } else if let Some(user) = &user {
                        acl.users.entry(user.clone()).or_default().push(rule);
                    } else {
                        acl.anonymous.push(rule);
                    }
                }
                other => {
                    return Err(format!(
                        "line {number}: unknown keyword `{other}` (expected user, topic or pattern)"
                    ))
                }
            }
        }
        Ok(acl)
    }

    /// Whether `client` may do `action` on the topic name `topic`.
    pub fn allows(&self, client: Client<'_>, topic: &str, action: Action) -> bool {
        self.decide(client, action, |filter| filter_matches(filter, topic))
    }

    /// Whether `client` may subscribe to `filter`: an allowing read rule
    /// must cover every topic the filter can match (a deny rule that covers
    /// it refuses it). Messages are checked again one by one when they are
    /// delivered, so a deny rule on part of the filter still holds.
    pub fn allows_subscription(&self, client: Client<'_>, filter: &str) -> bool {
        self.decide(client, Action::Read, |rule| covers(rule, filter))
    }

    fn decide(&self, client: Client<'_>, action: Action, applies: impl Fn(&str) -> bool) -> bool {
        let own = match client.username {
            Some(username) => self.users.get(username).map(Vec::as_slice).unwrap_or(&[]),
            None => &self.anonymous,
        };
        let mut allowed = false;
        for rule in own {
            if applies(&rule.filter) {
                if rule.access == Access::Deny {
                    return false;
                }
                allowed |= rule.access.allows(action);
            }
        }
        for rule in &self.patterns {
            let Some(filter) = substitute(&rule.filter, client) else {
                // A name that would widen the pattern: it cannot allow, and
                // a deny pattern cannot be dodged with it.
                if rule.access == Access::Deny {
                    return false;
                }
                continue;
            };
            if applies(&filter) {
                if rule.access == Access::Deny {
                    return false;
                }
                allowed |= rule.access.allows(action);
            }
        }
        allowed
    }
}

fn parse_rule(rest: &str) -> Result<Rule, String> {
    let (access, filter) = match rest.split_once(char::is_whitespace) {
        Some(("read", filter)) => (Access::Read, filter),
        Some(("write", filter)) => (Access::Write, filter),
        Some(("readwrite", filter)) => (Access::ReadWrite, filter),
        Some(("deny", filter)) => (Access::Deny, filter),
        None if matches!(rest, "read" | "write" | "readwrite" | "deny") => {
            return Err(format!("`{rest}` needs a topic after it"));
        }
        _ => (Access::ReadWrite, rest),
    };
    let filter = filter.trim();
    if filter.is_empty() {
        return Err("a rule needs a topic".to_owned());
    }
    crate::protocol::TopicFilter::new(filter)
        .map_err(|error| format!("`{filter}` is not a topic filter: {error}"))?;
    Ok(Rule {
        access,
        filter: filter.to_owned(),
    })
}

/// A pattern's filter for `client`: `%c` the client id, `%u` the user name.
/// None when it names the user name and the client has none, or when a
/// substituted value would add wildcards or levels (a client id `+` must
/// not widen a pattern).
fn substitute<'a>(filter: &'a str, client: Client<'_>) -> Option<Cow<'a, str>> {
    if !filter.contains('%') {
        return Some(Cow::Borrowed(filter));
    }
    let unsafe_value = |value: &str| value.contains(['+', '#', '/']);
    if unsafe_value(client.client_id) && filter.contains("%c") {
        return None;
    }
    let mut result = filter.replace("%c", client.client_id);
    if result.contains("%u") {
        let username = client.username?;
        if unsafe_value(username) {
            return None;
        }
        result = result.replace("%u", username);
    }
    Some(Cow::Owned(result))
}

/// Whether every topic `filter` can match is matched by `rule`.
fn covers(rule: &str, filter: &str) -> bool {
    let mut rule_levels = rule.split('/');
    let mut filter_levels = filter.split('/');
    loop {
        match (rule_levels.next(), filter_levels.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(level)) if level != "#" => {}
            (Some(r), Some(f)) if r == f && f != "+" && f != "#" => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "\
# anonymous clients may only read the status of things
topic read status/#

user alice
topic readwrite home/#
topic deny home/secret
topic write alerts

user bob
topic sensors/#

pattern readwrite devices/%c/#
pattern write users/%u/inbox
";

    fn alice() -> Client<'static> {
        Client {
            username: Some("alice"),
            client_id: "phone",
        }
    }

    #[test]
    fn rules_by_user_with_deny_winning() {
        let acl = Acl::parse(FILE).unwrap();
        assert!(acl.allows(alice(), "home/kitchen", Action::Write));
        assert!(acl.allows(alice(), "home/kitchen", Action::Read));
        assert!(!acl.allows(alice(), "home/secret", Action::Read));
        assert!(acl.allows(alice(), "alerts", Action::Write));
        assert!(!acl.allows(alice(), "alerts", Action::Read));
        assert!(
            !acl.allows(alice(), "status/x", Action::Read),
            "anonymous rules are not alice's"
        );
        let anonymous = Client {
            username: None,
            client_id: "c",
        };
        assert!(acl.allows(anonymous, "status/x", Action::Read));
        assert!(!acl.allows(anonymous, "status/x", Action::Write));
        let bob = Client {
            username: Some("bob"),
            client_id: "b",
        };
        assert!(
            acl.allows(bob, "sensors/t", Action::Write),
            "no access word: readwrite"
        );
        assert!(!acl.allows(bob, "home/kitchen", Action::Read));
        let stranger = Client {
            username: Some("eve"),
            client_id: "e",
        };
        assert!(!acl.allows(stranger, "sensors/t", Action::Read));
    }

    #[test]
    fn patterns_substitute_client_id_and_user_name() {
        let acl = Acl::parse(FILE).unwrap();
        assert!(acl.allows(alice(), "devices/phone/battery", Action::Write));
        assert!(!acl.allows(alice(), "devices/laptop/battery", Action::Write));
        assert!(acl.allows(alice(), "users/alice/inbox", Action::Write));
        let anonymous = Client {
            username: None,
            client_id: "phone",
        };
        assert!(!acl.allows(anonymous, "users/alice/inbox", Action::Write));
        let sneaky = Client {
            username: Some("alice"),
            client_id: "+",
        };
        assert!(!acl.allows(sneaky, "devices/other/x", Action::Write));
        // A deny pattern is not dodged by a client id it cannot hold.
        let guarded =
            Acl::parse("topic readwrite devices/#\npattern deny devices/%c/config\n").unwrap();
        let slashed = Client {
            username: None,
            client_id: "a/b",
        };
        assert!(!guarded.allows(slashed, "devices/a/b/config", Action::Write));
        assert!(Acl::parse("topic deny\n")
            .unwrap_err()
            .contains("needs a topic"));
    }

    #[test]
    fn subscriptions_must_be_covered_by_a_read_rule() {
        let acl = Acl::parse(FILE).unwrap();
        assert!(acl.allows_subscription(alice(), "home/#"));
        assert!(acl.allows_subscription(alice(), "home/+/light"));
        assert!(!acl.allows_subscription(alice(), "#"));
        assert!(!acl.allows_subscription(alice(), "+/kitchen"));
        assert!(!acl.allows_subscription(alice(), "home/secret"));
        assert!(!acl.allows_subscription(alice(), "alerts"), "write only");
    }

    #[test]
    fn bad_lines_are_named() {
        assert!(Acl::parse("topic\n").unwrap_err().contains("line 1"));
        assert!(Acl::parse("\nfoo bar\n").unwrap_err().contains("line 2"));
        assert!(Acl::parse("topic read a/#/b\n")
            .unwrap_err()
            .contains("line 1"));
    }
}
