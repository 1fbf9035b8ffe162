//! An OFREP server over a [`Client`]: `pillar flags serve` (a local agent, as AppConfig's
//! on `localhost:2772`) and the `config-eval` Lambda. Where no task can poll in the
//! background (a Lambda is frozen between invocations), a request finds the poll due and
//! makes it first, within `poll_timeout`, backing off while S3 fails.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::client::Client;
use crate::ofrep::{self, Answer};

/// Namespace of the Config Pillar's metrics.
pub const NAMESPACE: &str = "Pillars/Config";

#[derive(Debug)]
pub struct Agent {
    pub client: Client,
    interval: Duration,
    max_backoff: Duration,
    poll_timeout: Duration,
    /// When the next poll is due, and the wait after a failure.
    schedule: Mutex<(Instant, Duration)>,
    evaluations: AtomicU64,
    errors: AtomicU64,
    /// EMF metrics after each poll, on standard output (where Lambda sends them to CloudWatch).
    pub emit_metrics: bool,
}

impl Agent {
    pub fn new(client: Client, interval: Duration) -> Self {
        Self {
            client,
            interval,
            max_backoff: Duration::from_secs(300),
            poll_timeout: Duration::from_secs(2),
            schedule: Mutex::new((Instant::now(), interval)),
            evaluations: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            emit_metrics: false,
        }
    }

    /// Polls when due; what fails (or takes too long) is retried later, and what is served
    /// stays. Emits the bundle's age and the evaluations since the last poll.
    pub async fn refresh_if_due(&self) {
        let now = Instant::now();
        {
            let mut schedule = self.schedule.lock().expect("not poisoned");
            if now < schedule.0 {
                return;
            }
            // Claimed: concurrent requests do not poll too.
            schedule.0 = now + self.poll_timeout + self.interval;
        }
        let polled = tokio::time::timeout(self.poll_timeout, self.client.poll()).await;
        let ok = matches!(polled, Ok(Ok(_)));
        if let Ok(Err(e)) = &polled {
            tracing::warn!(error = %e, "the flag set could not be refreshed; serving the last good one");
        } else if polled.is_err() {
            tracing::warn!(timeout = ?self.poll_timeout, "S3 did not answer in time; serving the last good flag set");
        }
        {
            let mut schedule = self.schedule.lock().expect("not poisoned");
            let wait = if ok { self.interval } else { (schedule.1 * 2).min(self.max_backoff) };
            *schedule = (Instant::now() + wait, if ok { self.interval } else { wait });
        }
        if self.emit_metrics {
            self.metrics().emit();
        }
    }

    /// Polls for ever, each time the poll is due: for a process that serves between
    /// requests too (`pillar flags serve`, a Rust service using the provider).
    pub async fn poll_forever(self: std::sync::Arc<Self>) {
        loop {
            self.refresh_if_due().await;
            let due = self.schedule.lock().expect("not poisoned").0;
            tokio::time::sleep_until(due.into()).await;
        }
    }

    /// The metrics of the period since the last call: age of the bundle served (none ever:
    /// a very large age, so the alarm fires), evaluations and evaluation errors.
    pub fn metrics(&self) -> pillar_telemetry::Metrics {
        let age = self.client.freshness().age_seconds.unwrap_or(u64::from(u32::MAX));
        pillar_telemetry::Metrics::new(NAMESPACE)
            .value("BundleAgeSeconds", age as f64, pillar_telemetry::Unit::Seconds)
            .value(
                "Evaluations",
                self.evaluations.swap(0, Ordering::Relaxed) as f64,
                pillar_telemetry::Unit::Count,
            )
            .value(
                "EvaluationErrors",
                self.errors.swap(0, Ordering::Relaxed) as f64,
                pillar_telemetry::Unit::Count,
            )
    }

    /// One OFREP request; evaluation failures (not an unknown flag, which is the
    /// caller's mistake) are counted for the alarm.
    pub fn answer(
        &self,
        method: &str,
        path: &str,
        if_none_match: Option<&str>,
        body: &[u8],
    ) -> Answer {
        let answer = ofrep::handle(&self.client, method, path, if_none_match, body);
        self.evaluations.fetch_add(1, Ordering::Relaxed);
        if answer.failed {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        answer
    }

    /// One OFREP request over HTTP, as `pillar flags serve` and `config-eval` both carry
    /// it: the poll made first when due, then the answer with its content type and ETag.
    pub async fn respond(
        &self,
        method: &http::Method,
        uri: &http::Uri,
        headers: &http::HeaderMap,
        body: &[u8],
    ) -> http::Response<Vec<u8>> {
        self.refresh_if_due().await;
        let if_none_match = headers.get(http::header::IF_NONE_MATCH).and_then(|v| v.to_str().ok());
        let answer = self.answer(method.as_str(), uri.path(), if_none_match, body);
        let mut response = http::Response::builder()
            .status(answer.status)
            .header(http::header::CONTENT_TYPE, "application/json");
        if let Some(etag) = &answer.etag {
            response = response.header(http::header::ETAG, etag);
        }
        // The statuses are OFREP's and the ETag a quoted hex digest: always valid.
        response.body(answer.body_bytes()).expect("a valid status and headers")
    }
}
