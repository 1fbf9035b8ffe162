//! The mirror engine, as the story of one run: list both ends, fetch what the cache lacks
//! (`fetch`), plan the difference with its safeguards (mass deletions held, old tips kept),
//! push it (`push`). A ref the target refuses is reported and holds nothing else back.

mod fetch;
mod push;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use git2::{Oid, Repository};

pub use crate::error::MirrorError;
pub use crate::report::{MirrorReport, Refusal, TransferProgress};
pub use crate::transport::{Service, Side};

use crate::cache::{cache_error, open_cache};
use crate::local;
use crate::pack::{Objects, PackPlan, StreamedPack};
use crate::protocol::Advertisement;
use crate::refs::{MAX_REFS_PER_PUSH, RefChange, RefName, RefPlan, mirrored};
use crate::safeguards::{KeptRef, Safeguards, kept_refs};
use crate::smart_http::SmartHttp;
use crate::task::{before, blocking, elapsed_ms};
use crate::transport::{Endpoint, Location, configure_libgit2};
use crate::workdir::WorkDir;
use fetch::Listed;
use push::{Pushing, batch_refusal, outcomes, refusals_reported};

/// One repository to mirror: a name for its cache and lock, and both ends.
#[derive(Debug, Clone)]
pub struct MirrorJob {
    pub name: String,
    pub source: Endpoint,
    pub target: Endpoint,
    pub safeguards: Safeguards,
}

impl MirrorJob {
    /// The job with each end where its listing was redirected, if one was.
    fn following(&self, source: &Advertisement, target: &Advertisement) -> Option<Self> {
        if source.redirected.is_none() && target.redirected.is_none() {
            return None;
        }
        Some(Self {
            source: source.redirected.clone().unwrap_or_else(|| self.source.clone()),
            target: target.redirected.clone().unwrap_or_else(|| self.target.clone()),
            ..self.clone()
        })
    }
}

/// How far the target is behind the source, from their ref listings alone.
pub type Drift = RefPlan;

/// Runs mirrors; built once per process (its HTTP client pools connections).
#[derive(Debug, Clone, Default)]
pub struct GitMirror {
    http: SmartHttp,
    progress: Option<Arc<TransferProgress>>,
}

impl GitMirror {
    pub fn new() -> Self {
        configure_libgit2();
        Self { http: SmartHttp::new(), progress: None }
    }

    /// Requests fail after `idle` without progress (default [`crate::smart_http::IDLE_TIMEOUT`]).
    pub fn with_idle_timeout(self, idle: Duration) -> Self {
        Self { http: self.http.with_idle_timeout(idle), ..self }
    }

    /// Reports transfers into `progress` (one mirror at a time), for a terminal to show.
    pub fn with_progress(self, progress: Arc<TransferProgress>) -> Self {
        Self { progress: Some(progress), ..self }
    }

    /// Mirrors `job.source` into `job.target` through the cache `work/<name>.git`, held
    /// locked for the duration. With a `deadline`, stops before it (the cache keeps what
    /// was fetched; what was pushed stays pushed). A push that failed on the way (the
    /// connection closed before the target answered, a 429 or 5xx) is tried again from new
    /// listings, so nothing is pushed twice and nothing is assumed; the cache makes the
    /// second pass cheap.
    pub async fn run(
        &self,
        job: &MirrorJob,
        work: &WorkDir,
        deadline: Option<Instant>,
    ) -> Result<MirrorReport, MirrorError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let error = match self.run_once(job, work, deadline).await {
                Err(
                    error @ (MirrorError::Interrupted { side: Side::Target, .. }
                    | MirrorError::Http { side: Side::Target, .. }),
                ) => error,
                other => return other,
            };
            let wait = crate::smart_http::retry_delay(&error, attempt)
                .filter(|_| attempt < PASSES)
                .filter(|wait| deadline.is_none_or(|d| Instant::now() + *wait < d));
            let Some(wait) = wait else { return Err(error) };
            tracing::warn!(repository = job.name, %error, attempt, "push failed on the way; mirroring again");
            tokio::time::sleep(wait).await;
        }
    }

    async fn run_once(
        &self,
        job: &MirrorJob,
        work: &WorkDir,
        deadline: Option<Instant>,
    ) -> Result<MirrorReport, MirrorError> {
        let started = Instant::now();
        let progress = self.progress.clone().unwrap_or_default();
        let cache = {
            let (work, name) = (work.clone(), job.name.clone());
            let locked = blocking(move || work.lock(&name).map_err(MirrorError::from));
            before(deadline, "waiting for the cache lock", locked).await?
        };
        let (source, target) = futures_util::try_join!(
            self.list(&job.source, Side::Source, Service::Read, deadline),
            self.list(&job.target, Side::Target, Service::Push, deadline),
        )?;
        // Redirected listings: the rest of the run goes where they led.
        let followed = job.following(&source, &target);
        let job = followed.as_ref().unwrap_or(job);
        let source_refs = mirrored(source.refs);
        let target_refs = mirrored(target.refs.clone());
        tracing::debug!(
            repository = job.name,
            source = source_refs.len(),
            target = target_refs.len(),
            "both sides listed"
        );
        let listed = Listed {
            source: &source_refs,
            target: &target_refs,
            offered: &source.capabilities,
            head: source.head.as_ref(),
        };
        let mut plan = RefPlan::between(&source_refs, &target_refs);
        if let Some(head) = &source.head {
            plan.push_first(head);
        }
        let held = job.safeguards.hold_mass_deletion(&mut plan, target_refs.len());
        if !held.is_empty() {
            tracing::warn!(
                repository = job.name,
                held = held.len(),
                target = target_refs.len(),
                "mass deletion held: none of these deletions is made"
            );
        }
        let sent_before = progress.bytes_sent.load(Ordering::Relaxed);
        let to =
            Pushing { job, cache: &cache.path, target: &target, progress: &progress, deadline };
        // An empty target takes the whole pack a source sends when the cache has nothing to
        // offer: it goes to the target as it arrives, while the cache indexes it (the target
        // checks it before any ref moves), so a cold mirror costs the slower of the fetch
        // and the target's indexing, not both in turn.
        let one_pass = target.refs.is_empty()
            && !plan.upserts.is_empty()
            && matches!(job.target.location(), Ok(Location::Http));
        let first_batch: Vec<RefChange> =
            plan.upserts.iter().take(MAX_REFS_PER_PUSH).cloned().collect();
        let (tee, pack) = match one_pass {
            true => {
                let (sender, receiver) = tokio::sync::mpsc::channel(16);
                (Some(sender), Some(receiver))
            }
            false => (None, None),
        };
        let streaming = async {
            let mut rest = pack?;
            let first = rest.recv().await?;
            let objects = Objects::Stream(StreamedPack { first, rest });
            Some(self.push_once(&to, &first_batch, objects).await)
        };
        let (fetched, streamed) = tokio::join!(
            self.fetch(&cache.path, job, &listed, &progress, deadline, tee),
            streaming
        );
        let fetched = match fetched {
            Err(MirrorError::WorkDirFull { .. }) => {
                tracing::warn!(
                    repository = job.name,
                    "work directory full; evicting every other cache"
                );
                work.evict_all_but(&job.name);
                self.fetch(&cache.path, job, &listed, &progress, deadline, None).await?
            }
            other => other?,
        };
        let fetch_ms = elapsed_ms(started);
        tracing::debug!(
            repository = job.name,
            bytes = fetched.bytes,
            in_sync = fetched.in_sync,
            streamed = streamed.is_some(),
            "fetched"
        );
        let lfs = {
            let (cache, refs) = (cache.path.clone(), source_refs.clone());
            blocking(move || {
                let cache = open_cache(&cache)?;
                Ok(crate::lfs::tips_using_lfs(&cache, &refs))
            })
            .await?
        };
        if !lfs.is_empty() {
            tracing::warn!(
                repository = job.name,
                refs = lfs.len(),
                "Git LFS content is not mirrored"
            );
        }
        let mut report = MirrorReport {
            lfs,
            unchanged: plan.unchanged,
            source_head: source.head,
            fetched: fetched.downloaded,
            bytes_from_source: fetched.bytes,
            held: held.into_iter().map(|c| c.name).collect(),
            fetch_ms,
            ..MirrorReport::default()
        };
        let mut haves: Vec<Oid> = target.refs.iter().map(|(_, oid)| *oid).collect();
        let streamed_rest = match streamed {
            None => None,
            Some(answer) => {
                report.forwarded = true;
                report.streamed = true;
                let answer = refusals_reported(answer)?;
                Some(self.record_forwarded(&first_batch, &answer, &mut haves, &mut report))
            }
        };
        self.keep_old_tips(&to, &mut plan, &mut report).await?;
        let today = time::OffsetDateTime::now_utc().date();
        let expired: Vec<RefChange> = kept_refs(&target.refs)
            .into_iter()
            .filter(|kept| kept.expired(today, job.safeguards.kept_days))
            .map(|kept| kept.removal())
            .collect();
        for batch in plan.deletions.chunks(MAX_REFS_PER_PUSH) {
            self.push(&to, batch, &haves, &mut report).await?;
        }
        for batch in expired.chunks(MAX_REFS_PER_PUSH) {
            match self.push_once(&to, batch, Objects::None).await {
                Ok(answer) => {
                    report.expired +=
                        outcomes(&answer, batch).iter().filter(|o| o.is_none()).count();
                }
                // Removed by a later run: nothing is lost by keeping them longer.
                Err(error) if batch_refusal(&error).is_some() => {
                    tracing::warn!(repository = job.name, %error, "expired kept tips not removed");
                }
                Err(error) => return Err(error),
            }
        }
        // The target had all the cache had: the pack just fetched is all it lacks, so it
        // goes as it came with the first batch (no walk, no delta search); later batches
        // need no new object. What the target refuses of that is pushed again with a pack
        // built for it. (A download that left no single pack has nothing to forward.)
        let forwardable = fetched.in_sync && (fetched.pack.is_some() || !fetched.downloaded);
        let mut pack = fetched.pack;
        let mut streamed_rest = streamed_rest;
        for batch in plan.upserts.chunks(MAX_REFS_PER_PUSH) {
            let mut rest = batch.to_vec();
            if let Some(refused) = streamed_rest.take() {
                rest = refused;
            } else if fetched.streamed || forwardable {
                // Once streamed, later batches need no new object either.
                let pack = pack.take().filter(|_| !fetched.streamed);
                let objects = pack.map_or(Objects::Build(PackPlan::default()), Objects::Forward);
                report.forwarded |= matches!(objects, Objects::Forward(_));
                rest = self.push_forwarded(&to, batch, objects, &mut haves, &mut report).await?;
            }
            if !rest.is_empty() {
                let accepted = self.push(&to, &rest, &haves, &mut report).await?;
                haves.extend(accepted);
            }
        }
        report.bytes_to_target = progress.bytes_sent.load(Ordering::Relaxed) - sent_before;
        report.push_ms = elapsed_ms(started) - fetch_ms;
        work.fit(&job.name);
        tracing::info!(
            repository = job.name,
            deletions = plan.deletions.len(),
            upserts = plan.upserts.len(),
            refused = report.refused.len(),
            unchanged = plan.unchanged,
            fetch_ms,
            push_ms = report.push_ms,
            "mirror pass"
        );
        Ok(report)
    }

    /// The old tips kept in `target`, oldest first.
    pub async fn kept(&self, target: &Endpoint) -> Result<Vec<KeptRef>, MirrorError> {
        let listed = self.list(target, Side::Target, Service::Read, None).await?;
        Ok(kept_refs(&listed.refs))
    }

    /// Puts a kept tip back under its original name in `target`: `which` is its kept name,
    /// or an original name (then its newest kept tip). What that name points at now is kept
    /// first, like any change a mirror makes. Returns the tip restored and what was done.
    pub async fn restore(
        &self,
        target: &Endpoint,
        which: &str,
    ) -> Result<(KeptRef, MirrorReport), MirrorError> {
        let listed = self.list(target, Side::Target, Service::Push, None).await?;
        let kept = kept_refs(&listed.refs)
            .into_iter()
            .rfind(|k| k.name == which || k.original == which)
            .ok_or_else(|| MirrorError::NotKept {
                url: target.display_url(),
                name: which.to_owned(),
            })?;
        let current = listed.refs.iter().find(|(name, _)| *name == kept.original).map(|(_, o)| *o);
        let mut report = MirrorReport::default();
        if current == Some(kept.oid) {
            report.unchanged = 1;
            return Ok((kept, report));
        }
        // Every object is in the target already: an empty cache builds the empty pack.
        let scratch = tempfile::tempdir().map_err(|e| MirrorError::Cache {
            path: std::env::temp_dir(),
            message: e.to_string(),
        })?;
        let cache = scratch.path().join("restore.git");
        Repository::init_bare(&cache).map_err(|e| cache_error(&cache, &e))?;
        let job = MirrorJob {
            name: "restore".to_owned(),
            source: target.clone(),
            target: target.clone(),
            safeguards: Safeguards::default(),
        };
        let progress = Arc::new(TransferProgress::default());
        let to = Pushing {
            job: &job,
            cache: &cache,
            target: &listed,
            progress: &progress,
            deadline: None,
        };
        let change = RefChange { name: kept.original.clone(), old: current, new: Some(kept.oid) };
        let mut plan = RefPlan { upserts: vec![change], ..RefPlan::default() };
        self.keep_old_tips(&to, &mut plan, &mut report).await?;
        if !plan.upserts.is_empty() {
            let answer =
                self.push_once(&to, &plan.upserts, Objects::Build(PackPlan::default())).await?;
            report.record(&plan.upserts, outcomes(&answer, &plan.upserts));
        }
        Ok((kept, report))
    }

    /// The source's branches and tags that use Git LFS, read from the cache after
    /// fetching what it lacks (nothing is pushed).
    pub async fn lfs_in_source(
        &self,
        job: &MirrorJob,
        work: &WorkDir,
    ) -> Result<Vec<RefName>, MirrorError> {
        let cache = {
            let (work, name) = (work.clone(), job.name.clone());
            blocking(move || work.lock(&name).map_err(MirrorError::from)).await?
        };
        let (source, target) = futures_util::try_join!(
            self.list(&job.source, Side::Source, Service::Read, None),
            self.list(&job.target, Side::Target, Service::Read, None),
        )?;
        let (source_refs, target_refs) = (mirrored(source.refs), mirrored(target.refs));
        let listed = Listed {
            source: &source_refs,
            target: &target_refs,
            offered: &source.capabilities,
            head: source.head.as_ref(),
        };
        let progress = self.progress.clone().unwrap_or_default();
        self.fetch(&cache.path, job, &listed, &progress, None, None).await?;
        let path = cache.path.clone();
        blocking(move || Ok(crate::lfs::tips_using_lfs(&open_cache(&path)?, &source_refs))).await
    }

    /// Compares the source's and the target's branches and tags without fetching objects
    /// or touching a cache.
    pub async fn compare(
        &self,
        job: &MirrorJob,
        deadline: Option<Instant>,
    ) -> Result<Drift, MirrorError> {
        let (source, target) = futures_util::try_join!(
            self.list(&job.source, Side::Source, Service::Read, deadline),
            self.list(&job.target, Side::Target, Service::Read, deadline),
        )?;
        Ok(RefPlan::between(&mirrored(source.refs), &mirrored(target.refs)))
    }

    /// What `endpoint` advertises for `service`: over smart HTTP, or read from a local
    /// repository.
    pub async fn list(
        &self,
        endpoint: &Endpoint,
        side: Side,
        service: Service,
        deadline: Option<Instant>,
    ) -> Result<Advertisement, MirrorError> {
        let location = endpoint.location().map_err(|reason| MirrorError::Protocol {
            side,
            url: endpoint.display_url(),
            message: reason,
        })?;
        let listed = match location {
            Location::Http => {
                let service = match service {
                    Service::Read => "git-upload-pack",
                    Service::Push => "git-receive-pack",
                };
                before(deadline, "listing refs", self.http.advertisement(endpoint, side, service))
                    .await
            }
            Location::Local(path) => {
                let url = endpoint.display_url();
                let read = blocking(move || {
                    local::advertisement(&path).map_err(|e| MirrorError::Unreachable {
                        side,
                        url,
                        error: e.message().to_owned(),
                    })
                });
                before(deadline, "listing refs", read).await
            }
        }?;
        Ok(listed)
    }
}

/// Passes of one mirror run when a push fails on the way.
const PASSES: u32 = 3;
