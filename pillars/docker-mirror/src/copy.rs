//! Copying one image: children before their index, blobs before their manifest, the tag
//! last, so a tag in the target never points at something incomplete.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, Stream, StreamExt, TryStreamExt, stream};
use oci_client::Reference;

use crate::error::MirrorError;
use crate::manifest::{self, Descriptor, Parsed};
use crate::registry::Registry;
use crate::retry::RetryPolicy;
use crate::target::Destination;

/// Where a source image stands against the target, by the digest its reference resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// The target has this digest under the tag (or by digest): nothing to do.
    UpToDate(String),
    /// The target lacks it or holds another image under the tag.
    Changed(String),
}

/// Told of blob bytes as they are copied, for a terminal to show.
pub trait CopyProgress: Send + Sync + std::fmt::Debug {
    /// `bytes` more of `image` (as `registry/repository:tag`) were read from the source.
    fn copied(&self, image: &str, bytes: u64);
}

/// Copies images from a source registry into a destination.
#[derive(Debug, Clone)]
pub struct Copier {
    /// Blobs of one image copied at the same time.
    pub blob_concurrency: usize,
    pub retry: RetryPolicy,
    pub progress: Option<Arc<dyn CopyProgress>>,
}

impl Default for Copier {
    fn default() -> Self {
        Self::new(4, RetryPolicy::default())
    }
}

impl Copier {
    pub fn new(blob_concurrency: usize, retry: RetryPolicy) -> Self {
        Self { blob_concurrency: blob_concurrency.max(1), retry, progress: None }
    }

    /// The same copier, never waiting to retry past `deadline`.
    pub fn until(&self, deadline: Option<std::time::Instant>) -> Self {
        Self { retry: self.retry.until(deadline), ..self.clone() }
    }

    /// The digest `image` (a tag or a digest in `source`) resolves to, and whether `to`
    /// already holds it under `tag` (or by digest): one HEAD, or equivalent, on each side.
    pub async fn status(
        &self,
        source: &Registry,
        image: &Reference,
        to: &Destination,
        tag: Option<&str>,
    ) -> Result<Status, MirrorError> {
        let digest = self
            .retry
            .run(|| source.manifest_digest(image))
            .await?
            .ok_or_else(|| MirrorError::NotFound { what: image.whole() })?;
        let existing = self.retry.run(|| to.manifest_digest(tag.unwrap_or(&digest))).await?;
        Ok(if existing.as_deref() == Some(digest.as_str()) {
            Status::UpToDate(digest)
        } else {
            Status::Changed(digest)
        })
    }

    /// Copies the manifest `digest` of `image` into `to`, under `tag` when given, with all it
    /// references, then the referrers the target lacks. Returns the blob bytes uploaded
    /// (blobs the target had, or mounted, count 0) and the referrers copied.
    pub async fn copy(
        &self,
        source: &Registry,
        image: &Reference,
        to: &Destination,
        tag: Option<&str>,
        digest: &str,
    ) -> Result<(u64, usize), MirrorError> {
        to.prepare().await?;
        // Already there by digest (a tag moved back, or a tag move an immutable repository
        // refused last run): only the tag is pushed, nothing is copied again.
        let present =
            self.retry.run(|| to.manifest_digest(digest)).await?.as_deref() == Some(digest);
        let (bytes, media_type, uploaded) = match present {
            true => {
                let (bytes, parsed) = self.read_manifest(source, image, digest).await?;
                (bytes, parsed.media_type().to_owned(), 0)
            }
            false => self.copy_manifest(source, image, to, digest).await?,
        };
        self.put_tagged(to, &bytes, &media_type, digest, tag).await?;
        let referrers = self.missing_referrers(source, image, to, digest).await?;
        let referrer_bytes = self.copy_referrers(source, image, to, &referrers).await?;
        Ok((uploaded + referrer_bytes, referrers.len()))
    }

    /// Pushes the manifest under `tag`. Where an immutable tag holds another image, the
    /// manifest is pushed by digest (pullable so), and the refusal names both digests.
    async fn put_tagged(
        &self,
        to: &Destination,
        bytes: &Bytes,
        media_type: &str,
        digest: &str,
        tag: Option<&str>,
    ) -> Result<(), MirrorError> {
        match self.retry.run(|| to.put_manifest(bytes, media_type, digest, tag)).await {
            Err(MirrorError::ImmutableTag { what, tag }) => {
                self.retry.run(|| to.put_manifest(bytes, media_type, digest, None)).await?;
                let held = to.manifest_digest(&tag).await.ok().flatten();
                let held = held.unwrap_or_else(|| "another image".to_owned());
                Err(MirrorError::ImmutableTag {
                    what: format!(
                        "{what} (it holds {held}; the source's {digest} is in the target by digest now)"
                    ),
                    tag,
                })
            }
            other => other,
        }
    }

    /// The referrers of `digest` (signatures, attestations, SBOMs) the source lists and
    /// the target lacks: they may arrive long after their image.
    pub async fn missing_referrers(
        &self,
        source: &Registry,
        image: &Reference,
        to: &Destination,
        digest: &str,
    ) -> Result<Vec<Descriptor>, MirrorError> {
        let subject = image.clone_with_digest(digest.to_owned());
        let mut missing = Vec::new();
        for referrer in self.retry.run(|| source.referrers(&subject)).await? {
            let present = self.retry.run(|| to.manifest_digest(&referrer.digest)).await?;
            if present.as_deref() != Some(referrer.digest.as_str()) {
                missing.push(referrer);
            }
        }
        Ok(missing)
    }

    /// Copies `referrers` of `image` by digest; the first that fails fails the image, so
    /// the next run tries again. Returns the blob bytes uploaded.
    pub async fn copy_referrers(
        &self,
        source: &Registry,
        image: &Reference,
        to: &Destination,
        referrers: &[Descriptor],
    ) -> Result<u64, MirrorError> {
        let mut uploaded = 0;
        for referrer in referrers {
            uploaded += self.put_child(source, image, to, referrer).await.map_err(|error| {
                MirrorError::Referrer {
                    what: image.whole(),
                    referrer: referrer.digest.clone(),
                    error: Box::new(error),
                }
            })?;
        }
        Ok(uploaded)
    }

    /// Reads the manifest `digest`, verifies it, and copies what it references. Returns its
    /// bytes and media type, for the caller to push under the right name, and the blob bytes
    /// uploaded.
    fn copy_manifest<'a>(
        &'a self,
        source: &'a Registry,
        image: &'a Reference,
        to: &'a Destination,
        digest: &'a str,
    ) -> BoxFuture<'a, Result<(Bytes, String, u64), MirrorError>> {
        async move {
            let (bytes, parsed) = self.read_manifest(source, image, digest).await?;
            // Refused before anything it references is copied, not after, every run.
            if let Some(limit) = to.manifest_limit()
                && bytes.len() > limit
            {
                return Err(MirrorError::Manifest {
                    what: image.clone_with_digest(digest.to_owned()).whole(),
                    message: format!(
                        "the manifest is {} bytes and {to} takes at most {limit}: not copied",
                        bytes.len()
                    ),
                });
            }
            let uploaded = match &parsed {
                Parsed::Index { children, .. } => {
                    let mut uploaded = 0;
                    for child in children {
                        uploaded += self.copy_child(source, image, to, child).await?;
                    }
                    uploaded
                }
                Parsed::Image { blobs, .. } => self.copy_blobs(source, image, to, blobs).await?,
            };
            Ok((bytes, parsed.media_type().to_owned(), uploaded))
        }
        .boxed()
    }

    /// The source's manifest `digest` of `image`, checked against its digest, and parsed.
    async fn read_manifest(
        &self,
        source: &Registry,
        image: &Reference,
        digest: &str,
    ) -> Result<(Bytes, Parsed), MirrorError> {
        let by_digest = image.clone_with_digest(digest.to_owned());
        let bytes = self.retry.run(|| source.manifest(&by_digest)).await?;
        let actual = manifest::sha256_digest(&bytes);
        if digest.starts_with("sha256:") && actual != digest {
            return Err(MirrorError::DigestMismatch {
                what: by_digest.whole(),
                digest: digest.to_owned(),
                detail: format!("the manifest served hashes to {actual}"),
            });
        }
        let parsed = manifest::parse(&bytes)
            .map_err(|message| MirrorError::Manifest { what: by_digest.whole(), message })?;
        Ok((bytes, parsed))
    }

    /// A child manifest (platform image, attestation, referrer), pushed by digest unless
    /// the target has it already. Returns the blob bytes uploaded.
    async fn copy_child(
        &self,
        source: &Registry,
        image: &Reference,
        to: &Destination,
        child: &Descriptor,
    ) -> Result<u64, MirrorError> {
        if self.retry.run(|| to.manifest_digest(&child.digest)).await?.as_deref()
            == Some(child.digest.as_str())
        {
            return Ok(0);
        }
        self.put_child(source, image, to, child).await
    }

    /// Copies a child manifest the target lacks, by digest. Returns the blob bytes uploaded.
    async fn put_child(
        &self,
        source: &Registry,
        image: &Reference,
        to: &Destination,
        child: &Descriptor,
    ) -> Result<u64, MirrorError> {
        let (bytes, media_type, uploaded) =
            self.copy_manifest(source, image, to, &child.digest).await?;
        self.retry.run(|| to.put_manifest(&bytes, &media_type, &child.digest, None)).await?;
        Ok(uploaded)
    }

    /// Copies the blobs the target lacks, a bounded number at a time; returns the bytes
    /// uploaded.
    async fn copy_blobs(
        &self,
        source: &Registry,
        image: &Reference,
        to: &Destination,
        blobs: &[Descriptor],
    ) -> Result<u64, MirrorError> {
        let mut unique: Vec<Descriptor> = Vec::with_capacity(blobs.len());
        for blob in blobs.iter().filter(|b| !b.is_foreign()) {
            if !unique.iter().any(|b| b.digest == blob.digest) {
                unique.push(blob.clone());
            }
        }
        let missing = self.retry.run(|| to.missing(&unique)).await?;
        // Owned descriptors: a closure over borrowed ones is not `Send` for every lifetime.
        stream::iter(missing)
            .map(|blob| async move { self.copy_blob(source, image, to, &blob).await })
            .buffer_unordered(self.blob_concurrency)
            .try_fold(0, |total, uploaded| async move { Ok(total + uploaded) })
            .await
    }

    /// Returns the bytes uploaded: 0 when mounted.
    async fn copy_blob(
        &self,
        source: &Registry,
        image: &Reference,
        to: &Destination,
        blob: &Descriptor,
    ) -> Result<u64, MirrorError> {
        if to.mount(image, blob).await {
            return Ok(0);
        }
        self.retry
            .run(|| async {
                let source_failure = SourceFailure::default();
                let open = |offset| {
                    let failure = Arc::clone(&source_failure);
                    async move {
                        let stream = source.blob_from(image, blob, offset).await?;
                        Ok(watched(stream, self.progress.clone(), image.whole(), failure))
                    }
                };
                let uploaded = to.upload(blob, open).await;
                // A failed read of the source fails the upload too, in the target's words;
                // the source's own error says what happened: a cut connection (retried) or
                // bytes that miss their digest.
                let failure = source_failure
                    .lock()
                    .expect("not poisoned")
                    .take()
                    .map(|e| MirrorError::read(image.whole(), source.host(), &e));
                uploaded.map_err(|error| match failure.unwrap_or(error) {
                    // Either side may find the digest wrong: name the source blob.
                    MirrorError::DigestMismatch { detail, .. } => MirrorError::DigestMismatch {
                        what: image.whole(),
                        digest: blob.digest.clone(),
                        detail,
                    },
                    other => other,
                })
            })
            .await?;
        Ok(blob.size)
    }
}

/// The error a source stream ended with, kept aside as it passes.
type SourceFailure = Arc<Mutex<Option<std::io::Error>>>;

/// `stream`, counted into `progress` under `image`; its error, if it fails, lands in `seen`.
fn watched(
    stream: impl Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    progress: Option<Arc<dyn CopyProgress>>,
    image: String,
    seen: SourceFailure,
) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    stream.map(move |chunk| {
        if let (Ok(bytes), Some(progress)) = (&chunk, &progress) {
            progress.copied(&image, bytes.len() as u64);
        }
        chunk.map_err(|error| {
            let passed = std::io::Error::new(error.kind(), error.to_string());
            *seen.lock().expect("not poisoned") = Some(error);
            passed
        })
    })
}
