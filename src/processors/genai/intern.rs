//! The few strings kept per span (model, agent, workflow, error type)
//! repeat across the spans of one request: share them instead of
//! allocating one per span.

use std::sync::Arc;

/// How many distinct strings one request keeps for sharing.
const SLOTS: usize = 16;

#[derive(Default)]
pub struct Interner {
    recent: Vec<Arc<str>>,
    next_victim: usize,
}

impl Interner {
    pub fn get(&mut self, s: &str) -> Arc<str> {
        if let Some(hit) = self.recent.iter().find(|r| ***r == *s) {
            return hit.clone();
        }
        let fresh: Arc<str> = Arc::from(s);
        if self.recent.len() < SLOTS {
            self.recent.push(fresh.clone());
        } else {
            self.recent[self.next_victim] = fresh.clone();
            self.next_victim = (self.next_victim + 1) % SLOTS;
        }
        fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_strings_share_one_allocation() {
        let mut interner = Interner::default();
        let a = interner.get("gpt-4o-mini");
        let b = interner.get("gpt-4o-mini");
        assert!(Arc::ptr_eq(&a, &b));
        for i in 0..100 {
            assert_eq!(&*interner.get(&format!("m{i}")), format!("m{i}"));
        }
        assert!(interner.recent.len() <= SLOTS);
    }
}
