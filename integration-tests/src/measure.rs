//! Wall time, CPU time and peak RSS of commands, read by GNU time, for the benchmarks.

use std::path::Path;
use std::process::{Command, Stdio};

/// Wall time, CPU time and peak RSS of one or more commands run in sequence.
#[derive(Debug, Clone, Copy, Default)]
pub struct Measure {
    pub seconds: f64,
    /// User and system time of the command and the children it waited for.
    pub cpu_seconds: f64,
    pub peak_rss_mib: f64,
}

impl Measure {
    pub fn then(self, other: Measure) -> Measure {
        Measure {
            seconds: self.seconds + other.seconds,
            cpu_seconds: self.cpu_seconds + other.cpu_seconds,
            peak_rss_mib: self.peak_rss_mib.max(other.peak_rss_mib),
        }
    }
}

/// Runs `command` under GNU time, insisting on success.
pub fn measure(command: Command) -> (Measure, String) {
    measure_reading(command, None)
}

/// Runs `command` under GNU time with `input` (a file) as its standard input, insisting on
/// success.
pub fn measure_reading(command: Command, input: Option<&Path>) -> (Measure, String) {
    let program = command.get_program().to_owned();
    let args: Vec<_> = command.get_args().map(ToOwned::to_owned).collect();
    let (measure, stdout, stderr, status) = measure_outcome(command, input);
    assert!(status.success(), "{program:?} {args:?} failed: {stderr}");
    (measure, stdout)
}

/// Runs `command` under GNU time, whatever its exit: the measure, its standard output and
/// error, and its exit status.
pub fn measure_outcome(
    command: Command,
    input: Option<&Path>,
) -> (Measure, String, String, std::process::ExitStatus) {
    let report = tempfile::NamedTempFile::new().expect("temp file");
    let program = command.get_program().to_owned();
    let args: Vec<_> = command.get_args().map(ToOwned::to_owned).collect();
    let mut timed = Command::new("/usr/bin/time");
    timed.arg("-f").arg("%e %M %U %S").arg("-o").arg(report.path()).arg(&program).args(&args);
    if let Some(dir) = command.get_current_dir() {
        timed.current_dir(dir);
    }
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => timed.env(key, value),
            None => timed.env_remove(key),
        };
    }
    if let Some(input) = input {
        timed.stdin(std::fs::File::open(input).expect("standard input file"));
    }
    let output = timed.stderr(Stdio::piped()).output().expect("run under /usr/bin/time");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    eprint!("{stderr}");
    let text = std::fs::read_to_string(report.path()).expect("time report");
    let last = text.lines().last().unwrap_or_default();
    let mut fields = last.split_whitespace();
    let seconds = fields.next().and_then(|s| s.parse().ok()).expect("elapsed seconds");
    let kib: f64 = fields.next().and_then(|s| s.parse().ok()).expect("max RSS");
    let cpu_seconds: f64 = fields.filter_map(|s| s.parse::<f64>().ok()).sum();
    (
        Measure { seconds, cpu_seconds, peak_rss_mib: kib / 1024.0 },
        String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr,
        output.status,
    )
}

/// Seconds of CPU the whole machine has spent busy since boot (all cores, every process),
/// from `/proc/stat`: the difference around a run shows whether the run had the cores to
/// itself or was bound by them.
pub fn machine_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").expect("/proc/stat");
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|n| n.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: all but idle and iowait are busy.
    let busy: u64 =
        ticks.iter().take(8).enumerate().filter(|(i, _)| ![3, 4].contains(i)).map(|(_, t)| t).sum();
    // USER_HZ is 100 on every Linux architecture this runs on.
    busy as f64 / 100.0
}

/// The cores this machine has.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}
