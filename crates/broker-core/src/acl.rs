//! Publish / subscribe access rules: the first rule that applies decides, no rule allows.
//!
//! A rule's topic may hold `%c` and `%u`, replaced by the client's id and username
//! before matching (Mosquitto's patterns), so that one rule gives each device its own
//! subtree: `devices/%c/#`. An id or username holding `+`, `#` or `/` would widen that
//! subtree (`devices/+/#`, `devices/a/b/#`), and so would an empty one: with such a
//! value an allow rule does not apply and a deny rule applies, whatever the topic. A
//! rule with `%u` does not apply to a client without a username.

use std::borrow::Cow;

use crate::config::{AclAction, AclRule, Permission};
use crate::topic;

/// The configured rules, in order.
#[derive(Debug, Clone, Default)]
pub struct Acl {
    rules: Vec<AclRule>,
}

impl Acl {
    /// `rules` have valid topic filters (`Config::validate`).
    pub fn new(rules: Vec<AclRule>) -> Acl {
        Acl { rules }
    }

    /// No rules: everything is allowed, and callers may skip the checks.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// First rule whose action is publish/all, whose client_id/username (if set) equal the
    /// client's, and whose topic filter matches `topic`, decides. No rule: allowed.
    pub fn can_publish(&self, client_id: &str, username: Option<&str>, topic: &str) -> bool {
        self.decide(AclAction::Publish, client_id, username, |rule| {
            topic::matches(rule, topic)
        })
    }

    /// Same with subscribe/all rules, using `filter_covers(rule.topic, filter)`; `filter`
    /// is the inner filter of a $share subscription.
    pub fn can_subscribe(&self, client_id: &str, username: Option<&str>, filter: &str) -> bool {
        self.decide(AclAction::Subscribe, client_id, username, |rule| {
            topic::filter_covers(rule, filter)
        })
    }

    /// Subscribe rules applied to a concrete topic at delivery time, so that a subscriber
    /// to a broad filter (which no deny rule covers as a whole) still does not receive the
    /// topics a deny-subscribe rule matches.
    pub fn can_receive(&self, client_id: &str, username: Option<&str>, topic: &str) -> bool {
        self.decide(AclAction::Subscribe, client_id, username, |rule| {
            topic::matches(rule, topic)
        })
    }

    /// The permission of the first rule for `action` (or all) that applies to the client
    /// and whose topic satisfies `hits`; allowed when there is none.
    fn decide(
        &self,
        action: AclAction,
        client_id: &str,
        username: Option<&str>,
        hits: impl Fn(&str) -> bool,
    ) -> bool {
        let first = self.rules.iter().find(|rule| {
            (rule.action == action || rule.action == AclAction::All)
                && condition_holds(rule.client_id.as_deref(), Some(client_id))
                && condition_holds(rule.username.as_deref(), username)
                && match substitute(&rule.topic, client_id, username) {
                    Substituted::Topic(topic) => hits(&topic),
                    Substituted::NoUser => false,
                    Substituted::Unsafe => rule.permission == Permission::Deny,
                }
        });
        match first {
            Some(rule) => rule.permission == Permission::Allow,
            None => true,
        }
    }
}

/// A rule's topic with `%c` / `%u` replaced.
#[derive(Debug, PartialEq, Eq)]
enum Substituted<'a> {
    Topic(Cow<'a, str>),
    /// The topic has `%u` and the client has no username.
    NoUser,
    /// A value would add levels or wildcards, or is empty.
    Unsafe,
}

fn substitute<'a>(pattern: &'a str, client_id: &str, username: Option<&str>) -> Substituted<'a> {
    if !pattern.contains('%') {
        return Substituted::Topic(Cow::Borrowed(pattern));
    }
    let unsafe_value = |v: &str| v.is_empty() || v.contains(['+', '#', '/']);
    if pattern.contains("%c") && unsafe_value(client_id) {
        return Substituted::Unsafe;
    }
    let username = match username {
        _ if !pattern.contains("%u") => "",
        None => return Substituted::NoUser,
        Some(u) if unsafe_value(u) => return Substituted::Unsafe,
        Some(u) => u,
    };
    // One pass, so that a value holding "%u" or "%c" is not read as a placeholder.
    let mut topic = String::with_capacity(pattern.len() + client_id.len() + username.len());
    let mut rest = pattern;
    while let Some(at) = rest.find('%') {
        topic.push_str(&rest[..at]);
        let tail = &rest[at..];
        let (value, skip) = match tail.as_bytes().get(1) {
            Some(b'c') => (client_id, 2),
            Some(b'u') => (username, 2),
            _ => ("%", 1),
        };
        topic.push_str(value);
        rest = &tail[skip..];
    }
    topic.push_str(rest);
    Substituted::Topic(Cow::Owned(topic))
}

/// A rule's client id / username condition: absent holds for everyone (also clients
/// without a username), present only for that exact value.
fn condition_holds(condition: Option<&str>, value: Option<&str>) -> bool {
    match condition {
        None => true,
        Some(wanted) => Some(wanted) == value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(permission: Permission, action: AclAction, topic: &str) -> AclRule {
        AclRule {
            permission,
            action,
            topic: topic.into(),
            client_id: None,
            username: None,
        }
    }

    use AclAction::{All, Publish, Subscribe};
    use Permission::{Allow, Deny};

    #[test]
    fn no_rules_allow_everything() {
        let acl = Acl::new(Vec::new());
        assert!(acl.is_empty());
        assert!(acl.can_publish("c", None, "a/b"));
        assert!(acl.can_subscribe("c", None, "#"));
        assert!(acl.can_receive("c", None, "a/b"));
    }

    #[test]
    fn first_matching_rule_decides() {
        let acl = Acl::new(vec![
            rule(Allow, Publish, "public/open"),
            rule(Deny, All, "public/#"),
            rule(Deny, Publish, "#"),
        ]);
        assert!(!acl.is_empty());
        assert!(acl.can_publish("c", None, "public/open"));
        assert!(!acl.can_publish("c", None, "public/other"));
        assert!(!acl.can_publish("c", None, "public"));
        assert!(!acl.can_publish("c", None, "elsewhere"));
        // The '#' rule does not reach '$' topics.
        assert!(acl.can_publish("c", None, "$SYS/x"));
        // The publish-only allow rule does not apply to subscriptions.
        assert!(!acl.can_subscribe("c", None, "public/open"));
        assert!(acl.can_subscribe("c", None, "elsewhere/#"));
    }

    #[test]
    fn client_and_user_conditions() {
        let mut admin = rule(Allow, All, "#");
        admin.username = Some("admin".into());
        let mut sensor = rule(Allow, Publish, "sensors/+");
        sensor.client_id = Some("sensor-1".into());
        let acl = Acl::new(vec![admin, sensor, rule(Deny, All, "#")]);
        assert!(acl.can_publish("x", Some("admin"), "any/thing"));
        assert!(acl.can_subscribe("x", Some("admin"), "#"));
        assert!(!acl.can_publish("x", Some("bob"), "any/thing"));
        assert!(!acl.can_publish("x", None, "sensors/t"));
        assert!(acl.can_publish("sensor-1", None, "sensors/t"));
        assert!(acl.can_publish("sensor-1", Some("bob"), "sensors/t"));
        assert!(!acl.can_publish("sensor-1", None, "sensors/t/x"));
        assert!(!acl.can_subscribe("sensor-1", None, "sensors/t"));
    }

    #[test]
    fn placeholders_are_replaced() {
        let t = |p, c, u| substitute(p, c, u);
        let topic = |s: &str| Substituted::Topic(Cow::Owned(s.to_string()));
        assert_eq!(
            t("a/b", "x", None),
            Substituted::Topic(Cow::Borrowed("a/b"))
        );
        assert_eq!(t("d/%c/#", "dev-1", None), topic("d/dev-1/#"));
        assert_eq!(t("u/%u/%c", "c", Some("bob")), topic("u/bob/c"));
        assert_eq!(t("x%c%%u", "c", Some("u")), topic("xc%u"));
        assert_eq!(t("100%", "c", None), topic("100%"));
        // Values are not read as placeholders.
        assert_eq!(t("%c/%u", "%u", Some("%c")), topic("%u/%c"));
        assert_eq!(t("u/%u", "c", None), Substituted::NoUser);
        for bad in ["a/b", "+", "#", "a#", ""] {
            assert_eq!(t("d/%c/#", bad, None), Substituted::Unsafe, "{bad:?}");
            assert_eq!(t("u/%u", "c", Some(bad)), Substituted::Unsafe, "{bad:?}");
        }
    }

    #[test]
    fn each_device_gets_its_own_subtree() {
        let acl = Acl::new(vec![
            rule(Allow, All, "devices/%c/#"),
            rule(Allow, Subscribe, "users/%u/inbox"),
            rule(Deny, All, "private/%c"),
            rule(Deny, All, "#"),
        ]);
        assert!(acl.can_publish("d1", None, "devices/d1/temp"));
        assert!(acl.can_subscribe("d1", None, "devices/d1/#"));
        assert!(!acl.can_publish("d1", None, "devices/d2/temp"));
        assert!(!acl.can_subscribe("d1", None, "devices/+/temp"));
        assert!(acl.can_subscribe("c", Some("bob"), "users/bob/inbox"));
        assert!(!acl.can_subscribe("c", Some("bob"), "users/eve/inbox"));
        assert!(!acl.can_subscribe("c", None, "users/bob/inbox"));
        // Ids and names with wildcards or levels get nothing from the pattern rules.
        assert!(!acl.can_publish("+", None, "devices/x/temp"));
        assert!(!acl.can_publish("d1/x", None, "devices/d1/x/temp"));
        assert!(!acl.can_subscribe("c", Some("#"), "users/#"));
        // A deny pattern applies to them whatever the topic, before the allow rules.
        let acl = Acl::new(vec![rule(Deny, All, "private/%c"), rule(Allow, All, "#")]);
        assert!(!acl.can_publish("a/b", None, "public/x"));
        assert!(acl.can_publish("ab", None, "public/x"));
        assert!(!acl.can_publish("ab", None, "private/ab"));
    }

    #[test]
    fn subscribe_uses_filter_coverage() {
        let acl = Acl::new(vec![
            rule(Allow, Subscribe, "a/+"),
            rule(Deny, Subscribe, "#"),
        ]);
        assert!(acl.can_subscribe("c", None, "a/b"));
        assert!(acl.can_subscribe("c", None, "a/+"));
        // "a/#" also matches "a/b/c", which "a/+" does not allow.
        assert!(!acl.can_subscribe("c", None, "a/#"));
        assert!(!acl.can_subscribe("c", None, "b"));
    }

    #[test]
    fn receive_checks_the_topic() {
        let acl = Acl::new(vec![
            rule(Deny, Subscribe, "secret/+"),
            rule(Allow, Publish, "#"),
        ]);
        // No deny rule covers '#' as a whole, so the subscription is accepted...
        assert!(acl.can_subscribe("c", None, "#"));
        assert!(acl.can_subscribe("c", None, "secret/#"));
        assert!(!acl.can_subscribe("c", None, "secret/x"));
        // ...but delivery filters out the topics the deny rule matches.
        assert!(!acl.can_receive("c", None, "secret/x"));
        assert!(acl.can_receive("c", None, "secret/x/y"));
        assert!(acl.can_receive("c", None, "public"));
    }
}
