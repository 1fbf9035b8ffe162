//! The library without S3: a flag set loaded, checked and evaluated as a service would.

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::bundle::digest;
use crate::evaluate::{ErrorCode, Evaluator, Reason};
use crate::flagset::{Problem, load};

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/flags")
}

/// The example flag set copied into a temporary directory, with `change` applied.
fn changed(change: impl FnOnce(&Path)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for entry in std::fs::read_dir(example()).expect("the example flag set") {
        let entry = entry.expect("an entry");
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).expect("copy");
    }
    change(dir.path());
    dir
}

fn evaluator() -> Evaluator {
    let bundle = load(&example()).expect("the example flag set is valid");
    let bytes = bundle.to_bytes();
    Evaluator::new(bundle, digest(&bytes)).expect("compiles")
}

#[test]
fn the_example_flag_set_checks_and_ships_without_its_tests() {
    let bundle = load(&example()).expect("valid");
    assert_eq!(bundle.flags.len(), 6);
    assert!(bundle.policies.contains_key("dns.rego"));
    assert!(!bundle.policies.keys().any(|p| p.ends_with("_test.rego")));
    // The same flag set gives the same bytes, so the same digest: publishing twice is one bundle.
    assert_eq!(digest(&bundle.to_bytes()), digest(&load(&example()).expect("valid").to_bytes()));
}

#[test]
fn a_rule_defined_for_the_context_is_a_targeting_match_and_else_the_default() {
    let flags = evaluator();
    let platform =
        flags.evaluate("dns-new-resolver", &json!({"targetingKey": "svc-1", "team": "platform"}));
    assert_eq!((platform.value, platform.reason), (Some(json!(true)), Reason::TargetingMatch));
    let payments =
        flags.evaluate("dns-new-resolver", &json!({"team": "payments", "region": "us-east-1"}));
    assert_eq!(
        (payments.value, payments.reason, payments.error),
        (Some(json!(false)), Reason::Default, None)
    );
    let frozen = flags.evaluate("deploy-freeze", &json!({}));
    assert_eq!((frozen.value, frozen.reason), (Some(json!(false)), Reason::Static));
    let builds = flags.evaluate("max-parallel-builds", &json!({"tier": "premium"}));
    assert_eq!(builds.value, Some(json!(8)));
    let weight = flags.evaluate("canary-weight", &json!({"region": "eu-west-1"}));
    assert_eq!(weight.value, Some(json!(0.25)));
    let settings = flags.evaluate("resolver-settings", &json!({}));
    assert_eq!(settings.value, Some(json!({"timeout_ms": 500, "retries": 2})));
}

#[test]
fn an_unknown_flag_is_not_found_and_a_failing_or_mistyped_rule_gives_the_default_with_its_code() {
    let flags = evaluator();
    let unknown = flags.evaluate("no-such-flag", &json!({}));
    assert_eq!((unknown.value, unknown.error.map(|e| e.0)), (None, Some(ErrorCode::FlagNotFound)));

    let dir = changed(|dir| {
        // A string where the flag is an integer; and two values for one context.
        std::fs::write(
            dir.join("builds.rego"),
            "package flags.builds\n\nmax_parallel := \"many\" if input.team == \"platform\"\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("logging.rego"),
            "package flags.logging\n\nlevel := \"debug\" if input.a\n\nlevel := \"warn\" if input.b\n",
        )
        .unwrap();
    });
    let bundle = load(dir.path()).expect("it compiles: the types are known only at evaluation");
    let flags = Evaluator::new(bundle, "sha256:test".into()).expect("compiles");
    let mistyped = flags.evaluate("max-parallel-builds", &json!({"team": "platform"}));
    assert_eq!(mistyped.value, Some(json!(4)));
    assert_eq!(mistyped.reason, Reason::Error);
    assert_eq!(mistyped.error.map(|e| e.0), Some(ErrorCode::TypeMismatch));
    let conflicting = flags.evaluate("log-level", &json!({"a": true, "b": true}));
    assert_eq!(conflicting.value, Some(json!("info")));
    assert_eq!(conflicting.error.map(|e| e.0), Some(ErrorCode::General));
}

fn problems(change: impl FnOnce(&Path)) -> Vec<Problem> {
    let dir = changed(change);
    load(dir.path()).expect_err("the check must refuse it")
}

#[test]
fn the_check_names_each_problem_with_its_file_and_line() {
    let broken_policy = problems(|dir| {
        std::fs::write(
            dir.join("dns.rego"),
            "package flags.dns\n\nnew_resolver if {\n\tinput.team ==\n}\n",
        )
        .unwrap();
    });
    assert!(broken_policy.iter().any(|p| p.file == "dns.rego" && p.line >= 3), "{broken_policy:?}");

    let typed = problems(|dir| {
        let text = std::fs::read_to_string(dir.join("flags.toml")).unwrap();
        std::fs::write(dir.join("flags.toml"), text.replace("default = 4", "default = \"four\""))
            .unwrap();
    });
    let [problem] = typed.as_slice() else { panic!("{typed:?}") };
    assert_eq!(problem.file, "flags.toml");
    assert!(
        problem.message.contains("max-parallel-builds") && problem.message.contains("integer"),
        "{problem}"
    );
    let text = std::fs::read_to_string(example().join("flags.toml")).unwrap();
    let declared =
        text.lines().position(|l| l.contains("[flags.max-parallel-builds]")).unwrap() + 1;
    assert_eq!(problem.line, declared, "{problem}");

    let unresolved = problems(|dir| {
        let text = std::fs::read_to_string(dir.join("flags.toml")).unwrap();
        std::fs::write(
            dir.join("flags.toml"),
            text.replace("data.flags.rollout.canary_weight", "data.flags.rollout.nowhere"),
        )
        .unwrap();
    });
    assert!(
        unresolved.iter().any(|p| p.message.contains("data.flags.rollout.nowhere")),
        "{unresolved:?}"
    );

    let failing_test = problems(|dir| {
        std::fs::write(
            dir.join("dns.rego"),
            "package flags.dns\n\nnew_resolver if input.team == \"network\"\n",
        )
        .unwrap();
    });
    let test_text = std::fs::read_to_string(example().join("dns_test.rego")).unwrap();
    let test_line =
        test_text.lines().position(|l| l.starts_with("test_the_platform_team_gets_it")).unwrap()
            + 1;
    assert!(
        failing_test.iter().any(|p| p.file == "dns_test.rego"
            && p.line == test_line
            && p.message.contains("test_the_platform_team_gets_it")),
        "{failing_test:?}"
    );

    let syntax = problems(|dir| {
        std::fs::write(dir.join("flags.toml"), "[flags.x]\ntype = \"boolean\"\ndefault = \n")
            .unwrap()
    });
    assert!(syntax.iter().any(|p| p.file == "flags.toml" && p.line == 3), "{syntax:?}");
}
