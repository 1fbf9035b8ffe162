//! From Kinesis records to log events, accepting what producers of the regular pipeline
//! send, in this order: a KPL aggregate (its user records), a gzip CloudWatch Logs
//! subscription delivery (its events, with their own timestamps; control messages
//! dropped), a JSON log line, plain text. A message is the line unchanged, so JSON stays
//! JSON for CloudWatch Logs Insights; only its routing fields are read.

use std::borrow::Cow;
use std::io::Read;

use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::kpl;

/// A Kinesis record as the sink receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputRecord {
    pub sequence_number: String,
    pub partition_key: String,
    pub data: Vec<u8>,
    /// When Kinesis received it, in milliseconds since the epoch.
    pub arrival_ms: i64,
}

/// One log event and where it belongs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEvent {
    /// The service it is from (its log group is `<prefix><service>`).
    pub service: String,
    /// What sent it, within the service (its log stream is `<date>/<source>`).
    pub source: String,
    /// Milliseconds since the epoch.
    pub timestamp: i64,
    pub message: String,
}

/// The fields of a JSON line that route it; everything else is left in the message.
#[derive(Deserialize)]
struct LineFields<'a> {
    #[serde(borrow, default)]
    service: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    source: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    host: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    timestamp: Option<Timestamp<'a>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Timestamp<'a> {
    Millis(f64),
    Text(#[serde(borrow)] Cow<'a, str>),
}

/// A CloudWatch Logs subscription delivery.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Subscription {
    message_type: String,
    #[serde(default)]
    log_group: String,
    #[serde(default)]
    log_stream: String,
    #[serde(default)]
    log_events: Vec<SubscriptionEvent>,
}

#[derive(Deserialize)]
struct SubscriptionEvent {
    timestamp: i64,
    message: String,
}

/// What decoding found besides events.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    /// Subscription control messages (CloudWatch Logs checking the destination).
    pub control_messages: usize,
    /// Records or lines with nothing in them.
    pub empty: usize,
}

/// Appends the events of `record` to `events`.
pub fn decode(record: &InputRecord, events: &mut Vec<LogEvent>, dropped: &mut Dropped) {
    match kpl::deaggregate(&record.data) {
        Some(user_records) => {
            for user in user_records {
                decode_payload(&user.data, &user.partition_key, record.arrival_ms, events, dropped);
            }
        }
        None => {
            decode_payload(&record.data, &record.partition_key, record.arrival_ms, events, dropped)
        }
    }
}

fn decode_payload(
    data: &[u8],
    partition_key: &str,
    arrival_ms: i64,
    events: &mut Vec<LogEvent>,
    dropped: &mut Dropped,
) {
    if data.starts_with(&[0x1f, 0x8b])
        && let Some(subscription) = gunzip_subscription(data)
    {
        if subscription.message_type == "CONTROL_MESSAGE" {
            dropped.control_messages += 1;
            return;
        }
        let group = subscription.log_group.trim_start_matches('/');
        let service = if group.is_empty() { partition_key } else { group };
        let source = match subscription.log_stream.as_str() {
            "" => partition_key,
            stream => stream,
        };
        for event in subscription.log_events {
            push(line(event.message), (service, source, event.timestamp), events, dropped);
        }
        return;
    }
    let text = match String::from_utf8(data.to_vec()) {
        Ok(text) => text,
        // CloudWatch Logs stores text: keep what can be read.
        Err(error) => String::from_utf8_lossy(error.as_bytes()).into_owned(),
    };
    push(line(text), (partition_key, partition_key, arrival_ms), events, dropped);
}

/// Adds `line` as an event, its own fields first, then `(service, source, timestamp)`.
fn push(
    line: Line,
    fallback: (&str, &str, i64),
    events: &mut Vec<LogEvent>,
    dropped: &mut Dropped,
) {
    if line.message.is_empty() {
        dropped.empty += 1;
        return;
    }
    let (service, source, timestamp) = fallback;
    events.push(LogEvent {
        service: line.service.unwrap_or_else(|| service.to_owned()),
        source: line.source.unwrap_or_else(|| source.to_owned()),
        timestamp: line.timestamp.unwrap_or(timestamp),
        message: line.message,
    });
}

/// A gzip subscription delivery, or `None` when the bytes are not one.
fn gunzip_subscription(data: &[u8]) -> Option<Subscription> {
    let mut json = Vec::new();
    flate2::read::MultiGzDecoder::new(data).read_to_end(&mut json).ok()?;
    serde_json::from_slice(&json).ok()
}

/// The service a line names itself (`"service"` in a JSON line), if it does.
pub fn service_of(line: &str) -> Option<String> {
    self::line(line.to_owned()).service
}

/// A line and the routing fields it carries itself.
struct Line {
    message: String,
    service: Option<String>,
    source: Option<String>,
    timestamp: Option<i64>,
}

/// One line, without its line ending; its routing fields when it is a JSON object.
fn line(mut message: String) -> Line {
    while message.ends_with(['\n', '\r']) {
        message.pop();
    }
    let fields = message
        .trim_start()
        .starts_with('{')
        .then(|| serde_json::from_str::<LineFields<'_>>(&message).ok())
        .flatten();
    let (service, source, timestamp) = match fields {
        Some(fields) => (
            fields.service.map(Cow::into_owned),
            fields.source.or(fields.host).map(Cow::into_owned),
            fields.timestamp.and_then(|t| t.millis()),
        ),
        None => (None, None, None),
    };
    Line { message, service, source, timestamp }
}

impl Timestamp<'_> {
    /// Milliseconds since the epoch: RFC 3339 text, or a number of milliseconds (a number
    /// too small to be milliseconds since 1973 is taken for seconds).
    fn millis(&self) -> Option<i64> {
        match self {
            Self::Millis(n) if *n < 1e11 => Some((n * 1000.0) as i64),
            Self::Millis(n) => Some(*n as i64),
            Self::Text(text) => {
                let at = OffsetDateTime::parse(text, &Rfc3339).ok()?;
                i64::try_from(at.unix_timestamp_nanos() / 1_000_000).ok()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::fixture;

    fn record(data: &[u8], key: &str) -> InputRecord {
        InputRecord {
            sequence_number: "1".into(),
            partition_key: key.into(),
            data: data.to_vec(),
            arrival_ms: 1_700_000_000_000,
        }
    }

    fn decoded(data: &[u8], key: &str) -> (Vec<LogEvent>, Dropped) {
        let (mut events, mut dropped) = (Vec::new(), Dropped::default());
        decode(&record(data, key), &mut events, &mut dropped);
        (events, dropped)
    }

    #[test]
    fn a_kpl_aggregate_gives_its_user_records_each_routed_by_its_line() {
        let (events, _) = decoded(&fixture("kpl-aggregate-2-records.bin"), "agg-key");
        let routed: Vec<(&str, &str, &str)> = events
            .iter()
            .map(|e| (e.service.as_str(), e.source.as_str(), e.message.as_str()))
            .collect();
        assert_eq!(
            routed,
            [
                ("svc-a", "svc-a", r#"{"level":"INFO","service":"svc-a","message":"hello"}"#),
                ("svc-b", "svc-b", r#"{"level":"ERROR","service":"svc-b","message":"disk full"}"#),
            ]
        );
    }

    #[test]
    fn an_aggregate_with_a_bad_checksum_passes_through_as_one_record() {
        let data = fixture("kpl-aggregate-bad-md5.bin");
        let (events, _) = decoded(&data, "raw");
        assert_eq!(events.len(), 1);
        assert_eq!((events[0].service.as_str(), events[0].timestamp), ("raw", 1_700_000_000_000));
        assert_eq!(events[0].message, String::from_utf8_lossy(&data));
    }

    #[test]
    fn a_subscription_delivery_keeps_its_timestamps_and_its_source() {
        let (events, _) = decoded(&fixture("cwl-subscription-data.gz"), "random-key");
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].service, "aws/lambda/networking-provisioner");
        assert_eq!(events[0].source, "2026/11/20/[$LATEST]4f0d2a7c9b1e4e6f8a3c5d7e9f1b3d5a");
        assert_eq!(
            (events[0].timestamp, events[1].timestamp),
            (1_763_633_730_000, 1_763_633_730_125)
        );
        assert_eq!(events[1].message, r#"{"level":"WARN","message":"retrying DescribeVpcs"}"#);

        let (events, dropped) = decoded(&fixture("cwl-control-message.gz"), "k");
        assert!(events.is_empty());
        assert_eq!(dropped.control_messages, 1);
    }

    #[test]
    fn json_lines_carry_service_source_and_timestamp_and_stay_unchanged() {
        let line = r#"{"timestamp":"2026-11-27T10:00:00.250Z","service":"dns","host":"ip-10-0-0-1","msg":"ok"}"#;
        let (events, _) = decoded(format!("{line}\n").as_bytes(), "fallback");
        assert_eq!(events[0].message, line);
        assert_eq!((events[0].service.as_str(), events[0].source.as_str()), ("dns", "ip-10-0-0-1"));
        assert_eq!(events[0].timestamp, 1_795_773_600_250);

        let (events, _) = decoded(br#"{"timestamp":1795773600250,"level":"info"}"#, "svc");
        assert_eq!((events[0].service.as_str(), events[0].timestamp), ("svc", 1_795_773_600_250));
        let (events, _) = decoded(br#"{"timestamp":1795773600}"#, "svc");
        assert_eq!(events[0].timestamp, 1_795_773_600_000, "seconds are read as seconds");
    }

    #[test]
    fn plain_text_and_broken_json_fall_back_to_the_record() {
        for text in ["disk full on /var", "{not json", "{\"timestamp\":\"yesterday\"}"] {
            let (events, _) = decoded(text.as_bytes(), "host-7");
            assert_eq!(events[0].message, text);
            assert_eq!(
                (events[0].service.as_str(), events[0].timestamp),
                ("host-7", 1_700_000_000_000)
            );
        }
        let (events, dropped) = decoded(b"\n", "k");
        assert!(events.is_empty());
        assert_eq!(dropped.empty, 1);
        let (events, _) = decoded("héllo wörld ✓".as_bytes(), "k");
        assert_eq!(events[0].message, "héllo wörld ✓");
    }
}
