//! `pillar scp`: the Source Control Pillar's mirror, runnable from a shell.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use pillar_auth::secrets::DEFAULT_TTL;
use pillar_config::Manifest;
use source_control::codecommit::CodeCommit;
use source_control::mirror::{MirrorJob, MirrorReport, compare, mirror};
use source_control::queue::sqs_event;
use source_control::service::Mirrorer;
use source_control::transport::Endpoint;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Mirror the branches and tags of SOURCE into TARGET (deletions included).
    Mirror {
        #[command(flatten)]
        ends: Ends,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Exit 0 when TARGET's branches and tags equal SOURCE's, 1 listing those that differ.
    Verify {
        #[command(flatten)]
        ends: Ends,
    },
    /// Mirror every repository of a manifest into CodeCommit; one failure does not stop
    /// the others, and the exit code is 1 if any failed.
    Sync {
        #[command(flatten)]
        run: ManifestRun,
    },
    /// Consume the mirror queue as the scp-mirror Lambda does, until it is empty: the
    /// webhook's other half when running without Lambda.
    Drain {
        #[command(flatten)]
        run: ManifestRun,
        /// The SQS FIFO queue `pillar webhook serve` fills.
        #[arg(long, env = "MIRROR_QUEUE_URL")]
        queue_url: String,
    },
}

/// Two ends given on the command line.
#[derive(Debug, clap::Args)]
pub struct Ends {
    /// https, http or file URL, a path, or codecommit://<repository>.
    #[arg(long)]
    source: String,
    /// Same forms as --source.
    #[arg(long)]
    target: String,
    /// Where the bare cache and the lock live.
    #[arg(long, default_value_os_t = default_work_dir())]
    work_dir: PathBuf,
}

/// The repositories of a manifest.
#[derive(Debug, clap::Args)]
pub struct ManifestRun {
    /// The deployment manifest.
    #[arg(long)]
    config: PathBuf,
    /// Where the bare caches and locks live.
    #[arg(long, default_value_os_t = default_work_dir())]
    work_dir: PathBuf,
    /// Fail instead of creating missing CodeCommit repositories.
    #[arg(long)]
    no_create: bool,
}

fn default_work_dir() -> PathBuf {
    std::env::temp_dir().join("pillars-scp")
}

pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Mirror { ends, json } => {
            let report = mirror(&ends.job()?, &ends.work_dir)?;
            print_report(&report, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify { ends } => {
            let drift = compare(&ends.job()?, &ends.work_dir)?;
            if drift.plan.is_empty() {
                println!("identical: {} refs", drift.plan.unchanged);
                return Ok(ExitCode::SUCCESS);
            }
            for change in drift.plan.changes() {
                let state = match (change.old, change.new) {
                    (None, _) => "missing on target",
                    (_, None) => "only on target",
                    _ => "differs",
                };
                println!("{state:<18} {}", change.name);
            }
            println!(
                "{} refs drift, {} identical",
                drift.plan.changes().count(),
                drift.plan.unchanged
            );
            Ok(ExitCode::FAILURE)
        }
        Command::Sync { run } => crate::runtime()?.block_on(sync(run)),
        Command::Drain { run, queue_url } => crate::runtime()?.block_on(drain(run, &queue_url)),
    }
}

impl ManifestRun {
    /// A mirrorer over the manifest's repositories, with clients from the AWS configuration.
    async fn mirrorer(self) -> anyhow::Result<(Mirrorer, aws_config::SdkConfig)> {
        let manifest = Manifest::load(&self.config)?;
        let aws = aws_config::load_from_env().await;
        let mirrorer =
            Mirrorer::from_aws(manifest, &aws, self.work_dir, !self.no_create, DEFAULT_TTL)?;
        Ok((mirrorer, aws))
    }
}

async fn drain(run: ManifestRun, queue_url: &str) -> anyhow::Result<ExitCode> {
    let (mirrorer, aws) = run.mirrorer().await?;
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let (mut handled, mut failed) = (0, 0);
    loop {
        let received = sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .with_context(|| format!("receiving from {queue_url}"))?;
        let messages = received.messages.unwrap_or_default();
        if messages.is_empty() {
            break;
        }
        let response = mirrorer.handle_sqs(sqs_event(&messages)).await;
        let retry: Vec<&str> =
            response.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
        for message in &messages {
            if retry.contains(&message.message_id.as_deref().unwrap_or_default()) {
                failed += 1;
                continue;
            }
            handled += 1;
            sqs.delete_message()
                .queue_url(queue_url)
                .set_receipt_handle(message.receipt_handle.clone())
                .send()
                .await
                .with_context(|| format!("deleting a handled message from {queue_url}"))?;
        }
        if !retry.is_empty() {
            // As with Lambda: the failed group waits for its visibility timeout.
            break;
        }
    }
    println!("{handled} mirror requests handled, {failed} failed (left on the queue)");
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

async fn sync(run: ManifestRun) -> anyhow::Result<ExitCode> {
    let (mirrorer, _) = run.mirrorer().await?;
    let mut failed = 0;
    for name in mirrorer.repository_names() {
        match mirrorer.mirror_repository(&name).await {
            Ok(report) => println!(
                "ok      {name}: {} created, {} updated, {} deleted, {} unchanged",
                report.created.len(),
                report.updated.len(),
                report.deleted.len(),
                report.unchanged
            ),
            Err(error) => {
                failed += 1;
                println!("FAILED  {name}: {error}");
            }
        }
    }
    if failed > 0 {
        eprintln!("pillar: {failed} of {} repositories failed", mirrorer.repository_names().len());
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

impl Ends {
    /// The job between the two ends, credentials resolved.
    fn job(&self) -> anyhow::Result<MirrorJob> {
        crate::runtime()?.block_on(async {
            let source = endpoint(&self.source).await?;
            let target = endpoint(&self.target).await?;
            Ok(MirrorJob { name: cache_name(&source, &target), source, target })
        })
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
