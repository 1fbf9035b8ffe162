//! Bounded retries with exponential backoff and jitter, for the errors that may pass.

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::MirrorError;

/// How hard to try before reporting a failure.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 4,
            first_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// Runs `operation` until it succeeds, fails for good, or the attempts are spent.
    pub async fn run<T, F, Fut>(&self, mut operation: F) -> Result<T, MirrorError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, MirrorError>>,
    {
        let mut attempt = 1;
        loop {
            match operation().await {
                Err(error) if attempt < self.attempts => {
                    let Some(asked) = error.retry() else { return Err(error) };
                    let delay = asked.unwrap_or_else(|| self.backoff(attempt)).min(self.max_delay);
                    tracing::warn!(%error, attempt, ?delay, "retrying");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    /// Doubling delay with up to 50 % random jitter, so retries of many workers spread out.
    fn backoff(&self, attempt: u32) -> Duration {
        let base = self.first_delay.saturating_mul(1 << (attempt - 1).min(16));
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().subsec_nanos();
        base + base.mul_f64(f64::from(nanos % 1000) / 2000.0)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn unavailable() -> MirrorError {
        MirrorError::Status {
            what: "x".into(),
            status: 503,
            message: "busy".into(),
            retry_after: None,
        }
    }

    const FAST: RetryPolicy = RetryPolicy {
        attempts: 3,
        first_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
    };

    #[tokio::test]
    async fn a_passing_fault_is_retried_until_it_succeeds() {
        let calls = AtomicU32::new(0);
        let result = FAST
            .run(|| async {
                match calls.fetch_add(1, Ordering::SeqCst) {
                    0 | 1 => Err(unavailable()),
                    _ => Ok("done"),
                }
            })
            .await;
        assert_eq!(result.unwrap(), "done");
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn retries_are_bounded_and_lasting_errors_are_not_retried() {
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = FAST
            .run(|| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(unavailable())
            })
            .await;
        assert!(matches!(result, Err(MirrorError::Status { status: 503, .. })));
        assert_eq!(calls.load(Ordering::SeqCst), 3);

        calls.store(0, Ordering::SeqCst);
        let result: Result<(), _> = FAST
            .run(|| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(MirrorError::NotFound { what: "x".into() })
            })
            .await;
        assert!(result.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1, "a missing image is not retried");
    }

    #[test]
    fn backoff_doubles_with_bounded_jitter() {
        let policy = RetryPolicy::default();
        for attempt in 1..=3 {
            let delay = policy.backoff(attempt);
            let base = Duration::from_millis(500) * (1 << (attempt - 1));
            assert!(delay >= base && delay <= base.mul_f64(1.5), "{attempt}: {delay:?}");
        }
    }
}
