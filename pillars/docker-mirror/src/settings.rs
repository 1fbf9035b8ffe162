//! The `docker-mirror` Lambda's settings, from its environment (set by the CDK construct).

use std::path::PathBuf;
use std::time::Duration;

use pillar_config::{Env, EnvError};

#[derive(Debug)]
pub struct MirrorSettings {
    pub manifest: PathBuf,
    pub secret_ttl: Duration,
    pub image_concurrency: usize,
    pub blob_concurrency: usize,
}

impl MirrorSettings {
    pub fn from_env<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, EnvError> {
        let seconds =
            env.optional("SECRET_TTL_SECONDS", "how long secrets are cached, in seconds")?;
        Ok(Self {
            manifest: env.manifest()?,
            secret_ttl: seconds.map_or(pillar_auth::secrets::DEFAULT_TTL, Duration::from_secs),
            image_concurrency: env
                .optional("IMAGE_CONCURRENCY", "images copied at the same time")?
                .unwrap_or(2),
            blob_concurrency: env
                .optional("BLOB_CONCURRENCY", "blobs of one image copied at the same time")?
                .unwrap_or(4),
        })
    }
}
