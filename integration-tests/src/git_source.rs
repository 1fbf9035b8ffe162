//! A plain git smart-HTTP server playing the source (Bitbucket): every repository under
//! a root, anonymously or behind one Basic username and password.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;

use crate::http_backend::http_backend;

#[derive(Debug)]
struct Source {
    root: PathBuf,
    /// The `Authorization` header value required, if any.
    required: Option<String>,
    /// Accept pushes (a benchmark target); sources refuse them.
    push: bool,
}

/// Serves the repositories under `root` as `http://ADDR/<path>.git` until the runtime
/// ends; with `basic = Some((user, password))` only to that user; pushes only if `push`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    root: PathBuf,
    basic: Option<(String, String)>,
    push: bool,
) -> std::io::Result<()> {
    let required = basic.map(|(user, password)| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
    });
    let app =
        axum::Router::new().fallback(handle).with_state(Arc::new(Source { root, required, push }));
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
    let user = source.push.then_some("pusher");
    match http_backend(&source.root, &path_info, user, request).await {
        Ok(response) => response,
        Err(error) => {
            (StatusCode::INTERNAL_SERVER_ERROR, format!("git http-backend failed: {error}\n"))
                .into_response()
        }
    }
}
