//! `pillar flags`: the Config Pillar from a shell — check a flag set, publish it to S3,
//! list and roll back what was published, evaluate a flag through the OpenFeature SDK, and
//! serve OFREP locally (as AppConfig's agent serves on localhost).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use clap::Subcommand;
use dynamic_config::agent::Agent;
use dynamic_config::client::Client;
use dynamic_config::evaluate::FlagType;
use dynamic_config::flagset;
use dynamic_config::provider::PillarProvider;
use dynamic_config::store::Store;

#[derive(Debug, clap::Args)]
pub struct Location {
    /// The flag sets' bucket.
    #[arg(long)]
    bucket: String,
    /// Key prefix inside the bucket.
    #[arg(long, default_value = "")]
    prefix: String,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a flag set: every policy compiles, every default has its flag's type, every
    /// rule resolves, every Rego test passes. Exit 1 listing each problem with file:line.
    Check { dir: PathBuf },
    /// Check, then upload the bundle under its digest and move the `current` pointer to it
    /// (a conditional write: a concurrent publish fails, it does not interleave).
    Publish {
        dir: PathBuf,
        #[command(flatten)]
        location: Location,
    },
    /// Every pointer written, newest first.
    History {
        #[command(flatten)]
        location: Location,
        #[arg(long)]
        json: bool,
    },
    /// Point `current` back at an earlier bundle (a digest, or its start, from `history`).
    Rollback {
        version: String,
        #[command(flatten)]
        location: Location,
    },
    /// Evaluate a flag as a Rust service does: the OpenFeature SDK with this pillar's
    /// provider, from S3 or, with S3 gone, from the cache directory's last good bundle.
    Eval {
        key: String,
        #[command(flatten)]
        location: Location,
        /// The evaluation context, JSON (targetingKey and attributes).
        #[arg(long, default_value = "{}")]
        context: String,
        #[arg(long)]
        cache_dir: Option<PathBuf>,
    },
    /// Serve OFREP (`POST /ofrep/v1/evaluate/flags[/{key}]`) for services in any language,
    /// polling the pointer and serving the last good bundle while S3 is gone.
    Serve {
        #[command(flatten)]
        location: Location,
        #[arg(long, default_value = "127.0.0.1:8016")]
        addr: SocketAddr,
        /// Where the last good bundle is kept across restarts.
        #[arg(long, default_value = ".pillars/config-cache")]
        cache_dir: PathBuf,
        #[arg(long, default_value = "30s", value_parser = crate::logs::parse_age)]
        poll: Duration,
    },
}

pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    if let Command::Check { dir } = &command {
        return Ok(match flagset::load(dir) {
            Ok(bundle) => {
                println!(
                    "ok          {} flags, {} policies in {}",
                    bundle.flags.len(),
                    bundle.policies.len(),
                    dir.display()
                );
                ExitCode::SUCCESS
            }
            Err(problems) => {
                for problem in &problems {
                    eprintln!("{}", dir.join(problem.to_string()).display());
                }
                eprintln!("{} problem(s)", problems.len());
                ExitCode::FAILURE
            }
        });
    }
    crate::runtime()?.block_on(async {
        let aws = aws_config::load_from_env().await;
        let store = |location: &Location| {
            Store::new(aws_sdk_s3::Client::new(&aws), &location.bucket, &location.prefix)
        };
        match command {
            Command::Check { .. } => unreachable!("answered above"),
            Command::Publish { dir, location } => {
                let bundle = flagset::load(&dir).map_err(dynamic_config::ConfigError::Check)?;
                let store = store(&location);
                let moved = store.publish(&bundle).await?;
                match moved.unchanged {
                    true => {
                        println!("unchanged   {} already serves {}", store.location(), moved.digest)
                    }
                    false => println!(
                        "published   {} now serves {} ({} flags; was {})",
                        store.location(),
                        moved.digest,
                        bundle.flags.len(),
                        moved.previous.as_deref().unwrap_or("nothing")
                    ),
                }
                Ok(ExitCode::SUCCESS)
            }
            Command::History { location, json } => {
                let versions = store(&location).history().await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&versions)?);
                }
                for v in versions.iter().filter(|_| !json) {
                    let mark = if v.current { "current" } else { "" };
                    println!(
                        "{:<8}{}  {}  {} flags",
                        mark, v.pointer.published_at, v.pointer.digest, v.pointer.flags
                    );
                }
                Ok(ExitCode::SUCCESS)
            }
            Command::Rollback { version, location } => {
                let store = store(&location);
                let moved = store.rollback(&version).await?;
                println!(
                    "rolled back {} now serves {} (was {})",
                    store.location(),
                    moved.digest,
                    moved.previous.as_deref().unwrap_or("nothing")
                );
                Ok(ExitCode::SUCCESS)
            }
            Command::Eval { key, location, context, cache_dir } => {
                let context: serde_json::Value =
                    serde_json::from_str(&context).context("--context must be a JSON object")?;
                let client = Arc::new(Client::new(store(&location), cache_dir));
                if let Err(e) = client.poll().await {
                    eprintln!(
                        "pillar: S3 did not answer ({e}); evaluating from the cached flag set"
                    );
                }
                let mut api = open_feature::OpenFeature::singleton_mut().await;
                api.set_provider(PillarProvider::new(Arc::clone(&client))).await;
                let flags = api.create_client();
                drop(api);
                let context = evaluation_context(&context)?;
                // Asked for as the type the flag set declares.
                let kind = client
                    .evaluator()
                    .and_then(|e| e.flags().find(|(k, _)| **k == key).map(|(_, f)| f.kind));
                let shown = match kind {
                    Some(FlagType::Boolean) => flags
                        .get_bool_details(&key, Some(&context), None)
                        .await
                        .map(|d| (d.value.to_string(), d.reason)),
                    Some(FlagType::String) => flags
                        .get_string_details(&key, Some(&context), None)
                        .await
                        .map(|d| (d.value, d.reason)),
                    Some(FlagType::Integer) => flags
                        .get_int_details(&key, Some(&context), None)
                        .await
                        .map(|d| (d.value.to_string(), d.reason)),
                    Some(FlagType::Float) => flags
                        .get_float_details(&key, Some(&context), None)
                        .await
                        .map(|d| (d.value.to_string(), d.reason)),
                    Some(FlagType::Object) | None => flags
                        .get_struct_details::<open_feature::StructValue>(&key, Some(&context), None)
                        .await
                        .map(|d| (format!("{:?}", d.value.fields), d.reason)),
                };
                let freshness = client.freshness();
                let age = freshness
                    .age_seconds
                    .map_or("never fetched".to_owned(), |a| format!("{a} s old"));
                match shown {
                    Ok((value, reason)) => {
                        let reason =
                            reason.map_or_else(|| "no reason".to_owned(), |r| format!("{r:?}"));
                        println!(
                            "{key} = {value} ({reason}; bundle {}, {age})",
                            freshness.digest.as_deref().unwrap_or("none")
                        );
                        Ok(ExitCode::SUCCESS)
                    }
                    Err(e) => {
                        println!("{key}: {:?} {} ({age})", e.code, e.message.unwrap_or_default());
                        Ok(ExitCode::FAILURE)
                    }
                }
            }
            Command::Serve { location, addr, cache_dir, poll } => {
                let client = Client::new(store(&location), Some(cache_dir));
                let agent = Arc::new(Agent::new(client, poll));
                tokio::spawn(Arc::clone(&agent).poll_forever());
                let listener = tokio::net::TcpListener::bind(addr).await?;
                eprintln!(
                    "pillar: serving OFREP on http://{addr} from {}",
                    agent.client.store().location()
                );
                let app = axum::Router::new().fallback(answer).with_state(Arc::clone(&agent));
                axum::serve(listener, app).await?;
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}

async fn answer(
    State(agent): State<Arc<Agent>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    agent.respond(&method, &uri, &headers, &body).await.map(axum::body::Body::from)
}

/// A JSON object as an OpenFeature evaluation context.
fn evaluation_context(
    context: &serde_json::Value,
) -> anyhow::Result<open_feature::EvaluationContext> {
    let object = context.as_object().context("--context must be a JSON object")?;
    let mut result = open_feature::EvaluationContext::default();
    for (name, value) in object {
        if name == "targetingKey" {
            result = result.with_targeting_key(value.as_str().unwrap_or_default());
            continue;
        }
        result = match value {
            serde_json::Value::Bool(b) => result.with_custom_field(name, *b),
            serde_json::Value::Number(n) if n.is_i64() => {
                result.with_custom_field(name, n.as_i64().unwrap_or(0))
            }
            serde_json::Value::Number(n) => {
                result.with_custom_field(name, n.as_f64().unwrap_or(0.0))
            }
            serde_json::Value::String(s) => result.with_custom_field(name, s.as_str()),
            other => anyhow::bail!("--context {name}: {other} is not a boolean, number or string"),
        };
    }
    Ok(result)
}
