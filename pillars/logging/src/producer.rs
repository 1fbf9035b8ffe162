//! The producer side: log lines into the Kinesis stream with PutRecords, as full as its
//! limits allow (500 records, 5 MiB with partition keys, 1 MiB a record), retrying only the
//! entries a partial failure names; optionally packed into KPL aggregates.

use std::time::Duration;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;

use crate::LogError;
use crate::batch::{MAX_MESSAGE_BYTES, split};
use crate::event::{SERVICE_KEY_PREFIX, service_of};
use crate::kpl::{self, RECORD_OVERHEAD, UserRecord};

/// PutRecords: records per call.
pub const MAX_CALL_RECORDS: usize = 500;
/// PutRecords: data and partition keys per call.
pub const MAX_CALL_BYTES: usize = 5 * 1024 * 1024;
/// A record: data and partition key.
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;
/// Tries of the entries that keep failing (throttled shards).
const ATTEMPTS: u32 = 10;

/// What a shipment did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Shipped {
    /// Log events (lines, or parts of lines too long for one event).
    pub events: usize,
    /// Kinesis records (fewer than events when aggregating).
    pub records: usize,
    pub calls: usize,
    /// Bytes of data and partition keys sent.
    pub bytes: usize,
    /// Entries sent again after a partial failure.
    pub retried: usize,
}

/// Puts log events into one stream.
#[derive(Debug)]
pub struct Producer {
    client: Client,
    stream: String,
    aggregate: bool,
    pending: Vec<UserRecord>,
    pending_bytes: usize,
    /// Records for the next PutRecords call.
    call: Vec<(String, Vec<u8>)>,
    call_bytes: usize,
    pub shipped: Shipped,
}

impl Producer {
    /// `aggregate` packs events into KPL aggregated records (fewer, fuller records).
    pub fn new(client: Client, stream: impl Into<String>, aggregate: bool) -> Self {
        Self {
            client,
            stream: stream.into(),
            aggregate,
            pending: Vec::new(),
            pending_bytes: 0,
            call: Vec::new(),
            call_bytes: 0,
            shipped: Shipped::default(),
        }
    }

    /// Queues one event (a line without its line ending) under `partition_key`, sending
    /// whenever a call is full. Empty lines are not events; lines too long for CloudWatch
    /// Logs are split into marked parts here, as the sink would, and since a part is no
    /// JSON line any more, the parts go under a key naming the service the line names, if
    /// any (`pillar.service=<name>`).
    pub async fn send(&mut self, partition_key: &str, line: String) -> Result<(), LogError> {
        if line.is_empty() {
            return Ok(());
        }
        let service = (line.len() > MAX_MESSAGE_BYTES).then(|| service_of(&line)).flatten();
        let keyed = service.map(|service| format!("{SERVICE_KEY_PREFIX}{service}"));
        let partition_key = keyed.as_deref().unwrap_or(partition_key);
        for part in split(line, MAX_MESSAGE_BYTES) {
            self.shipped.events += 1;
            if self.aggregate {
                let size = part.len() + partition_key.len() + RECORD_OVERHEAD;
                if self.pending_bytes + size > MAX_RECORD_BYTES - partition_key.len() - 64 {
                    self.seal().await?;
                }
                self.pending_bytes += size;
                self.pending.push(UserRecord {
                    partition_key: partition_key.to_owned(),
                    data: part.into_bytes(),
                });
            } else {
                self.queue(partition_key.to_owned(), part.into_bytes()).await?;
            }
        }
        Ok(())
    }

    /// The stream it puts into.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// Sends everything queued.
    pub async fn flush(&mut self) -> Result<Shipped, LogError> {
        self.seal().await?;
        self.put_call().await?;
        Ok(self.shipped)
    }

    /// Turns the pending events into one aggregated record.
    async fn seal(&mut self) -> Result<(), LogError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let key = self.pending[0].partition_key.clone();
        let data = kpl::aggregate(&self.pending);
        self.pending.clear();
        self.pending_bytes = 0;
        self.queue(key, data).await
    }

    async fn queue(&mut self, key: String, data: Vec<u8>) -> Result<(), LogError> {
        let size = key.len() + data.len();
        if self.call.len() == MAX_CALL_RECORDS || self.call_bytes + size > MAX_CALL_BYTES {
            self.put_call().await?;
        }
        self.call_bytes += size;
        self.call.push((key, data));
        Ok(())
    }

    /// One PutRecords call of the queued records; the entries it fails are sent again, and
    /// only they, with backoff, until they go in or the tries are spent.
    async fn put_call(&mut self) -> Result<(), LogError> {
        let mut entries: Vec<PutRecordsRequestEntry> = std::mem::take(&mut self.call)
            .into_iter()
            .map(|(key, data)| {
                PutRecordsRequestEntry::builder()
                    .partition_key(key)
                    .data(Blob::new(data))
                    .build()
                    .expect("partition key and data are set")
            })
            .collect();
        self.shipped.bytes += self.call_bytes;
        self.call_bytes = 0;
        let mut backoff = Duration::from_millis(100);
        let mut attempt = 1;
        while !entries.is_empty() {
            self.shipped.calls += 1;
            let sent = self
                .client
                .put_records()
                .stream_name(&self.stream)
                .set_records(Some(entries.clone()))
                .send()
                .await;
            let tried = entries.len();
            let failed: Vec<PutRecordsRequestEntry> = match sent {
                Ok(output) => entries
                    .into_iter()
                    .zip(output.records())
                    .filter(|(_, result)| result.error_code().is_some())
                    .map(|(entry, _)| entry)
                    .collect(),
                Err(error) if attempt < ATTEMPTS && retryable(&error) => entries,
                Err(error) => {
                    return Err(LogError::Kinesis {
                        operation: "PutRecords",
                        stream: self.stream.clone(),
                        message: pillar_auth::aws_error_message(&error),
                    });
                }
            };
            self.shipped.records += tried - failed.len();
            if failed.is_empty() {
                break;
            }
            if attempt == ATTEMPTS {
                return Err(LogError::NotSent {
                    stream: self.stream.clone(),
                    records: failed.len(),
                    attempts: ATTEMPTS,
                });
            }
            tracing::warn!(
                stream = self.stream,
                failed = failed.len(),
                attempt,
                "PutRecords partly failed; retrying the failed entries"
            );
            self.shipped.retried += failed.len();
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
            attempt += 1;
            entries = failed;
        }
        Ok(())
    }
}

fn retryable<E: ProvideErrorMetadata, R>(error: &SdkError<E, R>) -> bool {
    matches!(
        error,
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_)
    ) || error.code().is_some_and(|c| {
        matches!(
            c,
            "ProvisionedThroughputExceededException"
                | "LimitExceededException"
                | "InternalFailure"
                | "ServiceUnavailable"
        )
    })
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use aws_sdk_kinesis::operation::put_records::{PutRecordsInput, PutRecordsOutput};
    use aws_sdk_kinesis::types::PutRecordsResultEntry;
    use aws_smithy_mocks::{RuleMode, mock, mock_client};

    use super::*;

    /// A Kinesis client whose PutRecords answers with `answer(call number, request)`; the
    /// requests' records are kept, as (partition key, data) lists.
    type Calls = Arc<Mutex<Vec<Vec<(String, Vec<u8>)>>>>;

    fn kinesis(answer: fn(usize, &PutRecordsInput) -> PutRecordsOutput) -> (Client, Calls) {
        let calls = Calls::default();
        let seen = Arc::clone(&calls);
        let rule = mock!(Client::put_records).then_compute_output(move |request| {
            let records = request
                .records()
                .iter()
                .map(|r| {
                    (r.partition_key().unwrap_or_default().to_owned(), r.data().as_ref().to_vec())
                })
                .collect();
            let mut calls = seen.lock().expect("calls");
            calls.push(records);
            answer(calls.len() - 1, request)
        });
        let client = mock_client!(aws_sdk_kinesis, RuleMode::MatchAny, [&rule], |config| {
            config.retry_config(aws_sdk_kinesis::config::retry::RetryConfig::disabled())
        });
        (client, calls)
    }

    fn entry(failed: bool) -> PutRecordsResultEntry {
        let entry = PutRecordsResultEntry::builder();
        if failed {
            entry
                .error_code("ProvisionedThroughputExceededException")
                .error_message("slow down")
                .build()
        } else {
            entry
                .sequence_number("49590338271490256608559692538361571095921575989136588898")
                .shard_id("shardId-000000000000")
                .build()
        }
    }

    fn output(failed: &[bool]) -> PutRecordsOutput {
        PutRecordsOutput::builder()
            .failed_record_count(failed.iter().filter(|f| **f).count() as i32)
            .set_records(Some(failed.iter().map(|f| entry(*f)).collect()))
            .build()
            .expect("records are set")
    }

    #[tokio::test]
    async fn a_partial_failure_sends_only_the_failed_entries_again() {
        let (client, calls) = kinesis(|call, request| match call {
            0 => output(&[false, true, false, true, false]),
            _ => output(&vec![false; request.records().len()]),
        });
        let mut producer = Producer::new(client, "logs", false);
        for n in 0..5 {
            producer.send("svc", format!("line {n}")).await.expect("queued");
        }
        let shipped = producer.flush().await.expect("shipped");
        let calls = calls.lock().expect("calls");
        assert_eq!(calls.len(), 2);
        let resent: Vec<&[u8]> = calls[1].iter().map(|(_, data)| data.as_slice()).collect();
        assert_eq!(resent, [b"line 1".as_slice(), b"line 3"]);
        assert_eq!((shipped.events, shipped.records, shipped.retried), (5, 5, 2));
    }

    #[tokio::test]
    async fn entries_that_keep_failing_are_reported_not_lost_quietly() {
        let (client, _) = kinesis(|_, request| output(&vec![true; request.records().len()]));
        let mut producer = Producer::new(client, "logs", false);
        producer.send("svc", "one".into()).await.expect("queued");
        tokio::time::pause();
        let error = producer.flush().await.expect_err("never accepted").to_string();
        assert!(error.contains("1 record(s) could not be put into stream `logs`"), "{error}");
    }

    #[tokio::test]
    async fn calls_stay_within_500_records_and_5_mib() {
        let (client, calls) = kinesis(|_, request| output(&vec![false; request.records().len()]));
        let mut producer = Producer::new(client, "logs", false);
        // 1,200 records of 10,240 bytes (and a 3-byte key): 12 MiB, more than two calls.
        for n in 0..1_200 {
            producer.send("svc", format!("{n:010}").repeat(1024)).await.expect("queued");
        }
        producer.flush().await.expect("shipped");
        let calls = calls.lock().expect("calls");
        let sizes: Vec<(usize, usize)> = calls
            .iter()
            .map(|call| (call.len(), call.iter().map(|(key, data)| key.len() + data.len()).sum()))
            .collect();
        // PutRecords' limits, as the Kinesis API reference gives them: 500 records and
        // 5 MiB (data and partition keys) a call.
        assert!(
            sizes.iter().all(|&(records, bytes)| records <= 500 && bytes <= 5_242_880),
            "{sizes:?}"
        );
        let records: Vec<usize> = sizes.iter().map(|s| s.0).collect();
        assert_eq!(
            records,
            [500, 500, 200],
            "as full as the limits allow (500 × 10,243 bytes < 5 MiB)"
        );
    }

    #[tokio::test]
    async fn aggregated_records_read_back_as_the_lines_sent() {
        let (client, calls) = kinesis(|_, request| output(&vec![false; request.records().len()]));
        let mut producer = Producer::new(client, "logs", true);
        let lines: Vec<String> =
            (0..3_000).map(|n| format!(r#"{{"n":{n},"service":"svc"}}"#)).collect();
        for line in &lines {
            producer.send("svc", line.clone()).await.expect("queued");
        }
        let shipped = producer.flush().await.expect("shipped");
        assert!(shipped.records < 10, "{shipped:?}: a few aggregates, not 3,000 records");
        let read: Vec<String> = calls
            .lock()
            .expect("calls")
            .iter()
            .flatten()
            .flat_map(|(_, data)| kpl::deaggregate(data).expect("an aggregate"))
            .map(|user| String::from_utf8(user.data).expect("utf-8"))
            .collect();
        assert_eq!(read, lines);
    }
}
