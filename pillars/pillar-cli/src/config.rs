//! `pillar config check FILE [--json]`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
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
    },
}

pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Check { file, json } => match Manifest::load(&file) {
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
