//! `scripts/bench flags`: the Config Pillar, each figure against a reference in the same run.
//!
//! - in-process evaluation of a typical rule (`dns-new-resolver`: team, region and cohort)
//!   p50/p99, against a plain Rust `match` on the same attributes;
//! - 700 flags (70 policies of 10 rules) checked and published to S3 (moto) with
//!   `pillar flags publish`, against boto3 putting the same bundle bytes;
//! - OFREP evaluations a second from `pillar flags serve` on one core (taskset), against a
//!   bare HTTP answer from the same server (an unknown path) on that core;
//! - `config-eval` cold start: process start to its first OFREP answer through the Lambda
//!   runtime emulator, against `pillar flags serve`'s start to its first answer.
//!
//! FLAGS_BENCH_EVALUATIONS (default 200000), FLAGS_BENCH_SECONDS (default 5).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dynamic_config::bundle::digest;
use dynamic_config::evaluate::Evaluator;
use dynamic_config::flagset;
use integration_tests::measure::measure;
use serde_json::{Value, json};

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run scripts/bench flags"))
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/flags")
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

/// The contexts evaluated, in turn: every branch of the rule.
fn contexts() -> Vec<Value> {
    let teams = ["platform", "payments", "search", "identity"];
    let regions = ["eu-west-1", "us-east-1", "ap-south-1"];
    let cohorts = ["canary", "main"];
    let mut all = Vec::new();
    for (n, team) in teams.iter().enumerate() {
        for region in regions {
            for cohort in cohorts {
                all.push(json!({"targetingKey": format!("svc-{n}"), "team": team, "region": region, "cohort": cohort}));
            }
        }
    }
    all
}

/// The same decision as `data.flags.dns.new_resolver`, a plain Rust match.
fn baseline(context: &Value) -> bool {
    matches!(
        (context["team"].as_str(), context["region"].as_str(), context["cohort"].as_str()),
        (Some("platform"), _, _) | (_, Some("eu-west-1"), Some("canary"))
    )
}

fn in_process() {
    let runs = env_or("FLAGS_BENCH_EVALUATIONS", 200_000) as usize;
    let bundle = flagset::load(&example()).expect("the example flag set");
    let bytes = bundle.to_bytes();
    let flags = Evaluator::new(bundle, digest(&bytes)).expect("compiles");
    let contexts = contexts();
    let time = |f: &dyn Fn(&Value) -> bool| {
        let mut nanos = Vec::with_capacity(runs);
        let mut trues = 0usize;
        for n in 0..runs {
            let context = &contexts[n % contexts.len()];
            let started = Instant::now();
            trues += usize::from(std::hint::black_box(f(context)));
            nanos.push(started.elapsed().as_nanos() as u64);
        }
        nanos.sort_unstable();
        (percentile(&nanos, 0.5), percentile(&nanos, 0.99), trues)
    };
    let rego = |c: &Value| flags.evaluate("dns-new-resolver", c).value == Some(Value::Bool(true));
    let (p50, p99, rego_trues) = time(&rego);
    let (b50, b99, baseline_trues) = time(&baseline);
    assert_eq!(rego_trues, baseline_trues, "the rule and the match disagree");
    println!(
        "| in-process evaluation, 3 attributes ({runs} runs) | p50 {:.2} µs, p99 {:.2} µs | match p50 {:.3} µs, p99 {:.3} µs | p99 {:.0}× |",
        p50 as f64 / 1e3,
        p99 as f64 / 1e3,
        b50 as f64 / 1e3,
        b99 as f64 / 1e3,
        p99 as f64 / b99.max(1) as f64
    );
}

/// POSTs `body` to `url`: the status and the answer, or None if nothing answered.
fn post(url: &str, body: &'static str) -> Option<(u16, String)> {
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let answer = reqwest::Client::new().post(url).body(body).send().await.ok()?;
        let status = answer.status().as_u16();
        Some((status, answer.text().await.ok()?))
    })
}

fn pillar() -> Command {
    Command::new(var("PILLAR_BIN"))
}

fn python(script: &str, args: &[&str]) -> String {
    let output = Command::new(Path::new(&var("PILLAR_VENV")).join("bin/python"))
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// 700 flags in 70 policies, each rule reading three attributes.
fn big_flag_set(dir: &Path) {
    let mut flags = String::new();
    for p in 0..70 {
        let mut policy = format!("package flags.p{p}\n\n");
        for r in 0..10 {
            let n = p * 10 + r;
            flags += &format!(
                "[flags.flag-{n}]\ntype = \"boolean\"\ndefault = false\ndescription = \"flag {n}\"\nrule = \"data.flags.p{p}.r{r}\"\n\n"
            );
            policy += &format!(
                "r{r} if {{\n\tinput.team == \"t{r}\"\n\tinput.region == \"r{p}\"\n\tinput.tier != \"free\"\n}}\n\n"
            );
        }
        std::fs::write(dir.join(format!("p{p}.rego")), policy).expect("policy");
    }
    std::fs::write(dir.join("flags.toml"), flags).expect("flags.toml");
}

fn publish_700() {
    let dir = tempfile::tempdir().expect("temp dir");
    big_flag_set(dir.path());
    let bucket = format!("bench-flags-{}", std::process::id());
    let create = "import sys, boto3\ns3 = boto3.client('s3')\n\
                  s3.create_bucket(Bucket=sys.argv[1], CreateBucketConfiguration={'LocationConstraint': s3.meta.region_name})\n\
                  s3.put_bucket_versioning(Bucket=sys.argv[1], VersioningConfiguration={'Status': 'Enabled'})";
    python(create, &[&bucket]);
    let mut command = pillar();
    command.args(["flags", "publish"]).arg(dir.path()).args(["--bucket", &bucket]);
    let (ours, _) = measure(command);
    let bundle = flagset::load(dir.path()).expect("valid").to_bytes();
    let file = dir.path().join("bundle.json");
    std::fs::write(&file, &bundle).expect("bundle");
    let put = "import sys, time, boto3\ns3 = boto3.client('s3')\nstarted = time.monotonic()\n\
               s3.put_object(Bucket=sys.argv[1], Key='copy.json', Body=open(sys.argv[2], 'rb').read())\n\
               print(time.monotonic() - started)";
    let boto3: f64 =
        python(put, &[&bucket, &file.display().to_string()]).trim().parse().expect("seconds");
    println!(
        "| 700 flags checked and published | {:.2} s ({} KiB bundle) | boto3 put of the bundle {:.2} s | {:.1}× |",
        ours.seconds,
        bundle.len() / 1024,
        boto3,
        ours.seconds / boto3
    );
}

/// `pillar flags serve` on one core, with the example flag set published.
struct Served {
    child: std::process::Child,
    address: String,
    _cache: tempfile::TempDir,
}

impl Served {
    fn start(bucket: &str) -> (Self, Duration) {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let address = format!("127.0.0.1:{port}");
        let cache = tempfile::tempdir().expect("temp dir");
        let started = Instant::now();
        let child = Command::new("taskset")
            .args(["-c", "1"])
            .arg(var("PILLAR_BIN"))
            .args(["flags", "serve", "--bucket", bucket, "--addr", &address, "--poll", "30s"])
            .arg("--cache-dir")
            .arg(cache.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pillar flags serve");
        let served = Self { child, address, _cache: cache };
        let url = format!("http://{}/ofrep/v1/evaluate/flags/deploy-freeze", served.address);
        while post(&url, "{}").map(|(status, _)| status) != Some(200) {
            std::thread::sleep(Duration::from_millis(2));
        }
        (served, started.elapsed())
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Requests a second to `url` from 16 keep-alive connections on the other core.
fn rate(url: &str, body: &'static str, seconds: u64) -> f64 {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    runtime.block_on(async {
        let client = reqwest::Client::new();
        let until = Instant::now() + Duration::from_secs(seconds);
        let workers = (0..16).map(|_| {
            let (client, url) = (client.clone(), url.to_owned());
            async move {
                let mut done = 0u64;
                while Instant::now() < until {
                    let answer = client.post(&url).body(body).send().await.expect("an answer");
                    answer.bytes().await.expect("a body");
                    done += 1;
                }
                done
            }
        });
        let total: u64 = futures_util::future::join_all(workers).await.into_iter().sum();
        total as f64 / seconds as f64
    })
}

fn ofrep_and_cold_start() {
    let bucket = format!("bench-ofrep-{}", std::process::id());
    let create = "import sys, boto3\ns3 = boto3.client('s3')\n\
                  s3.create_bucket(Bucket=sys.argv[1], CreateBucketConfiguration={'LocationConstraint': s3.meta.region_name})";
    python(create, &[&bucket]);
    let status = pillar()
        .args(["flags", "publish"])
        .arg(example())
        .args(["--bucket", &bucket])
        .status()
        .unwrap();
    assert!(status.success());
    let seconds = env_or("FLAGS_BENCH_SECONDS", 5);
    let (served, serve_start) = Served::start(&bucket);
    let body = r#"{"context": {"targetingKey": "svc-1", "team": "payments", "region": "eu-west-1", "cohort": "canary"}}"#;
    let evaluations = rate(
        &format!("http://{}/ofrep/v1/evaluate/flags/dns-new-resolver", served.address),
        body,
        seconds,
    );
    let bare = rate(&format!("http://{}/not-ofrep", served.address), body, seconds);
    println!(
        "| OFREP evaluations/s, `pillar flags serve` on one core | {evaluations:.0}/s | bare 404 from the same server {bare:.0}/s | {:.2} |",
        evaluations / bare
    );
    drop(served);

    // config-eval through the runtime emulator, as Lambda starts it.
    let name = "config-eval";
    let bin = Path::new(&var("PILLAR_BIN")).with_file_name(name);
    let started = Instant::now();
    let mut child = Command::new(&bin)
        .env("CONFIG_BUCKET", &bucket)
        .env(
            "AWS_LAMBDA_RUNTIME_API",
            format!("http://{}/.rt/{name}", var("PILLAR_LAMBDA_RUNTIME")),
        )
        .env("AWS_LAMBDA_FUNCTION_NAME", name)
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    let url = format!(
        "http://{}/lambda-url/{name}/ofrep/v1/evaluate/flags/dns-new-resolver",
        var("PILLAR_LAMBDA_RUNTIME")
    );
    let (_, text) = post(&url, body).expect("config-eval answers");
    let cold = started.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    assert!(text.contains("\"value\""), "config-eval answered {text}");
    println!(
        "| config-eval cold start to its first OFREP answer | {:.0} ms | `pillar flags serve` start to first answer {:.0} ms | {:.2} |",
        cold.as_secs_f64() * 1e3,
        serve_start.as_secs_f64() * 1e3,
        cold.as_secs_f64() / serve_start.as_secs_f64()
    );
}

fn main() {
    println!("| case | ours | reference | ratio |");
    println!("|---|---|---|---|");
    in_process();
    publish_700();
    ofrep_and_cold_start();
}
