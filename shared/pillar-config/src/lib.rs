//! The deployment manifest, `pillars.toml`: which repositories, images and log streams a
//! deployment keeps, checked as a whole before any pillar acts on it; and typed settings
//! read from a Lambda's environment.

mod env;
mod manifest;
mod validate;

pub use env::{Env, EnvError};
pub use manifest::{
    Config, DEFAULT_LOG_GROUP_PREFIX, DockerMirror, Image, Logging, Manifest, Network, Repository,
    Resources, SourceControl,
};

use std::path::{Path, PathBuf};

/// Everything that can be wrong with a manifest. Each names the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read manifest {}: {error}", path.display())]
    Read { path: PathBuf, error: std::io::Error },
    #[error("manifest {}: at `{key}`: {message}", path.display())]
    Syntax { path: PathBuf, key: String, message: String },
    #[error("manifest {} is invalid:{}", path.display(), problems.iter().map(|p| format!("\n  - {p}")).collect::<String>())]
    Invalid { path: PathBuf, problems: Vec<Problem> },
}

/// One thing wrong at one place in the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where, as a TOML key path: `repository[2].codecommit`.
    pub key: String,
    /// What is wrong and what to do about it.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

impl Manifest {
    /// Reads and checks the manifest at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| ConfigError::Read { path: path.to_owned(), error })?;
        Self::parse(&text, path)
    }

    /// Parses and checks `text`; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let syntax = |key: String, message: String| ConfigError::Syntax {
            path: path.to_owned(),
            key,
            message: message.trim_end().to_owned(),
        };
        let document = toml::Deserializer::parse(text)
            .map_err(|e| syntax("(document)".to_owned(), e.to_string()))?;
        let mut manifest: Manifest = serde_path_to_error::deserialize(document)
            .map_err(|e| syntax(e.path().to_string(), e.inner().to_string()))?;
        let problems = validate::problems(&manifest);
        if problems.is_empty() {
            // The pillar's key is each image's that names none: one place to read it.
            for image in &mut manifest.images {
                if image.kms_key.is_none() {
                    image.kms_key.clone_from(&manifest.docker_mirror.kms_key);
                }
            }
            Ok(manifest)
        } else {
            Err(ConfigError::Invalid { path: path.to_owned(), problems })
        }
    }
}

#[cfg(test)]
mod tests;
