//! A scriptable HTTP front end for git servers, as load balancers and proxies in front of
//! Bitbucket or CodeCommit behave on a bad day: it forwards every request to an upstream
//! git server (streaming both ways, the `Host` header kept so signed passwords still
//! match) and, as a test scripts it, cuts a ref listing short, answers an error once,
//! redirects the listing, adds parameters to the content type, or buffers a request body
//! whole at a throttled rate before the upstream sees any of it, or asks for a password the
//! upstream does not (a registry or git server behind an authenticating proxy, as
//! Artifactory's). It logs what it was asked.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::{StreamExt, TryStreamExt};

/// What the front end does to the requests it forwards.
#[derive(Debug, Default, Clone)]
pub struct Script {
    /// Ref listings (`info/refs`) lose the flush-pkt that ends them.
    pub cut_listings: bool,
    /// The next requests are answered with these statuses (and `Retry-After` seconds), one
    /// each, without reaching the upstream.
    pub fail_next: VecDeque<(u16, Option<u64>)>,
    /// The same, for the next receive-pack POSTs only (a push).
    pub fail_next_push: VecDeque<(u16, Option<u64>)>,
    /// `; charset=utf-8` is added to every content type.
    pub charset: bool,
    /// Ref listings are redirected (301) to this base URL, the rest of the path kept.
    pub redirect_listings_to: Option<String>,
    /// These capabilities are taken out of every ref listing (a server that lacks them).
    pub strip_capabilities: Vec<String>,
    /// Request bodies are read whole, this many bytes per 100 ms, before the upstream gets
    /// them (a buffering front end on a slow link).
    pub buffer_upload_bytes_per_tick: Option<usize>,
    /// upload-pack answers (a fetch's pack) and registry blobs are sent this many bytes per
    /// 100 ms (a slow link from the source).
    pub download_bytes_per_tick: Option<usize>,
    /// Requests without HTTP Basic credentials `user:password` get 401 with a Basic
    /// challenge; those with them go on, the credentials taken off.
    pub require_basic: Option<String>,
}

/// One request as the front end saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// `METHOD path?query`
    pub request: String,
    /// How many `Authorization` headers it carried.
    pub authorizations: usize,
}

#[derive(Debug)]
struct FrontEnd {
    upstream: String,
    client: reqwest::Client,
    script: Mutex<Script>,
    seen: Mutex<Vec<Seen>>,
}

/// A front end on its own loopback port and runtime.
#[derive(Debug)]
pub struct GitFrontEnd {
    pub address: SocketAddr,
    front: Arc<FrontEnd>,
    _runtime: tokio::runtime::Runtime,
}

impl GitFrontEnd {
    /// In front of `upstream` (`http://host:port`).
    pub fn start(upstream: &str, script: Script) -> Self {
        let (runtime, listener) = crate::background_listener();
        let address = listener.local_addr().expect("address");
        let front = Arc::new(FrontEnd {
            upstream: upstream.trim_end_matches('/').to_owned(),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            script: Mutex::new(script),
            seen: Mutex::new(Vec::new()),
        });
        let app = axum::Router::new().fallback(handle).with_state(Arc::clone(&front));
        runtime.spawn(async move { axum::serve(listener, app).await });
        Self { address, front, _runtime: runtime }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Changes what the front end does from now on.
    pub fn script(&self, change: impl FnOnce(&mut Script)) {
        change(&mut self.front.script.lock().expect("script"));
    }

    /// The requests seen since the last call.
    pub fn take_seen(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.front.seen.lock().expect("log"))
    }
}

async fn handle(State(front): State<Arc<FrontEnd>>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let query = request.uri().query().map(|q| format!("?{q}")).unwrap_or_default();
    let authorizations = request.headers().get_all(header::AUTHORIZATION).iter().count();
    let asked = format!("{} {path}{query}", request.method());
    front.seen.lock().expect("log").push(Seen { request: asked, authorizations });
    let script = front.script.lock().expect("script").clone();
    let listing = path.ends_with("/info/refs");
    let push = path.ends_with("/git-receive-pack");
    let failure = {
        let mut script = front.script.lock().expect("script");
        let pushed = if push { script.fail_next_push.pop_front() } else { None };
        pushed.or_else(|| script.fail_next.pop_front())
    };
    if let Some((status, retry_after)) = failure {
        let status = StatusCode::from_u16(status).expect("a status code");
        let mut answer = (status, "the front end is not ready\n").into_response();
        if let Some(seconds) = retry_after {
            answer.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        return answer;
    }
    if let Some(wanted) = &script.require_basic {
        use base64::Engine as _;
        let expected =
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(wanted));
        let given = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        if given != Some(expected.as_str()) {
            let mut answer =
                (StatusCode::UNAUTHORIZED, "authentication required\n").into_response();
            let challenge = HeaderValue::from_static("Basic realm=\"front end\"");
            answer.headers_mut().insert(header::WWW_AUTHENTICATE, challenge);
            return answer;
        }
    }
    if let (true, Some(base)) = (listing, &script.redirect_listings_to) {
        let location = format!("{}{path}{query}", base.trim_end_matches('/'));
        let mut answer = StatusCode::MOVED_PERMANENTLY.into_response();
        answer.headers_mut().insert(header::LOCATION, location.parse().expect("a location"));
        return answer;
    }
    match forward(&front, &script, request, &format!("{path}{query}")).await {
        Ok(mut response) => {
            if script.charset {
                let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
                if let Some(value) = content_type.and_then(|v| v.to_str().ok().map(str::to_owned)) {
                    let with = format!("{value}; charset=utf-8");
                    response.headers_mut().insert(header::CONTENT_TYPE, with.parse().expect("ok"));
                }
            }
            if listing && script.cut_listings {
                return cut_last_flush(response).await;
            }
            if listing && !script.strip_capabilities.is_empty() {
                return without_capabilities(response, &script.strip_capabilities).await;
            }
            response
        }
        Err(error) => (StatusCode::BAD_GATEWAY, format!("{error}\n")).into_response(),
    }
}

/// The listing without the flush-pkt at its end, as a connection cut right there leaves it.
async fn cut_last_flush(response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    let cut = bytes.strip_suffix(b"0000").unwrap_or(&bytes).to_vec();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::TRANSFER_ENCODING);
    Response::from_parts(parts, Body::from(cut))
}

/// The listing with `strip` taken out of the capabilities its first ref line carries.
async fn without_capabilities(response: Response, strip: &[String]) -> Response {
    let (mut parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default().to_vec();
    let mut out = Vec::new();
    let mut rest = bytes.as_slice();
    while rest.len() >= 4 {
        let length = std::str::from_utf8(&rest[..4])
            .ok()
            .and_then(|h| usize::from_str_radix(h, 16).ok())
            .unwrap_or(0);
        if length < 4 {
            out.extend_from_slice(&rest[..4]);
            rest = &rest[4..];
            continue;
        }
        let mut payload = rest[4..length].to_vec();
        if let Some(nul) = payload.iter().position(|b| *b == 0) {
            let capabilities = String::from_utf8_lossy(&payload[nul + 1..]).into_owned();
            let kept: Vec<&str> = capabilities
                .trim_end_matches('\n')
                .split(' ')
                .filter(|c| !strip.iter().any(|s| s == c))
                .collect();
            payload.truncate(nul + 1);
            payload.extend_from_slice(format!("{}\n", kept.join(" ")).as_bytes());
        }
        out.extend_from_slice(format!("{:04x}", payload.len() + 4).as_bytes());
        out.extend_from_slice(&payload);
        rest = &rest[length..];
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::TRANSFER_ENCODING);
    Response::from_parts(parts, Body::from(out))
}

async fn forward(
    front: &FrontEnd,
    script: &Script,
    request: Request,
    path_and_query: &str,
) -> Result<Response, reqwest::Error> {
    let (parts, body) = request.into_parts();
    let url = format!("{}{path_and_query}", front.upstream);
    let body = match script.buffer_upload_bytes_per_tick {
        None => reqwest::Body::wrap_stream(body.into_data_stream()),
        Some(per_tick) => {
            // Read it all first, slowly; the upstream sees nothing until then.
            let mut whole = Vec::new();
            let mut stream = body.into_data_stream();
            let mut budget = 0;
            while let Some(chunk) = stream.next().await {
                let Ok(chunk) = chunk else { break };
                whole.extend_from_slice(&chunk);
                budget += chunk.len();
                while budget >= per_tick {
                    budget -= per_tick;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            reqwest::Body::from(whole)
        }
    };
    let mut headers = parts.headers.clone();
    if script.require_basic.is_some() {
        headers.remove(header::AUTHORIZATION);
    }
    if script.buffer_upload_bytes_per_tick.is_some() {
        headers.remove(header::TRANSFER_ENCODING);
    }
    let upstream =
        front.client.request(parts.method, url).headers(headers).body(body).send().await?;
    let mut response = Response::builder().status(upstream.status());
    for (name, value) in upstream.headers() {
        response = response.header(name, value);
    }
    let answer = upstream.bytes_stream().map_err(std::io::Error::other);
    let body = match script.download_bytes_per_tick {
        Some(per_tick)
            if path_and_query.ends_with("/git-upload-pack")
                || path_and_query.contains("/blobs/") =>
        {
            Body::from_stream(throttled(answer, per_tick))
        }
        _ => Body::from_stream(answer),
    };
    Ok(response.body(body).expect("a response from an upstream one"))
}

/// `answer` in pieces of `per_tick` bytes, one every 100 ms.
fn throttled(
    answer: impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static,
    per_tick: usize,
) -> impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> {
    let (sender, pieces) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        let mut answer = std::pin::pin!(answer);
        let mut left_this_tick = per_tick;
        while let Some(chunk) = answer.next().await {
            let Ok(mut chunk) = chunk else { return };
            while !chunk.is_empty() {
                if left_this_tick == 0 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    left_this_tick = per_tick;
                }
                let piece = chunk.split_to(left_this_tick.min(chunk.len()));
                left_this_tick -= piece.len();
                if sender.send(Ok(piece)).await.is_err() {
                    return; // the client went away
                }
            }
        }
    });
    futures_util::stream::unfold(pieces, |mut pieces| async move {
        pieces.recv().await.map(|piece| (piece, pieces))
    })
}
