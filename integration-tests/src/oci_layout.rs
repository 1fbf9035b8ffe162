//! Writes OCI image layouts (the directory format `skopeo copy oci:DIR:TAG` reads; with
//! `--format v2s2` skopeo turns them into Docker manifests and lists), so tests,
//! the demo and the benchmark build their images without a Docker engine or the internet.
//! Layers are pseudo-random bytes written and hashed in 1 MiB pieces: size costs no memory.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

/// What to build.
#[derive(Debug, Clone)]
pub struct Spec {
    /// `os/arch` pairs; more than one (or `attestation`) makes an index.
    pub platforms: Vec<String>,
    /// Layer sizes in bytes, the same for every platform (contents differ).
    pub layers: Vec<u64>,
    /// Adds a BuildKit-style attestation manifest (`unknown/unknown`) to the index.
    pub attestation: bool,
    /// Varies the bytes, so two builds with different seeds share nothing.
    pub seed: u64,
}

/// A layout directory holding one image under a tag.
#[derive(Debug)]
pub struct Layout {
    pub dir: PathBuf,
    pub tag: String,
    /// Digest of the top manifest (index or image).
    pub digest: String,
}

impl Layout {
    /// `oci:<dir>:<tag>`, as skopeo names it.
    pub fn skopeo_name(&self) -> String {
        format!("oci:{}:{}", self.dir.display(), self.tag)
    }
}

struct Writer {
    dir: PathBuf,
}

impl Writer {
    fn blob_path(&self, hex: &str) -> PathBuf {
        self.dir.join("blobs/sha256").join(hex)
    }

    /// Writes `bytes` as a blob; returns its descriptor.
    fn json(&self, media_type: &str, value: &Value) -> std::io::Result<Value> {
        let bytes = serde_json::to_vec(value)?;
        let hex = hex::encode(Sha256::digest(&bytes));
        fs::write(self.blob_path(&hex), &bytes)?;
        Ok(json!({"mediaType": media_type, "digest": format!("sha256:{hex}"), "size": bytes.len()}))
    }

    /// Streams `size` pseudo-random bytes into a blob; returns its descriptor.
    fn random(&self, media_type: &str, size: u64, mut state: u64) -> std::io::Result<Value> {
        let temporary = self.dir.join("blobs/partial");
        let mut file = std::io::BufWriter::new(fs::File::create(&temporary)?);
        let mut hasher = Sha256::new();
        let mut chunk = vec![0u8; 1 << 20];
        let mut left = size;
        state |= 1;
        while left > 0 {
            let n = usize::try_from(left.min(chunk.len() as u64)).unwrap_or(chunk.len());
            for word in chunk[..n].chunks_mut(8) {
                // xorshift64: fast, and incompressible enough for a registry.
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                word.copy_from_slice(&state.to_le_bytes()[..word.len()]);
            }
            hasher.update(&chunk[..n]);
            file.write_all(&chunk[..n])?;
            left -= n as u64;
        }
        file.flush()?;
        let hex = hex::encode(hasher.finalize());
        fs::rename(&temporary, self.blob_path(&hex))?;
        Ok(json!({"mediaType": media_type, "digest": format!("sha256:{hex}"), "size": size}))
    }
}

/// Writes the image `spec` into `dir` (created) under `tag`.
pub fn write(dir: &Path, tag: &str, spec: &Spec) -> std::io::Result<Layout> {
    fs::create_dir_all(dir.join("blobs/sha256"))?;
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let writer = Writer { dir: dir.to_owned() };
    let mut children = Vec::new();
    for (p, platform) in spec.platforms.iter().enumerate() {
        let (os, arch) = platform.split_once('/').unwrap_or(("linux", platform));
        let mut layers = Vec::new();
        for (l, size) in spec.layers.iter().enumerate() {
            let state = spec.seed ^ ((p as u64 + 1) << 40) ^ ((l as u64 + 1) << 20);
            layers.push(writer.random(LAYER, *size, state)?);
        }
        let config = json!({
            "architecture": arch, "os": os, "config": {"Env": [format!("SEED={}", spec.seed)]},
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l["digest"].clone()).collect::<Vec<_>>()},
        });
        let config = writer.json(CONFIG, &config)?;
        let manifest =
            json!({"schemaVersion": 2, "mediaType": MANIFEST, "config": config, "layers": layers});
        let mut descriptor = writer.json(MANIFEST, &manifest)?;
        descriptor["platform"] = json!({"architecture": arch, "os": os});
        children.push(descriptor);
    }
    if spec.attestation {
        let statement = json!({"_type": "https://in-toto.io/Statement/v0.1", "predicateType": "https://spdx.dev/Document", "seed": spec.seed});
        let mut layer = writer.json("application/vnd.in-toto+json", &statement)?;
        layer["annotations"] = json!({"in-toto.io/predicate-type": "https://spdx.dev/Document"});
        let config = writer.json(CONFIG, &json!({}))?;
        let manifest =
            json!({"schemaVersion": 2, "mediaType": MANIFEST, "config": config, "layers": [layer]});
        let mut descriptor = writer.json(MANIFEST, &manifest)?;
        descriptor["platform"] = json!({"architecture": "unknown", "os": "unknown"});
        descriptor["annotations"] = json!({
            "vnd.docker.reference.type": "attestation-manifest",
            "vnd.docker.reference.digest": children[0]["digest"],
        });
        children.push(descriptor);
    }
    let mut top = if children.len() == 1 {
        children.remove(0)
    } else {
        let index = json!({"schemaVersion": 2, "mediaType": INDEX, "manifests": children});
        writer.json(INDEX, &index)?
    };
    let digest = top["digest"].as_str().unwrap_or_default().to_owned();
    if let Some(object) = top.as_object_mut() {
        object.remove("platform");
    }
    top["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
    let index = json!({"schemaVersion": 2, "manifests": [top]});
    fs::write(dir.join("index.json"), serde_json::to_vec(&index)?)?;
    Ok(Layout { dir: dir.to_owned(), tag: tag.to_owned(), digest })
}
