//! `scripts/bench scp`: the Source Control Pillar against the git CLI, in one run on one
//! machine, the source and the targets each over local smart HTTP (`git http-backend`).
//!
//! For each repository, alternately git and `pillar scp mirror`:
//!
//! - cold mirror: `git clone --bare` + `git push` of heads and tags, against an empty cache
//!   and an empty target;
//! - one new commit on `main` (a 64-byte file), warm cache: `git fetch --prune` +
//!   `git push --prune`;
//! - a new branch off the oldest tag (one commit on it) and the newest tag deleted;
//! - nothing changed: the same again;
//! - empty cache, target in sync, one new commit (a 16 KiB file): git `clone --mirror` from
//!   the target + `fetch` from the source + `push`, against the pillar with a new work
//!   directory (a fresh Lambda environment); with the bytes each read from the source.
//!
//! Repositories: a linear history of 10,000 commits, one with merges, renames and 4,000
//! files in deep directories (SCP_BENCH_MERGE_COMMITS, default 40000), and a linear one of
//! SCP_BENCH_COMMITS (default 200000), each with SCP_BENCH_REFS refs (default 1000).
//! SCP_BENCH_REPO=/path/to/repo.git benchmarks that repository instead (copied first; it
//! needs a tag for the branch case). SCP_BENCH_LOG=info shows the mirror's own logs.
//! Then the webhook handler in process, signature to 202, against parsing the body alone.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue};
use integration_tests::git_source::{self, Options};
use integration_tests::history::{self, git, run};
use integration_tests::measure::{Measure, cores, machine_busy_seconds, measure, measure_reading};
use pillar_config::Manifest;
use secrecy::SecretString;
use serde_json::Value;
use source_control::queue::{MirrorQueue, MirrorRequest, QueueError};
use source_control::webhook::Webhook;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A repository to benchmark, and how to make it.
enum Shape {
    Linear { commits: usize, refs: usize },
    Merges { commits: usize, refs: usize },
    Existing(PathBuf),
}

impl Shape {
    fn describe(&self) -> String {
        match self {
            Self::Linear { commits, refs } => format!("linear, {commits} commits, {refs} refs"),
            Self::Merges { commits, refs } => {
                format!("merges and renames, 4000 files, ~{commits} commits, {refs} refs")
            }
            Self::Existing(path) => format!("{}", path.display()),
        }
    }

    fn create(&self, at: &Path) {
        match self {
            Self::Linear { commits, refs } => history::linear(at, *commits, *refs),
            Self::Merges { commits, refs } => history::with_merges(at, *commits, *refs),
            Self::Existing(path) => run({
                let mut c = git(at.parent().expect("parent"));
                c.args(["clone", "-q", "--mirror"]).arg(path).arg(at);
                c
            }),
        }
    }
}

fn main() {
    let pillar = PathBuf::from(
        std::env::var("PILLAR_BIN")
            .expect("PILLAR_BIN: the release pillar binary (scripts/bench sets it)"),
    );
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let refs = env_or("SCP_BENCH_REFS", 1_000);
    let shapes = match std::env::var_os("SCP_BENCH_REPO") {
        Some(path) => vec![Shape::Existing(PathBuf::from(path))],
        None => vec![
            Shape::Linear { commits: 10_000, refs },
            Shape::Merges { commits: env_or("SCP_BENCH_MERGE_COMMITS", 40_000), refs },
            Shape::Linear { commits: env_or("SCP_BENCH_COMMITS", 200_000), refs },
        ],
    };
    let mut goals = Goals::default();
    for shape in &shapes {
        mirror_benchmark(&runtime, &pillar, shape, &mut goals);
    }
    goals.print();
    webhook_latency();
}

/// One case's figures for both tools.
struct Row {
    case: &'static str,
    pillar: Measure,
    git: Measure,
    /// Seconds listing and fetching, then pushing.
    pillar_split: (f64, f64),
    git_split: (f64, f64),
    /// Bytes the source server sent (advertisements and packs).
    pillar_served: u64,
    git_served: u64,
    /// CPU seconds the whole machine spent during the pillar's run (servers included).
    pillar_machine_cpu: f64,
    report: Value,
}

/// The goals, checked as the cases run: what must hold, and what is aimed at.
#[derive(Default)]
struct Goals(Vec<(&'static str, String, bool)>);

impl Goals {
    fn must(&mut self, what: String, met: bool) {
        self.0.push(("must", what, met));
    }

    fn aim(&mut self, what: String, met: bool) {
        self.0.push(("aim", what, met));
    }

    fn print(&self) {
        println!("\ngoals");
        for (kind, what, met) in &self.0 {
            println!("  {kind:<4} [{}] {what}", if *met { "met" } else { "NOT MET" });
        }
    }
}

/// `git`, timed, in `dir`.
fn timed_git(dir: &Path, args: &[&str]) -> Measure {
    let mut c = git(dir);
    c.args(args);
    measure(c).0
}

const HEADS_AND_TAGS: [&str; 2] = ["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"];

fn mirror_benchmark(
    runtime: &tokio::runtime::Runtime,
    pillar: &Path,
    shape: &Shape,
    goals: &mut Goals,
) {
    let root = tempfile::tempdir().expect("temp dir");
    let (sources, targets) = (root.path().join("sources"), root.path().join("targets"));
    for dir in [&sources, &targets] {
        std::fs::create_dir_all(dir).expect("dir");
    }
    let served = sources.join("source.git");
    let started = Instant::now();
    shape.create(&served);
    let objects = {
        let output = git(&served).args(["count-objects", "-v"]).output().expect("count-objects");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix("in-pack: ").or_else(|| l.strip_prefix("count: ")))
            .filter_map(|n| n.parse::<u64>().ok())
            .sum::<u64>()
    };
    eprintln!(
        "[{}] {objects} objects ready in {:.1} s",
        shape.describe(),
        started.elapsed().as_secs_f64()
    );
    for target in ["git-target.git", "pillar-target.git"] {
        run({
            let mut c = git(&targets);
            c.args(["init", "-q", "--bare", target]);
            c
        });
    }
    let served_bytes = Arc::new(AtomicU64::new(0));
    let serve = |root: &Path, options: Options| {
        let listener =
            runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        runtime.spawn(git_source::serve(listener, root.to_owned(), options));
        base
    };
    let source = format!(
        "{}/source.git",
        serve(&sources, Options { bytes_served: Arc::clone(&served_bytes), ..Options::default() })
    );
    let targets_base = serve(&targets, Options { push: true, ..Options::default() });
    let (git_target, pillar_target) =
        (format!("{targets_base}/git-target.git"), format!("{targets_base}/pillar-target.git"));
    let git_cache = root.path().join("git-cache.git");
    let served_during = |run: &mut dyn FnMut() -> (Measure, (f64, f64), Value)| {
        let before = served_bytes.load(Ordering::Relaxed);
        let (measure, split, report) = run();
        (measure, split, report, served_bytes.load(Ordering::Relaxed) - before)
    };
    let git_pass = |fetch: Measure| {
        let push = timed_git(
            &git_cache,
            &[&["push", "-q", "--prune", &git_target][..], &HEADS_AND_TAGS].concat(),
        );
        (fetch.then(push), (fetch.seconds, push.seconds), Value::Null)
    };
    let mut git_fetch = || {
        git_pass(timed_git(
            &git_cache,
            &[&["fetch", "-q", "--prune", &source][..], &HEADS_AND_TAGS].concat(),
        ))
    };
    let pillar_pass = |work: &Path| {
        let mut c = std::process::Command::new(pillar);
        c.env("RUST_LOG", std::env::var("SCP_BENCH_LOG").unwrap_or_else(|_| "warn".into()))
            .args(["scp", "mirror", "--json", "--source", &source, "--target", &pillar_target])
            .arg("--work-dir")
            .arg(work);
        let (measure, stdout) = measure(c);
        let report: Value = serde_json::from_str(&stdout).expect("the mirror's JSON report");
        let ms = |key: &str| report[key].as_f64().unwrap_or_default() / 1000.0;
        (measure, (ms("fetch_ms"), ms("push_ms")), report)
    };
    let work = root.path().join("pillar-work");
    let mut rows = Vec::new();
    let mut case =
        |case: &'static str,
         git_run: &mut dyn FnMut() -> (Measure, (f64, f64), Value),
         pillar_run: &mut dyn FnMut() -> (Measure, (f64, f64), Value)| {
            let (git, git_split, _, git_served) = served_during(git_run);
            let busy = machine_busy_seconds();
            let (pillar, pillar_split, report, pillar_served) = served_during(pillar_run);
            let pillar_machine_cpu = machine_busy_seconds() - busy;
            rows.push(Row {
                case,
                pillar,
                git,
                pillar_split,
                git_split,
                pillar_served,
                git_served,
                pillar_machine_cpu,
                report,
            });
        };

    case(
        "cold mirror",
        &mut || {
            let clone = timed_git(
                root.path(),
                &["clone", "-q", "--bare", &source, git_cache.to_str().expect("utf-8")],
            );
            git_pass(clone)
        },
        &mut || pillar_pass(&work),
    );
    // The floor of a cold mirror: the larger of git's clone alone (the cold row's fetch part)
    // and the target's own receive-pack of that pack and those refs (index-pack, connectivity
    // check, ref updates), fed from a file so that no network counts. One pass costs about
    // the larger of them.
    let receive_floor = {
        let pack = std::fs::read_dir(git_cache.join("objects/pack"))
            .expect("git's pack")
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "pack"))
            .expect("a pack in git's clone");
        let floor = root.path().join("floor.git");
        run({
            let mut c = git(root.path());
            c.args(["init", "-q", "--bare"]).arg(&floor);
            c
        });
        let body = root.path().join("receive-pack.request");
        write_push_request(&git_cache, &pack, &body);
        let mut c = git(&floor);
        c.args(["receive-pack", "--stateless-rpc", "."]);
        measure_reading(c, Some(&body)).0
    };
    let main = {
        let output = git(&served).args(["symbolic-ref", "--short", "HEAD"]).output().expect("HEAD");
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    };
    history::add_commit(&served, &main, &format!("refs/heads/{main}^0"), 1, 64);
    case("one new commit", &mut git_fetch, &mut || pillar_pass(&work));
    let tags = {
        let output = git(&served)
            .args(["for-each-ref", "--sort=creatordate", "--format=%(refname)", "refs/tags"])
            .output()
            .expect("for-each-ref");
        String::from_utf8_lossy(&output.stdout).lines().map(str::to_owned).collect::<Vec<_>>()
    };
    if let [oldest, .., newest] = tags.as_slice() {
        history::add_commit(&served, "hotfix-bench", &format!("{oldest}^{{commit}}"), 2, 64);
        run({
            let mut c = git(&served);
            c.args(["update-ref", "-d", newest]);
            c
        });
        case("branch off old tag", &mut git_fetch, &mut || pillar_pass(&work));
    }
    case("nothing changed", &mut git_fetch, &mut || pillar_pass(&work));
    let before = format!("refs/heads/{main}");
    let old = rev_parse(&served, &before);
    history::add_commit(&served, &main, &format!("{before}^0"), 3, 16 * 1024);
    let new_objects = pack_size(&served, &rev_parse(&served, &before), &old);
    let seed = root.path().join("git-seed.git");
    case(
        "empty cache, in sync",
        &mut || {
            let _ = std::fs::remove_dir_all(&seed);
            let clone = timed_git(
                root.path(),
                &["clone", "-q", "--mirror", &git_target, seed.to_str().expect("utf-8")],
            );
            let fetch = timed_git(
                &seed,
                &[&["fetch", "-q", "--prune", &source][..], &HEADS_AND_TAGS].concat(),
            );
            let push = timed_git(
                &seed,
                &[&["push", "-q", "--prune", &git_target][..], &HEADS_AND_TAGS].concat(),
            );
            (
                clone.then(fetch).then(push),
                (clone.seconds + fetch.seconds, push.seconds),
                Value::Null,
            )
        },
        &mut || pillar_pass(&root.path().join("fresh-work")),
    );

    let listed = |url: &str| {
        let output = git(root.path())
            .args(["ls-remote", "--heads", "--tags", url])
            .output()
            .expect("ls-remote");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    assert_eq!(listed(&pillar_target), listed(&source), "pillar's target differs from the source");
    assert_eq!(listed(&git_target), listed(&source), "git's target differs from the source");

    println!("\nscp mirror, {} ({objects} objects; loopback smart HTTP)", shape.describe());
    println!(
        "{:<21} {:>8} {:>8} {:>6} {:>15} {:>15} {:>8} {:>8} {:>12} {:>12} pack",
        "case",
        "pillar s",
        "git s",
        "ratio",
        "pil. fetch+push",
        "git fetch+push",
        "pil. MiB",
        "git MiB",
        "pil. src KiB",
        "git src KiB",
    );
    for row in &rows {
        let pack = if row.report["streamed"] == true {
            "streamed"
        } else if row.report["forwarded"] == true {
            "forwarded"
        } else if row.report["bytes_to_target"].as_u64().unwrap_or_default() > 0 {
            "built"
        } else {
            "none"
        };
        println!(
            "{:<21} {:>8.2} {:>8.2} {:>6.2} {:>7.2}+{:<7.2} {:>7.2}+{:<7.2} {:>8.1} {:>8.1} {:>12.1} {:>12.1} {pack}",
            row.case,
            row.pillar.seconds,
            row.git.seconds,
            row.pillar.seconds / row.git.seconds.max(0.001),
            row.pillar_split.0,
            row.pillar_split.1,
            row.git_split.0,
            row.git_split.1,
            row.pillar.peak_rss_mib,
            row.git.peak_rss_mib,
            row.pillar_served as f64 / 1024.0,
            row.git_served as f64 / 1024.0,
        );
    }
    let row = |case: &str| rows.iter().find(|r| r.case == case);
    let label = shape.describe();
    let ratio = |r: &Row| r.pillar.seconds / r.git.seconds.max(0.001);
    if let Some(r) = row("cold mirror") {
        let floor = r.git_split.0.max(receive_floor.seconds);
        println!(
            "cold mirror floor: git clone alone {:.2} s, the target's receive-pack of that pack and its refs {:.2} s ({:.2} s CPU); pillar {:.2} s = {:.2}× the larger (streamed: {}), the machine busy {:.2} CPU-s of {} cores meanwhile ({:.0}%), the pillar itself {:.2} CPU-s",
            r.git_split.0,
            receive_floor.seconds,
            receive_floor.cpu_seconds,
            r.pillar.seconds,
            r.pillar.seconds / floor.max(0.001),
            r.report["streamed"],
            r.pillar_machine_cpu,
            cores(),
            100.0 * r.pillar_machine_cpu / (r.pillar.seconds * cores() as f64).max(0.001),
            r.pillar.cpu_seconds,
        );
        goals.aim(
            format!(
                "{label}: cold mirror {:.2}× its floor (≤ 1.3×)",
                r.pillar.seconds / floor.max(0.001)
            ),
            r.pillar.seconds <= 1.3 * floor,
        );
        let rss = r.pillar.peak_rss_mib / r.git.peak_rss_mib.max(0.1);
        let what = format!("{label}: cold mirror {:.2}× git, peak RSS {rss:.2}× git's", ratio(r));
        goals.must(format!("{what} (≤ 2.0×, ≤ 1.3×)"), ratio(r) <= 2.0 && rss <= 1.3);
        goals.aim(format!("{what} (≤ 1.0×, < 1.0×)"), ratio(r) <= 1.0 && rss < 1.0);
    }
    if let Some(r) = row("one new commit") {
        let what =
            format!("{label}: one new commit {:.2} s, {:.2}× git", r.pillar.seconds, ratio(r));
        goals.must(format!("{what} (< 1 s, ≤ 2×)"), r.pillar.seconds < 1.0 && ratio(r) <= 2.0);
        goals.aim(format!("{what} (≤ 1.0×)"), ratio(r) <= 1.0);
    }
    if let Some(r) = row("branch off old tag") {
        let what = format!("{label}: branch off an old tag {:.2}× git", ratio(r));
        goals.must(format!("{what} (≤ 2×)"), ratio(r) <= 2.0);
        goals.aim(format!("{what} (≤ 1.0×)"), ratio(r) <= 1.0);
    }
    if let Some(r) = row("nothing changed") {
        let quiet = r.report["fetched"] == false && r.report["bytes_to_target"] == 0;
        goals.must(
            format!("{label}: nothing changed {:.3} s, no pack (< 0.3 s)", r.pillar.seconds),
            r.pillar.seconds < 0.3 && quiet,
        );
    }
    if let Some(r) = row("empty cache, in sync") {
        // libgit2 counts the whole upload-pack response: the pack, pkt-line framing,
        // acknowledgements and the progress text it cannot turn off.
        let read = r.report["bytes_from_source"].as_u64().unwrap_or(u64::MAX);
        goals.must(
            format!(
                "{label}: empty cache, in sync: {read} B of pack exchange from the source, \
                 new objects {new_objects} B (≤ 2×); all HTTP from the source: pillar {} B, git {} B",
                r.pillar_served, r.git_served
            ),
            read <= 2 * new_objects,
        );
        goals.aim(
            format!(
                "{label}: empty cache, in sync: {:.2} s, git {:.2} s (≤ git's)",
                r.pillar.seconds, r.git.seconds
            ),
            r.pillar.seconds <= r.git.seconds,
        );
    }
}

fn rev_parse(repository: &Path, name: &str) -> String {
    let output = git(repository).args(["rev-parse", name]).output().expect("rev-parse");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Bytes of the thin pack git would send for `new` to a side that has `old`.
fn pack_size(repository: &Path, new: &str, old: &str) -> u64 {
    use std::io::Write;
    let mut child = git(repository)
        .args(["pack-objects", "--revs", "--thin", "--stdout", "-q"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("git pack-objects");
    write!(child.stdin.take().expect("stdin"), "{new}\n^{old}\n").expect("write");
    let output = child.wait_with_output().expect("git pack-objects");
    assert!(output.status.success(), "git pack-objects failed");
    output.stdout.len() as u64
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
            std::hint::black_box(serde_json::from_slice::<Value>(&body).expect("json"));
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

/// A smart-HTTP receive-pack request creating every head and tag of `repo` from `pack`, as
/// `git push` sends it to an empty target.
fn write_push_request(repo: &Path, pack: &Path, to: &Path) {
    use std::io::Write;
    let output = git(repo)
        .args(["for-each-ref", "--format=%(objectname) %(refname)", "refs/heads", "refs/tags"])
        .output()
        .expect("for-each-ref");
    let zero = "0".repeat(40);
    let mut out = std::io::BufWriter::new(std::fs::File::create(to).expect("request file"));
    for (i, line) in String::from_utf8_lossy(&output.stdout).lines().enumerate() {
        let (oid, name) = line.split_once(' ').expect("oid and name");
        let capabilities = if i == 0 { "\0report-status" } else { "" };
        let payload = format!("{zero} {oid} {name}{capabilities}\n");
        write!(out, "{:04x}{payload}", payload.len() + 4).expect("write");
    }
    out.write_all(b"0000").expect("write");
    std::io::copy(&mut std::fs::File::open(pack).expect("pack"), &mut out).expect("copy pack");
    out.flush().expect("flush");
}
