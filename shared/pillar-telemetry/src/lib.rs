//! What every pillar binary sets up first: tracing that Lambda's JSON log format understands,
//! and CloudWatch metrics written as Embedded Metric Format lines (no API call, no
//! dependency on anything but the function's own log stream).

mod emf;

pub use emf::{Metrics, Unit};

use tracing_subscriber::EnvFilter;

/// Installs the global tracing subscriber: JSON lines when Lambda is configured with
/// `AWS_LAMBDA_LOG_FORMAT=JSON`, readable lines otherwise, on standard error so that
/// command output on standard out stays clean. The level comes from `RUST_LOG`, then
/// `AWS_LAMBDA_LOG_LEVEL`, then `info` (the AWS configuration loader's fallbacks, such
/// as a region lookup in instance metadata off EC2, only at `error`).
pub fn init_tracing() {
    let level = std::env::var("RUST_LOG")
        .or_else(|_| std::env::var("AWS_LAMBDA_LOG_LEVEL").map(|l| l.to_lowercase()))
        .unwrap_or_else(|_| "info,aws_config=error".to_owned());
    let filter = EnvFilter::try_new(&level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let json = std::env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    // Another subscriber already installed (tests) is fine: keep it.
    let _ = if json {
        builder.json().flatten_event(true).with_current_span(false).without_time().try_init()
    } else {
        builder.with_target(false).try_init()
    };
}
