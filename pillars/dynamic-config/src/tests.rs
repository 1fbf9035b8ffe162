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

/// Rules of the shapes flag sets use, and contexts that miss attributes or give the wrong
/// types: the fast path (regorus's VM) must answer every one as the interpreter does, and
/// the shapes where it would not (conflicts, builtins, comparisons, loops) stay interpreted.
#[test]
fn rules_on_the_vm_answer_exactly_as_the_interpreter_does() {
    const POLICY: &str = r#"package flags.shapes

platform if input.team == "platform"

europe if input.region in {"eu-west-1", "eu-central-1"}

not_canary if not input.cohort == "canary"

not_search if input.team != "search"

tier := input.account.tier

level := "debug" if input.team == "platform"
else := "warn" if input.region == "eu-west-1"

frozen if input.frozen == true

eligible if {
	platform
	not frozen
}

default weight := 0.1

weight := 0.5 if input.cohort == "canary"

settings := {"team": input.team, "retries": 2} if input.team

resolver if input.team == "platform"

resolver if {
	input.region == "eu-west-1"
	input.cohort == "canary"
}

conflicting := "a" if input.a

conflicting := "b" if input.b

bigger := input.n > 3

prefixed if startswith(input.team, "plat")

beta if {
	some tag in input.tags
	tag == "beta"
}
"#;
    let on_the_vm = [
        ("platform", "boolean"),
        ("europe", "boolean"),
        ("not_canary", "boolean"),
        ("not_search", "boolean"),
        ("tier", "string"),
        ("level", "string"),
        ("eligible", "boolean"),
        ("weight", "float"),
        ("settings", "object"),
        ("resolver", "boolean"),
    ];
    let interpreted = [
        ("conflicting", "string"),
        ("bigger", "boolean"),
        ("prefixed", "boolean"),
        ("beta", "boolean"),
    ];
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("shapes.rego"), POLICY).unwrap();
    let flags: String = on_the_vm
        .iter()
        .chain(&interpreted)
        .map(|(rule, kind)| {
            let default = match *kind {
                "boolean" => "false",
                "string" => "\"none\"",
                "float" => "0.0",
                _ => "{}",
            };
            format!(
                "[flags.{rule}]\ntype = \"{kind}\"\ndefault = {default}\ndescription = \"{rule}\"\nrule = \"data.flags.shapes.{rule}\"\n\n"
            )
        })
        .collect();
    std::fs::write(dir.path().join("flags.toml"), flags).unwrap();
    let fast =
        Evaluator::new(load(dir.path()).expect("valid"), "sha256:test".into()).expect("compiles");
    let reference = Evaluator::interpreted(load(dir.path()).expect("valid")).expect("compiles");
    for (rule, _) in on_the_vm {
        assert!(fast.on_the_vm(rule), "{rule} should run on the VM");
    }
    for (rule, _) in interpreted {
        assert!(!fast.on_the_vm(rule), "{rule} must stay interpreted");
    }

    let mut contexts = vec![
        json!({}),
        json!({"team": 5, "region": ["eu-west-1"], "cohort": null, "account": "gold"}),
        json!({"account": {"tier": "gold"}, "frozen": "yes", "n": "7", "tags": "beta"}),
        json!({"account": {"tier": 3}, "frozen": true, "team": "platform", "n": 7}),
        json!({"a": true, "b": true, "tags": ["alpha", "beta"], "n": 2}),
        json!({"a": true, "tags": [1, "beta"], "team": "plat", "n": 3.5}),
    ];
    for team in ["platform", "search", "payments"] {
        for region in ["eu-west-1", "eu-central-1", "us-east-1"] {
            for cohort in ["canary", "main"] {
                contexts.push(json!({"targetingKey": "svc", "team": team, "region": region, "cohort": cohort}));
            }
        }
    }
    let mut defined = 0;
    for context in &contexts {
        for (rule, _) in on_the_vm.iter().chain(&interpreted) {
            let ours = fast.evaluate(rule, context);
            let theirs = reference.evaluate(rule, context);
            defined += usize::from(ours.reason == Reason::TargetingMatch);
            assert_eq!(
                (&ours.value, ours.reason, ours.error.as_ref().map(|e| e.0)),
                (&theirs.value, theirs.reason, theirs.error.as_ref().map(|e| e.0)),
                "{rule} for {context}"
            );
        }
    }
    // Both sides of every rule were met: values defined, and defaults.
    assert!(defined > contexts.len() * 3, "only {defined} defined answers");
    let conflict = fast.evaluate("conflicting", &json!({"a": true, "b": true}));
    assert_eq!(conflict.error.map(|e| e.0), Some(ErrorCode::General), "a conflict is an error");

    // The example flag set, on every context.
    let examples = evaluator();
    let interpreted_example =
        Evaluator::interpreted(load(&example()).expect("valid")).expect("compiles");
    assert!(examples.on_the_vm("dns-new-resolver"));
    for context in &contexts {
        for (key, _) in examples.flags() {
            let ours = examples.evaluate(key, context);
            let theirs = interpreted_example.evaluate(key, context);
            assert_eq!(
                (&ours.value, ours.reason),
                (&theirs.value, theirs.reason),
                "{key} for {context}"
            );
        }
    }
}

/// An agent serving the flag set its cache holds (S3 is never asked): the alarm counts a
/// rule that failed (alone or in a bulk answer) and nothing to serve, never an unknown key.
#[test]
fn the_agent_counts_failed_rules_and_nothing_to_serve_but_not_unknown_keys() {
    use std::time::Duration;

    use crate::agent::Agent;
    use crate::client::Client;

    let agent = |cache: &Path| {
        Agent::new(Client::new(unreached_store(), Some(cache.to_owned())), Duration::from_secs(30))
    };
    let errors = |agent: &Agent| agent.metrics().to_json(0)["EvaluationErrors"].clone();
    let single = "/ofrep/v1/evaluate/flags/dns-new-resolver";

    let nothing = tempfile::tempdir().expect("temp dir");
    let unready = agent(nothing.path());
    let answer = unready.answer("POST", single, None, b"{}");
    assert_eq!((answer.status, answer.failed), (500, true));
    assert_eq!(errors(&unready), json!(1.0));

    // Two values for one context: the log level's rule fails for {a, b}.
    let set = changed(|dir| {
        std::fs::write(
            dir.join("logging.rego"),
            "package flags.logging\n\nlevel := \"debug\" if input.a\n\nlevel := \"warn\" if input.b\n",
        )
        .unwrap();
    });
    let bytes = load(set.path()).expect("valid").to_bytes();
    let cache = tempfile::tempdir().expect("temp dir");
    write_cache(cache.path(), &bytes, true);
    let serving = agent(cache.path());
    let both = br#"{"context": {"a": true, "b": true}}"#;
    let answers = [
        (single, &br#"{"context": {"team": "platform"}}"#[..], 200, false),
        ("/ofrep/v1/evaluate/flags/no-such-flag", b"{}", 404, false),
        ("/ofrep/v1/evaluate/flags/log-level", both, 400, true),
        ("/ofrep/v1/evaluate/flags", both, 200, true),
        ("/ofrep/v1/evaluate/flags", b"{}", 200, false),
    ];
    for (path, body, status, failed) in answers {
        let answer = serving.answer("POST", path, None, body);
        assert_eq!((answer.status, answer.failed), (status, failed), "{path} {answer:?}");
    }
    let metrics = serving.metrics().to_json(0);
    assert_eq!((&metrics["Evaluations"], &metrics["EvaluationErrors"]), (&json!(5.0), &json!(2.0)));
}

/// A store no test reaches: the client serves what its cache holds.
fn unreached_store() -> crate::store::Store {
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("eu-west-1"))
            .build(),
    );
    crate::store::Store::new(s3, "flags", "")
}

/// The bundle `bytes` in a client's cache `dir`, named by its digest, and (if `current`)
/// the pointer naming it, as the client writes them.
fn write_cache(dir: &Path, bytes: &[u8], current: bool) {
    let digest = digest(bytes);
    let file = format!("bundle-{}.json", digest.trim_start_matches("sha256:"));
    std::fs::write(dir.join(file), bytes).unwrap();
    if current {
        let pointer = json!({
            "pointer": {"digest": digest, "published_at": "2026-12-01T00:00:00Z", "flags": 6},
            "etag": "\"cached\"",
            "confirmed_at": 0,
        });
        std::fs::write(dir.join("pointer.json"), pointer.to_string()).unwrap();
    }
}

/// A process stopped while caching a new flag set (its bundle written, the pointer not yet
/// moved): restarted, it serves the flag set the pointer names, not nothing.
#[test]
fn a_cache_cut_short_between_its_files_still_serves_the_last_good_flag_set() {
    use crate::client::Client;

    let cache = tempfile::tempdir().expect("temp dir");
    let old = load(&example()).expect("valid").to_bytes();
    write_cache(cache.path(), &old, true);
    let changed = changed(|dir| {
        let text = std::fs::read_to_string(dir.join("flags.toml")).unwrap();
        std::fs::write(dir.join("flags.toml"), text.replace("default = 4", "default = 6")).unwrap();
    });
    write_cache(cache.path(), &load(changed.path()).expect("valid").to_bytes(), false);
    let client = Client::new(unreached_store(), Some(cache.path().to_owned()));
    let served = client.evaluator().expect("the last good flag set is served");
    assert_eq!(served.digest(), digest(&old));
    assert_eq!(client.evaluate("max-parallel-builds", &json!({})).value, Some(json!(4)));
}
