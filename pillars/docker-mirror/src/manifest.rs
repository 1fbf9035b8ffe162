//! Just enough of a manifest to know what it points at. The bytes themselves are never
//! re-serialised: what is pushed is what was pulled, so digests never change.

use serde::Deserialize;
use sha2::{Digest, Sha256};

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// OCI 1.1's release candidates' artifact manifest (`blobs`, no config), which some
/// registries and tools still write for signatures and SBOMs.
pub const OCI_ARTIFACT: &str = "application/vnd.oci.artifact.manifest.v1+json";

/// Every manifest kind the mirror copies, for `Accept` headers and ECR's `acceptedMediaTypes`.
pub const MEDIA_TYPES: [&str; 5] =
    [OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST, OCI_ARTIFACT];

/// A content descriptor: what a manifest says about a blob or a child manifest.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

impl Descriptor {
    /// A foreign (non-distributable) layer, such as a Windows base layer: its manifest says
    /// where to fetch it, and registries neither serve nor need it. It is left as it is, as
    /// skopeo and crane leave it.
    pub fn is_foreign(&self) -> bool {
        self.media_type.contains(".foreign.") || self.media_type.contains(".nondistributable.")
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
    /// An artifact manifest's content.
    blobs: Option<Vec<Descriptor>>,
}

/// What a manifest references.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// An OCI index or Docker manifest list: child manifests, copied before their parent.
    Index { media_type: String, children: Vec<Descriptor> },
    /// An image (or artifact) manifest: its config and layers.
    Image { media_type: String, blobs: Vec<Descriptor> },
}

impl Parsed {
    pub fn media_type(&self) -> &str {
        match self {
            Self::Index { media_type, .. } | Self::Image { media_type, .. } => media_type,
        }
    }
}

/// Parses `bytes`. A manifest that does not name its media type (OCI allows that) is taken
/// for an OCI index when it lists manifests, else for an OCI image manifest.
pub fn parse(bytes: &[u8]) -> Result<Parsed, String> {
    let raw: Raw = serde_json::from_slice(bytes).map_err(|e| format!("not a manifest: {e}"))?;
    let media_type = raw
        .media_type
        .or_else(|| raw.manifests.is_some().then(|| OCI_INDEX.to_owned()))
        .unwrap_or_else(|| OCI_MANIFEST.to_owned());
    match (raw.manifests, raw.config) {
        (Some(children), None) => Ok(Parsed::Index { media_type, children }),
        (None, Some(config)) => {
            let blobs = std::iter::once(config).chain(raw.layers).collect();
            Ok(Parsed::Image { media_type, blobs })
        }
        (None, None) if media_type == OCI_ARTIFACT => {
            Ok(Parsed::Image { media_type, blobs: raw.blobs.unwrap_or_default() })
        }
        _ if media_type == "application/vnd.docker.distribution.manifest.v1+json"
            || media_type == "application/vnd.docker.distribution.manifest.v1+prettyjws" =>
        {
            Err("Docker schema 1 manifests are not supported (deprecated; re-push the image)"
                .to_owned())
        }
        _ => Err(format!("`{media_type}` has neither `manifests` nor a `config`")),
    }
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_lists_its_children_and_keeps_its_media_type() {
        let index = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json",
            "manifests":[{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":"sha256:aa","size":7,
            "platform":{"architecture":"arm64","os":"linux"}}]}"#;
        let Parsed::Index { media_type, children } = parse(index).unwrap() else {
            panic!("an index")
        };
        assert_eq!(media_type, DOCKER_LIST);
        assert_eq!(children[0].digest, "sha256:aa");
    }

    #[test]
    fn an_image_lists_config_first_then_layers() {
        let image = br#"{"schemaVersion":2,"config":{"mediaType":"c","digest":"sha256:c","size":1},
            "layers":[{"mediaType":"l","digest":"sha256:l1","size":2},{"mediaType":"l","digest":"sha256:l2","size":3}]}"#;
        let parsed = parse(image).unwrap();
        let Parsed::Image { blobs, .. } = &parsed else { panic!("an image") };
        let digests: Vec<_> = blobs.iter().map(|b| b.digest.as_str()).collect();
        assert_eq!(digests, ["sha256:c", "sha256:l1", "sha256:l2"]);
        assert_eq!(parsed.media_type(), OCI_MANIFEST);
    }

    #[test]
    fn an_artifact_manifest_lists_its_blobs() {
        let artifact = br#"{"mediaType":"application/vnd.oci.artifact.manifest.v1+json","artifactType":"application/spdx+json",
            "blobs":[{"mediaType":"application/spdx+json","digest":"sha256:b","size":9}],
            "subject":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:s","size":1}}"#;
        let Parsed::Image { media_type, blobs } = parse(artifact).unwrap() else { panic!("blobs") };
        assert_eq!((media_type.as_str(), blobs[0].digest.as_str()), (OCI_ARTIFACT, "sha256:b"));
    }

    #[test]
    fn foreign_layers_are_known_by_their_media_type() {
        let layer = |media_type: &str| Descriptor {
            media_type: media_type.to_owned(),
            digest: "sha256:l".into(),
            size: 1,
        };
        assert!(layer("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip").is_foreign());
        assert!(layer("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip").is_foreign());
        assert!(!layer("application/vnd.oci.image.layer.v1.tar+gzip").is_foreign());
    }

    #[test]
    fn schema_1_and_garbage_are_refused_with_a_reason() {
        let v1 = br#"{"schemaVersion":1,"mediaType":"application/vnd.docker.distribution.manifest.v1+json","fsLayers":[]}"#;
        assert!(parse(v1).unwrap_err().contains("schema 1"));
        assert!(parse(b"<html>").unwrap_err().contains("not a manifest"));
    }

    #[test]
    fn digest_is_sha256_of_the_exact_bytes() {
        assert_eq!(
            sha256_digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
