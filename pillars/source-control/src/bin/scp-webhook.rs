//! Lambda behind a function URL: Bitbucket webhook → SQS FIFO mirror request.

use std::sync::Arc;

use lambda_http::{Body, Request, Response, service_fn};
use pillar_auth::secrets::SecretCache;
use pillar_config::{Env, Manifest};
use source_control::queue::SqsQueue;
use source_control::settings::WebhookSettings;
use source_control::webhook::{ManagedSecret, Webhook};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    pillar_telemetry::init_tracing();
    let settings = WebhookSettings::from_env(&Env::process())?;
    let manifest = Manifest::load(&settings.manifest)?;
    let aws = aws_config::load_from_env().await;
    let secret = ManagedSecret {
        cache: SecretCache::new(aws_sdk_secretsmanager::Client::new(&aws), settings.secret_ttl),
        id: settings.secret_id,
    };
    let queue = SqsQueue { client: aws_sdk_sqs::Client::new(&aws), queue_url: settings.queue_url };
    let webhook = Arc::new(Webhook::new(&manifest, secret, queue));
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
