//! Evaluating flags in process: a bundle's policies compiled once, then each evaluation is a
//! Rego rule run over the context, with no I/O.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

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

    /// Whether the flag's rule failed or gave the wrong type: the flag set's fault, which
    /// the alarm counts (an unknown key is the caller's).
    pub fn rule_failed(&self) -> bool {
        matches!(self.error, Some((ErrorCode::TypeMismatch | ErrorCode::General, _)))
    }
}

/// Instructions one evaluation may run on regorus's VM: far above any rule over an
/// evaluation context, and a bound on one that loops over a flood of input.
const MAX_INSTRUCTIONS: usize = 10_000_000;

/// One flag's rule, ready to run over a context.
#[derive(Debug)]
enum Rule {
    /// Compiled to regorus's bytecode VM (RVM): a few microseconds, where the interpreter
    /// builds an engine for each evaluation and takes several times as long.
    Program(Arc<regorus::rvm::Program>),
    /// Interpreted: every rule the VM would not answer exactly as the interpreter does.
    Interpreted(regorus::CompiledPolicy),
}

impl Rule {
    fn compile(policy: regorus::CompiledPolicy, rule: &str, vm: bool) -> Self {
        if !vm {
            return Self::Interpreted(policy);
        }
        match regorus::languages::rego::compiler::Compiler::compile_from_policy(&policy, &[rule]) {
            Ok(program) if Self::exact_on_the_vm(&program) => Self::Program(program),
            _ => Self::Interpreted(policy),
        }
    }

    /// Whether the VM gives this program's answers exactly as the interpreter (the engine
    /// `pillar flags check` runs the tests on) does. The VM turns every runtime error into
    /// undefined, where the interpreter fails: two rule bodies giving different values, a
    /// builtin or arithmetic on the wrong type, `count` of a number. And it orders values of
    /// different types differently (`"a" < 1`). So only programs that cannot fail and do
    /// not order run there: lookups, equality, membership, `not`, `else`, literals, rules
    /// with one definition or all definitions of one value. The rest (`with`, loops,
    /// builtins, functions, comparisons) is interpreted, with the same answers, slower.
    fn exact_on_the_vm(program: &regorus::rvm::Program) -> bool {
        use regorus::rvm::Instruction as I;
        use regorus::rvm::program::RuleType;
        let rules_cannot_conflict = program.rule_infos.iter().all(|rule| {
            rule.function_info.is_none()
                && match rule.rule_type {
                    RuleType::Complete => {
                        rule.definitions.len() == 1 || rule.early_exit_on_first_success
                    }
                    RuleType::PartialSet => true,
                    RuleType::PartialObject => false,
                }
        });
        rules_cannot_conflict
            && program.instructions.iter().all(|instruction| {
                matches!(
                    instruction,
                    I::Load { .. }
                        | I::LoadTrue { .. }
                        | I::LoadFalse { .. }
                        | I::LoadNull { .. }
                        | I::LoadBool { .. }
                        | I::LoadData { .. }
                        | I::LoadInput { .. }
                        | I::Move { .. }
                        | I::Eq { .. }
                        | I::Ne { .. }
                        | I::And { .. }
                        | I::Or { .. }
                        | I::Not { .. }
                        | I::Return { .. }
                        | I::Index { .. }
                        | I::IndexLiteral { .. }
                        | I::ChainedIndex { .. }
                        | I::ObjectCreate { .. }
                        | I::ObjectSet { .. }
                        | I::ArrayNew { .. }
                        | I::ArrayPush { .. }
                        | I::ArrayCreate { .. }
                        | I::SetNew { .. }
                        | I::SetAdd { .. }
                        | I::SetCreate { .. }
                        | I::Contains { .. }
                        | I::AssertEq { .. }
                        | I::Guard { .. }
                        | I::ReturnUndefinedIfNotTrue { .. }
                        | I::CallRule { .. }
                        | I::RuleInit { .. }
                        | I::RuleReturn { .. }
                        | I::DestructuringSuccess { .. }
                        | I::Halt {}
                )
            })
    }

    fn run(&self, input: regorus::Value) -> Result<regorus::Value, String> {
        match self {
            Self::Program(program) => {
                let mut vm = regorus::rvm::RegoVM::new();
                vm.load_program(Arc::clone(program));
                vm.set_max_instructions(MAX_INSTRUCTIONS);
                vm.set_input(input);
                vm.execute().map_err(|e| e.to_string())
            }
            Self::Interpreted(policy) => policy.eval_with_input(input).map_err(|e| e.to_string()),
        }
    }
}

/// A bundle ready to evaluate: each rule compiled to its own entry point.
#[derive(Debug)]
pub struct Evaluator {
    flags: BTreeMap<String, Flag>,
    rules: BTreeMap<String, Rule>,
    digest: String,
}

impl Evaluator {
    /// Compiles `bundle` (whose digest is `digest`).
    pub fn new(bundle: Bundle, digest: String) -> Result<Self, ConfigError> {
        Self::compile(bundle, digest, true)
    }

    /// `bundle` with every rule interpreted: what the VM's answers are checked against.
    #[cfg(test)]
    pub(crate) fn interpreted(bundle: Bundle) -> Result<Self, ConfigError> {
        Self::compile(bundle, "sha256:interpreted".into(), false)
    }

    fn compile(bundle: Bundle, digest: String, vm: bool) -> Result<Self, ConfigError> {
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
                rules.insert(key.clone(), Rule::compile(compiled, rule, vm));
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

    /// Whether `key`'s rule runs on regorus's VM (else interpreted, or no rule).
    #[cfg(test)]
    pub(crate) fn on_the_vm(&self, key: &str) -> bool {
        matches!(self.rules.get(key), Some(Rule::Program(_)))
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
        self.resolve(key, flag, &regorus::Value::from(context.clone()))
    }

    /// Every flag for `context`, in key order: the context converted for Rego once.
    pub fn evaluate_all(&self, context: &Value) -> Vec<(&str, Resolution)> {
        let input = regorus::Value::from(context.clone());
        self.flags
            .iter()
            .map(|(key, flag)| (key.as_str(), self.resolve(key, flag, &input)))
            .collect()
    }

    /// `flag` (named `key`) for `input`, the context as Rego takes it (shared, not copied).
    fn resolve(&self, key: &str, flag: &Flag, input: &regorus::Value) -> Resolution {
        let default = |reason, error| Resolution {
            value: Some(flag.default.clone()),
            kind: Some(flag.kind),
            reason,
            error,
        };
        let Some(rule) = self.rules.get(key) else { return default(Reason::Static, None) };
        match rule.run(input.clone()) {
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
