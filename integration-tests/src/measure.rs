//! Wall time and peak RSS of commands, read by GNU time, for the benchmarks.

use std::process::{Command, Stdio};

/// Wall time and peak RSS of one or more commands run in sequence.
#[derive(Debug, Clone, Copy, Default)]
pub struct Measure {
    pub seconds: f64,
    pub peak_rss_mib: f64,
}

impl Measure {
    pub fn then(self, other: Measure) -> Measure {
        Measure {
            seconds: self.seconds + other.seconds,
            peak_rss_mib: self.peak_rss_mib.max(other.peak_rss_mib),
        }
    }
}

/// Runs `command` under GNU time, insisting on success.
pub fn measure(command: Command) -> (Measure, String) {
    let report = tempfile::NamedTempFile::new().expect("temp file");
    let program = command.get_program().to_owned();
    let args: Vec<_> = command.get_args().map(ToOwned::to_owned).collect();
    let mut timed = Command::new("/usr/bin/time");
    timed.arg("-f").arg("%e %M").arg("-o").arg(report.path()).arg(&program).args(&args);
    if let Some(dir) = command.get_current_dir() {
        timed.current_dir(dir);
    }
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => timed.env(key, value),
            None => timed.env_remove(key),
        };
    }
    let output = timed.stderr(Stdio::piped()).output().expect("run under /usr/bin/time");
    eprint!("{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        output.status.success(),
        "{program:?} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = std::fs::read_to_string(report.path()).expect("time report");
    let last = text.lines().last().unwrap_or_default();
    let mut fields = last.split_whitespace();
    let seconds = fields.next().and_then(|s| s.parse().ok()).expect("elapsed seconds");
    let kib: f64 = fields.next().and_then(|s| s.parse().ok()).expect("max RSS");
    (
        Measure { seconds, peak_rss_mib: kib / 1024.0 },
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}
