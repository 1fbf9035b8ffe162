//! A distribution-API registry, as a source and as a generic target. Blobs stream through
//! `oci-client`; manifests, tag lists and referrers are read with our own requests, because
//! what matters in their answers is in headers `oci-client` does not pass on: `Retry-After`
//! on a 429 and `Link` between pages of tags. Both share one set of credentials; bearer
//! tokens come from `oci-client`'s token flow.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, Response, StatusCode};
use serde::Deserialize;

use crate::error::MirrorError;
use crate::manifest::{Descriptor, MEDIA_TYPES, OCI_INDEX, sha256_digest};

/// Tags asked for per page when listing, unless set otherwise.
const TAGS_PAGE: usize = 1000;

const USER_AGENT: &str = concat!("pillars-docker-mirror/", env!("CARGO_PKG_VERSION"));

/// One registry host with its credentials.
pub struct Registry {
    host: String,
    scheme: &'static str,
    /// Blobs: streamed pulls and pushes, mounts.
    client: Client,
    /// Manifests, tags and referrers.
    http: reqwest::Client,
    auth: RegistryAuth,
    /// Bearer tokens by repository, for `http`.
    tokens: tokio::sync::Mutex<HashMap<String, String>>,
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

#[derive(Deserialize)]
struct TagList {
    #[serde(default)]
    tags: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct Index {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

impl Registry {
    /// `insecure` allows plain HTTP to a host that is not on loopback.
    pub fn new(host: &str, auth: RegistryAuth, insecure: bool) -> Self {
        let plain = insecure || is_loopback(host);
        let protocol = if plain {
            ClientProtocol::HttpsExcept(vec![host.to_owned()])
        } else {
            ClientProtocol::Https
        };
        let (connect, read) = (Duration::from_secs(10), Duration::from_secs(60));
        let config = ClientConfig {
            protocol,
            // One streamed PUT per blob: ECR's registry endpoint drops PATCH bodies after the first.
            use_monolithic_push: true,
            connect_timeout: Some(connect),
            read_timeout: Some(read),
            user_agent: USER_AGENT,
            ..ClientConfig::default()
        };
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .connect_timeout(connect)
            .read_timeout(read)
            .build()
            .expect("a TLS backend and a resolver are compiled in");
        Self {
            host: host.to_owned(),
            scheme: if plain { "http" } else { "https" },
            client: Client::new(config),
            http,
            auth,
            tokens: tokio::sync::Mutex::new(HashMap::new()),
            tags_page: TAGS_PAGE,
        }
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

    /// `method` on `/v2/<path>` about `image`, with the credentials: basic, or the bearer
    /// token the registry's challenge leads to (fetched once per repository, renewed when
    /// refused). Answers other than success become the error they mean.
    async fn request(
        &self,
        method: Method,
        image: &Reference,
        path: &str,
        accept: &str,
    ) -> Result<Response, MirrorError> {
        let url = format!("{}://{}/v2/{path}", self.scheme, self.host);
        let mut renewed = false;
        loop {
            let mut request =
                self.http.request(method.clone(), &url).header(header::ACCEPT, accept);
            let token = self.tokens.lock().await.get(image.repository()).cloned();
            request = match (&token, &self.auth) {
                (Some(token), _) => request.bearer_auth(token),
                (None, RegistryAuth::Basic(user, password)) => {
                    request.basic_auth(user, Some(password))
                }
                (None, RegistryAuth::Bearer(token)) => request.bearer_auth(token),
                (None, RegistryAuth::Anonymous) => request,
            };
            let response = request
                .send()
                .await
                .map_err(|e| MirrorError::transport(image.whole(), &self.host, e))?;
            if response.status() == StatusCode::UNAUTHORIZED
                && !renewed
                && bearer(response.headers())
            {
                renewed = true;
                let token = self.client.auth(image, &self.auth, RegistryOperation::Pull).await;
                if let Some(token) = token.map_err(|e| self.error(image, e))? {
                    self.tokens.lock().await.insert(image.repository().to_owned(), token);
                    continue;
                }
            }
            return self.check(image, response).await;
        }
    }

    /// The response when it succeeded, else what its status and error envelope mean.
    async fn check(&self, what: &Reference, response: Response) -> Result<Response, MirrorError> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let retry_after = retry_after(response.headers());
        let body = response.text().await.unwrap_or_default();
        let envelope: Option<ErrorEnvelope> = serde_json::from_str(&body).ok();
        let codes: Vec<&str> =
            envelope.iter().flat_map(|e| &e.errors).map(|e| e.code.as_str()).collect();
        let mut message = envelope
            .as_ref()
            .map(|e| {
                e.errors
                    .iter()
                    .map(|e| format!("{}: {}", e.code, e.message))
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| body.trim().chars().take(200).collect());
        if let Some(wait) = retry_after {
            message.push_str(&format!(" (the registry asks to retry after {} s)", wait.as_secs()));
        }
        let what = what.whole();
        let registry = self.host.clone();
        let status = if codes.contains(&"TOOMANYREQUESTS") { 429 } else { status.as_u16() };
        Err(match status {
            401 | 403 => MirrorError::Unauthorized { what, registry },
            _ if codes.iter().any(|c| ["UNAUTHORIZED", "DENIED"].contains(c)) => {
                MirrorError::Unauthorized { what, registry }
            }
            404 => MirrorError::NotFound { what },
            _ if codes
                .iter()
                .any(|c| ["MANIFEST_UNKNOWN", "NAME_UNKNOWN", "NOT_FOUND"].contains(c)) =>
            {
                MirrorError::NotFound { what }
            }
            408 | 429 | 500.. => MirrorError::Status { what, status, message, retry_after },
            _ => MirrorError::Registry { what, message: format!("HTTP {status}: {message}") },
        })
    }

    /// The digest a tag or digest reference resolves to, by HEAD (free on Docker Hub), or
    /// `None` when the registry does not have it.
    pub async fn manifest_digest(&self, image: &Reference) -> Result<Option<String>, MirrorError> {
        let path = manifest_path(image);
        let accept = MEDIA_TYPES.join(", ");
        let response = match self.request(Method::HEAD, image, &path, &accept).await {
            Ok(response) => response,
            Err(MirrorError::NotFound { .. }) => return Ok(None),
            Err(error) => return Err(error),
        };
        let header = response.headers().get("Docker-Content-Digest").and_then(|v| v.to_str().ok());
        match header {
            Some(digest) => Ok(Some(digest.to_owned())),
            // A registry that does not say: hash what it serves.
            None => Ok(Some(sha256_digest(&self.manifest(image).await?))),
        }
    }

    /// The manifest's exact bytes; `image` should name a digest, which the caller verifies.
    pub async fn manifest(&self, image: &Reference) -> Result<Bytes, MirrorError> {
        let response = self
            .request(Method::GET, image, &manifest_path(image), &MEDIA_TYPES.join(", "))
            .await?;
        response.bytes().await.map_err(|e| MirrorError::transport(image.whole(), &self.host, e))
    }

    /// Every tag of `repository`: page after page, by the registry's `Link` header, or by
    /// the last tag when a full page comes without one.
    pub async fn tags(&self, repository: &Reference) -> Result<Vec<String>, MirrorError> {
        let mut tags = BTreeSet::new();
        let first = format!("{}/tags/list?n={}", repository.repository(), self.tags_page);
        let mut next = Some(first);
        while let Some(path) = next.take() {
            let response = self.request(Method::GET, repository, &path, "application/json").await?;
            let link = next_link(response.headers());
            let body = response
                .bytes()
                .await
                .map_err(|e| MirrorError::transport(repository.whole(), &self.host, e))?;
            let page: TagList =
                serde_json::from_slice(&body).map_err(|e| MirrorError::Registry {
                    what: repository.whole(),
                    message: format!("unreadable tag list: {e}"),
                })?;
            let page = page.tags.unwrap_or_default();
            let (count, last) = (page.len(), page.last().cloned());
            let before = tags.len();
            tags.extend(page);
            // Some registries (distribution 2.8 among them) ignore `n` and `last` and send
            // everything, unsorted, every time: stop when a page brings nothing new.
            if tags.len() == before {
                break;
            }
            next = link.or_else(|| {
                let last = last.filter(|_| count >= self.tags_page)?;
                Some(format!(
                    "{}/tags/list?n={}&last={last}",
                    repository.repository(),
                    self.tags_page
                ))
            });
        }
        Ok(tags.into_iter().collect())
    }

    /// Manifests that name `image` (by digest) as their subject, from the OCI referrers API;
    /// none where the registry lacks it (referrers stored under the tag schema come with
    /// the companion tags).
    /// Pages are followed by their `Link` header, as tag lists are.
    pub async fn referrers(&self, image: &Reference) -> Result<Vec<Descriptor>, MirrorError> {
        let digest = image.digest().unwrap_or_default();
        let mut next = Some(format!("{}/referrers/{digest}", image.repository()));
        let mut referrers: Vec<Descriptor> = Vec::new();
        while let Some(path) = next.take() {
            let response = match self.request(Method::GET, image, &path, OCI_INDEX).await {
                Ok(response) => response,
                Err(MirrorError::NotFound { .. }) => return Ok(referrers),
                Err(MirrorError::Registry { message, .. }) if message.starts_with("HTTP 405") => {
                    return Ok(referrers);
                }
                Err(error) => return Err(error),
            };
            let link = next_link(response.headers());
            let body = response
                .bytes()
                .await
                .map_err(|e| MirrorError::transport(image.whole(), &self.host, e))?;
            let index: Index =
                serde_json::from_slice(&body).map_err(|e| MirrorError::Registry {
                    what: image.whole(),
                    message: format!("unreadable referrers index: {e}"),
                })?;
            let before = referrers.len();
            for found in index.manifests {
                if !referrers.iter().any(|r| r.digest == found.digest) {
                    referrers.push(found);
                }
            }
            // A page that brings nothing new ends it, whatever its link says.
            next = link.filter(|_| referrers.len() > before);
        }
        Ok(referrers)
    }

    /// Streams a blob; the stream fails at its end when the bytes do not match the digest.
    pub async fn blob(
        &self,
        image: &Reference,
        blob: &Descriptor,
    ) -> Result<impl Stream<Item = std::io::Result<Bytes>> + Send + 'static, MirrorError> {
        self.authenticate().await;
        let layer = oci_descriptor(blob);
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

    /// Streams a blob from byte `offset` on (a ranged read, to resume an upload); from 0, as
    /// [`Self::blob`], digest checked. A registry that ignores the range sends it whole:
    /// the first `offset` bytes are skipped.
    pub async fn blob_from(
        &self,
        image: &Reference,
        blob: &Descriptor,
        offset: u64,
    ) -> Result<std::pin::Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>, MirrorError>
    {
        if offset == 0 {
            return Ok(Box::pin(self.blob(image, blob).await?));
        }
        self.authenticate().await;
        let layer = oci_descriptor(blob);
        let answered = self
            .client
            .pull_blob_stream_partial(image, &layer, offset, None)
            .await
            .map_err(|e| self.error(image, e))?;
        Ok(match answered {
            oci_client::client::BlobResponse::Partial(sized) => Box::pin(sized.stream),
            oci_client::client::BlobResponse::Full(sized) => {
                let mut skip = offset;
                Box::pin(sized.stream.filter_map(move |chunk| {
                    let kept = match chunk {
                        Ok(mut bytes) if skip > 0 => {
                            let cut = skip.min(bytes.len() as u64);
                            skip -= cut;
                            let rest = bytes.split_off(cut as usize);
                            (!rest.is_empty()).then_some(Ok(rest))
                        }
                        other => Some(other),
                    };
                    std::future::ready(kept)
                }))
            }
        })
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
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    #[serde(default)]
    errors: Vec<RegistryErrorEntry>,
}

#[derive(Deserialize)]
struct RegistryErrorEntry {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// `<repository>/manifests/<tag or digest>`.
fn manifest_path(image: &Reference) -> String {
    let name = image.digest().or(image.tag()).unwrap_or("latest");
    format!("{}/manifests/{name}", image.repository())
}

/// Whether a 401 challenges for a bearer token (as opposed to basic credentials).
fn bearer(headers: &HeaderMap) -> bool {
    headers
        .get(header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("bearer"))
}

/// `Retry-After`: seconds, or an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at =
        time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc2822).ok()?;
    let left = at - time::OffsetDateTime::now_utc();
    Some(Duration::try_from(left).unwrap_or_default())
}

/// The path below `/v2/` of the next page, from `Link: <…>; rel="next"`.
/// `blob` as oci-client describes a blob to pull.
fn oci_descriptor(blob: &Descriptor) -> oci_client::manifest::OciDescriptor {
    oci_client::manifest::OciDescriptor {
        media_type: blob.media_type.clone(),
        digest: blob.digest.clone(),
        size: i64::try_from(blob.size).unwrap_or(i64::MAX),
        ..Default::default()
    }
}

fn next_link(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|link| {
            let (target, params) = link.trim().strip_prefix('<')?.split_once('>')?;
            params.contains("rel=\"next\"").then_some(())?;
            let path = match target.find("/v2/") {
                Some(at) => &target[at + 4..],
                None => return None,
            };
            Some(path.to_owned())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_hosts_are_plain_http() {
        for host in ["127.0.0.1:5000", "localhost", "localhost:80", "[::1]:5000"] {
            assert!(is_loopback(host), "{host}");
        }
        for host in ["registry-1.docker.io", "127.0.0.2:5000", "localhost.example.com"] {
            assert!(!is_loopback(host), "{host}");
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).expect("value"));
        }
        map
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        assert_eq!(retry_after(&headers(&[("retry-after", "7")])), Some(Duration::from_secs(7)));
        let later = time::OffsetDateTime::now_utc() + time::Duration::seconds(90);
        let date = later.format(&time::format_description::well_known::Rfc2822).expect("date");
        let parsed = retry_after(&headers(&[("retry-after", &date)])).expect("a date");
        assert!((85..=90).contains(&parsed.as_secs()), "{parsed:?}");
        assert_eq!(retry_after(&headers(&[("retry-after", "soon")])), None);
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }

    #[test]
    fn the_next_page_comes_from_the_link_header() {
        let relative = headers(&[("link", r#"</v2/team/app/tags/list?last=b&n=2>; rel="next""#)]);
        assert_eq!(next_link(&relative).as_deref(), Some("team/app/tags/list?last=b&n=2"));
        let absolute =
            headers(&[("link", r#"<https://r.example/v2/app/tags/list?last=z>; rel="next""#)]);
        assert_eq!(next_link(&absolute).as_deref(), Some("app/tags/list?last=z"));
        let other = headers(&[("link", r#"</v2/app/tags/list?last=a>; rel="prev""#)]);
        assert_eq!(next_link(&other), None);
    }

    #[test]
    fn bearer_challenges_are_told_from_basic_ones() {
        assert!(bearer(&headers(&[("www-authenticate", r#"Bearer realm="https://auth""#)])));
        assert!(!bearer(&headers(&[("www-authenticate", r#"Basic realm="r""#)])));
    }
}
