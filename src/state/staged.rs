//! Writes waiting for the next flush: the latest encoded value per key (or
//! its deletion), striped by key so shards staging different agents rarely
//! share a lock.

use super::error::StateError;
use super::schema::Table;
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

const STRIPES: usize = 16;
/// Most distinct keys staged at once: far above any agent count the core
/// allows; reached only when flushes keep failing.
pub const MAX_STAGED: usize = 1_000_000;

pub(crate) type StagedKey = (Table, String);
/// The record's new encoded value; `None` deletes it.
pub(crate) type StagedValue = Option<Vec<u8>>;
type Stripe = HashMap<StagedKey, StagedValue>;

#[derive(Debug, Default)]
pub(crate) struct Staged {
    stripes: [Mutex<Stripe>; STRIPES],
    count: AtomicUsize,
}

impl Staged {
    fn stripe(&self, table: Table, key: &str) -> std::sync::MutexGuard<'_, Stripe> {
        let mut hasher = DefaultHasher::new();
        (table, key).hash(&mut hasher);
        let index = (hasher.finish() % STRIPES as u64) as usize;
        // A poisoned stripe only means a panic elsewhere mid-insert; the map
        // itself is still consistent.
        self.stripes[index]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn put(&self, table: Table, key: &str, value: StagedValue) -> Result<(), StateError> {
        let mut stripe = self.stripe(table, key);
        if let Some(slot) = stripe.get_mut(&(table, key.to_string())) {
            *slot = value;
            return Ok(());
        }
        if self.count.load(Ordering::Relaxed) >= MAX_STAGED {
            return Err(StateError::Backlog(format!(
                "{MAX_STAGED} writes already wait for a flush (are flushes failing?); {} record {key:?} not staged",
                table.name()
            )));
        }
        stripe.insert((table, key.to_string()), value);
        self.count.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// The staged value of `key`: `Some(None)` when its deletion is staged.
    pub fn get(&self, table: Table, key: &str) -> Option<StagedValue> {
        self.stripe(table, key)
            .get(&(table, key.to_string()))
            .cloned()
    }

    /// Staged values of one table (for a load that must see them).
    pub fn of_table(&self, table: Table) -> Vec<(String, StagedValue)> {
        let mut out = Vec::new();
        for stripe in &self.stripes {
            let stripe = stripe
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            out.extend(
                stripe
                    .iter()
                    .filter(|((t, _), _)| *t == table)
                    .map(|((_, k), v)| (k.clone(), v.clone())),
            );
        }
        out
    }

    pub fn take_all(&self) -> Vec<(StagedKey, StagedValue)> {
        let mut out = Vec::new();
        for stripe in &self.stripes {
            let mut stripe = stripe
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            self.count.fetch_sub(stripe.len(), Ordering::Relaxed);
            out.extend(stripe.drain());
        }
        out
    }

    /// Puts back what a failed write took, unless a newer value was staged
    /// for the key meanwhile.
    pub fn restore(&self, entries: Vec<(StagedKey, StagedValue)>) {
        for ((table, key), value) in entries {
            let mut stripe = self.stripe(table, &key);
            if let std::collections::hash_map::Entry::Vacant(slot) = stripe.entry((table, key)) {
                slot.insert(value);
                self.count.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_value_wins_and_restore_keeps_newer() {
        let staged = Staged::default();
        staged.put(Table::Agents, "a", Some(vec![1])).unwrap();
        staged.put(Table::Agents, "a", Some(vec![2])).unwrap();
        staged.put(Table::Quarantine, "a", Some(vec![3])).unwrap();
        assert_eq!(staged.len(), 2);
        assert_eq!(staged.get(Table::Agents, "a"), Some(Some(vec![2])));
        let taken = staged.take_all();
        assert_eq!((taken.len(), staged.len()), (2, 0));
        staged.put(Table::Agents, "a", None).unwrap();
        staged.restore(taken);
        assert_eq!(staged.get(Table::Agents, "a"), Some(None));
        assert_eq!(staged.get(Table::Quarantine, "a"), Some(Some(vec![3])));
        assert_eq!(staged.len(), 2);
        assert_eq!(
            staged.of_table(Table::Agents),
            vec![("a".to_string(), None)]
        );
    }
}
