//! Lambda on the Kinesis stream (event source mapping with `ReportBatchItemFailures`):
//! writes each batch into CloudWatch Logs and names the first record not written.

use std::sync::Arc;

use aws_lambda_events::event::kinesis::KinesisEvent;
use lambda_runtime::{LambdaEvent, service_fn};
use logging::cloudwatch::{GroupSettings, LogWriter};
use logging::event::Routing;
use logging::sink::Sink;
use pillar_config::Env;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    pillar_telemetry::init_tracing();
    let logging = logging::settings::from_env(&Env::process())?;
    let aws = aws_config::load_from_env().await;
    let writer =
        LogWriter::new(aws_sdk_cloudwatchlogs::Client::new(&aws), GroupSettings::of(&logging));
    let sink = Arc::new(Sink::new(writer, &logging.log_group_prefix, Routing::of(&logging)));
    lambda_runtime::run(service_fn(move |event: LambdaEvent<KinesisEvent>| {
        let sink = Arc::clone(&sink);
        async move {
            let deadline = pillar_telemetry::deadline(event.context.deadline());
            let (response, report) = sink.handle(event.payload, Some(deadline)).await;
            report.metrics().emit();
            Ok::<_, lambda_runtime::Error>(response)
        }
    }))
    .await
}
