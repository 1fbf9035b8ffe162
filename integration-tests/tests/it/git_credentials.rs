//! Plain `git` reaching the CodeCommit stand-in through `pillar git-credential`, and the
//! stand-in judged against the reference signer, `git-remote-codecommit`.

use pillar_auth::codecommit::{GitRequest, password, password_time};

use crate::support::{
    Git, codecommit_url, create_codecommit_repository, env, ok, python, run, stderr, unique,
};

fn push_main(git: &Git, source: &std::path::Path, url: &str) -> std::process::Output {
    run(git.command().current_dir(source).args(["push", "-q", url, "main"]))
}

#[test]
fn push_and_clone_through_the_credential_helper() {
    let repository = unique("helper");
    create_codecommit_repository(&repository);
    let git = Git::with_pillar_helper();
    let source = git.repository_with_commit("source");
    let url = codecommit_url(&repository);
    let pushed = push_main(&git, &source, &url);
    assert!(pushed.status.success(), "push failed: {}", stderr(&pushed));

    let head = ok(git.command().current_dir(&source).args(["rev-parse", "HEAD"]));
    let remote = ok(git.command().args(["ls-remote", &url]));
    assert!(remote.contains(&format!("{}\trefs/heads/main", head.trim())), "{remote}");
    let clone = git.dir().join("clone");
    ok(git.command().args(["clone", "-q", &url]).arg(&clone));
    assert_eq!(ok(git.command().current_dir(&clone).args(["rev-parse", "HEAD"])), head);
}

#[test]
fn temporary_credentials_carry_the_session_token_in_the_username() {
    let repository = unique("token");
    create_codecommit_repository(&repository);
    let git = Git::with_pillar_helper();
    // The stand-in knows this key as temporary: without its token, or with another, 403.
    let temporary = |token: Option<&str>| {
        let mut command = git.command();
        command
            .env("AWS_ACCESS_KEY_ID", env("PILLAR_TEMPORARY_ACCESS_KEY_ID"))
            .env("AWS_SECRET_ACCESS_KEY", env("PILLAR_TEMPORARY_SECRET_ACCESS_KEY"))
            .args(["ls-remote", &codecommit_url(&repository)]);
        match token {
            Some(token) => command.env("AWS_SESSION_TOKEN", token),
            None => command.env_remove("AWS_SESSION_TOKEN"),
        };
        run(&mut command)
    };
    let token = env("PILLAR_TEMPORARY_SESSION_TOKEN");
    let output = temporary(Some(&token));
    assert!(output.status.success(), "{}", stderr(&output));
    for refused in [None, Some("FwoGZXIvYXdzEOtherSessionToken==")] {
        let output = temporary(refused);
        assert!(!output.status.success(), "accepted with token {refused:?}");
        assert!(stderr(&output).contains("403"), "{}", stderr(&output));
    }
}

#[test]
fn a_wrong_secret_key_is_refused_with_403() {
    let repository = unique("wrong-secret");
    create_codecommit_repository(&repository);
    let git = Git::with_pillar_helper();
    let source = git.repository_with_commit("source");
    let output = run(git
        .command()
        .current_dir(&source)
        .env("AWS_SECRET_ACCESS_KEY", "not-the-secret")
        .args(["push", "-q", &codecommit_url(&repository), "main"]));
    assert!(!output.status.success(), "a push signed with a wrong secret was accepted");
    assert!(stderr(&output).contains("403"), "{}", stderr(&output));
    let remote = ok(git.command().args(["ls-remote", &codecommit_url(&repository)]));
    assert!(remote.is_empty(), "nothing was pushed: {remote}");
}

#[test]
fn a_repository_unknown_to_the_codecommit_api_is_not_served() {
    let git = Git::with_pillar_helper();
    let output = run(git.command().args(["ls-remote", &codecommit_url(&unique("never-created"))]));
    assert!(!output.status.success());
    assert!(stderr(&output).contains("not found"), "{}", stderr(&output));
}

#[test]
fn git_without_use_http_path_is_told_how_to_fix_it() {
    let repository = unique("no-path");
    create_codecommit_repository(&repository);
    let git = Git::with_pillar_helper();
    git.config("credential.useHttpPath", "false");
    let output = run(git.command().args(["ls-remote", &codecommit_url(&repository)]));
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("git config --global credential.useHttpPath true"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn missing_aws_credentials_are_a_clear_error() {
    let repository = unique("no-credentials");
    create_codecommit_repository(&repository);
    let git = Git::with_pillar_helper();
    let output = run(git
        .command()
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .args(["ls-remote", &codecommit_url(&repository)]));
    assert!(!output.status.success());
    assert!(stderr(&output).contains("no AWS credentials for CodeCommit"), "{}", stderr(&output));
}

/// The signed URL that git-remote-codecommit (AWS's own client) builds for `repository`
/// on the stand-in with the key `(access key id, secret, session token)`, switched to plain
/// HTTP.
fn reference_url(repository: &str, (akid, secret, token): (&str, &str, &str)) -> String {
    let endpoint = env("PILLAR_CODECOMMIT_GIT_ENDPOINT");
    let host = endpoint.trim_start_matches("http://");
    let url = python(
        r#"
import os, sys
import botocore.credentials, git_remote_codecommit
os.environ["CODE_COMMIT_ENDPOINT"] = sys.argv[1]
credentials = botocore.credentials.Credentials(sys.argv[3], sys.argv[4], sys.argv[5] or None)
print(git_remote_codecommit.git_url(sys.argv[2], "v1", os.environ["AWS_REGION"], credentials))
"#,
        &[host, repository, akid, secret, token],
    );
    url.trim().replacen("https://", "http://", 1)
}

#[test]
fn the_reference_client_and_our_signer_agree() {
    let repository = unique("reference");
    create_codecommit_repository(&repository);
    let (akid, secret) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY"));
    let url = reference_url(&repository, (&akid, &secret, ""));
    let credentials = url.trim_start_matches("http://").split_once('@').expect("user@host").0;
    let reference_password = credentials.split_once(':').expect("user:password").1;
    let request = GitRequest {
        host: env("PILLAR_CODECOMMIT_GIT_ENDPOINT").trim_start_matches("http://").to_owned(),
        path: format!("/v1/repos/{repository}"),
        region: env("AWS_REGION"),
    };
    let signed_at = password_time(reference_password).expect("timestamped password");
    assert_eq!(password(&env("AWS_SECRET_ACCESS_KEY"), &request, signed_at), reference_password);

    let git = Git::plain();
    ok(git.command().args(["ls-remote", &url]));
    let temporary = (
        env("PILLAR_TEMPORARY_ACCESS_KEY_ID"),
        env("PILLAR_TEMPORARY_SECRET_ACCESS_KEY"),
        env("PILLAR_TEMPORARY_SESSION_TOKEN"),
    );
    let with_token = reference_url(&repository, (&temporary.0, &temporary.1, &temporary.2));
    ok(git.command().args(["ls-remote", &with_token]));

    // Change the last hex digit of the signature, just before `@host`.
    let at = url.rfind('@').expect("user:password@host");
    let flipped = if &url[at - 1..at] == "0" { "1" } else { "0" };
    let tampered = format!("{}{flipped}{}", &url[..at - 1], &url[at..]);
    let output = run(git.command().args(["ls-remote", &tampered]));
    assert!(!output.status.success(), "a tampered signature was accepted");
    assert!(stderr(&output).contains("403"), "{}", stderr(&output));
}
