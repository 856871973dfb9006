//! One trace's spans → one `Vitals` per agent turn.
//!
//! A turn is the spans that belong to one agent invocation: each outermost
//! agent span with a real identity owns one (a nested agent span of the
//! same identity is part of it; one of another identity is its own turn),
//! every other span belongs to its nearest owning agent ancestor, and the
//! spans under no agent form the trace-level turn.

use crate::immune::agent_id;
use crate::immune::timing;
use crate::immune::vitals::{SpanId, TraceId, UnixNanos, Vitals};
use crate::processors::genai::{SpanClass, SpanFacts};
use std::borrow::Cow;
use std::sync::Arc;

const NONE: u32 = u32::MAX;
/// Distinct models tallied per turn when choosing the turn's model.
const MAX_MODELS_PER_TURN: usize = 64;

/// Appends the vitals of every turn in `spans` (all of one trace, its last
/// span received at `received`) to `out` and returns how many there were.
/// Duplicate span ids (a retried export) count once; parent cycles are cut.
/// A turn whose timestamps cannot be believed (`timing::check_span`) has an
/// unknown latency (NaN) and end (0).
pub fn turns_of_trace(
    mut spans: Vec<SpanFacts>,
    received: UnixNanos,
    out: &mut Vec<Vitals>,
) -> usize {
    let Some(first) = spans.first() else {
        return 0;
    };
    let trace_id = first.trace_id;
    spans.sort_unstable_by_key(|s| s.span_id);
    spans.dedup_by_key(|s| s.span_id);
    spans.sort_by_key(|s| (s.start_ns, s.span_id));
    let tree = Tree::new(&spans);

    // Members of each turn, keyed by owner (NONE = trace-level), in start
    // order within a turn.
    let mut members: Vec<(u32, u32)> = (0..spans.len() as u32)
        .map(|i| (tree.turn_of[i as usize], i))
        .collect();
    members.sort_unstable();
    let before = out.len();
    for group in members.chunk_by(|a, b| a.0 == b.0) {
        let owner = group[0].0;
        let indices: Vec<u32> = group.iter().map(|(_, i)| *i).collect();
        if let Some(vitals) = turn_vitals(trace_id, &spans, &tree, owner, &indices, received) {
            out.push(vitals);
        }
    }
    out.len() - before
}

/// Parent links resolved within the trace, and what each span inherits.
struct Tree {
    parent: Vec<u32>,
    /// Owning agent span of each span's turn, NONE for trace-level.
    turn_of: Vec<u32>,
    /// LLM spans that have an LLM span below them (an outer layer of a
    /// doubly instrumented call): their tokens are counted on the inner one.
    has_inner_llm: Vec<bool>,
    /// HTTP attempts directly under each LLM span (no HTTP span between).
    attempts: Vec<u32>,
    /// Status of the last failed HTTP attempt under each LLM span.
    attempt_failure: Vec<Option<u16>>,
}

impl Tree {
    fn new(spans: &[SpanFacts]) -> Self {
        let n = spans.len();
        let mut by_id: Vec<(SpanId, u32)> = spans
            .iter()
            .enumerate()
            .map(|(i, s)| (s.span_id, i as u32))
            .collect();
        by_id.sort_unstable();
        let mut parent = vec![NONE; n];
        for (i, span) in spans.iter().enumerate() {
            if let Some(p) = span.parent_span_id
                && let Ok(pos) = by_id.binary_search_by_key(&p, |(id, _)| *id)
                && by_id[pos].1 as usize != i
            {
                parent[i] = by_id[pos].1;
            }
        }
        let order = parents_first(&mut parent);

        let mut turn_of = vec![NONE; n];
        let mut nearest_llm = vec![NONE; n];
        let mut nearest_llm_or_http = vec![NONE; n];
        for &i in &order {
            let i = i as usize;
            let p = parent[i];
            let inherited = if p == NONE {
                NONE
            } else {
                let pu = p as usize;
                let parent_class = spans[pu].class;
                nearest_llm[i] = if parent_class == SpanClass::Llm {
                    p
                } else {
                    nearest_llm[pu]
                };
                nearest_llm_or_http[i] = if matches!(parent_class, SpanClass::Llm | SpanClass::Http)
                {
                    p
                } else {
                    nearest_llm_or_http[pu]
                };
                turn_of[pu]
            };
            turn_of[i] = if spans[i].is_named_agent() {
                let same_agent =
                    inherited != NONE && spans[inherited as usize].agent == spans[i].agent;
                if same_agent { inherited } else { i as u32 }
            } else {
                inherited
            };
        }

        let mut has_inner_llm = vec![false; n];
        let mut attempts = vec![0u32; n];
        let mut attempt_failure = vec![None; n];
        for (i, span) in spans.iter().enumerate() {
            match span.class {
                SpanClass::Llm if nearest_llm[i] != NONE => {
                    has_inner_llm[nearest_llm[i] as usize] = true;
                }
                SpanClass::Http => {
                    let owner = nearest_llm_or_http[i];
                    if owner != NONE && spans[owner as usize].class == SpanClass::Llm {
                        let owner = owner as usize;
                        attempts[owner] = attempts[owner].saturating_add(1);
                        if let Some(status) = span.http_status.filter(|s| *s >= 400) {
                            attempt_failure[owner] = Some(status);
                        }
                    }
                }
                _ => {}
            }
        }
        Tree {
            parent,
            turn_of,
            has_inner_llm,
            attempts,
            attempt_failure,
        }
    }
}

/// An order in which every span comes after its parent. A parent cycle
/// (malformed input) is cut where it closes.
fn parents_first(parent: &mut [u32]) -> Vec<u32> {
    const NEW: u8 = 0;
    const WALKING: u8 = 1;
    const DONE: u8 = 2;
    let n = parent.len();
    let mut state = vec![NEW; n];
    let mut order = Vec::with_capacity(n);
    let mut stack = Vec::new();
    for start in 0..n {
        if state[start] != NEW {
            continue;
        }
        let mut node = start;
        loop {
            state[node] = WALKING;
            stack.push(node as u32);
            let p = parent[node];
            if p == NONE || state[p as usize] == DONE {
                break;
            }
            if state[p as usize] == WALKING {
                parent[node] = NONE;
                break;
            }
            node = p as usize;
        }
        while let Some(top) = stack.pop() {
            state[top as usize] = DONE;
            order.push(top);
        }
    }
    order
}

fn turn_vitals(
    trace_id: TraceId,
    spans: &[SpanFacts],
    tree: &Tree,
    owner: u32,
    members: &[u32],
    received: UnixNanos,
) -> Option<Vitals> {
    let mut vitals = Vitals {
        trace_id,
        usage_known: true,
        ..Vitals::default()
    };
    let mut meaningful = false;
    let mut tool_spans = 0u32;
    let mut requested_tools = 0u32;
    let mut first_failure: Option<usize> = None;
    let mut first_llm: Option<usize> = None;
    let mut models: Vec<(&Arc<str>, u32, usize)> = Vec::new();
    let mut llm_siblings: Vec<(Option<SpanId>, u64, bool)> = Vec::new();
    let mut min_start = u64::MAX;
    let mut max_end = 0u64;

    for (position, &i) in members.iter().enumerate() {
        let i = i as usize;
        let span = &spans[i];
        min_start = min_start.min(span.start_ns);
        max_end = max_end.max(span.end_ns);
        let counts_error = match span.class {
            SpanClass::Llm if !tree.has_inner_llm[i] => {
                meaningful = true;
                first_llm.get_or_insert(i);
                vitals.llm_calls = vitals.llm_calls.saturating_add(1);
                vitals.input_tokens = vitals.input_tokens.saturating_add(span.input_tokens);
                vitals.output_tokens = vitals.output_tokens.saturating_add(span.output_tokens);
                // A call that failed before the provider answered used no
                // tokens: its missing usage is a known zero.
                if !span.usage_present && !span.failed {
                    vitals.usage_known = false;
                }
                vitals.cost_usd += span.cost_usd;
                let requested = span
                    .tool_calls_requested
                    .max(u32::from(span.finish_tool_calls));
                requested_tools = requested_tools.saturating_add(requested);
                vitals.retries = vitals
                    .retries
                    .saturating_add(tree.attempts[i].saturating_sub(1));
                if let Some(model) = &span.model {
                    if let Some(entry) = models.iter_mut().find(|(m, _, _)| *m == model) {
                        entry.1 += 1;
                        entry.2 = position;
                    } else if models.len() < MAX_MODELS_PER_TURN {
                        // Bounded: a trace naming thousands of models must
                        // not make this quadratic.
                        models.push((model, 1, position));
                    }
                }
                llm_siblings.push((span.parent_span_id, span.start_ns, span.failed));
                true
            }
            SpanClass::Embeddings => {
                meaningful = true;
                vitals.cost_usd += span.cost_usd;
                false
            }
            SpanClass::Tool => {
                meaningful = true;
                tool_spans = tool_spans.saturating_add(1);
                true
            }
            SpanClass::Agent => true,
            _ => false,
        };
        if counts_error && span.failed {
            vitals.errors = vitals.errors.saturating_add(1);
            first_failure.get_or_insert(i);
        }
    }
    if owner == NONE && !meaningful {
        return None;
    }

    vitals.tool_calls = if tool_spans > 0 {
        tool_spans
    } else {
        requested_tools
    };
    vitals.retries = vitals
        .retries
        .saturating_add(app_level_retries(&mut llm_siblings));
    vitals.error_type = first_failure.map(|i| error_type_of(&spans[i], tree.attempt_failure[i]));
    vitals.model = models
        .iter()
        .max_by_key(|(_, count, last)| (*count, *last))
        .map(|(m, _, _)| m.to_string());

    let root = if owner != NONE {
        Some(owner as usize)
    } else {
        members
            .iter()
            .map(|&i| i as usize)
            .find(|&i| spans[i].parent_span_id.is_none() && tree.parent[i] == NONE)
    };
    let (start, end) = match root {
        Some(r) => {
            vitals.root_span_id = spans[r].span_id;
            (spans[r].start_ns, spans[r].end_ns)
        }
        None => {
            vitals.root_span_id = spans[members[0] as usize].span_id;
            (min_start, max_end)
        }
    };
    if timing::check_span(start, end, received).is_ok() {
        vitals.end_time = end;
        vitals.latency_ms = (end - start) as f64 / 1e6;
    } else {
        vitals.end_time = 0;
        vitals.latency_ms = f64::NAN;
    }

    let hash = (owner != NONE)
        .then(|| spans[owner as usize].prompt_hash)
        .flatten()
        .or_else(|| {
            members
                .iter()
                .map(|&i| &spans[i as usize])
                .filter(|s| s.class == SpanClass::Llm)
                .find_map(|s| s.prompt_hash)
        });
    vitals.prompt_hash = hash.map(hex::encode);
    let representative = first_llm.unwrap_or(members[0] as usize);
    vitals.resource = spans[representative]
        .resource
        .kept
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let identity = if owner != NONE {
        spans[owner as usize]
            .agent
            .as_deref()
            .unwrap_or_default()
            .to_string()
    } else {
        trace_level_identity(spans, members, first_llm)
    };
    // Names from spans are client text: the same rule as every other path
    // (an empty one is counted as skipped by the core).
    vitals.agent_id = agent_id::normalise(&identity).map_or_else(String::new, Cow::into_owned);
    Some(vitals)
}

/// An LLM call that failed and was followed by a sibling LLM call is an
/// application-level retry.
fn app_level_retries(siblings: &mut [(Option<SpanId>, u64, bool)]) -> u32 {
    siblings.sort_unstable_by_key(|(parent, start, _)| (*parent, *start));
    let retries = siblings
        .windows(2)
        .filter(|w| w[0].0 == w[1].0 && w[0].2)
        .count();
    u32::try_from(retries).unwrap_or(u32::MAX)
}

fn error_type_of(span: &SpanFacts, attempt_failure: Option<u16>) -> String {
    if let Some(t) = &span.error_type {
        return t.to_string();
    }
    if let Some(status) = attempt_failure {
        return status.to_string();
    }
    match span.class {
        SpanClass::Llm => "llm_error",
        SpanClass::Tool => "tool_error",
        _ => "agent_error",
    }
    .to_string()
}

/// Spans under no agent: their own agent name (Traceloop copies it down),
/// a configured resource identity, the workflow name, then service.name.
fn trace_level_identity(spans: &[SpanFacts], members: &[u32], first_llm: Option<usize>) -> String {
    let in_turn = || members.iter().map(|&i| &spans[i as usize]);
    if let Some(agent) = in_turn().find_map(|s| s.agent.as_deref()) {
        return agent.to_string();
    }
    let representative = first_llm.map_or(&spans[members[0] as usize], |i| &spans[i]);
    if let Some(agent) = &representative.resource.agent {
        return agent.to_string();
    }
    if let Some(workflow) = in_turn().find_map(|s| s.workflow.as_deref()) {
        return workflow.to_string();
    }
    representative.resource.service_name.to_string()
}
