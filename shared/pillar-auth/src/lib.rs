//! Authentication pieces every pillar shares: verifying Bitbucket webhook signatures,
//! computing CodeCommit git passwords from AWS credentials, and reading secrets from
//! Secrets Manager with an in-process cache.

pub mod codecommit;
pub mod secrets;
pub mod webhook;

use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};

/// The most useful one-line text of an SDK error: the service's code and message when it
/// answered, the transport's cause otherwise.
pub fn aws_error_message<E, R>(error: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match error {
        SdkError::ServiceError(e) => {
            let meta = e.err();
            format!(
                "{}: {}",
                meta.code().unwrap_or("error"),
                meta.message().unwrap_or("no message")
            )
        }
        other => {
            let mut text = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(cause) = source {
                text.push_str(": ");
                text.push_str(&cause.to_string());
                source = cause.source();
            }
            text
        }
    }
}
