//! Lambda on the SQS FIFO queue: mirror each requested repository into CodeCommit, stopping
//! before the function's deadline, and report the messages to retry.

use std::sync::Arc;

use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{LambdaEvent, service_fn};
use pillar_config::Env;
use pillar_telemetry::Metrics;
use source_control::service::Mirrorer;
use source_control::settings::MirrorSettings;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    pillar_telemetry::init_tracing();
    let settings = MirrorSettings::from_env(&Env::process())?;
    let aws = aws_config::load_from_env().await;
    let mirrorer = Arc::new(Mirrorer::from_settings(&settings, &aws)?);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| {
        let mirrorer = Arc::clone(&mirrorer);
        async move {
            let deadline = pillar_telemetry::deadline(event.context.deadline());
            let outcome = mirrorer.handle_sqs(event.payload, Some(deadline)).await;
            outcome.metrics.iter().for_each(Metrics::emit);
            Ok::<_, lambda_runtime::Error>(outcome.response)
        }
    }))
    .await
}
