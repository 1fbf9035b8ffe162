//! Secrets Manager reads with an in-process cache, so a warm Lambda does not call the
//! API for every webhook and a burst of deliveries does not hit its rate limit.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::error::SdkError;
use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueError;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Mutex;

use crate::aws_error_message;

/// How long a secret is reused before it is read again, unless configured otherwise.
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);

/// Why a secret could not be read. Messages name the secret, never its value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error(
        "secret `{id}` does not exist in Secrets Manager: create it, or fix the secret name in the configuration"
    )]
    NotFound { id: String },
    #[error(
        "secret `{id}` has no string value (binary secrets are not supported): store it as a string"
    )]
    NotAString { id: String },
    #[error("could not read secret `{id}` from Secrets Manager: {message}")]
    Service { id: String, message: String },
}

/// A `username:password` secret split in two; `None` when it has no colon or no username.
pub fn username_password(secret: &SecretString) -> Option<(String, SecretString)> {
    let (username, password) = secret.expose_secret().trim().split_once(':')?;
    (!username.is_empty()).then(|| (username.to_owned(), SecretString::from(password.to_owned())))
}

/// A Secrets Manager client with a time-bounded cache of string secrets.
#[derive(Debug)]
pub struct SecretCache {
    client: Client,
    ttl: Duration,
    entries: Mutex<HashMap<String, (Instant, SecretString)>>,
}

impl SecretCache {
    pub fn new(client: Client, ttl: Duration) -> Self {
        Self { client, ttl, entries: Mutex::new(HashMap::new()) }
    }

    /// The current value of secret `id` (a name or an ARN), from the cache while it is
    /// younger than the TTL.
    pub async fn get(&self, id: &str) -> Result<SecretString, SecretError> {
        let mut entries = self.entries.lock().await;
        if let Some((read_at, value)) = entries.get(id)
            && read_at.elapsed() < self.ttl
        {
            return Ok(value.clone());
        }
        let value = self.fetch(id).await?;
        entries.insert(id.to_owned(), (Instant::now(), value.clone()));
        Ok(value)
    }

    async fn fetch(&self, id: &str) -> Result<SecretString, SecretError> {
        tracing::debug!(secret = id, "reading secret from Secrets Manager");
        let output = self.client.get_secret_value().secret_id(id).send().await.map_err(
            |error| match error {
                SdkError::ServiceError(e)
                    if matches!(e.err(), GetSecretValueError::ResourceNotFoundException(_)) =>
                {
                    SecretError::NotFound { id: id.to_owned() }
                }
                other => {
                    SecretError::Service { id: id.to_owned(), message: aws_error_message(&other) }
                }
            },
        )?;
        output
            .secret_string
            .map(SecretString::from)
            .ok_or_else(|| SecretError::NotAString { id: id.to_owned() })
    }
}
