//! `pillar logs replay`: the batches the log-sink Lambda gave up on, written after all.
//! Lambda's on-failure destination for a Kinesis mapping gets no records, only where they
//! are: each message names a shard and a sequence range (`KinesisBatchInfo`). While the
//! stream still holds them (its retention is above the mapping's `maxRecordAge`), they are
//! read back and written through the same sink; a message is deleted only once its whole
//! range is written.

use std::cmp::Ordering;

use aws_sdk_kinesis::types::ShardIteratorType;
use serde::Deserialize;

use crate::LogError;
use crate::drain::{Drain, Drained, kinesis_error, record_of};

/// What Lambda writes to the on-failure destination of a Kinesis mapping (the documented
/// invocation record; only the fields read here).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FailedInvocation {
    #[serde(rename = "KinesisBatchInfo")]
    batch: BatchInfo,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BatchInfo {
    shard_id: String,
    start_sequence_number: String,
    end_sequence_number: String,
    stream_arn: String,
}

/// What a replay did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Replayed {
    /// Failed batches written and their messages deleted.
    pub batches: usize,
    pub records: usize,
    pub events_written: usize,
    /// Messages left in the queue: another stream's, unreadable, or past the retention.
    pub left: usize,
}

fn queue_error<E, R>(queue: &str, error: &aws_sdk_sqs::error::SdkError<E, R>) -> LogError
where
    E: aws_sdk_sqs::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    LogError::Queue { queue: queue.to_owned(), message: pillar_auth::aws_error_message(error) }
}

/// Kinesis sequence numbers are decimal strings of up to 128 bits: longer is later.
fn compare(a: &str, b: &str) -> Ordering {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

impl Drain {
    /// Replays every message of the failed-batch queue `queue_url`.
    pub async fn replay(
        &self,
        sqs: &aws_sdk_sqs::Client,
        queue_url: &str,
    ) -> Result<Replayed, LogError> {
        let identity = self.identity().await?;
        let mut replayed = Replayed::default();
        loop {
            let received = sqs
                .receive_message()
                .queue_url(queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                // Long enough to read and write a batch; a message left is seen next run.
                .visibility_timeout(300)
                .send()
                .await
                .map_err(|e| queue_error(queue_url, &e))?;
            if received.messages().is_empty() {
                return Ok(replayed);
            }
            for message in received.messages() {
                let body = message.body().unwrap_or_default();
                let batch = match serde_json::from_str::<FailedInvocation>(body) {
                    Ok(failed) if failed.batch.stream_arn == identity.arn => failed.batch,
                    Ok(failed) => {
                        tracing::warn!(
                            of = failed.batch.stream_arn,
                            stream = identity.arn,
                            "a failed batch of another stream: left in the queue"
                        );
                        replayed.left += 1;
                        continue;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "not a Kinesis failed-batch record: left in the queue");
                        replayed.left += 1;
                        continue;
                    }
                };
                match self.replay_batch(&batch).await? {
                    Some(drained) => {
                        replayed.batches += 1;
                        replayed.records += drained.records;
                        replayed.events_written += drained.events_written;
                        if let Some(handle) = message.receipt_handle() {
                            sqs.delete_message()
                                .queue_url(queue_url)
                                .receipt_handle(handle)
                                .send()
                                .await
                                .map_err(|e| queue_error(queue_url, &e))?;
                        }
                    }
                    None => replayed.left += 1,
                }
            }
        }
    }

    /// Reads and writes one failed batch's range; `None` when the stream no longer holds
    /// its first record (trimmed past the retention).
    async fn replay_batch(&self, batch: &BatchInfo) -> Result<Option<Drained>, LogError> {
        let answer = self
            .client
            .get_shard_iterator()
            .stream_name(&self.stream)
            .shard_id(&batch.shard_id)
            .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
            .starting_sequence_number(&batch.start_sequence_number)
            .send()
            .await
            .map_err(|e| kinesis_error("GetShardIterator", &self.stream, &e))?;
        let mut iterator = answer.shard_iterator().map(str::to_owned);
        let (mut drained, mut first) = (Drained::default(), true);
        while let Some(current) = iterator.take() {
            let read = self
                .client
                .get_records()
                .shard_iterator(current)
                .limit(10_000)
                .send()
                .await
                .map_err(|e| kinesis_error("GetRecords", &self.stream, &e))?;
            let page: Vec<_> = read
                .records()
                .iter()
                .filter(|r| compare(r.sequence_number(), &batch.end_sequence_number).is_le())
                .map(record_of)
                .collect();
            if first {
                first = false;
                if page.first().is_none_or(|r| r.sequence_number != batch.start_sequence_number) {
                    tracing::error!(
                        shard = batch.shard_id,
                        from = batch.start_sequence_number,
                        "the failed batch is no longer in the stream (past its retention): left in the queue"
                    );
                    return Ok(None);
                }
            }
            let done = page.len() < read.records().len()
                || read.records().is_empty() && read.millis_behind_latest().unwrap_or(0) == 0;
            if !page.is_empty() {
                self.write(&page, &mut drained).await?;
            }
            if done {
                break;
            }
            iterator = read.next_shard_iterator().map(str::to_owned);
        }
        tracing::info!(shard = batch.shard_id, records = drained.records, "failed batch replayed");
        Ok(Some(drained))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_compare_as_numbers() {
        assert_eq!(compare("9", "10"), Ordering::Less);
        assert_eq!(
            compare(
                "49590338271490256608559692538361571095921575989136588898",
                "49590338271490256608559692538361571095921575989136588899"
            ),
            Ordering::Less
        );
        assert_eq!(compare("5", "5"), Ordering::Equal);
    }

    #[test]
    fn lambda_s_on_failure_record_is_read() {
        // As the Lambda developer guide shows a Kinesis mapping's on-failure record.
        let body = r#"{
            "requestContext": {"requestId": "c9b8fa9f-5a7f-xmpl-af9c-0c604cde93a5",
                "functionArn": "arn:aws:lambda:us-east-2:123456789012:function:myfunction",
                "condition": "RetryAttemptsExhausted", "approximateInvokeCount": 1},
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
            "version": "1.0",
            "timestamp": "2019-11-14T00:38:06.021Z",
            "KinesisBatchInfo": {
                "shardId": "shardId-000000000001",
                "startSequenceNumber": "49601189658422359378836298521827638475320189012309704722",
                "endSequenceNumber": "49601189658422359378836298522902373528957594348623495186",
                "approximateArrivalOfFirstRecord": "2019-11-14T00:38:04.835Z",
                "approximateArrivalOfLastRecord": "2019-11-14T00:38:05.580Z",
                "batchSize": 500,
                "streamArn": "arn:aws:kinesis:us-east-2:123456789012:stream/mystream"
            }
        }"#;
        let failed: FailedInvocation = serde_json::from_str(body).expect("parsed");
        assert_eq!(failed.batch.shard_id, "shardId-000000000001");
        assert_eq!(
            failed.batch.stream_arn,
            "arn:aws:kinesis:us-east-2:123456789012:stream/mystream"
        );
    }
}
