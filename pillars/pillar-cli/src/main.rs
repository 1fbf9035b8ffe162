//! `pillar`: every pillar job, runnable from a shell with the same library code the
//! Lambdas run. Output goes to standard out; logs and errors to standard error.

mod config;
mod drill;
mod flags;
mod git_credential;
mod image;
mod logs;
mod progress;
mod scp;
mod webhook;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "pillar",
    version,
    about = "Run and check the pillars: source control, docker mirror, logging, config"
)]
struct Cli {
    /// Show what the pillar is doing (-v: progress, -vv: details); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Work with the deployment manifest (pillars.toml).
    #[command(subcommand)]
    Config(config::Command),
    /// Every pillar's canary, as a build and a service would use the pillars today: clone
    /// each repository from CodeCommit, pull each image from ECR, send a heartbeat through
    /// the Logging Pillar. Exit 0 when all are ready.
    Drill(drill::Args),
    #[command(subcommand)]
    Flags(flags::Command),
    /// Git credential helper for CodeCommit over HTTPS, signing with the AWS credential chain.
    ///
    /// git config --global credential.helper '!pillar git-credential'
    /// git config --global credential.useHttpPath true
    GitCredential(git_credential::Args),
    /// Logging Pillar: send one canary heartbeat through the stream and wait for it in
    /// CloudWatch Logs; prints how long it took.
    Heartbeat(logs::HeartbeatArgs),
    /// Docker mirror: copy images, every platform and digest-exact, into ECR or a registry.
    #[command(subcommand)]
    Image(image::Command),
    /// Logging Pillar: ship lines into the stream, drain it into CloudWatch Logs, read back.
    #[command(subcommand)]
    Logs(logs::Command),
    /// Source Control Pillar: mirror git repositories into CodeCommit.
    #[command(subcommand)]
    Scp(scp::Command),
    /// Source Control Pillar: the Bitbucket webhook endpoint.
    #[command(subcommand)]
    Webhook(webhook::Command),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    pillar_telemetry::init_tracing_at(match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    });
    let outcome = match cli.command {
        Command::Config(command) => config::run(command),
        Command::Drill(args) => drill::run(args),
        Command::Flags(command) => flags::run(command),
        Command::GitCredential(args) => git_credential::run(args),
        Command::Heartbeat(args) => logs::heartbeat(args),
        Command::Image(command) => image::run(command),
        Command::Logs(command) => logs::run(command),
        Command::Scp(command) => scp::run(command),
        Command::Webhook(command) => webhook::run(command),
    };
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("pillar: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// A runtime for the subcommands that call AWS.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?)
}
