//! `scripts/bench scp`: the Source Control Pillar against the git CLI, in one run on one
//! machine, both sides over local smart HTTP (`git http-backend`).
//!
//! - cold mirror: `git clone --bare` + `git push` of heads and tags, against
//!   `pillar scp mirror` with an empty cache;
//! - one new commit, warm cache: `git fetch` + `git push`, against `pillar scp mirror`;
//! - nothing changed: the same again;
//! - the webhook handler in process, signature to 202, against parsing the body alone.
//!
//! Sizes: SCP_BENCH_COMMITS (default 200000) and SCP_BENCH_REFS (default 1000) for the
//! large repository; a medium one of 10,000 commits is measured first.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue};
use integration_tests::measure::{Measure, measure};
use pillar_config::Manifest;
use secrecy::SecretString;
use source_control::queue::{MirrorQueue, MirrorRequest, QueueError};
use source_control::webhook::Webhook;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let pillar = PathBuf::from(
        std::env::var("PILLAR_BIN")
            .expect("PILLAR_BIN: the release pillar binary (scripts/bench sets it)"),
    );
    webhook_latency();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let large = (env_or("SCP_BENCH_COMMITS", 200_000), env_or("SCP_BENCH_REFS", 1_000));
    for (label, commits, refs) in
        [("medium", 10_000, 1_000.min(large.1)), ("large", large.0, large.1)]
    {
        mirror_benchmark(&runtime, &pillar, label, commits, refs);
    }
}

fn git(dir: &Path) -> Command {
    let mut command = Command::new("git");
    command
        .current_dir(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null");
    command
}

fn run(mut command: Command) {
    let status = command.status().expect("run");
    assert!(status.success(), "{command:?} failed");
}

/// A bare repository of `commits` linear commits touching 500 files, with `refs` refs:
/// half branches, a quarter lightweight and a quarter annotated tags, spread over history.
fn generate(dir: &Path, commits: usize, refs: usize) {
    run({
        let mut c = git(dir.parent().expect("parent"));
        c.args(["init", "-q", "--bare"]).arg(dir);
        c
    });
    let mut import = git(dir);
    import.args(["fast-import", "--quiet"]).stdin(Stdio::piped());
    let mut child = import.spawn().expect("git fast-import");
    {
        use std::io::Write;
        let mut stream = std::io::BufWriter::new(child.stdin.take().expect("stdin"));
        for i in 1..=commits {
            let content = format!(
                "// file {}\nrevision {i}\nchecksum {}\n",
                i % 500,
                i.wrapping_mul(2_654_435_761) % 1_000_003
            );
            let message = format!("change {i}\n");
            writeln!(stream, "commit refs/heads/main\nmark :{i}\ncommitter Bench <bench@pillars.invalid> {} +0000", 1_600_000_000 + i).expect("write");
            write!(stream, "data {}\n{message}", message.len()).expect("write");
            if i > 1 {
                writeln!(stream, "from :{}", i - 1).expect("write");
            }
            write!(
                stream,
                "M 100644 inline src/f{:03}.txt\ndata {}\n{content}\n",
                i % 500,
                content.len()
            )
            .expect("write");
        }
        for r in 0..refs {
            let mark = 1 + r * (commits - 1) / refs.max(1);
            match r % 4 {
                0 | 1 => write!(stream, "reset refs/heads/branch-{r:05}\nfrom :{mark}\n\n"),
                2 => write!(stream, "reset refs/tags/light-{r:05}\nfrom :{mark}\n\n"),
                _ => write!(
                    stream,
                    "tag release-{r:05}\nfrom :{mark}\ntagger Bench <bench@pillars.invalid> {} +0000\ndata 8\nrelease\n\n",
                    1_600_000_000 + mark
                ),
            }
            .expect("write");
        }
        stream.flush().expect("flush");
    }
    assert!(child.wait().expect("fast-import").success());
    run({
        let mut c = git(dir);
        c.args(["symbolic-ref", "HEAD", "refs/heads/main"]);
        c
    });
}

fn mirror_benchmark(
    runtime: &tokio::runtime::Runtime,
    pillar: &Path,
    label: &str,
    commits: usize,
    refs: usize,
) {
    let root = tempfile::tempdir().expect("temp dir");
    let served = root.path().join("served");
    std::fs::create_dir_all(&served).expect("dir");
    let started = Instant::now();
    generate(&served.join("source.git"), commits, refs);
    eprintln!(
        "[{label}] generated {commits} commits, {refs} refs in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    for target in ["git-target.git", "pillar-target.git"] {
        run({
            let mut c = git(&served);
            c.args(["init", "-q", "--bare", target]);
            c
        });
    }
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    runtime.spawn(integration_tests::git_source::serve(listener, served.clone(), None, true));
    let source = format!("{base}/source.git");
    let (git_target, pillar_target) =
        (format!("{base}/git-target.git"), format!("{base}/pillar-target.git"));
    let git_cache = root.path().join("git-cache.git");
    let work = root.path().join("pillar-work");
    let heads_and_tags = ["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"];

    let git_sync = |first: bool| -> Measure {
        let fetch = if first {
            let mut c = git(root.path());
            c.args(["clone", "-q", "--bare", &source]).arg(&git_cache);
            measure(c).0
        } else {
            let mut c = git(&git_cache);
            c.args(["fetch", "-q", "--prune", &source]).args(heads_and_tags);
            measure(c).0
        };
        let mut push = git(&git_cache);
        push.args(["push", "-q", "--prune", &git_target]).args(heads_and_tags);
        fetch.then(measure(push).0)
    };
    let pillar_sync = || -> (Measure, String) {
        let mut c = Command::new(pillar);
        // SCP_BENCH_LOG=info shows the mirror's phase timings.
        c.env("RUST_LOG", std::env::var("SCP_BENCH_LOG").unwrap_or_else(|_| "warn".into()))
            .args([
                "scp",
                "mirror",
                "--json",
                "--source",
                &source,
                "--target",
                &pillar_target,
                "--work-dir",
            ])
            .arg(&work);
        measure(c)
    };

    let git_cold = git_sync(true);
    let (pillar_cold, _) = pillar_sync();
    let commit = |n: usize| {
        let mut c = git(&served.join("source.git"));
        c.args(["fast-import", "--quiet"]).stdin(Stdio::piped());
        let mut child = c.spawn().expect("fast-import");
        use std::io::Write;
        let message = format!("new commit {n}\n");
        write!(
            child.stdin.take().expect("stdin"),
            "commit refs/heads/main\ncommitter Bench <bench@pillars.invalid> {} +0000\ndata {}\n{message}from refs/heads/main^0\nM 100644 inline NEW-{n}\ndata 4\nnew\n\n",
            1_700_000_000 + n,
            message.len()
        )
        .expect("write");
        assert!(child.wait().expect("fast-import").success());
    };
    commit(1);
    let git_warm = git_sync(false);
    let (pillar_warm, _) = pillar_sync();
    let git_idle = git_sync(false);
    let (pillar_idle, idle_report) = pillar_sync();
    assert!(
        idle_report.contains("\"fetched\": false"),
        "nothing changed must fetch nothing: {idle_report}"
    );
    assert!(
        idle_report.contains("\"created\": []") && idle_report.contains("\"updated\": []"),
        "{idle_report}"
    );

    let same = |url: &str| {
        let output = git(root.path())
            .args(["ls-remote", "--heads", "--tags", url])
            .output()
            .expect("ls-remote");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    assert_eq!(same(&pillar_target), same(&source), "pillar's target differs from the source");

    println!(
        "\nscp mirror, {label} repository: {commits} commits, {refs} refs (loopback smart HTTP)"
    );
    println!(
        "{:<22} {:>10} {:>10} {:>8} {:>12} {:>12}",
        "case", "pillar s", "git s", "ratio", "pillar MiB", "git MiB"
    );
    for (case, p, g) in [
        ("cold mirror", pillar_cold, git_cold),
        ("one new commit", pillar_warm, git_warm),
        ("nothing changed", pillar_idle, git_idle),
    ] {
        println!(
            "{case:<22} {:>10.2} {:>10.2} {:>8.2} {:>12.1} {:>12.1}",
            p.seconds,
            g.seconds,
            p.seconds / g.seconds.max(0.001),
            p.peak_rss_mib,
            g.peak_rss_mib
        );
    }
}

struct NoQueue;

impl MirrorQueue for NoQueue {
    async fn enqueue(&self, _request: &MirrorRequest) -> Result<(), QueueError> {
        Ok(())
    }
}

/// The webhook handler, signature check to 202, in process; against parsing the body
/// alone as the naive floor.
fn webhook_latency() {
    let fixtures =
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo at run time"))
            .join("fixtures/bitbucket");
    let secret = std::fs::read_to_string(fixtures.join("SECRET")).expect("fixture secret");
    let body = std::fs::read(fixtures.join("dc-repo-refs-changed.json")).expect("fixture");
    let manifest = Manifest::parse(
        "[[repository]]\ncodecommit = \"net\"\nsource = \"https://example.com/net.git\"\nbitbucket = \"NET/networking-terraform\"\n",
        Path::new("bench.toml"),
    )
    .expect("manifest");
    let webhook =
        Webhook::new(&manifest, SecretString::from(secret.trim_end().to_owned()), NoQueue);
    let mut headers = HeaderMap::new();
    headers.insert("X-Event-Key", HeaderValue::from_static("repo:refs_changed"));
    headers.insert("X-Request-Id", HeaderValue::from_static("bench"));
    let signature = pillar_auth::webhook::sign(secret.trim_end().as_bytes(), &body);
    headers.insert("X-Hub-Signature", HeaderValue::from_str(&signature).expect("header"));
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    let iterations = 20_000;
    let mut handler = Vec::with_capacity(iterations);
    let mut floor = Vec::with_capacity(iterations);
    runtime.block_on(async {
        for _ in 0..iterations {
            let started = Instant::now();
            let response = webhook.handle(&headers, &body).await;
            handler.push(started.elapsed());
            assert_eq!(response.status, http::StatusCode::ACCEPTED);
            let started = Instant::now();
            std::hint::black_box(serde_json::from_slice::<serde_json::Value>(&body).expect("json"));
            floor.push(started.elapsed());
        }
    });
    let percentile = |samples: &mut Vec<Duration>, p: f64| {
        samples.sort();
        samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)]
    };
    let (p50, p99) = (percentile(&mut handler, 0.50), percentile(&mut handler, 0.99));
    let (f50, f99) = (percentile(&mut floor, 0.50), percentile(&mut floor, 0.99));
    println!("webhook handler in process ({iterations} deliveries, {} byte body)", body.len());
    println!(
        "  signature to 202: p50 {:>8.1} µs   p99 {:>8.1} µs",
        p50.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6
    );
    println!(
        "  parse body alone: p50 {:>8.1} µs   p99 {:>8.1} µs",
        f50.as_secs_f64() * 1e6,
        f99.as_secs_f64() * 1e6
    );
    println!(
        "  ratio p50 {:.2}, p99 {:.2}",
        p50.as_secs_f64() / f50.as_secs_f64(),
        p99.as_secs_f64() / f99.as_secs_f64()
    );
}
