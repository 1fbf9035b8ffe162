//! `pillar config check FILE`.

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
    },
}

pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Check { file } => match Manifest::load(&file) {
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
