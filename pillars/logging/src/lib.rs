//! Logging Pillar: a Kinesis stream, dormant until the observability pipeline is down, whose
//! records are drained into CloudWatch Logs (a log group per service); a scheduled heartbeat
//! proves the path works every few minutes; and the producer side services and engineers
//! use to send logs into the stream.

pub mod batch;
pub mod cloudwatch;
pub mod drain;
pub mod event;
pub mod heartbeat;
pub mod kpl;
pub mod producer;
pub mod replay;
pub mod settings;
pub mod sink;

use std::path::PathBuf;

/// Milliseconds since the epoch, now.
pub(crate) fn now_ms() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
        .unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    /// A Kinesis sample made with the reference tools (see integration-tests/fixtures).
    pub(crate) fn fixture(name: &str) -> Vec<u8> {
        let dir = std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo at run time");
        let path = std::path::Path::new(&dir).join("../../integration-tests/fixtures/kinesis");
        std::fs::read(path.join(name)).expect("fixture")
    }
}

/// What went wrong, naming the stream or log group and what to do.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("CloudWatch Logs {operation} on log group `{group}`: {message}")]
    Logs { operation: &'static str, group: String, message: String },
    #[error("CloudWatch Logs refused {operation} on log group `{group}`: {message}")]
    Refused { operation: &'static str, group: String, message: String },
    #[error("Kinesis {operation} on stream `{stream}`: {message}")]
    Kinesis { operation: &'static str, stream: String, message: String },
    #[error(
        "{records} record(s) could not be put into stream `{stream}` after {attempts} tries (throttled?); send them again, or raise the stream's capacity"
    )]
    NotSent { stream: String, records: usize, attempts: u32 },
    #[error(
        "stream `{stream}`: the records from {record} on could not be written to CloudWatch Logs (see the errors above); the next drain starts there"
    )]
    Sink { stream: String, record: String },
    #[error("SQS queue {queue}: {message}")]
    Queue { queue: String, message: String },
    #[error("checkpoint file {}: {error}", path.display())]
    Checkpoint { path: PathBuf, error: std::io::Error },
    #[error("stopped at the deadline; what is left is reported for a retry")]
    Deadline,
    #[error("not sent: an earlier call to the same log stream failed, and order is kept")]
    Held,
}
