//! Telling a standing problem once: a broken key in etcd or a block that
//! cannot be routed is seen again on every event and every snapshot, but the
//! operator is told when it appears, when it changes and when it is gone.

use std::collections::BTreeMap;

/// What changed since the last call, for [`Noted::update`].
#[derive(Debug, PartialEq, Eq)]
pub struct Changes<K, V> {
    /// New or changed since last time: log these.
    pub new: Vec<(K, V)>,
    /// Gone since last time.
    pub cleared: Vec<K>,
}

/// The problems standing now, by key.
#[derive(Debug, Clone)]
pub struct Noted<K, V>(BTreeMap<K, V>);

impl<K: Ord + Clone, V: PartialEq + Clone> Default for Noted<K, V> {
    fn default() -> Self {
        Noted(BTreeMap::new())
    }
}

impl<K: Ord + Clone, V: PartialEq + Clone> Noted<K, V> {
    /// Replaces the whole set with `now`.
    pub fn update(&mut self, now: impl IntoIterator<Item = (K, V)>) -> Changes<K, V> {
        let now: BTreeMap<K, V> = now.into_iter().collect();
        let cleared = self
            .0
            .keys()
            .filter(|k| !now.contains_key(k))
            .cloned()
            .collect();
        let new = now
            .iter()
            .filter(|(k, v)| self.0.get(k) != Some(v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        self.0 = now;
        Changes { new, cleared }
    }

    /// One key now has problem `v`: true when that is news.
    pub fn set(&mut self, k: K, v: V) -> bool {
        self.0.insert(k, v.clone()).as_ref() != Some(&v)
    }

    /// One key has no problem now: true when it had one.
    pub fn clear(&mut self, k: &K) -> bool {
        self.0.remove(k).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_what_is_new_changed_and_gone() {
        let mut n: Noted<&str, &str> = Noted::default();
        let c = n.update([("a", "bad"), ("b", "worse")]);
        assert_eq!(c.new, [("a", "bad"), ("b", "worse")]);
        assert!(c.cleared.is_empty());
        let c = n.update([("a", "bad"), ("b", "other")]);
        assert_eq!(c.new, [("b", "other")]);
        let c = n.update([("b", "other")]);
        assert!(c.new.is_empty());
        assert_eq!(c.cleared, ["a"]);
    }

    #[test]
    fn single_keys() {
        let mut n: Noted<&str, &str> = Noted::default();
        assert!(n.set("k", "bad"));
        assert!(!n.set("k", "bad"));
        assert!(n.set("k", "worse"));
        assert!(n.clear(&"k"));
        assert!(!n.clear(&"k"));
    }
}
