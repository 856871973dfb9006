//! Deterministic agents for tests: a small PRNG and a generator of turns
//! whose vitals look like production's (lognormal magnitudes, occasional
//! slow turns, transient errors and retries).

use super::config::ImmuneConfig;
use super::core::ImmuneCore;
use super::effect::Effect;
use super::event::{AttrValue, Event};
use super::report;
use super::vitals::{UnixNanos, Vitals};

/// splitmix64: tiny, deterministic, good enough for noise.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1).
    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.uniform() < p
    }
}

/// One simulated agent. Change its fields to make it sick.
pub struct SimAgent {
    pub id: String,
    pub rng: Rng,
    /// Typical latency (median), ms.
    pub latency_ms: f64,
    /// Lognormal σ of latency.
    pub latency_noise: f64,
    pub input_tokens: f64,
    pub output_tokens: f64,
    /// Lognormal σ of token counts.
    pub token_noise: f64,
    /// Tool calls are uniform in [tools_low, tools_high].
    pub tools_low: u32,
    pub tools_high: u32,
    /// Probability of a slow turn (latency × slow_factor).
    pub slow_share: f64,
    pub slow_factor: f64,
    pub error_share: f64,
    pub retry_share: f64,
    pub prompt_hash: Option<String>,
    pub turn: u64,
}

/// USD per input / output token (a mid-size model).
const PRICE_IN: f64 = 2.5e-6;
const PRICE_OUT: f64 = 10e-6;

impl SimAgent {
    pub fn new(id: &str, seed: u64) -> Self {
        Self {
            id: id.to_string(),
            rng: Rng(seed),
            latency_ms: 800.0,
            latency_noise: 0.25,
            input_tokens: 1200.0,
            output_tokens: 300.0,
            token_noise: 0.15,
            tools_low: 1,
            tools_high: 3,
            slow_share: 0.0,
            slow_factor: 4.0,
            error_share: 0.0,
            retry_share: 0.0,
            prompt_hash: Some("a1b2c3d4e5f60718293a4b5c6d7e8f90".to_string()),
            turn: 0,
        }
    }

    /// With production's nuisances: slow turns, transient errors, retries.
    pub fn noisy(id: &str, seed: u64) -> Self {
        Self {
            slow_share: 0.02,
            error_share: 0.01,
            retry_share: 0.02,
            ..Self::new(id, seed)
        }
    }

    pub fn next_turn(&mut self) -> Vitals {
        self.turn += 1;
        let rng = &mut self.rng;
        let mut latency = self.latency_ms * (self.latency_noise * rng.normal()).exp();
        if rng.chance(self.slow_share) {
            latency *= self.slow_factor;
        }
        let input = (self.input_tokens * (self.token_noise * rng.normal()).exp()).round() as u64;
        let output = (self.output_tokens * (self.token_noise * rng.normal()).exp()).round() as u64;
        let span = u64::from(self.tools_high - self.tools_low + 1);
        let tools = self.tools_low + (rng.next_u64() % span) as u32;
        let errors = u32::from(rng.chance(self.error_share));
        let retries = u32::from(rng.chance(self.retry_share));
        let mut trace_id = [0u8; 16];
        trace_id[..8].copy_from_slice(&self.turn.to_be_bytes());
        trace_id[8..].copy_from_slice(&rng.next_u64().to_be_bytes());
        Vitals {
            agent_id: self.id.clone(),
            trace_id,
            root_span_id: self.turn.to_be_bytes(),
            end_time: self.turn * 1_000_000_000,
            latency_ms: latency,
            input_tokens: input,
            output_tokens: output,
            usage_known: true,
            llm_calls: 1 + tools,
            tool_calls: tools,
            retries,
            errors,
            error_type: (errors > 0).then(|| "RateLimitError".to_string()),
            cost_usd: input as f64 * PRICE_IN + output as f64 * PRICE_OUT,
            model: Some("gpt-4o".to_string()),
            prompt_hash: self.prompt_hash.clone(),
            resource: Vec::new(),
            source: Default::default(),
        }
    }
}

pub const SECOND: UnixNanos = 1_000_000_000;

/// A core driven turn by turn, one simulated second per turn, keeping
/// every event and effect.
pub struct Harness {
    pub core: ImmuneCore,
    pub events: Vec<Event>,
    pub effects: Vec<Effect>,
    pub now: UnixNanos,
}

impl Harness {
    pub fn new() -> Self {
        Self::with(ImmuneConfig::default())
    }

    pub fn with(config: ImmuneConfig) -> Self {
        Self::of(ImmuneCore::new(config))
    }

    pub fn of(core: ImmuneCore) -> Self {
        Self {
            core,
            events: Vec::new(),
            effects: Vec::new(),
            now: 1_700_000_000 * SECOND,
        }
    }

    fn collect(&mut self, out: Vec<Event>) -> Vec<Event> {
        self.events.extend(out.iter().cloned());
        self.effects.extend(self.core.drain_effects());
        out
    }

    /// One turn, ending now on the harness clock (agents' clocks agree with
    /// agent-immune's here); returns the events it raised.
    pub fn turn(&mut self, vitals: &Vitals) -> Vec<Event> {
        self.now += SECOND;
        let mut out = Vec::new();
        let vitals = Vitals {
            end_time: self.now,
            ..vitals.clone()
        };
        self.core.observe(&vitals, self.now, &mut out);
        self.collect(out)
    }

    pub fn healthy(&mut self, agent: &mut SimAgent, n: usize) {
        for _ in 0..n {
            let v = agent.next_turn();
            self.turn(&v);
        }
    }

    /// Time passes without turns.
    pub fn wait(&mut self, seconds: u64) -> Vec<Event> {
        self.now += seconds * SECOND;
        let mut out = Vec::new();
        self.core.tick(self.now, &mut out);
        self.collect(out)
    }

    /// An executor reports on an effect.
    pub fn result(&mut self, effect: &Effect, ok: bool) {
        let mut out = Vec::new();
        let message = if ok { "" } else { "target refused" };
        self.core
            .action_result(
                effect.agent_id(),
                effect.attempt_id(),
                ok,
                message,
                self.now,
                &mut out,
            )
            .unwrap();
        self.collect(out);
    }

    /// Runs an operator command with the harness's time and collection.
    pub fn command<T>(
        &mut self,
        f: impl FnOnce(&mut ImmuneCore, UnixNanos, &mut Vec<Event>) -> T,
    ) -> T {
        let mut out = Vec::new();
        let result = f(&mut self.core, self.now, &mut out);
        self.collect(out);
        result
    }

    pub fn infections(&self) -> usize {
        self.named(report::INFECTION).len()
    }

    pub fn named(&self, name: &str) -> Vec<&Event> {
        self.events.iter().filter(|e| e.name == name).collect()
    }

    /// The heal effects sent, as (action, diagnosis) names.
    pub fn heals(&self) -> Vec<(String, String)> {
        self.effects
            .iter()
            .filter_map(|e| match e {
                Effect::Heal {
                    action, diagnosis, ..
                } => Some((action.to_string(), diagnosis.to_string())),
                _ => None,
            })
            .collect()
    }

    /// The newest effect of the agent, if any.
    pub fn last_effect(&self) -> Option<Effect> {
        self.effects.last().cloned()
    }

    /// (from, to) of the lifecycle events, in order.
    pub fn transitions(&self, agent_id: &str) -> Vec<(String, String)> {
        self.named(report::LIFECYCLE)
            .into_iter()
            .filter(|e| e.agent_id == agent_id)
            .map(|e| {
                let s = |k| match attr(e, k) {
                    AttrValue::Str(s) => s.clone(),
                    other => panic!("{k} is {other:?}"),
                };
                (s("agent_immune.from"), s("agent_immune.to"))
            })
            .collect()
    }
}

pub fn infection(events: &[Event]) -> Option<&Event> {
    events.iter().find(|e| e.name == report::INFECTION)
}

pub fn attr<'a>(event: &'a Event, key: &str) -> &'a AttrValue {
    &event
        .attributes
        .iter()
        .find(|(k, _)| k == key)
        .unwrap_or_else(|| panic!("no attribute {key} in {event:?}"))
        .1
}

pub fn double(event: &Event, key: &str) -> f64 {
    match attr(event, key) {
        AttrValue::Double(d) => *d,
        other => panic!("{key} is {other:?}"),
    }
}
