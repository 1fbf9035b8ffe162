//! The flag sets in S3: bundles stored by digest (`<prefix>bundles/<hex>.json`, never
//! overwritten) and a small pointer (`<prefix>current`) naming the one served, moved only
//! by a conditional write, so two publishers cannot interleave. The bucket's versioning
//! keeps every pointer ever written: that is the history a rollback picks from.

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use serde::{Deserialize, Serialize};

use crate::bundle::{Bundle, digest};
use crate::error::ConfigError;

/// What `current` holds.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Pointer {
    /// The bundle served: `sha256:<hex>`.
    pub digest: String,
    /// When it was moved here (RFC 3339).
    pub published_at: String,
    pub flags: usize,
    /// The digest this replaced, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
}

/// One pointer in the history, newest first.
#[derive(Debug, Clone, Serialize)]
pub struct Version {
    /// S3's version id of the pointer object.
    pub version_id: String,
    pub pointer: Pointer,
    pub current: bool,
}

/// What a publish or a rollback did.
#[derive(Debug, Clone, Serialize)]
pub struct Moved {
    pub digest: String,
    pub previous: Option<String>,
    /// The pointer already named this bundle: nothing was written.
    pub unchanged: bool,
}

/// The answer to a poll of the pointer.
#[derive(Debug)]
pub enum Polled {
    /// The pointer's ETag is the one given.
    NotModified,
    /// Nothing was ever published.
    Missing,
    Changed {
        pointer: Pointer,
        etag: String,
    },
}

/// A flag-set location: bucket and key prefix.
#[derive(Debug, Clone)]
pub struct Store {
    s3: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
}

const POINTER: &str = "current";

/// Whether an S3 error is the HTTP status `status` (304, 404, 412 carry no error code).
fn status_is<E>(error: &SdkError<E, HttpResponse>, status: u16) -> bool {
    error.raw_response().is_some_and(|r| r.status().as_u16() == status)
}

impl Store {
    /// `prefix` may be empty; a missing trailing `/` is added.
    pub fn new(s3: aws_sdk_s3::Client, bucket: impl Into<String>, prefix: &str) -> Self {
        let prefix = match prefix.trim_start_matches('/') {
            "" => String::new(),
            p if p.ends_with('/') => p.to_owned(),
            p => format!("{p}/"),
        };
        Self { s3, bucket: bucket.into(), prefix }
    }

    /// `s3://bucket/prefix`, for messages.
    pub fn location(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    fn pointer_key(&self) -> String {
        format!("{}{POINTER}", self.prefix)
    }

    fn bundle_key(&self, digest: &str) -> String {
        format!("{}bundles/{}.json", self.prefix, digest.trim_start_matches("sha256:"))
    }

    fn failed<E, R>(
        &self,
        key: &str,
        operation: &'static str,
        error: &SdkError<E, R>,
    ) -> ConfigError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        ConfigError::S3 {
            bucket: self.bucket.clone(),
            key: key.to_owned(),
            operation,
            detail: pillar_auth::aws_error_message(error),
        }
    }

    /// Uploads `bundle` (a checked flag set) under its digest, then moves the pointer to it.
    pub async fn publish(&self, bundle: &Bundle) -> Result<Moved, ConfigError> {
        let bytes = bundle.to_bytes();
        let digest = digest(&bytes);
        let key = self.bundle_key(&digest);
        let put = self.put_json(&key, bytes).if_none_match("*").send().await;
        match put {
            Ok(_) => {}
            // Stored by digest: the same bytes are there already.
            Err(e) if status_is(&e, 412) => {}
            Err(e) => return Err(self.failed(&key, "PutObject", &e)),
        }
        self.point_to(&digest, bundle.flags.len()).await
    }

    /// Moves the pointer to `digest`, unless another writer moved it since it was read.
    async fn point_to(&self, digest: &str, flags: usize) -> Result<Moved, ConfigError> {
        let key = self.pointer_key();
        let held = self.pointer().await?;
        let previous = held.as_ref().map(|(p, _)| p.digest.clone());
        if previous.as_deref() == Some(digest) {
            return Ok(Moved { digest: digest.to_owned(), previous, unchanged: true });
        }
        let pointer = Pointer {
            digest: digest.to_owned(),
            published_at: now_rfc3339(),
            flags,
            previous: previous.clone(),
        };
        let put = self.put_json(&key, serde_json::to_vec(&pointer).expect("serializes"));
        let put = match &held {
            Some((_, etag)) => put.if_match(etag),
            None => put.if_none_match("*"),
        };
        match put.send().await {
            Ok(_) => Ok(Moved { digest: digest.to_owned(), previous, unchanged: false }),
            Err(e) if status_is(&e, 412) || status_is(&e, 409) => {
                Err(ConfigError::Raced { bucket: self.bucket.clone(), key })
            }
            Err(e) => Err(self.failed(&key, "PutObject", &e)),
        }
    }

    /// A PutObject of JSON `bytes` at `key`, its condition still to add.
    fn put_json(
        &self,
        key: &str,
        bytes: Vec<u8>,
    ) -> aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder {
        self.s3
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type("application/json")
            .body(ByteStream::from(bytes))
    }

    /// The pointer and its ETag; None if nothing was ever published.
    pub async fn pointer(&self) -> Result<Option<(Pointer, String)>, ConfigError> {
        match self.poll(None).await? {
            Polled::Changed { pointer, etag } => Ok(Some((pointer, etag))),
            Polled::Missing | Polled::NotModified => Ok(None),
        }
    }

    /// The pointer, unless its ETag is still `known` (a conditional GET: 304, no body).
    pub async fn poll(&self, known: Option<&str>) -> Result<Polled, ConfigError> {
        let key = self.pointer_key();
        let mut get = self.s3.get_object().bucket(&self.bucket).key(&key);
        if let Some(etag) = known {
            get = get.if_none_match(etag);
        }
        let answer = match get.send().await {
            Ok(answer) => answer,
            Err(e) if status_is(&e, 304) => return Ok(Polled::NotModified),
            Err(e) if status_is(&e, 404) => return Ok(Polled::Missing),
            Err(e) => return Err(self.failed(&key, "GetObject", &e)),
        };
        let etag = answer.e_tag().unwrap_or_default().to_owned();
        let body = self.body(&key, answer).await?;
        let pointer = self.parse_pointer(&key, &body)?;
        Ok(Polled::Changed { pointer, etag })
    }

    fn parse_pointer(&self, key: &str, bytes: &[u8]) -> Result<Pointer, ConfigError> {
        serde_json::from_slice(bytes).map_err(|e| ConfigError::Corrupt {
            source_name: format!("s3://{}/{key}", self.bucket),
            detail: format!("not a pointer: {e}"),
        })
    }

    /// The bundle `digest` names, verified against it.
    pub async fn bundle(&self, digest: &str) -> Result<(Bundle, Vec<u8>), ConfigError> {
        let key = self.bundle_key(digest);
        let bytes = self.read(&key, None).await?;
        let bundle = Bundle::from_bytes(&bytes, digest, &format!("s3://{}/{key}", self.bucket))?;
        Ok((bundle, bytes))
    }

    /// The bytes of `key` (of its version `version`, if given).
    async fn read(&self, key: &str, version: Option<&str>) -> Result<Vec<u8>, ConfigError> {
        let answer = self
            .s3
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .set_version_id(version.map(ToOwned::to_owned))
            .send()
            .await
            .map_err(|e| self.failed(key, "GetObject", &e))?;
        self.body(key, answer).await
    }

    async fn body(
        &self,
        key: &str,
        answer: aws_sdk_s3::operation::get_object::GetObjectOutput,
    ) -> Result<Vec<u8>, ConfigError> {
        let body = answer.body.collect().await.map_err(|e| ConfigError::S3 {
            bucket: self.bucket.clone(),
            key: key.to_owned(),
            operation: "GetObject",
            detail: e.to_string(),
        })?;
        Ok(body.into_bytes().to_vec())
    }

    /// Every pointer written, newest first (from the bucket's versioning).
    pub async fn history(&self) -> Result<Vec<Version>, ConfigError> {
        let key = self.pointer_key();
        let mut versions = Vec::new();
        // Pages: ListObjectVersions goes on from the key and version id it stopped at.
        let (mut key_marker, mut version_marker) = (None::<String>, None::<String>);
        loop {
            let page = self
                .s3
                .list_object_versions()
                .bucket(&self.bucket)
                .prefix(&key)
                .set_key_marker(key_marker.take())
                .set_version_id_marker(version_marker.take())
                .send()
                .await
                .map_err(|e| self.failed(&key, "ListObjectVersions", &e))?;
            for version in page.versions() {
                if version.key() != Some(key.as_str()) {
                    continue;
                }
                let Some(id) = version.version_id() else { continue };
                let body = self.read(&key, Some(id)).await?;
                versions.push(Version {
                    version_id: id.to_owned(),
                    pointer: self.parse_pointer(&key, &body)?,
                    current: version.is_latest() == Some(true),
                });
            }
            if page.is_truncated() != Some(true) {
                break;
            }
            key_marker = page.next_key_marker().map(ToOwned::to_owned);
            version_marker = page.next_version_id_marker().map(ToOwned::to_owned);
        }
        // By time, not by text: RFC 3339 drops a zero fraction, so "…:07Z" would sort after "…:07.5Z".
        let at = |v: &Version| {
            time::OffsetDateTime::parse(
                &v.pointer.published_at,
                &time::format_description::well_known::Rfc3339,
            )
            .ok()
        };
        versions.sort_by_key(|v| std::cmp::Reverse(at(v)));
        Ok(versions)
    }

    /// Points back at an earlier bundle: `version` is its digest (or a unique start of its
    /// hex) or the pointer's S3 version id, as `history` lists them.
    pub async fn rollback(&self, version: &str) -> Result<Moved, ConfigError> {
        let wanted = version.trim_start_matches("sha256:");
        let history = self.history().await?;
        let mut matching: Vec<&Version> = history
            .iter()
            .filter(|v| {
                v.version_id == version
                    || (!wanted.is_empty()
                        && v.pointer.digest.trim_start_matches("sha256:").starts_with(wanted))
            })
            .collect();
        // One bundle may be pointed at by several versions, not always in a row.
        matching.sort_by(|a, b| a.pointer.digest.cmp(&b.pointer.digest));
        matching.dedup_by(|a, b| a.pointer.digest == b.pointer.digest);
        let [target] = matching.as_slice() else {
            return Err(ConfigError::UnknownVersion {
                bucket: self.bucket.clone(),
                key: self.pointer_key(),
                version: if matching.is_empty() {
                    version.to_owned()
                } else {
                    format!(
                        "{version} (it matches {} bundles: give more of the digest)",
                        matching.len()
                    )
                },
            });
        };
        // The bundle must still be there and intact before anything points at it.
        self.bundle(&target.pointer.digest).await?;
        self.point_to(&target.pointer.digest, target.pointer.flags).await
    }
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .expect("a time formats")
}
