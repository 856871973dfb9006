//! The sentinel: judges an agent's recent turns against its baseline as it
//! stood before them, per metric, in two views.
//!
//! - *sustained*: the median of the window (a single outlier cannot move
//!   it, 3 bad turns of 5 do); for rates the share of turns showing them,
//!   counted only when most turns of the window do;
//! - *latest*: the newest turn alone, for what the agent itself burns in a
//!   turn (tokens, input, output, tools, cost), so a runaway loop is seen
//!   on the turn it happens.
//!
//! deviation = |value − mean| / max(σ, 5% of the mean, floor). An anomaly
//! is a rise with the sustained view beyond `threshold_sigma` or the latest
//! beyond `severe_sigma`. Drops are reported but raise nothing: every
//! anomaly kind is a rise (spike, explosion, high rate).

use super::anomaly::{AnomalySet, AnomalyType};
use super::baseline::Baseline;
use super::config::ImmuneConfig;
use super::metric::{Metric, Scale};
use super::prompt::PromptHash;
use super::window::EvaluationWindow;
use serde::{Deserialize, Serialize};

/// Which view of the turns a deviation comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum View {
    Sustained,
    Latest,
}

impl View {
    pub fn as_str(self) -> &'static str {
        match self {
            View::Sustained => "sustained",
            View::Latest => "latest",
        }
    }
}

/// One metric judged, on its learning scale (see `Metric::natural`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricReading {
    pub metric: Metric,
    /// False while this metric's own baseline is not ready (e.g. tokens of
    /// an agent whose calls never report usage): nothing else is set.
    pub judged: bool,
    /// Baseline mean.
    pub mean: f64,
    /// σ divided by (with floors).
    pub stddev: f64,
    /// Median of the window (share of turns for rates).
    pub sustained: f64,
    pub sustained_deviation: f64,
    /// The newest turn, for metrics with a latest view.
    pub latest: Option<f64>,
    pub latest_deviation: Option<f64>,
    pub sustained_anomalous: bool,
    pub latest_anomalous: bool,
    /// The sustained value counts toward the max deviation (a rise; for
    /// rates, shown by most turns of the window).
    sustained_counts: bool,
}

impl MetricReading {
    fn unjudged(metric: Metric) -> Self {
        Self {
            metric,
            judged: false,
            mean: f64::NAN,
            stddev: f64::NAN,
            sustained: f64::NAN,
            sustained_deviation: 0.0,
            latest: None,
            latest_deviation: None,
            sustained_anomalous: false,
            latest_anomalous: false,
            sustained_counts: false,
        }
    }

    pub fn is_anomalous(&self) -> bool {
        self.sustained_anomalous || self.latest_anomalous
    }

    /// The view that speaks for this metric: the anomalous one, else the
    /// larger deviation.
    pub fn view(&self) -> View {
        let latest = self.latest_deviation.unwrap_or(0.0);
        match (self.sustained_anomalous, self.latest_anomalous) {
            (true, false) => View::Sustained,
            (false, true) => View::Latest,
            _ if latest > self.sustained_deviation => View::Latest,
            _ => View::Sustained,
        }
    }

    /// |value − mean| / σ of the view that speaks.
    pub fn deviation(&self) -> f64 {
        match self.view() {
            View::Sustained => self.sustained_deviation,
            View::Latest => self.latest_deviation.unwrap_or(0.0),
        }
    }

    /// The value of the view that speaks, in natural units.
    pub fn observed(&self) -> f64 {
        let v = match self.view() {
            View::Sustained => self.sustained,
            View::Latest => self.latest.unwrap_or(f64::NAN),
        };
        self.metric.natural(v)
    }

    /// The baseline mean in natural units.
    pub fn baseline(&self) -> f64 {
        self.metric.natural(self.mean)
    }

    /// The observed value of the view that speaks, for a human.
    pub fn describe_observed(&self) -> String {
        match self.view() {
            View::Sustained => self.metric.describe(self.sustained),
            View::Latest => self.metric.describe(self.latest.unwrap_or(f64::NAN)),
        }
    }
}

/// The prompt side of an evaluation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PromptReading {
    /// The hash the baseline was learned with.
    pub baseline: PromptHash,
    /// The newest hash the baseline does not know, if any turn carried one.
    pub observed: Option<PromptHash>,
    /// Turns of the window carrying an unknown hash.
    pub changed_turns: usize,
    pub window_turns: usize,
    pub changed: bool,
}

/// One evaluation of an agent.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub metrics: [MetricReading; Metric::COUNT],
    pub anomalies: AnomalySet,
    /// Largest deviation of a rise that counts (sustained, or latest for
    /// the metrics with a latest view).
    pub max_deviation: f64,
    /// Largest deviation of the sustained view.
    pub max_sustained_deviation: f64,
    /// The view of the largest anomaly, when there is one.
    pub view: Option<View>,
    pub prompt: Option<PromptReading>,
    /// Turns in the window.
    pub window_turns: usize,
}

impl Evaluation {
    pub fn is_anomalous(&self) -> bool {
        !self.anomalies.is_empty()
    }

    /// An anomaly seen by the sustained view (rates and prompt changes are
    /// sustained by construction).
    pub fn is_sustained_anomalous(&self) -> bool {
        self.metrics.iter().any(|m| m.sustained_anomalous) || self.prompt.is_some_and(|p| p.changed)
    }

    pub fn reading(&self, metric: Metric) -> &MetricReading {
        &self.metrics[metric.index()]
    }

    /// The readings of the anomalous metrics, largest deviation first.
    pub fn anomalous_readings(&self) -> Vec<&MetricReading> {
        let mut r: Vec<_> = self.metrics.iter().filter(|m| m.is_anomalous()).collect();
        r.sort_by(|a, b| b.deviation().total_cmp(&a.deviation()));
        r
    }
}

/// Judges the window against the baseline; None until the baseline is
/// ready or while the window is empty.
pub fn evaluate(
    baseline: &Baseline,
    window: &EvaluationWindow,
    config: &ImmuneConfig,
) -> Option<Evaluation> {
    if !baseline.is_ready(config) || window.is_empty() {
        return None;
    }
    let latest = window.latest()?;
    let turns = window.len();
    let mut metrics = Metric::ALL.map(MetricReading::unjudged);
    let mut anomalies = AnomalySet::EMPTY;
    let mut max_deviation: f64 = 0.0;
    let mut max_sustained: f64 = 0.0;
    let mut top: Option<(f64, View)> = None;
    for metric in Metric::ALL {
        let learned = baseline.metric(metric);
        if !learned.is_ready(config) {
            continue;
        }
        let mean = learned.mean();
        let sd = baseline.effective_stddev(metric, config);
        let deviation = |v: f64| (v - mean).abs() / sd;
        let reading = &mut metrics[metric.index()];
        reading.judged = true;
        reading.mean = mean;
        reading.stddev = sd;
        let sustained = match metric.scale() {
            Scale::Rate => Some(window.showing(metric) as f64 / turns as f64),
            Scale::Log1p | Scale::Linear => window.median(metric),
        };
        if let Some(v) = sustained {
            reading.sustained = v;
            reading.sustained_deviation = deviation(v);
            let majority = metric.scale() != Scale::Rate || window.showing(metric) * 2 > turns;
            reading.sustained_counts = v > mean && majority;
            reading.sustained_anomalous =
                reading.sustained_counts && reading.sustained_deviation > config.threshold_sigma;
        }
        let v = latest.turn.values[metric.index()];
        if metric.has_latest_view() && v.is_finite() {
            let d = deviation(v);
            reading.latest = Some(v);
            reading.latest_deviation = Some(d);
            reading.latest_anomalous = v > mean && d > config.severe_sigma;
            if v > mean {
                max_deviation = max_deviation.max(d);
            }
        }
        if reading.sustained_counts {
            max_sustained = max_sustained.max(reading.sustained_deviation);
            max_deviation = max_deviation.max(reading.sustained_deviation);
        }
        if reading.is_anomalous() {
            anomalies.insert(AnomalyType::of_metric(metric));
            let d = reading.deviation();
            if top.is_none_or(|(best, _)| d > best) {
                top = Some((d, reading.view()));
            }
        }
    }
    let prompt = baseline.prompt().main().map(|main| {
        let (changed_turns, observed) = window.prompts_where(|h| !baseline.prompt().knows(h));
        PromptReading {
            baseline: main,
            observed,
            changed_turns,
            window_turns: turns,
            changed: changed_turns * 2 > turns,
        }
    });
    if prompt.is_some_and(|p| p.changed) {
        anomalies.insert(AnomalyType::PromptChange);
        if top.is_none() {
            top = Some((0.0, View::Sustained));
        }
    }
    Some(Evaluation {
        metrics,
        anomalies,
        max_deviation,
        max_sustained_deviation: max_sustained,
        view: top.map(|(_, v)| v),
        prompt,
        window_turns: turns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::immune::agent::{learned_turn, window_turn};
    use crate::immune::testkit::SimAgent;
    use crate::immune::vitals::Vitals;

    fn cfg() -> ImmuneConfig {
        ImmuneConfig::default()
    }

    /// A baseline learned from `n` healthy turns of `agent`.
    fn learned(agent: &mut SimAgent, n: usize) -> Baseline {
        let config = cfg();
        let mut b = Baseline::default();
        for _ in 0..n {
            b.learn(&learned_turn(&agent.next_turn()), &config);
        }
        b
    }

    /// Five fresh turns of `agent`; `sick(i, vitals)` changes turn i.
    fn window(agent: &mut SimAgent, mut sick: impl FnMut(usize, &mut Vitals)) -> EvaluationWindow {
        let mut w = EvaluationWindow::new(5);
        for i in 0..5 {
            let mut v = agent.next_turn();
            sick(i, &mut v);
            w.push(window_turn(&v));
        }
        w
    }

    fn judge(seed: u64, sick: impl FnMut(usize, &mut Vitals)) -> Evaluation {
        let mut agent = SimAgent::new("a", seed);
        let b = learned(&mut agent, 200);
        let w = window(&mut agent, sick);
        evaluate(&b, &w, &cfg()).unwrap()
    }

    fn kinds(e: &Evaluation) -> Vec<AnomalyType> {
        e.anomalies.iter().collect()
    }

    #[test]
    fn nothing_is_judged_before_the_baseline_is_ready() {
        let mut agent = SimAgent::new("a", 1);
        let b = learned(&mut agent, 14);
        let w = window(&mut agent, |_, _| {});
        assert!(evaluate(&b, &w, &cfg()).is_none());
        let b = learned(&mut agent, 15);
        assert!(evaluate(&b, &w, &cfg()).is_some());
        assert!(evaluate(&b, &EvaluationWindow::new(5), &cfg()).is_none());
    }

    #[test]
    fn healthy_turns_raise_nothing() {
        for seed in 0..20 {
            let e = judge(seed, |_, _| {});
            assert!(!e.is_anomalous(), "seed {seed}: {:?}", kinds(&e));
            assert!(e.max_deviation < 2.5);
        }
    }

    #[test]
    fn each_anomaly_type_is_raised_by_its_own_rise() {
        use AnomalyType::*;
        // Cost is left as reported, so token rises are token anomalies only.
        type Sick = fn(usize, &mut Vitals);
        let cases: [(AnomalyType, Sick, &[AnomalyType]); 9] = [
            (LatencySpike, |_, v| v.latency_ms *= 6.0, &[LatencySpike]),
            (
                InputTokenSpike,
                |_, v| v.input_tokens *= 5,
                &[TokenSpike, InputTokenSpike],
            ),
            (
                OutputTokenSpike,
                |_, v| v.output_tokens *= 8,
                &[TokenSpike, OutputTokenSpike],
            ),
            (
                TokenSpike,
                |_, v| {
                    v.input_tokens *= 3;
                    v.output_tokens *= 3;
                },
                &[TokenSpike, InputTokenSpike, OutputTokenSpike],
            ),
            (CostSpike, |_, v| v.cost_usd *= 10.0, &[CostSpike]),
            (ToolExplosion, |_, v| v.tool_calls = 25, &[ToolExplosion]),
            (
                HighRetryRate,
                |i, v| v.retries = u32::from(i >= 2) * 3,
                &[HighRetryRate],
            ),
            (
                ErrorRateSpike,
                |i, v| v.errors = u32::from(i >= 1),
                &[ErrorRateSpike],
            ),
            (
                PromptChange,
                |i, v| {
                    if i >= 2 {
                        v.prompt_hash = Some("ffff0000".to_string());
                    }
                },
                &[PromptChange],
            ),
        ];
        for (kind, sick, expected) in cases {
            let e = judge(3, sick);
            assert_eq!(kinds(&e), expected, "{kind}");
            assert!(e.anomalies.contains(kind));
            assert!(e.is_sustained_anomalous(), "{kind}");
        }
    }

    #[test]
    fn a_single_outlier_does_not_move_the_sustained_view_three_of_five_do() {
        let e = judge(4, |i, v| {
            if i == 2 {
                v.latency_ms *= 20.0;
            }
        });
        let latency = e.reading(Metric::LatencyMs);
        assert!(
            latency.sustained_deviation < 1.5,
            "{}",
            latency.sustained_deviation
        );
        assert!(!e.is_anomalous());
        let e = judge(4, |i, v| {
            if i % 2 == 0 {
                v.latency_ms *= 6.0;
            }
        });
        assert_eq!(kinds(&e), [AnomalyType::LatencySpike]);
        assert_eq!(e.view, Some(View::Sustained));
    }

    #[test]
    fn the_latest_turn_alone_shows_a_burst_but_not_a_slow_turn() {
        let e = judge(5, |i, v| {
            if i == 4 {
                v.input_tokens *= 5;
                v.output_tokens *= 5;
            }
        });
        assert!(e.anomalies.contains(AnomalyType::TokenSpike));
        assert_eq!(e.view, Some(View::Latest));
        assert!(!e.is_sustained_anomalous());
        let tokens = e.reading(Metric::Tokens);
        assert_eq!(tokens.view(), View::Latest);
        assert!(tokens.deviation() > 6.0);
        assert!((tokens.observed() / tokens.baseline() - 5.0).abs() < 1.5);
        // A slow turn is most often the provider's: no latest view for latency.
        let e = judge(5, |i, v| {
            if i == 4 {
                v.latency_ms *= 30.0;
            }
        });
        assert!(!e.is_anomalous(), "{:?}", kinds(&e));
        assert!(e.reading(Metric::LatencyMs).latest.is_none());
    }

    #[test]
    fn rates_count_only_when_most_turns_show_them() {
        let e = judge(6, |i, v| v.errors = u32::from(i < 2));
        assert!(!e.is_anomalous());
        let errors = e.reading(Metric::ErrorRate);
        assert!((errors.sustained - 0.4).abs() < 1e-12);
        // Two of five is 4σ over a zero baseline, but a minority.
        assert!(errors.sustained_deviation > 2.5);
        assert!(e.max_deviation < 2.5);
        let e = judge(6, |i, v| v.errors = u32::from(i < 3));
        assert_eq!(kinds(&e), [AnomalyType::ErrorRateSpike]);
    }

    #[test]
    fn a_metric_that_was_always_zero_gives_a_finite_deviation() {
        let e = judge(7, |_, v| v.retries = 1);
        let retries = e.reading(Metric::RetryRate);
        assert_eq!(retries.mean, 0.0);
        assert_eq!(retries.stddev, 0.1);
        assert!((retries.sustained_deviation - 10.0).abs() < 1e-9);
        assert!(e.max_deviation.is_finite());
    }

    #[test]
    fn max_deviation_is_the_largest_counted_rise() {
        let e = judge(8, |_, v| {
            v.latency_ms *= 4.0;
            v.tool_calls = 12;
        });
        let largest = e
            .metrics
            .iter()
            .filter(|m| m.is_anomalous())
            .map(MetricReading::deviation)
            .fold(0.0, f64::max);
        assert_eq!(e.max_deviation, largest);
        assert_eq!(e.max_deviation, e.reading(Metric::ToolCalls).deviation());
        assert!(e.max_sustained_deviation <= e.max_deviation);
    }

    #[test]
    fn drops_are_reported_but_raise_nothing() {
        let e = judge(9, |_, v| v.latency_ms /= 10.0);
        assert!(!e.is_anomalous());
        assert!(e.reading(Metric::LatencyMs).deviation() > 2.5);
        assert!(e.max_deviation < 2.5);
    }

    #[test]
    fn a_stable_prompt_hash_is_no_change_and_missing_hashes_do_not_count() {
        let e = judge(10, |_, _| {});
        let p = e.prompt.unwrap();
        assert!(!p.changed);
        assert_eq!(p.changed_turns, 0);
        assert_eq!(p.baseline.as_str(), "a1b2c3d4e5f60718");
        let e = judge(10, |_, v| v.prompt_hash = None);
        assert!(!e.anomalies.contains(AnomalyType::PromptChange));
        let e = judge(10, |i, v| {
            if i < 2 {
                v.prompt_hash = Some("other".into());
            }
        });
        assert!(!e.anomalies.contains(AnomalyType::PromptChange));
        assert_eq!(e.prompt.unwrap().changed_turns, 2);
    }

    #[test]
    fn log_scale_judges_ratios_the_same_at_any_size() {
        let dev_at = |latency: f64| {
            let mut agent = SimAgent::new("a", 11);
            agent.latency_ms = latency;
            let b = learned(&mut agent, 300);
            let w = window(&mut agent, |_, v| v.latency_ms *= 3.0);
            evaluate(&b, &w, &cfg())
                .unwrap()
                .reading(Metric::LatencyMs)
                .deviation()
        };
        let (fast, slow) = (dev_at(100.0), dev_at(10_000.0));
        assert!((fast - slow).abs() < 0.05 * fast, "{fast} vs {slow}");
    }

    #[test]
    fn observed_and_baseline_are_in_natural_units() {
        let e = judge(12, |_, v| v.latency_ms = 4800.0);
        let r = e.reading(Metric::LatencyMs);
        assert!((r.observed() - 4800.0).abs() < 1e-6);
        assert!((r.baseline() - 800.0).abs() < 120.0, "{}", r.baseline());
    }
}
