//! Topic name and topic filter rules (MQTT 3.1.1 §4.7, 5.0 §4.7 and §4.8.2): validation,
//! matching, and the "does one filter lie within another" test used by access rules.

/// Longest topic name or filter: the length prefix of an MQTT string is 16 bits.
const MAX_LEN: usize = 65_535;

const SHARE_PREFIX: &str = "$share/";

/// 1..=65535 bytes, no '+' or '#', no U+0000.
pub fn valid_topic_name(topic: &str) -> bool {
    (1..=MAX_LEN).contains(&topic.len()) && !topic.contains(['+', '#', '\0'])
}

/// Non-empty, ≤65535 bytes, no U+0000; '#' only as the whole last level; '+' only as a
/// whole level. "$share/{group}/{filter}": group non-empty without '+', '#', '/'; inner
/// filter valid and non-empty.
pub fn valid_topic_filter(filter: &str) -> bool {
    if filter.is_empty() || filter.len() > MAX_LEN || filter.contains('\0') {
        return false;
    }
    match filter.strip_prefix(SHARE_PREFIX) {
        Some(rest) => match rest.split_once('/') {
            Some((group, inner)) => {
                !group.is_empty()
                    && !group.contains(['+', '#'])
                    && !inner.is_empty()
                    && valid_levels(inner)
            }
            None => false,
        },
        None => valid_levels(filter),
    }
}

/// Wildcards only as whole levels, '#' only last.
fn valid_levels(filter: &str) -> bool {
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        let ok = match level {
            "#" => levels.peek().is_none(),
            "+" => true,
            _ => !level.contains(['+', '#']),
        };
        if !ok {
            return false;
        }
    }
    true
}

/// For a "$share/group/filter" returns Some(("group", "filter")); None for a non-shared
/// filter. (Assumes a filter already validated.)
pub fn split_shared(filter: &str) -> Option<(&str, &str)> {
    filter.strip_prefix(SHARE_PREFIX)?.split_once('/')
}

/// Whether `topic` is in the `$SYS` tree, which only the broker publishes to (`sys`).
pub fn is_sys(topic: &str) -> bool {
    topic == "$SYS" || topic.starts_with("$SYS/")
}

/// Wildcards at the first level do not reach topics starting with '$' (§4.7.2), so that
/// a '#' subscriber does not see `$SYS` and the like.
fn dollar_blocked(first_filter_level: &str, topic: &str) -> bool {
    topic.starts_with('$') && matches!(first_filter_level, "+" | "#")
}

/// Does `filter` (not a $share one) match `topic`? Topics starting with '$' are not
/// matched by a filter starting with '+' or '#' (but "$SYS/#" matches "$SYS/x", "$SYS/up"
/// matches itself). "sport/#" matches "sport"; "+" matches "" levels e.g. "+/+" matches "/".
pub fn matches(filter: &str, topic: &str) -> bool {
    let first = filter.split('/').next().unwrap_or_default();
    if dollar_blocked(first, topic) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            // '#' also matches the parent level: "sport/#" matches "sport".
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(fl), Some(tl)) if fl == tl => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// For access rules on SUBSCRIBE: does rule filter `rule` cover every topic that `filter`
/// could match? Level by level: rule '#' covers the rest; rule '+' covers any one level
/// including a '+'; a literal level in the rule covers only that literal; filter '#' is
/// covered only by rule '#'. The '$' rule of [`matches`] holds here too: a rule starting
/// with a wildcard does not cover a filter whose first level starts with '$', because it
/// would not match the topics that filter matches.
pub fn filter_covers(rule: &str, filter: &str) -> bool {
    let first = rule.split('/').next().unwrap_or_default();
    if dollar_blocked(first, filter) {
        return false;
    }
    let mut r = rule.split('/');
    let mut f = filter.split('/');
    loop {
        match (r.next(), f.next()) {
            (Some("#"), _) => return true,
            (Some(_), Some("#")) => return false,
            (Some("+"), Some(_)) => {}
            (Some(rl), Some(fl)) if rl == fl => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sys_tree() {
        for yes in ["$SYS", "$SYS/broker/uptime", "$SYS/"] {
            assert!(is_sys(yes), "{yes}");
        }
        for no in ["$SYSTEM/x", "SYS/x", "a/$SYS/x", "$share/g/x", "$sys/x", ""] {
            assert!(!is_sys(no), "{no}");
        }
        // §4.7.2: wildcards at the first level do not reach it.
        for filter in ["#", "+/broker/uptime", "+/#", "+/+/+"] {
            assert!(!matches(filter, "$SYS/broker/uptime"), "{filter}");
        }
        for filter in ["$SYS/#", "$SYS/+/uptime", "$SYS/broker/uptime"] {
            assert!(matches(filter, "$SYS/broker/uptime"), "{filter}");
        }
    }
    use proptest::prelude::*;

    #[test]
    fn topic_names() {
        for ok in ["a", "/", "a/b", "a//b", "$SYS/x", " ", "ü/€"] {
            assert!(valid_topic_name(ok), "{ok:?}");
        }
        for bad in ["", "a/+", "#", "a/b#", "a\0b"] {
            assert!(!valid_topic_name(bad), "{bad:?}");
        }
        assert!(valid_topic_name(&"x".repeat(65_535)));
        assert!(!valid_topic_name(&"x".repeat(65_536)));
    }

    #[test]
    fn topic_filters() {
        for ok in [
            "#",
            "+",
            "/",
            "a/#",
            "+/+",
            "a/+/b",
            "/#",
            "$SYS/#",
            "$share",
            "$share/g/a",
            "$share/g/#",
            "$share/g/+/x",
            "$share/g//",
            "$share/g/$share/h/x",
        ] {
            assert!(valid_topic_filter(ok), "{ok:?}");
        }
        for bad in [
            "",
            "a#",
            "#/a",
            "a/#/b",
            "a+",
            "+a/b",
            "a/b+",
            "a\0",
            "$share/",
            "$share/g",
            "$share/g/",
            "$share//a",
            "$share/g+/a",
            "$share/g#/a",
            "$share/g/a#",
        ] {
            assert!(!valid_topic_filter(bad), "{bad:?}");
        }
        assert!(valid_topic_filter(&"x".repeat(65_535)));
        assert!(!valid_topic_filter(&"x".repeat(65_536)));
    }

    #[test]
    fn shared_split() {
        assert_eq!(split_shared("$share/g/a/b"), Some(("g", "a/b")));
        assert_eq!(split_shared("$share/g/#"), Some(("g", "#")));
        assert_eq!(split_shared("a/b"), None);
        assert_eq!(split_shared("$share"), None);
        assert_eq!(split_shared("$shared/g/a"), None);
    }

    #[test]
    fn matching() {
        let yes = [
            ("#", "a"),
            ("#", "a/b/c"),
            ("#", "/"),
            ("a/#", "a"),
            ("a/#", "a/"),
            ("a/#", "a/b/c"),
            ("sport/#", "sport"),
            ("+", ""),
            ("+/+", "/"),
            ("/+", "/"),
            ("+/b", "a/b"),
            ("a/+/c", "a/b/c"),
            ("a/b", "a/b"),
            ("$SYS/#", "$SYS/x"),
            ("$SYS/#", "$SYS"),
            ("$SYS/up", "$SYS/up"),
            ("$SYS/+", "$SYS/up"),
            ("a/+/#", "a/b"),
            ("+/#", "a"),
        ];
        for (f, t) in yes {
            assert!(matches(f, t), "{f:?} should match {t:?}");
        }
        let no = [
            ("a", "a/b"),
            ("a/b", "a"),
            ("+", "a/b"),
            ("+", "/"),
            ("a/+", "a"),
            ("a/+/#", "a"),
            ("#", "$SYS/x"),
            ("#", "$"),
            ("+/up", "$SYS/up"),
            ("+", "$SYS"),
            ("a/b", "a/c"),
            ("a", "A"),
            ("/#", "a"),
        ];
        for (f, t) in no {
            assert!(!matches(f, t), "{f:?} should not match {t:?}");
        }
    }

    #[test]
    fn covering() {
        let yes = [
            ("#", "#"),
            ("#", "a/+/b"),
            ("a/#", "a"),
            ("a/#", "a/#"),
            ("a/#", "a/+/#"),
            ("+", "+"),
            ("+", "a"),
            ("+/b", "+/b"),
            ("a/+", "a/b"),
            ("a/b", "a/b"),
            ("$SYS/#", "$SYS/+"),
        ];
        for (r, f) in yes {
            assert!(filter_covers(r, f), "{r:?} should cover {f:?}");
        }
        let no = [
            ("a", "+"),
            ("a/+", "a/#"),
            ("+", "#"),
            ("+/#", "#"),
            ("a/b", "a"),
            ("a", "a/b"),
            ("a/+/#", "a"),
            ("#", "$SYS/#"),
            ("+/x", "$SYS/x"),
            ("a/b", "a/c"),
        ];
        for (r, f) in no {
            assert!(!filter_covers(r, f), "{r:?} should not cover {f:?}");
        }
    }

    fn level() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec!["a", "b", "$x", "+", "#", ""])
    }

    fn filter() -> impl Strategy<Value = String> {
        prop::collection::vec(level(), 1..5)
            .prop_map(|l| l.join("/"))
            .prop_filter("valid filter", |f| valid_topic_filter(f))
    }

    fn topic() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(vec!["a", "b", "$x", ""]), 1..6)
            .prop_map(|l| l.join("/"))
            .prop_filter("valid topic", |t| valid_topic_name(t))
    }

    proptest! {
        /// A rule that covers a filter matches every topic that filter matches.
        #[test]
        fn covers_is_sound(rule in filter(), f in filter(), t in topic()) {
            if filter_covers(&rule, &f) && matches(&f, &t) {
                prop_assert!(matches(&rule, &t), "{rule:?} covers {f:?} but not {t:?}");
            }
        }

        /// Every filter covers itself and every topic matches itself.
        #[test]
        fn reflexive(f in filter(), t in topic()) {
            prop_assert!(filter_covers(&f, &f));
            prop_assert!(matches(&t, &t));
        }
    }
}
