//! Each Lambda's settings, from its environment (set by the CDK construct).

use std::path::PathBuf;
use std::time::Duration;

use pillar_config::{Env, EnvError};

/// `scp-webhook`.
#[derive(Debug)]
pub struct WebhookSettings {
    pub manifest: PathBuf,
    pub secret_id: String,
    pub secret_ttl: Duration,
    pub queue_url: String,
}

/// `scp-mirror` and `scp-reconcile`.
#[derive(Debug)]
pub struct MirrorSettings {
    pub manifest: PathBuf,
    pub work_dir: PathBuf,
    /// How much the caches in `work_dir` may take together; default: half its file system.
    pub cache_limit_mib: Option<u64>,
    pub create_repositories: bool,
    pub secret_ttl: Duration,
    /// Only `scp-reconcile` queues.
    pub queue_url: Option<String>,
}

fn secret_ttl<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Duration, EnvError> {
    let seconds = env.optional("SECRET_TTL_SECONDS", "how long secrets are cached, in seconds")?;
    Ok(seconds.map_or(pillar_auth::secrets::DEFAULT_TTL, Duration::from_secs))
}

impl WebhookSettings {
    pub fn from_env<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, EnvError> {
        Ok(Self {
            manifest: env.manifest()?,
            secret_id: env.required(
                "WEBHOOK_SECRET_ID",
                "the Secrets Manager secret holding the webhook secret",
            )?,
            secret_ttl: secret_ttl(env)?,
            queue_url: env.required("MIRROR_QUEUE_URL", "the SQS FIFO queue of mirror requests")?,
        })
    }
}

impl MirrorSettings {
    pub fn from_env<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, EnvError> {
        Ok(Self {
            manifest: env.manifest()?,
            work_dir: env
                .optional("WORK_DIR", "where bare caches live (Lambda: under /tmp)")?
                .unwrap_or_else(|| PathBuf::from("/tmp/scp")),
            cache_limit_mib: env.optional(
                "CACHE_LIMIT_MIB",
                "MiB the repository caches may take together (default: half of the work directory's storage)",
            )?,
            create_repositories: env
                .optional("CREATE_REPOSITORIES", "true to create missing CodeCommit repositories")?
                .unwrap_or(true),
            secret_ttl: secret_ttl(env)?,
            queue_url: env.optional("MIRROR_QUEUE_URL", "the SQS FIFO queue of mirror requests")?,
        })
    }
}
