//! The sink: a batch of Kinesis records into CloudWatch Logs. Every record is decoded and
//! routed; each log stream's events are sorted and cut into PutLogEvents calls, several
//! streams written at a time. A group CloudWatch Logs refuses for good (a name, a key)
//! has its events written to the fallback group instead, with the reason, so one bad
//! destination does not hold the shard. What could not be written anywhere is named by the
//! first record it came from: Kinesis resumes there, so nothing is skipped, and what
//! follows it is written again (duplicates only after a failure).

use std::collections::HashMap;
use std::time::Instant;

use aws_lambda_events::event::kinesis::KinesisEvent;
use aws_lambda_events::event::streams::{KinesisBatchItemFailure, KinesisEventResponse};
use aws_sdk_cloudwatchlogs::types::InputLogEvent;
use futures_util::{StreamExt, stream};
use pillar_telemetry::{Metrics, Unit};

use crate::LogError;
use crate::batch::{MAX_MESSAGE_BYTES, batches, group_name, split, stream_name};
use crate::cloudwatch::{LogWriter, Written};
use crate::event::{Decoded, Decoder, InputRecord, LogEvent, Routing, TimeWindow};

/// CloudWatch namespace of the Logging Pillar's metrics.
pub const METRICS_NAMESPACE: &str = "Pillars/Logging";

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// PutLogEvents calls in flight at once (different streams).
const CONCURRENCY: usize = 4;

/// The service whose group (`<prefix>pillar-undeliverable`) takes the events of groups
/// CloudWatch Logs refuses, each group's in a stream of its own, after a line saying why.
pub const FALLBACK_SERVICE: &str = "pillar-undeliverable";

/// What one batch of records came to.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SinkReport {
    pub records: usize,
    pub events_written: usize,
    pub events_rejected: usize,
    /// Events written to the fallback group because their own was refused.
    pub events_to_fallback: usize,
    pub decoded: Decoded,
    pub calls: usize,
    /// The sequence number of the first record not durably written, if any.
    pub first_failed: Option<String>,
}

impl SinkReport {
    pub fn metrics(&self) -> Metrics {
        Metrics::new(METRICS_NAMESPACE)
            .value("RecordsRead", self.records as f64, Unit::Count)
            .value("EventsWritten", self.events_written as f64, Unit::Count)
            .value("EventsRejected", self.events_rejected as f64, Unit::Count)
            .value("EventsRestamped", self.decoded.restamped as f64, Unit::Count)
            .value("EventsToFallback", self.events_to_fallback as f64, Unit::Count)
            .value("RecordsUndecodable", self.decoded.undecodable as f64, Unit::Count)
            .value("SinkFailed", f64::from(u8::from(self.first_failed.is_some())), Unit::Count)
    }
}

/// One event on its way: where it goes, and which record it came from.
struct Pending {
    timestamp: i64,
    message: String,
    record: usize,
}

/// One PutLogEvents call to make.
#[derive(Debug)]
pub struct Call {
    pub group: String,
    pub stream: String,
    pub events: Vec<InputLogEvent>,
    /// The earliest record with an event in this call.
    pub first_record: usize,
}

/// Routes events to `<prefix><service>` and writes them.
#[derive(Debug, Clone)]
pub struct Sink {
    writer: LogWriter,
    prefix: String,
    routing: Routing,
}

/// What one log stream's calls came to.
#[derive(Default)]
struct Outcome {
    written: Written,
    to_fallback: usize,
    /// The earliest record of a call not written anywhere.
    failed: Option<usize>,
}

impl Sink {
    pub fn new(writer: LogWriter, prefix: impl Into<String>, routing: Routing) -> Self {
        Self { writer, prefix: prefix.into(), routing }
    }

    /// Writes the events of `records` (in the order Kinesis delivered them), stopping
    /// before `deadline`.
    pub async fn write(&self, records: &[InputRecord], deadline: Option<Instant>) -> SinkReport {
        let mut report = SinkReport { records: records.len(), ..SinkReport::default() };
        let decoder = Decoder {
            routing: &self.routing,
            window: TimeWindow::now(self.writer.retention_days()),
        };
        let streams = prepare(&self.prefix, &decoder, records, &mut report.decoded);
        report.calls = streams.iter().map(Vec::len).sum();
        // Streams side by side; one stream's calls in order, so events of one millisecond
        // stay in the order they came. After a failure the stream's later calls wait for
        // the retry that will bring them again.
        let outcomes: Vec<Outcome> = stream::iter(streams)
            .map(|calls| self.write_stream(calls, deadline))
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let mut first_failed: Option<usize> = None;
        for outcome in outcomes {
            report.events_written += outcome.written.events;
            report.events_rejected += outcome.written.rejected;
            report.events_to_fallback += outcome.to_fallback;
            if let Some(failed) = outcome.failed {
                first_failed = Some(first_failed.map_or(failed, |f| f.min(failed)));
            }
        }
        report.first_failed = first_failed.map(|i| records[i].sequence_number.clone());
        report
    }

    /// One log stream's calls, in order, until one fails.
    async fn write_stream(&self, calls: Vec<Call>, deadline: Option<Instant>) -> Outcome {
        let mut outcome = Outcome::default();
        for call in calls {
            if outcome.failed.is_some() {
                break;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                tracing::warn!(group = call.group, "deadline reached; the rest goes to a retry");
                outcome.failed = Some(call.first_record);
                continue;
            }
            let written =
                match self.writer.put(&call.group, &call.stream, &call.events, deadline).await {
                    Err(LogError::Refused { operation, group, message }) => {
                        let reason =
                            format!("CloudWatch Logs refused {operation} on {group}: {message}");
                        tracing::error!(
                            reason,
                            events = call.events.len(),
                            "writing them to the fallback group"
                        );
                        match self.to_fallback(&call, &reason, deadline).await {
                            Ok(written) => {
                                outcome.to_fallback += written.events;
                                Ok(written)
                            }
                            Err(error) => Err(error),
                        }
                    }
                    other => other,
                };
            match written {
                Ok(written) => {
                    outcome.written.events += written.events;
                    outcome.written.rejected += written.rejected;
                }
                Err(error) => {
                    tracing::error!(%error, group = call.group, "events not written");
                    outcome.failed = Some(call.first_record);
                }
            }
        }
        outcome
    }

    /// Writes a refused call's events into the fallback group, after a line with `reason`,
    /// in a stream named after the group and stream they were meant for.
    async fn to_fallback(
        &self,
        call: &Call,
        reason: &str,
        deadline: Option<Instant>,
    ) -> Result<Written, LogError> {
        let group = group_name(&self.prefix, FALLBACK_SERVICE);
        let first = call.events.first().map_or(0, InputLogEvent::timestamp);
        // `<day>/<source>` becomes `<day>/<group>/<source>`.
        let source = call.stream.splitn(4, '/').nth(3).unwrap_or(&call.stream);
        let stream =
            stream_name(&format!("{}/{source}", call.group.trim_start_matches('/')), first);
        let note = InputLogEvent::builder()
            .timestamp(first)
            .message(format!(
                "pillar: the {} events after this line were meant for log group {} stream {}: {reason}",
                call.events.len(),
                call.group,
                call.stream
            ))
            .build()
            .expect("timestamp and message are set");
        self.writer.put(&group, &stream, &[note], deadline).await?;
        self.writer.put(&group, &stream, &call.events, deadline).await
    }

    /// The Lambda's answer to a Kinesis event: the first record not written as the one
    /// batch item failure (Lambda resumes the shard there), or none.
    pub async fn handle(
        &self,
        event: KinesisEvent,
        deadline: Option<Instant>,
    ) -> (KinesisEventResponse, SinkReport) {
        let records: Vec<InputRecord> = event
            .records
            .into_iter()
            .map(|record| InputRecord {
                sequence_number: record.kinesis.sequence_number,
                partition_key: record.kinesis.partition_key,
                data: record.kinesis.data.0,
                arrival_ms: record.kinesis.approximate_arrival_timestamp.timestamp_millis(),
            })
            .collect();
        let report = self.write(&records, deadline).await;
        let mut response = KinesisEventResponse::default();
        if let Some(sequence_number) = &report.first_failed {
            let mut failure = KinesisBatchItemFailure::default();
            failure.item_identifier = Some(sequence_number.clone());
            response.batch_item_failures.push(failure);
        }
        (response, report)
    }
}

/// Decodes `records`, routes their events to `<prefix><service>`, sorts and cuts them into
/// PutLogEvents calls, per log stream.
pub fn prepare(
    prefix: &str,
    decoder: &Decoder<'_>,
    records: &[InputRecord],
    decoded: &mut Decoded,
) -> Vec<Vec<Call>> {
    // (group, stream) and its events, in the order first seen.
    let mut streams: Vec<((String, String), Vec<Pending>)> = Vec::new();
    // service → source → UTC day → its place in `streams`: found without making names.
    let mut places: HashMap<String, HashMap<String, HashMap<i64, usize>>> = HashMap::new();
    let mut events = Vec::new();
    for (index, record) in records.iter().enumerate() {
        events.clear();
        decoder.decode(record, &mut events, decoded);
        for LogEvent { service, source, timestamp, message } in events.drain(..) {
            let day = timestamp.div_euclid(DAY_MS);
            let known = places.get(&service).and_then(|s| s.get(&source)).and_then(|d| d.get(&day));
            let place = match known {
                Some(&place) => place,
                None => {
                    let names = (group_name(prefix, &service), stream_name(&source, timestamp));
                    streams.push((names, Vec::new()));
                    places
                        .entry(service)
                        .or_default()
                        .entry(source)
                        .or_default()
                        .insert(day, streams.len() - 1);
                    streams.len() - 1
                }
            };
            let pending = &mut streams[place].1;
            if message.len() <= MAX_MESSAGE_BYTES {
                pending.push(Pending { timestamp, message, record: index });
            } else {
                pending.extend(
                    split(message, MAX_MESSAGE_BYTES).into_iter().map(|message| Pending {
                        timestamp,
                        message,
                        record: index,
                    }),
                );
            }
        }
    }
    let mut all = Vec::with_capacity(streams.len());
    for ((group, stream), mut events) in streams {
        let mut calls = Vec::new();
        // Stable: events of one millisecond keep the order they arrived in.
        events.sort_by_key(|e| e.timestamp);
        let sizes: Vec<(i64, usize)> =
            events.iter().map(|e| (e.timestamp, e.message.len())).collect();
        let mut events = events.into_iter();
        for range in batches(&sizes) {
            let batch: Vec<Pending> = events.by_ref().take(range.len()).collect();
            let first_record = batch.iter().map(|e| e.record).min().unwrap_or(0);
            let events = batch
                .into_iter()
                .map(|e| {
                    InputLogEvent::builder()
                        .timestamp(e.timestamp)
                        .message(e.message)
                        .build()
                        .expect("timestamp and message are set")
                })
                .collect();
            calls.push(Call { group: group.clone(), stream: stream.clone(), events, first_record });
        }
        all.push(calls);
    }
    all
}

#[cfg(test)]
mod tests {
    use aws_sdk_cloudwatchlogs::operation::put_log_events::{
        PutLogEventsError, PutLogEventsOutput,
    };
    use aws_sdk_cloudwatchlogs::types::error::InvalidParameterException;
    use aws_smithy_mocks::MockResponse;

    use super::*;
    use crate::cloudwatch::GroupSettings;
    use crate::cloudwatch::tests::{logs, stored};

    fn record(n: usize, line: &str) -> InputRecord {
        InputRecord {
            sequence_number: format!("4959033827149025660855969253836157109592157598913658{n:04}"),
            partition_key: "k".into(),
            data: line.as_bytes().to_vec(),
            arrival_ms: 1_795_773_600_000 + n as i64,
        }
    }

    fn mixed() -> Vec<InputRecord> {
        [
            r#"{"service":"fine","n":0}"#,
            r#"{"service":"fine","n":1}"#,
            r#"{"service":"broken","n":2}"#,
            r#"{"service":"fine","n":3}"#,
            r#"{"service":"broken","n":4}"#,
        ]
        .iter()
        .enumerate()
        .map(|(n, line)| record(n, line))
        .collect()
    }

    fn refused() -> MockResponse<PutLogEventsOutput, PutLogEventsError> {
        MockResponse::Error(PutLogEventsError::InvalidParameterException(
            InvalidParameterException::builder().message("bad").build(),
        ))
    }

    fn sink(client: aws_sdk_cloudwatchlogs::Client) -> Sink {
        Sink::new(LogWriter::new(client, GroupSettings::default()), "/pillar/", Routing::default())
    }

    #[tokio::test]
    async fn a_refused_group_s_events_go_to_the_fallback_group_with_the_reason() {
        let (client, asked) = logs(|_, request| match request.log_group_name() {
            Some("/pillar/broken") => refused(),
            _ => stored(),
        });
        let records = mixed();
        let report = sink(client).write(&records, None).await;
        assert_eq!(report.first_failed, None, "the shard goes on");
        assert_eq!((report.events_written, report.events_to_fallback), (5, 2));
        let asked = asked.lock().expect("asked");
        let fine: Vec<_> = asked.puts.iter().filter(|p| p.0 == "/pillar/fine").collect();
        assert_eq!(fine.len(), 1, "one call for the three events of one stream");
        assert_eq!(fine[0].2.len(), 3);
        let fallback: Vec<_> =
            asked.puts.iter().filter(|p| p.0 == "/pillar/pillar-undeliverable").collect();
        assert_eq!(fallback.len(), 2, "the reason, then the events");
        assert!(
            fallback.iter().all(|p| p.1.ends_with("/pillar/broken/unattributed")),
            "{:?}",
            fallback[0].1
        );
        assert!(
            fallback[0].2[0].contains("refused PutLogEvents on /pillar/broken: "),
            "{}",
            fallback[0].2[0]
        );
        assert_eq!(
            fallback[1].2,
            [r#"{"service":"broken","n":2}"#, r#"{"service":"broken","n":4}"#]
        );
    }

    #[tokio::test]
    async fn when_the_fallback_is_refused_too_the_first_record_not_written_is_reported() {
        let (client, asked) = logs(|_, request| match request.log_group_name() {
            Some("/pillar/fine") => stored(),
            _ => refused(),
        });
        let records = mixed();
        let report = sink(client).write(&records, None).await;
        assert_eq!(report.first_failed.as_deref(), Some(records[2].sequence_number.as_str()));
        assert_eq!((report.events_written, report.events_to_fallback), (3, 0));
        assert!(asked.lock().expect("asked").puts.iter().any(|p| p.0 == "/pillar/fine"));
    }

    #[tokio::test]
    async fn past_the_deadline_nothing_is_written_and_the_first_record_is_reported() {
        let (client, asked) = logs(|_, _| stored());
        let sink = sink(client);
        let records = vec![record(0, "a"), record(1, "b")];
        let report = sink.write(&records, Some(Instant::now())).await;
        assert_eq!(report.first_failed.as_deref(), Some(records[0].sequence_number.as_str()));
        assert!(asked.lock().expect("asked").puts.is_empty());
    }

    #[tokio::test]
    async fn events_of_one_stream_go_in_chronological_order_and_large_ones_in_parts() {
        let (client, asked) = logs(|_, _| stored());
        let sink = sink(client);
        let big = format!(
            r#"{{"service":"s","timestamp":1795773600000,"blob":"{}"}}"#,
            "x".repeat(600_000)
        );
        let records = vec![
            record(0, r#"{"service":"s","timestamp":1795773600500,"n":"later"}"#),
            record(1, &big),
            record(2, r#"{"service":"s","timestamp":1795773600100,"n":"earlier"}"#),
        ];
        let report = sink.write(&records, None).await;
        assert_eq!(report.first_failed, None);
        let asked = asked.lock().expect("asked");
        let messages: Vec<&String> = asked.puts.iter().flat_map(|p| &p.2).collect();
        assert_eq!(messages.len(), 5, "the 600 KB line in 3 parts, and two small ones");
        assert!(messages[0].starts_with("[part 1/3] {"), "{}", &messages[0][..20]);
        assert!(messages[3].contains("earlier") && messages[4].contains("later"));
        assert!(messages.iter().all(|m| m.len() <= MAX_MESSAGE_BYTES));
    }
}
