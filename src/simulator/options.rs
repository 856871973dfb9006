//! What a simulation run is asked to do.

use super::injection::Injection;
use crate::exporters::otlp_client::Protocol;
use std::net::SocketAddr;
use std::time::Duration;

/// Bounds that keep a typo from asking for the impossible.
pub const MAX_AGENTS: usize = 1_000_000;
pub const MAX_RATE: f64 = 1_000_000.0;
pub const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);
pub const MAX_INJECTIONS: usize = 1_000;

#[derive(Debug, Clone)]
pub struct SimulatorOptions {
    /// Where the OTLP traces go: "http://127.0.0.1:4317" (gRPC) or
    /// "http://127.0.0.1:4318" (HTTP; `/v1/traces` is appended).
    pub endpoint: String,
    pub protocol: Protocol,
    /// Agents in the fleet.
    pub agents: usize,
    /// Turns per second across the whole fleet.
    pub rate: f64,
    /// How long turns are sent.
    pub duration: Duration,
    pub injections: Vec<Injection>,
    /// Where the agents' control API listens (port 0: any free port);
    /// None: no control API (enforcement has no effect on the fleet).
    pub control: Option<SocketAddr>,
    /// Seed of the fleet's personalities and noise.
    pub seed: u64,
}

impl Default for SimulatorOptions {
    fn default() -> Self {
        Self {
            endpoint: "http://127.0.0.1:4317".to_string(),
            protocol: Protocol::Grpc,
            agents: 20,
            rate: 10.0,
            duration: Duration::from_secs(120),
            injections: Vec::new(),
            control: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            seed: 1,
        }
    }
}

impl SimulatorOptions {
    /// Every problem with the options, in words naming the flag.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.agents == 0 || self.agents > MAX_AGENTS {
            problems.push(format!(
                "--agents must be 1 to {MAX_AGENTS}, got {}",
                self.agents
            ));
        }
        if !(self.rate.is_finite() && self.rate > 0.0 && self.rate <= MAX_RATE) {
            problems.push(format!(
                "--rate must be above 0 and at most {MAX_RATE} turns per second, got {}",
                self.rate
            ));
        }
        if self.duration.is_zero() || self.duration > MAX_DURATION {
            problems.push(format!(
                "--duration must be above 0 and at most {}",
                humantime::format_duration(MAX_DURATION)
            ));
        }
        if self.injections.len() > MAX_INJECTIONS {
            problems.push(format!("at most {MAX_INJECTIONS} --inject"));
        }
        if !(self.endpoint.starts_with("http://") || self.endpoint.starts_with("https://")) {
            problems.push(format!(
                "--endpoint must start with http:// or https://, got {:?}",
                self.endpoint
            ));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_name_their_flag() {
        assert!(SimulatorOptions::default().problems().is_empty());
        let bad = SimulatorOptions {
            agents: 0,
            rate: f64::NAN,
            duration: Duration::ZERO,
            endpoint: "127.0.0.1:4317".into(),
            ..SimulatorOptions::default()
        };
        let problems = bad.problems().join("\n");
        for flag in ["--agents", "--rate", "--duration", "--endpoint"] {
            assert!(problems.contains(flag), "{problems}");
        }
    }
}
