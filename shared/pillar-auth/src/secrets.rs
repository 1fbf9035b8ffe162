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

/// What a source's secret holds: a user and a password (or an access token used as one), or
/// a bearer token.
#[derive(Debug, Clone)]
pub enum Credentials {
    Basic { username: String, password: SecretString },
    Bearer(SecretString),
}

/// The secret's value as the Secrets Manager console writes a key/value secret.
#[derive(serde::Deserialize)]
struct KeyValue {
    username: Option<String>,
    password: Option<String>,
    token: Option<String>,
}

/// Reads a source secret: `username:password` (split at the first colon: a username has
/// none), the console's key/value JSON `{"username": …, "password": …}`, or a bearer token
/// (`{"token": …}`, or a value with no colon). `None` when it is none of those.
pub fn credentials(secret: &SecretString) -> Option<Credentials> {
    let text = secret.expose_secret().trim();
    if text.starts_with('{') {
        let value: KeyValue = serde_json::from_str(text).ok()?;
        return match (value.username, value.password, value.token) {
            (Some(username), Some(password), _) if !username.is_empty() => {
                Some(Credentials::Basic { username, password: SecretString::from(password) })
            }
            (None, None, Some(token)) if !token.is_empty() => {
                Some(Credentials::Bearer(SecretString::from(token)))
            }
            _ => None,
        };
    }
    match text.split_once(':') {
        Some((username, password)) if !username.is_empty() => Some(Credentials::Basic {
            username: username.to_owned(),
            password: SecretString::from(password.to_owned()),
        }),
        Some(_) => None,
        None if !text.is_empty() && !text.contains(char::is_whitespace) => {
            Some(Credentials::Bearer(SecretString::from(text.to_owned())))
        }
        None => None,
    }
}

/// A user and a password from a source secret (either form [`credentials`] reads); `None`
/// for a bearer token or anything else.
pub fn username_password(secret: &SecretString) -> Option<(String, SecretString)> {
    match credentials(secret)? {
        Credentials::Basic { username, password } => Some((username, password)),
        Credentials::Bearer(_) => None,
    }
}

/// What a git source's secret must hold, for messages.
pub const USER_PASSWORD_FORMS: &str = "`username:password` or the key/value JSON `{\"username\": ..., \"password\": ...}` (an access token goes in the password)";

/// What a registry's secret must hold, for messages.
pub const SECRET_FORMS: &str = "`username:password`, the key/value JSON `{\"username\": ..., \"password\": ...}`, or (for a registry) a token";

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

    /// Drops `id` from the cache: the next [`Self::get`] reads it again (after the source
    /// refused what it held: the secret may have been rotated).
    pub async fn forget(&self, id: &str) {
        self.entries.lock().await.remove(id);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Option<(String, String)> {
        credentials(&SecretString::from(text.to_owned())).map(|c| match c {
            Credentials::Basic { username, password } => {
                (username, password.expose_secret().to_owned())
            }
            Credentials::Bearer(token) => ("<bearer>".to_owned(), token.expose_secret().to_owned()),
        })
    }

    #[test]
    fn a_user_and_password_as_text_split_at_the_first_colon() {
        assert_eq!(read("svc-mirror:pa:ss\n"), Some(("svc-mirror".into(), "pa:ss".into())));
        assert_eq!(read(":nouser"), None);
    }

    #[test]
    fn the_consoles_key_value_json_is_a_user_and_password() {
        let console = r#"{"username":"svc-mirror","password":"p:a{ss"}"#;
        assert_eq!(read(console), Some(("svc-mirror".into(), "p:a{ss".into())));
        assert_eq!(read(r#"{"username":"svc-mirror"}"#), None, "half a pair is refused");
    }

    #[test]
    fn a_token_alone_is_a_bearer_token() {
        assert_eq!(read("ghp_abc123"), Some(("<bearer>".into(), "ghp_abc123".into())));
        assert_eq!(read(r#"{"token":"t0k"}"#), Some(("<bearer>".into(), "t0k".into())));
        assert_eq!(read("two words"), None);
    }
}
