//! `pillar git-credential get|store|erase`: git's credential helper protocol
//! (<https://git-scm.com/docs/git-credential>) answering with CodeCommit's SigV4 password.

use std::io::{BufRead, Write};
use std::process::ExitCode;

use anyhow::Context;
use clap::ValueEnum;
use pillar_auth::codecommit::{self, ENDPOINT_OVERRIDE_VAR, GitCredentialError};
use secrecy::ExposeSecret;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// What git asks: `get` is answered; `store` and `erase` have nothing to keep.
    operation: Operation,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Operation {
    Get,
    Store,
    Erase,
}

/// The attributes git sends that matter here.
#[derive(Debug, Default)]
struct Request {
    protocol: Option<String>,
    host: Option<String>,
    path: Option<String>,
}

fn read_request(input: impl BufRead) -> anyhow::Result<Request> {
    let mut request = Request::default();
    for line in input.lines() {
        let line = line.context("reading git's credential request from standard input")?;
        if line.is_empty() {
            break;
        }
        match line.split_once('=') {
            Some(("protocol", v)) => request.protocol = Some(v.to_owned()),
            Some(("host", v)) => request.host = Some(v.to_owned()),
            Some(("path", v)) => request.path = Some(v.to_owned()),
            _ => {}
        }
    }
    Ok(request)
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if !matches!(args.operation, Operation::Get) {
        // git also reports outcomes with store/erase; a signed password is never kept.
        std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink())?;
        return Ok(ExitCode::SUCCESS);
    }
    let request = read_request(std::io::stdin().lock())?;
    let (Some(host), Some("http" | "https")) =
        (request.host.as_deref(), request.protocol.as_deref())
    else {
        // Not an HTTP(S) request: leave it to the next helper.
        return Ok(ExitCode::SUCCESS);
    };
    answer_get(host, request.path.as_deref())
}

fn answer_get(host: &str, path: Option<&str>) -> anyhow::Result<ExitCode> {
    let runtime = crate::runtime()?;
    runtime.block_on(async {
        let aws = aws_config::load_from_env().await;
        let endpoint_override = std::env::var(ENDPOINT_OVERRIDE_VAR).ok();
        let region = aws.region().map(ToString::to_string);
        let request = match codecommit::git_request(
            host,
            path,
            region.as_deref(),
            endpoint_override.as_deref(),
        ) {
            Ok(request) => request,
            Err(GitCredentialError::UnknownHost { .. }) => {
                // Some other host: say nothing, so git asks its next helper.
                return Ok(ExitCode::SUCCESS);
            }
            Err(other) => return Err(other.into()),
        };
        let provider = aws
            .credentials_provider()
            .context("the AWS configuration has no credential provider: set AWS credentials")?;
        let credentials =
            codecommit::git_credentials(&provider, &request, time::OffsetDateTime::now_utc())
                .await?;
        tracing::debug!(
            host,
            repository = request.repository(),
            region = request.region,
            "signed CodeCommit git credentials"
        );
        let mut out = std::io::stdout().lock();
        writeln!(out, "username={}", credentials.username)?;
        writeln!(out, "password={}", credentials.password.expose_secret())?;
        Ok(ExitCode::SUCCESS)
    })
}
