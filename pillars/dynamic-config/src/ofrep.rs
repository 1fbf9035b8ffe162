//! The OpenFeature Remote Evaluation Protocol (OFREP, `service/openapi.yaml` of
//! open-feature/protocol), so services in any language evaluate through their OpenFeature
//! SDK's OFREP provider: one HTTP-agnostic handler, served by `pillar flags serve` and by
//! the `config-eval` Lambda.
//!
//! - `POST /ofrep/v1/evaluate/flags/{key}`: 200 with the value and reason; 404
//!   `FLAG_NOT_FOUND`; 400 `PARSE_ERROR` / `INVALID_CONTEXT`, or `TYPE_MISMATCH` /
//!   `GENERAL` when the flag's rule failed (the SDK then serves the caller's default);
//!   500 when no flag set was ever fetched.
//! - `POST /ofrep/v1/evaluate/flags`: every flag, each a success or a failure, with an
//!   ETag over the bundle and the context; `If-None-Match` with it answers 304.
//!
//! Each answer's metadata names the bundle served and how old it is.

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::client::Client;
use crate::evaluate::{ErrorCode, Reason, Resolution};

const SINGLE: &str = "/ofrep/v1/evaluate/flags/";
const BULK: &str = "/ofrep/v1/evaluate/flags";

/// An HTTP answer, for whichever server carries it.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub status: u16,
    pub etag: Option<String>,
    /// JSON, or none (304).
    pub body: Option<Value>,
    /// A rule failed, or no flag set could be served: what the alarm counts.
    pub failed: bool,
}

impl Answer {
    fn json(status: u16, body: Value) -> Self {
        Self { status, etag: None, body: Some(body), failed: false }
    }

    pub fn body_bytes(&self) -> Vec<u8> {
        self.body.as_ref().map(|b| serde_json::to_vec(b).expect("serializes")).unwrap_or_default()
    }
}

/// Answers one request.
pub fn handle(
    client: &Client,
    method: &str,
    path: &str,
    if_none_match: Option<&str>,
    body: &[u8],
) -> Answer {
    let path = path.split('?').next().unwrap_or_default();
    let single = path.strip_prefix(SINGLE).filter(|k| !k.is_empty() && !k.contains('/'));
    if single.is_none() && path != BULK {
        return Answer::json(404, json!({"errorDetails": format!("no such endpoint: {path}")}));
    }
    if method != "POST" {
        return Answer::json(405, json!({"errorDetails": "OFREP evaluations are POST requests"}));
    }
    let context = match context(body) {
        Ok(context) => context,
        Err((code, detail)) => {
            let mut failure = json!({"errorCode": code, "errorDetails": detail});
            if let Some(key) = single {
                failure["key"] = json!(key);
            }
            return Answer::json(400, failure);
        }
    };
    let Some(evaluator) = client.evaluator() else {
        let not_ready = Answer::json(500, json!({"errorDetails": client.not_ready()}));
        return Answer { failed: true, ..not_ready };
    };
    let metadata = metadata(client);
    match single {
        Some(key) => {
            let key = percent_encoding::percent_decode_str(key).decode_utf8_lossy();
            let resolution = evaluator.evaluate(&key, &context);
            let status = match &resolution.error {
                None => 200,
                Some((ErrorCode::FlagNotFound, _)) => 404,
                Some((ErrorCode::ProviderNotReady, _)) => 500,
                Some(_) => 400,
            };
            let failed = resolution.rule_failed();
            Answer { failed, ..Answer::json(status, evaluation(&key, resolution, &metadata)) }
        }
        None => {
            let etag = bulk_etag(evaluator.digest(), &context);
            if if_none_match.is_some_and(|given| given.split(',').any(|t| t.trim() == etag)) {
                return Answer { status: 304, etag: Some(etag), body: None, failed: false };
            }
            let resolutions = evaluator.evaluate_all(&context);
            let failed = resolutions.iter().any(|(_, resolution)| resolution.rule_failed());
            let flags: Vec<Value> = resolutions
                .into_iter()
                .map(|(key, resolution)| evaluation(key, resolution, &metadata))
                .collect();
            Answer {
                status: 200,
                etag: Some(etag),
                body: Some(json!({"flags": flags, "metadata": metadata})),
                failed,
            }
        }
    }
}

/// The request's `context` (absent: empty); a body that is not JSON is `PARSE_ERROR`.
fn context(body: &[u8]) -> Result<Value, (&'static str, String)> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Map::new()));
    }
    let request: Value = serde_json::from_slice(body)
        .map_err(|e| ("PARSE_ERROR", format!("the body is not JSON: {e}")))?;
    match request.get("context") {
        None | Some(Value::Null) => Ok(Value::Object(Map::new())),
        Some(context @ Value::Object(_)) => Ok(context.clone()),
        Some(_) => Err(("INVALID_CONTEXT", "`context` must be an object".to_owned())),
    }
}

fn metadata(client: &Client) -> Value {
    let freshness = client.freshness();
    let mut metadata = Map::new();
    if let Some(digest) = freshness.digest {
        metadata.insert("bundle".into(), json!(digest));
    }
    if let Some(age) = freshness.age_seconds {
        metadata.insert("bundleAgeSeconds".into(), json!(age));
    }
    Value::Object(metadata)
}

/// One flag's evaluation as OFREP's `evaluationSuccess` or `evaluationFailure`.
fn evaluation(key: &str, resolution: Resolution, metadata: &Value) -> Value {
    match (resolution.error, resolution.value) {
        (None, Some(value)) => {
            // The variant names where the value came from (OpenFeature SDKs expect one).
            let reason = resolution.reason;
            let variant = if reason == Reason::TargetingMatch { "rule" } else { "default" };
            json!({"key": key, "value": value, "reason": reason, "variant": variant, "metadata": metadata})
        }
        (error, _) => {
            // The codes and reasons serialize as OFREP spells them (SCREAMING_SNAKE_CASE).
            let (code, detail) = error.unwrap_or((ErrorCode::General, "no value".to_owned()));
            json!({"key": key, "errorCode": code, "errorDetails": detail, "metadata": metadata})
        }
    }
}

/// Changes when the bundle or the context does: what a bulk answer depends on.
fn bulk_etag(digest: &str, context: &Value) -> String {
    let mut hash = Sha256::new();
    hash.update(digest.as_bytes());
    hash.update(serde_json::to_vec(context).expect("serializes"));
    format!("\"{}\"", &hex::encode(hash.finalize())[..32])
}
