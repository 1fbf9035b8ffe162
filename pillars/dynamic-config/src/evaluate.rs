//! Evaluating flags in process: a bundle's policies compiled once, then each evaluation is a
//! Rego rule run over the context, with no I/O.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::bundle::Bundle;
use crate::error::ConfigError;
use crate::flagset::Flag;

/// A flag's type, as OpenFeature names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FlagType {
    Boolean,
    String,
    Integer,
    Float,
    Object,
}

impl FlagType {
    /// Whether `value` is of this type (an integer is a float too).
    pub fn holds(self, value: &Value) -> bool {
        match self {
            Self::Boolean => value.is_boolean(),
            Self::String => value.is_string(),
            Self::Integer => value.is_i64(),
            Self::Float => value.is_number(),
            Self::Object => value.is_object(),
        }
    }
}

impl fmt::Display for FlagType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::Boolean => "boolean",
            Self::String => "string",
            Self::Integer => "integer",
            Self::Float => "float",
            Self::Object => "object",
        };
        f.write_str(name)
    }
}

/// Why a flag has its value (OpenFeature's resolution reasons).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Reason {
    /// The rule's value for this context.
    TargetingMatch,
    /// The flag has no rule: its default.
    Static,
    /// The rule is not defined for this context: the default.
    Default,
    /// The rule failed or gave the wrong type: the default.
    Error,
}

/// What went wrong with an evaluation (OpenFeature's error codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    FlagNotFound,
    TypeMismatch,
    General,
    ProviderNotReady,
}

/// One flag evaluated for one context.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolution {
    /// None for an unknown flag, or when no flag set was ever fetched.
    pub value: Option<Value>,
    pub kind: Option<FlagType>,
    pub reason: Reason,
    pub error: Option<(ErrorCode, String)>,
}

impl Resolution {
    pub fn failed(code: ErrorCode, detail: String) -> Self {
        Self { value: None, kind: None, reason: Reason::Error, error: Some((code, detail)) }
    }
}

/// A bundle ready to evaluate: each rule compiled to its own entry point.
#[derive(Debug)]
pub struct Evaluator {
    flags: BTreeMap<String, Flag>,
    rules: BTreeMap<String, regorus::CompiledPolicy>,
    digest: String,
}

impl Evaluator {
    /// Compiles `bundle` (whose digest is `digest`).
    pub fn new(bundle: Bundle, digest: String) -> Result<Self, ConfigError> {
        let compile_error =
            |detail: String| ConfigError::Compile { source_name: digest.clone(), detail };
        let mut engine = regorus::Engine::new();
        for (file, text) in &bundle.policies {
            engine
                .add_policy(file.clone(), text.clone())
                .map_err(|e| compile_error(e.to_string()))?;
        }
        let mut rules = BTreeMap::new();
        for (key, flag) in &bundle.flags {
            if let Some(rule) = &flag.rule {
                let compiled = Self::compile_rule(&mut engine, rule)
                    .map_err(|e| compile_error(format!("flag {key}: {e}")))?;
                rules.insert(key.clone(), compiled);
            }
        }
        Ok(Self { flags: bundle.flags, rules, digest })
    }

    /// `rule` compiled as an entry point of `engine`'s policies (the engine is prepared
    /// once, by the first rule; each compiled rule shares its modules).
    pub(crate) fn compile_rule(
        engine: &mut regorus::Engine,
        rule: &str,
    ) -> Result<regorus::CompiledPolicy, String> {
        engine.compile_with_entrypoint(&rule.into()).map_err(|e| e.to_string())
    }

    /// The digest of the bundle this evaluates.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    pub fn flags(&self) -> impl Iterator<Item = (&String, &Flag)> {
        self.flags.iter()
    }

    /// `key` for `context` (the OpenFeature evaluation context as JSON, `targetingKey`
    /// included), given to the rule as `input`.
    pub fn evaluate(&self, key: &str, context: &Value) -> Resolution {
        let Some(flag) = self.flags.get(key) else {
            return Resolution::failed(
                ErrorCode::FlagNotFound,
                format!("flag `{key}` is not in the flag set"),
            );
        };
        let default = |reason, error| Resolution {
            value: Some(flag.default.clone()),
            kind: Some(flag.kind),
            reason,
            error,
        };
        let Some(rule) = self.rules.get(key) else { return default(Reason::Static, None) };
        match rule.eval_with_input(regorus::Value::from(context.clone())) {
            Ok(regorus::Value::Undefined) => default(Reason::Default, None),
            Ok(value) => {
                let value = serde_json::to_value(&value).unwrap_or(Value::Null);
                if flag.kind.holds(&value) {
                    Resolution {
                        value: Some(value),
                        kind: Some(flag.kind),
                        reason: Reason::TargetingMatch,
                        error: None,
                    }
                } else {
                    let detail = format!(
                        "rule {} gave {value}, not a {}",
                        flag.rule.as_deref().unwrap_or_default(),
                        flag.kind
                    );
                    default(Reason::Error, Some((ErrorCode::TypeMismatch, detail)))
                }
            }
            Err(e) => {
                let detail =
                    format!("rule {} failed: {e}", flag.rule.as_deref().unwrap_or_default());
                default(Reason::Error, Some((ErrorCode::General, detail)))
            }
        }
    }
}
