//! Whether a turn's timestamps can be believed. A span stamped 0, ending
//! before it starts, ending far beyond the time it was received, or lasting
//! longer than any turn would, is a broken (or hostile) exporter: one such
//! value learned as latency or as clock offset blinds detection for good.
//! Such a turn is still judged on everything else; its latency is unknown
//! (not learned, like missing token usage) and its end is not placed on
//! our clock.

use super::vitals::UnixNanos;

const SECOND: u64 = 1_000_000_000;
/// How far after its receipt a turn may claim to have ended: agent clocks
/// ahead of ours by up to this much are skew, beyond it nonsense.
pub const FUTURE_ALLOWANCE_NS: u64 = 3_600 * SECOND;
/// Longest believable turn (one agent invocation).
pub const MAX_TURN_DURATION_NS: u64 = 24 * 3_600 * SECOND;

/// What is wrong with a turn's timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimingFault {
    /// A start or end of 0 (unset).
    Unset,
    /// The end is before the start.
    Reversed,
    /// The end is beyond `FUTURE_ALLOWANCE_NS` after the turn was received.
    Future,
    /// Longer than `MAX_TURN_DURATION_NS`.
    TooLong,
}

/// Checks a turn's `start`..`end` (the agent's clock) against `received`
/// (ours, taken where the turn came in).
pub fn check_span(start: u64, end: u64, received: UnixNanos) -> Result<(), TimingFault> {
    if start == 0 || end == 0 {
        return Err(TimingFault::Unset);
    }
    if end < start {
        return Err(TimingFault::Reversed);
    }
    check_end(end, received)?;
    if end - start > MAX_TURN_DURATION_NS {
        return Err(TimingFault::TooLong);
    }
    Ok(())
}

/// Checks a reported end time (0 = not known, which is no fault).
pub fn check_end(end: UnixNanos, received: UnixNanos) -> Result<(), TimingFault> {
    if end > received.saturating_add(FUTURE_ALLOWANCE_NS) {
        return Err(TimingFault::Future);
    }
    Ok(())
}

/// Checks a reported latency (NaN = not known, which is no fault).
pub fn check_latency_ms(latency_ms: f64) -> Result<(), TimingFault> {
    if latency_ms.is_finite() && latency_ms * 1e6 > MAX_TURN_DURATION_NS as f64 {
        return Err(TimingFault::TooLong);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000 * SECOND;

    #[test]
    fn the_issues_poisoned_spans_are_refused_and_real_ones_kept() {
        let ok = check_span(NOW - 2 * SECOND, NOW - SECOND, NOW);
        assert_eq!(ok, Ok(()));
        // An agent clock half an hour ahead is skew, not nonsense.
        assert_eq!(
            check_span(NOW + 1_800 * SECOND, NOW + 1_801 * SECOND, NOW),
            Ok(())
        );
        let cases = [
            ((0, NOW), TimingFault::Unset),
            ((NOW, 0), TimingFault::Unset),
            ((0, u64::MAX), TimingFault::Unset),
            ((u64::MAX, u64::MAX), TimingFault::Future),
            ((NOW, NOW - 1), TimingFault::Reversed),
            ((NOW - 2 * MAX_TURN_DURATION_NS, NOW), TimingFault::TooLong),
        ];
        for ((start, end), fault) in cases {
            assert_eq!(check_span(start, end, NOW), Err(fault), "{start}..{end}");
        }
        assert_eq!(check_end(0, NOW), Ok(()));
        assert_eq!(check_latency_ms(f64::NAN), Ok(()));
        assert_eq!(check_latency_ms(250.0), Ok(()));
        assert_eq!(check_latency_ms(1e12), Err(TimingFault::TooLong));
    }
}
