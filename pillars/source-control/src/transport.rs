//! Talking to git servers through libgit2: where a remote is, how it authenticates, and
//! the callbacks that keep a bad password from looping forever.

use std::cell::Cell;
use std::sync::Once;

use git2::{Cred, CredentialType, RemoteCallbacks};
use pillar_auth::codecommit::{GitRequest, sign_for};
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

impl Endpoint {
    pub fn anonymous(url: impl Into<String>) -> Self {
        Self { url: url.into(), auth: Auth::None }
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
                Auth::CodeCommit { credentials, request } => {
                    let signed = sign_for(credentials, request, time::OffsetDateTime::now_utc());
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
