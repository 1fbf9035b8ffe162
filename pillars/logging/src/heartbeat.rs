//! The heartbeat: a synthetic log line with a unique id and its send time, put into the
//! stream the way services put theirs, a record shaped as Fluent Bit's `kinesis_streams`
//! writes one (the record's JSON and a newline, `time` in `%Y-%m-%dT%H:%M:%S.%3N` without a
//! zone, a random partition key), so it goes through the routing their records take;
//! finding it in CloudWatch Logs proves the whole path works. Each scheduled run looks for
//! its sender's previous beat (the very id, when the same process sent it), then sends its
//! own; when the previous one is missing, it names the hop that lost it.

use std::time::{Duration, Instant};

use pillar_telemetry::{Metrics, Unit};
use serde::Deserialize;
use time::OffsetDateTime;

use crate::batch::group_name;
use crate::cloudwatch::LogReader;
use crate::producer::Producer;
use crate::sink::METRICS_NAMESPACE;
use crate::{LogError, now_ms};

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
    /// The previous beat of this sender, if it reached CloudWatch Logs.
    pub previous: Option<Seen>,
    /// When it did not: which hop lost it.
    pub broken_hop: Option<String>,
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

    /// `PillarReady` of the Logging Pillar: the previous beat went the whole way.
    pub fn readiness(&self) -> Metrics {
        pillar_telemetry::pillar_ready(PILLAR, self.previous.is_some())
    }
}

/// The Logging Pillar's name in `PillarReady`.
pub const PILLAR: &str = "Logging";

/// `HeartbeatMissing` = 1: for a run that could not even look (the stream or CloudWatch
/// Logs refused), so the alarm sees the broken path rather than missing data.
pub fn missing() -> Metrics {
    Metrics::new(METRICS_NAMESPACE).value("HeartbeatMissing", 1.0, Unit::Count)
}

#[derive(Deserialize)]
struct Line {
    heartbeat: String,
    #[serde(default)]
    sender: String,
    sent_ms: i64,
}

/// Sends heartbeats and finds them again.
#[derive(Debug)]
pub struct Heartbeat {
    pub producer: Producer,
    pub reader: LogReader,
    /// Reads the stream, to tell which hop lost a missing beat.
    pub stream: aws_sdk_kinesis::Client,
    /// The log group prefix of the sink.
    pub prefix: String,
    /// How often the schedule runs.
    pub period: Duration,
    /// Who sends (the function's name): another deployment's or a shell's beats in the
    /// same group prove nothing about this one.
    pub sender: String,
    /// The beat this process sent last, and when.
    pub last_sent: Option<(String, i64)>,
}

/// Pages of GetRecords read per shard when looking for a lost beat in the stream.
const STREAM_PAGES: usize = 20;

impl Heartbeat {
    /// A scheduled run: this sender's previous beat is looked for (the one this process
    /// sent, or else the latest within two periods), then this one, `id`, is sent.
    pub async fn beat(&mut self, id: &str) -> Result<Beat, LogError> {
        let window = i64::try_from(self.period.as_millis() * 2).unwrap_or(i64::MAX);
        let (wanted, since) = match &self.last_sent {
            Some((id, sent)) => (Some(id.clone()), *sent - 1000),
            None => (None, now_ms().saturating_sub(window)),
        };
        let previous = self.latest(since, wanted.as_deref()).await?;
        let broken_hop = match &previous {
            Some(_) => None,
            None => Some(self.broken_hop(wanted.as_deref(), since).await),
        };
        if let Some(hop) = &broken_hop {
            tracing::error!(
                hop,
                sender = self.sender,
                "the previous heartbeat did not reach CloudWatch Logs"
            );
        }
        self.send(id).await?;
        Ok(Beat { sent: id.to_owned(), previous, broken_hop })
    }

    /// Sends heartbeat `id` now, as Fluent Bit would send a service's line.
    pub async fn send(&mut self, id: &str) -> Result<(), LogError> {
        let now = OffsetDateTime::now_utc();
        let sent_ms = i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX);
        let line = serde_json::json!({
            "log": format!("heartbeat {id}"),
            "service": SERVICE,
            "level": "INFO",
            "heartbeat": id,
            "sender": self.sender,
            "sent_ms": sent_ms,
            "time": now.format(FLUENT_BIT_TIME).expect("a UTC time formats"),
        });
        self.producer.send(&fluent_bit_key(id, sent_ms), format!("{line}\n")).await?;
        self.producer.flush().await?;
        self.last_sent = Some((id.to_owned(), sent_ms));
        Ok(())
    }

    /// The Logging Pillar's canary, for a shell: sends beat `id` and waits for it in
    /// CloudWatch Logs at most `patience`. When it does not arrive, the hop that lost it.
    pub async fn probe(
        &mut self,
        id: &str,
        patience: Duration,
    ) -> Result<Result<Seen, String>, LogError> {
        let since = now_ms() - 1000;
        self.send(id).await?;
        Ok(match self.wait_for(id, since, patience).await? {
            Some(seen) => Ok(seen),
            None => Err(self.broken_hop(Some(id), since).await),
        })
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

    /// This sender's latest heartbeat sent since `since_ms` (only `id`, when given).
    async fn latest(&self, since_ms: i64, id: Option<&str>) -> Result<Option<Seen>, LogError> {
        let group = group_name(&self.prefix, SERVICE);
        let events = self.reader.events(&group, since_ms).await?;
        Ok(events
            .into_iter()
            .filter_map(|event| {
                let line: Line = serde_json::from_str(&event.message).ok()?;
                (line.sender == self.sender).then_some(())?;
                let latency_ms = event.ingestion_time - line.sent_ms;
                Some(Seen { id: line.heartbeat, sent_ms: line.sent_ms, latency_ms })
            })
            .filter(|seen| id.is_none_or(|id| seen.id == id))
            .max_by_key(|seen| seen.sent_ms))
    }

    /// Which hop lost the beat: found in the stream means the sink did not write it; not
    /// found means it never got into the stream.
    async fn broken_hop(&self, id: Option<&str>, since_ms: i64) -> String {
        let wanted = match id {
            Some(id) => format!("\"heartbeat\":\"{id}\""),
            None => format!("\"sender\":\"{}\"", self.sender),
        };
        match self.in_stream(&wanted, since_ms).await {
            Ok(true) => format!(
                "Kinesis → CloudWatch Logs: the beat is in stream {} but not in CloudWatch Logs; check the log-sink function (its errors, its event source mapping, its iterator age)",
                self.producer.stream()
            ),
            Ok(false) if id.is_some() => format!(
                "producer → Kinesis: the beat this process sent is not in stream {}",
                self.producer.stream()
            ),
            Ok(false) => format!(
                "unknown: no beat of {} in stream {} or CloudWatch Logs within two periods (the first run, or every put failed)",
                self.sender,
                self.producer.stream()
            ),
            Err(error) => format!("unknown: the stream could not be read ({error})"),
        }
    }

    /// Whether a record holding `wanted` arrived in the stream since `since_ms`.
    async fn in_stream(&self, wanted: &str, since_ms: i64) -> Result<bool, LogError> {
        let stream = self.producer.stream();
        let failed = |operation, e: String| LogError::Kinesis {
            operation,
            stream: stream.to_owned(),
            message: e,
        };
        let shards = self
            .stream
            .list_shards()
            .stream_name(stream)
            .send()
            .await
            .map_err(|e| failed("ListShards", pillar_auth::aws_error_message(&e)))?;
        let since = aws_sdk_kinesis::primitives::DateTime::from_millis(since_ms);
        for shard in shards.shards() {
            let iterator = self
                .stream
                .get_shard_iterator()
                .stream_name(stream)
                .shard_id(shard.shard_id())
                .shard_iterator_type(aws_sdk_kinesis::types::ShardIteratorType::AtTimestamp)
                .timestamp(since)
                .send()
                .await
                .map_err(|e| failed("GetShardIterator", pillar_auth::aws_error_message(&e)))?;
            let mut iterator = iterator.shard_iterator().map(str::to_owned);
            for _ in 0..STREAM_PAGES {
                let Some(current) = iterator.take() else { break };
                let page = self
                    .stream
                    .get_records()
                    .shard_iterator(current)
                    .send()
                    .await
                    .map_err(|e| failed("GetRecords", pillar_auth::aws_error_message(&e)))?;
                let found = page
                    .records()
                    .iter()
                    .any(|r| String::from_utf8_lossy(r.data().as_ref()).contains(wanted));
                if found {
                    return Ok(true);
                }
                if page.records().is_empty() && page.millis_behind_latest().unwrap_or(0) == 0 {
                    break;
                }
                iterator = page.next_shard_iterator().map(str::to_owned);
            }
        }
        Ok(false)
    }
}

/// Fluent Bit's `time_key_format` with milliseconds (`%Y-%m-%dT%H:%M:%S.%3N`): no zone.
const FLUENT_BIT_TIME: &[time::format_description::BorrowedFormatItem<'static>] = time::macros::format_description!(
    "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]"
);

/// A partition key as Fluent Bit's `kinesis_streams` makes one: ten characters, then two
/// numbers below 7919; random enough to spread over shards, and routing nothing.
fn fluent_bit_key(id: &str, sent_ms: i64) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut hash = id.bytes().fold(5381_u64, |h, b| h.wrapping_mul(33).wrapping_add(u64::from(b)));
    hash ^= sent_ms as u64;
    let mut key: String = (0..10)
        .map(|_| {
            hash = hash
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ALPHABET[(hash >> 33) as usize % ALPHABET.len()] as char
        })
        .collect();
    key.push_str(&format!("{}{}", hash % 7919, (hash >> 20) % 7919));
    key
}
