//! The OCI referrers API in front of a registry that lacks it (Debian's `docker-registry`
//! 2.8): answers `GET /v2/<name>/referrers/<digest>` with the index a test sets, and passes
//! every other request through to the registry, streaming both ways. Listings may come in
//! pages of a set size, each with a `Link: <…>; rel="next"` to the next (OCI distribution
//! spec, "Listing Referrers": registries may paginate as for tags).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::TryStreamExt;

#[derive(Debug)]
struct Proxy {
    upstream: String,
    client: reqwest::Client,
    /// subject digest -> its referrers' descriptors
    referrers: Mutex<HashMap<String, Vec<serde_json::Value>>>,
    /// Descriptors per page (all in one when unset).
    page: Mutex<Option<usize>>,
}

/// A registry with the referrers API, on its own runtime.
#[derive(Debug)]
pub struct ReferrersRegistry {
    pub address: SocketAddr,
    proxy: Arc<Proxy>,
    _runtime: tokio::runtime::Runtime,
}

impl ReferrersRegistry {
    /// In front of the registry at `upstream` (`host:port`, plain HTTP).
    pub fn start(upstream: &str) -> Self {
        let (runtime, listener) = crate::background_listener();
        let address = listener.local_addr().expect("address");
        let proxy = Arc::new(Proxy {
            upstream: format!("http://{upstream}"),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            referrers: Mutex::new(HashMap::new()),
            page: Mutex::new(None),
        });
        let app = axum::Router::new().fallback(handle).with_state(Arc::clone(&proxy));
        runtime.spawn(async move { axum::serve(listener, app).await });
        Self { address, proxy, _runtime: runtime }
    }

    /// From now on, `subject`'s referrers are the manifests `(media type, digest, size,
    /// artifact type)`.
    pub fn set_referrers(&self, subject: &str, manifests: &[(&str, &str, u64, &str)]) {
        let entries: Vec<serde_json::Value> = manifests
            .iter()
            .map(|(media_type, digest, size, artifact_type)| {
                serde_json::json!({
                    "mediaType": media_type, "digest": digest, "size": size,
                    "artifactType": artifact_type,
                })
            })
            .collect();
        self.proxy.referrers.lock().expect("referrers").insert(subject.to_owned(), entries);
    }

    /// From now on, listings come `size` descriptors a page.
    pub fn paginate(&self, size: usize) {
        *self.proxy.page.lock().expect("page") = Some(size.max(1));
    }
}

async fn handle(State(proxy): State<Arc<Proxy>>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    if let Some((_, digest)) = path.strip_prefix("/v2/").and_then(|p| p.rsplit_once("/referrers/"))
    {
        let all =
            proxy.referrers.lock().expect("referrers").get(digest).cloned().unwrap_or_default();
        let size = proxy.page.lock().expect("page").unwrap_or(all.len().max(1));
        let page: usize = request
            .uri()
            .query()
            .and_then(|q| q.strip_prefix("page="))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let shown: Vec<_> = all.iter().skip(page * size).take(size).cloned().collect();
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": shown,
        });
        let mut response = index.to_string().into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/vnd.oci.image.index.v1+json"),
        );
        if (page + 1) * size < all.len() {
            let next = format!("<{path}?page={}>; rel=\"next\"", page + 1);
            response.headers_mut().insert(header::LINK, next.parse().expect("a header value"));
        }
        return response;
    }
    match forward(&proxy, request).await {
        Ok(response) => response,
        Err(error) => (StatusCode::BAD_GATEWAY, format!("{error}\n")).into_response(),
    }
}

async fn forward(proxy: &Proxy, request: Request) -> Result<Response, reqwest::Error> {
    let (parts, body) = request.into_parts();
    let query = parts.uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    let url = format!("{}{}{query}", proxy.upstream, parts.uri.path());
    let mut headers = parts.headers.clone();
    headers.remove(header::HOST);
    let upstream = proxy
        .client
        .request(parts.method, url)
        .headers(headers)
        .body(reqwest::Body::wrap_stream(body.into_data_stream()))
        .send()
        .await?;
    let mut response = Response::builder().status(upstream.status());
    for (name, value) in upstream.headers() {
        response = response.header(name, value);
    }
    let body = Body::from_stream(upstream.bytes_stream().map_err(std::io::Error::other));
    Ok(response.body(body).expect("a response from an upstream one"))
}
