//! What every pillar binary sets up first: tracing that Lambda's JSON log format understands,
//! and CloudWatch metrics written as Embedded Metric Format lines (no API call, no
//! dependency on anything but the function's own log stream).

mod emf;

pub use emf::{Metrics, READINESS_NAMESPACE, Unit, pillar_ready};

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

/// Deadlines this near the epoch are not wall-clock times but a budget: cargo lambda's
/// runtime emulator sends `Lambda-Runtime-Deadline-Ms: 600000` (ten minutes from now) where
/// Lambda sends epoch milliseconds.
const BUDGET_NOT_TIME: std::time::Duration = std::time::Duration::from_secs(86_400);

/// The instant a handler must be done by, from the invocation's deadline (a wall-clock
/// time): a little before it, so the answer and the metrics still go out.
pub fn deadline(lambda_deadline: std::time::SystemTime) -> std::time::Instant {
    let left = match lambda_deadline.duration_since(std::time::UNIX_EPOCH) {
        Ok(budget) if budget < BUDGET_NOT_TIME => budget,
        _ => lambda_deadline.duration_since(std::time::SystemTime::now()).unwrap_or_default(),
    };
    std::time::Instant::now() + left.saturating_sub(REPORT_RESERVE)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

    use super::deadline;

    #[test]
    fn a_deadline_is_kept_two_seconds_short_of_lambdas() {
        let started = Instant::now();
        let done_by = deadline(SystemTime::now() + Duration::from_secs(60));
        let left = done_by - started;
        // 58 s, with slack for the time between the two clocks' reads.
        let expected = Duration::from_secs(57)..Duration::from_millis(58_100);
        assert!(expected.contains(&left), "{left:?}");
        assert!(deadline(SystemTime::now() - Duration::from_secs(5)) <= Instant::now());
    }

    #[test]
    fn cargo_lambdas_600000_is_ten_minutes_from_now_not_1970() {
        let started = Instant::now();
        let left = deadline(UNIX_EPOCH + Duration::from_millis(600_000)) - started;
        let expected = Duration::from_secs(597)..Duration::from_millis(598_100);
        assert!(expected.contains(&left), "{left:?}");
    }
}
