//! Lambda behind a function URL: Bitbucket webhook → SQS FIFO mirror request.

use std::sync::Arc;

use lambda_http::{Body, Request, Response, service_fn};
use pillar_config::{Env, Manifest};
use source_control::settings::WebhookSettings;
use source_control::webhook::ManagedWebhook;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    pillar_telemetry::init_tracing();
    let settings = WebhookSettings::from_env(&Env::process())?;
    let manifest = Manifest::load(&settings.manifest)?;
    let aws = aws_config::load_from_env().await;
    let webhook = Arc::new(ManagedWebhook::from_aws(
        &manifest,
        &aws,
        settings.secret_id,
        settings.secret_ttl,
        settings.queue_url,
    ));
    lambda_http::run(service_fn(move |request: Request| {
        let webhook = Arc::clone(&webhook);
        async move {
            let answer = webhook.handle(request.headers(), request.body().as_ref()).await;
            let mut response = Response::new(Body::from(answer.body));
            *response.status_mut() = answer.status;
            Ok::<_, std::convert::Infallible>(response)
        }
    }))
    .await
}
