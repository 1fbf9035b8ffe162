//! `scripts/bench logs`: the Logging Pillar's sink and producer, each against a naive loop
//! in the same run.
//!
//! - in process, one core: decode + route + batch of 200-byte JSON lines, KPL aggregates,
//!   gzip CloudWatch Logs subscription payloads, and newline-delimited records plain, gzip
//!   and zstd (events per second);
//! - 100 MiB of events: how many PutLogEvents calls, and how full they are;
//! - against moto: the sink's calls and time against one PutLogEvents per event;
//! - against moto: how full the producer's PutRecords calls are with 10 KiB records;
//! - a full Lambda batch (10,000 records, 6 MiB) through `pillar logs drain --once`:
//!   peak RSS (GNU time).
//!
//! Sizes: LOGS_BENCH_EVENTS (default 200000) for the in-process run, LOGS_BENCH_NAIVE
//! (default 2000) for the comparison against moto.

use std::io::Write;
use std::process::Command;
use std::time::Instant;

use integration_tests::measure::measure;
use logging::batch::{EVENT_OVERHEAD, MAX_BATCH_BYTES};
use logging::cloudwatch::{GroupSettings, LogWriter};
use logging::event::{Decoded, Decoder, InputRecord, Routing, TimeWindow};
use logging::kpl::{UserRecord, aggregate};
use logging::producer::{MAX_CALL_BYTES, Producer};
use logging::sink::{Sink, prepare};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run scripts/bench logs"))
}

const NOW_MS: i64 = 1_795_773_600_000;

/// A JSON log line of exactly 200 bytes.
fn line(n: usize) -> String {
    let head = format!(
        r#"{{"timestamp":{},"service":"svc-{}","level":"INFO","n":{n},"message":""#,
        NOW_MS + (n % 60_000) as i64,
        n % 8
    );
    format!("{head}{}\"}}", "x".repeat(200 - head.len() - 2))
}

fn record(n: usize, data: Vec<u8>) -> InputRecord {
    InputRecord {
        sequence_number: format!("{n:056}"),
        partition_key: format!("key-{}", n % 16),
        data,
        arrival_ms: NOW_MS,
    }
}

/// The sink's calls for `records`, judged as of the lines' own day.
fn prepared(records: &[InputRecord]) -> Vec<Vec<logging::sink::Call>> {
    let routing = Routing::default();
    let decoder = Decoder { routing: &routing, window: TimeWindow::at(NOW_MS, None) };
    prepare("/pillar/", &decoder, records, &mut Decoded::default())
}

/// Events per second through decode, routing and batching, on this thread.
fn throughput(label: &str, records: &[InputRecord], events: usize) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..3 {
        let started = Instant::now();
        std::hint::black_box(prepared(records));
        best = best.min(started.elapsed().as_secs_f64());
    }
    let rate = events as f64 / best;
    println!("{label:<44} {events:>9} events  {best:>7.3} s  {rate:>12.0} events/s");
    rate
}

fn in_process(events: usize) {
    println!("== decode + route + batch, in process, one thread");
    let lines: Vec<InputRecord> = (0..events).map(|n| record(n, line(n).into_bytes())).collect();
    let json = throughput("200-byte JSON lines, one per record", &lines, events);

    let per_aggregate = 4_000;
    let aggregates: Vec<InputRecord> = (0..events)
        .step_by(per_aggregate)
        .map(|start| {
            let users: Vec<UserRecord> = (start..(start + per_aggregate).min(events))
                .map(|n| UserRecord {
                    partition_key: format!("key-{}", n % 16),
                    data: line(n).into_bytes(),
                })
                .collect();
            record(start, aggregate(&users))
        })
        .collect();
    throughput("the same lines in KPL aggregates of 4,000", &aggregates, events);

    let per_delivery = 100;
    let deliveries: Vec<InputRecord> = (0..events)
        .step_by(per_delivery)
        .map(|start| {
            let events: Vec<serde_json::Value> = (start..(start + per_delivery).min(events))
                .map(|n| serde_json::json!({"id": n.to_string(), "timestamp": NOW_MS, "message": line(n)}))
                .collect();
            let payload = serde_json::json!({
                "messageType": "DATA_MESSAGE", "owner": "123456789012", "logGroup": "/aws/lambda/app",
                "logStream": "2026/11/27/[$LATEST]abc", "subscriptionFilters": ["pillar"], "logEvents": events,
            });
            let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gzip.write_all(payload.to_string().as_bytes()).expect("gzip");
            record(start, gzip.finish().expect("gzip"))
        })
        .collect();
    throughput("the same lines in gzip subscription deliveries", &deliveries, events);

    // As the Kinesis Agent and Firehose-style batches send: many lines a record, plain, or
    // compressed as Vector's `compression = "gzip"` does (and zstd).
    let per_record = 200;
    let batched = |compress: &dyn Fn(&[u8]) -> Vec<u8>| -> Vec<InputRecord> {
        (0..events)
            .step_by(per_record)
            .map(|start| {
                let text: Vec<String> =
                    (start..(start + per_record).min(events)).map(line).collect();
                record(start, compress(text.join("\n").as_bytes()))
            })
            .collect()
    };
    throughput(
        "the same lines, 200 a record, newline-delimited",
        &batched(&|b| b.to_vec()),
        events,
    );
    let gzip = |bytes: &[u8]| {
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gzip.write_all(bytes).expect("gzip");
        gzip.finish().expect("gzip")
    };
    throughput("the same, each record gzip-compressed", &batched(&gzip), events);
    let zstd = |bytes: &[u8]| {
        ruzstd::encoding::compress_to_vec(bytes, ruzstd::encoding::CompressionLevel::Fastest)
    };
    throughput("the same, each record zstd-compressed", &batched(&zstd), events);
    println!(
        "goal: >= 200,000 events/s for JSON lines: {}",
        if json >= 200_000.0 { "met" } else { "NOT met" }
    );
}

fn fill() {
    println!("\n== 100 MiB of events into PutLogEvents calls");
    let target = 100 << 20;
    let mut records = Vec::new();
    let (mut bytes, mut n) = (0, 0);
    while bytes < target {
        // Lines of 1 KiB of one service and one source: one log stream.
        let text = format!(
            r#"{{"service":"bulk","source":"node-1","n":{n},"pad":"{}"}}"#,
            "y".repeat(970)
        );
        bytes += text.len();
        records.push(record(n, text.into_bytes()));
        n += 1;
    }
    let calls: Vec<_> = prepared(&records).into_iter().flatten().collect();
    let counted: usize =
        calls.iter().flat_map(|c| &c.events).map(|e| e.message().len() + EVENT_OVERHEAD).sum();
    let used = counted as f64 / (calls.len() * MAX_BATCH_BYTES) as f64;
    println!(
        "{} events, {:.1} MiB of messages: {} PutLogEvents calls, {:.1} % of the 1 MiB cap used (goal <= 105 calls, >= 95 %: {})",
        records.len(),
        bytes as f64 / f64::from(1 << 20),
        calls.len(),
        used * 100.0,
        if calls.len() <= 105 && used >= 0.95 { "met" } else { "NOT met" }
    );
}

/// A stream on moto, for the runs against the stand-in.
fn create_stream(name: &str) {
    let status = Command::new(format!("{}/bin/python", var("PILLAR_VENV")))
        .args(["-c", "import sys, boto3\nboto3.client('kinesis').create_stream(StreamName=sys.argv[1], ShardCount=1)", name])
        .status()
        .expect("python");
    assert!(status.success(), "create stream {name}");
}

fn against_naive(runtime: &tokio::runtime::Runtime, events: usize) {
    println!("\n== the sink against one PutLogEvents per event (moto)");
    let aws = runtime.block_on(aws_config::load_from_env());
    let logs = aws_sdk_cloudwatchlogs::Client::new(&aws);
    let run = std::process::id();
    let records: Vec<InputRecord> = (0..events)
        .map(|n| record(n, format!(r#"{{"service":"bench-{run}","n":{n}}}"#).into_bytes()))
        .collect();
    let sink = Sink::new(
        LogWriter::new(logs.clone(), GroupSettings::default()),
        "/bench-sink/",
        Routing::default(),
    );
    let started = Instant::now();
    let report = runtime.block_on(sink.write(&records, None));
    let ours = started.elapsed().as_secs_f64();
    assert!(report.first_failed.is_none());

    let group = format!("/bench-naive/bench-{run}");
    let naive = runtime.block_on(async {
        logs.create_log_group().log_group_name(&group).send().await.expect("group");
        logs.create_log_stream()
            .log_group_name(&group)
            .log_stream_name("s")
            .send()
            .await
            .expect("stream");
        let started = Instant::now();
        for (n, record) in records.iter().enumerate() {
            let event = aws_sdk_cloudwatchlogs::types::InputLogEvent::builder()
                .timestamp(NOW_MS + n as i64)
                .message(String::from_utf8_lossy(&record.data))
                .build()
                .expect("event");
            logs.put_log_events()
                .log_group_name(&group)
                .log_stream_name("s")
                .log_events(event)
                .send()
                .await
                .expect("put");
        }
        started.elapsed().as_secs_f64()
    });
    println!(
        "{events} events: sink {} calls in {ours:.3} s; naive {events} calls in {naive:.3} s; calls {:.0}x fewer, time {:.1}x less",
        report.calls,
        events as f64 / report.calls as f64,
        naive / ours
    );
}

fn producer_fill(runtime: &tokio::runtime::Runtime) {
    println!("\n== the producer's PutRecords calls with 10 KiB records (moto)");
    let stream = format!("bench-producer-{}", std::process::id());
    create_stream(&stream);
    let aws = runtime.block_on(aws_config::load_from_env());
    let shipped = runtime.block_on(async {
        let mut producer = Producer::new(aws_sdk_kinesis::Client::new(&aws), &stream, false);
        for n in 0..2_000 {
            producer.send("svc", format!("{n:010}").repeat(1024)).await.expect("queued");
        }
        producer.flush().await.expect("shipped")
    });
    let used = shipped.bytes as f64 / (shipped.calls * MAX_CALL_BYTES) as f64;
    println!(
        "{} records, {} bytes in {} calls: {:.1} % of the 5 MiB cap per call (500 records of 10 KiB are 97.7 %; goal >= 95 %: {})",
        shipped.records,
        shipped.bytes,
        shipped.calls,
        used * 100.0,
        if used >= 0.95 { "met" } else { "NOT met" }
    );
}

fn lambda_batch_memory(runtime: &tokio::runtime::Runtime) {
    println!("\n== a full Lambda batch through `pillar logs drain --once`");
    let stream = format!("bench-batch-{}", std::process::id());
    create_stream(&stream);
    let aws = runtime.block_on(aws_config::load_from_env());
    runtime.block_on(async {
        let mut producer = Producer::new(aws_sdk_kinesis::Client::new(&aws), &stream, false);
        for n in 0..10_000 {
            let text =
                format!(r#"{{"service":"batch-{}","n":{n},"pad":"{}"}}"#, n % 20, "z".repeat(580));
            producer.send("svc", text).await.expect("queued");
        }
        producer.flush().await.expect("shipped");
    });
    let checkpoint = tempfile::tempdir().expect("dir");
    let mut drain = Command::new(var("PILLAR_BIN"));
    drain
        .args(["logs", "drain", "--once", "--stream", &stream, "--checkpoint"])
        .arg(checkpoint.path().join("cp.json"));
    let (measured, output) = measure(drain);
    print!("{output}");
    println!(
        "10,000 records, 6.0 MiB: {:.2} s, peak RSS {:.1} MiB (goal <= 128 MiB: {})",
        measured.seconds,
        measured.peak_rss_mib,
        if measured.peak_rss_mib <= 128.0 { "met" } else { "NOT met" }
    );
}

fn main() {
    in_process(env_or("LOGS_BENCH_EVENTS", 200_000));
    fill();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    against_naive(&runtime, env_or("LOGS_BENCH_NAIVE", 2_000));
    producer_fill(&runtime);
    lambda_batch_memory(&runtime);
}
