//! Lambda on a schedule: pulls each configured image's newest mirrored tag from ECR as a
//! container runtime would (manifests, config and a layer, checked by digest), compares it
//! with the source's, and emits `PillarReady` and each image's result.

// As the mirror's: the handler's future nests the SDK's and oci-client's deeply.
#![recursion_limit = "256"]

use std::sync::Arc;

use docker_mirror::service::Mirror;
use docker_mirror::settings::MirrorSettings;
use lambda_runtime::{LambdaEvent, service_fn};
use pillar_config::{Env, Manifest};
use pillar_telemetry::Metrics;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    pillar_telemetry::init_tracing();
    let settings = MirrorSettings::from_env(&Env::process())?;
    let manifest = Arc::new(Manifest::load(&settings.manifest)?);
    let aws = aws_config::load_from_env().await;
    let mirror = Arc::new(Mirror::from_aws(&aws, settings.secret_ttl));
    lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| {
        let (mirror, manifest) = (Arc::clone(&mirror), Arc::clone(&manifest));
        async move {
            let deadline = pillar_telemetry::deadline(event.context.deadline());
            let images: Vec<_> = manifest.images.iter().collect();
            let report = mirror.canary(&images, Some(deadline)).await;
            report.metrics().iter().for_each(Metrics::emit);
            for check in &report.images {
                match check.ready() {
                    true => tracing::info!(image = check.image, "{}", check.summary()),
                    false => tracing::error!(image = check.image, "{}", check.summary()),
                }
            }
            Ok::<_, lambda_runtime::Error>(serde_json::to_value(&report)?)
        }
    }))
    .await
}
