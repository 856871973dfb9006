//! A map keyed by agent id with a fixed capacity: when full, the entry used
//! least recently is forgotten. Discovery and per-agent rate limits both
//! keep state for agents nobody declared in advance, so both must be bounded
//! (a client varying its User-Agent mints a new anonymous agent per request).

use std::collections::{BTreeMap, HashMap};

#[derive(Debug)]
pub struct LruMap<V> {
    capacity: usize,
    entries: HashMap<String, (u64, V)>,
    /// Use tick → key, oldest first.
    order: BTreeMap<u64, String>,
    tick: u64,
}

impl<V> LruMap<V> {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            entries: HashMap::new(),
            order: BTreeMap::new(),
            tick: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The entry for `key`, created with `make` when absent (evicting the
    /// least recently used one when full); marks it most recently used.
    /// Returns the entry and the key evicted to make room, if any.
    pub fn touch_or_insert_with(
        &mut self,
        key: &str,
        make: impl FnOnce() -> V,
    ) -> (&mut V, Option<String>) {
        self.tick += 1;
        let tick = self.tick;
        let mut evicted = None;
        if !self.entries.contains_key(key)
            && self.entries.len() >= self.capacity
            && let Some((_, oldest)) = self.order.pop_first()
        {
            self.entries.remove(&oldest);
            evicted = Some(oldest);
        }
        let slot = self
            .entries
            .entry(key.to_string())
            .or_insert_with(|| (tick, make()));
        if slot.0 != tick {
            self.order.remove(&slot.0);
            slot.0 = tick;
        }
        self.order.insert(tick, key.to_string());
        (&mut slot.1, evicted)
    }

    /// The entry for `key` without changing its recency.
    pub fn peek_mut(&mut self, key: &str) -> Option<&mut V> {
        self.entries.get_mut(key).map(|(_, v)| v)
    }

    pub fn get(&self, key: &str) -> Option<&V> {
        self.entries.get(key).map(|(_, v)| v)
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.entries.values().map(|(_, v)| v)
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.entries.values_mut().map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_the_least_recently_used() {
        let mut map = LruMap::new(2);
        *map.touch_or_insert_with("a", || 0).0 += 1;
        *map.touch_or_insert_with("b", || 0).0 += 1;
        // "a" used again: "b" is now the oldest.
        *map.touch_or_insert_with("a", || 0).0 += 1;
        let (_, evicted) = map.touch_or_insert_with("c", || 0);
        assert_eq!(evicted.as_deref(), Some("b"));
        assert_eq!(map.len(), 2);
        assert_eq!(map.get("a"), Some(&2));
        assert!(map.get("b").is_none());
    }
}
