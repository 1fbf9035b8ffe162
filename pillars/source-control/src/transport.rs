//! Where a git repository is and how it authenticates: over HTTP (our smart HTTP client,
//! and libgit2 for fetching) or on a local path; and the libgit2 callbacks that keep a bad
//! password from looping forever.

use std::cell::Cell;
use std::path::PathBuf;
use std::sync::Once;

use git2::{Cred, CredentialType, RemoteCallbacks};
use pillar_auth::codecommit::{GitCredentials, GitRequest, sign_for};
use secrecy::{ExposeSecret, SecretString};

/// A server asking again after we answered once means it refused the credentials.
const MAX_CREDENTIAL_ATTEMPTS: u32 = 1;

/// A git server and how to authenticate to it.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub url: String,
    pub auth: Auth,
}

#[derive(Debug, Clone)]
pub enum Auth {
    /// Anonymous, or a local path.
    None,
    /// HTTP Basic, e.g. a Bitbucket access token.
    Basic { username: String, password: SecretString },
    /// CodeCommit's SigV4-derived password, signed afresh for each connection.
    CodeCommit { credentials: aws_credential_types::Credentials, request: GitRequest },
}

/// How an endpoint is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// `http://` or `https://`: smart HTTP.
    Http,
    /// A repository on this machine: a `file://` URL or a path.
    Local(PathBuf),
}

impl Endpoint {
    pub fn anonymous(url: impl Into<String>) -> Self {
        Self { url: url.into(), auth: Auth::None }
    }

    /// Smart HTTP for http(s) URLs, a local repository for `file://` URLs and paths; other
    /// schemes (ssh, git) are not spoken.
    pub fn location(&self) -> Result<Location, String> {
        match url::Url::parse(&self.url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => Ok(Location::Http),
            Ok(url) if url.scheme() == "file" => {
                url.to_file_path().map(Location::Local).map_err(|()| "not a local path".to_owned())
            }
            // One letter: a Windows drive, not a scheme.
            Ok(url) if url.scheme().len() > 1 => Err(format!(
                "`{}://` is not supported: use an https URL (or a local path)",
                url.scheme()
            )),
            _ => Ok(Location::Local(PathBuf::from(&self.url))),
        }
    }

    /// CodeCommit's username and password, signed now; `None` for other endpoints.
    pub fn codecommit_credentials(&self) -> Option<GitCredentials> {
        match &self.auth {
            Auth::CodeCommit { credentials, request } => {
                Some(sign_for(credentials, request, time::OffsetDateTime::now_utc()))
            }
            _ => None,
        }
    }

    /// The URL without any user information, fit for messages and logs.
    pub fn display_url(&self) -> String {
        match url::Url::parse(&self.url) {
            Ok(mut url) if url.has_authority() => {
                let _ = url.set_username("");
                let _ = url.set_password(None);
                url.to_string()
            }
            _ => self.url.clone(),
        }
    }

    /// Callbacks answering credential requests once; `refused` is set when the server
    /// asks again (libgit2 would otherwise retry forever).
    pub fn callbacks<'a>(&'a self, refused: &'a Cell<bool>) -> RemoteCallbacks<'a> {
        let attempts = Cell::new(0_u32);
        let mut callbacks = RemoteCallbacks::new();
        callbacks.credentials(move |_url, _username, allowed| {
            attempts.set(attempts.get() + 1);
            if attempts.get() > MAX_CREDENTIAL_ATTEMPTS {
                refused.set(true);
                return Err(git2::Error::from_str("credentials refused"));
            }
            if !allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
                return Err(git2::Error::from_str(
                    "the server wants a credential type other than a password",
                ));
            }
            match &self.auth {
                Auth::None => {
                    refused.set(true);
                    Err(git2::Error::from_str(
                        "the server asks for credentials and none are configured",
                    ))
                }
                Auth::Basic { username, password } => {
                    Cred::userpass_plaintext(username, password.expose_secret())
                }
                Auth::CodeCommit { .. } => {
                    let signed = self.codecommit_credentials().expect("CodeCommit auth");
                    Cred::userpass_plaintext(&signed.username, signed.password.expose_secret())
                }
            }
        });
        callbacks
    }
}

/// Sets libgit2's process-wide options once: network timeouts, so a dead server fails a
/// mirror instead of hanging it until Lambda's deadline; and no SHA-1 re-check of every
/// object read (as git itself), since fetched packs are verified when indexed and a push
/// walks the whole history to find what the target lacks; and a smaller object cache
/// (measured on 200k commits: cold mirror peak 636 -> 564 MiB, same time).
pub fn configure_libgit2() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        git2::opts::strict_hash_verification(false);
        // SAFETY: these write process-wide libgit2 settings; Once makes this the only
        // writer, and it runs before this process opens any repository or connection.
        #[allow(unsafe_code)]
        unsafe {
            let _ = git2::opts::set_cache_max_size(32 * 1024 * 1024);
            let _ = git2::opts::set_server_connect_timeout_in_milliseconds(15_000);
            let _ = git2::opts::set_server_timeout_in_milliseconds(120_000);
        }
    });
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Source,
    Target,
}

impl Side {
    pub fn credentials_hint(self) -> &'static str {
        match self {
            Self::Source => {
                "check the source credentials secret (username:password) and its permissions"
            }
            Self::Target => {
                "check the AWS credentials and their codecommit:GitPull/GitPush permissions"
            }
        }
    }
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Source => "source",
            Self::Target => "target",
        })
    }
}

/// Why a server's refs are listed: to read (upload-pack, a pull permission is enough) or to
/// push (receive-pack, whose advertisement carries what a push may use).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Read,
    Push,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_of_urls_and_paths() {
        let at = |url: &str| Endpoint::anonymous(url).location();
        assert_eq!(at("https://bitbucket.example.com/scm/a/b.git"), Ok(Location::Http));
        assert_eq!(at("http://127.0.0.1:9/x"), Ok(Location::Http));
        assert_eq!(at("file:///srv/git/a.git"), Ok(Location::Local("/srv/git/a.git".into())));
        assert_eq!(at("/srv/git/a.git"), Ok(Location::Local("/srv/git/a.git".into())));
        assert_eq!(at("relative/a.git"), Ok(Location::Local("relative/a.git".into())));
        assert!(at("ssh://git@host/a.git").unwrap_err().contains("`ssh://` is not supported"));
    }
}
