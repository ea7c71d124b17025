//! The subscription trie: one node per filter level, with separate `+` and `#` children, so
//! that matching a topic costs the number of trie paths it can follow, not the number of
//! filters.
//!
//! Nodes live in one arena (`Vec`) and refer to each other by index. Every walk is a loop
//! with an explicit stack, and dropping the tree frees one flat `Vec`: a client may send a
//! filter of tens of thousands of levels ("+/+/+/…"), which must not overflow the stack of
//! the task that handles it.

use std::collections::HashMap;

use crate::arena::Arena;
use std::hash::Hash;
use std::sync::atomic::AtomicUsize;

use crate::topic;

/// A subscription found by [`SubscriptionTree::for_each_match`].
#[derive(Debug)]
pub enum Match<'a, K, V> {
    /// A normal subscription that matches.
    Direct {
        filter: &'a str,
        key: &'a K,
        value: &'a V,
    },
    /// A matching shared group: the caller picks ONE member, round-robin with `cursor`
    /// (fetch_add), preferring members that can take the message.
    Shared {
        group: &'a str,
        filter: &'a str,
        members: &'a [(K, V)],
        cursor: &'a AtomicUsize,
    },
}

/// Subscriptions of keys `K` (client ids) with values `V` (subscription options), indexed
/// by filter.
#[derive(Debug)]
pub struct SubscriptionTree<K, V> {
    /// `nodes[ROOT]` is the root; freed slots are reset to empty and listed in `free`.
    nodes: Arena<Node<K, V>>,
    /// Number of (filter, key) pairs.
    len: usize,
}

const ROOT: usize = 0;

#[derive(Debug)]
struct Node<K, V> {
    children: HashMap<Box<str>, usize>,
    plus: Option<usize>,
    hash: Option<usize>,
    /// Boxed so that the many interior nodes without subscribers stay small.
    subs: Option<Box<Subs<K, V>>>,
}

/// The subscriptions whose (inner) filter ends at one node.
#[derive(Debug)]
struct Subs<K, V> {
    /// That filter, stored once for every subscriber of the node.
    filter: Box<str>,
    direct: HashMap<K, V>,
    /// Few groups per filter, so a list is enough.
    shared: Vec<Group<K, V>>,
}

#[derive(Debug)]
struct Group<K, V> {
    name: Box<str>,
    /// A list because `Match::Shared` hands out a slice; groups are small (workers of one
    /// service), so the linear search on insert / remove is cheap.
    members: Vec<(K, V)>,
    cursor: AtomicUsize,
}

impl<K, V> Node<K, V> {
    fn new() -> Self {
        Node {
            children: HashMap::new(),
            plus: None,
            hash: None,
            subs: None,
        }
    }

    fn is_empty(&self) -> bool {
        self.subs.is_none()
            && self.children.is_empty()
            && self.plus.is_none()
            && self.hash.is_none()
    }

    fn child(&self, level: &str) -> Option<usize> {
        match level {
            "+" => self.plus,
            "#" => self.hash,
            _ => self.children.get(level).copied(),
        }
    }

    fn unlink(&mut self, level: &str) {
        match level {
            "+" => self.plus = None,
            "#" => self.hash = None,
            _ => {
                self.children.remove(level);
            }
        }
    }
}

impl<K: Clone + Eq + Hash, V: Clone> Default for SubscriptionTree<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Clone + Eq + Hash, V: Clone> SubscriptionTree<K, V> {
    pub fn new() -> Self {
        SubscriptionTree {
            nodes: Arena::new(Node::new()),
            len: 0,
        }
    }

    /// `filter` is valid, possibly "$share/g/f". Returns the previous value for
    /// (filter, key).
    pub fn insert(&mut self, filter: &str, key: K, value: V) -> Option<V> {
        let (group, inner) = split(filter);
        let mut id = ROOT;
        for level in inner.split('/') {
            id = match self.nodes[id].child(level) {
                Some(child) => child,
                None => {
                    let child = self.nodes.alloc(Node::new());
                    let node = &mut self.nodes[id];
                    match level {
                        "+" => node.plus = Some(child),
                        "#" => node.hash = Some(child),
                        _ => {
                            node.children.insert(level.into(), child);
                        }
                    }
                    child
                }
            };
        }
        let subs = self.nodes[id].subs.get_or_insert_with(|| {
            Box::new(Subs {
                filter: inner.into(),
                direct: HashMap::new(),
                shared: Vec::new(),
            })
        });
        let old = match group {
            None => subs.direct.insert(key, value),
            Some(name) => {
                let group = match subs.shared.iter().position(|g| *g.name == *name) {
                    Some(i) => &mut subs.shared[i],
                    None => {
                        subs.shared.push(Group {
                            name: name.into(),
                            members: Vec::new(),
                            cursor: AtomicUsize::new(0),
                        });
                        subs.shared.last_mut().expect("just pushed")
                    }
                };
                match group.members.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, v)) => Some(std::mem::replace(v, value)),
                    None => {
                        group.members.push((key, value));
                        None
                    }
                }
            }
        };
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Removes (filter, key), and the nodes left without subscribers or children.
    pub fn remove(&mut self, filter: &str, key: &K) -> Option<V> {
        let (group, inner) = split(filter);
        // The path from the root, to prune it bottom-up afterwards.
        let mut path = Vec::new();
        let mut id = ROOT;
        for level in inner.split('/') {
            let child = self.nodes[id].child(level)?;
            path.push((id, level));
            id = child;
        }
        let subs = self.nodes[id].subs.as_mut()?;
        let old = match group {
            None => subs.direct.remove(key)?,
            Some(name) => {
                let g = subs.shared.iter().position(|g| *g.name == *name)?;
                let members = &mut subs.shared[g].members;
                let m = members.iter().position(|(k, _)| k == key)?;
                // Keeps the order, so the round-robin cursor keeps its meaning.
                let (_, v) = members.remove(m);
                if members.is_empty() {
                    subs.shared.swap_remove(g);
                }
                v
            }
        };
        self.len -= 1;
        if subs.direct.is_empty() && subs.shared.is_empty() {
            self.nodes[id].subs = None;
        }
        for (parent, level) in path.into_iter().rev() {
            if !self.nodes[id].is_empty() {
                break;
            }
            self.nodes[parent].unlink(level);
            // Gives the node's child map back now; the slot itself is reused.
            self.nodes.release(id, Node::new());
            id = parent;
        }
        Some(old)
    }

    /// Calls `f` once for every direct subscription and once for every shared group whose
    /// filter matches `topic`.
    pub fn for_each_match<'a>(&'a self, topic: &str, mut f: impl FnMut(Match<'a, K, V>)) {
        // (node, rest of the topic from this node on; None once every level is consumed).
        let mut stack: Vec<(usize, Option<&str>)> = vec![(ROOT, Some(topic))];
        while let Some((id, rest)) = stack.pop() {
            let node = &self.nodes[id];
            let Some(rest) = rest else {
                self.report(id, &mut f);
                // "a/#" also matches "a".
                if let Some(hash) = node.hash {
                    self.report(hash, &mut f);
                }
                continue;
            };
            let (level, tail) = match rest.split_once('/') {
                Some((level, tail)) => (level, Some(tail)),
                None => (rest, None),
            };
            // Wildcards at the first level do not match topics starting with '$'.
            if !(id == ROOT && level.starts_with('$')) {
                if let Some(hash) = node.hash {
                    self.report(hash, &mut f);
                }
                if let Some(plus) = node.plus {
                    stack.push((plus, tail));
                }
            }
            if let Some(&child) = node.children.get(level) {
                stack.push((child, tail));
            }
        }
    }

    /// Number of (filter, key) pairs.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn report<'a>(&'a self, id: usize, f: &mut impl FnMut(Match<'a, K, V>)) {
        let Some(subs) = &self.nodes[id].subs else {
            return;
        };
        let filter = &*subs.filter;
        for (key, value) in &subs.direct {
            f(Match::Direct { filter, key, value });
        }
        for g in &subs.shared {
            f(Match::Shared {
                group: &g.name,
                filter,
                members: &g.members,
                cursor: &g.cursor,
            });
        }
    }
}

/// (group, inner filter) of a filter; no group for a non-shared one.
fn split(filter: &str) -> (Option<&str>, &str) {
    match topic::split_shared(filter) {
        Some((group, inner)) => (Some(group), inner),
        None => (None, filter),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};

    type Tree = SubscriptionTree<u8, u32>;

    /// Direct matches as (filter, key, value), shared as (group, filter, members), sorted.
    #[allow(clippy::type_complexity)]
    fn collect(
        tree: &Tree,
        topic: &str,
    ) -> (
        Vec<(String, u8, u32)>,
        Vec<(String, String, Vec<(u8, u32)>)>,
    ) {
        let mut direct = Vec::new();
        let mut shared = Vec::new();
        tree.for_each_match(topic, |m| match m {
            Match::Direct { filter, key, value } => direct.push((filter.to_owned(), *key, *value)),
            Match::Shared {
                group,
                filter,
                members,
                ..
            } => {
                let mut members = members.to_vec();
                members.sort();
                shared.push((group.to_owned(), filter.to_owned(), members));
            }
        });
        direct.sort();
        shared.sort();
        (direct, shared)
    }

    fn direct_filters(tree: &Tree, topic: &str) -> Vec<String> {
        collect(tree, topic)
            .0
            .into_iter()
            .map(|(f, _, _)| f)
            .collect()
    }

    #[test]
    fn wildcards() {
        let mut tree = Tree::new();
        for (i, f) in ["a/b", "a/+", "a/#", "#", "+/b", "+", "+/+", "a/b/c", "/+"]
            .iter()
            .enumerate()
        {
            assert_eq!(tree.insert(f, i as u8, 0), None);
        }
        assert_eq!(tree.len(), 9);
        assert_eq!(
            direct_filters(&tree, "a/b"),
            ["#", "+/+", "+/b", "a/#", "a/+", "a/b"]
        );
        assert_eq!(direct_filters(&tree, "a"), ["#", "+", "a/#"]);
        assert_eq!(direct_filters(&tree, "/"), ["#", "+/+", "/+"]);
        assert_eq!(direct_filters(&tree, "a/b/c"), ["#", "a/#", "a/b/c"]);
        assert_eq!(direct_filters(&tree, "x/y/z"), ["#"]);
    }

    #[test]
    fn dollar_topics() {
        let mut tree = Tree::new();
        for f in ["#", "+/up", "+", "$SYS/#", "$SYS/up", "$SYS/+", "a/$SYS"] {
            tree.insert(f, 1, 0);
        }
        assert_eq!(
            direct_filters(&tree, "$SYS/up"),
            ["$SYS/#", "$SYS/+", "$SYS/up"]
        );
        assert_eq!(direct_filters(&tree, "$SYS"), ["$SYS/#"]);
        // '$' only matters at the first level.
        assert_eq!(direct_filters(&tree, "a/$SYS"), ["#", "a/$SYS"]);
    }

    #[test]
    fn insert_replaces_and_remove_prunes() {
        let mut tree = Tree::new();
        assert_eq!(tree.insert("a/+/c", 1, 10), None);
        assert_eq!(tree.insert("a/+/c", 1, 11), Some(10));
        assert_eq!(tree.insert("a/+/c", 2, 20), None);
        assert_eq!(tree.insert("$share/g/a/+/c", 1, 30), None);
        assert_eq!(tree.insert("$share/g/a/+/c", 1, 31), Some(30));
        assert_eq!(tree.len(), 3);
        assert_eq!(tree.remove("a/+/c", &3), None);
        assert_eq!(tree.remove("a/+", &1), None);
        assert_eq!(tree.remove("a/+/c/d", &1), None);
        assert_eq!(tree.remove("$share/h/a/+/c", &1), None);
        assert_eq!(tree.remove("a/+/c", &1), Some(11));
        assert_eq!(tree.remove("a/+/c", &1), None);
        assert_eq!(tree.remove("$share/g/a/+/c", &1), Some(31));
        assert_eq!(tree.nodes.live(), 4);
        assert_eq!(tree.remove("a/+/c", &2), Some(20));
        assert!(tree.is_empty());
        assert_eq!(tree.nodes.live(), 1);
        // Freed nodes are reused.
        tree.insert("x/y", 1, 0);
        assert_eq!(tree.nodes.slots(), 4);
    }

    #[test]
    fn shared_groups() {
        let mut tree = Tree::new();
        tree.insert("$share/g/a/+", 1, 0);
        tree.insert("$share/g/a/+", 2, 0);
        tree.insert("$share/h/a/+", 3, 0);
        tree.insert("$share/g/a/b", 4, 0);
        tree.insert("a/+", 5, 0);
        let (direct, shared) = collect(&tree, "a/b");
        assert_eq!(direct, [("a/+".to_owned(), 5, 0)]);
        let groups: Vec<_> = shared
            .iter()
            .map(|(g, f, m)| (g.as_str(), f.as_str(), m.len()))
            .collect();
        assert_eq!(groups, [("g", "a/+", 2), ("g", "a/b", 1), ("h", "a/+", 1)]);
        // Removing a member keeps the others in order, and the last one drops the group.
        tree.remove("$share/g/a/+", &1);
        tree.remove("$share/h/a/+", &3);
        let (_, shared) = collect(&tree, "a/x");
        assert_eq!(shared, [("g".to_owned(), "a/+".to_owned(), vec![(2, 0)])]);
    }

    #[test]
    fn deep_filters_do_not_overflow() {
        let mut tree = Tree::new();
        let deep = vec!["+"; 40_000].join("/");
        let topic = vec!["x"; 40_000].join("/");
        tree.insert(&deep, 1, 0);
        tree.insert(&format!("{deep}/#"), 2, 0);
        assert_eq!(collect(&tree, &topic).0.len(), 2);
        tree.remove(&deep, &1);
        tree.remove(&format!("{deep}/#"), &2);
        assert_eq!(tree.nodes.live(), 1);
        tree.insert(&deep, 1, 0);
        drop(tree);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(String, u8, u32),
        Remove(String, u8),
        /// Removes an existing subscription, picked by index.
        RemoveExisting(prop::sample::Index),
    }

    fn filter() -> impl Strategy<Value = String> {
        let level = prop::sample::select(vec!["a", "b", "$x", "+", ""]);
        let body = prop::collection::vec(level, 0..4);
        let group = prop::option::weighted(0.3, prop::sample::select(vec!["g1", "g2"]));
        (body, any::<bool>(), group)
            .prop_map(|(mut levels, hash, group)| {
                if hash || levels.is_empty() {
                    levels.push("#");
                }
                let f = levels.join("/");
                match group {
                    Some(g) => format!("$share/{g}/{f}"),
                    None => f,
                }
            })
            .prop_filter("valid filter", |f| topic::valid_topic_filter(f))
    }

    fn topic() -> impl Strategy<Value = String> {
        let level = prop::sample::select(vec!["a", "b", "$x", ""]);
        prop::collection::vec(level, 1..5)
            .prop_map(|l| l.join("/"))
            .prop_filter("valid topic", |t| topic::valid_topic_name(t))
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (filter(), 0..4u8, any::<u32>()).prop_map(|(f, k, v)| Op::Insert(f, k, v)),
            1 => (filter(), 0..4u8).prop_map(|(f, k)| Op::Remove(f, k)),
            2 => any::<prop::sample::Index>().prop_map(Op::RemoveExisting),
        ]
    }

    proptest! {
        #[test]
        fn agrees_with_naive_matcher(
            ops in prop::collection::vec(op(), 0..60),
            topics in prop::collection::vec(topic(), 1..10),
        ) {
            let mut tree = Tree::new();
            let mut model: BTreeMap<(String, u8), u32> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Insert(f, k, v) => {
                        prop_assert!(topic::valid_topic_filter(&f));
                        prop_assert_eq!(tree.insert(&f, k, v), model.insert((f, k), v));
                    }
                    Op::Remove(f, k) => {
                        prop_assert_eq!(tree.remove(&f, &k), model.remove(&(f, k)));
                    }
                    Op::RemoveExisting(i) => {
                        if model.is_empty() {
                            continue;
                        }
                        let (f, k) = model.keys().nth(i.index(model.len())).cloned().unwrap();
                        prop_assert_eq!(tree.remove(&f, &k), model.remove(&(f, k)));
                    }
                }
                prop_assert_eq!(tree.len(), model.len());
            }
            for t in &topics {
                let mut direct = Vec::new();
                let mut shared: BTreeMap<(String, String), Vec<(u8, u32)>> = BTreeMap::new();
                for ((f, k), v) in &model {
                    match topic::split_shared(f) {
                        None if topic::matches(f, t) => direct.push((f.clone(), *k, *v)),
                        Some((g, inner)) if topic::matches(inner, t) => shared
                            .entry((g.to_owned(), inner.to_owned()))
                            .or_default()
                            .push((*k, *v)),
                        _ => {}
                    }
                }
                direct.sort();
                let expected_shared: Vec<_> = shared
                    .into_iter()
                    .map(|((g, f), mut m)| {
                        m.sort();
                        (g, f, m)
                    })
                    .collect();
                let (got_direct, got_shared) = collect(&tree, t);
                prop_assert_eq!(got_direct, direct, "direct matches of {:?}", t);
                // Sorted and compared to a map's entries: each group reported exactly once.
                prop_assert_eq!(got_shared, expected_shared, "shared matches of {:?}", t);
            }
            // Removing everything leaves only the root.
            let keys: BTreeSet<_> = model.keys().cloned().collect();
            for (f, k) in keys {
                prop_assert!(tree.remove(&f, &k).is_some());
            }
            prop_assert!(tree.is_empty());
            prop_assert_eq!(tree.nodes.live(), 1);
        }
    }
}
