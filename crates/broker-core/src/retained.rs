//! TODO STUB (replaced by helper)
use std::collections::BTreeMap;
pub struct RetainedStore<M> { m: BTreeMap<String, M> }
impl<M: Clone> RetainedStore<M> {
    pub fn new() -> Self { Self { m: BTreeMap::new() } }
    pub fn insert(&mut self, topic: &str, msg: M) -> Option<M> { self.m.insert(topic.to_string(), msg) }
    pub fn remove(&mut self, topic: &str) -> Option<M> { self.m.remove(topic) }
    pub fn for_each_match(&self, filter: &str, mut f: impl FnMut(&str, &M)) { for (t, m) in &self.m { if crate::topic::matches(filter, t) { f(t, m) } } }
}
