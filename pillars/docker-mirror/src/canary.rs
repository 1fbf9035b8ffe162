//! The Docker mirror canary: what a container runtime does with a mirrored image, done
//! every run. For each configured image it takes the newest selected tag the mirror holds
//! and pulls it: the index, the platform manifest (linux/amd64 first), the config blob and
//! the first layer, each read whole and checked against its digest. Then it compares the
//! tag's digest with the source's when the source answers; a source that does not answer is
//! not a failure of the mirror.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use pillar_config::Image;
use pillar_telemetry::{Metrics, Unit, pillar_ready};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::ecr::RepositorySettings;
use crate::error::MirrorError;
use crate::manifest::{Descriptor, Parsed, parse, sha256_digest};
use crate::refs::ImageRef;
use crate::registry::Registry;
use crate::select::{needs_tag_list, select};
use crate::service::Mirror;
use crate::target::{Destination, Target};

/// The namespace the Docker mirror's metrics go to.
const NAMESPACE: &str = "Pillars/DockerMirror";
/// No check starts with less than this before the deadline.
const MARGIN: Duration = Duration::from_secs(10);

/// How one mirrored image answered a pull.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Readiness {
    /// Pulled, and the same image as the source's tag (or the source did not answer).
    Ready,
    /// Pulled, but the source's tag names another image now.
    Drifted { source_digest: String },
    /// A pull would fail, for `reason`.
    Broken { reason: String },
}

/// What the source said of the tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum SourceState {
    Same,
    Differs,
    /// It did not answer (or its credentials could not be read): the mirror alone decides.
    Unreachable {
        reason: String,
    },
    NotCompared,
}

/// One image's check.
#[derive(Debug, Clone, Serialize)]
pub struct ImageCheck {
    /// Where it was pulled from (`ecr:<repository>` or `host/repository`).
    pub image: String,
    pub tag: Option<String>,
    #[serde(flatten)]
    pub readiness: Readiness,
    pub source: SourceState,
    pub digest: Option<String>,
    /// The platform pulled from an index, as `os/architecture`.
    pub platform: Option<String>,
    /// How it was pulled: ECR's registry endpoint, as `docker pull`; or the ECR API, where
    /// that endpoint was not reached.
    pub via: String,
    /// Manifests and blobs read and checked, and their bytes.
    pub checked: usize,
    pub bytes: u64,
    pub latency_ms: u64,
}

impl ImageCheck {
    pub fn ready(&self) -> bool {
        !matches!(self.readiness, Readiness::Broken { .. })
    }

    /// One line for a terminal.
    pub fn summary(&self) -> String {
        let short = |digest: &str| digest.chars().take(19).collect::<String>();
        let pulled = format!(
            "pulled :{} ({}{}) through {}, {} manifests and blobs checked",
            self.tag.as_deref().unwrap_or("?"),
            self.digest.as_deref().map(short).unwrap_or_default(),
            self.platform.as_deref().map(|p| format!(", {p}")).unwrap_or_default(),
            if self.via.is_empty() { "the registry" } else { &self.via },
            self.checked
        );
        match (&self.readiness, &self.source) {
            (Readiness::Broken { reason }, _) => format!("BROKEN: {reason}"),
            (Readiness::Drifted { source_digest }, _) => {
                format!("drifted: {pulled}; the source's tag is {}", short(source_digest))
            }
            (Readiness::Ready, SourceState::Unreachable { reason }) => {
                format!("ready: {pulled}; source unreachable ({reason})")
            }
            (Readiness::Ready, _) => format!("ready: {pulled}; the source has the same image"),
        }
    }
}

#[derive(Debug, Default, Serialize)]
pub struct CanaryReport {
    pub images: Vec<ImageCheck>,
}

impl CanaryReport {
    pub fn ready(&self) -> bool {
        self.images.iter().all(ImageCheck::ready)
    }

    /// `PillarReady` (dimension `Pillar`), and per image `CanaryLatencyMs` and
    /// `CanaryFailed`.
    pub fn metrics(&self) -> Vec<Metrics> {
        let mut metrics: Vec<Metrics> = self
            .images
            .iter()
            .map(|check| {
                Metrics::new(NAMESPACE)
                    .dimension("Image", &check.image)
                    .value("CanaryLatencyMs", check.latency_ms as f64, Unit::Milliseconds)
                    .value("CanaryFailed", f64::from(u8::from(!check.ready())), Unit::Count)
            })
            .collect();
        metrics.push(pillar_ready("DockerMirror", self.ready()));
        metrics
    }
}

impl Mirror {
    /// Pulls each image's newest selected tag from its ECR repository, before `deadline`.
    pub async fn canary(&self, images: &[&Image], deadline: Option<Instant>) -> CanaryReport {
        // One token serves every repository of the registry.
        let endpoint = self.ecr_registry().await;
        let mut report = CanaryReport::default();
        for image in images {
            if deadline.is_some_and(|d| d.saturating_duration_since(Instant::now()) < MARGIN) {
                tracing::warn!(image = image.source, "not checked: too close to the deadline");
                break;
            }
            let settings = RepositorySettings::of(image);
            let check = match self.ecr(&image.ecr_repository, settings.clone()) {
                Err(error) => broken(format!("ecr:{}", image.ecr_repository), error.to_string()),
                Ok(api) => {
                    let (to, via) = match reached(&endpoint, &image.ecr_repository, settings).await
                    {
                        Ok(Some(registry)) => {
                            let via = format!("the registry endpoint {registry}");
                            (registry, via)
                        }
                        Ok(None) => {
                            (api.clone(), "the ECR API (the endpoints are not AWS's)".into())
                        }
                        Err(unreached) => (api.clone(), format!("the ECR API ({unreached})")),
                    };
                    let mut check = self.check(image, &to).await;
                    check.image = api.to_string();
                    check.via = via;
                    check
                }
            };
            report.images.push(check);
        }
        report
    }

    /// ECR's registry endpoint, as `docker pull` reaches it, with its token. `None` when
    /// the AWS endpoints are overridden (a stand-in, whose registry endpoint is not AWS's
    /// either) or no ECR client is configured.
    async fn ecr_registry(&self) -> Result<Option<Arc<Registry>>, String> {
        let overridden = ["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_ECR"]
            .iter()
            .any(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()));
        let Some(ecr) = self.ecr_client().filter(|_| !overridden) else { return Ok(None) };
        let (host, username, password) =
            ecr.registry_endpoint().await.map_err(|e| e.to_string())?;
        Ok(Some(self.registry(&host, oci_client::secrets::RegistryAuth::Basic(username, password))))
    }

    /// Pulls `image`'s newest selected tag from `to`, and compares it with the source's.
    pub async fn check(&self, image: &Image, to: &Destination) -> ImageCheck {
        let started = Instant::now();
        let mut check = broken(to.to_string(), String::new());
        let pulled = async {
            let tag = newest_tag(image, to).await?;
            check.tag = Some(tag.clone());
            pull(to, &tag, &mut check).await
        };
        check.readiness = match pulled.await {
            Ok(()) => Readiness::Ready,
            Err(reason) => Readiness::Broken { reason },
        };
        if let (Readiness::Ready, Some(tag), Some(digest)) =
            (&check.readiness, check.tag.clone(), check.digest.clone())
        {
            check.source = match self.source_digest(image, &tag).await {
                Ok(Some(source)) if source == digest => SourceState::Same,
                Ok(Some(source)) => {
                    check.readiness = Readiness::Drifted { source_digest: source };
                    SourceState::Differs
                }
                Ok(None) => {
                    SourceState::Unreachable { reason: format!("the source no longer has :{tag}") }
                }
                Err(error) => SourceState::Unreachable { reason: error.to_string() },
            };
        }
        check.latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        check
    }

    async fn source_digest(&self, image: &Image, tag: &str) -> Result<Option<String>, MirrorError> {
        let source = ImageRef::parse(&image.source)?;
        let registry = self.registry(source.host(), self.source_auth(image).await?);
        registry.manifest_digest(&source.at(tag)).await
    }
}

/// `repository` at the registry endpoint, when the endpoint answers; an error saying why
/// when it cannot be reached, or could not be found.
async fn reached(
    endpoint: &Result<Option<Arc<Registry>>, String>,
    repository: &str,
    settings: RepositorySettings,
) -> Result<Option<Destination>, String> {
    let registry = match endpoint {
        Ok(Some(registry)) => Arc::clone(registry),
        Ok(None) => return Ok(None),
        Err(error) => return Err(error.clone()),
    };
    let host = registry.host().to_owned();
    let to = Destination {
        target: Target::Registry(registry),
        repository: repository.to_owned(),
        settings,
    };
    match to.tags().await {
        Err(MirrorError::Unreachable { error, .. }) => {
            Err(format!("the registry endpoint {host} was not reached: {error}"))
        }
        _ => Ok(Some(to)),
    }
}

fn broken(image: String, reason: String) -> ImageCheck {
    ImageCheck {
        image,
        tag: None,
        readiness: Readiness::Broken { reason },
        source: SourceState::NotCompared,
        digest: None,
        platform: None,
        via: String::new(),
        checked: 0,
        bytes: 0,
        latency_ms: 0,
    }
}

/// The tag a deploy would pull: the newest the patterns select among the mirror's tags,
/// else the first explicit one.
async fn newest_tag(image: &Image, to: &Destination) -> Result<String, String> {
    let held = match needs_tag_list(image) {
        true => to.tags().await.map_err(|e| format!("listing the mirror's tags: {e}"))?,
        false => Vec::new(),
    };
    let selected = select(image, &held).tags;
    let newest_by_pattern = selected.get(image.tags.len());
    newest_by_pattern
        .or(selected.first())
        .cloned()
        .ok_or_else(|| format!("{to} holds no tag the manifest selects"))
}

/// Pulls `tag` from `to` as a runtime does, recording what was checked in `check`.
async fn pull(to: &Destination, tag: &str, check: &mut ImageCheck) -> Result<(), String> {
    let top = to
        .manifest(tag)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("{to}:{tag} is missing from the mirror"))?;
    check.digest = Some(sha256_digest(&top));
    check.checked += 1;
    check.bytes += top.len() as u64;
    let mut manifest = top;
    if let Parsed::Index { .. } = parse(&manifest).map_err(|e| format!("{to}:{tag}: {e}"))? {
        let (child, platform) = platform_manifest(&manifest)?;
        check.platform = Some(platform);
        let bytes =
            to.manifest(&child.digest).await.map_err(|e| e.to_string())?.ok_or_else(|| {
                format!("{to}@{} (its platform manifest) is missing", child.digest)
            })?;
        if sha256_digest(&bytes) != child.digest {
            return Err(format!("{to}@{}: the manifest does not match its digest", child.digest));
        }
        check.checked += 1;
        check.bytes += bytes.len() as u64;
        manifest = bytes;
    }
    let Parsed::Image { blobs, .. } = parse(&manifest).map_err(|e| format!("{to}: {e}"))? else {
        return Err(format!("{to}:{tag}: an index inside an index"));
    };
    // The config, and the first layer when there is one.
    for blob in blobs.iter().take(2) {
        check.bytes += read_blob(to, blob).await?;
        check.checked += 1;
    }
    Ok(())
}

/// The index's manifest for linux/amd64, else its first that is not an attestation.
fn platform_manifest(index: &[u8]) -> Result<(Descriptor, String), String> {
    #[derive(serde::Deserialize)]
    struct Entry {
        #[serde(flatten)]
        descriptor: Descriptor,
        #[serde(default)]
        platform: Option<Platform>,
    }
    #[derive(serde::Deserialize)]
    struct Platform {
        os: String,
        architecture: String,
    }
    #[derive(serde::Deserialize)]
    struct Index {
        manifests: Vec<Entry>,
    }
    let index: Index = serde_json::from_slice(index).map_err(|e| format!("an index: {e}"))?;
    let named = |e: &Entry| {
        e.platform.as_ref().map(|p| format!("{}/{}", p.os, p.architecture)).unwrap_or_default()
    };
    let chosen = index
        .manifests
        .iter()
        .find(|e| named(e) == "linux/amd64")
        .or_else(|| index.manifests.iter().find(|e| !named(e).starts_with("unknown")))
        .ok_or("the index lists no platform manifest")?;
    Ok((chosen.descriptor.clone(), named(chosen)))
}

/// Reads `blob` whole from `to`; its size, when its bytes match its digest and size.
async fn read_blob(to: &Destination, blob: &Descriptor) -> Result<u64, String> {
    let mut stream = to.blob(blob).await.map_err(|e| format!("blob {}: {e}", blob.digest))?;
    let (mut hasher, mut size) = (Sha256::new(), 0_u64);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| format!("{to} blob {}: reading: {e}", blob.digest))?;
        hasher.update(&chunk);
        size += chunk.len() as u64;
    }
    let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
    if digest != blob.digest || size != blob.size {
        return Err(format!(
            "{to} blob {}: {size} bytes hashing to {digest} arrived, not {} bytes",
            blob.digest, blob.size
        ));
    }
    Ok(size)
}
