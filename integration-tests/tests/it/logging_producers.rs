//! The Logging Pillar fed as an outage feeds it: records put into Kinesis (on moto, with
//! boto3) in the shapes the regular pipeline's producers write, drained with
//! `pillar logs drain --once`, read back with boto3.
//!
//! Shapes, from the producers' own source and docs:
//! - Fluent Bit `kinesis_streams` (plugins/out_kinesis_streams/kinesis_api.c,
//!   `process_event` and `random_partition_key`): the record's JSON and a newline; with
//!   `time_key`, the time appended in `time_key_format`, by default `%Y-%m-%dT%H:%M:%S`
//!   (UTC, no zone); a partition key of ten random characters and two hashes mod 7919.
//! - Vector `aws_kinesis_streams` (its docs: "By default, Vector issues random 16 byte
//!   values" as keys; `compression = "gzip"`): one JSON event a record, with `message`,
//!   `host`, `source_type` and an RFC 3339 `timestamp` in nanoseconds, gzip-compressed.
//! - The Kinesis Agent (`partitionKeyOption` RANDOM, its default; `aggregatedRecordSizeBytes`
//!   puts several lines in one record): newline-delimited lines, here ECS JSON
//!   (`service.name`, `@timestamp`).

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::support::{ok, pillar, python, unique};

/// The groups under `prefix` and their events `(timestamp, message)`, each group's sorted.
fn stored(prefix: &str) -> BTreeMap<String, Vec<(i64, String)>> {
    let mut found = crate::logging::stored_events(prefix);
    found.values_mut().for_each(|events| events.sort());
    found
}

fn manifest(dir: &Path, stream: &str, prefix: &str) -> std::path::PathBuf {
    let path = dir.join("pillars.toml");
    std::fs::write(
        &path,
        format!(
            "[logging]\nstream = \"{stream}\"\nlog_group_prefix = \"{prefix}\"\nretention_days = 30\n"
        ),
    )
    .expect("manifest");
    path
}

#[test]
fn what_fluent_bit_vector_and_the_kinesis_agent_send_lands_in_one_group_per_service() {
    let stream = unique("producers");
    let prefix = format!("/{}/", unique("prod"));
    let script = r#"
import gzip, json, random, string, sys, time, boto3
stream = sys.argv[1]
kinesis = boto3.client("kinesis")
kinesis.create_stream(StreamName=stream, ShardCount=2)
rand = random.Random(7)
def fluent_bit_key():
    return "".join(rand.choice(string.ascii_letters + string.digits) for _ in range(10)) + "%d%d" % (rand.randrange(7919), rand.randrange(7919))
def vector_key():
    return "".join(rand.choice(string.ascii_letters + string.digits) for _ in range(16))
now = int(time.time())
records = []
# Fluent Bit: 60 lines, half with the service a record_modifier adds, half without.
for n in range(60):
    record = {"log": "GET /item/%d 200" % n, "stream": "stdout"}
    if n % 2 == 0:
        record["service"] = "web"
    line = json.dumps(record, separators=(",", ":"))[:-1] + ',"time":"%s"}' % time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now - 3600 + n))
    records.append({"Data": (line + "\n").encode(), "PartitionKey": fluent_bit_key()})
# Vector, gzip: 50 events.
for n in range(50):
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now - 1800 + n)) + ".123456789Z"
    event = {"host": "ip-10-0-0-9", "message": "job %d done" % n, "service": "api", "source_type": "file", "timestamp": stamp}
    records.append({"Data": gzip.compress(json.dumps(event).encode()), "PartitionKey": vector_key()})
# The Kinesis Agent: 8 records of 10 ECS lines each.
for r in range(8):
    lines = []
    for k in range(10):
        n = r * 10 + k
        lines.append(json.dumps({"@timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now - 900 + n)) + ".500Z",
                                 "service": {"name": "checkout"}, "host": {"name": "ip-10-0-0-%d" % (n % 3)}, "message": "order %d" % n}))
    records.append({"Data": ("\n".join(lines) + "\n").encode(), "PartitionKey": fluent_bit_key()})
# Epoch microseconds and nanoseconds, and a backlog line from 20 days ago.
records.append({"Data": json.dumps({"service": "api", "ts": (now - 600) * 1000000, "message": "micro"}).encode(), "PartitionKey": vector_key()})
records.append({"Data": json.dumps({"service": "api", "ts": (now - 600) * 1000000000, "message": "nano"}).encode(), "PartitionKey": vector_key()})
records.append({"Data": json.dumps({"service": "web", "timestamp": now - 20 * 86400, "message": "backlog"}).encode(), "PartitionKey": fluent_bit_key()})
for start in range(0, len(records), 100):
    kinesis.put_records(StreamName=stream, Records=records[start:start + 100])
print(now)
"#;
    let now: i64 = python(script, &[&stream]).trim().parse().expect("time");
    let dir = tempfile::tempdir().expect("temp dir");
    let config = manifest(dir.path(), &stream, &prefix);
    let out = ok(pillar()
        .args(["logs", "drain", "--once", "--config"])
        .arg(&config)
        .arg("--checkpoint")
        .arg(dir.path().join("checkpoint.json")));
    assert!(out.contains("drained 121 records"), "{out}");
    assert!(out.contains("(1 restamped"), "{out}");

    let found = stored(&prefix);
    let groups: Vec<&str> = found.keys().map(String::as_str).collect();
    let group = |service: &str| format!("{prefix}{service}");
    assert_eq!(
        groups,
        [&group("api"), &group("checkout"), &group("unlabelled"), &group("web")],
        "one group per service, never one per partition key"
    );
    let total: usize = found.values().map(Vec::len).sum();
    assert_eq!(total, 30 + 30 + 50 + 80 + 2 + 1, "every line once");

    let ms = |seconds: i64| seconds * 1000;
    let unlabelled = &found[&group("unlabelled")];
    assert_eq!(unlabelled.len(), 30);
    assert_eq!(unlabelled[0].0, ms(now - 3600 + 1), "Fluent Bit's zoneless time_key, read as UTC");
    let api = &found[&group("api")];
    let vector: Vec<i64> =
        api.iter().filter(|(_, m)| m.contains("job ")).map(|(t, _)| *t).collect();
    assert_eq!(vector, (0..50).map(|n| ms(now - 1800 + n) + 123).collect::<Vec<_>>());
    for unit in ["micro", "nano"] {
        let event = api.iter().find(|(_, m)| m.contains(unit)).expect(unit);
        assert_eq!(event.0, ms(now - 600), "epoch {unit}seconds");
    }
    let checkout = &found[&group("checkout")];
    assert_eq!(checkout.len(), 80, "ten lines a record, each its own event");
    assert_eq!(checkout[0].0, ms(now - 900) + 500);

    let web = &found[&group("web")];
    let backlog = web.iter().find(|(_, m)| m.contains("backlog")).expect("the backlog line kept");
    assert!(backlog.0 >= ms(now) - 1000, "written with its arrival time");
    let line: Value = serde_json::from_str(&backlog.1).expect("still JSON");
    let original = time::OffsetDateTime::from_unix_timestamp(now - 20 * 86_400)
        .expect("time")
        .format(&time::format_description::well_known::Rfc3339)
        .expect("format");
    assert_eq!(line["pillar_original_timestamp"], original, "its own time kept in it");
}

#[test]
fn a_stream_made_again_under_its_name_is_read_from_its_oldest_record() {
    let stream = unique("again");
    let prefix = format!("/{}/", unique("again"));
    let dir = tempfile::tempdir().expect("temp dir");
    let config = manifest(dir.path(), &stream, &prefix);
    let tmp = dir.path().join("tmp");
    std::fs::create_dir_all(&tmp).expect("tmp");
    let put = |line: &str| {
        python(
            "import sys, boto3\nk = boto3.client('kinesis')\nk.put_record(StreamName=sys.argv[1], PartitionKey='x', Data=sys.argv[2].encode())",
            &[&stream, line],
        )
    };
    // Without --checkpoint: the default, in the temporary directory, as an operator runs it.
    let drain = || {
        ok(pillar().env("TMPDIR", &tmp).args(["logs", "drain", "--once", "--config"]).arg(&config))
    };
    let create = "import sys, boto3\nboto3.client('kinesis').create_stream(StreamName=sys.argv[1], ShardCount=1)";
    python(create, &[&stream]);
    for n in 0..3 {
        put(&format!(r#"{{"service":"svc","n":{n}}}"#));
    }
    assert!(drain().contains("drained 3 records"));
    python(
        "import sys, boto3\nboto3.client('kinesis').delete_stream(StreamName=sys.argv[1], EnforceConsumerDeletion=True)",
        &[&stream],
    );
    // A second later, so the new stream's creation time differs, as it would in AWS.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    python(create, &[&stream]);
    put(r#"{"service":"svc","n":"after"}"#);
    let out = drain();
    assert!(out.contains("drained 1 records"), "the new stream's record is read: {out}");
    let events = &stored(&prefix)[&format!("{prefix}svc")];
    assert_eq!(events.len(), 4);
    assert!(events.iter().any(|(_, m)| m.contains("after")));
}

#[test]
fn a_batch_lambda_gave_up_on_is_replayed_from_the_stream_and_its_message_deleted() {
    let stream = unique("replay");
    let prefix = format!("/{}/", unique("replay"));
    // The on-failure record as the Lambda developer guide shows it for a Kinesis mapping.
    let script = r#"
import json, sys, boto3
stream = sys.argv[1]
kinesis, sqs = boto3.client("kinesis"), boto3.client("sqs")
kinesis.create_stream(StreamName=stream, ShardCount=1)
arn = kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]["StreamARN"]
put = [kinesis.put_record(StreamName=stream, PartitionKey="k", Data=json.dumps({"service": "svc", "n": n}).encode()) for n in range(5)]
queue = sqs.create_queue(QueueName=stream + "-failed")["QueueUrl"]
sqs.send_message(QueueUrl=queue, MessageBody=json.dumps({
    "requestContext": {"requestId": "c9b8fa9f-5a7f-xmpl-af9c-0c604cde93a5", "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:log-sink",
                       "condition": "RetryAttemptsExhausted", "approximateInvokeCount": 11},
    "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
    "version": "1.0", "timestamp": "2026-11-30T00:38:06.021Z",
    "KinesisBatchInfo": {"shardId": put[1]["ShardId"], "startSequenceNumber": put[1]["SequenceNumber"],
                         "endSequenceNumber": put[3]["SequenceNumber"], "approximateArrivalOfFirstRecord": "2026-11-30T00:38:04.835Z",
                         "approximateArrivalOfLastRecord": "2026-11-30T00:38:05.580Z", "batchSize": 3, "streamArn": arn}}))
print(queue)
"#;
    let queue = python(script, &[&stream]).trim().to_owned();
    let dir = tempfile::tempdir().expect("temp dir");
    let config = manifest(dir.path(), &stream, &prefix);
    let out = ok(pillar().args(["logs", "replay", "--queue", &queue, "--config"]).arg(&config));
    assert!(out.contains("replayed 1 failed batches (3 records, 3 events written)"), "{out}");
    assert!(out.contains("0 messages left"), "{out}");
    let numbers: Vec<i64> = stored(&prefix)[&format!("{prefix}svc")]
        .iter()
        .map(|(_, m)| serde_json::from_str::<Value>(m).expect("json")["n"].as_i64().expect("n"))
        .collect();
    assert_eq!(numbers, [1, 2, 3], "exactly the batch's range");
    let left = python(
        "import sys, boto3\nprint(boto3.client('sqs').get_queue_attributes(QueueUrl=sys.argv[1], AttributeNames=['All'])['Attributes']['ApproximateNumberOfMessages'])",
        &[&queue],
    );
    assert_eq!(left.trim(), "0", "the message is deleted once its range is written");
}

/// The records in `stream` (one shard), their data as text, read with boto3.
fn records_in(stream: &str) -> Vec<String> {
    let script = r#"
import json, sys, boto3
k = boto3.client("kinesis")
shard = k.list_shards(StreamName=sys.argv[1])["Shards"][0]["ShardId"]
it = k.get_shard_iterator(StreamName=sys.argv[1], ShardId=shard, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
print(json.dumps([r["Data"].decode() for r in k.get_records(ShardIterator=it)["Records"]]))
"#;
    serde_json::from_str(&python(script, &[stream])).expect("json")
}

#[test]
fn ship_sends_a_live_line_within_seconds_and_resumes_a_file_from_its_checkpoint() {
    use std::io::Write as _;
    let stream = unique("ship");
    python(
        "import sys, boto3\nboto3.client('kinesis').create_stream(StreamName=sys.argv[1], ShardCount=1)",
        &[&stream],
    );
    // `tail -F app.log | pillar logs ship`: the pipe stays open.
    let mut shipping = pillar()
        .args(["logs", "ship", "--service", "live", "--stream", &stream])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("pillar logs ship");
    let mut pipe = shipping.stdin.take().expect("stdin");
    writeln!(pipe, "first live line").expect("write");
    pipe.flush().expect("flush");
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while records_in(&stream).is_empty() && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    assert_eq!(records_in(&stream), ["first live line"], "sent while the input is still open");
    assert!(shipping.try_wait().expect("wait").is_none(), "still shipping");
    drop(pipe);
    assert!(shipping.wait().expect("wait").success());

    let dir = tempfile::tempdir().expect("temp dir");
    let (file, checkpoint) = (dir.path().join("app.log"), dir.path().join("app.checkpoint"));
    std::fs::write(&file, "one\ntwo\nthree\n").expect("write");
    let ship = || {
        ok(pillar()
            .args(["logs", "ship", "--service", "app", "--stream", &stream, "--checkpoint"])
            .arg(&checkpoint)
            .arg(&file))
    };
    assert!(ship().starts_with("shipped 3 events"));
    let mut appended = std::fs::OpenOptions::new().append(true).open(&file).expect("open");
    writeln!(appended, "four\nfive").expect("append");
    let again = ship();
    assert!(again.starts_with("shipped 2 events"), "only what was added: {again}");
    assert_eq!(records_in(&stream), ["first live line", "one", "two", "three", "four", "five"]);
}
