//! Mirroring many images: the configured ones (Lambda, `pillar image sync`) or a tag list
//! (`pillar image mirror`). One image failing never stops the others.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{StreamExt, stream};
use oci_client::secrets::RegistryAuth;
use pillar_auth::secrets::{Credentials, SECRET_FORMS, SecretCache, credentials};
use pillar_config::Image;
use pillar_telemetry::{Metrics, Unit};
use secrecy::ExposeSecret;
use serde::Serialize;

use crate::copy::{Copier, Status};
use crate::ecr::{Ecr, RepositorySettings};
use crate::error::MirrorError;
use crate::refs::{ImageRef, named};
use crate::registry::Registry;
use crate::select::{companion_of, needs_tag_list, select};
use crate::target::{Destination, Target};

/// What happened to one source tag (or digest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// The image was copied; `referrers` of it too (signatures, attestations, SBOMs).
    Copied {
        digest: String,
        bytes: u64,
        referrers: usize,
    },
    /// The target had the image; `referrers` of it that it lacked were copied.
    UpToDate {
        digest: String,
        bytes: u64,
        referrers: usize,
    },
    FilteredOut,
    Failed {
        reason: String,
        /// The source refused the credentials (its secret may have been rotated).
        #[serde(skip)]
        credentials_refused: bool,
    },
    /// Not attempted or stopped before the deadline; the next run picks it up.
    Left,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImageReport {
    pub source: String,
    pub target: String,
    #[serde(flatten)]
    pub outcome: Outcome,
}

impl std::fmt::Display for ImageReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (source, target) = (&self.source, &self.target);
        match &self.outcome {
            Outcome::Copied { digest, bytes, referrers } => {
                write!(f, "copied      {source} -> {target} ({digest}, {bytes} blob bytes")?;
                match referrers {
                    0 => write!(f, ")"),
                    n => write!(f, ", {n} referrers)"),
                }
            }
            Outcome::UpToDate { digest, referrers, .. } => {
                write!(f, "up to date  {source} -> {target} ({digest})")?;
                match referrers {
                    0 => Ok(()),
                    n => write!(f, "; {n} new referrers copied"),
                }
            }
            Outcome::FilteredOut => write!(f, "filtered    {source}"),
            Outcome::Failed { reason, .. } => {
                write!(f, "FAILED      {source} -> {target}: {reason}")
            }
            Outcome::Left => write!(f, "left        {source} (deadline reached; next run resumes)"),
        }
    }
}

/// Everything one run did.
#[derive(Debug, Default, Serialize)]
pub struct SyncReport {
    pub images: Vec<ImageReport>,
    pub seconds: f64,
}

impl SyncReport {
    fn count(&self, wanted: fn(&Outcome) -> bool) -> usize {
        self.images.iter().filter(|i| wanted(&i.outcome)).count()
    }

    pub fn failed(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Failed { .. }))
    }

    pub fn left(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Left))
    }

    pub fn copied(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Copied { .. }))
    }

    pub fn bytes(&self) -> u64 {
        self.images
            .iter()
            .map(|i| match i.outcome {
                Outcome::Copied { bytes, .. } | Outcome::UpToDate { bytes, .. } => bytes,
                _ => 0,
            })
            .sum()
    }

    /// A run that failed before any image could be tried (an event naming an image the
    /// manifest lacks): reported, and counted, like a failed image.
    pub fn failed_request(what: &str, error: &MirrorError) -> Self {
        let outcome = failed(error);
        let image = ImageReport { source: what.to_owned(), target: String::new(), outcome };
        Self { images: vec![image], seconds: 0.0 }
    }

    /// EMF metrics. `MirrorLagSeconds` is how long this run took to bring the copied images
    /// over (0 when nothing needed copying): a change waits at most the schedule period plus it.
    pub fn metrics(&self) -> Metrics {
        let lag = if self.copied() > 0 { self.seconds } else { 0.0 };
        Metrics::new("Pillars/DockerMirror")
            .value("ImagesCopied", self.copied() as f64, Unit::Count)
            .value("BytesCopied", self.bytes() as f64, Unit::Bytes)
            .value("ImagesFailed", self.failed() as f64, Unit::Count)
            .value("ImagesLeft", self.left() as f64, Unit::Count)
            .value("MirrorLagSeconds", lag, Unit::Seconds)
    }
}

/// A tag (or digest) to copy from a source repository into a destination.
#[derive(Debug, Clone)]
pub struct Job {
    pub source: ImageRef,
    pub selector: String,
    /// The tag in the target; `None` copies by digest only.
    pub target_tag: Option<String>,
}

impl Job {
    /// `tag` of `source`, copied under the same tag.
    pub fn tag(source: &ImageRef, tag: String) -> Self {
        Self { source: source.clone(), selector: tag.clone(), target_tag: Some(tag) }
    }
}

/// The mirror: clients built once, shared by every image of a run.
#[derive(Debug)]
pub struct Mirror {
    pub copier: Copier,
    /// Images copied at the same time.
    pub image_concurrency: usize,
    /// Plain HTTP allowed to registries off loopback.
    pub insecure: bool,
    /// No new work starts this close to a deadline.
    pub deadline_margin: Duration,
    ecr: Option<Arc<Ecr>>,
    secrets: Option<Arc<SecretCache>>,
}

/// Status checks (a HEAD on each side) run at the same time.
const CHECK_CONCURRENCY: usize = 16;

/// The least share of a run an image gets, however many there are.
const MIN_SHARE: Duration = Duration::from_secs(30);

/// How long before the deadline no new image is started, unless set otherwise.
const DEADLINE_MARGIN: Duration = Duration::from_secs(20);

impl Mirror {
    pub fn new(ecr: Option<Arc<Ecr>>, secrets: Option<Arc<SecretCache>>) -> Self {
        Self {
            copier: Copier::default(),
            image_concurrency: 2,
            insecure: false,
            deadline_margin: DEADLINE_MARGIN,
            ecr,
            secrets,
        }
    }

    /// ECR and Secrets Manager clients from the AWS configuration.
    pub fn from_aws(aws: &aws_config::SdkConfig, secret_ttl: Duration) -> Self {
        let ecr = Ecr::new(aws_sdk_ecr::Client::new(aws));
        let secrets = SecretCache::new(aws_sdk_secretsmanager::Client::new(aws), secret_ttl);
        Self::new(Some(Arc::new(ecr)), Some(Arc::new(secrets)))
    }

    /// The ECR client, when one was configured.
    pub(crate) fn ecr_client(&self) -> Option<Arc<Ecr>> {
        self.ecr.clone()
    }

    /// The ECR target, or an error saying it was not configured.
    pub fn ecr(
        &self,
        repository: &str,
        settings: RepositorySettings,
    ) -> Result<Destination, MirrorError> {
        let ecr = self.ecr.clone().ok_or_else(|| MirrorError::Ecr {
            operation: "setup",
            repository: repository.to_owned(),
            message: "no ECR client was configured".to_owned(),
            retryable: false,
        })?;
        Ok(Destination { target: Target::Ecr(ecr), repository: repository.to_owned(), settings })
    }

    /// A registry client for `host` with `auth`.
    pub fn registry(&self, host: &str, auth: RegistryAuth) -> Arc<Registry> {
        Arc::new(Registry::new(host, auth, self.insecure))
    }

    pub(crate) async fn source_auth(&self, image: &Image) -> Result<RegistryAuth, MirrorError> {
        let Some(secret) = &image.credentials_secret else { return Ok(RegistryAuth::Anonymous) };
        let failure =
            |message: String| MirrorError::Credentials { secret: secret.clone(), message };
        let secrets =
            self.secrets.as_ref().ok_or_else(|| failure("no Secrets Manager client".into()))?;
        let value = secrets.get(secret).await.map_err(|e| failure(e.to_string()))?;
        match credentials(&value) {
            Some(Credentials::Basic { username, password }) => {
                Ok(RegistryAuth::Basic(username, password.expose_secret().to_owned()))
            }
            Some(Credentials::Bearer(token)) => {
                Ok(RegistryAuth::Bearer(token.expose_secret().to_owned()))
            }
            None => Err(failure(format!("must hold {SECRET_FORMS}"))),
        }
    }

    /// Every configured image, until `deadline` (None: no deadline), `image_concurrency` at
    /// a time. With a deadline each image has a fair share of the run, so one huge or slow
    /// image cannot keep the others from their turn: cut at the end of its share, it goes
    /// to the back of the queue and resumes when the others had theirs (ECR uploads resume
    /// where they stopped), in this run while time is left, else in the next.
    pub async fn sync(&self, images: &[&Image], deadline: Option<Instant>) -> SyncReport {
        let started = Instant::now();
        let slots = self.image_concurrency.max(1);
        let share = deadline.map(|d| {
            let turns = images.len().div_ceil(slots).max(1);
            (d.saturating_duration_since(started) / u32::try_from(turns).unwrap_or(u32::MAX))
                .max(MIN_SHARE)
        });
        let queue =
            std::sync::Mutex::new((0..images.len()).collect::<std::collections::VecDeque<_>>());
        let reports =
            std::sync::Mutex::new((0..images.len()).map(|_| Vec::new()).collect::<Vec<_>>());
        // A slot takes the next image as soon as it is free, whatever the others do.
        let slot = || async {
            loop {
                let Some(n) = queue.lock().expect("not poisoned").pop_front() else { break };
                // Its share counts from its start; the margin stays the run's.
                let own = deadline
                    .zip(share)
                    .map(|(run, share)| run.min(Instant::now() + share + self.deadline_margin));
                let report = self.sync_image(images[n], own).await;
                let now = Instant::now() + self.deadline_margin;
                let share_used_up =
                    own.zip(deadline).is_some_and(|(own, run)| now >= own && now < run);
                let left = report.iter().any(|r| matches!(r.outcome, Outcome::Left));
                reports.lock().expect("not poisoned")[n] = report;
                if left && share_used_up {
                    queue.lock().expect("not poisoned").push_back(n);
                }
            }
        };
        futures_util::future::join_all((0..slots).map(|_| slot())).await;
        let images = reports.into_inner().expect("not poisoned").concat();
        SyncReport { images, seconds: started.elapsed().as_secs_f64() }
    }

    /// One image; when the source refused its credentials, once more with the secret read
    /// again (it may have been rotated since it was cached).
    async fn sync_image(&self, image: &Image, deadline: Option<Instant>) -> Vec<ImageReport> {
        let reports = self.sync_image_once(image, deadline).await;
        let refused = reports
            .iter()
            .any(|r| matches!(r.outcome, Outcome::Failed { credentials_refused: true, .. }));
        match (&image.credentials_secret, &self.secrets) {
            (Some(secret), Some(secrets)) if refused => {
                tracing::warn!(
                    source = image.source,
                    secret,
                    "credentials refused; reading the secret again"
                );
                secrets.forget(secret).await;
                self.sync_image_once(image, deadline).await
            }
            _ => reports,
        }
    }

    async fn sync_image_once(&self, image: &Image, deadline: Option<Instant>) -> Vec<ImageReport> {
        let settings = RepositorySettings::of(image);
        // When its tags cannot even be listed: a report for each explicit tag, and one for
        // the tags the patterns would have selected.
        let entry = |outcome: Outcome| {
            let target = format!("ecr:{}", image.ecr_repository);
            let report = |source: String, target: String| ImageReport {
                source,
                target,
                outcome: outcome.clone(),
            };
            let mut reports: Vec<ImageReport> = image
                .tags
                .iter()
                .map(|tag| report(named(&image.source, tag), named(&target, tag)))
                .collect();
            if reports.is_empty() || needs_tag_list(image) {
                reports.push(report(image.source.clone(), target.clone()));
            }
            reports
        };
        let prepared = async {
            let source = ImageRef::parse(&image.source)?;
            let to = self.ecr(&image.ecr_repository, settings)?;
            let registry = self.registry(source.host(), self.source_auth(image).await?);
            Ok::<_, MirrorError>((source, to, registry))
        };
        let (source, to, registry) = match self.in_time(deadline, prepared).await {
            None => return entry(Outcome::Left),
            Some(Ok(parts)) => parts,
            Some(Err(error)) => return entry(failed(&error)),
        };
        let copier = self.copier.until(deadline);
        let listed = self.in_time(deadline, copier.retry.run(|| registry.tags(&source.repository)));
        let available = match listed.await {
            None => return entry(Outcome::Left),
            Some(Ok(tags)) => tags,
            Some(Err(error)) if !needs_tag_list(image) => {
                tracing::warn!(source = image.source, %error, "tags not listed; explicit tags only");
                Vec::new()
            }
            Some(Err(error)) => {
                return entry(Outcome::failure(format!("listing tags: {error}"), &error));
            }
        };
        let selection = select(image, &available);
        let jobs = selection.tags.iter().map(|tag| Job::tag(&source, tag.clone()));
        let mut reports = self.mirror(&registry, jobs.collect(), &to, deadline).await;
        let companions = companions(&available, &reports);
        let jobs = companions.into_iter().map(|tag| Job::tag(&source, tag));
        reports.extend(self.mirror(&registry, jobs.collect(), &to, deadline).await);
        reports.extend(selection.filtered_out.into_iter().map(|tag| ImageReport {
            source: named(&source, &tag),
            target: to.to_string(),
            outcome: Outcome::FilteredOut,
        }));
        reports
    }

    /// `work`, if it is done `deadline_margin` before `deadline`; `None` if it could not be.
    async fn in_time<T>(
        &self,
        deadline: Option<Instant>,
        work: impl Future<Output = T>,
    ) -> Option<T> {
        match deadline.map(|d| d.saturating_duration_since(Instant::now())) {
            None => Some(work.await),
            Some(left) if left <= self.deadline_margin => None,
            Some(left) => tokio::time::timeout(left - self.deadline_margin, work).await.ok(),
        }
    }

    /// Copies `jobs` from `source` into `to`: first every job's status, many at a time
    /// (HEADs are cheap, and free on Docker Hub), with the referrers an up-to-date image's
    /// target lacks; then the copies, a bounded number at a time. Everything stops before
    /// the deadline: what it cuts short is reported `Left` and has nothing tagged.
    pub async fn mirror(
        &self,
        source: &Registry,
        jobs: Vec<Job>,
        to: &Destination,
        deadline: Option<Instant>,
    ) -> Vec<ImageReport> {
        let copier = &self.copier.until(deadline);
        let checked: Vec<_> = stream::iter(jobs)
            .map(|job| async move {
                let reference = job.source.at(&job.selector);
                let check = async {
                    let status =
                        copier.status(source, &reference, to, job.target_tag.as_deref()).await?;
                    let referrers = match &status {
                        Status::UpToDate(digest) => {
                            copier.missing_referrers(source, &reference, to, digest).await?
                        }
                        Status::Changed(_) => Vec::new(),
                    };
                    Ok::<_, MirrorError>((status, referrers))
                };
                let checked = self.in_time(deadline, check).await;
                (job, reference, checked)
            })
            .buffered(CHECK_CONCURRENCY)
            .collect()
            .await;
        let copies = checked.into_iter().map(|(job, reference, checked)| async move {
            // Without a target tag the source names a digest, copied by digest.
            let target = named(to, job.target_tag.as_deref().unwrap_or(&job.selector));
            let repository = format!("{}/{}", reference.registry(), reference.repository());
            let source_name = named(repository, &job.selector);
            let report = |outcome| ImageReport { source: source_name, target, outcome };
            let tag = job.target_tag.as_deref();
            report(match checked {
                None => Outcome::Left,
                Some(Err(error)) => failed(&error),
                Some(Ok((Status::UpToDate(digest), referrers))) if referrers.is_empty() => {
                    Outcome::UpToDate { digest, bytes: 0, referrers: 0 }
                }
                Some(Ok((Status::UpToDate(digest), referrers))) => {
                    let copy = copier.copy_referrers(source, &reference, to, &referrers);
                    match self.in_time(deadline, copy).await {
                        None => Outcome::Left,
                        Some(Ok(bytes)) => {
                            Outcome::UpToDate { digest, bytes, referrers: referrers.len() }
                        }
                        Some(Err(error)) => failed(&error),
                    }
                }
                Some(Ok((Status::Changed(digest), _))) => {
                    let copy = copier.copy(source, &reference, to, tag, &digest);
                    match self.in_time(deadline, copy).await {
                        None => Outcome::Left,
                        Some(Ok((bytes, referrers))) => {
                            Outcome::Copied { digest, bytes, referrers }
                        }
                        Some(Err(error)) => failed(&error),
                    }
                }
            })
        });
        in_order(copies, self.image_concurrency.max(1)).await
    }
}

/// `work`, `slots` at a time, each freed slot taking the next at once (a slow one started
/// earlier holds only its own slot); the results in the order of `work`.
async fn in_order<T>(
    work: impl IntoIterator<Item = impl Future<Output = T>>,
    slots: usize,
) -> Vec<T> {
    let mut done: Vec<(usize, T)> = stream::iter(work.into_iter().enumerate())
        .map(|(n, future)| async move { (n, future.await) })
        .buffer_unordered(slots)
        .collect()
        .await;
    done.sort_by_key(|(n, _)| *n);
    done.into_iter().map(|(_, result)| result).collect()
}

/// The configured images an event asks for: `{"images": [...]}` naming sources or ECR
/// repositories, or every image for any other event (the schedule's).
pub fn requested<'a>(
    images: &'a [Image],
    event: &serde_json::Value,
) -> Result<Vec<&'a Image>, MirrorError> {
    let Some(names) = event.get("images") else { return Ok(images.iter().collect()) };
    let names: Vec<&str> = names
        .as_array()
        .map(|list| list.iter().filter_map(serde_json::Value::as_str).collect())
        .unwrap_or_default();
    names
        .iter()
        .map(|name| {
            images.iter().find(|i| i.source == *name || i.ecr_repository == *name).ok_or_else(
                || MirrorError::NotFound {
                    what: format!("image `{name}` in the deployment manifest (name a source or an ECR repository)"),
                },
            )
        })
        .collect()
}

fn failed(error: &MirrorError) -> Outcome {
    Outcome::failure(error.to_string(), error)
}

impl Outcome {
    /// `Failed` because of `error`, said as `reason`.
    fn failure(reason: String, error: &MirrorError) -> Self {
        let credentials_refused = matches!(error, MirrorError::Unauthorized { .. });
        Self::Failed { reason, credentials_refused }
    }
}

/// The companion tags in `available` (signatures, attestations, SBOMs) of images in `reports`.
fn companions(available: &[String], reports: &[ImageReport]) -> Vec<String> {
    let digests: Vec<&str> = reports
        .iter()
        .filter_map(|r| match &r.outcome {
            Outcome::Copied { digest, .. } | Outcome::UpToDate { digest, .. } => {
                Some(digest.as_str())
            }
            _ => None,
        })
        .collect();
    available
        .iter()
        .filter(|tag| companion_of(tag).is_some_and(|d| digests.contains(&d.as_str())))
        .cloned()
        .collect()
}
