//! Fetching from the source into the cache: our upload-pack client over HTTP (the listing
//! read first is the advertisement; one round of wants and haves; the pack indexed as it
//! streams in, connectivity checked), libgit2 for local paths and servers without
//! `side-band-64k`; a new cache filled from the target first.

use std::cell::Cell;
use std::collections::{BTreeSet, BinaryHeap, HashSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use futures_util::StreamExt;
use git2::{FetchOptions, Oid, Repository};

use super::{GitMirror, MirrorJob};
use crate::cache::{
    cache_error, cache_io, cache_refs, open_cache, outlasted, packs, packs_since, record_outlasted,
    record_settled, settled, update_cache_refs,
};
use crate::error::MirrorError;
use crate::protocol::{PackDemux, encode_fetch};
use crate::refs::{RefMap, RefName};
use crate::report::TransferProgress;
use crate::task::{before, blocking};
use crate::transport::{Endpoint, Location, Side};

impl GitMirror {
    /// Downloads what the cache lacks of the source's refs, then makes the cache's refs
    /// exactly those (the haves of the next fetch). When the source offers
    /// `side-band-64k` over HTTP, the pack comes through our client in one round, the
    /// listing just read serving as the advertisement; else through libgit2.
    pub(super) async fn fetch(
        &self,
        cache: &Path,
        job: &MirrorJob,
        listed: &Listed<'_>,
        progress: &Arc<TransferProgress>,
        deadline: Option<Instant>,
        tee: Option<Tee>,
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
                fetched.pack = if ours && deadline.is_some() && outlasted(cache) {
                    self.fetch_in_steps(cache, job, listed, &prepared.missing, progress).await?;
                    None
                } else if ours {
                    let request = fetch_request(offered, &prepared.missing, &prepared.haves);
                    // Without haves the source sends a whole (not thin) pack: what an empty
                    // target needs, as it arrives.
                    let tee = tee.filter(|_| prepared.haves.is_empty());
                    fetched.streamed = tee.is_some();
                    Some(self.download_pack(cache, job, request, progress, tee).await?)
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
        let fetched = before(deadline, "fetching from the source", fetching).await;
        if let Err(MirrorError::Deadline { .. }) = &fetched {
            // What a whole fetch brought is lost with it: the next runs fetch in steps.
            record_outlasted(cache, true).map_err(|e| cache_io(cache, &e))?;
        }
        fetched
    }

    /// Fetches `missing` a share of the source's refs at a time, oldest first as far as
    /// names tell (tags in version order, then branches, the default branch last), each
    /// step's refs added to the cache's once its pack is in: a history whose whole fetch
    /// outlasts a run arrives over several, each carrying on from the last.
    async fn fetch_in_steps(
        &self,
        cache: &Path,
        job: &MirrorJob,
        listed: &Listed<'_>,
        missing: &[Oid],
        progress: &Arc<TransferProgress>,
    ) -> Result<(), MirrorError> {
        let steps = fetch_steps(listed.source, listed.head, missing);
        for (number, step) in steps.iter().enumerate() {
            tracing::info!(
                repository = job.name,
                step = number + 1,
                steps = steps.len(),
                refs = step.len(),
                "the last fetch outlasted its run: fetching in steps"
            );
            let (wants, haves) = {
                let (cache, step) = (cache.to_owned(), step.clone());
                blocking(move || {
                    let repository = open_cache(&cache)?;
                    let failed = |e: git2::Error| cache_error(&cache, &e);
                    let odb = repository.odb().map_err(failed)?;
                    // An earlier step may have brought a later one's tips.
                    let wants: BTreeSet<Oid> =
                        step.into_values().filter(|oid| !odb.exists(*oid)).collect();
                    let tips = cache_refs(&repository).map_err(failed)?;
                    Ok((wants, haves(&repository, tips.into_values()).map_err(failed)?))
                })
                .await?
            };
            if !wants.is_empty() {
                let wants: Vec<Oid> = wants.into_iter().collect();
                let request = fetch_request(listed.offered, &wants, &haves);
                self.download_pack(cache, job, request, progress, None).await?;
            }
            let (cache, step) = (cache.to_owned(), step.clone());
            blocking(move || {
                let repository = open_cache(&cache)?;
                let failed = |e: git2::Error| cache_error(&cache, &e);
                let mut refs = cache_refs(&repository).map_err(failed)?;
                refs.extend(step);
                update_cache_refs(&repository, &refs).map_err(failed)?;
                record_settled(&cache).map_err(|e| cache_io(&cache, &e))
            })
            .await?;
        }
        Ok(())
    }

    /// Sends upload-pack `request` to the source and indexes the pack of its answer into the
    /// cache as it arrives (a thin pack is completed from the cache). Returns the pack file.
    pub(super) async fn download_pack(
        &self,
        cache: &Path,
        job: &MirrorJob,
        request: Vec<u8>,
        progress: &Arc<TransferProgress>,
        tee: Option<Tee>,
    ) -> Result<PathBuf, MirrorError> {
        let mut answer = self.http.upload_pack(&job.source, Side::Source, request).await?;
        let (sender, chunks) = tokio::sync::mpsc::channel(16);
        let indexed = {
            let (cache, job, progress) = (cache.to_owned(), job.clone(), Arc::clone(progress));
            blocking(move || index_pack(&cache, &job, chunks, &progress, tee))
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
}

/// What the fetch found and brought.
#[derive(Debug, Default)]
pub(super) struct Fetched {
    /// Objects came from the source.
    pub(super) downloaded: bool,
    /// Before the download, the cache's refs were the target's: the target has every object
    /// the cache had, so the pack downloaded holds every object it lacks.
    pub(super) in_sync: bool,
    /// The pack the download wrote, when it wrote one.
    pub(super) pack: Option<PathBuf>,
    /// The pack also went, as it arrived, to the tee the fetch was given.
    pub(super) streamed: bool,
    /// Bytes read from the source.
    pub(super) bytes: u64,
}

/// Both sides' refs, and the capabilities of the source's upload-pack.
pub(super) struct Listed<'a> {
    pub(super) source: &'a RefMap,
    pub(super) target: &'a RefMap,
    pub(super) offered: &'a [String],
    /// The branch the source's `HEAD` names, if it said.
    pub(super) head: Option<&'a RefName>,
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
    record_outlasted(cache_path, false).map_err(|e| cache_io(cache_path, &e))?;
    record_settled(cache_path).map_err(|e| cache_io(cache_path, &e))
}

/// At most this many steps for a fetch in steps.
const FETCH_STEPS: usize = 8;

/// The refs of `wanted` whose objects are `missing`, in up to [`FETCH_STEPS`] steps of about
/// the same number of refs, oldest first as far as names tell: tags in version order (v1.9
/// before v1.10), then branches, the default branch `head` last (it holds most of the rest).
fn fetch_steps(wanted: &RefMap, head: Option<&RefName>, missing: &[Oid]) -> Vec<RefMap> {
    let missing: HashSet<Oid> = missing.iter().copied().collect();
    let mut order: Vec<(&RefName, &Oid)> =
        wanted.iter().filter(|(_, oid)| missing.contains(oid)).collect();
    order.sort_by_cached_key(|(name, _)| {
        let tag = name.as_bytes().starts_with(b"refs/tags/");
        (!tag, Some(*name) == head, version_order(name.as_bytes()))
    });
    let size = order.len().div_ceil(FETCH_STEPS).max(1);
    order
        .chunks(size)
        .map(|step| step.iter().map(|(name, oid)| ((*name).clone(), **oid)).collect())
        .collect()
}

/// A name's key in version order: runs of digits compare as numbers.
fn version_order(name: &[u8]) -> Vec<(Vec<u8>, usize, Vec<u8>)> {
    let mut key = Vec::new();
    let mut rest = name;
    while !rest.is_empty() {
        let text = rest.iter().take_while(|b| !b.is_ascii_digit()).count();
        let digits = rest[text..].iter().take_while(|b| b.is_ascii_digit()).count();
        let number = &rest[text..text + digits];
        let significant = &number[number.iter().take_while(|b| **b == b'0').count()..];
        key.push((rest[..text].to_vec(), significant.len(), significant.to_vec()));
        rest = &rest[text + digits..];
    }
    key
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
    tee: Option<Tee>,
) -> Result<PathBuf, MirrorError> {
    let mut tee = tee.map(|sender| TeeWriter { sender, held: None, released: false });
    let indexed = index_into(cache_path, job, &mut chunks, progress, &mut tee);
    if let Some(tee) = tee {
        tee.finish(indexed.as_ref().map(drop).map_err(ToString::to_string));
    }
    indexed
}

/// The pack's bytes as they are indexed, for a push to the target at the same time.
pub(super) type Tee = tokio::sync::mpsc::Sender<std::io::Result<Bytes>>;

/// Sends the pack to a [`Tee`], one piece behind: the last piece (with the pack's checksum)
/// goes only once the source's answer is complete, so a target never gets a complete pack
/// from a download cut short (the push ends with an error instead, and no ref moves). It
/// goes before the cache resolves the pack's deltas, so the target resolves its own at the
/// same time: both check the pack, the target before any of its refs move.
struct TeeWriter {
    sender: Tee,
    held: Option<Bytes>,
    /// The whole pack has gone to the target.
    released: bool,
}

impl TeeWriter {
    fn write(&mut self, bytes: &[u8]) {
        if let Some(previous) = self.held.replace(Bytes::copy_from_slice(bytes))
            && self.sender.blocking_send(Ok(previous)).is_err()
        {
            // The push stopped; its own error says why. Indexing goes on.
            self.held = None;
        }
    }

    /// The source's answer is complete: the last piece goes.
    fn release(&mut self) {
        if let Some(last) = self.held.take() {
            let _ = self.sender.blocking_send(Ok(last));
        }
        self.released = true;
    }

    fn finish(self, indexed: Result<(), String>) {
        let last = match indexed {
            // The target has the whole pack and judges it itself; the cache's failure is
            // the run's error, and the cache is not settled.
            _ if self.released => None,
            Ok(()) => self.held.map(Ok),
            Err(error) => Some(Err(std::io::Error::other(format!("the fetch failed: {error}")))),
        };
        if let Some(last) = last {
            let _ = self.sender.blocking_send(last);
        }
    }
}

fn index_into(
    cache_path: &Path,
    job: &MirrorJob,
    chunks: &mut tokio::sync::mpsc::Receiver<Bytes>,
    progress: &TransferProgress,
    tee: &mut Option<TeeWriter>,
) -> Result<PathBuf, MirrorError> {
    let cache = open_cache(cache_path)?;
    let odb = cache.odb().map_err(|e| cache_error(cache_path, &e))?;
    let directory = cache_path.join("objects/pack");
    let failed = |message: String| download_error(job, cache_path, message);
    // Every object is hashed as it is indexed. Into a cache that holds objects already (a
    // thin pack, completed from it), `verify` also checks that every object a commit, tree
    // or tag of the pack names is in the pack or the cache, so a pack that leaves a hole
    // fails here. Not for a first, whole pack: libgit2 then rescans the pack directory at
    // every object not yet seen (a 10k-commit clone took 12 s instead of 0.2 s), and the
    // target's receive-pack checks the connectivity of what it takes anyway.
    let verify = !packs(cache_path).is_empty();
    let mut indexer = git2::Indexer::new(Some(&odb), &directory, 0, verify)
        .map_err(|e| failed(e.message().to_owned()))?;
    indexer.progress(|stats| {
        progress.objects_received.store(stats.received_objects() as u64, Ordering::Relaxed);
        progress.objects_total.store(stats.total_objects() as u64, Ordering::Relaxed);
        true
    });
    let mut demux = PackDemux::default();
    while let Some(chunk) = chunks.blocking_recv() {
        demux
            .feed(&chunk, &mut |bytes| {
                if let Some(tee) = tee.as_mut() {
                    tee.write(bytes);
                }
                indexer.write_all(bytes).map_err(|e| e.to_string())
            })
            .map_err(failed)?;
    }
    if !demux.ended() {
        return Err(failed("the answer ended before the pack did; run again".to_owned()));
    }
    if let Some(tee) = tee.as_mut() {
        tee.release();
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
pub(crate) fn download(
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
            // A history pushed in steps is on its way in the target: seed from it too.
            &[
                "+refs/heads/*:refs/heads/*",
                "+refs/tags/*:refs/tags/*",
                "+refs/pillars/partial:refs/pillars/partial",
            ],
            Some(&mut options),
        )
    });
    downloaded.map_err(|error| (error, refused.get()))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn oid(n: u8) -> Oid {
        Oid::from_bytes(&[n; 20]).expect("an oid")
    }

    #[test]
    fn steps_take_tags_in_version_order_then_branches_and_the_default_branch_last() {
        let names = [
            "refs/heads/main",
            "refs/heads/feature",
            "refs/tags/v1.10.0",
            "refs/tags/v1.9.0",
            "refs/tags/v1.09.1",
            "refs/tags/v2.0.0",
        ];
        let wanted: RefMap =
            names.iter().zip(1..).map(|(name, n)| (RefName::from(*name), oid(n))).collect();
        let head = RefName::from("refs/heads/main");
        let all: Vec<Oid> = wanted.values().copied().collect();
        let steps = fetch_steps(&wanted, Some(&head), &all);
        let order: Vec<String> =
            steps.iter().flat_map(|s| s.keys().map(ToString::to_string)).collect();
        assert_eq!(
            order,
            [
                "refs/tags/v1.9.0",
                "refs/tags/v1.09.1",
                "refs/tags/v1.10.0",
                "refs/tags/v2.0.0",
                "refs/heads/feature",
                "refs/heads/main"
            ]
        );
        assert_eq!(steps.len(), 6, "one ref a step when there are fewer than eight");
    }

    #[test]
    fn steps_hold_only_what_the_cache_lacks_in_at_most_eight_shares() {
        let wanted: RefMap = (0..100u8)
            .map(|n| (RefName::from(format!("refs/tags/t{n}").as_str()), oid(n)))
            .collect();
        let missing: Vec<Oid> = (50..100u8).map(oid).collect();
        let steps = fetch_steps(&wanted, None, &missing);
        assert_eq!(steps.len(), 8);
        assert_eq!(steps.iter().map(RefMap::len).collect::<Vec<_>>(), [7, 7, 7, 7, 7, 7, 7, 1]);
        assert!(steps.iter().flat_map(|s| s.values()).all(|o| missing.contains(o)));
        assert_eq!(
            steps[0].keys().next().map(ToString::to_string).as_deref(),
            Some("refs/tags/t50")
        );
    }
}
