//! `scripts/bench image`: the Docker mirror against skopeo, in one run on one machine,
//! between the two loopback `docker-registry` stand-ins.
//!
//! - a 1 GiB image of 8 layers: `pillar image mirror` against `skopeo copy` (wall time, RSS);
//! - a single 2 GiB layer: the same, for memory;
//! - re-sync of 200 unchanged tags: `pillar image mirror --all-tags` against
//!   `skopeo sync` of the same repository, both already copied once.
//!
//! Sizes: IMAGE_BENCH_MIB (default 1024) and IMAGE_BENCH_BIG_MIB (default 2048);
//! IMAGE_BENCH_TAGS (default 200).

use std::process::Command;

use integration_tests::measure::{Measure, measure};
use integration_tests::oci_layout::{Spec, write};

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
    let spec = Spec {
        platforms: vec!["linux/amd64".into()],
        layers: vec![mib << 20; layers],
        attestation: false,
        seed,
    };
    let layout = write(dir.path(), tag, &spec).expect("layout");
    let status = skopeo()
        .args(["copy", "--quiet", "--preserve-digests", "--dest-tls-verify=false"])
        .arg(layout.skopeo_name())
        .arg(format!("docker://{}/{repository}:{tag}", var("PILLAR_SOURCE_REGISTRY")))
        .status()
        .expect("skopeo");
    assert!(status.success(), "pushing {repository}:{tag}");
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

fn main() {
    let mib = env_or("IMAGE_BENCH_MIB", 1024);
    let big = env_or("IMAGE_BENCH_BIG_MIB", 2048);
    let tags = env_or("IMAGE_BENCH_TAGS", 200);
    let run = std::process::id().to_string();
    println!("| case | pillar | reference | ratio | peak RSS pillar / reference |");
    println!("|---|---|---|---|---|");

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
}
