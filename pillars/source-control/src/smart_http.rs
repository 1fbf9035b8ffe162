//! Git's smart HTTP protocol, the parts a mirror needs of it: a server's ref advertisement
//! (source and target), upload-pack (fetching from the source) and receive-pack (pushing to
//! the target). Ours rather than libgit2's
//! so that ref names stay bytes, every ref's status is read, the pack is ours to build, and
//! requests have deadlines.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use reqwest::{RequestBuilder, Response, StatusCode};
use secrecy::ExposeSecret;

use crate::error::MirrorError;
use crate::protocol::{Advertisement, Report};
use crate::transport::{Auth, Endpoint, Side};

/// git servers and load balancers look for git's user agent.
const USER_AGENT: &str = concat!("git/2.0 (pillars-scp/", env!("CARGO_PKG_VERSION"), ")");

/// An HTTP client for git servers, built once and shared by every mirror of a process.
#[derive(Debug, Clone)]
pub struct SmartHttp {
    client: reqwest::Client,
    /// How long nothing may move (no byte sent or received) before a request fails.
    idle: Duration,
}

impl Default for SmartHttp {
    fn default() -> Self {
        Self::new()
    }
}

impl SmartHttp {
    /// A dead server fails a request instead of hanging it: 15 s to connect, and
    /// [`IDLE_TIMEOUT`] without progress (see [`Self::with_idle_timeout`]).
    pub fn new() -> Self {
        let client = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            // Listings' redirects are followed by hand (see `advertisement`); no other.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(15))
            // A connection idle longer than this is not reused: one idle across a frozen
            // Lambda is likely dead, and its first request would fail.
            .pool_idle_timeout(Duration::from_secs(20))
            .build()
            .expect("a TLS backend and a resolver are compiled in");
        Self { client, idle: IDLE_TIMEOUT }
    }

    /// Requests fail after `idle` without progress instead of [`IDLE_TIMEOUT`]. Progress is
    /// a byte sent or received, not the time a request takes: a long push through a
    /// buffering front end keeps going as long as its body does.
    pub fn with_idle_timeout(self, idle: Duration) -> Self {
        Self { idle, ..self }
    }

    /// What `endpoint` advertises for `service` (`git-upload-pack` or `git-receive-pack`).
    /// A redirect of the listing is followed as git follows it: the repository's URL is
    /// where it led (the advertisement's `redirected`), for the requests that follow too;
    /// the credentials go along only to the same host.
    pub async fn advertisement(
        &self,
        endpoint: &Endpoint,
        side: Side,
        service: &str,
    ) -> Result<Advertisement, MirrorError> {
        let mut current = endpoint.clone();
        let mut redirects = 0;
        let response = loop {
            let url = format!("{}/info/refs?service={service}", base(&current));
            let response = self.send_retrying(&current, side, || self.client.get(&url)).await?;
            if !response.status().is_redirection() {
                break response;
            }
            redirects += 1;
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            current = redirected(&current, &url, location, service)
                .filter(|_| redirects <= MAX_REDIRECTS)
                .ok_or_else(|| MirrorError::Protocol {
                    side,
                    url: endpoint.display_url(),
                    message: format!(
                        "the listing was redirected to `{location}`, which is not a git repository's listing (or too many redirects)"
                    ),
                })?;
        };
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = self.read_all(&current, side, response).await?;
        // `application/x-git-upload-pack-advertisement; charset=utf-8` is the same type.
        let media_type = content_type.split(';').next().unwrap_or_default().trim();
        if !media_type.eq_ignore_ascii_case(&format!("application/x-{service}-advertisement")) {
            return Err(MirrorError::Protocol {
                side,
                url: endpoint.display_url(),
                message: format!(
                    "not a smart HTTP git server (answered `{content_type}` to {service}); check the URL"
                ),
            });
        }
        let mut advertisement = Advertisement::parse_http(&body, service).map_err(|message| {
            MirrorError::Protocol { side, url: endpoint.display_url(), message }
        })?;
        if redirects > 0 {
            tracing::info!(from = endpoint.display_url(), to = current.display_url(), "redirected");
            advertisement.redirected = Some(current);
        }
        Ok(advertisement)
    }

    /// Sends receive-pack `request` (update commands, then the pack if any) and reads its
    /// report, through `side-band-64k` when `sideband`; without `report_status` the answer
    /// has none (the caller reads the outcome from a new listing).
    pub async fn receive_pack(
        &self,
        endpoint: &Endpoint,
        request: impl Stream<Item = std::io::Result<Bytes>> + Send + 'static,
        sideband: bool,
        report_status: bool,
    ) -> Result<Report, MirrorError> {
        let side = Side::Target;
        let watch = Watch::default();
        let request = watch.watching(request);
        let post = self
            .client
            .post(format!("{}/git-receive-pack", base(endpoint)))
            .header(reqwest::header::CONTENT_TYPE, "application/x-git-receive-pack-request")
            .header(reqwest::header::ACCEPT, "application/x-git-receive-pack-result")
            .body(reqwest::Body::wrap_stream(request));
        // The server checks a whole pack before it answers (index-pack, connectivity; a
        // buffering front end first reads it all): that may take long, and the caller's
        // deadline bounds it.
        let sent =
            self.watched(endpoint, side, self.send(endpoint, side, post), &watch, ANSWER_WAIT);
        let response = sent.await?;
        not_redirected(&response, endpoint, side)?;
        let body = self.read_all(endpoint, side, response).await?;
        let parsed = if report_status {
            Report::parse(&body, sideband)
        } else {
            Report::progress(&body, sideband)
        };
        parsed.map_err(|message| MirrorError::Push { url: endpoint.display_url(), error: message })
    }

    /// Sends upload-pack `request` (see [`crate::protocol::encode_fetch`]) and returns the
    /// answer as it arrives, never whole in memory.
    pub async fn upload_pack(
        &self,
        endpoint: &Endpoint,
        side: Side,
        request: Vec<u8>,
    ) -> Result<impl Stream<Item = Result<Bytes, MirrorError>> + use<>, MirrorError> {
        let url = format!("{}/git-upload-pack", base(endpoint));
        let post = || {
            self.client
                .post(&url)
                .header(reqwest::header::CONTENT_TYPE, "application/x-git-upload-pack-request")
                .header(reqwest::header::ACCEPT, "application/x-git-upload-pack-result")
                .body(request.clone())
        };
        let response = self.send_retrying(endpoint, side, post).await?;
        not_redirected(&response, endpoint, side)?;
        Ok(self.idle_stream(endpoint, side, response))
    }

    /// Sends a request `make` builds afresh for each try, again after a transient failure
    /// (a connection refused, reset or closed before the answer, as a pooled connection that
    /// died while Lambda was frozen; 429, 502, 503, 504), waiting as the server asks
    /// (`Retry-After`, up to [`MAX_RETRY_AFTER`]) or backing off. For requests that change
    /// nothing: listings and upload-pack. The caller's deadline bounds the whole.
    async fn send_retrying(
        &self,
        endpoint: &Endpoint,
        side: Side,
        make: impl Fn() -> RequestBuilder,
    ) -> Result<Response, MirrorError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let watch = Watch::default();
            watch.body_sent();
            let sent =
                self.watched(endpoint, side, self.send(endpoint, side, make()), &watch, self.idle);
            match sent.await {
                Err(error) if attempt < ATTEMPTS => match retry_delay(&error, attempt) {
                    Some(wait) => {
                        tracing::warn!(%error, attempt, wait_ms = wait.as_millis() as u64, "transient failure; trying again");
                        tokio::time::sleep(wait).await;
                    }
                    None => return Err(error),
                },
                other => return other,
            }
        }
    }

    /// Sends with the endpoint's credentials and turns HTTP failures into what they mean.
    async fn send(
        &self,
        endpoint: &Endpoint,
        side: Side,
        request: RequestBuilder,
    ) -> Result<Response, MirrorError> {
        // Credentials go in one header: user information in the URL (Bitbucket Cloud's
        // `https://USER@bitbucket.org/...`) is not sent besides.
        let request = match &endpoint.auth {
            Auth::None => match userinfo(&endpoint.url) {
                Some((username, password)) => request.basic_auth(username, Some(password)),
                None => request,
            },
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
            status if status.is_success() || status.is_redirection() => Ok(response),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                Err(MirrorError::CredentialsRefused { side, url, hint: side.credentials_hint() })
            }
            StatusCode::NOT_FOUND => Err(MirrorError::NotFound { side, url }),
            status => {
                let retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok());
                let text = response.text().await.unwrap_or_default();
                let text = text.trim();
                let message = text.chars().take(300).collect();
                Err(MirrorError::Http { side, url, status: status.as_u16(), message, retry_after })
            }
        }
    }
}

/// Without progress for this long, a request fails.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// How long a server may think about a pack it received whole before it answers.
const ANSWER_WAIT: Duration = Duration::from_secs(30 * 60);

/// When a request's body last moved, and when it was all sent.
#[derive(Debug, Clone)]
struct Watch(Arc<Mutex<(Instant, Option<Instant>)>>);

impl Default for Watch {
    fn default() -> Self {
        Self(Arc::new(Mutex::new((Instant::now(), None))))
    }
}

impl Watch {
    fn body_sent(&self) {
        self.0.lock().expect("watch").1 = Some(Instant::now());
    }

    /// `body`, telling the watch of every piece taken and of its end.
    fn watching(
        &self,
        body: impl Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    ) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static {
        let (moved, ended) = (self.clone(), self.clone());
        body.inspect(move |_| moved.0.lock().expect("watch").0 = Instant::now()).chain(
            futures_util::stream::poll_fn(move |_| {
                ended.body_sent();
                std::task::Poll::Ready(None)
            }),
        )
    }

    /// Why the request should stop now, if it should.
    fn stalled(&self, idle: Duration, answer_wait: Duration) -> Option<String> {
        let (moved, sent) = *self.0.lock().expect("watch");
        match sent {
            None if moved.elapsed() > idle => {
                Some(format!("nothing was sent for {} s", idle.as_secs()))
            }
            Some(sent) if sent.elapsed() > answer_wait => {
                Some(format!("no answer {} s after the request was sent", answer_wait.as_secs()))
            }
            _ => None,
        }
    }
}

impl SmartHttp {
    /// `send`, unless its request stalls as `watch` sees it.
    async fn watched(
        &self,
        endpoint: &Endpoint,
        side: Side,
        send: impl Future<Output = Result<Response, MirrorError>>,
        watch: &Watch,
        answer_wait: Duration,
    ) -> Result<Response, MirrorError> {
        tokio::pin!(send);
        loop {
            tokio::select! {
                sent = &mut send => return sent,
                () = tokio::time::sleep(Duration::from_millis(250)) => {
                    if let Some(why) = watch.stalled(self.idle, answer_wait) {
                        let url = endpoint.display_url();
                        return Err(MirrorError::Unreachable { side, url, error: why });
                    }
                }
            }
        }
    }

    /// The answer's body, each piece within the idle timeout of the last.
    fn idle_stream(
        &self,
        endpoint: &Endpoint,
        side: Side,
        response: Response,
    ) -> impl Stream<Item = Result<Bytes, MirrorError>> + Unpin + use<> {
        let (endpoint, idle) = (endpoint.clone(), self.idle);
        let chunks = Box::pin(response.bytes_stream());
        Box::pin(futures_util::stream::unfold(Some(chunks), move |chunks| {
            let endpoint = endpoint.clone();
            async move {
                let mut chunks = chunks?;
                match tokio::time::timeout(idle, chunks.next()).await {
                    Ok(None) => None,
                    Ok(Some(Ok(chunk))) => Some((Ok(chunk), Some(chunks))),
                    Ok(Some(Err(error))) => Some((Err(transfer(&endpoint, side, error)), None)),
                    Err(_) => {
                        let error = format!("nothing was received for {} s", idle.as_secs());
                        let url = endpoint.display_url();
                        Some((Err(MirrorError::Unreachable { side, url, error }), None))
                    }
                }
            }
        }))
    }

    /// The whole (small) body of an answer, within the idle timeout between pieces.
    async fn read_all(
        &self,
        endpoint: &Endpoint,
        side: Side,
        response: Response,
    ) -> Result<Vec<u8>, MirrorError> {
        let mut body = Vec::new();
        let mut chunks = self.idle_stream(endpoint, side, response);
        while let Some(chunk) = chunks.next().await {
            body.extend_from_slice(&chunk?);
        }
        Ok(body)
    }
}

/// As git, only the listing is redirected; a redirected POST is the server's error.
fn not_redirected(response: &Response, endpoint: &Endpoint, side: Side) -> Result<(), MirrorError> {
    if response.status().is_redirection() {
        return Err(MirrorError::Http {
            side,
            url: endpoint.display_url(),
            status: response.status().as_u16(),
            message: "a redirect of a POST (git follows the listing's redirect only)".to_owned(),
            retry_after: None,
        });
    }
    Ok(())
}

/// Tries of a request that changes nothing, transient failures included.
const ATTEMPTS: u32 = 4;

/// The longest `Retry-After` waited for; a longer one fails the request at once.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// How long to wait before trying again after `error`, the `attempt`th failure; `None`
/// when trying again cannot help.
pub fn retry_delay(error: &MirrorError, attempt: u32) -> Option<Duration> {
    let backoff = Duration::from_millis(250 << attempt.min(6));
    match error {
        MirrorError::Http { status: 429 | 502 | 503 | 504, retry_after, .. } => match retry_after {
            Some(seconds) if Duration::from_secs(*seconds) > MAX_RETRY_AFTER => None,
            Some(seconds) => Some(Duration::from_secs(*seconds)),
            None => Some(backoff),
        },
        MirrorError::Unreachable { .. } | MirrorError::Interrupted { .. } => Some(backoff),
        _ => None,
    }
}

/// Redirects of a listing followed, at most (as libcurl's default for git is more).
const MAX_REDIRECTS: u32 = 5;

/// The endpoint a listing's redirect from `asked` to `location` leads to: the part before
/// `/info/refs?service=…` is the repository's new URL. Credentials go along to the same
/// host only (`http://` to `https://` on it included).
fn redirected(from: &Endpoint, asked: &str, location: &str, service: &str) -> Option<Endpoint> {
    let asked = url::Url::parse(asked).ok()?;
    let to = asked.join(location).ok()?;
    if !matches!(to.scheme(), "http" | "https") {
        return None;
    }
    let text = to.as_str();
    let suffix = format!("/info/refs?service={service}");
    let repository = text.strip_suffix(&suffix)?.to_owned();
    let same_host = to.host_str() == asked.host_str()
        && (to.port_or_known_default() == asked.port_or_known_default()
            || (asked.scheme() == "http" && to.scheme() == "https"));
    let auth = if same_host { from.auth.clone() } else { Auth::None };
    Some(Endpoint { url: repository, auth })
}

/// The repository URL without a trailing slash or user information: credentials go in one
/// header, never also in the URL.
fn base(endpoint: &Endpoint) -> String {
    without_userinfo(&endpoint.url).trim_end_matches('/').to_owned()
}

fn without_userinfo(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if !parsed.username().is_empty() || parsed.password().is_some() => {
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

/// `user:password` written in the URL itself, for an endpoint without other credentials.
fn userinfo(url: &str) -> Option<(String, String)> {
    let parsed = url::Url::parse(url).ok()?;
    let password = parsed.password()?;
    let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
    Some((decode(parsed.username()), decode(password)))
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
    } else if error.is_request() {
        // Sent, and the connection went before an answer came.
        MirrorError::Interrupted { side, url, error: text }
    } else if side == Side::Source {
        MirrorError::Fetch { url, error: text }
    } else {
        MirrorError::Push { url, error: text }
    }
}
