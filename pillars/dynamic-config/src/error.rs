//! What the Config Pillar's library can fail on, naming the bucket, object or flag.

/// A failure of the Config Pillar's library.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "{source_name}: its digest is {actual}, the pointer names {expected}; not served (a partial or tampered upload?)"
    )]
    DigestMismatch { source_name: String, expected: String, actual: String },
    #[error("{source_name}: not a bundle ({detail})")]
    Corrupt { source_name: String, detail: String },
    #[error("{source_name}: a policy does not compile as it did when published: {detail}")]
    Compile { source_name: String, detail: String },
    #[error("the flag set has {} problem(s); nothing was published:\n{}", .0.len(), .0.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Check(Vec<crate::flagset::Problem>),
    #[error("s3://{bucket}/{key}: {operation} failed: {detail}")]
    S3 { bucket: String, key: String, operation: &'static str, detail: String },
    #[error(
        "s3://{bucket}/{key} moved while this publish ran (another publisher?): nothing was changed; run it again"
    )]
    Raced { bucket: String, key: String },
    #[error(
        "s3://{bucket}/{key}: no version {version} in the history (`pillar flags history` lists them)"
    )]
    UnknownVersion { bucket: String, key: String, version: String },
    #[error("cache {path}: {detail}")]
    Cache { path: String, detail: String },
}
