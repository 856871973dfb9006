//! The prompt side of the baseline: which system-instruction hashes the
//! agent ran with while its baseline was learned. A prompt change is a
//! majority of recent turns carrying a hash the baseline does not know.

use serde::{Deserialize, Serialize};

/// Characters of the hash kept for display (a 64-bit prefix of a hex
/// SHA-256 is plenty for a human to tell prompts apart).
const SHOWN: usize = 16;
/// Distinct hashes remembered per agent (agents with a few role prompts
/// are normal; memory stays fixed).
const SLOTS: usize = 4;
/// Share of learned turns from which a hash counts as one the agent runs
/// with.
const KNOWN_SHARE: f64 = 0.2;

/// A prompt hash in fixed space: a fingerprint of the whole string (for
/// equality) and its first characters (for people).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PromptHash {
    fingerprint: u64,
    shown: [u8; SHOWN],
    shown_len: u8,
}

impl PromptHash {
    pub fn new(hash: &str) -> Self {
        // FNV-1a: stable across runs, so persisted baselines still match.
        let mut fingerprint: u64 = 0xcbf2_9ce4_8422_2325;
        for b in hash.as_bytes() {
            fingerprint ^= u64::from(*b);
            fingerprint = fingerprint.wrapping_mul(0x0100_0000_01b3);
        }
        let mut end = hash.len().min(SHOWN);
        while !hash.is_char_boundary(end) {
            end -= 1;
        }
        let mut shown = [0u8; SHOWN];
        shown[..end].copy_from_slice(&hash.as_bytes()[..end]);
        Self {
            fingerprint,
            shown,
            shown_len: end as u8,
        }
    }

    /// The first characters of the hash.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.shown[..usize::from(self.shown_len)]).unwrap_or("")
    }
}

impl std::fmt::Debug for PromptHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PromptHash({})", self.as_str())
    }
}

impl std::fmt::Display for PromptHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Decayed share of learned turns per hash, in a fixed number of slots.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PromptBaseline {
    slots: Vec<(PromptHash, f64)>,
    learned: u64,
}

impl PromptBaseline {
    /// Learns one turn's hash with weight `alpha` (the running average's
    /// 1/n during warmup, the EWMA's alpha after).
    pub fn learn(&mut self, hash: PromptHash, alpha: f64) {
        self.learned = self.learned.saturating_add(1);
        for (_, share) in &mut self.slots {
            *share *= 1.0 - alpha;
        }
        if let Some(slot) = self.slots.iter_mut().find(|(h, _)| *h == hash) {
            slot.1 += alpha;
        } else if self.slots.len() < SLOTS {
            self.slots.push((hash, alpha));
        } else if let Some(weakest) = self.slots.iter_mut().min_by(|a, b| a.1.total_cmp(&b.1)) {
            *weakest = (hash, alpha);
        }
    }

    /// Turns with a hash learned so far.
    pub fn learned(&self) -> u64 {
        self.learned
    }

    /// The hash the agent ran with most while learned.
    pub fn main(&self) -> Option<PromptHash> {
        self.slots
            .iter()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(h, _)| *h)
    }

    /// True when the agent ran with this hash in a real share of its
    /// learned turns.
    pub fn knows(&self, hash: PromptHash) -> bool {
        let total: f64 = self.slots.iter().map(|(_, s)| s).sum();
        self.slots
            .iter()
            .any(|(h, share)| *h == hash && *share >= KNOWN_SHARE * total)
    }

    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_compare_by_the_whole_string_and_show_a_prefix() {
        let a = PromptHash::new("aaaaaaaaaaaaaaaaXXXX");
        let b = PromptHash::new("aaaaaaaaaaaaaaaaYYYY");
        assert_ne!(a, b);
        assert_eq!(a.as_str(), "aaaaaaaaaaaaaaaa");
        assert_eq!(PromptHash::new("short").as_str(), "short");
        assert_eq!(PromptHash::new("ééééééééé").as_str(), "éééééééé");
    }

    #[test]
    fn the_main_hash_is_the_majority_not_the_last_seen() {
        let (a, b) = (PromptHash::new("a"), PromptHash::new("b"));
        let mut p = PromptBaseline::default();
        for n in 1..=20u32 {
            p.learn(a, 1.0 / f64::from(n));
        }
        p.learn(b, 2.0 / 51.0);
        assert_eq!(p.main(), Some(a));
        assert!(p.knows(a));
        assert!(!p.knows(b), "one turn does not make a prompt known");
        assert!(!p.knows(PromptHash::new("c")));
    }

    #[test]
    fn slots_stay_bounded() {
        let mut p = PromptBaseline::default();
        for i in 0..100 {
            p.learn(PromptHash::new(&i.to_string()), 0.04);
        }
        assert_eq!(p.slots.len(), SLOTS);
        assert_eq!(p.learned(), 100);
    }
}
