//! `pillar config check`, as an operator runs it.

use std::path::PathBuf;

use crate::support::{ok, pillar, run, stderr};

fn example() -> PathBuf {
    PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo at run time"))
        .join("../pillars.example.toml")
}

#[test]
fn the_example_manifest_checks_clean() {
    let stdout = ok(pillar().args(["config", "check"]).arg(example()));
    assert!(
        stdout.contains("valid (2 repositories, 2 images, logging stream `pillars-logs`)"),
        "{stdout}"
    );
}

#[test]
fn a_broken_manifest_exits_1_naming_every_problem() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("pillars.toml");
    std::fs::write(
        &file,
        r#"
[[repository]]
codecommit = "net.git"
source = "ftp://example.com/net"
bitbucket = "NET/net"

[[image]]
source = "localhost:5000/alpine"
ecr_repository = "UPPER"
tags = ["1"]
"#,
    )
    .expect("write manifest");
    let output = run(pillar().args(["config", "check"]).arg(&file));
    assert_eq!(output.status.code(), Some(1));
    let stderr = stderr(&output);
    assert!(stderr.contains(&format!("manifest {} is invalid", file.display())), "{stderr}");
    for key in ["repository[0].codecommit", "repository[0].source", "image[0].ecr_repository"] {
        assert!(stderr.contains(&format!("  - {key}: ")), "{key} missing from {stderr}");
    }
    assert!(output.stdout.is_empty(), "nothing on stdout for an invalid manifest");

    // What the CDK app reads: the same message, and no JSON.
    let json = run(pillar().args(["config", "check", "--json"]).arg(&file));
    assert_eq!(json.status.code(), Some(1));
    assert_eq!(crate::support::stderr(&json), stderr);
    assert!(json.stdout.is_empty());
}

#[test]
fn the_checked_manifest_as_json_has_every_default_filled_in() {
    let stdout = ok(pillar().args(["config", "check", "--json"]).arg(example()));
    let manifest: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(manifest["repositories"][0]["codecommit"], "network-terraform");
    assert_eq!(manifest["images"][0]["include"][0], r"^3\.\d+(\.\d+)?$");
    assert_eq!(manifest["logging"]["stream"], "pillars-logs");
    assert_eq!(manifest["source_control"]["reconcile_period_minutes"], 15);
    assert_eq!(manifest["docker_mirror"]["schedule_minutes"], 60);
}

#[test]
fn a_misspelt_key_and_a_missing_file_are_clear_errors() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("pillars.toml");
    std::fs::write(&file, "[logging]\nstream = \"s\"\nretention = 30\n").expect("write");
    let output = run(pillar().args(["config", "check"]).arg(&file));
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("at `logging.retention`: "), "{}", stderr(&output));
    assert!(stderr(&output).contains("unknown field `retention`"), "{}", stderr(&output));

    let output = run(pillar().args(["config", "check"]).arg(dir.path().join("absent.toml")));
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("cannot read manifest"), "{}", stderr(&output));
}

#[test]
fn help_lists_every_subcommand() {
    let stdout = ok(pillar().arg("--help"));
    for subcommand in ["config", "git-credential", "heartbeat", "image", "logs", "scp", "webhook"] {
        assert!(stdout.contains(subcommand), "{subcommand} missing from {stdout}");
    }
}

#[test]
fn with_aws_every_named_secret_must_exist_and_hold_what_its_mirror_reads() {
    let unique = crate::support::unique;
    let (good, console, bare, junk, missing) = (
        unique("cfg/good"),
        unique("cfg/console"),
        unique("cfg/bare"),
        unique("cfg/junk"),
        unique("cfg/none"),
    );
    crate::support::create_secret(&good, "mirror:s3cret");
    // The Secrets Manager console's key/value form.
    crate::support::create_secret(&console, r#"{"username":"mirror","password":"s3:cret"}"#);
    crate::support::create_secret(&bare, "a-token-without-user");
    crate::support::create_secret(&junk, "not a secret at all");
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("pillars.toml");
    let repository = |n: u32, secret: &str| {
        format!(
            "[[repository]]\ncodecommit = \"r{n}\"\nsource = \"https://bitbucket.example.com/scm/a/r{n}.git\"\nbitbucket = \"A/r{n}\"\ncredentials_secret = \"{secret}\"\n\n"
        )
    };
    let image = |n: u32, secret: &str| {
        format!(
            "[[image]]\nsource = \"registry.example.com/app{n}\"\necr_repository = \"app{n}\"\ntags = [\"1\"]\ncredentials_secret = \"{secret}\"\n\n"
        )
    };
    let text = [
        repository(0, &good),
        repository(1, &bare),
        repository(2, &missing),
        repository(3, &console),
        image(0, &bare),
        image(1, &junk),
        image(2, &console),
    ]
    .concat();
    std::fs::write(&file, text).expect("write manifest");

    assert_eq!(
        run(pillar().args(["config", "check"]).arg(&file)).status.code(),
        Some(0),
        "offline, it is valid"
    );
    let output = run(pillar().args(["config", "check", "--aws"]).arg(&file));
    assert_eq!(output.status.code(), Some(1));
    let problems: Vec<String> = stderr(&output).lines().map(str::to_owned).collect();
    assert_eq!(
        problems,
        [
            format!(
                "pillar: repository[1].credentials_secret: secret `{bare}` must hold `username:password` or the key/value JSON `{{\"username\": ..., \"password\": ...}}` (an access token goes in the password)"
            ),
            format!(
                "pillar: repository[2].credentials_secret: secret `{missing}` does not exist in Secrets Manager: create it, or fix the secret name in the configuration"
            ),
            format!(
                "pillar: image[1].credentials_secret: secret `{junk}` must hold `username:password`, the key/value JSON `{{\"username\": ..., \"password\": ...}}`, or (for a registry) a token"
            ),
        ],
        "each secret that would fail a mirror, at its key; the good ones are not named"
    );
}
