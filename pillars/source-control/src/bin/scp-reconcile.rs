//! Lambda on a schedule: queue every configured repository (repairing lost webhooks), then
//! publish each one's drift before the function's deadline.

use std::sync::Arc;

use lambda_runtime::{LambdaEvent, service_fn};
use pillar_config::Env;
use pillar_telemetry::Metrics;
use source_control::queue::SqsQueue;
use source_control::service::Mirrorer;
use source_control::settings::MirrorSettings;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    pillar_telemetry::init_tracing();
    let settings = MirrorSettings::from_env(&Env::process())?;
    let queue_url = settings
        .queue_url
        .clone()
        .ok_or("MIRROR_QUEUE_URL is not set: the queue reconcile fills")?;
    let aws = aws_config::load_from_env().await;
    let queue = Arc::new(SqsQueue { client: aws_sdk_sqs::Client::new(&aws), queue_url });
    let mirrorer = Arc::new(Mirrorer::from_settings(&settings, &aws)?);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| {
        let (mirrorer, queue) = (Arc::clone(&mirrorer), Arc::clone(&queue));
        async move {
            let deadline = pillar_telemetry::deadline(event.context.deadline());
            let run_id = &event.context.request_id;
            let report = mirrorer.reconcile(queue.as_ref(), run_id, Some(deadline)).await;
            report.metrics.iter().for_each(Metrics::emit);
            match report.not_queued.len() {
                0 => Ok(()),
                n => Err(lambda_runtime::Error::from(format!("{n} repositories not queued"))),
            }
        }
    }))
    .await
}
