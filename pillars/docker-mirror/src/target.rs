//! Where images go: ECR through its API, or any registry through the distribution API.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::Stream;
use oci_client::Reference;

use crate::ecr::{Ecr, RepositorySettings};
use crate::error::MirrorError;
use crate::manifest::Descriptor;
use crate::registry::Registry;

#[derive(Debug, Clone)]
pub enum Target {
    Ecr(Arc<Ecr>),
    Registry(Arc<Registry>),
}

/// A repository in a target.
#[derive(Debug, Clone)]
pub struct Destination {
    pub target: Target,
    pub repository: String,
    /// Applied when the mirror creates the repository (ECR only).
    pub settings: RepositorySettings,
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.target {
            Target::Ecr(_) => write!(f, "ecr:{}", self.repository),
            Target::Registry(registry) => write!(f, "{}/{}", registry.host(), self.repository),
        }
    }
}

impl Destination {
    fn reference(&self, registry: &Registry, tag_or_digest: &str) -> Reference {
        crate::refs::reference(registry.host(), &self.repository, tag_or_digest)
    }

    /// The largest manifest the target takes: ECR's 4 MiB (its PutImage limit); a
    /// registry's is its own.
    pub fn manifest_limit(&self) -> Option<usize> {
        match &self.target {
            Target::Ecr(_) => Some(4 * 1024 * 1024),
            Target::Registry(_) => None,
        }
    }

    /// Creates the repository if the target needs that (ECR); registries create on push.
    pub async fn prepare(&self) -> Result<(), MirrorError> {
        match &self.target {
            Target::Ecr(ecr) => ecr.ensure_repository(&self.repository, &self.settings).await,
            Target::Registry(_) => Ok(()),
        }
    }

    /// The digest of what `tag_or_digest` names here, if anything.
    pub async fn manifest_digest(
        &self,
        tag_or_digest: &str,
    ) -> Result<Option<String>, MirrorError> {
        match &self.target {
            Target::Ecr(ecr) => ecr.manifest_digest(&self.repository, tag_or_digest).await,
            Target::Registry(registry) => {
                registry.manifest_digest(&self.reference(registry, tag_or_digest)).await
            }
        }
    }

    /// The manifest bytes `tag_or_digest` names here, as a pull gets them, if any.
    pub async fn manifest(&self, tag_or_digest: &str) -> Result<Option<Bytes>, MirrorError> {
        match &self.target {
            Target::Ecr(ecr) => ecr.manifest(&self.repository, tag_or_digest).await,
            Target::Registry(registry) => {
                match registry.manifest(&self.reference(registry, tag_or_digest)).await {
                    Ok(bytes) => Ok(Some(bytes)),
                    Err(MirrorError::NotFound { .. }) => Ok(None),
                    Err(error) => Err(error),
                }
            }
        }
    }

    /// Every tag of the repository here.
    pub async fn tags(&self) -> Result<Vec<String>, MirrorError> {
        match &self.target {
            Target::Ecr(ecr) => ecr.tags(&self.repository).await,
            Target::Registry(registry) => registry.tags(&self.reference(registry, "latest")).await,
        }
    }

    /// A blob as a pull reads it; the caller checks its digest.
    pub async fn blob(
        &self,
        blob: &Descriptor,
    ) -> Result<std::pin::Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>, MirrorError>
    {
        Ok(match &self.target {
            Target::Ecr(ecr) => Box::pin(ecr.blob(&self.repository, blob).await?),
            Target::Registry(registry) => {
                Box::pin(registry.blob(&self.reference(registry, &blob.digest), blob).await?)
            }
        })
    }

    /// The blobs of `blobs` this repository lacks.
    pub async fn missing(&self, blobs: &[Descriptor]) -> Result<Vec<Descriptor>, MirrorError> {
        match &self.target {
            Target::Ecr(ecr) => ecr.missing(&self.repository, blobs).await,
            Target::Registry(registry) => {
                let mut missing = Vec::new();
                for blob in blobs {
                    let image = self.reference(registry, &blob.digest);
                    if !registry.has_blob(&image, &blob.digest).await? {
                        missing.push(blob.clone());
                    }
                }
                Ok(missing)
            }
        }
    }

    /// Links the blob from `source` when it is another repository of the same registry.
    pub async fn mount(&self, source: &Reference, blob: &Descriptor) -> bool {
        match &self.target {
            Target::Registry(registry)
                if registry.host() == source.resolve_registry()
                    && source.repository() != self.repository =>
            {
                registry.mount(&self.reference(registry, &blob.digest), source, &blob.digest).await
            }
            _ => false,
        }
    }

    /// Uploads `blob`, read by `open(offset)` from `offset` on: ECR resumes an upload an
    /// earlier run left; a registry takes the blob whole.
    pub async fn upload<S, F>(
        &self,
        blob: &Descriptor,
        open: impl Fn(u64) -> F,
    ) -> Result<(), MirrorError>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send + 'static,
        F: Future<Output = Result<S, MirrorError>>,
    {
        match &self.target {
            Target::Ecr(ecr) => ecr.upload(&self.repository, blob, open).await,
            Target::Registry(registry) => {
                let stream = open(0).await?;
                registry.push_blob(&self.reference(registry, &blob.digest), blob, stream).await
            }
        }
    }

    /// Pushes manifest bytes as they are, under `tag` when given, else by digest.
    pub async fn put_manifest(
        &self,
        bytes: &Bytes,
        media_type: &str,
        digest: &str,
        tag: Option<&str>,
    ) -> Result<(), MirrorError> {
        match &self.target {
            Target::Ecr(ecr) => {
                ecr.put_manifest(&self.repository, bytes, media_type, digest, tag).await
            }
            Target::Registry(registry) => {
                let image = self.reference(registry, tag.unwrap_or(digest));
                registry.push_manifest(&image, bytes.clone(), media_type).await
            }
        }
    }
}
