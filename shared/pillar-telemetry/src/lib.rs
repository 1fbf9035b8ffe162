//! What every pillar binary sets up first: tracing that Lambda's JSON log format understands,
//! and CloudWatch metrics written as Embedded Metric Format lines (no API call, no
//! dependency on anything but the function's own log stream).

mod emf;

pub use emf::{Metrics, Unit};

use tracing_subscriber::EnvFilter;

/// Installs the global tracing subscriber for a Lambda or a server: JSON lines when Lambda
/// is configured with `AWS_LAMBDA_LOG_FORMAT=JSON`, readable lines otherwise, on standard
/// error so that command output on standard out stays clean. The level comes from
/// `RUST_LOG`, then `AWS_LAMBDA_LOG_LEVEL`, then `info`.
pub fn init_tracing() {
    init_tracing_at("info");
}

/// As [`init_tracing`], with `default_level` (`warn`, `info`, `debug`...) when neither
/// `RUST_LOG` nor `AWS_LAMBDA_LOG_LEVEL` is set: a command run by a person shows warnings
/// only, unless asked for more. The AWS configuration loader's fallbacks, such as a region
/// lookup in instance metadata off EC2, show only at `error`.
pub fn init_tracing_at(default_level: &str) {
    let level = std::env::var("RUST_LOG")
        .or_else(|_| std::env::var("AWS_LAMBDA_LOG_LEVEL").map(|l| l.to_lowercase()))
        .unwrap_or_else(|_| format!("{default_level},aws_config=error"));
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

/// Time kept back from a Lambda's deadline to report what was done (metrics, the answer).
const REPORT_RESERVE: std::time::Duration = std::time::Duration::from_secs(2);

/// The instant a handler must be done by, from the invocation's deadline (a wall-clock
/// time): a little before it, so the answer and the metrics still go out.
pub fn deadline(lambda_deadline: std::time::SystemTime) -> std::time::Instant {
    let left = lambda_deadline.duration_since(std::time::SystemTime::now()).unwrap_or_default();
    std::time::Instant::now() + left.saturating_sub(REPORT_RESERVE)
}
