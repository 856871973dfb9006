//! The memory budget, as the Collector's `memory_limiter`: a request
//! reserves its estimated decoded size before it is decoded, and holds the
//! reservation until detection has processed it; over the budget (or with
//! resident memory above the limit) new requests are refused retryably.

use super::consumer::Refused;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Resident memory is read at most this often (a read is a small file read;
/// under a burst of requests, one read serves them all).
const RSS_READ_INTERVAL: Duration = Duration::from_millis(5);

/// Why a reservation was not granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OverBudget {
    /// The request alone is larger than the whole budget: it can never fit,
    /// so retrying is pointless (a permanent error).
    Never { needed: u64, budget: u64 },
    /// Not now: retry later (a retryable refusal).
    Now(Refused),
}

/// The process-wide budget of decoded-but-unprocessed data, and the
/// resident-memory backstop.
#[derive(Debug)]
pub struct MemoryBudget {
    budget: u64,
    in_use: AtomicU64,
    resident_limit: u64,
    resident: ResidentMemory,
}

impl MemoryBudget {
    /// `budget` bytes of decoded data; new requests refused while resident
    /// memory is above `resident_limit` bytes (0: no resident check).
    pub fn new(budget: u64, resident_limit: u64) -> Arc<Self> {
        Arc::new(Self {
            budget,
            in_use: AtomicU64::new(0),
            resident_limit,
            resident: ResidentMemory::new(),
        })
    }

    /// Bytes reserved now.
    pub fn in_use(&self) -> u64 {
        self.in_use.load(Ordering::Relaxed)
    }

    /// The budget in bytes.
    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// Refuses (retryably) while resident memory is above the limit: the
    /// backstop for whatever the estimates miss. Cheap enough for every
    /// request.
    pub fn check_resident(&self) -> Result<(), Refused> {
        if self.resident_limit == 0 {
            return Ok(());
        }
        match self.resident.bytes() {
            Some(rss) if rss > self.resident_limit => Err(Refused::Backpressure(format!(
                "memory limit reached ({} MiB resident, memory_limit_mib = {})",
                rss >> 20,
                self.resident_limit >> 20
            ))),
            _ => Ok(()),
        }
    }

    /// Reserves `bytes` of decoded data, released when the guard drops.
    pub fn reserve(self: &Arc<Self>, bytes: u64) -> Result<Reservation, OverBudget> {
        if bytes > self.budget {
            return Err(OverBudget::Never {
                needed: bytes,
                budget: self.budget,
            });
        }
        let taken = self
            .in_use
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |in_use| {
                in_use
                    .checked_add(bytes)
                    .filter(|total| *total <= self.budget)
            });
        match taken {
            Ok(_) => Ok(Reservation {
                budget: self.clone(),
                bytes,
            }),
            Err(in_use) => Err(OverBudget::Now(Refused::Backpressure(format!(
                "decoded-data budget is full ({} of {} MiB in use), retry later",
                in_use >> 20,
                self.budget >> 20
            )))),
        }
    }
}

/// Decoded data held against the budget; released on drop.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<MemoryBudget>,
    bytes: u64,
}

impl Reservation {
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Keeps only `bytes` (what is still held once the decoded request is
    /// gone and only its span facts travel on); never grows.
    pub fn shrink_to(&mut self, bytes: u64) {
        if bytes < self.bytes {
            self.budget
                .in_use
                .fetch_sub(self.bytes - bytes, Ordering::AcqRel);
            self.bytes = bytes;
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.in_use.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// Resident memory from /proc/self/statm, re-read at most every
/// [`RSS_READ_INTERVAL`].
#[derive(Debug)]
struct ResidentMemory {
    started: Instant,
    /// Milliseconds since `started` of the last read, and its value.
    read_at_ms: AtomicU64,
    bytes: AtomicU64,
    page_size: u64,
}

impl ResidentMemory {
    fn new() -> Self {
        let page_size = rustix::param::page_size() as u64;
        Self {
            started: Instant::now(),
            read_at_ms: AtomicU64::new(u64::MAX),
            bytes: AtomicU64::new(0),
            page_size,
        }
    }

    /// `None` where /proc is not there (not Linux): no backstop then.
    fn bytes(&self) -> Option<u64> {
        let now_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = self.read_at_ms.load(Ordering::Relaxed);
        let interval = RSS_READ_INTERVAL.as_millis() as u64;
        if last != u64::MAX && now_ms.saturating_sub(last) < interval {
            return Some(self.bytes.load(Ordering::Relaxed));
        }
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
        let bytes = pages.saturating_mul(self.page_size);
        self.bytes.store(bytes, Ordering::Relaxed);
        self.read_at_ms.store(now_ms, Ordering::Relaxed);
        Some(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_are_bounded_and_released_on_drop() {
        let budget = MemoryBudget::new(100, 0);
        let a = budget.reserve(60).unwrap();
        assert!(matches!(budget.reserve(50), Err(OverBudget::Now(_))));
        assert_eq!(
            budget.reserve(101).unwrap_err(),
            OverBudget::Never {
                needed: 101,
                budget: 100
            }
        );
        let mut b = budget.reserve(40).unwrap();
        assert_eq!(budget.in_use(), 100);
        b.shrink_to(10);
        b.shrink_to(30); // never grows
        assert_eq!(b.bytes(), 10);
        assert_eq!(budget.in_use(), 70);
        drop(a);
        drop(b);
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn resident_memory_is_read_and_limits() {
        assert!(MemoryBudget::new(1, 0).check_resident().is_ok());
        // No process runs in a single byte.
        let refused = MemoryBudget::new(1, 1).check_resident().unwrap_err();
        assert!(
            refused.to_string().contains("memory limit reached"),
            "{refused}"
        );
        assert!(MemoryBudget::new(1, u64::MAX).check_resident().is_ok());
    }
}
