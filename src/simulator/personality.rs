//! Each simulated agent's character: what it does, with which model, how
//! many steps a turn takes, and how noisy it is. Drawn once per agent from
//! its own random stream, so a fleet is varied but reproducible.

use super::random::Rng;

/// Roles give agents readable ids (`support-00`, `research-01`) and a
/// system prompt of their own.
const ROLES: [(&str, &str); 6] = [
    (
        "support",
        "You are a customer support agent for Acme Cloud. Answer billing and account questions politely, look orders up with the tools, and never reveal another customer's data.",
    ),
    (
        "research",
        "You are a research assistant. Search the knowledge base and the web, cite every source you use, and say so when the sources disagree.",
    ),
    (
        "coder",
        "You are a coding agent. Read the repository with the tools, propose minimal patches, run the tests before you answer, and never push to main.",
    ),
    (
        "sales",
        "You are a sales assistant for Acme Cloud. Qualify leads, look accounts up in the CRM, and book meetings; never promise discounts above 10%.",
    ),
    (
        "ops",
        "You are an on-call operations agent. Read dashboards and logs with the tools, summarise incidents, and page a human before any destructive action.",
    ),
    (
        "triage",
        "You are a ticket triage agent. Classify each ticket, set its priority, and route it to the right queue with a one-line summary.",
    ),
];

/// Models and how often agents use them (the cheap ones dominate).
const MODELS: [(&str, f64); 5] = [
    ("gpt-4o-mini", 0.40),
    ("gpt-4.1-mini", 0.20),
    ("claude-3-5-haiku", 0.15),
    ("gpt-4o", 0.15),
    ("claude-sonnet-4", 0.10),
];

/// What a turn of this agent normally looks like.
#[derive(Debug, Clone)]
pub struct Personality {
    pub id: String,
    pub role: &'static str,
    pub system_prompt: String,
    pub model: &'static str,
    /// LLM calls per turn (a few turns take one more).
    pub llm_calls: u32,
    /// Typical tool calls per turn (each turn varies by about one).
    pub tools: u32,
    /// Median input and output tokens per LLM call.
    pub input_tokens: f64,
    pub output_tokens: f64,
    /// σ of log(tokens): how much turns differ in size.
    pub token_sigma: f64,
    /// Median duration of one LLM call and one tool call.
    pub llm_ms: f64,
    pub tool_ms: f64,
    /// σ of log(duration).
    pub latency_sigma: f64,
    /// Chance a turn has a transient provider retry (HTTP 429 then 200).
    pub retry_chance: f64,
    /// Chance a turn ends in a transient error (LLM timeout or tool error).
    pub error_chance: f64,
}

impl Personality {
    /// Agent `index` of a fleet of `fleet_size`, from `seed`.
    pub fn draw(index: usize, fleet_size: usize, seed: u64) -> Self {
        let mut rng = Rng::stream(seed, index as u64);
        let (role, prompt) = ROLES[index % ROLES.len()];
        let width = fleet_size.saturating_sub(1).max(1).to_string().len().max(2);
        let id = format!("{role}-{index:0width$}");
        let model = pick_model(rng.uniform());
        let tools = match role {
            "triage" => rng.below(2) as u32,
            "coder" | "research" => 2 + rng.below(3) as u32,
            _ => 1 + rng.below(3) as u32,
        };
        Self {
            system_prompt: format!("{prompt} (agent {id})"),
            id,
            role,
            model,
            llm_calls: 1 + rng.below(3) as u32,
            tools,
            input_tokens: rng.range(300.0, 2500.0).round(),
            output_tokens: rng.range(60.0, 500.0).round(),
            token_sigma: rng.range(0.15, 0.35),
            llm_ms: rng.range(350.0, 2000.0),
            tool_ms: rng.range(15.0, 300.0),
            latency_sigma: rng.range(0.2, 0.4),
            retry_chance: rng.range(0.01, 0.05),
            error_chance: rng.range(0.003, 0.015),
        }
    }
}

fn pick_model(u: f64) -> &'static str {
    let mut acc = 0.0;
    for (model, weight) in MODELS {
        acc += weight;
        if u < acc {
            return model;
        }
    }
    MODELS[0].0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agents_differ_but_are_reproducible() {
        let a = Personality::draw(3, 10, 1);
        let again = Personality::draw(3, 10, 1);
        assert_eq!(a.id, "sales-03");
        assert_eq!(a.input_tokens, again.input_tokens);
        assert_eq!(a.model, again.model);
        let fleet: Vec<Personality> = (0..60).map(|i| Personality::draw(i, 60, 1)).collect();
        let models: std::collections::HashSet<&str> = fleet.iter().map(|p| p.model).collect();
        assert!(models.len() >= 3, "{models:?}");
        let ids: std::collections::HashSet<&str> = fleet.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids.len(), 60, "ids are unique");
        assert!(fleet.iter().all(|p| p.system_prompt.contains(&p.id)));
        assert_eq!(Personality::draw(5, 1000, 1).id, "triage-005");
    }
}
