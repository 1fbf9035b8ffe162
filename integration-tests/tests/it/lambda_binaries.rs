//! The Lambda binaries run as Lambda runs them: each process is started with the
//! environment its function has in the synthesized template (`PILLAR_SYNTH_DIR`, from
//! `cdk synth` in `scripts/test`), polls cargo-lambda's Runtime API emulator (`cargo lambda
//! watch --only-lambda-apis`, not ours) and is invoked through it with what its trigger
//! sends: a function URL request (made into an event by the emulator), an SQS batch and a
//! Kinesis batch built from what SQS and Kinesis on moto returned, in the shapes of AWS's
//! Lambda guide ("Using Lambda with Amazon SQS", "… with Kinesis"), and the schedule's input.
//!
//! Each scenario runs twice. Against the synthesized app, each reference of a function's
//! environment is given a resource the test makes. Against the deployed app (the `deployed_*`
//! tests, run by `scripts/deploy-check` once the CDK CLI has deployed the stacks into the
//! stand-in account), each function gets the environment CloudFormation gave it, its layer as
//! the stack uploaded it, and its events from the queue, stream and schedule its stack made.

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
    SourceServer, aws_config, create_codecommit_repository, env, pillar, python, run, runtime,
    stderr, unique,
};

/// A template resource's logical id and its properties.
type Resources = serde_json::Map<String, Value>;

/// Which app the functions are taken from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum App {
    /// The templates `cdk synth` wrote (`PILLAR_SYNTH_DIR`).
    Synthesized,
    /// The stacks deployed into the stand-in account, from the cloud assembly the CDK CLI
    /// deployed (`PILLAR_DEPLOYED_DIR`, set by `scripts/deploy-check`).
    Deployed,
}

impl App {
    /// Every resource of every stack of the app's templates, read once.
    fn templates(self) -> &'static Resources {
        static SYNTHESIZED: std::sync::OnceLock<Resources> = std::sync::OnceLock::new();
        static DEPLOYED: std::sync::OnceLock<Resources> = std::sync::OnceLock::new();
        match self {
            Self::Synthesized => SYNTHESIZED.get_or_init(|| read_templates("PILLAR_SYNTH_DIR")),
            Self::Deployed => DEPLOYED.get_or_init(|| read_templates("PILLAR_DEPLOYED_DIR")),
        }
    }
}

fn read_templates(variable: &str) -> Resources {
    let dir = PathBuf::from(env(variable));
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

/// The deployed function running `binary`: its configuration as Lambda on the stand-in
/// account holds it (`GetFunction`), found through the stack resource of its logical id.
fn deployed_function(binary: &str) -> Value {
    // Read once per binary: a scenario asks for its environment, schedule and event source.
    static READ: std::sync::Mutex<BTreeMap<String, Value>> = std::sync::Mutex::new(BTreeMap::new());
    if let Some(known) = READ.lock().expect("not poisoned").get(binary) {
        return known.clone();
    }
    let (id, _) = function_of(App::Deployed.templates(), binary);
    let script = r#"
import json, sys, boto3
cfn, lam = boto3.client("cloudformation"), boto3.client("lambda")
for stack in cfn.describe_stacks()["Stacks"]:
    for resource in cfn.describe_stack_resources(StackName=stack["StackName"])["StackResources"]:
        if resource.get("LogicalResourceId") == sys.argv[1]:
            function = lam.get_function(FunctionName=resource["PhysicalResourceId"])
            print(json.dumps(function["Configuration"], default=str))
            sys.exit()
sys.exit(f"no deployed stack holds {sys.argv[1]}: scripts/deploy-check deploys them")
"#;
    let read: Value = serde_json::from_str(&python(script, &[&id])).expect("a configuration");
    READ.lock().expect("not poisoned").insert(binary.to_owned(), read.clone());
    read
}

/// The manifest in the deployed layer of the function running `binary`: the zip the CDK CLI
/// uploaded to the bootstrap bucket, which the layer's template names.
fn deployed_manifest(binary: &str) -> String {
    let resources = App::Deployed.templates();
    let (_, properties) = function_of(resources, binary);
    let layer = properties["Layers"][0]["Ref"].as_str().expect("a layer of the app");
    let content = &resources[layer]["Properties"]["Content"];
    let script = r#"
import io, sys, zipfile, boto3
zipped = boto3.client("s3").get_object(Bucket=sys.argv[1], Key=sys.argv[2])["Body"].read()
sys.stdout.write(zipfile.ZipFile(io.BytesIO(zipped)).read("pillars.toml").decode())
"#;
    let bucket = content["S3Bucket"].as_str().expect("the assets bucket");
    python(script, &[bucket, content["S3Key"].as_str().expect("a key")])
}

/// The ARN of what feeds the deployed function (its one event source mapping).
fn deployed_event_source(function: &Value) -> String {
    let script = "import sys, boto3\n\
        mappings = boto3.client('lambda').list_event_source_mappings(FunctionName=sys.argv[1])\n\
        print(mappings['EventSourceMappings'][0]['EventSourceArn'])";
    let name = function["FunctionName"].as_str().expect("a name");
    python(script, &[name]).trim().to_owned()
}

/// `manifest` with the first entry of its `kind` array of tables (`repository`, `image`)
/// changed by `edit`, and the other entries dropped: they name sources this machine cannot
/// reach. The entry's name in AWS (`codecommit`, `ecr_repository`) is kept.
fn with_first(manifest: &str, kind: &str, edit: impl FnOnce(&mut toml::Table)) -> String {
    let mut manifest: toml::Table = manifest.parse().expect("the deployed manifest");
    let entries = manifest.get_mut(kind).and_then(toml::Value::as_array_mut);
    let entries = entries.unwrap_or_else(|| panic!("the deployed manifest has no [[{kind}]]"));
    entries.truncate(1);
    edit(entries[0].as_table_mut().expect("a table"));
    toml::to_string(&manifest).expect("a manifest")
}

/// What a stand-in gives for a `{"Ref": id}` to a resource of a type.
type StandIn<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The properties of the function running `binary` in `app`.
fn function_properties(app: App, binary: &str) -> Value {
    match app {
        App::Synthesized => function_of(app.templates(), binary).1,
        App::Deployed => deployed_function(binary),
    }
}

/// A binary running as the function of the synthesized app that runs it.
struct Function {
    name: String,
    child: std::sync::Mutex<Child>,
    log: PathBuf,
    _layer: tempfile::TempDir,
}

impl Function {
    /// Starts `binary` with its function's environment in `app`: literal values as they
    /// are, except paths under `/opt` (the layers) moved into a directory holding `layer`'s
    /// files, and references of the synthesized app resolved by `stand_in` (by resource
    /// type). Anything else is a variable this test does not know how to give, and fails it.
    fn start(app: App, binary: &str, layer: &[(&str, &str)], stand_in: StandIn<'_>) -> Self {
        let resources = app.templates();
        let (_, template) = function_of(resources, binary);
        let properties = function_properties(app, binary);
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
                // moto's Lambda keeps no LoggingConfig: the template's, then.
                [&properties, &template]
                    .iter()
                    .find_map(|p| p["LoggingConfig"]["LogFormat"].as_str())
                    .unwrap_or("Text"),
            )
            .stdout(std::fs::File::create(&log).expect("log"))
            .stderr(std::fs::File::create(opt.path().join("function.err")).expect("log"))
            .spawn()
            .unwrap_or_else(|e| panic!("{binary}: {e}; scripts/test builds it"));
        Self { name, child: std::sync::Mutex::new(child), log, _layer: opt }
    }

    /// `work` (a request to the emulator), unless the function exits first (a manifest it
    /// refuses, a panic): then the test fails with its log, where the emulator would hold
    /// the request for ever, waiting for the function to ask for its event.
    fn while_running<T>(&self, work: impl Future<Output = T>) -> T {
        let exited = async {
            loop {
                if let Ok(Some(status)) = self.child.lock().expect("not poisoned").try_wait() {
                    return status;
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        };
        runtime().block_on(async {
            tokio::select! {
                done = work => done,
                status = exited => panic!("{} exited ({status}); its log: {}", self.name, self.logs()),
            }
        })
    }

    /// Invokes the function through the emulator; its answer.
    fn invoke(&self, event: &Value) -> Value {
        let url = format!(
            "http://{}/2015-03-31/functions/{}/invocations",
            env("PILLAR_LAMBDA_RUNTIME"),
            self.name
        );
        let answer = self.while_running(async {
            let response = reqwest::Client::new().post(&url).json(event).send().await?;
            response.text().await
        });
        let answer = answer.unwrap_or_else(|e| panic!("invoking {}: {e}", self.name));
        serde_json::from_str(&answer)
            .unwrap_or_else(|_| panic!("{} answered {answer}; its log: {}", self.name, self.logs()))
    }

    /// POSTs to `path` of its function URL, as a caller would (the emulator makes the
    /// request its event): the status and the body.
    fn call_url(&self, path: &str, headers: &[(String, String)], body: Vec<u8>) -> (u16, String) {
        let url =
            format!("http://{}/lambda-url/{}/{path}", env("PILLAR_LAMBDA_RUNTIME"), self.name);
        let answer = self.while_running(async {
            let mut request = reqwest::Client::new().post(&url).body(body);
            for (name, value) in headers {
                request = request.header(name, value);
            }
            let response = request.send().await?;
            let status = response.status().as_u16();
            Ok::<_, reqwest::Error>((status, response.text().await?))
        });
        answer.unwrap_or_else(|e| panic!("calling {url}: {e}"))
    }

    fn logs(&self) -> String {
        let err = self.log.with_file_name("function.err");
        let read = |path: &Path| std::fs::read_to_string(path).unwrap_or_default();
        format!("{}{}", read(&self.log), read(&err))
    }
}

impl Drop for Function {
    fn drop(&mut self) {
        let child = self.child.get_mut().expect("not poisoned");
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// What the schedule of the function running `binary` sends it: the schedule's input, or
/// `{}` when it sets none. Deployed, the schedule is found by the function it targets.
fn scheduled_input(app: App, binary: &str) -> Value {
    if app == App::Deployed {
        let script = r#"
import sys, boto3
scheduler = boto3.client("scheduler")
for listed in scheduler.list_schedules()["Schedules"]:
    schedule = scheduler.get_schedule(Name=listed["Name"], GroupName=listed.get("GroupName", "default"))
    if schedule["Target"]["Arn"] == sys.argv[1]:
        print(schedule["Target"].get("Input", "{}"))
        sys.exit()
sys.exit(f"no deployed schedule runs {sys.argv[1]}")
"#;
        let arn = deployed_function(binary)["FunctionArn"].as_str().expect("an ARN").to_owned();
        return serde_json::from_str(&python(script, &[&arn])).expect("JSON");
    }
    let resources = app.templates();
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

/// The repository the Bitbucket fixtures' webhook names.
const FIXTURE_REPOSITORY: &str = "NET/networking-terraform";

#[test]
fn the_source_control_binaries_take_a_webhook_a_batch_and_a_schedule_to_a_mirror() {
    source_control(App::Synthesized);
}

#[test]
#[ignore = "run by scripts/deploy-check, against the stacks it deployed"]
fn deployed_source_control_functions_mirror_into_the_repository_and_queue_their_stack_made() {
    source_control(App::Deployed);
}

fn source_control(app: App) {
    let server = SourceServer::start(None);
    let source = server.repository("networking-terraform");
    source.commit("network");
    source.git(&["tag", "-a", "v2", "-m", "release"]);
    let source_url = server.url("networking-terraform");
    let sqs = aws_sdk_sqs::Client::new(&aws_config());
    let fixtures = Path::new(&env("PILLAR_FIXTURES")).join("bitbucket");
    let (target, queue_url, secret_arn, manifest) = match app {
        App::Synthesized => {
            let target = unique("lambda-mirror");
            // The deployed mirror creates no repository (CREATE_REPOSITORIES=false): the app does.
            create_codecommit_repository(&target);
            let dir = tempfile::tempdir().expect("temp dir");
            let manifest =
                write_manifest(dir.path(), &[(&target, &source_url, FIXTURE_REPOSITORY)]);
            let manifest = std::fs::read_to_string(manifest).expect("manifest");
            (target, create_fifo_queue(&sqs), create_webhook_secret(), manifest)
        }
        App::Deployed => {
            let webhook = deployed_function("scp-webhook");
            let variables = &webhook["Environment"]["Variables"];
            let text = |name: &str| variables[name].as_str().expect(name).to_owned();
            let (queue_url, secret_arn) = (text("MIRROR_QUEUE_URL"), text("WEBHOOK_SECRET_ID"));
            let queue = queue_url.rsplit('/').next().expect("a queue name");
            let mirror_source = deployed_event_source(&deployed_function("scp-mirror"));
            assert!(
                mirror_source.ends_with(&format!(":{queue}")),
                "the mirror polls {mirror_source}"
            );
            // As the operator does after the deploy: the secret gets the value set in Bitbucket.
            let secret = std::fs::read_to_string(fixtures.join("SECRET")).expect("the secret");
            put_secret_value(&secret_arn, secret.trim_end());
            let mut target = String::new();
            let manifest = with_first(&deployed_manifest("scp-mirror"), "repository", |entry| {
                target = entry["codecommit"].as_str().expect("a CodeCommit name").to_owned();
                entry.insert("source".into(), source_url.clone().into());
                entry.insert("bitbucket".into(), FIXTURE_REPOSITORY.into());
                entry.remove("credentials_secret");
            });
            (target, queue_url, secret_arn, manifest)
        }
    };
    let stand_in = |kind: &str| match kind {
        "AWS::SQS::Queue" => Some(queue_url.clone()),
        "AWS::SecretsManager::Secret" => Some(secret_arn.clone()),
        _ => None,
    };
    let layer = [("pillars.toml", manifest.as_str())];

    let webhook = Function::start(app, "scp-webhook", &layer, &stand_in);
    let headers: Vec<(String, String)> =
        std::fs::read_to_string(fixtures.join("dc-repo-refs-changed.headers"))
            .expect("headers")
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
    let body = std::fs::read(fixtures.join("dc-repo-refs-changed.json")).expect("body");
    assert_eq!(webhook.call_url("", &headers, body).0, 202, "{}", webhook.logs());

    let mirror = Function::start(app, "scp-mirror", &layer, &stand_in);
    let event = sqs_event(&queue_url);
    assert_eq!(event["Records"].as_array().map(Vec::len), Some(1), "the webhook queued one");
    let answer = mirror.invoke(&event);
    assert_eq!(answer, json!({ "batchItemFailures": [] }), "{}", mirror.logs());
    delete_done(&queue_url, &event, &answer);
    assert_mirrored(&source, &source_url, &target);

    // What a build would do with the mirror, on the canary's schedule.
    let canary = Function::start(app, "scp-canary", &layer, &stand_in);
    let answer = canary.invoke(&scheduled_input(app, "scp-canary"));
    let checked = &answer["repositories"][0];
    assert_eq!(checked["repository"], json!(target), "{answer}: {}", canary.logs());
    assert_eq!((&checked["state"], &checked["source"]["state"]), (&json!("ready"), &json!("same")));

    source.commit("drift");
    let reconcile = Function::start(app, "scp-reconcile", &layer, &stand_in);
    let answer = reconcile.invoke(&scheduled_input(app, "scp-reconcile"));
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

fn put_secret_value(arn: &str, value: &str) {
    let client = aws_sdk_secretsmanager::Client::new(&aws_config());
    let put = client.put_secret_value().secret_id(arn).secret_string(value).send();
    runtime().block_on(put).unwrap_or_else(|e| panic!("PutSecretValue {arn}: {e:?}"));
}

#[test]
fn the_logging_binaries_beat_on_their_schedule_and_drain_a_kinesis_batch() {
    let stream = unique("lambda-logs");
    python(
        "import sys, boto3\nboto3.client('kinesis').create_stream(StreamName=sys.argv[1], ShardCount=1)",
        &[&stream],
    );
    let prefix = format!("/{}/", unique("lambda-logs"));
    let manifest = format!("[logging]\nstream = \"{stream}\"\nlog_group_prefix = \"{prefix}\"\n");
    logging(App::Synthesized, &stream, &prefix, &manifest);
}

#[test]
#[ignore = "run by scripts/deploy-check, against the stacks it deployed"]
fn deployed_logging_functions_beat_into_the_stream_their_stack_made_and_drain_it() {
    let manifest = deployed_manifest("log-sink");
    let settings: toml::Table = manifest.parse().expect("the deployed manifest");
    let prefix = settings["logging"]["log_group_prefix"].as_str().expect("a prefix").to_owned();
    let stream_arn = deployed_event_source(&deployed_function("log-sink"));
    let stream = stream_arn.rsplit('/').next().expect("a stream name").to_owned();
    assert_eq!(settings["logging"]["stream"].as_str(), Some(stream.as_str()), "the sink's stream");
    logging(App::Deployed, &stream, &prefix, &manifest);
}

fn logging(app: App, stream: &str, prefix: &str, manifest: &str) {
    let layer = [("pillars.toml", manifest)];
    let no_stand_in = |_: &str| None;

    let heartbeat = Function::start(app, "log-heartbeat", &layer, &no_stand_in);
    let answer = heartbeat.invoke(&scheduled_input(app, "log-heartbeat"));
    let sent = answer["sent"].as_str().unwrap_or_else(|| panic!("{answer}: {}", heartbeat.logs()));

    let sink = Function::start(app, "log-sink", &layer, &no_stand_in);
    let event = kinesis_event(stream);
    assert!(!event["Records"].as_array().is_none_or(Vec::is_empty), "the heartbeat's record");
    let answer = sink.invoke(&event);
    assert_eq!(answer, json!({ "batchItemFailures": [] }), "{}", sink.logs());
    let stored = stored_events(prefix);
    let beats = &stored[&format!("{prefix}pillar-heartbeat")];
    assert!(beats.iter().any(|(_, message)| message.contains(sent)), "{sent} in {stored:?}");
}

#[test]
fn the_docker_mirror_binary_copies_its_images_on_its_schedule() {
    let repository = unique("lambda/image");
    let manifest = format!(
        "[[image]]\nsource = \"{}/{repository}\"\necr_repository = \"{repository}\"\ntags = [\"1\"]\n",
        env("PILLAR_SOURCE_REGISTRY")
    );
    docker_mirror(App::Synthesized, &repository, &repository, &manifest);
}

#[test]
#[ignore = "run by scripts/deploy-check, against the stacks it deployed"]
fn deployed_docker_mirror_function_copies_into_the_repository_its_stack_made() {
    let repository = unique("lambda/image");
    let mut target = String::new();
    let manifest = with_first(&deployed_manifest("docker-mirror"), "image", |entry| {
        target = entry["ecr_repository"].as_str().expect("an ECR name").to_owned();
        let source = format!("{}/{repository}", env("PILLAR_SOURCE_REGISTRY"));
        entry.insert("source".into(), source.into());
        entry.insert("tags".into(), toml::Value::Array(vec!["1".into()]));
        for selection in ["include", "exclude", "semver", "keep_newest", "credentials_secret"] {
            entry.remove(selection);
        }
    });
    docker_mirror(App::Deployed, &repository, &target, &manifest);
}

/// Pushes tag `1` of `repository` to the source registry; the function copies it to `target`.
fn docker_mirror(app: App, repository: &str, target: &str, manifest: &str) {
    push(&spec(&["linux/amd64"], &[4096], false), repository, "1");
    let layer = [("pillars.toml", manifest)];
    let mirror = Function::start(app, "docker-mirror", &layer, &|_| None);
    let answer = mirror.invoke(&scheduled_input(app, "docker-mirror"));
    assert_eq!(answer["copied"], 1, "{answer}: {}", mirror.logs());
    assert_eq!(answer["failed"], 0);
    assert_eq!(ecr_images(target), 1);

    let canary = Function::start(app, "docker-canary", &layer, &|_| None);
    let answer = canary.invoke(&scheduled_input(app, "docker-canary"));
    let pulled = &answer["images"][0];
    assert_eq!(pulled["image"], json!(format!("ecr:{target}")), "{answer}: {}", canary.logs());
    assert_eq!((&pulled["state"], &pulled["tag"]), (&json!("ready"), &json!("1")));
}

#[test]
fn the_config_eval_binary_answers_ofrep_from_the_flag_set_published_to_its_bucket() {
    config_eval(App::Synthesized, &crate::config_pillar::bucket());
}

#[test]
#[ignore = "run by scripts/deploy-check, against the stacks it deployed"]
fn deployed_config_eval_function_answers_ofrep_from_the_bucket_its_stack_made() {
    let function = deployed_function("config-eval");
    let bucket = function["Environment"]["Variables"]["CONFIG_BUCKET"].as_str();
    config_eval(App::Deployed, bucket.expect("the function names its bucket"));
}

/// Publishes the example flag set to `bucket` under the function's prefix, as a publisher
/// would; the function answers OFREP through its URL from that bundle.
fn config_eval(app: App, bucket: &str) {
    let variables = &function_properties(app, "config-eval")["Environment"]["Variables"];
    let prefix = variables["CONFIG_PREFIX"].as_str().unwrap_or_default().to_owned();
    let published = run(pillar()
        .args(["flags", "publish"])
        .arg(crate::config_pillar::example())
        .args(["--bucket", bucket, "--prefix", &prefix]));
    assert!(published.status.success(), "{}", stderr(&published));
    let evaluator = Function::start(app, "config-eval", &[], &|kind| {
        (kind == "AWS::S3::Bucket").then(|| bucket.to_owned())
    });
    let json = [("content-type".to_owned(), "application/json".to_owned())];
    let context = br#"{"context": {"targetingKey": "svc-1", "team": "platform"}}"#;

    let (status, body) =
        evaluator.call_url("ofrep/v1/evaluate/flags/dns-new-resolver", &json, context.to_vec());
    assert_eq!(status, 200, "{body}: {}", evaluator.logs());
    let answer: Value = serde_json::from_str(&body).expect("json");
    assert_eq!((&answer["value"], &answer["reason"]), (&json!(true), &json!("TARGETING_MATCH")));
    let bundle = answer["metadata"]["bundle"].as_str().expect("the bundle it answered from");
    let pointer = format!("{prefix}current");
    let current = python(
        "import sys, json, boto3\n\
         body = boto3.client('s3').get_object(Bucket=sys.argv[1], Key=sys.argv[2])['Body'].read()\n\
         print(json.loads(body)['digest'])",
        &[bucket, &pointer],
    );
    assert_eq!(bundle, current.trim(), "the bundle {pointer} names");

    let (status, body) = evaluator.call_url("ofrep/v1/evaluate/flags", &json, context.to_vec());
    assert_eq!(status, 200, "{body}");
    let bulk: Value = serde_json::from_str(&body).expect("json");
    let keys: Vec<&str> = bulk["flags"]
        .as_array()
        .expect("flags")
        .iter()
        .filter_map(|flag| flag["key"].as_str())
        .collect();
    assert!(keys.contains(&"dns-new-resolver") && keys.contains(&"log-level"), "{body}");

    let (status, body) =
        evaluator.call_url("ofrep/v1/evaluate/flags/no-such-flag", &json, context.to_vec());
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("FLAG_NOT_FOUND"), "{body}");
}
