use std::io::Write;

use super::*;
use crate::tests::fixture;

/// 2026-11-27T10:00:00Z, the arrival time of the records here.
const ARRIVAL: i64 = 1_795_773_600_000;

fn record(data: &[u8], key: &str) -> InputRecord {
    InputRecord {
        sequence_number: "1".into(),
        partition_key: key.into(),
        data: data.to_vec(),
        arrival_ms: ARRIVAL,
    }
}

fn decoded_with(routing: &Routing, data: &[u8], key: &str) -> (Vec<LogEvent>, Decoded) {
    let (mut events, mut seen) = (Vec::new(), Decoded::default());
    let decoder = Decoder { routing, window: TimeWindow::at(ARRIVAL + 1000, None) };
    decoder.decode(&record(data, key), &mut events, &mut seen);
    (events, seen)
}

fn decoded(data: &[u8], key: &str) -> (Vec<LogEvent>, Decoded) {
    decoded_with(&Routing::default(), data, key)
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).expect("gzip");
    encoder.finish().expect("gzip")
}

/// A partition key as Fluent Bit's `kinesis_streams` makes one: ten random characters,
/// then two hashes mod 7919 (plugins/out_kinesis_streams/kinesis_api.c, `write_event`).
const FLUENT_BIT_KEY: &str = "aZ3kQ9xLm21874213";

#[test]
fn a_kpl_aggregate_gives_its_user_records_each_routed_by_its_line() {
    let (events, _) = decoded(&fixture("kpl-aggregate-2-records.bin"), "agg-key");
    let routed: Vec<(&str, &str)> =
        events.iter().map(|e| (e.service.as_str(), e.message.as_str())).collect();
    assert_eq!(
        routed,
        [
            ("svc-a", r#"{"level":"INFO","service":"svc-a","message":"hello"}"#),
            ("svc-b", r#"{"level":"ERROR","service":"svc-b","message":"disk full"}"#),
        ]
    );
}

#[test]
fn an_aggregate_with_a_bad_checksum_passes_through_as_one_record() {
    let data = fixture("kpl-aggregate-bad-md5.bin");
    let (events, _) = decoded(&data, "raw");
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].service.as_str(), events[0].timestamp), ("unlabelled", ARRIVAL));
    assert_eq!(events[0].message, String::from_utf8_lossy(&data));
}

#[test]
fn a_subscription_delivery_keeps_its_timestamps_and_its_source() {
    let routing = Routing::default();
    let (mut events, mut seen) = (Vec::new(), Decoded::default());
    // The fixture's events are from 2025-11-20: judge them as of that day.
    let decoder = Decoder { routing: &routing, window: TimeWindow::at(1_763_633_740_000, None) };
    let data = fixture("cwl-subscription-data.gz");
    decoder.decode(&record(&data, "random-key"), &mut events, &mut seen);
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].service, "aws/lambda/networking-provisioner");
    assert_eq!(events[0].source, "2026/11/20/[$LATEST]4f0d2a7c9b1e4e6f8a3c5d7e9f1b3d5a");
    assert_eq!((events[0].timestamp, events[1].timestamp), (1_763_633_730_000, 1_763_633_730_125));
    assert_eq!(events[1].message, r#"{"level":"WARN","message":"retrying DescribeVpcs"}"#);

    let (events, seen) = decoded(&fixture("cwl-control-message.gz"), "k");
    assert!(events.is_empty());
    assert_eq!(seen.control_messages, 1);
}

#[test]
fn a_random_partition_key_never_names_a_service() {
    // Fluent Bit's record: the JSON of the record and a newline, with `time_key` appended
    // in its default format, `%Y-%m-%dT%H:%M:%S`.
    let line = "{\"log\":\"GET /health 200\",\"time\":\"2026-11-27T09:59:58\"}\n";
    let (events, _) = decoded(line.as_bytes(), FLUENT_BIT_KEY);
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].service.as_str(), events[0].source.as_str()),
        ("unlabelled", UNATTRIBUTED)
    );
    assert_eq!(events[0].timestamp, ARRIVAL - 2000, "read as UTC");
    assert_eq!(events[0].message, line.trim_end());

    let (events, _) = decoded(b"plain text", "0f1e2d3c4b5a69788796a5b4c3d2e1f0");
    assert_eq!(events[0].service, "unlabelled");
}

#[test]
fn keys_name_services_only_when_told() {
    let (events, _) = decoded(b"text", "pillar.service=billing");
    assert_eq!((events[0].service.as_str(), events[0].source.as_str()), ("billing", "billing"));
    let mut logging = pillar_config::Logging::defaults("s");
    logging.partition_key_is_service = true;
    logging.default_service = "misc".into();
    let routing = Routing::of(&logging);
    let (events, _) = decoded_with(&routing, b"text", "payments");
    assert_eq!(events[0].service, "payments");
    let (events, _) = decoded_with(&routing, br#"{"service":"dns"}"#, "payments");
    assert_eq!(events[0].service, "dns", "the line's own field comes first");
}

#[test]
fn ecs_and_configured_fields_name_the_service() {
    let ecs = r#"{"@timestamp":"2026-11-27T09:59:59.500Z","service":{"name":"checkout","version":"1.2"},"host":{"name":"ip-10-0-0-7"},"message":"paid"}"#;
    let (events, _) = decoded(ecs.as_bytes(), FLUENT_BIT_KEY);
    assert_eq!(
        (events[0].service.as_str(), events[0].source.as_str()),
        ("checkout", "ip-10-0-0-7")
    );
    assert_eq!(events[0].timestamp, ARRIVAL - 500);
    let (events, _) = decoded(br#"{"service.name":"flat","msg":"x"}"#, "k");
    assert_eq!(events[0].service, "flat", "ECS's dotted form");

    let mut logging = pillar_config::Logging::defaults("s");
    logging.service_fields = vec!["kubernetes.labels.app".into()];
    let routing = Routing::of(&logging);
    let line = r#"{"log":"ready","kubernetes":{"pod_name":"api-7d9","labels":{"app":"api"}}}"#;
    let (events, _) = decoded_with(&routing, line.as_bytes(), FLUENT_BIT_KEY);
    assert_eq!(events[0].service, "api");
}

#[test]
fn one_record_of_newline_delimited_lines_is_one_event_a_line() {
    let data = "{\"service\":\"a\",\"n\":1}\n{\"service\":\"b\",\"n\":2}\r\n\nplain line\n";
    let (events, seen) = decoded(data.as_bytes(), FLUENT_BIT_KEY);
    let routed: Vec<(&str, &str)> =
        events.iter().map(|e| (e.service.as_str(), e.message.as_str())).collect();
    assert_eq!(
        routed,
        [
            ("a", r#"{"service":"a","n":1}"#),
            ("b", r#"{"service":"b","n":2}"#),
            ("unlabelled", "plain line")
        ]
    );
    assert_eq!(seen.empty, 1, "the blank line between them");
}

#[test]
fn gzip_and_zstd_records_are_decompressed_by_their_magic() {
    let lines =
        "{\"service\":\"vec\",\"message\":\"one\"}\n{\"service\":\"vec\",\"message\":\"two\"}";
    let (events, _) = decoded(&gzip(lines.as_bytes()), FLUENT_BIT_KEY);
    assert_eq!(events.len(), 2);
    assert!(events.iter().all(|e| e.service == "vec"));
    let zstd = ruzstd::encoding::compress_to_vec(
        lines.as_bytes(),
        ruzstd::encoding::CompressionLevel::Fastest,
    );
    assert!(zstd.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]));
    let (events, _) = decoded(&zstd, FLUENT_BIT_KEY);
    assert_eq!(
        events.iter().map(|e| e.message.as_str()).collect::<Vec<_>>(),
        lines.split('\n').collect::<Vec<_>>()
    );
}

#[test]
fn compressed_data_that_will_not_decompress_is_kept_marked() {
    let mut broken = gzip(b"{\"service\":\"x\"}");
    broken.truncate(broken.len() - 6);
    let (events, seen) = decoded(&broken, "pillar.service=orders");
    assert_eq!(seen.undecodable, 1);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].service, "orders");
    let (marker, encoded) = events[0].message.split_once("] ").expect("marked");
    assert!(marker.starts_with("[pillar: gzip data that would not decompress"), "{marker}");
    assert_eq!(base64::engine::general_purpose::STANDARD.decode(encoded).expect("base64"), broken);
}

#[test]
fn every_timestamp_form_is_read() {
    let at = |value: &str| {
        let line = format!(r#"{{"service":"s","ts":{value}}}"#);
        decoded(line.as_bytes(), "k").0[0].timestamp
    };
    let expected = ARRIVAL - 1_750; // 2026-11-27T09:59:58.250Z
    assert_eq!(at("\"2026-11-27T09:59:58.250Z\""), expected, "RFC 3339");
    assert_eq!(at("\"2026-11-27T11:59:58.250+02:00\""), expected, "RFC 3339 with an offset");
    assert_eq!(at("\"2026-11-27T09:59:58.250\""), expected, "no zone: UTC");
    assert_eq!(at("\"2026-11-27 09:59:58.250\""), expected, "no zone, a space");
    assert_eq!(at("\"2026-11-27T09:59:58.250123456Z\""), expected, "nanoseconds in text");
    assert_eq!(at("1795773598.25"), expected, "epoch seconds with a fraction");
    assert_eq!(at("1795773598250"), expected, "epoch milliseconds");
    assert_eq!(at("1795773598250000"), expected, "epoch microseconds");
    assert_eq!(at("1795773598250000000"), expected, "epoch nanoseconds");
    assert_eq!(at("\"1795773598250\""), expected, "digits in a string");
    for field in ["timestamp", "@timestamp", "time", "ts", "date"] {
        let line = format!(r#"{{"{field}":"2026-11-27T09:59:58.250Z"}}"#);
        assert_eq!(decoded(line.as_bytes(), "k").0[0].timestamp, expected, "{field}");
    }
    let mut logging = pillar_config::Logging::defaults("s");
    logging.timestamp_fields = vec!["event.created".into()];
    let routing = Routing::of(&logging);
    let line = r#"{"event":{"created":"2026-11-27T09:59:58.250Z"}}"#;
    assert_eq!(decoded_with(&routing, line.as_bytes(), "k").0[0].timestamp, expected);
}

#[test]
fn a_field_of_an_unexpected_type_is_ignored_not_the_line() {
    let line = r#"{"timestamp":true,"time":{"nested":1},"ts":"yesterday","date":"2026-11-27T09:59:58Z","service":["x"],"service.name":"kept"}"#;
    let (events, _) = decoded(line.as_bytes(), "k");
    assert_eq!(events[0].service, "kept");
    assert_eq!(events[0].timestamp, ARRIVAL - 2000, "the first timestamp field that is one");
    for text in ["disk full on /var", "{not json", "{\"timestamp\":\"yesterday\"}"] {
        let (events, _) = decoded(text.as_bytes(), "host-7");
        assert_eq!(events[0].message, text);
        assert_eq!((events[0].service.as_str(), events[0].timestamp), ("unlabelled", ARRIVAL));
    }
    let (events, _) = decoded("héllo wörld ✓".as_bytes(), "k");
    assert_eq!(events[0].message, "héllo wörld ✓");
}

#[test]
fn events_outside_cloudwatch_s_window_are_restamped_keeping_their_time() {
    let old = r#"{"timestamp":"2026-10-01T00:00:00Z","service":"batch","msg":"backlog"}"#;
    let (events, seen) = decoded(old.as_bytes(), "k");
    assert_eq!(seen.restamped, 1);
    assert_eq!(events[0].timestamp, ARRIVAL, "the arrival time");
    let restamped: serde_json::Value =
        serde_json::from_str(&events[0].message).expect("still JSON");
    assert_eq!(restamped[ORIGINAL_TIMESTAMP_FIELD], "2026-10-01T00:00:00Z");
    assert_eq!(restamped["msg"], "backlog");

    let future = r#"{"ts":1795800000000}"#; // seven hours ahead
    let (events, _) = decoded(future.as_bytes(), "k");
    assert_eq!(
        events[0].message,
        r#"{"pillar_original_timestamp":"2026-11-27T17:20:00Z","ts":1795800000000}"#
    );

    let routing = Routing::default();
    let (mut events, mut seen) = (Vec::new(), Decoded::default());
    let decoder =
        Decoder { routing: &routing, window: TimeWindow::at(ARRIVAL + 30 * DAY_MS, Some(7)) };
    decoder.decode(&record(b"a line from the last outage", "k"), &mut events, &mut seen);
    assert_eq!(events[0].timestamp, ARRIVAL + 30 * DAY_MS, "arrival is out of the window too: now");
    assert_eq!(
        events[0].message,
        "[original time 2026-11-27T10:00:00Z] a line from the last outage"
    );
    assert_eq!(
        restamp("{}".into(), 0, true),
        r#"{"pillar_original_timestamp":"1970-01-01T00:00:00Z"}"#
    );
}
