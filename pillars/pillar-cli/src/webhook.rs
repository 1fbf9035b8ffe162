//! `pillar webhook serve`: the Lambda's webhook handler over plain HTTP, for the demo and
//! for running without Lambda.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use clap::Subcommand;
use pillar_auth::secrets::DEFAULT_TTL;
use pillar_config::Manifest;
use source_control::webhook::ManagedWebhook;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Answer Bitbucket webhooks on ADDR (POST, any path) until stopped.
    Serve {
        #[arg(long)]
        config: PathBuf,
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: SocketAddr,
        /// Secrets Manager secret holding the webhook secret.
        #[arg(long, env = "WEBHOOK_SECRET_ID")]
        secret_id: String,
        /// SQS FIFO queue receiving mirror requests.
        #[arg(long, env = "MIRROR_QUEUE_URL")]
        queue_url: String,
    },
}

pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    let Command::Serve { config, addr, secret_id, queue_url } = command;
    let manifest = Manifest::load(&config)?;
    crate::runtime()?.block_on(async {
        let aws = aws_config::load_from_env().await;
        let webhook =
            Arc::new(ManagedWebhook::from_aws(&manifest, &aws, secret_id, DEFAULT_TTL, queue_url));
        let listener = tokio::net::TcpListener::bind(addr).await?;
        eprintln!("pillar: answering webhooks on http://{}", listener.local_addr()?);
        let app = axum::Router::new().fallback(answer).with_state(webhook);
        axum::serve(listener, app).await?;
        Ok(ExitCode::SUCCESS)
    })
}

async fn answer(
    State(webhook): State<Arc<ManagedWebhook>>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let response = webhook.handle(&headers, &body).await;
    (response.status, response.body)
}
