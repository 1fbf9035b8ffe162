//! Typed settings from a Lambda's environment variables: each Lambda describes its
//! settings as a struct and fills it through [`Env`], failing at cold start with the
//! variable's name rather than later with a confusing error.

use std::fmt::Display;
use std::str::FromStr;

/// A variable that is missing or does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvError {
    #[error("environment variable {name} is not set: {meaning}")]
    Missing { name: String, meaning: String },
    #[error("environment variable {name}=`{value}` is invalid ({reason}): {meaning}")]
    Invalid { name: String, value: String, reason: String, meaning: String },
}

/// Reads variables from the process environment, or from any lookup in tests.
#[derive(Debug)]
pub struct Env<F = fn(&str) -> Option<String>> {
    lookup: F,
}

impl Env {
    /// The process environment. Variables that are not valid Unicode count as unset.
    pub fn process() -> Self {
        Self { lookup: |name| std::env::var(name).ok() }
    }
}

impl<F: Fn(&str) -> Option<String>> Env<F> {
    pub fn from_fn(lookup: F) -> Self {
        Self { lookup }
    }

    /// `PILLARS_MANIFEST`: where a Lambda finds the deployment manifest (the CDK app puts it
    /// in the function's layer, at `/opt/pillars.toml`).
    pub fn manifest(&self) -> Result<std::path::PathBuf, EnvError> {
        self.required(
            "PILLARS_MANIFEST",
            "the deployment manifest, which the CDK app puts in the function's layer at /opt/pillars.toml",
        )
    }

    /// The variable `name`, parsed; `meaning` says what it is for, for the error message.
    pub fn required<T>(&self, name: &str, meaning: &str) -> Result<T, EnvError>
    where
        T: FromStr,
        T::Err: Display,
    {
        self.optional(name, meaning)?
            .ok_or_else(|| EnvError::Missing { name: name.to_owned(), meaning: meaning.to_owned() })
    }

    /// The variable `name`, parsed, or `None` when it is unset or empty.
    pub fn optional<T>(&self, name: &str, meaning: &str) -> Result<Option<T>, EnvError>
    where
        T: FromStr,
        T::Err: Display,
    {
        match (self.lookup)(name).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(value) => value.parse().map(Some).map_err(|e: T::Err| EnvError::Invalid {
                name: name.to_owned(),
                reason: e.to_string(),
                value,
                meaning: meaning.to_owned(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[derive(Debug, PartialEq)]
    struct Settings {
        queue_url: String,
        batch: u16,
    }

    fn settings(vars: &[(&str, &str)]) -> Result<Settings, EnvError> {
        let vars: HashMap<String, String> =
            vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let env = Env::from_fn(|name| vars.get(name).cloned());
        Ok(Settings {
            queue_url: env.required("QUEUE_URL", "the SQS queue mirrors are sent to")?,
            batch: env.optional("BATCH", "refs per push")?.unwrap_or(4000),
        })
    }

    #[test]
    fn fills_a_typed_struct_with_defaults() {
        assert_eq!(
            settings(&[("QUEUE_URL", "https://q")]),
            Ok(Settings { queue_url: "https://q".into(), batch: 4000 })
        );
        assert_eq!(settings(&[("QUEUE_URL", "q"), ("BATCH", "12")]).map(|s| s.batch), Ok(12));
    }

    #[test]
    fn missing_and_invalid_variables_are_named() {
        let missing = settings(&[("BATCH", "1")]).expect_err("QUEUE_URL is required");
        assert_eq!(
            missing.to_string(),
            "environment variable QUEUE_URL is not set: the SQS queue mirrors are sent to"
        );
        let invalid = settings(&[("QUEUE_URL", "q"), ("BATCH", "many")]).expect_err("not a number");
        assert!(invalid.to_string().starts_with("environment variable BATCH=`many` is invalid ("));
    }

    #[test]
    fn the_process_environment_is_read() {
        let env = Env::process();
        assert!(env.required::<String>("PATH", "search path").is_ok_and(|p| !p.is_empty()));
        assert_eq!(env.optional::<String>("PILLAR_SURELY_UNSET_VARIABLE", "x"), Ok(None));
    }
}
