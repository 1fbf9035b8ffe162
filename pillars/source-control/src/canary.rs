//! The Source Control canary: what a build does with a mirror, done every run. It lists the
//! CodeCommit repository over HTTPS with the SigV4 git password of the caller's own
//! credentials, fetches its default branch's tip shallowly (the commit and its whole tree,
//! every object received, indexed and so hashed), then compares that tip with the source's
//! when the source answers. A source that does not answer is not a failure of the mirror:
//! that is the day the mirror exists for.

use std::cell::Cell;
use std::path::Path;
use std::time::{Duration, Instant};

use git2::{AutotagOption, FetchOptions, ObjectType, Oid, TreeWalkMode, TreeWalkResult};
use pillar_telemetry::{Metrics, Unit, pillar_ready};
use serde::Serialize;

use crate::error::MirrorError;
use crate::protocol::Advertisement;
use crate::refs::RefName;
use crate::service::{METRICS_NAMESPACE, Mirrorer};
use crate::task::{before, blocking};
use crate::transport::{Endpoint, Service, Side};

/// How one mirrored repository answered a build's clone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Readiness {
    /// Cloned, and the tip is the source's (or the source did not answer).
    Ready,
    /// Cloned, but the source's default branch has moved on: builds get an older tip.
    Drifted { source_tip: String },
    /// A build could not clone it, for `reason`.
    Broken { reason: String },
}

/// What the source said, beside the mirror.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum SourceState {
    /// Its default branch has the mirror's tip.
    Same,
    /// Its default branch is elsewhere.
    Ahead,
    /// It did not answer (or its credentials could not be read): the mirror alone decides.
    Unreachable { reason: String },
    /// The mirror could not be read, so there was nothing to compare.
    NotCompared,
}

/// One repository's check.
#[derive(Debug, Clone, Serialize)]
pub struct RepositoryCheck {
    pub repository: String,
    #[serde(flatten)]
    pub readiness: Readiness,
    pub source: SourceState,
    /// The default branch a clone checks out, and its tip in the mirror.
    pub branch: Option<String>,
    pub tip: Option<String>,
    /// Objects of the tip's commit and tree received, and their size.
    pub objects: usize,
    pub bytes: u64,
    /// Age of the tip commit: how old the newest mirrored work is.
    pub tip_age_seconds: Option<u64>,
    pub latency_ms: u64,
}

impl RepositoryCheck {
    pub fn ready(&self) -> bool {
        !matches!(self.readiness, Readiness::Broken { .. })
    }

    /// One line for a terminal: `ready`, `drifted (...)` or `BROKEN: why`.
    pub fn summary(&self) -> String {
        let source = match &self.source {
            SourceState::Same => "the source has the same tip".to_owned(),
            SourceState::Ahead => "the source is ahead".to_owned(),
            SourceState::Unreachable { reason } => format!("source unreachable ({reason})"),
            SourceState::NotCompared => "not compared".to_owned(),
        };
        let tip = match (&self.branch, &self.tip) {
            (Some(branch), Some(tip)) => format!("{branch} at {}", &tip[..tip.len().min(12)]),
            _ => String::new(),
        };
        match &self.readiness {
            Readiness::Ready => format!("ready: cloned {tip}, {} objects; {source}", self.objects),
            Readiness::Drifted { source_tip } => format!(
                "drifted: cloned {tip}, the source is at {}",
                &source_tip[..source_tip.len().min(12)]
            ),
            Readiness::Broken { reason } => format!("BROKEN: {reason}"),
        }
    }
}

/// Every checked repository, and the pillar's readiness as metrics.
#[derive(Debug, Default, Serialize)]
pub struct CanaryReport {
    pub repositories: Vec<RepositoryCheck>,
}

impl CanaryReport {
    pub fn ready(&self) -> bool {
        self.repositories.iter().all(RepositoryCheck::ready)
    }

    /// `PillarReady` (dimension `Pillar`), and per repository `CanaryLatencyMs` and
    /// `CanaryFailed`, so the alarm and the dashboard name which one broke.
    pub fn metrics(&self) -> Vec<Metrics> {
        let mut metrics: Vec<Metrics> = self
            .repositories
            .iter()
            .map(|check| {
                Metrics::new(METRICS_NAMESPACE)
                    .dimension("Repository", &check.repository)
                    .value("CanaryLatencyMs", check.latency_ms as f64, Unit::Milliseconds)
                    .value("CanaryFailed", f64::from(u8::from(!check.ready())), Unit::Count)
            })
            .collect();
        metrics.push(pillar_ready("SourceControl", self.ready()));
        metrics
    }
}

/// Which repositories a run checks: all of them when `share` covers them, else a rotating
/// `share`, chosen by `run` (the run's number, e.g. minutes since the epoch over the
/// period), so that each is checked at least every `ceil(n / share)` runs.
pub fn rotation(names: &[String], share: usize, run: u64) -> Vec<String> {
    if share == 0 || share >= names.len() {
        return names.to_vec();
    }
    let start = (run as usize).wrapping_mul(share) % names.len();
    names.iter().cycle().skip(start).take(share).cloned().collect()
}

impl Mirrorer {
    /// A scheduled run: the repositories of this run's turn (see [`rotation`]; the run's
    /// number is the period since the epoch at `now`), checked before `deadline`.
    pub async fn scheduled_canary(
        &self,
        now: time::OffsetDateTime,
        deadline: Instant,
    ) -> CanaryReport {
        let (per_run, period_minutes) = self.canary_rotation;
        let minutes = u64::try_from(now.unix_timestamp() / 60).unwrap_or(0);
        let run = minutes / u64::from(period_minutes.max(1));
        let names = rotation(&self.repository_names(), per_run, run);
        self.canary(&names, Some(deadline)).await
    }

    /// Checks `names` as a build would use them, one after another, stopping before
    /// `deadline`: what is not reached is left for the next run (see [`rotation`]).
    pub async fn canary(&self, names: &[String], deadline: Option<Instant>) -> CanaryReport {
        let mut report = CanaryReport::default();
        for name in names {
            if deadline.is_some_and(|d| d.saturating_duration_since(Instant::now()) < MARGIN) {
                tracing::warn!(repository = name, "not checked: too close to the deadline");
                break;
            }
            report.repositories.push(self.check(name, deadline).await);
        }
        report
    }

    async fn check(&self, name: &str, deadline: Option<Instant>) -> RepositoryCheck {
        let started = Instant::now();
        let mut check = RepositoryCheck {
            repository: name.to_owned(),
            readiness: Readiness::Ready,
            source: SourceState::NotCompared,
            branch: None,
            tip: None,
            objects: 0,
            bytes: 0,
            tip_age_seconds: None,
            latency_ms: 0,
        };
        let source = async {
            let job = self.job(name).await.map_err(|e| e.to_string())?;
            let listed = self.git.list(&job.source, Side::Source, Service::Read, deadline).await;
            listed.map_err(|e| e.to_string())
        };
        let mirror = async {
            let target = self.codecommit.endpoint(name).await.map_err(|e| e.to_string())?;
            clone_tip(&self.git, &target, deadline).await
        };
        let (source, mirror) = futures_util::join!(source, mirror);
        match mirror {
            Err(reason) => check.readiness = Readiness::Broken { reason },
            Ok(cloned) => {
                check.source = match &source {
                    Err(reason) => SourceState::Unreachable { reason: reason.clone() },
                    Ok(listing) => match tip_of(listing, &cloned.branch) {
                        Some(tip) if tip == cloned.tip => SourceState::Same,
                        Some(tip) => {
                            check.readiness = Readiness::Drifted { source_tip: tip.to_string() };
                            SourceState::Ahead
                        }
                        None => SourceState::Ahead,
                    },
                };
                check.branch = Some(cloned.branch.to_string());
                check.tip = Some(cloned.tip.to_string());
                check.objects = cloned.objects;
                check.bytes = cloned.bytes;
                check.tip_age_seconds = Some(cloned.age_seconds);
            }
        }
        check.latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        check
    }
}

/// No check starts with less than this before the deadline.
const MARGIN: Duration = Duration::from_secs(20);

/// What a build's shallow clone received.
struct Cloned {
    branch: RefName,
    tip: Oid,
    objects: usize,
    bytes: u64,
    age_seconds: u64,
}

/// The tip `listing` gives `branch` (the source's HEAD branch, else the same name).
fn tip_of(listing: &Advertisement, branch: &RefName) -> Option<Oid> {
    let wanted = listing.head.as_ref().unwrap_or(branch);
    listing.refs.iter().find(|(name, _)| name == wanted).map(|(_, oid)| *oid)
}

/// Lists `target` and fetches its HEAD branch's tip with depth 1 into a temporary
/// repository, then reads the tip's whole tree from what arrived.
async fn clone_tip(
    git: &crate::mirror::GitMirror,
    target: &Endpoint,
    deadline: Option<Instant>,
) -> Result<Cloned, String> {
    let listing = git.list(target, Side::Target, Service::Read, deadline).await;
    let listing = listing.map_err(|e| match e {
        MirrorError::NotFound { .. } => "the repository is missing from CodeCommit".to_owned(),
        MirrorError::CredentialsRefused { .. } => format!(
            "CodeCommit refused the credentials a build signs with ({e}): check codecommit:GitPull"
        ),
        other => other.to_string(),
    })?;
    let branch = listing
        .head
        .clone()
        .or_else(|| listing.refs.iter().find(|(n, _)| n.branch().is_some()).map(|(n, _)| n.clone()))
        .ok_or("the repository has no branch: a build has nothing to clone")?;
    let tip = tip_of(&listing, &branch).ok_or(format!("{branch} is advertised without a tip"))?;
    let endpoint = listing.redirected.clone().unwrap_or_else(|| target.clone());
    let fetch_branch = branch.clone();
    let fetched = blocking(move || {
        let cloned = tempfile::tempdir()
            .map_err(|e| format!("no temporary directory to clone into: {e}"))
            .and_then(|dir| shallow_fetch(&endpoint, dir.path(), &fetch_branch, tip));
        cloned.map_err(|error| MirrorError::Fetch { url: endpoint.display_url(), error })
    });
    let (objects, bytes, age_seconds) =
        before(deadline, "cloning the tip", fetched).await.map_err(|e| e.to_string())?;
    Ok(Cloned { branch, tip, objects, bytes, age_seconds })
}

/// `git fetch --depth 1 <url> <branch>` into a new bare repository at `dir`; then every
/// object of `tip`'s tree is looked up in what arrived. Objects, bytes, the tip's age.
fn shallow_fetch(
    endpoint: &Endpoint,
    dir: &Path,
    branch: &RefName,
    tip: Oid,
) -> Result<(usize, u64, u64), String> {
    let describe = |what: &str, e: git2::Error| format!("{what}: {}", e.message());
    let repository = git2::Repository::init_bare(dir).map_err(|e| describe("init", e))?;
    let mut remote =
        repository.remote_anonymous(&endpoint.url).map_err(|e| describe("remote", e))?;
    let refused = Cell::new(false);
    let mut options = FetchOptions::new();
    options.depth(1).download_tags(AutotagOption::None);
    options.remote_callbacks(endpoint.callbacks(&refused));
    let refspec = format!("+{branch}:refs/canary/tip");
    if let Err(e) = remote.fetch(&[refspec.as_str()], Some(&mut options), None) {
        return Err(if refused.get() {
            "CodeCommit refused the credentials on the fetch".to_owned()
        } else {
            describe("the shallow fetch of the tip failed (objects missing?)", e)
        });
    }
    let commit = repository
        .find_commit(tip)
        .map_err(|e| describe(&format!("the tip {tip} did not arrive"), e))?;
    let odb = repository.odb().map_err(|e| describe("odb", e))?;
    let (mut objects, mut bytes, mut missing) = (0_usize, 0_u64, None);
    let tree = commit.tree().map_err(|e| describe("the tip's tree did not arrive", e))?;
    tree.walk(TreeWalkMode::PreOrder, |path, entry| {
        // A submodule's commit lives in another repository.
        if entry.kind() == Some(ObjectType::Commit) {
            return TreeWalkResult::Ok;
        }
        match odb.read_header(entry.id()) {
            Ok((size, _)) => {
                objects += 1;
                bytes += size as u64;
                TreeWalkResult::Ok
            }
            Err(_) => {
                missing = Some(format!("{path}{}", entry.name().unwrap_or("?")));
                TreeWalkResult::Abort
            }
        }
    })
    .or_else(|e| if missing.is_some() { Ok(()) } else { Err(describe("reading the tree", e)) })?;
    if let Some(path) = missing {
        return Err(format!("`{path}` of the tip's tree did not arrive: objects are missing"));
    }
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let age = u64::try_from(now - commit.time().seconds()).unwrap_or(0);
    // And the commit and its root tree.
    Ok((objects + 2, bytes, age))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("r{i}")).collect()
    }

    #[test]
    fn a_rotation_covers_every_repository_within_ceil_n_over_share_runs() {
        let all = names(7);
        let mut seen = std::collections::BTreeSet::new();
        for run in 0..3 {
            seen.extend(rotation(&all, 3, run));
        }
        assert_eq!(seen.len(), 7, "{seen:?}");
        assert_eq!(rotation(&all, 3, 0).len(), 3);
    }

    #[test]
    fn a_share_covering_all_checks_all_in_order() {
        assert_eq!(rotation(&names(3), 5, 9), names(3));
        assert_eq!(rotation(&names(3), 0, 9), names(3));
    }
}
