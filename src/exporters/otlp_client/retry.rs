//! `retry_on_failure`: the Collector's exporterhelper retry policy
//! (exponential backoff from 5s to 30s, x1.5, give up after 300s), with a
//! little jitter so many senders do not retry in step.

use super::SendError;
use crate::config::ConfigIssue;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Each delay is moved by up to this fraction either way.
const JITTER: f64 = 0.2;
const MAX_INTERVAL_LIMIT: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Retry retryable failures at all. Default true.
    pub enabled: bool,
    /// Wait before the first retry. Default "5s".
    #[serde(with = "crate::config::duration")]
    pub initial_interval: Duration,
    /// Longest wait between retries. Default "30s".
    #[serde(with = "crate::config::duration")]
    pub max_interval: Duration,
    /// Give up on a request after this long; "0s" retries forever.
    /// Default "300s".
    #[serde(with = "crate::config::duration")]
    pub max_elapsed_time: Duration,
    /// Factor applied to the wait after each retry. Default 1.5.
    pub multiplier: f64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            initial_interval: Duration::from_secs(5),
            max_interval: Duration::from_secs(30),
            max_elapsed_time: Duration::from_secs(300),
            multiplier: 1.5,
        }
    }
}

impl RetryConfig {
    pub fn validate(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if self.initial_interval.is_zero() || self.initial_interval > MAX_INTERVAL_LIMIT {
            issues.push(ConfigIssue::new(
                "initial_interval",
                format!("must be between 1ms and {MAX_INTERVAL_LIMIT:?}"),
            ));
        }
        if self.max_interval < self.initial_interval || self.max_interval > MAX_INTERVAL_LIMIT {
            issues.push(ConfigIssue::new(
                "max_interval",
                format!("must be at least initial_interval and at most {MAX_INTERVAL_LIMIT:?}"),
            ));
        }
        if !(self.multiplier.is_finite() && (1.0..=100.0).contains(&self.multiplier)) {
            issues.push(ConfigIssue::new(
                "multiplier",
                format!("must be between 1 and 100, got {}", self.multiplier),
            ));
        }
        issues
    }
}

/// Successive waits: initial, x multiplier, capped at max_interval, each
/// with jitter.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
    max: Duration,
    multiplier: f64,
}

impl Backoff {
    pub fn new(cfg: &RetryConfig) -> Self {
        Self {
            next: cfg.initial_interval,
            max: cfg.max_interval,
            multiplier: cfg.multiplier,
        }
    }

    pub fn next_delay(&mut self) -> Duration {
        let current = self.next;
        self.next = current.mul_f64(self.multiplier).min(self.max);
        current.mul_f64(1.0 + JITTER * (2.0 * random_unit() - 1.0))
    }
}

/// A number in [0, 1) from the std hasher's random keys: jitter needs no
/// more than that, and no extra dependency.
fn random_unit() -> f64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// Runs `attempt` until it succeeds, fails permanently, or the policy gives
/// up. A retryable failure's `retry_after` (Retry-After, RetryInfo) is
/// honoured when longer than the backoff. `abandon` stops at once (shutdown
/// deadline), cancelling an attempt in progress. `what` names the request
/// in logs.
pub async fn with_retry<F, Fut>(
    cfg: &RetryConfig,
    abandon: &CancellationToken,
    what: &str,
    mut attempt: F,
) -> Result<(), SendError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), SendError>>,
{
    let start = Instant::now();
    let mut backoff = Backoff::new(cfg);
    loop {
        let outcome = tokio::select! {
            biased;
            () = abandon.cancelled() => return Err(abandoned()),
            outcome = attempt() => outcome,
        };
        let (message, retry_after) = match outcome {
            Ok(()) => return Ok(()),
            Err(permanent @ SendError::Permanent { .. }) => return Err(permanent),
            Err(SendError::Retryable {
                message,
                retry_after,
            }) => (message, retry_after),
        };
        if !cfg.enabled {
            return Err(SendError::Retryable {
                message: format!("{message} (retry_on_failure disabled)"),
                retry_after,
            });
        }
        let delay = backoff.next_delay().max(retry_after.unwrap_or_default());
        let elapsed = start.elapsed();
        if !cfg.max_elapsed_time.is_zero() && elapsed + delay > cfg.max_elapsed_time {
            return Err(SendError::Retryable {
                message: format!(
                    "{message} (gave up after {:?}, max_elapsed_time {:?})",
                    round_ms(elapsed),
                    cfg.max_elapsed_time
                ),
                retry_after,
            });
        }
        tracing::warn!("{what}: {message}; retrying in {:?}", round_ms(delay));
        tokio::select! {
            biased;
            () = abandon.cancelled() => return Err(abandoned()),
            () = tokio::time::sleep(delay) => {}
        }
    }
}

fn abandoned() -> SendError {
    SendError::Retryable {
        message: "abandoned at shutdown".to_string(),
        retry_after: None,
    }
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis().try_into().unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn fast() -> RetryConfig {
        RetryConfig {
            initial_interval: Duration::from_millis(1),
            max_interval: Duration::from_millis(4),
            ..RetryConfig::default()
        }
    }

    fn retryable() -> SendError {
        SendError::Retryable {
            message: "503".into(),
            retry_after: None,
        }
    }

    #[test]
    fn defaults_are_the_collectors() {
        let cfg = RetryConfig::default();
        assert!(cfg.enabled);
        assert_eq!(
            (cfg.initial_interval, cfg.max_interval, cfg.max_elapsed_time),
            (
                Duration::from_secs(5),
                Duration::from_secs(30),
                Duration::from_secs(300)
            )
        );
        assert_eq!(cfg.multiplier, 1.5);
        assert!(cfg.validate().is_empty());
    }

    #[test]
    fn backoff_grows_by_the_multiplier_up_to_the_cap_with_small_jitter() {
        let mut backoff = Backoff::new(&RetryConfig::default());
        let expected = [5.0, 7.5, 11.25, 16.875, 25.3125, 30.0, 30.0];
        for want in expected {
            let got = backoff.next_delay().as_secs_f64();
            assert!(
                (got - want).abs() <= want * JITTER + 1e-9,
                "{got} vs {want}"
            );
        }
    }

    #[test]
    fn invalid_policy_is_reported() {
        let cfg = RetryConfig {
            initial_interval: Duration::ZERO,
            max_interval: Duration::from_secs(7200),
            multiplier: 0.5,
            ..RetryConfig::default()
        };
        let keys: Vec<_> = cfg.validate().into_iter().map(|i| i.key).collect();
        assert_eq!(keys, ["initial_interval", "max_interval", "multiplier"]);
    }

    #[tokio::test]
    async fn retries_until_success() {
        let calls = AtomicU32::new(0);
        let result = with_retry(&fast(), &CancellationToken::new(), "test", || async {
            if calls.fetch_add(1, Ordering::SeqCst) < 3 {
                Err(retryable())
            } else {
                Ok(())
            }
        })
        .await;
        assert_eq!(result, Ok(()));
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn permanent_failure_is_not_retried() {
        let calls = AtomicU32::new(0);
        let result = with_retry(&fast(), &CancellationToken::new(), "test", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(SendError::Permanent {
                message: "400".into(),
            })
        })
        .await;
        assert!(matches!(result, Err(SendError::Permanent { .. })));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn disabled_policy_tries_once() {
        let calls = AtomicU32::new(0);
        let cfg = RetryConfig {
            enabled: false,
            ..fast()
        };
        let result = with_retry(&cfg, &CancellationToken::new(), "test", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(retryable())
        })
        .await;
        assert!(result.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn gives_up_after_max_elapsed_time_and_honours_retry_after() {
        let cfg = RetryConfig {
            max_elapsed_time: Duration::from_millis(500),
            ..fast()
        };
        let calls = AtomicU32::new(0);
        let start = Instant::now();
        let result = with_retry(&cfg, &CancellationToken::new(), "test", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(SendError::Retryable {
                message: "429".into(),
                retry_after: Some(Duration::from_millis(200)),
            })
        })
        .await;
        let err = result.unwrap_err().to_string();
        assert!(err.contains("gave up"), "{err}");
        // 200ms twice (Retry-After beats the 1-4ms backoff); a third wait
        // would pass 500ms.
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert!(start.elapsed() >= Duration::from_millis(400));
    }

    #[tokio::test]
    async fn abandon_stops_a_pending_wait() {
        let abandon = CancellationToken::new();
        let attempted = Arc::new(tokio::sync::Notify::new());
        let task = {
            let (abandon, attempted) = (abandon.clone(), attempted.clone());
            tokio::spawn(async move {
                // Default policy: the first wait is 5s.
                with_retry(&RetryConfig::default(), &abandon, "test", || {
                    attempted.notify_one();
                    async { Err(retryable()) }
                })
                .await
            })
        };
        attempted.notified().await;
        abandon.cancel();
        let result = tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .unwrap()
            .unwrap();
        assert!(result.unwrap_err().to_string().contains("abandoned"));
    }
}
