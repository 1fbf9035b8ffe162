//! Lambda on a schedule (every configured image) or invoked with `{"images": [...]}`: copies
//! into ECR until shortly before its deadline; what is left is reported and resumed next run.

// The handler's future nests the SDK's and oci-client's deeply; rustc's default of 128 is
// not enough to compute its layout.
#![recursion_limit = "256"]

use std::sync::Arc;

use docker_mirror::service::{Mirror, SyncReport, requested};
use docker_mirror::settings::MirrorSettings;
use lambda_runtime::{LambdaEvent, service_fn};
use pillar_config::{Env, Manifest};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    pillar_telemetry::init_tracing();
    let settings = MirrorSettings::from_env(&Env::process())?;
    let manifest = Arc::new(Manifest::load(&settings.manifest)?);
    let aws = aws_config::load_from_env().await;
    let mut mirror = Mirror::from_aws(&aws, settings.secret_ttl);
    mirror.image_concurrency = settings.image_concurrency;
    mirror.copier.blob_concurrency = settings.blob_concurrency.max(1);
    let mirror = Arc::new(mirror);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| {
        let (mirror, manifest) = (Arc::clone(&mirror), Arc::clone(&manifest));
        async move {
            let images = requested(&manifest.images, &event.payload).inspect_err(|error| {
                SyncReport::failed_request(&event.payload.to_string(), error).metrics().emit();
            })?;
            let deadline = pillar_telemetry::deadline(event.context.deadline());
            let report = mirror.sync(&images, Some(deadline)).await;
            report.metrics().emit();
            for image in &report.images {
                tracing::info!(outcome = ?image.outcome, source = image.source, "{image}");
            }
            Ok::<_, lambda_runtime::Error>(serde_json::json!({
                "copied": report.copied(),
                "failed": report.failed(),
                "left": report.left(),
                "bytes": report.bytes(),
            }))
        }
    }))
    .await
}
