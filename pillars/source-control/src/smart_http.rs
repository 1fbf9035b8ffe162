//! Git's smart HTTP protocol, the parts a mirror needs of it: a server's ref advertisement
//! (source and target), upload-pack (fetching from the source) and receive-pack (pushing to
//! the target). Ours rather than libgit2's
//! so that ref names stay bytes, every ref's status is read, the pack is ours to build, and
//! requests have deadlines.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use reqwest::{RequestBuilder, Response, StatusCode};
use secrecy::ExposeSecret;

use crate::mirror::{MirrorError, Side};
use crate::protocol::{Advertisement, Report};
use crate::transport::{Auth, Endpoint};

/// git servers and load balancers look for git's user agent.
const USER_AGENT: &str = concat!("git/2.0 (pillars-scp/", env!("CARGO_PKG_VERSION"), ")");

/// An HTTP client for git servers, built once and shared by every mirror of a process.
#[derive(Debug, Clone)]
pub struct SmartHttp {
    client: reqwest::Client,
}

impl Default for SmartHttp {
    fn default() -> Self {
        Self::new()
    }
}

impl SmartHttp {
    /// A dead server fails a request instead of hanging it: 15 s to connect, 120 s without a
    /// byte (the timeouts libgit2 is given for fetching).
    pub fn new() -> Self {
        let client = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .connect_timeout(Duration::from_secs(15))
            .read_timeout(Duration::from_secs(120))
            .build()
            .expect("a TLS backend and a resolver are compiled in");
        Self { client }
    }

    /// What `endpoint` advertises for `service` (`git-upload-pack` or `git-receive-pack`).
    pub async fn advertisement(
        &self,
        endpoint: &Endpoint,
        side: Side,
        service: &str,
    ) -> Result<Advertisement, MirrorError> {
        let url = format!("{}/info/refs?service={service}", base(endpoint));
        let response = self.send(endpoint, side, self.client.get(url)).await?;
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = response.bytes().await.map_err(|e| transfer(endpoint, side, e))?;
        if content_type != format!("application/x-{service}-advertisement") {
            return Err(MirrorError::Protocol {
                side,
                url: endpoint.display_url(),
                message: format!(
                    "not a smart HTTP git server (answered `{content_type}` to {service}); check the URL"
                ),
            });
        }
        Advertisement::parse_http(&body, service).map_err(|message| MirrorError::Protocol {
            side,
            url: endpoint.display_url(),
            message,
        })
    }

    /// Sends receive-pack `request` (update commands, then the pack if any) and reads its
    /// report, through `side-band-64k` when `sideband`.
    pub async fn receive_pack(
        &self,
        endpoint: &Endpoint,
        request: impl Stream<Item = std::io::Result<Bytes>> + Send + 'static,
        sideband: bool,
    ) -> Result<Report, MirrorError> {
        let side = Side::Target;
        let post = self
            .client
            .post(format!("{}/git-receive-pack", base(endpoint)))
            .header(reqwest::header::CONTENT_TYPE, "application/x-git-receive-pack-request")
            .header(reqwest::header::ACCEPT, "application/x-git-receive-pack-result")
            .body(reqwest::Body::wrap_stream(request));
        let response = self.send(endpoint, side, post).await?;
        let body = response.bytes().await.map_err(|e| transfer(endpoint, side, e))?;
        Report::parse(&body, sideband)
            .map_err(|message| MirrorError::Push { url: endpoint.display_url(), error: message })
    }

    /// Sends upload-pack `request` (see [`crate::protocol::encode_fetch`]) and returns the
    /// answer as it arrives, never whole in memory.
    pub async fn upload_pack(
        &self,
        endpoint: &Endpoint,
        side: Side,
        request: Vec<u8>,
    ) -> Result<impl Stream<Item = Result<Bytes, MirrorError>> + use<>, MirrorError> {
        let post = self
            .client
            .post(format!("{}/git-upload-pack", base(endpoint)))
            .header(reqwest::header::CONTENT_TYPE, "application/x-git-upload-pack-request")
            .header(reqwest::header::ACCEPT, "application/x-git-upload-pack-result")
            .body(request);
        let response = self.send(endpoint, side, post).await?;
        let endpoint = endpoint.clone();
        Ok(response
            .bytes_stream()
            .map(move |chunk| chunk.map_err(|e| transfer(&endpoint, side, e))))
    }

    /// Sends with the endpoint's credentials and turns HTTP failures into what they mean.
    async fn send(
        &self,
        endpoint: &Endpoint,
        side: Side,
        request: RequestBuilder,
    ) -> Result<Response, MirrorError> {
        let request = match &endpoint.auth {
            Auth::None => request,
            Auth::Basic { username, password } => {
                request.basic_auth(username, Some(password.expose_secret()))
            }
            Auth::CodeCommit { .. } => {
                let signed = endpoint.codecommit_credentials().expect("CodeCommit auth");
                request.basic_auth(signed.username, Some(signed.password.expose_secret()))
            }
        };
        let response = request.send().await.map_err(|e| transfer(endpoint, side, e))?;
        let url = endpoint.display_url();
        match response.status() {
            status if status.is_success() => Ok(response),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                Err(MirrorError::CredentialsRefused { side, url, hint: side.credentials_hint() })
            }
            StatusCode::NOT_FOUND => Err(MirrorError::NotFound { side, url }),
            status => {
                let text = response.text().await.unwrap_or_default();
                let text = text.trim();
                Err(MirrorError::Unreachable {
                    side,
                    url,
                    error: format!("HTTP {status}: {}", &text[..text.len().min(200)]),
                })
            }
        }
    }
}

/// The repository URL without a trailing slash.
fn base(endpoint: &Endpoint) -> &str {
    endpoint.url.trim_end_matches('/')
}

/// A failed request: the URL left out of the text (it may carry a password).
fn transfer(endpoint: &Endpoint, side: Side, error: reqwest::Error) -> MirrorError {
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    let url = endpoint.display_url();
    if error.is_connect() || error.is_timeout() {
        MirrorError::Unreachable { side, url, error: text }
    } else if side == Side::Source {
        MirrorError::Fetch { url, error: text }
    } else {
        MirrorError::Push { url, error: text }
    }
}
