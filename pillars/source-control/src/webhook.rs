//! The Bitbucket webhook: authenticate the delivery, find the configured repository it
//! names, and queue a mirror of it. Fast and side-effect free apart from the queue, so
//! Bitbucket gets its answer well inside its 10 s timeout.

use std::time::{Duration, Instant};

use http::{HeaderMap, StatusCode};
use pillar_auth::secrets::{SecretCache, SecretError};
use pillar_auth::webhook::{SIGNATURE_HEADER, verify_signature};
use pillar_config::Manifest;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::Digest;

use crate::queue::{MirrorQueue, MirrorRequest, SqsQueue};

/// Deliveries above this are refused before any work (Bitbucket's are a few KiB).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The status and a short plain-text body for Bitbucket's delivery log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookResponse {
    pub status: StatusCode,
    pub body: String,
}

impl WebhookResponse {
    fn new(status: StatusCode, body: impl Into<String>) -> Self {
        Self { status, body: body.into() }
    }
}

/// Where the webhook secret comes from.
pub trait WebhookSecret {
    fn get(&self) -> impl Future<Output = Result<SecretString, SecretError>> + Send;
}

/// A secret in Secrets Manager, cached.
#[derive(Debug)]
pub struct ManagedSecret {
    pub cache: SecretCache,
    pub id: String,
}

impl WebhookSecret for ManagedSecret {
    async fn get(&self) -> Result<SecretString, SecretError> {
        self.cache.get(&self.id).await
    }
}

impl WebhookSecret for SecretString {
    async fn get(&self) -> Result<SecretString, SecretError> {
        Ok(self.clone())
    }
}

/// The handler as deployed: secret in Secrets Manager, requests on SQS.
pub type ManagedWebhook = Webhook<ManagedSecret, SqsQueue>;

impl ManagedWebhook {
    /// Clients from the AWS configuration; the secret cached for `secret_ttl`.
    pub fn from_aws(
        manifest: &Manifest,
        aws: &aws_config::SdkConfig,
        secret_id: String,
        secret_ttl: Duration,
        queue_url: String,
    ) -> Self {
        let secret = ManagedSecret {
            cache: SecretCache::new(aws_sdk_secretsmanager::Client::new(aws), secret_ttl),
            id: secret_id,
        };
        let queue = SqsQueue { client: aws_sdk_sqs::Client::new(aws), queue_url };
        Self::new(manifest, secret, queue)
    }
}

/// Handles deliveries for the repositories of one manifest.
#[derive(Debug)]
pub struct Webhook<S, Q> {
    /// (lower-cased `workspace/slug` or `PROJECT/slug`, CodeCommit name)
    repositories: Vec<(String, String)>,
    secret: S,
    queue: Q,
}

#[derive(Deserialize)]
struct Payload {
    repository: Option<PayloadRepository>,
}

/// Cloud names the repository `full_name`; Data Center `project.key` + `slug`.
#[derive(Deserialize)]
struct PayloadRepository {
    full_name: Option<String>,
    slug: Option<String>,
    project: Option<PayloadProject>,
}

#[derive(Deserialize)]
struct PayloadProject {
    key: Option<String>,
}

impl<S: WebhookSecret, Q: MirrorQueue> Webhook<S, Q> {
    pub fn new(manifest: &Manifest, secret: S, queue: Q) -> Self {
        let repositories = manifest
            .repositories
            .iter()
            .map(|r| (r.bitbucket.to_lowercase(), r.codecommit.clone()))
            .collect();
        Self { repositories, secret, queue }
    }

    /// Answers one delivery.
    pub async fn handle(&self, headers: &HeaderMap, body: &[u8]) -> WebhookResponse {
        let started = Instant::now();
        let response = self.answer(headers, body).await;
        tracing::info!(
            status = response.status.as_u16(),
            outcome = response.body,
            micros = started.elapsed().as_micros() as u64,
            "webhook delivery"
        );
        response
    }

    async fn answer(&self, headers: &HeaderMap, body: &[u8]) -> WebhookResponse {
        if body.len() > MAX_BODY_BYTES {
            return WebhookResponse::new(StatusCode::PAYLOAD_TOO_LARGE, "body above 1 MiB");
        }
        let secret = match self.secret.get().await {
            Ok(secret) => secret,
            Err(error) => {
                tracing::error!(%error, "webhook secret unavailable");
                return WebhookResponse::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "webhook secret unavailable",
                );
            }
        };
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        if let Err(error) =
            verify_signature(secret.expose_secret().as_bytes(), body, header(SIGNATURE_HEADER))
        {
            return WebhookResponse::new(StatusCode::UNAUTHORIZED, error.to_string());
        }
        match header("X-Event-Key") {
            Some("diagnostics:ping") => return WebhookResponse::new(StatusCode::OK, "pong"),
            Some("repo:push" | "repo:refs_changed") => {}
            other => {
                return WebhookResponse::new(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "unsupported event {other:?}: subscribe the webhook to repo:push (Cloud) or repo:refs_changed (Data Center)"
                    ),
                );
            }
        }
        let Some(key) = repository_key(body) else {
            return WebhookResponse::new(
                StatusCode::BAD_REQUEST,
                "malformed payload: no repository in the JSON body",
            );
        };
        let Some(codecommit) = self.codecommit_for(&key) else {
            return WebhookResponse::new(
                StatusCode::NOT_FOUND,
                format!("repository {key} is not in the manifest"),
            );
        };
        let delivery = header("X-Request-UUID")
            .or_else(|| header("X-Request-Id"))
            .map_or_else(|| hex::encode(sha2::Sha256::digest(body)), str::to_owned);
        let request = MirrorRequest { repository: codecommit.to_owned(), delivery };
        match self.queue.enqueue(&request).await {
            Ok(()) => {
                WebhookResponse::new(StatusCode::ACCEPTED, format!("mirror of {codecommit} queued"))
            }
            Err(error) => {
                tracing::error!(%error, repository = codecommit, "cannot queue the mirror");
                WebhookResponse::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "cannot queue the mirror; retry",
                )
            }
        }
    }

    fn codecommit_for(&self, key: &str) -> Option<&str> {
        let key = key.to_lowercase();
        self.repositories
            .iter()
            .find(|(bitbucket, _)| *bitbucket == key)
            .map(|(_, codecommit)| codecommit.as_str())
    }
}

/// `workspace/slug` or `PROJECT/slug` from a Cloud or Data Center payload.
fn repository_key(body: &[u8]) -> Option<String> {
    let repository = serde_json::from_slice::<Payload>(body).ok()?.repository?;
    if let Some(full_name) = repository.full_name {
        return Some(full_name);
    }
    Some(format!("{}/{}", repository.project?.key?, repository.slug?))
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    use http::{HeaderName, HeaderValue};
    use pillar_auth::webhook::sign;

    use super::*;
    use crate::queue::QueueError;

    #[derive(Default)]
    struct MemoryQueue(Mutex<Vec<MirrorRequest>>);

    impl MirrorQueue for &MemoryQueue {
        async fn enqueue(&self, request: &MirrorRequest) -> Result<(), QueueError> {
            self.0.lock().expect("queue").push(request.clone());
            Ok(())
        }
    }

    struct FailingQueue;

    impl MirrorQueue for FailingQueue {
        async fn enqueue(&self, request: &MirrorRequest) -> Result<(), QueueError> {
            Err(QueueError { repository: request.repository.clone(), message: "throttled".into() })
        }
    }

    fn fixtures() -> PathBuf {
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo at run time"))
            .join("../../integration-tests/fixtures/bitbucket")
    }

    fn secret() -> SecretString {
        let text = std::fs::read_to_string(fixtures().join("SECRET")).expect("fixture secret");
        SecretString::from(text.trim_end().to_owned())
    }

    /// A fixture's body and headers, as Bitbucket sent them.
    fn delivery(name: &str) -> (HeaderMap, Vec<u8>) {
        let body = std::fs::read(fixtures().join(format!("{name}.json"))).expect("fixture body");
        let mut headers = HeaderMap::new();
        for line in std::fs::read_to_string(fixtures().join(format!("{name}.headers")))
            .expect("headers")
            .lines()
        {
            if let Some((name, value)) = line.split_once(':') {
                headers.insert(
                    HeaderName::from_bytes(name.trim().as_bytes()).expect("header name"),
                    HeaderValue::from_str(value.trim()).expect("header value"),
                );
            }
        }
        (headers, body)
    }

    fn manifest() -> Manifest {
        let text = r#"
[[repository]]
codecommit = "networking-terraform"
source = "https://bitbucket.example.com/scm/net/networking-terraform.git"
bitbucket = "NET/networking-terraform"

[[repository]]
codecommit = "cloud-networking"
source = "https://bitbucket.org/platform/networking-terraform.git"
bitbucket = "platform/Networking-Terraform"
"#;
        Manifest::parse(text, Path::new("test.toml")).expect("test manifest")
    }

    async fn answer(headers: &HeaderMap, body: &[u8], queue: &MemoryQueue) -> WebhookResponse {
        Webhook::new(&manifest(), secret(), queue).handle(headers, body).await
    }

    #[tokio::test]
    async fn signed_pushes_queue_their_repository_with_the_delivery_id() {
        let queue = MemoryQueue::default();
        for (fixture, repository, delivery_id) in [
            ("cloud-repo-push", "cloud-networking", "3d1f6a2e-5b7c-4e8d-9f0a-1b2c3d4e5f60"),
            (
                "dc-repo-refs-changed",
                "networking-terraform",
                "b5a2c7e1-8f3d-4a6b-9c0e-2d4f6a8b0c1e",
            ),
        ] {
            let (headers, body) = delivery(fixture);
            let response = answer(&headers, &body, &queue).await;
            assert_eq!(response.status, StatusCode::ACCEPTED, "{fixture}: {}", response.body);
            let queued = queue.0.lock().expect("queue").pop().expect("one request queued");
            assert_eq!(
                queued,
                MirrorRequest { repository: repository.into(), delivery: delivery_id.into() }
            );
        }
    }

    #[tokio::test]
    async fn ping_answers_200_and_queues_nothing() {
        let queue = MemoryQueue::default();
        let (headers, body) = delivery("dc-diagnostics-ping");
        assert_eq!(answer(&headers, &body, &queue).await.status, StatusCode::OK);
        assert!(queue.0.lock().expect("queue").is_empty());
    }

    #[tokio::test]
    async fn bad_signatures_get_401_and_queue_nothing() {
        let queue = MemoryQueue::default();
        let (headers, body) = delivery("cloud-repo-push");
        let mut tampered = body.clone();
        let at = tampered.len() / 2;
        tampered[at] ^= 0x20;
        let mut unsigned = headers.clone();
        unsigned.remove(SIGNATURE_HEADER);
        let mut wrong = headers.clone();
        wrong.insert(
            SIGNATURE_HEADER,
            HeaderValue::from_str(&sign(b"other secret", &body)).expect("value"),
        );
        for (headers, body, says) in [
            (&headers, &tampered, "does not match"),
            (&unsigned, &body, "no X-Hub-Signature"),
            (&wrong, &body, "does not match"),
        ] {
            let response = answer(headers, body, &queue).await;
            assert_eq!(response.status, StatusCode::UNAUTHORIZED);
            assert!(response.body.contains(says), "{}", response.body);
        }
        assert!(queue.0.lock().expect("queue").is_empty());
    }

    /// Headers for a correctly signed delivery of `body` with `event`.
    fn signed(event: &str, body: &[u8]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("X-Event-Key", HeaderValue::from_str(event).expect("event"));
        headers.insert(
            SIGNATURE_HEADER,
            HeaderValue::from_str(&sign(secret().expose_secret().as_bytes(), body)).expect("sig"),
        );
        headers
    }

    #[tokio::test]
    async fn malformed_unknown_and_oversized_deliveries_are_refused() {
        let queue = MemoryQueue::default();
        let cases: [(&str, Vec<u8>, StatusCode, &str); 5] = [
            ("repo:push", b"{not json".to_vec(), StatusCode::BAD_REQUEST, "malformed"),
            ("repo:push", br#"{"push":{}}"#.to_vec(), StatusCode::BAD_REQUEST, "malformed"),
            ("pr:opened", b"{}".to_vec(), StatusCode::BAD_REQUEST, "unsupported event"),
            (
                "repo:push",
                br#"{"repository":{"full_name":"someone/else"}}"#.to_vec(),
                StatusCode::NOT_FOUND,
                "someone/else is not in the manifest",
            ),
            ("repo:push", vec![b' '; MAX_BODY_BYTES + 1], StatusCode::PAYLOAD_TOO_LARGE, "1 MiB"),
        ];
        for (event, body, status, says) in cases {
            let response = answer(&signed(event, &body), &body, &queue).await;
            assert_eq!(response.status, status, "{event}: {}", response.body);
            assert!(response.body.contains(says), "{}", response.body);
        }
        assert!(queue.0.lock().expect("queue").is_empty());
    }

    #[tokio::test]
    async fn a_queue_failure_is_503_so_bitbucket_retries() {
        let (headers, body) = delivery("dc-repo-refs-changed");
        let response =
            Webhook::new(&manifest(), secret(), FailingQueue).handle(&headers, &body).await;
        assert_eq!(response.status, StatusCode::SERVICE_UNAVAILABLE);
    }
}
