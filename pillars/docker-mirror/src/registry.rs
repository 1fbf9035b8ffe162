//! A distribution-API registry, as a source and as a generic target, through `oci-client`.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use reqwest::header::HeaderValue;

use crate::error::MirrorError;
use crate::manifest::{Descriptor, MEDIA_TYPES};

/// Tags asked for per page when listing, unless set otherwise.
const TAGS_PAGE: usize = 1000;

/// One registry host with its credentials. Tokens are cached and renewed by `oci-client`.
pub struct Registry {
    host: String,
    client: Client,
    auth: RegistryAuth,
    tags_page: usize,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("host", &self.host).finish_non_exhaustive()
    }
}

/// Registries on the loopback interface speak plain HTTP.
pub fn is_loopback(host: &str) -> bool {
    let name = host.rsplit_once(':').map_or(host, |(name, port)| {
        if port.chars().all(|c| c.is_ascii_digit()) { name } else { host }
    });
    matches!(name, "localhost" | "127.0.0.1" | "[::1]")
}

impl Registry {
    /// `insecure` allows plain HTTP to a host that is not on loopback.
    pub fn new(host: &str, auth: RegistryAuth, insecure: bool) -> Self {
        let protocol = if insecure || is_loopback(host) {
            ClientProtocol::HttpsExcept(vec![host.to_owned()])
        } else {
            ClientProtocol::Https
        };
        let config = ClientConfig {
            protocol,
            // One streamed PUT per blob: ECR's registry endpoint drops PATCH bodies after the first.
            use_monolithic_push: true,
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: Some(Duration::from_secs(60)),
            user_agent: concat!("pillars-docker-mirror/", env!("CARGO_PKG_VERSION")),
            ..ClientConfig::default()
        };
        Self { host: host.to_owned(), client: Client::new(config), auth, tags_page: TAGS_PAGE }
    }

    /// Lists tags `size` at a time (registries cap pages; some at 100).
    pub fn with_tags_page(self, size: usize) -> Self {
        Self { tags_page: size.max(1), ..self }
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    fn error(&self, what: &Reference, error: OciDistributionError) -> MirrorError {
        MirrorError::from_oci(what.whole(), &self.host, error)
    }

    async fn authenticate(&self) {
        self.client.store_auth_if_needed(&self.host, &self.auth).await;
    }

    /// The digest a tag or digest reference resolves to, by HEAD (free on Docker Hub), or
    /// `None` when the registry does not have it.
    pub async fn manifest_digest(&self, image: &Reference) -> Result<Option<String>, MirrorError> {
        match self.client.fetch_manifest_digest(image, &self.auth).await {
            Ok(digest) => Ok(Some(digest)),
            Err(error) => match self.error(image, error) {
                MirrorError::NotFound { .. } => Ok(None),
                other => Err(other),
            },
        }
    }

    /// The manifest's exact bytes; `image` should name a digest, which is then verified.
    pub async fn manifest(&self, image: &Reference) -> Result<Bytes, MirrorError> {
        let (bytes, _) = self
            .client
            .pull_manifest_raw(image, &self.auth, &MEDIA_TYPES)
            .await
            .map_err(|e| self.error(image, e))?;
        Ok(bytes)
    }

    /// Every tag of `repository`, page by page.
    pub async fn tags(&self, repository: &Reference) -> Result<Vec<String>, MirrorError> {
        let mut tags = std::collections::BTreeSet::new();
        let mut last: Option<String> = None;
        loop {
            let page = self
                .client
                .list_tags(repository, &self.auth, Some(self.tags_page), last.as_deref())
                .await
                .map_err(|e| self.error(repository, e))?;
            let full = page.tags.len() >= self.tags_page;
            last = page.tags.last().cloned();
            let before = tags.len();
            tags.extend(page.tags);
            // Some registries (distribution 2.8 among them) ignore `n` and `last` and send
            // everything, unsorted, every time: stop when a page brings nothing new.
            if !full || tags.len() == before {
                return Ok(tags.into_iter().collect());
            }
        }
    }

    /// Streams a blob; the stream fails at its end when the bytes do not match the digest.
    pub async fn blob(
        &self,
        image: &Reference,
        blob: &Descriptor,
    ) -> Result<impl Stream<Item = std::io::Result<Bytes>> + Send + 'static, MirrorError> {
        self.authenticate().await;
        let layer = oci_client::manifest::OciDescriptor {
            media_type: blob.media_type.clone(),
            digest: blob.digest.clone(),
            size: i64::try_from(blob.size).unwrap_or(i64::MAX),
            ..Default::default()
        };
        let sized =
            self.client.pull_blob_stream(image, &layer).await.map_err(|e| self.error(image, e))?;
        if let Some(length) = sized.content_length
            && length != blob.size
        {
            return Err(MirrorError::DigestMismatch {
                what: image.whole(),
                digest: blob.digest.clone(),
                detail: format!(
                    "the registry sends {length} bytes, the manifest says {}",
                    blob.size
                ),
            });
        }
        Ok(sized.stream)
    }

    pub async fn has_blob(&self, image: &Reference, digest: &str) -> Result<bool, MirrorError> {
        self.authenticate().await;
        self.client.blob_exists(image, digest).await.map_err(|e| self.error(image, e))
    }

    /// Links a blob another repository of this registry already holds; false if refused.
    pub async fn mount(&self, image: &Reference, from: &Reference, digest: &str) -> bool {
        self.authenticate().await;
        self.client.mount_blob(image, from, digest).await.is_ok()
    }

    /// One streamed PUT of `size` bytes.
    pub async fn push_blob(
        &self,
        image: &Reference,
        blob: &Descriptor,
        stream: impl Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    ) -> Result<(), MirrorError> {
        self.authenticate().await;
        let stream = stream.map(|chunk| chunk.map_err(OciDistributionError::from));
        self.client
            .push_blob_stream(image, stream, &blob.digest, Some(blob.size))
            .await
            .map(drop)
            .map_err(|e| self.error(image, e))
    }

    /// Pushes manifest bytes unchanged under `image` (a tag or a digest).
    pub async fn push_manifest(
        &self,
        image: &Reference,
        bytes: Bytes,
        media_type: &str,
    ) -> Result<(), MirrorError> {
        self.authenticate().await;
        let content_type =
            HeaderValue::from_str(media_type).map_err(|_| MirrorError::Manifest {
                what: image.whole(),
                message: format!("media type `{media_type}` is not a valid header value"),
            })?;
        self.client
            .push_manifest_raw(image, bytes, content_type)
            .await
            .map(drop)
            .map_err(|e| self.error(image, e))
    }

    /// Manifests that name `image` as their subject, where the registry offers the referrers
    /// API; empty where it does not.
    pub async fn referrers(&self, image: &Reference) -> Vec<Descriptor> {
        self.authenticate().await;
        match self.client.pull_referrers(image, None).await {
            Ok(index) => index
                .manifests
                .into_iter()
                .map(|m| Descriptor {
                    media_type: m.media_type,
                    digest: m.digest,
                    size: u64::try_from(m.size).unwrap_or(0),
                })
                .collect(),
            Err(error) => {
                tracing::debug!(image = %image, %error, "no referrers listed");
                Vec::new()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_loopback;

    #[test]
    fn only_loopback_hosts_are_plain_http() {
        for host in ["127.0.0.1:5000", "localhost", "localhost:80", "[::1]:5000"] {
            assert!(is_loopback(host), "{host}");
        }
        for host in ["registry-1.docker.io", "127.0.0.2:5000", "localhost.example.com"] {
            assert!(!is_loopback(host), "{host}");
        }
    }
}
