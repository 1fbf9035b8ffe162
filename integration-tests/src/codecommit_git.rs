//! A stand-in for CodeCommit's git-over-HTTPS endpoint: `git http-backend` behind a
//! server that, like CodeCommit, serves `/v1/repos/<name>`, demands the SigV4-derived
//! password (401 without credentials, 403 with wrong ones; a temporary key's session token
//! in the username, `AKID%TOKEN`) and knows only repositories created through the
//! CodeCommit API (here: moto). The expected password comes from botocore's signer, as
//! git-remote-codecommit uses it (`integration-tests/codecommit/verify.py`), never from
//! the signer under test.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use aws_sdk_codecommit::operation::get_repository::GetRepositoryError;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use time::{Duration, OffsetDateTime};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

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
    /// The only credentials accepted: long-term keys, and temporary ones whose session
    /// token must come with them.
    pub keys: Vec<Key>,
    /// The Python that runs the independent verifier (with botocore).
    pub python: PathBuf,
}

/// An access key the stand-in accepts.
#[derive(Debug, Clone)]
pub struct Key {
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Set for temporary credentials: the username must be `AKID%TOKEN`.
    pub session_token: Option<String>,
}

#[derive(Debug)]
struct Server {
    settings: Settings,
    codecommit: aws_sdk_codecommit::Client,
    /// Serialises `git init` of a repository seen for the first time.
    init: tokio::sync::Mutex<()>,
    verifier: Arc<tokio::sync::Mutex<Verifier>>,
}

/// botocore's signer in a Python child, one request a line.
#[derive(Debug)]
struct Verifier {
    _child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
}

impl Verifier {
    fn start(python: &std::path::Path) -> std::io::Result<Self> {
        // Built in: a binary built in one clone may serve another.
        let script = include_str!("../codecommit/verify.py");
        let mut child = Command::new(python)
            .args(["-c", script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let input = child.stdin.take().expect("piped");
        let output = BufReader::new(child.stdout.take().expect("piped"));
        Ok(Self { _child: child, input, output })
    }

    /// The password botocore's signer makes for this request at `timestamp`.
    async fn expected(
        &mut self,
        secret: &str,
        region: &str,
        host: &str,
        path: &str,
        timestamp: &str,
    ) -> std::io::Result<String> {
        let asked = serde_json::json!({
            "secret": secret, "region": region, "host": host, "path": path, "timestamp": timestamp,
        });
        self.input.write_all(format!("{asked}\n").as_bytes()).await?;
        self.input.flush().await?;
        let mut answer = String::new();
        if self.output.read_line(&mut answer).await? == 0 {
            return Err(std::io::Error::other("the verifier stopped"));
        }
        Ok(answer.trim_end().to_owned())
    }
}

/// Serves until the process ends.
pub async fn serve(
    listener: tokio::net::TcpListener,
    settings: Settings,
    codecommit: aws_sdk_codecommit::Client,
) -> std::io::Result<()> {
    let verifier = Arc::new(tokio::sync::Mutex::new(Verifier::start(&settings.python)?));
    let server =
        Arc::new(Server { settings, codecommit, init: tokio::sync::Mutex::new(()), verifier });
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
    let signed = format!("/v1/repos/{repository}");
    let user = match server.authenticate(request.headers(), &host, &signed).await {
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

impl Server {
    /// Checks the Basic credentials the way CodeCommit does; returns the access key id.
    #[allow(clippy::result_large_err)]
    async fn authenticate(
        &self,
        headers: &HeaderMap,
        host: &str,
        path: &str,
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
            tracing::warn!(path, why, "refused git credentials");
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
        let (access_key_id, token) = match username.split_once('%') {
            Some((akid, token)) => (akid, Some(token)),
            None => (username, None),
        };
        let key = self
            .settings
            .keys
            .iter()
            .find(|k| k.access_key_id == access_key_id)
            .ok_or_else(|| forbidden("unknown access key"))?;
        if key.session_token.as_deref() != token {
            return Err(forbidden(match (&key.session_token, token) {
                (Some(_), None) => "a temporary key without its session token",
                (None, Some(_)) => "a session token with a long-term key",
                _ => "wrong session token",
            }));
        }
        let (timestamp, _) =
            given.split_once('Z').ok_or_else(|| forbidden("malformed password"))?;
        let signed_at = time::PrimitiveDateTime::parse(
            timestamp,
            time::macros::format_description!("[year][month][day]T[hour][minute][second]"),
        )
        .map_err(|_| forbidden("malformed password"))?
        .assume_utc();
        if (OffsetDateTime::now_utc() - signed_at).abs() > MAX_SKEW {
            return Err(forbidden("password signed too long ago or in the future"));
        }
        // In a task of its own: a request dropped halfway (its client gone) must not leave
        // its answer in the pipe for the next one to read.
        let verifier = Arc::clone(&self.verifier);
        let asked = [&key.secret_access_key, &self.settings.region, host, path, timestamp]
            .map(|s| s.to_owned());
        let expected = tokio::spawn(async move {
            let [secret, region, host, path, timestamp] = asked;
            verifier.lock().await.expected(&secret, &region, &host, &path, &timestamp).await
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|answer| answer)
        .map_err(|e| {
            text(StatusCode::INTERNAL_SERVER_ERROR, format!("the verifier failed: {e}"))
        })?;
        if expected.as_bytes() != given.as_bytes() {
            return Err(forbidden("signature mismatch"));
        }
        Ok(access_key_id.to_owned())
    }

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
