//! The pillar's jobs over the manifest: mirror a configured repository (the SQS consumer
//! and `pillar scp sync`), and reconcile (queue every repository, measure drift).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use pillar_auth::secrets::{SecretCache, SecretError};
use pillar_config::{Manifest, Repository};
use pillar_telemetry::{Metrics, Unit};
use secrecy::SecretString;

use crate::codecommit::{CodeCommit, CodeCommitError};
use crate::mirror::{MirrorError, MirrorJob, MirrorReport, compare, mirror};
use crate::queue::{MirrorQueue, MirrorRequest, QueueError};
use crate::settings::MirrorSettings;
use crate::transport::{Auth, Endpoint};

/// CloudWatch namespace of the pillar's metrics.
pub const METRICS_NAMESPACE: &str = "Pillars/SourceControl";

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Manifest(#[from] pillar_config::ConfigError),
    #[error("repository `{0}` is not in the manifest")]
    NotConfigured(String),
    #[error("source credentials of `{repository}`: {error}")]
    SourceSecret { repository: String, error: SecretError },
    #[error("source credentials secret `{secret}` of `{repository}` must hold `username:password`")]
    SecretFormat { repository: String, secret: String },
    #[error(transparent)]
    CodeCommit(#[from] CodeCommitError),
    #[error("mirror of `{repository}`: {error}")]
    Mirror { repository: String, error: MirrorError },
    #[error("mirror of `{repository}` stopped unexpectedly: {message}")]
    Crashed { repository: String, message: String },
}

/// What a reconcile run did.
#[derive(Debug, Default)]
pub struct ReconcileReport {
    /// Repositories that could not be queued (the run fails, so the schedule retries).
    pub not_queued: Vec<QueueError>,
    /// `RefsDrifted` and `MirrorLagSeconds` per repository.
    pub metrics: Vec<Metrics>,
}

/// Mirrors the manifest's repositories into CodeCommit.
#[derive(Debug, Clone)]
pub struct Mirrorer {
    repositories: Arc<HashMap<String, Repository>>,
    codecommit: CodeCommit,
    secrets: Arc<SecretCache>,
    work_dir: PathBuf,
    create_missing: bool,
}

impl Mirrorer {
    pub fn new(
        manifest: Manifest,
        codecommit: CodeCommit,
        secrets: Arc<SecretCache>,
        work_dir: PathBuf,
        create_missing: bool,
    ) -> Self {
        let repositories =
            manifest.repositories.into_iter().map(|r| (r.codecommit.clone(), r)).collect();
        Self { repositories: Arc::new(repositories), codecommit, secrets, work_dir, create_missing }
    }

    /// A mirrorer for a Lambda: manifest and settings from its environment.
    pub fn from_settings(
        settings: &MirrorSettings,
        aws: &aws_config::SdkConfig,
    ) -> Result<Self, SyncError> {
        Self::from_aws(
            Manifest::load(&settings.manifest)?,
            aws,
            settings.work_dir.clone(),
            settings.create_repositories,
            settings.secret_ttl,
        )
    }

    /// Clients from the AWS configuration; secrets cached for `secret_ttl`.
    pub fn from_aws(
        manifest: Manifest,
        aws: &aws_config::SdkConfig,
        work_dir: PathBuf,
        create_missing: bool,
        secret_ttl: Duration,
    ) -> Result<Self, SyncError> {
        let secrets = SecretCache::new(aws_sdk_secretsmanager::Client::new(aws), secret_ttl);
        Ok(Self::new(manifest, CodeCommit::new(aws)?, Arc::new(secrets), work_dir, create_missing))
    }

    /// The configured CodeCommit names, sorted.
    pub fn repository_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.repositories.keys().cloned().collect();
        names.sort();
        names
    }

    /// Mirrors one configured repository, creating the CodeCommit repository when
    /// missing (if allowed) and following the source's default branch.
    pub async fn mirror_repository(&self, name: &str) -> Result<MirrorReport, SyncError> {
        let default_branch = self.codecommit.ensure_repository(name, self.create_missing).await?;
        let outcome = self.run_git(name, mirror).await;
        // Also after refused refs: CodeCommit will not delete its default branch, so the
        // default must follow the source before the next run can converge.
        let head = match &outcome {
            Ok(report) => report.source_head.as_deref(),
            Err(SyncError::Mirror { error: MirrorError::Refused { source_head, .. }, .. }) => {
                source_head.as_deref()
            }
            Err(_) => None,
        };
        let head = head.map(|h| h.trim_start_matches("refs/heads/"));
        if let Some(head) = head.filter(|h| default_branch.as_deref() != Some(*h)) {
            // A default branch that cannot follow is worth a warning, not a failed mirror:
            // the refs themselves are exact, and the next run tries again.
            if let Err(error) = self.codecommit.set_default_branch(name, head).await {
                tracing::warn!(%error, repository = name, head, "default branch not updated");
            }
        }
        outcome
    }

    /// Runs `work` on `name`'s job on a blocking thread: libgit2 blocks.
    async fn run_git<T: Send + 'static>(
        &self,
        name: &str,
        work: fn(&MirrorJob, &Path) -> Result<T, MirrorError>,
    ) -> Result<T, SyncError> {
        let job = self.job(name).await?;
        let work_dir = self.work_dir.clone();
        let repository = name.to_owned();
        tokio::task::spawn_blocking(move || work(&job, &work_dir))
            .await
            .map_err(|e| SyncError::Crashed {
                repository: repository.clone(),
                message: e.to_string(),
            })?
            .map_err(|error| SyncError::Mirror { repository, error })
    }

    async fn job(&self, name: &str) -> Result<MirrorJob, SyncError> {
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
        Ok(MirrorJob {
            name: name.to_owned(),
            source: Endpoint { url: repository.source.clone(), auth },
            target: self.codecommit.endpoint(name).await?,
        })
    }

    /// The SQS consumer: mirrors each message's repository in order and reports the
    /// messages that failed, so only they are retried (and reach the DLQ eventually).
    pub async fn handle_sqs(&self, event: SqsEvent) -> SqsBatchResponse {
        let mut response = SqsBatchResponse::default();
        let mut records = event.records.into_iter();
        for record in records.by_ref() {
            let id = record.message_id.clone().unwrap_or_default();
            let body = record.body.as_deref().unwrap_or_default();
            let request = match serde_json::from_str::<MirrorRequest>(body) {
                Ok(request) => request,
                Err(error) => {
                    // A message that can never parse would fail forever: drop it loudly.
                    tracing::error!(%error, message_id = id, "unreadable mirror request dropped");
                    continue;
                }
            };
            match self.mirror_repository(&request.repository).await {
                Ok(report) => tracing::info!(
                    repository = request.repository,
                    delivery = request.delivery,
                    created = report.created.len(),
                    updated = report.updated.len(),
                    deleted = report.deleted.len(),
                    unchanged = report.unchanged,
                    "mirrored"
                ),
                Err(error) => {
                    tracing::error!(%error, message_id = id, "mirror failed");
                    response.batch_item_failures.push(failure(id));
                    break;
                }
            }
        }
        // FIFO: messages after a failure must not be processed out of order, nor be
        // deleted as done: they are retried with it.
        response
            .batch_item_failures
            .extend(records.map(|r| failure(r.message_id.unwrap_or_default())));
        response
    }

    /// Queues every configured repository and measures its drift with a cheap refs
    /// comparison (no objects are fetched). The caller emits the metrics.
    pub async fn reconcile(&self, queue: &impl MirrorQueue, run_id: &str) -> ReconcileReport {
        let mut report = ReconcileReport::default();
        for name in self.repository_names() {
            let request = MirrorRequest {
                repository: name.clone(),
                delivery: format!("reconcile-{run_id}-{name}"),
            };
            if let Err(error) = queue.enqueue(&request).await {
                tracing::error!(%error, "reconcile could not queue");
                report.not_queued.push(error);
            }
            match self.drift(&name).await {
                Ok(metrics) => report.metrics.push(metrics),
                Err(error) => tracing::warn!(%error, repository = name, "drift not measured"),
            }
        }
        report
    }

    async fn drift(&self, name: &str) -> Result<Metrics, SyncError> {
        let drift = self.run_git(name, compare).await?;
        Ok(Metrics::new(METRICS_NAMESPACE)
            .dimension("Repository", name)
            .value("RefsDrifted", drift.plan.changes().count() as f64, Unit::Count)
            .value("MirrorLagSeconds", drift.lag_seconds as f64, Unit::Seconds))
    }
}

fn failure(message_id: String) -> BatchItemFailure {
    let mut failure = BatchItemFailure::default();
    failure.item_identifier = message_id;
    failure
}

/// `username:password` as HTTP Basic credentials.
fn basic_auth(secret: &SecretString) -> Option<Auth> {
    let (username, password) = pillar_auth::secrets::username_password(secret)?;
    Some(Auth::Basic { username, password })
}
