//! Lambda on a schedule: finds the previous heartbeat in CloudWatch Logs, sends the next
//! one, and emits `HeartbeatMissing`, `HeartbeatLatencyMs` and the pillar's `PillarReady`.

use std::sync::Arc;
use std::time::Duration;

use lambda_runtime::{LambdaEvent, service_fn};
use logging::cloudwatch::LogReader;
use logging::heartbeat::Heartbeat;
use logging::producer::Producer;
use pillar_config::Env;
use tokio::sync::Mutex;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    pillar_telemetry::init_tracing();
    let logging = logging::settings::from_env(&Env::process())?;
    let aws = aws_config::load_from_env().await;
    let heartbeat = Arc::new(Mutex::new(Heartbeat {
        producer: Producer::new(aws_sdk_kinesis::Client::new(&aws), &logging.stream, false),
        reader: LogReader::new(aws_sdk_cloudwatchlogs::Client::new(&aws)),
        stream: aws_sdk_kinesis::Client::new(&aws),
        prefix: logging.log_group_prefix.clone(),
        period: Duration::from_secs(u64::from(logging.heartbeat_period_minutes) * 60),
        sender: std::env::var("AWS_LAMBDA_FUNCTION_NAME")
            .unwrap_or_else(|_| "log-heartbeat".into()),
        last_sent: None,
    }));
    lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| {
        let heartbeat = Arc::clone(&heartbeat);
        async move {
            let beat = heartbeat.lock().await.beat(&event.context.request_id).await;
            match beat {
                Ok(beat) => {
                    beat.metrics().emit();
                    beat.readiness().emit();
                    Ok(serde_json::json!({
                        "sent": beat.sent,
                        "previous": beat.previous.map(|p| p.latency_ms),
                        "broken_hop": beat.broken_hop,
                    }))
                }
                Err(error) => {
                    // The path is broken: say so in the metric the alarm watches, then fail.
                    logging::heartbeat::missing().emit();
                    pillar_telemetry::pillar_ready(logging::heartbeat::PILLAR, false).emit();
                    Err(lambda_runtime::Error::from(error.to_string()))
                }
            }
        }
    }))
    .await
}
