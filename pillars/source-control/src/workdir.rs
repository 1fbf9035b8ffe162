//! The work directory holding one bare cache per repository (`<name>.git`) and its lock
//! (`<name>.lock`). Bounded: a warm Lambda that has mirrored many repositories would
//! otherwise fill its ephemeral storage until every fetch fails. Before a mirror starts,
//! the least recently used caches are evicted until the directory fits its limit; a cache
//! another mirror holds locked is never touched.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Share of the work directory's file system the caches may fill by default: the rest is
/// room for the repository being fetched.
const DEFAULT_SHARE: (u64, u64) = (1, 2);

#[derive(Debug, thiserror::Error)]
#[error("cannot lock {}: {error}; is the work directory writable?", path.display())]
pub struct LockError {
    pub path: PathBuf,
    pub error: std::io::Error,
}

/// Where caches live and how much they may hold together.
#[derive(Debug, Clone)]
pub struct WorkDir {
    root: PathBuf,
    /// Bytes; `None`: no limit.
    limit: Option<u64>,
}

/// A cache held locked (until this is dropped) by one mirror.
#[derive(Debug)]
pub struct LockedCache {
    pub path: PathBuf,
    _lock: File,
}

impl WorkDir {
    /// `limit` in bytes; `None` for no limit.
    pub fn new(root: impl Into<PathBuf>, limit: Option<u64>) -> Self {
        Self { root: root.into(), limit }
    }

    /// With `limit_mib`, or else half of the file system the directory is on (in Lambda,
    /// the function's ephemeral storage).
    pub fn with_limit_or_default(root: impl Into<PathBuf>, limit_mib: Option<u64>) -> Self {
        let root = root.into();
        let limit = limit_mib.map(|mib| mib << 20).or_else(|| default_limit(&root));
        Self { root, limit }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn limit(&self) -> Option<u64> {
        self.limit
    }

    /// Locks `name`'s cache, waiting for another mirror of it to finish, marks it used now,
    /// and evicts the least recently used other caches until the directory fits its limit.
    pub fn lock(&self, name: &str) -> Result<LockedCache, LockError> {
        let path = self.root.join(format!("{name}.lock"));
        let locked = std::fs::create_dir_all(&self.root)
            .and_then(|()| File::options().create(true).truncate(false).write(true).open(&path))
            .and_then(|file| file.lock().map(|()| file))
            .and_then(|file| file.set_modified(SystemTime::now()).map(|()| file));
        let lock = locked.map_err(|error| LockError { path, error })?;
        self.fit(name);
        Ok(LockedCache { path: self.root.join(format!("{name}.git")), _lock: lock })
    }

    /// Evicts the least recently used caches other than `name` until the directory fits
    /// its limit: before a mirror, and after it, once its own cache has grown.
    pub fn fit(&self, name: &str) {
        if let Some(limit) = self.limit {
            self.evict(name, limit);
        }
    }

    /// Evicts every other cache not in use: what a full disk leaves to try.
    pub fn evict_all_but(&self, name: &str) {
        self.evict(name, 0);
    }

    /// Bytes the caches take now.
    pub fn used(&self) -> u64 {
        self.caches().iter().map(|c| c.bytes).sum()
    }

    fn caches(&self) -> Vec<Cache> {
        let Ok(entries) = std::fs::read_dir(&self.root) else { return Vec::new() };
        entries
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name().to_str()?.strip_suffix(".git")?.to_owned();
                let lock = self.root.join(format!("{name}.lock"));
                let used = std::fs::metadata(&lock).and_then(|m| m.modified()).ok();
                Some(Cache { bytes: size(&entry.path()), used, name })
            })
            .collect()
    }

    /// Removes the least recently used caches other than `keep` (and other than those in
    /// use) while all of them together take more than `limit`.
    fn evict(&self, keep: &str, limit: u64) {
        let mut caches = self.caches();
        let mut total: u64 = caches.iter().map(|c| c.bytes).sum();
        caches.sort_by_key(|c| c.used);
        for cache in caches.iter().filter(|c| c.name != keep) {
            if total <= limit {
                break;
            }
            let lock = self.root.join(format!("{}.lock", cache.name));
            let Ok(file) = File::options().write(true).open(&lock) else { continue };
            if file.try_lock().is_err() {
                tracing::debug!(cache = cache.name, "in use by another mirror; not evicted");
                continue;
            }
            match std::fs::remove_dir_all(self.root.join(format!("{}.git", cache.name))) {
                Ok(()) => {
                    total -= cache.bytes;
                    tracing::info!(
                        cache = cache.name,
                        bytes = cache.bytes,
                        "evicted the least recently used cache"
                    );
                }
                Err(error) => tracing::warn!(cache = cache.name, %error, "cache not evicted"),
            }
        }
        if total > limit && limit > 0 {
            tracing::warn!(
                work_dir = %self.root.display(),
                bytes = total,
                limit,
                "caches in use exceed the work directory's limit"
            );
        }
    }
}

#[derive(Debug)]
struct Cache {
    name: String,
    bytes: u64,
    used: Option<SystemTime>,
}

/// Bytes of the files under `path`.
fn size(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else { return 0 };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => size(&entry.path()),
            Ok(_) => entry.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}

/// The default limit for caches under `root`: a share of its file system's size.
fn default_limit(root: &Path) -> Option<u64> {
    let existing = root.ancestors().find(|p| p.exists())?;
    let stats = rustix::fs::statvfs(existing).ok()?;
    let total = stats.f_blocks.saturating_mul(stats.f_frsize);
    Some(total / DEFAULT_SHARE.1 * DEFAULT_SHARE.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cache of `bytes`, used after every one made before it: its lock's modification
    /// time is set, a second later each time, not left to the clock's resolution.
    fn cache(work: &WorkDir, name: &str, bytes: usize) {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let locked = work.lock(name).expect("lock");
        std::fs::create_dir_all(&locked.path).expect("cache dir");
        std::fs::write(locked.path.join("pack"), vec![0_u8; bytes]).expect("write");
        let second = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let used = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000 + second);
        File::options()
            .write(true)
            .open(locked.path.with_extension("lock"))
            .and_then(|lock| lock.set_modified(used))
            .expect("set the lock's time");
    }

    #[test]
    fn the_oldest_unlocked_caches_go_first() {
        let dir = tempfile::tempdir().expect("temp dir");
        let exists = |name: &str| dir.path().join(format!("{name}.git")).exists();
        let work = WorkDir::new(dir.path(), Some(2_500));
        cache(&work, "a", 1_000);
        cache(&work, "b", 1_000);
        let held = work.lock("b").expect("b in use");
        cache(&work, "c", 1_000);
        assert!(exists("a") && exists("b") && exists("c"), "3,000 bytes were not there yet");
        cache(&work, "d", 1_000);
        assert!(!exists("a"), "a is the least recently used");
        assert!(exists("b") && exists("c") && exists("d"));
        cache(&work, "e", 1_000);
        assert!(exists("b"), "b is locked: never evicted");
        assert!(!exists("c"), "c goes instead");
        drop(held);
        work.evict_all_but("e");
        assert_eq!(work.used(), 1_000, "only e is left");
    }

    #[test]
    fn the_default_limit_is_a_share_of_the_file_system() {
        let dir = tempfile::tempdir().expect("temp dir");
        let work = WorkDir::with_limit_or_default(dir.path().join("not/yet"), None);
        assert!(work.limit().is_some_and(|l| l > 0));
        assert_eq!(WorkDir::with_limit_or_default(dir.path(), Some(3)).limit(), Some(3 << 20));
    }
}
