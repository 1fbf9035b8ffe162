//! The Logging Pillar Lambdas' settings, from their environment (set by the CDK construct):
//! the deployment manifest's `[logging]` section.

use std::path::PathBuf;

use pillar_config::{ConfigError, Env, EnvError, Logging, Manifest};

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(transparent)]
    Env(#[from] EnvError),
    #[error(transparent)]
    Manifest(#[from] ConfigError),
    #[error("manifest {} has no [logging] section: the Logging Pillar needs its stream", .0.display())]
    NoLogging(PathBuf),
}

/// `log-sink` and `log-heartbeat`: the `[logging]` of `PILLARS_MANIFEST`.
pub fn from_env<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Logging, SettingsError> {
    let path = env.manifest()?;
    Manifest::load(&path)?.logging.ok_or(SettingsError::NoLogging(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_logging_section_is_required() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("pillars.toml");
        let env = |path: PathBuf| {
            move |name: &str| (name == "PILLARS_MANIFEST").then(|| path.display().to_string())
        };
        std::fs::write(&path, "[logging]\nstream = \"logs\"\nretention_days = 7\n").expect("write");
        let logging = from_env(&Env::from_fn(env(path.clone()))).expect("settings");
        assert_eq!((logging.stream.as_str(), logging.retention_days), ("logs", 7));
        std::fs::write(&path, "").expect("write");
        let error = from_env(&Env::from_fn(env(path))).unwrap_err().to_string();
        assert!(error.contains("no [logging] section"), "{error}");
    }
}
