//! `scripts/bench image`: the Docker mirror against skopeo, in one run on one machine,
//! between the two loopback `docker-registry` stand-ins.
//!
//! - a 1 GiB image of 8 layers: `pillar image mirror` against `skopeo copy` (wall time, RSS);
//! - a single 2 GiB layer: the same, for memory;
//! - re-sync of 200 unchanged tags: `pillar image mirror --all-tags` against
//!   `skopeo sync` of the same repository, both already copied once;
//! - a fleet of eight images of one 128 MiB layer into ECR (moto), the first in the
//!   manifest served at a tenth of the speed of one image's copy: `pillar image sync` in
//!   runs with a deadline, as the Lambda runs, until all eight are copied (at most two runs
//!   allowed). Its floor is measured in the same run: the slowest of ECR's own ingest of
//!   the eight layers (eight plain uploads at once through the layer API) and the slow
//!   source read alone. skopeo, which copies images one after another, copies the same
//!   eight into the target registry (ECR's API is not a registry skopeo can write to).
//!
//! Sizes: IMAGE_BENCH_MIB (default 1024) and IMAGE_BENCH_BIG_MIB (default 2048);
//! IMAGE_BENCH_TAGS (default 200); IMAGE_BENCH_FLEET_MIB (default 128). IMAGE_BENCH_ONLY=fleet
//! runs the fleet alone.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use integration_tests::git_front_end::{GitFrontEnd, Script};
use integration_tests::measure::{Measure, measure, measure_outcome};
use integration_tests::oci_layout::{Layout, Spec, write};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run scripts/bench image"))
}

/// skopeo with its blob-info cache emptied first: with it, skopeo mounts blobs from the
/// repositories of earlier rounds instead of copying them (root keeps it in /var/lib).
fn skopeo() -> Command {
    let home = std::env::var("HOME").unwrap_or_default();
    for dir in
        ["/var/lib/containers/cache".to_owned(), format!("{home}/.local/share/containers/cache")]
    {
        let _ = std::fs::remove_dir_all(dir);
    }
    let mut command = Command::new("skopeo");
    command.arg("--insecure-policy");
    command
}

/// Pushes a one-platform image of `layers` layers of `mib` MiB to `repository:tag` with skopeo.
fn push(repository: &str, tag: &str, layers: usize, mib: u64, seed: u64) {
    let dir = tempfile::tempdir().expect("temp dir");
    push_layout(&layout(dir.path(), tag, layers, mib, seed), repository);
}

fn layout(dir: &Path, tag: &str, layers: usize, mib: u64, seed: u64) -> Layout {
    let spec = Spec {
        platforms: vec!["linux/amd64".into()],
        layers: vec![mib << 20; layers],
        attestation: false,
        seed,
    };
    write(dir, tag, &spec).expect("layout")
}

fn push_layout(layout: &Layout, repository: &str) {
    let status = skopeo()
        .args(["copy", "--quiet", "--preserve-digests", "--dest-tls-verify=false"])
        .arg(layout.skopeo_name())
        .arg(format!("docker://{}/{repository}:{}", var("PILLAR_SOURCE_REGISTRY"), layout.tag))
        .status()
        .expect("skopeo");
    assert!(status.success(), "pushing {repository}:{}", layout.tag);
}

fn pillar(source: &str, target: &str, extra: &[&str]) -> Command {
    let mut command = Command::new(var("PILLAR_BIN"));
    command.args(["image", "mirror", "--source", source, "--target", target]).args(extra);
    command
}

fn skopeo_copy(source: &str, target: &str) -> Command {
    let mut command = skopeo();
    command
        .args(["copy", "--quiet", "--all", "--preserve-digests"])
        .args(["--src-tls-verify=false", "--dest-tls-verify=false"])
        .arg(format!("docker://{source}"))
        .arg(format!("docker://{target}"));
    command
}

fn row(case: &str, ours: Measure, reference: Measure, name: &str) {
    println!(
        "| {case} | {:.2} s | {:.2} s ({name}) | {:.2} | {:.1} / {:.1} MiB |",
        ours.seconds,
        reference.seconds,
        ours.seconds / reference.seconds,
        ours.peak_rss_mib,
        reference.peak_rss_mib
    );
}

/// Copies `repository:tag` with both tools into fresh target repositories, alternating
/// which goes first; returns the faster of two runs each.
fn copy_both(repository: &str, tag: &str, run: &str) -> (Measure, Measure) {
    let (source, target) = (var("PILLAR_SOURCE_REGISTRY"), var("PILLAR_TARGET_REGISTRY"));
    let from = format!("{source}/{repository}:{tag}");
    let into = |tool: &str, round: u32| format!("{target}/{tool}-{run}-{round}/{repository}:{tag}");
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for round in 0..2 {
        let pillar_run = || measure(pillar(&from, &into("pillar", round), &[])).0;
        let skopeo_run = || measure(skopeo_copy(&from, &into("skopeo", round))).0;
        if round == 0 {
            ours.push(pillar_run());
            theirs.push(skopeo_run());
        } else {
            theirs.push(skopeo_run());
            ours.push(pillar_run());
        }
    }
    (best(&ours), best(&theirs))
}

/// The fastest run, with the highest peak RSS of all runs.
fn best(runs: &[Measure]) -> Measure {
    let seconds = runs.iter().map(|m| m.seconds).fold(f64::MAX, f64::min);
    let peak_rss_mib = runs.iter().map(|m| m.peak_rss_mib).fold(0.0, f64::max);
    let cpu_seconds = runs.iter().map(|m| m.cpu_seconds).fold(f64::INFINITY, f64::min);
    Measure { seconds, cpu_seconds, peak_rss_mib }
}

const MIB: u64 = 1 << 20;

/// The layers of a one-platform layout: digest and file.
fn layer_files(layout: &Layout) -> Vec<(String, std::path::PathBuf)> {
    let blob =
        |digest: &str| layout.dir.join("blobs/sha256").join(digest.trim_start_matches("sha256:"));
    let text = std::fs::read(blob(&layout.digest)).expect("the layout's manifest");
    let manifest: serde_json::Value = serde_json::from_slice(&text).expect("a manifest");
    let layers = manifest["layers"].as_array().expect("an image manifest's layers");
    layers
        .iter()
        .map(|layer| {
            let digest = layer["digest"].as_str().expect("a digest").to_owned();
            let path = blob(&digest);
            (digest, path)
        })
        .collect()
}

/// ECR's own ingest of `layers`: all uploaded at once through the layer API, each in the
/// parts ECR asks for, by a plain loop (no checks, no retries). Seconds.
fn ecr_ingest(layers: &[(String, std::path::PathBuf)], run: &str) -> f64 {
    use tokio::io::AsyncReadExt;
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async {
        let ecr = aws_sdk_ecr::Client::new(&aws_config::load_from_env().await);
        let repository = |n: usize| format!("floor-{run}/{n}");
        for n in 0..layers.len() {
            ecr.create_repository().repository_name(repository(n)).send().await.expect("create");
        }
        let started = Instant::now();
        let uploads = layers.iter().enumerate().map(|(n, (digest, path))| {
            let (ecr, repository) = (ecr.clone(), repository(n));
            async move {
                let upload = ecr.initiate_layer_upload().repository_name(&repository).send();
                let upload = upload.await.expect("InitiateLayerUpload");
                let id = upload.upload_id().expect("an upload id").to_owned();
                let part = usize::try_from(upload.part_size().unwrap_or(10 << 20)).expect("size");
                let mut file = tokio::fs::File::open(path).await.expect("the layer");
                let mut sent = 0i64;
                loop {
                    let mut buffer = Vec::with_capacity(part);
                    (&mut file).take(part as u64).read_to_end(&mut buffer).await.expect("read");
                    if buffer.is_empty() {
                        break;
                    }
                    let last = sent + buffer.len() as i64 - 1;
                    ecr.upload_layer_part()
                        .repository_name(&repository)
                        .upload_id(&id)
                        .part_first_byte(sent)
                        .part_last_byte(last)
                        .layer_part_blob(aws_sdk_ecr::primitives::Blob::new(buffer))
                        .send()
                        .await
                        .expect("UploadLayerPart");
                    sent = last + 1;
                }
                ecr.complete_layer_upload()
                    .repository_name(&repository)
                    .upload_id(&id)
                    .layer_digests(digest)
                    .send()
                    .await
                    .expect("CompleteLayerUpload");
            }
        });
        futures_util::future::join_all(uploads).await;
        started.elapsed().as_secs_f64()
    })
}

/// Reads `url` whole, discarding it. Seconds.
fn read_whole(url: &str) -> f64 {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async {
        let started = Instant::now();
        let mut response = reqwest::get(url).await.expect("GET").error_for_status().expect("200");
        while response.chunk().await.expect("a chunk").is_some() {}
        started.elapsed().as_secs_f64()
    })
}

/// `pillar image sync` of `manifest` into ECR, in runs of `run_seconds`, until nothing is
/// left; at most `runs`. Each run's measure and summary line.
fn sync_in_runs(manifest: &Path, run_seconds: u64, runs: usize) -> Vec<(Measure, String)> {
    let mut done = Vec::new();
    for _ in 0..runs {
        let mut command = Command::new(var("PILLAR_BIN"));
        command.args(["image", "sync", "--config"]).arg(manifest).args([
            "--deadline",
            &format!("{run_seconds}s"),
            "--deadline-margin",
            "1s",
        ]);
        let (measure, stdout, stderr, status) = measure_outcome(command, None);
        let summary = stdout.lines().last().unwrap_or_default().to_owned();
        assert!(summary.contains(" 0 failed"), "a run failed images: {stdout}{stderr}");
        done.push((measure, summary));
        if status.success() {
            return done;
        }
    }
    panic!("not all copied within {runs} runs: {done:?}");
}

/// Eight images of one layer, the first served at a tenth of the speed of one image's copy.
fn fleet(run: &str) {
    let mib = env_or("IMAGE_BENCH_FLEET_MIB", 128);
    let (source, target) = (var("PILLAR_SOURCE_REGISTRY"), var("PILLAR_TARGET_REGISTRY"));
    let dirs: Vec<_> = (0..8).map(|_| tempfile::tempdir().expect("temp dir")).collect();
    let layouts: Vec<Layout> = dirs
        .iter()
        .enumerate()
        .map(|(n, dir)| {
            let layout = layout(dir.path(), "1", 1, mib, 100 + n as u64);
            push_layout(&layout, &format!("bench/fleet-{n}"));
            layout
        })
        .collect();
    let manifest_of = |images: &[(String, String)]| {
        let text: String = images
            .iter()
            .map(|(from, into)| {
                format!("[[image]]\nsource = \"{from}\"\necr_repository = \"{into}\"\ntags = [\"1\"]\n\n")
            })
            .collect();
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), text).expect("manifest");
        file
    };
    // One image's copy alone sets "the speed"; the slow source gives a tenth of it.
    let alone = manifest_of(&[(format!("{source}/bench/fleet-1"), format!("alone-{run}/1"))]);
    let one = sync_in_runs(alone.path(), 3600, 1)[0].0.seconds;
    let slow_rate = (mib * MIB) as f64 / one / 10.0;
    let per_tick = (slow_rate / 10.0) as usize; // ten ticks a second
    let slow = GitFrontEnd::start(
        &format!("http://{source}"),
        Script { download_bytes_per_tick: Some(per_tick), ..Script::default() },
    );
    let names: Vec<(String, String)> = (0..8)
        .map(|n| {
            let from = if n == 0 { slow.address.to_string() } else { source.clone() };
            (format!("{from}/bench/fleet-{n}"), format!("fleet-{run}/{n}"))
        })
        .collect();
    let fleet = manifest_of(&names);
    // A run shorter than the slow image needs: it must resume in the second.
    let slow_seconds = one * 10.0;
    let run_seconds = (slow_seconds * 0.75).ceil() as u64;
    let runs = sync_in_runs(fleet.path(), run_seconds, 2);
    let ours = runs.iter().fold(Measure::default(), |all, (m, _)| all.then(*m));

    let layers: Vec<_> = layouts.iter().flat_map(layer_files).collect();
    let ingest = ecr_ingest(&layers, run);
    let slow_read =
        read_whole(&format!("http://{}/v2/bench/fleet-0/blobs/{}", slow.address, layers[0].0));
    let floor = ingest.max(slow_read);

    let started = Instant::now();
    for (from, into) in &names {
        let status = skopeo_copy(&format!("{from}:1"), &format!("{target}/skopeo-{run}/{into}:1"))
            .status()
            .expect("skopeo");
        assert!(status.success(), "skopeo copy {from}");
    }
    let skopeo_seconds = started.elapsed().as_secs_f64();
    println!(
        "| 8 × {mib} MiB into ECR, the first at {:.1} MiB/s (a tenth of one copy's {:.1}); \
         {} runs of {run_seconds} s: {} | {:.2} s | floor {:.2} s (ECR ingest {ingest:.2} s, \
         slow read {slow_read:.2} s); skopeo one by one {skopeo_seconds:.2} s (registry) | \
         {:.2} of floor, {:.2} of skopeo | {:.1} MiB |",
        slow_rate / MIB as f64,
        (mib * MIB) as f64 / one / MIB as f64,
        runs.len(),
        runs.iter().map(|(_, s)| s.as_str()).collect::<Vec<_>>().join("; "),
        ours.seconds,
        floor,
        ours.seconds / floor,
        ours.seconds / skopeo_seconds,
        ours.peak_rss_mib,
    );
}

fn main() {
    let mib = env_or("IMAGE_BENCH_MIB", 1024);
    let big = env_or("IMAGE_BENCH_BIG_MIB", 2048);
    let tags = env_or("IMAGE_BENCH_TAGS", 200);
    let run = std::process::id().to_string();
    println!("| case | pillar | reference | ratio | peak RSS pillar / reference |");
    println!("|---|---|---|---|---|");
    if std::env::var("IMAGE_BENCH_ONLY").as_deref() == Ok("fleet") {
        return fleet(&run);
    }

    push("bench/eight", "1", 8, mib / 8, 11);
    let (ours, theirs) = copy_both("bench/eight", "1", &run);
    row(&format!("{mib} MiB, 8 layers (best of 2)"), ours, theirs, "skopeo copy");

    push("bench/single", "1", 1, big, 12);
    let (ours, theirs) = copy_both("bench/single", "1", &run);
    row(&format!("{big} MiB, one layer (best of 2)"), ours, theirs, "skopeo copy");

    let (source, target) = (var("PILLAR_SOURCE_REGISTRY"), var("PILLAR_TARGET_REGISTRY"));
    push("bench/tags", "0", 2, 1, 13);
    for tag in 1..tags {
        let status =
            skopeo_copy(&format!("{source}/bench/tags:0"), &format!("{source}/bench/tags:{tag}"))
                .status()
                .expect("skopeo");
        assert!(status.success());
    }
    let ours_target = format!("{target}/pillar-{run}/bench/tags");
    let first = measure(pillar(&format!("{source}/bench/tags"), &ours_target, &["--all-tags"])).0;
    let resync = measure(pillar(&format!("{source}/bench/tags"), &ours_target, &["--all-tags"]));
    let summary = resync.1.lines().last().unwrap_or_default();
    assert!(summary.starts_with("0 copied"), "the re-sync copied: {summary}");
    let sync = || {
        let mut command = skopeo();
        command
            .args(["sync", "--all", "--preserve-digests", "--src", "docker"])
            .args(["--dest", "docker", "--src-tls-verify=false", "--dest-tls-verify=false"])
            .arg(format!("{source}/bench/tags"))
            .arg(format!("{target}/skopeo-{run}"));
        command
    };
    measure(sync());
    let theirs = measure(sync()).0;
    let case = format!("re-sync {tags} unchanged tags (first copy {:.2} s)", first.seconds);
    row(&case, resync.0, theirs, "skopeo sync");

    fleet(&run);
}
