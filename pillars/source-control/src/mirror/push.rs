//! Pushing to the target with our receive-pack client: the old tips of what moves back or
//! goes kept first, deletions, then creates and updates in batches, each ref's outcome read
//! (from the report, or from a new listing when the target sends none); a batch the target
//! refuses as a whole is refused per ref, and the run goes on.

use std::cell::Cell;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use git2::{Oid, Repository};

use super::{GitMirror, MirrorJob};
use crate::cache::open_cache;
use crate::error::MirrorError;
use crate::local;
use crate::pack::{self, Objects, PackPlan, StreamedPack};
use crate::protocol::{Advertisement, Command, Report, encode_commands};
use crate::refs::{MAX_REFS_PER_PUSH, RefChange, RefName, RefPlan};
use crate::report::{MirrorReport, TransferProgress};
use crate::safeguards::KeptRef;
use crate::task::{before, blocking};
use crate::transport::{Location, Service, Side};

impl GitMirror {
    /// Keeps, in the target, the old tip of every ref `plan` deletes or moves somewhere
    /// other than forward, before anything moves. A change whose old tip could not be
    /// kept is not made: it is reported refused, and the next run tries again.
    pub(super) async fn keep_old_tips(
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
            let answer = refusals_reported(self.push_once(to, &creations, objects).await)?;
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
    pub(super) async fn push_forwarded(
        &self,
        to: &Pushing<'_>,
        batch: &[RefChange],
        objects: Objects,
        haves: &mut Vec<Oid>,
        report: &mut MirrorReport,
    ) -> Result<Vec<RefChange>, MirrorError> {
        let answer = refusals_reported(self.push_once(to, batch, objects).await)?;
        Ok(self.record_forwarded(batch, &answer, haves, report))
    }

    /// Records what the target took of `batch` pushed with a fetched pack; returns the
    /// changes it refused, for a pack built for them.
    pub(super) fn record_forwarded(
        &self,
        batch: &[RefChange],
        answer: &Report,
        haves: &mut Vec<Oid>,
        report: &mut MirrorReport,
    ) -> Vec<RefChange> {
        let mut refused = Vec::new();
        for (change, outcome) in batch.iter().zip(outcomes(answer, batch)) {
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
        refused
    }

    /// Pushes one batch, splitting it when the target cannot store its objects, so that
    /// one bad ref cannot hold back the others. Records each ref's outcome in `report`;
    /// returns the new values the target accepted.
    pub(super) async fn push(
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
            let answer = refusals_reported(self.push_once(to, changes, objects).await)?;
            let why = outcomes(&answer, changes).into_iter().flatten().next().unwrap_or_default();
            if answer.unpack.is_err() && too_large(&why) && changes.iter().any(|c| c.new.is_some())
            {
                accepted.extend(self.push_in_steps(to, changes, haves, &why, report).await?);
                continue;
            }
            match answer.unpack {
                Err(reason) if changes.len() > 1 => {
                    tracing::warn!(
                        repository = to.job.name,
                        refs = changes.len(),
                        reason,
                        "the target could not store a batch; splitting it"
                    );
                    let (first, second) = changes.split_at(changes.len() / 2);
                    pending.extend([second, first]);
                }
                // Taken or refused ref by ref; a failed unpack refuses them all.
                _ => accepted.extend(report.record(changes, outcomes(&answer, changes))),
            }
        }
        Ok(accepted)
    }

    /// Pushes `changes`, whose pack the target refused as too large (`why`), in steps:
    /// a ref of our own (`refs/pillars/partial`) is moved along the first-parent history
    /// of the first branch, oldest commits first, each step's pack holding only what is
    /// new; a step still too large is halved. Then `changes` go with what is left, and
    /// the partial ref is removed. Each step stays in the target: a run stopped by its
    /// deadline leaves them there, and the next one sends only the rest.
    async fn push_in_steps(
        &self,
        to: &Pushing<'_>,
        changes: &[RefChange],
        haves: &[Oid],
        why: &str,
        report: &mut MirrorReport,
    ) -> Result<Vec<Oid>, MirrorError> {
        let partial = RefName::from(PARTIAL);
        let mut current = to.target.refs.iter().find(|(n, _)| *n == partial).map(|(_, o)| *o);
        let mut haves = haves.to_vec();
        haves.extend(current);
        let chain = {
            let (cache, wants, known) = (
                to.cache.to_owned(),
                changes.iter().filter_map(|c| c.new).collect(),
                haves.clone(),
            );
            blocking(move || Ok(first_parent_chain(&cache, wants, &known))).await?
        };
        tracing::warn!(
            repository = to.job.name,
            commits = chain.len(),
            why,
            "the pack is too large for the target; pushing the history in steps"
        );
        let refuse_all = |report: &mut MirrorReport, reason: &str| {
            for change in changes {
                report.refuse(change, reason.to_owned());
            }
        };
        let (mut steps, mut done) = (4_usize, 0_usize);
        while done < chain.len() {
            let size = chain.len().div_ceil(steps).max(1);
            let tip = chain[(done + size).min(chain.len()) - 1];
            let step = [RefChange { name: partial.clone(), old: current, new: Some(tip) }];
            let plan = PackPlan { wants: vec![tip], haves: haves.clone() };
            let answer = refusals_reported(self.push_once(to, &step, Objects::Build(plan)).await)?;
            let outcome = outcomes(&answer, &step).remove(0);
            match outcome {
                None => {
                    (current, done) = (Some(tip), (done + size).min(chain.len()));
                    haves.push(tip);
                }
                Some(reason) if too_large(&reason) && size > 1 => steps *= 2,
                Some(reason) => {
                    refuse_all(report, &format!("pushed in steps, one was refused: {reason}"));
                    return Ok(Vec::new());
                }
            }
        }
        let wants = changes.iter().filter_map(|c| c.new).collect();
        let objects = Objects::Build(PackPlan { wants, haves });
        let answer = refusals_reported(self.push_once(to, changes, objects).await)?;
        let accepted = report.record(changes, outcomes(&answer, changes));
        if let Some(tip) = current {
            let removal = [RefChange { name: partial, old: Some(tip), new: None }];
            if let Err(error) = self.push_once(to, &removal, Objects::None).await {
                tracing::warn!(%error, "the partial ref stays until the next run");
            }
        }
        Ok(accepted)
    }

    /// One receive-pack exchange for `changes`, sending `objects`.
    pub(super) async fn push_once(
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
    pub(super) async fn push_http(
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
            Objects::Stream(StreamedPack { first, rest }) => {
                let rest = futures_util::stream::unfold(rest, |mut rest| async move {
                    rest.recv().await.map(|item| (item, rest))
                });
                let pack = futures_util::stream::once(async move { first }).chain(rest);
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
            // The build stopped for the deadline: the cache is sound.
            Ok(Err(Some(_))) if !keep_going() => Err(MirrorError::Deadline { phase: "pushing" }),
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
    pub(super) async fn outcomes_from_listing(
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

/// Bytes of pack gathered before they are sent as one piece of the request body.
const SEND_CHUNK: usize = 256 * 1024;

const AGENT: &str = concat!("agent=pillars-scp/", env!("CARGO_PKG_VERSION"));

/// One run's pushes: whose, from which cache, to a target that advertised `target`.
pub(super) struct Pushing<'a> {
    pub(super) job: &'a MirrorJob,
    pub(super) cache: &'a Path,
    pub(super) target: &'a Advertisement,
    pub(super) progress: &'a Arc<TransferProgress>,
    pub(super) deadline: Option<Instant>,
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
pub(super) fn outcomes(answer: &Report, changes: &[RefChange]) -> Vec<Option<String>> {
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
pub(super) fn batch_refusal(error: &MirrorError) -> Option<String> {
    match error {
        MirrorError::Push { error, .. } => Some(format!("the target refused the push: {error}")),
        MirrorError::Http { status, message, .. } if !matches!(status, 429 | 502 | 503 | 504) => {
            Some(format!("the target refused the push with HTTP {status}: {message}"))
        }
        _ => None,
    }
}

/// `pushed`, a push refused as a whole at the transport level turned into the report of a
/// batch whose pack the target would not store, so every ref of it is refused with the
/// reason and the run goes on.
pub(super) fn refusals_reported(
    pushed: Result<Report, MirrorError>,
) -> Result<Report, MirrorError> {
    match pushed {
        Err(error) => match batch_refusal(&error) {
            Some(reason) => Ok(Report { unpack: Err(reason), ..Report::default() }),
            None => Err(error),
        },
        answer => answer,
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

/// The ref a push in steps moves along the history; never fetched by builds.
pub(crate) const PARTIAL: &str = "refs/pillars/partial";

/// The first-parent history of the first of `wants` that is a commit, oldest first, down
/// to a commit in `known` (the target has it) or the root.
fn first_parent_chain(cache: &Path, wants: Vec<Oid>, known: &[Oid]) -> Vec<Oid> {
    let Ok(cache) = Repository::open_bare(cache) else { return Vec::new() };
    let known: HashSet<Oid> = known.iter().copied().collect();
    let Some(mut commit) =
        wants.iter().find_map(|w| cache.find_object(*w, None).ok()?.peel_to_commit().ok())
    else {
        return Vec::new();
    };
    let mut chain = Vec::new();
    loop {
        if known.contains(&commit.id()) {
            break;
        }
        chain.push(commit.id());
        match commit.parent(0) {
            Ok(parent) => commit = parent,
            Err(_) => break,
        }
    }
    chain.reverse();
    chain
}
