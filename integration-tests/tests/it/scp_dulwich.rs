//! The Source Control Pillar against a second git server that shares no code with git or
//! with us: dulwich's smart HTTP as the source (mirrored into the CodeCommit stand-in) and
//! as the target (from `git http-backend`), through rewrites, deletions, tags, `a` → `a/b`,
//! a mass deletion held and the old tips kept. Results read with the git CLI.

use std::path::{Path, PathBuf};

use integration_tests::dulwich::DulwichServer;
use serde_json::Value;

use crate::source_control::target_refs;
use crate::support::{
    Git, SourceServer, WorkTree, create_codecommit_repository, env, heads_and_tags, ok, pillar,
    scp_mirror, unique,
};

fn dulwich() -> DulwichServer {
    DulwichServer::start(&PathBuf::from(env("PILLAR_VENV")).join("bin/python"))
}

/// `pillar scp mirror --json SOURCE TARGET` with `extra` arguments: report and exit code.
fn mirror(source: &str, target: &str, work: &Path, extra: &[&str]) -> (Value, i32) {
    let run = scp_mirror(source, target, work, extra, None);
    assert!(run.code >= 0, "{}", run.stderr);
    (run.report, run.code)
}

/// A working tree pushed to a bare repository `name` that dulwich serves.
struct DulwichSource {
    tree: WorkTree,
    bare: PathBuf,
}

impl DulwichSource {
    fn new(server: &DulwichServer, name: &str) -> Self {
        let git = Git::plain();
        let work = git.dir().join(name);
        ok(git.command().args(["init", "-q"]).arg(&work));
        let bare = server.path(name);
        ok(git.command().args(["init", "-q", "--bare"]).arg(&bare));
        Self { tree: WorkTree { git, work }, bare }
    }

    /// Makes the served repository's refs exactly the working tree's.
    fn publish(&self) {
        let bare = self.bare.to_string_lossy().into_owned();
        self.tree.git(&["push", "-q", "--mirror", "--force", &bare]);
    }
}

/// Rewrites, deletions, annotated and lightweight tags, `a` replaced by `a/b`: the scenario
/// the git http-backend suite runs, with `publish` making each state the source's and
/// `check` comparing the target with it.
fn rewrites_and_deletions(
    source: &WorkTree,
    publish: &dyn Fn(),
    mirror: &dyn Fn() -> Value,
    check: &dyn Fn(),
) {
    let first = source.commit("first");
    source.commit("second");
    source.git(&["tag", "-a", "v1.0", "-m", "annotated release"]);
    source.git(&["tag", "light", &first]);
    for branch in ["a", "doomed", "keep-1", "keep-2", "keep-3"] {
        source.git(&["branch", branch]);
    }
    publish();
    let report = mirror();
    assert_eq!(report["created"].as_array().map(Vec::len), Some(8), "{report}");
    check();

    source.git(&["reset", "-q", "--hard", &first]);
    source.commit("rewritten");
    source.git(&["branch", "-D", "doomed", "a"]);
    source.git(&["branch", "a/b"]);
    source.git(&["tag", "-d", "light"]);
    publish();
    let report = mirror();
    assert_eq!(
        report["deleted"],
        serde_json::json!(["refs/heads/a", "refs/heads/doomed", "refs/tags/light"])
    );
    assert_eq!(report["updated"], serde_json::json!(["refs/heads/main"]));
    assert_eq!(
        report["kept"].as_array().map(Vec::len),
        Some(4),
        "3 deleted, main rewound: {report}"
    );
    check();
    let report = mirror();
    assert_eq!(report["fetched"], false, "nothing changed: {report}");
}

#[test]
fn dulwich_as_the_source() {
    let server = dulwich();
    let source = DulwichSource::new(&server, "app");
    let url = server.url("app");
    let repository = unique("from-dulwich");
    create_codecommit_repository(&repository);
    let target = format!("codecommit://{repository}");
    let work = tempfile::tempdir().expect("work dir");
    let published = || source.publish();
    let mirrored = || {
        let (report, code) = mirror(&url, &target, work.path(), &[]);
        assert_eq!(code, 0, "{report}");
        report
    };
    let check = || assert_eq!(target_refs(&repository), heads_and_tags(&source.tree.git, &url));
    rewrites_and_deletions(&source.tree, &published, &mirrored, &check);

    // dulwich recreated empty: held, nothing lost.
    std::fs::remove_dir_all(&source.bare).expect("remove");
    ok(Git::plain().command().args(["init", "-q", "--bare"]).arg(&source.bare));
    let before = target_refs(&repository);
    let (report, code) = mirror(&url, &target, work.path(), &[]);
    assert_eq!(code, 1, "{report}");
    assert_eq!(report["held"].as_array().map(Vec::len), Some(before.len()), "{report}");
    assert_eq!(target_refs(&repository), before);
}

#[test]
fn dulwich_as_the_target() {
    let server = SourceServer::start(None);
    let source = server.repository("app");
    let target_server = dulwich();
    ok(Git::plain().command().args(["init", "-q", "--bare"]).arg(target_server.path("mirror")));
    let target = target_server.url("mirror");
    let work = tempfile::tempdir().expect("work dir");
    let url = server.url("app");
    let mirrored = || {
        let (report, code) = mirror(&url, &target, work.path(), &[]);
        assert_eq!(code, 0, "{report}");
        report
    };
    let reader = Git::plain();
    let check = || assert_eq!(heads_and_tags(&reader, &target), heads_and_tags(&source.git, &url));
    rewrites_and_deletions(&source, &|| {}, &mirrored, &check);
    ok(reader
        .command()
        .arg("--git-dir")
        .arg(target_server.path("mirror"))
        .args(["fsck", "--no-dangling"]));

    // The kept tips are there for dulwich's clients too.
    let kept = ok(reader.command().args(["ls-remote", &target, "refs/pillars/kept/*"]));
    assert_eq!(kept.lines().filter(|l| !l.ends_with("^{}")).count(), 4, "{kept}");
    let listed = ok(pillar().args(["scp", "kept", "--target", &target]));
    assert!(listed.contains("4 kept tips"), "{listed}");
}
