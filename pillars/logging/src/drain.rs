//! Draining the stream without Lambda (`pillar logs drain`): every shard read from the
//! oldest record, or from where a checkpoint file says the last run stopped, through the
//! same sink the Lambda runs. The checkpoint moves only past records durably written, and
//! names the stream it belongs to (ARN and creation time): a stream deleted and made again
//! under the same name is read from its oldest record, not skipped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::types::ShardIteratorType;

use crate::LogError;
use crate::event::InputRecord;
use crate::sink::{Sink, SinkReport};

/// GetRecords: records per call (Lambda delivers at most as many per invocation).
const RECORDS_PER_READ: i32 = 10_000;
/// Tries of one batch the sink could not write before the drain gives up.
const WRITE_ATTEMPTS: u32 = 5;

/// Where a drain got to in one stream.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Checkpoint {
    stream_arn: String,
    /// When the stream was created, in milliseconds since the epoch.
    created: i64,
    /// shard id → the sequence number of the last record written.
    shards: BTreeMap<String, String>,
}

/// What identifies a stream beyond its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamIdentity {
    pub arn: String,
    pub created: i64,
}

/// What a drain did, summed over its batches.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Drained {
    pub shards: usize,
    pub records: usize,
    pub events_written: usize,
    pub events_rejected: usize,
    pub events_restamped: usize,
    pub events_to_fallback: usize,
    pub records_undecodable: usize,
}

impl Drained {
    fn add(&mut self, report: &SinkReport) {
        self.events_written += report.events_written;
        self.events_rejected += report.events_rejected;
        self.events_restamped += report.decoded.restamped;
        self.events_to_fallback += report.events_to_fallback;
        self.records_undecodable += report.decoded.undecodable;
    }
}

/// Reads one stream into a sink.
#[derive(Debug)]
pub struct Drain {
    pub client: Client,
    pub stream: String,
    pub sink: Sink,
    /// The checkpoint file; by default one per stream identity in the temporary directory.
    pub checkpoint: Option<PathBuf>,
}

pub(crate) fn kinesis_error<E, R>(
    operation: &'static str,
    stream: &str,
    error: &aws_sdk_kinesis::error::SdkError<E, R>,
) -> LogError
where
    E: aws_sdk_kinesis::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    LogError::Kinesis {
        operation,
        stream: stream.to_owned(),
        message: pillar_auth::aws_error_message(error),
    }
}

impl Drain {
    /// Reads every shard to its end; with `once`, returns then, otherwise keeps reading
    /// new records until stopped.
    pub async fn run(&self, once: bool) -> Result<Drained, LogError> {
        let identity = self.identity().await?;
        let path = self.checkpoint.clone().unwrap_or_else(|| default_checkpoint(&identity));
        let mut checkpoint = load(&path, &identity)?;
        let mut drained = Drained::default();
        loop {
            let shards = self.shards().await?;
            drained.shards = shards.len();
            for shard in &shards {
                self.read_shard(shard, (&path, &mut checkpoint), &mut drained).await?;
            }
            if once {
                return Ok(drained);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// The stream's ARN and creation time.
    pub async fn identity(&self) -> Result<StreamIdentity, LogError> {
        let summary = self
            .client
            .describe_stream_summary()
            .stream_name(&self.stream)
            .send()
            .await
            .map_err(|e| kinesis_error("DescribeStreamSummary", &self.stream, &e))?;
        let summary = summary.stream_description_summary().ok_or_else(|| LogError::Kinesis {
            operation: "DescribeStreamSummary",
            stream: self.stream.clone(),
            message: "no stream description in the answer".into(),
        })?;
        Ok(StreamIdentity {
            arn: summary.stream_arn().to_owned(),
            created: summary.stream_creation_timestamp().to_millis().unwrap_or_default(),
        })
    }

    async fn shards(&self) -> Result<Vec<String>, LogError> {
        let mut shards = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let request = match token.take() {
                Some(token) => self.client.list_shards().next_token(token),
                None => self.client.list_shards().stream_name(&self.stream),
            };
            let page =
                request.send().await.map_err(|e| kinesis_error("ListShards", &self.stream, &e))?;
            shards.extend(page.shards().iter().map(|s| s.shard_id().to_owned()));
            match page.next_token() {
                Some(next) => token = Some(next.to_owned()),
                None => return Ok(shards),
            }
        }
    }

    /// Reads `shard` from its checkpoint to its current end.
    async fn read_shard(
        &self,
        shard: &str,
        (path, checkpoint): (&Path, &mut Checkpoint),
        drained: &mut Drained,
    ) -> Result<(), LogError> {
        let mut iterator =
            Some(self.iterator(shard, checkpoint.shards.get(shard).map(String::as_str)).await?);
        while let Some(current) = iterator.take() {
            let read = self
                .client
                .get_records()
                .shard_iterator(current)
                .limit(RECORDS_PER_READ)
                .send()
                .await
                .map_err(|e| kinesis_error("GetRecords", &self.stream, &e))?;
            let records: Vec<InputRecord> = read.records().iter().map(record_of).collect();
            let next = read.next_shard_iterator().map(str::to_owned);
            if records.is_empty() {
                // An empty page before the end of the data is possible: go on until caught up.
                if read.millis_behind_latest().unwrap_or(0) > 0 {
                    iterator = next;
                    continue;
                }
                break;
            }
            self.write(&records, drained).await?;
            let last = records.last().expect("not empty").sequence_number.clone();
            checkpoint.shards.insert(shard.to_owned(), last);
            save(path, checkpoint)?;
            iterator = next;
        }
        Ok(())
    }

    /// Writes `records` through the sink, as Lambda would retry a batch: from the first
    /// record not written, a few times; adds what each try wrote to `drained`.
    pub(crate) async fn write(
        &self,
        records: &[InputRecord],
        drained: &mut Drained,
    ) -> Result<(), LogError> {
        drained.records += records.len();
        let mut from = 0;
        for attempt in 1..=WRITE_ATTEMPTS {
            let report = self.sink.write(&records[from..], None).await;
            drained.add(&report);
            let Some(failed) = report.first_failed else { return Ok(()) };
            from += records[from..].iter().position(|r| r.sequence_number == failed).unwrap_or(0);
            tracing::warn!(
                stream = self.stream,
                record = failed,
                attempt,
                "batch not fully written; retrying from its first failed record"
            );
            tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await;
        }
        Err(LogError::Sink {
            stream: self.stream.clone(),
            record: records[from].sequence_number.clone(),
        })
    }

    async fn iterator(&self, shard: &str, after: Option<&str>) -> Result<String, LogError> {
        let request = self.client.get_shard_iterator().stream_name(&self.stream).shard_id(shard);
        let request = match after {
            Some(sequence) => request
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .starting_sequence_number(sequence),
            None => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
        };
        let answer = request
            .send()
            .await
            .map_err(|e| kinesis_error("GetShardIterator", &self.stream, &e))?;
        answer.shard_iterator().map(str::to_owned).ok_or_else(|| LogError::Kinesis {
            operation: "GetShardIterator",
            stream: self.stream.clone(),
            message: format!("no iterator for shard {shard}"),
        })
    }
}

/// A record as GetRecords gives it, as the sink takes it.
pub(crate) fn record_of(record: &aws_sdk_kinesis::types::Record) -> InputRecord {
    InputRecord {
        sequence_number: record.sequence_number().to_owned(),
        partition_key: record.partition_key().unwrap_or_default().to_owned(),
        data: record.data().as_ref().to_vec(),
        arrival_ms: record
            .approximate_arrival_timestamp()
            .and_then(|t| t.to_millis().ok())
            .unwrap_or_default(),
    }
}

/// `<temp>/pillars-logs/<stream ARN>-<created>.checkpoint.json`, the ARN's `:` and `/` as `_`.
fn default_checkpoint(identity: &StreamIdentity) -> PathBuf {
    let name: String = identity
        .arn
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' })
        .collect();
    std::env::temp_dir()
        .join("pillars-logs")
        .join(format!("{name}-{}.checkpoint.json", identity.created))
}

/// The checkpoint at `path` if it belongs to the stream `identity` names; a fresh one
/// (from the oldest record) when there is none or it is another stream's, with a warning.
fn load(path: &Path, identity: &StreamIdentity) -> Result<Checkpoint, LogError> {
    let fresh = Checkpoint {
        stream_arn: identity.arn.clone(),
        created: identity.created,
        shards: BTreeMap::new(),
    };
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(fresh),
        Err(error) => return Err(LogError::Checkpoint { path: path.to_owned(), error }),
    };
    match serde_json::from_slice::<Checkpoint>(&bytes) {
        Ok(found) if found.stream_arn == identity.arn && found.created == identity.created => {
            Ok(found)
        }
        Ok(found) => {
            tracing::warn!(
                checkpoint = %path.display(),
                of = found.stream_arn,
                created = found.created,
                stream = identity.arn,
                "the checkpoint is another stream's (deleted and made again?); reading from the oldest record"
            );
            Ok(fresh)
        }
        Err(_) if serde_json::from_slice::<BTreeMap<String, String>>(&bytes).is_ok() => {
            tracing::warn!(checkpoint = %path.display(), "the checkpoint names no stream (an older pillar wrote it); reading from the oldest record");
            Ok(fresh)
        }
        Err(e) => Err(LogError::Checkpoint {
            path: path.to_owned(),
            error: std::io::Error::other(format!(
                "{e}; delete it to read the stream from its oldest record"
            )),
        }),
    }
}

/// Writes the checkpoint whole or not at all (a new file renamed over the old).
fn save(path: &Path, checkpoint: &Checkpoint) -> Result<(), LogError> {
    let failed = |error| LogError::Checkpoint { path: path.to_owned(), error };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(failed)?;
    }
    let fresh = path.with_extension("tmp");
    let text = serde_json::to_vec_pretty(checkpoint).expect("a map of strings serialises");
    std::fs::write(&fresh, text).and_then(|()| std::fs::rename(&fresh, path)).map_err(failed)
}
