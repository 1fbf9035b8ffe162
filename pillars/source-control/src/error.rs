//! What can go wrong in a mirror run, each saying which end, which URL and what to do.

use std::path::PathBuf;

use crate::transport::Side;
use crate::workdir::LockError;

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
