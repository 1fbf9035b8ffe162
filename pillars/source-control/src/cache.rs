//! The bare cache a mirror fetches into: opening it (a damaged one is started anew), its
//! refs, its packs, and whether every object in it is settled (reachable from its refs).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use git2::Repository;

use crate::error::MirrorError;
use crate::refs::{RefMap, RefName, RefPlan, mirrored};

/// Opens the bare cache, starting a new one when it is missing or damaged (a run killed
/// mid-write must not block every later run).
pub(crate) fn open_cache(path: &Path) -> Result<Repository, MirrorError> {
    if let Ok(repo) = Repository::open_bare(path) {
        return Ok(repo);
    }
    if path.exists() {
        tracing::warn!(cache = %path.display(), "cache unreadable; starting a new one");
        let _ = std::fs::remove_dir_all(path);
    }
    Repository::init_bare(path).map_err(|error| cache_error(path, &error))
}

pub(crate) fn cache_error(path: &Path, error: &git2::Error) -> MirrorError {
    MirrorError::Cache { path: path.to_owned(), message: error.message().to_owned() }
}

pub(crate) fn cache_io(path: &Path, error: &std::io::Error) -> MirrorError {
    MirrorError::Cache { path: path.to_owned(), message: error.to_string() }
}

/// The cache's branches and tags.
pub(crate) fn cache_refs(cache: &Repository) -> Result<RefMap, git2::Error> {
    let mut refs = RefMap::new();
    for reference in cache.references()? {
        let reference = reference?;
        if let Some(oid) = reference.target() {
            refs.insert(RefName::new(reference.name_bytes()), oid);
        }
    }
    Ok(mirrored(refs))
}

/// Makes the cache's branches and tags exactly `wanted`: they are what the next fetch
/// offers the source as already present. Names that are not UTF-8 have no ref in the
/// cache (libgit2 writes only UTF-8 names); their objects are fetched all the same.
pub(crate) fn update_cache_refs(cache: &Repository, wanted: &RefMap) -> Result<(), git2::Error> {
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

/// Where a cache records the packs it held when its refs were last made the source's.
const SETTLED: &str = "pillars-settled-packs";

/// Records the cache's packs as settled: every object in them is reachable from its refs
/// or was before (and so is in the target once the target is in sync).
pub(crate) fn record_settled(cache: &Path) -> std::io::Result<()> {
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
pub(crate) fn settled(cache: &Path) -> bool {
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

/// Where a cache records that its last fetch ran out of time: the next fetches go in steps.
const OUTLASTED: &str = "pillars-fetch-outlasted";

/// Records (or, with `false`, forgets) that a fetch into the cache outlasted its run.
pub(crate) fn record_outlasted(cache: &Path, outlasted: bool) -> std::io::Result<()> {
    let marker = cache.join(OUTLASTED);
    match outlasted {
        true => std::fs::write(marker, b""),
        false if marker.exists() => std::fs::remove_file(marker),
        false => Ok(()),
    }
}

pub(crate) fn outlasted(cache: &Path) -> bool {
    cache.join(OUTLASTED).exists()
}

/// The pack files of the cache.
pub(crate) fn packs(cache: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(cache.join("objects/pack")) else { return Vec::new() };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "pack"))
        .collect()
}

/// The pack files written since `before` was listed.
pub(crate) fn packs_since(cache: &Path, before: &[PathBuf]) -> Vec<PathBuf> {
    packs(cache).into_iter().filter(|p| !before.contains(p)).collect()
}
