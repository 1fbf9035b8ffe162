//! CodeCommit git-over-HTTPS credentials: the SigV4-derived password that
//! `git-remote-codecommit` and `aws codecommit credential-helper` compute.

use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use hmac::{Hmac, KeyInit, Mac};
use secrecy::SecretString;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::macros::format_description;

/// Variable naming a CodeCommit git endpoint to use instead of the AWS one, e.g. a local
/// stand-in: `http://127.0.0.1:9418`. Credentials for its host are signed with the region
/// of the AWS configuration.
pub const ENDPOINT_OVERRIDE_VAR: &str = "PILLAR_CODECOMMIT_GIT_ENDPOINT";

/// What went wrong while producing git credentials for CodeCommit.
#[derive(Debug, thiserror::Error)]
pub enum GitCredentialError {
    #[error(
        "`{host}` is not a CodeCommit git endpoint (expected git-codecommit.<region>.amazonaws.com[.cn] or the host of {ENDPOINT_OVERRIDE_VAR})"
    )]
    UnknownHost { host: String },
    #[error(
        "git did not say which repository it wants (no `path=`): run `git config --global credential.useHttpPath true`, the password signs the path"
    )]
    MissingPath,
    #[error("`{path}` is not a CodeCommit repository path: expected v1/repos/<repository>")]
    BadPath { path: String },
    #[error("{ENDPOINT_OVERRIDE_VAR}=`{value}` is not a URL with a host: {reason}")]
    BadOverride { value: String, reason: String },
    #[error(
        "no AWS region is configured for the CodeCommit endpoint `{host}`: set AWS_REGION or a region in the AWS profile"
    )]
    NoRegion { host: String },
    #[error(
        "no AWS credentials for CodeCommit: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE, or run where a role is attached"
    )]
    Credentials {
        #[source]
        source: aws_credential_types::provider::error::CredentialsError,
    },
}

/// A git username and password for one CodeCommit repository, valid for about 15 minutes.
pub struct GitCredentials {
    /// `AKID`, or `AKID%SESSION_TOKEN` for temporary credentials (not URL-encoded).
    pub username: String,
    pub password: SecretString,
}

/// Shows the access key id only: the username carries the session token, as secret as the
/// password for as long as it lasts.
impl std::fmt::Debug for GitCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (access_key_id, token) = match self.username.split_once('%') {
            Some((access_key_id, _)) => (access_key_id, Some("[REDACTED]")),
            None => (self.username.as_str(), None),
        };
        f.debug_struct("GitCredentials")
            .field("access_key_id", &access_key_id)
            .field("session_token", &token)
            .field("password", &self.password)
            .finish()
    }
}

/// The parts of the request that the password signs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitRequest {
    /// The host git connects to, with the port when it is not the default one.
    pub host: String,
    /// `/v1/repos/<repository>`.
    pub path: String,
    pub region: String,
}

impl GitRequest {
    /// The repository name at the end of the path.
    pub fn repository(&self) -> &str {
        self.path.trim_start_matches("/v1/repos/")
    }
}

/// Decides which region signs requests to `host` and normalises git's `path=`.
/// `default_region` is the AWS configuration's region, used for the endpoint override.
pub fn git_request(
    host: &str,
    path: Option<&str>,
    default_region: Option<&str>,
    endpoint_override: Option<&str>,
) -> Result<GitRequest, GitCredentialError> {
    let is_override = || -> Result<bool, GitCredentialError> {
        Ok(endpoint_override
            .map(override_host)
            .transpose()?
            .is_some_and(|h| h.eq_ignore_ascii_case(host)))
    };
    let region = match region_of_aws_host(host) {
        Some(region) => region.to_owned(),
        None if is_override()? => default_region
            .ok_or_else(|| GitCredentialError::NoRegion { host: host.to_owned() })?
            .to_owned(),
        None => return Err(GitCredentialError::UnknownHost { host: host.to_owned() }),
    };
    let path = path.ok_or(GitCredentialError::MissingPath)?;
    let path = format!("/{}", path.trim_matches('/'));
    let repository = path.strip_prefix("/v1/repos/").unwrap_or_default();
    if repository.is_empty() || repository.contains('/') {
        return Err(GitCredentialError::BadPath { path });
    }
    Ok(GitRequest { host: host.to_owned(), path, region })
}

/// The authority (`host[:port]`) of the endpoint override URL.
pub fn override_host(value: &str) -> Result<String, GitCredentialError> {
    let bad = |reason: String| GitCredentialError::BadOverride { value: value.to_owned(), reason };
    let url = url::Url::parse(value).map_err(|e| bad(e.to_string()))?;
    let host = url.host_str().ok_or_else(|| bad("it has no host".into()))?;
    Ok(match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    })
}

/// `git-codecommit.<region>.amazonaws.com`, `git-codecommit-fips.<region>.amazonaws.com`
/// and the China partition's `.amazonaws.com.cn`.
fn region_of_aws_host(host: &str) -> Option<&str> {
    let rest = host
        .strip_prefix("git-codecommit.")
        .or_else(|| host.strip_prefix("git-codecommit-fips."))?;
    let region =
        rest.strip_suffix(".amazonaws.com").or_else(|| rest.strip_suffix(".amazonaws.com.cn"))?;
    let valid = !region.is_empty()
        && region.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    valid.then_some(region)
}

/// Credentials for `request`, signed with whatever the AWS credential chain provides.
pub async fn git_credentials(
    provider: &SharedCredentialsProvider,
    request: &GitRequest,
    now: OffsetDateTime,
) -> Result<GitCredentials, GitCredentialError> {
    let credentials = provider
        .provide_credentials()
        .await
        .map_err(|source| GitCredentialError::Credentials { source })?;
    Ok(sign_for(&credentials, request, now))
}

/// The username and password for `request` at `now`.
pub fn sign_for(
    credentials: &Credentials,
    request: &GitRequest,
    now: OffsetDateTime,
) -> GitCredentials {
    let username = match credentials.session_token() {
        Some(token) => format!("{}%{token}", credentials.access_key_id()),
        None => credentials.access_key_id().to_owned(),
    };
    let password = password(credentials.secret_access_key(), request, now);
    GitCredentials { username, password: SecretString::from(password) }
}

/// `<ts>Z<hex signature>`, as CodeCommit expects it.
pub fn password(secret_access_key: &str, request: &GitRequest, now: OffsetDateTime) -> String {
    let now = now.to_offset(time::UtcOffset::UTC);
    let timestamp = now
        .format(format_description!("[year][month][day]T[hour][minute][second]"))
        .expect("a UTC date always formats");
    let date = &timestamp[..8];
    let canonical_request = format!("GIT\n{}\n\nhost:{}\n\nhost\n", request.path, request.host);
    let scope = format!("{date}/{}/codecommit/aws4_request", request.region);
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{timestamp}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    );
    let key = [date, &request.region, "codecommit", "aws4_request"]
        .iter()
        .fold(format!("AWS4{secret_access_key}").into_bytes(), |key, part| {
            hmac(&key, part.as_bytes())
        });
    format!("{timestamp}Z{}", hex::encode(hmac(&key, string_to_sign.as_bytes())))
}

/// When a password was made: the timestamp in front of its `Z`.
pub fn password_time(password: &str) -> Option<OffsetDateTime> {
    let (timestamp, _) = password.split_once('Z')?;
    time::PrimitiveDateTime::parse(
        timestamp,
        format_description!("[year][month][day]T[hour][minute][second]"),
    )
    .ok()
    .map(time::PrimitiveDateTime::assume_utc)
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use time::macros::datetime;

    fn request(host: &str, repo: &str, region: &str) -> GitRequest {
        GitRequest { host: host.into(), path: format!("/v1/repos/{repo}"), region: region.into() }
    }

    /// From git-remote-codecommit's own tests (test/main_test.py, `EXPECTED_URL`: access
    /// `access`, secret `secret`, 2017-12-24 11:53:20, botocore's signer).
    #[test]
    fn design_vector_test_repo_us_west_2() {
        let req = request("git-codecommit.us-west-2.amazonaws.com", "test_repo", "us-west-2");
        assert_eq!(
            password("secret", &req, datetime!(2017-12-24 11:53:20 UTC)),
            "20171224T115320Zb6df2d758a8023b2f000a546417007b65494f3ce8ad0300fd45fcfa173f1959a"
        );
    }

    /// From the tests of a Rust port of git-remote-codecommit (`generate_url` of
    /// `codecommit://my-repo` at the Unix epoch, key `ANOTREAL`), an implementation
    /// independent of this one.
    #[test]
    fn design_vector_my_repo_us_east_1() {
        let req = request("git-codecommit.us-east-1.amazonaws.com", "my-repo", "us-east-1");
        assert_eq!(
            password("notrealrnrELgWzOk3IfjzDKtFBhDby", &req, datetime!(1970-01-01 00:00:00 UTC)),
            "19700101T000000Zf840ae3ff903ddb92c450d0e3567fe97ef4aa98bd6636905df48c3beee97d21d"
        );
    }

    #[test]
    fn session_token_goes_in_the_username_and_is_not_signed() {
        let req = request("git-codecommit.us-west-2.amazonaws.com", "test_repo", "us-west-2");
        let at = datetime!(2017-12-24 11:53:20 UTC);
        let with_token = Credentials::new("access", "secret", Some("tok/en+=".into()), None, "t");
        let without = Credentials::new("access", "secret", None, None, "t");
        let a = sign_for(&with_token, &req, at);
        let b = sign_for(&without, &req, at);
        assert_eq!(a.username, "access%tok/en+=");
        assert_eq!(b.username, "access");
        assert_eq!(a.password.expose_secret(), b.password.expose_secret());
        assert!(!format!("{a:?}").contains(a.password.expose_secret()), "Debug must redact");
    }

    #[test]
    fn debug_shows_the_access_key_but_not_the_session_token_or_password() {
        let req = request("git-codecommit.us-west-2.amazonaws.com", "test_repo", "us-west-2");
        let at = datetime!(2017-12-24 11:53:20 UTC);
        let token = "FwoGZXIvYXdzEJr//////////session-token";
        let signed = sign_for(
            &Credentials::new("AKIDEXAMPLE", "secret", Some(token.into()), None, "t"),
            &req,
            at,
        );
        let shown = format!("{signed:?}");
        assert!(shown.contains("AKIDEXAMPLE"), "{shown}");
        assert!(!shown.contains("session-token"), "Debug must hide the session token: {shown}");
        assert!(!shown.contains(signed.password.expose_secret()), "{shown}");
        let plain =
            format!("{:?}", sign_for(&Credentials::new("AKID2", "s", None, None, "t"), &req, at));
        assert!(plain.contains("AKID2") && !plain.contains('%'), "{plain}");
    }

    #[test]
    fn region_comes_from_the_aws_host() {
        for (host, region) in [
            ("git-codecommit.eu-west-1.amazonaws.com", "eu-west-1"),
            ("git-codecommit.cn-north-1.amazonaws.com.cn", "cn-north-1"),
            ("git-codecommit-fips.us-gov-west-1.amazonaws.com", "us-gov-west-1"),
        ] {
            let req = git_request(host, Some("v1/repos/r"), Some("ignored-1"), None).expect(host);
            assert_eq!(req.region, region);
            assert_eq!(req.path, "/v1/repos/r");
            assert_eq!(req.repository(), "r");
        }
    }

    #[test]
    fn override_host_signs_with_the_configured_region() {
        let req = git_request(
            "127.0.0.1:4599",
            Some("/v1/repos/net"),
            Some("eu-central-1"),
            Some("http://127.0.0.1:4599"),
        )
        .expect("override host");
        assert_eq!(req, request("127.0.0.1:4599", "net", "eu-central-1"));
        assert!(matches!(
            git_request(
                "127.0.0.1:4599",
                Some("v1/repos/net"),
                None,
                Some("http://127.0.0.1:4599")
            ),
            Err(GitCredentialError::NoRegion { .. })
        ));
    }

    #[test]
    fn other_hosts_and_paths_are_refused() {
        for host in
            ["github.com", "git-codecommit.amazonaws.com", "git-codecommit.EU.amazonaws.com"]
        {
            assert!(
                matches!(
                    git_request(host, Some("v1/repos/r"), Some("eu-west-1"), None),
                    Err(GitCredentialError::UnknownHost { .. })
                ),
                "{host}"
            );
        }
        let aws = "git-codecommit.eu-west-1.amazonaws.com";
        assert!(matches!(git_request(aws, None, None, None), Err(GitCredentialError::MissingPath)));
        for path in ["v1/repos/", "v2/repos/r", "v1/repos/a/b", "scm/r.git"] {
            assert!(
                matches!(
                    git_request(aws, Some(path), None, None),
                    Err(GitCredentialError::BadPath { .. })
                ),
                "{path}"
            );
        }
    }

    #[test]
    fn password_time_reads_back_the_timestamp() {
        let req = request("h", "r", "us-east-1");
        let at = datetime!(2026-11-26 20:41:39 UTC);
        assert_eq!(password_time(&password("s", &req, at)), Some(at));
        assert_eq!(password_time("garbage"), None);
    }
}
