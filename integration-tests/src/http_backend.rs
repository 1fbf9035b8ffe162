//! `git http-backend` as a CGI program behind an axum handler, streaming both ways.

use std::path::Path;
use std::process::Stdio;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::response::Response;
use futures_util::TryStreamExt;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio_util::io::{ReaderStream, StreamReader};

/// Runs `git http-backend` as a CGI program, streaming the request body in and the
/// response out.
pub(crate) async fn http_backend(
    project_root: &Path,
    path_info: &str,
    user: Option<&str>,
    request: Request,
) -> std::io::Result<Response> {
    let (parts, body) = request.into_parts();
    let header = |name: header::HeaderName| {
        parts.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
    };
    let mut command = Command::new("git");
    command
        .arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", project_root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("PATH_INFO", path_info)
        .env("REQUEST_METHOD", parts.method.as_str())
        .env("QUERY_STRING", parts.uri.query().unwrap_or_default())
        .env("CONTENT_TYPE", header(header::CONTENT_TYPE))
        .env("HTTP_CONTENT_ENCODING", header(header::CONTENT_ENCODING))
        .env("GIT_PROTOCOL", header(header::HeaderName::from_static("git-protocol")))
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(user) = user {
        // Set, REMOTE_USER also enables receive-pack (push).
        command.env("REMOTE_USER", user);
    }
    if let Some(length) = parts.headers.get(header::CONTENT_LENGTH) {
        command.env("CONTENT_LENGTH", length.to_str().unwrap_or_default());
    }
    let mut child = command.spawn()?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let stdout = child.stdout.take().expect("stdout is piped");
    let feed = tokio::spawn(async move {
        let mut body = StreamReader::new(body.into_data_stream().map_err(std::io::Error::other));
        let copied = tokio::io::copy(&mut body, &mut stdin).await;
        drop(stdin);
        copied
    });

    let mut reader = BufReader::new(stdout);
    let mut response = Response::builder();
    let mut status = StatusCode::OK;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await? == 0 {
            break;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next().and_then(|c| c.parse().ok());
            status = code.and_then(|c| StatusCode::from_u16(c).ok()).unwrap_or(status);
        } else {
            response = response.header(name, value);
        }
    }
    tokio::spawn(async move {
        if let Ok(Err(error)) = feed.await {
            tracing::debug!(%error, "request body not fully read by git http-backend");
        }
        let _ = child.wait().await;
    });
    response
        .status(status)
        .body(Body::from_stream(ReaderStream::new(reader)))
        .map_err(std::io::Error::other)
}
