//! A client of the published flag sets: polls the pointer (a conditional GET, backing off
//! while S3 fails), verifies each new bundle's digest, keeps the last good one in memory
//! and on disk, and evaluates from it whatever S3 does. With nothing ever fetched, every
//! evaluation says so and callers get their own defaults.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::bundle::Bundle;
use crate::error::ConfigError;
use crate::evaluate::{ErrorCode, Evaluator, Resolution};
use crate::store::{Pointer, Polled, Store};

/// What the disk cache keeps beside the bundle's bytes.
#[derive(Debug, Clone, Deserialize, Serialize)]
struct Cached {
    pointer: Pointer,
    etag: String,
    /// When S3 last confirmed this was current (seconds since the epoch).
    confirmed_at: u64,
}

#[derive(Debug, Default)]
struct State {
    evaluator: Option<Arc<Evaluator>>,
    cached: Option<Cached>,
    last_error: Option<String>,
}

/// How current the flags served are.
#[derive(Debug, Clone, Serialize)]
pub struct Freshness {
    /// The bundle served, if any.
    pub digest: Option<String>,
    pub published_at: Option<String>,
    /// Seconds since S3 last confirmed the bundle was current: it grows while S3 is gone.
    pub age_seconds: Option<u64>,
    /// Why the last poll failed, while it does.
    pub last_error: Option<String>,
}

/// Polls one [`Store`] and evaluates its current flag set.
#[derive(Debug)]
pub struct Client {
    store: Store,
    cache_dir: Option<PathBuf>,
    state: RwLock<State>,
}

const POINTER_FILE: &str = "pointer.json";

/// The cached bundle of `digest`: named by it, so the pointer file always names a bundle
/// file that is there (the old one is removed only once the new pointer is in place).
fn bundle_file(digest: &str) -> String {
    format!("bundle-{}.json", digest.trim_start_matches("sha256:"))
}

fn epoch_seconds(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Client {
    /// A client of `store`, keeping its last good bundle in `cache_dir` (if given) and
    /// starting from what that holds.
    pub fn new(store: Store, cache_dir: Option<PathBuf>) -> Self {
        let client = Self { store, cache_dir, state: RwLock::new(State::default()) };
        if let Some(dir) = &client.cache_dir {
            match load_cache(dir) {
                Ok(Some((evaluator, cached))) => {
                    tracing::info!(
                        digest = cached.pointer.digest,
                        "serving the cached flag set until S3 answers"
                    );
                    let mut state = client.state.write().expect("not poisoned");
                    state.evaluator = Some(Arc::new(evaluator));
                    state.cached = Some(cached);
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "the cached flag set is not usable; waiting for S3")
                }
            }
        }
        client
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The flag set served now.
    pub fn evaluator(&self) -> Option<Arc<Evaluator>> {
        self.state.read().expect("not poisoned").evaluator.clone()
    }

    /// `key` for `context`, from the last good bundle.
    pub fn evaluate(&self, key: &str, context: &Value) -> Resolution {
        match self.evaluator() {
            Some(evaluator) => evaluator.evaluate(key, context),
            None => Resolution::failed(ErrorCode::ProviderNotReady, self.not_ready()),
        }
    }

    /// Why nothing can be evaluated yet.
    pub fn not_ready(&self) -> String {
        format!(
            "no flag set fetched yet from {}: callers get their defaults",
            self.store.location()
        )
    }

    pub fn freshness(&self) -> Freshness {
        let state = self.state.read().expect("not poisoned");
        let now = epoch_seconds(SystemTime::now());
        Freshness {
            digest: state.cached.as_ref().map(|c| c.pointer.digest.clone()),
            published_at: state.cached.as_ref().map(|c| c.pointer.published_at.clone()),
            age_seconds: state.cached.as_ref().map(|c| now.saturating_sub(c.confirmed_at)),
            last_error: state.last_error.clone(),
        }
    }

    /// One poll: true when a new bundle is now served. A failure keeps what is served.
    pub async fn poll(&self) -> Result<bool, ConfigError> {
        let result = self.poll_inner().await;
        let mut state = self.state.write().expect("not poisoned");
        state.last_error = result.as_ref().err().map(ToString::to_string);
        result
    }

    async fn poll_inner(&self) -> Result<bool, ConfigError> {
        let known =
            self.state.read().expect("not poisoned").cached.as_ref().map(|c| c.etag.clone());
        let now = epoch_seconds(SystemTime::now());
        let (pointer, etag) = match self.store.poll(known.as_deref()).await? {
            Polled::NotModified => {
                self.confirm(now, None);
                return Ok(false);
            }
            Polled::Missing => {
                // Nothing published (or the pointer deleted): what is held stays served.
                return Ok(false);
            }
            Polled::Changed { pointer, etag } => (pointer, etag),
        };
        let held = self.evaluator().map(|e| e.digest().to_owned());
        if held.as_deref() == Some(pointer.digest.as_str()) {
            self.confirm(now, Some((pointer, etag)));
            return Ok(false);
        }
        let (bundle, bytes) = self.store.bundle(&pointer.digest).await?;
        let evaluator = Evaluator::new(bundle, pointer.digest.clone())?;
        let cached = Cached { pointer, etag, confirmed_at: now };
        if let Some(dir) = &self.cache_dir
            && let Err(e) = save_cache(dir, &bytes, &cached)
        {
            // Served from memory still; only a restart during an outage would miss it.
            tracing::warn!(error = %e, "the flag set could not be cached on disk");
        }
        tracing::info!(digest = cached.pointer.digest, "serving a new flag set");
        let mut state = self.state.write().expect("not poisoned");
        state.evaluator = Some(Arc::new(evaluator));
        state.cached = Some(cached);
        Ok(true)
    }

    /// S3 said the held bundle is current (with a new pointer object, if it was rewritten).
    fn confirm(&self, now: u64, pointer: Option<(Pointer, String)>) {
        let mut state = self.state.write().expect("not poisoned");
        if let Some(cached) = &mut state.cached {
            cached.confirmed_at = now;
            if let Some((pointer, etag)) = pointer {
                (cached.pointer, cached.etag) = (pointer, etag);
            }
        }
    }
}

fn cache_error(path: &Path, detail: impl ToString) -> ConfigError {
    ConfigError::Cache { path: path.display().to_string(), detail: detail.to_string() }
}

fn load_cache(dir: &Path) -> Result<Option<(Evaluator, Cached)>, ConfigError> {
    let pointer_path = dir.join(POINTER_FILE);
    let text = match std::fs::read(&pointer_path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(cache_error(&pointer_path, e)),
    };
    let cached: Cached =
        serde_json::from_slice(&text).map_err(|e| cache_error(&pointer_path, e))?;
    let bundle_path = dir.join(bundle_file(&cached.pointer.digest));
    let bytes = std::fs::read(&bundle_path).map_err(|e| cache_error(&bundle_path, e))?;
    let bundle =
        Bundle::from_bytes(&bytes, &cached.pointer.digest, &bundle_path.display().to_string())?;
    Ok(Some((Evaluator::new(bundle, cached.pointer.digest.clone())?, cached)))
}

/// Writes the bundle under its digest, then the pointer naming it, each whole beside its
/// place and renamed there; then removes older bundles. A crash at any point leaves a
/// pointer naming a bundle file that is there, whole.
fn save_cache(dir: &Path, bytes: &[u8], cached: &Cached) -> Result<(), ConfigError> {
    std::fs::create_dir_all(dir).map_err(|e| cache_error(dir, e))?;
    let bundle = bundle_file(&cached.pointer.digest);
    let pointer = serde_json::to_vec(cached).expect("serializes");
    for (name, content) in [(bundle.as_str(), bytes), (POINTER_FILE, pointer.as_slice())] {
        let path = dir.join(name);
        let partial = dir.join(format!("{name}.partial"));
        std::fs::write(&partial, content).map_err(|e| cache_error(&partial, e))?;
        std::fs::rename(&partial, &path).map_err(|e| cache_error(&path, e))?;
    }
    let entries = std::fs::read_dir(dir).map_err(|e| cache_error(dir, e))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("bundle-") && name != bundle {
            // Only disk space is at stake if it stays.
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}
