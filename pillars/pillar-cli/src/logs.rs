//! `pillar logs` and `pillar heartbeat`: the Logging Pillar from a shell. Ship lines into the
//! stream (how a service or an engineer redirects logs in an outage), drain the stream into
//! CloudWatch Logs with the sink the Lambda runs, read the events back, run the canary.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use logging::cloudwatch::{GroupSettings, LogReader, LogWriter};
use logging::drain::Drain;
use logging::event::{Routing, SERVICE_KEY_PREFIX};
use logging::heartbeat::Heartbeat;
use logging::producer::Producer;
use logging::sink::Sink;
use pillar_config::{DEFAULT_LOG_GROUP_PREFIX, Logging, Manifest};

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Send log lines into the stream: one event per line of FILE (standard input without
    /// one); empty lines are skipped, lines too long for CloudWatch Logs go in marked parts.
    Ship {
        #[command(flatten)]
        stream: StreamArgs,
        /// The service the lines are from, when they do not say (`"service"` in a JSON
        /// line): their log group is `<prefix><service>`.
        #[arg(long, default_value = "pillar-cli")]
        service: String,
        /// Pack lines into KPL aggregated records.
        #[arg(long)]
        aggregate: bool,
        /// Where in FILE shipping got to: a run resumes after the lines already sent (the
        /// same file, by inode), a file cut shorter is read again from its start.
        #[arg(long, requires = "file")]
        checkpoint: Option<PathBuf>,
        file: Option<PathBuf>,
    },
    /// Read every shard of the stream into CloudWatch Logs, as the log-sink Lambda does,
    /// from the oldest record or where the checkpoint file says the last drain stopped.
    Drain {
        #[command(flatten)]
        stream: StreamArgs,
        /// Stop once every shard is read to its end.
        #[arg(long)]
        once: bool,
        /// Where the position in each shard is kept (default: in the temporary directory,
        /// one file per stream ARN and creation time).
        #[arg(long)]
        checkpoint: Option<PathBuf>,
    },
    /// Write the batches the log-sink Lambda gave up on: each message of the failed-batch
    /// queue names a shard and sequence range, read back from the stream while it holds
    /// them; a message is deleted once its range is written.
    Replay {
        #[command(flatten)]
        stream: StreamArgs,
        /// The failed-batch queue's URL (the stack's FailedBatchesQueueUrl output).
        #[arg(long)]
        queue: String,
    },
    /// Print a service's events from CloudWatch Logs, oldest first.
    Tail {
        /// The service whose log group is read.
        #[arg(long)]
        service: String,
        /// How far back: 30s, 10m, 2h, 1d.
        #[arg(long, default_value = "10m", value_parser = parse_age)]
        since: Duration,
        /// The deployment manifest, for its log group prefix.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

/// The stream, and the manifest whose `[logging]` settings apply (defaults without one:
/// log groups `/pillar/<service>`, no retention set, no KMS key).
#[derive(Debug, clap::Args)]
pub struct StreamArgs {
    /// The Kinesis stream (default: the manifest's `[logging].stream`).
    #[arg(long, env = "PILLAR_LOG_STREAM")]
    stream: Option<String>,
    /// The deployment manifest.
    #[arg(long)]
    config: Option<PathBuf>,
}

/// `pillar heartbeat`: sends a heartbeat and waits for it in CloudWatch Logs.
#[derive(Debug, clap::Args)]
pub struct HeartbeatArgs {
    #[command(flatten)]
    stream: StreamArgs,
    /// How long to wait for it (a sink must be running: the Lambda, or `pillar logs drain`).
    #[arg(long, default_value = "60s", value_parser = parse_age)]
    wait: Duration,
}

/// What a command needs of the deployment: stream, log group prefix, group settings.
pub(crate) struct Resolved {
    stream: String,
    prefix: String,
    groups: GroupSettings,
    routing: Routing,
}

impl Resolved {
    /// The deployment's stream, prefix and group settings, from its `[logging]`.
    pub(crate) fn of(stream: String, logging: &Logging) -> Self {
        Self {
            stream,
            prefix: logging.log_group_prefix.clone(),
            groups: GroupSettings::of(logging),
            routing: Routing::of(logging),
        }
    }

    pub(crate) fn stream(&self) -> &str {
        &self.stream
    }

    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A heartbeat sent from this shell (its own sender name) into the stream; its period
    /// only matters to scheduled beats, which a shell does not send.
    pub(crate) fn heartbeat(&self, aws: &aws_config::SdkConfig) -> Heartbeat {
        Heartbeat {
            producer: Producer::new(aws_sdk_kinesis::Client::new(aws), &self.stream, false),
            reader: LogReader::new(aws_sdk_cloudwatchlogs::Client::new(aws)),
            stream: aws_sdk_kinesis::Client::new(aws),
            prefix: self.prefix.clone(),
            period: Duration::from_secs(60),
            sender: format!("pillar-cli-{}", std::process::id()),
            last_sent: None,
        }
    }

    /// The sink the log-sink Lambda runs, reading this stream.
    fn drain(&self, aws: &aws_config::SdkConfig, checkpoint: Option<PathBuf>) -> Drain {
        let writer = LogWriter::new(aws_sdk_cloudwatchlogs::Client::new(aws), self.groups.clone());
        Drain {
            client: aws_sdk_kinesis::Client::new(aws),
            stream: self.stream.clone(),
            sink: Sink::new(writer, self.prefix.clone(), self.routing.clone()),
            checkpoint,
        }
    }
}

impl StreamArgs {
    fn resolve(&self) -> anyhow::Result<Resolved> {
        let logging = match &self.config {
            Some(path) => Some(
                Manifest::load(path)?
                    .logging
                    .with_context(|| format!("{} has no [logging] section", path.display()))?,
            ),
            None => None,
        };
        let stream = self
            .stream
            .clone()
            .or_else(|| logging.as_ref().map(|l| l.stream.clone()))
            .context("no stream: give --stream NAME, or --config with a [logging] section")?;
        Ok(match logging {
            Some(logging) => Resolved::of(stream, &logging),
            None => Resolved {
                stream,
                prefix: DEFAULT_LOG_GROUP_PREFIX.to_owned(),
                groups: GroupSettings::default(),
                routing: Routing::default(),
            },
        })
    }
}

/// `30s`, `10m`, `2h`, `1d`.
pub(crate) fn parse_age(text: &str) -> Result<Duration, String> {
    let (number, unit) =
        text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let number: u64 =
        number.parse().map_err(|_| format!("`{text}` is not like 30s, 10m, 2h or 1d"))?;
    let seconds = match unit {
        "s" | "" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("`{text}`: the unit is s, m, h or d")),
    };
    Ok(Duration::from_secs(number * seconds))
}

pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    crate::runtime()?.block_on(async {
        let aws = aws_config::load_from_env().await;
        match command {
            Command::Ship { stream, service, aggregate, checkpoint, file } => {
                let resolved = stream.resolve()?;
                let producer = Producer::new(aws_sdk_kinesis::Client::new(&aws), &resolved.stream, aggregate);
                let shipped = ship(producer, &service, file, checkpoint).await?;
                println!(
                    "shipped {} events in {} records ({} bytes, {} PutRecords calls) to {}",
                    shipped.events, shipped.records, shipped.bytes, shipped.calls, resolved.stream
                );
                Ok(ExitCode::SUCCESS)
            }
            Command::Drain { stream, once, checkpoint } => {
                let resolved = stream.resolve()?;
                let drain = resolved.drain(&aws, checkpoint);
                let drained = drain.run(once).await?;
                println!(
                    "drained {} records from {} shard(s) of {}: {} events written ({} restamped, {} to the fallback group), {} rejected by CloudWatch Logs, {} records undecodable",
                    drained.records,
                    drained.shards,
                    resolved.stream,
                    drained.events_written,
                    drained.events_restamped,
                    drained.events_to_fallback,
                    drained.events_rejected,
                    drained.records_undecodable
                );
                Ok(ExitCode::SUCCESS)
            }
            Command::Replay { stream, queue } => {
                let resolved = stream.resolve()?;
                let drain = resolved.drain(&aws, None);
                let replayed = drain.replay(&aws_sdk_sqs::Client::new(&aws), &queue).await?;
                println!(
                    "replayed {} failed batches ({} records, {} events written) into CloudWatch Logs; {} messages left in the queue",
                    replayed.batches, replayed.records, replayed.events_written, replayed.left
                );
                Ok(if replayed.left == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
            }
            Command::Tail { service, since, config } => {
                let prefix = match config {
                    Some(path) => Manifest::load(&path)?
                        .logging
                        .map_or_else(|| DEFAULT_LOG_GROUP_PREFIX.to_owned(), |l| l.log_group_prefix),
                    None => DEFAULT_LOG_GROUP_PREFIX.to_owned(),
                };
                let group = logging::batch::group_name(&prefix, &service);
                let start = now_ms() - i64::try_from(since.as_millis()).unwrap_or(i64::MAX);
                let reader = LogReader::new(aws_sdk_cloudwatchlogs::Client::new(&aws));
                for event in reader.events(&group, start).await? {
                    println!("{} {}", rfc3339(event.timestamp), event.message);
                }
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}

pub fn heartbeat(args: HeartbeatArgs) -> anyhow::Result<ExitCode> {
    crate::runtime()?.block_on(async {
        let aws = aws_config::load_from_env().await;
        let resolved = args.stream.resolve()?;
        let id = format!("cli-{}-{}", now_ms(), std::process::id());
        match resolved.heartbeat(&aws).probe(&id, args.wait).await? {
            Ok(seen) => {
                println!("heartbeat {id} reached CloudWatch Logs in {} ms", seen.latency_ms);
                Ok(ExitCode::SUCCESS)
            }
            Err(hop) => {
                eprintln!(
                    "pillar: heartbeat {id} was not seen in CloudWatch Logs within {:?}: {hop}",
                    args.wait
                );
                Ok(ExitCode::FAILURE)
            }
        }
    })
}

/// How often `pillar logs ship` sends what it has, however little: `tail -F` shows up in
/// seconds.
const SHIP_EVERY: Duration = Duration::from_secs(1);

/// Where `pillar logs ship --checkpoint` got to in a file.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct ShipCheckpoint {
    inode: u64,
    /// Bytes of the file whose lines are in the stream.
    offset: u64,
}

/// Ships the lines of `file` (standard input without one) under `service`, sending at
/// least every second and whenever a call is full; with `checkpoint`, resumes after what an
/// earlier run sent and records each send.
async fn ship(
    mut producer: Producer,
    service: &str,
    file: Option<PathBuf>,
    checkpoint: Option<PathBuf>,
) -> anyhow::Result<logging::producer::Shipped> {
    use std::io::{Seek, SeekFrom};
    use std::os::unix::fs::MetadataExt;

    let (input, inode, mut offset): (Box<dyn BufRead + Send>, u64, u64) = match &file {
        Some(path) => {
            let mut opened = std::fs::File::open(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let meta = opened.metadata()?;
            let resume = match &checkpoint {
                Some(at) => {
                    match std::fs::read(at) {
                        Ok(bytes) => {
                            let found: ShipCheckpoint = serde_json::from_slice(&bytes)
                            .with_context(|| format!("checkpoint {} is unreadable; delete it to ship the whole file", at.display()))?;
                            if found.inode == meta.ino() && found.offset <= meta.len() {
                                found.offset
                            } else {
                                eprintln!(
                                    "pillar: {} is another file now (rotated or cut): shipping it from its start",
                                    path.display()
                                );
                                0
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
                        Err(e) => {
                            return Err(e).with_context(|| format!("cannot read {}", at.display()));
                        }
                    }
                }
                None => 0,
            };
            opened.seek(SeekFrom::Start(resume))?;
            (Box::new(std::io::BufReader::new(opened)), meta.ino(), resume)
        }
        None => (Box::new(std::io::BufReader::new(std::io::stdin())), 0, 0),
    };
    // Reading blocks; sending must not wait for the next line.
    let (lines_tx, mut lines_rx) = tokio::sync::mpsc::channel(10_000);
    std::thread::spawn(move || {
        for line in lines(input) {
            if lines_tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    let save = |offset: u64| -> anyhow::Result<()> {
        let Some(at) = &checkpoint else { return Ok(()) };
        let fresh = at.with_extension("tmp");
        std::fs::write(&fresh, serde_json::to_vec(&ShipCheckpoint { inode, offset })?)?;
        std::fs::rename(&fresh, at).with_context(|| format!("cannot write {}", at.display()))
    };
    let key = format!("{SERVICE_KEY_PREFIX}{service}");
    let mut every = tokio::time::interval(SHIP_EVERY);
    loop {
        tokio::select! {
            line = lines_rx.recv() => match line {
                Some(line) => {
                    let (line, read) = line?;
                    offset += read;
                    producer.send(&key, line).await?;
                }
                None => break,
            },
            _ = every.tick() => {
                producer.flush().await?;
                save(offset)?;
            }
        }
    }
    let shipped = producer.flush().await?;
    save(offset)?;
    Ok(shipped)
}

/// The lines of `input` without their endings, each with the bytes it took; bytes that
/// are not UTF-8 kept as best read.
fn lines(
    mut input: Box<dyn BufRead + Send>,
) -> impl Iterator<Item = std::io::Result<(String, u64)>> {
    std::iter::from_fn(move || {
        let mut line = Vec::new();
        match input.read_until(b'\n', &mut line) {
            Ok(0) => None,
            Ok(read) => {
                while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    line.pop();
                }
                let text = String::from_utf8(line)
                    .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
                Some(Ok((text, read as u64)))
            }
            Err(error) => Some(Err(error)),
        }
    })
}

pub(crate) fn now_ms() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
        .unwrap_or(i64::MAX)
}

fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::parse_age;
    use std::time::Duration;

    #[test]
    fn ages_in_seconds_minutes_hours_days() {
        assert_eq!(parse_age("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_age("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_age("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_age("1d"), Ok(Duration::from_secs(86_400)));
        assert!(parse_age("ten").is_err() && parse_age("5y").is_err());
    }
}
