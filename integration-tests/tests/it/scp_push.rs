//! How the Source Control Pillar pushes: the pack just fetched forwarded as it came when the
//! target is in sync, a pack built for the push when it drifted, a fresh cache filled from
//! the target, a refused ref, and a push cut off halfway.

use std::path::Path;

use integration_tests::faults::{CuttingProxy, Direction};
use serde_json::Value;

use crate::source_control::{assert_mirrored, target_refs};
use crate::support::{
    Git, SourceServer, WorkTree, create_codecommit_repository, env, ok, scp_mirror, unique,
};

/// `pillar scp mirror --json` into CodeCommit `repository`, caching in `work`; the report
/// and whether it succeeded.
fn mirror_into(
    source: &str,
    repository: &str,
    work: &Path,
    endpoint: Option<&str>,
) -> (Value, bool) {
    let run = scp_mirror(source, &format!("codecommit://{repository}"), work, &[], endpoint);
    (run.report, run.code == 0)
}

fn mirror(source: &str, repository: &str, work: &Path) -> Value {
    let (report, succeeded) = mirror_into(source, repository, work, None);
    assert!(succeeded, "mirror failed: {report}");
    report
}

/// `len` bytes that compression cannot shrink, different for each `seed`.
pub(crate) fn noise(len: usize, seed: u32) -> Vec<u8> {
    let mut state = seed.wrapping_mul(2_654_435_761) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state.to_le_bytes()[0]
        })
        .collect()
}

/// A source with `commits` commits of 20 KiB each.
fn source_with_history(server: &SourceServer, name: &str, commits: usize) -> WorkTree {
    let source = server.repository(name);
    for n in 0..commits {
        let data = noise(20 * 1024, 0x9e37_79b9 ^ n as u32);
        std::fs::write(source.work.join(format!("file-{}", n % 10)), data).expect("write");
        source.git(&["add", "."]);
        source.commit(&format!("commit {n}"));
    }
    source.git(&["tag", "-a", "v1", "-m", "release"]);
    source
}

/// A source of `commits` commits served as `app`, and a new CodeCommit repository named
/// from `prefix`: the source, its URL and the repository.
fn app_and_repository(
    server: &SourceServer,
    commits: usize,
    prefix: &str,
) -> (WorkTree, String, String) {
    let source = source_with_history(server, "app", commits);
    let repository = unique(prefix);
    create_codecommit_repository(&repository);
    (source, server.url("app"), repository)
}

/// Commits `text` as the file `name` with `message`.
fn commit_file(source: &WorkTree, name: &str, text: &str, message: &str) {
    std::fs::write(source.work.join(name), text).expect("write");
    source.git(&["add", name]);
    source.commit(message);
}

fn number(report: &Value, key: &str) -> u64 {
    report[key].as_u64().unwrap_or_else(|| panic!("{key} in {report}"))
}

fn served_repository(repository: &str) -> std::path::PathBuf {
    Path::new(&env("PILLAR_CODECOMMIT_REPOS_DIR")).join(format!("{repository}.git"))
}

#[test]
fn the_fetched_pack_is_forwarded_to_a_target_in_sync_and_a_pack_built_for_one_that_drifted() {
    let server = SourceServer::start(None);
    let (source, url, repository) = app_and_repository(&server, 30, "forward");
    let work = tempfile::tempdir().expect("work dir");

    let cold = mirror(&url, &repository, work.path());
    assert_eq!(cold["forwarded"], true, "an empty target takes the whole fetched pack: {cold}");
    assert_eq!(cold["streamed"], true, "in one pass, as it arrived from the source: {cold}");
    let served = served_repository(&repository);
    ok(Git::plain().command().arg("--git-dir").arg(&served).args(["fsck", "--no-dangling"]));
    assert_mirrored(&source, &url, &repository);

    // One small commit: the target has almost everything, the pack sent is small.
    commit_file(&source, "small", "one line\n", "small change");
    let warm = mirror(&url, &repository, work.path());
    assert_eq!(warm["forwarded"], true, "{warm}");
    assert!(
        number(&warm, "bytes_to_target") < number(&cold, "bytes_to_target") / 20,
        "{warm} after {cold}"
    );
    assert_mirrored(&source, &url, &repository);

    // A branch only off an old commit: nothing to fetch, an empty pack, still in sync.
    source.git(&["branch", "from-old-tag", "v1"]);
    let branch = mirror(&url, &repository, work.path());
    assert_eq!(branch["fetched"], false, "{branch}");
    assert_mirrored(&source, &url, &repository);

    // Someone pushed to the mirror: it drifted, so the push gets a pack built for it.
    ok(Git::plain().command().arg("--git-dir").arg(&served).args(["branch", "intruder", "main~3"]));
    source.commit("another");
    let drifted = mirror(&url, &repository, work.path());
    assert_eq!(drifted["forwarded"], false, "{drifted}");
    assert_eq!(drifted["deleted"][0], "refs/heads/intruder");
    assert_mirrored(&source, &url, &repository);
    ok(Git::plain().command().arg("--git-dir").arg(&served).args(["fsck", "--no-dangling"]));
}

#[test]
fn a_new_commit_costs_the_source_one_listing_and_one_pack_request() {
    let server = SourceServer::start(None);
    let (source, url, repository) = app_and_repository(&server, 30, "one-round");
    let work = tempfile::tempdir().expect("work dir");
    mirror(&url, &repository, work.path());
    assert_mirrored(&source, &url, &repository);

    commit_file(&source, "small", "one line\n", "small change");
    server.take_requests();
    let report = mirror(&url, &repository, work.path());
    assert_eq!(
        server.take_requests(),
        ["GET /app.git/info/refs?service=git-upload-pack", "POST /app.git/git-upload-pack"],
        "the listing is the advertisement of the fetch, and one round asks for the pack"
    );
    assert!(number(&report, "bytes_from_source") < 4096, "{report}");
    assert_mirrored(&source, &url, &repository);
}

#[test]
fn a_rewritten_tip_the_source_no_longer_has_costs_one_commit_not_the_history() {
    let server = SourceServer::start(None);
    let (source, url, repository) = app_and_repository(&server, 30, "amend");
    source.git(&["tag", "-d", "v1"]);
    let work = tempfile::tempdir().expect("work dir");
    let cold = mirror(&url, &repository, work.path());

    // A force-push of an amended tip, and the source's gc drops the old one.
    source.git(&["commit", "-q", "--amend", "-m", "amended"]);
    source.git(&["reflog", "expire", "--expire=now", "--all"]);
    source.git(&["gc", "-q", "--prune=now"]);
    let amended = mirror(&url, &repository, work.path());
    assert!(
        number(&amended, "bytes_from_source") * 10 < number(&cold, "bytes_from_source"),
        "the source sent {} bytes for one amended commit, {} for the whole history",
        amended["bytes_from_source"],
        cold["bytes_from_source"]
    );
    assert_mirrored(&source, &url, &repository);
}

#[test]
fn a_fresh_cache_is_filled_from_the_target_and_the_source_sends_only_what_is_new() {
    let server = SourceServer::start(None);
    let (source, url, repository) = app_and_repository(&server, 30, "seed");
    let first = mirror(&url, &repository, tempfile::tempdir().expect("dir").path());

    // A new Lambda environment: an empty /tmp.
    commit_file(&source, "new", "new\n", "new commit");
    let fresh = tempfile::tempdir().expect("dir");
    let report = mirror(&url, &repository, fresh.path());
    assert_eq!(report["fetched"], true, "{report}");
    assert!(
        number(&report, "bytes_from_source") * 20 < number(&first, "bytes_from_source"),
        "the source sent {} bytes for one commit, {} for the whole history",
        report["bytes_from_source"],
        first["bytes_from_source"]
    );
    assert_eq!(report["forwarded"], true, "the cache was the target's: {report}");
    assert_mirrored(&source, &url, &repository);
}

#[test]
fn a_ref_refused_with_the_forwarded_pack_is_tried_with_a_built_one_then_reported() {
    let server = SourceServer::start(None);
    let (source, url, repository) = app_and_repository(&server, 3, "forward-refused");
    let work = tempfile::tempdir().expect("work dir");
    mirror(&url, &repository, work.path());
    let hook = served_repository(&repository).join("hooks/update");
    std::fs::write(&hook, "#!/bin/sh\n[ \"$1\" != refs/heads/forbidden ]\n").expect("hook");
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");

    let main = source.commit("more");
    source.git(&["branch", "forbidden"]);
    let (report, succeeded) = mirror_into(&url, &repository, work.path(), None);
    assert!(!succeeded, "a refused ref fails the run: {report}");
    assert_eq!(report["refused"][0]["name"], "refs/heads/forbidden", "{report}");
    assert_eq!(report["updated"][0], "refs/heads/main", "{report}");
    assert_eq!(target_refs(&repository)["refs/heads/main"], main);
}

#[test]
fn a_push_cut_off_halfway_is_mirrored_again_from_new_listings_in_the_same_run() {
    let server = SourceServer::start(None);
    let (source, url, repository) = app_and_repository(&server, 2, "cut-push");
    let work = tempfile::tempdir().expect("work dir");
    mirror(&url, &repository, work.path());

    // 300 KiB of new history; the connection to CodeCommit dies after 100 KiB of it.
    for n in 0..15 {
        let data = noise(20 * 1024, 7_000 + n);
        std::fs::write(source.work.join(format!("big-{n}")), data).expect("write");
    }
    source.git(&["add", "."]);
    source.commit("big change");
    let upstream = env("PILLAR_CODECOMMIT_GIT_ENDPOINT");
    let upstream = upstream.trim_start_matches("http://").parse().expect("host:port");
    let proxy = CuttingProxy::cutting(upstream, Direction::Up, 100 * 1024);
    let endpoint = format!("http://{}", proxy.address);
    let (report, succeeded) = mirror_into(&url, &repository, work.path(), Some(&endpoint));
    assert_eq!(proxy.cuts(), 1, "the push was cut: {report}");
    assert!(succeeded, "the cut push is tried again in the same run: {report}");
    assert_eq!(report["updated"][0], "refs/heads/main", "{report}");
    assert_mirrored(&source, &url, &repository);
    let served = served_repository(&repository);
    ok(Git::plain().command().arg("--git-dir").arg(&served).args(["fsck", "--no-dangling"]));
}

#[test]
fn a_source_cut_off_while_its_pack_streams_to_an_empty_target_moves_no_ref() {
    let server = SourceServer::start(None);
    let (source, url, repository) = app_and_repository(&server, 30, "cut-stream");
    let work = tempfile::tempdir().expect("work dir");
    // The source's answer dies after 200 KiB of its 600 KiB pack, while the target is
    // already receiving it.
    let upstream = url.trim_start_matches("http://").split('/').next().expect("host:port");
    let proxy = CuttingProxy::start(upstream.parse().expect("address"), 200 * 1024);
    let cut = url.replace(upstream, &proxy.address.to_string());
    let (report, succeeded) = mirror_into(&cut, &repository, work.path(), None);
    assert!(!succeeded && proxy.cuts() == 1, "{report}");
    assert!(target_refs(&repository).is_empty(), "a ref moved on a pack cut short");
    let served = served_repository(&repository);
    ok(Git::plain().command().arg("--git-dir").arg(&served).args(["fsck", "--no-dangling"]));

    let again = mirror(&cut, &repository, work.path());
    assert_eq!(again["streamed"], true, "{again}");
    assert_mirrored(&source, &url, &repository);
}
