//! The Source Control Pillar on the day Bitbucket is being restored: a source recreated
//! empty, a mass deletion, a listing cut short, a force-push that rewinds history. The
//! mirror is a backup, so none of these may destroy what it holds. Real servers: the source
//! over `git http-backend`, the CodeCommit stand-in, a scriptable front end; results read
//! back with the git CLI.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use integration_tests::git_front_end::{GitFrontEnd, Script};
use serde_json::Value;
use source_control::workdir::WorkDir;

use crate::scp_faults::{event, failed_ids, record};
use crate::source_control::{mirrorer_in, target_refs, write_manifest};
use crate::support::{
    Git, SourceServer, WorkTree, codecommit_url, create_codecommit_repository, env, heads_and_tags,
    ok, pillar, run, runtime, scp_mirror, unique,
};

/// `pillar scp mirror --json` into CodeCommit `repository` with `extra` arguments: the
/// report, the exit code and standard error.
fn mirror(source: &str, repository: &str, work: &Path, extra: &[&str]) -> (Value, i32, String) {
    let run = scp_mirror(source, &format!("codecommit://{repository}"), work, extra, None);
    (run.report, run.code, run.stderr)
}

fn names(report: &Value, key: &str) -> Vec<String> {
    report[key].as_array().map_or_else(Vec::new, |list| {
        list.iter().map(|v| v.as_str().expect("name").to_owned()).collect()
    })
}

/// A source with `main`, 30 more branches and 20 tags (10 annotated): 51 heads and tags.
fn fifty_one_refs(server: &SourceServer, name: &str) -> WorkTree {
    let source = server.repository(name);
    for n in 0..6 {
        source.commit(&format!("commit {n}"));
    }
    let mut commands = String::new();
    let head = source.git(&["rev-parse", "HEAD"]);
    for n in 0..30 {
        commands.push_str(&format!("create refs/heads/topic-{n:02} {}\n", head.trim()));
    }
    for n in 0..10 {
        commands.push_str(&format!("create refs/tags/light-{n:02} {}\n", head.trim()));
    }
    source.update_refs(&commands);
    for n in 0..10 {
        source.git(&["tag", "-a", &format!("release-{n:02}"), "-m", "release"]);
    }
    assert_eq!(heads_and_tags(&source.git, &server.url(name)).len(), 51);
    source
}

fn mirrored_once(server: &SourceServer, prefix: &str) -> (WorkTree, String, tempfile::TempDir) {
    let source = fifty_one_refs(server, "app");
    let repository = unique(prefix);
    create_codecommit_repository(&repository);
    let work = tempfile::tempdir().expect("work dir");
    let (report, code, errors) = mirror(&server.url("app"), &repository, work.path(), &[]);
    assert_eq!(code, 0, "{errors}\n{report}");
    assert_eq!(target_refs(&repository).len(), 51);
    (source, repository, work)
}

/// The refs kept in the CodeCommit repository, as the git CLI lists them.
fn kept_in_target(repository: &str) -> BTreeMap<String, String> {
    ok(Git::with_pillar_helper().command().args([
        "ls-remote",
        &codecommit_url(repository),
        "refs/pillars/kept/*",
    ]))
    .lines()
    .filter_map(|line| line.split_once('\t'))
    .filter(|(_, name)| !name.ends_with("^{}"))
    .map(|(oid, name)| (name.to_owned(), oid.to_owned()))
    .collect()
}

#[test]
fn a_source_recreated_empty_leaves_the_mirror_whole_and_says_why() {
    let server = SourceServer::start(None);
    let (_old, repository, work) = mirrored_once(&server, "recreated");
    let before = target_refs(&repository);

    let _empty = server.recreate_empty("app");
    let (report, code, errors) = mirror(&server.url("app"), &repository, work.path(), &[]);
    assert_eq!(code, 1, "a held mass deletion fails the run: {errors}");
    assert!(errors.contains("51 deletion(s) held"), "{errors}");
    assert!(errors.contains("--allow-mass-deletion"), "the way out is named: {errors}");
    assert_eq!(names(&report, "held").len(), 51, "{report}");
    assert!(names(&report, "deleted").is_empty(), "{report}");
    assert_eq!(target_refs(&repository), before, "the mirror lost refs");

    // The Lambda path: the same hold, a DeletionsHeld metric, and no retry storm (retrying
    // holds the same deletions; the alarm calls an operator).
    let dir = tempfile::tempdir().expect("temp dir");
    let manifest = write_manifest(dir.path(), &[(&repository, &server.url("app"), "A/app")]);
    let mirrorer = mirrorer_in(&manifest, WorkDir::new(dir.path().join("work"), None));
    let outcome = runtime().block_on(
        mirrorer
            .handle_sqs(event(vec![record("m1", &repository, &repository, Duration::ZERO)]), None),
    );
    assert!(failed_ids(&outcome.response).is_empty(), "not retried");
    let metrics = outcome.metrics[0].to_json(0);
    assert_eq!(metrics["DeletionsHeld"], 51.0, "{metrics}");
    assert_eq!(target_refs(&repository), before, "the Lambda path lost refs");
}

#[test]
fn a_mass_deletion_is_held_while_the_rest_goes_through_until_an_operator_confirms() {
    let server = SourceServer::start(None);
    let (source, repository, work) = mirrored_once(&server, "mass-delete");

    // A clean-up script gone wrong deletes 45 of 51; the same day main moves on and a new
    // branch appears.
    let doomed = source.git(&["for-each-ref", "--format=delete %(refname)", "refs/heads/topic-*"]);
    let doomed: String = doomed.lines().take(25).map(|l| format!("{l}\n")).collect();
    source.update_refs(&doomed);
    let tags = source.git(&["for-each-ref", "--format=delete %(refname)", "refs/tags/"]);
    source.update_refs(&tags);
    let main = source.commit("after the clean-up");
    source.git(&["branch", "brand-new"]);
    assert_eq!(heads_and_tags(&source.git, &server.url("app")).len(), 7);

    let (report, code, errors) = mirror(&server.url("app"), &repository, work.path(), &[]);
    assert_eq!(code, 1, "{errors}");
    assert_eq!(names(&report, "held").len(), 45, "{report}");
    assert_eq!(names(&report, "created"), ["refs/heads/brand-new"], "{report}");
    assert_eq!(names(&report, "updated"), ["refs/heads/main"], "{report}");
    let target = target_refs(&repository);
    assert_eq!(target.len(), 52, "51 kept, 1 created");
    assert_eq!(target["refs/heads/main"], main);

    // Confirmed: the deletions go through, and every deleted tip is kept.
    let (report, code, errors) =
        mirror(&server.url("app"), &repository, work.path(), &["--allow-mass-deletion"]);
    assert_eq!(code, 0, "{errors}\n{report}");
    assert_eq!(names(&report, "deleted").len(), 45, "{report}");
    assert_eq!(target_refs(&repository), heads_and_tags(&source.git, &server.url("app")));
    let kept = kept_in_target(&repository);
    assert_eq!(kept.len(), 45, "{kept:?}");
    assert!(kept.keys().any(|k| k.ends_with("/refs/tags/release-03")), "{kept:?}");
}

#[test]
fn a_rewind_and_a_deleted_branch_stay_reachable_and_can_be_restored() {
    let server = SourceServer::start(None);
    let source = server.repository("app");
    for n in 0..6 {
        source.commit(&format!("commit {n}"));
    }
    source.git(&["checkout", "-q", "-b", "feature"]);
    let feature = source.commit("only on feature");
    source.git(&["checkout", "-q", "main"]);
    let old_main = source.commit("main before the rewind");
    let repository = unique("rewind");
    create_codecommit_repository(&repository);
    let work = tempfile::tempdir().expect("work dir");
    let url = server.url("app");
    assert_eq!(mirror(&url, &repository, work.path(), &[]).1, 0);

    // A force-push rewinds main by four commits; `feature` is deleted.
    source.git(&["reset", "-q", "--hard", "HEAD~4"]);
    source.git(&["branch", "-D", "feature"]);
    source.git(&["tag", "fresh"]);
    let (report, code, errors) = mirror(&url, &repository, work.path(), &[]);
    assert_eq!(code, 0, "{errors}\n{report}");
    assert_eq!(names(&report, "deleted"), ["refs/heads/feature"]);
    assert_eq!(target_refs(&repository), heads_and_tags(&source.git, &url), "the mirror follows");
    let kept = kept_in_target(&repository);
    let kept_tips: Vec<&String> = kept.values().collect();
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert!(kept_tips.contains(&&old_main) && kept_tips.contains(&&feature), "{kept:?}");

    // Builds never see them: a plain clone has heads and tags only; drift is none.
    let git = Git::with_pillar_helper();
    let clone = git.dir().join("clone");
    ok(git.command().args(["clone", "-q", &codecommit_url(&repository)]).arg(&clone));
    let cloned =
        ok(git.command().arg("-C").arg(&clone).args(["for-each-ref", "--format=%(refname)"]));
    assert!(!cloned.contains("refs/pillars"), "{cloned}");
    let target = format!("codecommit://{repository}");
    let verified = ok(pillar().args(["scp", "verify", "--source", &url, "--target", &target]));
    assert!(verified.starts_with("identical"), "{verified}");

    // The old commits are there, objects and all: fetch the kept main and read its history.
    let (kept_main, _) = kept.iter().find(|(_, oid)| **oid == old_main).expect("kept main");
    ok(git.command().arg("-C").arg(&clone).args(["fetch", "-q", "origin", kept_main]));
    let history =
        ok(git.command().arg("-C").arg(&clone).args(["log", "--format=%s", "FETCH_HEAD"]));
    assert!(history.starts_with("main before the rewind\n"), "{history}");
    ok(git.command().arg("-C").arg(&clone).args(["fsck", "--no-dangling"]));

    // `pillar scp kept` lists them; `restore` puts `feature` back under its own name.
    let listed = ok(pillar().args(["scp", "kept", "--target", &target, "--json"]));
    let listed: Value = serde_json::from_str(&listed).expect("json");
    let originals: Vec<&str> = listed
        .as_array()
        .expect("list")
        .iter()
        .map(|k| k["original"].as_str().expect("name"))
        .collect();
    assert_eq!(originals.len(), 2);
    assert!(originals.contains(&"refs/heads/feature") && originals.contains(&"refs/heads/main"));
    let restored = ok(pillar().args(["scp", "restore", "--target", &target, "refs/heads/feature"]));
    assert!(restored.contains("restored refs/heads/feature"), "{restored}");
    assert_eq!(target_refs(&repository)["refs/heads/feature"], feature);
}

#[test]
fn kept_tips_expire_after_their_days() {
    let server = SourceServer::start(None);
    let source = server.repository("app");
    let first = source.commit("one");
    let repository = unique("expire");
    create_codecommit_repository(&repository);
    let work = tempfile::tempdir().expect("work dir");
    let url = server.url("app");
    assert_eq!(mirror(&url, &repository, work.path(), &[]).1, 0);
    // Kept in 2020 (expired) and today (kept).
    let served = Path::new(&env("PILLAR_CODECOMMIT_REPOS_DIR")).join(format!("{repository}.git"));
    let today = time::OffsetDateTime::now_utc().date();
    for day in ["2020-01-01".to_owned(), today.to_string()] {
        let name = format!("refs/pillars/kept/{day}/000000/refs/heads/old");
        ok(Git::plain().command().arg("--git-dir").arg(&served).args([
            "update-ref",
            &name,
            &first,
        ]));
    }
    source.commit("two");
    let (report, code, errors) = mirror(&url, &repository, work.path(), &[]);
    assert_eq!(code, 0, "{errors}");
    assert_eq!(report["expired"], 1, "{report}");
    let kept: Vec<String> = kept_in_target(&repository).into_keys().collect();
    assert_eq!(kept, [format!("refs/pillars/kept/{today}/000000/refs/heads/old")]);
}

#[test]
fn a_listing_cut_short_deletes_nothing() {
    let server = SourceServer::start(None);
    let (source, repository, work) = mirrored_once(&server, "cut-listing");
    let before = target_refs(&repository);
    // The answer stops where a ref line ends, one flush short: it parses, but is not whole.
    let front =
        GitFrontEnd::start(server.base_url(), Script { cut_listings: true, ..Script::default() });
    source.git(&["branch", "-D", "topic-00"]);
    let cut = format!("{}/app.git", front.url());
    let (report, code, errors) = mirror(&cut, &repository, work.path(), &[]);
    assert_eq!(code, 1, "{report}");
    assert!(errors.contains("ended before its flush-pkt"), "{errors}");
    assert_eq!(target_refs(&repository), before);
}

#[test]
fn a_repository_using_git_lfs_is_reported_as_not_fully_mirrored() {
    let server = SourceServer::start(None);
    let source = server.repository("assets");
    source.commit("before LFS");
    source.git(&["branch", "plain"]);
    // What `git lfs track "*.bin"` and `git add` leave in git: the attributes and a pointer.
    std::fs::write(
        source.work.join(".gitattributes"),
        "*.bin filter=lfs diff=lfs merge=lfs -text\n",
    )
    .expect("write");
    let pointer = "version https://git-lfs.github.com/spec/v1\noid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 12345\n";
    std::fs::write(source.work.join("model.bin"), pointer).expect("write");
    source.git(&["add", ".gitattributes", "model.bin"]);
    source.commit("track binaries with LFS");
    let repository = unique("lfs");
    create_codecommit_repository(&repository);
    let work = tempfile::tempdir().expect("work dir");
    let (report, code, errors) = mirror(&server.url("assets"), &repository, work.path(), &[]);
    assert_eq!(code, 0, "the refs are mirrored: {errors}");
    assert_eq!(names(&report, "lfs"), ["refs/heads/main"], "{report}");

    let target = format!("codecommit://{repository}");
    let verified = run(pillar()
        .args(["scp", "verify", "--source", &server.url("assets"), "--target", &target])
        .arg("--work-dir")
        .arg(work.path()));
    let printed = String::from_utf8_lossy(&verified.stdout);
    assert_eq!(verified.status.code(), Some(1), "{printed}");
    assert!(printed.contains("uses Git LFS       refs/heads/main"), "{printed}");

    let dir = tempfile::tempdir().expect("temp dir");
    let manifest = write_manifest(dir.path(), &[(&repository, &server.url("assets"), "A/lfs")]);
    let mirrorer = mirrorer_in(&manifest, WorkDir::new(dir.path().join("work"), None));
    let records = vec![record("m1", &repository, &repository, Duration::ZERO)];
    let outcome = runtime().block_on(mirrorer.handle_sqs(event(records), None));
    assert_eq!(outcome.metrics[0].to_json(0)["LfsNotMirrored"], 1.0);
}
