//! Lambda behind a function URL (`AWS_IAM` auth): answers OFREP evaluations from the last
//! good flag set, polling the pointer when due. Settings: `CONFIG_BUCKET`, `CONFIG_PREFIX`
//! (default empty), `CONFIG_POLL_SECONDS` (default 30). The bundle is kept in `/tmp`, so a
//! warm environment keeps serving it while S3 is gone.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use dynamic_config::agent::Agent;
use dynamic_config::client::Client;
use dynamic_config::store::Store;
use lambda_http::{Body, Request, service_fn};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    pillar_telemetry::init_tracing();
    let bucket = std::env::var("CONFIG_BUCKET").context("CONFIG_BUCKET is not set")?;
    let prefix = std::env::var("CONFIG_PREFIX").unwrap_or_default();
    let poll = match std::env::var("CONFIG_POLL_SECONDS") {
        Ok(text) => {
            text.parse().with_context(|| format!("CONFIG_POLL_SECONDS={text}: not seconds"))?
        }
        Err(_) => 30,
    };
    let aws = aws_config::load_from_env().await;
    let store = Store::new(aws_sdk_s3::Client::new(&aws), bucket, &prefix);
    let client = Client::new(store, Some(std::env::temp_dir().join("pillars-config")));
    let mut agent = Agent::new(client, Duration::from_secs(poll));
    agent.emit_metrics = true;
    let agent = Arc::new(agent);
    lambda_http::run(service_fn(move |request: Request| {
        let agent = Arc::clone(&agent);
        async move {
            let answer = agent
                .respond(request.method(), request.uri(), request.headers(), request.body())
                .await;
            Ok::<_, lambda_http::Error>(answer.map(Body::from))
        }
    }))
    .await
}
