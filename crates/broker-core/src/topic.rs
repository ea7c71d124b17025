//! TODO STUB (replaced by helper)
pub fn valid_topic_name(t: &str) -> bool { !t.is_empty() && !t.contains(['+', '#']) }
pub fn valid_topic_filter(f: &str) -> bool { !f.is_empty() }
pub fn split_shared(f: &str) -> Option<(&str, &str)> { let r = f.strip_prefix("$share/")?; r.split_once('/') }
pub fn matches(filter: &str, topic: &str) -> bool { filter == topic || filter == "#" }
