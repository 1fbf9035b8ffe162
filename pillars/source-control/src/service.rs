//! The pillar's jobs over the manifest: mirror a configured repository (the SQS consumer
//! and `pillar scp sync`), and reconcile (queue every repository, measure drift).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use futures_util::StreamExt;
use pillar_auth::secrets::{SecretCache, SecretError};
use pillar_config::{Manifest, Repository};
use pillar_telemetry::{Metrics, Unit};
use secrecy::SecretString;

use crate::codecommit::{CodeCommit, CodeCommitError};
use crate::mirror::{Drift, GitMirror, MirrorError, MirrorJob, MirrorReport};
use crate::queue::{MirrorQueue, MirrorRequest, QueueError};
use crate::safeguards::Safeguards;
use crate::settings::MirrorSettings;
use crate::transport::{Auth, Endpoint};
use crate::workdir::WorkDir;

/// CloudWatch namespace of the pillar's metrics.
pub const METRICS_NAMESPACE: &str = "Pillars/SourceControl";

/// No new mirror starts with less time than this before the deadline, unless set otherwise.
const START_MARGIN: Duration = Duration::from_secs(30);

/// Drift checks (two ref listings each) run at the same time.
const DRIFT_CONCURRENCY: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Manifest(#[from] pillar_config::ConfigError),
    #[error("repository `{0}` is not in the manifest")]
    NotConfigured(String),
    #[error("source credentials of `{repository}`: {error}")]
    SourceSecret { repository: String, error: SecretError },
    #[error(
        "source credentials secret `{secret}` of `{repository}` must hold {}",
        pillar_auth::secrets::USER_PASSWORD_FORMS
    )]
    SecretFormat { repository: String, secret: String },
    #[error(transparent)]
    CodeCommit(#[from] CodeCommitError),
    #[error("mirror of `{repository}`: {error}")]
    Mirror { repository: String, error: MirrorError },
    #[error(
        "mirror of `{repository}`: the target refused {} ref(s): {}; everything else was mirrored",
        report.refused.len(),
        report.refusals()
    )]
    Refused { repository: String, report: Box<MirrorReport> },
    #[error(
        "mirror of `{repository}`: {} deletion(s) held ({}): together they would delete more than {:.0} % of the mirror's branches and tags, or all of them, so none was made; everything else was mirrored. Check the source (recreated empty? cut short? a clean-up gone wrong?); if the deletions are meant, run `pillar scp mirror --allow-mass-deletion` once or set `allow_mass_deletion = true` for the repository",
        report.held.len(),
        report.held_names(),
        share * 100.0
    )]
    DeletionsHeld { repository: String, report: Box<MirrorReport>, share: f64 },
}

/// What a reconcile run did.
#[derive(Debug, Default)]
pub struct ReconcileReport {
    /// Repositories that could not be queued (the run fails, so the schedule retries).
    pub not_queued: Vec<QueueError>,
    /// Per repository `RefsDrifted` (when measured) and `DriftCheckFailed`; then the totals
    /// `RepositoriesDrifted` and `DriftCheckFailed`, without dimension, for alarms.
    pub metrics: Vec<Metrics>,
}

/// What handling one SQS batch did.
#[derive(Debug, Default)]
pub struct BatchOutcome {
    /// The messages to retry.
    pub response: SqsBatchResponse,
    /// For each of them, how soon it comes back: (message id, visibility timeout set).
    pub comes_back: Vec<(String, Duration)>,
    /// Per repository handled: `MirrorFailed`, and `MirrorLagSeconds` (from the request's
    /// sending to its mirror being done) when it succeeded.
    pub metrics: Vec<Metrics>,
}

impl BatchOutcome {
    fn retry(&mut self, record: &SqsMessage, why: &str) {
        let message_id = record.message_id.clone().unwrap_or_default();
        tracing::warn!(message_id, why, "mirror request left for a retry");
        let mut failure = BatchItemFailure::default();
        failure.item_identifier = message_id;
        self.response.batch_item_failures.push(failure);
    }
}

/// How soon a failed mirror request comes back, rather than after the queue's visibility
/// timeout (sized for the longest mirror): 30 s, doubling with each receive, at most 15 min.
/// A FIFO group waits behind its failed message, so one blip must not hold it for hours.
#[derive(Debug, Clone)]
pub struct RetryVisibility {
    pub sqs: aws_sdk_sqs::Client,
    pub queue_url: String,
    pub first: Duration,
}

impl RetryVisibility {
    pub const FIRST: Duration = Duration::from_secs(30);
    pub const LONGEST: Duration = Duration::from_secs(900);

    /// The visibility timeout after the `receive_count`th receive.
    pub fn after(&self, receive_count: u32) -> Duration {
        let doubled = self.first.saturating_mul(1 << receive_count.saturating_sub(1).min(16));
        doubled.min(Self::LONGEST)
    }

    async fn apply(&self, record: &SqsMessage) -> Option<Duration> {
        let receipt = record.receipt_handle.as_deref()?;
        let count = record
            .attributes
            .get("ApproximateReceiveCount")
            .and_then(|c| c.parse().ok())
            .unwrap_or(1);
        let visibility = self.after(count);
        let changed = self
            .sqs
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt)
            .visibility_timeout(i32::try_from(visibility.as_secs()).unwrap_or(i32::MAX))
            .send()
            .await;
        match changed {
            Ok(_) => Some(visibility),
            Err(error) => {
                // It comes back after the queue's own timeout instead: later, not lost.
                let error = pillar_auth::aws_error_message(&error);
                tracing::warn!(error, "ChangeMessageVisibility failed");
                None
            }
        }
    }
}

/// Mirrors the manifest's repositories into CodeCommit.
#[derive(Debug, Clone)]
pub struct Mirrorer {
    repositories: Arc<HashMap<String, Repository>>,
    pub(crate) codecommit: CodeCommit,
    secrets: Arc<SecretCache>,
    pub(crate) git: GitMirror,
    work: WorkDir,
    create_missing: bool,
    start_margin: Duration,
    safeguards: Safeguards,
    retry_visibility: Option<RetryVisibility>,
    /// Repositories the scheduled canary clones per run (0: all), and its period.
    pub(crate) canary_rotation: (usize, u32),
}

impl Mirrorer {
    pub fn new(
        manifest: Manifest,
        codecommit: CodeCommit,
        secrets: Arc<SecretCache>,
        work: WorkDir,
        create_missing: bool,
    ) -> Self {
        let safeguards = Safeguards {
            max_deletion_share: manifest.source_control.max_deletion_share,
            allow_mass_deletion: false,
            kept_days: manifest.source_control.kept_days,
        };
        let canary_rotation = (
            manifest.source_control.canary_repositories_per_run as usize,
            manifest.source_control.canary_period_minutes,
        );
        let repositories =
            manifest.repositories.into_iter().map(|r| (r.codecommit.clone(), r)).collect();
        Self {
            canary_rotation,
            safeguards,
            repositories: Arc::new(repositories),
            codecommit,
            secrets,
            git: GitMirror::new(),
            work,
            create_missing,
            start_margin: START_MARGIN,
            retry_visibility: None,
        }
    }

    /// Failed requests come back as `visibility` says, not after the queue's timeout.
    pub fn with_retry_visibility(self, visibility: RetryVisibility) -> Self {
        Self { retry_visibility: Some(visibility), ..self }
    }

    /// Mass deletions go through for every repository (an operator confirmed them).
    pub fn allowing_mass_deletion(mut self) -> Self {
        self.safeguards.allow_mass_deletion = true;
        self
    }

    /// No new mirror starts with less than `margin` left before a deadline.
    pub fn with_start_margin(self, margin: Duration) -> Self {
        Self { start_margin: margin, ..self }
    }

    /// A mirrorer for a Lambda: manifest and settings from its environment.
    pub fn from_settings(
        settings: &MirrorSettings,
        aws: &aws_config::SdkConfig,
    ) -> Result<Self, SyncError> {
        let mirrorer = Self::from_aws(
            Manifest::load(&settings.manifest)?,
            aws,
            WorkDir::with_limit_or_default(&settings.work_dir, settings.cache_limit_mib),
            settings.create_repositories,
            settings.secret_ttl,
        )?;
        Ok(match &settings.queue_url {
            Some(queue_url) => mirrorer.with_retry_visibility(RetryVisibility {
                sqs: aws_sdk_sqs::Client::new(aws),
                queue_url: queue_url.clone(),
                first: RetryVisibility::FIRST,
            }),
            None => mirrorer,
        })
    }

    /// Clients from the AWS configuration; secrets cached for `secret_ttl`.
    pub fn from_aws(
        manifest: Manifest,
        aws: &aws_config::SdkConfig,
        work: WorkDir,
        create_missing: bool,
        secret_ttl: Duration,
    ) -> Result<Self, SyncError> {
        let secrets = SecretCache::new(aws_sdk_secretsmanager::Client::new(aws), secret_ttl);
        Ok(Self::new(manifest, CodeCommit::new(aws)?, Arc::new(secrets), work, create_missing))
    }

    /// The configured CodeCommit names, sorted.
    pub fn repository_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.repositories.keys().cloned().collect();
        names.sort();
        names
    }

    /// Mirrors one configured repository, creating the CodeCommit repository when missing
    /// (if allowed) and following the source's default branch.
    pub async fn mirror_repository(
        &self,
        name: &str,
        deadline: Option<Instant>,
    ) -> Result<MirrorReport, SyncError> {
        let job = self.job(name).await?;
        let default_branch = self.codecommit.ensure_repository(name, self.create_missing).await?;
        let target = (&self.codecommit, name, default_branch);
        mirror_to_codecommit(&self.git, target, &job, &self.work, deadline).await
    }

    pub(crate) async fn job(&self, name: &str) -> Result<MirrorJob, SyncError> {
        let repository =
            self.repositories.get(name).ok_or_else(|| SyncError::NotConfigured(name.to_owned()))?;
        let auth = match &repository.credentials_secret {
            None => Auth::None,
            Some(secret) => {
                let value = self.secrets.get(secret).await.map_err(|error| {
                    SyncError::SourceSecret { repository: name.to_owned(), error }
                })?;
                basic_auth(&value).ok_or_else(|| SyncError::SecretFormat {
                    repository: name.to_owned(),
                    secret: secret.clone(),
                })?
            }
        };
        let mut safeguards = self.safeguards;
        safeguards.allow_mass_deletion |= repository.allow_mass_deletion;
        Ok(MirrorJob {
            name: name.to_owned(),
            source: Endpoint { url: repository.source.clone(), auth },
            target: self.codecommit.endpoint(name).await?,
            safeguards,
        })
    }

    /// The SQS consumer: mirrors each message's repository in order and reports the
    /// messages to retry. After a failure, only later messages of the same FIFO message
    /// group are held back (order holds only within a group). No mirror starts too close
    /// to `deadline`; what is left is reported for retry rather than cut by a timeout that
    /// would retry the whole batch.
    pub async fn handle_sqs(&self, event: SqsEvent, deadline: Option<Instant>) -> BatchOutcome {
        let mut outcome = BatchOutcome::default();
        let mut failed_groups = HashSet::new();
        let records = event.records;
        for record in &records {
            let id = record.message_id.clone().unwrap_or_default();
            let group = record.attributes.get("MessageGroupId").cloned();
            let held = if group.as_ref().is_some_and(|g| failed_groups.contains(g)) {
                Some("an earlier request of its group failed")
            } else if deadline
                .is_some_and(|d| d.saturating_duration_since(Instant::now()) < self.start_margin)
            {
                Some("too close to the deadline to start")
            } else {
                None
            };
            if let Some(why) = held {
                outcome.retry(record, why);
                failed_groups.extend(group);
                continue;
            }
            let body = record.body.as_deref().unwrap_or_default();
            let request = match serde_json::from_str::<MirrorRequest>(body) {
                Ok(request) => request,
                Err(error) => {
                    // A message that can never parse would fail forever: drop it loudly.
                    tracing::error!(%error, message_id = id, "unreadable mirror request dropped");
                    continue;
                }
            };
            if !self.repositories.contains_key(&request.repository) {
                // Renamed or removed since the request was sent: retrying cannot help.
                tracing::warn!(
                    repository = request.repository,
                    message_id = id,
                    "mirror request for a repository not in the manifest dropped"
                );
                continue;
            }
            let metrics =
                Metrics::new(METRICS_NAMESPACE).dimension("Repository", &request.repository);
            let result = self.mirror_repository(&request.repository, deadline).await;
            let held = match &result {
                Ok(report) => report.held.len(),
                Err(error) => error.report().map_or(0, |r| r.held.len()),
            };
            let lfs = match &result {
                Ok(report) => report.lfs.len(),
                Err(error) => error.report().map_or(0, |r| r.lfs.len()),
            };
            let metrics = metrics.value("DeletionsHeld", held as f64, Unit::Count).value(
                "LfsNotMirrored",
                lfs as f64,
                Unit::Count,
            );
            match result {
                Ok(report) => {
                    tracing::info!(
                        repository = request.repository,
                        delivery = request.delivery,
                        created = report.created.len(),
                        updated = report.updated.len(),
                        deleted = report.deleted.len(),
                        kept = report.kept.len(),
                        unchanged = report.unchanged,
                        "mirrored"
                    );
                    let metrics = metrics.value("MirrorFailed", 0.0, Unit::Count);
                    outcome.metrics.push(match waited(record) {
                        Some(lag) => metrics.value("MirrorLagSeconds", lag, Unit::Seconds),
                        None => metrics,
                    });
                }
                Err(error @ SyncError::DeletionsHeld { .. }) => {
                    // Everything else went through, and a retry would hold the same
                    // deletions: the alarm on DeletionsHeld calls an operator instead.
                    tracing::error!(%error, message_id = id, "mass deletion held");
                    outcome.metrics.push(metrics.value("MirrorFailed", 0.0, Unit::Count));
                }
                Err(error) => {
                    tracing::error!(%error, message_id = id, "mirror failed");
                    outcome.metrics.push(metrics.value("MirrorFailed", 1.0, Unit::Count));
                    outcome.retry(record, "its mirror failed");
                    failed_groups.extend(group);
                }
            }
        }
        if let Some(visibility) = &self.retry_visibility {
            let failed: HashSet<&str> = outcome
                .response
                .batch_item_failures
                .iter()
                .map(|f| f.item_identifier.as_str())
                .collect();
            let mut comes_back = Vec::new();
            for record in &records {
                let id = record.message_id.as_deref().unwrap_or_default();
                if failed.contains(id)
                    && let Some(after) = visibility.apply(record).await
                {
                    comes_back.push((id.to_owned(), after));
                }
            }
            outcome.comes_back = comes_back;
        }
        outcome
    }

    /// Queues every configured repository first, then measures each one's drift with a
    /// cheap comparison of ref listings (no cache, no objects), a bounded number at a time,
    /// until `deadline`. A repository whose drift cannot be measured counts in
    /// `DriftCheckFailed`: a broken mirror must not look like missing data.
    pub async fn reconcile(
        &self,
        queue: &impl MirrorQueue,
        run_id: &str,
        deadline: Option<Instant>,
    ) -> ReconcileReport {
        let mut report = ReconcileReport::default();
        let names = self.repository_names();
        for name in &names {
            let request = MirrorRequest {
                repository: name.clone(),
                delivery: format!("reconcile-{run_id}-{name}"),
            };
            if let Err(error) = queue.enqueue(&request).await {
                tracing::error!(%error, "reconcile could not queue");
                report.not_queued.push(error);
            }
        }
        let checks: Vec<(String, Result<Drift, String>)> = futures_util::stream::iter(names)
            .map(|name| async move {
                let drift = self.drift(&name, deadline).await;
                (name, drift)
            })
            .buffer_unordered(DRIFT_CONCURRENCY)
            .collect()
            .await;
        let (mut drifted, mut failed) = (0_u32, 0_u32);
        for (name, drift) in checks {
            let metrics = Metrics::new(METRICS_NAMESPACE).dimension("Repository", &name);
            report.metrics.push(match drift {
                Ok(plan) => {
                    let changes = plan.changes().count();
                    drifted += u32::from(changes > 0);
                    metrics.value("RefsDrifted", changes as f64, Unit::Count).value(
                        "DriftCheckFailed",
                        0.0,
                        Unit::Count,
                    )
                }
                Err(error) => {
                    tracing::warn!(error, repository = name, "drift not measured");
                    failed += 1;
                    metrics.value("DriftCheckFailed", 1.0, Unit::Count)
                }
            });
        }
        report.metrics.push(
            Metrics::new(METRICS_NAMESPACE)
                .value("RepositoriesDrifted", f64::from(drifted), Unit::Count)
                .value("DriftCheckFailed", f64::from(failed), Unit::Count),
        );
        report
    }

    async fn drift(&self, name: &str, deadline: Option<Instant>) -> Result<Drift, String> {
        let measured = async {
            let job = self.job(name).await.map_err(|e| e.to_string())?;
            self.git.compare(&job, deadline).await.map_err(|e| e.to_string())
        };
        match deadline {
            None => measured.await,
            Some(deadline) => tokio::time::timeout_at(deadline.into(), measured)
                .await
                .unwrap_or_else(|_| Err("not measured before the deadline".to_owned())),
        }
    }
}

/// Mirrors `job` into its CodeCommit target `(codecommit, repository, its default branch)`,
/// then points the default branch at the source's HEAD branch. CodeCommit refuses to delete
/// its default branch, so deletions refused while it was elsewhere are pushed again once
/// it has moved. Refused refs that remain are an error carrying the whole report.
pub async fn mirror_to_codecommit(
    git: &GitMirror,
    (codecommit, repository, default_branch): (&CodeCommit, &str, Option<String>),
    job: &MirrorJob,
    work: &WorkDir,
    deadline: Option<Instant>,
) -> Result<MirrorReport, SyncError> {
    let failed = |error| SyncError::Mirror { repository: repository.to_owned(), error };
    let mut report = git.run(job, work, deadline).await.map_err(failed)?;
    let head = report.source_head.as_ref().and_then(|h| h.branch()).map(str::to_owned);
    let moved = match head.filter(|h| default_branch.as_deref() != Some(h.as_str())) {
        None => false,
        Some(head) => match codecommit.set_default_branch(repository, &head).await {
            Ok(()) => true,
            Err(error) => {
                // The refs themselves went through; the next run tries again.
                tracing::warn!(%error, repository, head, "default branch not updated");
                false
            }
        },
    };
    if moved && !report.refused.is_empty() {
        let again = git.run(job, work, deadline).await.map_err(failed)?;
        report.created.extend(again.created);
        report.updated.extend(again.updated);
        report.deleted.extend(again.deleted);
        report.refused = again.refused;
        report.held = again.held;
        report.kept.extend(again.kept);
        report.lfs = again.lfs;
        report.expired += again.expired;
        report.fetched |= again.fetched;
    }
    finished(repository, report, job.safeguards)
}

/// A run's report as its outcome: refused refs first, then held deletions, make it an error.
pub fn finished(
    repository: &str,
    report: MirrorReport,
    safeguards: Safeguards,
) -> Result<MirrorReport, SyncError> {
    let repository = repository.to_owned();
    if !report.refused.is_empty() {
        Err(SyncError::Refused { repository, report: Box::new(report) })
    } else if !report.held.is_empty() {
        let share = safeguards.max_deletion_share;
        Err(SyncError::DeletionsHeld { repository, report: Box::new(report), share })
    } else {
        Ok(report)
    }
}

impl SyncError {
    /// The run's report, when the run got as far as one.
    pub fn report(&self) -> Option<&MirrorReport> {
        match self {
            Self::Refused { report, .. } | Self::DeletionsHeld { report, .. } => Some(report),
            _ => None,
        }
    }
}

/// Seconds since SQS received `record`, from its `SentTimestamp` attribute.
fn waited(record: &SqsMessage) -> Option<f64> {
    let sent_ms: u128 = record.attributes.get("SentTimestamp")?.parse().ok()?;
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_millis();
    Some(now_ms.saturating_sub(sent_ms) as f64 / 1000.0)
}

/// `username:password` as HTTP Basic credentials.
fn basic_auth(secret: &SecretString) -> Option<Auth> {
    let (username, password) = pillar_auth::secrets::username_password(secret)?;
    Some(Auth::Basic { username, password })
}
