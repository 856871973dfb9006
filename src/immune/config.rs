//! `[processors.immune]`: how the immune core learns, judges and responds.
//! Every default is the reference behaviour of DESIGN.md "Immune core".

use crate::config::ConfigIssue;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Largest evaluation window: the median is sorted on the stack.
pub const MAX_EVALUATION_WINDOW: usize = 15;
const MAX_SPAN: u32 = 100_000;
const MAX_SAMPLES: u32 = 100_000;
const MAX_TICKS: u32 = 1_000;
const MAX_SIGMA: f64 = 1_000.0;
const MAX_AGENTS: usize = 10_000_000;
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ImmuneConfig {
    /// Deviation (in σ) of the sustained view (median of the evaluation
    /// window) above which a metric is anomalous. Default 2.5.
    pub threshold_sigma: f64,
    /// Deviation at or above which healing needs an operator's approval.
    /// Default 5.0.
    pub approval_sigma: f64,
    /// Deviation beyond which the latest turn alone is anomalous and an
    /// infection is confirmed at once. Default 6.0.
    pub severe_sigma: f64,
    /// Turns learned before an agent's baseline is ready (plain running
    /// mean and variance until then). Default 15.
    pub min_samples: u32,
    /// EWMA span of the baseline: alpha = 2/(span+1). Default 50.
    pub ewma_span: u32,
    /// Sustained-anomalous evaluations that move a SUSPECTED agent to
    /// DRAINING. Default 3.
    pub suspect_ticks: u32,
    /// Anomalous evaluations in a row that confirm an infection (the
    /// `agent_immune.infection` event). Default 3.
    pub confirm_after: u32,
    /// Fresh post-heal turns an agent must pass in PROBATION. Default 10.
    pub probation_samples: u32,
    /// How long into PROBATION a turn is judged fresh only if it ended
    /// after the heal (on the agent's clock as learned). After this every
    /// turn received counts as fresh, whatever its timestamps, so a wrong
    /// clock estimate cannot hold an agent in PROBATION. Default "2m".
    #[serde(with = "crate::config::duration")]
    pub probation_deadline: Duration,
    /// How long in-flight work may finish before a draining agent is
    /// quarantined. Default "30s".
    #[serde(with = "crate::config::duration")]
    pub drain_timeout: Duration,
    /// How long a healing action may take before it counts as failed.
    /// Default "2m".
    #[serde(with = "crate::config::duration")]
    pub healing_timeout: Duration,
    /// Turns in the evaluation window: the sustained view is their median,
    /// and a turn is learned only after leaving it clean. Default 5.
    pub evaluation_window: usize,
    /// After warmup, each learned value is clipped to mean ± this many σ.
    /// Default 4.0.
    pub clip_sigma: f64,
    /// EWMA span used for `accelerate_samples` turns after a successful
    /// heal, so the baseline follows the healed agent quickly. Default 10.
    pub accelerate_span: u32,
    /// Turns learned with the accelerated span after a heal. Default 50.
    pub accelerate_samples: u32,
    /// σ floor of the log1p-scale metrics (latency, tokens, cost), in log
    /// units. Default 0.05.
    pub log_stddev_floor: f64,
    /// σ floor of tool calls per turn, in calls. Default 0.5.
    pub tools_stddev_floor: f64,
    /// σ floor of the error and retry rates (share of turns). Default 0.1.
    pub rate_stddev_floor: f64,
    /// σ floor relative to the baseline mean (in natural units). Default 0.05.
    pub relative_stddev_floor: f64,
    /// Share of the other monitored agents showing an overlapping anomaly
    /// from which the cause is fleet-wide (alert, no quarantine).
    /// Default 0.30.
    pub fleet_wide_share: f64,
    /// Share from which an anomaly is partial-fleet. Default 0.15.
    pub partial_fleet_share: f64,
    /// How long after an infection is confirmed the fleet may still show
    /// the same anomaly before the agent is drained: in an outage, the
    /// peers' slow or failing turns are judged only as they end. An agent
    /// held before its peers showed it is released anyway once they do.
    /// "0s" drains as soon as the sustained view says so. Default "2s".
    #[serde(with = "crate::config::duration")]
    pub correlation_hold: Duration,
    /// Agents monitored by this process. Split evenly across detection
    /// shards (each shard holds its share). When a shard's share is full,
    /// a new agent takes the place of the least recently seen one that
    /// holds nothing an operator needs (INITIALIZING or HEALTHY first, then
    /// SUSPECTED; never one draining, quarantined, healing, in probation
    /// or exhausted); when every place is so held, its turns are counted
    /// and refused. Default 100000.
    pub max_agents: usize,
}

impl Default for ImmuneConfig {
    fn default() -> Self {
        Self {
            threshold_sigma: 2.5,
            approval_sigma: 5.0,
            severe_sigma: 6.0,
            min_samples: 15,
            ewma_span: 50,
            suspect_ticks: 3,
            confirm_after: 3,
            probation_samples: 10,
            probation_deadline: Duration::from_secs(120),
            drain_timeout: Duration::from_secs(30),
            healing_timeout: Duration::from_secs(120),
            evaluation_window: 5,
            clip_sigma: 4.0,
            accelerate_span: 10,
            accelerate_samples: 50,
            log_stddev_floor: 0.05,
            tools_stddev_floor: 0.5,
            rate_stddev_floor: 0.1,
            relative_stddev_floor: 0.05,
            fleet_wide_share: 0.30,
            partial_fleet_share: 0.15,
            correlation_hold: Duration::from_secs(2),
            max_agents: 100_000,
        }
    }
}

impl ImmuneConfig {
    /// EWMA weight of a new sample: 2/(span+1).
    pub fn alpha(&self) -> f64 {
        2.0 / (f64::from(self.ewma_span) + 1.0)
    }

    /// EWMA weight while the baseline is accelerated after a heal.
    pub fn accelerate_alpha(&self) -> f64 {
        2.0 / (f64::from(self.accelerate_span) + 1.0)
    }

    pub fn validate(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        let mut sigma = |key: &str, value: f64| {
            if !(value.is_finite() && value > 0.0 && value <= MAX_SIGMA) {
                issues.push(ConfigIssue::new(
                    key,
                    format!("must be a number above 0 and at most {MAX_SIGMA}, got {value}"),
                ));
                false
            } else {
                true
            }
        };
        let sigmas_ok = [
            sigma("threshold_sigma", self.threshold_sigma),
            sigma("approval_sigma", self.approval_sigma),
            sigma("severe_sigma", self.severe_sigma),
            sigma("clip_sigma", self.clip_sigma),
        ];
        if sigmas_ok[..3].iter().all(|ok| *ok) {
            if self.threshold_sigma >= self.approval_sigma {
                issues.push(ConfigIssue::new(
                    "approval_sigma",
                    format!(
                        "must be above threshold_sigma ({}), got {}",
                        self.threshold_sigma, self.approval_sigma
                    ),
                ));
            }
            if self.approval_sigma > self.severe_sigma {
                issues.push(ConfigIssue::new(
                    "severe_sigma",
                    format!(
                        "must be at least approval_sigma ({}), got {}",
                        self.approval_sigma, self.severe_sigma
                    ),
                ));
            }
        }
        if sigmas_ok[0] && sigmas_ok[3] && self.clip_sigma <= self.threshold_sigma {
            issues.push(ConfigIssue::new(
                "clip_sigma",
                format!(
                    "must be above threshold_sigma ({}) or anomalies could never be learned from, got {}",
                    self.threshold_sigma, self.clip_sigma
                ),
            ));
        }
        let mut count = |key: &str, value: u32, min: u32, max: u32| {
            if value < min || value > max {
                issues.push(ConfigIssue::new(
                    key,
                    format!("must be between {min} and {max}, got {value}"),
                ));
            }
        };
        count("min_samples", self.min_samples, 2, MAX_SAMPLES);
        count("ewma_span", self.ewma_span, 2, MAX_SPAN);
        count("accelerate_span", self.accelerate_span, 2, MAX_SPAN);
        count(
            "accelerate_samples",
            self.accelerate_samples,
            0,
            MAX_SAMPLES,
        );
        count("suspect_ticks", self.suspect_ticks, 1, MAX_TICKS);
        count("confirm_after", self.confirm_after, 1, MAX_TICKS);
        count("probation_samples", self.probation_samples, 1, MAX_SAMPLES);
        if self.accelerate_span > self.ewma_span {
            issues.push(ConfigIssue::new(
                "accelerate_span",
                format!(
                    "must be at most ewma_span ({}) so learning speeds up, got {}",
                    self.ewma_span, self.accelerate_span
                ),
            ));
        }
        if self.evaluation_window == 0 || self.evaluation_window > MAX_EVALUATION_WINDOW {
            issues.push(ConfigIssue::new(
                "evaluation_window",
                format!(
                    "must be between 1 and {MAX_EVALUATION_WINDOW}, got {}",
                    self.evaluation_window
                ),
            ));
        }
        if self.correlation_hold > MAX_TIMEOUT {
            issues.push(ConfigIssue::new(
                "correlation_hold",
                format!(
                    "must be at most 24h, got {}",
                    humantime::format_duration(self.correlation_hold)
                ),
            ));
        }
        for (key, value) in [
            ("drain_timeout", self.drain_timeout),
            ("healing_timeout", self.healing_timeout),
            ("probation_deadline", self.probation_deadline),
        ] {
            if value.is_zero() || value > MAX_TIMEOUT {
                issues.push(ConfigIssue::new(
                    key,
                    format!(
                        "must be above 0 and at most 24h, got {}",
                        humantime::format_duration(value)
                    ),
                ));
            }
        }
        for (key, value) in [
            ("log_stddev_floor", self.log_stddev_floor),
            ("tools_stddev_floor", self.tools_stddev_floor),
            ("rate_stddev_floor", self.rate_stddev_floor),
            ("relative_stddev_floor", self.relative_stddev_floor),
        ] {
            if !(value.is_finite() && value > 0.0 && value <= 1_000.0) {
                issues.push(ConfigIssue::new(
                    key,
                    format!("must be a number above 0 (a σ of 0 makes every change infinite), got {value}"),
                ));
            }
        }
        let share_ok = |v: f64| v.is_finite() && v > 0.0 && v <= 1.0;
        for (key, value) in [
            ("fleet_wide_share", self.fleet_wide_share),
            ("partial_fleet_share", self.partial_fleet_share),
        ] {
            if !share_ok(value) {
                issues.push(ConfigIssue::new(
                    key,
                    format!("must be a share above 0 and at most 1, got {value}"),
                ));
            }
        }
        if share_ok(self.fleet_wide_share)
            && share_ok(self.partial_fleet_share)
            && self.partial_fleet_share >= self.fleet_wide_share
        {
            issues.push(ConfigIssue::new(
                "partial_fleet_share",
                format!(
                    "must be below fleet_wide_share ({}), got {}",
                    self.fleet_wide_share, self.partial_fleet_share
                ),
            ));
        }
        if self.max_agents == 0 || self.max_agents > MAX_AGENTS {
            issues.push(ConfigIssue::new(
                "max_agents",
                format!(
                    "must be between 1 and {MAX_AGENTS}, got {}",
                    self.max_agents
                ),
            ));
        }
        issues
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(cfg: &ImmuneConfig) -> Vec<String> {
        cfg.validate().into_iter().map(|i| i.key).collect()
    }

    #[test]
    fn defaults_are_the_designs_and_valid() {
        let cfg = ImmuneConfig::default();
        assert_eq!(cfg.threshold_sigma, 2.5);
        assert_eq!(cfg.approval_sigma, 5.0);
        assert_eq!(cfg.severe_sigma, 6.0);
        assert_eq!(cfg.min_samples, 15);
        assert_eq!(cfg.ewma_span, 50);
        assert_eq!(cfg.suspect_ticks, 3);
        assert_eq!(cfg.probation_samples, 10);
        assert_eq!(cfg.drain_timeout, Duration::from_secs(30));
        assert_eq!(cfg.evaluation_window, 5);
        assert_eq!(cfg.clip_sigma, 4.0);
        assert_eq!(cfg.accelerate_samples, 50);
        assert_eq!(cfg.confirm_after, 3);
        assert_eq!(cfg.fleet_wide_share, 0.30);
        assert_eq!(cfg.partial_fleet_share, 0.15);
        assert!((cfg.alpha() - 2.0 / 51.0).abs() < 1e-12);
        assert!(cfg.validate().is_empty(), "{:?}", cfg.validate());
    }

    #[test]
    fn the_pipeline_table_parses_and_unknown_keys_are_errors() {
        let cfg: ImmuneConfig = toml::from_str(
            r#"threshold_sigma = 2.5
               approval_sigma = 5.0
               severe_sigma = 6.0
               min_samples = 15
               ewma_span = 50
               suspect_ticks = 3
               probation_samples = 10
               drain_timeout = "30s""#,
        )
        .unwrap();
        assert_eq!(cfg, ImmuneConfig::default());
        assert!(toml::from_str::<ImmuneConfig>("threshold = 2").is_err());
        assert!(toml::from_str::<ImmuneConfig>("drain_timeout = \"soon\"").is_err());
    }

    #[test]
    fn sigmas_must_be_ordered() {
        let cfg = ImmuneConfig {
            threshold_sigma: 5.0,
            approval_sigma: 4.0,
            severe_sigma: 3.0,
            ..ImmuneConfig::default()
        };
        assert_eq!(keys(&cfg), ["approval_sigma", "severe_sigma", "clip_sigma"]);
        let cfg = ImmuneConfig {
            threshold_sigma: f64::NAN,
            ..ImmuneConfig::default()
        };
        assert_eq!(keys(&cfg), ["threshold_sigma"]);
    }

    #[test]
    fn counts_floors_and_shares_are_checked() {
        let cfg = ImmuneConfig {
            min_samples: 1,
            ewma_span: 1,
            evaluation_window: 0,
            drain_timeout: Duration::ZERO,
            log_stddev_floor: 0.0,
            partial_fleet_share: 0.5,
            max_agents: 0,
            ..ImmuneConfig::default()
        };
        assert_eq!(
            keys(&cfg),
            [
                "min_samples",
                "ewma_span",
                "accelerate_span",
                "evaluation_window",
                "drain_timeout",
                "log_stddev_floor",
                "partial_fleet_share",
                "max_agents"
            ]
        );
    }
}
