//! Amazon ECR as a target, through the ECR API: IAM authentication, layer uploads in the
//! part size ECR asks for, manifests put exactly as pulled.

use std::collections::{HashMap, HashSet};

use aws_sdk_ecr::Client;
use aws_sdk_ecr::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ecr::operation::upload_layer_part::UploadLayerPartError;
use aws_sdk_ecr::primitives::Blob;
use aws_sdk_ecr::types::{ImageIdentifier, ImageScanningConfiguration, ImageTagMutability};
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use tokio::sync::{Mutex, Semaphore};

use crate::error::MirrorError;
use crate::manifest::{Descriptor, MEDIA_TYPES, sha256_digest};

/// `BatchCheckLayerAvailability` takes at most 100 digests.
const CHECK_BATCH: usize = 100;
/// Used when ECR does not say (it always has: 10 MiB at the time of writing).
const DEFAULT_PART: usize = 10 * 1024 * 1024;

/// How a repository the mirror creates is configured.
#[derive(Debug, Clone, Default)]
pub struct RepositorySettings {
    pub scan_on_push: bool,
    pub immutable_tags: bool,
    /// The KMS key ARN to encrypt with; AES256 without one.
    pub kms_key: Option<String>,
}

impl RepositorySettings {
    /// What the manifest says of `image`'s repository.
    pub fn of(image: &pillar_config::Image) -> Self {
        Self {
            scan_on_push: image.scan_on_push,
            immutable_tags: image.immutable_tags,
            kms_key: image.kms_key.clone(),
        }
    }
}

#[derive(Debug)]
pub struct Ecr {
    client: Client,
    /// Fetches the layer URLs ECR hands out (presigned: no credentials go along).
    downloads: reqwest::Client,
    /// Repositories known to exist, with their ARN once it was needed.
    known: Mutex<HashMap<String, Option<String>>>,
    /// Layer parts being sent at once, across all uploads.
    parts: Semaphore,
}

/// Parts being sent at once, across all uploads: each costs twice its base64 form in the
/// JSON request the SDK builds. Each upload fills one part at a time besides, so a run holds
/// at most (blobs copied at once + 2 × this) parts of 10 MiB.
const PARTS_IN_FLIGHT: usize = 2;

/// Why ECR refused a part.
enum PartRefused {
    /// It does not follow what ECR holds: this many bytes.
    Behind(u64),
    /// ECR no longer knows the upload (expired, or the record outlived it).
    Gone(MirrorError),
    Other(MirrorError),
}

impl PartRefused {
    fn into_error(self, repository: &str) -> MirrorError {
        match self {
            Self::Behind(held) => MirrorError::Ecr {
                operation: "UploadLayerPart",
                repository: repository.to_owned(),
                message: format!("the part does not follow the {held} bytes ECR holds"),
                retryable: true,
            },
            Self::Gone(error) | Self::Other(error) => error,
        }
    }
}

/// The tags cosign and the referrers fallback give signatures, attestations and SBOMs.
pub const COMPANION_TAGS: &str = "sha256-*";

/// The repository tag that records an interrupted upload of `digest`.
fn progress_key(digest: &str) -> String {
    let hex = digest.trim_start_matches("sha256:");
    format!("pillars-upload-{}", &hex[..hex.len().min(40)])
}

fn failure<E, R>(operation: &'static str, repository: &str, error: &SdkError<E, R>) -> MirrorError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let retryable =
        matches!(
            error,
            SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_)
        ) || error.code().is_some_and(|c| c.contains("Throttl") || c == "ServerException");
    MirrorError::Ecr {
        operation,
        repository: repository.to_owned(),
        message: pillar_auth::aws_error_message(error),
        retryable,
    }
}

impl Ecr {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            downloads: reqwest::Client::new(),
            known: Mutex::new(HashMap::new()),
            parts: Semaphore::new(PARTS_IN_FLIGHT),
        }
    }

    /// Creates `repository` when it does not exist yet.
    pub async fn ensure_repository(
        &self,
        repository: &str,
        settings: &RepositorySettings,
    ) -> Result<(), MirrorError> {
        let mut known = self.known.lock().await;
        if known.contains_key(repository) {
            return Ok(());
        }
        let described =
            self.client.describe_repositories().repository_names(repository).send().await;
        // Its ARN, which a resumable upload's record is kept on.
        let arn = match described {
            Ok(found) => {
                found.repositories().first().and_then(|r| r.repository_arn()).map(str::to_owned)
            }
            Err(e) if e.code() == Some("RepositoryNotFoundException") => {
                let created = self
                    .client
                    .create_repository()
                    .repository_name(repository)
                    .image_scanning_configuration(
                        ImageScanningConfiguration::builder()
                            .scan_on_push(settings.scan_on_push)
                            .build(),
                    )
                    .image_tag_mutability(if settings.immutable_tags {
                        // Signatures, attestations and SBOMs move their `sha256-…` tags when
                        // an image is signed again: they stay mutable.
                        ImageTagMutability::ImmutableWithExclusion
                    } else {
                        ImageTagMutability::Mutable
                    })
                    .set_encryption_configuration(settings.kms_key.as_ref().map(|key| {
                        aws_sdk_ecr::types::EncryptionConfiguration::builder()
                            .encryption_type(aws_sdk_ecr::types::EncryptionType::Kms)
                            .kms_key(key)
                            .build()
                            .expect("a type is set")
                    }))
                    .set_image_tag_mutability_exclusion_filters(settings.immutable_tags.then(|| {
                        vec![
                            aws_sdk_ecr::types::ImageTagMutabilityExclusionFilter::builder()
                                .filter_type(aws_sdk_ecr::types::ImageTagMutabilityExclusionFilterType::Wildcard)
                                .filter(COMPANION_TAGS)
                                .build()
                                .expect("a type and a filter are set"),
                        ]
                    }))
                    .send()
                    .await;
                match created {
                    Ok(created) => {
                        tracing::info!(repository, "created ECR repository");
                        created.repository().and_then(|r| r.repository_arn()).map(str::to_owned)
                    }
                    Err(e) if e.code() == Some("RepositoryAlreadyExistsException") => None,
                    Err(e) => return Err(failure("CreateRepository", repository, &e)),
                }
            }
            Err(e) => return Err(failure("DescribeRepositories", repository, &e)),
        };
        known.insert(repository.to_owned(), arn);
        Ok(())
    }

    /// The digest of the manifest `tag` (or digest) points at, hashed from its bytes: moto
    /// reports another digest for indexes, and bytes are what must match.
    pub async fn manifest_digest(
        &self,
        repository: &str,
        tag_or_digest: &str,
    ) -> Result<Option<String>, MirrorError> {
        let manifest = self.manifest(repository, tag_or_digest).await?;
        Ok(manifest.map(|bytes| sha256_digest(&bytes)))
    }

    /// The manifest bytes `tag_or_digest` names, as a pull receives them (`BatchGetImage`),
    /// or `None` when the repository or the image is missing.
    pub async fn manifest(
        &self,
        repository: &str,
        tag_or_digest: &str,
    ) -> Result<Option<Bytes>, MirrorError> {
        let id = if tag_or_digest.starts_with("sha256:") {
            ImageIdentifier::builder().image_digest(tag_or_digest).build()
        } else {
            ImageIdentifier::builder().image_tag(tag_or_digest).build()
        };
        let got = self
            .client
            .batch_get_image()
            .repository_name(repository)
            .image_ids(id)
            .set_accepted_media_types(Some(MEDIA_TYPES.map(str::to_owned).to_vec()))
            .send()
            .await;
        let output = match got {
            Ok(output) => output,
            Err(e) if e.code() == Some("RepositoryNotFoundException") => return Ok(None),
            Err(e) => return Err(failure("BatchGetImage", repository, &e)),
        };
        Ok(output
            .images()
            .iter()
            .find_map(|image| image.image_manifest())
            .map(|manifest| Bytes::copy_from_slice(manifest.as_bytes())))
    }

    /// The registry endpoint `docker pull` uses (`<account>.dkr.ecr.<region>.amazonaws.com`)
    /// and its credentials, from `GetAuthorizationToken`.
    pub async fn registry_endpoint(&self) -> Result<(String, String, String), MirrorError> {
        let failed = |message: String| MirrorError::Ecr {
            operation: "GetAuthorizationToken",
            repository: String::new(),
            message,
            retryable: false,
        };
        let token = self
            .client
            .get_authorization_token()
            .send()
            .await
            .map_err(|e| failure("GetAuthorizationToken", "", &e))?;
        let data = token.authorization_data().first().ok_or_else(|| failed("no data".into()))?;
        let endpoint = data.proxy_endpoint().unwrap_or_default();
        let host = endpoint.trim_start_matches("https://").trim_end_matches('/').to_owned();
        use base64::Engine as _;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(data.authorization_token().unwrap_or_default())
            .map_err(|e| failed(format!("the token is not base64: {e}")))?;
        let decoded =
            String::from_utf8(decoded).map_err(|_| failed("the token is not text".into()))?;
        let (username, password) = decoded
            .split_once(':')
            .ok_or_else(|| failed("the token is not user:password".into()))?;
        Ok((host, username.to_owned(), password.to_owned()))
    }

    /// The repository's tags (`ListImages`, tagged images only).
    pub async fn tags(&self, repository: &str) -> Result<Vec<String>, MirrorError> {
        let filter = aws_sdk_ecr::types::ListImagesFilter::builder()
            .tag_status(aws_sdk_ecr::types::TagStatus::Tagged)
            .build();
        let mut pages = self
            .client
            .list_images()
            .repository_name(repository)
            .filter(filter)
            .into_paginator()
            .send();
        let mut tags = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| failure("ListImages", repository, &e))?;
            tags.extend(page.image_ids().iter().filter_map(|id| id.image_tag().map(str::to_owned)));
        }
        Ok(tags)
    }

    /// A blob as `docker pull` gets it from ECR: from the URL `GetDownloadUrlForLayer`
    /// gives (a presigned S3 URL). The caller checks the digest.
    pub async fn blob(
        &self,
        repository: &str,
        blob: &Descriptor,
    ) -> Result<impl Stream<Item = std::io::Result<Bytes>> + Send + 'static, MirrorError> {
        let located = self
            .client
            .get_download_url_for_layer()
            .repository_name(repository)
            .layer_digest(&blob.digest)
            .send()
            .await
            .map_err(|e| failure("GetDownloadUrlForLayer", repository, &e))?;
        let url = located.download_url().unwrap_or_default();
        let what = format!("{repository} blob {}", blob.digest);
        let response =
            self.downloads.get(url).send().await.map_err(|e| MirrorError::Unreachable {
                what: what.clone(),
                registry: "ECR".into(),
                error: e.to_string(),
            })?;
        if !response.status().is_success() {
            return Err(MirrorError::Registry {
                what,
                message: format!("its download URL answered HTTP {}", response.status()),
            });
        }
        Ok(response.bytes_stream().map(|chunk| chunk.map_err(std::io::Error::other)))
    }

    /// The blobs of `blobs` ECR does not have yet.
    pub async fn missing(
        &self,
        repository: &str,
        blobs: &[Descriptor],
    ) -> Result<Vec<Descriptor>, MirrorError> {
        let mut available = HashSet::new();
        for batch in blobs.chunks(CHECK_BATCH) {
            let output = self
                .client
                .batch_check_layer_availability()
                .repository_name(repository)
                .set_layer_digests(Some(batch.iter().map(|b| b.digest.clone()).collect()))
                .send()
                .await
                .map_err(|e| failure("BatchCheckLayerAvailability", repository, &e))?;
            available.extend(
                output
                    .layers()
                    .iter()
                    .filter(|l| l.layer_availability().is_some_and(|a| a.as_str() == "AVAILABLE"))
                    .filter_map(|l| l.layer_digest().map(str::to_owned)),
            );
        }
        Ok(blobs.iter().filter(|b| !available.contains(&b.digest)).cloned().collect())
    }

    /// Uploads a blob in consecutive parts of the size ECR asks for; one part at a time is
    /// held in memory, and only its sending waits for a permit (a slow source delays its own
    /// upload, no other). ECR checks the digest when the upload completes.
    ///
    /// An upload cut short (the run's deadline) resumes in a later run: after each part, the
    /// upload's id and the bytes ECR holds are kept as a tag of the repository (nothing
    /// outside ECR), and `open(offset)` reads the source from there on (a ranged read).
    pub async fn upload<S, F>(
        &self,
        repository: &str,
        blob: &Descriptor,
        open: impl Fn(u64) -> F,
    ) -> Result<(), MirrorError>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send,
        F: Future<Output = Result<S, MirrorError>>,
    {
        let blob_name = || format!("{repository} blob {}", blob.digest);
        let mismatch = |detail: String| MirrorError::DigestMismatch {
            what: blob_name(),
            digest: blob.digest.clone(),
            detail,
        };
        let resumable = blob.size > DEFAULT_PART as u64;
        let held = match resumable {
            true => self.progress(repository, &blob.digest).await,
            false => None,
        };
        let (upload_id, part_size, mut sent) = match held {
            Some((upload_id, sent)) if sent <= blob.size => {
                tracing::info!(repository, digest = blob.digest, sent, "resuming an upload");
                (upload_id, DEFAULT_PART, sent)
            }
            _ => {
                let (upload_id, part_size) = self.initiate(repository).await?;
                (upload_id, part_size, 0)
            }
        };
        let mut stream = Box::pin(open(sent).await?);
        let mut pending = Bytes::new();
        let mut ended = false;
        // ECR holding more than this upload sent means a part landed whose answer was lost
        // (the SDK's retry is refused) or whose record was not kept (the run ended between
        // them): the source is read again from where ECR stands, as often as it happens, since
        // that only moves forward. Holding less is followed back once.
        let mut went_back = false;
        while !ended || !pending.is_empty() {
            let mut part = BytesMut::with_capacity(part_size);
            while part.len() < part_size {
                if pending.is_empty() {
                    match stream.next().await {
                        Some(Ok(chunk)) => pending = chunk,
                        Some(Err(e)) => {
                            return Err(MirrorError::read(blob_name(), "the source", &e));
                        }
                        None => {
                            ended = true;
                            break;
                        }
                    }
                }
                let take = pending.len().min(part_size - part.len());
                part.extend_from_slice(&pending.split_to(take));
            }
            if part.is_empty() {
                break;
            }
            let length = part.len() as u64;
            let uploaded = {
                let _permit = self.parts.acquire().await.expect("the semaphore is never closed");
                self.upload_part(repository, &upload_id, sent, part.freeze()).await
            };
            match uploaded {
                Ok(()) => sent += length,
                Err(PartRefused::Behind(held))
                    if held <= blob.size && (held > sent || !went_back) =>
                {
                    tracing::info!(
                        repository,
                        digest = blob.digest,
                        held,
                        sent,
                        "realigning an upload"
                    );
                    went_back |= held <= sent;
                    sent = held;
                    if sent == blob.size {
                        // ECR holds it all: only the completion is left.
                        break;
                    }
                    stream = Box::pin(open(sent).await?);
                    (pending, ended) = (Bytes::new(), false);
                    continue;
                }
                Err(refused) => {
                    // An upload ECR no longer knows, or one it holds in a way this cannot
                    // follow, starts again from byte 0 next time; any other failure (a network
                    // gone for the SDK's retries) leaves the record for the next run.
                    if resumable && !matches!(refused, PartRefused::Other(_)) {
                        self.forget_progress(repository, &blob.digest).await;
                    }
                    return Err(refused.into_error(repository));
                }
            }
            if resumable && sent < blob.size {
                self.keep_progress(repository, &blob.digest, &upload_id, sent).await;
            }
        }
        if sent != blob.size {
            return Err(mismatch(format!(
                "received {sent} bytes, the manifest says {}",
                blob.size
            )));
        }
        let completed = self
            .client
            .complete_layer_upload()
            .repository_name(repository)
            .upload_id(upload_id)
            .layer_digests(&blob.digest)
            .send()
            .await;
        if resumable {
            self.forget_progress(repository, &blob.digest).await;
        }
        match completed {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("LayerAlreadyExistsException") => Ok(()),
            Err(e) if e.code() == Some("InvalidLayerException") => {
                Err(mismatch(pillar_auth::aws_error_message(&e)))
            }
            Err(e) => Err(failure("CompleteLayerUpload", repository, &e)),
        }
    }

    /// A new upload: its id and the part size ECR asks for.
    async fn initiate(&self, repository: &str) -> Result<(String, usize), MirrorError> {
        let started = self
            .client
            .initiate_layer_upload()
            .repository_name(repository)
            .send()
            .await
            .map_err(|e| failure("InitiateLayerUpload", repository, &e))?;
        let upload_id = started.upload_id().unwrap_or_default().to_owned();
        let part_size = started
            .part_size()
            .and_then(|size| usize::try_from(size).ok())
            .filter(|size| *size > 0)
            .unwrap_or(DEFAULT_PART);
        Ok((upload_id, part_size))
    }

    /// The repository's ARN, which its tags are set on.
    async fn arn(&self, repository: &str) -> Option<String> {
        if let Some(Some(arn)) = self.known.lock().await.get(repository) {
            return Some(arn.clone());
        }
        let described =
            self.client.describe_repositories().repository_names(repository).send().await.ok()?;
        let arn = described.repositories().first()?.repository_arn()?.to_owned();
        self.known.lock().await.insert(repository.to_owned(), Some(arn.clone()));
        Some(arn)
    }

    /// The interrupted upload of `digest` a tag of the repository records: its id and the
    /// bytes ECR holds.
    async fn progress(&self, repository: &str, digest: &str) -> Option<(String, u64)> {
        let arn = self.arn(repository).await?;
        let listed = self.client.list_tags_for_resource().resource_arn(arn).send().await.ok()?;
        let key = progress_key(digest);
        let value = listed.tags().iter().find(|t| t.key() == key)?.value().to_owned();
        let (upload_id, sent) = value.split_once('/')?;
        Some((upload_id.to_owned(), sent.parse().ok()?))
    }

    /// Records that `upload_id` of `digest` holds `sent` bytes. A failure to record costs
    /// only the resumption, never the upload.
    async fn keep_progress(&self, repository: &str, digest: &str, upload_id: &str, sent: u64) {
        let Some(arn) = self.arn(repository).await else { return };
        let tag = aws_sdk_ecr::types::Tag::builder()
            .key(progress_key(digest))
            .value(format!("{upload_id}/{sent}"))
            .build()
            .expect("a key and a value are set");
        if let Err(e) = self.client.tag_resource().resource_arn(arn).tags(tag).send().await {
            tracing::warn!(repository, digest, error = %pillar_auth::aws_error_message(&e), "upload progress not recorded");
        }
    }

    async fn forget_progress(&self, repository: &str, digest: &str) {
        let Some(arn) = self.arn(repository).await else { return };
        let untag = self.client.untag_resource().resource_arn(arn).tag_keys(progress_key(digest));
        if let Err(e) = untag.send().await {
            tracing::warn!(repository, digest, error = %pillar_auth::aws_error_message(&e), "upload progress not cleared");
        }
    }

    async fn upload_part(
        &self,
        repository: &str,
        upload_id: &str,
        first: u64,
        body: Bytes,
    ) -> Result<(), PartRefused> {
        let last = first + body.len() as u64 - 1;
        let (first, last) =
            (i64::try_from(first).unwrap_or(i64::MAX), i64::try_from(last).unwrap_or(i64::MAX));
        let sent = self
            .client
            .upload_layer_part()
            .repository_name(repository)
            .upload_id(upload_id)
            .part_first_byte(first)
            .part_last_byte(last)
            .layer_part_blob(Blob::new(body))
            .send()
            .await;
        match sent {
            Ok(_) => Ok(()),
            Err(e) => {
                let held = e.as_service_error().and_then(|service| match service {
                    UploadLayerPartError::InvalidLayerPartException(refused) => {
                        refused.last_valid_byte_received().and_then(|b| u64::try_from(b + 1).ok())
                    }
                    _ => None,
                });
                match held {
                    Some(held) => Err(PartRefused::Behind(held)),
                    None if e.code() == Some("UploadNotFoundException") => {
                        Err(PartRefused::Gone(failure("UploadLayerPart", repository, &e)))
                    }
                    None => Err(PartRefused::Other(failure("UploadLayerPart", repository, &e))),
                }
            }
        }
    }

    /// Puts manifest bytes unchanged, under `tag` or by `digest` alone. An identical image
    /// already there is success; an immutable tag holding another image is `ImmutableTag`.
    pub async fn put_manifest(
        &self,
        repository: &str,
        bytes: &Bytes,
        media_type: &str,
        digest: &str,
        tag: Option<&str>,
    ) -> Result<(), MirrorError> {
        let text = std::str::from_utf8(bytes).map_err(|_| MirrorError::Manifest {
            what: format!("{repository}@{digest}"),
            message: "manifest is not UTF-8 text; ECR's PutImage takes text".to_owned(),
        })?;
        let put = self
            .client
            .put_image()
            .repository_name(repository)
            .image_manifest(text)
            .image_manifest_media_type(media_type)
            .image_digest(digest)
            .set_image_tag(tag.map(str::to_owned))
            .send()
            .await;
        match put {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("ImageAlreadyExistsException") => Ok(()),
            Err(e) if e.code() == Some("ImageTagAlreadyExistsException") => {
                Err(MirrorError::ImmutableTag {
                    what: format!("{repository}:{}", tag.unwrap_or_default()),
                    tag: tag.unwrap_or_default().to_owned(),
                })
            }
            Err(e) => Err(failure("PutImage", repository, &e)),
        }
    }
}
