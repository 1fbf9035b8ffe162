//! The mirror engine: bring a bare cache up to date with the source, compare the source's
//! branches and tags with the target's, and push only the difference.

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::path::{Path, PathBuf};

use git2::{Direction, FetchOptions, PushOptions, Repository};
use serde::Serialize;

use crate::refs::{MAX_REFS_PER_PUSH, RefChange, RefMap, RefPlan, mirrored};
use crate::transport::{Endpoint, configure_libgit2};

/// What a mirror run did, or would report to an operator.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct MirrorReport {
    pub created: Vec<String>,
    pub updated: Vec<String>,
    pub deleted: Vec<String>,
    pub unchanged: usize,
    /// The branch the source's HEAD points at, if it has one.
    pub source_head: Option<String>,
    /// Whether any objects had to be fetched from the source.
    pub fetched: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error("cannot lock {}: {error}; is the work directory writable?", path.display())]
    Lock { path: PathBuf, error: std::io::Error },
    #[error("the cache {} is unusable: {error}; delete it and run again", path.display())]
    Cache { path: PathBuf, error: git2::Error },
    #[error("{side} {url} refused our credentials: {hint}")]
    CredentialsRefused { side: Side, url: String, hint: &'static str },
    #[error("cannot reach {side} {url}: {error}")]
    Unreachable { side: Side, url: String, error: git2::Error },
    #[error("fetching from {url} failed: {error}")]
    Fetch { url: String, error: git2::Error },
    #[error("pushing to {url} failed: {error}")]
    Push { url: String, error: git2::Error },
    #[error("{url} refused {} ref(s): {}", refused.len(), refused.iter().map(|(r, why)| format!("{r} ({why})")).collect::<Vec<_>>().join(", "))]
    Refused {
        url: String,
        refused: Vec<(String, String)>,
        /// The source's HEAD branch: a target may refuse to delete its default branch until
        /// the default follows the source.
        source_head: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Source,
    Target,
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Source => "source",
            Self::Target => "target",
        })
    }
}

/// One repository to mirror: a name for its cache and lock, and both ends.
#[derive(Debug, Clone)]
pub struct MirrorJob {
    pub name: String,
    pub source: Endpoint,
    pub target: Endpoint,
}

/// Mirrors `job.source` into `job.target`, using `work_dir/<name>.git` as cache.
/// Holds `work_dir/<name>.lock` for the duration, so one repository is mirrored by one
/// process at a time. Blocking: run it on a blocking thread.
pub fn mirror(job: &MirrorJob, work_dir: &Path) -> Result<MirrorReport, MirrorError> {
    let (_lock, cache) = open_locked(work_dir, &job.name)?;

    let started = std::time::Instant::now();
    let (source_refs, source_head, fetched) = fetch_source(&cache, &job.source)?;
    update_cache_refs(&cache, &source_refs)
        .map_err(|error| MirrorError::Cache { path: cache.path().to_owned(), error })?;
    let fetch_ms = started.elapsed().as_millis() as u64;
    let target_refs = list_refs(&cache, &job.target, Side::Target)?.0;
    let mut plan = RefPlan::between(&source_refs, &target_refs);
    if let Some(head) = &source_head {
        plan.push_first(head);
    }
    let compare_ms = started.elapsed().as_millis() as u64 - fetch_ms;
    for batch in
        plan.deletions.chunks(MAX_REFS_PER_PUSH).chain(plan.upserts.chunks(MAX_REFS_PER_PUSH))
    {
        push(&cache, &job.target, batch).map_err(|error| match error {
            MirrorError::Refused { url, refused, .. } => {
                MirrorError::Refused { url, refused, source_head: source_head.clone() }
            }
            other => other,
        })?;
    }
    tracing::info!(
        repository = job.name,
        deletions = plan.deletions.len(),
        upserts = plan.upserts.len(),
        unchanged = plan.unchanged,
        fetch_ms,
        compare_ms,
        push_ms = started.elapsed().as_millis() as u64 - fetch_ms - compare_ms,
        "mirror pass"
    );

    let mut report =
        MirrorReport { unchanged: plan.unchanged, source_head, fetched, ..MirrorReport::default() };
    for change in plan.changes() {
        let list = match (change.old, change.new) {
            (None, _) => &mut report.created,
            (_, None) => &mut report.deleted,
            _ => &mut report.updated,
        };
        list.push(change.name.clone());
    }
    Ok(report)
}

/// Takes `work_dir/<name>.lock` (held while the returned file lives) and opens the cache
/// `work_dir/<name>.git`.
fn open_locked(work_dir: &Path, name: &str) -> Result<(File, Repository), MirrorError> {
    configure_libgit2();
    let path = work_dir.join(format!("{name}.lock"));
    let locked = std::fs::create_dir_all(work_dir)
        .and_then(|()| File::create(&path))
        .and_then(|file| file.lock().map(|()| file));
    let lock = locked.map_err(|error| MirrorError::Lock { path, error })?;
    Ok((lock, open_cache(&work_dir.join(format!("{name}.git")))?))
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
    Repository::init_bare(path).map_err(|error| MirrorError::Cache { path: path.to_owned(), error })
}

/// Lists `endpoint`'s mirrored refs and the branch its HEAD names.
fn list_refs(
    cache: &Repository,
    endpoint: &Endpoint,
    side: Side,
) -> Result<(RefMap, Option<String>), MirrorError> {
    let refused = Cell::new(false);
    let mut remote = cache
        .remote_anonymous(&endpoint.url)
        .map_err(|error| connection_error(side, endpoint, &refused, error))?;
    let direction = if side == Side::Source { Direction::Fetch } else { Direction::Push };
    let connection = remote
        .connect_auth(direction, Some(endpoint.callbacks(&refused)), None)
        .map_err(|error| connection_error(side, endpoint, &refused, error))?;
    let advertised = connection
        .list()
        .map_err(|error| connection_error(side, endpoint, &refused, error))?
        .iter()
        .map(|head| (head.name().to_owned(), head.oid()))
        .collect::<Vec<_>>();
    let head = connection.default_branch().ok().and_then(|b| b.as_str().ok().map(str::to_owned));
    Ok((mirrored(advertised), head))
}

fn connection_error(
    side: Side,
    endpoint: &Endpoint,
    refused: &Cell<bool>,
    error: git2::Error,
) -> MirrorError {
    let url = endpoint.display_url();
    if refused.get()
        || matches!(error.code(), git2::ErrorCode::Auth)
        || error.message().contains("401")
        || error.message().contains("403")
    {
        let hint = match side {
            Side::Source => {
                "check the source credentials secret (username:password) and its permissions"
            }
            Side::Target => {
                "check the AWS credentials and their codecommit:GitPull/GitPush permissions"
            }
        };
        MirrorError::CredentialsRefused { side, url, hint }
    } else {
        MirrorError::Unreachable { side, url, error }
    }
}

/// A failure while moving objects: refused credentials as such; anything else as a failed
/// fetch from the source or push to the target.
fn transfer_error(
    side: Side,
    endpoint: &Endpoint,
    refused: &Cell<bool>,
    error: git2::Error,
) -> MirrorError {
    match connection_error(side, endpoint, refused, error) {
        MirrorError::Unreachable { url, error, .. } => match side {
            Side::Source => MirrorError::Fetch { url, error },
            Side::Target => MirrorError::Push { url, error },
        },
        credentials => credentials,
    }
}

/// Lists the source and downloads whatever objects the cache lacks. Returns the source's
/// refs, its HEAD branch, and whether anything was downloaded.
fn fetch_source(
    cache: &Repository,
    source: &Endpoint,
) -> Result<(RefMap, Option<String>, bool), MirrorError> {
    let (refs, head) = list_refs(cache, source, Side::Source)?;
    let odb =
        cache.odb().map_err(|error| MirrorError::Cache { path: cache.path().to_owned(), error })?;
    if refs.values().all(|oid| odb.exists(*oid)) {
        return Ok((refs, head, false));
    }
    let refused = Cell::new(false);
    let mut remote = cache
        .remote_anonymous(&source.url)
        .map_err(|error| connection_error(Side::Source, source, &refused, error))?;
    let mut options = FetchOptions::new();
    options.remote_callbacks(source.callbacks(&refused)).download_tags(git2::AutotagOption::None);
    remote
        .download(&["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"], Some(&mut options))
        .map_err(|error| transfer_error(Side::Source, source, &refused, error))?;
    // The source may have moved between listing and downloading; mirror what was listed,
    // as long as the download brought it. Otherwise the next run catches up.
    let missing: Vec<&String> =
        refs.iter().filter(|(_, oid)| !odb.exists(**oid)).map(|(name, _)| name).collect();
    if !missing.is_empty() {
        return Err(MirrorError::Fetch {
            url: source.display_url(),
            error: git2::Error::from_str(&format!(
                "the source moved while fetching ({} refs); run again",
                missing.len()
            )),
        });
    }
    Ok((refs, head, true))
}

/// Makes the cache's branches and tags exactly the source's: its refs are what the next
/// fetch offers the source as already present, and what pushes send from.
fn update_cache_refs(cache: &Repository, source: &RefMap) -> Result<(), git2::Error> {
    let mut local = RefMap::new();
    for reference in cache.references()? {
        let reference = reference?;
        if let (Ok(name), Some(oid)) = (reference.name(), reference.target()) {
            local.insert(name.to_owned(), oid);
        }
    }
    let plan = RefPlan::between(source, &mirrored(local));
    for change in &plan.deletions {
        cache.find_reference(&change.name)?.delete()?;
    }
    for change in &plan.upserts {
        if let Some(new) = change.new {
            cache.reference(&change.name, new, true, "pillars mirror")?;
        }
    }
    Ok(())
}

/// Pushes one batch of changes and checks each ref's own status: libgit2 reports a push
/// with rejected refs as a success otherwise.
fn push(cache: &Repository, target: &Endpoint, batch: &[RefChange]) -> Result<(), MirrorError> {
    let refspecs: Vec<String> = batch
        .iter()
        .map(|change| match change.new {
            Some(_) => format!("+{0}:{0}", change.name),
            None => format!(":{}", change.name),
        })
        .collect();
    let refused_credentials = Cell::new(false);
    let rejected = RefCell::new(Vec::new());
    let mut callbacks = target.callbacks(&refused_credentials);
    callbacks.push_update_reference(|name, status| {
        if let Some(reason) = status {
            rejected.borrow_mut().push((name.to_owned(), reason.to_owned()));
        }
        Ok(())
    });
    let mut options = PushOptions::new();
    // 0: one packbuilder thread per core (libgit2 defaults to a single one).
    options.remote_callbacks(callbacks).packbuilder_parallelism(0);
    let mut remote = cache
        .remote_anonymous(&target.url)
        .map_err(|error| connection_error(Side::Target, target, &refused_credentials, error))?;
    remote
        .push(&refspecs, Some(&mut options))
        .map_err(|error| transfer_error(Side::Target, target, &refused_credentials, error))?;
    drop(options);
    let rejected = rejected.into_inner();
    if rejected.is_empty() {
        Ok(())
    } else {
        Err(MirrorError::Refused {
            url: target.display_url(),
            refused: rejected,
            source_head: None,
        })
    }
}

/// How far the target is behind the source, from their ref listings alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    /// What a mirror would change.
    pub plan: RefPlan,
    /// Age of the oldest source change the target lacks, as far as the cache knows the
    /// commits (0 when in sync, or when the cache has never seen the missing commits).
    pub lag_seconds: i64,
}

/// Compares the source's and the target's branches and tags without fetching objects.
pub fn compare(job: &MirrorJob, work_dir: &Path) -> Result<Drift, MirrorError> {
    let (_lock, cache) = open_locked(work_dir, &job.name)?;
    let (source_refs, _) = list_refs(&cache, &job.source, Side::Source)?;
    let (target_refs, _) = list_refs(&cache, &job.target, Side::Target)?;
    let plan = RefPlan::between(&source_refs, &target_refs);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let lag_seconds = plan
        .changes()
        .filter_map(|change| {
            let known = [change.new, change.old].into_iter().flatten().find_map(|oid| {
                cache.find_object(oid, None).and_then(|o| o.peel_to_commit()).ok()
            })?;
            Some(now - known.time().seconds())
        })
        .max()
        .unwrap_or(0)
        .max(0);
    Ok(Drift { plan, lag_seconds })
}
