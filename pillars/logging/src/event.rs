//! From Kinesis records to log events, accepting what producers of the regular pipeline
//! send: a KPL aggregate (its user records), gzip or zstd data (told by its magic bytes), a
//! CloudWatch Logs subscription delivery (its events, with their own timestamps; control
//! messages dropped), and otherwise newline-delimited JSON or text, one event a line.
//!
//! A message is the line unchanged, so JSON stays JSON for CloudWatch Logs Insights; only
//! its routing fields are read. Routing never trusts a partition key unless told to:
//! Fluent Bit's `kinesis_streams` and Vector make a random one per record.

use std::borrow::Cow;
use std::io::Read;

use base64::Engine;
use serde::Deserialize;
use serde_json::value::RawValue;
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

/// A partition key of this form names its service whatever the manifest says: producers
/// that set keys (`pillar logs ship`, Vector's `partition_key_field`, the KPL) can route
/// without a field in every line.
pub const SERVICE_KEY_PREFIX: &str = "pillar.service=";

/// The source of an event that names none.
pub const UNATTRIBUTED: &str = "unattributed";

/// The field a restamped JSON line gets, first, holding its own time (RFC 3339).
pub const ORIGINAL_TIMESTAMP_FIELD: &str = "pillar_original_timestamp";

/// The largest a compressed record may grow to (a record is at most 1 MiB).
const MAX_DECOMPRESSED_BYTES: u64 = 32 * 1024 * 1024;

/// A field of a JSON line, possibly nested (`service.name`).
#[derive(Debug, Clone)]
struct FieldPath {
    /// `segments[i..].join(".")` for each `i`: a dotted key may be written flat or nested.
    suffixes: Vec<String>,
}

impl FieldPath {
    fn new(dotted: &str) -> Self {
        let segments: Vec<&str> = dotted.split('.').collect();
        Self { suffixes: (0..segments.len()).map(|i| segments[i..].join(".")).collect() }
    }

    /// The value at this path in `object`: the flat key first, then one level down.
    fn find<'a>(&self, object: &Object<'a>) -> Option<&'a RawValue> {
        self.find_from(object, 0)
    }

    fn find_from<'a>(&self, object: &Object<'a>, from: usize) -> Option<&'a RawValue> {
        if let Some(value) = object.get(&self.suffixes[from]) {
            return Some(value);
        }
        let head_len = self.suffixes[from].len() - self.suffixes.get(from + 1)?.len() - 1;
        let head = &self.suffixes[from][..head_len];
        let inner: Object<'a> = serde_json::from_str(object.get(head)?.get()).ok()?;
        self.find_from(&inner, from + 1)
    }
}

/// How lines are routed and timed: the manifest's `[logging]` settings.
#[derive(Debug, Clone)]
pub struct Routing {
    services: Vec<FieldPath>,
    sources: Vec<FieldPath>,
    timestamps: Vec<FieldPath>,
    default_service: String,
    key_is_service: bool,
}

impl Default for Routing {
    fn default() -> Self {
        Self::of(&pillar_config::Logging::defaults("-"))
    }
}

impl Routing {
    pub fn of(logging: &pillar_config::Logging) -> Self {
        let paths = |standard: &[&str], extra: &[String]| -> Vec<FieldPath> {
            standard
                .iter()
                .copied()
                .chain(extra.iter().map(String::as_str))
                .map(FieldPath::new)
                .collect()
        };
        Self {
            services: paths(&["service", "service.name"], &logging.service_fields),
            sources: paths(&["source", "host", "host.name", "hostname"], &[]),
            timestamps: paths(
                &["timestamp", "@timestamp", "time", "ts", "date"],
                &logging.timestamp_fields,
            ),
            default_service: logging.default_service.clone(),
            key_is_service: logging.partition_key_is_service,
        }
    }

    /// The service a partition key names, if this stream's keys name services.
    fn service_of_key<'k>(&self, key: &'k str) -> Option<&'k str> {
        match key.strip_prefix(SERVICE_KEY_PREFIX) {
            Some(service) => Some(service),
            None => self.key_is_service.then_some(key),
        }
        .filter(|s| !s.is_empty())
    }
}

/// What decoding found besides events.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    /// Subscription control messages (CloudWatch Logs checking the destination).
    pub control_messages: usize,
    /// Records or lines with nothing in them.
    pub empty: usize,
    /// Records whose compressed data would not decompress: kept as marked base64 text.
    pub undecodable: usize,
    /// Events outside the time CloudWatch Logs accepts, written with the arrival time.
    pub restamped: usize,
}

/// The span of timestamps CloudWatch Logs accepts, as of the batch being decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeWindow {
    pub now_ms: i64,
    pub oldest_ms: i64,
    pub newest_ms: i64,
}

const HOUR_MS: i64 = 60 * 60 * 1000;
const DAY_MS: i64 = 24 * HOUR_MS;

impl TimeWindow {
    /// CloudWatch Logs refuses events older than 14 days or than the group's retention,
    /// or more than 2 hours ahead; an hour and ten minutes of margin keep clear of both
    /// edges (a call may wait for its retries).
    pub fn at(now_ms: i64, retention_days: Option<i32>) -> Self {
        let days = retention_days.map_or(14, |d| i64::from(d).clamp(1, 14));
        Self {
            now_ms,
            oldest_ms: now_ms - days * DAY_MS + HOUR_MS,
            newest_ms: now_ms + 2 * HOUR_MS - 10 * 60 * 1000,
        }
    }

    pub fn now(retention_days: Option<i32>) -> Self {
        Self::at(crate::now_ms(), retention_days)
    }

    fn accepts(&self, timestamp: i64) -> bool {
        (self.oldest_ms..=self.newest_ms).contains(&timestamp)
    }
}

/// Decodes records into events, routed and timed.
#[derive(Debug, Clone)]
pub struct Decoder<'r> {
    pub routing: &'r Routing,
    pub window: TimeWindow,
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

/// A JSON object's top-level fields, each left unparsed until asked for. A list, not a
/// map: a log line has a handful of fields, and hashing them costs more than looking.
struct Object<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'a> Object<'a> {
    fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Object<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Fields<'a> {
            type Value = Object<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut map: M,
            ) -> Result<Self::Value, M::Error> {
                let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(field) = map.next_entry::<Key<'a>, &'a RawValue>()? {
                    fields.push((field.0.0, field.1));
                }
                Ok(Object(fields))
            }
        }
        deserializer.deserialize_map(Fields(std::marker::PhantomData))
    }
}

/// A key, borrowed unless it has escapes.
#[derive(Deserialize)]
struct Key<'a>(#[serde(borrow)] Cow<'a, str>);

/// Where an event goes when its line does not say.
struct Fallback<'a> {
    service: Option<&'a str>,
    source: Option<&'a str>,
    timestamp: i64,
    arrival_ms: i64,
}

impl Decoder<'_> {
    /// Appends the events of `record` to `events`.
    pub fn decode(&self, record: &InputRecord, events: &mut Vec<LogEvent>, seen: &mut Decoded) {
        match kpl::deaggregate(&record.data) {
            Some(user_records) => {
                for user in user_records {
                    self.payload(&user.data, &user.partition_key, record.arrival_ms, events, seen);
                }
            }
            None => {
                self.payload(&record.data, &record.partition_key, record.arrival_ms, events, seen)
            }
        }
    }

    fn payload(
        &self,
        data: &[u8],
        partition_key: &str,
        arrival_ms: i64,
        events: &mut Vec<LogEvent>,
        seen: &mut Decoded,
    ) {
        let keyed = self.routing.service_of_key(partition_key);
        let fallback =
            Fallback { service: keyed, source: keyed, timestamp: arrival_ms, arrival_ms };
        let data = match decompress(data) {
            Ok(data) => data,
            Err((format, error)) => {
                seen.undecodable += 1;
                let message = format!(
                    "[pillar: {format} data that would not decompress ({error}), as base64] {}",
                    base64::engine::general_purpose::STANDARD.encode(data)
                );
                return self.push(message, None, &fallback, events, seen);
            }
        };
        // CloudWatch Logs delivers subscriptions gzip-compressed only: a plain JSON line is
        // not parsed twice.
        let decompressed = matches!(data, Cow::Owned(_));
        if decompressed
            && data.starts_with(b"{")
            && let Ok(subscription) = serde_json::from_slice::<Subscription>(&data)
        {
            if subscription.message_type == "CONTROL_MESSAGE" {
                seen.control_messages += 1;
                return;
            }
            let group = subscription.log_group.trim_start_matches('/');
            let fallback = Fallback {
                service: Some(group).filter(|g| !g.is_empty()).or(keyed),
                source: Some(subscription.log_stream.as_str()).filter(|s| !s.is_empty()),
                ..fallback
            };
            for event in subscription.log_events {
                let fallback = Fallback { timestamp: event.timestamp, ..fallback };
                self.line(event.message, &fallback, events, seen);
            }
            return;
        }
        let data_is_aggregate = data.starts_with(&kpl::MAGIC);
        let text = match String::from_utf8(data.into_owned()) {
            Ok(text) => text,
            // CloudWatch Logs stores text: keep what can be read.
            Err(error) => String::from_utf8_lossy(error.as_bytes()).into_owned(),
        };
        // One line, or an aggregate that failed its checksum: kept whole, as it came.
        if !text.contains('\n') || data_is_aggregate {
            return self.line(text, &fallback, events, seen);
        }
        let mut lines = text.split('\n').peekable();
        while let Some(line) = lines.next() {
            // A record ending in a newline (Fluent Bit appends one) has no empty last line.
            if line.is_empty() && lines.peek().is_none() {
                break;
            }
            self.line(line.to_owned(), &fallback, events, seen);
        }
    }

    /// Adds one line, routed by its own fields first.
    fn line(
        &self,
        mut message: String,
        fallback: &Fallback<'_>,
        events: &mut Vec<LogEvent>,
        seen: &mut Decoded,
    ) {
        while message.ends_with(['\n', '\r']) {
            message.pop();
        }
        let fields = message
            .trim_start()
            .starts_with('{')
            .then(|| serde_json::from_str::<Object<'_>>(&message).ok())
            .flatten();
        let own = fields.map(|object| {
            let text = |paths: &[FieldPath]| {
                paths.iter().find_map(|p| p.find(&object).and_then(string)).map(Cow::into_owned)
            };
            (
                text(&self.routing.services),
                text(&self.routing.sources),
                self.routing.timestamps.iter().find_map(|p| p.find(&object).and_then(millis)),
            )
        });
        let json = own.is_some();
        let (service, source, timestamp) = own.unwrap_or_default();
        let line = Line { service, source, timestamp, json };
        self.push(message, Some(line), fallback, events, seen)
    }

    fn push(
        &self,
        message: String,
        line: Option<Line>,
        fallback: &Fallback<'_>,
        events: &mut Vec<LogEvent>,
        seen: &mut Decoded,
    ) {
        if message.is_empty() {
            seen.empty += 1;
            return;
        }
        let line = line.unwrap_or_default();
        let service = line
            .service
            .or_else(|| fallback.service.map(str::to_owned))
            .unwrap_or_else(|| self.routing.default_service.clone());
        let source = line
            .source
            .or_else(|| fallback.source.map(str::to_owned))
            .unwrap_or_else(|| UNATTRIBUTED.to_owned());
        let timestamp = line.timestamp.unwrap_or(fallback.timestamp);
        let (timestamp, message) = if self.window.accepts(timestamp) {
            (timestamp, message)
        } else {
            seen.restamped += 1;
            let now = if self.window.accepts(fallback.arrival_ms) {
                fallback.arrival_ms
            } else {
                self.window.now_ms
            };
            (now, restamp(message, timestamp, line.json))
        };
        events.push(LogEvent { service, source, timestamp, message });
    }
}

/// The routing fields a line carried itself.
#[derive(Default)]
struct Line {
    service: Option<String>,
    source: Option<String>,
    timestamp: Option<i64>,
    json: bool,
}

/// `message` with its own time kept in it: a JSON object gets the field
/// `pillar_original_timestamp` first; text gets `[original time …] ` before it.
fn restamp(message: String, timestamp: i64, json: bool) -> String {
    let original = rfc3339(timestamp);
    if json && let Some(open) = message.find('{') {
        let rest = message[open + 1..].trim_start();
        let comma = if rest.starts_with('}') { "" } else { "," };
        return format!(
            "{}{{\"{ORIGINAL_TIMESTAMP_FIELD}\":\"{original}\"{comma}{rest}",
            &message[..open]
        );
    }
    format!("[original time {original}] {message}")
}

fn rfc3339(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| format!("{ms} ms since the epoch"))
}

/// gzip or zstd data decompressed (told by their magic bytes); anything else as it is.
/// A failure names the format and why.
fn decompress(data: &[u8]) -> Result<Cow<'_, [u8]>, (&'static str, String)> {
    let (format, reader): (&str, Box<dyn Read + '_>) = if data.starts_with(&[0x1f, 0x8b]) {
        ("gzip", Box::new(flate2::read::MultiGzDecoder::new(data)))
    } else if data.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        match ruzstd::decoding::StreamingDecoder::new(data) {
            Ok(decoder) => ("zstd", Box::new(decoder)),
            Err(error) => return Err(("zstd", error.to_string())),
        }
    } else {
        return Ok(Cow::Borrowed(data));
    };
    let mut out = Vec::new();
    reader
        .take(MAX_DECOMPRESSED_BYTES + 1)
        .read_to_end(&mut out)
        .map_err(|e| (format, e.to_string()))?;
    if out.len() as u64 > MAX_DECOMPRESSED_BYTES {
        return Err((format, format!("it expands beyond {MAX_DECOMPRESSED_BYTES} bytes")));
    }
    Ok(Cow::Owned(out))
}

/// A JSON string value, if it is one and not empty.
fn string(raw: &RawValue) -> Option<Cow<'_, str>> {
    serde_json::from_str::<Cow<'_, str>>(raw.get()).ok().filter(|s| !s.trim().is_empty())
}

/// A JSON timestamp in milliseconds since the epoch: a number (or a string of digits) in
/// seconds, milliseconds, microseconds or nanoseconds, told apart by magnitude; RFC 3339;
/// RFC 3339 without a zone (UTC), with `T` or a space. Anything else is no timestamp.
fn millis(raw: &RawValue) -> Option<i64> {
    if let Ok(whole) = serde_json::from_str::<i64>(raw.get()) {
        return epoch_millis_whole(whole);
    }
    if let Ok(number) = serde_json::from_str::<f64>(raw.get()) {
        return epoch_millis(number);
    }
    let text: Cow<'_, str> = serde_json::from_str(raw.get()).ok()?;
    parse_time(text.trim())
}

/// Milliseconds of an epoch number, its unit told by magnitude: below 10^11 seconds (until
/// the year 5138), below 10^14 milliseconds, below 10^17 microseconds, else nanoseconds.
fn epoch_millis(number: f64) -> Option<i64> {
    if !number.is_finite() || number <= 0.0 {
        return None;
    }
    let ms = match number {
        n if n < 1e11 => n * 1e3,
        n if n < 1e14 => n,
        n if n < 1e17 => n / 1e3,
        n => n / 1e6,
    };
    Some(ms as i64)
}

/// `epoch_millis` of a whole number, without a float's rounding (nanoseconds need 19
/// digits).
fn epoch_millis_whole(number: i64) -> Option<i64> {
    match number {
        n if n <= 0 => None,
        n if n < 100_000_000_000 => n.checked_mul(1000),
        n if n < 100_000_000_000_000 => Some(n),
        n if n < 100_000_000_000_000_000 => Some(n / 1000),
        n => Some(n / 1_000_000),
    }
}

/// Milliseconds of a timestamp written as text.
pub fn parse_time(text: &str) -> Option<i64> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().ok().and_then(epoch_millis_whole);
    }
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return text.parse().ok().and_then(epoch_millis);
    }
    let at = OffsetDateTime::parse(text, &Rfc3339).ok().or_else(|| {
        // Without a zone (Fluent Bit's default `%Y-%m-%dT%H:%M:%S`): UTC.
        let bytes = text.as_bytes();
        if bytes.len() < 19 || !matches!(bytes[10], b'T' | b't' | b' ') {
            return None;
        }
        let zoned = format!("{}T{}Z", &text[..10], &text[11..]);
        OffsetDateTime::parse(&zoned, &Rfc3339).ok()
    })?;
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).ok()
}

/// The service a line names itself (`service` or `service.name` in a JSON line), if it
/// does.
pub fn service_of(line: &str) -> Option<String> {
    let object: Object<'_> = serde_json::from_str(line).ok()?;
    Routing::default()
        .services
        .iter()
        .find_map(|p| p.find(&object).and_then(string))
        .map(Cow::into_owned)
}

#[cfg(test)]
mod tests;
