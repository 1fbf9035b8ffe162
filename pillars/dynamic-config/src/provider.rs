//! The OpenFeature provider for Rust services: flags evaluated in process from a
//! [`Client`]'s last good bundle.

use std::sync::Arc;

use async_trait::async_trait;
use open_feature::provider::{
    FeatureProvider, ProviderMetadata, ProviderStatus, ResolutionDetails,
};
use open_feature::{
    EvaluationContext, EvaluationContextFieldValue, EvaluationError, EvaluationErrorCode,
    EvaluationReason, EvaluationResult, StructValue,
};
use serde_json::{Map, Value};

use crate::client::Client;
use crate::evaluate::{ErrorCode, Reason, Resolution};

/// Register with `OpenFeature::singleton_mut().await.set_provider(...)`.
#[derive(Debug)]
pub struct PillarProvider {
    client: Arc<Client>,
    metadata: ProviderMetadata,
}

impl PillarProvider {
    pub fn new(client: Arc<Client>) -> Self {
        Self { client, metadata: ProviderMetadata::new("pillars-config") }
    }

    fn resolve<T>(
        &self,
        key: &str,
        context: &EvaluationContext,
        convert: impl Fn(&Value) -> Option<T>,
    ) -> EvaluationResult<ResolutionDetails<T>> {
        let resolution = self.client.evaluate(key, &context_json(context));
        let Resolution { value, reason, error, .. } = resolution;
        let Some(value) = value else {
            let (code, detail) = error.unwrap_or((ErrorCode::General, String::new()));
            return Err(EvaluationError::builder()
                .code(error_code(code, &detail))
                .message(detail)
                .build());
        };
        let Some(value) = convert(&value) else {
            return Err(EvaluationError::builder()
                .code(EvaluationErrorCode::TypeMismatch)
                .message(format!("flag `{key}` is {value}, not of the type asked for"))
                .build());
        };
        let reason = match reason {
            Reason::TargetingMatch => EvaluationReason::TargetingMatch,
            Reason::Static => EvaluationReason::Static,
            Reason::Default => EvaluationReason::Default,
            Reason::Error => EvaluationReason::Error,
        };
        if let Some((_, detail)) = &error {
            // The flag set's default is served; the SDK's details carry no error for it.
            tracing::warn!(flag = key, detail, "flag rule failed; serving its default");
        }
        Ok(ResolutionDetails::builder().value(value).reason(reason).build())
    }
}

fn error_code(code: ErrorCode, detail: &str) -> EvaluationErrorCode {
    match code {
        ErrorCode::FlagNotFound => EvaluationErrorCode::FlagNotFound,
        ErrorCode::TypeMismatch => EvaluationErrorCode::TypeMismatch,
        ErrorCode::ProviderNotReady => EvaluationErrorCode::ProviderNotReady,
        ErrorCode::General => EvaluationErrorCode::General(detail.to_owned()),
    }
}

/// The OpenFeature context as the JSON object the rules get as `input`.
pub fn context_json(context: &EvaluationContext) -> Value {
    let mut object = Map::new();
    if let Some(key) = &context.targeting_key {
        object.insert("targetingKey".into(), Value::String(key.clone()));
    }
    for (name, field) in &context.custom_fields {
        let value = match field {
            EvaluationContextFieldValue::Bool(b) => Value::Bool(*b),
            EvaluationContextFieldValue::Int(i) => Value::from(*i),
            EvaluationContextFieldValue::Float(f) => Value::from(*f),
            EvaluationContextFieldValue::String(s) => Value::String(s.clone()),
            EvaluationContextFieldValue::DateTime(t) => Value::String(
                t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
            ),
            // An opaque Rust value: a rule cannot read it.
            EvaluationContextFieldValue::Struct(_) => continue,
        };
        object.insert(name.clone(), value);
    }
    Value::Object(object)
}

#[async_trait]
impl FeatureProvider for PillarProvider {
    fn metadata(&self) -> &ProviderMetadata {
        &self.metadata
    }

    fn status(&self) -> ProviderStatus {
        match (self.client.evaluator(), self.client.freshness().last_error) {
            (None, _) => ProviderStatus::NotReady,
            (Some(_), Some(_)) => ProviderStatus::STALE,
            (Some(_), None) => ProviderStatus::Ready,
        }
    }

    async fn resolve_bool_value(
        &self,
        key: &str,
        context: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<bool>> {
        self.resolve(key, context, Value::as_bool)
    }

    async fn resolve_int_value(
        &self,
        key: &str,
        context: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<i64>> {
        self.resolve(key, context, Value::as_i64)
    }

    async fn resolve_float_value(
        &self,
        key: &str,
        context: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<f64>> {
        self.resolve(key, context, Value::as_f64)
    }

    async fn resolve_string_value(
        &self,
        key: &str,
        context: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<String>> {
        self.resolve(key, context, |v| v.as_str().map(ToOwned::to_owned))
    }

    async fn resolve_struct_value(
        &self,
        key: &str,
        context: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<StructValue>> {
        self.resolve(key, context, |v| match open_feature::Value::try_from(v) {
            Ok(open_feature::Value::Struct(s)) => Some(s),
            _ => None,
        })
    }
}
