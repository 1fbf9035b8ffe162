use std::time::Duration;

use oci_client::errors::{DigestError, OciDistributionError, OciErrorCode};

/// Why one image (or one step of it) was not mirrored. Every variant names what it was
/// working on, so a line in a report is enough to act on.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error("`{reference}` is not a valid image reference: {reason}")]
    Reference { reference: String, reason: String },
    #[error("{what}: not found (check the repository and tag exist in the source registry)")]
    NotFound { what: String },
    #[error("{what}: credentials refused by {registry} (check the username/password or token)")]
    Unauthorized { what: String, registry: String },
    #[error("{what}: {registry} is unreachable: {error}")]
    Unreachable { what: String, registry: String, error: String },
    #[error("{what}: registry answered {status}: {message}")]
    Status { what: String, status: u16, message: String, retry_after: Option<Duration> },
    #[error(
        "{what}: content does not match digest {digest}: {detail}; nothing was tagged \
         (the source registry serves corrupted data)"
    )]
    DigestMismatch { what: String, digest: String, detail: String },
    #[error(
        "{what}: tag `{tag}` is immutable in the target and holds another image; \
         not changed (push under a new tag, or delete the tag in ECR first)"
    )]
    ImmutableTag { what: String, tag: String },
    #[error("{what}: {message}")]
    Manifest { what: String, message: String },
    #[error("{what}: {message}")]
    Registry { what: String, message: String },
    #[error("ECR {operation} on `{repository}`: {message}")]
    Ecr { operation: &'static str, repository: String, message: String, retryable: bool },
    #[error("source credentials secret `{secret}`: {message}")]
    Credentials { secret: String, message: String },
    #[error("{what}: referrer {referrer} (signature, attestation or SBOM) not copied: {error}")]
    Referrer { what: String, referrer: String, error: Box<MirrorError> },
}

impl MirrorError {
    /// Whether trying again may help, and how long the server asked us to wait.
    pub fn retry(&self) -> Option<Option<Duration>> {
        match self {
            Self::Unreachable { .. } => Some(None),
            Self::Status { status, retry_after, .. }
                if *status == 429 || *status == 408 || *status >= 500 =>
            {
                Some(*retry_after)
            }
            Self::Ecr { retryable: true, .. } => Some(None),
            _ => None,
        }
    }

    /// Classifies an `oci-client` error on `what` against `registry`.
    pub fn from_oci(what: impl Into<String>, registry: &str, error: OciDistributionError) -> Self {
        let what = what.into();
        let registry = registry.to_owned();
        match error {
            OciDistributionError::ImageManifestNotFoundError(_) => Self::NotFound { what },
            OciDistributionError::RegistryError { envelope, .. } => {
                let codes: Vec<_> = envelope.errors.iter().map(|e| &e.code).collect();
                if codes.iter().any(|c| matches!(c, OciErrorCode::Toomanyrequests)) {
                    let message = envelope.to_string();
                    Self::Status { what, status: 429, message, retry_after: None }
                } else if codes.iter().any(|c| {
                    matches!(
                        c,
                        OciErrorCode::ManifestUnknown
                            | OciErrorCode::NameUnknown
                            | OciErrorCode::NotFound
                            | OciErrorCode::BlobUnknown
                    )
                }) {
                    Self::NotFound { what }
                } else if codes.iter().any(|c| matches!(c, OciErrorCode::DigestInvalid)) {
                    // The target recomputed the digest of what it received.
                    Self::DigestMismatch {
                        what,
                        digest: String::new(),
                        detail: envelope.to_string(),
                    }
                } else if codes
                    .iter()
                    .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
                {
                    Self::Unauthorized { what, registry }
                } else {
                    Self::Registry { what, message: envelope.to_string() }
                }
            }
            OciDistributionError::UnauthorizedError { .. }
            | OciDistributionError::AuthenticationFailure(_) => {
                Self::Unauthorized { what, registry }
            }
            OciDistributionError::ServerError { code: 404, .. } => Self::NotFound { what },
            OciDistributionError::ServerError { code: 401 | 403, .. } => {
                Self::Unauthorized { what, registry }
            }
            OciDistributionError::ServerError { code: 400, message, .. }
                if message.contains("DIGEST_INVALID") =>
            {
                Self::DigestMismatch { what, digest: String::new(), detail: message }
            }
            OciDistributionError::ServerError { code, message, .. } => {
                Self::Status { what, status: code, message, retry_after: None }
            }
            OciDistributionError::DigestError(e) => {
                Self::DigestMismatch { what, digest: String::new(), detail: e.to_string() }
            }
            OciDistributionError::RequestError(e) => Self::transport(what, &registry, e),
            OciDistributionError::IoError(e) => Self::read(what, &registry, &e),
            other => Self::Registry { what, message: chain(&other) },
        }
    }

    /// A request that failed on the way: a connection refused, reset or timed out is worth
    /// another try; anything else is reported as it is. Never a digest mismatch, whatever
    /// the URL (every blob upload URL carries `?digest=`) or the text says.
    pub fn transport(what: impl Into<String>, registry: &str, error: reqwest::Error) -> Self {
        let (what, registry) = (what.into(), registry.to_owned());
        let passing =
            error.is_connect() || error.is_timeout() || error.is_request() || error.is_body();
        let error = chain(&error.without_url());
        if passing {
            Self::Unreachable { what, registry, error }
        } else {
            Self::Registry { what, message: error }
        }
    }

    /// A blob stream from the source that failed: bytes that miss their digest are the
    /// source's corruption; anything else (a cut connection) is a transport fault, retried.
    pub fn read(what: impl Into<String>, registry: &str, error: &std::io::Error) -> Self {
        let what = what.into();
        match error.get_ref().and_then(|inner| inner.downcast_ref::<DigestError>()) {
            Some(digest) => {
                Self::DigestMismatch { what, digest: String::new(), detail: digest.to_string() }
            }
            None => Self::Unreachable { what, registry: registry.to_owned(), error: chain(error) },
        }
    }
}

/// An error and its causes on one line.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
