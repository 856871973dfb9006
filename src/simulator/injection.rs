//! Scheduled infections: `KIND@AGENT:AT[+FOR]`, e.g.
//! `infinite_loop@3:30s`, `prompt_injection@support-00:1m`,
//! `provider_outage@50%:20s+30s`, `gradual_drift@research-01:10s+2m`.

use std::fmt;
use std::time::Duration;

/// Longest `--inject` value read (a typo, not a schedule, beyond this).
const MAX_SPEC_LEN: usize = 256;

/// What goes wrong with an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InfectionKind {
    /// A new system prompt carrying injected instructions; input tokens
    /// jump (the injected document) and the agent reaches for more tools.
    PromptInjection,
    /// A new system prompt (someone shipped a different one); behaviour
    /// otherwise unchanged.
    PromptDrift,
    /// The agent loops on its tools: tool calls and LLM calls explode.
    InfiniteLoop,
    /// An expensive model and long answers: cost per turn jumps.
    CostOverrun,
    /// A tool the agent calls fails most of the time; the agent retries.
    ToolInstability,
    /// The model provider is slow and failing for a share of the fleet: an
    /// external cause, not the agents' fault.
    ProviderOutage,
    /// Input tokens and latency grow slowly (a knowledge base that grows):
    /// legitimate change the baseline must learn, never an infection.
    GradualDrift,
}

impl InfectionKind {
    pub const ALL: [InfectionKind; 7] = [
        InfectionKind::PromptInjection,
        InfectionKind::PromptDrift,
        InfectionKind::InfiniteLoop,
        InfectionKind::CostOverrun,
        InfectionKind::ToolInstability,
        InfectionKind::ProviderOutage,
        InfectionKind::GradualDrift,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            InfectionKind::PromptInjection => "prompt_injection",
            InfectionKind::PromptDrift => "prompt_drift",
            InfectionKind::InfiniteLoop => "infinite_loop",
            InfectionKind::CostOverrun => "cost_overrun",
            InfectionKind::ToolInstability => "tool_instability",
            InfectionKind::ProviderOutage => "provider_outage",
            InfectionKind::GradualDrift => "gradual_drift",
        }
    }

    /// True when a healing action on the agent ends it. A provider outage
    /// is outside the agent and gradual drift is not an illness: neither
    /// is cured by resetting the agent.
    pub fn healable(self) -> bool {
        !matches!(
            self,
            InfectionKind::ProviderOutage | InfectionKind::GradualDrift
        )
    }
}

impl fmt::Display for InfectionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for InfectionKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                let known: Vec<&str> = Self::ALL.iter().map(|k| k.as_str()).collect();
                format!("unknown infection {s:?} (known: {})", known.join(", "))
            })
    }
}

/// Which agents an injection hits.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// One agent, by index in the fleet (`3`).
    Index(usize),
    /// One agent, by id (`support-03`).
    Id(String),
    /// A share of the fleet, spread evenly over it (`40%`).
    Share(f64),
    /// Every agent (`*`).
    All,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Index(i) => write!(f, "{i}"),
            Target::Id(id) => f.write_str(id),
            Target::Share(s) => write!(f, "{}%", s * 100.0),
            Target::All => f.write_str("*"),
        }
    }
}

/// One scheduled infection.
#[derive(Debug, Clone, PartialEq)]
pub struct Injection {
    pub kind: InfectionKind,
    pub target: Target,
    /// When it starts, from the simulator's start.
    pub at: Duration,
    /// How long it lasts: for gradual drift the length of the ramp; for
    /// the others, None = until healed (or the end of the run).
    pub lasts: Option<Duration>,
}

impl fmt::Display for Injection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}@{}:{}",
            self.kind,
            self.target,
            humantime::format_duration(self.at)
        )?;
        if let Some(lasts) = self.lasts {
            write!(f, "+{}", humantime::format_duration(lasts))?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Injection {
    type Err = String;

    fn from_str(spec: &str) -> Result<Self, String> {
        if spec.len() > MAX_SPEC_LEN {
            return Err(format!("injection longer than {MAX_SPEC_LEN} bytes"));
        }
        let shape = "expected KIND@AGENT:AT[+FOR], e.g. infinite_loop@3:30s";
        let (kind, rest) = spec
            .split_once('@')
            .ok_or_else(|| format!("{spec:?}: no '@'; {shape}"))?;
        let (target, when) = rest
            .rsplit_once(':')
            .ok_or_else(|| format!("{spec:?}: no ':' before the time; {shape}"))?;
        let kind: InfectionKind = kind.parse().map_err(|e| format!("{spec:?}: {e}"))?;
        let target = parse_target(target).map_err(|e| format!("{spec:?}: {e}"))?;
        let (at, lasts) = match when.split_once('+') {
            Some((at, lasts)) => (at, Some(lasts)),
            None => (when, None),
        };
        let at = parse_duration(at).map_err(|e| format!("{spec:?}: time {e}"))?;
        let lasts = lasts
            .map(parse_duration)
            .transpose()
            .map_err(|e| format!("{spec:?}: duration {e}"))?;
        if lasts.is_some_and(|d| d.is_zero()) {
            return Err(format!("{spec:?}: a duration after '+' must be above 0"));
        }
        Ok(Injection {
            kind,
            target,
            at,
            lasts,
        })
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e} (use e.g. 30s, 2m)"))
}

fn parse_target(s: &str) -> Result<Target, String> {
    if s.is_empty() {
        return Err("no agent after '@'".into());
    }
    if s == "*" {
        return Ok(Target::All);
    }
    if let Some(percent) = s.strip_suffix('%') {
        let share: f64 = percent
            .parse()
            .map_err(|_| format!("share {s:?} is not a percentage"))?;
        if !(share > 0.0 && share <= 100.0) {
            return Err(format!("share {s:?} must be above 0% and at most 100%"));
        }
        return Ok(Target::Share(share / 100.0));
    }
    if let Ok(index) = s.parse::<usize>() {
        return Ok(Target::Index(index));
    }
    Ok(Target::Id(s.to_string()))
}

/// The indices of the agents `target` hits in a fleet of ids `ids`, or
/// why none can be.
pub fn select(target: &Target, ids: &[String]) -> Result<Vec<usize>, String> {
    let n = ids.len();
    match target {
        Target::All => Ok((0..n).collect()),
        Target::Index(i) if *i < n => Ok(vec![*i]),
        Target::Index(i) => Err(format!("agent index {i} is outside the fleet of {n}")),
        Target::Id(id) => ids
            .iter()
            .position(|a| a == id)
            .map(|i| vec![i])
            .ok_or_else(|| format!("no agent {id:?} in the fleet")),
        Target::Share(share) => {
            // Agent i is hit when the running share crosses a whole number
            // at i: evenly spread, and exactly ceil-ish(share × n) agents.
            let hit: Vec<usize> = (0..n)
                .filter(|&i| ((i + 1) as f64 * share).floor() > (i as f64 * share).floor())
                .collect();
            if hit.is_empty() {
                Err(format!(
                    "{}% of {n} agents is none",
                    (share * 100.0).round()
                ))
            } else {
                Ok(hit)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_with_every_target_form() {
        let i: Injection = "infinite_loop@3:30s".parse().unwrap();
        assert_eq!(i.kind, InfectionKind::InfiniteLoop);
        assert_eq!(i.target, Target::Index(3));
        assert_eq!(i.at, Duration::from_secs(30));
        assert_eq!(i.lasts, None);
        let o: Injection = "provider_outage@40%:1m+30s".parse().unwrap();
        assert_eq!(o.target, Target::Share(0.4));
        assert_eq!(o.at, Duration::from_secs(60));
        assert_eq!(o.lasts, Some(Duration::from_secs(30)));
        let d: Injection = "gradual_drift@research-01:0".parse().unwrap();
        assert_eq!(d.target, Target::Id("research-01".into()));
        assert_eq!(d.at, Duration::ZERO);
        assert_eq!(d.to_string(), "gradual_drift@research-01:0s");
        assert_eq!(o.to_string(), "provider_outage@40%:1m+30s");
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        let err = |s: &str| s.parse::<Injection>().unwrap_err();
        assert!(err("infinite_loop").contains("no '@'"));
        assert!(err("loop@3:30s").contains("unknown infection \"loop\""));
        assert!(err("infinite_loop@3").contains("no ':'"));
        assert!(err("infinite_loop@:3s").contains("no agent"));
        assert!(err("infinite_loop@3:soon").contains("time"));
        assert!(err("provider_outage@120%:3s").contains("at most 100%"));
        assert!(err("provider_outage@40%:3s+0s").contains("above 0"));
        assert!(err(&"x".repeat(300)).contains("longer than"));
    }

    #[test]
    fn a_share_is_spread_over_the_fleet() {
        let ids: Vec<String> = (0..10).map(|i| format!("a{i}")).collect();
        let hit = select(&Target::Share(0.4), &ids).unwrap();
        assert_eq!(hit, vec![2, 4, 7, 9]);
        assert_eq!(select(&Target::All, &ids).unwrap().len(), 10);
        assert_eq!(select(&Target::Id("a3".into()), &ids).unwrap(), vec![3]);
        assert!(
            select(&Target::Index(10), &ids)
                .unwrap_err()
                .contains("outside")
        );
        assert!(
            select(&Target::Id("zz".into()), &ids)
                .unwrap_err()
                .contains("no agent")
        );
        assert!(select(&Target::Share(0.01), &ids).is_err());
    }
}
