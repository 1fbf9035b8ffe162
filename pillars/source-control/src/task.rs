//! Running blocking work off the async threads, and bounding work by a deadline.

use std::path::PathBuf;
use std::time::Instant;

use crate::error::MirrorError;

/// Runs blocking work (libgit2, the file system) off the async threads, starting it at
/// once (not when first awaited: the pack indexer must drain its channel meanwhile).
pub(crate) fn blocking<T: Send + 'static>(
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
pub(crate) async fn before<T>(
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

pub(crate) fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}
