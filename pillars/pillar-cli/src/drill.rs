//! `pillar drill`: every pillar's canary from a shell, with the caller's AWS credentials and
//! the library code the canary Lambdas run, in one table. A source that does not answer is
//! not a failure: the mirror alone decides, and the line says the source is unreachable.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use docker_mirror::service::Mirror;
use pillar_config::Manifest;
use serde::Serialize;
use source_control::service::Mirrorer;
use source_control::workdir::WorkDir;

use crate::logs::{Resolved, now_ms, parse_age};

/// Secrets read once per drill.
const SECRET_TTL: Duration = Duration::from_secs(300);

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The deployment manifest: its repositories, images and stream are checked.
    #[arg(long)]
    config: PathBuf,
    /// Print the checks as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// How long the Logging check waits for its heartbeat in CloudWatch Logs (a sink must
    /// be running: the log-sink Lambda, or `pillar logs drain`).
    #[arg(long, default_value = "30s", value_parser = parse_age)]
    heartbeat_wait: Duration,
}

/// One line of the table.
#[derive(Debug, Serialize)]
struct Line {
    pillar: &'static str,
    checked: String,
    ready: bool,
    result: String,
    latency_ms: u64,
    /// Age of the newest mirrored data, when it is known.
    newest_age_seconds: Option<u64>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut manifest = Manifest::load(&args.config)?;
    let images = std::mem::take(&mut manifest.images);
    let logging = manifest.logging.take();
    crate::runtime()?.block_on(async {
        let aws = aws_config::load_from_env().await;
        let mut lines = Vec::new();
        if !manifest.repositories.is_empty() {
            // The canary keeps no cache: the work directory is never written.
            let work = WorkDir::with_limit_or_default(std::env::temp_dir(), None);
            let mirrorer = Mirrorer::from_aws(manifest, &aws, work, false, SECRET_TTL)?;
            for check in mirrorer.canary(&mirrorer.repository_names(), None).await.repositories {
                lines.push(Line {
                    pillar: "SourceControl",
                    checked: check.repository.clone(),
                    ready: check.ready(),
                    result: check.summary(),
                    latency_ms: check.latency_ms,
                    newest_age_seconds: check.tip_age_seconds,
                });
            }
        }
        if !images.is_empty() {
            let mirror = Mirror::from_aws(&aws, SECRET_TTL);
            let images: Vec<_> = images.iter().collect();
            for check in mirror.canary(&images, None).await.images {
                lines.push(Line {
                    pillar: "DockerMirror",
                    checked: check.image.clone(),
                    ready: check.ready(),
                    result: check.summary(),
                    latency_ms: check.latency_ms,
                    newest_age_seconds: None,
                });
            }
        }
        if let Some(logging) = logging {
            let resolved = Resolved::of(logging.stream.clone(), &logging);
            let id = format!("drill-{}-{}", now_ms(), std::process::id());
            let started = Instant::now();
            let probed = resolved.heartbeat(&aws).probe(&id, args.heartbeat_wait).await;
            let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            let (ready, result) = match probed {
                Ok(Ok(seen)) => (
                    true,
                    format!("ready: a heartbeat reached CloudWatch Logs in {} ms", seen.latency_ms),
                ),
                Ok(Err(hop)) => (false, format!("BROKEN: the heartbeat was lost: {hop}")),
                Err(error) => (false, format!("BROKEN: the heartbeat was not sent: {error}")),
            };
            let checked = format!("{} → {}*", resolved.stream(), resolved.prefix());
            lines.push(Line {
                pillar: "Logging",
                checked,
                ready,
                result,
                latency_ms,
                newest_age_seconds: None,
            });
        }
        print(&lines, args.json)?;
        let broken: Vec<&Line> = lines.iter().filter(|l| !l.ready).collect();
        for line in &broken {
            eprintln!("pillar: {} is not ready: {}", line.checked, line.result);
        }
        Ok(if broken.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
    })
}

fn print(lines: &[Line], json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(lines)?);
        return Ok(());
    }
    let width = lines.iter().map(|l| l.checked.chars().count()).max().unwrap_or(0).max(7);
    println!("{:<13}  {:<width$}  {:>8}  {:>9}  result", "pillar", "checked", "latency", "newest");
    for line in lines {
        let newest = line.newest_age_seconds.map(age).unwrap_or_else(|| "-".to_owned());
        println!(
            "{:<13}  {:<width$}  {:>6}ms  {:>9}  {}",
            line.pillar, line.checked, line.latency_ms, newest, line.result
        );
    }
    Ok(())
}

/// `42s`, `17m`, `5h`, `3d`.
fn age(seconds: u64) -> String {
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m", seconds / 60),
        3600..86400 => format!("{}h", seconds / 3600),
        _ => format!("{}d", seconds / 86400),
    }
}
