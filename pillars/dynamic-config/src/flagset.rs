//! A flag set on disk: `flags.toml` declaring each flag, beside Rego policies (`*.rego`) and
//! their tests (`*_test.rego`, OPA's `test_*` rules). Loading it checks everything a
//! publisher must not get wrong, each problem with its file and line.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::bundle::Bundle;
use crate::evaluate::{Evaluator, FlagType};

/// The declaration file of a flag set.
pub const FLAGS_FILE: &str = "flags.toml";

/// One flag as `flags.toml` declares it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Flag {
    #[serde(rename = "type")]
    pub kind: FlagType,
    /// The value when no rule applies (or the rule fails); of the flag's type.
    pub default: serde_json::Value,
    #[serde(default)]
    pub description: String,
    /// A Rego reference, e.g. `data.flags.dns.new_resolver`; its value for the context is
    /// the flag's value when it is defined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
}

/// What is wrong with a flag set, where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Relative to the flag set's directory.
    pub file: String,
    /// 1-based; 0 when the problem is the file as a whole.
    pub line: usize,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            0 => write!(f, "{}: {}", self.file, self.message),
            line => write!(f, "{}:{line}: {}", self.file, self.message),
        }
    }
}

/// A flag key as OFREP puts it in a URL path.
fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 256
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// Reads and checks the flag set in `dir`: the bundle to publish, or every problem found.
pub fn load(dir: &Path) -> Result<Bundle, Vec<Problem>> {
    let mut problems = Vec::new();
    let problem =
        |file: &str, line: usize, message: String| Problem { file: file.to_owned(), line, message };
    let flags_path = dir.join(FLAGS_FILE);
    let text = match std::fs::read_to_string(&flags_path) {
        Ok(text) => text,
        Err(e) => {
            return Err(vec![problem(
                FLAGS_FILE,
                0,
                format!("cannot read {}: {e}", flags_path.display()),
            )]);
        }
    };
    let flags = parse_flags(&text).unwrap_or_else(|p| {
        problems.extend(p);
        BTreeMap::new()
    });
    let (policies, tests) = match read_policies(dir) {
        Ok(found) => found,
        Err(p) => return Err(vec![p]),
    };
    for (key, (line, flag)) in &flags {
        if !valid_key(key) {
            problems.push(problem(
                FLAGS_FILE,
                *line,
                format!("flag key `{key}`: use letters, digits, `-`, `_` and `.` only"),
            ));
        }
        if !flag.kind.holds(&flag.default) {
            problems.push(problem(
                FLAGS_FILE,
                *line,
                format!("flag `{key}`: its default {} is not a {}", flag.default, flag.kind),
            ));
        }
        if let Some(rule) = &flag.rule
            && !rule.starts_with("data.")
        {
            problems.push(problem(
                FLAGS_FILE,
                *line,
                format!("flag `{key}`: rule `{rule}` must be a reference under data, e.g. data.flags.{key}"),
            ));
        }
    }
    let bundle = Bundle {
        flags: flags.iter().map(|(k, (_, f))| (k.clone(), f.clone())).collect(),
        policies,
    };
    // Compiling every policy and every rule: what evaluation will do.
    let mut engine = regorus::Engine::new();
    for (file, text) in bundle.policies.iter().chain(&tests) {
        if let Err(e) = engine.add_policy(file.clone(), text.clone()) {
            problems.push(rego_problem(file, &e.to_string()));
        }
    }
    if problems.is_empty() {
        for (key, (line, flag)) in &flags {
            let Some(rule) = &flag.rule else { continue };
            if let Err(e) = Evaluator::compile_rule(&mut engine, rule) {
                problems.push(problem(
                    FLAGS_FILE,
                    *line,
                    format!("flag `{key}`: rule `{rule}` does not resolve: {}", first_line(&e)),
                ));
            }
        }
        problems.extend(run_tests(&mut engine, &tests));
    }
    if problems.is_empty() { Ok(bundle) } else { Err(problems) }
}

/// `flags.toml`: each flag with the line its table starts on.
fn parse_flags(text: &str) -> Result<BTreeMap<String, (usize, Flag)>, Vec<Problem>> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        #[serde(default)]
        flags: BTreeMap<String, toml::Spanned<Flag>>,
    }
    let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
    match toml::from_str::<File>(text) {
        Ok(file) => Ok(file
            .flags
            .into_iter()
            .map(|(key, flag)| {
                let line = line_of(flag.span().start);
                (key, (line, flag.into_inner()))
            })
            .collect()),
        Err(e) => {
            let line = e.span().map_or(0, |span| line_of(span.start));
            Err(vec![Problem { file: FLAGS_FILE.into(), line, message: first_line(&e) }])
        }
    }
}

/// The policies and the tests of `dir` (and below it), by relative path.
#[allow(clippy::type_complexity)]
fn read_policies(
    dir: &Path,
) -> Result<(BTreeMap<String, String>, BTreeMap<String, String>), Problem> {
    let (mut policies, mut tests) = (BTreeMap::new(), BTreeMap::new());
    let mut pending = vec![dir.to_path_buf()];
    while let Some(at) = pending.pop() {
        let entries = std::fs::read_dir(&at).map_err(|e| Problem {
            file: at.display().to_string(),
            line: 0,
            message: format!("cannot list: {e}"),
        })?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some("rego") {
                continue;
            }
            let name = path.strip_prefix(dir).unwrap_or(&path).display().to_string();
            let text = std::fs::read_to_string(&path).map_err(|e| Problem {
                file: name.clone(),
                line: 0,
                message: format!("cannot read: {e}"),
            })?;
            if name.ends_with("_test.rego") { &mut tests } else { &mut policies }
                .insert(name, text);
        }
    }
    Ok((policies, tests))
}

/// A regorus error (`--> file:line:col`, the source line, `error: ...`) as a problem.
fn rego_problem(file: &str, error: &str) -> Problem {
    let line = error
        .lines()
        .find_map(|l| l.trim().strip_prefix("--> "))
        .and_then(|at| at.rsplit(':').nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let message = error
        .lines()
        .find_map(|l| l.trim().strip_prefix("error: "))
        .map_or_else(|| first_line(&error), ToOwned::to_owned);
    Problem { file: file.to_owned(), line, message }
}

/// The first line of an error that says something.
fn first_line(error: &impl ToString) -> String {
    let text = error.to_string();
    text.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or_default().to_owned()
}

/// Every `test_*` rule of the test files must evaluate to true, as `opa test` requires.
fn run_tests(engine: &mut regorus::Engine, tests: &BTreeMap<String, String>) -> Vec<Problem> {
    let rule = regex::Regex::new(r"^\s*(test_[A-Za-z0-9_]+)\b").expect("a valid pattern");
    let package = regex::Regex::new(r"^\s*package\s+([A-Za-z0-9_.]+)").expect("a valid pattern");
    let mut problems = Vec::new();
    for (file, text) in tests {
        let Some(package) = text.lines().find_map(|l| package.captures(l)) else { continue };
        let package = package[1].to_owned();
        let mut seen = std::collections::BTreeSet::new();
        for (n, line) in text.lines().enumerate() {
            let Some(name) = rule.captures(line).map(|c| c[1].to_owned()) else { continue };
            if !seen.insert(name.clone()) {
                continue; // a rule in several bodies is one test
            }
            engine.set_input(regorus::Value::new_object());
            let failed = match engine.eval_rule(format!("data.{package}.{name}")) {
                Ok(regorus::Value::Bool(true)) => continue,
                Ok(regorus::Value::Undefined) => "failed (undefined)".to_owned(),
                Ok(other) => format!("failed ({other})"),
                Err(e) => format!("errored: {}", first_line(&e)),
            };
            problems.push(Problem {
                file: file.clone(),
                line: n + 1,
                message: format!("test data.{package}.{name} {failed}"),
            });
        }
    }
    problems
}
