//! An agent's learned normal: per metric an EWMA mean and variance with a
//! Welford start, a bounded p95 estimate, and the prompt hashes it ran with.
//!
//! An EWMA started at the first sample still underestimates σ by about a
//! third after 15 samples (false alarms); so the first `min_samples` use the
//! plain running mean and variance, and the EWMA continues from them.

use super::config::ImmuneConfig;
use super::metric::{Metric, Scale};
use super::prompt::{PromptBaseline, PromptHash};
use serde::{Deserialize, Serialize};

/// z of the 95th percentile of a normal, to seed the p95 estimate.
const Z95: f64 = 1.645;
/// Step of the p95 tracker in σ per unit of alpha: converges in about
/// 1/(0.4·alpha) samples, jitters by a fraction of σ.
const P95_STEP: f64 = 4.0;

/// One metric's baseline, on the metric's learning scale.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricBaseline {
    samples: u64,
    mean: f64,
    /// Variance: the sample variance during warmup, the EWMA one after.
    var: f64,
    p95: f64,
    /// Samples still to learn with the accelerated alpha.
    accelerated: u32,
}

impl MetricBaseline {
    pub fn samples(&self) -> u64 {
        self.samples
    }

    pub fn mean(&self) -> f64 {
        self.mean
    }

    pub fn variance(&self) -> f64 {
        self.var
    }

    pub fn stddev(&self) -> f64 {
        self.var.max(0.0).sqrt()
    }

    pub fn p95(&self) -> f64 {
        self.p95
    }

    pub fn is_ready(&self, config: &ImmuneConfig) -> bool {
        self.samples >= u64::from(config.min_samples)
    }

    /// Samples left at the accelerated alpha.
    pub fn accelerated(&self) -> u32 {
        self.accelerated
    }

    /// σ as the sentinel divides by: never below `floor` (absolute, learning
    /// scale) nor `relative` of the mean's magnitude in natural units, so a
    /// metric that was always 0 still gives a finite deviation.
    pub fn effective_stddev(&self, metric: Metric, config: &ImmuneConfig) -> f64 {
        let relative = config.relative_stddev_floor;
        let relative_floor = match metric.scale() {
            // 5% of the natural mean, expressed on the log1p scale.
            Scale::Log1p => {
                let f = (self.mean.exp_m1().abs() * (1.0 + relative)).ln_1p() - self.mean;
                // Huge means overflow exp; the floor tends to ln(1 + r).
                if f.is_finite() { f } else { relative.ln_1p() }
            }
            Scale::Linear | Scale::Rate => relative * self.mean.abs(),
        };
        self.stddev()
            .max(relative_floor)
            .max(metric.stddev_floor(config))
    }

    /// Learns one value (on the metric's learning scale).
    pub fn learn(&mut self, x: f64, metric: Metric, config: &ImmuneConfig) {
        if !x.is_finite() {
            return;
        }
        let min = u64::from(config.min_samples);
        if self.samples < min {
            // Welford, with the sample (n−1) variance.
            let n = self.samples + 1;
            let m2 = self.var * self.samples.saturating_sub(1) as f64;
            let delta = x - self.mean;
            self.mean += delta / n as f64;
            let m2 = m2 + delta * (x - self.mean);
            self.var = if n >= 2 { m2 / (n - 1) as f64 } else { 0.0 };
            self.samples = n;
            if n == min {
                self.p95 = self.mean + Z95 * self.stddev();
            }
            return;
        }
        let alpha = if self.accelerated > 0 {
            self.accelerated -= 1;
            config.accelerate_alpha().max(config.alpha())
        } else {
            config.alpha()
        };
        let sd = self.effective_stddev(metric, config);
        let band = config.clip_sigma * sd;
        let x = x.clamp(self.mean - band, self.mean + band);
        let diff = x - self.mean;
        self.mean += alpha * diff;
        self.var = (1.0 - alpha) * (self.var + alpha * diff * diff);
        // Stochastic quantile tracking: up 95% of a step when above, down 5%
        // when below, so it rests where 5% of samples exceed it.
        let step = P95_STEP * alpha * sd;
        self.p95 += if x > self.p95 {
            0.95 * step
        } else {
            -0.05 * step
        };
        self.p95 = self.p95.clamp(self.mean, self.mean + band);
        self.samples = self.samples.saturating_add(1);
    }

    /// Learns faster for `samples` samples (after a successful heal, so the
    /// baseline follows the healed agent).
    pub fn accelerate(&mut self, samples: u32) {
        self.accelerated = samples;
    }

    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

/// Everything the sentinel compares a turn against.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    metrics: [MetricBaseline; Metric::COUNT],
    prompt: PromptBaseline,
    /// Turns learned.
    turns: u64,
}

/// One learned turn: its values on the learning scales (NaN where
/// missing) and what else the baseline keeps of it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LearnedTurn {
    pub values: [f64; Metric::COUNT],
    pub prompt: Option<PromptHash>,
    /// False when token numbers are only a lower bound: they are then
    /// judged (a rise above a lower bound is real) but not learned.
    pub usage_known: bool,
}

impl Baseline {
    pub fn metric(&self, metric: Metric) -> &MetricBaseline {
        &self.metrics[metric.index()]
    }

    pub fn prompt(&self) -> &PromptBaseline {
        &self.prompt
    }

    /// Turns learned so far.
    pub fn turns(&self) -> u64 {
        self.turns
    }

    /// Ready to judge: `min_samples` turns learned.
    pub fn is_ready(&self, config: &ImmuneConfig) -> bool {
        self.turns >= u64::from(config.min_samples)
    }

    /// The σ the sentinel divides a metric's deviation by.
    pub fn effective_stddev(&self, metric: Metric, config: &ImmuneConfig) -> f64 {
        self.metric(metric).effective_stddev(metric, config)
    }

    pub fn learn(&mut self, turn: &LearnedTurn, config: &ImmuneConfig) {
        for metric in Metric::ALL {
            if metric.from_usage() && !turn.usage_known {
                continue;
            }
            self.metrics[metric.index()].learn(turn.values[metric.index()], metric, config);
        }
        if let Some(hash) = turn.prompt {
            let n = self.prompt.learned().saturating_add(1);
            let alpha = if n <= u64::from(config.min_samples) {
                1.0 / n as f64
            } else {
                config.alpha()
            };
            self.prompt.learn(hash, alpha);
        }
        self.turns = self.turns.saturating_add(1);
    }

    /// After a successful heal: follow the healed agent quickly.
    pub fn accelerate(&mut self, config: &ImmuneConfig) {
        for m in &mut self.metrics {
            if m.is_ready(config) {
                m.accelerate(config.accelerate_samples);
            }
        }
    }

    /// Forget everything: the agent is learned again from scratch.
    pub fn reset(&mut self) {
        *self = Self::default();
    }

    /// A summary for people and the API, in natural units.
    pub fn summary(&self, config: &ImmuneConfig) -> BaselineSummary {
        BaselineSummary {
            ready: self.is_ready(config),
            turns: self.turns,
            prompt_hash: self.prompt.main().map(|h| h.to_string()),
            metrics: Metric::ALL
                .iter()
                .map(|&metric| {
                    let m = self.metric(metric);
                    MetricSummary {
                        metric,
                        scale: metric.scale(),
                        samples: m.samples(),
                        ready: m.is_ready(config),
                        mean: metric.natural(m.mean()),
                        p95: metric.natural(m.p95()),
                        stddev: m.stddev(),
                        effective_stddev: self.effective_stddev(metric, config),
                        accelerated: m.accelerated(),
                    }
                })
                .collect(),
        }
    }
}

/// A baseline as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BaselineSummary {
    pub ready: bool,
    pub turns: u64,
    /// The prompt hash the agent ran with while learned (first characters).
    pub prompt_hash: Option<String>,
    pub metrics: Vec<MetricSummary>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricSummary {
    pub metric: Metric,
    pub scale: Scale,
    pub samples: u64,
    pub ready: bool,
    /// Centre in natural units (the geometric mean for log1p metrics).
    pub mean: f64,
    /// Estimated 95th percentile in natural units.
    pub p95: f64,
    /// σ on the learning scale.
    pub stddev: f64,
    /// σ the sentinel divides by (with floors), on the learning scale.
    pub effective_stddev: f64,
    /// Samples left at the accelerated learning rate.
    pub accelerated: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::immune::testkit::Rng;

    fn cfg() -> ImmuneConfig {
        ImmuneConfig::default()
    }

    #[test]
    fn warmup_is_the_plain_running_mean_and_sample_variance() {
        let config = cfg();
        let mut m = MetricBaseline::default();
        let xs: Vec<f64> = (1..=15).map(f64::from).collect();
        for (i, &x) in xs.iter().enumerate() {
            assert!(!m.is_ready(&config), "not ready after {i} samples");
            m.learn(x, Metric::ToolCalls, &config);
        }
        assert!(m.is_ready(&config));
        assert_eq!(m.samples(), 15);
        assert!((m.mean() - 8.0).abs() < 1e-12);
        // Sample variance of 1..=15 is 20.
        assert!((m.variance() - 20.0).abs() < 1e-9, "{}", m.variance());
        assert!((m.p95() - (8.0 + Z95 * 20f64.sqrt())).abs() < 1e-9);
    }

    #[test]
    fn after_warmup_the_ewma_uses_alpha_and_the_variance_formula() {
        let config = cfg();
        let mut m = MetricBaseline::default();
        for x in [10.0, 12.0].iter().cycle().take(15) {
            m.learn(*x, Metric::ToolCalls, &config);
        }
        let (mean, var) = (m.mean(), m.variance());
        let a = 2.0 / 51.0;
        let x = mean + 1.5;
        m.learn(x, Metric::ToolCalls, &config);
        let diff = x - mean;
        assert!((m.mean() - (mean + a * diff)).abs() < 1e-12);
        assert!((m.variance() - (1.0 - a) * (var + a * diff * diff)).abs() < 1e-12);
    }

    #[test]
    fn the_ewma_converges_to_the_mean_and_stddev_of_the_data() {
        let config = cfg();
        let mut m = MetricBaseline::default();
        let mut rng = Rng(7);
        for _ in 0..5000 {
            m.learn(100.0 + 10.0 * rng.normal(), Metric::ToolCalls, &config);
        }
        assert!((m.mean() - 100.0).abs() < 5.0, "{}", m.mean());
        assert!((m.stddev() - 10.0).abs() < 3.0, "{}", m.stddev());
        // p95 of N(100, 10) is 116.4; the tracker is bounded and close.
        assert!((m.p95() - 116.4).abs() < 6.0, "{}", m.p95());
        // And it follows a level shift.
        for _ in 0..2000 {
            m.learn(200.0 + 10.0 * rng.normal(), Metric::ToolCalls, &config);
        }
        assert!((m.mean() - 200.0).abs() < 5.0, "{}", m.mean());
        assert!((m.p95() - 216.4).abs() < 8.0, "{}", m.p95());
    }

    #[test]
    fn the_p95_stays_between_mean_and_the_clip_band() {
        let config = cfg();
        let mut m = MetricBaseline::default();
        for _ in 0..15 {
            m.learn(5.0, Metric::ToolCalls, &config);
        }
        for _ in 0..1000 {
            m.learn(5.0, Metric::ToolCalls, &config);
            let band = config.clip_sigma * m.effective_stddev(Metric::ToolCalls, &config);
            assert!(m.p95() >= m.mean() && m.p95() <= m.mean() + band + 1e-9);
        }
        for _ in 0..1000 {
            m.learn(1e9, Metric::ToolCalls, &config);
            assert!(m.p95().is_finite());
        }
    }

    #[test]
    fn learned_values_are_clipped_to_four_sigma_after_warmup() {
        let config = cfg();
        let mut m = MetricBaseline::default();
        for x in [9.0, 11.0].iter().cycle().take(15) {
            m.learn(*x, Metric::ToolCalls, &config);
        }
        let (mean, sd) = (m.mean(), m.effective_stddev(Metric::ToolCalls, &config));
        m.learn(1e6, Metric::ToolCalls, &config);
        let a = config.alpha();
        assert!((m.mean() - (mean + a * 4.0 * sd)).abs() < 1e-9);
    }

    #[test]
    fn accelerate_uses_the_higher_alpha_for_n_samples() {
        let config = cfg();
        let mut m = MetricBaseline::default();
        for _ in 0..15 {
            m.learn(10.0, Metric::ToolCalls, &config);
        }
        m.accelerate(2);
        let before = m.mean();
        m.learn(10.1, Metric::ToolCalls, &config);
        let fast = config.accelerate_alpha();
        assert!((m.mean() - (before + fast * 0.1)).abs() < 1e-12);
        m.learn(10.1, Metric::ToolCalls, &config);
        assert_eq!(m.accelerated(), 0);
        let before = m.mean();
        m.learn(10.1, Metric::ToolCalls, &config);
        assert!((m.mean() - (before + config.alpha() * (10.1 - before))).abs() < 1e-12);
    }

    #[test]
    fn reset_forgets_everything() {
        let config = cfg();
        let mut b = Baseline::default();
        let turn = LearnedTurn {
            values: [1.0; Metric::COUNT],
            prompt: Some(PromptHash::new("p")),
            usage_known: true,
        };
        for _ in 0..20 {
            b.learn(&turn, &config);
        }
        assert!(b.is_ready(&config));
        b.reset();
        assert!(!b.is_ready(&config));
        assert_eq!(b, Baseline::default());
    }

    #[test]
    fn a_metric_always_zero_has_a_floored_stddev() {
        let config = cfg();
        let mut m = MetricBaseline::default();
        for _ in 0..100 {
            m.learn(0.0, Metric::ErrorRate, &config);
        }
        assert_eq!(m.stddev(), 0.0);
        assert_eq!(m.effective_stddev(Metric::ErrorRate, &config), 0.1);
    }

    #[test]
    fn the_relative_floor_is_five_percent_of_the_natural_mean() {
        let config = ImmuneConfig {
            log_stddev_floor: 0.01,
            ..cfg()
        };
        let mut m = MetricBaseline {
            mean: 1000f64.ln_1p(),
            ..MetricBaseline::default()
        };
        // 5% of 1000 tokens, on the log1p scale.
        let sd = m.effective_stddev(Metric::Tokens, &config);
        assert!((sd - (1051f64 / 1001f64).ln()).abs() < 1e-3, "{sd}");
        m.mean = 40.0;
        assert_eq!(m.effective_stddev(Metric::ToolCalls, &config), 2.0);
    }

    #[test]
    fn unknown_usage_is_not_learned_into_token_metrics() {
        let config = cfg();
        let mut b = Baseline::default();
        let turn = LearnedTurn {
            values: [3.0; Metric::COUNT],
            prompt: None,
            usage_known: false,
        };
        b.learn(&turn, &config);
        assert_eq!(b.metric(Metric::Tokens).samples(), 0);
        assert_eq!(b.metric(Metric::CostUsd).samples(), 0);
        assert_eq!(b.metric(Metric::LatencyMs).samples(), 1);
        assert_eq!(b.turns(), 1);
    }

    #[test]
    fn summary_is_in_natural_units() {
        let config = cfg();
        let mut b = Baseline::default();
        let turn = LearnedTurn {
            values: [
                700f64.ln_1p(),
                1000f64.ln_1p(),
                800f64.ln_1p(),
                200f64.ln_1p(),
                2.0,
                2500f64.ln_1p(),
                0.0,
                0.0,
            ],
            prompt: Some(PromptHash::new("abc")),
            usage_known: true,
        };
        for _ in 0..15 {
            b.learn(&turn, &config);
        }
        let s = b.summary(&config);
        assert!(s.ready);
        assert_eq!(s.prompt_hash.as_deref(), Some("abc"));
        assert!((s.metrics[0].mean - 700.0).abs() < 1e-6);
        assert!((s.metrics[5].mean - 0.0025).abs() < 1e-9);
    }
}
