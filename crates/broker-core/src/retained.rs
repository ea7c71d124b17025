//! The retained-message store: a trie of topic levels, so that a filter with literal
//! leading levels only visits the topics under them.
//!
//! As in the subscription trie, nodes live in one arena and every walk is a loop: a topic
//! may have tens of thousands of levels, which must not overflow the stack.

use std::collections::HashMap;

use crate::arena::Arena;

/// Retained messages by topic; lookup by filter must not scan every topic for filters with
/// literal leading levels (a topic trie).
#[derive(Debug)]
pub struct RetainedStore<M> {
    /// `nodes[ROOT]` is the root; freed slots are reset to empty and listed in `free`.
    nodes: Arena<Node<M>>,
    len: usize,
}

const ROOT: usize = 0;

#[derive(Debug)]
struct Node<M> {
    children: HashMap<Box<str>, usize>,
    /// The full topic is kept with its message, so that matches can be reported without
    /// rebuilding it from the levels.
    msg: Option<(Box<str>, M)>,
}

impl<M> Node<M> {
    fn new() -> Self {
        Node {
            children: HashMap::new(),
            msg: None,
        }
    }
}

/// What remains to match below a node.
#[derive(Clone, Copy)]
enum Rest<'f> {
    /// These filter levels.
    Levels(&'f str),
    /// Nothing: the node itself matches.
    End,
    /// Anything: the node and all its descendants match (a '#').
    All,
}

impl<M: Clone> Default for RetainedStore<M> {
    fn default() -> Self {
        Self::new()
    }
}

impl<M: Clone> RetainedStore<M> {
    pub fn new() -> Self {
        RetainedStore {
            nodes: Arena::new(Node::new()),
            len: 0,
        }
    }

    /// Stores `msg` for `topic`; returns the message it replaces.
    pub fn insert(&mut self, topic: &str, msg: M) -> Option<M> {
        let mut id = ROOT;
        for level in topic.split('/') {
            id = match self.nodes[id].children.get(level) {
                Some(&child) => child,
                None => {
                    let child = self.nodes.alloc(Node::new());
                    self.nodes[id].children.insert(level.into(), child);
                    child
                }
            };
        }
        match &mut self.nodes[id].msg {
            Some((_, old)) => Some(std::mem::replace(old, msg)),
            slot @ None => {
                *slot = Some((topic.into(), msg));
                self.len += 1;
                None
            }
        }
    }

    /// Removes the message of `topic`, and the nodes left without message or children.
    pub fn remove(&mut self, topic: &str) -> Option<M> {
        // The path from the root, to prune it bottom-up afterwards.
        let mut path = Vec::new();
        let mut id = ROOT;
        for level in topic.split('/') {
            let child = *self.nodes[id].children.get(level)?;
            path.push((id, level));
            id = child;
        }
        let (_, old) = self.nodes[id].msg.take()?;
        self.len -= 1;
        for (parent, level) in path.into_iter().rev() {
            let node = &self.nodes[id];
            if node.msg.is_some() || !node.children.is_empty() {
                break;
            }
            self.nodes[parent].children.remove(level);
            // Resetting gives the child map's memory back; the slot itself is reused.
            self.nodes.release(id, Node::new());
            id = parent;
        }
        Some(old)
    }

    pub fn get(&self, topic: &str) -> Option<&M> {
        let mut id = ROOT;
        for level in topic.split('/') {
            id = *self.nodes[id].children.get(level)?;
        }
        self.nodes[id].msg.as_ref().map(|(_, m)| m)
    }

    /// Every retained (topic, msg) matching `filter` (not a $share filter;
    /// `topic::matches` semantics incl. the $ rule).
    pub fn for_each_match(&self, filter: &str, mut f: impl FnMut(&str, &M)) {
        let mut stack = vec![(ROOT, Rest::Levels(filter))];
        while let Some((id, rest)) = stack.pop() {
            let node = &self.nodes[id];
            // Wildcards at the first level do not match topics starting with '$'.
            let reachable = |name: &str| id != ROOT || !name.starts_with('$');
            let levels = match rest {
                Rest::Levels(levels) => levels,
                Rest::End => {
                    report(node, &mut f);
                    continue;
                }
                Rest::All => {
                    report(node, &mut f);
                    for (name, &child) in &node.children {
                        if reachable(name) {
                            stack.push((child, Rest::All));
                        }
                    }
                    continue;
                }
            };
            let (level, tail) = match levels.split_once('/') {
                Some((level, tail)) => (level, Rest::Levels(tail)),
                None => (levels, Rest::End),
            };
            match level {
                "#" => stack.push((id, Rest::All)),
                "+" => {
                    for (name, &child) in &node.children {
                        if reachable(name) {
                            stack.push((child, tail));
                        }
                    }
                }
                _ => {
                    if let Some(&child) = node.children.get(level) {
                        stack.push((child, tail));
                    }
                }
            }
        }
    }

    /// Number of retained messages.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

fn report<M>(node: &Node<M>, f: &mut impl FnMut(&str, &M)) {
    if let Some((topic, msg)) = &node.msg {
        f(topic, msg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn matching(store: &RetainedStore<u32>, filter: &str) -> Vec<String> {
        let mut found = Vec::new();
        store.for_each_match(filter, |t, _| found.push(t.to_owned()));
        found.sort();
        found
    }

    #[test]
    fn insert_get_remove() {
        let mut store = RetainedStore::new();
        assert_eq!(store.insert("a/b", 1), None);
        assert_eq!(store.insert("a/b", 2), Some(1));
        assert_eq!(store.insert("a", 3), None);
        assert_eq!(store.len(), 2);
        assert_eq!(store.get("a/b"), Some(&2));
        assert_eq!(store.get("a/b/c"), None);
        assert_eq!(store.get("b"), None);
        assert_eq!(store.remove("a/b/c"), None);
        assert_eq!(store.remove("a/b"), Some(2));
        assert_eq!(store.remove("a/b"), None);
        // "a" keeps its node; "b" is gone.
        assert_eq!(store.nodes.live(), 2);
        assert_eq!(store.remove("a"), Some(3));
        assert!(store.is_empty());
        assert_eq!(store.nodes.live(), 1);
    }

    #[test]
    fn filters() {
        let mut store = RetainedStore::new();
        for (i, t) in [
            "a", "a/b", "a/b/c", "a/c", "/", "/x", "b", "$SYS/up", "a/$x",
        ]
        .iter()
        .enumerate()
        {
            store.insert(t, i as u32);
        }
        assert_eq!(
            matching(&store, "#"),
            ["/", "/x", "a", "a/$x", "a/b", "a/b/c", "a/c", "b"]
        );
        assert_eq!(
            matching(&store, "a/#"),
            ["a", "a/$x", "a/b", "a/b/c", "a/c"]
        );
        assert_eq!(matching(&store, "a/+"), ["a/$x", "a/b", "a/c"]);
        assert_eq!(matching(&store, "+"), ["a", "b"]);
        assert_eq!(matching(&store, "+/+"), ["/", "/x", "a/$x", "a/b", "a/c"]);
        assert_eq!(matching(&store, "+/#"), matching(&store, "#"));
        assert_eq!(matching(&store, "a/b"), ["a/b"]);
        assert_eq!(matching(&store, "$SYS/#"), ["$SYS/up"]);
        assert_eq!(matching(&store, "$SYS/+"), ["$SYS/up"]);
        assert!(matching(&store, "x/#").is_empty());
    }

    #[test]
    fn deep_topics_do_not_overflow() {
        let mut store = RetainedStore::new();
        let deep = vec!["x"; 40_000].join("/");
        store.insert(&deep, 1);
        assert_eq!(matching(&store, "#"), vec![deep.clone()]);
        assert_eq!(
            matching(&store, &vec!["+"; 40_000].join("/")),
            vec![deep.clone()]
        );
        assert_eq!(store.remove(&deep), Some(1));
        assert_eq!(store.nodes.live(), 1);
        store.insert(&deep, 1);
        drop(store);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(String, u32),
        Remove(String),
    }

    fn topic() -> impl Strategy<Value = String> {
        let level = prop::sample::select(vec!["a", "b", "$x", ""]);
        prop::collection::vec(level, 1..5)
            .prop_map(|l| l.join("/"))
            .prop_filter("valid topic", |t| topic::valid_topic_name(t))
    }

    fn filter() -> impl Strategy<Value = String> {
        let level = prop::sample::select(vec!["a", "b", "$x", "+", ""]);
        (prop::collection::vec(level, 0..5), any::<bool>())
            .prop_map(|(mut levels, hash)| {
                if hash || levels.is_empty() {
                    levels.push("#");
                }
                levels.join("/")
            })
            .prop_filter("valid filter", |f| topic::valid_topic_filter(f))
    }

    proptest! {
        #[test]
        fn agrees_with_naive_scan(
            ops in prop::collection::vec(
                prop_oneof![
                    2 => (topic(), any::<u32>()).prop_map(|(t, m)| Op::Insert(t, m)),
                    1 => topic().prop_map(Op::Remove),
                ],
                0..60,
            ),
            filters in prop::collection::vec(filter(), 1..10),
        ) {
            let mut store = RetainedStore::new();
            let mut model = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Insert(t, m) => prop_assert_eq!(store.insert(&t, m), model.insert(t, m)),
                    Op::Remove(t) => prop_assert_eq!(store.remove(&t), model.remove(&t)),
                }
                prop_assert_eq!(store.len(), model.len());
            }
            for (t, m) in &model {
                prop_assert_eq!(store.get(t), Some(m));
            }
            for f in &filters {
                let mut got = Vec::new();
                store.for_each_match(f, |t, m| got.push((t.to_owned(), *m)));
                got.sort();
                let expected: Vec<_> = model
                    .iter()
                    .filter(|(t, _)| topic::matches(f, t))
                    .map(|(t, m)| (t.clone(), *m))
                    .collect();
                prop_assert_eq!(got, expected, "filter {:?}", f);
            }
            let topics: Vec<_> = model.keys().cloned().collect();
            for t in topics {
                prop_assert!(store.remove(&t).is_some());
            }
            prop_assert_eq!(store.nodes.live(), 1);
        }
    }
}
