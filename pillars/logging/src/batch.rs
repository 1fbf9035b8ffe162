//! CloudWatch Logs' rules for what one PutLogEvents call may carry, and for names: a log
//! group per service, a log stream per source and day, events too large split into parts.

use time::OffsetDateTime;

/// PutLogEvents: message bytes plus 26 per event, at most this.
pub const MAX_BATCH_BYTES: usize = 1_048_576;
/// What CloudWatch Logs counts for each event besides its message.
pub const EVENT_OVERHEAD: usize = 26;
/// PutLogEvents: events per call.
pub const MAX_BATCH_EVENTS: usize = 10_000;
/// PutLogEvents: from the first event of a call to its last.
pub const MAX_SPAN_MS: i64 = 24 * 60 * 60 * 1000;
/// The largest message sent: CloudWatch Logs takes events of 256 KiB (documented as 1 MiB
/// since 2025; the smaller limit holds for both).
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024 - EVENT_OVERHEAD;

/// `<prefix><service>`, with what CloudWatch Logs does not accept in a group name
/// (anything but letters, digits, `_ - . / #`) replaced by `_`, at most 512 characters.
pub fn group_name(prefix: &str, service: &str) -> String {
    let service = if service.is_empty() { "unknown" } else { service };
    let name: String = prefix
        .chars()
        .chain(service.chars())
        .map(|c| if c.is_ascii_alphanumeric() || "_-./#".contains(c) { c } else { '_' })
        .take(512)
        .collect();
    name
}

/// `<yyyy>/<mm>/<dd>/<source>` of the event's UTC day, as Lambda names its own streams;
/// `:` and `*` (refused in stream names) replaced by `_`, at most 512 characters.
pub fn stream_name(source: &str, timestamp_ms: i64) -> String {
    let day = OffsetDateTime::from_unix_timestamp(timestamp_ms.div_euclid(1000))
        .map(|t| t.date())
        .unwrap_or(time::Date::MIN);
    let source = if source.is_empty() { "unknown" } else { source };
    let name = format!("{:04}/{:02}/{:02}/{source}", day.year(), u8::from(day.month()), day.day());
    name.chars().map(|c| if c == ':' || c == '*' { '_' } else { c }).take(512).collect()
}

/// `message` in parts of at most `max` bytes, each but a lone one marked `[part i/n] `,
/// cut between characters: an event too large for CloudWatch Logs is split, never dropped.
pub fn split(message: String, max: usize) -> Vec<String> {
    if message.len() <= max {
        return vec![message];
    }
    // The marker's length depends on the number of parts, which depends on the marker.
    let mut parts = message.len().div_ceil(max);
    loop {
        let marker = format!("[part {parts}/{parts}] ").len();
        let payload = max.saturating_sub(marker).max(4);
        let chunks = chunks(&message, payload);
        if chunks.len() <= parts {
            let n = chunks.len();
            return chunks
                .into_iter()
                .enumerate()
                .map(|(i, chunk)| format!("[part {}/{n}] {chunk}", i + 1))
                .collect();
        }
        parts = chunks.len();
    }
}

/// `text` cut into pieces of at most `max` bytes, between characters.
fn chunks(text: &str, max: usize) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut end = rest.len().min(max);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let (piece, tail) = rest.split_at(end);
        pieces.push(piece);
        rest = tail;
    }
    pieces
}

/// Cuts chronologically sorted events (`(timestamp, message bytes)`) into the index ranges
/// of PutLogEvents calls.
pub fn batches(events: &[(i64, usize)]) -> Vec<std::ops::Range<usize>> {
    let mut ranges = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, (timestamp, len)) in events.iter().enumerate() {
        let size = len + EVENT_OVERHEAD;
        let full = i - start == MAX_BATCH_EVENTS
            || bytes + size > MAX_BATCH_BYTES
            || timestamp - events[start].0 > MAX_SPAN_MS;
        if full && i > start {
            ranges.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < events.len() {
        ranges.push(start..events.len());
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_made_valid_for_cloudwatch() {
        assert_eq!(group_name("/pillar/", "dns"), "/pillar/dns");
        assert_eq!(group_name("/pillar/", "team a:svc"), "/pillar/team_a_svc");
        assert_eq!(group_name("/pillar/", ""), "/pillar/unknown");
        assert_eq!(group_name("/p/", &"x".repeat(600)).len(), 512);
        assert_eq!(stream_name("ip-10-0-0-1", 1_795_773_600_250), "2026/11/27/ip-10-0-0-1");
        assert_eq!(stream_name("a:b*c", 0), "1970/01/01/a_b_c");
    }

    #[test]
    fn a_large_event_is_split_into_marked_parts_between_characters() {
        let message = "é".repeat(1000);
        let parts = split(message.clone(), 300);
        assert!(
            parts.iter().all(|p| p.len() <= 300),
            "{:?}",
            parts.iter().map(String::len).collect::<Vec<_>>()
        );
        assert!(parts[0].starts_with(&format!("[part 1/{}] ", parts.len())));
        let joined: String = parts.iter().map(|p| p.split_once("] ").expect("marker").1).collect();
        assert_eq!(joined, message);
        assert_eq!(split("small".into(), 300), ["small"]);
    }

    #[test]
    fn batches_respect_bytes_count_and_span() {
        let small: Vec<(i64, usize)> = (0..25_000).map(|i| (i, 10)).collect();
        let lens: Vec<usize> = batches(&small).iter().map(|r| r.len()).collect();
        assert_eq!(lens, [10_000, 10_000, 5_000]);

        let big = vec![(0, MAX_MESSAGE_BYTES); 9];
        let ranges = batches(&big);
        assert!(
            ranges
                .iter()
                .all(|r| r.len() * (MAX_MESSAGE_BYTES + EVENT_OVERHEAD) <= MAX_BATCH_BYTES)
        );
        assert_eq!(ranges.iter().map(|r| r.len()).sum::<usize>(), 9);

        let day = [(0, 1), (MAX_SPAN_MS, 1), (MAX_SPAN_MS + 1, 1)];
        assert_eq!(batches(&day), [0..2, 2..3]);
        assert!(batches(&[]).is_empty());
    }
}
