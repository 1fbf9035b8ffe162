//! The Config Pillar against moto's S3: `pillar flags` publishing, listing and rolling back;
//! two publishers at once; and OFREP served by `pillar flags serve`, evaluated through the
//! OpenFeature Python SDK with its OFREP provider (PyPI `openfeature-sdk`,
//! `openfeature-provider-ofrep`), before and during an S3 outage and across a restart.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use integration_tests::faults::Outage;
use serde_json::{Value, json};

use crate::support::{env, ok, pillar, python, run, stderr, unique};

pub(crate) fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/flags")
}

/// A versioned bucket, as the Config stack makes it.
pub(crate) fn bucket() -> String {
    let name = unique("flags").to_lowercase();
    python(
        "import sys, boto3\n\
         s3 = boto3.client('s3')\n\
         s3.create_bucket(Bucket=sys.argv[1], CreateBucketConfiguration={'LocationConstraint': s3.meta.region_name})\n\
         s3.put_bucket_versioning(Bucket=sys.argv[1], VersioningConfiguration={'Status': 'Enabled'})",
        &[&name],
    );
    name
}

/// The example flag set copied, with `change` applied to `flags.toml`'s text.
fn flag_set(change: impl FnOnce(String) -> String) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for entry in std::fs::read_dir(example()).expect("the example flag set") {
        let entry = entry.expect("an entry");
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).expect("copy");
    }
    let flags = dir.path().join("flags.toml");
    let text = std::fs::read_to_string(&flags).expect("flags.toml");
    std::fs::write(&flags, change(text)).expect("flags.toml");
    dir
}

/// What `current` names, read with boto3; and the bundle's bytes hashed by Python.
pub(crate) fn served(bucket: &str) -> (String, String) {
    let out = python(
        "import sys, json, hashlib, boto3\n\
         s3 = boto3.client('s3')\n\
         pointer = json.loads(s3.get_object(Bucket=sys.argv[1], Key='current')['Body'].read())\n\
         key = 'bundles/' + pointer['digest'].split(':')[1] + '.json'\n\
         body = s3.get_object(Bucket=sys.argv[1], Key=key)['Body'].read()\n\
         print(pointer['digest'], 'sha256:' + hashlib.sha256(body).hexdigest())",
        &[bucket],
    );
    let mut words = out.split_whitespace().map(ToOwned::to_owned);
    (words.next().expect("a digest"), words.next().expect("a hash"))
}

fn publish(dir: &Path, bucket: &str) -> std::process::Output {
    run(pillar().args(["flags", "publish"]).arg(dir).args(["--bucket", bucket]))
}

#[test]
fn a_flag_set_is_published_by_digest_listed_refused_when_broken_and_rolled_back() {
    let bucket = bucket();
    let first = publish(&example(), &bucket);
    assert!(first.status.success(), "{}", stderr(&first));
    let (first_digest, hashed) = served(&bucket);
    assert_eq!(first_digest, hashed, "the bundle's name is the SHA-256 of its bytes");

    let warn = flag_set(|t| t.replace("default = \"info\"", "default = \"warn\""));
    assert!(publish(warn.path(), &bucket).status.success());
    let (second_digest, _) = served(&bucket);
    assert_ne!(second_digest, first_digest);
    let again = publish(warn.path(), &bucket);
    assert!(String::from_utf8_lossy(&again.stdout).starts_with("unchanged"), "{again:?}");

    // A policy that does not compile is never published; the bundle served stays.
    let broken = flag_set(|t| t);
    std::fs::write(broken.path().join("dns.rego"), "package flags.dns\n\nnew_resolver if {\n")
        .unwrap();
    let refused = publish(broken.path(), &bucket);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("dns.rego:"),
        "names the file and line: {}",
        stderr(&refused)
    );
    assert_eq!(served(&bucket).0, second_digest);

    let history = ok(pillar().args(["flags", "history", "--json", "--bucket", &bucket]));
    let history: Value = serde_json::from_str(&history).expect("JSON");
    let digests: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["pointer"]["digest"].as_str().unwrap())
        .collect();
    assert_eq!(digests, [second_digest.as_str(), first_digest.as_str()], "newest first");
    assert_eq!(history[0]["current"], json!(true));

    let hex = first_digest.trim_start_matches("sha256:");
    ok(pillar().args(["flags", "rollback", &hex[..12], "--bucket", &bucket]));
    assert_eq!(served(&bucket).0, first_digest);
    let unknown = run(pillar().args(["flags", "rollback", "0123456789ab", "--bucket", &bucket]));
    assert!(
        !unknown.status.success() && stderr(&unknown).contains("pillar flags history"),
        "{}",
        stderr(&unknown)
    );
}

/// Eight publishers at once: each either moves the pointer or is told it raced, and the
/// history is one unbroken chain (each pointer names the one it replaced): no update lost.
#[test]
fn publishers_at_once_never_interleave() {
    let bucket = bucket();
    assert!(publish(&example(), &bucket).status.success());
    let sets: Vec<_> = (0..8)
        .map(|n| flag_set(move |t| t.replace("default = 4", &format!("default = {}", 10 + n))))
        .collect();
    let children: Vec<_> = sets
        .iter()
        .map(|set| {
            pillar()
                .args(["flags", "publish"])
                .arg(set.path())
                .args(["--bucket", &bucket])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("pillar")
        })
        .collect();
    let outputs: Vec<_> =
        children.into_iter().map(|c| c.wait_with_output().expect("wait")).collect();
    let published = outputs.iter().filter(|o| o.status.success()).count();
    for refused in outputs.iter().filter(|o| !o.status.success()) {
        assert!(stderr(refused).contains("moved while this publish ran"), "{}", stderr(refused));
    }
    let history = ok(pillar().args(["flags", "history", "--json", "--bucket", &bucket]));
    let history: Vec<Value> = serde_json::from_str(&history).expect("JSON");
    assert_eq!(history.len(), published + 1, "one pointer per publish that said it published");
    let mut versions: Vec<&Value> = history.iter().map(|v| &v["pointer"]).collect();
    versions.reverse();
    for pair in versions.windows(2) {
        assert_eq!(
            pair[1]["previous"], pair[0]["digest"],
            "a publish replaced what it read: {history:?}"
        );
    }
}

/// `pillar flags serve` on a free port, reaching S3 through `s3`.
struct Agent {
    child: Child,
    url: String,
}

impl Agent {
    fn start(bucket: &str, s3: &str, cache: &Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = pillar()
            .args([
                "flags",
                "serve",
                "--bucket",
                bucket,
                "--poll",
                "1s",
                "--addr",
                &format!("127.0.0.1:{port}"),
            ])
            .arg("--cache-dir")
            .arg(cache)
            .env("AWS_ENDPOINT_URL", s3)
            .env("AWS_MAX_ATTEMPTS", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pillar flags serve");
        let url = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "pillar flags serve did not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, url }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Value, reason and error code of one evaluation (without the bundle's age).
fn answer(evaluation: &Value) -> Value {
    Value::Array(evaluation.as_array().expect("an evaluation")[..3].to_vec())
}

/// Flags evaluated by the OpenFeature Python SDK through its OFREP provider.
fn evaluate_with_python(url: &str) -> Value {
    let platform = json!({"targetingKey": "dns-resolver-1", "team": "platform"});
    let payments = json!({"targetingKey": "payments-1", "team": "payments", "tier": "premium"});
    let wanted = json!([
        {"name": "platform", "key": "dns-new-resolver", "type": "boolean", "default": false, "context": platform},
        {"name": "payments", "key": "dns-new-resolver", "type": "boolean", "default": true, "context": payments},
        {"name": "builds", "key": "max-parallel-builds", "type": "integer", "default": 1, "context": payments},
        {"name": "level", "key": "log-level", "type": "string", "default": "error", "context": payments},
        {"name": "unknown", "key": "no-such-flag", "type": "boolean", "default": true, "context": platform},
        {"name": "mistyped", "key": "max-parallel-builds", "type": "string", "default": "x", "context": payments},
    ]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/ofrep_eval.py");
    let python = PathBuf::from(env("PILLAR_VENV")).join("bin/python");
    let out = ok(std::process::Command::new(python).arg(script).arg(url).arg(wanted.to_string()));
    serde_json::from_str(&out).expect("JSON from the Python SDK")
}

#[test]
fn ofrep_serves_the_python_sdk_from_s3_then_from_the_last_good_bundle_with_s3_gone() {
    let bucket = bucket();
    assert!(publish(&example(), &bucket).status.success());
    let moto: std::net::SocketAddr =
        env("AWS_ENDPOINT_URL").trim_start_matches("http://").parse().expect("moto's address");
    let s3 = Outage::start(moto);
    let cache = tempfile::tempdir().expect("temp dir");
    let agent = Agent::start(&bucket, &format!("http://{}", s3.address), cache.path());

    let seen = evaluate_with_python(&agent.url);
    assert_eq!(answer(&seen["platform"]), json!([true, "TARGETING_MATCH", null]), "{seen}");
    assert_eq!(
        answer(&seen["payments"]),
        json!([false, "DEFAULT", null]),
        "the flag set's default, not the caller's: {seen}"
    );
    assert_eq!(answer(&seen["builds"]), json!([8, "TARGETING_MATCH", null]), "{seen}");
    assert_eq!(answer(&seen["level"]), json!(["info", "DEFAULT", null]), "{seen}");
    assert_eq!(seen["unknown"][0], json!(true), "an unknown flag: the caller's default: {seen}");
    assert_eq!(seen["unknown"][2], json!("FLAG_NOT_FOUND"), "{seen}");
    assert_eq!(answer(&seen["mistyped"]), json!(["x", "ERROR", "TYPE_MISMATCH"]), "{seen}");

    // The bulk evaluation, as static-context SDKs poll it: an ETag, and 304 while unchanged.
    let bulk = |context: &Value, etag: Option<&str>| {
        crate::support::runtime().block_on(async {
            let mut request = reqwest::Client::new()
                .post(format!("{}/ofrep/v1/evaluate/flags", agent.url))
                .body(json!({"context": context}).to_string());
            if let Some(etag) = etag {
                request = request.header("If-None-Match", etag);
            }
            let answer = request.send().await.expect("an answer");
            let status = answer.status().as_u16();
            let etag = answer.headers().get("etag").map(|v| v.to_str().unwrap().to_owned());
            (status, etag, answer.text().await.unwrap_or_default())
        })
    };
    let platform = json!({"targetingKey": "dns-resolver-1", "team": "platform"});
    let (status, etag, body) = bulk(&platform, None);
    assert_eq!(status, 200, "{body}");
    let flags: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(flags["flags"].as_array().map(Vec::len), Some(6), "{body}");
    let etag = etag.expect("an ETag");
    assert_eq!(bulk(&platform, Some(&etag)).0, 304);
    let other = bulk(&json!({"targetingKey": "x", "team": "search"}), Some(&etag));
    assert_eq!(
        (other.0, other.1.is_some_and(|e| e != etag)),
        (200, true),
        "another context, another ETag"
    );

    // S3 gone: the same answers, from memory, and their age grows.
    s3.begin();
    std::thread::sleep(Duration::from_secs(3));
    let during = evaluate_with_python(&agent.url);
    assert_eq!(answer(&during["platform"]), answer(&seen["platform"]), "{during}");
    assert_eq!(answer(&during["builds"]), answer(&seen["builds"]), "{during}");
    assert!(during["platform"][3].as_u64().unwrap_or(0) >= 2, "the bundle's age is told: {during}");

    // Restarted during the outage: from the bundle kept on disk.
    drop(agent);
    let restarted = Agent::start(&bucket, &format!("http://{}", s3.address), cache.path());
    let after = evaluate_with_python(&restarted.url);
    assert_eq!(answer(&after["platform"]), answer(&seen["platform"]), "{after}");

    // Never fetched and S3 gone: every caller gets its own default, told why.
    let empty = tempfile::tempdir().expect("temp dir");
    let fresh = Agent::start(&bucket, &format!("http://{}", s3.address), empty.path());
    let nothing = evaluate_with_python(&fresh.url);
    assert_eq!(answer(&nothing["payments"]), json!([true, "ERROR", "GENERAL"]), "{nothing}");
}

/// The Rust side: `pillar flags eval` goes through the OpenFeature Rust SDK with the
/// pillar's provider.
#[test]
fn the_rust_provider_evaluates_through_the_openfeature_sdk() {
    let bucket = bucket();
    assert!(publish(&example(), &bucket).status.success());
    let cache = tempfile::tempdir().expect("temp dir");
    let eval = |key: &str, context: &str| {
        let mut command = pillar();
        command
            .args(["flags", "eval", key, "--bucket", &bucket, "--context", context])
            .arg("--cache-dir")
            .arg(cache.path());
        run(&mut command)
    };
    let matched = eval("dns-new-resolver", r#"{"targetingKey": "a", "team": "platform"}"#);
    assert!(
        String::from_utf8_lossy(&matched.stdout)
            .starts_with("dns-new-resolver = true (TargetingMatch"),
        "{matched:?}"
    );
    let weight = eval("canary-weight", r#"{"region": "eu-west-1"}"#);
    assert!(
        String::from_utf8_lossy(&weight.stdout).starts_with("canary-weight = 0.25 (TargetingMatch"),
        "{weight:?}"
    );
    let unknown = eval("no-such-flag", "{}");
    assert!(
        !unknown.status.success()
            && String::from_utf8_lossy(&unknown.stdout).contains("FlagNotFound"),
        "{unknown:?}"
    );
    // With S3 unreachable, from the cache the first evaluations left.
    let mut offline = pillar();
    offline
        .args([
            "flags",
            "eval",
            "dns-new-resolver",
            "--bucket",
            &bucket,
            "--context",
            r#"{"team": "platform"}"#,
        ])
        .arg("--cache-dir")
        .arg(cache.path())
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .env("AWS_MAX_ATTEMPTS", "1");
    let offline = run(&mut offline);
    assert!(
        String::from_utf8_lossy(&offline.stdout).starts_with("dns-new-resolver = true"),
        "{offline:?}"
    );
}

/// What a bad day in the bucket does to a serving agent: a pointer naming a bundle whose
/// bytes are not its digest (a tampered or partial upload), one naming a bundle that is not
/// there, and the pointer deleted. The flags served stay the last good ones through each;
/// a good publish afterwards is taken up, so the agent was polling all along.
#[test]
fn a_tampered_missing_or_deleted_flag_set_never_replaces_the_one_served() {
    let bucket = bucket();
    assert!(publish(&example(), &bucket).status.success());
    let (good, _) = served(&bucket);
    let cache = tempfile::tempdir().expect("temp dir");
    let agent = Agent::start(&bucket, &env("AWS_ENDPOINT_URL"), cache.path());
    let evaluate = || {
        crate::support::runtime().block_on(async {
            let answer = reqwest::Client::new()
                .post(format!("{}/ofrep/v1/evaluate/flags/dns-new-resolver", agent.url))
                .body(r#"{"context": {"team": "platform"}}"#)
                .send()
                .await
                .expect("an answer");
            answer.json::<Value>().await.expect("JSON")
        })
    };
    let first = evaluate();
    assert_eq!((&first["value"], &first["metadata"]["bundle"]), (&json!(true), &json!(good)));

    let tamper = "import sys, json, boto3\n\
         s3 = boto3.client('s3')\n\
         bucket, digest, body = sys.argv[1], sys.argv[2], sys.argv[3]\n\
         if body:\n\
         \x20   s3.put_object(Bucket=bucket, Key='bundles/' + digest.split(':')[1] + '.json', Body=body.encode())\n\
         if digest:\n\
         \x20   pointer = {'digest': digest, 'published_at': '2026-12-01T00:00:00Z', 'flags': 6}\n\
         \x20   s3.put_object(Bucket=bucket, Key='current', Body=json.dumps(pointer).encode())\n\
         else:\n\
         \x20   s3.delete_object(Bucket=bucket, Key='current')";
    let tampered = format!("sha256:{}", "0".repeat(64));
    let missing = format!("sha256:{}", "1".repeat(64));
    let bad_days =
        [(tampered.as_str(), r#"{"flags": {}, "policies": {}}"#), (missing.as_str(), ""), ("", "")];
    for (digest, body) in bad_days {
        python(tamper, &[&bucket, digest, body]);
        // Past a poll (every second here), and a backoff or two.
        std::thread::sleep(Duration::from_secs(3));
        let now = evaluate();
        assert_eq!(
            (&now["value"], &now["metadata"]["bundle"]),
            (&json!(true), &json!(good)),
            "after the pointer became {digest:?}: {now}"
        );
    }

    let changed = flag_set(|t| t.replace("default = \"info\"", "default = \"warn\""));
    assert!(publish(changed.path(), &bucket).status.success());
    let (replacement, _) = served(&bucket);
    let started = Instant::now();
    while evaluate()["metadata"]["bundle"] != json!(replacement) {
        assert!(started.elapsed() < Duration::from_secs(30), "the good publish was never taken up");
        std::thread::sleep(Duration::from_millis(500));
    }
}
