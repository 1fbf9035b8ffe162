//! `pillar config check FILE [--json] [--aws]`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use pillar_auth::secrets::{
    SECRET_FORMS, SecretCache, USER_PASSWORD_FORMS, credentials, username_password,
};
use pillar_config::Manifest;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a manifest: exit 0 when it is valid, 1 with every problem listed otherwise.
    Check {
        /// The manifest, e.g. pillars.toml.
        file: PathBuf,
        /// Print the checked manifest as JSON, defaults filled in (what the CDK app reads).
        #[arg(long)]
        json: bool,
        /// Also check, with the caller's AWS credentials, that every secret the manifest
        /// names exists and can be read (a source's holding `username:password`).
        #[arg(long)]
        aws: bool,
    },
}

pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Check { file, json, aws } => match Manifest::load(&file) {
            Ok(manifest) if aws && !secrets_found(&manifest)? => Ok(ExitCode::FAILURE),
            Ok(manifest) if json => {
                println!("{}", serde_json::to_string_pretty(&manifest)?);
                Ok(ExitCode::SUCCESS)
            }
            Ok(manifest) => {
                println!(
                    "{}: valid ({} repositories, {} images, {})",
                    file.display(),
                    manifest.repositories.len(),
                    manifest.images.len(),
                    manifest.logging.map_or("no logging stream".to_owned(), |l| format!(
                        "logging stream `{}`",
                        l.stream
                    )),
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(error) => {
                eprintln!("pillar: {error}");
                Ok(ExitCode::FAILURE)
            }
        },
    }
}

/// Whether every secret `manifest` names can be read and holds what the mirrors read from it
/// (a user and a password; for a registry, a token also does); prints each that does not,
/// at its key.
fn secrets_found(manifest: &Manifest) -> anyhow::Result<bool> {
    let repositories = manifest.repositories.iter().enumerate().filter_map(|(n, r)| {
        Some((format!("repository[{n}].credentials_secret"), r.credentials_secret.as_ref()?, false))
    });
    let images = manifest.images.iter().enumerate().filter_map(|(n, i)| {
        Some((format!("image[{n}].credentials_secret"), i.credentials_secret.as_ref()?, true))
    });
    let named: Vec<(String, &String, bool)> = repositories.chain(images).collect();
    let problems = crate::runtime()?.block_on(async {
        let aws = aws_config::load_from_env().await;
        let secrets =
            SecretCache::new(aws_sdk_secretsmanager::Client::new(&aws), std::time::Duration::MAX);
        let mut problems = Vec::new();
        for (key, id, token_allowed) in &named {
            match secrets.get(id).await {
                Err(error) => problems.push(format!("{key}: {error}")),
                Ok(value) if *token_allowed && credentials(&value).is_none() => {
                    problems.push(format!("{key}: secret `{id}` must hold {SECRET_FORMS}"));
                }
                Ok(value) if !*token_allowed && username_password(&value).is_none() => {
                    problems.push(format!("{key}: secret `{id}` must hold {USER_PASSWORD_FORMS}"));
                }
                Ok(_) => {}
            }
        }
        problems
    });
    for problem in &problems {
        eprintln!("pillar: {problem}");
    }
    Ok(problems.is_empty())
}
