//! The mirror engine: bring a bare cache up to date with the source (our upload-pack
//! client over HTTP, libgit2's fetch otherwise),
//! compare the source's branches and tags with the target's, and push only the difference
//! (our receive-pack client): deletions first, then creates and updates, in batches, each
//! ref's outcome read. A ref the target refuses is reported and holds nothing else back.

use std::cell::Cell;
use std::collections::{BTreeSet, BinaryHeap, HashSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use git2::{FetchOptions, Oid, Repository};
use serde::Serialize;

use crate::local;
use crate::pack::{self, PackPlan};
use crate::protocol::{Advertisement, Command, PackDemux, Report, encode_commands, encode_fetch};
use crate::refs::{MAX_REFS_PER_PUSH, RefChange, RefMap, RefName, RefPlan, mirrored};
use crate::safeguards::{KeptRef, Safeguards, kept_refs};
use crate::smart_http::SmartHttp;
use crate::transport::{Endpoint, Location, configure_libgit2};
use crate::workdir::{LockError, WorkDir};

/// What a mirror run did, or would report to an operator.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct MirrorReport {
    pub created: Vec<RefName>,
    pub updated: Vec<RefName>,
    pub deleted: Vec<RefName>,
    /// Changes the target refused, with its reasons; everything else went through.
    pub refused: Vec<Refusal>,
    /// Deletions not made: together they were a mass deletion (see [`Safeguards`]).
    pub held: Vec<RefName>,
    /// Old tips this run kept before moving a ref back or deleting it.
    pub kept: Vec<KeptRef>,
    /// Kept tips older than their time, removed.
    pub expired: usize,
    /// Branches and tags whose files go through Git LFS: the mirror holds only their
    /// pointer files, not the content.
    pub lfs: Vec<RefName>,
    pub unchanged: usize,
    /// The branch the source's HEAD names, if it has one.
    pub source_head: Option<RefName>,
    /// Whether any objects had to be fetched from the source.
    pub fetched: bool,
    /// Whether the pack fetched went to the target as it came (the target was in sync),
    /// rather than a pack built for the push.
    pub forwarded: bool,
    /// Bytes read from the source, and pack bytes sent to the target.
    pub bytes_from_source: u64,
    pub bytes_to_target: u64,
    /// Milliseconds spent listing both sides and fetching, then pushing.
    pub fetch_ms: u64,
    pub push_ms: u64,
}

/// How far a mirror has got, for whoever shows it; updated as objects move.
#[derive(Debug, Default)]
pub struct TransferProgress {
    pub objects_received: AtomicU64,
    pub objects_total: AtomicU64,
    pub bytes_received: AtomicU64,
    pub bytes_sent: AtomicU64,
}

/// A ref change the target would not take.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    pub name: RefName,
    pub reason: String,
}

impl MirrorReport {
    fn accept(&mut self, change: &RefChange) {
        let list = match (change.old, change.new) {
            (None, _) => &mut self.created,
            (_, None) => &mut self.deleted,
            _ => &mut self.updated,
        };
        list.push(change.name.clone());
    }

    fn refuse(&mut self, change: &RefChange, reason: impl Into<String>) {
        self.refused.push(Refusal { name: change.name.clone(), reason: reason.into() });
    }

    /// The held deletions for a message: the first few, and how many more.
    pub fn held_names(&self) -> String {
        const SHOWN: usize = 5;
        let mut shown: Vec<String> =
            self.held.iter().take(SHOWN).map(ToString::to_string).collect();
        if self.held.len() > SHOWN {
            shown.push(format!("and {} more", self.held.len() - SHOWN));
        }
        shown.join(", ")
    }

    /// `a (why), b (why)`: the refused refs for a message.
    pub fn refusals(&self) -> String {
        let shown: Vec<String> =
            self.refused.iter().map(|r| format!("{} ({})", r.name, r.reason)).collect();
        shown.join(", ")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("the cache {} is unusable: {message}; delete it and run again", path.display())]
    Cache { path: PathBuf, message: String },
    #[error(
        "the work directory {} is full ({message}) even with every other cache evicted: the cache of `{repository}` alone needs more; give the work directory more room (Lambda: raise the function's ephemeral storage; CLI: free disk space or use another --work-dir)",
        path.display()
    )]
    WorkDirFull { path: PathBuf, repository: String, message: String },
    #[error("{side} {url} refused our credentials: {hint}")]
    CredentialsRefused { side: Side, url: String, hint: &'static str },
    #[error("cannot reach {side} {url}: {error}")]
    Unreachable { side: Side, url: String, error: String },
    #[error("{side} {url}: the connection closed before an answer: {error}")]
    Interrupted { side: Side, url: String, error: String },
    #[error("{side} {url} answered HTTP {status}: {message}")]
    Http { side: Side, url: String, status: u16, message: String, retry_after: Option<u64> },
    #[error("{side} {url}: no repository there; check the URL and that the repository exists")]
    NotFound { side: Side, url: String },
    #[error("{side} {url}: {message}")]
    Protocol { side: Side, url: String, message: String },
    #[error("fetching from {url} failed: {error}")]
    Fetch { url: String, error: String },
    #[error("pushing to {url} failed: {error}")]
    Push { url: String, error: String },
    #[error("stopped at the deadline while {phase}; the next run carries on from the cache")]
    Deadline { phase: &'static str },
    #[error("{url} keeps no old tip named `{name}`; `pillar scp kept --target {url}` lists them")]
    NotKept { url: String, name: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Source,
    Target,
}

impl Side {
    pub fn credentials_hint(self) -> &'static str {
        match self {
            Self::Source => {
                "check the source credentials secret (username:password) and its permissions"
            }
            Self::Target => {
                "check the AWS credentials and their codecommit:GitPull/GitPush permissions"
            }
        }
    }
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Source => "source",
            Self::Target => "target",
        })
    }
}

/// Why a server's refs are listed: to read (upload-pack, a pull permission is enough) or to
/// push (receive-pack, whose advertisement carries what a push may use).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Read,
    Push,
}

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

/// Bytes of pack gathered before they are sent as one piece of the request body.
const SEND_CHUNK: usize = 256 * 1024;

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
        let listed =
            Listed { source: &source_refs, target: &target_refs, offered: &source.capabilities };
        let fetched = match self.fetch(&cache.path, job, &listed, &progress, deadline).await {
            Err(MirrorError::WorkDirFull { .. }) => {
                tracing::warn!(
                    repository = job.name,
                    "work directory full; evicting every other cache"
                );
                work.evict_all_but(&job.name);
                self.fetch(&cache.path, job, &listed, &progress, deadline).await?
            }
            other => other?,
        };
        let fetch_ms = elapsed_ms(started);
        tracing::debug!(
            repository = job.name,
            bytes = fetched.bytes,
            in_sync = fetched.in_sync,
            "fetched"
        );
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
        let sent_before = progress.bytes_sent.load(Ordering::Relaxed);
        let to =
            Pushing { job, cache: &cache.path, target: &target, progress: &progress, deadline };
        self.keep_old_tips(&to, &mut plan, &mut report).await?;
        let today = time::OffsetDateTime::now_utc().date();
        let expired: Vec<RefChange> = kept_refs(&target.refs)
            .into_iter()
            .filter(|kept| kept.expired(today, job.safeguards.kept_days))
            .map(|kept| kept.removal())
            .collect();
        let mut haves: Vec<Oid> = target.refs.iter().map(|(_, oid)| *oid).collect();
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
        for batch in plan.upserts.chunks(MAX_REFS_PER_PUSH) {
            let mut rest = batch.to_vec();
            if forwardable {
                let objects =
                    pack.take().map_or(Objects::Build(PackPlan::default()), Objects::Forward);
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
            for (change, outcome) in plan.upserts.iter().zip(outcomes(&answer, &plan.upserts)) {
                match outcome {
                    None => report.accept(change),
                    Some(reason) => report.refuse(change, reason),
                }
            }
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
        let listed =
            Listed { source: &source_refs, target: &target_refs, offered: &source.capabilities };
        let progress = self.progress.clone().unwrap_or_default();
        self.fetch(&cache.path, job, &listed, &progress, None).await?;
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

    /// Downloads what the cache lacks of the source's refs, then makes the cache's refs
    /// exactly those (the haves of the next fetch). When the source offers
    /// `side-band-64k` over HTTP, the pack comes through our client in one round, the
    /// listing just read serving as the advertisement; else through libgit2.
    async fn fetch(
        &self,
        cache: &Path,
        job: &MirrorJob,
        listed: &Listed<'_>,
        progress: &Arc<TransferProgress>,
        deadline: Option<Instant>,
    ) -> Result<Fetched, MirrorError> {
        let (wanted, target_refs, offered) = (listed.source, listed.target, listed.offered);
        let fetching = async {
            let prepared = {
                let (cache, job, wanted, target) =
                    (cache.to_owned(), job.clone(), wanted.clone(), target_refs.clone());
                let progress = Arc::clone(progress);
                blocking(move || prepare_cache(&cache, &job, &wanted, &target, &progress, deadline))
                    .await?
            };
            let mut fetched = Fetched { in_sync: prepared.in_sync, ..Fetched::default() };
            if !prepared.missing.is_empty() {
                let before = progress.bytes_received.load(Ordering::Relaxed);
                let ours = matches!(job.source.location(), Ok(Location::Http))
                    && offered.iter().any(|c| c == "side-band-64k");
                fetched.pack = if ours {
                    let request = fetch_request(offered, &prepared.missing, &prepared.haves);
                    Some(self.download_pack(cache, job, request, progress).await?)
                } else {
                    let (cache, job) = (cache.to_owned(), job.clone());
                    let progress = Arc::clone(progress);
                    blocking(move || download_with_libgit2(&cache, &job, &progress, deadline))
                        .await?
                };
                fetched.downloaded = true;
                fetched.bytes = progress.bytes_received.load(Ordering::Relaxed) - before;
            }
            let (cache, job, wanted) = (cache.to_owned(), job.clone(), wanted.clone());
            blocking(move || settle_cache(&cache, &job, &wanted)).await?;
            Ok(fetched)
        };
        before(deadline, "fetching from the source", fetching).await
    }

    /// Sends upload-pack `request` to the source and indexes the pack of its answer into the
    /// cache as it arrives (a thin pack is completed from the cache). Returns the pack file.
    async fn download_pack(
        &self,
        cache: &Path,
        job: &MirrorJob,
        request: Vec<u8>,
        progress: &Arc<TransferProgress>,
    ) -> Result<PathBuf, MirrorError> {
        let mut answer = self.http.upload_pack(&job.source, Side::Source, request).await?;
        let (sender, chunks) = tokio::sync::mpsc::channel(16);
        let indexed = {
            let (cache, job, progress) = (cache.to_owned(), job.clone(), Arc::clone(progress));
            blocking(move || index_pack(&cache, &job, chunks, &progress))
        };
        while let Some(chunk) = answer.next().await {
            let chunk = chunk?;
            progress.bytes_received.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            if sender.send(chunk).await.is_err() {
                break; // the indexer stopped; its error says why
            }
        }
        drop(sender);
        indexed.await
    }

    /// Keeps, in the target, the old tip of every ref `plan` deletes or moves somewhere
    /// other than forward, before anything moves. A change whose old tip could not be
    /// kept is not made: it is reported refused, and the next run tries again.
    async fn keep_old_tips(
        &self,
        to: &Pushing<'_>,
        plan: &mut RefPlan,
        report: &mut MirrorReport,
    ) -> Result<(), MirrorError> {
        let moved_back = {
            let (cache, upserts) = (to.cache.to_owned(), plan.upserts.clone());
            blocking(move || Ok(moved_back(&cache, &upserts))).await?
        };
        let now = time::OffsetDateTime::now_utc();
        let to_keep: Vec<KeptRef> = plan
            .deletions
            .iter()
            .chain(plan.upserts.iter().filter(|c| moved_back.contains(&c.name)))
            .filter_map(|change| KeptRef::of(change, now))
            .collect();
        let mut not_kept = HashSet::new();
        for batch in to_keep.chunks(MAX_REFS_PER_PUSH) {
            let creations: Vec<RefChange> = batch.iter().map(KeptRef::creation).collect();
            let objects = Objects::Build(PackPlan::default());
            let answer = match self.push_once(to, &creations, objects).await {
                Ok(answer) => answer,
                Err(error) => match batch_refusal(&error) {
                    Some(reason) => Report { unpack: Err(reason), ..Report::default() },
                    None => return Err(error),
                },
            };
            for (kept, outcome) in batch.iter().zip(outcomes(&answer, &creations)) {
                match outcome {
                    None => report.kept.push(kept.clone()),
                    Some(reason) => {
                        let change =
                            RefChange { name: kept.original.clone(), old: None, new: None };
                        report.refuse(
                            &change,
                            format!(
                                "its old tip could not be kept, so it was left as it is: {reason}"
                            ),
                        );
                        not_kept.insert(kept.original.clone());
                    }
                }
            }
        }
        plan.deletions.retain(|c| !not_kept.contains(&c.name));
        plan.upserts.retain(|c| !not_kept.contains(&c.name));
        Ok(())
    }

    /// Pushes `batch` once with `objects`, recording what the target took; returns the
    /// changes it refused.
    async fn push_forwarded(
        &self,
        to: &Pushing<'_>,
        batch: &[RefChange],
        objects: Objects,
        haves: &mut Vec<Oid>,
        report: &mut MirrorReport,
    ) -> Result<Vec<RefChange>, MirrorError> {
        let answer = match self.push_once(to, batch, objects).await {
            Ok(answer) => answer,
            Err(error) => match batch_refusal(&error) {
                Some(reason) => Report { unpack: Err(reason), ..Report::default() },
                None => return Err(error),
            },
        };
        let mut refused = Vec::new();
        for (change, outcome) in batch.iter().zip(outcomes(&answer, batch)) {
            match outcome {
                None => {
                    report.accept(change);
                    haves.extend(change.new);
                }
                Some(reason) => {
                    tracing::warn!(
                        reference = %change.name,
                        reason,
                        "refused with the fetched pack; pushing a pack built for it"
                    );
                    refused.push(change.clone());
                }
            }
        }
        Ok(refused)
    }

    /// Pushes one batch, splitting it when the target cannot store its objects, so that
    /// one bad ref cannot hold back the others. Records each ref's outcome in `report`;
    /// returns the new values the target accepted.
    async fn push(
        &self,
        to: &Pushing<'_>,
        batch: &[RefChange],
        haves: &[Oid],
        report: &mut MirrorReport,
    ) -> Result<Vec<Oid>, MirrorError> {
        let mut accepted = Vec::new();
        let mut pending = vec![batch];
        while let Some(changes) = pending.pop() {
            let objects = if changes.iter().all(|c| c.new.is_none()) {
                Objects::None
            } else {
                let wants = changes.iter().filter_map(|c| c.new).collect();
                Objects::Build(PackPlan { wants, haves: haves.to_vec() })
            };
            let answer = match self.push_once(to, changes, objects).await {
                Ok(answer) => answer,
                Err(error) => match batch_refusal(&error) {
                    Some(reason) => Report { unpack: Err(reason), ..Report::default() },
                    None => return Err(error),
                },
            };
            match answer.unpack {
                Err(reason) if changes.len() > 1 && !too_large(&reason) => {
                    tracing::warn!(
                        repository = to.job.name,
                        refs = changes.len(),
                        reason,
                        "the target could not store a batch; splitting it"
                    );
                    let (first, second) = changes.split_at(changes.len() / 2);
                    pending.extend([second, first]);
                }
                Err(_) => {
                    for (change, reason) in changes.iter().zip(outcomes(&answer, changes)) {
                        report.refuse(change, reason.unwrap_or_default());
                    }
                }
                Ok(()) => {
                    for (change, outcome) in changes.iter().zip(outcomes(&answer, changes)) {
                        match outcome {
                            None => {
                                report.accept(change);
                                accepted.extend(change.new);
                            }
                            Some(reason) => report.refuse(change, reason),
                        }
                    }
                }
            }
        }
        Ok(accepted)
    }

    /// One receive-pack exchange for `changes`, sending `objects`.
    async fn push_once(
        &self,
        to: &Pushing<'_>,
        changes: &[RefChange],
        objects: Objects,
    ) -> Result<Report, MirrorError> {
        let Pushing { job, cache, target, deadline, .. } = *to;
        let commands: Vec<Command> = changes
            .iter()
            .map(|c| Command {
                name: c.name.clone(),
                old: c.old.unwrap_or(Oid::ZERO_SHA1),
                new: c.new.unwrap_or(Oid::ZERO_SHA1),
            })
            .collect();
        let url = job.target.display_url();
        let location = job.target.location().map_err(|message| MirrorError::Protocol {
            side: Side::Target,
            url: url.clone(),
            message,
        })?;
        let keep_going = move || deadline.is_none_or(|d| Instant::now() < d);
        match location {
            Location::Local(path) => {
                let cache = cache.to_owned();
                let received = blocking(move || {
                    let repo = open_cache(&cache)?;
                    local::receive(&repo, &path, &commands, &objects, keep_going)
                        .map_err(|e| MirrorError::Push { url, error: e.message().to_owned() })
                });
                before(deadline, "pushing", received).await
            }
            Location::Http => {
                let report_status = target.supports("report-status");
                let mut answer = self.push_http(to, changes, &commands, objects).await?;
                if !report_status {
                    answer.refs = self.outcomes_from_listing(job, changes, deadline).await?;
                }
                Ok(answer)
            }
        }
    }

    /// One receive-pack exchange over smart HTTP, asking only for what the target offers.
    async fn push_http(
        &self,
        to: &Pushing<'_>,
        changes: &[RefChange],
        commands: &[Command],
        objects: Objects,
    ) -> Result<Report, MirrorError> {
        let Pushing { job, cache, target, progress, deadline } = *to;
        let keep_going = move || deadline.is_none_or(|d| Instant::now() < d);
        if commands.iter().any(Command::is_delete) && !target.supports("delete-refs") {
            let reason = "the target does not accept deletions (no delete-refs)";
            let refs = changes.iter().map(|c| (c.name.clone(), Some(reason.into())));
            return Ok(Report { refs: refs.collect(), ..Report::default() });
        }
        let sideband = target.supports("side-band-64k");
        let report_status = target.supports("report-status");
        let mut capabilities = vec![AGENT];
        // `quiet`: the progress channel then carries only what hooks and the server say.
        capabilities.extend(
            ["report-status", "side-band-64k", "delete-refs", "ofs-delta", "quiet"]
                .into_iter()
                .filter(|c| target.supports(c)),
        );
        let head = Bytes::from(encode_commands(commands, &capabilities));
        let commands = futures_util::stream::once(async move { Ok(head) });
        let plan = match objects {
            Objects::None => {
                let sent = self.http.receive_pack(&job.target, commands, sideband, report_status);
                return before(deadline, "pushing", sent).await;
            }
            Objects::Forward(pack) => {
                let file = tokio::fs::File::open(&pack).await.map_err(|e| MirrorError::Cache {
                    path: pack.clone(),
                    message: format!("the fetched pack: {e}"),
                })?;
                let pack = tokio_util::io::ReaderStream::with_capacity(file, SEND_CHUNK);
                let request = commands.chain(counted(pack, progress));
                let sent = self.http.receive_pack(&job.target, request, sideband, report_status);
                return before(deadline, "pushing", sent).await;
            }
            Objects::Build(plan) => plan,
        };
        let (pack, built) = pack_stream(cache.to_owned(), plan, keep_going);
        let request = commands.chain(counted(pack, progress));
        let sent = before(
            deadline,
            "pushing",
            self.http.receive_pack(&job.target, request, sideband, report_status),
        )
        .await;
        match built.await {
            // A failed build explains a failed request better than the request can.
            Ok(Err(Some(error))) => Err(MirrorError::Cache {
                path: cache.to_owned(),
                message: format!("building the pack: {}", error.message()),
            }),
            _ => sent,
        }
    }

    /// Each change's outcome read from a new listing of the target, for a target that
    /// sends no report: taken when the ref now has its new value.
    async fn outcomes_from_listing(
        &self,
        job: &MirrorJob,
        changes: &[RefChange],
        deadline: Option<Instant>,
    ) -> Result<Vec<(RefName, Option<String>)>, MirrorError> {
        let listed = self.list(&job.target, Side::Target, Service::Push, deadline).await?;
        Ok(changes
            .iter()
            .map(|change| {
                let now =
                    listed.refs.iter().find(|(name, _)| *name == change.name).map(|(_, o)| *o);
                let outcome = (now != change.new).then(|| {
                    "the target did not take it (it sends no report-status; read from its listing)"
                        .to_owned()
                });
                (change.name.clone(), outcome)
            })
            .collect())
    }
}

/// Passes of one mirror run when a push fails on the way.
const PASSES: u32 = 3;

const AGENT: &str = concat!("agent=pillars-scp/", env!("CARGO_PKG_VERSION"));

fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// One run's pushes: whose, from which cache, to a target that advertised `target`.
struct Pushing<'a> {
    job: &'a MirrorJob,
    cache: &'a Path,
    target: &'a Advertisement,
    progress: &'a Arc<TransferProgress>,
    deadline: Option<Instant>,
}

/// What a push sends after its commands.
#[derive(Debug, Clone)]
pub(crate) enum Objects {
    /// Nothing: the push only deletes.
    None,
    /// A pack file as it is: the one the fetch just brought.
    Forward(PathBuf),
    /// A pack built from the cache (empty for `PackPlan::default()`).
    Build(PackPlan),
}

/// `pack`, counted into `progress` as it goes.
fn counted(
    pack: impl Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    progress: &Arc<TransferProgress>,
) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    let progress = Arc::clone(progress);
    pack.inspect(move |chunk| {
        if let Ok(chunk) = chunk {
            progress.bytes_sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
    })
}

/// Each change's outcome in `answer`: `None` when the target took it, else why not, with
/// what its hooks and the server said.
fn outcomes(answer: &Report, changes: &[RefChange]) -> Vec<Option<String>> {
    let remote = answer.remote_messages().map(|m| format!(" (remote: {m})")).unwrap_or_default();
    changes
        .iter()
        .map(|change| {
            let outcome =
                match (&answer.unpack, answer.refs.iter().find(|(name, _)| *name == change.name)) {
                    (Err(reason), _) => Some(format!("the target could not store it: {reason}")),
                    (Ok(()), Some((_, outcome))) => outcome.clone(),
                    (Ok(()), None) => Some("the target reported nothing for it".to_owned()),
                };
            outcome.map(|reason| format!("{reason}{remote}"))
        })
        .collect()
}

/// A push the target refused as a whole at the transport level (an HTTP error, a fatal
/// message on the side band, an answer it broke off): the refusal's reason for each ref
/// of the batch, so the run goes on with the others. `None` for failures that are not
/// the batch's: credentials, an unreachable target, the deadline, the cache.
fn batch_refusal(error: &MirrorError) -> Option<String> {
    match error {
        MirrorError::Push { error, .. } => Some(format!("the target refused the push: {error}")),
        MirrorError::Http { status, message, .. } if !matches!(status, 429 | 502 | 503 | 504) => {
            Some(format!("the target refused the push with HTTP {status}: {message}"))
        }
        _ => None,
    }
}

/// Whether a refusal says the pack is too large for the target: splitting the batch
/// resends the same history, so it is not tried.
fn too_large(reason: &str) -> bool {
    reason.contains("exceeds maximum allowed size") || reason.contains("HTTP 413")
}

/// The pack for `plan`, built on a blocking thread and streamed in pieces of about
/// [`SEND_CHUNK`] bytes, so a pack of any size takes little memory. The handle ends with
/// `Err(None)` when the stream's reader went away first.
fn pack_stream(
    cache: PathBuf,
    plan: PackPlan,
    keep_going: impl Fn() -> bool + Send + 'static,
) -> (
    impl Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    tokio::task::JoinHandle<Result<u32, Option<git2::Error>>>,
) {
    let (sender, receiver) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    let built = tokio::task::spawn_blocking(move || {
        let repo = Repository::open_bare(&cache).map_err(Some)?;
        let reader_gone = Cell::new(false);
        let mut piece = BytesMut::with_capacity(SEND_CHUNK);
        let send = |piece: &mut BytesMut| {
            let sent = sender.blocking_send(Ok(piece.split().freeze())).is_ok();
            reader_gone.set(!sent);
            sent
        };
        let result = pack::build(&repo, &plan, keep_going, |chunk| {
            piece.extend_from_slice(chunk);
            piece.len() < SEND_CHUNK || send(&mut piece)
        });
        let result = result.and_then(|objects| {
            if piece.is_empty() || send(&mut piece) {
                Ok(objects)
            } else {
                Err(git2::Error::from_str("stopped"))
            }
        });
        match result {
            Ok(objects) => Ok(objects),
            Err(_) if reader_gone.get() => Err(None),
            Err(error) => {
                let _ =
                    sender.blocking_send(Err(std::io::Error::other(error.message().to_owned())));
                Err(Some(error))
            }
        }
    });
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    });
    (stream, built)
}

/// Runs blocking work (libgit2, the file system) off the async threads, starting it at
/// once (not when first awaited: the pack indexer must drain its channel meanwhile).
fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, MirrorError> + Send + 'static,
) -> impl Future<Output = Result<T, MirrorError>> {
    let task = tokio::task::spawn_blocking(work);
    async move {
        task.await.unwrap_or_else(|panic| {
            Err(MirrorError::Cache {
                path: PathBuf::new(),
                message: format!("mirror task failed: {panic}"),
            })
        })
    }
}

/// `work`, unless `deadline` comes first.
async fn before<T>(
    deadline: Option<Instant>,
    phase: &'static str,
    work: impl Future<Output = Result<T, MirrorError>>,
) -> Result<T, MirrorError> {
    match deadline {
        None => work.await,
        Some(deadline) => tokio::time::timeout_at(deadline.into(), work)
            .await
            .unwrap_or(Err(MirrorError::Deadline { phase })),
    }
}

/// Opens the bare cache, starting a new one when it is missing or damaged (a run killed
/// mid-write must not block every later run).
fn open_cache(path: &Path) -> Result<Repository, MirrorError> {
    if let Ok(repo) = Repository::open_bare(path) {
        return Ok(repo);
    }
    if path.exists() {
        tracing::warn!(cache = %path.display(), "cache unreadable; starting a new one");
        let _ = std::fs::remove_dir_all(path);
    }
    Repository::init_bare(path).map_err(|error| cache_error(path, &error))
}

fn cache_error(path: &Path, error: &git2::Error) -> MirrorError {
    MirrorError::Cache { path: path.to_owned(), message: error.message().to_owned() }
}

/// What the fetch found and brought.
#[derive(Debug, Default)]
struct Fetched {
    /// Objects came from the source.
    downloaded: bool,
    /// Before the download, the cache's refs were the target's: the target has every object
    /// the cache had, so the pack downloaded holds every object it lacks.
    in_sync: bool,
    /// The pack the download wrote, when it wrote one.
    pack: Option<PathBuf>,
    /// Bytes read from the source.
    bytes: u64,
}

/// Both sides' refs, and the capabilities of the source's upload-pack.
struct Listed<'a> {
    source: &'a RefMap,
    target: &'a RefMap,
    offered: &'a [String],
}

/// The cache before a download: whether its refs were the target's, which wanted objects
/// it lacks, and the tips it has.
struct Prepared {
    in_sync: bool,
    missing: Vec<Oid>,
    haves: Vec<Oid>,
}

/// Opens the cache for [`GitMirror::fetch`]. A new cache (a fresh Lambda environment) is
/// filled from the target first, so the source sends only what is new.
fn prepare_cache(
    cache_path: &Path,
    job: &MirrorJob,
    wanted: &RefMap,
    target_refs: &RefMap,
    progress: &TransferProgress,
    deadline: Option<Instant>,
) -> Result<Prepared, MirrorError> {
    let cache = open_cache(cache_path)?;
    let failed = |e: git2::Error| cache_error(cache_path, &e);
    let keep_going = || deadline.is_none_or(|d| Instant::now() < d);
    if cache_refs(&cache).map_err(failed)?.is_empty() && !target_refs.is_empty() {
        match download(&cache, &job.target, progress, keep_going) {
            Ok(()) => {
                let odb = cache.odb().map_err(failed)?;
                let present: RefMap = target_refs
                    .iter()
                    .filter(|(_, oid)| odb.exists(**oid))
                    .map(|(n, o)| (n.clone(), *o))
                    .collect();
                update_cache_refs(&cache, &present).map_err(failed)?;
                record_settled(cache_path).map_err(|e| cache_io(cache_path, &e))?;
                tracing::info!(
                    repository = job.name,
                    refs = present.len(),
                    "new cache filled from the target"
                );
            }
            Err((error, _)) => {
                tracing::warn!(
                    repository = job.name,
                    error = error.message(),
                    "cannot fill the new cache from the target; fetching everything from the source"
                );
            }
        }
    }
    let refs = cache_refs(&cache).map_err(failed)?;
    let odb = cache.odb().map_err(failed)?;
    let missing: BTreeSet<Oid> = wanted.values().copied().filter(|oid| !odb.exists(*oid)).collect();
    // Objects the last run fetched and did not settle (it was killed in between) are in the
    // cache but not in the target: then the cache's refs being the target's proves nothing.
    let in_sync = refs == *target_refs && settled(cache_path);
    let haves = if missing.is_empty() {
        Vec::new()
    } else {
        haves(&cache, refs.into_values()).map_err(failed)?
    };
    Ok(Prepared { in_sync, missing: missing.into_iter().collect(), haves })
}

/// Commits offered to the source beyond the cache's tips, newest first.
const HAVES_BEHIND_TIPS: usize = 256;

/// The cache's tips and the newest commits behind them, as git's negotiation offers them
/// first: a tip the source no longer has (a force-push, then gc) still finds its parents,
/// so the source does not send the whole history again. Reads only the commits it offers
/// (a revwalk sorted by time would load the whole history first).
fn haves(cache: &Repository, tips: impl Iterator<Item = Oid>) -> Result<Vec<Oid>, git2::Error> {
    let mut haves: BTreeSet<Oid> = tips.collect();
    let mut seen = HashSet::new();
    let mut newest = BinaryHeap::new();
    let mut queue = |newest: &mut BinaryHeap<_>, commit: &git2::Commit<'_>| {
        if seen.insert(commit.id()) {
            newest.push((commit.time().seconds(), commit.id()));
        }
    };
    for tip in &haves {
        // A tag on a tree or a blob has no history to walk.
        if let Ok(commit) = cache.find_object(*tip, None).and_then(|o| o.peel_to_commit()) {
            queue(&mut newest, &commit);
        }
    }
    let mut behind = 0;
    while behind < HAVES_BEHIND_TIPS {
        let Some((_, oid)) = newest.pop() else { break };
        for parent in cache.find_commit(oid)?.parents() {
            queue(&mut newest, &parent);
        }
        behind += usize::from(haves.insert(oid));
    }
    Ok(haves.into_iter().collect())
}

/// Makes the cache's refs `wanted`, once the download brought every object they name.
fn settle_cache(cache_path: &Path, job: &MirrorJob, wanted: &RefMap) -> Result<(), MirrorError> {
    let cache = open_cache(cache_path)?;
    let failed = |e: git2::Error| cache_error(cache_path, &e);
    let odb = cache.odb().map_err(failed)?;
    let missing = wanted.values().filter(|oid| !odb.exists(**oid)).count();
    // The source may have moved between listing and downloading; mirror what was listed,
    // as long as the download brought it. Otherwise the next run catches up.
    if missing > 0 {
        return Err(MirrorError::Fetch {
            url: job.source.display_url(),
            error: format!("the source moved while fetching ({missing} refs); run again"),
        });
    }
    update_cache_refs(&cache, wanted).map_err(failed)?;
    record_settled(cache_path).map_err(|e| cache_io(cache_path, &e))
}

/// Where a cache records the packs it held when its refs were last made the source's.
const SETTLED: &str = "pillars-settled-packs";

/// Records the cache's packs as settled: every object in them is reachable from its refs
/// or was before (and so is in the target once the target is in sync).
fn record_settled(cache: &Path) -> std::io::Result<()> {
    let mut names: Vec<String> = packs(cache)
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    names.sort();
    let temporary = cache.join(format!("{SETTLED}.tmp"));
    std::fs::write(&temporary, names.join("\n"))?;
    std::fs::rename(temporary, cache.join(SETTLED))
}

/// Whether the cache holds only settled objects: no pack it has not recorded, no loose
/// object (this mirror writes none; a git that fetched into it does).
fn settled(cache: &Path) -> bool {
    // A cache without the record has settled nothing: only an empty one is settled.
    let recorded = std::fs::read_to_string(cache.join(SETTLED)).unwrap_or_default();
    let recorded: HashSet<&str> = recorded.lines().collect();
    let all_recorded = packs(cache)
        .iter()
        .all(|p| p.file_name().is_some_and(|n| recorded.contains(n.to_string_lossy().as_ref())));
    let loose = std::fs::read_dir(cache.join("objects")).into_iter().flatten().flatten().any(|e| {
        let name = e.file_name();
        let name = name.to_string_lossy();
        name.len() == 2
            && name.bytes().all(|b| b.is_ascii_hexdigit())
            && std::fs::read_dir(e.path()).is_ok_and(|mut d| d.next().is_some())
    });
    all_recorded && !loose
}

fn cache_io(path: &Path, error: &std::io::Error) -> MirrorError {
    MirrorError::Cache { path: path.to_owned(), message: error.to_string() }
}

/// upload-pack's request for `missing`, with the capabilities we use of those `offered`.
fn fetch_request(offered: &[String], missing: &[Oid], haves: &[Oid]) -> Vec<u8> {
    let used: Vec<&str> = ["side-band-64k", "ofs-delta", "thin-pack", "no-progress"]
        .into_iter()
        .filter(|c| offered.iter().any(|o| o == c))
        .collect();
    encode_fetch(missing, haves, &used)
}

/// Writes the pack carried by upload-pack's answer, `chunks`, into the cache and indexes it.
/// Nothing is left behind unless the whole pack arrived and was indexed.
fn index_pack(
    cache_path: &Path,
    job: &MirrorJob,
    mut chunks: tokio::sync::mpsc::Receiver<Bytes>,
    progress: &TransferProgress,
) -> Result<PathBuf, MirrorError> {
    let cache = open_cache(cache_path)?;
    let odb = cache.odb().map_err(|e| cache_error(cache_path, &e))?;
    let directory = cache_path.join("objects/pack");
    let failed = |message: String| download_error(job, cache_path, message);
    // Every object is hashed as it is indexed, and (verify) every object a commit, tree or
    // tag of the pack names must be in the pack or the cache: a pack that leaves a hole
    // fails here, before any ref of the cache or the target moves.
    let mut indexer = git2::Indexer::new(Some(&odb), &directory, 0, true)
        .map_err(|e| failed(e.message().to_owned()))?;
    indexer.progress(|stats| {
        progress.objects_received.store(stats.received_objects() as u64, Ordering::Relaxed);
        progress.objects_total.store(stats.total_objects() as u64, Ordering::Relaxed);
        true
    });
    let mut demux = PackDemux::default();
    while let Some(chunk) = chunks.blocking_recv() {
        demux
            .feed(&chunk, &mut |bytes| indexer.write_all(bytes).map_err(|e| e.to_string()))
            .map_err(failed)?;
    }
    if !demux.ended() {
        return Err(failed("the answer ended before the pack did; run again".to_owned()));
    }
    let name = indexer.commit().map_err(|e| failed(e.message().to_owned()))?;
    Ok(directory.join(format!("pack-{name}.pack")))
}

/// Downloads from the source with libgit2 (a local path, or a server without side-band-64k);
/// returns the pack it wrote, if it wrote one.
fn download_with_libgit2(
    cache_path: &Path,
    job: &MirrorJob,
    progress: &TransferProgress,
    deadline: Option<Instant>,
) -> Result<Option<PathBuf>, MirrorError> {
    let cache = open_cache(cache_path)?;
    let keep_going = || deadline.is_none_or(|d| Instant::now() < d);
    let packs = packs(cache_path);
    if let Err((error, refused)) = download(&cache, &job.source, progress, keep_going) {
        return Err(fetch_error(job, cache_path, refused, &error, !keep_going()));
    }
    let mut new = packs_since(cache_path, &packs);
    Ok((new.len() == 1).then(|| new.remove(0)))
}

/// Downloads from `from` the objects of its branches and tags the cache lacks; on failure,
/// the error and whether credentials were refused.
fn download(
    cache: &Repository,
    from: &Endpoint,
    progress: &TransferProgress,
    keep_going: impl Fn() -> bool,
) -> Result<(), (git2::Error, bool)> {
    let refused = Cell::new(false);
    let mut callbacks = from.callbacks(&refused);
    let start = progress.bytes_received.load(Ordering::Relaxed);
    callbacks.transfer_progress(|stats| {
        progress.objects_received.store(stats.received_objects() as u64, Ordering::Relaxed);
        progress.objects_total.store(stats.total_objects() as u64, Ordering::Relaxed);
        progress.bytes_received.store(start + stats.received_bytes() as u64, Ordering::Relaxed);
        keep_going()
    });
    callbacks.sideband_progress(|_| keep_going());
    let mut options = FetchOptions::new();
    options.remote_callbacks(callbacks).download_tags(git2::AutotagOption::None);
    let downloaded = cache.remote_anonymous(&from.url).and_then(|mut remote| {
        remote.download(
            &["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"],
            Some(&mut options),
        )
    });
    downloaded.map_err(|error| (error, refused.get()))
}

/// The cache's branches and tags.
fn cache_refs(cache: &Repository) -> Result<RefMap, git2::Error> {
    let mut refs = RefMap::new();
    for reference in cache.references()? {
        let reference = reference?;
        if let Some(oid) = reference.target() {
            refs.insert(RefName::new(reference.name_bytes()), oid);
        }
    }
    Ok(mirrored(refs))
}

/// The pack files of the cache.
fn packs(cache: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(cache.join("objects/pack")) else { return Vec::new() };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "pack"))
        .collect()
}

/// The pack files written since `before` was listed.
fn packs_since(cache: &Path, before: &[PathBuf]) -> Vec<PathBuf> {
    packs(cache).into_iter().filter(|p| !before.contains(p)).collect()
}

fn fetch_error(
    job: &MirrorJob,
    cache: &Path,
    refused: bool,
    error: &git2::Error,
    late: bool,
) -> MirrorError {
    let url = job.source.display_url();
    let message = error.message();
    if late {
        MirrorError::Deadline { phase: "fetching from the source" }
    } else if refused
        || error.code() == git2::ErrorCode::Auth
        || message.contains("401")
        || message.contains("403")
    {
        MirrorError::CredentialsRefused {
            side: Side::Source,
            url,
            hint: Side::Source.credentials_hint(),
        }
    } else {
        download_error(job, cache, message.to_owned())
    }
}

/// A download that failed for `message`: a full work directory, or else the fetch.
fn download_error(job: &MirrorJob, cache: &Path, message: String) -> MirrorError {
    if message.contains("No space left on device") {
        MirrorError::WorkDirFull {
            path: cache.parent().unwrap_or(cache).to_owned(),
            repository: job.name.clone(),
            message,
        }
    } else {
        MirrorError::Fetch { url: job.source.display_url(), error: message }
    }
}

/// Makes the cache's branches and tags exactly `wanted`: they are what the next fetch
/// offers the source as already present. Names that are not UTF-8 have no ref in the
/// cache (libgit2 writes only UTF-8 names); their objects are fetched all the same.
fn update_cache_refs(cache: &Repository, wanted: &RefMap) -> Result<(), git2::Error> {
    let plan = RefPlan::between(wanted, &cache_refs(cache)?);
    for change in plan.changes() {
        let Some(name) = change.name.as_str() else { continue };
        match change.new {
            Some(new) => drop(cache.reference(name, new, true, "pillars mirror")?),
            None => cache.find_reference(name)?.delete()?,
        }
    }
    Ok(())
}

/// The names among `upserts` whose new value does not descend from their old one: a tag
/// moved, a branch rewound or rewritten, or an old value the cache does not know.
fn moved_back(cache_path: &Path, upserts: &[RefChange]) -> HashSet<RefName> {
    let cache = Repository::open_bare(cache_path).ok();
    let commit = |id: Oid| {
        let cache = cache.as_ref()?;
        cache.find_object(id, None).ok()?.peel_to_commit().ok().map(|c| c.id())
    };
    upserts
        .iter()
        .filter(|change| {
            let (Some(old), Some(new)) = (change.old, change.new) else { return false };
            if change.name.as_bytes().starts_with(b"refs/tags/") {
                return true;
            }
            let forward = match (commit(old), commit(new), cache.as_ref()) {
                (Some(old), Some(new), Some(cache)) => {
                    old == new || cache.graph_descendant_of(new, old).unwrap_or(false)
                }
                _ => false,
            };
            !forward
        })
        .map(|change| change.name.clone())
        .collect()
}
