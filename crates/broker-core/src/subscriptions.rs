//! TODO STUB (replaced by helper)
use std::sync::atomic::AtomicUsize;
pub enum Match<'a, K, V> { Direct { filter: &'a str, key: &'a K, value: &'a V }, Shared { group: &'a str, filter: &'a str, members: &'a [(K, V)], cursor: &'a AtomicUsize } }
pub struct SubscriptionTree<K, V> { v: Vec<(String, K, V)> }
impl<K: Clone + Eq + std::hash::Hash, V: Clone> SubscriptionTree<K, V> {
    pub fn new() -> Self { Self { v: Vec::new() } }
    pub fn insert(&mut self, filter: &str, key: K, value: V) -> Option<V> { let old = self.remove(filter, &key); self.v.push((filter.to_string(), key, value)); old }
    pub fn remove(&mut self, filter: &str, key: &K) -> Option<V> { let i = self.v.iter().position(|(f, k, _)| f == filter && k == key)?; Some(self.v.remove(i).2) }
    pub fn for_each_match<'a>(&'a self, topic: &str, mut f: impl FnMut(Match<'a, K, V>)) { for (fi, k, v) in &self.v { if crate::topic::matches(fi, topic) { f(Match::Direct { filter: fi, key: k, value: v }) } } }
}
