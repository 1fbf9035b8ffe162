//! Lambda on a schedule: clones each configured repository's default branch from CodeCommit
//! as a build would (its turn of them, when the manifest sets a number per run), compares
//! the tip with the source's, and emits `PillarReady` and each repository's result.

// The handler's future nests the SDK's and the git client's deeply; rustc's default of 128
// is not enough to compute its layout.
#![recursion_limit = "256"]

use std::sync::Arc;

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
    lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| {
        let mirrorer = Arc::clone(&mirrorer);
        async move {
            let deadline = pillar_telemetry::deadline(event.context.deadline());
            let report = mirrorer.scheduled_canary(time::OffsetDateTime::now_utc(), deadline).await;
            report.metrics().iter().for_each(Metrics::emit);
            for check in &report.repositories {
                match check.ready() {
                    true => tracing::info!(repository = check.repository, "{}", check.summary()),
                    false => tracing::error!(repository = check.repository, "{}", check.summary()),
                }
            }
            Ok::<_, lambda_runtime::Error>(serde_json::to_value(&report)?)
        }
    }))
    .await
}
