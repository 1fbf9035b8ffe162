//! `pillar scp`: the Source Control Pillar's mirror, runnable from a shell.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use source_control::codecommit::CodeCommit;
use source_control::mirror::{MirrorJob, MirrorReport, mirror};
use source_control::transport::Endpoint;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Mirror the branches and tags of SOURCE into TARGET (deletions included).
    Mirror {
        /// https, http or file URL, a path, or codecommit://<repository>.
        #[arg(long)]
        source: String,
        /// Same forms as --source.
        #[arg(long)]
        target: String,
        /// Where the bare cache and the lock live.
        #[arg(long, default_value_os_t = default_work_dir())]
        work_dir: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn default_work_dir() -> PathBuf {
    std::env::temp_dir().join("pillars-scp")
}

pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Mirror { source, target, work_dir, json } => {
            let runtime = crate::runtime()?;
            let job = runtime.block_on(async {
                let source = endpoint(&source).await?;
                let target = endpoint(&target).await?;
                anyhow::Ok(MirrorJob { name: cache_name(&source, &target), source, target })
            })?;
            let report = mirror(&job, &work_dir)?;
            print_report(&report, json)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `codecommit://<repository>` through the AWS configuration; anything else as given.
async fn endpoint(url: &str) -> anyhow::Result<Endpoint> {
    match url.strip_prefix("codecommit://") {
        Some(repository) => {
            let aws = aws_config::load_from_env().await;
            let codecommit = CodeCommit::new(&aws)?;
            Ok(codecommit
                .endpoint(repository)
                .await
                .with_context(|| format!("CodeCommit repository {repository}"))?)
        }
        None => Ok(Endpoint::anonymous(url)),
    }
}

/// A cache name that is the same for the same pair of ends, readable in a listing.
fn cache_name(source: &Endpoint, target: &Endpoint) -> String {
    use sha2::Digest;
    let digest =
        sha2::Sha256::digest(format!("{}\n{}", source.display_url(), target.display_url()));
    let last = target.url.trim_end_matches('/').rsplit('/').next().unwrap_or("mirror");
    let readable: String =
        last.chars().filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c)).take(40).collect();
    format!("{readable}-{}", &hex::encode(digest)[..12])
}

fn print_report(report: &MirrorReport, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    for (what, refs) in
        [("created", &report.created), ("updated", &report.updated), ("deleted", &report.deleted)]
    {
        for name in refs {
            println!("{what:<8} {name}");
        }
    }
    println!(
        "{} created, {} updated, {} deleted, {} unchanged",
        report.created.len(),
        report.updated.len(),
        report.deleted.len(),
        report.unchanged
    );
    Ok(())
}
