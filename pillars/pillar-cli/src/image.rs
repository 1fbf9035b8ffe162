//! `pillar image`: the Docker mirror, runnable from a shell.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Subcommand;
use docker_mirror::copy::CopyProgress;
use docker_mirror::ecr::RepositorySettings;
use docker_mirror::refs::{ImageRef, TargetRef, named};
use docker_mirror::registry::Registry;
use docker_mirror::service::{ImageReport, Job, Mirror, SyncReport};
use docker_mirror::target::{Destination, Target};
use oci_client::secrets::RegistryAuth;
use pillar_auth::secrets::DEFAULT_TTL;
use pillar_config::Manifest;
use regex::Regex;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Copy an image (every platform, digest-exact) from SOURCE to TARGET.
    ///
    /// REF is host[:port]/repository[:tag|@digest]; a TARGET written ecr:<repository>[:tag]
    /// goes through the ECR API (region and account from the AWS configuration,
    /// AWS_ENDPOINT_URL honoured). Registries on 127.0.0.1 or localhost speak plain HTTP.
    /// Credentials: PILLAR_SOURCE_USERNAME / PILLAR_SOURCE_PASSWORD and
    /// PILLAR_TARGET_USERNAME / PILLAR_TARGET_PASSWORD when a registry needs them.
    Mirror {
        #[command(flatten)]
        ends: Ends,
        /// Every tag of the source repository.
        #[arg(long, conflicts_with = "tags")]
        all_tags: bool,
        /// The source repository's tags matching this regular expression.
        #[arg(long, value_name = "REGEX")]
        tags: Option<Regex>,
        /// Images copied at the same time.
        #[arg(long, default_value_t = 2)]
        images: usize,
        /// Blobs of one image copied at the same time.
        #[arg(long, default_value_t = 4)]
        blobs: usize,
        /// Print one JSON report instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Every image of a manifest into ECR; exit 1 if any failed.
    Sync {
        /// The deployment manifest.
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        json: bool,
        /// Stop as the Lambda does before its timeout (e.g. 14m): what is cut short is
        /// reported left, and a large layer resumes in the next run.
        #[arg(long, value_parser = crate::logs::parse_age)]
        deadline: Option<std::time::Duration>,
        /// No new work starts this close to the deadline (the Lambda's is 20s).
        #[arg(long, default_value = "20s", value_parser = crate::logs::parse_age)]
        deadline_margin: std::time::Duration,
    },
    /// Exit 0 when TARGET holds the manifest SOURCE's tag or digest points at, 1 otherwise.
    Verify {
        #[command(flatten)]
        ends: Ends,
    },
}

#[derive(Debug, clap::Args)]
pub struct Ends {
    #[arg(long, value_name = "REF")]
    source: String,
    #[arg(long, value_name = "REF")]
    target: String,
    /// Allow plain HTTP to registries that are not on loopback.
    #[arg(long)]
    insecure: bool,
}

pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    crate::runtime()?.block_on(async {
        match command {
            Command::Mirror { ends, all_tags, tags, images, blobs, json } => {
                let (mut mirror, source, registry, to, target_tag) = open(&ends).await?;
                mirror.image_concurrency = images;
                mirror.copier.blob_concurrency = blobs.max(1);
                mirror.copier.progress = shown_progress(json);
                let jobs =
                    jobs(&source, &registry, &mirror, all_tags, tags.as_ref(), target_tag).await?;
                let started = std::time::Instant::now();
                let images = mirror.mirror(&registry, jobs, &to, None).await;
                drop(mirror); // clears the progress bars before the report
                let report = SyncReport { images, seconds: started.elapsed().as_secs_f64() };
                print(&report, json)
            }
            Command::Sync { config, json, deadline, deadline_margin } => {
                let manifest = Manifest::load(&config)?;
                let aws = aws_config::load_from_env().await;
                let mut mirror = Mirror::from_aws(&aws, DEFAULT_TTL);
                mirror.copier.progress = shown_progress(json);
                mirror.deadline_margin = deadline_margin;
                let deadline = deadline.map(|d| std::time::Instant::now() + d);
                let images: Vec<_> = manifest.images.iter().collect();
                let report = mirror.sync(&images, deadline).await;
                drop(mirror); // clears the progress bars before the report
                print(&report, json)
            }
            Command::Verify { ends } => {
                let (mirror, source, registry, to, target_tag) = open(&ends).await?;
                let selector = source.selector().context("--source must name a tag or digest")?;
                let image = source.at(selector);
                let wanted = mirror
                    .copier
                    .retry
                    .run(|| registry.manifest_digest(&image))
                    .await?
                    .with_context(|| format!("{source} does not exist"))?;
                let name = target_tag.unwrap_or_else(|| selector.to_owned());
                let held = mirror.copier.retry.run(|| to.manifest_digest(&name)).await?;
                let target = named(&to, &name);
                if held.as_deref() == Some(wanted.as_str()) {
                    println!("match       {source} = {target} ({wanted})");
                    Ok(ExitCode::SUCCESS)
                } else {
                    let held = held.as_deref().unwrap_or("nothing");
                    println!("DIFFERS     {source} is {wanted}; {target} holds {held}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    })
}

/// Bytes per image on a terminal, unless the output is JSON.
fn shown_progress(json: bool) -> Option<Arc<dyn CopyProgress>> {
    crate::progress::wanted(json)
        .then(|| Arc::new(crate::progress::ImageBars::default()) as Arc<dyn CopyProgress>)
}

fn credentials(prefix: &str) -> RegistryAuth {
    let var = |name: &str| std::env::var(format!("PILLAR_{prefix}_{name}")).ok();
    match (var("USERNAME"), var("PASSWORD")) {
        (Some(username), Some(password)) => RegistryAuth::Basic(username, password),
        _ => RegistryAuth::Anonymous,
    }
}

/// The mirror, the source, its registry, the destination and the tag given for it.
async fn open(
    ends: &Ends,
) -> anyhow::Result<(Mirror, ImageRef, Arc<Registry>, Destination, Option<String>)> {
    let source = ImageRef::parse(&ends.source)?;
    let target = TargetRef::parse(&ends.target)?;
    let mut mirror = match &target {
        TargetRef::Ecr { .. } => Mirror::from_aws(&aws_config::load_from_env().await, DEFAULT_TTL),
        TargetRef::Registry(_) => Mirror::new(None, None),
    };
    mirror.insecure = ends.insecure;
    let registry = mirror.registry(source.host(), credentials("SOURCE"));
    let settings = RepositorySettings { scan_on_push: true, ..RepositorySettings::default() };
    let (to, tag) = match target {
        TargetRef::Ecr { repository, tag } => (mirror.ecr(&repository, settings)?, tag),
        TargetRef::Registry(image) => {
            anyhow::ensure!(image.digest.is_none(), "--target names a tag, not a digest");
            let registry = mirror.registry(image.host(), credentials("TARGET"));
            let repository = image.repository.repository().to_owned();
            (Destination { target: Target::Registry(registry), repository, settings }, image.tag)
        }
    };
    Ok((mirror, source, registry, to, tag))
}

/// The tags (or the digest) to copy and the tag each gets in the target.
async fn jobs(
    source: &ImageRef,
    registry: &Registry,
    mirror: &Mirror,
    all_tags: bool,
    pattern: Option<&Regex>,
    target_tag: Option<String>,
) -> anyhow::Result<Vec<Job>> {
    if !all_tags && pattern.is_none() {
        let selector = source
            .selector()
            .context(
                "--source names no tag or digest: add :tag or @digest, or use --all-tags / --tags",
            )?
            .to_owned();
        let target_tag = target_tag.or_else(|| source.tag.clone());
        return Ok(vec![Job { source: source.clone(), selector, target_tag }]);
    }
    anyhow::ensure!(
        target_tag.is_none() && source.selector().is_none(),
        "with --all-tags or --tags, give repositories without a tag or digest"
    );
    let tags = mirror.copier.retry.run(|| registry.tags(&source.repository)).await?;
    let tags: Vec<_> =
        tags.into_iter().filter(|tag| pattern.is_none_or(|p| p.is_match(tag))).collect();
    anyhow::ensure!(!tags.is_empty(), "{source} has no tags to copy");
    Ok(tags.into_iter().map(|tag| Job::tag(source, tag)).collect())
}

fn print(report: &SyncReport, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        report.images.iter().for_each(|image: &ImageReport| println!("{image}"));
        println!(
            "{} copied ({} blob bytes), {} failed, {} left, in {:.1} s",
            report.copied(),
            report.bytes(),
            report.failed(),
            report.left(),
            report.seconds
        );
    }
    Ok(if report.failed() > 0 || report.left() > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
