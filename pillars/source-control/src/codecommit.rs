//! CodeCommit as a mirror target: its git URL and signed credentials, creating the
//! repository when it is missing, and following the source's default branch.

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sdk_codecommit::Client;
use aws_sdk_codecommit::operation::get_repository::GetRepositoryError;
use pillar_auth::aws_error_message;
use pillar_auth::codecommit::{ENDPOINT_OVERRIDE_VAR, GitRequest, override_host};

use crate::transport::{Auth, Endpoint};

#[derive(Debug, thiserror::Error)]
pub enum CodeCommitError {
    #[error(
        "no AWS region is configured: set AWS_REGION (CodeCommit repositories live in a region)"
    )]
    NoRegion,
    #[error("no AWS credentials: {0}; set AWS credentials or run where a role is attached")]
    Credentials(String),
    #[error("{ENDPOINT_OVERRIDE_VAR}: {0}")]
    BadOverride(String),
    #[error(
        "CodeCommit repository `{repository}` does not exist; create it, or allow the mirror to create repositories"
    )]
    Missing { repository: String },
    #[error("CodeCommit {operation} on `{repository}` failed: {message}")]
    Api { operation: &'static str, repository: String, message: String },
}

/// Where CodeCommit's git endpoint is for this account and region, and how to sign for it.
#[derive(Debug, Clone)]
pub struct CodeCommit {
    client: Client,
    credentials: SharedCredentialsProvider,
    region: String,
    endpoint_override: Option<String>,
}

impl CodeCommit {
    /// From the AWS configuration; honours `PILLAR_CODECOMMIT_GIT_ENDPOINT`.
    pub fn new(aws: &aws_config::SdkConfig) -> Result<Self, CodeCommitError> {
        let region = aws.region().ok_or(CodeCommitError::NoRegion)?.to_string();
        let credentials = aws.credentials_provider().ok_or_else(|| {
            CodeCommitError::Credentials("no credential provider configured".into())
        })?;
        let endpoint_override = std::env::var(ENDPOINT_OVERRIDE_VAR).ok().filter(|v| !v.is_empty());
        Ok(Self { client: Client::new(aws), credentials, region, endpoint_override })
    }

    /// The same endpoint and credentials with another API client (tests use stubs for
    /// what the local stand-in lacks, such as UpdateDefaultBranch).
    pub fn with_client(self, client: Client) -> Self {
        Self { client, ..self }
    }

    /// The git URL of `repository`.
    pub fn url(&self, repository: &str) -> String {
        match &self.endpoint_override {
            Some(base) => format!("{}/v1/repos/{repository}", base.trim_end_matches('/')),
            None => {
                let domain = if self.region.starts_with("cn-") {
                    "amazonaws.com.cn"
                } else {
                    "amazonaws.com"
                };
                format!("https://git-codecommit.{}.{domain}/v1/repos/{repository}", self.region)
            }
        }
    }

    /// An endpoint for `repository` carrying current AWS credentials.
    pub async fn endpoint(&self, repository: &str) -> Result<Endpoint, CodeCommitError> {
        let url = self.url(repository);
        let host = override_host(&url).map_err(|e| CodeCommitError::BadOverride(e.to_string()))?;
        let credentials = self
            .credentials
            .provide_credentials()
            .await
            .map_err(|e| CodeCommitError::Credentials(e.to_string()))?;
        let request = GitRequest {
            host,
            path: format!("/v1/repos/{repository}"),
            region: self.region.clone(),
        };
        Ok(Endpoint { url, auth: Auth::CodeCommit { credentials, request } })
    }

    /// Makes sure `repository` exists, creating it when `create` allows. Returns its
    /// current default branch, if it has one.
    pub async fn ensure_repository(
        &self,
        repository: &str,
        create: bool,
    ) -> Result<Option<String>, CodeCommitError> {
        let api = |operation, message| CodeCommitError::Api {
            operation,
            repository: repository.to_owned(),
            message,
        };
        match self.client.get_repository().repository_name(repository).send().await {
            Ok(found) => return Ok(found.repository_metadata.and_then(|m| m.default_branch)),
            Err(e)
                if e.as_service_error()
                    .is_some_and(GetRepositoryError::is_repository_does_not_exist_exception) => {}
            Err(e) => return Err(api("GetRepository", aws_error_message(&e))),
        }
        if !create {
            return Err(CodeCommitError::Missing { repository: repository.to_owned() });
        }
        tracing::info!(repository, "creating the CodeCommit repository");
        match self
            .client
            .create_repository()
            .repository_name(repository)
            .repository_description(
                "Mirror kept by the pillars Source Control Pillar; do not push here.",
            )
            .send()
            .await
        {
            Ok(_) => Ok(None),
            // Created by a concurrent run in the meantime: as good.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_repository_name_exists_exception()) =>
            {
                Ok(None)
            }
            Err(e) => Err(api("CreateRepository", aws_error_message(&e))),
        }
    }

    /// Points the repository's default branch at `branch` (a short name).
    pub async fn set_default_branch(
        &self,
        repository: &str,
        branch: &str,
    ) -> Result<(), CodeCommitError> {
        self.client
            .update_default_branch()
            .repository_name(repository)
            .default_branch_name(branch)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| CodeCommitError::Api {
                operation: "UpdateDefaultBranch",
                repository: repository.to_owned(),
                message: aws_error_message(&e),
            })
    }
}
