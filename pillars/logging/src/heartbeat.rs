//! The heartbeat: a synthetic log line with a unique id and its send time, put into the
//! stream like any service's; finding it in CloudWatch Logs proves the whole path works.
//! Each scheduled run looks for the previous run's heartbeat, then sends its own.

use std::time::{Duration, Instant};

use pillar_telemetry::{Metrics, Unit};
use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::LogError;
use crate::batch::group_name;
use crate::cloudwatch::LogReader;
use crate::producer::Producer;
use crate::sink::METRICS_NAMESPACE;

/// The service heartbeats are logged as: their log group is `<prefix>pillar-heartbeat`.
pub const SERVICE: &str = "pillar-heartbeat";

/// A heartbeat seen in CloudWatch Logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub id: String,
    pub sent_ms: i64,
    /// From its sending to CloudWatch Logs storing it.
    pub latency_ms: i64,
}

/// What a scheduled run found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Beat {
    /// The id sent this time.
    pub sent: String,
    /// The latest earlier heartbeat found, if one came within two periods.
    pub previous: Option<Seen>,
}

impl Beat {
    /// `HeartbeatMissing` (1 or 0) and, when the previous one was seen,
    /// `HeartbeatLatencyMs`.
    pub fn metrics(&self) -> Metrics {
        let metrics = Metrics::new(METRICS_NAMESPACE).value(
            "HeartbeatMissing",
            f64::from(u8::from(self.previous.is_none())),
            Unit::Count,
        );
        match &self.previous {
            Some(seen) => {
                metrics.value("HeartbeatLatencyMs", seen.latency_ms as f64, Unit::Milliseconds)
            }
            None => metrics,
        }
    }
}

/// `HeartbeatMissing` = 1: for a run that could not even look (the stream or CloudWatch
/// Logs refused), so the alarm sees the broken path rather than missing data.
pub fn missing() -> Metrics {
    Metrics::new(METRICS_NAMESPACE).value("HeartbeatMissing", 1.0, Unit::Count)
}

#[derive(Deserialize)]
struct Line {
    heartbeat: String,
    timestamp: String,
}

/// Sends heartbeats and finds them again.
#[derive(Debug)]
pub struct Heartbeat {
    pub producer: Producer,
    pub reader: LogReader,
    /// The log group prefix of the sink.
    pub prefix: String,
    /// How often the schedule runs.
    pub period: Duration,
}

fn now_ms() -> i64 {
    i64::try_from(OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

impl Heartbeat {
    /// A scheduled run: the previous heartbeat (sent within the last two periods) is looked
    /// for, then this one, `id`, is sent.
    pub async fn beat(&mut self, id: &str) -> Result<Beat, LogError> {
        let window = i64::try_from(self.period.as_millis() * 2).unwrap_or(i64::MAX);
        let previous = self.latest(now_ms().saturating_sub(window), None).await?;
        self.send(id).await?;
        Ok(Beat { sent: id.to_owned(), previous })
    }

    /// Sends heartbeat `id` now.
    pub async fn send(&mut self, id: &str) -> Result<(), LogError> {
        let sent = OffsetDateTime::now_utc().format(&Rfc3339).expect("a UTC time formats");
        let line = serde_json::json!({
            "timestamp": sent,
            "service": SERVICE,
            "level": "INFO",
            "heartbeat": id,
            "message": format!("heartbeat {id}"),
        });
        self.producer.send(SERVICE, line.to_string()).await?;
        self.producer.flush().await.map(drop)
    }

    /// Waits until heartbeat `id` shows in CloudWatch Logs, at most `patience`.
    pub async fn wait_for(
        &self,
        id: &str,
        since_ms: i64,
        patience: Duration,
    ) -> Result<Option<Seen>, LogError> {
        let until = Instant::now() + patience;
        loop {
            if let Some(seen) = self.latest(since_ms, Some(id)).await? {
                return Ok(Some(seen));
            }
            if Instant::now() >= until {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The latest heartbeat sent since `since_ms` (only `id`, when given).
    async fn latest(&self, since_ms: i64, id: Option<&str>) -> Result<Option<Seen>, LogError> {
        let group = group_name(&self.prefix, SERVICE);
        let events = self.reader.events(&group, since_ms).await?;
        Ok(events
            .into_iter()
            .filter_map(|event| {
                let line: Line = serde_json::from_str(&event.message).ok()?;
                let sent = OffsetDateTime::parse(&line.timestamp, &Rfc3339).ok()?;
                let sent_ms = i64::try_from(sent.unix_timestamp_nanos() / 1_000_000).ok()?;
                let latency_ms = event.ingestion_time - sent_ms;
                Some(Seen { id: line.heartbeat, sent_ms, latency_ms })
            })
            .filter(|seen| id.is_none_or(|id| seen.id == id))
            .max_by_key(|seen| seen.sent_ms))
    }
}
