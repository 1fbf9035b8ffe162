//! Source Control Pillar end to end: sources over `git http-backend` and as paths, the
//! CodeCommit stand-in as target, results read back with the git CLI.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::support::{
    Git, SourceServer, WorkTree, codecommit_url, create_codecommit_repository, env, heads_and_tags,
    ok, pillar, run, stderr, unique,
};

/// `pillar scp mirror ... --json`, insisting on success.
fn mirror(source: &str, repository: &str, work_dir: &Path) -> Value {
    let target = format!("codecommit://{repository}");
    let stdout = ok(pillar()
        .args(["scp", "mirror", "--json", "--source", source, "--target", &target, "--work-dir"])
        .arg(work_dir));
    serde_json::from_str(&stdout).expect("JSON report")
}

fn names(report: &Value, key: &str) -> Vec<String> {
    report[key]
        .as_array()
        .expect(key)
        .iter()
        .map(|v| v.as_str().expect("name").to_owned())
        .collect()
}

/// The target's heads and tags, through the credential helper.
fn target_refs(repository: &str) -> BTreeMap<String, String> {
    heads_and_tags(&Git::with_pillar_helper(), &codecommit_url(repository))
}

fn assert_mirrored(source: &WorkTree, source_url: &str, repository: &str) {
    let expected = heads_and_tags(&source.git, source_url);
    assert_eq!(target_refs(repository), expected, "target differs from source");
}

#[test]
fn history_rewrites_deletions_tags_and_renames_converge() {
    let server = SourceServer::start(None);
    let source = server.repository("app");
    let url = server.url("app");
    let repository = unique("scp-scenarios");
    create_codecommit_repository(&repository);
    let work = tempfile::tempdir().expect("work dir");

    let first = source.commit("first");
    source.commit("second");
    source.git(&["tag", "-a", "v1.0", "-m", "annotated release"]);
    source.git(&["tag", "light", &first]);
    source.git(&["branch", "a"]);
    source.git(&["branch", "doomed"]);
    source.git(&["branch", "fëature/ünïcode-ß"]);
    source.git(&["update-ref", "refs/pull-requests/7/from", &first]);
    source.git(&["update-ref", "refs/pull/8/head", &first]);
    source.git(&["update-ref", "refs/notes/commits", &first]);

    let report = mirror(&url, &repository, work.path());
    assert_eq!(names(&report, "created").len(), 6, "{report}");
    assert_mirrored(&source, &url, &repository);
    let target = target_refs(&repository);
    assert!(target.keys().all(|r| r.starts_with("refs/heads/") || r.starts_with("refs/tags/")));
    let annotated = ok(Git::with_pillar_helper().command().args([
        "ls-remote",
        &codecommit_url(&repository),
        "refs/tags/v1.0^{}",
    ]));
    assert!(
        !annotated.is_empty(),
        "the annotated tag keeps its tag object (peeled entry advertised)"
    );

    // Force-pushed history, deleted branch and tag, `a` replaced by `a/b`.
    source.git(&["reset", "-q", "--hard", &first]);
    let rewritten = source.commit("rewritten");
    source.git(&["branch", "-D", "doomed", "a"]);
    source.git(&["branch", "a/b"]);
    source.git(&["tag", "-d", "light"]);
    let report = mirror(&url, &repository, work.path());
    assert_eq!(names(&report, "deleted"), ["refs/heads/a", "refs/heads/doomed", "refs/tags/light"]);
    assert_eq!(names(&report, "created"), ["refs/heads/a/b"]);
    assert_eq!(names(&report, "updated"), ["refs/heads/main"]);
    assert_mirrored(&source, &url, &repository);
    assert_eq!(target_refs(&repository)["refs/heads/main"], rewritten);

    // Nothing changed: nothing fetched, nothing pushed.
    let report = mirror(&url, &repository, work.path());
    assert_eq!(report["fetched"], Value::Bool(false));
    assert!(
        names(&report, "created").is_empty()
            && names(&report, "updated").is_empty()
            && names(&report, "deleted").is_empty()
    );
    assert_eq!(report["unchanged"], 4);
    let verified = ok(pillar()
        .args([
            "scp",
            "verify",
            "--source",
            &url,
            "--target",
            &format!("codecommit://{repository}"),
        ])
        .arg("--work-dir")
        .arg(work.path()));
    assert!(verified.starts_with("identical: 4 refs"), "{verified}");
}

#[test]
fn an_empty_source_and_a_local_path_source_mirror() {
    let server = SourceServer::start(None);
    let source = server.repository("empty");
    let repository = unique("scp-empty");
    create_codecommit_repository(&repository);
    let work = tempfile::tempdir().expect("work dir");
    let report = mirror(&server.url("empty"), &repository, work.path());
    assert_eq!(report["unchanged"], 0);
    assert!(target_refs(&repository).is_empty());

    source.commit("now with a commit");
    let path = source.work.to_string_lossy().into_owned();
    mirror(&path, &repository, work.path());
    assert_mirrored(&source, &path, &repository);
}

#[test]
fn five_thousand_branches_take_more_than_one_push() {
    let server = SourceServer::start(None);
    let source = server.repository("many");
    let head = source.commit("base");
    let mut commands = String::new();
    for i in 0..5_000 {
        commands.push_str(&format!("create refs/heads/branch-{i:05} {head}\n"));
    }
    source.update_refs(&commands);

    let repository = unique("scp-many");
    create_codecommit_repository(&repository);
    let work = tempfile::tempdir().expect("work dir");
    let report = mirror(&server.url("many"), &repository, work.path());
    assert_eq!(names(&report, "created").len(), 5_001);
    assert_mirrored(&source, &server.url("many"), &repository);

    // Delete them all again: 5,000 deletions, also in batches.
    let deletions =
        source.git(&["for-each-ref", "--format=delete %(refname)", "refs/heads/branch-*"]);
    source.update_refs(&deletions);
    let report = mirror(&server.url("many"), &repository, work.path());
    assert_eq!(names(&report, "deleted").len(), 5_000);
    assert_mirrored(&source, &server.url("many"), &repository);
}

#[test]
fn an_unreachable_source_fails_clearly_and_leaves_the_target_alone() {
    let server = SourceServer::start(None);
    let source = server.repository("app");
    source.commit("one");
    let repository = unique("scp-unreachable");
    create_codecommit_repository(&repository);
    let work = tempfile::tempdir().expect("work dir");
    mirror(&server.url("app"), &repository, work.path());
    let before = target_refs(&repository);

    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
    let dead = format!("http://{}/app.git", closed.local_addr().expect("addr"));
    drop(closed);
    let output = run(pillar()
        .args([
            "scp",
            "mirror",
            "--source",
            &dead,
            "--target",
            &format!("codecommit://{repository}"),
            "--work-dir",
        ])
        .arg(work.path()));
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains(&format!("cannot reach source {dead}")),
        "{}",
        stderr(&output)
    );
    assert_eq!(target_refs(&repository), before, "the target was changed");
}

#[test]
fn refused_credentials_are_named_without_a_retry_storm() {
    let server = SourceServer::start(Some(("reader", "right-password")));
    let source = server.repository("private");
    source.commit("one");
    let repository = unique("scp-credentials");
    create_codecommit_repository(&repository);
    let work = tempfile::tempdir().expect("work dir");
    let target = format!("codecommit://{repository}");

    // Source without credentials.
    let output = run(pillar()
        .args([
            "scp",
            "mirror",
            "--source",
            &server.url("private"),
            "--target",
            &target,
            "--work-dir",
        ])
        .arg(work.path()));
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("source") && stderr(&output).contains("refused our credentials"),
        "{}",
        stderr(&output)
    );

    // Target with a wrong secret key: CodeCommit's 403 ends the run at once.
    let path = source.work.to_string_lossy().into_owned();
    let started = std::time::Instant::now();
    let output = run(pillar()
        .env("AWS_SECRET_ACCESS_KEY", "wrong-secret")
        .args(["scp", "mirror", "--source", &path, "--target", &target, "--work-dir"])
        .arg(work.path()));
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("target") && stderr(&output).contains("refused our credentials"),
        "{}",
        stderr(&output)
    );
    assert!(started.elapsed().as_secs() < 30, "credential failures must not be retried");
    assert!(target_refs(&repository).is_empty());
}

#[test]
fn a_ref_the_target_refuses_is_named_in_the_error() {
    let server = SourceServer::start(None);
    let source = server.repository("app");
    source.commit("one");
    source.git(&["branch", "forbidden"]);
    let repository = unique("scp-refused");
    create_codecommit_repository(&repository);
    // First contact creates the bare repository behind the stand-in; then install a hook.
    let work = tempfile::tempdir().expect("work dir");
    let empty = server.repository("nothing");
    mirror(&server.url("nothing"), &repository, work.path());
    drop(empty);
    let hook = Path::new(&env("PILLAR_CODECOMMIT_REPOS_DIR"))
        .join(format!("{repository}.git/hooks/update"));
    std::fs::write(&hook, "#!/bin/sh\n[ \"$1\" != refs/heads/forbidden ]\n").expect("hook");
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");

    let output = run(pillar()
        .args([
            "scp",
            "mirror",
            "--source",
            &server.url("app"),
            "--target",
            &format!("codecommit://{repository}"),
            "--work-dir",
        ])
        .arg(work.path()));
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("refused 1 ref(s): refs/heads/forbidden"),
        "{}",
        stderr(&output)
    );
    let target = target_refs(&repository);
    assert!(target.contains_key("refs/heads/main") && !target.contains_key("refs/heads/forbidden"));
}
