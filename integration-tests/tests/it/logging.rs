//! Logging Pillar end to end against Kinesis and CloudWatch Logs on moto: lines shipped with
//! `pillar logs ship`, aggregates built by `aws-kinesis-agg`, a CloudWatch Logs subscription
//! delivering into the stream; drained with `pillar logs drain` (the log-sink's code) and
//! read back with boto3.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::support::{env, ok, pillar, python, run, stderr, unique};

fn create_stream() -> String {
    let stream = unique("logs");
    python(
        "import sys, boto3\nboto3.client('kinesis').create_stream(StreamName=sys.argv[1], ShardCount=2)",
        &[&stream],
    );
    stream
}

fn drain(stream: &str, checkpoint: &Path) -> String {
    ok(pillar()
        .args(["logs", "drain", "--once", "--stream", stream, "--checkpoint"])
        .arg(checkpoint))
}

/// Every event of the log groups starting with `prefix`, read with boto3: group → events
/// `(timestamp, message)` as CloudWatch Logs returns them.
pub(crate) fn stored_events(prefix: &str) -> BTreeMap<String, Vec<(i64, String)>> {
    let script = r#"
import json, sys, boto3
logs = boto3.client("logs")
found = {}
for page in logs.get_paginator("describe_log_groups").paginate(logGroupNamePrefix=sys.argv[1]):
    for group in page["logGroups"]:
        name = group["logGroupName"]
        events = []
        for events_page in logs.get_paginator("filter_log_events").paginate(logGroupName=name):
            events += [[e["timestamp"], e["message"]] for e in events_page["events"]]
        found[name] = events
print(json.dumps(found))
"#;
    let found: BTreeMap<String, Vec<(i64, String)>> =
        serde_json::from_str(&python(script, &[prefix])).expect("json");
    found
}

fn retention_of(group: &str) -> Option<i64> {
    let script = "import sys, boto3\n\
        g = boto3.client('logs').describe_log_groups(logGroupNamePrefix=sys.argv[1])['logGroups'][0]\n\
        print(g.get('retentionInDays', 0))";
    Some(python(script, &[group]).trim().parse::<i64>().expect("days")).filter(|d| *d > 0)
}

/// The events' messages with `[part i/n] ` parts joined back.
fn joined(events: &[(i64, String)]) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut open = false;
    for (_, message) in events {
        let part = message
            .strip_prefix("[part ")
            .and_then(|rest| rest.split_once("] "))
            .and_then(|(counter, text)| Some((counter.split_once('/')?, text)));
        match part {
            Some(((i, n), text)) => {
                if i == "1" {
                    lines.push(String::new());
                }
                lines.last_mut().expect("a first part").push_str(text);
                open = i != n;
            }
            None => {
                assert!(!open, "a part is missing before {message:.40}");
                lines.push(message.clone());
            }
        }
    }
    lines
}

#[test]
fn ten_thousand_lines_of_several_services_arrive_once_in_order() {
    let stream = create_stream();
    // Names of this run alone: moto keeps the log groups of earlier runs.
    let run_tag = unique("svc");
    let services = ["dns", "vpc", "iam", "edge"].map(|s| format!("{run_tag}-{s}"));
    let batch_job = format!("{run_tag}-batch-job");
    // An hour ago: within the time CloudWatch Logs takes, so no line is restamped.
    let base_ms = (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH))
        .expect("after 1970")
        .as_millis() as i64
        - 3_600_000;
    let mut lines = Vec::new();
    let mut expected: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for n in 0..10_000_i64 {
        let line = match n % 5 {
            // Plain text: the service is the --service of the shipment.
            4 => format!("plain line {n} — ünïcödé ✓ 日本語"),
            _ => {
                let service = &services[(n % 4) as usize];
                let at = time::OffsetDateTime::from_unix_timestamp_nanos(
                    i128::from(base_ms + n) * 1_000_000,
                )
                .expect("time")
                .format(&time::format_description::well_known::Rfc3339)
                .expect("format");
                format!(r#"{{"timestamp":"{at}","service":"{service}","n":{n},"msg":"ça marche"}}"#)
            }
        };
        let service = if n % 5 == 4 { &batch_job } else { &services[(n % 4) as usize] };
        expected.entry(format!("/pillar/{service}")).or_default().push(line.clone());
        lines.push(line);
        if n % 1000 == 0 {
            lines.push(String::new());
        }
    }
    let dns = &services[0];
    let huge = format!(r#"{{"service":"{dns}","n":"huge","blob":"{}"}}"#, "é".repeat(1024 * 1024));
    lines.insert(5_000, huge.clone());
    expected.get_mut(&format!("/pillar/{dns}")).expect("dns").push(huge.clone());

    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("lines.log");
    std::fs::write(&file, lines.join("\n") + "\n").expect("write");
    // 2 MiB and a few bytes, in events of at most 262,118 bytes (CloudWatch Logs' 256 KiB
    // less its 26 bytes of overhead) with an 11-byte `[part i/9] ` marker each: 9 parts.
    let parts = 9;
    assert!(huge.len() > 8 * 262_107 && huge.len() < 9 * 262_100, "{}", huge.len());
    let events = 10_000 + parts;
    let shipped = ok(pillar()
        .args(["logs", "ship", "--stream", &stream, "--service", &batch_job])
        .arg(&file));
    assert!(
        shipped.starts_with(&format!("shipped {events} events")),
        "the 2 MiB line in {parts} parts: {shipped}"
    );

    let checkpoint = dir.path().join("checkpoint.json");
    let drained = drain(&stream, &checkpoint);
    assert!(
        drained.contains(&format!(
            "{events} events written (0 restamped, 0 to the fallback group), 0 rejected"
        )),
        "{drained}"
    );
    let again = drain(&stream, &checkpoint);
    assert!(again.starts_with("drained 0 records"), "the checkpoint holds: {again}");

    let stored = stored_events(&format!("/pillar/{run_tag}"));
    assert_eq!(stored.len(), 5, "{:?}", stored.keys());
    for (group, lines) in &expected {
        let events = stored.get(group).unwrap_or_else(|| panic!("no log group {group}"));
        let mut got = joined(events);
        let mut want = lines.clone();
        // The 2 MiB line has the arrival time as timestamp: compare as sets of lines too.
        got.sort();
        want.sort();
        assert_eq!(got.len(), want.len(), "{group}: every line once");
        for (g, w) in got.iter().zip(&want) {
            assert!(
                g == w,
                "{group}: stored {} bytes `{:.60}…` where {} bytes `{:.60}…` were shipped",
                g.len(),
                g,
                w.len(),
                w
            );
        }
    }
    // JSON lines keep their own timestamps, and come back in their order.
    let dns_group = format!("/pillar/{dns}");
    let dns_events: Vec<&(i64, String)> = stored[&dns_group]
        .iter()
        .filter(|(_, m)| m.contains(r#""n":"#) && !m.contains("huge"))
        .collect();
    for (timestamp, message) in &dns_events {
        let line: Value = serde_json::from_str(message).expect("json line");
        assert_eq!(*timestamp, base_ms + line["n"].as_i64().expect("n"), "{message}");
    }
    assert!(dns_events.windows(2).all(|pair| pair[0].0 < pair[1].0), "dns events in their order");
    assert_eq!(retention_of(&dns_group), None, "without a manifest no retention is set");
}

#[test]
fn reference_kpl_aggregates_and_a_broken_one_are_read_as_their_producers_meant() {
    let stream = create_stream();
    let run_tag = unique("kpl");
    let script = r#"
import json, sys, boto3
from aws_kinesis_agg.aggregator import RecordAggregator
kinesis = boto3.client("kinesis")
agg = RecordAggregator()
for n in range(300):
    line = json.dumps({"service": sys.argv[3] + "-" + str(n % 3), "n": n, "host": "node-" + str(n % 2)})
    full = agg.add_user_record("partition-" + str(n % 7), line.encode())
    if full:
        key, _, data = full.get_contents()
        kinesis.put_record(StreamName=sys.argv[1], PartitionKey=key, Data=data)
key, _, data = agg.clear_and_get().get_contents()
kinesis.put_record(StreamName=sys.argv[1], PartitionKey=key, Data=data)
kinesis.put_record(StreamName=sys.argv[1], PartitionKey="pillar.service=" + sys.argv[3] + "-raw", Data=open(sys.argv[2], "rb").read())
"#;
    let broken = Path::new(&env("PILLAR_FIXTURES")).join("kinesis/kpl-aggregate-bad-md5.bin");
    python(script, &[&stream, &broken.to_string_lossy(), &run_tag]);
    let dir = tempfile::tempdir().expect("temp dir");
    drain(&stream, &dir.path().join("checkpoint.json"));

    let stored = stored_events(&format!("/pillar/{run_tag}-"));
    let raw = stored.get(&format!("/pillar/{run_tag}-raw")).expect("the broken aggregate's group");
    assert_eq!(raw.len(), 1, "a bad checksum: the record as it is, once");
    let mut numbers: Vec<i64> = stored
        .iter()
        .filter(|(group, _)| !group.ends_with("-raw"))
        .flat_map(|(_, events)| events)
        .map(|(_, m)| serde_json::from_str::<Value>(m).expect("json")["n"].as_i64().expect("n"))
        .collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (0..300).collect::<Vec<_>>(), "every user record once");
    assert_eq!(stored[&format!("/pillar/{run_tag}-1")].len(), 100);
}

#[test]
fn a_cloudwatch_logs_subscription_delivers_through_the_stream() {
    let stream = create_stream();
    let source_group = format!("/aws/lambda/{}", unique("provisioner"));
    let script = r#"
import sys, time, boto3
stream, group = sys.argv[1], sys.argv[2]
arn = boto3.client("kinesis").describe_stream(StreamName=stream)["StreamDescription"]["StreamARN"]
logs = boto3.client("logs")
logs.create_log_group(logGroupName=group)
logs.create_log_stream(logGroupName=group, logStreamName="2026/11/27/[$LATEST]abc")
logs.put_subscription_filter(logGroupName=group, filterName="to-pillar", filterPattern="",
                             destinationArn=arn, roleArn="arn:aws:iam::123456789012:role/cwl-to-kinesis")
now = int(time.time() * 1000)
logs.put_log_events(logGroupName=group, logStreamName="2026/11/27/[$LATEST]abc", logEvents=[
    {"timestamp": now - 2000, "message": "START RequestId: 1"},
    {"timestamp": now - 1000, "message": '{"level":"WARN","message":"retrying DescribeVpcs"}'},
])
print(now)
"#;
    let now: i64 = python(script, &[&stream, &source_group]).trim().parse().expect("time");
    let dir = tempfile::tempdir().expect("temp dir");
    drain(&stream, &dir.path().join("checkpoint.json"));

    let group = format!("/pillar{source_group}");
    let stored = stored_events(&group);
    assert_eq!(
        stored[&group],
        [
            (now - 2000, "START RequestId: 1".to_owned()),
            (now - 1000, r#"{"level":"WARN","message":"retrying DescribeVpcs"}"#.to_owned()),
        ],
        "the subscription's events, with their own timestamps, in the source group's log group"
    );
}

#[test]
fn the_heartbeat_finds_the_previous_one_and_the_cli_sees_its_own() {
    use logging::cloudwatch::{GroupSettings, LogReader, LogWriter};
    use logging::heartbeat::Heartbeat;
    use logging::producer::Producer;

    let stream = create_stream();
    let prefix = format!("/{}/", unique("hb"));
    let aws = crate::support::aws_config();
    let heartbeat = |sender: &str| Heartbeat {
        producer: Producer::new(aws_sdk_kinesis::Client::new(&aws), &stream, false),
        reader: LogReader::new(aws_sdk_cloudwatchlogs::Client::new(&aws)),
        stream: aws_sdk_kinesis::Client::new(&aws),
        prefix: prefix.clone(),
        period: Duration::from_secs(300),
        sender: sender.to_owned(),
        last_sent: None,
    };
    let mut heartbeat_fn = heartbeat("log-heartbeat-a");
    let runtime = crate::support::runtime();
    let first = runtime.block_on(heartbeat_fn.beat("run-1")).expect("first beat");
    assert_eq!(first.previous, None, "nothing came before the first");
    assert_eq!(first.metrics().to_json(0)["HeartbeatMissing"], 1.0);
    assert!(first.broken_hop.as_deref().is_some_and(|h| h.starts_with("unknown")), "{first:?}");

    // The sink has not run yet: the beat is in the stream, not in CloudWatch Logs.
    let stalled = runtime.block_on(heartbeat_fn.beat("run-1b")).expect("beat");
    let hop = stalled.broken_hop.expect("missing");
    assert!(hop.starts_with("Kinesis → CloudWatch Logs"), "{hop}");

    // The sink moves it (the Lambda does so in a deployment).
    let writer =
        LogWriter::new(aws_sdk_cloudwatchlogs::Client::new(&aws), GroupSettings::default());
    let drain = logging::drain::Drain {
        client: aws_sdk_kinesis::Client::new(&aws),
        stream: stream.clone(),
        sink: logging::sink::Sink::new(writer, &prefix, logging::event::Routing::default()),
        checkpoint: Some(tempfile::tempdir().expect("dir").path().join("cp.json")),
    };
    // Another deployment's beat in the same group, sent later: no proof of this one's path.
    let mut other = heartbeat("log-heartbeat-b");
    runtime.block_on(other.send("other-1")).expect("other beat");
    runtime.block_on(drain.run(true)).expect("drained");
    let second = runtime.block_on(heartbeat_fn.beat("run-2")).expect("second beat");
    let previous = second.previous.clone().expect("the previous heartbeat was found");
    assert_eq!(previous.id, "run-1b", "this sender's own previous beat, not the other's");
    assert_eq!(second.broken_hop, None);
    assert!((0..10_000).contains(&previous.latency_ms), "{previous:?}");
    let metrics = second.metrics().to_json(0);
    assert_eq!(metrics["HeartbeatMissing"], 0.0);
    assert_eq!(metrics["HeartbeatLatencyMs"], previous.latency_ms as f64);

    // From a shell, with a drain running: the heartbeat's own round trip, into log groups
    // the drain creates with the manifest's retention.
    let prefix = format!("/{}/", unique("hb-cli"));
    let config = tempfile::NamedTempFile::new().expect("file");
    std::fs::write(config.path(), format!("[logging]\nstream = \"{stream}\"\nlog_group_prefix = \"{prefix}\"\nretention_days = 7\n"))
        .expect("manifest");
    let mut draining = pillar()
        .args(["logs", "drain", "--config"])
        .arg(config.path())
        .arg("--checkpoint")
        .arg(tempfile::tempdir().expect("dir").path().join("cp.json"))
        .spawn()
        .expect("pillar logs drain");
    let output = run(pillar().args(["heartbeat", "--wait", "20s", "--config"]).arg(config.path()));
    let _ = draining.kill();
    let _ = draining.wait();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}{}", stderr(&output));
    assert!(text.contains("reached CloudWatch Logs in"), "{text}");
    assert_eq!(
        retention_of(&format!("{prefix}pillar-heartbeat")),
        Some(7),
        "the manifest's retention"
    );
}

#[test]
fn the_lambda_handler_answers_a_kinesis_event_with_no_failure() {
    use base64::Engine;
    use logging::cloudwatch::{GroupSettings, LogWriter};

    let prefix = format!("/{}/", unique("lambda"));
    let encode = |line: &str| base64::engine::general_purpose::STANDARD.encode(line);
    // Now, with three decimals of a second, as Kinesis writes `approximateArrivalTimestamp`.
    let arrival_ms = (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH))
        .expect("after 1970")
        .as_secs() as i64
        * 1000
        + 123;
    let records: Vec<Value> = [1, 2]
        .map(|n| {
            serde_json::json!({
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    // Random, as Fluent Bit's and Vector's are: the line names no service.
                    "partitionKey": format!("k{n}x7Qz{}", arrival_ms % 7919),
                    "sequenceNumber": format!("4959033827149025660855969253836157109592157598913658000{n}"),
                    "data": encode(&format!("request {n} served")),
                    "approximateArrivalTimestamp": arrival_ms as f64 / 1000.0
                },
                "eventSource": "aws:kinesis",
                "eventID": format!("shardId-000000000000:{n}"),
                "eventName": "aws:kinesis:record",
            })
        })
        .to_vec();
    let event: aws_lambda_events::event::kinesis::KinesisEvent =
        serde_json::from_value(serde_json::json!({ "Records": records }))
            .expect("a Kinesis event as Lambda delivers it");
    let aws = crate::support::aws_config();
    let writer =
        LogWriter::new(aws_sdk_cloudwatchlogs::Client::new(&aws), GroupSettings::default());
    let sink = logging::sink::Sink::new(writer, &prefix, logging::event::Routing::default());
    let (response, report) = crate::support::runtime().block_on(sink.handle(event, None));
    assert!(response.batch_item_failures.is_empty(), "{response:?}");
    assert_eq!(report.events_written, 2);
    let stored = stored_events(&prefix);
    assert_eq!(
        stored[&format!("{prefix}unlabelled")],
        [(arrival_ms, "request 1 served".to_owned()), (arrival_ms, "request 2 served".to_owned())],
        "both in the default service's group, not one group per key"
    );
}
