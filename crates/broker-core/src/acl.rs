//! TODO STUB (replaced by helper)
use crate::config::AclRule;
pub struct Acl { rules: Vec<AclRule> }
impl Acl {
    pub fn new(rules: Vec<AclRule>) -> Acl { Acl { rules } }
    pub fn is_empty(&self) -> bool { self.rules.is_empty() }
    pub fn can_publish(&self, _c: &str, _u: Option<&str>, _t: &str) -> bool { true }
    pub fn can_subscribe(&self, _c: &str, _u: Option<&str>, _t: &str) -> bool { true }
    pub fn can_receive(&self, _c: &str, _u: Option<&str>, _t: &str) -> bool { true }
}
