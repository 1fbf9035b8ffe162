//! A stand-in for CodeCommit's git-over-HTTPS endpoint: `git http-backend` behind a
//! server that, like CodeCommit, serves `/v1/repos/<name>`, demands the SigV4-derived
//! password (401 without credentials, 403 with wrong ones) and knows only repositories
//! created through the CodeCommit API (here: moto).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use aws_sdk_codecommit::operation::get_repository::GetRepositoryError;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use pillar_auth::codecommit::{GitRequest, password, password_time};
use time::{Duration, OffsetDateTime};
use tokio::process::Command;

use crate::http_backend::http_backend;

/// CodeCommit refuses passwords signed further than this from its clock.
const MAX_SKEW: Duration = Duration::minutes(15);

/// CodeCommit makes the first branch pushed to an empty repository its default branch
/// (HEAD); git leaves HEAD at `main` whatever was pushed.
const FIRST_BRANCH_IS_DEFAULT: &str = r#"#!/bin/sh
first=
while read -r old new ref; do
  if [ -z "$first" ] && [ "$new" != 0000000000000000000000000000000000000000 ]; then
    case $ref in refs/heads/*) first=$ref ;; esac
  fi
done
if [ -n "$first" ] && ! git rev-parse -q --verify HEAD >/dev/null; then
  git symbolic-ref HEAD "$first"
fi
exit 0
"#;

/// What the stand-in needs to know to judge a request.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where the bare repositories live, one `<name>.git` per CodeCommit repository.
    pub repos_dir: PathBuf,
    /// The region passwords must be signed for.
    pub region: String,
    /// The only credentials accepted.
    pub access_key_id: String,
    pub secret_access_key: String,
}

#[derive(Debug)]
struct Server {
    settings: Settings,
    codecommit: aws_sdk_codecommit::Client,
    /// Serialises `git init` of a repository seen for the first time.
    init: tokio::sync::Mutex<()>,
}

/// Serves until the process ends.
pub async fn serve(
    listener: tokio::net::TcpListener,
    settings: Settings,
    codecommit: aws_sdk_codecommit::Client,
) -> std::io::Result<()> {
    let server = Arc::new(Server { settings, codecommit, init: tokio::sync::Mutex::new(()) });
    let app = axum::Router::new().fallback(handle).with_state(server);
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await
}

fn text(status: StatusCode, message: impl Into<String>) -> Response {
    (status, message.into() + "\n").into_response()
}

async fn handle(State(server): State<Arc<Server>>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let Some((repository, rest)) = split_path(&path) else {
        return text(StatusCode::NOT_FOUND, "not a CodeCommit path: expected /v1/repos/<name>");
    };
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let signed = GitRequest {
        host,
        path: format!("/v1/repos/{repository}"),
        region: server.settings.region.clone(),
    };
    let user = match authenticate(&server.settings, request.headers(), &signed) {
        Ok(user) => user,
        Err(refusal) => return refusal,
    };
    match server.ensure_repository(repository).await {
        Ok(()) => {}
        Err(refusal) => return refusal,
    }
    let path_info = format!("/{repository}.git/{rest}");
    match http_backend(&server.settings.repos_dir, &path_info, Some(&user), request).await {
        Ok(response) => response,
        Err(error) => {
            tracing::error!(%error, repository, "git http-backend failed");
            text(StatusCode::INTERNAL_SERVER_ERROR, format!("git http-backend failed: {error}"))
        }
    }
}

/// `/v1/repos/<name>/<git path>` into the name and the git path.
fn split_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/v1/repos/")?;
    let (name, git_path) = rest.split_once('/').unwrap_or((rest, ""));
    let valid = !name.is_empty()
        && name.len() <= 100
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && !name.starts_with('.');
    valid.then_some((name, git_path))
}

/// Checks the Basic credentials the way CodeCommit does; returns the access key id.
#[allow(clippy::result_large_err)]
fn authenticate(
    settings: &Settings,
    headers: &HeaderMap,
    signed: &GitRequest,
) -> Result<String, Response> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        let mut challenge = text(StatusCode::UNAUTHORIZED, "credentials required");
        challenge.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"CodeCommit\""),
        );
        return Err(challenge);
    };
    let forbidden = |why: &str| {
        tracing::warn!(path = signed.path, why, "refused git credentials");
        text(StatusCode::FORBIDDEN, why)
    };
    let decoded = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| forbidden("malformed Basic authorization"))?;
    let (username, given) =
        decoded.split_once(':').ok_or_else(|| forbidden("malformed Basic authorization"))?;
    let access_key_id = username.split_once('%').map_or(username, |(akid, _token)| akid);
    if access_key_id != settings.access_key_id {
        return Err(forbidden("unknown access key"));
    }
    let signed_at = password_time(given).ok_or_else(|| forbidden("malformed password"))?;
    if (OffsetDateTime::now_utc() - signed_at).abs() > MAX_SKEW {
        return Err(forbidden("password signed too long ago or in the future"));
    }
    let expected = password(&settings.secret_access_key, signed, signed_at);
    if expected.as_bytes() != given.as_bytes() {
        return Err(forbidden("signature mismatch"));
    }
    Ok(access_key_id.to_owned())
}

impl Server {
    /// Refuses repositories the CodeCommit API does not know; creates the bare repository
    /// behind one it does on first use.
    async fn ensure_repository(&self, name: &str) -> Result<(), Response> {
        match self.codecommit.get_repository().repository_name(name).send().await {
            Ok(_) => {}
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(GetRepositoryError::is_repository_does_not_exist_exception) =>
            {
                return Err(text(
                    StatusCode::NOT_FOUND,
                    format!("repository '{name}' does not exist"),
                ));
            }
            Err(error) => {
                let message = pillar_auth::aws_error_message(&error);
                return Err(text(StatusCode::BAD_GATEWAY, format!("CodeCommit API: {message}")));
            }
        }
        let _guard = self.init.lock().await;
        let dir = self.settings.repos_dir.join(format!("{name}.git"));
        if dir.join("HEAD").exists() {
            return Ok(());
        }
        let status = Command::new("git")
            .args(["init", "--quiet", "--bare", "--initial-branch=main"])
            .arg(&dir)
            .status()
            .await;
        let initialised = match status {
            Ok(s) if s.success() => {
                std::fs::write(dir.join("hooks/post-receive"), FIRST_BRANCH_IS_DEFAULT).and_then(
                    |()| {
                        std::fs::set_permissions(
                            dir.join("hooks/post-receive"),
                            std::os::unix::fs::PermissionsExt::from_mode(0o755),
                        )
                    },
                )
            }
            other => Err(std::io::Error::other(format!("{other:?}"))),
        };
        initialised.map_err(|error| {
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("git init {} failed: {error}", dir.display()),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::split_path;

    #[test]
    fn paths_are_split_into_repository_and_git_path() {
        assert_eq!(split_path("/v1/repos/net/info/refs"), Some(("net", "info/refs")));
        assert_eq!(split_path("/v1/repos/net"), Some(("net", "")));
        assert_eq!(split_path("/v1/repos/../etc/info/refs"), None);
        assert_eq!(split_path("/v2/repos/net/info/refs"), None);
    }
}
