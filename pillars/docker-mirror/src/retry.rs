//! Bounded retries with exponential backoff and jitter, for the errors that may pass; the
//! wait a server asks for (`Retry-After`) is honoured when it fits before the deadline.

use std::future::Future;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::error::MirrorError;

/// How hard to try before reporting a failure.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub first_delay: Duration,
    /// The longest wait: a server asking for more is answered by giving up now.
    pub max_delay: Duration,
    /// No wait ends after this.
    pub deadline: Option<Instant>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 4,
            first_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            deadline: None,
        }
    }
}

impl RetryPolicy {
    /// The same policy, never waiting past `deadline`.
    pub fn until(self, deadline: Option<Instant>) -> Self {
        Self { deadline, ..self }
    }

    /// Runs `operation` until it succeeds, fails for good, or the attempts are spent, or
    /// the next wait would be longer than allowed or end past the deadline.
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
                    let delay = asked.unwrap_or_else(|| self.backoff(attempt).min(self.max_delay));
                    let past_deadline = self.deadline.is_some_and(|d| Instant::now() + delay >= d);
                    if delay > self.max_delay || past_deadline {
                        return Err(error);
                    }
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
        deadline: None,
    };

    fn busy_for(seconds: u64) -> MirrorError {
        MirrorError::Status {
            what: "x".into(),
            status: 429,
            message: "slow down".into(),
            retry_after: Some(Duration::from_secs(seconds)),
        }
    }

    #[tokio::test]
    async fn a_wait_longer_than_allowed_or_past_the_deadline_is_not_waited() {
        let calls = AtomicU32::new(0);
        let started = Instant::now();
        let policy = RetryPolicy { max_delay: Duration::from_secs(30), ..FAST };
        let result: Result<(), _> = policy
            .run(|| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(busy_for(3600))
            })
            .await;
        assert!(matches!(result, Err(MirrorError::Status { status: 429, .. })));
        assert_eq!(calls.load(Ordering::SeqCst), 1, "an hour's wait is not waited");

        let soon = policy.until(Some(Instant::now() + Duration::from_secs(1)));
        let result: Result<(), _> = soon.run(|| async { Err(busy_for(2)) }).await;
        assert!(result.is_err());
        assert!(started.elapsed() < Duration::from_secs(1), "gave up instead of waiting");
    }

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
