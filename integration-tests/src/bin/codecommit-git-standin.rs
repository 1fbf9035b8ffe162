//! The CodeCommit git endpoint stand-in, for `scripts/emulators`.

use clap::Parser;
use integration_tests::codecommit_git::{Key, Settings, serve};

#[derive(Debug, Parser)]
struct Args {
    /// Address to listen on; loopback only.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: std::net::SocketAddr,
    /// Directory holding the bare repositories.
    #[arg(long)]
    repos_dir: std::path::PathBuf,
    #[arg(long, env = "AWS_REGION")]
    region: String,
    #[arg(long, env = "AWS_ACCESS_KEY_ID")]
    access_key_id: String,
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    secret_access_key: String,
    /// Temporary credentials, accepted only with their session token.
    #[arg(long, env = "PILLAR_TEMPORARY_ACCESS_KEY_ID")]
    temporary_access_key_id: Option<String>,
    #[arg(long, env = "PILLAR_TEMPORARY_SECRET_ACCESS_KEY", hide_env_values = true)]
    temporary_secret_access_key: Option<String>,
    #[arg(long, env = "PILLAR_TEMPORARY_SESSION_TOKEN", hide_env_values = true)]
    temporary_session_token: Option<String>,
    /// The Python (with botocore) that runs the independent password verifier.
    #[arg(long)]
    python: std::path::PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    pillar_telemetry::init_tracing();
    let args = Args::parse();
    anyhow::ensure!(args.listen.ip().is_loopback(), "the stand-in listens on loopback only");
    std::fs::create_dir_all(&args.repos_dir)?;
    let aws = aws_config::load_from_env().await;
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    tracing::info!(address = %listener.local_addr()?, "CodeCommit git stand-in listening");
    let mut keys = vec![Key {
        access_key_id: args.access_key_id,
        secret_access_key: args.secret_access_key,
        session_token: None,
    }];
    if let (Some(access_key_id), Some(secret_access_key), Some(token)) = (
        args.temporary_access_key_id,
        args.temporary_secret_access_key,
        args.temporary_session_token,
    ) {
        keys.push(Key { access_key_id, secret_access_key, session_token: Some(token) });
    }
    let settings =
        Settings { repos_dir: args.repos_dir, region: args.region, keys, python: args.python };
    serve(listener, settings, aws_sdk_codecommit::Client::new(&aws)).await?;
    Ok(())
}
