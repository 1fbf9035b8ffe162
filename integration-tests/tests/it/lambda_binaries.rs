//! The six Lambda binaries run as Lambda runs them: each process is started with the
//! environment its function has in the synthesized template (`PILLAR_SYNTH_DIR`, from
//! `cdk synth` in `scripts/test`), polls cargo-lambda's Runtime API emulator (`cargo lambda
//! watch --only-lambda-apis`, not ours) and is invoked through it with what its trigger
//! sends: a function URL request (made into an event by the emulator), an SQS batch and a
//! Kinesis batch built from what SQS and Kinesis on moto returned, in the shapes of AWS's
//! Lambda guide ("Using Lambda with Amazon SQS", "… with Kinesis"), and the schedule's input.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use base64::Engine as _;
use serde_json::{Value, json};

use crate::docker_mirror::{ecr_images, push, spec};
use crate::logging::stored_events;
use crate::source_control::{
    assert_mirrored, create_fifo_queue, create_webhook_secret, receive, write_manifest,
};
use crate::support::{
    SourceServer, aws_config, create_codecommit_repository, env, runtime, unique,
};

/// A template resource's logical id and its properties.
type Resources = serde_json::Map<String, Value>;

/// Every resource of every synthesized stack, read once.
fn synthesized() -> &'static Resources {
    static RESOURCES: std::sync::OnceLock<Resources> = std::sync::OnceLock::new();
    RESOURCES.get_or_init(read_synthesized)
}

fn read_synthesized() -> Resources {
    let dir = PathBuf::from(env("PILLAR_SYNTH_DIR"));
    let mut resources = Resources::new();
    for entry in std::fs::read_dir(&dir).expect("the synthesized app").flatten() {
        let path = entry.path();
        if path.to_string_lossy().ends_with(".template.json") {
            let template: Value =
                serde_json::from_slice(&std::fs::read(&path).expect("template")).expect("json");
            if let Some(Value::Object(found)) = template.get("Resources") {
                resources.extend(found.clone());
            }
        }
    }
    resources
}

/// The function tagged `pillars:binary = binary`: its logical id and properties.
fn function_of(resources: &Resources, binary: &str) -> (String, Value) {
    let found = resources.iter().find(|(_, r)| {
        r["Type"] == "AWS::Lambda::Function"
            && r["Properties"]["Tags"].as_array().is_some_and(|tags| {
                tags.iter().any(|t| t["Key"] == "pillars:binary" && t["Value"] == binary)
            })
    });
    let (id, resource) = found.unwrap_or_else(|| panic!("no function runs {binary} in the app"));
    (id.clone(), resource["Properties"].clone())
}

/// What a stand-in gives for a `{"Ref": id}` to a resource of a type.
type StandIn<'a> = &'a dyn Fn(&str) -> Option<String>;

/// A binary running as the function of the synthesized app that runs it.
struct Function {
    name: String,
    child: Child,
    log: PathBuf,
    _layer: tempfile::TempDir,
}

impl Function {
    /// Starts `binary` with its function's environment: literal values as they are, except
    /// paths under `/opt` (the layers) moved into a directory holding `layer`'s files, and
    /// references resolved by `stand_in` (by resource type). Anything else is a variable
    /// this test does not know how to give, and fails it.
    fn start(binary: &str, layer: &[(&str, &str)], stand_in: StandIn<'_>) -> Self {
        let resources = synthesized();
        let (_, properties) = function_of(resources, binary);
        let opt = tempfile::tempdir().expect("layer dir");
        for (file, text) in layer {
            std::fs::write(opt.path().join(file), text).expect("layer file");
        }
        let variables = properties["Environment"]["Variables"].as_object().cloned();
        let mut environment = BTreeMap::new();
        for (name, value) in variables.unwrap_or_default() {
            let given = match &value {
                Value::String(text) => match text.strip_prefix("/opt/") {
                    Some(file) => opt.path().join(file).display().to_string(),
                    None => text.clone(),
                },
                Value::Object(token) if token.contains_key("Ref") => {
                    let id = token["Ref"].as_str().expect("a logical id");
                    let kind = resources[id]["Type"].as_str().expect("a type");
                    stand_in(kind).unwrap_or_else(|| panic!("{binary}: no stand-in for {kind}"))
                }
                other => panic!("{binary}: cannot give {name} = {other}"),
            };
            environment.insert(name, given);
        }
        // cargo-lambda knows functions by the workspace's binaries; each runs in one test.
        let name = binary.to_owned();
        let log = opt.path().join("function.log");
        let memory = properties["MemorySize"].as_u64().unwrap_or(128).to_string();
        let child = Command::new(Path::new(&env("PILLAR_BIN_DIR")).join(binary))
            .env_clear()
            // The stand-ins' endpoints and credentials (AWS_*, and CodeCommit's git endpoint,
            // which in AWS is found by its DNS name), and nothing else of this process.
            .envs(std::env::vars().filter(|(k, _)| {
                k.starts_with("AWS_") || k == "PATH" || k == "PILLAR_CODECOMMIT_GIT_ENDPOINT"
            }))
            .envs(&environment)
            // With a scheme: the runtime client takes a bare host:port or a whole URL.
            .env(
                "AWS_LAMBDA_RUNTIME_API",
                format!("http://{}/.rt/{name}", env("PILLAR_LAMBDA_RUNTIME")),
            )
            .env("AWS_LAMBDA_FUNCTION_NAME", &name)
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", memory)
            .env(
                "AWS_LAMBDA_LOG_FORMAT",
                properties["LoggingConfig"]["LogFormat"].as_str().unwrap_or("Text"),
            )
            .stdout(std::fs::File::create(&log).expect("log"))
            .stderr(std::fs::File::create(opt.path().join("function.err")).expect("log"))
            .spawn()
            .unwrap_or_else(|e| panic!("{binary}: {e}; scripts/test builds it"));
        Self { name, child, log, _layer: opt }
    }

    /// Invokes the function through the emulator; its answer.
    fn invoke(&self, event: &Value) -> Value {
        let url = format!(
            "http://{}/2015-03-31/functions/{}/invocations",
            env("PILLAR_LAMBDA_RUNTIME"),
            self.name
        );
        let answer = runtime().block_on(async {
            let response = reqwest::Client::new().post(&url).json(event).send().await?;
            response.text().await
        });
        let answer = answer.unwrap_or_else(|e| panic!("invoking {}: {e}", self.name));
        serde_json::from_str(&answer)
            .unwrap_or_else(|_| panic!("{} answered {answer}; its log: {}", self.name, self.logs()))
    }

    /// Calls its function URL, as Bitbucket would: the emulator makes the request its event.
    fn call_url(&self, headers: &[(String, String)], body: Vec<u8>) -> u16 {
        let url = format!("http://{}/lambda-url/{}/", env("PILLAR_LAMBDA_RUNTIME"), self.name);
        let answer = runtime().block_on(async {
            let mut request = reqwest::Client::new().post(&url).body(body);
            for (name, value) in headers {
                request = request.header(name, value);
            }
            request.send().await
        });
        answer.unwrap_or_else(|e| panic!("calling {url}: {e}")).status().as_u16()
    }

    fn logs(&self) -> String {
        let err = self.log.with_file_name("function.err");
        let read = |path: &Path| std::fs::read_to_string(path).unwrap_or_default();
        format!("{}{}", read(&self.log), read(&err))
    }
}

impl Drop for Function {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the schedule of the function running `binary` sends it: the schedule's input, or
/// `{}` when it sets none.
fn scheduled_input(binary: &str) -> Value {
    let resources = synthesized();
    let (id, _) = function_of(resources, binary);
    let schedule = resources
        .values()
        .find(|r| {
            r["Type"] == "AWS::Scheduler::Schedule"
                && r["Properties"]["Target"]["Arn"]["Fn::GetAtt"][0] == id.as_str()
        })
        .unwrap_or_else(|| panic!("no schedule runs {binary}"));
    match schedule["Properties"]["Target"]["Input"].as_str() {
        Some(input) => serde_json::from_str(input).expect("a JSON input"),
        None => json!({}),
    }
}

/// SQS messages as Lambda's SQS poller hands them over (AWS Lambda guide, "Using Lambda with
/// Amazon SQS", example FIFO event): read from the queue on moto, all attributes included.
fn sqs_event(queue_url: &str) -> Value {
    let sqs = aws_sdk_sqs::Client::new(&aws_config());
    let (arn, messages) = runtime().block_on(async {
        let attributes = sqs
            .get_queue_attributes()
            .queue_url(queue_url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await
            .expect("GetQueueAttributes");
        let arn = attributes
            .attributes()
            .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn).cloned());
        let received = sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
            .send()
            .await
            .expect("ReceiveMessage");
        (arn.expect("a queue ARN"), received.messages.unwrap_or_default())
    });
    let records: Vec<Value> = messages
        .iter()
        .map(|m| {
            let attributes: serde_json::Map<String, Value> = m
                .attributes()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.as_str().to_owned(), Value::from(v.as_str())))
                .collect();
            json!({
                "messageId": m.message_id(),
                "receiptHandle": m.receipt_handle(),
                "body": m.body(),
                "attributes": attributes,
                "messageAttributes": {},
                "md5OfBody": m.md5_of_body(),
                "eventSource": "aws:sqs",
                "eventSourceARN": arn,
                "awsRegion": env("AWS_REGION"),
            })
        })
        .collect();
    json!({ "Records": records })
}

/// What Lambda's SQS poller does with an answer: deletes each message of `event` that the
/// answer does not name as failed (a FIFO group stays blocked until then).
fn delete_done(queue_url: &str, event: &Value, answer: &Value) {
    let failed: Vec<&Value> = answer["batchItemFailures"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| &f["itemIdentifier"])
        .collect();
    let sqs = aws_sdk_sqs::Client::new(&aws_config());
    for record in event["Records"].as_array().into_iter().flatten() {
        if !failed.contains(&&record["messageId"]) {
            let handle = record["receiptHandle"].as_str().expect("a receipt handle");
            runtime()
                .block_on(sqs.delete_message().queue_url(queue_url).receipt_handle(handle).send())
                .expect("DeleteMessage");
        }
    }
}

/// The records of `stream` as Lambda's Kinesis poller hands them over (AWS Lambda guide,
/// "Using Lambda with Kinesis", example event): read from the stream on moto.
fn kinesis_event(stream: &str) -> Value {
    let kinesis = aws_sdk_kinesis::Client::new(&aws_config());
    let (arn, records) = runtime().block_on(async {
        let described =
            kinesis.describe_stream().stream_name(stream).send().await.expect("DescribeStream");
        let description = described.stream_description.expect("a description");
        let mut records = Vec::new();
        for shard in description.shards() {
            let iterator = kinesis
                .get_shard_iterator()
                .stream_name(stream)
                .shard_id(shard.shard_id())
                .shard_iterator_type(aws_sdk_kinesis::types::ShardIteratorType::TrimHorizon)
                .send()
                .await
                .expect("GetShardIterator");
            let got = kinesis
                .get_records()
                .shard_iterator(iterator.shard_iterator().expect("an iterator"))
                .send()
                .await
                .expect("GetRecords");
            records.extend(got.records.into_iter().map(|r| (shard.shard_id().to_owned(), r)));
        }
        (description.stream_arn, records)
    });
    let records: Vec<Value> = records
        .iter()
        .map(|(shard, r)| {
            let arrival = r.approximate_arrival_timestamp().expect("an arrival time");
            json!({
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": r.partition_key(),
                    "sequenceNumber": r.sequence_number(),
                    "data": base64::engine::general_purpose::STANDARD.encode(r.data().as_ref()),
                    "approximateArrivalTimestamp": arrival.as_secs_f64(),
                },
                "eventSource": "aws:kinesis",
                "eventVersion": "1.0",
                "eventID": format!("{shard}:{}", r.sequence_number()),
                "eventName": "aws:kinesis:record",
                "invokeIdentityArn": "arn:aws:iam::123456789012:role/log-sink",
                "awsRegion": env("AWS_REGION"),
                "eventSourceARN": arn,
            })
        })
        .collect();
    json!({ "Records": records })
}

#[test]
fn the_source_control_binaries_take_a_webhook_a_batch_and_a_schedule_to_a_mirror() {
    let server = SourceServer::start(None);
    let source = server.repository("networking-terraform");
    source.commit("network");
    source.git(&["tag", "-a", "v2", "-m", "release"]);
    let target = unique("lambda-mirror");
    // The deployed mirror creates no repository (CREATE_REPOSITORIES=false): the app does.
    create_codecommit_repository(&target);
    let dir = tempfile::tempdir().expect("temp dir");
    let manifest = write_manifest(
        dir.path(),
        &[(&target, &server.url("networking-terraform"), "NET/networking-terraform")],
    );
    let manifest = std::fs::read_to_string(manifest).expect("manifest");
    let aws = aws_config();
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let queue_url = create_fifo_queue(&sqs);
    let fixtures = Path::new(&env("PILLAR_FIXTURES")).join("bitbucket");
    let secret_arn = create_webhook_secret();
    let stand_in = |kind: &str| match kind {
        "AWS::SQS::Queue" => Some(queue_url.clone()),
        "AWS::SecretsManager::Secret" => Some(secret_arn.clone()),
        _ => None,
    };
    let layer = [("pillars.toml", manifest.as_str())];

    let webhook = Function::start("scp-webhook", &layer, &stand_in);
    let headers: Vec<(String, String)> =
        std::fs::read_to_string(fixtures.join("dc-repo-refs-changed.headers"))
            .expect("headers")
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
    let body = std::fs::read(fixtures.join("dc-repo-refs-changed.json")).expect("body");
    assert_eq!(webhook.call_url(&headers, body), 202, "{}", webhook.logs());

    let mirror = Function::start("scp-mirror", &layer, &stand_in);
    let event = sqs_event(&queue_url);
    assert_eq!(event["Records"].as_array().map(Vec::len), Some(1), "the webhook queued one");
    let answer = mirror.invoke(&event);
    assert_eq!(answer, json!({ "batchItemFailures": [] }), "{}", mirror.logs());
    delete_done(&queue_url, &event, &answer);
    assert_mirrored(&source, &server.url("networking-terraform"), &target);

    source.commit("drift");
    let reconcile = Function::start("scp-reconcile", &layer, &stand_in);
    let answer = reconcile.invoke(&scheduled_input("scp-reconcile"));
    // Nothing, when every repository was queued; an error names those that were not.
    assert_eq!(answer, Value::Null, "{}", reconcile.logs());
    let queued = receive(&sqs, &queue_url);
    let names: Vec<Value> = queued
        .iter()
        .map(|m| {
            serde_json::from_str::<Value>(m.body().expect("a body")).expect("json")["repository"]
                .clone()
        })
        .collect();
    assert_eq!(names, [json!(target)], "the schedule queued the drifted repository");
}

#[test]
fn the_logging_binaries_beat_on_their_schedule_and_drain_a_kinesis_batch() {
    let stream = unique("lambda-logs");
    crate::support::python(
        "import sys, boto3\nboto3.client('kinesis').create_stream(StreamName=sys.argv[1], ShardCount=1)",
        &[&stream],
    );
    let prefix = format!("/{}/", unique("lambda-logs"));
    let manifest = format!("[logging]\nstream = \"{stream}\"\nlog_group_prefix = \"{prefix}\"\n");
    let layer = [("pillars.toml", manifest.as_str())];
    let no_stand_in = |_: &str| None;

    let heartbeat = Function::start("log-heartbeat", &layer, &no_stand_in);
    let answer = heartbeat.invoke(&scheduled_input("log-heartbeat"));
    assert!(answer["sent"].is_string(), "{answer}: {}", heartbeat.logs());

    let sink = Function::start("log-sink", &layer, &no_stand_in);
    let event = kinesis_event(&stream);
    assert_eq!(event["Records"].as_array().map(Vec::len), Some(1), "the heartbeat's record");
    let answer = sink.invoke(&event);
    assert_eq!(answer, json!({ "batchItemFailures": [] }), "{}", sink.logs());
    let stored = stored_events(&prefix);
    let beats = &stored[&format!("{prefix}pillar-heartbeat")];
    assert_eq!(beats.len(), 1, "{stored:?}");
}

#[test]
fn the_docker_mirror_binary_copies_its_images_on_its_schedule() {
    let repository = unique("lambda/image");
    push(&spec(&["linux/amd64"], &[4096], false), &repository, "1");
    let manifest = format!(
        "[[image]]\nsource = \"{}/{repository}\"\necr_repository = \"{repository}\"\ntags = [\"1\"]\n",
        env("PILLAR_SOURCE_REGISTRY")
    );
    let layer = [("pillars.toml", manifest.as_str())];
    let mirror = Function::start("docker-mirror", &layer, &|_| None);
    let answer = mirror.invoke(&scheduled_input("docker-mirror"));
    assert_eq!(answer["copied"], 1, "{answer}: {}", mirror.logs());
    assert_eq!(answer["failed"], 0);
    assert_eq!(ecr_images(&repository), 1);
}
