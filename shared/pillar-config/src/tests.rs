use std::path::{Path, PathBuf};

use crate::{ConfigError, Manifest, Problem};

const VALID: &str = r#"
[[repository]]
codecommit = "net"
source = "https://bitbucket.example.com/scm/net/net.git"
bitbucket = "NET/net"

[[image]]
source = "localhost:5000/library/alpine"
ecr_repository = "mirror/alpine"
tags = ["3.20"]
"#;

fn parse(text: &str) -> Result<Manifest, ConfigError> {
    Manifest::parse(text, Path::new("pillars.toml"))
}

fn problems(text: &str) -> Vec<Problem> {
    match parse(text) {
        Err(ConfigError::Invalid { problems, .. }) => problems,
        other => panic!("expected validation problems, got {other:?}"),
    }
}

fn keys(problems: &[Problem]) -> Vec<&str> {
    problems.iter().map(|p| p.key.as_str()).collect()
}

#[test]
fn the_commented_example_is_valid_and_complete() {
    let path =
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo at run time"))
            .join("../../pillars.example.toml");
    let manifest = Manifest::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(manifest.repositories.len(), 2);
    assert_eq!(
        manifest.repositories[0].credentials_secret.as_deref(),
        Some("pillars/bitbucket-read")
    );
    assert_eq!(manifest.images.len(), 2);
    let alpine = &manifest.images[0];
    assert!(alpine.include[0].is_match("3.20") && !alpine.include[0].is_match("edge"));
    assert!(alpine.semver.as_ref().is_some_and(|r| r.matches(&semver::Version::new(3, 20, 0))));
    assert_eq!(alpine.keep_newest, Some(5));
    assert!(manifest.images[1].scan_on_push && !manifest.images[1].immutable_tags);
    let logging = manifest.logging.expect("the example has a logging section");
    assert_eq!((logging.stream.as_str(), logging.retention_days), ("pillars-logs", 30));
}

#[test]
fn defaults_fill_optional_settings() {
    let manifest = parse(&format!("{VALID}\n[logging]\nstream = \"s\"\n")).expect("valid");
    let logging = manifest.logging.expect("logging");
    assert_eq!(logging.log_group_prefix, "/pillar/");
    assert_eq!((logging.retention_days, logging.heartbeat_period_minutes), (30, 5));
    assert!(manifest.images[0].scan_on_push);
    assert!(parse("").expect("an empty manifest is valid").repositories.is_empty());
}

#[test]
fn unknown_keys_are_named_with_their_path() {
    let text = VALID.replace("bitbucket = \"NET/net\"", "bitbucket = \"NET/net\"\nsorce = \"x\"");
    let error = parse(&text).expect_err("unknown key");
    let message = error.to_string();
    assert!(
        matches!(&error, ConfigError::Syntax { key, .. } if key == "repository[0].sorce"),
        "{message}"
    );
    assert!(message.starts_with("manifest pillars.toml: at `repository[0].sorce`: "), "{message}");
    assert!(message.contains("unknown field `sorce`"), "{message}");
    assert!(message.contains("line 6"), "the TOML position helps find it: {message}");
}

#[test]
fn missing_keys_and_toml_syntax_errors_are_named() {
    let message = parse("[[repository]]\ncodecommit = \"a\"\n").expect_err("missing").to_string();
    assert!(message.contains("missing field `source`"), "{message}");
    let message = parse("[[repository]\n").expect_err("syntax").to_string();
    assert!(message.contains("line 1"), "{message}");
}

#[test]
fn bad_regex_and_semver_are_errors_at_their_key() {
    let text = VALID.replace("tags = [\"3.20\"]", "include = ['^3\\.(']");
    let message = parse(&text).expect_err("bad regex").to_string();
    assert!(message.contains("image[0].include"), "{message}");
    assert!(message.contains("is not a valid regular expression"), "{message}");
    let text = VALID.replace("tags = [\"3.20\"]", "semver = \"three\"");
    assert!(parse(&text).expect_err("bad semver").to_string().contains("image[0].semver"));
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = r#"
[[repository]]
codecommit = "net.git"
source = "ssh://git@bitbucket.example.com/net.git"
bitbucket = "NET"

[[repository]]
codecommit = "net.git"
source = "https://user:hunter2@bitbucket.example.com/net.git"
bitbucket = "net/NET"

[[repository]]
codecommit = "ok"
source = "not a url"
bitbucket = "net/net"
credentials_secret = "bad secret name!"

[[image]]
source = "alpine:3.20"
ecr_repository = "Mirror/Alpine"

[[image]]
source = "localhost:5000/alpine"
ecr_repository = "Mirror/Alpine"
tags = ["-bad"]
keep_newest = 0

[logging]
stream = "has space"
log_group_prefix = "bad prefix"
retention_days = 31
heartbeat_period_minutes = 0
kms_key = "alias/logs"
"#;
    let found = problems(text);
    assert_eq!(
        keys(&found),
        [
            "repository[0].codecommit",
            "repository[0].bitbucket",
            "repository[0].source",
            "repository[1].codecommit",
            "repository[1].codecommit",
            "repository[1].source",
            "repository[2].bitbucket",
            "repository[2].source",
            "repository[2].credentials_secret",
            "image[0].source",
            "image[0].ecr_repository",
            "image[0]",
            "image[1].ecr_repository",
            "image[1].ecr_repository",
            "image[1].tags[0]",
            "image[1].keep_newest",
            "logging.stream",
            "logging.log_group_prefix",
            "logging.retention_days",
            "logging.heartbeat_period_minutes",
            "logging.kms_key",
        ],
        "{found:#?}"
    );
    let text_of = |key: &str, nth: usize| {
        found
            .iter()
            .filter(|p| p.key == key)
            .nth(nth)
            .map(|p| p.message.clone())
            .unwrap_or_default()
    };
    assert!(text_of("repository[0].codecommit", 0).contains("cannot end in `.git`"));
    assert!(
        text_of("repository[1].codecommit", 1).contains("already used at repository[0].codecommit")
    );
    assert!(
        text_of("repository[2].bitbucket", 0).contains("already used at repository[1].bitbucket")
    );
    assert!(text_of("repository[0].source", 0).contains("`ssh` scheme is not supported"));
    assert!(text_of("repository[1].source", 0).contains("credentials_secret"));
    assert!(!text_of("repository[1].source", 0).contains("hunter2"), "passwords are never echoed");
    assert!(text_of("logging.retention_days", 0).contains("30"));
}

#[test]
fn the_error_names_the_file() {
    let error = Manifest::load(Path::new("/nonexistent/pillars.toml")).expect_err("missing file");
    assert!(error.to_string().starts_with("cannot read manifest /nonexistent/pillars.toml: "));
    let error = Manifest::parse(
        "[[image]]\nsource = \"x\"\necr_repository = \"yy\"\ntags=[\"a\"]\n",
        Path::new("deploy/prod.toml"),
    )
    .expect_err("bad image source");
    assert!(
        error
            .to_string()
            .starts_with("manifest deploy/prod.toml is invalid:\n  - image[0].source: "),
        "{error}"
    );
}

#[test]
fn lambda_sizes_and_schedules_are_checked() {
    let text = format!(
        "{VALID}\n[source_control]\nmirror_ephemeral_storage_mib = 100\nreconcile_period_minutes = 0\n\n[docker_mirror]\nmemory_mib = 20000\n"
    );
    let found = problems(&text);
    assert_eq!(
        keys(&found),
        [
            "source_control.mirror_ephemeral_storage_mib",
            "source_control.reconcile_period_minutes",
            "docker_mirror.memory_mib",
        ]
    );
    assert!(found[0].message.contains("512 to 10240"), "{}", found[0].message);
    let defaults = parse(VALID).expect("valid");
    assert_eq!(defaults.source_control.mirror_ephemeral_storage_mib, 2048);
    assert_eq!(defaults.docker_mirror.schedule_minutes, 60);
}

#[test]
fn concurrency_log_retention_and_alarm_addresses_are_checked() {
    let text = format!(
        "{VALID}\n[source_control]\nmirror_concurrency = 1\nwebhook_reserved_concurrency = 0\n\n[functions]\nlog_retention_days = 31\n\n[alarms]\nemail = [\"ops@example.com\", \"pager\"]\n"
    );
    let found = problems(&text);
    assert_eq!(
        keys(&found),
        [
            "source_control.mirror_concurrency",
            "source_control.webhook_reserved_concurrency",
            "functions.log_retention_days",
            "alarms.email[1]",
        ]
    );
    assert!(found[0].message.contains("2 to 1000"), "{}", found[0].message);
    assert_eq!(found[3].message, "`pager` is not an e-mail address");
    assert_eq!(parse(VALID).expect("valid").functions.log_retention_days, 30);
    let defaults = parse(VALID).expect("valid");
    assert_eq!(defaults.source_control.webhook_reserved_concurrency, None);
    assert!(defaults.alarms.email.is_empty());
}

#[test]
fn a_network_placement_needs_real_ids_and_at_least_one_subnet_and_group() {
    let text = format!(
        "{VALID}\n[source_control.network]\nvpc_id = \"vpc-0123456789abcdef0\"\nsubnet_ids = [\"subnet-0123456789abcdef0\", \"sub-1\"]\nsecurity_group_ids = []\n\n[docker_mirror.network]\nvpc_id = \"default\"\nsubnet_ids = [\"subnet-0123456789abcdef0\"]\nsecurity_group_ids = [\"sg-0123456789abcdef0\"]\n"
    );
    let found = problems(&text);
    assert_eq!(
        keys(&found),
        [
            "source_control.network.subnet_ids[1]",
            "source_control.network.security_group_ids",
            "docker_mirror.network.vpc_id",
        ]
    );
    assert!(parse(VALID).expect("valid").source_control.network.is_none());
}

#[test]
fn schedules_cannot_overlap_their_runs_and_the_prefix_names_the_pillars_own_groups() {
    let text = format!(
        "{VALID}\n[source_control]\nreconcile_period_minutes = 4\ncanary_period_minutes = 5\n\n[docker_mirror]\nschedule_minutes = 10\ncanary_period_minutes = 9\n\n[logging]\nstream = \"s\"\nlog_group_prefix = \"/aws/\"\n"
    );
    let found = problems(&text);
    assert_eq!(
        keys(&found),
        [
            "logging.log_group_prefix",
            "source_control.reconcile_period_minutes",
            "source_control.canary_period_minutes",
            "docker_mirror.canary_period_minutes",
            "docker_mirror.schedule_minutes",
        ]
    );
    assert!(found[4].message.contains("15 to 1440"), "{}", found[4].message);
    assert!(found[3].message.contains("10 to 1440"), "{}", found[3].message);
    let root = format!("{VALID}\n[logging]\nstream = \"s\"\nlog_group_prefix = \"/\"\n");
    assert_eq!(keys(&problems(&root)), ["logging.log_group_prefix"]);
}

#[test]
fn the_checked_manifest_serialises_with_defaults_and_patterns_as_text() {
    let text = format!(
        "{VALID}\n[[image]]\nsource = \"localhost:5000/team/app\"\necr_repository = \"mirror/app\"\ninclude = ['^v\\d']\nsemver = \">=1.2\"\nkeep_newest = 10\nlifecycle_max_images = 20\n\n[logging]\nstream = \"logs\"\n"
    );
    let json = serde_json::to_value(parse(&text).expect("valid")).expect("json");
    assert_eq!(json["images"][1]["include"], serde_json::json!([r"^v\d"]));
    assert_eq!(json["images"][1]["semver"], ">=1.2");
    assert_eq!(json["images"][1]["lifecycle_max_images"], 20);
    assert_eq!(json["images"][0]["semver"], serde_json::Value::Null);
    assert_eq!(json["logging"]["log_group_prefix"], "/pillar/");
    assert_eq!(json["source_control"]["max_receive_count"], 5);
    assert_eq!(json["repositories"][0]["bitbucket"], "NET/net");
}

#[test]
fn a_lifecycle_rule_must_keep_every_selected_tag() {
    let image = |extra: &str| {
        format!(
            "{VALID}\n[[image]]\nsource = \"registry.example.com/app\"\necr_repository = \"mirror/app\"\ntags = [\"a\", \"b\"]\n{extra}\n"
        )
    };
    let too_few = problems(&image("include = ['^v']\nkeep_newest = 5\nlifecycle_max_images = 6"));
    assert_eq!(keys(&too_few), ["image[1].lifecycle_max_images"]);
    assert!(too_few[0].message.contains("fewer than the 7 tags"), "{}", too_few[0].message);
    let unbounded = problems(&image("include = ['^v']\nlifecycle_max_images = 50"));
    assert!(unbounded[0].message.contains("set `keep_newest`"), "{}", unbounded[0].message);
    assert!(parse(&image("include = ['^v']\nkeep_newest = 5\nlifecycle_max_images = 7")).is_ok());
}

#[test]
fn an_image_repository_is_encrypted_with_its_key_else_the_pillars() {
    let key = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
    let text = format!(
        "{VALID}\n[[image]]\nsource = \"registry.example.com/app\"\necr_repository = \"mirror/app\"\ntags = [\"1\"]\nkms_key = \"{key}\"\n\n[docker_mirror]\nkms_key = \"arn:aws:kms:eu-west-1:111122223333:key/pillar\"\n"
    );
    let manifest = parse(&text).expect("valid");
    assert_eq!(manifest.images[1].kms_key.as_deref(), Some(key));
    assert_eq!(
        manifest.images[0].kms_key.as_deref(),
        Some("arn:aws:kms:eu-west-1:111122223333:key/pillar")
    );
    let alias = format!("{VALID}\n[docker_mirror]\nkms_key = \"alias/ecr\"\n");
    assert_eq!(keys(&problems(&alias)), ["docker_mirror.kms_key"]);
}

#[test]
fn the_config_section_needs_a_bucket_name_s3_takes_a_prefix_ending_in_a_slash_and_an_age_past_two_polls()
 {
    let good = format!(
        "{VALID}\n[config]\nbucket = \"team-flags\"\nprefix = \"flags/\"\npoll_seconds = 30\nmax_bundle_age_minutes = 60\n"
    );
    assert!(parse(&good).is_ok());
    let bad = format!(
        "{VALID}\n[config]\nbucket = \"Team_Flags\"\nprefix = \"flags\"\npoll_seconds = 2\nmax_bundle_age_minutes = 0\n"
    );
    assert_eq!(
        keys(&problems(&bad)),
        ["config.bucket", "config.prefix", "config.poll_seconds", "config.max_bundle_age_minutes"]
    );
    // Adopting the bucket an earlier stack kept: by its name, with its key.
    let key = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";
    let adopted = format!(
        "{VALID}\n[config]\nbucket = \"team-flags\"\nkms_key = \"{key}\"\nresources = \"existing\"\n"
    );
    assert!(parse(&adopted).is_ok());
    let nameless =
        format!("{VALID}\n[config]\nresources = \"existing\"\nkms_key = \"alias/flags\"\n");
    assert_eq!(keys(&problems(&nameless)), ["config.kms_key", "config.bucket"]);
    let keyless = format!("{VALID}\n[config]\nbucket = \"team-flags\"\nresources = \"existing\"\n");
    assert_eq!(keys(&problems(&keyless)), ["config.kms_key"]);
}
