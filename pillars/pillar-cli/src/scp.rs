//! `pillar scp`: the Source Control Pillar's mirror, runnable from a shell.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use aws_sdk_sqs::types::MessageSystemAttributeName;
use clap::Subcommand;
use pillar_auth::secrets::DEFAULT_TTL;
use pillar_config::Manifest;
use source_control::codecommit::CodeCommit;
use source_control::mirror::{GitMirror, MirrorJob, MirrorReport, TransferProgress};
use source_control::queue::sqs_event;
use source_control::safeguards::Safeguards;
use source_control::service::{Mirrorer, finished, mirror_to_codecommit};
use source_control::transport::Endpoint;
use source_control::workdir::WorkDir;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Mirror the branches and tags of SOURCE into TARGET (deletions included).
    Mirror {
        #[command(flatten)]
        ends: Ends,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Make the deletions even when they are more than the share a run may delete, or
        /// all of them (an operator confirming that the source really lost them).
        #[arg(long)]
        allow_mass_deletion: bool,
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
        /// Make mass deletions too (see `pillar scp mirror --allow-mass-deletion`).
        #[arg(long)]
        allow_mass_deletion: bool,
    },
    /// List the old tips the mirror kept in TARGET (under refs/pillars/kept/) before moving
    /// a ref back or deleting it.
    Kept {
        /// https or file URL, a path, or codecommit://<repository>.
        #[arg(long)]
        target: String,
        /// Print the list as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Put a kept tip back under its original name in TARGET (what the name points at now
    /// is kept first). REF is a kept ref, or an original name for its newest kept tip.
    Restore {
        #[arg(long)]
        target: String,
        #[arg(value_name = "REF")]
        which: String,
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
    #[command(flatten)]
    work: WorkArgs,
}

/// The repositories of a manifest.
#[derive(Debug, clap::Args)]
pub struct ManifestRun {
    /// The deployment manifest.
    #[arg(long)]
    config: PathBuf,
    #[command(flatten)]
    work: WorkArgs,
    /// Fail instead of creating missing CodeCommit repositories.
    #[arg(long)]
    no_create: bool,
}

/// Where the bare caches and their locks live, and how much they may take.
#[derive(Debug, clap::Args)]
pub struct WorkArgs {
    #[arg(long, default_value_os_t = default_work_dir())]
    work_dir: PathBuf,
    /// MiB the caches may take together; the least recently used are evicted past it
    /// (default: half of the work directory's file system).
    #[arg(long)]
    cache_limit_mib: Option<u64>,
}

impl WorkArgs {
    fn work_dir(&self) -> WorkDir {
        WorkDir::with_limit_or_default(&self.work_dir, self.cache_limit_mib)
    }
}

fn default_work_dir() -> PathBuf {
    std::env::temp_dir().join("pillars-scp")
}

pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Mirror { ends, json, allow_mass_deletion } => {
            crate::runtime()?.block_on(mirror(ends, json, allow_mass_deletion))
        }
        Command::Verify { ends } => crate::runtime()?.block_on(verify(ends)),
        Command::Sync { run, allow_mass_deletion } => {
            crate::runtime()?.block_on(sync(run, allow_mass_deletion))
        }
        Command::Kept { target, json } => crate::runtime()?.block_on(kept(&target, json)),
        Command::Restore { target, which } => crate::runtime()?.block_on(restore(&target, &which)),
        Command::Drain { run, queue_url } => crate::runtime()?.block_on(drain(run, &queue_url)),
    }
}

/// Into CodeCommit, the default branch follows the source's, as the Lambda does it.
async fn mirror(ends: Ends, json: bool, allow_mass_deletion: bool) -> anyhow::Result<ExitCode> {
    let mut git = GitMirror::new();
    let mut bars = None;
    if crate::progress::wanted(json) {
        let progress = Arc::new(TransferProgress::default());
        bars = Some(crate::progress::MirrorBars::show(Arc::clone(&progress)));
        git = git.with_progress(progress);
    }
    let mut job = ends.job().await?;
    job.safeguards.allow_mass_deletion = allow_mass_deletion;
    let work = ends.work.work_dir();
    let outcome = match codecommit_name(&ends.target) {
        Some(repository) => {
            let codecommit = CodeCommit::new(&aws_config::load_from_env().await)?;
            let default_branch = codecommit.ensure_repository(repository, false).await?;
            let target = (&codecommit, repository, default_branch);
            mirror_to_codecommit(&git, target, &job, &work, None).await
        }
        None => {
            let report = git.run(&job, &work, None).await?;
            finished(&ends.target, report, job.safeguards)
        }
    };
    drop(bars);
    match outcome {
        Ok(report) => {
            print_report(&report, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            if let Some(report) = error.report() {
                print_report(report, json)?;
            }
            Err(error.into())
        }
    }
}

async fn kept(target: &str, json: bool) -> anyhow::Result<ExitCode> {
    let kept = GitMirror::new().kept(&endpoint(target).await?).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&kept)?);
        return Ok(ExitCode::SUCCESS);
    }
    for tip in &kept {
        println!("{}  {}  {}  {}", tip.kept_on, tip.oid, tip.original, tip.name);
    }
    println!("{} kept tips", kept.len());
    Ok(ExitCode::SUCCESS)
}

async fn restore(target: &str, which: &str) -> anyhow::Result<ExitCode> {
    let (kept, report) = GitMirror::new().restore(&endpoint(target).await?, which).await?;
    if report.unchanged == 1 {
        println!("{} already points at {}", kept.original, kept.oid);
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(refusal) = report.refused.first() {
        anyhow::bail!("{target} refused to restore {}: {}", refusal.name, refusal.reason);
    }
    for tip in &report.kept {
        println!("kept     {} at {} (was {})", tip.name, tip.oid, tip.original);
    }
    println!("restored {} at {} from {}", kept.original, kept.oid, kept.name);
    Ok(ExitCode::SUCCESS)
}

async fn verify(ends: Ends) -> anyhow::Result<ExitCode> {
    let git = GitMirror::new();
    let job = ends.job().await?;
    let drift = git.compare(&job, None).await?;
    // A build from the mirror needs the content too, and LFS content is not in git.
    let lfs = git.lfs_in_source(&job, &ends.work.work_dir()).await?;
    for name in &lfs {
        println!("{:<18} {name} (only its pointer files are mirrored)", "uses Git LFS");
    }
    if drift.is_empty() {
        println!("identical: {} refs", drift.unchanged);
        return Ok(if lfs.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE });
    }
    for change in drift.changes() {
        let state = match (change.old, change.new) {
            (None, _) => "missing on target",
            (_, None) => "only on target",
            _ => "differs",
        };
        println!("{state:<18} {}", change.name);
    }
    println!("{} refs drift, {} identical", drift.changes().count(), drift.unchanged);
    Ok(ExitCode::FAILURE)
}

impl ManifestRun {
    /// A mirrorer over the manifest's repositories, with clients from the AWS configuration.
    async fn mirrorer(self) -> anyhow::Result<(Mirrorer, aws_config::SdkConfig)> {
        let manifest = Manifest::load(&self.config)?;
        let aws = aws_config::load_from_env().await;
        let mirrorer =
            Mirrorer::from_aws(manifest, &aws, self.work.work_dir(), !self.no_create, DEFAULT_TTL)?;
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
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .wait_time_seconds(1)
            .send()
            .await
            .with_context(|| format!("receiving from {queue_url}"))?;
        let messages = received.messages.unwrap_or_default();
        if messages.is_empty() {
            break;
        }
        let response = mirrorer.handle_sqs(sqs_event(&messages), None).await.response;
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

async fn sync(run: ManifestRun, allow_mass_deletion: bool) -> anyhow::Result<ExitCode> {
    let (mut mirrorer, _) = run.mirrorer().await?;
    if allow_mass_deletion {
        mirrorer = mirrorer.allowing_mass_deletion();
    }
    let mut failed = 0;
    for name in mirrorer.repository_names() {
        match mirrorer.mirror_repository(&name, None).await {
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
    async fn job(&self) -> anyhow::Result<MirrorJob> {
        let source = endpoint(&self.source).await?;
        let target = endpoint(&self.target).await?;
        let name = cache_name(&source, &target);
        Ok(MirrorJob { name, source, target, safeguards: Safeguards::default() })
    }
}

/// The repository of a `codecommit://<repository>` URL.
fn codecommit_name(url: &str) -> Option<&str> {
    url.strip_prefix("codecommit://")
}

/// `codecommit://<repository>` through the AWS configuration; anything else as given.
async fn endpoint(url: &str) -> anyhow::Result<Endpoint> {
    match codecommit_name(url) {
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
    for refusal in &report.refused {
        println!("REFUSED  {} ({})", refusal.name, refusal.reason);
    }
    for name in &report.held {
        println!("HELD     {name} (deletion held: see the error)");
    }
    for kept in &report.kept {
        println!("kept     {} at {}", kept.name, kept.oid);
    }
    for name in &report.lfs {
        println!("LFS      {name} (uses Git LFS: only its pointer files are mirrored)");
    }
    println!(
        "{} created, {} updated, {} deleted, {} refused, {} deletions held, {} old tips kept, {} unchanged",
        report.created.len(),
        report.updated.len(),
        report.deleted.len(),
        report.refused.len(),
        report.held.len(),
        report.kept.len(),
        report.unchanged
    );
    Ok(())
}
