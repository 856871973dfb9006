//! Buffers span facts per trace until the trace can be closed into turns:
//! when its root span arrives, when it has been idle for `idle_timeout`,
//! when memory caps force the oldest out, or at shutdown. Pure: the time
//! is passed in.

use super::config::TurnsConfig;
use super::turn::turns_of_trace;
use crate::immune::vitals::{TraceId, UnixNanos, Vitals};
use crate::processors::genai::SpanFacts;
use std::collections::{HashMap, HashSet, VecDeque};

/// What the assembler has done since the counters were last taken.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TurnCounters {
    /// Span facts received.
    pub spans: u64,
    /// Turns emitted (vitals records).
    pub turns: u64,
    /// Traces closed because their root span arrived.
    pub closed_on_root: u64,
    /// Traces closed after `idle_timeout` without their root span.
    pub closed_idle: u64,
    /// Traces closed at shutdown (`drain`).
    pub closed_at_drain: u64,
    /// Traces closed early because `max_open_traces` or
    /// `max_buffered_spans` was reached.
    pub evicted: u64,
    /// Spans that arrived after their trace was closed (dropped).
    pub late_spans: u64,
    /// Spans beyond `max_spans_per_trace` (dropped).
    pub spans_over_limit: u64,
    /// Closed traces that held no agent turn (no LLM, tool or agent span).
    pub traces_without_turn: u64,
    /// Turns whose timestamps could not be believed (unset, reversed, far
    /// in the future, too long): judged with latency and end unknown.
    pub bad_timestamps: u64,
}

#[derive(Clone, Copy)]
enum CloseReason {
    Root,
    Idle,
    Drain,
    Evicted,
}

struct OpenTrace {
    spans: Vec<SpanFacts>,
    /// Arrival order, to find the oldest trace.
    seq: u64,
    last_seen: UnixNanos,
    root_seen: bool,
}

pub struct TurnAssembler {
    idle_timeout_ns: u64,
    max_open_traces: usize,
    max_spans_per_trace: usize,
    max_buffered_spans: usize,
    closed_cache_size: usize,
    open: HashMap<TraceId, OpenTrace>,
    /// Open traces in arrival order; entries of traces already closed are
    /// skipped when met and compacted away now and then.
    arrival: VecDeque<(TraceId, u64)>,
    next_seq: u64,
    buffered_spans: usize,
    closed: HashSet<TraceId>,
    closed_order: VecDeque<TraceId>,
    roots: Vec<TraceId>,
    counters: TurnCounters,
}

impl TurnAssembler {
    pub fn new(config: &TurnsConfig) -> Self {
        Self {
            idle_timeout_ns: u64::try_from(config.idle_timeout.as_nanos()).unwrap_or(u64::MAX),
            max_open_traces: config.max_open_traces.max(1),
            max_spans_per_trace: config.max_spans_per_trace.max(1),
            max_buffered_spans: config.max_buffered_spans.max(1),
            closed_cache_size: config.closed_trace_cache,
            open: HashMap::new(),
            arrival: VecDeque::new(),
            next_seq: 0,
            buffered_spans: 0,
            closed: HashSet::new(),
            closed_order: VecDeque::new(),
            roots: Vec::new(),
            counters: TurnCounters::default(),
        }
    }

    /// Traces waiting for their root span.
    pub fn open_traces(&self) -> usize {
        self.open.len()
    }

    /// Spans held in open traces.
    pub fn buffered_spans(&self) -> usize {
        self.buffered_spans
    }

    pub fn counters(&self) -> &TurnCounters {
        &self.counters
    }

    /// The counters since the last call, reset to zero (for adding to
    /// shared telemetry counters).
    pub fn take_counters(&mut self) -> TurnCounters {
        std::mem::take(&mut self.counters)
    }

    /// Adds a batch of span facts; once the whole batch is in, every trace
    /// whose root span arrived in it is closed and its turns appended to
    /// `out`. Caps may also close (evict) the oldest traces.
    pub fn add_batch(
        &mut self,
        spans: impl IntoIterator<Item = SpanFacts>,
        now: UnixNanos,
        out: &mut Vec<Vitals>,
    ) {
        for span in spans {
            self.counters.spans += 1;
            self.add(span, now, out);
        }
        let mut roots = std::mem::take(&mut self.roots);
        for trace_id in roots.drain(..) {
            if let Some(trace) = self.open.remove(&trace_id) {
                self.close(trace_id, trace, CloseReason::Root, out);
            }
        }
        self.roots = roots;
        self.compact_arrival();
    }

    fn add(&mut self, span: SpanFacts, now: UnixNanos, out: &mut Vec<Vitals>) {
        let trace_id = span.trace_id;
        let is_root = span.parent_span_id.is_none();
        if let Some(trace) = self.open.get_mut(&trace_id) {
            trace.last_seen = now;
            // The root is kept even over the limit: it gives the turn its
            // latency and closes the trace.
            if trace.spans.len() >= self.max_spans_per_trace && !is_root {
                self.counters.spans_over_limit += 1;
                return;
            }
            trace.spans.push(span);
            if is_root && !trace.root_seen {
                trace.root_seen = true;
                self.roots.push(trace_id);
            }
        } else {
            if self.closed.contains(&trace_id) {
                self.counters.late_spans += 1;
                return;
            }
            while self.open.len() >= self.max_open_traces {
                if !self.evict_oldest(out) {
                    break;
                }
            }
            let seq = self.next_seq;
            self.next_seq += 1;
            self.open.insert(
                trace_id,
                OpenTrace {
                    spans: vec![span],
                    seq,
                    last_seen: now,
                    root_seen: is_root,
                },
            );
            self.arrival.push_back((trace_id, seq));
            if is_root {
                self.roots.push(trace_id);
            }
        }
        self.buffered_spans += 1;
        while self.buffered_spans > self.max_buffered_spans {
            if !self.evict_oldest(out) {
                break;
            }
        }
    }

    /// Closes every trace that has received no span for `idle_timeout`.
    pub fn flush_idle(&mut self, now: UnixNanos, out: &mut Vec<Vitals>) {
        let idle: Vec<(u64, TraceId)> = self
            .open
            .iter()
            .filter(|(_, t)| now.saturating_sub(t.last_seen) >= self.idle_timeout_ns)
            .map(|(id, t)| (t.seq, *id))
            .collect();
        self.close_all(idle, CloseReason::Idle, out);
        self.compact_arrival();
    }

    /// Closes every open trace (shutdown: partial traces are flushed, not
    /// lost).
    pub fn drain(&mut self, out: &mut Vec<Vitals>) {
        let all: Vec<(u64, TraceId)> = self.open.iter().map(|(id, t)| (t.seq, *id)).collect();
        self.close_all(all, CloseReason::Drain, out);
        self.arrival.clear();
    }

    /// Closes the given traces oldest first, so output order is stable.
    fn close_all(
        &mut self,
        mut traces: Vec<(u64, TraceId)>,
        reason: CloseReason,
        out: &mut Vec<Vitals>,
    ) {
        traces.sort_unstable();
        for (_, trace_id) in traces {
            if let Some(trace) = self.open.remove(&trace_id) {
                self.close(trace_id, trace, reason, out);
            }
        }
    }

    /// Closes the oldest open trace; false when none is open.
    fn evict_oldest(&mut self, out: &mut Vec<Vitals>) -> bool {
        while let Some((trace_id, seq)) = self.arrival.pop_front() {
            if self.open.get(&trace_id).is_some_and(|t| t.seq == seq) {
                if let Some(trace) = self.open.remove(&trace_id) {
                    self.close(trace_id, trace, CloseReason::Evicted, out);
                }
                return true;
            }
        }
        false
    }

    fn close(
        &mut self,
        trace_id: TraceId,
        trace: OpenTrace,
        reason: CloseReason,
        out: &mut Vec<Vitals>,
    ) {
        self.buffered_spans = self.buffered_spans.saturating_sub(trace.spans.len());
        match reason {
            CloseReason::Root => self.counters.closed_on_root += 1,
            CloseReason::Idle => self.counters.closed_idle += 1,
            CloseReason::Drain => self.counters.closed_at_drain += 1,
            CloseReason::Evicted => self.counters.evicted += 1,
        }
        let first = out.len();
        let turns = turns_of_trace(trace.spans, trace.last_seen, out);
        self.counters.turns += turns as u64;
        self.counters.bad_timestamps +=
            out[first..].iter().filter(|v| v.end_time == 0).count() as u64;
        if turns == 0 {
            self.counters.traces_without_turn += 1;
        }
        self.remember_closed(trace_id);
    }

    fn remember_closed(&mut self, trace_id: TraceId) {
        if self.closed_cache_size == 0 || !self.closed.insert(trace_id) {
            return;
        }
        self.closed_order.push_back(trace_id);
        while self.closed_order.len() > self.closed_cache_size {
            if let Some(old) = self.closed_order.pop_front() {
                self.closed.remove(&old);
            }
        }
    }

    /// Drops arrival entries of closed traces once they outnumber the open
    /// ones, keeping the queue's memory proportional to the open traces.
    fn compact_arrival(&mut self) {
        if self.arrival.len() > 2 * self.open.len() + 1024 {
            let open = &self.open;
            self.arrival
                .retain(|(id, seq)| open.get(id).is_some_and(|t| t.seq == *seq));
        }
    }
}
