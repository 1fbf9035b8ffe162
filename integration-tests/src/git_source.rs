//! A plain git smart-HTTP server playing the source (Bitbucket): every repository under
//! a root, anonymously or behind one Basic username and password.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use futures_util::TryStreamExt;

use crate::http_backend::http_backend;

/// How the server behaves.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Serve only to this Basic username and password.
    pub basic: Option<(String, String)>,
    /// Accept pushes (a benchmark target); sources refuse them.
    pub push: bool,
    /// Response body bytes served so far, for measuring what a client read.
    pub bytes_served: Arc<AtomicU64>,
    /// Each request served, as `METHOD path?query`, for seeing how a client asked.
    pub requests: Arc<Mutex<Vec<String>>>,
}

#[derive(Debug)]
struct Source {
    root: PathBuf,
    /// The `Authorization` header value required, if any.
    required: Option<String>,
    options: Options,
}

/// Serves the repositories under `root` as `http://ADDR/<path>.git` until the runtime
/// ends, as `options` say.
pub async fn serve(
    listener: tokio::net::TcpListener,
    root: PathBuf,
    options: Options,
) -> std::io::Result<()> {
    let required = options.basic.as_ref().map(|(user, password)| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
    });
    let app = axum::Router::new().fallback(handle).with_state(Arc::new(Source {
        root,
        required,
        options,
    }));
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await
}

async fn handle(State(source): State<Arc<Source>>, request: Request) -> Response {
    if let Some(required) = &source.required {
        let given = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        if given != Some(required.as_str()) {
            let mut challenge =
                (StatusCode::UNAUTHORIZED, "credentials required\n").into_response();
            challenge.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"source\""),
            );
            return challenge;
        }
    }
    let path_info = request.uri().path().to_owned();
    let asked = format!("{} {}", request.method(), request.uri());
    source.options.requests.lock().expect("request log").push(asked);
    let user = source.options.push.then_some("pusher");
    match http_backend(&source.root, &path_info, user, request).await {
        Ok(response) => {
            let served = Arc::clone(&source.options.bytes_served);
            response.map(|body| {
                Body::from_stream(body.into_data_stream().inspect_ok(move |chunk| {
                    served.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                }))
            })
        }
        Err(error) => {
            (StatusCode::INTERNAL_SERVER_ERROR, format!("git http-backend failed: {error}\n"))
                .into_response()
        }
    }
}
